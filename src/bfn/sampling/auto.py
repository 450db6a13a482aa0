"""``sampler="auto"``: the library's best measured configuration per data kind and budget of network calls.

With ``sampler="auto"``, ``steps`` is the number of network calls (``out.nfe == steps`` exactly) and
:func:`resolve_auto` turns it into a concrete registered sampler, its step count and options; ``SampleOutput.sampler``
and ``SampleOutput.options`` report what ran. The choice is measured on the exact-denoiser oracles of
``benchmarks/solvers_oracle.py`` (BENCHMARKS.md, "Solver oracles"):

* continuous data: ``bfn-solver++pc`` (a second-order multistep PF-ODE predictor with a third-order corrector that
  reuses the next step's prediction, UniPC-style, so no extra calls) from ``eta = 1e-4`` on the ``"tuned"`` grid,
  with ``final="drop"``. Starting closer to the prior removes most of the error of the Gaussian start, whose
  neglected signal scales as ``exp(lambda_{1 - eta}) ~ sqrt(eta)`` (at the protocol's ``eta = 1e-2`` it caps the
  accuracy of every ODE solver at any step count); the tuned grid spends the extra log-SNR range with one large
  first step where the data prediction barely changes.
* discretised data: the path-integral ``h-solver`` with a little noise (``h = 0.2``, third order) from
  ``eta = 1e-4`` on the tuned grid, ending with ``final="denoise"`` (a draw from the output distribution at
  ``tau = 1`` instead of the bin nearest to the mean prediction, which is biased towards the middle bins).
* continuous and discretised data up to ``SMALL_BUDGET`` calls: ``bfn-solver++2`` from ``eta = 1e-2`` on the
  uniform log-SNR grid with ``final="drop"`` (too few steps to pay for the longer log-SNR range of a small ``eta``).
* discrete data: ``bfn-solver3`` (third-order multistep PF-ODE solver in ``t``) on the tuned grid from the
  protocol's ``eta = 1e-3``, ending with ``final="denoise"``.

The ``"tuned"`` grid (:func:`tuned_grid`) is uniform in ``u = i/n`` and maps it to half log-SNR
``lambda = lambda_start + (lambda_end - lambda_start) u^p`` (continuous, ``p = LOGSNR_POWER``): ``p < 1`` puts more
steps at high signal-to-noise than the uniform log-SNR grid (``p = 1``). Its first steps shrink only like
``n^-p``, so a method of order ``k`` converges at order ``min(k, (k + 1) p)`` (2.4 for ``bfn-solver++3``) as ``n``
grows; the grid pays off at small budgets, where the error is far from asymptotic. For discrete data it is a power of
the step index in BFN time, ``tau = eta + (1 - eta) u^q`` (``q = TIME_POWER``), denser near the prior than the
protocol's uniform grid (``q = 1``); the log-SNR of the logit SDE, ``log(1 - t) + const``, would instead crowd the
points next to the prior, where the data prediction barely changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from bfn._checks import MAX_STEPS, check_eta, check_int
from bfn.flows import flow_type
from bfn.flows.base import LOGSNR_POWER, SMALL_BUDGET, TIME_POWER, FlowKind, LinearSDE
from bfn.time import flip_clock

__all__ = [
    "AUTO",
    "AUTO_NFE",
    "LOGSNR_POWER",
    "SMALL_BUDGET",
    "TIME_POWER",
    "auto_config",
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

    Continuous and discretised: up to ``SMALL_BUDGET`` calls ``bfn-solver++2`` on the uniform log-SNR grid from the
    protocol's ``eta = 1e-2`` with ``final="drop"`` (too few steps to pay for the longer log-SNR range of a small
    ``eta``); above, from ``eta = 1e-4`` on the tuned grid, continuous ``bfn-solver++pc`` with ``final="drop"``
    and discretised ``h-solver`` (``h = 0.2``, ``order = 3``) with ``final="denoise"``. Discrete:
    ``bfn-solver3`` on the tuned grid from ``eta = 1e-3`` with ``final="denoise"``. One call is always one
    ``final="drop"`` step. The configurations are data each flow declares (``flow.sampling.auto``, a tuple of
    :class:`~bfn.flows.AutoChoice`).
    """
    choice = flow_type(kind).sampling.auto_choice(nfe)
    options = dict(choice.options)
    if nfe == 1:
        options["final"] = "drop"
    return choice.sampler, options


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

    Each flow declares its variable and power (``flow.sampling.tuned_grid``, ``tuned_power``): continuous and
    discretised data a power of the step index in half log-SNR, discrete data in BFN time.
    """
    defaults = flow_type(kind).sampling
    if defaults.tuned_grid == "time":
        return time_power_grid(steps, eta, defaults.tuned_power)
    return logsnr_power_grid(steps, eta, sde, defaults.tuned_power)


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
