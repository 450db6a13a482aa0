"""Adaptive step sizes: a tolerance instead of a step count (:func:`sample_adaptive`).

The multistep exponential integrator of order ``k`` in half log-SNR ``lambda`` (the h-process of
:mod:`bfn.sampling.exponential`; ``h = 0`` is the probability-flow ODE of BFN-Solver++, docs/solvers.md 2.6) steps
from ``s`` to ``t`` with ``delta = lambda_t - lambda_s`` as

    x_t = (sigma_t / sigma_s) e^{-h delta} x_s + alpha_t sum_{j<k} w_j(delta) x0^{(j)} (+ noise),

the ``x0^{(j)}`` being divided differences of the stored predictions. The last term it includes,
``alpha_t w_{k-1}(delta) x0^{(k-1)}``, is what the order-``k`` update adds to the order-``k - 1`` one: an embedded
estimate of the local error of the lower order, from the multistep history alone (the idea of the adaptive
DPM-Solver, Lu et al., NeurIPS 2022, sec. 3.4 and app. C, and of Jolicoeur-Martineau et al., 2021, there with an
extra evaluation). Here it is divided by ``alpha_t``, i.e. measured on the data-scaled state ``x / alpha_t``, and
weighted by ``rho(lambda_t) = 1 / sqrt(1 + e^{-2 lambda_t})``, the factor by which the exact probability-flow map
carries an error of the data-scaled state to the final sample for data of unit variance (for Gaussian data
``N(m, v)`` that factor is ``sqrt(v / (v + e^{-2 lambda_t}))``):

    E(delta) = rho(lambda_s + delta) w_{k-1}(delta) RMS(x0^{(k-1)}) / tol.

Every step is the largest ``delta`` with ``E(delta) <= 1`` (bisection on this scalar function: no network call),
at most ``growth`` times the previous step and at least ``(lambda_end - lambda_start) / max_steps``, so a step is
chosen before the network is called and no call is ever thrown away: the run makes one network call per step
(``out.nfe == out.steps``; one more with ``final="denoise"``). The first step, which has no history, is
``first_step`` in ``lambda`` (default ``min(1, 2 sqrt(tol))``). The RMS runs over the whole batch, so one time grid
serves all samples of a call (the grid, and hence each sample, depends on the batch it is drawn with).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal

import torch

from bfn._checks import MAX_NUM_SAMPLES, MAX_STEPS, check_eta, check_generator, check_int
from bfn.sampling.api import SampleOutput
from bfn.sampling.engine import Prediction, SamplerState, StepContext, standard_normal
from bfn.sampling.exponential import divided_differences, exact_taylor_weights, exponential_update

if TYPE_CHECKING:
    from bfn.model import BFN

ADAPTIVE = "adaptive"
"""The name :func:`sample_adaptive` reports in ``SampleOutput.sampler``."""

_BISECTIONS = 60


def error_weight(lam: float) -> float:
    """``rho(lambda) = 1 / sqrt(1 + e^{-2 lambda})``: how an error of ``x / alpha`` at ``lambda`` reaches the sample.

    For unit-variance Gaussian data the exact probability-flow map scales an error of the data-scaled state
    ``x / alpha_t`` by ``sqrt(1 / (1 + e^{-2 lambda_t}))`` on its way to ``t = 0``: ``e^lambda`` near the prior,
    1 at high signal-to-noise.
    """
    return 1.0 / math.sqrt(1.0 + math.exp(-2.0 * lam)) if lam > -350.0 else 0.0


def error_estimate(delta: float, lam_s: float, rms_derivative: float, order: int, h: float, tol: float) -> float:
    """``E(delta) = rho(lambda_s + delta) w_{k-1}(delta) RMS(x0^{(k-1)}) / tol`` (module docstring), ``k = order``."""
    weight = exact_taylor_weights(delta, 1.0 + h, order)[order - 1]
    return error_weight(lam_s + delta) * abs(weight) * rms_derivative / tol


def next_step(lam_s: float, rms_derivative: float, order: int, h: float, tol: float, low: float, high: float) -> float:
    """The largest ``delta`` in ``[low, high]`` with ``E(delta) <= 1`` (``low`` if none; ``E`` grows with ``delta``)."""
    if error_estimate(high, lam_s, rms_derivative, order, h, tol) <= 1.0:
        return high
    if error_estimate(low, lam_s, rms_derivative, order, h, tol) > 1.0:
        return low
    a, b = low, high
    for _ in range(_BISECTIONS):
        mid = 0.5 * (a + b)
        if error_estimate(mid, lam_s, rms_derivative, order, h, tol) <= 1.0:
            a = mid
        else:
            b = mid
    return a


@torch.no_grad()
def sample_adaptive(
    model: BFN,
    num_samples: int,
    tol: float = 0.01,
    generator: torch.Generator | None = None,
    *,
    order: int = 2,
    h: float = 0.0,
    eta: float | None = None,
    max_steps: int = 200,
    first_step: float | None = None,
    growth: float = 2.0,
    final: Literal["drop", "denoise"] = "drop",
    mode: bool = False,
) -> SampleOutput:
    """Sample with step sizes chosen from an error estimate, to a tolerance ``tol`` instead of a step count.

    The multistep exponential integrator of the h-process in ``lambda`` (order ``order``, exact Taylor weights; ``h``
    as in the ``h-solver``: 0 is the probability-flow ODE of BFN-Solver++3 / BFN-Solver++2 with exact weights, 1 the
    reverse SDE) runs from ``t = 1 - eta`` (zero-mean Gaussian start, the protocol of docs/solvers.md 4) towards
    ``t = 0``, each step the largest whose embedded error estimate (module docstring) stays within ``tol``. Works
    for every kind (discrete data: the h-process on the logits, with ``x0_hat = K e_hat - 1``).

    Args:
        model: the BFN to sample from.
        num_samples: batch size; one step-size sequence serves the whole batch.
        tol: tolerance on the estimated local error of the data-scaled state (data units); smaller is more
            accurate and costs more calls.
        generator: the only source of randomness (start and, for ``h > 0``, the noise).
        order: 1-3; with order 1 there is no error estimate and every step is ``first_step``.
        h: noise dial ``h >= 0``.
        eta: end offset (default: the kind's protocol value, ``model.flow.sampling.eta``).
        max_steps: at most this many steps (the smallest step is ``(lambda_end - lambda_start) / max_steps``).
        first_step: the first step in ``lambda``, which has no history and is first order (default
            ``min(1, 2 sqrt(tol))``, so that its local error, of order ``first_step^2``, scales with ``tol``).
        growth: a step is at most ``growth`` times the previous one.
        final: ``"drop"`` (return the data prediction of the last call once the next step would reach ``t = 0``)
            or ``"denoise"`` (step to ``t = 0``, then one call at ``tau = 1``), as for :func:`bfn.sampling.sample`.
        mode: with ``final="denoise"``, the mode of the output distribution instead of a draw.

    Returns:
        a :class:`~bfn.sampling.SampleOutput` with ``sampler="adaptive"``, ``steps`` the number of steps taken and
        ``nfe`` the network calls counted (``steps``, plus one with ``final="denoise"``); ``trajectory`` lists, per
        step, ``t``, ``t_next`` and ``nfe``.
    """
    num_samples = check_int(num_samples, "num_samples", 1, MAX_NUM_SAMPLES)
    max_steps = check_int(max_steps, "max_steps", 1, MAX_STEPS)
    order = check_int(order, "order", 1, 3)
    if first_step is None and isinstance(tol, Real) and not isinstance(tol, bool) and math.isfinite(tol) and tol > 0:
        first_step = min(1.0, 2.0 * math.sqrt(tol))
    for name, value, low in (("tol", tol, 0.0), ("first_step", first_step, 0.0), ("growth", growth, 1.0)):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not value > low:
            raise ValueError(f"{name} must be a finite number > {low:g}, got {value!r}")
    if isinstance(h, bool) or not isinstance(h, Real) or not math.isfinite(h) or h < 0:
        raise ValueError(f"h must be a finite number >= 0 (0 = probability-flow ODE, 1 = reverse SDE), got {h!r}")
    if final not in ("drop", "denoise"):
        raise ValueError(f"final must be 'drop' or 'denoise', got {final!r}")
    if not isinstance(mode, bool) or (mode and final != "denoise"):
        raise ValueError("mode must be True or False and applies to final='denoise' only")
    eta = model.flow.sampling.eta if eta is None else check_eta(eta)
    device, dtype = model.device, model.state_dtype()
    check_generator(generator, device, owner="the model")

    ctx = StepContext.build(model, generator)
    schedule, sde = ctx.schedule, model.flow.sde
    start, end = schedule.at(1.0 - float(eta)), schedule.at(0.0)
    span = end.lam - start.lam
    smallest = span / max_steps
    shape = (num_samples, *model.flow.state_shape(model.data_shape))
    state = SamplerState(
        start.sigma * standard_normal(torch.empty(shape, dtype=dtype, device=device), generator), start.t
    )
    trajectory: list[dict[str, Any]] = []
    previous, x0 = float(first_step), None  # type: ignore[arg-type]
    while True:
        s = schedule.at(state.t)
        x0 = ctx.predictor(state.x, state.t)
        k = min(order, 1 + len(state.history))
        derivatives = divided_differences([(s.lam, x0), *((p.lam, p.x0) for p in state.history)][:k], k)
        remaining = end.lam - s.lam
        last_step = len(trajectory) + 1 >= max_steps
        if k == 1:
            delta = min(previous, remaining)
        else:
            rms = float(derivatives[k - 1].double().square().mean().sqrt())
            delta = next_step(s.lam, rms, k, h, tol, min(smallest, remaining), min(growth * previous, remaining))
        reaches_end = last_step or delta >= remaining * (1.0 - 1e-12)
        if reaches_end and final == "drop":
            trajectory.append({"t": s.t, "t_next": s.t, "nfe": ctx.predictor.nfe})
            break
        t = end if reaches_end else schedule.at(float(sde.t_of_lam(torch.tensor(s.lam + delta, dtype=torch.float64))))
        noise = standard_normal(state.x, generator) if h > 0 else None
        x = exponential_update(state.x, s, t, derivatives, h, exact_taylor_weights, noise)
        history = (Prediction(s.t, s.lam, x0), *state.history)[: order - 1]
        trajectory.append({"t": s.t, "t_next": t.t, "nfe": ctx.predictor.nfe})
        state = SamplerState(x=x, t=t.t, history=history, nfe=ctx.predictor.nfe, step=state.step + 1)
        previous = max(delta, smallest)
        if reaches_end:
            break
    if final == "drop":
        samples = model.flow.decode_prediction(x0)
    else:
        samples = ctx.predictor.output(ctx.predictor.net_out(state.x, state.t), state.x, mode)
    options = {"tol": tol, "order": order, "h": h, "eta": eta, "max_steps": max_steps, "final": final}
    return SampleOutput(
        samples=samples,
        nfe=ctx.predictor.nfe,
        state=state.x,
        t=state.t,
        trajectory=trajectory,
        sampler=ADAPTIVE,
        steps=len(trajectory),
        options=options,
    )
