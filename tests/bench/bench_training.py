"""Training throughput of trainrun_trainer against the tutorials' plain loop, as ratios.

Run by hand (not by pytest):
    python tests/bench/bench_training.py                      # CPU: the CIFAR-10 CNN and ResNet-18
    python tests/bench/bench_training.py --device cuda --model resnet50 [--compile]

For each model, in the same run and on the same synthetic data and network:
  baseline  the loop of the seed tutorials: DataLoader over the images, batch 4, no workers,
            SGD, `.item()` on the loss every step;
  trainer   `python -m trainrun_trainer` itself, as a child process at the given batch size;
            its own images_per_sec per epoch (training only, no validation).
Figures are images per second, each the best of --rounds timed rounds (the first epoch or steps
only warm up): on a shared machine, the best round is the one least disturbed by others.
The ratio is trainer / baseline. Goals on CPU: 4x for the CNN and
2.5x for ResNet-18; on an H100, ResNet-50 at batch 256 >= 3,200 images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as functional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "training"))

from trainrun_trainer.config import parse_config  # noqa: E402
from trainrun_trainer.data import TensorSplit, load_dataset  # noqa: E402
from trainrun_trainer.models import build_classifier  # noqa: E402

CPU_IMAGE_SIZE = {"cnn": 32, "mlp": 28}
BASELINE_BATCH = 4


def _synthetic_flags(model: str, image_size: int, samples: int) -> list[str]:
    return ["--dataset", "synthetic", "--model", model, "--image-size", str(image_size),
            "--synthetic-samples", str(samples)]


def baseline_images_per_sec(*, model_name: str, image_size: int, device: torch.device, images: int,
                            rounds: int) -> float:
    """The tutorial loop: batch 4 from a DataLoader, float32, `.item()` each step; the best round
    of `images` images."""
    split = load_dataset(parse_config(_synthetic_flags(model_name, image_size, images), environ={})).train
    assert isinstance(split, TensorSplit)
    dataset = torch.utils.data.TensorDataset(split.images.float() / 255, split.labels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BASELINE_BATCH, shuffle=True)
    torch.manual_seed(1)
    network = build_classifier(model_name, input_shape=tuple(split.images.shape[1:]),  # type: ignore[arg-type]
                               num_classes=10).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.001, momentum=0.9)
    running_loss = 0.0
    rates = []
    for round_index in range(rounds + 1):  # round 0 warms up
        seen = 0
        start = time.perf_counter()
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = functional.cross_entropy(network(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            seen += labels.shape[0]
        if round_index:
            rates.append(seen / (time.perf_counter() - start))
    return max(rates)


def trainer_images_per_sec(*, model_name: str, image_size: int, batch_size: int, steps_per_epoch: int,
                           compile_model: bool, rounds: int) -> float:
    """The trainer's own images_per_sec: the best epoch after the first (which warms up)."""
    with tempfile.TemporaryDirectory() as scratch:
        output_dir = Path(scratch) / "outputs"
        flags = [*_synthetic_flags(model_name, image_size, batch_size * steps_per_epoch),
                 "--batch-size", str(batch_size), "--epochs", str(rounds + 1), "--print-frequency", "1000000",
                 "--patience", str(rounds + 1)]
        if compile_model:
            flags.append("--compile")
        env = {key: value for key, value in os.environ.items()
               if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        env.update(OUTPUT_DIR=str(output_dir),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "training"), env.get("PYTHONPATH")])))
        result = subprocess.run([sys.executable, "-m", "trainrun_trainer", *flags], env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"trainer failed:\n{result.stdout}\n{result.stderr}")
        records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
        epochs = [record for record in records if "val_loss" in record and not record.get("final")]
        return max(float(record["images_per_sec"]) for record in epochs[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", action="append", help="model(s) to measure (default: cnn and resnet18 "
                        "on CPU, resnet50 on cuda)")
    parser.add_argument("--batch-size", type=int, default=256, help="the trainer's batch size")
    parser.add_argument("--image-size", type=int, help="default: 32 for cnn, 28 for mlp, 32 for other "
                        "models on CPU (CIFAR-sized), 224 on cuda")
    parser.add_argument("--steps", type=int, default=None, help="trainer steps per epoch")
    parser.add_argument("--baseline-images", type=int, default=None, help="images the baseline loop trains on")
    parser.add_argument("--compile", action="store_true", help="also pass --compile to the trainer")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each loop; the best counts")
    parser.add_argument("--cpus", type=int, help="pin both loops to this many CPUs (steadier figures on a "
                        "busy machine, where threads that wait for each other dominate)")
    arguments = parser.parse_args()
    if arguments.cpus:
        # Inherited by the trainer's process, which sizes its thread pool from its affinity.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:arguments.cpus])
        torch.set_num_threads(arguments.cpus)

    device = torch.device(arguments.device)
    models = arguments.model or (["resnet50"] if device.type == "cuda" else ["cnn", "resnet18"])
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':10} {'image':>5} {'baseline img/s':>15} {'trainer img/s':>14} {'batch':>6} {'ratio':>7}")
    for model_name in models:
        default_size = 224 if device.type == "cuda" else CPU_IMAGE_SIZE.get(model_name, 32)
        image_size = arguments.image_size or default_size
        light = model_name in ("cnn", "mlp")
        steps = arguments.steps or (60 if device.type == "cuda" else 16 if light else 4)
        baseline_images = arguments.baseline_images or (1000 if light or device.type == "cuda" else 200)
        baseline = baseline_images_per_sec(model_name=model_name, image_size=image_size, device=device,
                                           images=baseline_images, rounds=arguments.rounds)
        trainer = trainer_images_per_sec(model_name=model_name, image_size=image_size,
                                         batch_size=arguments.batch_size, steps_per_epoch=steps,
                                         compile_model=arguments.compile, rounds=arguments.rounds)
        print(f"{model_name:10} {image_size:>5} {baseline:>15,.0f} {trainer:>14,.0f} {arguments.batch_size:>6} "
              f"{trainer / baseline:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
