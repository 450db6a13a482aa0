"""First-order (WKB) correction in the noise dial ``h`` of the log-density of the ``h``-family of samplers.

The backward ``h``-process ``dx = [f x - (1 + h) g^2 s / 2] dt + sqrt(h) g dw`` (``h`` multiplies the noise
*variance*: 0 is the probability-flow ODE, 1 the reverse SDE) has a density ``log q^h = l + h l1 + O(h^2)``
(Hirono et al., ICML 2024). With ``u = s - grad l`` the score inconsistency of the model,

    l1_t0(x) = -int_t0^T g^2/2 [div s + s . grad l - lap l - |grad l|^2](x_t, t) dt     (along the PF-ODE path),

so ``NLL_h(x) = NLL_0(x) + h c(x) + O(h^2)`` with ``c = -l1``. ``grad l`` and ``lap l`` are obtained by one
backward Hessian sweep (docs/likelihood.md 4.3.3): after the PF-ODE has carried ``x`` to ``x_T``, integrate from
``T`` down to ``t0`` the state ``(x, l, G, H, phi)`` with ``G = grad l``, ``H = hess l``, ``J = dv/dx``:

    x' = v,   l' = -div v,   G' = -J^T G - grad div v,
    H' = -J^T H - H J - sum_j G_j hess v_j - hess div v,   phi' = g^2/2 [div s + s . G - tr H - |G|^2],

from ``l = log pi(x_T)``, ``G = grad log pi``, ``H = hess log pi``, ``phi = 0``; then ``phi(t0) = l1_t0(x)``.
This needs third derivatives of the score (autograd) and a ``D x D`` state, so it is limited to ``D <= 4``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bfn.flows.base import LinearSDE, as_f64
from bfn.likelihood.ode import integrate
from bfn.likelihood.options import WKB_ODE, LogDensityFn, ODEOptions, TraceOptions, check_options
from bfn.likelihood.pf_ode import (
    Clock,
    CountedScore,
    ScoreFn,
    batch_jacobian,
    check_interval,
    grad_or_zeros,
    pf_ode_logp,
)

MAX_WKB_DIM = 4
"""Largest state dimension :func:`wkb_first_order` accepts."""


@dataclass
class WKBResult:
    """First-order expansion ``NLL_h(x) = nll0 + h coef + O(h^2)`` per example (nats, float64 ``(B,)``).

    Attributes:
        nll0: the ``h = 0`` (probability-flow ODE) negative log-likelihood.
        coef: ``c(x) = -d log q^h(x) / dh`` at ``h = 0``.
        nfe: score (network) evaluations of the forward and the backward sweep.
        stderr_nll0, stderr_coef: Monte-Carlo standard errors (over encoder samples for BFN; zero otherwise).
        roundtrip_error: ``max |x(t0) - x|`` of the backward sweep per example (an accuracy check of the sweep).
    """

    nll0: Tensor
    coef: Tensor
    nfe: int
    stderr_nll0: Tensor
    stderr_coef: Tensor
    roundtrip_error: Tensor

    def nll(self, h: float) -> Tensor:
        """The first-order NLL of the ``h``-sampler, ``nll0 + h coef``."""
        return self.nll0 + h * self.coef


def check_wkb_dim(dim: int) -> None:
    """Raise ``ValueError`` above :data:`MAX_WKB_DIM`."""
    if dim > MAX_WKB_DIM:
        raise ValueError(
            f"the WKB correction supports state dimension <= {MAX_WKB_DIM}, got {dim}: it integrates the {dim}x{dim} "
            "Hessian of the log-density and third derivatives of the score; use pf_ode_logp / pf_ode_nll for the "
            "h = 0 likelihood of larger models"
        )


def score_derivatives(score: ScoreFn, x: Tensor, shape: tuple[int, ...], t: Tensor) -> tuple[Tensor, ...]:
    """Score and its derivatives at rows ``x`` ``(B, D)``.

    Returns ``s (B, D)``, ``js (B, D, D)`` with ``js[b, j, k] = d_k s_j``, ``hs (B, D, D, D)`` with
    ``hs[b, j, k, l] = d_k d_l s_j``, ``grad div s (B, D)`` and ``hess div s (B, D, D)``.
    """
    batch, dim = x.shape
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        s = score(xg.reshape(batch, *shape), t).reshape(batch, dim)
        js = batch_jacobian(s, xg, create_graph=True)
        hs = batch_jacobian(js.reshape(batch, dim * dim), xg, create_graph=True).reshape(batch, dim, dim, dim)
        grad_div = torch.einsum("bjjl->bl", hs)
        hess_div = batch_jacobian(grad_div, xg)
    return s.detach(), js.detach(), hs.detach(), grad_div.detach(), hess_div.detach()


def log_density_derivatives(log_density: LogDensityFn, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``log pi``, its gradient and Hessian at ``x`` ``(B, *shape)``: shapes ``(B,)``, ``(B, D)``, ``(B, D, D)``."""
    batch = x.shape[0]
    dim = x[0].numel()
    with torch.enable_grad():
        xg = as_f64(x).detach().reshape(batch, dim).requires_grad_(True)
        value = as_f64(log_density(xg.reshape(x.shape)))
        grad = grad_or_zeros(value, xg, create_graph=True)
        hess = batch_jacobian(grad, xg)
    return value.detach(), grad.detach(), hess.detach()


def _sweep_rhs(score: CountedScore, sde: LinearSDE, clock: Clock, shape: tuple[int, ...]):
    """Right-hand side of the backward sweep on ``[x / kappa, l, kappa G, kappa^2 H, phi]`` (scaled as in
    :class:`~bfn.likelihood.pf_ode.Clock`, so that the tolerances mean the same at both ends)."""
    dim = math.prod(shape)

    def rhs(u: Tensor, y: Tensor) -> Tensor:
        batch = y.shape[0]
        t = clock.t_of_u(u)
        kappa, dlog_kappa = clock.kappa(t), clock.dlog_kappa(t)
        k1, k2 = kappa[:, None], kappa[:, None, None]
        x_scaled, g_scaled = y[:, :dim], y[:, dim + 1 : 2 * dim + 1]
        h_scaled = y[:, 2 * dim + 1 : 2 * dim + 1 + dim * dim].reshape(batch, dim, dim)
        x, big_g, big_h = k1 * x_scaled, g_scaled / k1, h_scaled / k2.square()
        s, js, hs, grad_div_s, hess_div_s = score_derivatives(score, x, shape, t)
        f, g2 = sde.f(t), sde.g2(t)
        half_g2 = (0.5 * g2)[:, None]
        eye = torch.eye(dim, dtype=y.dtype, device=y.device)
        jac = f[:, None, None] * eye - half_g2[:, :, None] * js  # J = dv/dx
        div_s = torch.einsum("bjj->b", js)
        div_v = dim * f - 0.5 * g2 * div_s
        velocity = f[:, None] * x - half_g2 * s
        # the characteristic equations of the module docstring, then the chain rule for the scaling
        dl = -div_v
        dg = -torch.einsum("bjk,bj->bk", jac, big_g) + half_g2 * grad_div_s
        dh = (
            -torch.einsum("bjk,bjl->bkl", jac, big_h)
            - torch.einsum("bkj,bjl->bkl", big_h, jac)
            + half_g2[:, :, None] * torch.einsum("bj,bjkl->bkl", big_g, hs)  # - sum_j G_j hess v_j
            + half_g2[:, :, None] * hess_div_s  # - hess div v
        )
        dphi = 0.5 * g2 * (div_s + (s * big_g).sum(1) - torch.einsum("bjj->b", big_h) - big_g.square().sum(1))
        lk = dlog_kappa[:, None]
        rates = torch.cat(
            [
                velocity / k1 - lk * x_scaled,
                dl[:, None],
                k1 * dg + lk * g_scaled,
                (k2.square() * dh).reshape(batch, -1) + 2 * lk * h_scaled.reshape(batch, -1),
                dphi[:, None],
            ],
            dim=1,
        )
        return rates * clock.dt_du(t)[:, None]

    return rhs


def wkb_first_order(
    score_fn: ScoreFn,
    sde: LinearSDE,
    x: Tensor,
    t0: float,
    T: float,
    prior_logp: LogDensityFn,
    *,
    ode: ODEOptions = WKB_ODE,
) -> WKBResult:
    """``NLL_0(x) = -l_t0(x)`` and the first-order coefficient ``c(x) = -l1_t0(x)`` in ``h`` (module docstring).

    For the backward ``h``-family of the model score ``score_fn`` on the linear SDE ``sde`` started from
    ``prior_logp`` at ``T``: ``-log q^h_t0(x) = nll0 + h coef + O(h^2)``. A forward PF-ODE solve (exact trace)
    gives ``x_T`` and ``nll0``; one backward sweep of ``(x, l, grad l, hess l, phi)`` gives ``coef``, both with the
    solver ``ode``. The sign of ``coef`` depends on the model (negative: a little noise raises the likelihood). Only
    for states of dimension ``D <= 4`` (``ValueError`` above). Arguments as in :func:`~bfn.likelihood.pf_ode_logp`;
    the default tolerance (:data:`~bfn.likelihood.WKB_ODE`) is tighter because the sweep differentiates the density
    twice.
    """
    check_interval(float(t0), float(T))
    check_options(ode=ode)
    x = as_f64(x).detach()
    batch, shape = x.shape[0], tuple(x.shape[1:])
    dim = math.prod(shape)
    check_wkb_dim(dim)
    forward = pf_ode_logp(score_fn, sde, x, t0, T, prior_logp, ode=ode, trace=TraceOptions(method="exact"))
    score = CountedScore(score_fn)
    clock = Clock.choose(sde, float(t0), float(T), ode.variable)
    log_prior, grad_prior, hess_prior = log_density_derivatives(prior_logp, forward.x_end)
    zeros = torch.zeros(batch, 1, dtype=torch.float64, device=x.device)
    kappa0, kappa1 = float(clock.kappa(float(t0))), float(clock.kappa(float(T)))
    packed = [forward.x_end.reshape(batch, dim) / kappa1, log_prior[:, None], kappa1 * grad_prior]
    y_end = torch.cat([*packed, kappa1**2 * hess_prior.reshape(batch, -1), zeros], dim=1)
    u0, u1 = clock.span(float(t0), float(T))
    sol = integrate(_sweep_rhs(score, sde, clock, shape), y_end, u1, u0, ode=ode)
    l1 = sol.y[:, -1]
    roundtrip = (kappa0 * sol.y[:, :dim] - x.reshape(batch, dim)).abs().amax(1)
    zero = torch.zeros(batch, dtype=torch.float64, device=x.device)
    return WKBResult(
        nll0=-forward.logp,
        coef=-l1,
        nfe=forward.nfe + score.calls,
        stderr_nll0=zero,
        stderr_coef=zero.clone(),
        roundtrip_error=roundtrip,
    )
