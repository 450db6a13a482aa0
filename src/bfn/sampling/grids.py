"""Solver-time grids fitted per budget: the ``"tuned"`` grid of continuous and discretised data.

A run of ``n`` steps with ``final="drop"`` calls the network at ``t_0 = 1 - eta, t_1, ..., t_{n-1}`` and returns the
data prediction of the last call; ``t_n = 0`` is never evaluated (docs/solvers.md 4). The fitted grid fixes the call
points ``t_1 .. t_{n-1}`` by their half log-SNR ``lambda = log(alpha_t / sigma_t)``:

* up to ``FREE_MAX`` calls each point is fitted on its own (:data:`FITTED_POINTS`);
* up to ``max(FITTED)`` calls, ``lambda_i = lambda_0 + (lambda_last - lambda_0) (i / (n - 1))^p`` for
  ``i = 1 .. n - 1`` with ``lambda_0 = lambda(1 - eta)`` and two fitted numbers per budget (:data:`FITTED`):
  ``lambda_last``, where the last call (whose prediction is returned) is made, and the power ``p``; budgets between
  two fitted ones interpolate the two numbers linearly in ``log n``;
* above, ``lambda_i = lambda_0 + (lambda(0) - lambda_0) (i / n)^TAIL_POWER``, whose last call approaches the data
  end as ``n`` grows, so that the returned prediction converges to a sample (the fitted ``lambda_last`` stays at a
  noise level of about 0.02, a bias that matters only once the discretisation error is smaller).

The fit (``benchmarks/fit_grids.py``) minimises the Wasserstein-1 error of ``bfn-solver++pc`` on exact-denoiser
oracles (three 1-D Gaussian mixtures, each with ``sigma_1 = 0.02`` and ``1e-3``; relative to the paper protocol's
``bfn-solver++2`` at the same budget), computed without Monte-Carlo noise from stratified start quantiles, with the
end offset ``eta`` that ``sampler="auto"`` uses at that budget. The points are absolute ``lambda`` values, i.e. noise
levels ``e^{-lambda}`` relative to data in [-1, 1], shared by both ``sigma_1``; they were checked on a held-out
oracle and on the trained digits models (BENCHMARKS.md, "Solver oracles").

What the fit found: the last call belongs well before the data end (``lambda`` 2.5-3.9, a noise level of 0.02-0.08
in data units, where the uniform log-SNR grid would make it at ``(n - 1)/n`` of the range, e.g. 5.3 for
``sigma_1 = 1e-3`` and 5 calls), and the points crowd the middle range ``lambda`` in [-0.5, 2.5] where the data
prediction changes most. The shrinkage of the returned posterior mean and the discretisation error of the coarse
steps partly cancel there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bfn.flows.base import LOGSNR_POWER, LinearSDE

TAIL_POWER = LOGSNR_POWER
"""Exponent of the grid above the fitted budgets (``lambda`` a power of the step index: denser at high SNR)."""

FREE_MAX = 6
"""Budgets up to this many calls have every call point fitted (:data:`FITTED_POINTS`)."""

FITTED_POINTS: dict[int, tuple[float, ...]] = {
    2: (1.160,),
    3: (0.842, 1.551),
    4: (-0.064, 0.279, 1.887),
    5: (-0.168, 0.533, 1.923, 2.523),
    6: (0.399, 0.994, 1.927, 2.509, 3.306),
}
"""``budget -> (lambda_1, ..., lambda_{n-1})``: the fitted interior call points of the small budgets."""

FITTED: dict[int, tuple[float, float]] = {
    7: (3.362, 0.670),
    8: (3.579, 0.688),
    10: (3.855, 0.718),
    12: (3.892, 0.744),
    15: (3.892, 0.553),
    20: (3.892, 0.461),
}
"""``budget -> (lambda_last, p)`` of the two-parameter family above ``FREE_MAX`` calls (module docstring)."""


def fitted_params(steps: int) -> tuple[float, float]:
    """``(lambda_last, p)`` for ``steps`` calls: the fitted values, interpolated linearly in ``log n`` in between
    (outside the fitted budgets, those of the nearest one)."""
    budgets = sorted(FITTED)
    if steps <= budgets[0]:
        return FITTED[budgets[0]]
    if steps >= budgets[-1]:
        return FITTED[budgets[-1]]
    upper = next(b for b in budgets if b >= steps)
    lower = max(b for b in budgets if b <= steps)
    if upper == lower:
        return FITTED[upper]
    w = (math.log(steps) - math.log(lower)) / (math.log(upper) - math.log(lower))
    (a0, p0), (a1, p1) = FITTED[lower], FITTED[upper]
    return a0 + w * (a1 - a0), p0 + w * (p1 - p0)


def fitted_logsnr_grid(steps: int, eta: float, sde: LinearSDE) -> Tensor:
    """The fitted solver-time grid ``t_0 = 1 - eta > ... > t_{n-1} > t_n = 0`` (float64, ``steps + 1`` points).

    Fitted points outside ``(lambda(1 - eta), lambda(0))`` (a large ``sigma_1`` or ``eta``) give way to the family,
    and a ``lambda_last`` outside that range to the uniform log-SNR grid's last call point
    ``lambda_0 + (n - 1)/n (lambda(0) - lambda_0)``, so that the grid stays inside the range.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not 0.0 < eta < 1.0:
        raise ValueError(f"eta must lie in (0, 1), got {eta!r}")
    lam0, lam_end = (float(v) for v in sde.lam(torch.tensor([1.0 - eta, 0.0], dtype=torch.float64)))
    ts = torch.zeros(steps + 1, dtype=torch.float64)
    ts[0] = 1.0 - eta
    if steps == 1:
        return ts
    lams = _interior_points(steps, lam0, lam_end)
    ts[1:steps] = sde.t_of_lam(lams).clamp(0.0, 1.0)
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError(f"the fitted grid is not decreasing for eta = {eta} (lambda range too short)")
    return ts


def _interior_points(steps: int, lam0: float, lam_end: float) -> Tensor:
    """``lambda_1 .. lambda_{n-1}``: the fitted points when they lie inside ``(lambda_0, lambda_end)``, else the
    two-parameter family; a ``lambda_last`` outside that range becomes the uniform log-SNR grid's last call point."""
    points = FITTED_POINTS.get(steps)
    if points is not None and lam0 < points[0] and points[-1] < lam_end:
        return torch.tensor(points, dtype=torch.float64)
    if steps > max(FITTED):
        u = torch.arange(1, steps, dtype=torch.float64) / steps
        return lam0 + (lam_end - lam0) * u**TAIL_POWER
    lam_last, power = fitted_params(steps)
    if not lam0 < lam_last < lam_end:
        lam_last = lam0 + (lam_end - lam0) * (steps - 1) / steps
    u = torch.arange(1, steps, dtype=torch.float64) / (steps - 1)
    return lam0 + (lam_last - lam0) * u**power
