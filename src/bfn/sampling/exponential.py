"""Exponential-integrator steps in half log-SNR ``lambda``: the continuous BFN-Solvers and the path-integral h-solver.

All of them solve, for one step ``s -> t`` (``delta = lambda_t - lambda_s > 0``), the backward h-process of the
linear SDE (Hirono et al., ICML 2024; Xue et al., ICML 2024, sec. 4; docs/likelihood.md 2)

    dx = [f x - (1 + h)/2 g^2 score] dt + sqrt(h) g dw_bar,    score = -(x - alpha_t x0_hat) / sigma_t^2,

whose exact solution with ``c = 1 + h`` is (variation of constants in ``lambda``)

    x_t = (sigma_t / sigma_s) e^{-h delta} x_s + alpha_t int_0^delta c e^{-c (delta - u)} x0_hat(lambda_s + u) du
          + sigma_t sqrt(1 - e^{-2 h delta}) xi.

``h = 0`` is the probability-flow ODE (DPM-Solver++ / BFN-Solver++), ``h = 1`` the reverse SDE (SDE-DPM-Solver++ /
SDE-BFN-Solver++). Expanding ``x0_hat`` in ``lambda`` to order ``k`` (derivatives estimated by divided differences
of stored or intermediate predictions) gives the weights of :func:`exact_taylor_weights`; the paper presets of
second order use :func:`midpoint_weights` instead. The same code runs on the continuous SDE of ``mu`` (continuous
and discretised data) and on the logit SDE of discrete data (``x0_hat = K e_hat - 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor

from bfn.sampling.engine import Point, SamplerState, StepContext, StepResult

TaylorWeights = Callable[[float, float, int], tuple[float, ...]]


# ------------------------------------------------------------------------------------------ shared maths
def divided_differences(points: Sequence[tuple[float, Tensor]], order: int) -> list[Tensor]:
    """Taylor data ``[y, y', y'']`` (up to ``order`` terms) at ``points[0]`` from ``(v, y)`` pairs, newest first.

    Newton divided differences ``F01 = (y0 - y1)/(v0 - v1)``, ``F12``, ``F012 = (F01 - F12)/(v0 - v2)``; the
    interpolating polynomial gives ``y' ~ F01 + (v0 - v1) F012`` and ``y'' ~ 2 F012`` (the full second derivative:
    the factor 2 is what makes third-order multistep methods third order). ``v`` is ``lambda`` for the
    continuous solvers and ``t`` for the discrete ones.
    """
    (v0, y0) = points[0]
    if order == 1:
        return [y0]
    v1, y1 = points[1]
    f01 = (y0 - y1).mul_(1.0 / (v0 - v1))
    if order == 2:
        return [y0, f01]
    v2, y2 = points[2]
    f012 = (y1 - y2).mul_(-1.0 / (v1 - v2)).add_(f01).mul_(1.0 / (v0 - v2))  # (F01 - F12) / (v0 - v2)
    return [y0, f01.add(f012, alpha=v0 - v1), f012.mul_(2.0)]


def exact_taylor_weights(delta: float, c: float, order: int) -> tuple[float, ...]:
    """``int_0^delta c e^{-c (delta - u)} u^j / j! du`` for ``j < order``: the exact weights of ``x0_hat^(j)``.

    ``w0 = 1 - e^{-c delta}``, ``w1 = delta - w0 / c``, ``w2 = delta^2 / 2 - delta / c + w0 / c^2``
    (docs/likelihood.md 2.6; at ``c = 1`` these are DPM-Solver++'s ``-phi_1``, ``h phi_2`` and ``-h^2 phi_3``).
    """
    w0 = -math.expm1(-c * delta)
    return (w0, delta - w0 / c, 0.5 * delta * delta - delta / c + w0 / (c * c))[:order]


def midpoint_weights(delta: float, c: float, order: int) -> tuple[float, ...]:
    """The second-order "midpoint" weights of the paper presets: ``w0 = 1 - e^{-c delta}``, ``w1 = delta w0 / 2``.

    With ``c = 1`` this is BFN-Solver++2 / DPM-Solver++(2M) (``D = (1 + 1/(2r)) x_s - 1/(2r) x_s'``); with ``c = 2``
    the SDE-BFN-Solver++2 / SDE-DPM-Solver++(2M) midpoint variant (Xue et al., Algorithms 2 and 3).
    """
    if order > 2:
        raise ValueError("midpoint weights exist up to order 2")
    w0 = -math.expm1(-c * delta)
    return (w0, 0.5 * delta * w0)[:order]


def exponential_update(
    x_s: Tensor,
    s: Point,
    t: Point,
    derivatives: Sequence[Tensor],
    h: float = 0.0,
    weights: TaylorWeights = exact_taylor_weights,
    noise: Tensor | None = None,
) -> Tensor:
    """One exponential-integrator step ``s -> t`` of the h-process with ``x0_hat`` given by its Taylor data.

    ``x_t = (sigma_t/sigma_s) e^{-h delta} x_s + alpha_t sum_j w_j x0_hat^(j) + sigma_t sqrt(1 - e^{-2 h delta}) xi``
    with ``delta = lambda_t - lambda_s`` and ``w = weights(delta, 1 + h, len(derivatives))``; the noise term is
    added when ``noise`` is given (it must be for ``h > 0``).
    """
    delta = t.lam - s.lam
    x_t = x_s * (t.sigma / s.sigma * math.exp(-h * delta))
    for w, d in zip(weights(delta, 1.0 + h, len(derivatives)), derivatives):
        x_t.add_(d, alpha=t.alpha * w)
    if noise is not None:
        x_t.add_(noise, alpha=t.sigma * math.sqrt(-math.expm1(-2.0 * h * delta)))
    return x_t


def _history_points(state: SamplerState, x0: Tensor, lam_s: float, order: int) -> list[tuple[float, Tensor]]:
    return [(lam_s, x0), *((p.lam, p.x0) for p in state.history)][:order]


# ------------------------------------------------------------------------------------------------- steps
def multistep_step(
    ctx: StepContext,
    state: SamplerState,
    t_next: float,
    noise: Tensor | None,
    order: int,
    *,
    h: float = 0.0,
    weights: TaylorWeights = exact_taylor_weights,
) -> StepResult:
    """Multistep exponential integrator of the h-process, orders 1-3, one network call per step.

    ``x_t = (sigma_t/sigma_s) e^{-h delta} x_s + alpha_t [w0 x0_s + w1 x0' + w2 x0''] + sigma_t sqrt(1 - e^{-2 h delta})
    xi`` with ``x0'``, ``x0''`` from divided differences in ``lambda`` of the current and stored predictions.

    Presets: ``h = 0``, order 1 is BFN-Solver++1 (Xue et al., Algorithm 1; DPM-Solver++1 / DDIM); ``h = 0`` with
    :func:`midpoint_weights`, order 2, is BFN-Solver++2 (Algorithm 2; DPM-Solver++(2M)); ``h = 0``, order 3 with
    the exact weights is BFN-Solver++3 (DPM-Solver++(3M) with the correct ``D2 = 2 (D1_0 - D1_1)/(r0 + r1)``);
    ``h = 1``, order 1 is SDE-BFN-Solver++1, i.e. exactly BFN's Bayesian update with sender accuracy
    ``beta_t - beta_s`` (Prop. 4.2); ``h = 1`` with midpoint weights, order 2, is SDE-BFN-Solver++2 (Algorithm 3).
    Any other ``h >= 0`` with the exact weights is the path-integral h-solver (Hirono et al.), whose order-1 step is
    exact for a frozen ``x0_hat``.
    """
    s, t = ctx.schedule.at(state.t), ctx.schedule.at(t_next)
    x0 = ctx.predictor(state.x, state.t)
    derivatives = divided_differences(_history_points(state, x0, s.lam, order), order)
    return StepResult(exponential_update(state.x, s, t, derivatives, h, weights, noise), x0)


def noise_first_order_step(
    ctx: StepContext, state: SamplerState, t_next: float, noise: Tensor | None, order: int
) -> StepResult:
    """BFN-Solver1 in noise form (DPM-Solver-1; BFN-Solver ``ode_bfnsolver1``), one network call per step.

    ``x_t = (alpha_t/alpha_s) x_s - sigma_t (e^{delta} - 1) eps_s`` with ``eps_s = (x_s - alpha_s x0_s)/sigma_s``
    recomputed from the (clipped) data prediction, so it equals BFN-Solver++1 up to rounding.
    """
    s, t = ctx.schedule.at(state.t), ctx.schedule.at(t_next)
    x0 = ctx.predictor(state.x, state.t)
    eps = state.x.sub(x0, alpha=s.alpha).mul_(1.0 / s.sigma)
    return StepResult((state.x * (t.alpha / s.alpha)).sub_(eps, alpha=t.sigma * math.expm1(t.lam - s.lam)), x0)


def singlestep2_step(
    ctx: StepContext, state: SamplerState, t_next: float, noise: Tensor | None, order: int, *, r1: float = 0.5
) -> StepResult:
    """BFN-Solver++2, single step (DPM-Solver++(2S), ``r1 = 1/2``), two network calls per step.

    ``lambda_m = lambda_s + r1 delta``; ``u = (sigma_m/sigma_s) x_s + alpha_m (1 - e^{-r1 delta}) x0_s``;
    ``D = (1 - 1/(2 r1)) x0_s + 1/(2 r1) x0_hat(u, m)``; ``x_t = (sigma_t/sigma_s) x_s + alpha_t (1 - e^{-delta}) D``.
    Written as a first-order substep and a midpoint-weighted step with ``x0' ~ (x0_m - x0_s)/(lambda_m - lambda_s)``.
    """
    s, t = ctx.schedule.at(state.t), ctx.schedule.at(t_next)
    m = ctx.schedule.at_lam(s.lam + r1 * (t.lam - s.lam))
    x0 = ctx.predictor(state.x, s.t)
    u = exponential_update(state.x, s, m, [x0])
    x0_m = ctx.predictor(u, m.t)
    derivatives = divided_differences([(s.lam, x0), (m.lam, x0_m)], 2)
    return StepResult(exponential_update(state.x, s, t, derivatives, weights=midpoint_weights), x0)


def singlestep3_step(
    ctx: StepContext,
    state: SamplerState,
    t_next: float,
    noise: Tensor | None,
    order: int,
    *,
    r1: float = 1.0 / 3.0,
    r2: float = 2.0 / 3.0,
) -> StepResult:
    """BFN-Solver++3, single step (DPM-Solver++(3S), ``r1 = 1/3``, ``r2 = 2/3``), three network calls per step.

    With ``phi_1 = e^{-delta} - 1``, ``phi_1k = e^{-r_k delta} - 1``, ``phi_2 = phi_1/delta + 1``,
    ``phi_22 = phi_12/(r2 delta) + 1``:
    ``u1 = (sigma_1/sigma_s) x_s - alpha_1 phi_11 x0_s``;
    ``u2 = (sigma_2/sigma_s) x_s - alpha_2 phi_12 x0_s + (r2/r1) alpha_2 phi_22 (x0_hat(u1) - x0_s)``;
    ``x_t = (sigma_t/sigma_s) x_s - alpha_t phi_1 x0_s + (1/r2) alpha_t phi_2 (x0_hat(u2) - x0_s)``.
    Each line is an exact-weight exponential step with ``x0'`` the divided difference to the latest substep.
    """
    s, t = ctx.schedule.at(state.t), ctx.schedule.at(t_next)
    delta = t.lam - s.lam
    p1, p2 = ctx.schedule.at_lam(s.lam + r1 * delta), ctx.schedule.at_lam(s.lam + r2 * delta)
    x0 = ctx.predictor(state.x, s.t)
    u1 = exponential_update(state.x, s, p1, [x0])
    x0_1 = ctx.predictor(u1, p1.t)
    u2 = exponential_update(state.x, s, p2, divided_differences([(s.lam, x0), (p1.lam, x0_1)], 2))
    x0_2 = ctx.predictor(u2, p2.t)
    return StepResult(exponential_update(state.x, s, t, divided_differences([(s.lam, x0), (p2.lam, x0_2)], 2)), x0)


def predictor_corrector_step(
    ctx: StepContext,
    state: SamplerState,
    t_next: float,
    noise: Tensor | None,
    order: int,
    *,
    h: float = 0.0,
) -> StepResult:
    """Multistep predictor and a corrector one order higher (UniPC-style; Zhao et al., NeurIPS 2023), one call a step.

    The prediction ``x0_s`` made at the predicted state ``x_s`` first corrects that state: the previous step
    ``s' -> s`` is redone with the Taylor data at ``s'`` interpolated through ``s`` as well,
    ``x_s <- x_s + alpha_s sum_j w_j(lambda_s - lambda_s') (D_j^corrector - D_j^predictor)`` (the same exact weights;
    the noise term is unchanged). Then the predictor of order ``order - 1`` (multistep, exact weights) steps from the
    corrected ``x_s`` to ``t``. No network call is added: the corrector reuses the prediction the next step needs
    anyway (made at the uncorrected state). With ``order = 3`` the predictor is second order and the corrector third.
    """
    s, t = ctx.schedule.at(state.t), ctx.schedule.at(t_next)
    x0 = ctx.predictor(state.x, state.t)
    x = state.x
    if state.history:
        prev, older = state.history[0], [(p.lam, p.x0) for p in state.history[1 : max(1, order - 1)]]
        n_pred = min(max(order - 1, 1), 1 + len(older))
        predicted = divided_differences([(prev.lam, prev.x0), *older][:n_pred], n_pred)
        corrected = divided_differences([(prev.lam, prev.x0), (s.lam, x0), *older][: n_pred + 1], n_pred + 1)
        weights = exact_taylor_weights(s.lam - prev.lam, 1.0 + h, n_pred + 1)
        x = x.clone()
        for j, (w, d) in enumerate(zip(weights, corrected)):
            x.add_(d if j >= n_pred else d - predicted[j], alpha=s.alpha * w)
    n_step = min(max(order - 1, 1), 1 + len(state.history))
    derivatives = divided_differences(_history_points(state, x0, s.lam, n_step), n_step)
    return StepResult(exponential_update(x, s, t, derivatives, h, exact_taylor_weights, noise), x0)
