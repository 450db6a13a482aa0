"""Against the peers: BFN vs diffusion (``diffusers``) vs flow matching (``flow_matching``) at equal budget.

Every method trains the *same* reference network of :mod:`bfn.nets` (the library's default network for the data
source, :data:`bfn.training.DEFAULT_NETS`) with the same optimizer (AdamW, the library's default learning rate,
warm-up, gradient clipping and EMA decay), batch size, number of steps, data order and seed; only the loss differs:

* ``bfn``: this library's continuous-time loss ``L_inf`` (Graves et al., 2023, eqs. 101, 128 and 182) with its
  default recipe (``sigma_1`` / ``beta_1`` from :meth:`bfn.training.TrainConfig.resolved`), sampled with
  :data:`BFN_SAMPLERS` (BFN-Solver++2 on the log-SNR grid, discrete BFN-Solver2; Xue et al., ICML 2024).
* ``ddpm``: noise prediction (Ho et al., 2020, eq. 14) on ``diffusers.DDPMScheduler`` (1000 steps, linear betas),
  sampled with ``DPMSolverMultistepScheduler`` (DPM-Solver++(2M)), ``UniPCMultistepScheduler`` (UniPC-2) at the
  same NFE, and DDPM ancestral sampling at 1000 NFE as its floor. For binarised digits it runs on ``2 k - 1`` in
  {-1, 1} and thresholds its samples at 0 (``diffusers`` has no discrete diffusion of this kind).
* ``fm``: flow matching (Lipman et al., 2023) on ``flow_matching.path.CondOTProbPath`` (an ``AffineProbPath``),
  velocity regression, sampled with its ``ODESolver`` (Euler: ``n`` calls; midpoint: 2 calls per step); for discrete
  data discrete flow matching (Gat et al., 2024) on ``MixtureDiscreteProbPath`` with a mask source and a quadratic
  ``PolynomialConvexScheduler``, cross-entropy on ``x_1``, sampled with ``MixtureDiscreteEulerSolver``.

Discretised digits: BFN uses its discretised flow (17 bins); the peers train on the bin centres as continuous data
and their samples are rounded to the nearest bin centre.

Metrics: toy 2-D sets (:mod:`bfn.data.toy`): off-manifold share (share of samples farther than
:data:`OFF_MANIFOLD_RADIUS` from every training point), coverage (share of test points with a sample within that
radius), regions lost (of the :data:`NUM_REGIONS` k-means regions of the training data, those that receive less
than a fifth of their share of samples) and sliced W1 (:func:`bfn.metrics.sliced_wasserstein`) against the test
split; digits: FID-digits (:func:`bfn.training.quality_metric`, on the shipped digits classifier's features).

``diffusers`` and ``flow_matching`` are benchmark-only dependencies (``pip install -e ".[bench]"``); the library
never imports them. Usage::

    python benchmarks/peers.py                 # every case, results in benchmarks/results/peers*.{json,md,png}
    python benchmarks/peers.py --cases toy:two_moons digits-continuous
    python benchmarks/peers.py --quick --out /tmp/peers   # smoke test (well under a minute; numbers mean nothing)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import bfn
from bfn.data import TOY_SETS, bins_to_centres
from bfn.metrics import sliced_wasserstein
from bfn.nets import build_net
from bfn.training import EMA, TrainConfig, load_bundle, quality_metric, steps_for_nfe

RESULTS_DIR = Path(__file__).resolve().parent / "results"

NFE_GRID: tuple[int, ...] = (5, 10, 20, 50)
"""Network-evaluation budgets of every sampler (DDPM ancestral runs at :data:`DDPM_FLOOR_NFE` only)."""

DDPM_FLOOR_NFE = 1000
DDPM_TRAIN_STEPS = 1000

BFN_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "continuous": ("bfn-solver++2", {"grid": "logsnr"}),
    "discretised": ("bfn-solver++2", {"grid": "logsnr"}),
    "discrete": ("bfn-solver2", {}),
}
"""BFN's sampler per data kind, named explicitly (one place to switch to the library's default sampler later)."""

OFF_MANIFOLD_RADIUS = 0.05
NUM_REGIONS = 8
REGION_LOST_FRACTION = 0.2

SEED = 0

Sample = tuple[str, int, Tensor]


# ================================================================================================== cases


@dataclass(frozen=True)
class Case:
    """One data set and data kind: its training config (BFN's default recipe) and how many samples are scored."""

    name: str
    data: str
    flow: str
    num_samples: int
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def is_toy(self) -> bool:
        return self.data.startswith("toy:")

    def config(self, steps: int) -> TrainConfig:
        """The resolved training config (library defaults for this data source and flow)."""
        base = {"data": self.data, "flow": self.flow, "steps": steps, "device": "cpu", "progress": False}
        return TrainConfig.from_dict({**base, **self.train}).resolved()


def cases(quick: bool = False) -> dict[str, Case]:
    """Every case by name: the four toy sets, digits continuous, discretised (17 bins) and binarised (K = 2)."""
    toy_samples, digit_samples = (256, 128) if quick else (2000, 1000)
    tiny = {"net": "mlp", "net_options": {"hidden": 32, "depth": 1}, "batch_size": 32, "warmup": 1} if quick else {}
    out = [Case(f"toy:{name}", f"toy:{name}", "continuous", toy_samples, dict(tiny)) for name in TOY_SETS]
    out += [
        Case("digits-continuous", "digits", "continuous", digit_samples, dict(tiny)),
        Case("digits-discretised", "digits", "discretised", digit_samples, {"num_bins": 17, **tiny}),
        Case("digits-binary", "digits", "discrete", digit_samples, dict(tiny)),
    ]
    return {c.name: c for c in out}


# ================================================================================================== networks


class TimeMapped(nn.Module):
    """A reference network ``net(inputs, tau)`` (tau in [0, 1], 1 = data) seen through another method's clock.

    ``ddpm``: integer timesteps ``k`` in [0, 1000) map to ``tau = 1 - k / 1000``; ``fm``: flow-matching time is
    already 0 = noise, 1 = data. Discrete flow matching feeds its tokens one-hot (the ``theta`` input of a discrete
    BFN) and reads logits.
    """

    def __init__(self, net: nn.Module, clock: str, num_classes: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.clock = clock
        self.num_classes = num_classes
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        tau = 1.0 - t / DDPM_TRAIN_STEPS if self.clock == "ddpm" else t
        if self.num_classes is not None:
            x = F.one_hot(x, self.num_classes).to(torch.float32)
        return self.net(x, tau.to(torch.float32))


# ================================================================================================== methods


@dataclass
class Method:
    """One generative method on one case: its trainable network, its loss and its samplers."""

    name: str
    net: nn.Module
    loss: Callable[[Tensor, torch.Generator], Tensor]
    samplers: Callable[[nn.Module, int, int, Sequence[int], int], Iterator[tuple[str, int, Tensor]]]
    """``samplers(ema_net, num_samples, seed, nfe_grid, floor_nfe)`` yields ``(label, nfe, samples)``."""


def as_signed(x: Tensor, case: Case) -> Tensor:
    """Training data of a peer: continuous / discretised values as they are; binary classes ``k`` as ``2k - 1``."""
    return x.to(torch.float32) * 2.0 - 1.0 if case.flow == "discrete" else x


def finish_continuous(samples: Tensor, case: Case, num_bins: int | None) -> Tensor:
    """A peer's real-valued samples in the data's own form (clipped; nearest bin centre; thresholded class)."""
    samples = samples.clamp(-1.0, 1.0)
    if case.flow == "discretised":
        assert num_bins is not None
        k = torch.floor((samples + 1.0) * num_bins / 2.0).clamp(0, num_bins - 1)
        return bins_to_centres(k, num_bins)
    if case.flow == "discrete":
        return (samples > 0).long()
    return samples


def bfn_method(config: TrainConfig, bundle: Any, case: Case) -> Method:
    torch.manual_seed(SEED)
    model = config.model_config(bundle).build()
    sampler, options = BFN_SAMPLERS[case.flow]

    def loss(x: Tensor, generator: torch.Generator) -> Tensor:
        return model.loss(x, generator=generator)

    def samplers(net: nn.Module, num: int, seed: int, grid: Sequence[int], floor: int) -> Iterator[Sample]:
        ema_model = bfn.BFN(net, model.flow, model.data_shape).eval()
        for nfe in grid:
            steps = steps_for_nfe(sampler, case.flow, nfe, **options)
            out = ema_model.sample(num, sampler, steps, torch.Generator().manual_seed(seed), **options)
            yield f"bfn {sampler}{':logsnr' if options.get('grid') == 'logsnr' else ''}", out.nfe, out.samples

    return Method("bfn", model.net, loss, samplers)


def ddpm_method(config: TrainConfig, bundle: Any, case: Case) -> Method:
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    torch.manual_seed(SEED)
    net = build_net(config.net, bundle.data_shape, 1, 1, **(config.net_options or {}))
    wrapped = TimeMapped(net, "ddpm")
    train_sched = DDPMScheduler(num_train_timesteps=DDPM_TRAIN_STEPS, beta_schedule="linear")
    alphas_bar = train_sched.alphas_cumprod.to(torch.float32)
    num_bins = bundle.num_bins if case.flow == "discretised" else None

    def loss(x: Tensor, generator: torch.Generator) -> Tensor:
        x = as_signed(x, case)
        k = torch.randint(0, DDPM_TRAIN_STEPS, (x.shape[0],), generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        a = alphas_bar[k].reshape(-1, *([1] * (x.dim() - 1)))
        noisy = a.sqrt() * x + (1 - a).sqrt() * noise  # = DDPMScheduler.add_noise
        return F.mse_loss(wrapped(noisy, k.to(torch.float32)), noise)

    def run(scheduler: Any, ema_net: nn.Module, num: int, seed: int, steps: int) -> tuple[int, Tensor]:
        generator = torch.Generator().manual_seed(seed)
        shaped = TimeMapped(ema_net, "ddpm")
        scheduler.set_timesteps(steps)
        x = torch.randn((num, *bundle.data_shape), generator=generator)
        for k in scheduler.timesteps:
            eps = shaped(x, torch.full((num,), float(k)))
            kwargs = {"generator": generator} if isinstance(scheduler, DDPMScheduler) else {}
            x = scheduler.step(eps, k, x, **kwargs).prev_sample
        return shaped.calls, finish_continuous(x, case, num_bins)

    def samplers(ema_net: nn.Module, num: int, seed: int, grid: Sequence[int], floor: int) -> Iterator[Sample]:
        config = train_sched.config
        for nfe in grid:
            dpm = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
            yield ("ddpm dpm-solver++2m", *run(dpm, ema_net, num, seed, nfe))
            unipc = UniPCMultistepScheduler.from_config(config, solver_order=2)
            yield ("ddpm unipc-2", *run(unipc, ema_net, num, seed, nfe))
        yield ("ddpm ancestral", *run(DDPMScheduler.from_config(config), ema_net, num, seed, floor))

    return Method("ddpm", net, loss, samplers)


def fm_method(config: TrainConfig, bundle: Any, case: Case) -> Method:
    if case.flow == "discrete":
        return discrete_fm_method(config, bundle, case)
    from flow_matching.path import CondOTProbPath
    from flow_matching.solver import ODESolver

    torch.manual_seed(SEED)
    net = build_net(config.net, bundle.data_shape, 1, 1, **(config.net_options or {}))
    wrapped = TimeMapped(net, "fm")
    path = CondOTProbPath()
    num_bins = bundle.num_bins if case.flow == "discretised" else None

    def loss(x: Tensor, generator: torch.Generator) -> Tensor:
        x1 = as_signed(x, case)
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(x1.shape[0], generator=generator)
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        return F.mse_loss(wrapped(sample.x_t, sample.t), sample.dx_t)

    def samplers(ema_net: nn.Module, num: int, seed: int, grid: Sequence[int], floor: int) -> Iterator[Sample]:
        for method, calls_per_step in (("euler", 1), ("midpoint", 2)):
            for nfe in grid:
                shaped = TimeMapped(ema_net, "fm")
                x0 = torch.randn((num, *bundle.data_shape), generator=torch.Generator().manual_seed(seed))
                steps = max(nfe // calls_per_step, 1)
                times = torch.linspace(0.0, 1.0, steps + 1)
                with torch.no_grad():
                    x1 = ODESolver(velocity_model=shaped).sample(
                        x_init=x0, step_size=None, method=method, time_grid=times
                    )
                yield f"fm {method}", shaped.calls, finish_continuous(x1, case, num_bins)

    return Method("fm", net, loss, samplers)


def discrete_fm_method(config: TrainConfig, bundle: Any, case: Case) -> Method:
    from flow_matching.path import MixtureDiscreteProbPath
    from flow_matching.path.scheduler import PolynomialConvexScheduler
    from flow_matching.solver import MixtureDiscreteEulerSolver
    from flow_matching.utils import ModelWrapper

    classes = int(bundle.num_classes)
    mask = classes  # the source: every token masked
    vocab = classes + 1
    torch.manual_seed(SEED)
    net = build_net(config.net, bundle.data_shape, vocab, vocab, **(config.net_options or {}))
    wrapped = TimeMapped(net, "fm", num_classes=vocab)
    path = MixtureDiscreteProbPath(scheduler=PolynomialConvexScheduler(n=2.0))

    def logits(module: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        out = module(x, t)
        return out.masked_fill(F.one_hot(torch.tensor(mask), vocab).bool(), -math.inf)  # never predict the mask

    def loss(x: Tensor, generator: torch.Generator) -> Tensor:
        t = torch.rand(x.shape[0], generator=generator)
        x_t = path.sample(x_0=torch.full_like(x, mask), x_1=x, t=t).x_t  # draws from torch's default generator
        return F.cross_entropy(logits(wrapped, x_t, t).movedim(-1, 1), x)

    class Posterior(ModelWrapper):
        def __init__(self, module: nn.Module) -> None:
            super().__init__(module)

        def forward(self, x: Tensor, t: Tensor, **extras: Any) -> Tensor:
            return torch.softmax(logits(self.model, x, t), dim=-1)

    def samplers(ema_net: nn.Module, num: int, seed: int, grid: Sequence[int], floor: int) -> Iterator[Sample]:
        for nfe in grid:
            shaped = TimeMapped(ema_net, "fm", num_classes=vocab)
            solver = MixtureDiscreteEulerSolver(model=Posterior(shaped), path=path, vocabulary_size=vocab)
            x0 = torch.full((num, *bundle.data_shape), mask, dtype=torch.long)
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(seed)  # the solver draws from torch's default generator
                out = solver.sample(x_init=x0, step_size=None, time_grid=torch.linspace(0.0, 1.0 - 1e-3, nfe + 1))
            yield "fm discrete-euler", shaped.calls, out

    return Method("fm", net, loss, samplers)


METHODS: dict[str, Callable[[TrainConfig, Any, Case], Method]] = {
    "bfn": bfn_method,
    "ddpm": ddpm_method,
    "fm": fm_method,
}


# ================================================================================================== training


def train_method(method: Method, config: TrainConfig, data: Tensor) -> tuple[nn.Module, float]:
    """Train ``method.net`` with the shared recipe; returns the EMA network and the CPU seconds spent.

    Identical for every method: AdamW (``lr``, ``betas``, ``weight_decay``), linear warm-up, gradient clipping,
    EMA with :class:`bfn.training.EMA`, batches drawn in the same order (a permutation per epoch seeded by
    ``SEED``) and the loss noise from one generator seeded by ``SEED``.
    """
    net = method.net.train()
    ema = EMA(net, config.ema_decay)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(SEED)
    noise = torch.Generator().manual_seed(SEED + 1)
    batches = data.shape[0] // config.batch_size
    start = time.process_time()
    perm = torch.randperm(data.shape[0], generator=order)
    for step in range(config.steps):
        if step % batches == 0 and step:
            perm = torch.randperm(data.shape[0], generator=order)
        index = perm[(step % batches) * config.batch_size : (step % batches + 1) * config.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup) if config.warmup else config.lr
        loss = method.loss(data[index], noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip or math.inf)
        optimizer.step()
        ema.update(step)
    return ema.net.eval(), time.process_time() - start


# ================================================================================================== metrics


def nearest_distance(a: Tensor, b: Tensor, chunk: int = 2048) -> Tensor:
    """For each row of ``a`` ``(N, D)`` the Euclidean distance to its nearest row of ``b`` ``(M, D)``, ``(N,)``."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    return torch.cat([torch.cdist(a[i : i + chunk], b).min(dim=1).values for i in range(0, a.shape[0], chunk)])


def region_centres(train: Tensor, regions: int = NUM_REGIONS, seed: int = SEED) -> Tensor:
    """``regions`` k-means centres of the training points (scikit-learn, fixed seed), ``(regions, 2)``."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=regions, n_init=4, random_state=seed).fit(train.double().numpy())
    return torch.from_numpy(km.cluster_centers_)


def toy_scores(samples: Tensor, train: Tensor, test: Tensor, centres: Tensor) -> dict[str, float]:
    """Off-manifold share, coverage, regions lost and sliced W1 of 2-D ``samples`` (see the module docstring)."""
    samples = samples.reshape(samples.shape[0], -1).double()
    off = float((nearest_distance(samples, train) > OFF_MANIFOLD_RADIUS).double().mean())
    coverage = float((nearest_distance(test, samples) <= OFF_MANIFOLD_RADIUS).double().mean())
    real = torch.bincount(torch.cdist(train.double(), centres).argmin(1), minlength=len(centres)) / train.shape[0]
    got = torch.bincount(torch.cdist(samples, centres).argmin(1), minlength=len(centres)) / samples.shape[0]
    lost = int((got < REGION_LOST_FRACTION * real).sum())
    return {
        "off_manifold": off,
        "coverage": coverage,
        "regions_lost": lost,
        "sliced_w1": sliced_wasserstein(samples, test),
    }


# ================================================================================================== one case


def _stack(split: Any) -> Tensor:
    return torch.stack([split[i] for i in range(len(split))])


def case_scorer(case: Case, bundle: Any) -> Callable[[Tensor], dict[str, float]]:
    """``samples -> metrics`` of a case: the toy metrics, or FID-digits against the training split."""
    if case.is_toy:
        train_pts, test = _stack(bundle.train).double(), _stack(bundle.test).double()
        centres = region_centres(train_pts)
        return lambda s: toy_scores(s, train_pts, test, centres)
    metric = quality_metric(case.data, bundle, case.config(1).flow_for(bundle), seed=SEED)
    assert metric is not None
    return lambda s: {"fid": metric.score(s)}


def real_data_scores(case: Case) -> dict[str, float]:
    """The metrics of held-out real data, the floor of every method: ``num_samples`` fresh points of a toy set
    (its validation stream), or the test split of the digits."""
    config = case.config(1)
    bundle = load_bundle(config)
    if case.is_toy:
        from bfn.data.toy import toy_bundle

        held_out = toy_bundle(case.data.partition(":")[2], num_val=case.num_samples).val
    else:
        held_out = bundle.test
    return case_scorer(case, bundle)(_stack(held_out))


def run_case(
    case: Case,
    steps: int,
    methods: Sequence[str],
    grid: Sequence[int] = NFE_GRID,
    floor: int = DDPM_FLOOR_NFE,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train every method on ``case`` and score every sampler at every NFE; a JSON-able dict."""
    config = case.config(steps)
    bundle = load_bundle(config)
    data = torch.stack([bundle.train[i] for i in range(len(bundle.train))])
    rows: list[dict[str, Any]] = []
    train_info: dict[str, Any] = {}
    score = case_scorer(case, bundle)
    for name in methods:
        method = METHODS[name](config, bundle, case)
        ema_net, seconds = train_method(method, config, data)
        train_info[name] = {
            "cpu_seconds": round(seconds, 2),
            "parameters": sum(p.numel() for p in ema_net.parameters()),
        }
        log(f"{case.name}: trained {name} in {seconds:.1f} s CPU")
        start = time.process_time()
        with torch.no_grad():
            for label, nfe, samples in method.samplers(ema_net, case.num_samples, SEED, grid, floor):
                rows.append({"method": name, "sampler": label, "nfe": int(nfe), **score(samples)})
        train_info[name]["sample_cpu_seconds"] = round(time.process_time() - start, 2)
    return {
        "case": case.name,
        "data": case.data,
        "flow": case.flow,
        "num_samples": case.num_samples,
        "nfe_grid": list(grid),
        "floor_nfe": floor,
        "recipe": {
            k: getattr(config, k)
            for k in ("steps", "batch_size", "lr", "warmup", "grad_clip", "ema_decay", "net", "net_options")
        },
        "bfn_flow": {"sigma_1": config.sigma_1, "beta_1": config.beta_1, "num_bins": bundle.num_bins},
        "train": train_info,
        "rows": rows,
        "real_data": real_data_scores(case),
    }


# ================================================================================================== reports


def primary_metric(result: dict[str, Any]) -> str:
    return "off_manifold" if result["data"].startswith("toy:") else "fid"


def case_table(result: dict[str, Any]) -> str:
    """Markdown: one row per sampler, one column per NFE (primary metric; toy sets also the other metrics at 10)."""
    metric = primary_metric(result)
    labels = list(dict.fromkeys(r["sampler"] for r in result["rows"]))
    head = f"| sampler ({'off-manifold %' if metric == 'off_manifold' else 'FID-digits'}) | "
    grid, floor = result["nfe_grid"], result["floor_nfe"]
    head += " | ".join(f"{n} NFE" for n in grid) + f" | {floor} NFE |"
    lines = [head, "|" + "---|" * (len(grid) + 2)]
    for label in labels:
        cells = []
        for nfe in [*grid, floor]:
            hits = [r for r in result["rows"] if r["sampler"] == label and _near(r["nfe"], nfe)]
            cells.append(_fmt(hits[0][metric], metric) if hits else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if metric == "off_manifold":
        lines += [
            "",
            "| sampler @ 10 NFE | off-manifold % | coverage % | regions lost | sliced W1 |",
            "|---|---|---|---|---|",
        ]
        for label in labels:
            hits = [r for r in result["rows"] if r["sampler"] == label and _near(r["nfe"], 10)]
            hits = hits or [r for r in result["rows"] if r["sampler"] == label]
            r = hits[0]
            lines.append(
                f"| {label} ({r['nfe']}) | {100 * r['off_manifold']:.1f} | {100 * r['coverage']:.1f} | "
                f"{r['regions_lost']} / {NUM_REGIONS} | {r['sliced_w1']:.4f} |"
            )
        real = result.get("real_data")
        if real:
            lines.append(
                f"| real data (held out) | {100 * real['off_manifold']:.1f} | {100 * real['coverage']:.1f} | "
                f"{real['regions_lost']} / {NUM_REGIONS} | {real['sliced_w1']:.4f} |"
            )
    elif result.get("real_data"):
        lines += ["", f"Real data (test split): FID-digits {result['real_data']['fid']:.2f}."]
    cpu = ", ".join(f"{m} {v['cpu_seconds']:.0f} s" for m, v in result["train"].items())
    lines += ["", f"Training CPU time (one thread): {cpu}."]
    return "\n".join(lines)


def _near(nfe: int, target: int) -> bool:
    """The multistep solvers hit every budget exactly; the BFN solver and FM midpoint may use one call fewer."""
    return target - 1 <= nfe <= target


def _fmt(value: float, metric: str) -> str:
    return f"{100 * value:.1f}" if metric == "off_manifold" else f"{value:.2f}"


def _cell(row: dict[str, Any], metric: str) -> str:
    if metric != "off_manifold":
        return _fmt(row[metric], metric)
    return f"{_fmt(row[metric], metric)} · SW1 {row['sliced_w1']:.3f} · lost {row['regions_lost']}"


def summary_table(results: Sequence[dict[str, Any]], nfe: int = 10) -> str:
    """Markdown: per case, the best sampler of each method at ``nfe`` (primary metric, lower is better).

    Toy cells also give the sliced W1 and the regions lost of that sampler; the last column is held-out real data.
    """
    methods = list(dict.fromkeys(r["method"] for res in results for r in res["rows"]))
    head = f"| data set (metric) @ {nfe} NFE | " + " | ".join(methods) + " | real data |"
    lines = [head, "|---|" + "---|" * (len(methods) + 1)]
    for res in results:
        metric = primary_metric(res)
        cells = []
        for m in methods:
            hits = [r for r in res["rows"] if r["method"] == m and _near(r["nfe"], nfe)]
            if not hits:
                cells.append("")
                continue
            best = min(hits, key=lambda r: r[metric])
            cells.append(f"{_cell(best, metric)} ({best['sampler'].split(' ', 1)[1]})")
        real = res.get("real_data")
        cells.append(_cell(real, metric) if real else "")
        name = "off-manifold %" if metric == "off_manifold" else "FID-digits"
        lines.append(f"| {res['case']} ({name}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """One panel per case: primary metric against NFE for every sampler (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(results), 4)
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, res in zip(axes.flat, results):
        metric = primary_metric(res)
        for label in dict.fromkeys(r["sampler"] for r in res["rows"]):
            pts = sorted((r["nfe"], r[metric]) for r in res["rows"] if r["sampler"] == label)
            if len(pts) == 1:
                ax.axhline(pts[0][1], ls=":", color="grey", label=f"{label} @ {pts[0][0]}")
            else:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks(res["nfe_grid"], [str(n) for n in res["nfe_grid"]])
        ax.minorticks_off()
        ax.set_title(res["case"], fontsize=9)
        ax.set_xlabel("NFE")
        ax.set_ylabel("off-manifold share" if metric == "off_manifold" else "FID-digits")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces a result (``--out`` left out: results are the same wherever they are written)."""
    args = list(argv)
    if "--out" in args:
        i = args.index("--out")
        del args[i : i + 2]
    return " ".join(["python", "benchmarks/peers.py", *args])


def write_reports(results: list[dict[str, Any]], out: Path, argv: Sequence[str]) -> list[dict[str, Any]]:
    """Write each case's JSON, then ``peers.md`` and ``peers.png`` over every case whose JSON is in ``out``.

    Cases run by earlier invocations into the same folder stay in the report (each JSON records its command).
    """
    out.mkdir(parents=True, exist_ok=True)
    for res in results:
        res["command"] = command_line(argv)
        (out / f"peers_{res['case'].replace(':', '-')}.json").write_text(json.dumps(res, indent=1) + "\n")
    order = list(cases())
    stored = [json.loads(path.read_text()) for path in sorted(out.glob("peers_*.json"))]
    for res in stored:  # results written before the real-data row existed
        if "real_data" not in res and res["case"] in order:
            res["real_data"] = real_data_scores(cases()[res["case"]])
            (out / f"peers_{res['case'].replace(':', '-')}.json").write_text(json.dumps(res, indent=1) + "\n")
    results = sorted(stored, key=lambda r: order.index(r["case"]) if r["case"] in order else len(order))
    commands = list(dict.fromkeys(r["command"] for r in results if "command" in r))
    parts = [
        "# Against the peers",
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in commands],
        "",
        "## Summary: best sampler of each method at 10 NFE (lower is better)",
        "",
        summary_table(results),
    ]
    for res in results:
        parts += ["", f"## {res['case']} ({res['num_samples']} samples, {res['recipe']['steps']} steps)", ""]
        parts.append(case_table(res))
    (out / "peers.md").write_text("\n".join(parts) + "\n")
    plot(results, out / "peers.png")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks, few steps and samples (smoke test)")
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, help="training steps (default 3000; --quick: 20)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--report", action="store_true", help="only rewrite peers.md / peers.png from the JSON files")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = cases(args.quick)
    names = args.cases or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(table)}")
    steps = args.steps or (20 if args.quick else 3000)
    grid, floor = ((5, 10), 50) if args.quick else (NFE_GRID, DDPM_FLOOR_NFE)
    if args.report:
        write_reports([], args.out or RESULTS_DIR, argv)
        return 0
    for name in names:  # the report is rewritten after each case, so an interrupted run keeps what it finished
        write_reports([run_case(table[name], steps, args.methods, grid, floor)], args.out or RESULTS_DIR, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
