"""Convergence orders of the ODE solvers by step halving, against exact flow maps (docs/solvers.md 6.3, 6.5).

Continuous: Gaussian data ``N(m, w^2)`` has the closed-form PF-ODE flow map
``mu_t = alpha_t m + sqrt(v_t / v_s) (mu_s - alpha_s m)`` with ``v = alpha^2 w^2 + sigma^2``. Discrete: independent
positions with prior ``pi`` have ``p_hat = softmax(log pi + z)``; the reference is a fine RK4 solve of
``dz/dt = -z/(1 - t) - K beta_1 (1 - t)(p_hat - 1/K)``. The order is the slope of log(max error) against log(n) on
three step counts. Multistep methods of order k start from an exact warm start (the first ``k - 1`` states and their
predictions exact), as docs/solvers.md 6.3 prescribes: a first-order first step alone caps the global rate at 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow
from bfn.sampling import SAMPLERS, Prediction, SamplerState, StepContext, integrate, resolve_options
from oracles import CategoricalDenoiser, GaussianDenoiser

F64 = torch.float64


def grid_of(sde, n: int, t0: float, t1: float, kind: str) -> list[float]:
    """``n + 1`` solver times from ``t0`` to ``t1``, uniform in ``t`` or in ``lambda``."""
    if kind == "uniform":
        return torch.linspace(t0, t1, n + 1, dtype=F64).tolist()
    ends = sde.lam(torch.tensor([t0, t1], dtype=F64))
    ts = sde.t_of_lam(torch.linspace(float(ends[0]), float(ends[1]), n + 1, dtype=F64))
    ts[0], ts[-1] = t0, t1
    return ts.tolist()


def solve(model: bfn.BFN, name: str, x0: Tensor, grid: list[float], exact, warm: bool, **options) -> Tensor:
    """Run sampler ``name`` over ``grid`` from ``x0``; ``exact(t)`` gives the exact state for the warm start."""
    spec = SAMPLERS[name]
    method = spec.method(model.flow.kind, resolve_options(name, spec, model.flow.kind, options))
    lam = model.flow.sde.lam
    k = method.order - 1 if warm and method.multistep else 0
    history = tuple(
        Prediction(grid[j], float(lam(torch.tensor(grid[j], dtype=F64))), model.denoise(exact(grid[j]), grid[j]))
        for j in reversed(range(k))
    )
    state = SamplerState(exact(grid[k]), grid[k], history)
    return integrate(StepContext.build(model), method, state, grid[k:]).x


def measured_order(errors: list[float], steps: tuple[int, ...]) -> float:
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])


# --------------------------------------------------------------------------------------------- continuous
M, W = 0.3, 0.5
T0, T1 = 0.98, 0.02


@pytest.fixture(scope="module")
def gaussian():
    flow = ContinuousFlow(1e-3, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, M, W), flow, (7,), dtype=F64)
    sde = flow.sde

    def v(t):
        t = torch.as_tensor(t, dtype=F64)
        return sde.alpha(t) ** 2 * W * W + sde.sigma(t) ** 2

    def flow_map(x, s, t):
        s, t = torch.as_tensor(s, dtype=F64), torch.as_tensor(t, dtype=F64)
        return sde.alpha(t) * M + torch.sqrt(v(t) / v(s)) * (x - sde.alpha(s) * M)

    alpha0 = float(sde.alpha(torch.tensor(T0, dtype=F64)))
    x0 = (alpha0 * M + math.sqrt(float(v(T0))) * torch.linspace(-2, 2, 7, dtype=F64)).reshape(1, 7)
    return model, x0, lambda t: flow_map(x0, T0, t)


CONTINUOUS_CASES = [
    # (sampler, options, grid, warm start, step counts, minimum order)
    ("bfn-solver++1", {}, "uniform", False, (40, 80, 160), 0.9),
    ("bfn-solver1", {}, "uniform", False, (40, 80, 160), 0.9),
    ("bfn-solver++2", {}, "logsnr", True, (40, 80, 160), 1.8),
    ("bfn-solver++2s", {}, "uniform", False, (40, 80, 160), 1.8),
    ("bfn-solver++3", {}, "logsnr", True, (20, 40, 80), 2.7),
    ("bfn-solver++3s", {}, "logsnr", False, (20, 40, 80), 2.7),
    ("h-solver", {"h": 0.0, "order": 1}, "uniform", False, (40, 80, 160), 0.9),
    ("h-solver", {"h": 0.0, "order": 2}, "uniform", True, (40, 80, 160), 1.8),
    ("h-solver", {"h": 0.0, "order": 3}, "logsnr", True, (20, 40, 80), 2.7),
]


@pytest.mark.parametrize(("name", "options", "grid", "warm", "steps", "minimum"), CONTINUOUS_CASES)
def test_continuous_order(gaussian, name, options, grid, warm, steps, minimum):
    model, x0, exact = gaussian
    target = exact(T1)
    errors = []
    for n in steps:
        g = grid_of(model.flow.sde, n, T0, T1, grid)
        errors.append((solve(model, name, x0, g, exact, warm, **options) - target).abs().max().item())
    assert measured_order(errors, steps) >= minimum, (name, errors)


def test_third_order_multistep_needs_the_factor_two():
    """With ``D2 = (D1_0 - D1_1)/(r0 + r1)`` (no factor 2) the 3M method is only second order (docs/solvers.md 2.6)."""
    from bfn.sampling.exponential import exact_taylor_weights

    def halved(delta: float, c: float, order: int) -> tuple[float, ...]:
        w = exact_taylor_weights(delta, c, order)
        return (*w[:2], *(x / 2 for x in w[2:]))  # the widely copied variant approximates x0''/2

    flow = ContinuousFlow(1e-3, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, M, W), flow, (1,), dtype=F64)
    sde = flow.sde
    alpha0, v0 = float(sde.alpha(torch.tensor(T0))), float(sde.alpha(torch.tensor(T0))) ** 2 * W * W
    x0 = torch.tensor([[alpha0 * M + math.sqrt(v0 + float(sde.sigma(torch.tensor(T0))) ** 2)]], dtype=F64)

    def v(t):
        t = torch.as_tensor(t, dtype=F64)
        return sde.alpha(t) ** 2 * W * W + sde.sigma(t) ** 2

    def exact(t):
        t = torch.as_tensor(t, dtype=F64)
        return sde.alpha(t) * M + torch.sqrt(v(t) / v(T0)) * (x0 - alpha0 * M)

    from bfn.sampling import Method
    from bfn.sampling.exponential import multistep_step

    errors = {True: [], False: []}
    steps = (20, 40, 80)
    for n in steps:
        g = grid_of(sde, n, T0, T1, "logsnr")
        for correct in (True, False):
            weights = exact_taylor_weights if correct else halved

            def step(ctx, state, t_next, noise, order, w=weights):
                return multistep_step(ctx, state, t_next, noise, order, h=0.0, weights=w)

            method = Method(step=step, order=3, multistep=True)
            history = tuple(
                Prediction(g[j], float(sde.lam(torch.tensor(g[j]))), model.denoise(exact(g[j]), g[j])) for j in (1, 0)
            )
            out = integrate(StepContext.build(model), method, SamplerState(exact(g[2]), g[2], history), g[2:])
            errors[correct].append((out.x - exact(T1)).abs().max().item())
    assert measured_order(errors[True], steps) >= 2.7
    assert measured_order(errors[False], steps) < 2.3


# ----------------------------------------------------------------------------------------------- discrete
K, BETA_1, PI = 5, 3.0, [0.1, 0.15, 0.2, 0.25, 0.3]
D_T0, D_T1 = 0.95, 0.0


def rk4(z: np.ndarray, s: float, t: float, n: int) -> np.ndarray:
    """RK4 on the discrete PF-ODE with the exact ``p_hat = softmax(log pi + z)``."""
    log_pi = np.log(PI)

    def rhs(z: np.ndarray, u: float) -> np.ndarray:
        a = log_pi + z
        p = np.exp(a - a.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return -z / (1 - u) - K * BETA_1 * (1 - u) * (p - 1 / K)

    dt = (t - s) / n
    for i in range(n):
        u = s + i * dt
        k1 = rhs(z, u)
        k2 = rhs(z + dt / 2 * k1, u + dt / 2)
        k3 = rhs(z + dt / 2 * k2, u + dt / 2)
        k4 = rhs(z + dt * k3, u + dt)
        z = z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


@pytest.fixture(scope="module")
def categorical():
    flow = DiscreteFlow(K, BETA_1)
    model = bfn.BFN(CategoricalDenoiser(PI), flow, (4,), dtype=F64)
    g = torch.Generator().manual_seed(0)
    sigma0 = float(flow.sde.sigma(torch.tensor(D_T0, dtype=F64)))
    z0 = 1.5 * sigma0 * torch.randn(1, 4, K, generator=g, dtype=F64)

    def exact(t: float) -> Tensor:
        if t == D_T0:
            return z0
        return torch.from_numpy(rk4(z0.numpy(), D_T0, t, max(1, round(4000 * (D_T0 - t) / D_T0))))

    reference = exact(D_T1)
    assert np.abs(rk4(z0.numpy(), D_T0, D_T1, 2000) - reference.numpy()).max() < 1e-10  # RK4 has converged
    return model, z0, exact, reference


DISCRETE_CASES = [
    ("bfn-solver1", {}, "uniform", False, (40, 80, 160), 0.95),
    ("bfn-solver2", {}, "uniform", False, (40, 80, 160), 1.8),
    ("bfn-solver2", {}, "uniform", True, (40, 80, 160), 1.9),
    ("bfn-solver2s", {}, "uniform", False, (40, 80, 160), 1.9),
    ("bfn-solver3", {}, "uniform", True, (20, 40, 80), 2.7),
    ("h-solver", {"h": 0.0, "order": 1}, "uniform", False, (40, 80, 160), 0.95),
    ("h-solver", {"h": 0.0, "order": 2}, "uniform", True, (40, 80, 160), 1.8),
    ("h-solver", {"h": 0.0, "order": 3}, "logsnr", True, (20, 40, 80), 2.7),
]


@pytest.mark.parametrize(("name", "options", "grid", "warm", "steps", "minimum"), DISCRETE_CASES)
def test_discrete_order(categorical, name, options, grid, warm, steps, minimum):
    model, z0, exact, reference = categorical
    errors = []
    for n in steps:
        g = grid_of(model.flow.sde, n, D_T0, D_T1, grid)
        errors.append((solve(model, name, z0, g, exact, warm, **options) - reference).abs().max().item())
    assert measured_order(errors, steps) >= minimum, (name, errors)


def test_ode_solvers_are_exact_for_a_point_mass():
    """With ``x0_hat`` constant the ODE presets integrate the flow exactly in any number of steps.

    docs/solvers.md 6.3.
    """
    flow = ContinuousFlow(1e-3, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, M, 0.0), flow, (3,), dtype=F64)
    sde = flow.sde
    x0 = torch.tensor([[0.1, -0.2, 0.4]], dtype=F64)

    def exact(t):
        s, t = torch.tensor(0.9, dtype=F64), torch.as_tensor(t, dtype=F64)
        return sde.alpha(t) * M + sde.sigma(t) / sde.sigma(s) * (x0 - sde.alpha(s) * M)

    names = ("bfn-solver1", "bfn-solver++1", "bfn-solver++2", "bfn-solver++3", "bfn-solver++2s", "bfn-solver++3s")
    for name in (*names, "bfn-solver++pc"):
        for grid in ([0.9, 0.5, 0.2, 0.0], [0.9, 0.6, 0.4, 0.2, 0.0]):
            out = solve(model, name, x0, grid, exact, warm=False)
            torch.testing.assert_close(out, exact(0.0), rtol=1e-10, atol=1e-12)
