"""One training loop for every flow and data set, on one process or many (``torchrun``).

:func:`train` runs AdamW with a linear learning-rate warm-up, gradient clipping, an exponential moving average (EMA)
of the weights, validation NLL (bits/dim, with the EMA weights) at intervals, optional mixed precision
(``torch.autocast``: bf16, or fp16 with a gradient scaler), a tqdm progress bar with loss and ETA, a CSV log and a
loss-curve PNG. Checkpoints are written atomically every ``ckpt_every`` steps, at the end, and when SIGINT/SIGTERM
arrives (the loop finishes the current step, checkpoints and returns); ``resume=True`` continues a run, and on CPU
the continued run is bit-identical to an uninterrupted one. Run folder layout: :mod:`bfn.checkpoint`.

Distributed training: under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) the loop initialises the
process group (NCCL on GPU, gloo on CPU), wraps the loss in ``DistributedDataParallel``, shards the data with a
:class:`GlobalBatchSampler` (a ``DistributedSampler``) and lets rank 0 alone write files. ``batch_size`` is per
process: the *global* batch is ``batch_size * world_size``.

Randomness (all from ``seed``):

* data order: global batch ``k`` of epoch ``e`` is ``perm_e[kB:(k+1)B]`` with ``perm_e`` a permutation seeded by
  ``(seed, e)``; rank ``r`` takes rows ``[r b, (r+1) b)`` of it. The sequence of global batches does not depend on
  the number of processes.
* loss noise (times and flow samples): one generator, seeded identically on every rank, draws the noise of the
  *whole global batch*; each rank keeps the rows of its own examples and runs the network on those only. So every
  example gets the same noise as in a single-process run with the same global batch, and the losses agree to
  rounding (the rest of the batch costs only the flow's elementwise maths, not network calls).
* torch's default generator (used by datasets, e.g. dynamic binarisation) is seeded per rank with ``(seed, rank)``.
* validation draws from its own fixed-seed generator inside ``torch.random.fork_rng``, so it neither perturbs
  training nor varies between evaluations.

Checkpoints store the step, the weights, EMA weights, optimizer (and grad-scaler) state, the loss-noise generator
and every rank's default-generator state; the data position follows from the step.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from bfn._checks import check_int, require_extra
from bfn._runs import check_finite_step, check_resume_state, clear_run_folder, out_folder_problem
from bfn.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    build_model,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from bfn.metrics.distances import sliced_wasserstein
from bfn.model import BFN, bits_per_dim
from bfn.nets import net_spec

if TYPE_CHECKING:
    from bfn.data import DataBundle

__all__ = [
    "LOG_COLUMNS",
    "DistContext",
    "GlobalBatchSampler",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "derive_seed",
    "evaluate_nll",
    "load_run_config",
    "plot_losses",
    "read_log",
    "train",
]

AmpMode = Literal["off", "bf16", "fp16"]
LOG_FILE = "log.csv"
PLOT_FILE = "loss.png"
LOG_COLUMNS = ("step", "loss", "lr", "grad_norm", "val_bpd", "time")

#: fields that may differ between a run's stored config and the config that resumes it
RESUMABLE_FIELDS = frozenset(
    {"steps", "val_every", "val_examples", "ckpt_every", "device", "resume", "out", "progress", "num_workers"}
    | {"compile"}
)

#: integer fields of TrainConfig with their (inclusive) ranges
INTEGER_FIELDS: dict[str, tuple[int, int]] = {
    "steps": (1, 10**9),
    "batch_size": (1, 2**24),
    "val_examples": (1, 10**9),
    "warmup": (0, 10**9),
    "val_every": (0, 10**9),
    "ckpt_every": (0, 10**9),
    "num_workers": (0, 1024),
    "seed": (0, 2**63 - 1),
    "seq_len": (1, 2**24),
    "split_seed": (0, 2**63 - 1),
}

#: default network per data source (the part of the data name before ``:``)
DEFAULT_NETS: dict[str, tuple[str, dict[str, Any]]] = {
    "toy": ("mlp", {"hidden": 256, "depth": 3}),
    "digits": ("mlp", {"hidden": 512, "depth": 3}),
    "mnist": ("unet", {}),
    "fashion-mnist": ("unet", {}),
    "cifar10": ("unet", {}),
    "text8": ("transformer", {}),
    "kjv": ("transformer", {}),
    "text": ("transformer", {}),
}


# ================================================================================================== config


def data_source(data: str) -> str:
    """The source part of a data set name: ``"toy:two_moons"`` -> ``"toy"``, ``"text:a.txt"`` -> ``"text"``."""
    return data.partition(":")[0].strip().lower().replace("_", "-")


@dataclass
class TrainConfig:
    """Everything a training run depends on; JSON round-trip with :meth:`to_dict` / :meth:`from_dict`.

    ``None`` fields are filled by :meth:`resolved` from the data set and flow (the resolved config is what
    ``config.json`` stores).

    Attributes:
        data: data set name (``digits``, ``mnist``, ``toy:two_moons``, ``text:PATH``, ...; see :mod:`bfn.data`).
        data_root: directory or file of a source that reads files (instead of ``NAME:PATH``).
        data_options: extra loader options (``val_size``; ``num_train``/``num_val``/``num_test`` for toy data).
        seq_len: characters per example for text.
        split_seed: seed of the train/validation split.
        binarize: dynamic binarisation of discrete image data.
        flow: ``"continuous"``, ``"discretised"`` or ``"discrete"``.
        sigma_1: continuous/discretised flows: input standard deviation at ``tau = 1`` (default 1e-3; toy data
            0.02, chosen by the sweep in BENCHMARKS.md, "Against the peers").
        num_bins: discretised flow: number of bins (default: one per grey level of the data).
        beta_1: discrete flow: final accuracy (default 3.0 for binary data, 0.75 for text).
        net: ``"mlp"``, ``"unet"`` or ``"transformer"`` (default by data: toy/digits MLP, images U-Net, text
            Transformer); net_options: its keyword arguments.
        steps: optimisation steps in total (a resumed run may raise it).
        batch_size: examples per step *per process*; global batch = ``batch_size * world_size``.
        lr, weight_decay, betas: AdamW. warmup: steps of linear learning-rate warm-up (then constant).
        grad_clip: maximum global gradient norm (``None``: no clipping; the norm is still logged).
        ema_decay: EMA decay, warmed up as ``min(ema_decay, (1 + step) / (10 + step))``.
        loss: ``"continuous"`` (``L_inf``) or an integer ``n`` (the n-step loss ``L_n``); validation uses the same.
        val_every: validate (bits/dim with EMA weights) every this many steps and at the end (0: only at the end).
        val_examples: validation examples per evaluation (the first ones of the validation split).
        ckpt_every: checkpoint every this many steps (0: only at the end and on a signal).
        amp: ``"off"``, ``"bf16"`` (autocast; CPU or GPU) or ``"fp16"`` (autocast + gradient scaler; GPU).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: seeds everything (see the module docstring).
        out: run folder. resume: continue the run in ``out`` from its latest checkpoint.
        progress: show a progress bar (``None``: only on a terminal, rank 0).
        num_workers: DataLoader worker processes (0 keeps data loading in the main process; with workers,
            per-item randomness such as dynamic binarisation is not restored bit-identically on resume).
        conditional: train a class-conditional model on the data set's labels (digits, MNIST, Fashion-MNIST,
            CIFAR-10, toy sets with components), for classifier-free guidance; label_dropout: share of labels
            replaced by the null label.
        compile: compile the training loss (network and BFN maths, forward and backward) with ``torch.compile``
            (:meth:`bfn.BFN.compile_core`); the first steps then take longer.
    """

    data: str = "digits"
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    seq_len: int = 256
    split_seed: int = 0
    binarize: bool = False
    flow: str = "discretised"
    sigma_1: float | None = None
    num_bins: int | None = None
    beta_1: float | None = None
    net: str | None = None
    net_options: dict[str, Any] | None = None
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = 100
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    loss: str | int = "continuous"
    val_every: int = 500
    val_examples: int = 512
    ckpt_every: int = 500
    amp: str = "off"
    device: str = "auto"
    seed: int = 0
    out: str = "runs/bfn"
    resume: bool = False
    progress: bool | None = None
    num_workers: int = 0
    conditional: bool = False
    label_dropout: float = 0.1
    compile: bool = False

    # ---------------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error (they are usually typos)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training config field(s): {', '.join(unknown)}")
        kwargs = dict(values)
        if "betas" in kwargs:
            kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (unknown names are an error)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ---------------------------------------------------------------------------------------------- checks
    @property
    def loss_steps(self) -> int | None:
        """``None`` for the continuous-time loss, else ``n`` of the n-step loss."""
        return None if self.loss == "continuous" else int(self.loss)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        from bfn.flows import FLOWS

        if self.flow not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}, got {self.flow!r}")
        for name, (low, high) in INTEGER_FIELDS.items():
            check_int(getattr(self, name), name, low, high)
        if not 0 < self.lr < math.inf or not 0 <= self.weight_decay < math.inf:
            raise ValueError(
                f"lr must be a finite number > 0 and weight_decay finite and >= 0, got {self.lr!r}, "
                f"{self.weight_decay!r}"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.grad_clip is not None and not 0 < self.grad_clip < math.inf:
            raise ValueError(f"grad_clip must be a finite number > 0 or None (no clipping), got {self.grad_clip!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.loss != "continuous" and (
            isinstance(self.loss, bool) or not isinstance(self.loss, int) or self.loss < 1
        ):
            raise ValueError(f"loss must be 'continuous' or an integer n >= 1 (n-step loss), got {self.loss!r}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp must be 'off', 'bf16' or 'fp16', got {self.amp!r}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.flow != "discrete" and self.binarize:
            raise ValueError("binarize applies to the discrete flow only")
        if not isinstance(self.conditional, bool):
            raise ValueError(f"conditional must be True or False, got {self.conditional!r}")
        if isinstance(self.label_dropout, bool) or not 0 <= self.label_dropout <= 1:
            raise ValueError(f"label_dropout must lie in [0, 1], got {self.label_dropout!r}")
        self._validate_parts()

    def _validate_parts(self) -> None:
        """The flow's and the network's own checks, without building either (``ValueError`` naming the field)."""
        from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow
        from bfn.nets import check_net_options

        if self.sigma_1 is not None and self.flow != "discrete":
            ContinuousFlow(self.sigma_1)
        if self.beta_1 is not None and self.flow == "discrete":
            DiscreteFlow(2, self.beta_1)
        if self.num_bins is not None and self.flow == "discretised":
            DiscretisedFlow(self.num_bins)
        if self.net is not None:
            check_net_options(self.net, self.net_options or {})

    # ---------------------------------------------------------------------------------------------- defaults
    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` default filled in for this data set and flow (what ``config.json`` stores).

        ``num_bins`` stays ``None`` for discretised data when the data set's own level count applies; the model
        section of ``config.json`` records the value used.
        """
        self.validate()
        changes: dict[str, Any] = {}
        source = data_source(self.data)
        if self.net is None:
            name, options = DEFAULT_NETS.get(source, ("mlp", {}))
            changes["net"] = name
            if self.net_options is None:
                changes["net_options"] = dict(options)
        if self.net_options is None and "net_options" not in changes:
            changes["net_options"] = {}
        if self.flow in ("continuous", "discretised") and self.sigma_1 is None:
            changes["sigma_1"] = 0.02 if source == "toy" else 1e-3
        if self.flow == "discrete" and self.beta_1 is None:
            changes["beta_1"] = 0.75 if source in ("text8", "kjv", "text") else 3.0
        return self.replace(**changes) if changes else self.replace()


def load_run_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """The training config stored in a run folder's ``config.json``."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found; {run_dir} is not a training run folder") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON (truncated or corrupted?): {err}") from err
    if "train" not in stored:
        raise CheckpointError(f"{path}: no 'train' section; {run_dir} is a model folder, not a training run")
    return TrainConfig.from_dict(stored["train"])


def _check_resumable(stored: TrainConfig, new: TrainConfig) -> None:
    old, cur = stored.to_dict(), new.to_dict()
    changed = sorted(k for k in cur if k not in RESUMABLE_FIELDS and cur[k] != old.get(k))
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {cur[k]!r}" for k in changed)
        raise ValueError(
            f"cannot resume {new.out}: the run was trained with different settings ({details}); only "
            f"{', '.join(sorted(RESUMABLE_FIELDS))} may change on resume"
        )


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (independent streams for independent purposes)."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ================================================================================================== processes


@dataclass
class DistContext:
    """The process's place in a (possibly single-process) run and its device.

    Built by :meth:`from_env`: under ``torchrun`` it initialises the default process group (NCCL on GPU, gloo on
    CPU) and :meth:`close` destroys it again.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> DistContext:
        """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``) and pick the device."""
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = _pick_device(device, local)
        owns = False
        if world > 1 and not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
            owns = True
        if world > 1:
            rank, world = dist.get_rank(), dist.get_world_size()
        return cls(rank=rank, world_size=world, local_rank=local, device=dev, owns_group=owns)

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over all ranks in place and return it (unchanged in a single process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (in rank order) on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


# ================================================================================================== data


class GlobalBatchSampler(DistributedSampler):
    """A ``DistributedSampler`` whose shards are contiguous slices of seeded *global* batches.

    Epoch ``e`` shuffles the data with a permutation seeded by ``(seed, e)`` and cuts it into
    ``len(dataset) // global_batch`` global batches (the remainder is dropped); rank ``r`` yields rows
    ``[r * batch, (r + 1) * batch)`` of each. The global batches therefore do not depend on the number of
    processes. ``set_position(epoch, batch_index)`` resumes in the middle of an epoch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.global_batch = batch_size * num_replicas
        self.batches_per_epoch = len(dataset) // self.global_batch  # type: ignore[arg-type]
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"the training split has {len(dataset)} examples, fewer than one global batch of "  # type: ignore[arg-type]
                f"{self.global_batch} (batch_size {batch_size} x {num_replicas} processes); lower batch_size"
            )
        self.start = 0

    def set_position(self, epoch: int, batch_index: int) -> None:
        """Start the next iteration at global batch ``batch_index`` of ``epoch``."""
        self.set_epoch(epoch)
        self.start = batch_index

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", self.epoch))
        perm = torch.randperm(len(self.dataset), generator=generator)  # type: ignore[arg-type]
        for k in range(self.start, self.batches_per_epoch):
            first = k * self.global_batch + self.rank * self.batch_size
            yield from perm[first : first + self.batch_size].tolist()

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start) * self.batch_size


def _batches(loader: DataLoader, sampler: GlobalBatchSampler, start_step: int) -> Iterator[Tensor]:
    """Endless per-rank batches from global step ``start_step`` on."""
    epoch, index = divmod(start_step, sampler.batches_per_epoch)
    while True:
        sampler.set_position(epoch, index)
        yield from loader
        epoch, index = epoch + 1, 0


def _dataset_arguments(config: TrainConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(config.data_options)
    if config.flow == "discretised":
        kwargs["num_bins"] = config.num_bins
    if config.data_root is not None:
        kwargs["root"] = config.data_root
    return {"split_seed": config.split_seed, "seq_len": config.seq_len, "binarize": config.binarize, **kwargs}


def load_bundle(config: TrainConfig) -> DataBundle:
    """Load the data set of a (resolved) config."""
    from bfn.data import load_dataset

    return load_dataset(config.data, config.flow, **_dataset_arguments(config))  # type: ignore[arg-type]


def check_run_config(config: TrainConfig, overwrite: bool = False) -> None:
    """What :func:`train` would refuse before any work, checked without loading data (``--dry-run``).

    The data set name and options (:func:`bfn.data.check_dataset`), ``amp="fp16"`` without CUDA, for ``resume``
    that the run folder holds a compatible run and a checkpoint, else that ``out`` may be written
    (:func:`check_out_folder`).
    """
    from bfn.data import check_dataset

    config.validate()
    check_dataset(config.data, config.flow, **_dataset_arguments(config))  # type: ignore[arg-type]
    check_amp_device(config.amp, _pick_device(config.device, 0))
    if config.resume:
        _check_resumable(load_run_config(config.out), config.resolved())
        if find_checkpoint(config.out) is None:
            raise CheckpointError(f"{config.out}: no checkpoint found to resume from")
    else:
        check_out_folder(config, overwrite)


def check_out_folder(config: TrainConfig, overwrite: bool = False) -> str | None:
    """Refuse (``ValueError``) a fresh run's ``out`` folder that holds something a run would overwrite.

    Returns what ``overwrite`` allows replacing (``None`` when the folder is free or holds a run of the same
    settings without a checkpoint); an existing file is refused even with ``overwrite``.
    """
    resolved = config.resolved()

    def same_run(stored: Mapping[str, Any]) -> bool:
        _check_resumable(TrainConfig.from_dict(stored), resolved)
        return True

    problem = out_folder_problem(Path(config.out), same_run)
    if problem is not None and problem.endswith("not a folder"):
        raise ValueError(f"{problem}; choose a folder name")
    if problem is not None and not overwrite:
        raise ValueError(
            f"{problem}; pass resume=True (--resume) to continue it, overwrite=True (--overwrite) to replace it, "
            "or choose another output folder"
        )
    return problem


def check_amp_device(amp: str, device: torch.device) -> None:
    """fp16 autocast needs a CUDA device (its gradient scaler is CUDA-only here); bf16 works everywhere."""
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp='fp16' (--amp fp16) needs a CUDA device, not {device}; use bf16 (--amp bf16) on CPU")


def model_spec(config: TrainConfig, bundle: DataBundle) -> dict[str, Any]:
    """The model section of ``config.json`` (flow, data shape, network) for a resolved config and its data."""
    from bfn.checkpoint import FORMAT_VERSION

    if config.flow == "continuous":
        flow_config: dict[str, Any] = {"sigma_1": config.sigma_1, "clip": True}
    elif config.flow == "discretised":
        flow_config = {"num_bins": bundle.num_bins, "sigma_1": config.sigma_1}
    else:
        flow_config = {"num_classes": bundle.num_classes, "beta_1": config.beta_1}
    spec: dict[str, Any] = {
        "format": "bfn",
        "version": FORMAT_VERSION,
        "flow": {"kind": config.flow, "config": flow_config},
        "data_shape": list(bundle.data_shape),
        "net": {"name": config.net, "options": dict(config.net_options or {})},
    }
    if config.conditional:
        num_classes = label_count(bundle)
        spec["net"]["options"]["num_classes"] = num_classes
        spec.update(num_classes=num_classes, label_dropout=config.label_dropout)
    return spec


def label_count(bundle: DataBundle) -> int:
    """Number of classes of a data set's labels (``ValueError`` when it has none)."""
    if not bundle.labels:
        raise ValueError(
            f"conditional training needs class labels; {bundle.info.get('name', 'this data set')} has none "
            "(labelled: digits, mnist, fashion-mnist, cifar10, toy:eight_gaussians, toy:checkerboard)"
        )
    return int(max(int(y.max()) for y in bundle.labels.values() if y.numel())) + 1


class LabelledItems(Dataset):
    """Items ``(x, y)``: a dataset's items with their class labels (int64)."""

    def __init__(self, items: Dataset, labels: Tensor) -> None:
        if len(items) != len(labels):  # type: ignore[arg-type]
            raise ValueError(f"{len(items)} items but {len(labels)} labels")  # type: ignore[arg-type]
        self.items, self.labels = items, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.items[index], self.labels[index]


def _json_safe(value: Any) -> Any:
    """``value`` with anything JSON cannot hold turned into a string."""
    return json.loads(json.dumps(value, default=str))


# ================================================================================================== loss


class _LocalRows(nn.Module):
    """Runs ``net`` on rows ``[start, stop)`` of a global batch only; the other rows' outputs are zeros.

    Their losses are computed (cheap elementwise flow maths) but never used, so no gradient reaches them.
    """

    def __init__(self, net: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        self.net = net
        self.start, self.stop = start, stop

    def forward(self, inputs: Tensor, tau: Tensor, *labels: Tensor) -> Tensor:
        rows = slice(self.start, self.stop)
        out = self.net(inputs[rows], tau[rows], *(y[rows] for y in labels))
        before = out.new_zeros((self.start, *out.shape[1:]))
        after = out.new_zeros((inputs.shape[0] - self.stop, *out.shape[1:]))
        return torch.cat([before, out, after])


class _GlobalBatchLoss(nn.Module):
    """This rank's share of the training loss, with loss noise drawn for the whole global batch.

    ``forward(x_local)`` places the local examples at rows ``[r b, (r+1) b)`` of a global batch (the other rows are
    filler copies), draws the times and flow samples of all ``world_size * b`` rows from ``generator``, and
    returns the mean loss of the local rows in nats per data element.
    """

    def __init__(self, model: BFN, rank: int, world_size: int, batch_size: int, steps: int | None) -> None:
        super().__init__()
        self.world_size = world_size
        self.rows = slice(rank * batch_size, (rank + 1) * batch_size)
        net = model.net if world_size == 1 else _LocalRows(model.net, self.rows.start, self.rows.stop)
        conditional = {"num_classes": model.num_classes, "label_dropout": model.label_dropout}
        self.model = BFN(net, model.flow, model.data_shape, **conditional)
        self.steps = steps

    def forward(self, x: Tensor, generator: torch.Generator, labels: Tensor | None = None) -> Tensor:
        if self.world_size > 1:
            x = x.repeat(self.world_size, *([1] * (x.ndim - 1)))
            labels = labels.repeat(self.world_size) if labels is not None else None
        labels = self.model.drop_labels(labels, generator) if labels is not None else None
        per_example = self.model.loss_per_example(x, self.steps, generator, labels=labels)
        return per_example[self.rows].mean() / self.model.num_dims


class EMA:
    """Exponential moving average of a network's parameters (buffers are copied), kept in a separate copy.

    ``update(step)`` uses the decay ``min(decay, (1 + step) / (10 + step))``, so early averages are not dominated
    by the random initialisation.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        spec = net_spec(net)
        if spec is not None:  # the copy rebuilds like the original (save_pretrained of the EMA model)
            spec.record(self.net)
        self.source = net
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for ema_p, p in zip(self.net.parameters(), self.source.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.net.buffers(), self.source.buffers()):
            ema_b.copy_(b)


# ================================================================================================== evaluation


@torch.no_grad()
def evaluate_nll(
    model: BFN,
    dataset: Dataset,
    *,
    steps: int | None = None,
    max_examples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    samples: int = 1,
) -> float:
    """Mean NLL bound of the first ``max_examples`` examples of ``dataset`` in bits per data element.

    Uses ``model.nll`` (``L_inf + L_r``, or ``L_n + L_r`` with ``steps=n``) with its own generator seeded by
    ``seed``; torch's global random state is left untouched (``fork_rng``). Bits/dim for images, bits/char for text.
    """
    count = len(dataset) if max_examples is None else min(max_examples, len(dataset))  # type: ignore[arg-type]
    if count < 1:
        raise ValueError("the evaluation split is empty")
    device = model.device
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "eval-data"))
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "eval-noise"))
        for first in range(0, count, batch_size):
            x = torch.stack([dataset[i] for i in range(first, min(first + batch_size, count))]).to(device)
            total += float(model.nll(x, steps=steps, generator=generator, samples=samples).sum())
    model.train(was_training)
    return float(bits_per_dim(total / count, model.data_shape))


# ================================================================================================== logging


def read_log(path: str | os.PathLike[str]) -> list[dict[str, float | None]]:
    """Rows of a run's ``log.csv`` as dicts of floats (``None`` for empty cells)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()} for row in csv.DictReader(f)]


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log rows after ``last_step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f)]
    header, body = (rows[0], rows[1:]) if rows else (list(LOG_COLUMNS), [])
    kept = [row for row in body if row and row[0].isdigit() and int(row[0]) <= last_step]
    lines = [",".join(header)] + [",".join(row) for row in kept]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def nll_unit(info: Mapping[str, Any]) -> str:
    """The unit of an NLL per data element for a data description: ``bits/char`` for text, else ``bits/dim``."""
    return "bits/char" if is_text(info) else "bits/dim"


#: without a progress bar (off a terminal), training prints a progress line at least this often (seconds)
PROGRESS_SECONDS = 60.0


def plot_losses(log_path: str | os.PathLike[str], png_path: str | os.PathLike[str], unit: str = "bits/dim") -> Path:
    """Plot the training loss (and validation NLL in ``unit``, if logged) of a ``log.csv`` into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in rows], lw=0.6, alpha=0.5, label="training loss")
    if len(rows) >= 20:
        window = max(len(rows) // 50, 5)
        losses = torch.tensor([r["loss"] for r in rows], dtype=torch.float64)
        smooth = losses.unfold(0, window, 1).mean(1).tolist()
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"moving average ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per dimension)")
    handles, labels = ax.get_legend_handles_labels()
    val = [(r["step"], r["val_bpd"]) for r in rows if r["val_bpd"] is not None]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), "o-", color="C3", label=f"validation {unit} (EMA weights)")
        ax2.set_ylabel(f"validation {unit}", color="C3")
        more_handles, more_labels = ax2.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="upper right", fontsize="small")
    ax.set_title(f"{Path(log_path).parent.name}")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path.with_name(png_path.name + ".tmp.png"), dpi=100)
    plt.close(fig)
    os.replace(png_path.with_name(png_path.name + ".tmp.png"), png_path)
    return png_path


class _Log:
    """Rank 0's CSV log, flushed every row (so a killed run's log is complete up to its last step)."""

    def __init__(self, path: Path, start_step: int, enabled: bool) -> None:
        self.path = path
        self.file = None
        if not enabled:
            return
        if start_step > 0:
            _truncate_log(path, start_step)
        new = start_step == 0 or not path.is_file()
        self.file = open(path, "w" if new else "a", newline="")  # noqa: SIM115 (closed by close())
        if new:
            self.file.write(",".join(LOG_COLUMNS) + "\n")

    def write(self, step: int, loss: float, lr: float, grad_norm: float, val_bpd: float | None, elapsed: float):
        if self.file is None:
            return
        val = "" if val_bpd is None else repr(val_bpd)
        self.file.write(f"{step},{loss!r},{lr!r},{grad_norm!r},{val},{elapsed:.3f}\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


# ================================================================================================== signals


class _StopOnSignal(AbstractContextManager):
    """While active, SIGINT/SIGTERM set :attr:`signum` instead of killing the process; a second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        # only set the flag here: printing from a handler can re-enter a half-finished write
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopOnSignal:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()


# ================================================================================================== the loop


@dataclass
class StepInfo:
    """What a callback of :func:`train` sees after every step (on every rank)."""

    step: int
    loss: float
    lr: float
    grad_norm: float
    val_bpd: float | None


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        run_dir: the run folder.
        step: steps completed in total (including those before a resume).
        losses: training losses of the steps run in this call (global-batch means, nats per dimension).
        val_bpd: the last validation bits/dim (EMA weights), or ``None``.
        interrupted: name of the signal that stopped the run early (``"SIGINT"``/``"SIGTERM"``), else ``None``.
        elapsed: training wall time in seconds, including the time before each resume.
        model: the trained model (raw weights); ema_model: the same with EMA weights.
        world_size: processes that trained.
    """

    run_dir: Path
    step: int
    losses: list[float]
    val_bpd: float | None
    interrupted: str | None
    elapsed: float
    model: BFN
    ema_model: BFN
    world_size: int = 1


def train(
    config: TrainConfig, callback: Callable[[StepInfo], None] | None = None, *, overwrite: bool = False
) -> TrainResult:
    """Train a BFN as ``config`` says (see :class:`TrainConfig` and the module docstring); returns the result.

    Works unchanged under ``torchrun`` (one process per device). With ``config.resume`` the run in
    ``config.out`` continues from its latest checkpoint (falling back to the previous generation, with a warning,
    when the newest fails verification). Without it, a folder that holds a checkpoint, a saved model or the
    ``config.json`` of a run with other settings is an error (nothing is overwritten by accident) unless
    ``overwrite``, which first removes that folder's run and model files. A non-finite loss or gradient stops
    training with :class:`~bfn._checks.NonFiniteError` before the weights are updated (no checkpoint is written);
    with ``amp="fp16"`` the gradient scaler skips such steps instead, as usual.
    """
    context = DistContext.from_env(config.device)
    try:
        return _Trainer(config, context, callback, overwrite).run()
    finally:
        context.close()


class _Trainer:
    """State of one training run; :meth:`run` is the loop."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistContext,
        callback: Callable[[StepInfo], None] | None,
        overwrite: bool = False,
    ) -> None:
        self.ctx = ctx
        self.callback = callback
        self.run_dir = Path(config.out)
        check_amp_device(config.amp, ctx.device)
        checkpoint = self._previous_checkpoint(config, overwrite)
        self.config = config.resolved()
        self.bundle = load_bundle(self.config)
        self.spec = model_spec(self.config, self.bundle)
        if self.config.conditional:
            assert self.bundle.labels is not None  # model_spec checked
            self.bundle.train = LabelledItems(self.bundle.train, self.bundle.labels["train"])
        self._build_model()
        self.loss_generator = torch.Generator(device=ctx.device).manual_seed(derive_seed(self.config.seed, "loss"))
        torch.manual_seed(derive_seed(self.config.seed, "torch", ctx.rank))
        self.step = 0
        self.elapsed = 0.0
        if checkpoint is not None:
            self._restore(checkpoint)
        self._build_loss()
        self._build_loader()
        self.show_progress = ctx.is_main and (
            self.config.progress if self.config.progress is not None else sys.stderr.isatty()
        )

    # ---------------------------------------------------------------------------------------------- setup
    def _previous_checkpoint(self, config: TrainConfig, overwrite: bool = False) -> Any:
        """The checkpoint to resume from (``None`` for a fresh run); refuses to overwrite an existing run."""
        if config.resume:
            if overwrite:
                raise ValueError("resume and overwrite exclude each other (--resume continues the run in --out)")
            _check_resumable(load_run_config(self.run_dir), config.resolved())
            checkpoint = load_checkpoint(self.run_dir, map_location=self.ctx.device)
            check_resume_state(checkpoint.rng, checkpoint.path)
            return checkpoint
        problem = check_out_folder(config, overwrite)
        if problem is not None and self.ctx.is_main:
            clear_run_folder(self.run_dir)
        self.ctx.barrier()
        return None

    def _build_model(self) -> None:
        """The model (seeded identically on every rank), its EMA copy, the optimizer and the gradient scaler."""
        torch.manual_seed(derive_seed(self.config.seed, "init"))
        self.model = build_model(self.spec).to(self.ctx.device).train()
        self.ema = EMA(self.model.net, self.config.ema_decay)
        self.ema_model = BFN(self.ema.net, self.model.flow, self.model.data_shape, num_classes=self.model.num_classes)
        self.optimizer = torch.optim.AdamW(
            self.model.net.parameters(),
            lr=self.config.lr,
            betas=self.config.betas,
            weight_decay=self.config.weight_decay,
        )
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.config.amp == "fp16")

    def _build_loss(self) -> None:
        """This rank's loss module, wrapped in ``DistributedDataParallel`` when there are several processes."""
        ctx = self.ctx
        self.loss_module: nn.Module = _GlobalBatchLoss(
            self.model, ctx.rank, ctx.world_size, self.config.batch_size, self.config.loss_steps
        )
        if self.config.compile:
            self.loss_module.model.compile_core()  # type: ignore[operator]
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)

    def _build_loader(self) -> None:
        """The sharded sampler and the DataLoader (with its own generator, so it never draws from the global one)."""
        self.sampler = GlobalBatchSampler(
            self.bundle.train,
            self.config.batch_size,
            num_replicas=self.ctx.world_size,
            rank=self.ctx.rank,
            seed=derive_seed(self.config.seed, "order"),
        )
        self.loader = DataLoader(
            self.bundle.train,
            batch_size=self.config.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(derive_seed(self.config.seed, "loader")),
        )

    # ---------------------------------------------------------------------------------------------- state
    def _restore(self, checkpoint: Any) -> None:
        """Load weights, optimizer and generator states from a checkpoint."""
        self.model.net.load_state_dict(checkpoint.model)
        self.ema.net.load_state_dict(checkpoint.ema)
        self.optimizer.load_state_dict(checkpoint.optimizer["optimizer"])
        if checkpoint.optimizer.get("scaler"):
            self.scaler.load_state_dict(checkpoint.optimizer["scaler"])
        rng = checkpoint.rng
        self.loss_generator.set_state(rng["loss"])
        per_rank = rng.get("torch", [])
        if len(per_rank) == self.ctx.world_size:
            torch.set_rng_state(per_rank[self.ctx.rank])
        else:  # another world size: fresh but deterministic dataset randomness
            torch.manual_seed(derive_seed(self.config.seed, "torch", self.ctx.rank, checkpoint.step))
        cuda = rng.get("cuda") or []
        if self.ctx.device.type == "cuda" and len(cuda) == self.ctx.world_size and cuda[self.ctx.rank] is not None:
            torch.cuda.set_rng_state(cuda[self.ctx.rank], self.ctx.device)
        self.step = checkpoint.step
        self.elapsed = float(checkpoint.state.get("elapsed", 0.0))

    def _checkpoint(self) -> None:
        """All ranks gather their generator states; rank 0 writes; everyone waits for the write."""
        cuda_state = torch.cuda.get_rng_state(self.ctx.device) if self.ctx.device.type == "cuda" else None
        states = self.ctx.gather((torch.get_rng_state(), cuda_state))
        if self.ctx.is_main:
            rng = {
                "loss": self.loss_generator.get_state(),
                "torch": [s[0] for s in states],
                "cuda": [s[1] for s in states],
            }
            optimizer = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}
            extra = {"elapsed": self.elapsed, "world_size": self.ctx.world_size, "saved": time.time()}
            save_checkpoint(
                self.run_dir, self.step, self.model.net.state_dict(), self.ema.net.state_dict(), optimizer, rng, extra
            )
        self.ctx.barrier()

    def _write_config(self) -> None:
        if not self.ctx.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            **self.spec,
            "train": self.config.to_dict(),
            "data": _json_safe(self.bundle.info),
            "world_size": self.ctx.world_size,
            "global_batch_size": self.config.batch_size * self.ctx.world_size,
        }
        atomic_write_json(self.run_dir / CONFIG_FILE, record)

    # ---------------------------------------------------------------------------------------------- step
    def _lr(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then constant."""
        warmup = self.config.warmup
        return self.config.lr * min(1.0, (step + 1) / warmup) if warmup > 0 else self.config.lr

    def _train_step(self, x: Tensor, lr: float, labels: Tensor | None = None) -> tuple[Tensor, float]:
        """Forward, backward, clip, optimizer and EMA update; returns the local loss and the gradient norm."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        amp = self.config.amp
        autocast = (
            torch.autocast(self.ctx.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
            if amp != "off"
            else nullcontext()
        )
        with autocast:
            loss = self.loss_module(x, self.loss_generator, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.net.parameters(), clip))
        if not self.scaler.is_enabled():  # fp16: the scaler skips non-finite steps itself
            check_finite_step(loss.detach(), grad_norm, self.step + 1)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.step)
        return loss.detach(), grad_norm

    def _validate(self) -> float | None:
        if not self.ctx.is_main:
            return None
        return evaluate_nll(
            self.ema_model,
            self.bundle.val,
            steps=self.config.loss_steps,
            max_examples=self.config.val_examples,
            seed=self.config.seed,
        )

    def _due(self, every: int) -> bool:
        return self.step == self.config.steps or (every > 0 and self.step % every == 0)

    # ---------------------------------------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        """The training loop (see the module docstring)."""
        from tqdm import tqdm

        cfg, ctx = self.config, self.ctx
        self._write_config()
        ctx.barrier()
        log = _Log(self.run_dir / LOG_FILE, self.step, ctx.is_main)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.show_progress, unit="step", dynamic_ncols=True)
        say = self._announcer(bar)
        self._greet(say)
        losses: list[float] = []
        val_bpd: float | None = None
        interrupted: str | None = None
        batches = _batches(self.loader, self.sampler, self.step)
        last = time.perf_counter()
        try:
            with _StopOnSignal() as stop:
                while self.step < cfg.steps:
                    info, stop_now = self._step(next(batches), stop)
                    now = time.perf_counter()
                    self.elapsed, last = self.elapsed + now - last, now
                    losses.append(info.loss)
                    val_bpd = info.val_bpd if info.val_bpd is not None else val_bpd
                    log.write(info.step, info.loss, info.lr, info.grad_norm, info.val_bpd, self.elapsed)
                    self._show(bar, say, info, val_bpd)
                    if self.callback is not None:
                        self.callback(info)
                    if stop_now or self._due(cfg.ckpt_every):
                        self._checkpoint()
                    if stop_now:
                        interrupted = signal.Signals(stop.signum or signal.SIGTERM).name
                        say(
                            f"stopped by {interrupted} at step {self.step}; checkpoint written to "
                            f"{self.run_dir}; continue with --resume"
                        )
                        break
        finally:
            bar.close()
            log.close()
        if ctx.is_main and (self.run_dir / LOG_FILE).is_file() and read_log(self.run_dir / LOG_FILE):
            plot_losses(self.run_dir / LOG_FILE, self.run_dir / PLOT_FILE, nll_unit(self.bundle.info))
        ctx.barrier()
        return TrainResult(
            run_dir=self.run_dir,
            step=self.step,
            losses=losses,
            val_bpd=val_bpd,
            interrupted=interrupted,
            elapsed=self.elapsed,
            model=self.model,
            ema_model=self.ema_model,
            world_size=ctx.world_size,
        )

    def _step(self, batch: Tensor | Sequence[Tensor], stop: _StopOnSignal) -> tuple[StepInfo, bool]:
        """One optimisation step (and validation when due); returns its record and whether to stop now."""
        ctx = self.ctx
        lr = self._lr(self.step)
        x, labels = (batch[0], batch[1].to(ctx.device)) if isinstance(batch, (list, tuple)) else (batch, None)
        local_loss, grad_norm = self._train_step(x.to(ctx.device, non_blocking=True), lr, labels)
        # one collective for the global loss and the stop flag (a signal may reach ranks at different steps)
        flag = torch.tensor(1.0 if stop.signum is not None else 0.0)
        shared = ctx.all_reduce_sum(torch.stack([local_loss.float().cpu(), flag]))
        self.step += 1
        val = self._validate() if self._due(self.config.val_every) else None
        return StepInfo(self.step, float(shared[0]) / ctx.world_size, lr, grad_norm, val), bool(shared[1] > 0)

    def _greet(self, say: Callable[[str], None]) -> None:
        cfg = self.config
        if self.step >= cfg.steps:
            say(f"{self.run_dir}: already trained for {self.step} >= {cfg.steps} steps; nothing to do")
            return
        params = sum(p.numel() for p in self.model.net.parameters())
        say(
            f"training {self.spec['flow']['kind']} BFN ({cfg.net}, {params:,} parameters) on {cfg.data} "
            f"for steps {self.step + 1}..{cfg.steps} with global batch {cfg.batch_size * self.ctx.world_size} "
            f"on {self.ctx.world_size} x {self.ctx.device}; run folder {self.run_dir}"
        )

    def _show(self, bar: Any, say: Callable[[str], None], info: StepInfo, val_bpd: float | None) -> None:
        """Progress bar postfix every 10 steps; a printed line at every validation; without a progress bar, also
        a line every :data:`PROGRESS_SECONDS` seconds (step, loss, speed, time left)."""
        unit = nll_unit(self.bundle.info)
        if self.show_progress and (info.step % 10 == 0 or info.val_bpd is not None):
            extra = {"val": f"{val_bpd:.4f} {unit}"} if val_bpd is not None else {}
            bar.set_postfix(loss=f"{info.loss:.4f}", **extra)
        bar.update(1)
        if info.val_bpd is not None:
            say(f"step {info.step}/{self.config.steps}: loss {info.loss:.4f}, validation {info.val_bpd:.4f} {unit}")
        elif not self.show_progress:
            now = time.perf_counter()
            since = getattr(self, "_last_line", None)
            if since is None:
                self._last_line = self._line_start = (now, info.step - 1)
            elif now - since[0] >= PROGRESS_SECONDS:
                rate = (info.step - self._line_start[1]) / max(now - self._line_start[0], 1e-9)
                left = (self.config.steps - info.step) / rate if rate > 0 else math.inf
                say(
                    f"step {info.step}/{self.config.steps}: loss {info.loss:.4f}, {rate:.2f} steps/s, "
                    f"about {timedelta(seconds=round(left))} left"
                )
                self._last_line = (now, info.step)

    def _announcer(self, bar: Any) -> Callable[[str], None]:
        """Rank 0 prints messages (through the progress bar when it is shown); other ranks stay quiet."""

        def say(message: str) -> None:
            if not self.ctx.is_main:
                return
            if self.show_progress:
                bar.write(message)
            else:
                print(message, flush=True)

        return say


# ================================================================================================== sampling outputs


def steps_for_nfe(sampler: str, kind: str, nfe: int, **options: Any) -> int:
    """The steps of ``sampler`` for a budget of ``nfe`` network calls (at least 1 step).

    :meth:`bfn.sampling.SamplerSpec.steps_for_nfe`, the inverse of the registry's cost model: e.g. 10 NFE is 9 steps
    of ``bfn`` (``n + 1`` calls) and 10 steps of ``bfn-solver++2`` (``n`` calls with ``final="drop"``); a budget
    below one step's cost still gets one step. ``"auto"`` counts network calls (steps = ``nfe``).
    """
    from bfn.sampling import get_sampler
    from bfn.sampling.auto import AUTO

    if sampler == AUTO:
        return nfe  # steps are network calls
    spec = get_sampler(sampler, kind)  # type: ignore[arg-type]
    final = options.get("final", "drop")
    return spec.steps_for_nfe(nfe, final) if nfe >= spec.nfe(1, final) else 1


def data_description(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``"data"`` section of a run folder's ``config.json`` (empty for a plain model folder)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return dict(json.loads(path.read_text()).get("data") or {})
    except (OSError, json.JSONDecodeError):
        return {}


def is_text(info: Mapping[str, Any]) -> bool:
    """Whether a data description is text (it lists an alphabet)."""
    return "alphabet" in info


def to_images(samples: Tensor, kind: str, num_classes: int | None = None) -> Tensor:
    """Image samples as floats in [-1, 1]: continuous/discretised unchanged; class indices ``k`` to ``2k/(K-1) - 1``."""
    if kind == "discrete":
        k = max((num_classes or 2) - 1, 1)
        return samples.to(torch.float32) * (2.0 / k) - 1.0
    return samples.to(torch.float32).clamp(-1.0, 1.0)


def image_grid(images: Tensor, columns: int | None = None, pad: int = 1) -> Tensor:
    """Tile images ``(N, C, H, W)`` in [-1, 1] into one ``(H', W', C)`` array in [0, 1] (white padding)."""
    n, c, h, w = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    grid = torch.ones(rows * (h + pad) + pad, columns * (w + pad) + pad, c)
    pixels = ((images.detach().cpu().float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def _upscale(grid: Tensor, min_size: int = 320) -> Tensor:
    factor = max(1, math.ceil(min_size / max(grid.shape[0], grid.shape[1])))
    return grid.repeat_interleave(factor, 0).repeat_interleave(factor, 1)


def _save_image(grid: Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    array = _upscale(grid).numpy()
    if array.shape[2] == 1:
        plt.imsave(path, array[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        plt.imsave(path, array)


def _save_scatter(points: Tensor, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    xy = points.detach().cpu().float()
    ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.6)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def natural_suffix(kind: str, data_shape: tuple[int, ...], text: bool = False) -> str:
    """The file suffix samples of this data are written with: ``.png`` (images, 2-D points), ``.txt``, ``.pt``."""
    image = len(data_shape) == 3 and data_shape[0] in (1, 3)
    points = tuple(data_shape) == (2,) and kind != "discrete"
    return ".png" if image or points else ".txt" if text else ".pt"


def write_samples(
    samples: Tensor,
    path: str | os.PathLike[str],
    *,
    kind: str,
    data_shape: tuple[int, ...],
    num_classes: int | None = None,
    text: bool = False,
    title: str = "",
    columns: int | None = None,
) -> Path:
    """Write samples in the format their data and ``path``'s suffix call for; returns the path written.

    * ``.pt``: the raw tensor (``torch.save``), for any data.
    * images (``data_shape = (C, H, W)``, C = 1 or 3): a PNG grid (``.png``; discrete classes map to grey levels)
      with ``columns`` images per row (default: a square).
    * text: one sample per line (``.txt``).
    * 2-D points: a PNG scatter plot.
    * anything else: the raw tensor.

    A path without a suffix gets the natural one (``.png``, ``.txt`` or ``.pt``); any other suffix than the
    natural one or ``.pt`` is a ``ValueError`` listing the supported ones (text is never written into a ``.png``).
    """
    path = Path(path)
    image = len(data_shape) == 3 and data_shape[0] in (1, 3)
    natural = natural_suffix(kind, data_shape, text)
    if not path.suffix:
        path = path.with_suffix(natural)
    suffix = path.suffix.lower()
    if suffix not in (natural, ".pt"):
        raise ValueError(
            f"{path}: these samples are written as {natural} or .pt, not {path.suffix!r} "
            "(supported suffixes: .png for images and 2-D points, .txt for text, .pt for any tensor)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".pt":
        torch.save(samples.detach().cpu(), path)
    elif natural == ".txt":
        from bfn.data import decode_text

        lines = decode_text(samples.reshape(samples.shape[0], -1))
        path.write_text("\n".join(lines) + "\n")
    elif image:
        _save_image(image_grid(to_images(samples, kind, num_classes), columns), path)
    else:
        _save_scatter(samples, path, title)
    return path


# ================================================================================================== sample quality


@dataclass
class QualityMetric:
    """A sample-quality metric for one data set: ``score(samples) -> float`` (lower or higher is better)."""

    name: str
    score: Callable[[Tensor], float]
    higher_is_better: bool = False


def quality_metric(
    data: str, bundle: DataBundle, kind: str, num_classes: int | None = None, seed: int = 0
) -> QualityMetric | None:
    """The sample-quality metric for a data set, or ``None`` when there is none.

    * ``digits`` images: FID-digits (:func:`bfn.metrics.image_fid` on the shipped digits classifier's features)
      against the training split; ``mnist`` / ``fashion-mnist``: FID-<name> with a classifier trained on the
      training split if none is cached (needs the labels).
    * text: spelling accuracy (:func:`bfn.metrics.spelling_accuracy`, higher is better).
    * 2-D toy data: :func:`bfn.metrics.sliced_wasserstein` against the test split.
    """
    from torch.utils.data import Subset

    source = data_source(data)
    info = bundle.info
    if is_text(info):
        from bfn.data import decode_text
        from bfn.metrics import spelling_accuracy

        return QualityMetric(
            "spelling accuracy",
            lambda s: spelling_accuracy(decode_text(s.reshape(s.shape[0], -1))),
            higher_is_better=True,
        )
    if tuple(bundle.data_shape) == (2,):
        reference = torch.stack([bundle.test[i] for i in range(len(bundle.test))])  # type: ignore[arg-type]
        return QualityMetric("sliced W1", lambda s: sliced_wasserstein(s, reference, seed=seed))
    if len(bundle.data_shape) == 3 and source in ("digits", "mnist", "fashion-mnist"):
        from bfn.metrics import image_fid, load_feature_extractor

        count = min(len(bundle.train), 10_000)  # type: ignore[arg-type]
        subset = Subset(bundle.train, range(count))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            reference = to_images(torch.stack([subset[i] for i in range(count)]), kind, num_classes)
        if source == "digits":
            extractor = load_feature_extractor("digits")
        else:
            if bundle.labels is None:
                return None
            extractor = load_feature_extractor(source, images=reference, labels=bundle.labels["train"][:count])
        return QualityMetric(
            f"FID-{source}", lambda s: image_fid(to_images(s, kind, num_classes), reference, extractor)
        )
    return None


def require_metric(data: str, info: Mapping[str, Any]) -> None:
    """Fail before any work when the optional package behind ``data``'s quality metric is missing.

    FID needs ``torchmetrics`` and spelling accuracy ``spylls``, both from the ``metrics`` extra.
    """
    if is_text(info) or data_source(data) in ("text8", "kjv", "text"):
        require_extra("spylls", "metrics", f"the spelling-accuracy metric of {data}")
    elif data_source(data) in ("digits", "mnist", "fashion-mnist"):
        require_extra("torchmetrics", "metrics", f"FID on {data}")


# ================================================================================================== eval and demo


@dataclass
class EvalReport:
    """The outcome of :func:`evaluate_run`.

    Attributes:
        nll_bpd: ELBO NLL bound on the split in bits/dim (bits/char for text).
        pf_ode_bpd: PF-ODE NLL bound in bits/dim, when requested.
        metric: name of the sample-quality metric (``None`` when the data set has none).
        rows: one dict per (sampler, NFE): ``sampler``, ``nfe_budget``, ``steps``, ``nfe``, ``score``, ``seconds``.
        plot: path of the quality-vs-NFE plot, when written.
    """

    split: str
    examples: int
    nll_bpd: float
    pf_ode_bpd: float | None = None
    metric: str | None = None
    higher_is_better: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    plot: Path | None = None

    def table(self) -> str:
        """A plain-text table of the sample-quality rows."""
        if not self.rows:
            return ""
        score = self.metric or "score"
        lines = [f"{'sampler':<22}{'NFE budget':>11}{'steps':>7}{'NFE':>6}{score:>22}{'seconds':>9}"]
        for r in self.rows:
            value = format_score(self.metric, r["score"])
            lines.append(
                f"{r['sampler']:<22}{r['nfe_budget']:>11}{r['steps']:>7}{r['nfe']:>6}{value:>22}{r['seconds']:>9.2f}"
            )
        return "\n".join(lines)


def format_score(metric: str | None, score: float | None) -> str:
    """A sample-quality score at its precision: accuracies as a percent (one decimal), FID to 2 decimals, else
    4 significant digits."""
    if score is None:
        return "n/a"
    if metric is not None and "accuracy" in metric:
        return f"{100 * score:.1f}%"
    if metric is not None and metric.startswith("FID"):
        return f"{score:.2f}"
    return f"{score:.4g}"


def plot_quality(rows: list[dict[str, Any]], metric: str, path: str | os.PathLike[str]) -> Path:
    """Plot sample quality against NFE, one line per sampler, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["sampler"] for r in rows):
        points = [(r["nfe"], r["score"]) for r in rows if r["sampler"] == name and r["score"] is not None]
        if points:
            ax.plot(*zip(*points), "o-", label=name)
    ax.set_xlabel("NFE (network evaluations)")
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _split(bundle: DataBundle, split: str) -> Dataset:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return getattr(bundle, split)


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    max_examples: int | None = None,
    likelihood: bool = False,
    samplers: list[str] | None = None,
    nfes: list[int] | None = None,
    num_samples: int = 500,
    seed: int = 0,
    device: str = "auto",
    ema: bool = True,
    out_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> EvalReport:
    """Evaluate a training run: NLL on a split, optionally the PF-ODE NLL and sample quality against NFE.

    Args:
        run_dir: the run folder (its ``config.json`` says which data to load).
        split, max_examples: the examples scored (default: the whole test split).
        likelihood: also compute :func:`bfn.likelihood.pf_ode_nll` (tens to hundreds of network calls per example).
        samplers, nfes: sample ``num_samples`` with every sampler at every NFE budget (steps from
            :func:`steps_for_nfe`) and score them with :func:`quality_metric`.
        seed: seeds the NLL noise and the samplers.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        ema: use the EMA weights (default) or the raw ones.
        out_dir: where the quality plot (``quality.png``) and ``eval.json`` go (default: the run folder).
        log: progress messages.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if samplers:
        require_metric(config.data, data_description(run_dir))
    dev = _pick_device(device, 0)
    model = BFN.from_pretrained(run_dir, map_location=dev, ema=ema)
    bundle = load_bundle(config)
    dataset = _split(bundle, split)
    count = len(dataset) if max_examples is None else min(max_examples, len(dataset))  # type: ignore[arg-type]
    bpd = evaluate_nll(model, dataset, steps=config.loss_steps, max_examples=count, seed=seed)
    report = EvalReport(split=split, examples=count, nll_bpd=bpd)
    unit = nll_unit(bundle.info)
    log(f"{split} NLL (ELBO, {count} examples): {bpd:.4f} {unit}")
    if likelihood:
        report.pf_ode_bpd = _pf_ode_bpd(model, dataset, count, seed, log=log)
        log(f"{split} NLL (PF-ODE, {count} examples): {report.pf_ode_bpd:.4f} {unit}")
    if samplers:
        metric = quality_metric(config.data, bundle, model.flow.kind, getattr(model.flow, "num_classes", None), seed)
        report.metric = metric.name if metric else None
        report.higher_is_better = metric.higher_is_better if metric else False
        budgets = nfes or [10]
        for i, name in enumerate(samplers):
            for j, budget in enumerate(budgets):
                log(f"  [{i * len(budgets) + j + 1}/{len(samplers) * len(budgets)}] {name} @ {budget} NFE ...")
                report.rows.append(_quality_row(model, name, budget, num_samples, seed, metric))
                row = report.rows[-1]
                log(f"  {name} @ {budget} NFE: {format_score(report.metric, row['score'])} ({row['seconds']:.1f} s)")
        folder = Path(out_dir) if out_dir is not None else run_dir
        folder.mkdir(parents=True, exist_ok=True)
        if metric is not None:
            report.plot = plot_quality(report.rows, metric.name, folder / "quality.png")
        atomic_write_json(folder / "eval.json", _json_safe(dataclasses.asdict(report)))
    return report


def _pf_ode_bpd(
    model: BFN,
    dataset: Dataset,
    count: int,
    seed: int,
    batch_size: int = 64,
    log: Callable[[str], None] | None = None,
) -> float:
    from bfn.likelihood import pf_ode_nll

    generator = torch.Generator(device=model.device).manual_seed(derive_seed(seed, "pf-ode"))
    total = 0.0
    started = time.perf_counter()
    for first in range(0, count, batch_size):
        x = torch.stack([dataset[i] for i in range(first, min(first + batch_size, count))]).to(model.device)
        total += float(pf_ode_nll(model, x, generator=generator).nll.sum())
        done = min(first + batch_size, count)
        if log is not None and done < count:
            log(f"  PF-ODE likelihood: {done}/{count} examples ({time.perf_counter() - started:.0f} s)")
    return float(bits_per_dim(total / count, model.data_shape))


def _quality_row(
    model: BFN, sampler: str, budget: int, num_samples: int, seed: int, metric: QualityMetric | None
) -> dict[str, Any]:
    steps = steps_for_nfe(sampler, model.flow.kind, budget)
    generator = torch.Generator(device=model.device).manual_seed(derive_seed(seed, "sample", sampler, budget))
    started = time.perf_counter()
    out = model.sample(num_samples, sampler=sampler, steps=steps, generator=generator)
    seconds = time.perf_counter() - started
    score = metric.score(out.samples) if metric is not None else None
    row = {"sampler": sampler, "nfe_budget": budget, "steps": steps, "nfe": out.nfe}
    return {**row, "score": score, "seconds": seconds}


DEMO_STEPS = 3000


def demo_config(out: str | os.PathLike[str], steps: int = DEMO_STEPS, seed: int = 0, **changes: Any) -> TrainConfig:
    """The demo's training config: a discretised BFN (17 bins) with a small MLP on the 8x8 ``digits`` images.

    About 70 s of single-core CPU time for 3000 steps; the 1437 training images overfit a larger MLP or longer
    training (validation bits/dim rises again), and a U-Net, though better (about 1.75 bits/dim), is 3-4 times
    slower per step on a CPU.
    """
    base = TrainConfig(
        data="digits",
        flow="discretised",
        sigma_1=0.02,
        net="mlp",
        net_options={"hidden": 256, "depth": 3, "layer_norm": True},
        steps=steps,
        batch_size=128,
        lr=2e-3,
        warmup=200,
        ema_decay=0.998,
        val_every=max(steps // 4, 1),
        ckpt_every=max(steps // 4, 1),
        seed=seed,
        out=str(out),
    )
    return base.replace(**changes)


@dataclass
class DemoResult:
    """The outcome of :func:`run_demo`: the training result, test bits/dim, the PNG and each sampler's row."""

    train: TrainResult
    test_bpd: float
    image: Path
    rows: list[dict[str, Any]]
    metric: str | None


DEMO_SAMPLERS = ("bfn", "bfn-solver++3s")  # the original sampler and the best solver at 10 NFE (BENCHMARKS.md)


def run_demo(
    config: TrainConfig,
    *,
    nfe: int = 10,
    num_samples: int = 100,
    metric_samples: int = 500,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Train (or, if already trained, reload) the demo model, then compare the original sampler with
    BFN-Solver++3s at the same NFE: a side-by-side PNG (``demo.png`` in the run folder) and FID-digits scores.

    Returns the test bits/dim (ELBO, EMA weights) and each sampler's steps, NFE and score.
    """
    run_dir = Path(config.out)
    if metric_samples:
        require_metric(config.data, {})
    if find_checkpoint(run_dir) is not None and not config.resume:
        config = config.replace(resume=True)
    result = train(config)
    model = result.ema_model.eval()
    bundle = load_bundle(result_config := config.resolved())
    test_bpd = evaluate_nll(model, bundle.test, steps=result_config.loss_steps, seed=config.seed)
    metric = quality_metric(result_config.data, bundle, model.flow.kind, seed=config.seed) if metric_samples else None
    rows, grids = [], []
    for name in DEMO_SAMPLERS:
        row = _quality_row(model, name, nfe, max(num_samples, metric_samples), config.seed, metric)
        generator = torch.Generator(device=model.device).manual_seed(derive_seed(config.seed, "demo", name))
        shown = model.sample(num_samples, sampler=name, steps=row["steps"], generator=generator)
        rows.append(row)
        grids.append(image_grid(to_images(shown.samples, model.flow.kind)))
        scored = f", {metric.name} {format_score(metric.name, row['score'])}" if metric else ""
        log(f"{name}: {row['steps']} steps, {row['nfe']} NFE{scored}")
    image = _side_by_side(grids, rows, metric.name if metric else None, run_dir / "demo.png")
    return DemoResult(result, test_bpd, image, rows, metric.name if metric else None)


def _side_by_side(grids: list[Tensor], rows: list[dict[str, Any]], metric: str | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 5.4))
    for ax, grid, row in zip(axes, grids, rows):
        ax.imshow(grid.squeeze(-1).numpy() if grid.shape[-1] == 1 else grid.numpy(), cmap="gray", vmin=0, vmax=1)
        score = f"\n{metric} = {row['score']:.2f}" if metric and row["score"] is not None else ""
        ax.set_title(f"{row['sampler']}: {row['nfe']} NFE{score}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
