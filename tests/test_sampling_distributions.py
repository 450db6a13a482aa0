"""Distribution-level tests with exact denoisers: the original sampler reproduces known distributions, the solvers beat
it on correlated categorical data at 10 calls and agree with the truth at 200, and the h-solver's final marginal
matches the linear-Gaussian theory for every h (docs/solvers.md 6.4-6.5, docs/likelihood.md O8 and the moment engine).

Sample sizes follow from the tolerances: the Monte-Carlo floor of each distance is computed for the sample size used
and stays well below the threshold. All seeds are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.stats import norm
from torch import Tensor, nn

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow
from bfn.sampling import SAMPLERS, sample
from oracles import ExactBinPosteriorFlow, GaussianDenoiser, JointTableDenoiser, MixtureDenoiser, ZeroNet

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ original sampler (core)
MIXTURE = ([0.3, 0.7], [-0.5, 0.4], [0.1, 0.2])


def w1_to_mixture(x: Tensor) -> float:
    """``W1 = int |F_n - F|`` against the exact mixture CDF."""
    xs = np.sort(x.flatten().numpy())
    grid = np.linspace(-2.5, 2.5, 50001)
    cdf = sum(w * norm.cdf((grid - m) / s) for w, m, s in zip(*MIXTURE))
    return float(np.trapezoid(np.abs(np.searchsorted(xs, grid, side="right") / len(xs) - cdf), grid))


def test_bfn_sampler_reproduces_a_gaussian_mixture():
    flow = ContinuousFlow(1e-3, clip=False)
    model = bfn.BFN(MixtureDenoiser(flow, *MIXTURE), flow, (1,))
    out = sample(model, 20_000, "bfn", steps=200, generator=gen(0))
    assert out.nfe == 201
    # exact samples of the same size reach W1 ~ 0.002-0.004
    assert w1_to_mixture(out.samples) < 0.02


def test_bfn_sampler_reproduces_a_bin_distribution():
    probs = [0.1, 0.45, 0.15, 0.3]
    flow = ExactBinPosteriorFlow(4, 0.02, probs)
    model = bfn.BFN(ZeroNet(2), flow, (4,), dtype=F64)
    out = sample(model, 10_000, "bfn", steps=200, generator=gen(1))
    centres = flow.bin_centres()
    assert torch.isin(out.samples, centres).all()
    hist = torch.bincount(flow.bin_index(out.samples).flatten(), minlength=4).double() / out.samples.numel()
    assert 0.5 * (hist - torch.tensor(probs, dtype=F64)).abs().sum() < 0.02  # floor ~0.004 for 40k draws


# -------------------------------------------------------------------------------- correlated categorical
TABLE = torch.tensor([[0.3, 0.05, 0.05], [0.02, 0.2, 0.08], [0.1, 0.1, 0.1]], dtype=F64)


class PairTable(nn.Module):
    """Exact per-position posterior marginals for two positions with joint table ``P`` (the maths of
    ``oracles.JointTableDenoiser`` for D = 2, written with matrix products so that 10^5 samples stay cheap)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, theta: Tensor, tau: Tensor) -> Tensor:
        t1, t2 = theta[:, 0].double(), theta[:, 1].double()
        marginals = torch.stack([t1 * (t2 @ self.table.T), t2 * (t1 @ self.table)], 1)
        return torch.log(marginals.clamp_min(1e-300)).to(theta.dtype)


def test_pair_table_is_the_joint_table_oracle():
    theta = torch.softmax(3 * torch.randn(50, 2, 3, generator=gen(0), dtype=F64), -1)
    tau = torch.rand(50, generator=gen(1), dtype=F64)
    fast = torch.softmax(PairTable(TABLE)(theta, tau), -1)
    torch.testing.assert_close(fast, torch.softmax(JointTableDenoiser(TABLE)(theta, tau), -1), rtol=1e-12, atol=1e-14)


def table_model() -> bfn.BFN:
    return bfn.BFN(PairTable(TABLE), DiscreteFlow(3, 3.0), (2,), dtype=F64)


def posterior_draw(z: Tensor, seed: int) -> Tensor:
    """One exact draw from the joint posterior ``w(x1, x2) ~ P(x1, x2) theta_1[x1] theta_2[x2]``.

    docs/solvers.md 6.5.
    """
    log_theta = torch.log_softmax(z.double(), -1)
    log_w = torch.log(TABLE) + log_theta[:, 0, :, None] + log_theta[:, 1, None, :]
    flat = torch.multinomial(torch.softmax(log_w.reshape(len(z), 9), -1), 1, generator=gen(seed)).flatten()
    return torch.stack([flat // 3, flat % 3], 1)


def tv_to_table(pairs: Tensor) -> float:
    hist = torch.bincount(pairs[:, 0] * 3 + pairs[:, 1], minlength=9).double() / len(pairs)
    return 0.5 * (hist - TABLE.flatten()).abs().sum().item()


def table_tv(name: str, calls: int, num: int, seed: int = 1) -> tuple[float, Tensor]:
    """TV to the table after ``calls`` network calls of updates (protocol of docs/solvers.md 6.5: eta = 1e-3, zero init,
    exact posterior draw from the final logits), and the sampler's own samples."""
    spec = SAMPLERS[name]
    steps = calls // spec.nfe_per_step
    options = {} if spec.prior_start else {"final": "denoise", "eta": 1e-3}
    out = sample(table_model(), num, name, steps=steps, generator=gen(seed), **options)
    assert out.t == 0.0
    return tv_to_table(posterior_draw(out.state, seed + 100)), out.samples


DISCRETE_SOLVERS = [n for n, s in SAMPLERS.items() if "discrete" in s.kinds and not s.prior_start]
FIRST_ORDER = {"bfn-solver1", "sde-bfn-solver1"}


@pytest.fixture(scope="module")
def bfn_tv_at_10() -> float:
    return table_tv("bfn", 10, 200_000)[0]


@pytest.mark.parametrize("name", DISCRETE_SOLVERS)
def test_solvers_beat_the_bfn_sampler_at_10_calls(bfn_tv_at_10, name):
    # 2e5 samples: Monte-Carlo floor ~0.002; the original sampler sits at ~0.023
    assert bfn_tv_at_10 > 0.015
    tv, _ = table_tv(name, 10, 200_000)
    # first-order solvers gain ~2x (the table of docs/solvers.md 6.5: ODE-1 0.016 vs 0.036), higher orders >= 5x
    assert tv <= (0.6 if name in FIRST_ORDER else 1 / 3) * bfn_tv_at_10, (name, tv, bfn_tv_at_10)


def test_bfn_sampler_reproduces_the_correlated_table_at_200_steps():
    tv_exact_draw, samples = table_tv("bfn", 200, 100_000)
    assert tv_to_table(samples) < 0.02  # its own output: per-position draws at tau = 1 (floor ~0.0035)
    assert tv_exact_draw < 0.01


@pytest.mark.parametrize("name", DISCRETE_SOLVERS)
def test_solvers_agree_with_the_truth_at_200_calls(name):
    # 5e4 samples (floor ~0.004, measured <= 0.0053 for every sampler); 2e5 takes ~40 s per sampler on one core
    tv, _ = table_tv(name, 200, 50_000)
    assert tv < 0.01, (name, tv)


# ------------------------------------------------------------------------------------------ the h dial
SIGMA_1, M, S, ETA = 0.02, 0.3, 0.4, 1e-3


def moment_reference(h: float, slope_scale: float) -> tuple[float, float]:
    """Mean and variance at t = 0 of the backward h-process for an affine score, from the moment ODEs
    ``dm/dt = B_x m + B_0``, ``dP/dt = 2 B_x P - h g^2`` (docs/likelihood.md 7), started at the exact marginal."""
    sde = ContinuousFlow(SIGMA_1).sde

    def coefficients(t: float) -> tuple[float, ...]:
        tt = torch.tensor(t, dtype=F64)
        return float(sde.alpha(tt)), float(sde.sigma(tt)), float(sde.f(tt)), float(sde.g2(tt))

    def rhs(t: float, y: list[float]) -> list[float]:
        alpha, sigma, f, g2 = coefficients(t)
        gain = slope_scale * alpha * S * S / (alpha * alpha * S * S + sigma * sigma)  # x_hat = M + gain (mu - alpha M)
        a = (1 - alpha * gain) / sigma**2  # score = -a mu + b
        b = alpha * M * (1 - gain * alpha) / sigma**2
        b_x, b_0 = f + (1 + h) / 2 * g2 * a, -(1 + h) / 2 * g2 * b
        return [b_x * y[0] + b_0, 2 * b_x * y[1] - h * g2]

    alpha, sigma, _, _ = coefficients(1 - ETA)
    y0 = [alpha * M, alpha**2 * S**2 + sigma**2]
    mean, var = solve_ivp(rhs, (1 - ETA, 0.0), y0, method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
    return float(mean), float(var)


def test_moment_engine_reproduces_o8():
    gamma_0 = 1 - SIGMA_1**2
    exact = (gamma_0 * M, gamma_0**2 * S * S + gamma_0 * (1 - gamma_0))
    assert exact[0] == pytest.approx(0.29988, abs=5e-6)
    assert exact[1] == pytest.approx(0.1602718656, abs=1e-10)
    for h in (0.0, 0.5, 1.0):
        mean, var = moment_reference(h, 1.0)
        assert mean == pytest.approx(exact[0], rel=1e-8)
        assert var == pytest.approx(exact[1], rel=1e-8)


@pytest.mark.parametrize("h", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("slope_scale", [1.0, 1.2])
def test_h_solver_final_marginal(h, slope_scale):
    """Exact denoiser: the data marginal for every h (O8); mis-scaled slope: the moment-ODE closed form."""
    flow = ContinuousFlow(SIGMA_1, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, M, S, slope_scale=slope_scale), flow, (4,))
    out = sample(
        model,
        50_000,
        "h-solver",
        steps=100,
        generator=gen(3),
        h=h,
        order=3,
        eta=ETA,
        grid="logsnr",
        init="moment",
        data_mean=M,
        data_var=S * S,
        final="denoise",
    )
    mean, var = moment_reference(h, slope_scale)
    x = out.state.flatten()
    n = x.numel()
    assert abs(x.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert abs(x.var().item() - var) < 4 * var * math.sqrt(2 / n)
