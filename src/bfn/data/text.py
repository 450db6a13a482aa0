"""Character-level text: text8-style cleaning, the 27-symbol alphabet, and the text8, KJV and plain-file sources.

Cleaning (as for text8): ASCII letters are lower-cased; every other character (digits, punctuation, white
space, anything non-ASCII) becomes a space; runs of spaces collapse to one; leading and trailing spaces are
dropped. Symbols are indexed by :data:`ALPHABET`: 0 = space, 1..26 = a..z.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bfn._checks import check_int
from bfn.data.core import DataBundle, DataUnavailableError, cache_dir

__all__ = [
    "ALPHABET",
    "NUM_CHARS",
    "TextChunks",
    "clean_text",
    "decode_text",
    "encode_text",
    "load_kjv",
    "load_text8",
    "load_text_file",
    "strip_bible_markup",
    "text_bundle",
]

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
"""The 27 symbols; a symbol's index is its position (0 = space)."""
NUM_CHARS = len(ALPHABET)

_BYTE_TO_INDEX = np.zeros(256, dtype=np.uint8)
_BYTE_TO_INDEX[ord("a") : ord("z") + 1] = np.arange(1, 27)
_BYTE_TO_INDEX[ord("A") : ord("Z") + 1] = np.arange(1, 27)
_INDEX_TO_BYTE = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)

SPLIT_PERCENT = (90, 5, 5)
"""Contiguous train/validation/test shares of a text (text8's 90M/5M/5M, scaled to the text's length)."""


def clean_indices(raw: bytes) -> np.ndarray:
    """Clean raw bytes (any ASCII-compatible encoding, e.g. UTF-8) into symbol indices, uint8 of shape ``(n,)``."""
    idx = _BYTE_TO_INDEX[np.frombuffer(raw, dtype=np.uint8)]
    is_letter = idx != 0
    keep = is_letter.copy()
    keep[1:] |= is_letter[:-1]  # keep a space only right after a letter: collapses runs, drops leading spaces
    idx = idx[keep]
    if idx.size and idx[-1] == 0:
        idx = idx[:-1]
    return idx


def clean_text(text: str) -> str:
    """Clean ``text`` text8-style (see the module docstring), e.g. ``"Hello, World!"`` -> ``"hello world"``."""
    return decode_text(torch.from_numpy(clean_indices(text.encode("utf-8"))))  # type: ignore[return-value]


def encode_text(text: str) -> Tensor:
    """Clean ``text`` and return its symbol indices as an int64 tensor of shape ``(n,)``."""
    return torch.from_numpy(clean_indices(text.encode("utf-8"))).long()


def decode_text(indices: Tensor | np.ndarray | Sequence[int]) -> str | list[str]:
    """Turn symbol indices into text: a 1-D sequence gives a ``str``, a 2-D batch ``(B, L)`` a list of ``str``."""
    arr = np.asarray(indices.detach().cpu() if isinstance(indices, Tensor) else indices, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_CHARS):
        raise ValueError(f"symbol indices must lie in [0, {NUM_CHARS}), got range [{arr.min()}, {arr.max()}]")
    if arr.ndim == 2:
        return [_INDEX_TO_BYTE[row].tobytes().decode("ascii") for row in arr]
    if arr.ndim != 1:
        raise ValueError(f"decode_text expects a 1-D or 2-D array of indices, got shape {arr.shape}")
    return _INDEX_TO_BYTE[arr].tobytes().decode("ascii")


class TextChunks(Dataset[Tensor]):
    """Consecutive non-overlapping chunks of ``seq_len`` symbols (a trailing remainder is dropped), int64."""

    def __init__(self, indices: Tensor, seq_len: int) -> None:
        self.indices = indices
        self.seq_len = seq_len

    def __len__(self) -> int:
        return self.indices.shape[0] // self.seq_len

    def __getitem__(self, index: int) -> Tensor:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"chunk {index} out of range for {n} chunks")
        start = index * self.seq_len
        return self.indices[start : start + self.seq_len].long()


def text_bundle(name: str, indices: np.ndarray, seq_len: int, source: str) -> DataBundle:
    """Split cleaned text contiguously 90/5/5 % into train/val/test and cut each into ``seq_len`` chunks."""
    seq_len = check_int(seq_len, "seq_len")
    n = int(indices.shape[0])
    n_train = n * SPLIT_PERCENT[0] // 100
    n_val = n * SPLIT_PERCENT[1] // 100
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    data = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.uint8))
    splits = {s: TextChunks(data[a:b], seq_len) for s, (a, b) in bounds.items()}
    if any(len(d) == 0 for d in splits.values()):
        raise ValueError(
            f"{name}: {n} characters are too few for seq_len={seq_len}: each of the 90/5/5 % splits needs at "
            f"least one chunk, i.e. at least {20 * seq_len} characters"
        )
    return DataBundle(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        data_shape=(seq_len,),
        kind="discrete",
        num_classes=NUM_CHARS,
        info={
            "name": name,
            "source": source,
            "sizes": {s: len(d) for s, d in splits.items()},
            "characters": {s: b - a for s, (a, b) in bounds.items()},
            "seq_len": seq_len,
            "alphabet": ALPHABET,
        },
    )


# ----------------------------------------------------------------------------------------------- sources


def load_text_file(path: str | Path) -> np.ndarray:
    """Read and clean any text file; returns uint8 symbol indices."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataUnavailableError(f"text file {path} not found; use the name 'text:PATH' with an existing file")
    return clean_indices(path.read_bytes())


def text8_hint() -> str:
    """How to provide text8, for error messages."""
    return (
        "text8 needs a local copy: download http://mattmahoney.net/dc/text8.zip, unzip it, and use the name "
        f"'text8:PATH' or --data-root PATH (root=PATH in Python; the file, or a directory holding 'text8'); bfn also "
        f"looks for {cache_dir()}/text8."
    )


def load_text8(root: str | Path | None = None) -> tuple[np.ndarray, Path]:
    """Read the text8 file at ``root`` (a file, or a directory holding ``text8``; default: the cache directory).

    text8 is already clean (a-z and space); it is run through the same cleaning, which leaves it unchanged apart
    from a leading space.
    """
    if root is None:
        path = cache_dir() / "text8"
    else:
        path = Path(root).expanduser()
        path = path / "text8" if path.is_dir() else path
    if not path.is_file():
        raise DataUnavailableError(f"text8 not found at {path}. {text8_hint()}")
    return clean_indices(path.read_bytes()), path


KJV_COMMAND = ("-m", "8192", "gen1:1-rev22:21")
KJV_HINT = (
    "The 'kjv' data set needs the `bible` program of the Debian package bible-kjv: run "
    "`sudo apt-get install bible-kjv`, or use the name 'text:PATH' with any text file."
)

# "Ge1:1 In the beginning ..." (one verse per line) and "  1 In the beginning ..." (pretty-printed).
_VERSE_REFERENCE = re.compile(r"^\s*(?:[1-3]\s?)?[A-Za-z]+\s?\d+:\d+\s*")
_VERSE_NUMBER = re.compile(r"^\s+\d+\s+")


def strip_bible_markup(output: str) -> str:
    """Remove the verse references, verse numbers and book/chapter headings that ``bible`` prints.

    Handles both output styles of the program: one verse per line prefixed by its reference (``Ge1:1 ...``)
    and the pretty-printed style with ``Genesis 1`` headings and indented verse numbers. The KJV text itself
    contains no digits, so any other line with a digit is a heading and is dropped.
    """
    kept = []
    for line in output.splitlines():
        match = _VERSE_REFERENCE.match(line) or _VERSE_NUMBER.match(line)
        if match:
            kept.append(line[match.end() :])
        elif not any(ch.isdigit() for ch in line):
            kept.append(line)
    return "\n".join(kept)


def load_kjv() -> tuple[np.ndarray, Path]:
    """The King James Bible, cleaned text8-style, cached as ``kjv.txt`` in :func:`~bfn.data.core.cache_dir`.

    On first use the text comes from ``bible -m 8192 gen1:1-rev22:21`` (Debian package ``bible-kjv``).
    """
    cached = cache_dir() / "kjv.txt"
    if cached.is_file():
        return clean_indices(cached.read_bytes()), cached
    program = shutil.which("bible")
    if program is None:
        raise DataUnavailableError(f"`bible` not found on PATH. {KJV_HINT}")
    result = subprocess.run(
        [program, *KJV_COMMAND], capture_output=True, stdin=subprocess.DEVNULL, check=False, timeout=600
    )
    if result.returncode != 0 or not result.stdout.strip():
        stderr = result.stderr.decode("utf-8", errors="replace").strip()
        raise DataUnavailableError(f"`bible {' '.join(KJV_COMMAND)}` failed ({stderr or 'no output'}). {KJV_HINT}")
    text = strip_bible_markup(result.stdout.decode("latin-1"))
    indices = clean_indices(text.encode("latin-1", errors="replace"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    partial.write_bytes(_INDEX_TO_BYTE[indices].tobytes())
    partial.replace(cached)
    return indices, cached
