"""Abstract interfaces shared by the three data kinds: the flow (BFN maths) and its linear SDE (solver maths)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

FlowKind = Literal["continuous", "discretised", "discrete"]


def as_f64(value: Tensor | float, device: torch.device | str | None = None) -> Tensor:
    """A float64 tensor of ``value`` (schedules are always evaluated in float64)."""
    if isinstance(value, Tensor):
        return value.to(dtype=torch.float64, device=device if device is not None else value.device)
    return torch.tensor(value, dtype=torch.float64, device=device)


def expand_like(coef: Tensor, like: Tensor, trailing: int = 0) -> Tensor:
    """Cast a per-example (or scalar) coefficient to ``like``'s dtype and shape it to broadcast against it.

    ``coef`` has shape ``()`` or ``(B,)``; the result has shape ``(B, 1, ..., 1)`` matching ``like.ndim``.
    """
    coef = coef.to(dtype=like.dtype, device=like.device)
    if coef.ndim == 0:
        return coef
    return coef.reshape(coef.shape + (1,) * (like.ndim - coef.ndim))


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
    """The Bayesian-flow maths of one data kind (Graves et al., 2023).

    A flow owns the accuracy schedule, Bayesian updates, the Bayesian flow distribution, the output, sender and
    receiver distributions, the three losses, and the linear-SDE view (``self.sde``) used by the fast samplers.
    Schedules are evaluated in float64 and cast to the data dtype at the network boundary.

    Conventions: ``tau`` is BFN time (per example, shape ``(B,)``); *params* are the input-distribution
    parameters the network sees (continuous: the mean ``mu``; discrete: probabilities ``theta``); the *state* is
    what the SDE evolves (continuous: ``mu``; discrete: logits ``z`` with ``theta = softmax(z)``).
    """

    kind: ClassVar[FlowKind]
    sde: LinearSDE
    #: channels per data element in the network's input / output (a trailing dim exists iff channels > 1)
    input_channels: int
    output_channels: int

    # ----------------------------------------------------------------------------------------- configuration
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-able dict; ``type(flow)(**flow.config())`` rebuilds it."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config() == other.config()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.config().items()))))

    # ------------------------------------------------------------------------------------------------ shapes
    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one example's SDE state (and network input)."""
        return data_shape if self.input_channels == 1 else (*data_shape, self.input_channels)

    def output_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the network output for one example."""
        return data_shape if self.output_channels == 1 else (*data_shape, self.output_channels)

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
    def data_prediction(self, net_out: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """The network's estimate of ``E[x0 | state]`` in state space (the samplers' ``x0_hat``).

        Continuous: ``x_hat``; discretised: the output mean ``k_hat``; discrete: ``K e_hat - 1``.
        """

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

    # ------------------------------------------------------------------------------------ original sampler
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
        self, net_out: Tensor, state: Tensor, generator: torch.Generator | None, mode: bool = False
    ) -> Tensor:
        """Final samples from the output distribution at ``tau = 1`` in data space."""

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
