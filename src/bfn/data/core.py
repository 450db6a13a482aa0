"""Data bundle, errors, item datasets and the scaling of raw values to the range a flow expects.

Scaling per data kind (``L`` raw grey levels ``v = 0 .. L - 1``, ``K`` bins or classes), done by the flow
(:meth:`bfn.flows.Flow.from_levels`, with a flow of the data's resolution from :meth:`bfn.flows.Flow.for_data`):

- continuous: ``x = v / (L - 1) * 2 - 1`` in [-1, 1], float32;
- discretised: bin index ``k = floor(v * K / L)`` (clamped to ``K - 1``), value = bin centre
  ``(2k + 1) / K - 1`` (:func:`bins_to_centres`), float32;
- discrete: int64 class indices in [0, K) (binarised images: K = 2; text: K = 27).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from bfn.flows import Flow, FlowKind, flow_type
from bfn.flows.discretised import bins_to_centres, values_to_bins

__all__ = [
    "DataBundle",
    "DataUnavailableError",
    "DynamicBinarized",
    "LevelImages",
    "Scaling",
    "TensorItems",
    "binarize_once",
    "bins_to_centres",
    "cache_dir",
    "split_indices",
    "values_to_bins",
]


class DataUnavailableError(FileNotFoundError):
    """A data source is not installed or not found; the message says how to install it or where to point."""


@dataclass
class DataBundle:
    """Train/validation/test splits of one data set, scaled for a flow of the given kind.

    Attributes:
        train, val, test: datasets whose items are single tensors of shape ``data_shape``: float32 in [-1, 1]
            (continuous; discretised values are bin centres) or int64 class indices in [0, K) (discrete).
        data_shape: shape of one item, e.g. ``(1, 28, 28)``, ``(256,)`` or ``(2,)``.
        kind: ``"continuous"``, ``"discretised"`` or ``"discrete"``.
        num_classes: K for discrete data, else ``None``.
        num_bins: number of bins for discretised data, else ``None``.
        info: description: ``name``, ``source`` (path or package), ``sizes`` per split, and source specifics.
        labels: class labels per split (int64, aligned with the items) where the source has them, else ``None``.
    """

    train: Dataset[Tensor]
    val: Dataset[Tensor]
    test: Dataset[Tensor]
    data_shape: tuple[int, ...]
    kind: FlowKind
    num_classes: int | None = None
    num_bins: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Tensor] | None = None


def cache_dir() -> Path:
    """Directory for converted data: ``$BFN_CACHE`` if set, else ``~/.cache/bfn`` (not created here)."""
    env = os.environ.get("BFN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bfn"


@dataclass(frozen=True)
class Scaling:
    """Maps raw integer levels ``0 .. num_levels - 1`` to the values a flow of ``kind`` expects.

    The flow does it (:meth:`bfn.flows.Flow.from_levels`); discrete image data have ``K = 2`` classes, so their
    scaling thresholds the intensity ``v / (L - 1)`` at 1/2 (static binarisation).
    """

    kind: FlowKind
    num_levels: int
    num_bins: int | None = None

    @cached_property
    def flow(self) -> Flow:
        """A flow of ``kind`` at this resolution (:meth:`bfn.flows.Flow.for_data`; discrete: ``K = 2``)."""
        return flow_type(self.kind).for_data(num_bins=self.num_bins, num_classes=2, num_levels=self.num_levels)

    def __call__(self, levels: Tensor) -> Tensor:
        """Scale a tensor of raw levels (any shape)."""
        return self.flow.from_levels(levels, self.num_levels)


class TensorItems(Dataset[Tensor]):
    """Items are the rows ``data[i]`` of a tensor already in the flow's range."""

    def __init__(self, data: Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.data[index]


class LevelImages(Dataset[Tensor]):
    """Images kept as raw integer levels (compact, e.g. uint8) and scaled per item by a :class:`Scaling`."""

    def __init__(self, levels: Tensor, scaling: Scaling) -> None:
        self.levels = levels
        self.scaling = scaling

    def __len__(self) -> int:
        return self.levels.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.scaling(self.levels[index])


class DynamicBinarized(Dataset[Tensor]):
    """Dynamically binarised images: every access draws ``Bernoulli(v / (L - 1))`` per pixel, int64 in {0, 1}.

    Draws use torch's default random generator, so a run seeded with ``torch.manual_seed`` (and DataLoader
    workers, which derive their seeds from it) is reproducible.
    """

    def __init__(self, levels: Tensor, num_levels: int) -> None:
        self.levels = levels
        self.num_levels = num_levels

    def __len__(self) -> int:
        return self.levels.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        probs = self.levels[index].to(torch.float32) / (self.num_levels - 1)
        return torch.bernoulli(probs).long()


def binarize_once(levels: Tensor, num_levels: int, seed: int) -> Tensor:
    """One fixed Bernoulli binarisation of raw levels with its own seeded generator, int64 in {0, 1}."""
    generator = torch.Generator().manual_seed(seed)
    probs = levels.to(torch.float32) / (num_levels - 1)
    return torch.bernoulli(probs, generator=generator).long()


def split_indices(n: int, sizes: Sequence[int], seed: int) -> list[Tensor]:
    """Shuffle ``range(n)`` with ``seed`` and cut it into consecutive parts of the given sizes (summing to n)."""
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ValueError(f"split sizes {list(sizes)} do not partition {n} items")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.split(perm, list(sizes)))
