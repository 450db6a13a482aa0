"""Sampler options: one frozen, typed object per sampler family, with its defaults and its validation.

:func:`bfn.sampling.sample` takes the options as keyword arguments and parses them once, before any network call,
into the options object of the sampler's family (:attr:`bfn.sampling.SamplerSpec.options`):

* :class:`SamplerOptions`: what every sampler takes (``mode``, ``callback``, ``trajectory``);
* :class:`OriginalOptions`: the original BFN sampler (``categorical`` on top);
* :class:`SolverOptions`: every solver that starts at ``t = 1 - eta`` (``grid``, ``eta``, ``init``, ``final``,
  ``clip``, ``data_mean``, ``data_var`` on top);
* :class:`HSolverOptions`: the path-integral ``h-solver`` (``h`` and ``order`` on top of the solvers').

Each field carries its type (``Literal`` for string choices), its default and its check; :meth:`SamplerOptions.parse`
applies them with a ``ValueError`` naming the valid choices, and :meth:`SamplerOptions.defaults` lists them (e.g.
``SolverOptions.defaults()["grid"]``, or ``SAMPLERS[name].defaults()``). What depends on the data kind (``clip``,
the statistics of ``init="moment"``, the default ``eta``) is checked and filled in by the flow
(:meth:`SamplerOptions.for_flow`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal, get_args

from torch import Tensor

from bfn._checks import check_eta

if TYPE_CHECKING:
    from typing_extensions import Self

    from bfn.flows.base import Flow

FinalRule = Literal["drop", "denoise"]
InitRule = Literal["zero", "moment"]
GridRule = Literal["uniform", "logsnr", "tuned"]
Order = Literal[1, 2, 3]
Callback = Callable[[dict[str, Any]], None]
Statistic = float | Sequence[float] | Tensor | None
Check = Callable[[Any, str], None]


# ------------------------------------------------------------------------------------------------- checks
def _choice(rule: Any, allow_tensor: bool = False) -> Check:
    choices = get_args(rule)

    def check(value: Any, sampler: str) -> None:
        if allow_tensor and isinstance(value, Tensor):
            return
        if not isinstance(value, str) or value not in choices:
            extra = " or a tensor" if allow_tensor else ""
            raise ValueError(
                f"invalid option value {value!r} for sampler {sampler!r}; expected one of {choices}{extra}"
            )

    return check


def _boolean(key: str) -> Check:
    def check(value: Any, sampler: str) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"option {key} must be True or False, got {value!r}")

    return check


def _check_eta(value: Any, sampler: str) -> None:
    if value is not None:
        check_eta(value)


def _check_h(value: Any, sampler: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"h must be a finite number >= 0 (0 = probability-flow ODE, 1 = reverse SDE), got {value!r}")


def _check_order(value: Any, sampler: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in get_args(Order):
        raise ValueError(f"order must be 1, 2 or 3, got {value!r}")


def _check_clip(value: Any, sampler: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"clip must be None (the flow's setting), True or False, got {value!r}")


def _check_callback(value: Any, sampler: str) -> None:
    if value is not None and not callable(value):
        raise ValueError(f"callback must be callable (it receives one dict per step), got {type(value).__name__}")


def _check_statistic(value: Any, sampler: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (Real, Tensor, list, tuple))):
        raise ValueError(f"data_mean / data_var must be numbers, sequences or tensors, got {type(value).__name__}")


def checked(check: Check) -> dict[str, Check]:
    """Field metadata naming an option's check (``check(value, sampler_name)`` raises ``ValueError``)."""
    return {"check": check}


# ------------------------------------------------------------------------------------------------ families
@dataclass(frozen=True)
class SamplerOptions:
    """The options every sampler takes.

    Attributes:
        mode: with a final call at ``tau = 1``, return the mode of the output distribution instead of a draw.
        callback: called with one dict per step (``step``, ``t``, ``x0_hat``, ``x``, ``t_next``, ``nfe``).
        trajectory: also return those dicts (``SampleOutput.trajectory``).
    """

    mode: bool = field(default=False, metadata=checked(_boolean("mode")))
    callback: Callback | None = field(default=None, metadata=checked(_check_callback))
    trajectory: bool = field(default=False, metadata=checked(_boolean("trajectory")))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option of this family with its default (``eta=None``: the data kind's default)."""
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def parse(cls, sampler: str, given: Mapping[str, Any]) -> Self:
        """The options of sampler ``sampler`` from keyword arguments ``given`` (the rest default), checked.

        ``ValueError`` for an unknown option (naming the valid ones) or an invalid value (naming the valid choices).
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for sampler {sampler!r}; valid options: {sorted(names)}")
        options = cls(**given)
        for f in fields(cls):
            f.metadata["check"](getattr(options, f.name), sampler)
        options._check_together(given)
        return options

    def _check_together(self, given: Mapping[str, Any]) -> None:
        """Checks of options that depend on each other (``given``: what the caller set)."""

    def for_flow(self, flow: type[Flow] | Flow) -> Self:
        """These options checked against the data kind of ``flow`` and completed with its defaults."""
        return self

    @property
    def final_rule(self) -> FinalRule:
        """How the run ends: the original sampler always makes a last call at ``tau = 1`` (``"denoise"``)."""
        return "denoise"

    @property
    def prediction_clip(self) -> bool | None:
        """The clip override of the data prediction (``None``: the flow's setting)."""
        return None


@dataclass(frozen=True)
class OriginalOptions(SamplerOptions):
    """Options of the original BFN sampler (Graves et al., 2023), which starts from the prior at ``tau = 0``.

    Attributes:
        categorical: the receiver's guess is a class / bin drawn from the output distribution (the paper's);
            ``False``: its mean (then the sampler is exactly SDE-BFN-Solver1 / SDE-BFN-Solver++1).
    """

    categorical: bool = field(default=True, metadata=checked(_boolean("categorical")))


@dataclass(frozen=True)
class SolverOptions(SamplerOptions):
    """Options of every solver that starts at ``t = 1 - eta`` (docs/solvers.md 4).

    Attributes:
        grid: ``"uniform"`` in ``t`` (the paper's), ``"logsnr"`` (uniform in ``lambda``), ``"tuned"``
            (:func:`bfn.sampling.auto.tuned_grid`) or a decreasing tensor of solver times.
        eta: the grid starts at ``t = 1 - eta``; ``None``: the data kind's default (``flow.sampling.eta``).
        init: ``"zero"`` (``N(0, sigma^2 I)``), ``"moment"`` (moment-matched Gaussian from ``data_mean`` /
            ``data_var``) or an explicit initial state.
        final: ``"drop"`` (return the last data prediction) or ``"denoise"`` (one more call at ``tau = 1``).
        clip: clip the continuous ``x_hat`` to [-1, 1] at every call (``None``: the flow's setting).
        data_mean, data_var: data statistics of ``init="moment"``.
    """

    grid: GridRule | Tensor = field(default="uniform", metadata=checked(_choice(GridRule, allow_tensor=True)))
    eta: float | None = field(default=None, metadata=checked(_check_eta))
    init: InitRule | Tensor = field(default="zero", metadata=checked(_choice(InitRule, allow_tensor=True)))
    final: FinalRule = field(default="drop", metadata=checked(_choice(FinalRule)))
    clip: bool | None = field(default=None, metadata=checked(_check_clip))
    data_mean: Statistic = field(default=None, metadata=checked(_check_statistic))
    data_var: Statistic = field(default=None, metadata=checked(_check_statistic))

    def _check_together(self, given: Mapping[str, Any]) -> None:
        if "mode" in given and self.final != "denoise":
            raise ValueError("mode applies to final='denoise' (the draw from the output distribution at tau = 1)")
        moment = isinstance(self.init, str) and self.init == "moment"
        if not moment and (self.data_mean is not None or self.data_var is not None):
            raise ValueError("data_mean / data_var are used only with init='moment'")
        if moment and self.data_mean is None:
            raise ValueError("init='moment' needs data_mean (and, for continuous or discretised data, data_var)")
        if isinstance(self.grid, Tensor) and self.eta is not None:
            raise ValueError("give either an explicit grid tensor or eta, not both (the grid fixes the start time)")

    def for_flow(self, flow: type[Flow] | Flow) -> Self:
        """Checks ``clip`` and the moment statistics with the flow; ``eta=None`` becomes the kind's default."""
        flow.check_sampler_options(self.clip, self.data_mean, self.data_var)
        if isinstance(self.grid, str) and self.grid in flow.sampling.refused_grids:
            raise ValueError(flow.sampling.refused_grids[self.grid])
        return self if self.eta is not None else replace(self, eta=flow.sampling.eta)  # unused by a grid tensor

    @property
    def final_rule(self) -> FinalRule:
        """``final``."""
        return self.final

    @property
    def prediction_clip(self) -> bool | None:
        """``clip``."""
        return self.clip


@dataclass(frozen=True)
class HSolverOptions(SolverOptions):
    """Options of the path-integral ``h-solver`` (Hirono et al., 2024): those of :class:`SolverOptions` and

    Attributes:
        h: the noise-variance dial, ``h >= 0`` (0 = probability-flow ODE, 1 = reverse SDE).
        order: the multistep order, 1-3.
    """

    h: float = field(default=0.5, metadata=checked(_check_h))
    order: Order = field(default=2, metadata=checked(_check_order))
