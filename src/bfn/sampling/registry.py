"""The registry of samplers: names (as in the papers) mapped to step functions, orders, costs and options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from bfn._checks import check_int
from bfn.flows import KINDS, FlowKind, flow_type
from bfn.sampling import discrete, exponential, original
from bfn.sampling.engine import Method, StepFn
from bfn.sampling.options import FinalRule, HSolverOptions, OriginalOptions, SamplerOptions, SolverOptions

CONTINUOUS_KINDS: tuple[FlowKind, ...] = ("continuous", "discretised")
"""The kinds whose state is the Gaussian input mean ``mu`` (the exponential integrators in ``lambda`` apply)."""


def _never(options: SamplerOptions) -> bool:
    return False


def _always(options: SamplerOptions) -> bool:
    return True


def _positive_h(options: Any) -> bool:
    return options.h > 0


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
        options: the options family (:mod:`bfn.sampling.options`): its fields are what the sampler accepts, with
            their defaults and checks. :class:`~bfn.sampling.options.OriginalOptions` marks a sampler that starts
            from the prior at ``tau = 0`` (:attr:`prior_start`).
        bind: the options bound to the step function as keyword arguments (e.g. ``h``).
        noise: whether, given the resolved options, the loop draws a standard normal tensor every step.
    """

    summary: str
    steps: Mapping[FlowKind, StepFn]
    order: int | None = 1
    multistep: bool = False
    nfe_per_step: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)
    options: type[SamplerOptions] = SolverOptions
    bind: tuple[str, ...] = ()
    noise: Callable[[SamplerOptions], bool] = _never

    @property
    def kinds(self) -> tuple[FlowKind, ...]:
        """The data kinds this sampler supports."""
        return tuple(self.steps)

    @property
    def prior_start(self) -> bool:
        """Start from the prior at ``tau = 0`` on the grid ``tau_i = i/n`` and finish with a call at ``tau = 1`` (the
        original sampler) instead of starting at ``t = 1 - eta``."""
        return not issubclass(self.options, SolverOptions)

    def defaults(self) -> dict[str, Any]:
        """All the options this sampler accepts, with their defaults (``eta=None``: the kind's default)."""
        return self.options.defaults()

    def method(self, kind: FlowKind, options: SamplerOptions) -> Method:
        """The step function for ``kind`` with its parameters bound, as the loop drives it."""
        bound = {name: getattr(options, name) for name in self.bind}
        order = self.order if self.order is not None else cast(HSolverOptions, options).order
        step = partial(self.steps[kind], **self.params, **bound) if self.params or bound else self.steps[kind]
        return Method(step=step, order=order, multistep=self.multistep, noise=self.noise(options))

    def nfe(self, steps: int, final: FinalRule = "drop") -> int:
        """Network calls for ``steps`` steps: ``n + 1`` for the original sampler; ``k (n - 1) + 1`` with
        ``final="drop"`` and ``k n + 1`` with ``final="denoise"`` for a solver making ``k`` calls per step."""
        if self.prior_start:
            return steps + 1
        return self.nfe_per_step * (steps - 1) + 1 if final == "drop" else self.nfe_per_step * steps + 1

    def steps_for_nfe(self, nfe: int, final: FinalRule = "drop", *, exact: bool = False) -> int:
        """The inverse of :meth:`nfe`: the most steps whose network calls do not exceed ``nfe``.

        ``self.nfe(self.steps_for_nfe(n, final), final) == n`` whenever some step count makes exactly ``n`` calls
        (e.g. 10 NFE: 9 steps of ``bfn``, 10 of ``bfn-solver++2``, 4 of ``bfn-solver++3s``); otherwise the result
        makes fewer calls (10 NFE of ``bfn-solver++2s``: 5 steps, 9 calls). With ``exact=True`` that case is a
        ``ValueError`` instead; so is a budget below one step's cost (``nfe(1, final)``).
        """
        nfe = check_int(nfe, "nfe")
        if final not in ("drop", "denoise"):
            raise ValueError(f"final must be 'drop' or 'denoise', got {final!r}")
        if self.nfe(1, final) > nfe:
            raise ValueError(f"no step count fits {nfe} network calls: one step makes {self.nfe(1, final)}")
        steps, above = 1, 2  # nfe() grows with the step count: bracket the budget, then bisect
        while self.nfe(above, final) <= nfe:
            steps, above = above, 2 * above
        while above - steps > 1:
            middle = (steps + above) // 2
            steps, above = (middle, above) if self.nfe(middle, final) <= nfe else (steps, middle)
        if exact and self.nfe(steps, final) != nfe:
            raise ValueError(
                f"no step count makes exactly {nfe} network calls: {steps} steps make {self.nfe(steps, final)}, "
                f"{steps + 1} steps {self.nfe(steps + 1, final)}"
            )
        return steps


_lambda_multistep = dict.fromkeys(CONTINUOUS_KINDS, exponential.multistep_step)

SAMPLERS: dict[str, SamplerSpec] = {
    "bfn": SamplerSpec(
        summary="original BFN sampler (Graves et al., 2023): Bayesian updates with sender samples, n + 1 calls",
        steps=dict.fromkeys(KINDS, original.bfn_step),
        options=OriginalOptions,
        bind=("categorical",),
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
        steps=dict.fromkeys(CONTINUOUS_KINDS, exponential.singlestep2_step),
        order=2,
        nfe_per_step=2,
    ),
    "bfn-solver++3s": SamplerSpec(
        summary="third-order single-step PF-ODE solver (DPM-Solver++(3S), r = 1/3, 2/3), 3 calls per step",
        steps=dict.fromkeys(CONTINUOUS_KINDS, exponential.singlestep3_step),
        order=3,
        nfe_per_step=3,
    ),
    "bfn-solver++pc": SamplerSpec(
        summary="second-order multistep PF-ODE predictor with a third-order corrector (UniPC-style), no extra calls",
        steps=dict.fromkeys(CONTINUOUS_KINDS, exponential.predictor_corrector_step),
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
        steps=dict.fromkeys(KINDS, exponential.multistep_step),
        order=None,
        multistep=True,
        options=HSolverOptions,
        bind=("h",),
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


def resolve_options(name: str, spec: SamplerSpec, kind: FlowKind, options: Mapping[str, Any]) -> SamplerOptions:
    """``options`` parsed into sampler ``name``'s options object, checked against the data ``kind`` and completed
    with its defaults (``ValueError`` naming the problem if invalid); see :mod:`bfn.sampling.options`."""
    return spec.options.parse(name, options).for_flow(flow_type(kind))
