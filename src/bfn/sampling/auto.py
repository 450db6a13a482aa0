"""``sampler="auto"``: the library's best measured configuration per data kind and budget of network calls.

With ``sampler="auto"``, ``steps`` is the number of network calls (``out.nfe == steps`` exactly) and
:func:`resolve_auto` turns it into a concrete registered sampler, its step count and options; ``SampleOutput.sampler``
and ``SampleOutput.options`` report what ran. The choice is measured on the exact-denoiser oracles of
``benchmarks/solvers_oracle.py`` and checked on the trained digits models (``benchmarks/default_vs_named.py``;
BENCHMARKS.md, "Solver oracles"):

* continuous data up to ``MID_ETA_BUDGET`` calls, and discretised data up to ``SMALL_ETA_BUDGET`` calls:
  ``bfn-solver++pc`` (a second-order multistep PF-ODE predictor with a third-order corrector that reuses the next
  step's prediction, UniPC-style, so no extra calls) on the ``"tuned"`` grid, whose call points are fitted per budget
  (:mod:`bfn.sampling.grids`), with ``final="drop"``, from ``eta`` 5e-3 up to ``SMALL_ETA_BUDGET`` calls and 1e-3
  above: the zero-mean start at ``t = 1 - eta`` neglects signal of relative size ``exp(lambda_{1 - eta}) ~
  sqrt(eta)``, an error no step count of an ODE solver removes, so a larger budget needs a smaller ``eta`` to meet
  the exact-oracle targets (W1 1.45x the Monte-Carlo floor at 10 calls); but trained networks are least accurate near
  ``tau = 0`` (their data estimate amplifies noise-prediction errors by ``1 / sqrt(gamma)``), so a small budget
  starts later. With at most ``SMALL_BUDGET`` calls no multistep correction ever applies and the run is exactly
  ``bfn-solver++1``, which is what it reports.
* above those budgets: ``sde-bfn-solver++2`` (second-order SDE solver) on the log-SNR grid from the protocol's
  ``eta = 1e-2``, ``final="drop"`` (discretised data: ``"denoise"`` above ``MID_ETA_BUDGET`` calls, which halves the
  error on the exact 16-bin oracle at 20 calls). The SDE's noise washes out both the start's missing signal (on the
  continuous oracle it reaches the floor from about 30 calls: W1 1.58x at 20, 0.84-1.26x from 50) and the trained
  networks' early errors: on the trained digits models the small-``eta`` ODE configuration gives FID-digits 0.88 /
  0.27 / 0.21 (discretised) at 7 / 10 / 20 calls against the SDE's 0.19 / 0.12 / 0.11, and 0.68 against 0.12 at
  20 calls on the continuous digits of the peers benchmark. For continuous data from 7 to 14 calls the oracle target
  keeps the ODE configuration, which ranks 5th of 14 at 10 calls on the trained continuous digits model.
* discrete data: ``bfn-solver3`` (third-order multistep PF-ODE solver in ``t``) below ``NOISY_BUDGET`` calls, from
  there the path-integral ``h-solver`` with ``h = 0.5``, order 3, whose noise washes out errors of earlier steps
  (on the trained binarised digits the ODE solvers level off at a worse FID); both on the tuned grid from the
  protocol's ``eta = 1e-3``, ending with ``final="denoise"``.

The ``"tuned"`` grid (:func:`tuned_grid`): continuous and discretised data,
:func:`bfn.sampling.grids.fitted_logsnr_grid`; discrete data, a power of the step index in BFN time,
``tau = eta + (1 - eta) u^q`` (``q = TIME_POWER``), denser near the prior than the protocol's uniform grid
(``q = 1``); the log-SNR of the logit SDE, ``log(1 - t) + const``, would instead crowd the points next to the prior,
where the data prediction barely changes (``grid="logsnr"`` is refused for discrete data).
:func:`logsnr_power_grid` (``lambda`` a power ``LOGSNR_POWER`` of the step index) is the continuous tuned grid
above the fitted budgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from bfn._checks import MAX_STEPS, check_eta, check_int
from bfn.flows import flow_type
from bfn.flows.base import (
    LOGSNR_POWER,
    MID_ETA_BUDGET,
    NOISY_BUDGET,
    SMALL_BUDGET,
    SMALL_ETA_BUDGET,
    TIME_POWER,
    FlowKind,
    LinearSDE,
)
from bfn.sampling.grids import fitted_logsnr_grid
from bfn.time import flip_clock

__all__ = [
    "AUTO",
    "AUTO_NFE",
    "LOGSNR_POWER",
    "MID_ETA_BUDGET",
    "NOISY_BUDGET",
    "SMALL_BUDGET",
    "SMALL_ETA_BUDGET",
    "TIME_POWER",
    "auto_config",
    "continuous_eta",
    "logsnr_power_grid",
    "resolve_auto",
    "time_power_grid",
    "tuned_grid",
]

AUTO = "auto"
"""The name that selects the best configuration for the flow's kind and the budget ``steps`` (network calls)."""

AUTO_NFE = 20
"""Network calls of ``sampler="auto"`` when ``steps`` is not given."""


def auto_config(kind: FlowKind, nfe: int) -> tuple[str, dict[str, Any]]:
    """The registered sampler and options ``sampler="auto"`` runs for ``kind`` and a budget of ``nfe`` calls.

    Continuous and discretised: ``bfn-solver++pc`` on the tuned (fitted) grid with ``final="drop"`` from
    ``eta = continuous_eta(nfe)`` (5e-3 up to 6 calls, then 1e-3); up to ``SMALL_BUDGET`` calls that run is
    ``bfn-solver++1``; from 15 calls (discretised data: from 7) ``sde-bfn-solver++2`` on the log-SNR grid from
    ``eta = 1e-2`` (discretised data end with ``final="denoise"`` from 15 calls).
    Discrete: ``bfn-solver3`` below ``NOISY_BUDGET`` calls, then the ``h-solver`` (``h = 0.5``, ``order = 3``), on
    the tuned grid from ``eta = 1e-3`` with ``final="denoise"``. One call is always one ``final="drop"`` step. The
    configurations are data each flow declares (``flow.sampling.auto``, a tuple of :class:`~bfn.flows.AutoChoice`).
    """
    choice = flow_type(kind).sampling.auto_choice(nfe)
    options = dict(choice.options)
    if nfe == 1:
        options["final"] = "drop"
    return choice.sampler, options


def continuous_eta(nfe: int) -> float:
    """The end offset ``sampler="auto"`` starts from for continuous data at a budget of ``nfe``."""
    return float(flow_type("continuous").sampling.auto_choice(nfe).options["eta"])


def resolve_auto(kind: FlowKind, nfe: int, options: Mapping[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """``(sampler, steps, options)`` that make exactly ``nfe`` network calls with the best configuration for ``kind``.

    ``final="denoise"`` makes ``n + 1`` calls for ``n`` steps, so ``n = nfe - 1``; ``final="drop"`` makes ``n``.
    Options given by the caller override the automatic ones (with ``final`` given, the step count follows that
    rule; with an explicit grid tensor, the automatic ``eta`` is dropped); ``ValueError`` for a budget below 1.
    """
    nfe = check_int(nfe, "steps (network calls with sampler='auto')", 1, MAX_STEPS)
    name, auto = auto_config(kind, nfe)
    resolved = {**auto, **options}
    if isinstance(resolved.get("grid"), Tensor) and "eta" not in options:
        resolved.pop("eta", None)
    steps = nfe if resolved["final"] == "drop" else max(1, nfe - 1)
    return name, steps, resolved


def tuned_grid(kind: FlowKind, steps: int, eta: float, sde: LinearSDE) -> Tensor:
    """The ``"tuned"`` solver-time grid for ``kind`` (see the module docstring), float64, ``1 - eta`` down to 0.

    Each flow declares its variable (``flow.sampling.tuned_grid``): continuous and discretised data call points in
    half log-SNR fitted per budget (:func:`bfn.sampling.grids.fitted_logsnr_grid`), discrete data BFN time a power
    ``flow.sampling.tuned_power`` of the step index.
    """
    defaults = flow_type(kind).sampling
    if defaults.tuned_grid == "time":
        return time_power_grid(steps, eta, defaults.tuned_power)
    return fitted_logsnr_grid(steps, eta, sde)


def time_power_grid(steps: int, eta: float, power: float) -> Tensor:
    """Solver times ``t_i = 1 - tau_i`` with BFN times ``tau_i = eta + (1 - eta) (i/n)^power``, i = 0..n.

    ``power = 1`` is the uniform grid of the BFN-Solver protocol; ``power > 1`` puts more steps near the prior.
    """
    _check_grid_args(steps, eta, power)
    u = torch.arange(steps + 1, dtype=torch.float64) / steps
    ts = flip_clock(eta + (1.0 - eta) * u**power)
    ts[0], ts[-1] = 1.0 - eta, 0.0
    return ts


def logsnr_power_grid(steps: int, eta: float, sde: LinearSDE, power: float) -> Tensor:
    """Solver times with ``lambda_i = lambda(1 - eta) + (lambda(0) - lambda(1 - eta)) (i/n)^power``, i = 0..n.

    ``power = 1`` is the uniform log-SNR grid; ``power < 1`` concentrates the steps at high signal-to-noise.
    """
    _check_grid_args(steps, eta, power)
    lam = sde.lam(torch.tensor([1.0 - eta, 0.0], dtype=torch.float64))
    u = torch.arange(steps + 1, dtype=torch.float64) / steps
    ts = sde.t_of_lam(lam[0] + (lam[1] - lam[0]) * u**power).clamp(0.0, 1.0)
    ts[0], ts[-1] = 1.0 - eta, 0.0
    return ts


def _check_grid_args(steps: int, eta: float, power: float) -> None:
    check_int(steps, "steps", 1, MAX_STEPS)
    check_eta(eta)
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
