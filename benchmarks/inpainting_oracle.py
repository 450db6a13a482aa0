"""Inpainting / infilling against exact conditionals: the two ways of showing known values to the network.

Usage::

    python benchmarks/inpainting_oracle.py            # CPU-friendly defaults (a few minutes on 2 cores)
    python benchmarks/inpainting_oracle.py --quick    # a smoke run (seconds)

Exact denoisers (no training), one known position, the distance of the filled-in positions to the exact conditional:

* ``table``: discrete, 3 positions x 3 classes with a correlated joint table (beta_1 = 3); position 1 is known
  (class 2), and ``p(x_0, x_2 | x_1 = 2)`` is a row of the table: total variation over its 9 cells.
* ``bins``: discretised, 3 positions on 2 bins with a correlated joint table (sigma_1 = 0.02); position 1 known
  (the upper bin): total variation over the 4 cells of ``p(x_0, x_2 | x_1)``.
* ``gaussian``: continuous, 2 correlated elements (``rho = 0.9``, sd 0.3); ``x_0 = 0.4`` known: Wasserstein-1 of
  ``x_1`` to ``N(0.36, 0.131^2)``.

Methods: ``certain`` (the default: discrete one-hot belief; continuous / discretised the noise-free flow mean
``gamma x``), ``replace`` (a draw from the Bayesian flow distribution ``p_F(. | x; tau)``) and ``ignore`` (plain
unconditional sampling, the baseline). The Monte-Carlo floor is the same distance for exact samples of that size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm
from torch import Tensor

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow
from bfn.sampling import sample
from bfn.testing import BinaryBinTableNet, CorrelatedGaussianDenoiser, TripleTable

F64 = torch.float64
METHODS = ("certain", "replace", "ignore")
SAMPLERS = {
    "table": ("bfn", "sde-bfn-solver2", "bfn-solver2"),
    "bins": ("bfn", "sde-bfn-solver++2", "bfn-solver++2"),
    "gaussian": ("bfn", "sde-bfn-solver++2", "bfn-solver++2"),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def table_case():
    table = torch.rand(3, 3, 3, generator=gen(3), dtype=F64) ** 3
    table /= table.sum()
    model = bfn.BFN(TripleTable(table), DiscreteFlow(3, 3.0), (3,), dtype=F64)
    exact = (table[:, 2, :] / table[:, 2, :].sum()).flatten()

    def distance(x: Tensor) -> float:
        hist = torch.bincount(x[:, 0] * 3 + x[:, 2], minlength=9).double() / len(x)
        return 0.5 * (hist - exact).abs().sum().item()

    def exact_draw(n: int) -> Tensor:
        idx = torch.multinomial(exact, n, replacement=True, generator=gen(99))
        return torch.stack([idx // 3, torch.full_like(idx, 2), idx % 3], 1)

    return model, torch.tensor([0, 2, 0]), torch.tensor([False, True, False]), distance, exact_draw


def bins_case():
    table = torch.tensor([[[0.30, 0.02], [0.03, 0.10]], [[0.05, 0.15], [0.05, 0.30]]], dtype=F64)
    table /= table.sum()
    flow = DiscretisedFlow(2, sigma_1=0.02)
    model = bfn.BFN(BinaryBinTableNet(flow, table), flow, (3,), dtype=F64)
    exact = (table[:, 1, :] / table[:, 1, :].sum()).flatten()

    def distance(x: Tensor) -> float:
        b = flow.bin_index(x)
        hist = torch.bincount(b[:, 0] * 2 + b[:, 2], minlength=4).double() / len(x)
        return 0.5 * (hist - exact).abs().sum().item()

    def exact_draw(n: int) -> Tensor:
        idx = torch.multinomial(exact, n, replacement=True, generator=gen(99))
        return torch.stack([idx // 2, torch.ones_like(idx), idx % 2], 1).to(F64) - 0.5

    return model, torch.full((3,), 0.5, dtype=F64), torch.tensor([False, True, False]), distance, exact_draw


def gaussian_case():
    flow = ContinuousFlow(1e-3, clip=False)
    rho, s = 0.9, 0.3
    model = bfn.BFN(
        CorrelatedGaussianDenoiser(flow, [0.0, 0.0], [[s * s, rho * s * s], [rho * s * s, s * s]]), flow, (2,)
    )
    m, sd = rho * 0.4, s * (1 - rho**2) ** 0.5
    grid = np.linspace(-2.0, 2.0, 40001)

    def distance(x: Tensor) -> float:
        xs = np.sort(x[:, 1].double().numpy())
        ecdf = np.searchsorted(xs, grid, side="right") / len(xs)
        return float(np.trapezoid(np.abs(ecdf - norm.cdf((grid - m) / sd)), grid))

    def exact_draw(n: int) -> Tensor:
        return torch.stack([torch.full((n,), 0.4), m + sd * torch.randn(n, generator=gen(99))], 1)

    return model, torch.tensor([0.4, 0.0]), torch.tensor([True, False]), distance, exact_draw


CASES = {"table": table_case, "bins": bins_case, "gaussian": gaussian_case}


def run(num: int, nfes: tuple[int, ...]) -> list[str]:
    lines = []
    for name, build in CASES.items():
        model, known, mask, distance, exact_draw = build()
        metric = "W1" if name == "gaussian" else "TV"
        lines += [
            f"### {name} ({metric} to the exact conditional; Monte-Carlo floor {distance(exact_draw(num)):.4f})",
            "",
            "| sampler | NFE | " + " | ".join(METHODS) + " |",
            "|---|---:|" + "---:|" * len(METHODS),
        ]
        for sampler in SAMPLERS[name]:
            for nfe in nfes:
                steps = nfe - 1 if sampler == "bfn" else nfe
                cells = []
                for method in METHODS:
                    cond = {} if method == "ignore" else {"known": known, "mask": mask, "inpaint": method}
                    out = sample(model, num, sampler, steps=steps, generator=gen(1), **cond)
                    cells.append(f"{distance(out.samples):.4f}")
                lines.append(f"| {sampler} | {out.nfe} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inpainting_oracle.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    num, nfes = (500, (5,)) if args.quick else (10_000, (10, 50, 200))
    lines = run(num, nfes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
