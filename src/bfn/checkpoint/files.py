"""The files of model and run folders: names, atomic writes, and loads that never unpickle code."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILES",
    "CONFIG_FILE",
    "EMA_FILE",
    "FORMAT_VERSION",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "RNG_FILE",
    "STATE_FILE",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "load_safetensors",
    "load_torch",
    "read_config",
    "read_json",
    "safetensors_bytes",
    "torch_bytes",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
STATE_FILE = "state.json"
CHECKPOINT_FILES = (MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, RNG_FILE)
"""The files every checkpoint's manifest (``state.json``) must list."""
CHECKPOINT_DIR = "checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or model folder is missing, incomplete, corrupted or unsafe; the message names the file."""


# ------------------------------------------------------------------------------------------------- atomic writes


def fsync_dir(folder: Path) -> None:
    """Flush a directory entry to disk (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def safetensors_bytes(tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """``tensors`` (copied to CPU, contiguous, unshared) as the bytes of a ``.safetensors`` file."""
    from safetensors.torch import save

    # clone: safetensors refuses tensors that share storage (views, tied weights)
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    return save(plain, metadata=metadata)


def torch_bytes(obj: Any) -> bytes:
    """``obj`` as the bytes ``torch.save`` writes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------- safe loading


def load_safetensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a ``.safetensors`` file; a missing, truncated or corrupted file raises :class:`CheckpointError`."""
    from safetensors.torch import load as load_bytes

    path = Path(path)
    try:
        tensors = load_bytes(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as err:  # safetensors raises its own error type for bad headers and short files
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {err}") from err
    return {name: t.to(device) for name, t in tensors.items()}


def load_torch(path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: plain tensors and containers only, never pickled code.

    Raises :class:`CheckpointError` naming the file when it is missing, unreadable, or would import or call code.
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: the file holds pickled objects other than tensors and plain containers "
            f"(it could run code when loaded), or it is corrupted. Details: {err}"
        ) from err
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable torch file (truncated or corrupted?): {err}") from err


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (:class:`CheckpointError` naming the file when it is missing, invalid or
    not an object)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON (truncated or corrupted?): {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole ``config.json`` of a model or run folder, checked to hold a model section (parse that section with
    :meth:`~bfn.checkpoint.ModelConfig.read`; a run folder's ``"train"`` and ``"data"`` entries are the training's)."""
    path = Path(folder) / CONFIG_FILE
    config = read_json(path)
    for key in ("flow", "data_shape", "net"):
        if key not in config:
            raise CheckpointError(f"{path}: missing the {key!r} entry; not a bfn model or run folder")
    return config
