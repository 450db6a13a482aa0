"""Tests for bfn.metrics: feature distances, the project classifier, FID-digits, spelling accuracy, bits/dim."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from bfn.metrics import (
    FeatureFID,
    bits_per_dim,
    digits_images_labels,
    extract_features,
    feature_moments,
    frechet_distance,
    frechet_distance_from_moments,
    image_fid,
    image_kid,
    kernel_inception_distance,
    load_classifier,
    load_feature_extractor,
    sliced_wasserstein,
    spelling_accuracy,
    spelling_counts,
    split_words,
    train_classifier,
)
from bfn.metrics.classifier import SHIPPED_DIR, classifier_accuracy, holdout_split, weights_filename
from bfn.metrics.distances import unbiased_mmd2


def random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.standard_normal((dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def reference_fd(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    """The closed form with scipy's general matrix square root, as an independent check."""
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2.0 * np.real(root)))


# --- Frechet distance -------------------------------------------------------------------------------------------


def test_fd_formula_diagonal_covariances_exact() -> None:
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 1.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance_from_moments(m1, np.diag(v1), m2, np.diag(v2))
    assert got == pytest.approx(expected, abs=1e-12)


def test_fd_formula_matches_general_square_root() -> None:
    rng = np.random.default_rng(0)
    m1, m2 = rng.standard_normal(6), rng.standard_normal(6)
    s1, s2 = random_spd(rng, 6), random_spd(rng, 6)
    got = frechet_distance_from_moments(m1, s1, m2, s2)
    assert got == pytest.approx(reference_fd(m1, s1, m2, s2), rel=1e-10)
    assert frechet_distance_from_moments(m2, s2, m1, s1) == pytest.approx(got, rel=1e-10)
    assert frechet_distance_from_moments(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-12)


def test_fd_formula_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="inconsistent shapes"):
        frechet_distance_from_moments(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_fd_of_set_with_itself_is_zero() -> None:
    feats = np.random.default_rng(1).standard_normal((2000, 16)) @ random_spd(np.random.default_rng(2), 16)
    assert abs(frechet_distance(feats, feats)) < 1e-6
    assert abs(frechet_distance(torch.from_numpy(feats).float(), torch.from_numpy(feats).float())) < 1e-6


def test_fd_of_shifted_set_is_squared_shift_and_symmetric() -> None:
    feats = np.random.default_rng(3).standard_normal((1000, 5))
    shift = np.array([0.5, -1.0, 0.0, 2.0, 0.1])
    forward, backward = frechet_distance(feats, feats + shift), frechet_distance(feats + shift, feats)
    assert forward == pytest.approx(shift @ shift, abs=1e-8)
    assert backward == pytest.approx(forward, abs=1e-10)
    assert forward > 0


def test_fd_from_samples_matches_closed_form() -> None:
    rng = np.random.default_rng(4)
    m1, m2 = np.array([0.0, 0.0, 0.0]), np.array([1.0, -0.5, 0.25])
    s1, s2 = random_spd(rng, 3), random_spd(rng, 3)
    a = rng.multivariate_normal(m1, s1, size=200_000)
    b = rng.multivariate_normal(m2, s2, size=200_000)
    assert frechet_distance(a, b) == pytest.approx(reference_fd(m1, s1, m2, s2), rel=0.02)


def test_feature_moments_are_unbiased() -> None:
    feats = np.random.default_rng(5).standard_normal((50, 4))
    mean, cov = feature_moments(feats)
    np.testing.assert_allclose(mean, feats.mean(0), atol=1e-14)
    np.testing.assert_allclose(cov, np.cov(feats, rowvar=False), atol=1e-13)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((1, 3)), np.full((3, 2), np.nan)])
def test_fd_rejects_bad_feature_matrices(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        frechet_distance(bad, np.zeros((4, 2)))


# --- KID ----------------------------------------------------------------------------------------------------------


def test_unbiased_mmd2_matches_torchmetrics_poly_mmd() -> None:
    from torchmetrics.image.kid import poly_mmd

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 7, generator=gen, dtype=torch.float64)
    y = torch.randn(60, 7, generator=gen, dtype=torch.float64) + 0.3
    assert unbiased_mmd2(x, y) == pytest.approx(float(poly_mmd(x, y)), rel=1e-12)


def test_kid_near_zero_for_same_distribution_and_positive_for_different() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((1000, 8)), rng.standard_normal((1000, 8))
    same_mean, same_std = kernel_inception_distance(
        a, b, subsets=20, subset_size=200, generator=torch.Generator().manual_seed(0)
    )
    shifted_mean, _ = kernel_inception_distance(
        a, b + 1.0, subsets=20, subset_size=200, generator=torch.Generator().manual_seed(0)
    )
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 0.5
    assert shifted_mean > 50 * abs(same_mean)


def test_kid_is_reproducible_with_generator_and_checks_subset_size() -> None:
    feats = np.random.default_rng(7).standard_normal((300, 4))
    other = feats[::-1] + 0.2
    runs = [
        kernel_inception_distance(feats, other, subsets=5, subset_size=50, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(feats, other, subset_size=301)


# --- sliced Wasserstein -------------------------------------------------------------------------------------------


def test_sliced_wasserstein() -> None:
    points = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(points, points) == pytest.approx(0.0, abs=1e-12)
    shifted = sliced_wasserstein(points, points + torch.tensor([0.5, 0.0]))
    assert shifted == pytest.approx(0.5 * 2 / torch.pi, rel=0.1)  # E|cos| over directions = 2/pi
    with pytest.raises(ValueError):
        sliced_wasserstein(points, torch.zeros(3, 3))


# --- classifier and FID-digits ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels = digits_images_labels()
    train_rows, test_rows = holdout_split(images.shape[0])
    return images[train_rows], labels[train_rows], images[test_rows], labels[test_rows]


@pytest.fixture(scope="module")
def digits_extractor() -> torch.nn.Module:
    return load_feature_extractor("digits", train_if_missing=False)


def test_digits_images_are_scaled_to_unit_interval() -> None:
    images, labels = digits_images_labels()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0


def test_shipped_digits_classifier_heldout_accuracy(digits_split) -> None:
    _, _, test_x, test_y = digits_split
    model = load_classifier("digits", train_if_missing=False)
    accuracy = classifier_accuracy(model, test_x, test_y)
    assert accuracy > 0.95
    record = json.loads((SHIPPED_DIR / "digits-classifier-seed0.json").read_text())
    assert record["seed"] == 0 and record["dataset"] == "digits"
    assert record["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert record["call"].startswith("bfn.metrics.classifier.fit_classifier('digits'")


def test_training_is_deterministic_and_leaves_global_rng_alone(digits_split) -> None:
    train_x, train_y = digits_split[0][:96], digits_split[1][:96]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = train_classifier(train_x, train_y, epochs=2, seed=0, lr=2e-3)
    assert torch.equal(torch.rand(3), before)
    second = train_classifier(train_x, train_y, epochs=2, seed=0, lr=2e-3)
    third = train_classifier(train_x, train_y, epochs=2, seed=1, lr=2e-3)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert not torch.equal(first.head[1].weight, third.head[1].weight)


def test_classifier_cache_roundtrip_without_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 28, 28, generator=gen) * 2 - 1
    labels = torch.arange(40) % 10
    with pytest.raises(ValueError, match="needs images"):
        load_classifier("mnist", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_classifier("cifar10", cache_dir=tmp_path)  # type: ignore[arg-type]
    trained = load_feature_extractor("mnist", cache_dir=tmp_path, images=images, labels=labels)
    path = tmp_path / "metrics" / weights_filename("mnist")
    assert path.name == "mnist-classifier-seed0.safetensors" and path.is_file()
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["seed"] == 0 and 0.0 <= record["accuracy"] <= 1.0 and "fit_classifier('mnist'" in record["call"]
    monkeypatch.setenv("BFN_CACHE", str(tmp_path))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (pickle) must not be used"))
    cached = load_feature_extractor("mnist", train_if_missing=False)
    assert cached.num_features == 64 and cached.name == "mnist"
    assert torch.equal(trained(images), cached(images))
    with pytest.raises(FileNotFoundError):
        load_classifier("fashion-mnist", cache_dir=tmp_path, train_if_missing=False)


def test_image_fid_digits_self_zero_noise_large(digits_split, digits_extractor) -> None:
    train_x, _, test_x, _ = digits_split
    noise = torch.rand(test_x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    self_fid = image_fid(test_x, test_x, digits_extractor)
    real_fid = image_fid(train_x, test_x, digits_extractor)
    noise_fid = image_fid(noise, test_x, digits_extractor)
    assert abs(self_fid) < 1e-6
    assert noise_fid > 20 * real_fid > 0
    # torchmetrics' running sums agree with the float64 two-pass computation on the same features
    own = frechet_distance(extract_features(digits_extractor, train_x), extract_features(digits_extractor, test_x))
    assert real_fid == pytest.approx(own, rel=1e-6)


def test_feature_fid_keeps_reference_across_reset(digits_split, digits_extractor) -> None:
    train_x, _, test_x, _ = digits_split
    metric = FeatureFID(digits_extractor, batch_size=100)
    metric.update(test_x, reference=True)
    metric.update(train_x, reference=False)
    first = metric.compute()
    metric.reset(keep_reference=True)
    metric.update(test_x, reference=False)
    assert abs(metric.compute()) < 1e-6
    metric.reset(keep_reference=True)
    metric.update(train_x, reference=False)
    assert metric.compute() == pytest.approx(first, rel=1e-9)
    metric.reset()
    with pytest.raises(RuntimeError):
        metric.compute()


def test_image_kid_digits(digits_split, digits_extractor) -> None:
    train_x, _, test_x, _ = digits_split
    noise = torch.rand(test_x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kwargs = {"subsets": 10, "subset_size": 150}
    real, _ = image_kid(train_x, test_x, digits_extractor, generator=torch.Generator().manual_seed(0), **kwargs)
    fake, _ = image_kid(noise, test_x, digits_extractor, generator=torch.Generator().manual_seed(0), **kwargs)
    assert abs(real) < 0.1 < fake
    assert fake > 20 * abs(real)


def test_image_metrics_reject_out_of_range_images(digits_extractor) -> None:
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        image_fid(torch.full((4, 1, 8, 8), 2.0), torch.zeros(4, 1, 8, 8), digits_extractor)
    with pytest.raises(ValueError, match="float tensor"):
        image_kid(torch.zeros(4, 8, 8), torch.zeros(4, 1, 8, 8), digits_extractor)


# --- spelling accuracy --------------------------------------------------------------------------------------------


def test_spelling_accuracy_basic_sentences() -> None:
    assert spelling_accuracy(["the cat sat on the mat"]) == 1.0
    assert spelling_accuracy(["the qxz cat"]) == pytest.approx(2 / 3)
    assert spelling_accuracy(["the cat", "qxz"]) == pytest.approx(2 / 3)
    assert spelling_accuracy("the qxz cat") == pytest.approx(2 / 3)


def test_spelling_accuracy_counts_edge_fragments_and_drops_empty_strings() -> None:
    assert spelling_counts(["ing the ca"]) == (2, 3)  # "ing" is a cut-off fragment and counts as a wrong word
    assert spelling_counts(["  the   cat  ", ""]) == (2, 2)
    assert split_words("  a  b ") == ["a", "b"]


def test_spelling_accuracy_underscore_separated() -> None:
    assert split_words("the_cat__sat") == ["the", "cat", "sat"]
    assert spelling_accuracy(["the_cat_sat_on_qxz"]) == pytest.approx(4 / 5)


def test_spelling_accuracy_without_words_raises() -> None:
    for texts in ([], ["", "   ", "__"]):
        with pytest.raises(ValueError, match="at least one word"):
            spelling_accuracy(texts)


# --- bits per dimension -------------------------------------------------------------------------------------------


def test_bits_per_dim_float_and_tensor() -> None:
    assert bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0, rel=1e-15)
    assert bits_per_dim(0.0, 3) == 0.0
    nll = torch.tensor([math.log(2.0) * 64, math.log(2.0) * 128], dtype=torch.float64)
    torch.testing.assert_close(bits_per_dim(nll, 64), torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert bits_per_dim(8.0, np.int64(2)) == pytest.approx(4.0 / math.log(2.0))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError):
            bits_per_dim(1.0, bad)  # type: ignore[arg-type]


# --- packaging ----------------------------------------------------------------------------------------------------


def test_import_is_light() -> None:
    # only what bfn.metrics itself adds on top of the parent package counts
    code = (
        "import sys, bfn; before = set(sys.modules); import bfn.metrics; "
        "heavy = ('torchmetrics', 'spylls', 'sklearn', 'safetensors', 'scipy'); "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
