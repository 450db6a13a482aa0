"""Fit the ``"tuned"`` log-SNR grids of ``bfn.sampling.grids`` to exact-denoiser oracles (no Monte-Carlo noise).

Usage::

    python benchmarks/fit_grids.py                      # refit every budget of the tables (about an hour on 1 core)
    python benchmarks/fit_grids.py --budgets 5,10       # some budgets only
    python benchmarks/fit_grids.py --check              # only evaluate the grids the library ships

Objective. The probability-flow ODE of 1-D data is a monotone map, so an ODE sampler sends the quantiles of its
start to the quantiles of its output. Starting from the stratified quantiles ``sigma_0 Phi^-1((i + 1/2)/N)`` of the
zero-mean Gaussian start (the protocol's ``init="zero"``), the sorted outputs give the Wasserstein-1 distance to the
data, ``mean_i |out_(i) - Q_data((i + 1/2)/N)|``, without Monte-Carlo noise. The oracles are three Gaussian
mixtures (``mix``: the solver benchmark's ``0.3 N(-0.5, 0.1^2) + 0.7 N(0.4, 0.2^2)``; ``mix3``; ``sym``), each for
``sigma_1 = 0.02`` and ``1e-3``, with exact denoisers (``bfn.testing.MixtureDenoiser``, clipped to [-1, 1]); a
fourth, ``gauss`` (``N(0.3, 0.5^2)``), is held out and only reported. The objective is the mean over the six cases
of the error relative to the paper protocol's ``bfn-solver++2`` on the uniform log-SNR grid from ``eta = 1e-2`` at
the same budget.

Grids (``bfn-solver++pc``, ``final="drop"``, the ``eta`` that ``sampler="auto"`` uses at that budget):

* up to ``FREE_MAX`` calls every interior call point ``lambda_1 .. lambda_{n-1}`` is free (Nelder-Mead on the
  log-increments, three starts);
* above, the two-parameter family ``lambda_i = lambda_0 + (lambda_last - lambda_0) (i / (n - 1))^p``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.stats import norm

import bfn
from bfn.flows import ContinuousFlow
from bfn.sampling import SAMPLERS, SamplerState, StepContext, integrate, resolve_options
from bfn.sampling.auto import auto_config
from bfn.sampling.grids import FITTED, FITTED_POINTS, FREE_MAX, fitted_logsnr_grid
from bfn.testing import MixtureDenoiser

MIXES = {
    "mix": ([0.3, 0.7], [-0.5, 0.4], [0.1, 0.2]),
    "mix3": ([0.2, 0.5, 0.3], [-0.7, 0.0, 0.6], [0.05, 0.15, 0.1]),
    "sym": ([0.5, 0.5], [-0.5, 0.5], [0.1, 0.1]),
    "gauss": ([1.0], [0.3], [0.5]),
}
TRAIN = ("mix", "mix3", "sym")
SIGMAS = (0.02, 1e-3)
QUANTILES = 4000
SOLVER = "bfn-solver++pc"
BUDGETS = (2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20)
U = (np.arange(QUANTILES) + 0.5) / QUANTILES


class Case:
    """One oracle: the model, its data quantiles, and the W1 error of a grid (deterministic)."""

    def __init__(self, name: str, sigma_1: float) -> None:
        weights, means, stds = MIXES[name]
        flow = ContinuousFlow(sigma_1, clip=True)
        self.name, self.sigma_1 = name, sigma_1
        self.model = bfn.BFN(MixtureDenoiser(flow, weights, means, stds), flow, (1,), dtype=torch.float64)
        xs = np.linspace(-2.0, 2.0, 400_001)
        cdf = sum(w * norm.cdf((xs - m) / s) for w, m, s in zip(weights, means, stds))
        self.quantiles = np.clip(np.interp(U, cdf, xs), -1.0, 1.0)

    def error(self, grid: Sequence[float], sampler: str = SOLVER) -> float:
        """W1 of ``sampler`` (``final="drop"``) over the solver times ``grid``, from stratified zero-start quantiles."""
        spec = SAMPLERS[sampler]
        opts = resolve_options(sampler, spec, "continuous", {"grid": torch.tensor(grid, dtype=torch.float64)})
        method = spec.method("continuous", opts)
        ctx = StepContext.build(self.model)
        sigma0 = float(self.model.flow.sde.sigma(torch.tensor(grid[0], dtype=torch.float64)))
        start = torch.tensor(sigma0 * norm.ppf(U), dtype=torch.float64).reshape(-1, 1)
        state = integrate(ctx, method, SamplerState(start, float(grid[0])), list(grid), drop_last=True)
        out = np.sort(state.history[0].x0.flatten().numpy())
        return float(np.mean(np.abs(out - self.quantiles)))


def grid_of(case: Case, eta: float, interior: Sequence[float]) -> list[float]:
    """``[1 - eta, t(lambda_1), ..., t(lambda_{n-1}), 0]``."""
    ts = case.model.flow.sde.t_of_lam(torch.tensor(list(interior), dtype=torch.float64)).tolist()
    return [1.0 - eta, *ts, 0.0]


def family(lam0: float, lam_last: float, power: float, n: int) -> list[float]:
    """Interior points of the two-parameter family (module docstring)."""
    return [lam0 + (lam_last - lam0) * (i / (n - 1)) ** power for i in range(1, n)]


def baseline(case: Case, n: int) -> float:
    """The paper protocol's ``bfn-solver++2`` on the uniform log-SNR grid from ``eta = 1e-2`` (n calls)."""
    sde = case.model.flow.sde
    lam0, lam_end = (float(v) for v in sde.lam(torch.tensor([0.99, 0.0], dtype=torch.float64)))
    interior = [lam0 + (lam_end - lam0) * i / n for i in range(1, n)]
    return case.error(grid_of(case, 1e-2, interior), "bfn-solver++2")


def fit(n: int, cases: list[Case], eta: float) -> tuple[list[float] | tuple[float, float], float]:
    """Fit budget ``n``: free interior points up to ``FREE_MAX`` calls, else ``(lambda_last, p)``."""
    base = {(c.name, c.sigma_1): baseline(c, n) for c in cases}
    lam0 = {c.sigma_1: float(c.model.flow.sde.lam(torch.tensor(1.0 - eta, dtype=torch.float64))) for c in cases}
    cap = min(float(c.model.flow.sde.lam(torch.tensor(0.0, dtype=torch.float64))) for c in cases) - 0.02

    def objective(interior_of) -> float:
        total = 0.0
        for c in cases:
            interior = interior_of(c)
            if interior and (interior[0] <= lam0[c.sigma_1] or interior[-1] > cap):
                return 1e3
            total += c.error(grid_of(c, eta, interior)) / base[(c.name, c.sigma_1)]
        return total / len(cases)

    if n <= FREE_MAX:

        def free(q: np.ndarray) -> float:
            points = list(np.cumsum(np.exp(q[1:])) + q[0])
            return objective(lambda c: [q[0], *points][: n - 1] if n > 1 else [])

        best = None
        for last in (2.0, 2.6, 3.2):
            start = np.linspace(-0.3, min(last, cap - 0.1), n - 1) if n > 1 else np.zeros(0)
            q = np.concatenate([start[:1], np.log(np.maximum(np.diff(start), 1e-3))])
            for _ in range(2):
                q = minimize(free, q, method="Nelder-Mead", options={"maxiter": 150 * n, "xatol": 1e-3}).x
            value = free(q)
            if best is None or value < best[1]:
                best = (q, value)
        q = best[0]
        return [float(q[0]), *(float(v) for v in np.cumsum(np.exp(q[1:])) + q[0])][: n - 1], best[1]

    def fam(x: np.ndarray) -> float:
        return objective(lambda c: family(lam0[c.sigma_1], x[0], math.exp(x[1]), n))

    best = None
    for x0 in ([2.5, 0.0], [3.2, -0.3], [3.8, -0.3]):
        r = minimize(fam, x0, method="Nelder-Mead", options={"maxiter": 80, "xatol": 1e-3, "fatol": 1e-4})
        if best is None or r.fun < best.fun:
            best = r
    return (float(best.x[0]), float(math.exp(best.x[1]))), float(best.fun)


def check(budgets: Sequence[int]) -> None:
    """Evaluate the shipped grids (``sampler="auto"``'s ``eta``) against the baseline on every oracle."""
    cases = [Case(name, s) for s in SIGMAS for name in MIXES]
    print("| budget | eta | " + " | ".join(f"{c.name} {c.sigma_1:g}" for c in cases) + " |")
    print("|---|---|" + "---|" * len(cases))
    for n in budgets:
        eta = auto_config("continuous", n)[1]["eta"]
        cells = []
        for c in cases:
            grid = fitted_logsnr_grid(n, eta, c.model.flow.sde).tolist()
            cells.append(f"{c.error(grid):.4f} / {baseline(c, n):.4f}")
        print(f"| {n} | {eta:g} | " + " | ".join(cells) + " |", flush=True)
    print("\n(each cell: W1 of the tuned grid with bfn-solver++pc / the paper protocol's bfn-solver++2, logsnr, 1e-2)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=lambda s: [int(v) for v in s.split(",")], default=list(BUDGETS))
    parser.add_argument("--check", action="store_true", help="only evaluate the shipped grids")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.check:
        check(args.budgets)
        return
    cases = [Case(name, s) for s in SIGMAS for name in TRAIN]
    for n in args.budgets:
        start = time.process_time()
        eta = auto_config("continuous", n)[1]["eta"]
        params, value = fit(n, cases, eta)
        shipped = FITTED_POINTS.get(n) if n <= FREE_MAX else FITTED.get(n)
        print(f"budget {n} (eta {eta:g}): {params} objective {value:.3f} (shipped {shipped}; "
              f"{time.process_time() - start:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
