"""Distances between two sets of vectors: Frechet distance, kernel (KID) distance and sliced Wasserstein-1.

All work on plain matrices of shape ``(N, F)`` and compute in float64. For the first two, which network produced
the features decides what the number is called: on features of a classifier trained by this package on data set
``<name>`` it is "FID-<name>" / "KID-<name>", which is *not* comparable with Inception FID / KID. Sliced
Wasserstein-1 compares low-dimensional data (2-D toy sets) directly, where there is no feature space.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from bfn._checks import check_int

Matrix = NDArray[np.float64]


def as_feature_matrix(feats: ArrayLike | torch.Tensor, name: str = "features") -> Matrix:
    """Return ``feats`` as a float64 numpy matrix of shape ``(N, F)`` with at least two rows.

    Raises ``ValueError`` for anything that is not two-dimensional, has fewer than two rows, or is not finite.
    """
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().to("cpu", torch.float64).numpy()
    out = np.asarray(feats, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"{name} must have shape (N, F), got {out.shape}")
    if out.shape[0] < 2:
        raise ValueError(f"{name} needs at least two rows (samples), got {out.shape[0]}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def feature_moments(feats: ArrayLike | torch.Tensor) -> tuple[Matrix, Matrix]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` (divisor ``N - 1``) of features ``(N, F)``, float64."""
    x = as_feature_matrix(feats)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    return mean, cov


def _psd_sqrt(sym: Matrix) -> Matrix:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped to 0)."""
    evals, evecs = np.linalg.eigh((sym + sym.T) / 2)
    return (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T


def trace_sqrt_product(cov_a: Matrix, cov_b: Matrix) -> float:
    """``Tr((S_a S_b)^{1/2})`` for symmetric PSD ``S_a``, ``S_b`` of shape ``(F, F)``.

    ``S_a S_b`` is not symmetric, but it is similar to the symmetric PSD matrix ``R S_b R`` with ``R = S_a^{1/2}``
    (``R^{-1} (R R S_b) R = R S_b R`` when ``R`` is invertible, and by continuity otherwise), so its eigenvalues are
    real and non-negative and the trace of its principal square root is the sum of their square roots.
    """
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    evals = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(evals, 0.0, None)).sum())


def frechet_distance_from_moments(mean_a: ArrayLike, cov_a: ArrayLike, mean_b: ArrayLike, cov_b: ArrayLike) -> float:
    """Squared Frechet (2-Wasserstein) distance between ``N(m_a, S_a)`` and ``N(m_b, S_b)``.

    ``d^2 = ||m_a - m_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, computed in float64; means have shape ``(F,)``,
    covariances ``(F, F)`` (symmetric PSD). The result is clipped at 0 against round-off.
    """
    m_a, m_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    s_a, s_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    f = m_a.shape[0]
    if m_a.shape != (f,) or m_b.shape != (f,) or s_a.shape != (f, f) or s_b.shape != (f, f):
        raise ValueError(f"inconsistent shapes: means {m_a.shape}, {m_b.shape}; covariances {s_a.shape}, {s_b.shape}")
    diff = m_a - m_b
    value = diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_sqrt_product(s_a, s_b)
    return max(float(value), 0.0)


def frechet_distance(feats_a: ArrayLike | torch.Tensor, feats_b: ArrayLike | torch.Tensor) -> float:
    """Frechet distance (the "FID" formula) between two feature sets ``(N_a, F)`` and ``(N_b, F)``, float64.

    Fits a Gaussian (mean, unbiased covariance) to each set and returns
    ``||m_a - m_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``. Symmetric in its arguments, 0 for identical sets.
    The value is "FID-<dataset>" when the features come from this package's classifier for ``<dataset>``;
    it is not Inception FID.
    """
    a = as_feature_matrix(feats_a, "feats_a")
    b = as_feature_matrix(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_distance_from_moments(*feature_moments(a), *feature_moments(b))


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """``k(x, y) = (x . y / F + coef) ** degree`` for rows of ``x`` ``(N, F)`` and ``y`` ``(M, F)``; ``(N, M)``."""
    return (x @ y.T / x.shape[1] + coef) ** degree


def unbiased_mmd2(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy between samples ``x`` ``(m, F)`` and ``y``.

    ``MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)`` with the
    polynomial kernel; it can be slightly negative when the two distributions agree.
    """
    m, n = x.shape[0], y.shape[0]
    k_xx = polynomial_kernel(x, x, degree, coef)
    k_yy = polynomial_kernel(y, y, degree, coef)
    k_xy = polynomial_kernel(x, y, degree, coef)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_inception_distance(
    feats_a: ArrayLike | torch.Tensor,
    feats_b: ArrayLike | torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int | None = None,
    degree: int = 3,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel distance ("KID" formula) between feature sets ``(N_a, F)`` and ``(N_b, F)``: ``(mean, std)``.

    Draws ``subsets`` random subsets of ``subset_size`` rows (without replacement) from each set, computes the
    unbiased squared MMD with the cubic polynomial kernel ``(x . y / F + 1)^3`` on each pair of subsets, and returns
    the mean and the standard deviation (divisor ``subsets``) over subsets. ``subset_size=None`` uses
    ``min(1000, N_a, N_b)``. Randomness comes only from ``generator``. Computed in float64. On this package's
    classifier features the value is "KID-<dataset>", not Inception KID.
    """
    a = torch.from_numpy(as_feature_matrix(feats_a, "feats_a"))
    b = torch.from_numpy(as_feature_matrix(feats_b, "feats_b"))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    subsets, degree = check_int(subsets, "subsets"), check_int(degree, "degree")
    size = min(1000, a.shape[0], b.shape[0]) if subset_size is None else subset_size
    if not 2 <= size <= min(a.shape[0], b.shape[0]):
        raise ValueError(f"subset_size must be in [2, {min(a.shape[0], b.shape[0])}], got {size}")
    scores = torch.empty(subsets, dtype=torch.float64)
    for i in range(subsets):
        rows_a = torch.randperm(a.shape[0], generator=generator)[:size]
        rows_b = torch.randperm(b.shape[0], generator=generator)[:size]
        scores[i] = unbiased_mmd2(a[rows_a], b[rows_b], degree, coef)
    return float(scores.mean()), float(scores.std(correction=0))


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between point sets ``a`` ``(N, D)`` and ``b`` ``(M, D)`` (float64).

    The mean over ``projections`` random unit directions (drawn from a generator seeded by ``seed``) of the 1-D
    Wasserstein-1 distance between the two projected sets, computed from ``min(N, M)`` matched quantiles. For
    low-dimensional (toy) data, where FID has no feature space. ``ValueError`` for empty sets or unequal ``D``.
    """
    a, b = a.reshape(a.shape[0], -1).double().cpu(), b.reshape(b.shape[0], -1).double().cpu()
    if a.shape[1] != b.shape[1] or a.shape[0] < 1 or b.shape[0] < 1:
        raise ValueError(f"point sets must be non-empty with equal dimension, got {tuple(a.shape)}, {tuple(b.shape)}")
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    levels = (torch.arange(min(a.shape[0], b.shape[0]), dtype=torch.float64) + 0.5) / min(a.shape[0], b.shape[0])
    qa = torch.quantile(a @ directions, levels, dim=0)
    qb = torch.quantile(b @ directions, levels, dim=0)
    return float((qa - qb).abs().mean())
