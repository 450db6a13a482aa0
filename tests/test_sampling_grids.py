"""The fitted ("tuned") log-SNR grids, the refusal of the discrete log-SNR grid, and the new defaults on the oracles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import Tensor

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow
from bfn.sampling import sample
from bfn.sampling.auto import (
    MID_ETA_BUDGET,
    SMALL_ETA_BUDGET,
    auto_config,
    continuous_eta,
    logsnr_power_grid,
    tuned_grid,
)
from bfn.sampling.grids import FITTED, FITTED_POINTS, TAIL_POWER, fitted_logsnr_grid, fitted_params
from oracles import MixtureDenoiser, ZeroNet
from test_sampling_auto import _gaussian_case
from test_sampling_orders import measured_order, solve

F64 = torch.float64


@pytest.mark.parametrize("sigma_1", [0.05, 0.02, 1e-3, 1e-5])
@pytest.mark.parametrize("eta", [0.3, 1e-2, 5e-3, 1e-4])
def test_fitted_grids_run_from_one_minus_eta_to_zero(sigma_1, eta):
    sde = ContinuousFlow(sigma_1).sde
    for n in (1, 2, 3, 4, 5, 6, 7, 9, 10, 16, 20, 21, 60):
        g = fitted_logsnr_grid(n, eta, sde)
        assert g.dtype == F64 and len(g) == n + 1
        assert g[0] == 1 - eta and g[-1] == 0.0
        assert (g[1:] < g[:-1]).all(), (n, g)


def test_fitted_grids_use_the_fitted_points():
    """In range, the call points sit at the fitted half log-SNR values, whatever sigma_1 (absolute lambda)."""
    for sigma_1 in (0.02, 1e-3):
        sde = ContinuousFlow(sigma_1).sde
        for n, points in FITTED_POINTS.items():
            lam = sde.lam(fitted_logsnr_grid(n, 5e-3, sde)[1:n])
            torch.testing.assert_close(lam, torch.tensor(points, dtype=F64))
        for n, (lam_last, power) in FITTED.items():
            g = fitted_logsnr_grid(n, 1e-3, sde)
            lam = sde.lam(g[:n])
            assert float(lam[-1]) == pytest.approx(lam_last)
            u = torch.arange(n, dtype=F64) / (n - 1)
            torch.testing.assert_close(lam, lam[0] + (lam_last - lam[0]) * u**power)


def test_fitted_params_interpolate_between_budgets():
    budgets = sorted(FITTED)
    for a, b in itertools.pairwise(budgets):
        for n in range(a, b + 1):
            lam, p = fitted_params(n)
            assert min(FITTED[a][0], FITTED[b][0]) <= lam <= max(FITTED[a][0], FITTED[b][0])
            assert min(FITTED[a][1], FITTED[b][1]) <= p <= max(FITTED[a][1], FITTED[b][1])


def test_above_the_fitted_budgets_the_grid_is_the_power_grid():
    """Past the fitted budgets the last call approaches the data end (the output converges to a sample)."""
    sde = ContinuousFlow(1e-3).sde
    n = max(FITTED) + 1
    torch.testing.assert_close(fitted_logsnr_grid(n, 1e-4, sde), logsnr_power_grid(n, 1e-4, sde, TAIL_POWER))
    assert tuned_grid("continuous", 50, 1e-4, sde).equal(logsnr_power_grid(50, 1e-4, sde, TAIL_POWER))


def test_predictor_corrector_converges_on_the_tail_grid():
    """``bfn-solver++pc`` on the tuned grid above the fitted budgets (Gaussian data, exact flow map, exact warm
    start) converges at order ``3 p = 1.8`` for the power ``p = 0.6``: its first steps shrink only like ``n^-p``, and
    the corrector's first change to the exact warm-start state is of the second-order predictor's local size
    ``delta^3``. (A grid whose last call stayed at a fixed ``lambda`` would not converge at all.)"""
    model, x0, exact = _gaussian_case()
    sde, t0 = model.flow.sde, 0.98
    steps, errors = (40, 80, 160), []
    for n in steps:
        g = fitted_logsnr_grid(n, 1 - t0, sde).tolist()
        errors.append((solve(model, "bfn-solver++pc", x0, g, exact, True) - exact(0.0)).abs().max().item())
    assert measured_order(errors, steps) >= 1.75, errors


# ----------------------------------------------------------------------------------------------------- auto
def test_auto_moves_the_start_towards_the_prior_then_hands_over_to_the_sde_solver():
    etas = [auto_config("continuous", n)[1]["eta"] for n in (3, 6, 7, 14)]
    assert etas == [5e-3, 5e-3, 1e-3, 1e-3]
    assert all(continuous_eta(n) == auto_config("discretised", n)[1]["eta"] for n in range(1, SMALL_ETA_BUDGET + 1))
    sde = ("sde-bfn-solver++2", {"grid": "logsnr", "eta": 1e-2})
    for n in range(SMALL_ETA_BUDGET + 1, 60):
        name, options = auto_config("discretised", n)
        assert (name, {k: options[k] for k in ("grid", "eta")}) == sde
        assert options["final"] == ("drop" if n <= MID_ETA_BUDGET else "denoise")
    for n in range(MID_ETA_BUDGET + 1, 60):
        assert auto_config("continuous", n) == (sde[0], {**sde[1], "final": "drop"})
    assert auto_config("continuous", 2)[0] == "bfn-solver++1" and auto_config("continuous", 3)[0] == "bfn-solver++pc"
    assert auto_config("discrete", 9)[0] == "bfn-solver3" and auto_config("discrete", 10)[0] == "h-solver"


def test_auto_at_two_calls_is_exactly_the_predictor_corrector_run():
    """With two calls the corrector never applies: ``bfn-solver++1`` is what ``bfn-solver++pc`` would compute."""
    flow = ContinuousFlow(0.02, clip=True)
    model = bfn.BFN(MixtureDenoiser(flow, [0.3, 0.7], [-0.5, 0.4], [0.1, 0.2]), flow, (3,), dtype=F64)
    out = sample(model, 64, "auto", 2, torch.Generator().manual_seed(0))
    pc = sample(model, 64, "bfn-solver++pc", 2, torch.Generator().manual_seed(0), **out.options)
    torch.testing.assert_close(out.samples, pc.samples, rtol=0, atol=1e-12)


def _w1_mixture(x: Tensor, weights, means, stds) -> float:
    from scipy.stats import norm

    xs = np.sort(x.double().flatten().numpy())
    grid = np.linspace(-3.0, 3.0, 30001)
    cdf = sum(w * norm.cdf((grid - m) / s) for w, m, s in zip(weights, means, stds))
    return float(np.trapezoid(np.abs(np.searchsorted(xs, grid, side="right") / len(xs) - cdf), grid))


def test_auto_at_five_calls_beats_the_paper_protocol_on_a_held_out_mixture():
    """5 NFE on a mixture the grids were not fitted on: the default beats ``bfn-solver++2`` on the uniform log-SNR
    grid from ``eta = 1e-2`` (the earlier small-budget default) and the paper's uniform grid."""
    weights, means, stds = [0.25, 0.5, 0.25], [-0.6, 0.1, 0.7], [0.08, 0.12, 0.06]
    flow = ContinuousFlow(0.02, clip=True)
    model = bfn.BFN(MixtureDenoiser(flow, weights, means, stds), flow, (1,))
    n = 100_000
    auto = _w1_mixture(sample(model, n, "auto", 5, torch.Generator().manual_seed(0)).samples, weights, means, stds)
    old = sample(model, n, "bfn-solver++2", 5, torch.Generator().manual_seed(0), grid="logsnr", eta=1e-2)
    paper = sample(model, n, "bfn-solver++2", 5, torch.Generator().manual_seed(0))
    assert auto < 0.8 * _w1_mixture(old.samples, weights, means, stds), auto
    assert auto < 0.5 * _w1_mixture(paper.samples, weights, means, stds), auto


# ----------------------------------------------------------------------------------------- discrete log-SNR
def test_discrete_data_refuse_the_logsnr_grid_and_name_the_alternatives():
    model = bfn.BFN(ZeroNet(3, True), DiscreteFlow(3, 2.0), (4,))
    for name in ("bfn-solver2", "sde-bfn-solver1", "h-solver"):
        with pytest.raises(ValueError, match=r"grid='logsnr' is refused for discrete data.*grid='tuned'.*'uniform'"):
            sample(model, 2, name, 5, grid="logsnr")
    with pytest.raises(ValueError, match="logsnr"):
        sample(model, 2, "auto", 5, grid="logsnr")
    assert sample(model, 2, "bfn-solver2", 5, grid="tuned").nfe == 5
    continuous = bfn.BFN(ZeroNet(1), ContinuousFlow(0.02), (4,))
    assert sample(continuous, 2, "bfn-solver++2", 5, grid="logsnr").nfe == 5


def test_tuned_discrete_grid_is_the_time_power_grid():
    g = tuned_grid("discrete", 7, 1e-3, DiscreteFlow(3, 3.0).sde)
    expected = 1.0 - (1e-3 + (1 - 1e-3) * (torch.arange(8, dtype=F64) / 7) ** 1.4)
    expected[0], expected[-1] = 1 - 1e-3, 0.0
    torch.testing.assert_close(g, expected)
    assert math.isclose(float(g[0]), 1 - 1e-3)
