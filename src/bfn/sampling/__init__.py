"""Sampling from a BFN: the original sampler, the BFN-Solvers and the path-integral h-solver.

Every sampler is a pure step function driven by one loop (:mod:`bfn.sampling.engine`) and registered by name in
:data:`SAMPLERS`; :func:`sample` (also ``BFN.sample``) is the entry point.

* The BFN linear SDEs (Xue et al., ICML 2024, Thms 4.1 and 5.1) come from each flow's ``flow.sde``: continuous and
  discretised data on the input mean ``mu`` with ``alpha_t = gamma(1 - t)``, ``sigma_t^2 = alpha_t (1 - alpha_t)``;
  discrete data on the logits ``z`` with ``alpha_t = beta_t``, ``sigma_t^2 = K beta_t``. The network output becomes
  the data prediction ``x0_hat`` in ``flow.data_prediction`` (``k_hat`` for discretised, ``K e_hat - 1`` for
  discrete data) and the score is :func:`score_from_prediction`.
* :mod:`~bfn.sampling.exponential`: exponential integrators in ``lambda`` (continuous BFN-Solvers, h-solver).
* :mod:`~bfn.sampling.discrete`: the discrete BFN-Solvers, Taylor expansions in solver time ``t``.
* :mod:`~bfn.sampling.original`: the original BFN sampler step (Graves et al., 2023).
* :mod:`~bfn.sampling.auto`: ``sampler="auto"``, the default: the best measured configuration per data kind and
  budget, with ``steps`` counting network calls; :mod:`~bfn.sampling.grids`: its time grids, fitted per budget.
* :mod:`~bfn.sampling.adaptive`: :func:`sample_adaptive`, step sizes from an error estimate (a tolerance instead of a
  step count).
* :mod:`~bfn.sampling.options`: one frozen options object per sampler family (:class:`SamplerOptions`,
  :class:`OriginalOptions`, :class:`SolverOptions`, :class:`HSolverOptions`), with defaults and checks.
"""

from bfn.flows import DEFAULT_ETA
from bfn.sampling.adaptive import sample_adaptive
from bfn.sampling.api import SampleOutput, sample, score
from bfn.sampling.engine import (
    Method,
    Point,
    Prediction,
    Predictor,
    SamplerState,
    Schedule,
    StepContext,
    StepFn,
    StepResult,
    integrate,
    score_from_prediction,
)
from bfn.sampling.options import HSolverOptions, OriginalOptions, SamplerOptions, SolverOptions
from bfn.sampling.registry import SAMPLERS, SamplerSpec, get_sampler, resolve_options

__all__ = [
    "DEFAULT_ETA",
    "SAMPLERS",
    "HSolverOptions",
    "Method",
    "OriginalOptions",
    "Point",
    "Prediction",
    "Predictor",
    "SampleOutput",
    "SamplerOptions",
    "SamplerSpec",
    "SamplerState",
    "Schedule",
    "SolverOptions",
    "StepContext",
    "StepFn",
    "StepResult",
    "get_sampler",
    "integrate",
    "resolve_options",
    "sample",
    "sample_adaptive",
    "score",
    "score_from_prediction",
]
