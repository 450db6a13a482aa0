"""Log-density of a probability-flow ODE for any score function of a linear SDE (instantaneous change of variables).

For the forward SDE ``dx = f(t) x dt + g(t) dw`` and a model score ``s(x, t)``, the probability-flow ODE has velocity
``v(x, t) = f(t) x - g(t)^2 s(x, t) / 2``. Starting the ODE at the point ``x`` at ``t0`` (data end) and following it
to ``T`` (noise end), where the prior ``pi`` is placed, the density ``l_t = log q_t`` of the ODE's model obeys

    l_t0(x) = log pi(x_T) + int_t0^T div v(x_t, t) dt,      div v = D f(t) - g(t)^2 div s / 2,

(Hirono et al., ICML 2024, docs/likelihood.md 4.2; Chen et al., 2018; Song et al., 2021). The augmented state
``[x, int div v]`` is integrated in float64 by :func:`bfn.likelihood.ode.integrate` (with ``x`` in units of the
marginal scale ``kappa_t``, and the exact part ``D log(kappa_T / kappa_t0)`` of the integral taken in closed form,
see :class:`Clock`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bfn.flows.base import LinearSDE, as_f64
from bfn.likelihood.ode import integrate
from bfn.likelihood.options import (
    DEFAULT_ODE,
    DEFAULT_TRACE,
    LogDensityFn,
    ODEOptions,
    TraceOptions,
    Variable,
    check_options,
)

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""A score ``s(x, t)``: states ``(B, *shape)`` and per-example times ``t`` ``(B,)`` (float64) -> ``(B, *shape)``.
Examples must not interact (the divergence is taken by differentiating the batch sum)."""


@dataclass
class ODELogDensity:
    """Result of :func:`pf_ode_logp`.

    Attributes:
        logp: ``l_t0(x)`` per example, nats, float64 ``(B,)`` (the mean over probes for Hutchinson).
        stderr: standard error of ``logp`` over the Hutchinson probes (0 for the exact trace; NaN for one probe).
        nfe: network (score) evaluations, each on the whole batch.
        x_end: the ODE's end point ``x_T`` (float64, shape of ``x``).
    """

    logp: Tensor
    stderr: Tensor
    nfe: int
    x_end: Tensor


class CountedScore:
    """Wraps a score function and counts its calls (the NFE)."""

    def __init__(self, score_fn: ScoreFn) -> None:
        self.score_fn = score_fn
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return as_f64(self.score_fn(x, t))


@dataclass
class Clock:
    """The integration variable ``u`` (solver time ``t`` or half log-SNR ``lambda``) and the state's scale.

    In ``lambda`` the BFN velocities lose their ``1/(1 - t)`` blow-up at the noise end, since
    ``dt/dlambda = -2 sigma_t^2 / g(t)^2`` vanishes there. States are integrated in units of
    ``kappa_t = sqrt(alpha_t^2 + sigma_t^2)``, the marginal standard deviation of unit-variance data, so that the
    solver's absolute tolerance means the same at both ends (the BFN states shrink to ``sigma_{t_max}`` at the noise
    end); ``d log kappa / dt = f + g^2 / (2 kappa^2)``.
    """

    sde: LinearSDE
    variable: Literal["t", "lambda"]

    @classmethod
    def choose(cls, sde: LinearSDE, t0: float, t1: float, variable: Variable) -> Clock:
        """``"auto"`` picks ``lambda`` when it is finite at both ends (e.g. not for VE at ``t0 = 0``), else ``t``."""
        if variable == "auto":
            ends = sde.lam(torch.tensor([t0, t1], dtype=torch.float64))
            return cls(sde, "lambda" if bool(torch.isfinite(ends).all()) else "t")
        return cls(sde, variable)

    def u_of_t(self, t: float) -> float:
        if self.variable == "t":
            return float(t)
        return float(self.sde.lam(torch.tensor(t, dtype=torch.float64)))

    def t_of_u(self, u: Tensor) -> Tensor:
        return u if self.variable == "t" else self.sde.t_of_lam(u)

    def dt_du(self, t: Tensor) -> Tensor:
        if self.variable == "t":
            return torch.ones_like(t)
        return -2.0 * self.sde.sigma(t) ** 2 / self.sde.g2(t)

    def span(self, t0: float, t1: float) -> tuple[float, float]:
        return self.u_of_t(t0), self.u_of_t(t1)

    def kappa(self, t: Tensor | float) -> Tensor:
        t = as_f64(t)
        return torch.sqrt(self.sde.alpha(t) ** 2 + self.sde.sigma(t) ** 2)

    def dlog_kappa(self, t: Tensor) -> Tensor:
        return self.sde.f(t) + 0.5 * self.sde.g2(t) / self.kappa(t) ** 2


def grad_or_zeros(out: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    """``d out.sum() / dx`` (zeros where ``out`` does not depend on ``x``); keeps the graph for further calls."""
    if not out.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(out.sum(), x, retain_graph=True, create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def batch_jacobian(out: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    """Per-row Jacobians ``d out[b, i] / d x[b, k]``, shape ``(B, M, D)``, for ``out (B, M)`` of ``x (B, D)``.

    Rows must not interact (the Jacobian of the batch sum is taken). One vectorised backward pass over the ``M``
    output directions (``is_grads_batched``); ``M`` ordinary passes if the graph does not support that.
    """
    batch, size = out.shape
    if not out.requires_grad:
        return out.new_zeros(batch, size, x.shape[1])
    basis = torch.eye(size, dtype=out.dtype, device=out.device)[:, None, :].expand(size, batch, size)
    try:
        (jac,) = torch.autograd.grad(
            out, x, basis, retain_graph=True, create_graph=create_graph, is_grads_batched=True, allow_unused=True
        )
    except RuntimeError:
        return torch.stack([grad_or_zeros(out[:, i], x, create_graph) for i in range(size)], dim=1)
    return out.new_zeros(batch, size, x.shape[1]) if jac is None else jac.transpose(0, 1)


def exact_divergence(s: Tensor, x: Tensor) -> Tensor:
    """``tr(ds/dx)`` per row for ``s, x`` of shape ``(B, D)`` (the full Jacobian: small ``D`` only)."""
    return torch.einsum("bjj->b", batch_jacobian(s, x))


def hutchinson_divergence(s: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """``eps^T (ds/dx) eps`` for each probe ``eps`` (``probes``: ``(P, B, D)``), shape ``(B, P)``; one VJP each."""
    if not s.requires_grad:
        return s.new_zeros(s.shape[0], probes.shape[0])
    try:
        (vjps,) = torch.autograd.grad(s, x, probes, retain_graph=True, is_grads_batched=True, allow_unused=True)
    except RuntimeError:
        vjps = torch.stack([grad_or_zeros(s * eps, x) for eps in probes])
    if vjps is None:
        return s.new_zeros(s.shape[0], probes.shape[0])
    return (vjps * probes).sum(-1).T


def rademacher(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Random signs +-1 in float64."""
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return (2 * bits - 1).to(torch.float64)


def check_interval(t0: float, t1: float) -> None:
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
        raise ValueError(f"need finite times t0 < T, got t0={t0!r}, T={t1!r}")


def pf_ode_logp(
    score_fn: ScoreFn,
    sde: LinearSDE,
    x: Tensor,
    t0: float,
    T: float,
    prior_logp: LogDensityFn,
    *,
    ode: ODEOptions = DEFAULT_ODE,
    trace: TraceOptions = DEFAULT_TRACE,
    generator: torch.Generator | None = None,
) -> ODELogDensity:
    """``log q_t0(x)`` of the model's probability-flow ODE started from ``prior_logp`` at ``T`` (zeroth WKB order).

    Integrates ``[x, int div v]`` from ``t0`` to ``T`` in float64 (see the module docstring for the formula) and adds
    ``log pi(x_T)``.

    Args:
        score_fn: the model score (see :data:`ScoreFn`); it may run in lower precision internally.
        sde: supplies ``f(t)``, ``g(t)^2`` (and ``lambda``, ``sigma`` for ``variable="lambda"``).
        x: points ``(B, *shape)`` at time ``t0``.
        t0, T: data-end and noise-end times, ``t0 < T``.
        prior_logp: log-density at ``T`` (:class:`~bfn.likelihood.GaussianPrior` or any callable).
        ode: solver, tolerances and integration variable (:class:`~bfn.likelihood.ODEOptions`).
        trace: exact trace or Hutchinson probes (:class:`~bfn.likelihood.TraceOptions`); Hutchinson's probes are
            fixed along each trajectory, and with ``probes >= 2`` their spread gives ``stderr``.
        generator: random stream for the probes.
    """
    check_interval(float(t0), float(T))
    check_options(ode=ode, trace=trace)
    x = as_f64(x).detach()
    batch, shape = x.shape[0], tuple(x.shape[1:])
    dim = math.prod(shape)
    method = trace.resolve(dim)
    score = CountedScore(score_fn)
    clock = Clock.choose(sde, float(t0), float(T), ode.variable)
    num = 1 if method == "exact" else trace.probes
    eps = rademacher((trace.probes, batch, dim), generator, x.device) if method == "hutchinson" else None

    def rhs(u: Tensor, y: Tensor) -> Tensor:
        # state [x / kappa_t, A] with A' = -g^2/2 (div s + D / kappa^2): div v minus the exact rescaling term
        t = clock.t_of_u(u)
        kappa = clock.kappa(t)[:, None]
        x_t = kappa * y[:, :dim]
        with torch.enable_grad():
            xg = x_t.detach().requires_grad_(True)
            s = score(xg.reshape(batch, *shape), t).reshape(batch, dim)
            div_s = exact_divergence(s, xg)[:, None] if eps is None else hutchinson_divergence(s, xg, eps)
        f, g2, w = sde.f(t)[:, None], sde.g2(t)[:, None], clock.dt_du(t)[:, None]
        velocity = f * x_t - 0.5 * g2 * s.detach()
        d_scaled = velocity / kappa - clock.dlog_kappa(t)[:, None] * y[:, :dim]
        d_acc = -0.5 * g2 * (div_s.detach() + dim / kappa.square())
        return torch.cat([d_scaled * w, d_acc * w], dim=1)

    kappa0, kappa1 = float(clock.kappa(float(t0))), float(clock.kappa(float(T)))
    zeros = torch.zeros(batch, num, dtype=torch.float64, device=x.device)
    y0 = torch.cat([x.reshape(batch, dim) / kappa0, zeros], dim=1)
    u0, u1 = clock.span(float(t0), float(T))
    sol = integrate(rhs, y0, u0, u1, ode=ode)
    x_end = kappa1 * sol.y[:, :dim].reshape(batch, *shape)
    with torch.no_grad():
        log_prior = as_f64(prior_logp(x_end))
    estimates = log_prior[:, None] + dim * math.log(kappa1 / kappa0) + sol.y[:, dim:]
    if method == "exact":
        stderr = torch.zeros(batch, dtype=torch.float64, device=x.device)
    elif num == 1:
        stderr = torch.full((batch,), math.nan, dtype=torch.float64, device=x.device)
    else:
        stderr = estimates.std(dim=1) / math.sqrt(num)
    return ODELogDensity(logp=estimates.mean(1), stderr=stderr, nfe=score.calls, x_end=x_end)
