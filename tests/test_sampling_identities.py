"""Exact identities of the SDE view and of the sampler steps, in float64 at 1e-10.

The identities are those of docs/solvers.md 6.1 and docs/likelihood.md O10.

Each step identity compares two formulas written independently: a step function of ``bfn.sampling`` against the
original BFN update of the flows, a literal transcription of docs/solvers.md, or a closed form.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow
from bfn.sampling import SAMPLERS, Predictor, SamplerState, Schedule, StepContext, resolve_options
from bfn.sampling.discrete import sde_weights
from bfn.sampling.exponential import divided_differences, exact_taylor_weights, exponential_update
from bfn.time import flip_clock, time_grid

F64 = torch.float64
RTOL = 1e-10


def t64(values) -> Tensor:
    return torch.as_tensor(values, dtype=F64)


def close(a, b, rtol: float = RTOL, atol: float = 0.0) -> None:
    torch.testing.assert_close(torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64), rtol=rtol, atol=atol)


def fd(fn, t: Tensor, eps: float = 1e-5) -> Tensor:
    """Fourth-order central finite difference of ``fn`` at ``t`` (accurate to about 1e-9 relative here)."""
    return (-fn(t + 2 * eps) + 8 * fn(t + eps) - 8 * fn(t - eps) + fn(t - 2 * eps)) / (12 * eps)


def derivative(fn, t: Tensor) -> Tensor:
    """``d fn / dt`` elementwise by automatic differentiation (exact up to rounding, unlike finite differences)."""
    t = t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(t).sum(), t)
    return grad


# ------------------------------------------------------------------------------------------- networks
class AffineEps(nn.Module):
    """A deterministic noise predictor whose ``x_hat`` leaves [-1, 1] (so clipping matters)."""

    def forward(self, mu: Tensor, tau: Tensor) -> Tensor:
        return 2.0 * torch.tanh(3.0 * mu) - 0.5 + tau.reshape(-1, *([1] * (mu.ndim - 1)))


class LogitNet(nn.Module):
    """Deterministic logits depending on ``theta`` (positions coupled) and ``tau``."""

    def forward(self, theta: Tensor, tau: Tensor) -> Tensor:
        mixed = theta + theta.flip(1).roll(1, dims=-1)
        return 3.0 * torch.sin(4.0 * mixed) + tau.reshape(-1, 1, 1)


class OneHotNet(nn.Module):
    """Logits of a fixed one-hot prediction per position (class = position index mod K)."""

    def forward(self, theta: Tensor, tau: Tensor) -> Tensor:
        k = theta.shape[-1]
        idx = torch.arange(theta.shape[1]) % k
        return 1e4 * nn.functional.one_hot(idx, k).to(theta.dtype).expand_as(theta)


class ConstantX0(nn.Module):
    """A continuous network whose data prediction is the constant ``x0`` (exact eps for it)."""

    def __init__(self, flow: ContinuousFlow, x0: float) -> None:
        super().__init__()
        self.flow, self.x0 = flow, x0

    def forward(self, mu: Tensor, tau: Tensor) -> Tensor:
        gamma = self.flow.gamma(tau.to(F64)).reshape(-1, *([1] * (mu.ndim - 1)))
        return ((mu - gamma * self.x0) / torch.sqrt(gamma * (1 - gamma))).to(mu.dtype)


def step_of(name: str, model: bfn.BFN, **options):
    spec = SAMPLERS[name]
    opts = resolve_options(name, spec, model.flow.kind, options)
    return spec.method(model.flow.kind, opts)


# ----------------------------------------------------------------------------------- SDE coefficients
ANCHORS = {  # docs/solvers.md 2.2: sigma_1 = 1e-3, eta = 0.01, n = 10
    "alpha": [0.129036, 0.77818, 0.943506, 0.985612, 0.996336, 0.999067, 0.999762, 0.999939, 0.999985, 0.999996],
    "sigma": [0.33524, 0.41547, 0.230873, 0.119084, 0.060423, 0.030535, 0.015415, 0.00778, 0.003926, 0.001982],
    "lam": [-0.954753, 0.627547, 1.407737, 2.113435, 2.802713, 3.48795, 4.172165, 4.856122, 5.540012, 6.223886],
}


def test_continuous_anchor_table():
    sde = ContinuousFlow(1e-3).sde
    ts = time_grid(10, 0.01)
    close(ts, [0.99 * (10 - i) / 10 for i in range(11)], rtol=1e-15)
    for name, values in ANCHORS.items():
        got = getattr(sde, name)(ts)
        close(got[:10], values, rtol=2e-5, atol=1e-6)  # the table is printed to 6 digits
    close(sde.alpha(ts[-1:]), [1 - 1e-6], rtol=1e-12)
    close(sde.sigma(ts[-1:]), [math.sqrt((1 - 1e-6) * 1e-6)], rtol=1e-12)
    close(sde.lam(ts[-1:]), [0.5 * math.log(1e6 - 1)], rtol=1e-12)


@pytest.mark.parametrize("sigma_1", [1e-3, 0.02, 0.3])
def test_continuous_sde_reproduces_flow_marginals(sigma_1):
    flow = ContinuousFlow(sigma_1)
    sde = flow.sde
    t = t64([0.0, 0.05, 0.3, 0.5, 0.77, 0.99])
    gamma = flow.gamma(flip_clock(t))
    close(sde.alpha(t), gamma)
    close(sde.sigma(t) ** 2, gamma * (1 - gamma))
    beta = flow.beta(flip_clock(t))
    close(sde.alpha(t), beta / (1 + beta))
    close(sde.sigma(t), torch.sqrt(beta) / (1 + beta))
    close(torch.exp(sde.lam(t)), torch.sqrt(beta))
    close(sde.t_of_lam(sde.lam(t)), t, atol=1e-14)
    inner = t[1:-1]
    close(sde.f(inner), derivative(lambda u: torch.log(sde.alpha(u)), inner))
    dvar = derivative(lambda u: sde.sigma(u) ** 2, inner)
    close(sde.g2(inner), dvar - 2 * sde.f(inner) * sde.sigma(inner) ** 2)
    close(sde.f(inner), fd(lambda u: torch.log1p(-torch.exp(2 * (1 - u) * math.log(sigma_1))), inner), rtol=1e-7)
    close(sde.g2(t), -2 * math.log(sigma_1) * (1 - sde.alpha(t)))


@pytest.mark.parametrize(("k", "beta_1"), [(2, 9.0), (5, 3.0), (27, 0.5625)])
def test_discrete_sde_identities(k, beta_1):
    flow = DiscreteFlow(k, beta_1)
    sde = flow.sde
    t = t64([0.0, 0.1, 0.4, 0.75, 0.95, 0.999])
    beta = flow.beta(flip_clock(t))
    close(sde.alpha(t), beta)
    close(sde.sigma(t) ** 2, k * beta)
    close(sde.f(t) + sde.g2(t) / (k * beta), torch.zeros_like(t), atol=1e-10)
    close(sde.f(t) + sde.g2(t) / (2 * k * beta), -1 / (1 - t))
    close(sde.t_of_lam(sde.lam(t)), t, atol=1e-14)
    inner = t[1:-1]
    close(sde.f(inner), derivative(lambda u: torch.log(sde.alpha(u)), inner))
    dvar = derivative(lambda u: sde.sigma(u) ** 2, inner)
    close(sde.g2(inner), dvar - 2 * sde.f(inner) * sde.sigma(inner) ** 2)
    close(sde.f(inner), fd(lambda u: torch.log(sde.alpha(u)), inner), rtol=1e-7)


def test_discrete_sde_weights_are_the_quadrature_of_g2():
    from scipy.integrate import quad

    k, beta_1 = 5, 3.0
    sde = DiscreteFlow(k, beta_1).sde
    for s, t in [(0.9, 0.7), (0.5, 0.45), (0.3, 0.0)]:
        weights = sde_weights(s, t, beta_1)
        for j, w in enumerate(weights):
            integrand = lambda u, j=j, s=s: float(sde.g2(t64(u))) * (u - s) ** j / math.factorial(j)
            exact = -quad(integrand, s, t, epsabs=1e-14, epsrel=1e-13)[0] / k
            close(w, exact, rtol=1e-12)


def test_exact_taylor_weights_are_the_integrals():
    from scipy.integrate import quad

    for delta, h in [(0.3, 0.0), (0.05, 0.5), (1.2, 1.0), (0.7, 2.0)]:
        c = 1 + h
        weights = exact_taylor_weights(delta, c, 3)
        for j, w in enumerate(weights):
            f = lambda u, j=j, c=c, delta=delta: c * math.exp(-c * (delta - u)) * u**j / math.factorial(j)
            close(w, quad(f, 0, delta, epsabs=1e-14, epsrel=1e-13)[0], rtol=1e-12)


def test_divided_differences_are_exact_on_quadratics():
    v = [0.7, 0.4, -0.1]
    y = [t64([2 + 3 * x - 1.5 * x * x]) for x in v]
    d = divided_differences(list(zip(v, y)), 3)
    close(d[0], y[0])
    close(d[1], [3 - 3 * v[0]])
    close(d[2], [-3.0])
    close(divided_differences(list(zip(v, y)), 2)[1], (y[0] - y[1]) / (v[0] - v[1]))


# --------------------------------------------------------------------------------------- step identities
def continuous_model(clip: bool = True, sigma_1: float = 1e-3) -> bfn.BFN:
    return bfn.BFN(AffineEps(), ContinuousFlow(sigma_1, clip=clip), (3, 4), dtype=F64)


def state_at(model: bfn.BFN, t: float, seed: int = 0) -> SamplerState:
    g = torch.Generator().manual_seed(seed)
    shape = (5, *model.flow.state_shape(model.data_shape))
    return SamplerState(float(model.flow.sde.sigma(t64(t))) * torch.randn(shape, generator=g, dtype=F64), t)


def noise_like(state: SamplerState, seed: int) -> Tensor:
    return torch.randn(state.x.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize(("s", "t"), [(0.99, 0.891), (0.6, 0.35), (0.2, 0.0), (1.0, 0.9)])
def test_sde_solver_pp1_is_the_bfn_bayesian_update(s, t):
    model = continuous_model()
    flow = model.flow
    state = state_at(model, min(s, 0.99))
    state = SamplerState(state.x if s < 1 else torch.zeros_like(state.x), s)
    tau, tau_next = flip_clock(t64(s)), flip_clock(t64(t))
    beta_s, beta_t = flow.beta(tau), flow.beta(tau_next)
    net_out = model.call_net(state.x, tau)
    # the BFN update: y ~ N(x_hat, 1/a), a = beta_t - beta_s, mu' = (rho mu + a y)/(rho + a)
    bfn_mu = flow.sampler_step(net_out, state.x, tau, beta_t - beta_s, torch.Generator().manual_seed(7))
    x_hat = flow.x_hat(net_out, state.x, tau)
    xi = noise_like(state, 7)
    beta_form = ((1 + beta_s) * state.x + (beta_t - beta_s) * x_hat + torch.sqrt(beta_t - beta_s) * xi) / (1 + beta_t)
    close(bfn_mu, beta_form, rtol=1e-12, atol=1e-13)
    if s < 1:  # the lambda form needs s < 1
        ctx = StepContext.build(model)
        got = step_of("sde-bfn-solver++1", model).step(ctx, state, t, xi, 1).x
        close(got, bfn_mu, rtol=1e-10, atol=1e-12)
        sch = Schedule(flow.sde)
        ps, pt = sch.at(s), sch.at(t)
        h = pt.lam - ps.lam
        close(pt.sigma / ps.sigma * math.exp(-h), (1 + beta_s) / (1 + beta_t))
        close(pt.alpha * -math.expm1(-2 * h), (beta_t - beta_s) / (1 + beta_t))
        close(pt.sigma * math.sqrt(-math.expm1(-2 * h)), torch.sqrt(beta_t - beta_s) / (1 + beta_t))


@pytest.mark.parametrize("clip", [False, True])
def test_noise_and_data_forms_of_the_first_order_ode_step_agree(clip):
    model = continuous_model(clip=clip)
    state = state_at(model, 0.7)
    state = SamplerState(8.0 * state.x, state.t)  # far enough out that x_hat leaves [-1, 1]
    ctx = StepContext.build(model)
    x_hat = ctx.predictor(state.x, 0.7)
    assert (x_hat.abs() > 1).any() != clip  # the net's x_hat leaves [-1, 1], so clipping is exercised
    for t in (0.69, 0.5, 0.0):
        noise_form = step_of("bfn-solver1", model).step(ctx, state, t, None, 1).x
        data_form = step_of("bfn-solver++1", model).step(ctx, state, t, None, 1).x
        close(noise_form, data_form, rtol=1e-10, atol=1e-12)
        # the beta form of docs/solvers.md 2.6
        flow = model.flow
        bs, bt = flow.beta(flip_clock(t64(0.7))), flow.beta(flip_clock(t64(t)))
        beta_form = (torch.sqrt(bt / bs) * (1 + bs) * state.x + (bt - torch.sqrt(bs * bt)) * x_hat) / (1 + bt)
        close(data_form, beta_form, rtol=1e-10, atol=1e-12)


def test_h_solver_order_one_is_the_ode_and_sde_presets():
    model = continuous_model(clip=False)
    ctx = StepContext.build(model)
    state = state_at(model, 0.8)
    xi = noise_like(state, 3)
    for t in (0.75, 0.3):
        h0 = step_of("h-solver", model, h=0.0, order=1).step(ctx, state, t, None, 1).x
        close(h0, step_of("bfn-solver++1", model).step(ctx, state, t, None, 1).x)
        h1 = step_of("h-solver", model, h=1.0, order=1).step(ctx, state, t, xi, 1).x
        close(h1, step_of("sde-bfn-solver++1", model).step(ctx, state, t, xi, 1).x)
    discrete = bfn.BFN(LogitNet(), DiscreteFlow(4, 2.0), (3,), dtype=F64)
    ctx = StepContext.build(discrete)
    state = state_at(discrete, 0.8)
    xi = noise_like(state, 4)
    for t in (0.75, 0.3):
        h0 = step_of("h-solver", discrete, h=0.0, order=1).step(ctx, state, t, None, 1).x
        close(h0, step_of("bfn-solver1", discrete).step(ctx, state, t, None, 1).x)
        h1 = step_of("h-solver", discrete, h=1.0, order=1).step(ctx, state, t, xi, 1).x
        close(h1, step_of("sde-bfn-solver1", discrete).step(ctx, state, t, xi, 1).x)


@pytest.mark.parametrize(("h", "mean", "var"), [
    (0.0, 0.2512359762, 0.0),
    (0.3, 0.2813534567, 0.0027677923),
    (1.0, 0.3247451660, 0.0053103002),
    (2.0, 0.3518617892, 0.0060329153),
])  # fmt: skip
def test_h_exponential_integrator_matches_o10(h, mean, var):
    # docs/likelihood.md O10: sigma_1 = 0.02, frozen x0_hat = 0.37, s = 0.6 -> t = 0.35, x_s = 0.05
    flow = ContinuousFlow(0.02, clip=False)
    model = bfn.BFN(ConstantX0(flow, 0.37), flow, (1,), dtype=F64)
    ctx = StepContext.build(model)
    state = SamplerState(torch.full((1, 1), 0.05, dtype=F64), 0.6)
    method = step_of("h-solver", model, h=h, order=1)
    got_mean = method.step(ctx, state, 0.35, torch.zeros_like(state.x) if h > 0 else None, 1).x
    close(got_mean, [[mean]], rtol=0, atol=6e-11)  # the table has 10 decimals
    if h > 0:
        got = method.step(ctx, state, 0.35, torch.ones_like(state.x), 1).x - got_mean
        close(got**2, [[var]], rtol=0, atol=6e-11)
    # and the same numbers from the moment ODEs dm/dt = B_x m + B_0, dP/dt = 2 B_x P - h g^2 (docs/likelihood.md 2.2)
    from scipy.integrate import solve_ivp

    sde = flow.sde

    def rhs(t, y):
        tt = t64(t)
        lam_dot = -float(sde.g2(tt)) / (2 * float(sde.sigma(tt)) ** 2)
        sigma_dot = float(fd(sde.sigma, tt, 1e-6)) / float(sde.sigma(tt))
        b_x = sigma_dot - h * lam_dot
        b_0 = (1 + h) * lam_dot * float(sde.alpha(tt)) * 0.37
        return [b_x * y[0] + b_0, 2 * b_x * y[1] - h * float(sde.g2(tt))]

    ref = solve_ivp(rhs, (0.6, 0.35), [0.05, 0.0], method="DOP853", rtol=1e-12, atol=1e-14).y[:, -1]
    close(ref, [mean, var], rtol=1e-7, atol=1e-10)


def test_discrete_sde_solver1_with_a_one_hot_is_the_bfn_step():
    flow = DiscreteFlow(3, 3.0)
    model = bfn.BFN(OneHotNet(), flow, (4,), dtype=F64)
    ctx = StepContext.build(model)
    for s, t in [(0.95, 0.9), (0.5, 0.2), (0.1, 0.0)]:
        state = state_at(model, s)
        tau, tau_next = flip_clock(t64(s)), flip_clock(t64(t))
        net_out = model.call_net(state.x, tau)
        accuracy = flow.beta(tau_next) - flow.beta(tau)
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        categorical = flow.sampler_step(net_out, state.x, tau, accuracy, g1, categorical=True)
        mean_guess = flow.sampler_step(net_out, state.x, tau, accuracy, g2, categorical=False)
        solver = step_of("sde-bfn-solver1", model).step(ctx, state, t, noise_like(state, 1), 1).x
        close(solver, mean_guess, rtol=1e-10, atol=1e-12)
        # with a one-hot p_hat the categorical draw is that class; the draw consumes the generator first
        expected_noise = torch.Generator().manual_seed(1)
        torch.multinomial(torch.softmax(net_out, -1).reshape(-1, 3), 1, generator=expected_noise)
        xi = torch.randn(state.x.shape, generator=expected_noise, dtype=F64)
        close(categorical, step_of("sde-bfn-solver1", model).step(ctx, state, t, xi, 1).x, rtol=1e-10, atol=1e-12)


def test_discrete_sde_solver1_is_the_bfn_step_with_the_mean_prediction():
    flow = DiscreteFlow(4, 2.0)
    model = bfn.BFN(LogitNet(), flow, (3,), dtype=F64)
    ctx = StepContext.build(model)
    state = state_at(model, 0.6)
    tau, tau_next = flip_clock(t64(0.6)), flip_clock(t64(0.45))
    net_out = model.call_net(state.x, tau)
    bfn_z = flow.sampler_step(
        net_out, state.x, tau, flow.beta(tau_next) - flow.beta(tau), torch.Generator().manual_seed(5), categorical=False
    )
    close(step_of("sde-bfn-solver1", model).step(ctx, state, 0.45, noise_like(state, 5), 1).x, bfn_z)
    # softmax(z + y) = normalise(theta e^y)
    y = noise_like(state, 9)
    theta = torch.softmax(state.x, -1)
    close(torch.softmax(state.x + y, -1), theta * torch.exp(y) / (theta * torch.exp(y)).sum(-1, keepdim=True))


def test_discrete_ode_solver1_matches_the_paper_formula():
    flow = DiscreteFlow(4, 2.0)
    model = bfn.BFN(LogitNet(), flow, (3,), dtype=F64)
    ctx = StepContext.build(model)
    state = state_at(model, 0.6)
    s, t, k, b1 = 0.6, 0.45, 4, 2.0
    p_hat = torch.softmax(model.call_net(state.x, flip_clock(t64(s))), -1)
    c_t = k * b1 * (1 - t)
    expected = (1 - t) / (1 - s) * state.x + c_t * (t - s) * (1 / k - p_hat)
    close(step_of("bfn-solver1", model).step(ctx, state, t, None, 1).x, expected)


def test_single_step_solvers_match_the_spec_transcriptions():
    model = continuous_model(clip=True)
    ctx = StepContext.build(model)
    sch = Schedule(model.flow.sde)
    x0_hat = Predictor(model)
    s, t = 0.5, 0.3
    state = state_at(model, s)
    ps, pt = sch.at(s), sch.at(t)
    h = pt.lam - ps.lam
    x_s = x0_hat(state.x, s)
    # DPM-Solver++(2S), r1 = 1/2 (docs/solvers.md 2.6)
    pm = sch.at_lam(ps.lam + 0.5 * h)
    u = pm.sigma / ps.sigma * state.x + pm.alpha * -math.expm1(-0.5 * h) * x_s
    d = x0_hat(u, pm.t)
    expected = pt.sigma / ps.sigma * state.x + pt.alpha * -math.expm1(-h) * d
    close(step_of("bfn-solver++2s", model).step(ctx, state, t, None, 2).x, expected)
    # DPM-Solver++(3S), r1 = 1/3, r2 = 2/3 (docs/solvers.md 2.6)
    r1, r2 = 1 / 3, 2 / 3
    p1, p2 = sch.at_lam(ps.lam + r1 * h), sch.at_lam(ps.lam + r2 * h)
    phi_1, phi_11, phi_12 = math.expm1(-h), math.expm1(-r1 * h), math.expm1(-r2 * h)
    phi_2, phi_22 = phi_1 / h + 1, phi_12 / (r2 * h) + 1
    u1 = p1.sigma / ps.sigma * state.x - p1.alpha * phi_11 * x_s
    u2 = (
        p2.sigma / ps.sigma * state.x - p2.alpha * phi_12 * x_s + r2 / r1 * p2.alpha * phi_22 * (x0_hat(u1, p1.t) - x_s)
    )
    expected = pt.sigma / ps.sigma * state.x - pt.alpha * phi_1 * x_s + pt.alpha * phi_2 / r2 * (x0_hat(u2, p2.t) - x_s)
    close(step_of("bfn-solver++3s", model).step(ctx, state, t, None, 3).x, expected)


def test_multistep_presets_match_the_spec_transcriptions():
    model = continuous_model(clip=False)
    ctx = StepContext.build(model)
    sch = Schedule(model.flow.sde)
    x0_hat = Predictor(model)
    times = [0.7, 0.55, 0.45, 0.3]
    state = state_at(model, times[0])
    xs = [state.x]
    for a, b in itertools.pairwise(times[:3]):  # build a history with BFN-Solver++1 steps
        xs.append(step_of("bfn-solver++1", model).step(ctx, SamplerState(xs[-1], a), b, None, 1).x)
    preds = [x0_hat(x, tt) for x, tt in zip(xs, times)]
    lams = [sch.at(tt).lam for tt in times]
    from bfn.sampling import Prediction

    history = (Prediction(times[1], lams[1], preds[1]), Prediction(times[0], lams[0], preds[0]))
    state = SamplerState(xs[2], times[2], history)
    ps, pt = sch.at(times[2]), sch.at(times[3])
    h = pt.lam - ps.lam
    # 2M (docs/solvers.md 2.6): D = (1 + 1/(2r)) x_s - 1/(2r) x_s', r = h'/h
    r = (lams[2] - lams[1]) / h
    d = (1 + 1 / (2 * r)) * preds[2] - 1 / (2 * r) * preds[1]
    expected = pt.sigma / ps.sigma * xs[2] + pt.alpha * -math.expm1(-h) * d
    close(step_of("bfn-solver++2", model).step(ctx, state, times[3], None, 2).x, expected)
    # SDE-2M midpoint (docs/solvers.md 2.6): D1 = (x_s - x_s')/r
    xi = noise_like(state, 2)
    d1 = (preds[2] - preds[1]) / r
    expected = (
        pt.sigma / ps.sigma * math.exp(-h) * xs[2]
        + pt.alpha * -math.expm1(-2 * h) * preds[2]
        + 0.5 * pt.alpha * -math.expm1(-2 * h) * d1
        + pt.sigma * math.sqrt(-math.expm1(-2 * h)) * xi
    )
    close(step_of("sde-bfn-solver++2", model).step(ctx, state, times[3], xi, 2).x, expected)
    # 3M with the factor 2 in D2 (docs/solvers.md 2.6)
    h0, h1 = lams[2] - lams[1], lams[1] - lams[0]
    r0, r1 = h0 / h, h1 / h
    d1_0, d1_1 = (preds[2] - preds[1]) / r0, (preds[1] - preds[0]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = 2 * (d1_0 - d1_1) / (r0 + r1)
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1
    phi_3 = phi_2 / h - 0.5
    expected = pt.sigma / ps.sigma * xs[2] - pt.alpha * phi_1 * preds[2] + pt.alpha * phi_2 * d1 - pt.alpha * phi_3 * d2
    close(step_of("bfn-solver++3", model).step(ctx, state, times[3], None, 3).x, expected)


def test_discrete_multistep_solvers_match_the_spec_transcriptions():
    k, b1 = 4, 2.0
    model = bfn.BFN(LogitNet(), DiscreteFlow(k, b1), (3,), dtype=F64)
    ctx = StepContext.build(model)
    times = [0.8, 0.6, 0.45, 0.3]
    xs = [state_at(model, times[0]).x]
    for a, b in itertools.pairwise(times[:3]):
        xs.append(step_of("bfn-solver1", model).step(ctx, SamplerState(xs[-1], a), b, None, 1).x)
    p = [torch.softmax(model.call_net(x, flip_clock(t64(tt))), -1) for x, tt in zip(xs, times)]
    from bfn.sampling import Prediction

    lam = model.flow.sde.lam
    history = tuple(Prediction(times[i], float(lam(t64(times[i]))), k * p[i] - 1) for i in (1, 0))
    state = SamplerState(xs[2], times[2], history)
    r, s, t = times[1], times[2], times[3]
    c_t = k * b1 * (1 - t)
    d1 = (p[2] - p[1]) / (s - r)
    expected = (1 - t) / (1 - s) * xs[2] + c_t * (t - s) * (1 / k - p[2]) - c_t * (t - s) ** 2 / 2 * d1
    close(step_of("bfn-solver2", model).step(ctx, state, t, None, 2).x, expected)
    xi = noise_like(state, 8)
    beta_s, beta_t = b1 * (1 - s) ** 2, b1 * (1 - t) ** 2
    d1_sde = (p[1] - p[2]) / (r - s)
    expected = (
        xs[2]
        + (beta_t - beta_s) * (k * p[2] - 1)
        + k * b1 / 3 * (t - s) ** 2 * (s + 2 * t - 3) * d1_sde
        + math.sqrt(k * (beta_t - beta_s)) * xi
    )
    close(step_of("sde-bfn-solver2", model).step(ctx, state, t, xi, 2).x, expected)
    # order 3 (docs/solvers.md 3.6)
    r1, r2 = times[1], times[0]
    f01, f12 = (p[2] - p[1]) / (s - r1), (p[1] - p[0]) / (r1 - r2)
    f012 = (f01 - f12) / (s - r2)
    dp, ddp = f01 + f012 * (s - r1), 2 * f012
    hh = t - s
    expected = (1 - t) / (1 - s) * xs[2] - c_t * (hh * (p[2] - 1 / k) + hh**2 / 2 * dp + hh**3 / 6 * ddp)
    close(step_of("bfn-solver3", model).step(ctx, state, t, None, 3).x, expected)
    expected = (
        xs[2]
        + (beta_t - beta_s) * (k * p[2] - 1)
        + k * b1 / 3 * hh**2 * (s + 2 * t - 3) * dp
        - k * b1 * ((1 - s) * hh**3 / 3 - hh**4 / 4) * ddp
        + math.sqrt(k * (beta_t - beta_s)) * xi
    )
    close(step_of("sde-bfn-solver3", model).step(ctx, state, t, xi, 3).x, expected)
    # the midpoint single step (docs/solvers.md 3.6)
    m = (s + t) / 2
    z_m = (1 - m) / (1 - s) * xs[2] + k * b1 * (1 - m) * (m - s) * (1 / k - p[2])
    p_m = torch.softmax(model.call_net(z_m, flip_clock(t64(m))), -1)
    d1 = (p_m - p[2]) / (m - s)
    expected = (1 - t) / (1 - s) * xs[2] + c_t * (t - s) * (1 / k - p[2]) - c_t * (t - s) ** 2 / 2 * d1
    close(step_of("bfn-solver2s", model).step(ctx, SamplerState(xs[2], s), t, None, 2).x, expected)


def test_discretised_solvers_use_k_hat():
    flow = DiscretisedFlow(8, 0.05)

    class Net(nn.Module):
        def forward(self, mu: Tensor, tau: Tensor) -> Tensor:
            return torch.stack([torch.sin(2 * mu), -1.0 + 0 * mu], -1)

    model = bfn.BFN(Net(), flow, (4,), dtype=F64)
    state = state_at(model, 0.5)
    tau = flip_clock(t64(0.5))
    k_hat = flow.k_hat(flow.bin_probs(model.call_net(state.x, tau), state.x, tau))
    sch = Schedule(flow.sde)
    ps, pt = sch.at(0.5), sch.at(0.2)
    expected = exponential_update(state.x, ps, pt, [k_hat])
    close(step_of("bfn-solver++1", model).step(StepContext.build(model), state, 0.2, None, 1).x, expected)


def test_score_helpers():
    from bfn.sampling import score, score_from_prediction

    model = continuous_model(clip=False)
    state = state_at(model, 0.4)
    sde = model.flow.sde
    x_hat = model.denoise(state.x, 0.4)
    alpha, sigma = sde.alpha(t64(0.4)), sde.sigma(t64(0.4))
    close(score(model, state.x, 0.4), -(state.x - alpha * x_hat) / sigma**2)
    eps = model.call_net(state.x, flip_clock(t64(0.4)))
    close(score(model, state.x, 0.4), -eps / sigma, rtol=1e-9)
    # discrete: s = -z/(K beta) + e_hat - 1/K
    k = 4
    discrete = bfn.BFN(LogitNet(), DiscreteFlow(k, 2.0), (3,), dtype=F64)
    z = state_at(discrete, 0.3).x
    e_hat = torch.softmax(discrete.call_net(z, flip_clock(t64(0.3))), -1)
    beta = 2.0 * 0.7**2
    close(score_from_prediction(discrete.flow.sde, z, k * e_hat - 1, 0.3), -z / (k * beta) + e_hat - 1 / k)


@pytest.mark.parametrize("h", [0.0, 0.5, 1.0, 2.0])
def test_h_family_drift_in_data_and_score_form(h):
    """``B_h = f x - (1+h)/2 g^2 s`` equals ``(dlog sigma/dt - h dlambda/dt) x + (1+h) dlambda/dt alpha x0_hat``
    (docs/likelihood.md 2.5), the form the exponential integrator solves exactly; continuous and discrete SDEs."""
    from bfn.sampling import score_from_prediction

    for sde in (ContinuousFlow(0.02).sde, DiscreteFlow(3, 1.5).sde):
        t = t64([0.1, 0.45, 0.8])
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
        x0_hat = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
        col = lambda v: v.reshape(-1, 1)
        s = score_from_prediction(sde, x, x0_hat, col(t))
        score_form = col(sde.f(t)) * x - (1 + h) / 2 * col(sde.g2(t)) * s
        dlog_sigma = derivative(lambda u, sde=sde: torch.log(sde.sigma(u)), t)
        dlam = derivative(sde.lam, t)
        data_form = col(dlog_sigma - h * dlam) * x + (1 + h) * col(dlam * sde.alpha(t)) * x0_hat
        close(score_form, data_form, rtol=1e-10, atol=1e-12)
