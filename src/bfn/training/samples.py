"""Writing samples: PNG image grids, scatter plots of 2-D points, text files (one sample per line), raw tensors."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from bfn.flows import Flow

__all__ = ["image_grid", "natural_suffix", "to_images", "write_samples"]


def to_images(samples: Tensor, flow: Flow) -> Tensor:
    """Image samples (or data) of ``flow`` as float32 in [-1, 1]: ``2 u - 1`` of the flow's display intensity
    ``u = flow.to_unit(samples)`` (:meth:`bfn.flows.Flow.to_unit`; class indices ``k`` become ``2k/(K-1) - 1``)."""
    return flow.to_unit(samples).to(torch.float32) * 2.0 - 1.0


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


def natural_suffix(flow: Flow | type[Flow], data_shape: tuple[int, ...], text: bool = False) -> str:
    """The file suffix samples of this data are written with: ``.png`` (images, 2-D points), ``.txt``, ``.pt``.

    2-D points are two real coordinates, so a flow whose data are class indices (``flow.class_indices``) never has
    them."""
    image = len(data_shape) == 3 and data_shape[0] in (1, 3)
    points = tuple(data_shape) == (2,) and not flow.class_indices
    return ".png" if image or points else ".txt" if text else ".pt"


def write_samples(
    samples: Tensor,
    path: str | os.PathLike[str],
    *,
    flow: Flow,
    data_shape: tuple[int, ...],
    text: bool = False,
    title: str = "",
    columns: int | None = None,
) -> Path:
    """Write samples in the format their data and ``path``'s suffix call for; returns the path written.

    * ``.pt``: the raw tensor (``torch.save``), for any data.
    * images (``data_shape = (C, H, W)``, C = 1 or 3): a PNG grid (``.png``; ``flow.to_unit`` gives the grey
      levels, so classes map to evenly spaced ones) with ``columns`` images per row (default: a square).
    * text: one sample per line (``.txt``).
    * 2-D points: a PNG scatter plot.
    * anything else: the raw tensor.

    A path without a suffix gets the natural one (``.png``, ``.txt`` or ``.pt``); any other suffix than the
    natural one or ``.pt`` is a ``ValueError`` listing the supported ones (text is never written into a ``.png``).
    """
    path = Path(path)
    image = len(data_shape) == 3 and data_shape[0] in (1, 3)
    natural = natural_suffix(flow, data_shape, text)
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
        _save_image(image_grid(to_images(samples, flow), columns), path)
    else:
        _save_scatter(samples, path, title)
    return path
