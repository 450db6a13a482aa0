"""Defaults per data source: the recipes measured in BENCHMARKS.md, as tables that :meth:`TrainConfig.resolved
<bfn.training.TrainConfig.resolved>` reads.

Each table maps a data source (the part of a data set name before ``:``, :func:`data_source`) to a value, with
``"default"`` for every other source; :data:`SOURCE_DEFAULTS` names the :class:`~bfn.training.TrainConfig` field each
table fills. The flow-specific fields (:data:`FLOW_FIELDS`) apply where the flow's constructor takes them
(:func:`flow_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BATCH_SIZE",
    "BETA_1",
    "DEFAULT_FLOWS",
    "DEFAULT_NETS",
    "EMA_DECAY",
    "FLOW_FIELDS",
    "LR",
    "SEQ_LEN",
    "SIGMA_1",
    "SOURCE_DEFAULTS",
    "STEPS",
    "data_source",
    "flow_fields",
    "flows_taking",
    "source_default",
]

#: default network per data source (the part of the data name before ``:``)
DEFAULT_NETS: dict[str, tuple[str, dict[str, Any]]] = {
    "toy": ("mlp", {"hidden": 256, "depth": 3}),
    "digits": ("mlp", {"hidden": 512, "depth": 3}),
    "mnist": ("unet", {}),
    "fashion-mnist": ("unet", {}),
    "cifar10": ("unet", {}),
    "text8": ("transformer", {"conv_kernel": 5}),
    "kjv": ("transformer", {"width": 128, "depth": 3, "heads": 4, "conv_kernel": 5}),
    "text": ("transformer", {"conv_kernel": 5}),
}

#: default flow (data kind) per data source: 2-D toy points are continuous, text is discrete (characters), and
#: images (``"default"``: digits, mnist, fashion-mnist, cifar10) are discretised into one bin per grey level
DEFAULT_FLOWS: dict[str, str] = {
    "default": "discretised",
    "toy": "continuous",
    "text8": "discrete",
    "kjv": "discrete",
    "text": "discrete",
}

#: default ``sigma_1`` of the flows that take one, per data source (``"default"``: any other source); toy data
#: 0.02, chosen by the sweep in BENCHMARKS.md ("Toy recipes by measurement")
SIGMA_1: dict[str, float] = {"default": 1e-3, "toy": 0.02}

#: default ``beta_1`` of the flows that take one, per data source (``"default"``: any other source, binary images)
BETA_1: dict[str, float] = {"default": 3.0, "text8": 0.75, "kjv": 0.75, "text": 0.75}

#: default AdamW learning rate per data source; toy data 3e-3 (BENCHMARKS.md, "Toy recipes by measurement")
LR: dict[str, float] = {"default": 1e-3, "toy": 3e-3}

#: default EMA decay per data source; toy data 0.99 (BENCHMARKS.md, "Toy recipes by measurement")
EMA_DECAY: dict[str, float] = {"default": 0.999, "toy": 0.99}

#: default optimisation steps per data source; KJV text 10,500 (the 45-minute CPU budget of the text recipe,
#: BENCHMARKS.md "Text recipe")
STEPS: dict[str, int] = {"default": 2000, "kjv": 10_500}

#: default batch size (per process) per data source; KJV text 64 (BENCHMARKS.md, "Text recipe")
BATCH_SIZE: dict[str, int] = {"default": 128, "kjv": 64}

#: default characters per example of text sources; KJV text 64 (BENCHMARKS.md, "Text recipe")
SEQ_LEN: dict[str, int] = {"default": 256, "kjv": 64}

#: the :class:`TrainConfig` fields whose ``None`` default :meth:`TrainConfig.resolved` fills from a table per data
#: source (``sigma_1`` and ``beta_1`` only for a flow that takes them)
SOURCE_DEFAULTS: dict[str, Mapping[str, Any]] = {
    "flow": DEFAULT_FLOWS,
    "seq_len": SEQ_LEN,
    "steps": STEPS,
    "batch_size": BATCH_SIZE,
    "sigma_1": SIGMA_1,
    "beta_1": BETA_1,
    "lr": LR,
    "ema_decay": EMA_DECAY,
}

#: the :class:`TrainConfig` fields that apply to some flows only (:func:`flow_fields`)
FLOW_FIELDS = ("sigma_1", "num_bins", "beta_1", "binarize")


def data_source(data: str) -> str:
    """The source part of a data set name: ``"toy:two_moons"`` -> ``"toy"``, ``"text:a.txt"`` -> ``"text"``."""
    return data.partition(":")[0].strip().lower().replace("_", "-")


def source_default(table: Mapping[str, Any], data: str) -> Any:
    """The entry of a per-source table (:data:`SOURCE_DEFAULTS`) for a data set name, else its ``"default"``."""
    return table.get(data_source(data), table["default"])


def flow_fields(flow: str) -> tuple[str, ...]:
    """The fields of :data:`FLOW_FIELDS` that apply to the flow of kind ``flow``: its constructor's arguments among
    them (:meth:`bfn.flows.Flow.config_keys`), and ``binarize`` (dynamic binarisation of images) when its data are
    class indices (:attr:`bfn.flows.Flow.class_indices`)."""
    from bfn.flows import flow_type

    cls = flow_type(flow)
    keys = set(cls.config_keys()) | ({"binarize"} if cls.class_indices else set())
    return tuple(name for name in FLOW_FIELDS if name in keys)


def flows_taking(field_name: str) -> tuple[str, ...]:
    """The flows (data kinds) that a field of :data:`FLOW_FIELDS` applies to (:func:`flow_fields`)."""
    from bfn.flows import KINDS

    return tuple(name for name in KINDS if field_name in flow_fields(name))
