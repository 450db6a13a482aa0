"""Abstract interfaces shared by the three data kinds: the flow (BFN maths) and its linear SDE (solver maths).

A :class:`Flow` is the only code that knows its data kind: besides the maths of Graves et al. (2023) it answers
every kind-specific question the samplers, the likelihood, conditioning and the data layer ask (how a final
prediction becomes samples, the moments of a moment-matched start, the known-value belief, the default end offset,
the configurations of ``sampler="auto"``, how intensities in [0, 1] map to its data), so nothing outside
:mod:`bfn.flows` compares kind strings.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor

FlowKind = Literal["continuous", "discretised", "discrete"]
KINDS: tuple[FlowKind, ...] = get_args(FlowKind)
"""The data kinds, as public names (configurations, the command line, ``SamplerSpec.kinds``)."""

TunedGrid = Literal["logsnr", "time"]

LOGSNR_POWER = 0.6
"""Exponent ``p`` of the log-SNR grid ``lambda(u) = lambda_start + (lambda_end - lambda_start) u^p`` that the
log-SNR tuned grid follows above its fitted budgets (:mod:`bfn.sampling.grids`)."""

TIME_POWER = 1.4
"""Exponent ``q`` of the BFN-time tuned grid ``tau(u) = eta + (1 - eta) u^q``."""

SMALL_BUDGET = 2
"""Budgets up to this many network calls run ``bfn-solver++1`` for the Gaussian (mu-state) kinds: no multistep
correction applies yet."""

SMALL_ETA_BUDGET = 6
"""Budgets up to this many calls start the Gaussian kinds at ``eta = 5e-3`` under ``sampler="auto"``."""

MID_ETA_BUDGET = 14
"""Budgets up to this many calls (above :data:`SMALL_ETA_BUDGET`) start continuous data at ``eta = 1e-3`` under
``sampler="auto"``; larger ones, and discretised data above :data:`SMALL_ETA_BUDGET`, run ``sde-bfn-solver++2``."""

NOISY_BUDGET = 10
"""From this many calls ``sampler="auto"`` samples discrete data with the ``h-solver`` at ``h = 0.5``."""


def as_f64(value: Tensor | float, device: torch.device | str | None = None) -> Tensor:
    """A float64 tensor of ``value`` (schedules are always evaluated in float64)."""
    if isinstance(value, Tensor):
        return value.to(dtype=torch.float64, device=device if device is not None else value.device)
    return torch.tensor(value, dtype=torch.float64, device=device)


def expand_like(coef: Tensor, like: Tensor) -> Tensor:
    """Cast a per-example (or scalar) coefficient to ``like``'s dtype and shape it to broadcast against it.

    ``coef`` has shape ``()`` or ``(B,)``; the result has shape ``(B, 1, ..., 1)`` matching ``like.ndim``.
    """
    coef = coef.to(dtype=like.dtype, device=like.device)
    if coef.ndim == 0:
        return coef
    return coef.reshape(coef.shape + (1,) * (like.ndim - coef.ndim))


def broadcast_statistic(value: Any, shape: tuple[int, ...], what: str) -> Tensor:
    """``value`` (a number, sequence or tensor) as a float64 CPU tensor of ``shape``; ``ValueError`` naming ``what``."""
    v = torch.as_tensor(value, dtype=torch.float64)
    try:
        return torch.broadcast_to(v.cpu(), shape).clone()
    except RuntimeError:
        raise ValueError(f"{what} of shape {tuple(v.shape)} does not broadcast to {shape}") from None


def reject_clip(kind: str, clip: bool | None) -> None:
    """``ValueError`` for a ``clip`` option on data whose prediction is in range by construction."""
    if clip is not None:
        raise ValueError(f"clip applies to continuous data only (the {kind} data prediction is already in range)")


# ------------------------------------------------------------------------------------------- sampling data
@dataclass(frozen=True)
class AutoChoice:
    """One configuration ``sampler="auto"`` may run: a registered sampler and its options, up to a budget.

    Attributes:
        sampler: the registered sampler's name.
        options: its options, as keyword arguments of :func:`bfn.sampling.sample` (read-only).
        max_nfe: the largest budget (network calls) it is chosen for; ``None``: any budget.
    """

    sampler: str
    options: Mapping[str, Any]
    max_nfe: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True)
class SamplingDefaults:
    """What the samplers use for a data kind when the caller leaves it open; each flow class declares one.

    Attributes:
        eta: the default end offset: the solver grids start at ``t = 1 - eta`` (the first network call is at
            ``tau = eta``) and the PF-ODE likelihood truncates there. The BFN-Solver protocol values (Xue et al.,
            2024: CIFAR-10 0.01, text8 0.001). Two effects pull in opposite directions: the Gaussian start at
            ``t = 1 - eta`` ignores the signal, whose size relative to the noise is ``exp(lambda_{1 - eta})``
            (0.38 for continuous data with ``sigma_1 = 1e-3`` and ``eta = 1e-2``; ``eta sqrt(beta_1 / K)`` for
            discrete data), while a smaller ``eta`` starts where trained networks are least accurate (near
            ``tau = 0`` the continuous data estimate amplifies noise-prediction errors by ``1 / sqrt(gamma)``).
        auto: the configurations of ``sampler="auto"`` (:mod:`bfn.sampling.auto`), in order: the first whose
            ``max_nfe`` admits the budget runs (the last one admits any).
        tuned_grid: the variable of ``grid="tuned"``: ``"logsnr"`` (call points in half log-SNR fitted per budget,
            :func:`bfn.sampling.grids.fitted_logsnr_grid`) or ``"time"`` (BFN time a power of the step index); see
            :func:`bfn.sampling.auto.tuned_grid`.
        refused_grids: named grids this kind refuses, each with the reason (the ``ValueError`` message).
        tuned_power: the exponent of that grid.
    """

    eta: float
    auto: tuple[AutoChoice, ...]
    tuned_grid: TunedGrid
    tuned_power: float
    refused_grids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "refused_grids", MappingProxyType(dict(self.refused_grids)))

    def auto_choice(self, nfe: int) -> AutoChoice:
        """The configuration of ``sampler="auto"`` for a budget of ``nfe`` network calls."""
        for choice in self.auto:
            if choice.max_nfe is None or nfe <= choice.max_nfe:
                return choice
        return self.auto[-1]


class LinearSDE(ABC):
    """A linear forward SDE ``d state = f(t) state dt + g(t) dw`` in solver time ``t`` (0 = data, 1 = prior).

    Its marginal given the data is ``N(alpha_t x0, sigma_t^2 I)``, where ``x0`` is the data in state space
    (continuous: ``x``; discrete: ``K e_x - 1``). All coefficients are float64 and exact (expm1/log1p forms).
    ``lam(t) = log(alpha_t / sigma_t)`` is half the log signal-to-noise ratio and decreases in ``t``.
    """

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Signal coefficient ``alpha_t``."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """Noise standard deviation ``sigma_t``."""

    @abstractmethod
    def lam(self, t: Tensor) -> Tensor:
        """Half log-SNR ``lambda_t = log(alpha_t / sigma_t)``."""

    @abstractmethod
    def t_of_lam(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`lam`."""

    @abstractmethod
    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient ``f(t) = d log(alpha_t) / dt``."""

    @abstractmethod
    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion ``g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2``."""


class Flow(ABC):
    """The Bayesian-flow maths of one data kind (Graves et al., 2023), and everything else that depends on the kind.

    A flow owns the accuracy schedule, Bayesian updates, the Bayesian flow distribution, the output, sender and
    receiver distributions, the three losses, and the linear-SDE view (``self.sde``) used by the fast samplers.
    Schedules are evaluated in float64 and cast to the data dtype at the network boundary.

    Conventions: ``tau`` is BFN time (per example, shape ``(B,)``); *params* are the input-distribution
    parameters the network sees (continuous: the mean ``mu``; discrete: probabilities ``theta``); the *state* is
    what the SDE evolves (continuous: ``mu``; discrete: logits ``z`` with ``theta = softmax(z)``); *data in state
    space* ``x0`` is what the SDE's marginal is centred on (continuous: ``x``; discrete: ``K e_x - 1``).

    Class attributes: ``kind`` (the public name), ``sampling`` (:class:`SamplingDefaults`), ``class_indices``
    (whether data and samples are integer class indices rather than floats), ``min_eta`` (the smallest end offset
    the likelihood accepts); ``num_bins`` / ``num_classes`` are ``None`` unless the kind has bins / classes.
    """

    kind: ClassVar[FlowKind]
    sampling: ClassVar[SamplingDefaults]
    class_indices: ClassVar[bool] = False
    min_eta: ClassVar[float] = 0.0
    num_bins: int | None = None
    num_classes: int | None = None
    sde: LinearSDE
    #: channels per data element in the network's input / output (a trailing dim exists iff channels > 1)
    input_channels: int
    output_channels: int

    # ----------------------------------------------------------------------------------------- configuration
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-able dict; ``type(flow)(**flow.config())`` rebuilds it."""

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """The constructor's argument names: the keys of :meth:`config` (what a configuration may set)."""
        return tuple(name for name in inspect.signature(cls).parameters if name != "self")

    @classmethod
    @abstractmethod
    def for_data(
        cls,
        *,
        num_bins: int | None = None,
        num_classes: int | None = None,
        num_levels: int | None = None,
        source: str = "data",
    ) -> Flow:
        """A flow of this kind for data of the given resolution, with the default schedule.

        What the data layer uses to scale values (:meth:`from_levels`, :meth:`from_unit`) before a model exists.
        ``num_bins`` applies to discretised data (default ``num_levels``, one bin per grey level), ``num_classes``
        to discrete data; ``ValueError`` (naming ``source``) when an argument does not apply to this kind.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Flow) and type(self) is type(other) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.config().items()))))

    # ------------------------------------------------------------------------------------------------ shapes
    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one example's SDE state (and network input)."""
        return data_shape if self.input_channels == 1 else (*data_shape, self.input_channels)

    def output_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the network output for one example."""
        return data_shape if self.output_channels == 1 else (*data_shape, self.output_channels)

    def state_mask(self, mask: Tensor) -> Tensor:
        """A per-element ``mask`` of shape ``(B, *S)`` shaped to broadcast against states (and ``x0`` predictions)."""
        return mask if self.input_channels == 1 else mask.unsqueeze(-1)

    # ---------------------------------------------------------------------------------------------- schedule
    @abstractmethod
    def beta(self, tau: Tensor) -> Tensor:
        """Accuracy schedule ``beta(tau)`` (float64; ``beta(0) = 0``)."""

    def step_accuracies(self, steps: int) -> Tensor:
        """n-step sender accuracies ``alpha_i = beta(i/n) - beta((i-1)/n)``, ``i = 1..n`` (float64)."""
        i = torch.arange(steps + 1, dtype=torch.float64)
        return torch.diff(self.beta(i / steps))

    # ----------------------------------------------------------------------------------------------- data
    @abstractmethod
    def check_data(self, x: Tensor, data_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` is not a valid batch of this kind's data."""

    def normalise_data(self, x: Tensor) -> Tensor:
        """A checked data batch in the one dtype the maths uses (discrete: class indices as ``torch.long``)."""
        return x

    @abstractmethod
    def data_in_state_space(self, x: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """``x0`` of the state SDE for data ``x`` (continuous / discretised ``x``; discrete ``K e_x - 1``)."""

    @abstractmethod
    def from_unit(self, v: Tensor) -> Tensor:
        """Intensities ``v`` in [0, 1] as this flow's data (continuous ``2v - 1``; discretised the bin centre of
        ``2v - 1``; discrete the class ``k`` of the interval ``[k/K, (k+1)/K)``, ``v = 1`` in the last)."""

    @abstractmethod
    def to_unit(self, x: Tensor) -> Tensor:
        """Data (or samples) as floats in [0, 1] for display: continuous ``(x + 1)/2`` clamped; discrete ``k/(K-1)``."""

    @abstractmethod
    def from_levels(self, levels: Tensor, num_levels: int) -> Tensor:
        """Raw integer grey levels ``0 .. num_levels - 1`` (any shape) as this flow's data (how data sets scale)."""

    @abstractmethod
    def fill_known(self, known: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
        """Known data values with a valid placeholder where ``mask`` is False (floating kinds cast to ``dtype``).

        ``ValueError`` naming the dtype when ``known`` is not of this kind's data type (floats / class indices).
        """

    # -------------------------------------------------------------------------------------- flow & network
    @abstractmethod
    def prior_state(self, batch: int, data_shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> Tensor:
        """The prior's state (continuous ``mu = 0``; discrete ``z = 0``, i.e. uniform ``theta``)."""

    @abstractmethod
    def flow_state(
        self,
        x: Tensor,
        tau: Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw the state from the Bayesian flow distribution ``p_F(. | x; tau)`` (closed form).

        ``dtype`` is the floating dtype of the state (continuous data keep their own dtype).
        """

    @abstractmethod
    def net_input(self, state: Tensor) -> Tensor:
        """What the network sees for a state (continuous ``mu``; discrete ``theta = softmax(z)``)."""

    @abstractmethod
    def data_prediction(self, net_out: Tensor, state: Tensor, tau: Tensor, clip: bool | None = None) -> Tensor:
        """The network's estimate of ``E[x0 | state]`` in state space (the samplers' ``x0_hat``).

        Continuous: ``x_hat``, clipped to [-1, 1] when ``clip`` (``None``: the flow's setting); discretised: the
        output mean ``k_hat``; discrete: ``K e_hat - 1`` (both in range already, so ``clip`` changes nothing).
        """

    @abstractmethod
    def decode_prediction(self, x0: Tensor) -> Tensor:
        """Samples from a final data prediction ``x0`` (the ``final="drop"`` rule): continuous ``x0``; discretised
        the centre of the bin holding ``k_hat``; discrete the argmax of ``e_hat`` (class indices)."""

    # ---------------------------------------------------------------------------------------------- losses
    @abstractmethod
    def continuous_time_loss(self, net_out: Tensor, x: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """Single-sample estimate of the integrand of ``L_inf`` at ``tau ~ U(0, 1)``, summed per example."""

    @abstractmethod
    def discrete_time_loss(
        self,
        net_out: Tensor,
        x: Tensor,
        state: Tensor,
        tau: Tensor,
        alpha: Tensor,
        steps: int,
        generator: torch.Generator | None = None,
        mc_samples: int = 1,
    ) -> Tensor:
        """Estimate of ``L_n``: ``n KL(sender || receiver)`` at step ``i`` (``tau = (i-1)/n``), per example."""

    @abstractmethod
    def reconstruction_loss(self, net_out: Tensor, x: Tensor, state: Tensor) -> Tensor:
        """``-log p_O(x | params, tau = 1)`` per example (state drawn from ``p_F(. | x; 1)``)."""

    # ------------------------------------------------------------------------------------------- samplers
    @abstractmethod
    def sampler_step(
        self,
        net_out: Tensor,
        state: Tensor,
        tau: Tensor,
        accuracy: Tensor,
        generator: torch.Generator | None,
        **options: Any,
    ) -> Tensor:
        """One step of the original BFN sampler: draw a sender sample from the receiver, then update."""

    @abstractmethod
    def sample_output(
        self,
        net_out: Tensor,
        state: Tensor,
        generator: torch.Generator | None,
        mode: bool = False,
        clip: bool | None = None,
    ) -> Tensor:
        """Final samples from the output distribution at ``tau = 1`` in data space (the ``final="denoise"`` rule).

        Continuous: ``x_hat`` (``clip`` as in :meth:`data_prediction`); discretised and discrete: a draw from
        ``p_O``, or its mode with ``mode=True``.
        """

    @abstractmethod
    def moments(self, data_shape: tuple[int, ...], data_mean: Any, data_var: Any) -> tuple[Tensor, Tensor]:
        """Mean and variance per element of ``x0`` (float64, shape ``state_shape``) from data statistics, for the
        moment-matched start ``init="moment"``; ``ValueError`` for statistics that do not fit this kind."""

    @classmethod
    @abstractmethod
    def check_sampler_options(cls, clip: bool | None, data_mean: Any, data_var: Any) -> None:
        """``ValueError`` for a solver option that means nothing for this kind: ``clip`` (continuous data only), or
        the statistics of ``init="moment"`` (``data_mean`` given: whether ``data_var`` must or must not be)."""

    # --------------------------------------------------------------------------------------- conditioning
    @abstractmethod
    def certain_state(self, known: Tensor, tau: Tensor, state: Tensor) -> Tensor:
        """The most confident state the network can be shown for known data at ``tau``, shaped like ``state``.

        Discrete: the one-hot belief ``theta = e_x``; continuous / discretised: the noise-free flow mean
        ``gamma(tau) x`` (see :mod:`bfn.sampling.conditioning`).
        """

    @abstractmethod
    def known_output(self, out: Tensor, state: Tensor, known: Tensor, mask: Tensor, tau: Tensor) -> Tensor:
        """The network output ``out`` with the elements under ``mask`` replaced by an output that predicts ``known``."""

    @abstractmethod
    def guide(self, out_c: Tensor, out_u: Tensor, scale: float) -> Tensor:
        """Classifier-free guidance: combine the conditional and unconditional outputs with ``scale`` ``s``."""

    # ----------------------------------------------------------------------------------------- likelihood
    def decoder_log_ratio(
        self, x: Tensor, state: Tensor, log_r: Tensor, net_out: Callable[[], Tensor]
    ) -> tuple[Tensor, int]:
        """``log p_dec(x | state) - log r(state | x)`` per row of the PF-ODE bound, and the network calls made.

        The default decoder is the output distribution at ``tau = 1`` (the reconstruction term; one call of
        ``net_out``, which returns the float64 network output at ``tau = 1`` for ``state``); docs/likelihood.md 6.4.
        """
        log_dec = -as_f64(self.reconstruction_loss(net_out(), x, state))
        return log_dec - log_r, 1

    # --------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _check_finite(x: Tensor, what: str = "data") -> None:
        if x.is_floating_point() and not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise ValueError(f"{what} contains {bad} NaN or Inf value(s)")

    @staticmethod
    def _check_shape(x: Tensor, expected: tuple[int, ...], what: str = "data") -> None:
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != tuple(expected):
            raise ValueError(
                f"{what} has shape {tuple(x.shape)}; expected (batch, {', '.join(map(str, expected))})"
                if expected
                else f"{what} has shape {tuple(x.shape)}; expected (batch,)"
            )


LOG_2PI = math.log(2.0 * math.pi)
