"""Options of the likelihood computations: one frozen, typed object per concern, with its defaults and its checks.

* :class:`ODEOptions`: how an ODE is solved (``solver``, ``rtol``, ``atol``, ``steps``, ``variable``); every
  function that integrates one (:func:`~bfn.likelihood.integrate`, :func:`~bfn.likelihood.pf_ode_logp`,
  :func:`~bfn.likelihood.wkb_first_order` and the BFN functions built on them) takes it as ``ode=``.
* :class:`TraceOptions`: how the divergence of the score is taken (``method``, ``probes``), ``trace=`` of the
  PF-ODE log-density.
* :class:`StartOptions`: where a BFN's PF-ODE starts (``eta``, ``prior``), i.e. which sampler's model is evaluated;
  ``start=`` of the BFN functions.
* :class:`EncoderOptions`: the Monte-Carlo average over the encoder ``r(.|x)`` (``samples``, ``antithetic``),
  ``encoder=`` of the data-level bounds :func:`~bfn.likelihood.pf_ode_nll` and
  :func:`~bfn.likelihood.wkb_correction`.

Each object checks its fields when it is made (``ValueError`` naming the field), so bad options fail before any
network call; the functions pass the objects down unchanged. Change one field of a default with
:func:`dataclasses.replace`, e.g. ``replace(WKB_ODE, rtol=1e-4)``. What depends on the flow (the default ``eta``
and its lower limit) is resolved by :meth:`StartOptions.t_max`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from bfn._checks import MAX_REPEATS, MAX_STEPS, check_bool, check_eta, check_int, check_real
from bfn.flows.base import Flow
from bfn.likelihood.sdes import GaussianPrior

SolverName = Literal["rk45", "fixed"]
"""``"rk45"``: adaptive Dormand-Prince 5(4) with per-example steps; ``"fixed"``: classic RK4 with equal steps."""
Variable = Literal["auto", "t", "lambda"]
"""Integration variable: solver time ``t``, half log-SNR ``lambda``, or ``"auto"`` (``lambda`` when finite)."""
TraceMethod = Literal["auto", "exact", "hutchinson"]
"""Divergence by the exact trace of the score Jacobian, Hutchinson's estimator, or ``"auto"`` (by dimension)."""

LogDensityFn = Callable[[Tensor], Tensor]
"""A log-density ``log pi(x)``: ``(B, *shape)`` -> ``(B,)``, differentiable in ``x``."""

Prior = Literal["gaussian"] | LogDensityFn
"""``"gaussian"`` (``N(0, sigma_{t_max}^2 I)``) or a log-density of the state at ``t_max``: ``(B, *state) -> (B,)``."""

MAX_EXACT_DIM = 16
"""``TraceOptions(method="auto")`` takes the exact trace (the full ``D x D`` score Jacobian) up to this state
dimension."""


def _choice(value: Any, name: str, rule: Any) -> None:
    choices = get_args(rule)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _set(options: object, field: str, value: Any) -> None:
    """Store a checked (normalised) value on a frozen options object."""
    object.__setattr__(options, field, value)


@dataclass(frozen=True)
class ODEOptions:
    """How an ODE is solved (docs/likelihood.md 5).

    Attributes:
        solver: ``"rk45"`` (adaptive Dormand-Prince 5(4), per-example steps) or ``"fixed"`` (RK4, ``steps`` steps).
        rtol, atol: tolerances of the adaptive solver, in (0, 1) (``1e-5`` as in Hirono et al.'s code; ``1e-7`` or
            below for reference values). ``atol`` applies to the state in units of its marginal scale ``kappa_t``
            (:class:`~bfn.likelihood.pf_ode.Clock`) and to the accumulated log-density in nats.
        steps: steps of the fixed solver (``4 * steps`` evaluations).
        variable: integrate in solver time ``"t"``, in the half log-SNR ``"lambda"`` (removes the ``1/(1 - t)``
            stiffness of the BFN schedules at the noise end) or ``"auto"`` (``lambda`` when it is finite at both
            ends, which it always is for the BFN flows; ``t`` for e.g. a VE SDE started at ``t0 = 0``).
    """

    solver: SolverName = "rk45"
    rtol: float = 1e-5
    atol: float = 1e-5
    steps: int = 100
    variable: Variable = "auto"

    def __post_init__(self) -> None:
        _choice(self.solver, "ODEOptions.solver", SolverName)
        _set(self, "rtol", check_real(self.rtol, "ODEOptions.rtol", 0.0, 1.0, low_open=True, high_open=True))
        _set(self, "atol", check_real(self.atol, "ODEOptions.atol", 0.0, 1.0, low_open=True, high_open=True))
        _set(self, "steps", check_int(self.steps, "ODEOptions.steps", 1, MAX_STEPS))
        _choice(self.variable, "ODEOptions.variable", Variable)


@dataclass(frozen=True)
class TraceOptions:
    """How the divergence of the score is taken in the PF-ODE log-density (docs/likelihood.md 5).

    Attributes:
        method: ``"exact"`` trace (the full ``D x D`` Jacobian of the score per evaluation; small ``D``),
            ``"hutchinson"`` (``probes`` Rademacher vectors, fixed along each trajectory, one VJP each: unbiased,
            for images and text) or ``"auto"`` (exact up to ``D =`` :data:`MAX_EXACT_DIM`; ``D`` counts classes for
            discrete data).
        probes: Hutchinson probes per example (``>= 2`` gives a probe standard error).
    """

    method: TraceMethod = "auto"
    probes: int = 1

    def __post_init__(self) -> None:
        _choice(self.method, "TraceOptions.method", TraceMethod)
        _set(self, "probes", check_int(self.probes, "TraceOptions.probes", 1, MAX_REPEATS))

    def resolve(self, dim: int) -> Literal["exact", "hutchinson"]:
        """The method used for a state of dimension ``dim`` (``"auto"``: exact up to :data:`MAX_EXACT_DIM`)."""
        if self.method == "auto":
            return "exact" if dim <= MAX_EXACT_DIM else "hutchinson"
        return self.method


@dataclass(frozen=True)
class StartOptions:
    """Where a BFN's probability-flow ODE starts: the density ``prior`` at ``t_max = 1 - eta`` (docs/likelihood.md
    6.4).

    Attributes:
        eta: truncation ``t_max = 1 - eta``, in (0, 1); ``None``: the kind's default ``flow.sampling.eta``
            (:data:`bfn.flows.DEFAULT_ETA`: 1e-2 continuous and discretised, 1e-3 discrete, as the samplers). Use
            the ``eta`` of the sampler you evaluate; it must be at least the flow's ``min_eta``.
        prior: ``"gaussian"`` (the samplers' start ``N(0, sigma_{t_max}^2 I)``) or a log-density of the state at
            ``t_max`` (e.g. the exact marginal, for tests).
    """

    eta: float | None = None
    prior: Prior = "gaussian"

    def __post_init__(self) -> None:
        if self.eta is not None:
            _set(self, "eta", check_eta(self.eta, "StartOptions.eta"))
        if not callable(self.prior) and not (isinstance(self.prior, str) and self.prior == "gaussian"):
            raise ValueError(
                f"StartOptions.prior must be 'gaussian' or a callable log-density of the state, got {self.prior!r}"
            )

    def t_max(self, flow: Flow) -> float:
        """``1 - eta`` with ``eta`` or the kind's default; ``ValueError`` below the flow's ``min_eta`` (the
        ``x_hat`` cut-off of the Gaussian kinds)."""
        if self.eta is None:
            return 1.0 - flow.sampling.eta
        if self.eta < flow.min_eta:
            cut = flow.min_eta
            raise ValueError(
                f"StartOptions.eta must be >= {cut} for {flow.kind} data (the flow sets x_hat = 0 below tau = {cut})"
            )
        return 1.0 - self.eta

    def log_prior(self, flow: Flow) -> LogDensityFn:
        """The log-density at ``t_max``: ``N(0, sigma_{t_max}^2 I)`` of ``flow.sde`` for ``"gaussian"``, else
        ``prior``."""
        t_max = self.t_max(flow)
        if callable(self.prior):
            return self.prior
        sigma = float(flow.sde.sigma(torch.tensor(t_max, dtype=torch.float64)))
        return GaussianPrior(0.0, sigma**2)


@dataclass(frozen=True)
class EncoderOptions:
    """The Monte-Carlo average over the encoder ``z ~ r(.|x)`` of the BFN bounds (docs/likelihood.md 6.4).

    Attributes:
        samples: draws of ``z`` per example (``>= 2`` gives the standard error over draws).
        antithetic: pair each draw with its mirror image about the encoder mean (an unbiased variance reduction,
            lower variance for a smooth ``l_0``).
    """

    samples: int = 1
    antithetic: bool = False

    def __post_init__(self) -> None:
        _set(self, "samples", check_int(self.samples, "EncoderOptions.samples", 1, MAX_REPEATS))
        _set(self, "antithetic", check_bool(self.antithetic, "EncoderOptions.antithetic"))


DEFAULT_ODE = ODEOptions()
"""The ODE options of the PF-ODE log-density and bound (:func:`~bfn.likelihood.pf_ode_nll`)."""
WKB_ODE = ODEOptions(rtol=1e-6, atol=1e-6, steps=200)
"""The ODE options of the WKB correction: tighter, because its sweep differentiates the density twice."""
DEFAULT_TRACE = TraceOptions()
"""Exact trace up to :data:`MAX_EXACT_DIM`, one Hutchinson probe above."""
DEFAULT_START = StartOptions()
"""The samplers' start: ``N(0, sigma_{t_max}^2 I)`` at ``t_max = 1 - eta`` with the kind's default ``eta``."""
DEFAULT_ENCODER = EncoderOptions()
"""One encoder draw per example."""

_OPTION_TYPES: dict[str, type] = {
    "ode": ODEOptions,
    "trace": TraceOptions,
    "start": StartOptions,
    "encoder": EncoderOptions,
}


def check_options(**given: object) -> None:
    """``ValueError`` unless each of ``ode=``, ``trace=``, ``start=``, ``encoder=`` given is of its options type."""
    for name, value in given.items():
        expected = _OPTION_TYPES[name]
        if not isinstance(value, expected):
            raise ValueError(f"{name} must be a bfn.likelihood.{expected.__name__}, got {type(value).__name__}")
