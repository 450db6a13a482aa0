"""``sampler="auto"`` and the tuned grids: exact NFE, reported configuration, convergence orders, oracle accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow
from bfn.sampling import sample
from bfn.sampling.auto import (
    AUTO_NFE,
    LOGSNR_POWER,
    SMALL_BUDGET,
    TIME_POWER,
    auto_config,
    logsnr_power_grid,
    resolve_auto,
    time_power_grid,
    tuned_grid,
)
from bfn.time import time_grid
from oracles import CategoricalDenoiser, GaussianDenoiser, MixtureDenoiser, ZeroNet, mixture_sample
from test_sampling_orders import BETA_1, D_T0, PI, K, M, W, measured_order, rk4, solve

F64 = torch.float64


def small_model(kind: str) -> bfn.BFN:
    flows = {
        "continuous": (ContinuousFlow(1e-3), ZeroNet(1)),
        "discretised": (DiscretisedFlow(16, math.sqrt(1e-3)), ZeroNet(2)),
        "discrete": (DiscreteFlow(3, 2.0), ZeroNet(3, True)),
    }
    flow, net = flows[kind]
    return bfn.BFN(net, flow, (4,))


# -------------------------------------------------------------------------------------------------- grids
def test_tuned_grids_run_from_one_minus_eta_to_zero():
    for kind, sde in (("continuous", ContinuousFlow(0.02).sde), ("discrete", DiscreteFlow(3, 3.0).sde)):
        for n in (1, 2, 7, 50):
            g = tuned_grid(kind, n, 1e-3, sde)
            assert g.dtype == F64 and len(g) == n + 1
            assert g[0] == 1 - 1e-3 and g[-1] == 0.0
            assert (g[1:] < g[:-1]).all()


def test_power_one_is_the_uniform_grid():
    sde = ContinuousFlow(0.02).sde
    torch.testing.assert_close(logsnr_power_grid(9, 1e-2, sde, 1.0), time_grid(9, 1e-2, "logsnr", sde))
    torch.testing.assert_close(time_power_grid(9, 1e-3, 1.0), time_grid(9, 1e-3, "uniform"), rtol=0, atol=1e-15)


def test_power_moves_the_points():
    """``p < 1`` (continuous) puts the middle point at higher log-SNR; ``q > 1`` (discrete) nearer the prior."""
    sde = ContinuousFlow(0.02).sde
    lam = sde.lam(logsnr_power_grid(2, 1e-4, sde, LOGSNR_POWER))
    assert lam[1] > 0.5 * (lam[0] + lam[2])
    t = time_power_grid(2, 1e-3, TIME_POWER)
    assert t[1] > 0.5 * (t[0] + t[2])


def test_grid_arguments_are_checked():
    sde = ContinuousFlow(0.02).sde
    with pytest.raises(ValueError, match="power"):
        logsnr_power_grid(4, 1e-3, sde, 0.0)
    with pytest.raises(ValueError, match="eta"):
        time_power_grid(4, 1.5, 1.4)
    with pytest.raises(ValueError, match="steps"):
        time_power_grid(0, 1e-3, 1.4)


def _gaussian_case():
    """Gaussian data, its exact denoiser, a start at t = 0.98 and the exact flow map ``exact(t)`` of that start."""
    flow = ContinuousFlow(1e-3, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, M, W), flow, (7,), dtype=F64)
    sde, t0 = flow.sde, 0.98

    def v(t):
        t = torch.as_tensor(t, dtype=F64)
        return sde.alpha(t) ** 2 * W * W + sde.sigma(t) ** 2

    alpha0 = float(sde.alpha(torch.tensor(t0, dtype=F64)))
    x0 = (alpha0 * M + math.sqrt(float(v(t0))) * torch.linspace(-2, 2, 7, dtype=F64)).reshape(1, 7)

    def exact(t):
        t = torch.as_tensor(t, dtype=F64)
        return sde.alpha(t) * M + torch.sqrt(v(t) / v(t0)) * (x0 - alpha0 * M)

    return model, x0, exact


# ------------------------------------------------------------------------------------------------- orders
def test_third_order_on_the_continuous_tuned_grid():
    """BFN-Solver++3 on the tuned log-SNR grid converges at order ``min(3, 4 p) = 2.4`` (its first steps shrink like
    ``n^-p``); Gaussian data, exact flow map, exact warm start."""
    model, x0, exact = _gaussian_case()
    sde, t0 = model.flow.sde, 0.98

    steps, errors = (80, 160, 320), []
    for n in steps:
        g = logsnr_power_grid(n, 1 - t0, sde, LOGSNR_POWER).tolist()
        errors.append((solve(model, "bfn-solver++3", x0, g, exact, True) - exact(0.0)).abs().max().item())
    assert measured_order(errors, steps) >= 2.4, errors


def test_third_order_on_the_discrete_tuned_grid():
    """BFN-Solver3 (discrete) keeps order 3 on the tuned grid in BFN time (independent positions, RK4 reference)."""
    flow = DiscreteFlow(K, BETA_1)
    model = bfn.BFN(CategoricalDenoiser(PI), flow, (4,), dtype=F64)
    sigma0 = float(flow.sde.sigma(torch.tensor(D_T0, dtype=F64)))
    z0 = 1.5 * sigma0 * torch.randn(1, 4, K, generator=torch.Generator().manual_seed(0), dtype=F64)

    def exact(t: float) -> Tensor:
        if t == D_T0:
            return z0
        return torch.from_numpy(rk4(z0.numpy(), D_T0, t, max(1, round(4000 * (D_T0 - t) / D_T0))))

    reference = exact(0.0)
    steps, errors = (20, 40, 80), []
    for n in steps:
        g = time_power_grid(n, 1 - D_T0, TIME_POWER).tolist()
        errors.append((solve(model, "bfn-solver3", z0, g, exact, True) - reference).abs().max().item())
    assert measured_order(errors, steps) >= 2.7, errors


# --------------------------------------------------------------------------------------------------- auto
@pytest.mark.parametrize("kind", ["continuous", "discretised", "discrete"])
def test_auto_makes_exactly_steps_network_calls_and_reports_what_ran(kind):
    model = small_model(kind)
    for nfe in (1, 2, 3, 5, 7, 10):
        name, auto = auto_config(kind, nfe)
        out = sample(model, 3, "auto", nfe, torch.Generator().manual_seed(0))
        assert out.nfe == nfe
        assert (out.sampler, out.options) == (name, auto)
        assert out.steps == (nfe if auto["final"] == "drop" else nfe - 1)
    assert auto_config(kind, 1)[1]["final"] == "drop"
    if kind != "discrete":
        assert auto_config(kind, SMALL_BUDGET)[0] != auto_config(kind, SMALL_BUDGET + 1)[0]


def test_auto_is_the_default_and_named_samplers_keep_their_steps():
    model = small_model("continuous")
    out = model.sample(2)
    assert (out.sampler, out.nfe) == (auto_config("continuous", AUTO_NFE)[0], AUTO_NFE)
    assert model.sample(2, steps=7).nfe == 7
    out = model.sample(2, sampler="bfn")
    assert (out.sampler, out.steps, out.nfe) == ("bfn", 100, 101)
    out = model.sample(2, sampler="bfn-solver++2", steps=5, grid="logsnr")
    assert (out.sampler, out.options) == ("bfn-solver++2", {"grid": "logsnr"})


def test_auto_options_override_its_choices():
    model = small_model("discrete")
    out = sample(model, 2, "auto", 6, final="drop", grid="uniform")
    assert out.nfe == 6 and out.steps == 6 and out.options["grid"] == "uniform"
    out = sample(small_model("continuous"), 2, "auto", 8, final="denoise")
    assert out.nfe == 8 and out.steps == 7
    seen = []
    out = sample(model, 2, "auto", 4, callback=seen.append)
    assert len(seen) == out.steps == 3 and "callback" not in out.options
    grid = torch.tensor([0.9, 0.5, 0.0], dtype=F64)
    out = sample(model, 2, "auto", 3, grid=grid)
    assert out.nfe == 3 and "eta" not in out.options


def test_auto_rejects_bad_budgets_and_options():
    model = small_model("continuous")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            sample(model, 2, "auto", bad)
    with pytest.raises(ValueError, match="unknown option"):
        sample(model, 2, "auto", 4, categorical=True)
    with pytest.raises(ValueError, match="steps"):
        resolve_auto("continuous", 0, {})


def test_auto_reaches_the_oracle_floor_where_the_paper_preset_does_not():
    """Continuous mixture with sigma_1 = 0.02 at 10 NFE: the default beats the paper protocol by more than 2x."""
    from scipy.stats import norm

    weights, means, stds = [0.3, 0.7], [-0.5, 0.4], [0.1, 0.2]
    flow = ContinuousFlow(0.02, clip=True)
    model = bfn.BFN(MixtureDenoiser(flow, weights, means, stds), flow, (1,))

    def w1(x: Tensor) -> float:
        xs = np.sort(x.double().flatten().numpy())
        grid = np.linspace(-3.0, 3.0, 30001)
        cdf = sum(w * norm.cdf((grid - m) / s) for w, m, s in zip(weights, means, stds))
        return float(np.trapezoid(np.abs(np.searchsorted(xs, grid, side="right") / len(xs) - cdf), grid))

    n = 100_000  # at 20,000 samples the Monte-Carlo part of W1 (~0.004) is larger than the sampler's error (~0.003)
    auto = w1(sample(model, n, "auto", 10, torch.Generator().manual_seed(0)).samples)
    paper = w1(sample(model, n, "bfn-solver++2", 10, torch.Generator().manual_seed(0)).samples)
    floor = w1(mixture_sample(n, weights, means, stds, torch.Generator().manual_seed(1)))
    assert auto < 0.5 * paper, (auto, paper)
    assert auto < 3.5 * floor, (auto, floor)


# ------------------------------------------------------------------------------------ predictor-corrector
def test_predictor_corrector_is_third_order():
    """``bfn-solver++pc``: a second-order predictor and a third-order corrector give order 3 (exact warm start)."""
    from test_sampling_orders import grid_of

    model, x0, exact = _gaussian_case()
    steps, errors, second = (40, 80, 160), [], []
    for n in steps:
        g = grid_of(model.flow.sde, n, 0.98, 0.02, "logsnr")
        errors.append((solve(model, "bfn-solver++pc", x0, g, exact, True) - exact(0.02)).abs().max().item())
        second.append((solve(model, "bfn-solver++2", x0, g, exact, True) - exact(0.02)).abs().max().item())
    assert measured_order(errors, steps) >= 2.7, errors
    assert errors[-1] < second[-1] / 5
