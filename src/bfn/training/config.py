"""Training configuration: :class:`TrainConfig`, its validation, and what a run folder's ``config.json`` holds (the
defaults per data source are in :mod:`bfn.training.recipes`).

``config.json`` of a run folder holds the model section (:class:`bfn.checkpoint.ModelConfig`, from
:meth:`TrainConfig.model_config`), the resolved training config (``"train"``, :func:`load_run_config`) and a
description of the data (``"data"``, :func:`data_description`). :func:`check_run_config` is everything
:func:`bfn.training.train` refuses before any work, checked without loading data (``bfn train --dry-run``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from bfn._checks import check_int
from bfn._runs import out_folder_problem
from bfn.checkpoint import CONFIG_FILE, CheckpointError, ModelConfig, find_checkpoint
from bfn.nets import NetSpec
from bfn.training.distributed import pick_device
from bfn.training.recipes import (
    DEFAULT_FLOWS,
    DEFAULT_NETS,
    FLOW_FIELDS,
    SOURCE_DEFAULTS,
    data_source,
    flow_fields,
    flows_taking,
    source_default,
)

if TYPE_CHECKING:
    from bfn.data import DataBundle
    from bfn.flows import Flow

__all__ = [
    "INTEGER_FIELDS",
    "RESUMABLE_FIELDS",
    "TrainConfig",
    "check_amp_device",
    "check_out_folder",
    "check_resumable",
    "check_run_config",
    "config_default",
    "data_description",
    "dataset_options",
    "is_text",
    "json_safe",
    "label_count",
    "load_bundle",
    "load_run_config",
    "nll_unit",
]

AmpMode = Literal["off", "bf16", "fp16"]

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


@dataclass
class TrainConfig:
    """Everything a training run depends on; JSON round-trip with :meth:`to_dict` / :meth:`from_dict`.

    ``None`` fields are filled by :meth:`resolved` from the data set and flow (the resolved config is what
    ``config.json`` stores): the flow, ``seq_len``, ``steps``, ``batch_size``, ``sigma_1`` / ``beta_1``, ``lr``
    and ``ema_decay`` from the tables per data source (:data:`SOURCE_DEFAULTS`), the network from
    :data:`DEFAULT_NETS`. KJV text defaults to the text recipe measured in BENCHMARKS.md ("Text recipe").

    Attributes:
        data: data set name (``digits``, ``mnist``, ``toy:two_moons``, ``text:PATH``, ...; see :mod:`bfn.data`).
        data_root: directory or file of a source that reads files (instead of ``NAME:PATH``).
        data_options: extra loader options (``val_size``; ``num_train``/``num_val``/``num_test`` for toy data).
        seq_len: characters per example for text (default 256; KJV 64; :data:`SEQ_LEN`).
        split_seed: seed of the train/validation split.
        binarize: dynamic binarisation of discrete image data.
        flow: ``"continuous"``, ``"discretised"`` or ``"discrete"`` (default by data: toy continuous, text
            discrete, images discretised; :data:`DEFAULT_FLOWS`).
        sigma_1: continuous/discretised flows: input standard deviation at ``tau = 1`` (default 1e-3; toy data
            0.02, chosen by the sweep in BENCHMARKS.md, "Toy recipes by measurement"; :data:`SIGMA_1`).
        num_bins: discretised flow: number of bins (default: one per grey level of the data).
        beta_1: discrete flow: final accuracy (default 3.0 for binary data, 0.75 for text; :data:`BETA_1`).
        The flow-specific fields apply where :func:`flow_fields` says (the flow's constructor arguments).
        net: ``"mlp"``, ``"unet"`` or ``"transformer"`` (default by data: toy/digits MLP, images U-Net, text
            Transformer); net_options: its keyword arguments.
        steps: optimisation steps in total (a resumed run may raise it; default 2000, KJV 10,500; :data:`STEPS`).
        batch_size: examples per step *per process*; global batch = ``batch_size * world_size`` (default 128, KJV
            64; :data:`BATCH_SIZE`).
        lr, weight_decay, betas: AdamW (``lr`` default 1e-3; toy data 3e-3, :data:`LR`). warmup: steps of linear
            learning-rate warm-up (then constant).
        grad_clip: maximum global gradient norm (``None``: no clipping; the norm is still logged).
        ema_decay: EMA decay, warmed up as ``min(ema_decay, (1 + step) / (10 + step))`` (default 0.999; toy data
            0.99, :data:`EMA_DECAY`).
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
    seq_len: int | None = None
    split_seed: int = 0
    binarize: bool = False
    flow: str | None = None
    sigma_1: float | None = None
    num_bins: int | None = None
    beta_1: float | None = None
    net: str | None = None
    net_options: dict[str, Any] | None = None
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = 100
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
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
    def flow_kind(self) -> str:
        """The flow (data kind) of this config: ``flow``, or the data source's default (:data:`DEFAULT_FLOWS`)."""
        return self.flow if self.flow is not None else source_default(DEFAULT_FLOWS, self.data)

    @property
    def loss_steps(self) -> int | None:
        """``None`` for the continuous-time loss, else ``n`` of the n-step loss."""
        return None if self.loss == "continuous" else int(self.loss)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        from bfn.flows import FLOWS

        if self.flow_kind not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}, got {self.flow!r}")
        for name, (low, high) in INTEGER_FIELDS.items():
            if getattr(self, name) is not None or name not in SOURCE_DEFAULTS:
                check_int(getattr(self, name), name, low, high)
        lr = 1.0 if self.lr is None else self.lr
        if not 0 < lr < math.inf or not 0 <= self.weight_decay < math.inf:
            raise ValueError(
                f"lr must be a finite number > 0 and weight_decay finite and >= 0, got {self.lr!r}, "
                f"{self.weight_decay!r}"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.grad_clip is not None and not 0 < self.grad_clip < math.inf:
            raise ValueError(f"grad_clip must be a finite number > 0 or None (no clipping), got {self.grad_clip!r}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if self.loss != "continuous":
            check_int(self.loss, "loss ('continuous' or the n of the n-step loss)")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp must be 'off', 'bf16' or 'fp16', got {self.amp!r}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.binarize and "binarize" not in flow_fields(self.flow_kind):
            raise ValueError(f"binarize applies to the {' and '.join(flows_taking('binarize'))} flow only")
        if not isinstance(self.conditional, bool):
            raise ValueError(f"conditional must be True or False, got {self.conditional!r}")
        if isinstance(self.label_dropout, bool) or not 0 <= self.label_dropout <= 1:
            raise ValueError(f"label_dropout must lie in [0, 1], got {self.label_dropout!r}")
        self._validate_parts()

    def _validate_parts(self) -> None:
        """The flow's and the network's own checks, before any data (``ValueError`` naming the field): the flow's
        constructor checks the flow fields given (those that apply to it) on a small flow of its kind."""
        from bfn.flows import flow_type
        from bfn.nets import check_net_options

        applies = flow_fields(self.flow_kind)
        given = {name: getattr(self, name) for name in applies if name != "binarize"}
        given = {name: value for name, value in given.items() if value is not None}
        if given:
            example = flow_type(self.flow_kind).for_data(num_levels=2)
            type(example)(**{**example.config(), **given})
        if self.net is not None:
            check_net_options(self.net, self.net_options or {})

    # ---------------------------------------------------------------------------------------------- defaults
    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` default filled in for this data set and flow (what ``config.json`` stores).

        The flow, ``lr`` and ``ema_decay`` come from the tables per data source (:data:`SOURCE_DEFAULTS`), and so
        do ``sigma_1`` / ``beta_1`` where the flow takes them (:func:`flow_fields`).

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
        applies = flow_fields(self.flow_kind)
        for name, table in SOURCE_DEFAULTS.items():
            if getattr(self, name) is None and (name not in FLOW_FIELDS or name in applies):
                changes[name] = source_default(table, self.data)
        return self.replace(**changes) if changes else self.replace()

    # ---------------------------------------------------------------------------------------------- model
    def flow_for(self, bundle: DataBundle) -> Flow:
        """The flow of this (resolved) config for its data: the flow's constructor arguments among ``sigma_1``,
        ``beta_1`` (from the config) and ``num_bins``, ``num_classes`` (from the data)."""
        from bfn.flows import flow_type

        values = {
            "sigma_1": self.sigma_1,
            "beta_1": self.beta_1,
            "num_bins": bundle.num_bins,
            "num_classes": bundle.num_classes,
        }
        cls = flow_type(self.flow_kind)
        accepted = cls.config_keys()
        return cls(**{k: v for k, v in values.items() if k in accepted and v is not None})

    def model_config(self, bundle: DataBundle) -> ModelConfig:
        """The model section of ``config.json`` (flow, data shape, network) for this resolved config and its data.

        A conditional config adds the data's class count to the network options and the model.
        """
        options = dict(self.net_options or {})
        if not self.conditional:
            return ModelConfig(self.flow_for(bundle), tuple(bundle.data_shape), NetSpec(self.net, options))  # type: ignore[arg-type]
        num_classes = label_count(bundle)
        options["num_classes"] = num_classes
        net = NetSpec(self.net, options)  # type: ignore[arg-type]
        return ModelConfig(self.flow_for(bundle), tuple(bundle.data_shape), net, num_classes, self.label_dropout)


def config_default(name: str) -> Any:
    """The default value of the :class:`TrainConfig` field ``name`` (``None``: set per data set and flow)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if name not in fields:
        raise ValueError(f"unknown training config field {name!r}")
    spec = fields[name]
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default  # type: ignore[misc]


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


def check_resumable(stored: TrainConfig, new: TrainConfig) -> None:
    """Refuse (``ValueError``) to resume a run stored with ``stored`` under ``new``, when any field outside
    :data:`RESUMABLE_FIELDS` differs; the message lists every change."""
    old, cur = stored.to_dict(), new.to_dict()
    changed = sorted(k for k in cur if k not in RESUMABLE_FIELDS and cur[k] != old.get(k))
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {cur[k]!r}" for k in changed)
        raise ValueError(
            f"cannot resume {new.out}: the run was trained with different settings ({details}); only "
            f"{', '.join(sorted(RESUMABLE_FIELDS))} may change on resume"
        )


def dataset_options(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`bfn.data.load_dataset` for a config (split, sequence length, bins,
    binarisation, root and the extra ``data_options``)."""
    kwargs: dict[str, Any] = dict(config.data_options)
    if "num_bins" in flow_fields(config.flow_kind):
        kwargs["num_bins"] = config.num_bins
    if config.data_root is not None:
        kwargs["root"] = config.data_root
    return {"split_seed": config.split_seed, "seq_len": config.seq_len, "binarize": config.binarize, **kwargs}


def load_bundle(config: TrainConfig) -> DataBundle:
    """Load the data set of a (resolved) config."""
    from bfn.data import load_dataset

    return load_dataset(config.data, config.flow_kind, **dataset_options(config))  # type: ignore[arg-type]


def check_run_config(config: TrainConfig, overwrite: bool = False) -> None:
    """What :func:`train` would refuse before any work, checked without loading data (``--dry-run``).

    The data set name and options (:func:`bfn.data.check_dataset`), ``amp="fp16"`` without CUDA, for ``resume``
    that the run folder holds a compatible run and a checkpoint, else that ``out`` may be written
    (:func:`check_out_folder`).
    """
    from bfn.data import check_dataset

    config.validate()
    check_dataset(config.data, config.flow_kind, **dataset_options(config))  # type: ignore[arg-type]
    check_amp_device(config.amp, pick_device(config.device, 0))
    if config.resume:
        check_resumable(load_run_config(config.out), config.resolved())
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
        check_resumable(TrainConfig.from_dict(stored), resolved)
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


def label_count(bundle: DataBundle) -> int:
    """Number of classes of a data set's labels (``ValueError`` when it has none)."""
    if not bundle.labels:
        raise ValueError(
            f"conditional training needs class labels; {bundle.info.get('name', 'this data set')} has none "
            "(labelled: digits, mnist, fashion-mnist, cifar10, toy:eight_gaussians, toy:checkerboard)"
        )
    return int(max(int(y.max()) for y in bundle.labels.values() if y.numel())) + 1


def json_safe(value: Any) -> Any:
    """``value`` with anything JSON cannot hold turned into a string."""
    return json.loads(json.dumps(value, default=str))


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


def nll_unit(info: Mapping[str, Any]) -> str:
    """The unit of an NLL per data element for a data description: ``bits/char`` for text, else ``bits/dim``."""
    return "bits/char" if is_text(info) else "bits/dim"
