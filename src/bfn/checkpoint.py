"""Model folders and training checkpoints: atomic writes, verified loads, no pickled code.

Two folder layouts share one ``config.json``:

* a *model folder* (:func:`save_pretrained`): ``config.json`` (flow kind and config, ``data_shape``, network name and
  options) and ``model.safetensors``;
* a *run folder* (:func:`bfn.training.train`): the same ``config.json`` plus the whole resolved training config
  (``"train"``) and a data description (``"data"``), ``log.csv``, ``loss.png`` and the latest checkpoint in
  ``checkpoint/``::

      checkpoint/model.safetensors   network weights
      checkpoint/ema.safetensors     EMA weights
      checkpoint/optimizer.pt        optimizer (and grad-scaler) state: plain tensors, numbers, lists and dicts
      checkpoint/rng.pt              random-generator states (torch default per rank, the loss-noise generator)
      checkpoint/state.json          step, elapsed time, the size and sha256 of every file above, and the
                                     sha256 of state.json's own other entries ("checksum")
      checkpoint.old/                the previous checkpoint generation (same layout)

Atomicity: a checkpoint is written file by file into ``checkpoint.tmp/`` (each file fsynced, ``state.json`` last),
then swapped in by renames (``checkpoint`` -> ``checkpoint.old``, ``checkpoint.tmp`` -> ``checkpoint``); the
previous generation stays in ``checkpoint.old/`` until the next save. A crash at any point leaves a complete
checkpoint: ``checkpoint/`` if it exists, otherwise the complete ``checkpoint.tmp/`` (crash between the two renames)
or ``checkpoint.old/``. Loading checks every file against the size and sha256 recorded in ``state.json`` (and
``state.json`` against its own checksum), so files of different steps are never mixed; when the newest checkpoint
fails that check, loading falls back to the previous generation with a warning. The manifest may name only plain
file names inside the checkpoint folder, and must list all four files.

Safety: weights are read with ``safetensors``; ``.pt`` files with ``torch.load(weights_only=True)``, which refuses
any pickle that would import or call code. Unreadable, truncated or unsafe files raise :class:`CheckpointError`
naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from bfn.model import BFN

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_json",
    "build_model",
    "find_checkpoint",
    "load_checkpoint",
    "load_pretrained",
    "load_safetensors",
    "load_torch",
    "manifest_checksum",
    "model_config",
    "read_config",
    "save_checkpoint",
    "save_pretrained",
    "verified_checkpoint",
    "verify_checkpoint",
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


def _fsync_dir(folder: Path) -> None:
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
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _safetensors_bytes(tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    # clone: safetensors refuses tensors that share storage (views, tied weights)
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    return save(plain, metadata=metadata)


def _torch_bytes(obj: Any) -> bytes:
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


def _read_json(path: Path) -> dict[str, Any]:
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
    """The ``config.json`` of a model or run folder, checked to describe a model."""
    path = Path(folder) / CONFIG_FILE
    config = _read_json(path)
    for key in ("flow", "data_shape", "net"):
        if key not in config:
            raise CheckpointError(f"{path}: missing the {key!r} entry; not a bfn model or run folder")
    return config


# ------------------------------------------------------------------------------------------------- model folders


def model_config(model: BFN, net_name: str, net_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What :func:`build_model` needs to rebuild ``model``: flow kind and config, data shape, network spec.

    A class-conditional model also stores ``num_classes`` and ``label_dropout`` (absent for unconditional ones).
    """
    config = {
        "format": "bfn",
        "version": FORMAT_VERSION,
        "flow": {"kind": model.flow.kind, "config": model.flow.config()},
        "data_shape": list(model.data_shape),
        "net": {"name": net_name, "options": dict(net_options or {})},
    }
    if getattr(model, "num_classes", None) is not None:
        config["num_classes"] = model.num_classes
        config["label_dropout"] = model.label_dropout
    return config


def build_model(config: Mapping[str, Any]) -> BFN:
    """Build a freshly initialised :class:`~bfn.BFN` from a :func:`model_config` dict.

    The network comes from :func:`bfn.nets.build_net` with the flow's channel counts; the model remembers the
    network spec (``model.net.net_spec``) so that :meth:`~bfn.BFN.save_pretrained` can write it back.
    """
    from bfn.flows import flow_from_config
    from bfn.model import BFN
    from bfn.nets import build_net

    flow = flow_from_config(config["flow"]["kind"], dict(config["flow"]["config"]))
    data_shape = tuple(int(d) for d in config["data_shape"])
    name, options = config["net"]["name"], dict(config["net"].get("options") or {})
    net = build_net(name, data_shape, flow.input_channels, flow.output_channels, **options)
    conditional = {k: config[k] for k in ("num_classes", "label_dropout") if config.get(k) is not None}
    return BFN(net, flow, data_shape, **conditional)


def _net_spec(model: BFN, net_name: str | None, net_options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    if net_name is not None:
        return net_name, dict(net_options or {})
    spec = getattr(model.net, "net_spec", None)
    if spec is None:
        raise ValueError(
            "save_pretrained needs the network's name and options to rebuild it: build the network with "
            "bfn.nets.build_net, or pass net_name= (and net_options=) of a reference network"
        )
    return spec["name"], dict(spec.get("options") or {})


def save_pretrained(
    model: BFN,
    folder: str | os.PathLike[str],
    *,
    net_name: str | None = None,
    net_options: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (atomically) so :func:`load_pretrained` can rebuild ``model``.

    The network must be a reference network (:func:`bfn.nets.build_net`); its name and options come from
    ``net_name``/``net_options`` or from ``model.net.net_spec`` (set by ``build_net``). Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name, options = _net_spec(model, net_name, net_options)
    if not isinstance(model.net, nn.Module):
        raise ValueError("save_pretrained needs an nn.Module network")
    atomic_write_bytes(folder / MODEL_FILE, _safetensors_bytes(model.net.state_dict()))
    atomic_write_json(folder / CONFIG_FILE, model_config(model, name, options))
    return folder


def _weights_file(folder: Path, ema: bool) -> Path:
    """The weights to load from a model folder or run folder (EMA weights first when ``ema``)."""
    names = [EMA_FILE, MODEL_FILE] if ema else [MODEL_FILE]
    places = [folder]
    checkpoint = find_checkpoint(folder)
    if checkpoint is not None:
        places.append(checkpoint)
    for name in names:
        for place in places:
            if (place / name).is_file():
                return place / name
    raise CheckpointError(f"{folder}: no {' or '.join(names)} in {' or '.join(str(p) for p in places)}")


def load_pretrained(folder: str | os.PathLike[str], map_location: str | torch.device = "cpu", ema: bool = True) -> BFN:
    """Rebuild a :class:`~bfn.BFN` from a model folder or a run folder; never executes pickled code.

    The network is rebuilt by name (:func:`bfn.nets.build_net`) and the flow by :func:`bfn.flows.flow_from_config`;
    weights come from ``safetensors`` files: EMA weights when ``ema`` and present, else the raw weights. A run
    folder's checkpoint is verified against its ``state.json`` first. The model is returned in eval mode.
    """
    folder = Path(folder)
    config = read_config(folder)
    checkpoint = find_checkpoint(folder)
    path = _weights_file(folder, ema)
    if checkpoint is not None and path.parent == checkpoint:
        checkpoint, _ = verified_checkpoint(folder)
        path = checkpoint / path.name
    model = build_model(config)
    _load_net_state(model.net, load_safetensors(path), path)
    return model.to(map_location).eval()


def _load_net_state(net: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the network described in config.json: {err}") from err


# ------------------------------------------------------------------------------------------------- checkpoints


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
    state = _read_json(folder / STATE_FILE)
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
        MODEL_FILE: _safetensors_bytes(model, {"step": str(step)}),
        EMA_FILE: _safetensors_bytes(ema, {"step": str(step)}),
        OPTIMIZER_FILE: _torch_bytes(optimizer),
        RNG_FILE: _torch_bytes(rng),
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
    _fsync_dir(run_dir)
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
