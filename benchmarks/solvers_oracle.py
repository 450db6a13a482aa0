"""Sampler accuracy against exact denoisers, and the samplers' own cost per step.

Usage::

    python benchmarks/solvers_oracle.py            # CPU-friendly defaults (a few minutes on 2 cores)
    python benchmarks/solvers_oracle.py --full     # more samples (tighter Monte-Carlo floors)
    python benchmarks/solvers_oracle.py --quick    # a smoke run (seconds)
    python benchmarks/solvers_oracle.py --default  # only the default sampler against the floor (100,000 samples)
    python benchmarks/solvers_oracle.py --user     # discrete: the samples a user gets, every solver (100,000 samples)

Accuracy: every registered sampler runs on exact denoisers (no training) at a budget of NFE network calls; a sampler
that makes ``k`` calls per step gets as many steps as fit (``nfe <= budget``), the original sampler ``budget - 1``.

* ``gaussian``: continuous data ``N(0.3, 0.5^2)`` (sigma_1 = 1e-3, no clipping): Wasserstein-1 distance between the
  samples and the data distribution (exact CDF).
* ``mixture``: continuous data ``0.3 N(-0.5, 0.1^2) + 0.7 N(0.4, 0.2^2)`` (clipped to [-1, 1]): W1 as above.
* ``bins``: discretised data on 16 bins with a known bin distribution (exact output distribution, sigma_1 =
  sqrt(1e-3)): total variation; the solvers run with ``final="denoise"`` (a draw from ``p_O`` at tau = 1).

The continuous and discretised solvers start from ``init="moment"`` with the true data mean and variance (at
eta = 0.01 the default zero-mean start leaves a prior error that no step count removes); the original sampler starts
from its exact prior at tau = 0.
* ``table``: discrete, 2 positions x 3 classes with a correlated joint table, beta_1 = 3, eta = 1e-3: total variation
  after one exact draw from the joint posterior of the final logits (docs/solvers.md 6.5); the solvers run with
  ``final="denoise"`` here so that the final state is at t = 0 (one extra call, counted).

Each cell also carries a Monte-Carlo floor (the same distance for exact samples of the same size), printed per oracle.

Default against the floor (``--default``; also printed first by the other modes, with fewer samples there):
``sampler="auto"`` (the default of ``BFN.sample``) at NFE 5-200 on two harder oracles, 100,000 samples, seeds 0-2
(mean and spread), each against the Monte-Carlo floor of the same size (mean over three seeds):

* ``mixture-0.02``: the mixture above with sigma_1 = 0.02 (the prior start at eta = 0.01 then misses more signal);
* ``table3``: 3 positions x 3 classes with a correlated joint table, beta_1 = 3: TV after one exact joint posterior
  draw from the final logits (an exact sample whenever the logits follow the true marginal, at any solver time).

For reference the same rows for the paper's protocol presets (``bfn-solver++2``, ``sde-bfn-solver++2``,
``bfn-solver2``, ``sde-bfn-solver2`` with their defaults) are printed at the same budgets.

What a user gets (``--user``): on ``table3``, the TV of the samples ``sample`` returns (not of a posterior draw),
for ``auto`` and every discrete solver with the protocol's defaults (``eta = 1e-3``, uniform grid, ``final="drop"``:
the argmax of the last ``e_hat``), NFE 5-200, 100,000 samples, seeds 0-2; with the floors of the two decodings
(exact logits at ``t = 0``, then the per-position argmax of ``e_hat`` or a per-position draw from it, as
``final="denoise"`` does): the network gives per-position marginals only, and with ``beta_1 = 3`` the final
logits are still uncertain, so neither decoding reproduces the joint table exactly.

Overhead: the sampler's own cost per network call (flow input map, data prediction, update, noise: everything but the
network), timed with a free network of the same contract, relative to one call of a small MLP of the contract (width
512, 64 elements per example) on the same batch. Times are the shortest CPU time of this process on one thread over
a few repeats, so other programs on the machine inflate them little.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import norm
from torch import Tensor, nn

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow
from bfn.sampling import SAMPLERS, sample
from bfn.testing import ExactBinPosteriorFlow, GaussianDenoiser, MixtureDenoiser, TripleTable, ZeroNet

NFES = (5, 10, 20, 50, 100, 200)
MIXTURE = ([0.3, 0.7], [-0.5, 0.4], [0.1, 0.2])
GAUSSIAN = (0.3, 0.5)
TABLE = torch.tensor([[0.3, 0.05, 0.05], [0.02, 0.2, 0.08], [0.1, 0.1, 0.1]], dtype=torch.float64)
TABLE3 = torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64) ** 3
TABLE3 = TABLE3 / TABLE3.sum()
DEFAULT_SAMPLES = 100_000
DEFAULT_SEEDS = (0, 1, 2)
REFERENCES = {"continuous": ("bfn-solver++2", "sde-bfn-solver++2"), "discrete": ("bfn-solver2", "sde-bfn-solver2")}
BIN_PROBS = torch.softmax(torch.sin(torch.arange(16, dtype=torch.float64) * 1.7) * 1.5, 0)
NOTES = {
    "bins": "Independent elements with the exact output distribution: the original sampler is an exact ancestral "
    "sampler here at any NFE (the argument of docs/solvers.md 3.5 for discrete data carries over), so only the solvers "
    "show discretisation error.",
    "table": "Two dependent positions: the case where the original sampler's categorical draws cost accuracy.",
}


# ------------------------------------------------------------------------------------------------- oracles
class PairTable(nn.Module):
    """Exact per-position posterior marginals for 2 positions with joint table ``P`` (network of the contract)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, theta: Tensor, tau: Tensor) -> Tensor:
        t1, t2 = theta[:, 0].double(), theta[:, 1].double()
        marginals = torch.stack([t1 * (t2 @ self.table.T), t2 * (t1 @ self.table)], 1)
        return torch.log(marginals.clamp_min(1e-300)).to(theta.dtype)


def joint_posterior3(z: Tensor) -> Tensor:
    """``w(x) ~ P(x) prod_d theta_d[x_d]`` for logits ``z`` of shape ``(B, 3, 3)``, flattened to 27 cells."""
    lt = torch.log_softmax(z.double(), -1)
    log_w = torch.log(TABLE3) + lt[:, 0, :, None, None] + lt[:, 1, None, :, None] + lt[:, 2, None, None, :]
    return torch.softmax(log_w.reshape(len(z), 27), -1)


def joint_posterior(z: Tensor) -> Tensor:
    """``w(x1, x2) ~ P(x1, x2) theta_1[x1] theta_2[x2]`` for logits ``z`` of shape ``(B, 2, 3)``, flattened to 9."""
    log_theta = torch.log_softmax(z.double(), -1)
    log_w = torch.log(TABLE) + log_theta[:, 0, :, None] + log_theta[:, 1, None, :]
    return torch.softmax(log_w.reshape(len(z), 9), -1)


def tv_of_indices(idx: Tensor, probs: Tensor) -> float:
    hist = torch.bincount(idx.flatten(), minlength=len(probs)).double() / idx.numel()
    return 0.5 * (hist - probs).abs().sum().item()


def w1_to_cdf(x: Tensor, cdf: Callable[[np.ndarray], np.ndarray]) -> float:
    """Wasserstein-1 distance ``int |F_n - F|`` between samples ``x`` and a distribution with CDF ``cdf``."""
    xs = np.sort(x.double().flatten().numpy())
    grid = np.linspace(min(xs[0], -3.0), max(xs[-1], 3.0), 60001)
    return float(np.trapezoid(np.abs(np.searchsorted(xs, grid, side="right") / len(xs) - cdf(grid)), grid))


def gaussian_cdf(grid: np.ndarray) -> np.ndarray:
    return norm.cdf((grid - GAUSSIAN[0]) / GAUSSIAN[1])


def mixture_cdf(grid: np.ndarray) -> np.ndarray:
    return sum(w * norm.cdf((grid - m) / s) for w, m, s in zip(*MIXTURE))


class Oracle:
    """A model with an exact denoiser, how to run a sampler on it, and the distance of the result to the truth."""

    def __init__(self, name: str, model: bfn.BFN, distance: Callable[[Tensor], float], samples: int, **options) -> None:
        self.name, self.model, self.distance, self.samples, self.options = name, model, distance, samples, options

    def error(self, sampler: str, budget: int, seed: int = 0) -> tuple[float, int]:
        spec = SAMPLERS[sampler]
        final = "denoise" if spec.prior_start else self.options.get("final", "drop")
        if spec.prior_start:
            steps = budget - 1  # n updates and the call at tau = 1
        elif final == "denoise":
            steps = max(1, (budget - 1) // spec.nfe_per_step)  # k n + 1 calls
        else:
            steps = (budget - 1) // spec.nfe_per_step + 1  # k (n - 1) + 1 calls
        options = {} if spec.prior_start else self.options
        out = sample(self.model, self.samples, sampler, steps, torch.Generator().manual_seed(seed), **options)
        return self.distance(out), out.nfe


def build_oracles(n: int) -> list[Oracle]:
    flow_g = ContinuousFlow(1e-3, clip=False)
    gauss = bfn.BFN(GaussianDenoiser(flow_g, *GAUSSIAN), flow_g, (1,))
    flow_m = ContinuousFlow(1e-3, clip=True)
    mixture = bfn.BFN(MixtureDenoiser(flow_m, *MIXTURE), flow_m, (1,))
    flow_b = ExactBinPosteriorFlow(16, math.sqrt(1e-3), BIN_PROBS.tolist())
    bins = bfn.BFN(ZeroNet(2), flow_b, (1,), dtype=torch.float64)
    flow_t = DiscreteFlow(3, 3.0)
    table = bfn.BFN(PairTable(TABLE), flow_t, (2,))
    draw = torch.Generator().manual_seed(123)
    w, m, s = (torch.tensor(v, dtype=torch.float64) for v in MIXTURE)
    mix_mean = float((w * m).sum())
    mix_var = float((w * (s**2 + m**2)).sum()) - mix_mean**2
    centres = flow_b.bin_centres()
    bin_mean = float((BIN_PROBS * centres).sum())
    bin_var = float((BIN_PROBS * centres**2).sum()) - bin_mean**2
    return [
        Oracle(
            "gaussian",
            gauss,
            lambda out: w1_to_cdf(out.samples, gaussian_cdf),
            n,
            init="moment",
            data_mean=GAUSSIAN[0],
            data_var=GAUSSIAN[1] ** 2,
        ),
        Oracle(
            "mixture",
            mixture,
            lambda out: w1_to_cdf(out.samples, mixture_cdf),
            n,
            init="moment",
            data_mean=mix_mean,
            data_var=mix_var,
        ),
        Oracle(
            "bins",
            bins,
            lambda out: tv_of_indices(flow_b.bin_index(out.samples), BIN_PROBS),
            n,
            final="denoise",
            init="moment",
            data_mean=bin_mean,
            data_var=bin_var,
        ),
        Oracle(
            "table",
            table,
            lambda out: tv_of_indices(torch.multinomial(joint_posterior(out.state), 1, generator=draw), TABLE.ravel()),
            table_samples(n),
            final="denoise",
            eta=1e-3,
        ),
    ]


def table_samples(n: int) -> int:
    """Samples for the 9-cell table: 5 times more than for the others (its TV floor is otherwise too high)."""
    return min(5 * n, 200_000)


def floors(n: int, seed: int = 99) -> dict[str, float]:
    """The distances of exact samples of size ``n`` (the Monte-Carlo floor of each oracle)."""
    g = torch.Generator().manual_seed(seed)
    gauss = GAUSSIAN[0] + GAUSSIAN[1] * torch.randn(n, generator=g, dtype=torch.float64)
    k = torch.multinomial(torch.tensor(MIXTURE[0], dtype=torch.float64), n, replacement=True, generator=g)
    mix = torch.tensor(MIXTURE[1])[k] + torch.tensor(MIXTURE[2])[k] * torch.randn(n, generator=g, dtype=torch.float64)
    return {
        "gaussian": w1_to_cdf(gauss, gaussian_cdf),
        "mixture": w1_to_cdf(mix, mixture_cdf),
        "bins": tv_of_indices(torch.multinomial(BIN_PROBS, n, replacement=True, generator=g), BIN_PROBS),
        "table": tv_of_indices(
            torch.multinomial(TABLE.flatten(), table_samples(n), replacement=True, generator=g), TABLE.flatten()
        ),
    }


# ------------------------------------------------------------------------------------- default vs floor
def default_oracles() -> dict[str, tuple[bfn.BFN, Callable[[Tensor, int], Tensor], Tensor | None]]:
    """``name -> (model, exact sampler of size n with a seed, None)``: the oracles of the default-vs-floor table."""
    flow_m = ContinuousFlow(0.02, clip=True)
    mixture = bfn.BFN(MixtureDenoiser(flow_m, *MIXTURE), flow_m, (1,))
    flow_t = DiscreteFlow(3, 3.0)
    table = bfn.BFN(TripleTable(TABLE3), flow_t, (3,))
    return {"mixture-0.02": mixture, "table3": table}


def default_error(name: str, model: bfn.BFN, sampler: str, nfe: int, n: int, seed: int) -> tuple[float, int]:
    """The distance to the truth of ``n`` samples of ``sampler`` (``"auto"``: ``nfe`` calls; named: the most steps
    within ``nfe`` calls, ``final="drop"``) and the calls it made."""
    steps = nfe if sampler == "auto" else (nfe - 1) // SAMPLERS[sampler].nfe_per_step + 1
    out = sample(model, n, sampler, steps, torch.Generator().manual_seed(seed))
    if name == "table3":
        draw = torch.Generator().manual_seed(1000 + seed)
        idx = torch.multinomial(joint_posterior3(out.state), 1, generator=draw)
        return tv_of_indices(idx, TABLE3.ravel()), out.nfe
    return w1_to_cdf(out.samples, mixture_cdf), out.nfe


def default_floor(name: str, n: int, seed: int) -> float:
    g = torch.Generator().manual_seed(10_000 + seed)
    if name == "table3":
        return tv_of_indices(torch.multinomial(TABLE3.ravel(), n, replacement=True, generator=g), TABLE3.ravel())
    k = torch.multinomial(torch.tensor(MIXTURE[0], dtype=torch.float64), n, replacement=True, generator=g)
    x = torch.tensor(MIXTURE[1])[k] + torch.tensor(MIXTURE[2])[k] * torch.randn(n, generator=g, dtype=torch.float64)
    return w1_to_cdf(x, mixture_cdf)


def default_table(n: int, nfes: tuple[int, ...], seeds: tuple[int, ...], references: bool = True) -> None:
    """Print the default (and reference presets) against the Monte-Carlo floor: mean (min-max) over ``seeds``."""
    print(f"## The default sampler against the Monte-Carlo floor ({n} samples, seeds {list(seeds)})\n")
    for name, model in default_oracles().items():
        kind = model.flow.kind
        floor = np.array([default_floor(name, n, s) for s in seeds])
        metric = "TV" if kind == "discrete" else "W1"
        print(f"### {name} ({kind}, {metric}; floor {floor.mean():.4f}, {floor.min():.4f}-{floor.max():.4f})\n")
        print("| sampler | " + " | ".join(f"NFE {b}" for b in nfes) + " |")
        print("|---|" + "---|" * len(nfes))
        rows = ["auto", *(REFERENCES[kind] if references else ())]
        for sampler in rows:
            cells = []
            for budget in nfes:
                errs, used = zip(*(default_error(name, model, sampler, budget, n, s) for s in seeds))
                e = np.array(errs)
                cell = f"{e.mean():.4f} ({e.min():.4f}-{e.max():.4f}) {e.mean() / floor.mean():.2f}x"
                cells.append(cell + ("" if used[0] == budget else f" [{used[0]}]"))
            print(f"| {sampler} | " + " | ".join(cells) + " |", flush=True)
        print()
    print("(each cell: mean error (min-max over the seeds) and its ratio to the mean floor)\n")


# ------------------------------------------------------------------------------------------- user view
def table3_index(samples: Tensor) -> Tensor:
    """Cell index of samples of shape ``(B, 3)`` in the flattened 27-cell table."""
    return samples[:, 0] * 9 + samples[:, 1] * 3 + samples[:, 2]


def decoding_floors(n: int, seed: int, beta_1: float = 3.0) -> dict[str, float]:
    """TV of ``n`` exact samples (``mc``), and of exact logits at ``t = 0`` decoded per position by the argmax of the
    exact ``e_hat`` (``argmax``) or by a draw from it (``draw``), or by a draw from the joint posterior (``joint``)."""
    g = torch.Generator().manual_seed(20_000 + seed)
    probs = TABLE3.ravel()
    x = torch.multinomial(probs, n, replacement=True, generator=g)
    cells = torch.stack([x // 9, (x // 3) % 3, x % 3], 1)
    e = torch.nn.functional.one_hot(cells, 3).double()
    z = beta_1 * (3 * e - 1) + math.sqrt(3 * beta_1) * torch.randn(n, 3, 3, generator=g, dtype=torch.float64)
    logits = TripleTable(TABLE3)(torch.softmax(z, -1), torch.ones(n, dtype=torch.float64))
    draws = torch.multinomial(torch.softmax(logits, -1).reshape(-1, 3), 1, generator=g).reshape(n, 3)
    joint = torch.multinomial(joint_posterior3(z), 1, generator=g).squeeze(-1)
    return {
        "mc": tv_of_indices(x, probs),
        "argmax": tv_of_indices(table3_index(logits.argmax(-1)), probs),
        "draw": tv_of_indices(table3_index(draws), probs),
        "joint": tv_of_indices(joint, probs),
    }


def user_table(n: int, nfes: tuple[int, ...], seeds: tuple[int, ...]) -> None:
    """TV of the returned samples on ``table3`` for ``auto`` and every discrete solver with its defaults."""
    model = default_oracles()["table3"]
    print(f"## What a user gets: table3, TV of the returned samples ({n} samples, seeds {list(seeds)})\n")
    floors = [decoding_floors(n, s) for s in seeds]
    for key, label in (
        ("mc", "exact samples (Monte-Carlo floor)"),
        ("joint", "exact logits at t = 0, joint posterior draw"),
        ("argmax", "exact logits at t = 0, per-position argmax of e_hat"),
        ("draw", "exact logits at t = 0, per-position draw from e_hat"),
    ):
        v = np.array([f[key] for f in floors])
        print(f"* {label}: {v.mean():.4f} ({v.min():.4f}-{v.max():.4f})")
    print("\n| sampler | " + " | ".join(f"NFE {b}" for b in nfes) + " |")
    print("|---|" + "---|" * len(nfes))
    names = ["auto", *(name for name, spec in SAMPLERS.items() if "discrete" in spec.kinds)]
    for name in names:
        cells = []
        for budget in nfes:
            spec = SAMPLERS.get(name)
            steps = (
                budget if spec is None else budget - 1 if spec.prior_start else (budget - 1) // spec.nfe_per_step + 1
            )
            errs, used = [], 0
            for seed in seeds:
                out = sample(model, n, name, steps, torch.Generator().manual_seed(seed))
                errs.append(tv_of_indices(table3_index(out.samples), TABLE3.ravel()))
                used = out.nfe
            e = np.array(errs)
            cells.append(f"{e.mean():.4f} ({e.min():.4f}-{e.max():.4f})" + ("" if used == budget else f" [{used}]"))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print("\n(each cell: mean TV (min-max over the seeds); [k]: the NFE used where the budget does not divide)\n")


# ------------------------------------------------------------------------------------------------ overhead
class MLP(nn.Module):
    """A small time-conditioned MLP of the network contract (flattened input and time in, ``out`` per element)."""

    def __init__(self, dims: int, channels_in: int, channels_out: int, width: int = 512) -> None:
        super().__init__()
        self.channels_out = channels_out
        self.layers = nn.Sequential(
            nn.Linear(dims * channels_in + 1, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, dims * channels_out),
        )

    def forward(self, inputs: Tensor, tau: Tensor) -> Tensor:
        out = self.layers(torch.cat([inputs.flatten(1), tau[:, None]], 1))
        shape = (len(inputs), -1) if self.channels_out == 1 else (len(inputs), -1, self.channels_out)
        return 0.1 * out.reshape(shape)


def time_it(fn: Callable[[], object], repeats: int) -> float:
    """Shortest CPU time of ``fn`` over ``repeats`` runs (after one warm-up run).

    CPU time of this process on one thread, not wall time, so that other programs sharing the machine do not count.
    """
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return float(min(times))


def overhead(batch: int, steps: int, repeats: int) -> list[tuple[str, str, int, float, float, float]]:
    """``(sampler, kind, nfe, ms per network call, sampler us per call, overhead %)`` for every sampler and kind.

    The sampler's own cost is timed with a free network in place of the MLP (``oracles.ZeroNet``: zeros of the output
    shape), so it holds the flow's input map, the data prediction, the update and the noise; the MLP is timed alone
    on a sampling batch; the overhead is their ratio per network call.
    """
    torch.manual_seed(0)
    dims = 64
    setups = {
        "continuous": (ContinuousFlow(1e-3), 1, 1),
        "discretised": (bfn.DiscretisedFlow(16, math.sqrt(1e-3)), 1, 2),
        "discrete": (DiscreteFlow(27, 0.5625), 27, 27),
    }
    rows = []
    with torch.no_grad():
        for kind, (flow, channels_in, channels_out) in setups.items():
            net = MLP(dims, channels_in, channels_out)
            free = bfn.BFN(ZeroNet(channels_out, channels_in > 1), flow, (dims,))
            state = flow.prior_state(batch, (dims,), torch.float32, "cpu") + 0.1
            inputs, tau = flow.net_input(state), torch.full((batch,), 0.5)
            per_call = time_it(lambda n=net, i=inputs, t=tau: n(i, t), repeats * 5)
            for name, spec in SAMPLERS.items():
                if kind not in spec.kinds:
                    continue
                run = lambda m=free, n=name: sample(m, batch, n, steps, torch.Generator().manual_seed(0))
                nfe = run().nfe
                own = time_it(run, repeats) / nfe
                rows.append((name, kind, nfe, 1e3 * per_call, 1e6 * own, 100.0 * own / per_call))
    return rows


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="200k samples per cell (default 20k)")
    mode.add_argument("--quick", action="store_true", help="smoke run: 500 samples, NFE 5 and 10, short timing")
    mode.add_argument("--default", action="store_true", help="only the default against the floor (100k samples)")
    mode.add_argument("--user", action="store_true", help="discrete: TV of the returned samples (100k samples)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n = 200_000 if args.full else 500 if args.quick else 20_000
    nfes = (5, 10) if args.quick else NFES
    if args.default:
        default_table(DEFAULT_SAMPLES, NFES, DEFAULT_SEEDS)
        return
    if args.user:
        user_table(DEFAULT_SAMPLES, NFES, DEFAULT_SEEDS)
        return
    default_table(n, nfes, DEFAULT_SEEDS[:1] if args.quick else DEFAULT_SEEDS, references=False)

    print(f"## Accuracy against exact denoisers ({n} samples per cell, {table_samples(n)} for the table)\n")
    floor = floors(n)
    for oracle in build_oracles(n):
        kind = oracle.model.flow.kind
        metric = "TV" if oracle.name in ("bins", "table") else "W1"
        print(f"### {oracle.name} ({kind}, {metric}; Monte-Carlo floor {floor[oracle.name]:.4f})\n")
        if oracle.name in NOTES:
            print(NOTES[oracle.name] + "\n")
        print("| sampler | " + " | ".join(f"NFE {b}" for b in nfes) + " |")
        print("|---|" + "---|" * len(nfes))
        for name, spec in SAMPLERS.items():
            if kind not in spec.kinds:
                continue
            cells = []
            for budget in nfes:
                err, used = oracle.error(name, budget)
                cells.append(f"{err:.4f}" + ("" if used == budget else f" ({used})"))
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        print()
    print("(a number in brackets is the NFE actually used where the budget does not divide into whole steps)\n")

    batch, steps, repeats = (16, 2, 1) if args.quick else (256, 20, 5)
    print(f"## Sampler overhead (64 elements per example, batch {batch}, {steps} steps, one thread, CPU time)\n")
    print("| sampler | kind | NFE | MLP call (ms) | sampler per call (us) | overhead % |")
    print("|---|---|---|---|---|---|")
    for name, kind, nfe, ms, us, pct in overhead(batch, steps, repeats):
        print(f"| {name} | {kind} | {nfe} | {ms:.2f} | {us:.0f} | {pct:.1f} |", flush=True)


if __name__ == "__main__":
    main()
