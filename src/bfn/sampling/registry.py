"""The registry of samplers: names (as in the papers) mapped to step functions, orders, costs and options."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from numbers import Real
from typing import Any, Literal, TypedDict

from torch import Tensor

from bfn.flows.base import FlowKind
from bfn.sampling import discrete, exponential, original
from bfn.sampling.engine import Method, StepFn
from bfn.time import DEFAULT_ETA

FinalRule = Literal["drop", "denoise"]
InitRule = Literal["zero", "moment"]
GridRule = Literal["uniform", "logsnr", "tuned"]


class SamplerOptions(TypedDict, total=False):
    """Every option :func:`bfn.sampling.sample` accepts (each sampler takes a subset; see ``SamplerSpec.defaults``)."""

    grid: GridRule | Tensor
    eta: float | None
    init: InitRule | Tensor
    final: FinalRule
    mode: bool
    clip: bool | None
    data_mean: float | Sequence[float] | Tensor | None
    data_var: float | Sequence[float] | Tensor | None
    callback: Callable[[dict[str, Any]], None] | None
    trajectory: bool
    categorical: bool
    h: float
    order: Literal[1, 2, 3]


KINDS: tuple[FlowKind, ...] = ("continuous", "discretised", "discrete")
CONTINUOUS_KINDS: tuple[FlowKind, ...] = ("continuous", "discretised")


SOLVER_OPTIONS: dict[str, Any] = {
    "grid": "uniform",
    "eta": None,
    "init": "zero",
    "final": "drop",
    "mode": False,
    "clip": None,
    "data_mean": None,
    "data_var": None,
    "callback": None,
    "trajectory": False,
}
"""Options of every solver that starts at ``t = 1 - eta``, with their defaults (see :func:`bfn.sampling.sample`)."""

PRIOR_START_OPTIONS: dict[str, Any] = {"mode": False, "callback": None, "trajectory": False}
"""Options of the original sampler, which starts from the prior at ``tau = 0`` and ends with a call at ``tau = 1``."""


def _never(options: Mapping[str, Any]) -> bool:
    return False


def _always(options: Mapping[str, Any]) -> bool:
    return True


def _positive_h(options: Mapping[str, Any]) -> bool:
    return options["h"] > 0


@dataclass(frozen=True)
class SamplerSpec:
    """How to run one named sampler.

    Attributes:
        summary: one line: the algorithm and its source.
        steps: the step function per supported flow kind.
        order: order of the method (``None``: taken from the ``order`` option).
        multistep: whether the step reuses stored predictions (the loop then warms up with lower orders).
        nfe_per_step: network calls per step.
        params: fixed keyword arguments bound to the step function (e.g. ``h = 0`` for the ODE presets).
        options: sampler-specific user options with their defaults; all but ``order`` are bound to the step.
        noise: whether, given the resolved options, the loop draws a standard normal tensor every step.
        prior_start: start from the prior at ``tau = 0`` on the grid ``tau_i = i/n`` and finish with a call at
            ``tau = 1`` (the original sampler) instead of starting at ``t = 1 - eta``.
    """

    summary: str
    steps: Mapping[FlowKind, StepFn]
    order: int | None = 1
    multistep: bool = False
    nfe_per_step: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    noise: Callable[[Mapping[str, Any]], bool] = _never
    prior_start: bool = False

    @property
    def kinds(self) -> tuple[FlowKind, ...]:
        """The data kinds this sampler supports."""
        return tuple(self.steps)

    def defaults(self) -> dict[str, Any]:
        """All the options this sampler accepts, with their defaults (``eta=None``: the kind's default)."""
        common = PRIOR_START_OPTIONS if self.prior_start else SOLVER_OPTIONS
        return {**common, **self.options}

    def method(self, kind: FlowKind, options: Mapping[str, Any]) -> Method:
        """The step function for ``kind`` with its parameters bound, as the loop drives it."""
        bound = {k: options[k] for k in self.options if k != "order"}
        order = options["order"] if self.order is None else self.order
        step = partial(self.steps[kind], **self.params, **bound) if self.params or bound else self.steps[kind]
        return Method(step=step, order=order, multistep=self.multistep, noise=self.noise(options))

    def nfe(self, steps: int, final: FinalRule = "drop") -> int:
        """Network calls for ``steps`` steps: ``n + 1`` for the original sampler; ``k (n - 1) + 1`` with
        ``final="drop"`` and ``k n + 1`` with ``final="denoise"`` for a solver making ``k`` calls per step."""
        if self.prior_start:
            return steps + 1
        return self.nfe_per_step * (steps - 1) + 1 if final == "drop" else self.nfe_per_step * steps + 1


_lambda_multistep = {kind: exponential.multistep_step for kind in CONTINUOUS_KINDS}

SAMPLERS: dict[str, SamplerSpec] = {
    "bfn": SamplerSpec(
        summary="original BFN sampler (Graves et al., 2023): Bayesian updates with sender samples, n + 1 calls",
        steps={kind: original.bfn_step for kind in KINDS},
        options={"categorical": True},
        prior_start=True,
    ),
    "bfn-solver1": SamplerSpec(
        summary="first-order PF-ODE solver: continuous noise form (DPM-Solver-1); discrete Algorithm 6 (in t)",
        steps={
            "continuous": exponential.noise_first_order_step,
            "discretised": exponential.noise_first_order_step,
            "discrete": discrete.ode_multistep_step,
        },
    ),
    "bfn-solver++1": SamplerSpec(
        summary="first-order PF-ODE solver, data form (Xue et al., Algorithm 1; DPM-Solver++1)",
        steps=_lambda_multistep,
        params={"h": 0.0},
    ),
    "bfn-solver++2": SamplerSpec(
        summary="second-order multistep PF-ODE solver (Xue et al., Algorithm 2; DPM-Solver++(2M))",
        steps=_lambda_multistep,
        order=2,
        multistep=True,
        params={"h": 0.0, "weights": exponential.midpoint_weights},
    ),
    "bfn-solver++3": SamplerSpec(
        summary="third-order multistep PF-ODE solver (DPM-Solver++(3M) with D2 = 2 (D1_0 - D1_1)/(r0 + r1))",
        steps=_lambda_multistep,
        order=3,
        multistep=True,
        params={"h": 0.0},
    ),
    "bfn-solver++2s": SamplerSpec(
        summary="second-order single-step PF-ODE solver (DPM-Solver++(2S), r1 = 1/2), 2 calls per step",
        steps={kind: exponential.singlestep2_step for kind in CONTINUOUS_KINDS},
        order=2,
        nfe_per_step=2,
    ),
    "bfn-solver++3s": SamplerSpec(
        summary="third-order single-step PF-ODE solver (DPM-Solver++(3S), r = 1/3, 2/3), 3 calls per step",
        steps={kind: exponential.singlestep3_step for kind in CONTINUOUS_KINDS},
        order=3,
        nfe_per_step=3,
    ),
    "bfn-solver++pc": SamplerSpec(
        summary="second-order multistep PF-ODE predictor with a third-order corrector (UniPC-style), no extra calls",
        steps={kind: exponential.predictor_corrector_step for kind in CONTINUOUS_KINDS},
        order=3,
        multistep=True,
        params={"h": 0.0},
    ),
    "sde-bfn-solver++1": SamplerSpec(
        summary="first-order reverse-SDE solver = BFN Bayesian update with the mean prediction (Xue et al., Prop 4.2)",
        steps=_lambda_multistep,
        params={"h": 1.0},
        noise=_always,
    ),
    "sde-bfn-solver++2": SamplerSpec(
        summary="second-order multistep reverse-SDE solver (Xue et al., Algorithm 3; SDE-DPM-Solver++(2M) midpoint)",
        steps=_lambda_multistep,
        order=2,
        multistep=True,
        params={"h": 1.0, "weights": exponential.midpoint_weights},
        noise=_always,
    ),
    "bfn-solver2": SamplerSpec(
        summary="second-order multistep PF-ODE solver in t for discrete data (Xue et al., Algorithm 7)",
        steps={"discrete": discrete.ode_multistep_step},
        order=2,
        multistep=True,
    ),
    "bfn-solver2s": SamplerSpec(
        summary="second-order single-step (midpoint in t) PF-ODE solver for discrete data, 2 calls per step",
        steps={"discrete": discrete.ode_midpoint_step},
        order=2,
        nfe_per_step=2,
    ),
    "bfn-solver3": SamplerSpec(
        summary="third-order multistep PF-ODE solver in t for discrete data (ODE-3M, derived)",
        steps={"discrete": discrete.ode_multistep_step},
        order=3,
        multistep=True,
    ),
    "sde-bfn-solver1": SamplerSpec(
        summary="first-order reverse-SDE solver for discrete data = BFN update with p_hat (Xue et al., Algorithm 4)",
        steps={"discrete": discrete.sde_multistep_step},
        noise=_always,
    ),
    "sde-bfn-solver2": SamplerSpec(
        summary="second-order multistep reverse-SDE solver in t for discrete data (Xue et al., Algorithm 5)",
        steps={"discrete": discrete.sde_multistep_step},
        order=2,
        multistep=True,
        noise=_always,
    ),
    "sde-bfn-solver3": SamplerSpec(
        summary="third-order multistep reverse-SDE solver in t for discrete data (SDE-3M, derived)",
        steps={"discrete": discrete.sde_multistep_step},
        order=3,
        multistep=True,
        noise=_always,
    ),
    "h-solver": SamplerSpec(
        summary="path-integral h-family (Hirono et al., 2024): exact exponential integrator in lambda, orders 1-3",
        steps={kind: exponential.multistep_step for kind in KINDS},
        order=None,
        multistep=True,
        options={"h": 0.5, "order": 2},
        noise=_positive_h,
    ),
}
"""Every sampler by name. ``SAMPLERS[name].kinds`` lists the data kinds it supports."""


def get_sampler(name: str, kind: FlowKind) -> SamplerSpec:
    """The spec of sampler ``name`` for data of ``kind``; ``ValueError`` naming the valid choices otherwise."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    spec = SAMPLERS[name]
    if kind not in spec.kinds:
        valid = sorted(n for n, s in SAMPLERS.items() if kind in s.kinds)
        raise ValueError(
            f"sampler {name!r} supports {list(spec.kinds)} data, not {kind!r}; samplers for {kind} data: {valid}"
        )
    return spec


def resolve_options(name: str, spec: SamplerSpec, kind: FlowKind, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``options`` against what sampler ``name`` accepts and fill in the defaults (``ValueError`` if invalid)."""
    defaults = spec.defaults()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for sampler {name!r}; valid options: {sorted(defaults)}")
    resolved = {**defaults, **options}
    for key, value in resolved.items():
        _CHECKS[key](value, name)
    if not spec.prior_start:
        _check_solver_options(resolved, options, kind)
    if not spec.prior_start and resolved["eta"] is None:
        resolved["eta"] = DEFAULT_ETA[kind]  # unused by an explicit grid
    return resolved


def _check_solver_options(resolved: dict[str, Any], given: Mapping[str, Any], kind: FlowKind) -> None:
    if resolved["clip"] is not None and kind != "continuous":
        raise ValueError(f"clip applies to continuous data only (the {kind} data prediction is already in range)")
    if "mode" in given and resolved["final"] != "denoise":
        raise ValueError("mode applies to final='denoise' (the draw from the output distribution at tau = 1)")
    moment = isinstance(resolved["init"], str) and resolved["init"] == "moment"
    if not moment and (resolved["data_mean"] is not None or resolved["data_var"] is not None):
        raise ValueError("data_mean / data_var are used only with init='moment'")
    if moment and resolved["data_mean"] is None:
        raise ValueError("init='moment' needs data_mean (and, for continuous or discretised data, data_var)")
    if moment and kind == "discrete" and resolved["data_var"] is not None:
        raise ValueError("for discrete data give data_mean (class frequencies) only; the variance follows from it")
    if moment and kind != "discrete" and resolved["data_var"] is None:
        raise ValueError(f"init='moment' for {kind} data needs data_var as well as data_mean")
    if kind == "discrete" and isinstance(resolved["grid"], str) and resolved["grid"] == "logsnr":
        raise ValueError(
            "grid='logsnr' is refused for discrete data: the log-SNR of the logit SDE is log(1 - t) + const, so a "
            "grid uniform in it crowds the steps next to the prior and makes its last prediction at tau = eta^(1/n) "
            "(0.25 for 5 steps at eta = 1e-3; TV 0.22 on the oracle table); use grid='tuned' (what sampler='auto' "
            "runs) or grid='uniform' (the paper's)"
        )
    if isinstance(resolved["grid"], Tensor) and given.get("eta") is not None:
        raise ValueError("give either an explicit grid tensor or eta, not both (the grid fixes the start time)")


def _check_choice(choices: tuple[Any, ...], allow_tensor: bool = False) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if allow_tensor and isinstance(value, Tensor):
            return
        if not isinstance(value, str) or value not in choices:
            extra = " or a tensor" if allow_tensor else ""
            raise ValueError(f"invalid option value {value!r} for sampler {name!r}; expected one of {choices}{extra}")

    return check


def _check_bool(key: str) -> Callable[[Any, str], None]:
    def check(value: Any, name: str) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"option {key} must be True or False, got {value!r}")

    return check


def _check_eta(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < value < 1.0):
        raise ValueError(f"eta must lie in (0, 1), got {value!r}")


def _check_h(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"h must be a finite number >= 0 (0 = probability-flow ODE, 1 = reverse SDE), got {value!r}")


def _check_order(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {value!r}")


def _check_clip(value: Any, name: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"clip must be None (the flow's setting), True or False, got {value!r}")


def _check_callback(value: Any, name: str) -> None:
    if value is not None and not callable(value):
        raise ValueError(f"callback must be callable (it receives one dict per step), got {type(value).__name__}")


def _check_statistic(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (Real, Tensor, list, tuple))):
        raise ValueError(f"data_mean / data_var must be numbers, sequences or tensors, got {type(value).__name__}")


_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "grid": _check_choice(("uniform", "logsnr", "tuned"), allow_tensor=True),
    "eta": _check_eta,
    "init": _check_choice(("zero", "moment"), allow_tensor=True),
    "final": _check_choice(("drop", "denoise")),
    "mode": _check_bool("mode"),
    "clip": _check_clip,
    "data_mean": _check_statistic,
    "data_var": _check_statistic,
    "callback": _check_callback,
    "trajectory": _check_bool("trajectory"),
    "categorical": _check_bool("categorical"),
    "h": _check_h,
    "order": _check_order,
}
