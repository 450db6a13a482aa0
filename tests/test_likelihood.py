"""PF-ODE likelihood and its WKB correction in h against closed forms, moment ODEs and the oracles O1-O9.

The oracles are those of docs/likelihood.md 7.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import Tensor, nn

import bfn
from bfn.likelihood import (
    VESDE,
    WKB_ODE,
    EncoderOptions,
    GaussianPrior,
    ODEOptions,
    SimpleVPSDE,
    StartOptions,
    TraceOptions,
    integrate,
    latent_logp,
    latent_wkb,
    pf_ode_logp,
    pf_ode_nll,
    wkb_correction,
    wkb_first_order,
)
from bfn.likelihood.model import encode
from bfn.likelihood.pf_ode import Clock
from bfn.nets import build_net
from oracles import CategoricalDenoiser, ExactBinPosteriorFlow, GaussianDenoiser, JointTableDenoiser, ZeroNet

F64 = torch.float64
TIGHT = ODEOptions(rtol=1e-8, atol=1e-8)
EXACT = TraceOptions("exact")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def col(*values: float) -> Tensor:
    return torch.tensor(values, dtype=F64)[:, None]


# ------------------------------------------------------------------------------------ exact linear-Gaussian engine
def moment_logq(sde, a, b, t0: float, t1: float, m_end: float, p_end: float, h: float, x: np.ndarray) -> np.ndarray:
    """``log q^h_t0(x)`` of the backward h-process for the affine score ``s = -a(t) x + b(t)`` (1-D).

    Integrates ``dm/dt = B_x m + B_0``, ``dP/dt = 2 B_x P - h g^2`` from ``t1`` down to ``t0`` with
    ``B_x = f + (1 + h) g^2 a / 2`` and ``B_0 = -(1 + h) g^2 b / 2`` (scipy, tight tolerance).
    """

    def coef(t: float) -> tuple[float, float, float]:
        tt = torch.tensor(t, dtype=F64)
        return float(sde.f(tt)), float(sde.g2(tt)), t

    def rhs(t: float, y: np.ndarray) -> list[float]:
        f, g2, _ = coef(t)
        bx = f + 0.5 * (1 + h) * g2 * a(t)
        b0 = -0.5 * (1 + h) * g2 * b(t)
        return [bx * y[0] + b0, 2 * bx * y[1] - h * g2]

    sol = solve_ivp(rhs, (t1, t0), [m_end, p_end], method="DOP853", rtol=1e-12, atol=1e-14)
    m, p = sol.y[:, -1]
    return -0.5 * (x - m) ** 2 / p - 0.5 * np.log(2 * np.pi * p)


def moment_dlogq_dh(sde, a, b, t0, t1, m_end, p_end, x, dh: float = 1e-4) -> np.ndarray:
    """Central finite difference in ``h`` at 0 of :func:`moment_logq` (error ~ dh^2)."""
    plus = moment_logq(sde, a, b, t0, t1, m_end, p_end, dh, x)
    minus = moment_logq(sde, a, b, t0, t1, m_end, p_end, -dh, x)
    return (plus - minus) / (2 * dh)


# ------------------------------------------------------------------------------------------------ the integrator
def test_integrator_orders_and_directions():
    y0 = torch.ones(3, 1, dtype=F64)
    sol = integrate(lambda s, y: y, y0, 0.0, 1.0, ode=ODEOptions(rtol=1e-10, atol=1e-10))
    assert torch.allclose(sol.y, torch.full_like(y0, math.e), rtol=1e-9)
    # backwards in s, per-row time-dependent rates: y' = -k s y from 2 to 0 gives exp(2 k)
    k = torch.tensor([[0.5], [1.0], [1.5]], dtype=F64)
    sol = integrate(lambda s, y: -k * s[:, None] * y, y0, 2.0, 0.0, ode=ODEOptions(rtol=1e-10, atol=1e-10))
    assert torch.allclose(sol.y, torch.exp(2 * k), rtol=1e-8)
    # fixed-step RK4 is fourth order
    errors = [
        (integrate(lambda s, y: y, y0, 0.0, 1.0, ode=ODEOptions(solver="fixed", steps=n)).y[0, 0].item() - math.e)
        for n in (10, 20)
    ]
    assert 14 < errors[0] / errors[1] < 18
    with pytest.raises(ValueError, match="solver"):
        integrate(lambda s, y: y, y0, 0.0, 1.0, ode=ODEOptions(solver="euler"))  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- generic PF-ODE oracles
def o1_score(c: float, s0: float = 0.5):
    return lambda x, t: -c * x / (s0**2 + t.reshape(-1, *([1] * (x.ndim - 1))))


def test_pf_ode_logp_ve_closed_form():
    """O1 at h = 0: the ODE density is N(0, P_0^0) with P_0^0 = 0.1542584656800 (docs/likelihood.md O1)."""
    x = col(-1.0, 0.0, 0.7)
    out = pf_ode_logp(o1_score(1.3), VESDE(), x, 0.0, 1.0, GaussianPrior(0.0, 1.25), ode=TIGHT)
    p0 = 0.1542584656800
    expected = -0.5 * x[:, 0] ** 2 / p0 - 0.5 * math.log(2 * math.pi * p0)
    assert torch.allclose(out.logp, expected, atol=1e-7)
    assert out.nfe > 0 and torch.all(out.stderr == 0)


@pytest.mark.parametrize(
    ("c", "p_end", "reference", "mean_coef"),
    [(1.3, 1.25, -0.0254800932, 0.0072660), (1.0, 1.0, 0.2917106216, -0.0502949)],
    ids=["O1-scaled-score", "O2-wrong-prior"],
)
def test_wkb_ve_oracles(c, p_end, reference, mean_coef):
    """O1 / O2: d/dh log q^h_0(0.7) at h = 0 from docs/likelihood.md and from the exact moment ODEs; d/dh E_data NLL."""
    x = col(0.7, -1.1)
    out = wkb_first_order(o1_score(c), VESDE(), x, 0.0, 1.0, GaussianPrior(0.0, p_end), ode=TIGHT)
    assert out.coef[0].item() == pytest.approx(-reference, rel=1e-6)
    fd = moment_dlogq_dh(VESDE(), lambda t: c / (0.25 + t), lambda t: 0.0, 0.0, 1.0, 0.0, p_end, x[:, 0].numpy())
    assert np.allclose(-out.coef.numpy(), fd, rtol=1e-5)
    assert float(out.roundtrip_error.max()) < 1e-6
    assert torch.allclose(out.nll(0.1), out.nll0 + 0.1 * out.coef)
    # c(x) is quadratic here, so 3 Gauss-Hermite nodes give its exact mean over the data N(0, 0.5^2)
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    at_nodes = wkb_first_order(
        o1_score(c), VESDE(), col(*(0.5 * nodes)), 0.0, 1.0, GaussianPrior(0.0, p_end), ode=TIGHT
    )
    assert float((at_nodes.coef.numpy() * weights).sum() / weights.sum()) == pytest.approx(mean_coef, abs=2e-7)


def test_wkb_vp_simple_affine_score():
    """O3: VP 'simple' schedule, perturbed affine score, N(0, 1) prior on [0.01, 1]; d/dh log q(0.5) = 380.491."""
    sde = SimpleVPSDE(10.0)

    def a(t: float) -> float:
        tt = torch.tensor(t, dtype=F64)
        return 1.2 / float(sde.alpha(tt) ** 2 * 0.09 + sde.sigma(tt) ** 2)

    def b(t: float) -> float:
        return a(t) * 0.8 * float(sde.alpha(torch.tensor(t, dtype=F64))) + 0.1

    def score(x: Tensor, t: Tensor) -> Tensor:
        alpha, var = sde.alpha(t)[:, None], sde.alpha(t)[:, None] ** 2 * 0.09 + sde.sigma(t)[:, None] ** 2
        return -1.2 * (x - alpha * 0.8) / var + 0.1

    x = col(0.5, 0.9)
    out = wkb_first_order(score, sde, x, 0.01, 1.0, GaussianPrior(0.0, 1.0), ode=TIGHT)
    assert -out.coef[0].item() == pytest.approx(380.491, abs=2e-3)
    fd = moment_dlogq_dh(sde, a, b, 0.01, 1.0, 0.0, 1.0, x[:, 0].numpy())
    assert np.allclose(-out.coef.numpy(), fd, rtol=1e-3)
    # zeroth order against the h = 0 moments (m, P) = (0.88630617, 0.00761817) of docs/likelihood.md O3
    log_q0 = moment_logq(sde, a, b, 0.01, 1.0, 0.0, 1.0, 0.0, x[:, 0].numpy())
    assert np.allclose(-out.nll0.numpy(), log_q0, atol=1e-5)
    direct = -0.5 * (0.5 - 0.88630617) ** 2 / 0.00761817 - 0.5 * math.log(2 * math.pi * 0.00761817)
    assert -out.nll0[0].item() == pytest.approx(direct, abs=1e-4)


# the backward-Hessian-sweep table of docs/likelihood.md O6: x, l_0(x), l1(x)
O6_TABLE = [(-1.2, -0.53341251, -0.086212), (-0.5, -2.17033183, 0.045080), (0.0, -6.04047603, -0.500183),
            (0.9, -0.29051406, -0.025138)]  # fmt: skip


def mixture_1d(weights, means, var0):
    """Score (times ``scale``) and log-density of ``sum_k w_k N(m_k, var0 + t)`` (the VE marginals)."""
    w, m = torch.tensor(weights, dtype=F64), torch.tensor(means, dtype=F64)

    def log_p(x: Tensor, t: float | Tensor) -> Tensor:
        var = var0 + torch.as_tensor(t, dtype=F64).reshape(-1, 1)
        comp = -0.5 * (x - m) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)
        return torch.logsumexp(torch.log(w) + comp, dim=1)

    def score(x: Tensor, t: Tensor, scale: float = 1.0) -> Tensor:
        var = var0 + t.reshape(-1, 1)
        comp = torch.log(w) - 0.5 * (x - m) ** 2 / var - 0.5 * torch.log(var)
        r = torch.softmax(comp, dim=1)
        return scale * (r * (m - x) / var).sum(1, keepdim=True)

    return score, log_p


@pytest.mark.parametrize(("scale", "use_table"), [(1.2, True), (1.0, False)], ids=["O6", "O5-exact"])
def test_wkb_nonlinear_mixture(scale, use_table):
    """O6: VE two-Gaussian mixture, 1.2 x the exact score, exact prior p_T: the table of docs/likelihood.md O6.

    With the exact score (O5) the correction vanishes and the ODE density is the data density.
    """
    score, log_p = mixture_1d([0.5, 0.5], [-1.0, 1.0], 0.09)
    x = col(*[row[0] for row in O6_TABLE])
    ode = ODEOptions(rtol=1e-7, atol=1e-7)
    out = wkb_first_order(lambda y, t: score(y, t, scale), VESDE(), x, 0.0, 1.0, lambda y: log_p(y, 1.0), ode=ode)
    if use_table:
        for i, (_, l0, l1) in enumerate(O6_TABLE):
            assert -out.nll0[i].item() == pytest.approx(l0, abs=1e-5)
            assert -out.coef[i].item() == pytest.approx(l1, abs=2e-3 if x[i, 0] == 0 else 1e-3)
        # converged backward-sweep values (also reproduced by the characteristic integral of docs/likelihood.md 4.3.1
        # with nested solves to ~2e-4 at x = 0)
        expected = torch.tensor([-0.0862108, 0.0449928, -0.4988107, -0.0251372], dtype=F64)
        assert torch.allclose(-out.coef, expected, atol=2e-6)
    else:
        assert torch.allclose(-out.nll0, log_p(x, 0.0), atol=1e-5)
        assert out.coef.abs().max().item() < 1e-5


# ---------------------------------------------------------------------------------- continuous BFN (Gaussian data)
SIGMA_1, MEAN, STD, ETA = 0.02, 0.3, 0.4, 1e-3


class CorrelatedGaussianDenoiser(nn.Module):
    """Exact noise prediction for data ``x ~ N(m, C)`` (full covariance), so the score Jacobian is not diagonal."""

    def __init__(self, flow: bfn.ContinuousFlow, mean: Tensor, cov: Tensor) -> None:
        super().__init__()
        self.flow = flow
        self.register_buffer("m", mean)
        self.register_buffer("c", cov)

    def forward(self, mu: Tensor, tau: Tensor) -> Tensor:
        gamma = self.flow.gamma(tau.to(F64))[:, None, None]
        eye = torch.eye(self.m.numel(), dtype=F64)
        gain = gamma * self.c @ torch.linalg.inv(gamma**2 * self.c + gamma * (1 - gamma) * eye)
        x_hat = self.m + (gain @ (mu.to(F64) - gamma[:, :, 0] * self.m)[..., None])[..., 0]
        return ((mu - gamma[:, :, 0] * x_hat) / torch.sqrt(gamma[:, :, 0] * (1 - gamma[:, :, 0]))).to(mu.dtype)


def marginal(flow: bfn.ContinuousFlow, t: float, mean: Tensor, cov: Tensor):
    """The exact state marginal ``N(gamma m, gamma^2 C + gamma (1 - gamma) I)`` at solver time ``t``."""
    gamma = float(flow.sde.alpha(torch.tensor(t, dtype=F64)))
    eye = torch.eye(mean.numel(), dtype=F64)
    return torch.distributions.MultivariateNormal(gamma * mean, gamma**2 * cov + gamma * (1 - gamma) * eye)


def correlated_model(sigma_1: float = SIGMA_1) -> tuple[bfn.BFN, bfn.ContinuousFlow, Tensor, Tensor]:
    flow = bfn.ContinuousFlow(sigma_1, clip=False)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen(3), dtype=F64))
    cov = q @ torch.diag(torch.tensor([0.05, 0.2, 0.6], dtype=F64)) @ q.T
    mean = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    return bfn.BFN(CorrelatedGaussianDenoiser(flow, mean, cov), flow, (3,)), flow, mean, cov


def test_continuous_latent_density_is_exact_gaussian():
    """Acceptance 1: l_0(mu_0) = log N(mu_0; gamma_0 m, gamma_0^2 s^2 + gamma_0 (1 - gamma_0)) per element."""
    flow = bfn.ContinuousFlow(SIGMA_1, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, MEAN, STD), flow, (3,), dtype=F64)
    mean, cov = torch.full((3,), MEAN, dtype=F64), STD**2 * torch.eye(3, dtype=F64)
    end = marginal(flow, 1 - ETA, mean, cov)
    data_end = marginal(flow, 0.0, mean, cov)
    mu0 = data_end.sample((6,))
    start = StartOptions(eta=ETA, prior=end.log_prob)
    out = latent_logp(model, mu0, start=start, trace=EXACT)
    assert (out.logp - data_end.log_prob(mu0)).abs().max().item() < 1e-3 * 3
    tight = latent_logp(model, mu0, start=start, ode=TIGHT)
    assert (tight.logp - data_end.log_prob(mu0)).abs().max().item() < 1e-6
    # integrating in t instead of lambda, and with fixed-step RK4, gives the same density
    in_t = latent_logp(model, mu0, start=start, ode=replace(TIGHT, variable="t"))
    assert torch.allclose(in_t.logp, tight.logp, atol=1e-6)
    fixed = latent_logp(model, mu0, start=start, ode=ODEOptions(solver="fixed", steps=60))
    assert torch.allclose(fixed.logp, tight.logp, atol=1e-4)
    assert fixed.nfe == 240


def test_continuous_latent_density_correlated_exact_and_hutchinson():
    """Acceptance 1 with a non-diagonal score Jacobian: exact trace to 1e-3 per dim, Hutchinson within 3 s.e."""
    model, flow, mean, cov = correlated_model()
    end, data_end = marginal(flow, 1 - ETA, mean, cov), marginal(flow, 0.0, mean, cov)
    torch.manual_seed(0)
    mu0 = data_end.sample((24,))
    exact = data_end.log_prob(mu0)
    start = StartOptions(eta=ETA, prior=end.log_prob)
    out = latent_logp(model, mu0, start=start, trace=EXACT)
    assert (out.logp - exact).abs().max().item() < 3e-3
    hutch = latent_logp(model, mu0, start=start, trace=TraceOptions("hutchinson", probes=8), generator=gen(1))
    assert torch.all(hutch.stderr > 0)
    error = (hutch.logp - exact).mean().item()
    stderr = hutch.stderr.square().sum().sqrt().item() / mu0.shape[0]
    assert abs(error) < 3 * stderr + 3e-4
    # per example the spread is honest too: the z-scores are O(1)
    assert ((hutch.logp - exact) / hutch.stderr).abs().max().item() < 4.5


def test_continuous_bound_closed_form():
    """Acceptance 1, full bound: E_r[log N(mu_0; gamma_0 m, V_0)] + D log gamma_0 with r = N(gamma_0 x, sigma_0^2)."""
    model, flow, mean, cov = correlated_model()
    end, data_end = marginal(flow, 1 - ETA, mean, cov), marginal(flow, 0.0, mean, cov)
    x = torch.tensor([[0.5, -0.3, 0.2], [-0.4, 0.1, 0.6], [0.0, 0.0, 0.0]], dtype=F64)
    gamma0 = float(flow.sde.alpha(torch.tensor(0.0, dtype=F64)))
    prec = torch.linalg.inv(data_end.covariance_matrix)
    diff = gamma0 * x - data_end.mean
    quad = torch.einsum("bi,ij,bj->b", diff, prec, diff) + gamma0 * (1 - gamma0) * torch.trace(prec)
    expected = -(-0.5 * torch.logdet(2 * math.pi * data_end.covariance_matrix) - 0.5 * quad + 3 * math.log(gamma0))
    encoder = EncoderOptions(samples=16, antithetic=True)
    out = pf_ode_nll(model, x, start=StartOptions(ETA, end.log_prob), encoder=encoder, generator=gen(2))
    assert torch.all(out.stderr > 0)
    assert ((out.nll - expected).abs() < 3 * out.stderr + 3e-3).all()
    assert torch.allclose(out.bits_per_dim, out.nll / (3 * math.log(2)))


def test_continuous_decoder_term_is_d_log_gamma0():
    """The continuous bound adds exactly D log(1 - sigma_1^2) to the latent density at the encoder's own draws.

    A large sigma_1 makes the term (-0.28 nats here) far larger than the ODE tolerance, and the comparison uses the
    same encoder noise, so the test is exact: deleting the decoder term or flipping its sign fails it."""
    sigma_1 = 0.3
    model, flow, mean, cov = correlated_model(sigma_1)
    end = marginal(flow, 1 - ETA, mean, cov)
    x = torch.tensor([[0.5, -0.3, 0.2], [-0.4, 0.1, 0.6]], dtype=F64)
    start = StartOptions(eta=ETA, prior=end.log_prob)
    out = pf_ode_nll(model, x, start=start, trace=EXACT, generator=gen(5), ode=TIGHT)
    _, state, _ = encode(model, x, EncoderOptions(), gen(5))
    latent = latent_logp(model, state, start=start, trace=EXACT, ode=TIGHT)
    decoder = 3 * math.log(1 - sigma_1**2)
    assert decoder < -0.25
    assert torch.allclose(out.nll, -(latent.logp + decoder), atol=1e-9, rtol=0)


def test_continuous_default_prior_and_clipping_is_ignored():
    """The Gaussian prior N(0, sigma_{t_max}^2) costs only the truncation error; flow.clip does not change the ODE."""
    data_shape = (2,)
    unclipped = bfn.ContinuousFlow(SIGMA_1, clip=False)
    clipped = bfn.ContinuousFlow(SIGMA_1, clip=True)
    x = torch.tensor([[0.9, -0.95], [0.2, 0.1]], dtype=F64)
    results = []
    for flow in (unclipped, clipped):
        model = bfn.BFN(GaussianDenoiser(flow, MEAN, STD), flow, data_shape, dtype=F64)
        results.append(pf_ode_nll(model, x, start=StartOptions(eta=ETA), generator=gen(4)).nll)
    assert torch.allclose(results[0], results[1], atol=1e-12)
    mean, cov = torch.full((2,), MEAN, dtype=F64), STD**2 * torch.eye(2, dtype=F64)
    model = bfn.BFN(GaussianDenoiser(unclipped, MEAN, STD), unclipped, data_shape, dtype=F64)
    exact_prior = marginal(unclipped, 1 - ETA, mean, cov).log_prob
    exact_prior = pf_ode_nll(model, x, start=StartOptions(ETA, exact_prior), generator=gen(4)).nll
    assert (results[0] - exact_prior).abs().max().item() < 0.05


# --------------------------------------------------------------------------------------------- discrete BFN (O9)
PI_DATA = [0.5, 0.3, 0.2]
BETA_1 = 1.5


def discrete_model() -> bfn.BFN:
    return bfn.BFN(CategoricalDenoiser(PI_DATA), bfn.DiscreteFlow(3, BETA_1), (1,))


def discrete_mixture_prior(t: float):
    """Exact marginal of the logits at solver time ``t``: ``sum_k pi_k N(beta (K e_k - 1), K beta I)``."""
    beta = BETA_1 * (1 - t) ** 2
    means = beta * (3 * torch.eye(3, dtype=F64) - 1)
    log_pi = torch.log(torch.tensor(PI_DATA, dtype=F64))

    def log_prob(y: Tensor) -> Tensor:
        y = y.reshape(y.shape[0], 3)
        comp = -0.5 * ((y[:, None, :] - means) ** 2).sum(-1) / (3 * beta) - 1.5 * math.log(2 * math.pi * 3 * beta)
        return torch.logsumexp(log_pi + comp, dim=1)

    return log_prob


def test_discrete_latent_reference_values():
    """Acceptance 2 / O9: l_0 at y_0 = (2, -1, -0.5), t_max = 0.95, with both priors."""
    model = discrete_model()
    y0 = torch.tensor([[[2.0, -1.0, -0.5]]], dtype=F64)
    ode = ODEOptions(rtol=1e-9, atol=1e-9)
    gaussian = latent_logp(model, y0, start=StartOptions(eta=0.05), ode=ode)
    assert gaussian.logp.item() == pytest.approx(-5.8940883, abs=1e-6)
    mixture = latent_logp(model, y0, start=StartOptions(0.05, discrete_mixture_prior(0.95)), ode=ode)
    assert mixture.logp.item() == pytest.approx(-5.8952601635, abs=1e-7)
    assert mixture.logp.item() == pytest.approx(discrete_mixture_prior(0.0)(y0).item(), abs=1e-7)


def test_discrete_bound_is_the_data_probability():
    """Acceptance 2: with the exact denoiser the bound is -log pi(x) (Bayes identity), with zero variance."""
    model = discrete_model()
    x = torch.tensor([[0], [1], [2]])
    target = -torch.log(torch.tensor(PI_DATA, dtype=F64))
    out = pf_ode_nll(model, x, encoder=EncoderOptions(samples=16), generator=gen(5))
    assert (out.nll - target).abs().max().item() < 1e-3
    start = StartOptions(prior=discrete_mixture_prior(1 - 1e-3))
    exact = pf_ode_nll(model, x, start=start, encoder=EncoderOptions(samples=4), generator=gen(6), ode=TIGHT)
    assert (exact.nll - target).abs().max().item() < 1e-6
    assert exact.stderr.max().item() < 1e-6
    assert out.nfe > 1  # the decoder call is counted
    assert torch.allclose(out.bits_per_dim, out.nll / math.log(2))


def test_discrete_hutchinson_runs_on_sequences():
    """Several positions (a joint table): the exact-trace bound is -log P(x); Hutchinson agrees within 3 s.e."""
    table = torch.tensor([[0.3, 0.1], [0.2, 0.4]], dtype=F64)
    model = bfn.BFN(JointTableDenoiser(table), bfn.DiscreteFlow(2, 2.0), (2,))
    x = torch.tensor([[0, 0], [1, 1], [0, 1]])
    exact = pf_ode_nll(model, x, trace=EXACT, generator=gen(7))
    assert (exact.nll + torch.log(table[x[:, 0], x[:, 1]])).abs().max().item() < 2e-3
    hutch = pf_ode_nll(model, x, trace=TraceOptions("hutchinson", probes=64), generator=gen(7))  # same encoder draws
    error = (hutch.nll - exact.nll).mean().item()
    assert abs(error) < 3 * hutch.stderr.square().sum().sqrt().item() / x.shape[0]
    assert (hutch.stderr > 0).all()


# ------------------------------------------------------------------------------------------ discretised BFN
def test_discretised_bound_with_exact_bin_posterior():
    """Discretised data: exact bin posterior and the exact mixture prior give the bin probability back."""
    probs = [0.1, 0.2, 0.3, 0.4]
    flow = ExactBinPosteriorFlow(4, 0.02, probs)
    model = bfn.BFN(ZeroNet(channels=2), flow, (1,), dtype=F64)
    centres = flow.bin_centres()
    t_max = 1 - ETA
    gamma = float(flow.sde.alpha(torch.tensor(t_max, dtype=F64)))
    log_pi = torch.log(torch.tensor(probs, dtype=F64))

    def prior(mu: Tensor) -> Tensor:
        comp = -0.5 * (mu - gamma * centres) ** 2 / (gamma * (1 - gamma)) - 0.5 * math.log(
            2 * math.pi * gamma * (1 - gamma)
        )
        return torch.logsumexp(log_pi + comp, dim=1)

    x = centres[:, None]
    start, encoder, ode = StartOptions(ETA, prior), EncoderOptions(samples=2), ODEOptions(rtol=1e-7, atol=1e-7)
    out = pf_ode_nll(model, x, start=start, encoder=encoder, generator=gen(8), ode=ode)
    assert torch.allclose(out.nll, -log_pi, atol=1e-4)


# ------------------------------------------------------------------------------- WKB for BFN (O8 with a bad slope)
def o8_model(slope_scale: float) -> tuple[bfn.BFN, bfn.ContinuousFlow, GaussianPrior]:
    flow = bfn.ContinuousFlow(SIGMA_1, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, MEAN, STD, slope_scale=slope_scale), flow, (1,), dtype=F64)
    gamma = float(flow.sde.alpha(torch.tensor(1 - ETA, dtype=F64)))
    return model, flow, GaussianPrior(gamma * MEAN, gamma**2 * STD**2 + gamma * (1 - gamma))


def o8_affine_score(flow: bfn.ContinuousFlow, slope_scale: float):
    """``s = -a mu + b`` of the slope-scaled Gaussian denoiser."""

    def gamma(t: float) -> float:
        return float(flow.sde.alpha(torch.tensor(t, dtype=F64)))

    def a(t: float) -> float:
        g = gamma(t)
        var = g**2 * STD**2 + g * (1 - g)
        return (1 - slope_scale * g**2 * STD**2 / var) / (g * (1 - g))

    return a, (lambda t: a(t) * gamma(t) * MEAN)


@pytest.mark.parametrize("slope_scale", [1.3, 0.8])
def test_wkb_bfn_perturbed_denoiser_matches_moment_odes(slope_scale):
    """Acceptance 3 / O8: the latent coefficient equals the h-derivative of the exact Gaussian marginal."""
    model, flow, prior = o8_model(slope_scale)
    mu0 = col(-0.2, 0.3, 0.75)
    out = latent_wkb(model, mu0, start=StartOptions(ETA, prior), ode=TIGHT)
    a, b = o8_affine_score(flow, slope_scale)
    fd = moment_dlogq_dh(flow.sde, a, b, 0.0, 1 - ETA, prior.mean, prior.var, mu0[:, 0].numpy())
    assert np.allclose(-out.coef.numpy(), fd, rtol=1e-3, atol=1e-6)
    assert np.abs(fd).min() > 1e-2  # a genuine effect
    assert float(out.roundtrip_error.max()) < 1e-6


def test_wkb_bfn_exact_denoiser_gives_zero():
    """Acceptance 3: exact denoiser and exact prior: no h-dependence (marginal invariance)."""
    model, _, prior = o8_model(1.0)
    out = latent_wkb(model, col(-0.2, 0.3, 0.75), start=StartOptions(ETA, prior), ode=TIGHT)
    assert out.coef.abs().max().item() < 1e-6


def test_wkb_correction_bound_averages_latent_coefficient():
    """The data-level coefficient is E_r[-l1(mu_0)], computable from the moment ODEs (quadratic in mu_0)."""
    slope_scale = 1.3
    model, flow, prior = o8_model(slope_scale)
    a, b = o8_affine_score(flow, slope_scale)
    x = col(0.1, 0.6)
    start, encoder = StartOptions(ETA, prior), EncoderOptions(samples=8, antithetic=True)
    out = wkb_correction(model, x, start=start, encoder=encoder, generator=gen(9))
    # l1(mu) = d/dh log N(mu; m_h, P_h): average over mu ~ N(gamma_0 x, sigma_0^2) by finite differences in h
    gamma0 = float(flow.sde.alpha(torch.tensor(0.0, dtype=F64)))
    sigma0_sq = gamma0 * (1 - gamma0)
    nodes, weights = np.polynomial.hermite_e.hermegauss(20)
    expected = []
    for xi in x[:, 0].numpy():
        mu = gamma0 * xi + math.sqrt(sigma0_sq) * nodes
        fd = moment_dlogq_dh(flow.sde, a, b, 0.0, 1 - ETA, prior.mean, prior.var, mu)
        expected.append(-(weights * fd).sum() / weights.sum())
    assert np.allclose(out.coef.numpy(), expected, atol=1e-4 + 3 * out.stderr_coef.numpy().max())
    direct = pf_ode_nll(model, x, start=start, encoder=encoder, generator=gen(9), ode=TIGHT)
    assert torch.allclose(out.nll0, direct.nll, atol=1e-5)


# ------------------------------------------------------------------------------------------------ errors and API
def test_wkb_rejects_large_states_and_bad_arguments():
    flow = bfn.ContinuousFlow(SIGMA_1, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, MEAN, STD), flow, (5,), dtype=F64)
    x = torch.zeros(2, 5, dtype=F64)
    with pytest.raises(ValueError, match="dimension <= 4"):
        wkb_correction(model, x)
    with pytest.raises(ValueError, match="dimension <= 4"):
        wkb_first_order(o1_score(1.0), VESDE(), x, 0.0, 1.0, GaussianPrior(0.0, 1.0))
    discrete = bfn.BFN(CategoricalDenoiser([0.2] * 5), bfn.DiscreteFlow(5, 1.0), (1,))
    with pytest.raises(ValueError, match="dimension <= 4"):
        wkb_correction(discrete, torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="eta"):
        pf_ode_nll(model, x, start=StartOptions(eta=0.0))
    with pytest.raises(ValueError, match="eta"):
        pf_ode_nll(model, x, start=StartOptions(eta=1e-8))
    with pytest.raises(ValueError, match="method"):
        pf_ode_nll(model, x, trace=TraceOptions(method="trace"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prior"):
        pf_ode_nll(model, x, start=StartOptions(prior="laplace"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"EncoderOptions\.samples"):
        pf_ode_nll(model, x, encoder=EncoderOptions(samples=0))
    with pytest.raises(ValueError, match="probes"):
        pf_ode_nll(model, x, trace=TraceOptions(probes=0))
    with pytest.raises(ValueError, match="t0 < T"):
        pf_ode_logp(o1_score(1.0), VESDE(), x, 1.0, 0.5, GaussianPrior())
    with pytest.raises(ValueError):
        pf_ode_nll(discrete, torch.zeros(1, 1))  # float data for a discrete flow


def test_float32_network_and_auto_method():
    """A float32 network is fed float32 states; the result stays float64 and close to the float64 network's."""
    flow = bfn.ContinuousFlow(SIGMA_1, clip=False)
    x = torch.tensor([[0.1, -0.2], [0.5, 0.3]])
    results = []
    for dtype in (torch.float32, F64):
        model = bfn.BFN(GaussianDenoiser(flow, MEAN, STD), flow, (2,), dtype=dtype)
        results.append(pf_ode_nll(model, x.to(dtype), generator=gen(10)))
    assert results[0].nll.dtype == F64
    assert torch.allclose(results[0].nll, results[1].nll, atol=1e-3)
    # one probe: no standard error available
    model = bfn.BFN(GaussianDenoiser(flow, MEAN, STD), flow, (2,), dtype=F64)
    one_probe = pf_ode_nll(model, x.double(), trace=TraceOptions("hutchinson"), generator=gen(10))
    assert torch.isnan(one_probe.stderr).all()


# ----------------------------------------------------------------------------------------------- options objects
BAD_OPTIONS = {
    "ODEOptions.solver": lambda: ODEOptions(solver="euler"),
    "ODEOptions.rtol": lambda: ODEOptions(rtol=0.0),
    "ODEOptions.atol": lambda: ODEOptions(atol=1.0),
    "ODEOptions.steps": lambda: ODEOptions(steps=2.0),
    "ODEOptions.variable": lambda: ODEOptions(variable="tau"),
    "TraceOptions.method": lambda: TraceOptions(method="trace"),
    "TraceOptions.probes": lambda: TraceOptions(probes=True),
    "StartOptions.eta": lambda: StartOptions(eta="0.1"),
    "StartOptions.prior": lambda: StartOptions(prior="uniform"),
    "EncoderOptions.samples": lambda: EncoderOptions(samples=-1),
    "EncoderOptions.antithetic": lambda: EncoderOptions(antithetic=1),
}


@pytest.mark.parametrize("field", list(BAD_OPTIONS))
def test_options_refuse_bad_fields_naming_them(field):
    with pytest.raises(ValueError, match=re.escape(field)):
        BAD_OPTIONS[field]()


def test_options_are_frozen_normalised_and_rechecked_by_replace():
    ode = ODEOptions(rtol=np.float64(1e-6), steps=np.int64(7))
    assert type(ode.rtol) is float and type(ode.steps) is int and ode.steps == 7
    assert type(EncoderOptions(samples=torch.tensor(3)).samples) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        ode.rtol = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match=re.escape("ODEOptions.rtol")):
        replace(ode, rtol=-1e-3)
    # the defaults, declared once: the PF-ODE's, the WKB sweep's (tighter) and the samplers' start
    assert ODEOptions() == ODEOptions("rk45", 1e-5, 1e-5, 100, "auto")
    assert ODEOptions(rtol=1e-6, atol=1e-6, steps=200) == WKB_ODE
    assert inspect.signature(wkb_correction).parameters["ode"].default is WKB_ODE
    assert inspect.signature(latent_wkb).parameters["ode"].default is WKB_ODE
    assert TraceOptions() == TraceOptions("auto", 1) and EncoderOptions() == EncoderOptions(1, False)
    assert StartOptions().t_max(bfn.DiscreteFlow(3, 1.0)) == 1 - bfn.flows.DEFAULT_ETA["discrete"]


@pytest.mark.parametrize("kind", ["continuous", "discretised", "discrete"])
def test_bad_options_fail_before_any_network_call(kind):
    """Wrong option types and an eta below the flow's cut-off are refused before the encoder or decoder run."""
    flows = {
        "continuous": bfn.ContinuousFlow(SIGMA_1),
        "discretised": bfn.DiscretisedFlow(5, SIGMA_1),
        "discrete": bfn.DiscreteFlow(3, BETA_1),
    }
    flow = flows[kind]
    net = build_net("mlp", (2,), flow.input_channels, flow.output_channels, hidden=8, depth=1)
    model = bfn.BFN(net, flow, (2,))
    x = torch.zeros(2, 2, dtype=torch.long) if flow.class_indices else torch.zeros(2, 2)
    calls: list[int] = []
    net.register_forward_hook(lambda *args: calls.append(1))
    wrong = {"ode": ({"rtol": 1e-6}, "ODEOptions"), "trace": ("exact", "TraceOptions"), "encoder": (4, "Encoder")}
    for name, (value, expected) in wrong.items():
        with pytest.raises(ValueError, match=re.escape(f"{name} must be a bfn.likelihood.{expected}")):
            pf_ode_nll(model, x, **{name: value})
    with pytest.raises(ValueError, match=re.escape("start must be a bfn.likelihood.StartOptions, got float")):
        wkb_correction(model, x[:, :1], start=0.01)
    if flow.min_eta > 0:
        with pytest.raises(ValueError, match=r"StartOptions\.eta must be >="):
            pf_ode_nll(model, x, start=StartOptions(eta=flow.min_eta / 2))
    assert not calls


def test_auto_variable_is_lambda_for_bfn_and_results_are_unchanged():
    """The default integration variable ``"auto"`` resolves to ``lambda`` for every BFN flow down to its smallest
    ``eta``, so the default bound is bit-identical to the explicit ``lambda`` one; and seeded numbers recorded before
    the options became objects are reproduced."""
    for flow in (bfn.ContinuousFlow(SIGMA_1), bfn.DiscretisedFlow(5, SIGMA_1), bfn.DiscreteFlow(3, BETA_1)):
        t_max = StartOptions(eta=max(flow.min_eta, 1e-6)).t_max(flow)
        assert Clock.choose(flow.sde, 0.0, t_max, "auto").variable == "lambda"
    flow = bfn.ContinuousFlow(SIGMA_1, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, MEAN, STD, slope_scale=1.3), flow, (2,), dtype=F64)
    x = torch.tensor([[0.1, -0.5], [0.7, 0.2]], dtype=F64)
    default = pf_ode_nll(model, x, ode=ODEOptions(solver="fixed", steps=8), generator=gen(0))
    in_lambda = pf_ode_nll(model, x, ode=ODEOptions(solver="fixed", steps=8, variable="lambda"), generator=gen(0))
    assert torch.equal(default.nll, in_lambda.nll)
    out = pf_ode_nll(
        model,
        x,
        start=StartOptions(eta=0.02),
        ode=ODEOptions(solver="fixed", steps=8),
        trace=TraceOptions("hutchinson", probes=2),
        encoder=EncoderOptions(samples=2, antithetic=True),
        generator=gen(0),
    )
    # numbers of the keyword-argument version (identical to the last bit on the machine that recorded them)
    assert out.nll.tolist() == pytest.approx([2.0226521493407286, 1.9166024601377805], rel=1e-12, abs=0)
    assert out.stderr.tolist() == pytest.approx([0.0016155078288213607, 0.02396413807204284], rel=1e-9, abs=0)
    assert out.nfe == 32
    model = bfn.BFN(GaussianDenoiser(flow, MEAN, STD, slope_scale=1.3), flow, (1,), dtype=F64)
    wkb = wkb_correction(
        model, x[:, :1], ode=ODEOptions(solver="fixed", steps=6), encoder=EncoderOptions(samples=2), generator=gen(1)
    )
    assert wkb.nll0.tolist() == pytest.approx([0.9005850373004323, 1.020799365507194], rel=1e-12, abs=0)
    assert wkb.coef.tolist() == pytest.approx([0.7294627408810451, 0.4872085807750418], rel=1e-10, abs=0)
    assert wkb.nfe == 48
