"""Training checkpoints of a run folder: written atomically, verified against their manifest on load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bfn.checkpoint.files import (
    CHECKPOINT_DIR,
    CHECKPOINT_FILES,
    EMA_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    RNG_FILE,
    STATE_FILE,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    load_safetensors,
    load_torch,
    read_json,
    safetensors_bytes,
    torch_bytes,
)

__all__ = [
    "Checkpoint",
    "find_checkpoint",
    "load_checkpoint",
    "manifest_checksum",
    "save_checkpoint",
    "verified_checkpoint",
    "verify_checkpoint",
]


@dataclass
class Checkpoint:
    """A loaded training checkpoint (all tensors on the requested device; RNG states on CPU)."""

    path: Path
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    state: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint whose files all match its ``state.json``."""
    try:
        verify_checkpoint(folder)
    except CheckpointError:
        return False
    return True


def find_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The folder of the latest complete checkpoint of a run, or ``None`` when the run has none.

    ``checkpoint/`` when it exists (it is only ever created complete, by a rename); otherwise, after a crash
    between the two renames of a save, the complete ``checkpoint.tmp/``, else ``checkpoint.old/``.
    """
    run_dir = Path(run_dir)
    current = run_dir / CHECKPOINT_DIR
    if current.is_dir():
        return current
    for name in (CHECKPOINT_DIR + ".tmp", CHECKPOINT_DIR + ".old"):
        candidate = run_dir / name
        if candidate.is_dir() and _is_complete(candidate):
            return candidate
    return None


def manifest_checksum(state: Mapping[str, Any]) -> str:
    """sha256 of a checkpoint manifest's entries other than ``"checksum"`` (canonical JSON, sorted keys)."""
    body = {k: v for k, v in state.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _check_manifest(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``files`` of a manifest, after checking its checksum, step and file names (plain names, all four)."""
    if state.get("checksum") != manifest_checksum(state):
        raise CheckpointError(f"{path}: checksum mismatch: the manifest was edited or corrupted")
    files, step = state.get("files"), state.get("step")
    if not isinstance(files, dict) or isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: missing or invalid 'step' or 'files'; not a bfn checkpoint")
    elapsed = state.get("elapsed", 0.0)
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < float("inf"):
        raise CheckpointError(f"{path}: 'elapsed' must be a finite number of seconds >= 0, got {elapsed!r}")
    for name, record in files.items():
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            raise CheckpointError(f"{path}: file name {name!r} is not a plain name inside the checkpoint folder")
        if not isinstance(record, dict) or not isinstance(record.get("bytes"), int):
            raise CheckpointError(f"{path}: entry of {name!r} must hold 'bytes' and 'sha256'")
    missing = [name for name in CHECKPOINT_FILES if name not in files]
    if missing:
        raise CheckpointError(f"{path}: the manifest does not list {', '.join(missing)}; not a complete checkpoint")
    return files


def verify_checkpoint(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file of a checkpoint against the size and sha256 in its ``state.json``; returns the state."""
    folder = Path(folder)
    state = read_json(folder / STATE_FILE)
    files = _check_manifest(state, folder / STATE_FILE)
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: file not found (checkpoint of step {state['step']} is incomplete)")
        size = path.stat().st_size
        if size != record.get("bytes") or _sha256(path) != record.get("sha256"):
            raise CheckpointError(
                f"{path}: does not match the checkpoint of step {state['step']} ({size} bytes, expected "
                f"{record.get('bytes')}; or a different sha256): truncated, corrupted or from another step"
            )
    return state


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    model: Mapping[str, Tensor],
    ema: Mapping[str, Tensor],
    optimizer: dict[str, Any],
    rng: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint of ``step`` into ``run_dir/checkpoint`` atomically (see the module docstring).

    Args:
        run_dir: the run folder.
        step: optimisation steps completed.
        model, ema: state dicts of the network and of its EMA copy (tensors).
        optimizer: optimizer state (and anything else made of tensors, numbers, strings, lists and dicts).
        rng: random-generator states (same restriction).
        extra: JSON-able values recorded in ``state.json`` (e.g. elapsed time).
    """
    run_dir = Path(run_dir)
    tmp, current, old = (run_dir / (CHECKPOINT_DIR + s) for s in (".tmp", "", ".old"))
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    blobs = {
        MODEL_FILE: safetensors_bytes(model, {"step": str(step)}),
        EMA_FILE: safetensors_bytes(ema, {"step": str(step)}),
        OPTIMIZER_FILE: torch_bytes(optimizer),
        RNG_FILE: torch_bytes(rng),
    }
    files = {}
    for name, blob in blobs.items():
        atomic_write_bytes(tmp / name, blob)
        files[name] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    state = {**(extra or {}), "step": step, "files": files}
    state["checksum"] = manifest_checksum(state)
    atomic_write_json(tmp / STATE_FILE, state)  # the step marker: last
    if current.exists() and old.exists():
        shutil.rmtree(old)  # the generation before the previous one
    if current.exists():
        os.rename(current, old)
    os.rename(tmp, current)
    fsync_dir(run_dir)
    return current


def verified_checkpoint(run_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of the newest checkpoint of a run that passes :func:`verify_checkpoint`.

    When the newest fails (truncated, corrupted, edited), the previous generation ``checkpoint.old/`` is used
    instead, with a warning naming both; when neither verifies, the newest one's error is raised.
    """
    run_dir = Path(run_dir)
    folder = find_checkpoint(run_dir)
    if folder is None:
        raise CheckpointError(f"{run_dir}: no checkpoint found (expected {run_dir / CHECKPOINT_DIR})")
    try:
        return folder, verify_checkpoint(folder)
    except CheckpointError as err:
        previous = run_dir / (CHECKPOINT_DIR + ".old")
        if previous == folder or not previous.is_dir() or not _is_complete(previous):
            raise
        state = verify_checkpoint(previous)
        warnings.warn(
            f"{err}; falling back to the previous checkpoint {previous} (step {state['step']})",
            RuntimeWarning,
            stacklevel=2,
        )
        return previous, state


def load_checkpoint(run_dir: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify the latest checkpoint of a run folder; :class:`CheckpointError` if there is none."""
    folder, state = verified_checkpoint(run_dir)
    optimizer = load_torch(folder / OPTIMIZER_FILE, map_location)
    rng = load_torch(folder / RNG_FILE, "cpu")
    for what, value in ((folder / OPTIMIZER_FILE, optimizer), (folder / RNG_FILE, rng)):
        if not isinstance(value, dict):
            raise CheckpointError(f"{what}: expected a dict, got {type(value).__name__}")
    if not isinstance(optimizer.get("optimizer"), dict):
        raise CheckpointError(f"{folder / OPTIMIZER_FILE}: no 'optimizer' state dict")
    return Checkpoint(
        path=folder,
        step=int(state["step"]),
        model=load_safetensors(folder / MODEL_FILE, map_location),
        ema=load_safetensors(folder / EMA_FILE, map_location),
        optimizer=optimizer,
        rng=rng,
        state=state,
    )
