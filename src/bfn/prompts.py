"""Command-line conditioning inputs: label lists, image inpainting masks and text prompts with unknown characters.

Each function turns what a user types into the ``labels`` or the ``known`` / ``mask`` tensors of
:meth:`bfn.BFN.sample` (see :mod:`bfn.sampling.conditioning`), checking it against the model first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from bfn.flows import Flow

UNKNOWN_CHAR = "_"
"""In a text prompt, each ``_`` is one character to fill in."""


def parse_labels(text: str, num_classes: int | None) -> list[int]:
    """``"3"``, ``"0,1,7"`` or ``"all"`` (every class) as a list of labels in ``0..C-1``."""
    if num_classes is None:
        raise ValueError("--label needs a class-conditional model (train it with --conditional)")
    if text.strip() == "all":
        return list(range(num_classes))
    try:
        labels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--label must be an integer, a comma-separated list or 'all', got {text!r}") from None
    bad = [v for v in labels if not 0 <= v < num_classes]
    if not labels or bad:
        raise ValueError(f"--label values must lie in 0..{num_classes - 1}, got {text!r}")
    return labels


def parse_rect(text: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` (pixels, ``x1``/``y1`` exclusive) as a tuple of four ints."""
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--mask-rect must look like x0,y0,x1,y1 (four integers), got {text!r}") from None
    if x1 <= x0 or y1 <= y0 or min(x0, y0) < 0:
        raise ValueError(f"--mask-rect needs 0 <= x0 < x1 and 0 <= y0 < y1, got {text!r}")
    return x0, y0, x1, y1


def read_image(path: str | os.PathLike[str], channels: int, height: int, width: int) -> Tensor:
    """A PNG (or any image PIL reads) as floats in [0, 1], shape ``(channels, height, width)`` (resized if needed)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    image = Image.open(path).convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def image_known(
    image: str | os.PathLike[str],
    data_shape: tuple[int, ...],
    flow: Flow,
    rect: tuple[int, int, int, int] | None = None,
    mask_image: str | os.PathLike[str] | None = None,
) -> tuple[Tensor, Tensor]:
    """Known values and mask for image inpainting: the region to fill is ``rect`` or the white pixels of
    ``mask_image``; everything else is known. The image's intensities in [0, 1] become the model's data through
    its flow (:meth:`bfn.flows.Flow.from_unit`: continuous [-1, 1], discretised bin centres, discrete classes).
    Returns ``(known, mask)`` of shape ``data_shape``."""
    if len(data_shape) != 3:
        raise ValueError(f"--inpaint needs an image model (data shape (C, H, W)), got {data_shape}")
    if (rect is None) == (mask_image is None):
        raise ValueError("--inpaint needs exactly one of --mask-rect x0,y0,x1,y1 or --mask PNG (the region to fill)")
    c, h, w = data_shape
    known = flow.from_unit(read_image(image, c, h, w))
    if rect is not None:
        x0, y0, x1, y1 = rect
        if x1 > w or y1 > h:
            raise ValueError(f"--mask-rect {rect} lies outside the {w}x{h} image")
        fill = torch.zeros(h, w, dtype=torch.bool)
        fill[y0:y1, x0:x1] = True
    else:
        fill = read_image(mask_image, 1, h, w)[0] >= 0.5  # type: ignore[arg-type]
    return known, (~fill).expand(c, h, w).clone()


def prompt_known(prompt: str, seq_len: int) -> tuple[Tensor, Tensor]:
    """Known characters and mask for text infilling from a prompt such as ``"in the beginning ___ created"``.

    Each ``_`` is one unknown character; letters are lower-cased and every other character becomes a space (one
    character each, so the prompt's positions are kept). A prompt shorter than ``seq_len`` is completed with
    unknown characters at the end (prefix completion); start it with ``_`` characters for suffix completion.
    Returns ``(known, mask)`` of shape ``(seq_len,)``.
    """
    from bfn.data import ALPHABET

    if len(prompt) > seq_len:
        raise ValueError(f"--prompt has {len(prompt)} characters; the model's sequences have {seq_len}")
    known = torch.zeros(seq_len, dtype=torch.long)
    mask = torch.zeros(seq_len, dtype=torch.bool)
    for i, char in enumerate(prompt.lower()):
        if char != UNKNOWN_CHAR:
            known[i] = ALPHABET.index(char) if char in ALPHABET else 0
            mask[i] = True
    return known, mask
