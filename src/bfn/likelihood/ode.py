"""A batched ODE integrator in torch: adaptive Dormand-Prince 5(4) with per-example steps, or fixed-step RK4.

Every row of the state is an independent initial-value problem ``dy/ds = fn(s, y)`` over the same interval
``[s0, s1]`` (either direction). The adaptive solver gives each row its own step size and time, so a row's result
does not depend on what else is in the batch; one call of ``fn`` evaluates all rows at their own times, and the
number of such calls is the NFE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from bfn.likelihood.options import DEFAULT_ODE, ODEOptions, check_options

RHS = Callable[[Tensor, Tensor], Tensor]
"""Right-hand side ``fn(s, y)``: times ``s`` of shape ``(B,)`` and states ``y`` of shape ``(B, n)`` -> ``(B, n)``."""

# Dormand & Prince (1980) RK5(4)7M tableau; the 7th stage is evaluated at the new point (first same as last).
_C = (0, Fraction(1, 5), Fraction(3, 10), Fraction(4, 5), Fraction(8, 9), 1, 1)
_A = (
    (),
    (Fraction(1, 5),),
    (Fraction(3, 40), Fraction(9, 40)),
    (Fraction(44, 45), Fraction(-56, 15), Fraction(32, 9)),
    (Fraction(19372, 6561), Fraction(-25360, 2187), Fraction(64448, 6561), Fraction(-212, 729)),
    (Fraction(9017, 3168), Fraction(-355, 33), Fraction(46732, 5247), Fraction(49, 176), Fraction(-5103, 18656)),
)
_B5 = (Fraction(35, 384), 0, Fraction(500, 1113), Fraction(125, 192), Fraction(-2187, 6784), Fraction(11, 84), 0)
_B4 = (
    Fraction(5179, 57600),
    0,
    Fraction(7571, 16695),
    Fraction(393, 640),
    Fraction(-92097, 339200),
    Fraction(187, 2100),
    Fraction(1, 40),
)
_E = tuple(float(b5 - b4) for b5, b4 in zip(_B5, _B4))  # error weights (5th minus embedded 4th order)

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0
BETA = 0.04  # step-size stabilisation (PI control) as in Hairer & Wanner's DOPRI5 code


@dataclass
class ODESolution:
    """Result of :func:`integrate`.

    Attributes:
        y: states at ``s1``, shape ``(B, n)``.
        nfe: number of (batched) evaluations of the right-hand side.
        steps: accepted steps (the largest count over rows for the adaptive solver).
        rejected: rejected adaptive steps, summed over rows.
    """

    y: Tensor
    nfe: int
    steps: int
    rejected: int = 0


def integrate(
    fn: RHS, y0: Tensor, s0: float, s1: float, *, ode: ODEOptions = DEFAULT_ODE, max_steps: int = 20_000
) -> ODESolution:
    """Integrate ``dy/ds = fn(s, y)`` from ``s0`` to ``s1`` for a batch of independent rows.

    Args:
        fn: the right-hand side (see :data:`RHS`); it is called with per-row times.
        y0: initial states ``(B, n)`` (the integration runs in ``y0``'s dtype; use float64).
        s0, s1: start and end of the integration variable (``s1 < s0`` integrates backwards).
        ode: the solver (:class:`~bfn.likelihood.ODEOptions`; its ``variable`` is the caller's business):
            ``"rk45"``, adaptive Dormand-Prince 5(4) with tolerances ``rtol``, ``atol``, the error of each row
            measured as the RMS over its components of ``err / (atol + rtol * |y|)`` (accept when <= 1); or
            ``"fixed"``, classic RK4 with ``steps`` equal steps (``4 * steps`` evaluations).
        max_steps: the adaptive solver raises ``RuntimeError`` beyond this many step attempts.
    """
    check_options(ode=ode)
    if y0.ndim != 2:
        raise ValueError(f"y0 must have shape (batch, n), got {tuple(y0.shape)}")
    if ode.solver == "fixed":
        return _rk4(fn, y0, float(s0), float(s1), ode.steps)
    return _dopri5(fn, y0, float(s0), float(s1), ode.rtol, ode.atol, max_steps)


def _rk4(fn: RHS, y: Tensor, s0: float, s1: float, steps: int) -> ODESolution:
    """Classic fourth-order Runge-Kutta with ``steps`` equal steps."""
    h = (s1 - s0) / steps
    batch = y.shape[0]
    for i in range(steps):
        s = torch.full((batch,), s0 + i * h, dtype=y.dtype, device=y.device)
        k1 = fn(s, y)
        k2 = fn(s + h / 2, y + h / 2 * k1)
        k3 = fn(s + h / 2, y + h / 2 * k2)
        k4 = fn(s + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return ODESolution(y=y, nfe=4 * steps, steps=steps)


def _rms(v: Tensor) -> Tensor:
    return v.square().mean(dim=1).sqrt()


def _initial_step(fn: RHS, s: Tensor, y: Tensor, f0: Tensor, direction: float, rtol: float, atol: float) -> Tensor:
    """Per-row starting step magnitude (Hairer, Norsett & Wanner, Solving ODEs I, sec. II.4); one evaluation."""
    scale = atol + rtol * y.abs()
    d0, d1 = _rms(y / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    f1 = fn(s + direction * h0, y + direction * h0[:, None] * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, (h0 * 1e-3).clamp_min(1e-6), (0.01 / dmax.clamp_min(1e-300)) ** 0.2)
    return torch.minimum(100 * h0, h1)


def _dopri5(fn: RHS, y: Tensor, s0: float, s1: float, rtol: float, atol: float, max_steps: int) -> ODESolution:
    """Adaptive Dormand-Prince 5(4) with per-row step sizes and times (local extrapolation, FSAL).

    Step-size control per row: ``h <- h * 0.9 err^(-0.2 + 0.75 beta) err_prev^beta`` (clamped to [0.2, 10]) after
    an accepted step, with no growth right after a rejection; ``h <- h * max(0.2, 0.9 err^-0.2)`` after a rejection.
    """
    batch, span = y.shape[0], abs(s1 - s0)
    direction = 1.0 if s1 >= s0 else -1.0
    low, high = min(s0, s1), max(s0, s1)
    s = torch.full((batch,), s0, dtype=y.dtype, device=y.device)
    if span == 0.0:
        return ODESolution(y=y, nfe=0, steps=0)
    k1 = fn(s, y)
    h = _initial_step(fn, s, y, k1, direction, rtol, atol).clamp(max=span)
    nfe, accepted, rejected = 2, torch.zeros(batch, dtype=torch.long, device=y.device), 0
    err_prev = torch.full_like(s, 1e-4)
    just_rejected = torch.zeros(batch, dtype=torch.bool, device=y.device)
    a = [[float(v) for v in row] for row in _A]
    c = [float(v) for v in _C]
    b5 = [float(v) for v in _B5]
    for _ in range(max_steps):
        remaining = (s1 - s) * direction
        active = remaining > 0
        if not active.any():
            return ODESolution(y=y, nfe=nfe, steps=int(accepted.max()), rejected=rejected)
        if (h[active] < 1e-14 * span).any():
            raise RuntimeError("adaptive ODE solver: step size underflow (the problem may be too stiff or singular)")
        hh = torch.where(active, torch.minimum(h, remaining), torch.zeros_like(h)) * direction
        hcol = hh[:, None]
        ks = [k1]
        for i in range(1, 6):
            increment = sum(a[i][j] * ks[j] for j in range(i))
            ks.append(fn((s + c[i] * hh).clamp(low, high), y + hcol * increment))
        y_new = y + hcol * sum(b5[j] * ks[j] for j in range(6))
        last = (hh.abs() >= remaining) & active
        s_new = torch.where(last, torch.full_like(s, s1), (s + hh).clamp(low, high))
        k7 = fn(s_new, y_new)
        ks.append(k7)
        nfe += 6
        err = hcol * sum(_E[j] * ks[j] for j in range(7))
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        err_norm = _rms(err / scale)
        ok = (err_norm <= 1.0) & active
        failed = active & ~ok
        rejected += int(failed.sum())
        accepted += ok.long()
        y = torch.where(ok[:, None], y_new, y)
        s = torch.where(ok, s_new, s)
        k1 = torch.where(ok[:, None], k7, k1)
        err_safe = err_norm.clamp_min(1e-10)
        grow = SAFETY * err_safe ** (-0.2 + 0.75 * BETA) * err_prev**BETA
        grow = torch.where(just_rejected, grow.clamp(max=1.0), grow).clamp(MIN_FACTOR, MAX_FACTOR)
        shrink = (SAFETY * err_safe**-0.2).clamp(MIN_FACTOR, 1.0)
        h = torch.where(active, hh.abs() * torch.where(ok, grow, shrink), h)
        err_prev = torch.where(ok, err_safe, err_prev)
        just_rejected = torch.where(active, failed, just_rejected)
    raise RuntimeError(f"adaptive ODE solver: no convergence within max_steps={max_steps} step attempts")
