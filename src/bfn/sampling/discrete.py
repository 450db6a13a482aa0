"""The discrete-data BFN-Solvers: Taylor expansions of ``p_hat`` in solver time ``t`` (Xue et al., ICML 2024, sec. 5).

On the logits ``z`` (``theta = softmax(z)``) the probability-flow ODE and the reverse SDE of discrete BFN are

    dz/dt = -z/(1 - t) - K beta_1 (1 - t) (p_hat - 1/K),        dz = -g(t)^2 (p_hat - 1/K) dt + g dw_bar,

with ``g^2 = 2 K beta_1 (1 - t)`` and ``beta_t = beta_1 (1 - t)^2``. For a step ``s -> t`` (``h = t - s < 0``) the
exact solutions are

    ODE:  z_t = ((1 - t)/(1 - s)) z_s - K beta_1 (1 - t) int_s^t (p_hat - 1/K) dt'
    SDE:  z_t = z_s - int_s^t g^2 (p_hat - 1/K) dt' + sqrt(K (beta_t - beta_s)) xi,

and the solvers expand ``p_hat`` in ``t`` around ``s``. In terms of the data prediction ``x0_hat = K p_hat - 1``
(what the engine stores) ``p_hat - 1/K = x0_hat / K``, so ``K`` cancels from every weight below. The derivatives of
``x0_hat`` in ``t`` come from divided differences of stored (multistep) or intermediate (single-step) predictions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from bfn.flows.discrete import DiscreteSDE
from bfn.sampling.engine import SamplerState, StepContext, StepResult
from bfn.sampling.exponential import divided_differences


def ode_weights(s: float, t: float) -> tuple[float, float, float]:
    """``int_s^t (t' - s)^j / j! dt'`` for ``j = 0, 1, 2``: ``(h, h^2/2, h^3/6)`` with ``h = t - s``."""
    h = t - s
    return h, 0.5 * h * h, h * h * h / 6.0


def sde_weights(s: float, t: float, beta_1: float) -> tuple[float, float, float]:
    """``-int_s^t g(t')^2 (t' - s)^j / j! dt' / K`` for ``j = 0, 1, 2`` (exact quadrature; docs/solvers.md 3.6).

    ``(beta_t - beta_s, (beta_1/3) h^2 (s + 2t - 3), -beta_1 ((1 - s) h^3/3 - h^4/4))`` with ``h = t - s``.
    """
    h = t - s
    w0 = beta_1 * ((1.0 - t) ** 2 - (1.0 - s) ** 2)
    w1 = beta_1 / 3.0 * h * h * (s + 2.0 * t - 3.0)
    w2 = -beta_1 * ((1.0 - s) * h**3 / 3.0 - h**4 / 4.0)
    return w0, w1, w2


def ode_update(z_s: Tensor, s: float, t: float, derivatives: Sequence[Tensor], beta_1: float) -> Tensor:
    """``z_t = ((1-t)/(1-s)) z_s - beta_1 (1 - t) [h x0 + h^2/2 x0' + h^3/6 x0'']`` (derivatives of ``x0_hat`` in t)."""
    z_t = z_s * ((1.0 - t) / (1.0 - s))
    for w, d in zip(ode_weights(s, t), derivatives):
        z_t.sub_(d, alpha=beta_1 * (1.0 - t) * w)
    return z_t


def sde_update(
    z_s: Tensor, s: float, t: float, derivatives: Sequence[Tensor], beta_1: float, noise: Tensor, num_classes: int
) -> Tensor:
    """``z_t = z_s + sum_j W_j x0^(j) + sqrt(K (beta_t - beta_s)) xi`` with the weights of :func:`sde_weights`."""
    weights = sde_weights(s, t, beta_1)
    z_t = z_s.add(noise, alpha=math.sqrt(num_classes * weights[0]))
    for w, d in zip(weights, derivatives):
        z_t.add_(d, alpha=w)
    return z_t


def _sde(ctx: StepContext) -> DiscreteSDE:
    sde = ctx.sde
    if not isinstance(sde, DiscreteSDE):
        raise ValueError(f"this step needs the logit SDE of discrete data, got {type(sde).__name__}")
    return sde


def _derivatives(state: SamplerState, x0: Tensor, order: int) -> list[Tensor]:
    return divided_differences([(state.t, x0), *((p.t, p.x0) for p in state.history)][:order], order)


def ode_multistep_step(
    ctx: StepContext, state: SamplerState, t_next: float, noise: Tensor | None, order: int
) -> StepResult:
    """BFN-Solver1/2/3 for discrete data (multistep ODE solvers in ``t``), one network call per step.

    Order 1 (Xue et al., Algorithm 6): ``z_t = ((1-t)/(1-s)) z_s + K beta_1 (1-t) (t-s) (1/K - p_s)``.
    Order 2 (Algorithm 7, multistep): adds ``- K beta_1 (1-t) (t-s)^2/2 D1`` with ``D1 = (p_s - p_r)/(s - r)``.
    Order 3 (derived): adds ``- K beta_1 (1-t) (t-s)^3/6 p''`` with the three-point divided differences.
    """
    x0 = ctx.predictor(state.x, state.t)
    derivatives = _derivatives(state, x0, order)
    return StepResult(ode_update(state.x, state.t, t_next, derivatives, _sde(ctx).beta_1), x0)


def sde_multistep_step(
    ctx: StepContext, state: SamplerState, t_next: float, noise: Tensor | None, order: int
) -> StepResult:
    """SDE-BFN-Solver1/2/3 for discrete data (multistep reverse-SDE solvers in ``t``), one network call per step.

    Order 1 (Algorithm 4): ``z_t = z_s + (beta_t - beta_s)(K p_s - 1) + sqrt(K (beta_t - beta_s)) xi``, BFN's
    Bayesian update with the mean ``p_s`` in place of a sampled class (Prop. 5.3). Order 2 (Algorithm 5) adds
    ``(K beta_1/3) h^2 (s + 2t - 3) D1``; order 3 (derived) adds ``-K beta_1 ((1-s) h^3/3 - h^4/4) p''``.
    """
    if noise is None:
        raise ValueError("the SDE step needs a noise tensor")
    sde = _sde(ctx)
    x0 = ctx.predictor(state.x, state.t)
    derivatives = _derivatives(state, x0, order)
    return StepResult(sde_update(state.x, state.t, t_next, derivatives, sde.beta_1, noise, sde.num_classes), x0)


def ode_midpoint_step(
    ctx: StepContext, state: SamplerState, t_next: float, noise: Tensor | None, order: int
) -> StepResult:
    """BFN-Solver2, single step (midpoint in ``t``; BFN-Solver ``ode_bfnsolver2_single_step``), two calls per step.

    ``m = (s + t)/2``; ``z_m`` = BFN-Solver1 from ``s`` to ``m``; ``D1 = (p_m - p_s)/(m - s)``; then
    ``z_t = ((1-t)/(1-s)) z_s + K beta_1 (1-t) (t-s)(1/K - p_s) - K beta_1 (1-t) (t-s)^2/2 D1``.
    """
    beta_1 = _sde(ctx).beta_1
    s, t = state.t, t_next
    m = 0.5 * (s + t)
    x0 = ctx.predictor(state.x, s)
    z_m = ode_update(state.x, s, m, [x0], beta_1)
    x0_m = ctx.predictor(z_m, m)
    return StepResult(ode_update(state.x, s, t, divided_differences([(s, x0), (m, x0_m)], 2), beta_1), x0)
