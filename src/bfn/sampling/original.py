"""The original BFN sampler (Graves et al., 2023, Algorithms 3, 6 and 9) as a step function of the engine."""

from __future__ import annotations

from torch import Tensor

from bfn.flows.base import as_f64
from bfn.sampling.engine import SamplerState, StepContext, StepResult
from bfn.time import flip_clock


def bfn_step(
    ctx: StepContext,
    state: SamplerState,
    t_next: float,
    noise: Tensor | None,
    order: int,
    *,
    categorical: bool = True,
) -> StepResult:
    """One step of the original sampler from BFN time ``tau = 1 - s`` to ``tau' = 1 - t``, one network call.

    The receiver's guess is drawn from the output distribution (discrete: a class ``k ~ e_hat``; discretised: a bin
    centre ``~ p_O``; continuous: the point mass ``x_hat``), a sender sample ``y`` of accuracy
    ``alpha = beta(tau') - beta(tau)`` is drawn around it and the input distribution is updated by Bayes' rule
    (:meth:`~bfn.flows.Flow.sampler_step`). With ``categorical=False`` the guess is the output mean (``e_hat`` or
    ``k_hat``), which makes the step exactly SDE-BFN-Solver1 / SDE-BFN-Solver++1 (Xue et al., Props. 4.2, 5.3).
    Its random draws come from ``ctx.generator``. The data prediction is computed only when
    ``ctx.record_predictions`` asks for it (the update itself does not need it).
    """
    flow = ctx.flow
    tau, tau_next = as_f64(flip_clock(state.t)), as_f64(flip_clock(t_next))
    net_out = ctx.predictor.net_out(state.x, state.t)
    accuracy = flow.beta(tau_next) - flow.beta(tau)
    x = flow.sampler_step(net_out, state.x, tau, accuracy, ctx.generator, categorical=categorical)
    x0 = ctx.predictor.prediction(net_out, state.x, state.t) if ctx.record_predictions else None
    return StepResult(x, x0)
