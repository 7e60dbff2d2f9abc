"""Files under $OUTPUT_DIR: per-epoch checkpoints, model.pt, model.ts, model.pt2, model.onnx, run.json, and
triton/<model>/ (a Triton Inference Server model repository entry: the TorchScript model, its
config.pbtxt and labels.txt), so the copied artifacts can be served as they are.

Called by `trainrun_trainer.training` on rank 0. Every file is written to a temporary name and
renamed into place, so a replica killed mid-write never leaves a half-written newest checkpoint
for its restart to trip over.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from trainrun_trainer.errors import TrainerError
from trainrun_trainer.models import ImageClassifier

CHECKPOINT_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")
MODEL_STATE_FILE = "model.pt"
TORCHSCRIPT_FILE = "model.ts"
EXPORTED_PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
# The batch size model.pt2 and model.onnx accept (torch.export needs a range for a dynamic dimension).
EXPORT_MAX_BATCH = 65536
# The names of model.onnx's input and output, as ONNX Runtime's session.run({name: array}) takes them.
ONNX_INPUT_NAME = "images"
ONNX_OUTPUT_NAME = "logits"
RUN_SUMMARY_FILE = "run.json"
TRITON_DIR = "triton"
# Triton's dynamic batcher may group up to this many requests; the traced model takes any batch.
TRITON_MAX_BATCH = 64


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}.pt"


def newest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint of the highest epoch in `directory`, if any."""
    if not directory.is_dir():
        return None
    numbered = [(int(match.group(1)), entry) for entry in directory.iterdir()
                if (match := CHECKPOINT_NAME.match(entry.name))]
    return max(numbered)[1] if numbered else None


def _replace_atomically(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last (.model.partial.pt2): torch.export warns about a .pt2 archive named otherwise.
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    write(temporary)
    os.replace(temporary, path)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    _replace_atomically(path, lambda target: torch.save(state, target))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; only tensors and plain values are accepted (weights_only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TrainerError(
            f"cannot read checkpoint {path} ({error}); delete it to resume from the one before, "
            "or empty the checkpoint folder to start over"
        ) from None
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise TrainerError(f"{path} is not a trainrun checkpoint (no epoch/model); move it out of the way")
    return state


def export_model(classifier: ImageClassifier, *, output_dir: Path, input_shape: tuple[int, int, int]) -> None:
    """model.pt: the network's state dict (loads into the torchvision model of the same name);
    model.ts: the whole classifier traced to TorchScript, taking float images in [0, 1];
    model.pt2: the same as a ``torch.export`` program (``torch.export.load(path).module()``), any batch
    size, the format PyTorch now recommends over TorchScript;
    model.onnx: the same program for ONNX Runtime (input ``images``, output ``logits``, any batch size),
    one self-contained file. A network torch.export cannot capture leaves model.pt2 and model.onnx out
    with a warning; model.ts and model.pt are always written."""
    exported = copy.deepcopy(classifier).to(device="cpu", dtype=torch.float32)
    exported = exported.to(memory_format=torch.contiguous_format).eval()
    _replace_atomically(output_dir / MODEL_STATE_FILE,
                        lambda target: torch.save(exported.network.state_dict(), target))
    example = torch.rand((2, *input_shape))
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is what the contract promises (it loads without Python code); torch's
        # deprecation notice about it would only alarm people reading the log.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(exported, example)  # type: ignore[no-untyped-call]
        _replace_atomically(output_dir / TORCHSCRIPT_FILE, lambda target: torch.jit.save(traced, str(target)))
    batch = torch.export.Dim("batch", min=1, max=EXPORT_MAX_BATCH)
    try:
        program = torch.export.export(exported, (example,), dynamic_shapes=({0: batch},))
        _replace_atomically(output_dir / EXPORTED_PROGRAM_FILE, lambda target: torch.export.save(program, target))
    except Exception as error:  # noqa: BLE001 - an optional format: say why it is missing, keep the run
        _warn_not_written(EXPORTED_PROGRAM_FILE, "torch.export", error)
        return
    try:
        _replace_atomically(output_dir / ONNX_FILE, lambda target: _export_onnx(exported, example, batch, target))
    except Exception as error:  # noqa: BLE001 - as for model.pt2 (no onnx/onnxscript installed, say)
        _warn_not_written(ONNX_FILE, "torch.onnx.export", error)


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, batch: Any, target: Path) -> None:
    """model as ONNX (opset of the dynamo exporter), the batch dimension dynamic, the weights inside."""
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports its steps on stdout
        torch.onnx.export(model, (example,), str(target), dynamo=True, external_data=False,
                          dynamic_shapes=({0: batch},), input_names=[ONNX_INPUT_NAME],
                          output_names=[ONNX_OUTPUT_NAME], verbose=False)


def _warn_not_written(file: str, exporter: str, error: Exception) -> None:
    print(f"warning: {file} not written, {exporter} failed: {error}".splitlines()[0], flush=True)


def write_run_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    _replace_atomically(output_dir / RUN_SUMMARY_FILE, lambda target: target.write_text(text, encoding="utf-8"))



def write_triton_repository(
    output_dir: Path, *, model_name: str, input_shape: tuple[int, int, int], class_names: list[str]
) -> Path:
    """triton/<model_name>/{config.pbtxt, labels.txt, 1/model.pt}: model.ts for Triton's PyTorch
    (libtorch) backend, which wants TorchScript named model.pt in a numbered version folder. Its
    input INPUT__0 is a batch of float images in [0, 1] (the model normalises them itself); its
    output OUTPUT__0 holds one logit per class, named by labels.txt. Returns the model's folder."""
    folder = output_dir / TRITON_DIR / model_name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    _replace_atomically(version / "model.pt", lambda target: shutil.copyfile(output_dir / TORCHSCRIPT_FILE, target))
    labels = "".join(f"{name}\n" for name in class_names)
    _replace_atomically(folder / "labels.txt", lambda target: target.write_text(labels, encoding="utf-8"))
    config = "\n".join(
        [
            f'name: "{model_name}"',
            'platform: "pytorch_libtorch"',
            f"max_batch_size: {TRITON_MAX_BATCH}",
            "input [",
            f'  {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ {", ".join(map(str, input_shape))} ] }}',
            "]",
            "output [",
            f'  {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ {len(class_names)} ] label_filename: "labels.txt" }}',
            "]",
            "",
        ]
    )
    _replace_atomically(folder / "config.pbtxt", lambda target: target.write_text(config, encoding="utf-8"))
    return folder
