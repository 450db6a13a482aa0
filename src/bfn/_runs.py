"""Run-folder safety for training: never overwrite a saved model or another run, never resume from bad state.

* :func:`out_folder_problem` says why a fresh run must not write into a folder (an existing file, a checkpoint, a
  model saved by ``save_pretrained``, or the ``config.json`` of a different run or model); ``None`` when it may.
* :func:`clear_run_folder` removes exactly the files a run or model folder consists of (``--overwrite``).
* :func:`check_resume_state` validates a loaded checkpoint's generator states before they are applied.
* :func:`check_finite_step` stops training on a non-finite loss or gradient, before the optimizer step.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from bfn._checks import NonFiniteError
from bfn.checkpoint import CHECKPOINT_DIR, CONFIG_FILE, EMA_FILE, MODEL_FILE, RNG_FILE, CheckpointError, find_checkpoint

#: what a run or model folder consists of (removed by ``--overwrite``; any other file is left alone)
RUN_FILES = (CONFIG_FILE, MODEL_FILE, EMA_FILE, "log.csv", "loss.png")
RUN_DIRS = (CHECKPOINT_DIR, CHECKPOINT_DIR + ".tmp", CHECKPOINT_DIR + ".old")


def out_folder_problem(run_dir: Path, same_run: Callable[[Mapping[str, Any]], bool]) -> str | None:
    """Why a fresh training run must not write into ``run_dir`` (``None``: it may).

    ``same_run(stored_train_section)`` tells whether a ``config.json`` that holds no checkpoint yet belongs to a run
    of the same settings (restarting it loses nothing).
    """
    if run_dir.exists() and not run_dir.is_dir():
        return f"--out {run_dir} is an existing file, not a folder"
    if not run_dir.is_dir():
        return None
    if find_checkpoint(run_dir) is not None:
        return f"{run_dir} already holds a checkpoint"
    for name in (MODEL_FILE, EMA_FILE):
        if (run_dir / name).exists():
            return f"{run_dir} holds a saved model ({name})"
    config = run_dir / CONFIG_FILE
    if config.exists():
        try:
            stored = json.loads(config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return f"{config} exists and is not a readable run config"
        train = stored.get("train") if isinstance(stored, dict) else None
        if not isinstance(train, dict):
            return f"{config} describes a model folder, not a training run"
        try:
            same = same_run(train)
        except (TypeError, ValueError):
            same = False
        if not same:
            return f"{config} belongs to a run with different settings"
    return None


def clear_run_folder(run_dir: Path) -> None:
    """Remove the files and checkpoint folders of a run or model folder (nothing else)."""
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            (run_dir / name).unlink()


def _is_state(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim == 1


def check_resume_state(rng: Mapping[str, Any], folder: Path) -> None:
    """Check the generator states of a checkpoint (``rng.pt``) before any is applied; names the missing key."""
    path = folder / RNG_FILE
    if not _is_state(rng.get("loss")):
        raise CheckpointError(f"{path}: key 'loss' must hold the loss-noise generator state (a uint8 tensor)")
    per_rank = rng.get("torch", [])
    if not isinstance(per_rank, (list, tuple)) or not all(_is_state(s) for s in per_rank):
        raise CheckpointError(f"{path}: key 'torch' must be a list of per-rank generator states (uint8 tensors)")
    cuda = rng.get("cuda") or []
    if not isinstance(cuda, (list, tuple)) or not all(s is None or _is_state(s) for s in cuda):
        raise CheckpointError(f"{path}: key 'cuda' must be a list of per-rank CUDA generator states or None")


def check_finite_step(loss: torch.Tensor, grad_norm: float, step: int) -> None:
    """Raise :class:`~bfn._checks.NonFiniteError` for a non-finite loss or gradient norm at ``step`` (1-based)."""
    loss_value = float(loss)
    if math.isfinite(loss_value) and math.isfinite(grad_norm):
        return
    what = "loss" if not math.isfinite(loss_value) else "gradient norm"
    raise NonFiniteError(
        f"training stopped at step {step}: the {what} is not finite (loss {loss_value}, gradient norm {grad_norm}); "
        "the weights were not updated and no checkpoint of this step was written. Lower --lr, keep --grad-clip on, "
        "or resume from the last checkpoint with --resume"
    )
