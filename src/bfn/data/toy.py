"""Generated 2-D toy data sets, scaled into the open square (-1, 1)^2 (points are clamped to +-0.99)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bfn._checks import check_int
from bfn.data.core import DataBundle, TensorItems

__all__ = ["TOY_SETS", "toy_bundle", "toy_labels", "toy_points"]

LIMIT = 0.99
"""Largest absolute coordinate; the continuous flow clips predictions to [-1, 1], so data stays strictly inside."""


def two_moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved half circles with Gaussian noise (std 0.06 before scaling)."""
    angle = rng.uniform(0.0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x - 0.5, y - 0.25], axis=1) + rng.normal(0.0, 0.06, (n, 2))
    return points * 0.5


def eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    """Eight isotropic Gaussians (std 0.05) centred on a circle of radius 0.7."""
    angle = rng.integers(0, 8, n) * (np.pi / 4)
    centres = 0.7 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + rng.normal(0.0, 0.05, (n, 2))


def checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the 8 dark squares of a 4x4 checkerboard covering [-0.9, 0.9]^2."""
    cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=np.float64)
    cell = cells[rng.integers(0, len(cells), n)]
    return (cell + rng.random((n, 2))) * 0.45 - 0.9


def swiss_roll(rng: np.random.Generator, n: int) -> np.ndarray:
    """A 2-D Swiss roll ``r(s) (cos s, sin s)`` with ``s`` in [1.5 pi, 4.5 pi], plus Gaussian noise."""
    s = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    points = np.stack([s * np.cos(s), s * np.sin(s)], axis=1) / (4.5 * np.pi)
    return 0.85 * points + rng.normal(0.0, 0.015, (n, 2))


TOY_SETS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "swiss_roll": swiss_roll,
}
"""Generators by name: ``(rng, n) -> (n, 2)`` float64 points before clamping."""


def toy_points(name: str, n: int, seed: int | list[int]) -> torch.Tensor:
    """``n`` points of the toy set ``name`` drawn with ``numpy.random.default_rng(seed)``, float32 ``(n, 2)``."""
    if name not in TOY_SETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {', '.join(TOY_SETS)}")
    points = np.clip(TOY_SETS[name](np.random.default_rng(seed), n), -LIMIT, LIMIT)
    return torch.from_numpy(points.astype(np.float32))


def toy_labels(name: str, points: torch.Tensor) -> torch.Tensor | None:
    """Component labels of toy points, int64 ``(n,)``, for the sets made of components (else ``None``).

    ``eight_gaussians``: the nearest centre (0-7, counter-clockwise from angle 0; the centres are 11 standard
    deviations apart, so this is the generating component); ``checkerboard``: the dark square (0-7, row-major).
    """
    x, y = points[:, 0].double(), points[:, 1].double()
    if name == "eight_gaussians":
        return (torch.round(torch.atan2(y, x) / (torch.pi / 4)) % 8).long()
    if name == "checkerboard":
        i = torch.floor((x + 0.9) / 0.45).clamp(0, 3).long()
        j = torch.floor((y + 0.9) / 0.45).clamp(0, 3).long()
        return (4 * i + j) // 2  # the dark squares (i + j even) in row-major order
    return None


def toy_bundle(
    name: str, *, split_seed: int = 0, num_train: int = 8000, num_val: int = 1000, num_test: int = 1000
) -> DataBundle:
    """Train/val/test samples of a toy set, each split from its own stream seeded by ``(split_seed, split)``."""
    if name not in TOY_SETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {', '.join(TOY_SETS)}")
    sizes = {
        split: check_int(n, f"num_{split}") for split, n in (("train", num_train), ("val", num_val), ("test", num_test))
    }
    index = list(TOY_SETS).index(name)
    data = {s: toy_points(name, n, [split_seed, index, k]) for k, (s, n) in enumerate(sizes.items())}
    labels = {s: toy_labels(name, points) for s, points in data.items()}
    return DataBundle(
        train=TensorItems(data["train"]),
        val=TensorItems(data["val"]),
        test=TensorItems(data["test"]),
        data_shape=(2,),
        kind="continuous",
        info={"name": f"toy:{name}", "source": f"generated: bfn.data.toy.{name}", "sizes": sizes},
        labels=labels if labels["train"] is not None else None,  # type: ignore[arg-type]
    )
