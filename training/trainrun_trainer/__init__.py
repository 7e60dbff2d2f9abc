"""trainrun_trainer: the default training program of trainrun (`python -m trainrun_trainer`).

The operator runs it in every replica through torchrun; `trainrun run --local` runs it as local
processes. It trains an image classifier with DistributedDataParallel, prints `trainrun:metric`
lines, and writes model.pt, model.ts, model.pt2, checkpoints/, metrics.jsonl and run.json to $OUTPUT_DIR.
"""
