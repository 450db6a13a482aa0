"""The sampler engine: an explicit state, the context a step sees, and the one loop that drives every step function.

A *step function* maps ``(ctx, state, t_next, noise, order)`` to a :class:`StepResult`: the next state at solver
time ``t_next`` and the data prediction it made at the current time. It is pure apart from the network calls, which
go through ``ctx.predictor`` (that is where NFE are counted). The loop (:func:`integrate`) owns everything else:
the multistep warm-up (the effective order is ``min(order, 1 + len(history))``, so the first step of a multistep
method is first order, the second step of a third-order method is second order), the history of predictions, the
final-step rule ``drop``, the Gaussian noise (drawn from the run's ``torch.Generator`` and handed to the step) and
the per-step callback.

Schedules are float64: the SDE coefficients at the grid points are computed once, vectorised, and kept as Python
floats (:class:`Schedule`); states and network inputs stay in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from bfn.flows.base import Flow, LinearSDE, as_f64, expand_like
from bfn.time import flip_clock

if TYPE_CHECKING:
    from bfn.model import BFN
    from bfn.sampling.conditioning import Conditioning

Callback = Callable[[dict[str, Any]], None]


# ------------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class Point:
    """The linear-SDE coefficients at one solver time ``t`` (float64, as Python floats).

    ``alpha`` and ``sigma`` are the marginal coefficients (``state | x0 ~ N(alpha x0, sigma^2 I)``) and
    ``lam = log(alpha / sigma)`` the half log-SNR.
    """

    t: float
    alpha: float
    sigma: float
    lam: float


class Schedule:
    """Float64 SDE coefficients at solver times, cached per time (the grid is filled in with one vectorised call)."""

    def __init__(self, sde: LinearSDE) -> None:
        self.sde = sde
        self._points: dict[float, Point] = {}

    def preload(self, ts: Tensor) -> None:
        """Compute the coefficients of all the times in ``ts`` at once."""
        ts = as_f64(ts, "cpu")
        columns = (ts, self.sde.alpha(ts), self.sde.sigma(ts), self.sde.lam(ts))
        for t, alpha, sigma, lam in zip(*(c.tolist() for c in columns)):
            self._points[t] = Point(t, alpha, sigma, lam)

    def at(self, t: float) -> Point:
        """Coefficients at solver time ``t``."""
        point = self._points.get(t)
        if point is None:
            self.preload(torch.tensor([t], dtype=torch.float64))
            point = self._points[t]
        return point

    def at_lam(self, lam: float) -> Point:
        """Coefficients at the solver time whose half log-SNR is ``lam`` (``t = t_of_lam(lam)``)."""
        return self.at(float(self.sde.t_of_lam(torch.tensor(lam, dtype=torch.float64))))


# ----------------------------------------------------------------------------------------------- predictor
class Predictor:
    """The network as the samplers see it: the one place where network output becomes the data prediction.

    ``predictor(x, t)`` is the data prediction ``x0_hat`` in state space at solver time ``t`` (one call; continuous
    ``x_hat``, discretised ``k_hat``, discrete ``K e_hat - 1``: ``flow.data_prediction``, with ``clip`` overriding
    the continuous flow's clipping); :meth:`net_out` is the raw network output and :meth:`prediction` turns it into
    ``x0_hat``, :meth:`output` into samples of the output distribution at ``tau = 1``. ``nfe`` is the number of
    network evaluations made so far: each call of :meth:`net_out` runs the network once, or twice (one batched call
    of ``2B`` rows) under classifier-free guidance. Every sampler, :meth:`bfn.BFN.denoise` and the PF-ODE
    likelihood go through it.

    A :class:`~bfn.sampling.conditioning.Conditioning` (labels and guidance, known values) acts here, where the
    network output is made, so that every sampler gets it; ``generator`` feeds its random draws.
    """

    def __init__(
        self,
        model: BFN,
        clip: bool | None = None,
        conditioning: Conditioning | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.model = model
        self.clip = clip
        self.conditioning = conditioning
        self.generator = generator
        self.nfe = 0

    def net_out(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Network output at state ``x`` and solver time ``t`` (the network receives BFN time ``1 - t``)."""
        tau = flip_clock(as_f64(t, x.device))
        if self.conditioning is None:
            self.nfe += 1
            return self.model.call_net(x, tau)
        self.nfe += self.conditioning.calls
        return self.conditioning.net_out(self.model, x, tau, self.generator)

    def prediction(self, net_out: Tensor, x: Tensor, t: Tensor | float) -> Tensor:
        """Turn a network output at ``(x, t)`` into the data prediction ``x0_hat`` (no network call)."""
        flow = self.model.flow
        x0 = flow.data_prediction(net_out, x, flip_clock(as_f64(t, x.device)), clip=self.clip)
        return x0 if self.conditioning is None else self.conditioning.prediction(flow, x0)

    def output(self, net_out: Tensor, x: Tensor, mode: bool = False) -> Tensor:
        """Samples of the output distribution at ``tau = 1`` from a network output there (``flow.sample_output``)."""
        return self.model.flow.sample_output(net_out, x, self.generator, mode=mode, clip=self.clip)

    def __call__(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.prediction(self.net_out(x, t), x, t)


def score_from_prediction(sde: LinearSDE, x: Tensor, x0_hat: Tensor, t: Tensor | float) -> Tensor:
    """``s = -(x - alpha_t x0_hat)/sigma_t^2`` (Xue et al., sec. 4-5; discrete: ``-z/(K beta_t) + e_hat - 1/K``).

    The one form of the model score: :func:`bfn.sampling.score` and the PF-ODE likelihood use it.
    """
    t64 = as_f64(t, x.device)
    alpha, sigma = expand_like(sde.alpha(t64), x), expand_like(sde.sigma(t64), x)
    return -(x - alpha * x0_hat) / sigma**2


# --------------------------------------------------------------------------------------------------- state
@dataclass(frozen=True)
class Prediction:
    """One stored data prediction ``x0`` made at solver time ``t`` (with its half log-SNR ``lam``)."""

    t: float
    lam: float
    x0: Tensor


@dataclass(frozen=True)
class SamplerState:
    """Everything a step needs to know about the run so far.

    Attributes:
        x: the SDE state at solver time ``t`` (continuous / discretised: the input mean ``mu``; discrete: logits
            ``z``), shape ``(B, *state_shape)`` in the model's dtype.
        t: solver time of ``x``.
        history: earlier data predictions, newest first (only as many as the method's order needs).
        nfe: network calls made so far.
        step: index of the next step (0 for the first).
    """

    x: Tensor
    t: float
    history: tuple[Prediction, ...] = ()
    nfe: int = 0
    step: int = 0


@dataclass(frozen=True)
class StepResult:
    """What a step returns: the state ``x`` at ``t_next`` and the data prediction ``x0`` made at the current time.

    ``x0`` may be ``None`` only for a step that keeps no history and was told that nobody reads its predictions
    (``ctx.record_predictions`` false), so that it can skip computing one.
    """

    x: Tensor
    x0: Tensor | None


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides the state: the flow, its SDE, the counting predictor and the generator.

    ``record_predictions`` tells steps whose update does not need a data prediction (the original sampler) whether
    one is wanted for the callback or trajectory.
    """

    flow: Flow
    predictor: Predictor
    schedule: Schedule
    generator: torch.Generator | None = None
    record_predictions: bool = True

    @property
    def sde(self) -> LinearSDE:
        """The flow's linear SDE (float64 ``alpha``, ``sigma``, ``lam``, ``t_of_lam``, ``f``, ``g2``)."""
        return self.flow.sde

    @classmethod
    def build(
        cls,
        model: BFN,
        generator: torch.Generator | None = None,
        clip: bool | None = None,
        record_predictions: bool = True,
        conditioning: Conditioning | None = None,
    ) -> StepContext:
        """The context for sampling from ``model`` (a fresh NFE counter; ``clip`` as for :class:`Predictor`)."""
        predictor = Predictor(model, clip, conditioning, generator)
        return cls(model.flow, predictor, Schedule(model.flow.sde), generator, record_predictions)


class StepFn(Protocol):
    """The signature every step function shares.

    Args:
        ctx: the run's context (network calls through ``ctx.predictor``).
        state: the current state at solver time ``state.t``.
        t_next: the solver time to step to (``< state.t``).
        noise: a standard normal tensor of the state's shape for stochastic steps, else ``None``.
        order: the order to use on this step (the loop lowers it during the multistep warm-up).
    """

    def __call__(
        self, ctx: StepContext, state: SamplerState, t_next: float, noise: Tensor | None, order: int
    ) -> StepResult: ...


@dataclass(frozen=True)
class Method:
    """A step function with its parameters bound, and how the loop must drive it.

    Attributes:
        step: the step function.
        order: the method's order (multistep: the number of stored predictions it uses).
        multistep: whether the step reuses earlier predictions (then the loop keeps ``order - 1`` of them and
            warms up with lower orders).
        noise: whether the loop must draw a standard normal tensor for every step.
    """

    step: StepFn
    order: int = 1
    multistep: bool = False
    noise: bool = False

    @property
    def history_length(self) -> int:
        """How many earlier predictions the loop keeps: ``order - 1`` for multistep methods, else none."""
        return self.order - 1 if self.multistep else 0


# ---------------------------------------------------------------------------------------------------- loop
def standard_normal(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """A standard normal tensor shaped and typed like ``like``, drawn from ``generator``."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


@dataclass
class Recorder:
    """Calls the user's callback with one dict per step, and keeps the dicts when a trajectory is requested."""

    callback: Callback | None = None
    keep: bool = False
    trajectory: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, info: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback(info)
        if self.keep:
            self.trajectory.append({k: v.clone() if isinstance(v, Tensor) else v for k, v in info.items()})


def integrate(
    ctx: StepContext,
    method: Method,
    state: SamplerState,
    grid: Sequence[float],
    drop_last: bool = False,
    record: Callable[[dict[str, Any]], None] | None = None,
) -> SamplerState:
    """Run ``method`` over the solver times ``grid`` (``grid[0] == state.t``, decreasing) and return the last state.

    Each step ``i`` goes from ``grid[i]`` to ``grid[i + 1]``. With ``drop_last`` the last step makes its data
    prediction and stores it as ``history[0]`` but does not move the state (the BFN-Solver ``last_drop`` rule), so
    the state stays at ``grid[-2]`` and ``grid[-1]`` is never evaluated. A ``state`` that already carries a history
    (e.g. an exact warm start) is continued at full order. ``record`` receives one dict per step with keys ``step``,
    ``t`` (time of the prediction), ``x0_hat``, ``x`` (state after the step), ``t_next`` (its time) and ``nfe``.
    """
    ctx.schedule.preload(torch.tensor(list(grid), dtype=torch.float64))
    steps = len(grid) - 1
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        if drop_last and i == steps - 1:
            x0 = ctx.predictor(state.x, t)
            state = _advance(ctx, method, state, state.x, t, x0, keep_all=True)
            if record is not None:
                record({"step": i, "t": t, "x0_hat": x0, "x": state.x, "t_next": t, "nfe": state.nfe})
            break
        noise = standard_normal(state.x, ctx.generator) if method.noise else None
        order = min(method.order, 1 + len(state.history)) if method.multistep else method.order
        result = method.step(ctx, state, t_next, noise, order)
        state = _advance(ctx, method, state, result.x, t_next, result.x0)
        if record is not None:
            record({"step": i, "t": t, "x0_hat": result.x0, "x": state.x, "t_next": t_next, "nfe": state.nfe})
    return state


def _advance(
    ctx: StepContext,
    method: Method,
    state: SamplerState,
    x: Tensor,
    t: float,
    x0: Tensor | None,
    keep_all: bool = False,
) -> SamplerState:
    """The state after one step: new ``x`` at ``t``, the prediction made at the old time pushed onto the history."""
    keep = max(method.history_length, 1) if keep_all else method.history_length
    history: tuple[Prediction, ...] = ()
    if keep and x0 is not None:
        history = (Prediction(state.t, ctx.schedule.at(state.t).lam, x0), *state.history)[:keep]
    return SamplerState(x=x, t=t, history=history, nfe=ctx.predictor.nfe, step=state.step + 1)
