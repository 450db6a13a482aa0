"""Against the peers: BFN vs diffusion (``diffusers``) vs flow matching (``flow_matching``) at equal budget.

Every method trains the *same* reference network of :mod:`bfn.nets` (the library's default network for the data
source) with the same optimizer (AdamW with the learning rate, warm-up, gradient clipping and EMA decay that
:meth:`bfn.training.TrainConfig.resolved` gives the data source), batch size, number of steps, data order and seed;
only the loss differs. The library is measured as a user gets it: BFN with its default recipe for the data (no
``sigma_1``, ``beta_1``, learning rate or EMA decay given) and its default sampler (``sampler="auto"``, whose
resolved configuration each row records), plus its named solvers as further labelled rows.

* ``bfn``: this library's continuous-time loss ``L_inf`` (Graves et al., 2023, eqs. 101, 128 and 182), sampled with
  ``auto``, with the named solvers of :data:`NAMED_SOLVERS` (Xue et al., ICML 2024) and with the original sampler
  (its curve up to :data:`REFERENCE_NFE` calls is the reference of the speed-up).
* ``ddpm``: noise prediction (Ho et al., 2020, eq. 14) on ``diffusers.DDPMScheduler`` (1000 steps, linear betas),
  sampled with ``DPMSolverMultistepScheduler`` (DPM-Solver++(2M)), ``UniPCMultistepScheduler`` (UniPC-2) at the
  same NFE, and DDPM ancestral sampling at 1000 NFE as its floor. For binarised digits it runs on ``2 k - 1`` in
  {-1, 1} and thresholds its samples at 0. Not applicable to text (27 classes): ``diffusers`` has no discrete
  diffusion of that kind.
* ``fm``: flow matching (Lipman et al., 2023) on ``flow_matching.path.CondOTProbPath`` (an ``AffineProbPath``),
  velocity regression, sampled with its ``ODESolver`` (Euler: ``n`` calls; midpoint: 2 calls per step); for discrete
  data (binarised digits, text) discrete flow matching (Gat et al., 2024) on ``MixtureDiscreteProbPath`` with a mask
  source and a quadratic ``PolynomialConvexScheduler``, cross-entropy on ``x_1``, sampled with
  ``MixtureDiscreteEulerSolver``; the network sees the tokens one-hot (the ``theta`` input of a discrete BFN) over
  the classes and the mask.

Discretised digits (17 bins): BFN uses its discretised flow, the data source's default; the peers train on the bin
centres as continuous data and their samples are rounded to the nearest bin centre.

Metrics against real data: toy 2-D sets (:mod:`bfn.data.toy`): off-manifold share (samples farther than
:data:`OFF_MANIFOLD_RADIUS` from every training point), coverage (test points with a sample within that radius),
regions lost (of the :data:`NUM_REGIONS` k-means regions of the training data, those that receive less than a fifth
of their share of samples) and sliced W1 (:func:`bfn.metrics.sliced_wasserstein`) against the test split; digits:
FID-digits (:func:`bfn.training.quality_metric`, on the shipped digits classifier's features) against the training
split; text: spelling accuracy (:func:`bfn.metrics.spelling_accuracy`) and bits/char where a method gives a bound
(BFN: ``model.nll`` on the test split; discrete flow matching: the continuous-time ELBO of its mixture path,
``flow_matching.loss.MixturePathGeneralizedKL``, at one time draw per test sequence).

Metrics against the model's own converged distribution (BFN only): :data:`REFERENCE_NFE`-call samples of the
original sampler with another seed (:data:`REFERENCE_SEED`). Toy: off-manifold share against those points and
sliced W1 to them; digits: FID-digits between the two sample sets; text: total variation between the character
bigram frequencies of the two sets (:func:`ngram_tv`) and the gap in spelling accuracy. The original sampler at
:data:`REFERENCE_NFE` calls with the sampling seed is the floor of these numbers (same model, other seed).

Speed-up at 10 NFE, both ways: the NFE the original sampler needs to reach a solver's quality at 10 NFE (linear
interpolation in log NFE; ``quality_vs_nfe.speedups``), divided by 10, once against real data and once against the
model's own samples. Against real data a weak model's floor caps the speed-up (every sampler reaches it); against
the model's samples it cannot.

Trained networks (EMA weights) and drawn samples are cached under ``--cache`` (keyed by the recipe, and for BFN's
samples by a fingerprint of the library's sampler numerics), so rerunning re-scores and re-samples without
retraining. ``diffusers`` and ``flow_matching`` are benchmark-only dependencies (``pip install -e ".[bench]"``); the
library never imports them. Usage::

    python benchmarks/peers.py                             # every case into benchmarks/results/peers*
    python benchmarks/peers.py --cases toy:two_moons digits-discretised
    python benchmarks/peers.py --cases kjv --methods fm --train-only     # train one method (e.g. in parallel)
    python benchmarks/peers.py --cases kjv --methods bfn   # re-sample BFN's rows, keep the peers' rows
    python benchmarks/peers.py --quick --out /tmp/peers    # smoke test (seconds; the numbers mean nothing)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "runs" / "bench" / "peers"

NFE_GRID: tuple[int, ...] = (5, 10, 20, 50)
"""Network-evaluation budgets of every sampler (DDPM ancestral runs at :data:`DDPM_FLOOR_NFE` only)."""

ORIGINAL_NFE: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 1000)
"""Budgets of BFN's original sampler: its curve is the reference of the speed-up."""

REFERENCE_NFE = 1000
REFERENCE_SEED = 1
"""The model's own converged distribution: the original sampler at this many calls, drawn with this seed."""

SPEEDUP_NFE = 10

DDPM_FLOOR_NFE = 1000
DDPM_TRAIN_STEPS = 1000

NAMED_SOLVERS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "continuous": (
        ("bfn-solver++2", {"grid": "logsnr"}),
        ("bfn-solver++3", {"grid": "logsnr"}),
        ("sde-bfn-solver++2", {"grid": "logsnr"}),
    ),
    "discretised": (
        ("bfn-solver++2", {"grid": "logsnr"}),
        ("bfn-solver++3", {"grid": "logsnr"}),
        ("sde-bfn-solver++2", {"grid": "logsnr"}),
    ),
    "discrete": (("bfn-solver2", {}), ("bfn-solver3", {}), ("sde-bfn-solver2", {}), ("sde-bfn-solver3", {})),
}
"""BFN's named solvers per data kind (each with the paper's ``eta`` and ``final="drop"``): the best of them at 10
NFE is the second BFN row of the summary."""

NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "discrete-text": {
        "ddpm": "not applicable: diffusers' DDPM is Gaussian diffusion; it has no diffusion over 27 classes",
    },
}
"""Methods a case does not run, with the reason the tables give (by :attr:`Case.family`)."""

OFF_MANIFOLD_RADIUS = 0.05
NUM_REGIONS = 8
REGION_LOST_FRACTION = 0.2

SEED = 0
CANARY_SEED = 12345
NET_CACHE_VERSION = 1
"""Part of the key of a cached network: raise it when a method's loss or network wrapper changes."""


# ================================================================================================== cases


@dataclass(frozen=True)
class Case:
    """One data set and data kind: the training config BFN gets by default, and how many samples are scored.

    ``train`` holds only what a user must say for this case (the data set, and the flow where the data source's
    default flow is another), plus the sizes of a smoke run; everything else is the library's default.
    """

    name: str
    title: str
    num_samples: int
    train: dict[str, Any]
    steps: int = 3000
    reference_samples: int | None = None
    """Samples of the model's own converged distribution (default ``num_samples``)."""

    @property
    def data(self) -> str:
        return str(self.train["data"])

    @property
    def is_toy(self) -> bool:
        return self.data.startswith("toy:")

    def config(self, steps: int | None = None) -> TrainConfig:
        """The resolved training config (library defaults for this data source)."""
        base = {"steps": steps or self.steps, "device": "cpu", "progress": False}
        return TrainConfig.from_dict({**base, **self.train}).resolved()

    @property
    def kind(self) -> str:
        return str(self.config(1).flow)

    @property
    def is_text(self) -> bool:
        return self.data.partition(":")[0] in ("kjv", "text8", "text")

    @property
    def family(self) -> str:
        """``discrete-text``, ``discrete``, ``discretised`` or ``continuous`` (what applies and what is scored)."""
        return "discrete-text" if self.is_text else self.kind

    @property
    def slug(self) -> str:
        return self.name.replace(":", "-")


def cases(quick: bool = False, text_data: str = "kjv") -> dict[str, Case]:
    """Every case by name: the four toy sets, digits continuous, discretised (17 bins) and binarised (K = 2), and
    text (``text_data``, KJV by default)."""
    toy_samples, digit_samples, text_samples = (256, 128, 16) if quick else (2000, 1000, 200)
    tiny = {"net": "mlp", "net_options": {"hidden": 32, "depth": 1}, "batch_size": 32, "warmup": 1} if quick else {}
    tiny_text = (
        {"net_options": {"width": 16, "depth": 1, "heads": 2, "conv_kernel": 3}, "seq_len": 16, "batch_size": 8}
        | {"warmup": 1}
        if quick
        else {}
    )
    out = [
        Case(f"toy:{name}", f"toy:{name}", toy_samples, {"data": f"toy:{name}", **tiny}, 3000, 4 * toy_samples)
        for name in TOY_SETS
    ]
    out += [
        Case("digits-continuous", "digits, continuous", digit_samples,
             {"data": "digits", "flow": "continuous", **tiny}),
        Case("digits-discretised", "digits, discretised (17 bins)", digit_samples, {"data": "digits", **tiny}),
        Case("digits-binary", "binarised digits (K = 2)", digit_samples,
             {"data": "digits", "flow": "discrete", **tiny}),
        Case("kjv", f"text ({text_data}, K = 27)", text_samples, {"data": text_data, **tiny_text}),
    ]  # fmt: skip
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
class Drawn:
    """Samples of one sampler run: the network calls it made, the samples, what ``auto`` resolved to."""

    nfe: int
    samples: Tensor
    resolved: str | None = None


@dataclass(frozen=True)
class Point:
    """One sampler at one budget: its table label, its role and how to draw ``(ema_net, num, seed) -> Drawn``.

    Roles: ``auto`` (BFN's default sampler), ``named`` (a named BFN solver), ``original`` (BFN's original sampler),
    ``reference`` (the model's own converged distribution; not a table row) and ``peer``.
    """

    label: str
    role: str
    nfe: int
    draw: Callable[[nn.Module, int, int], Drawn] = field(compare=False)
    key: str = ""
    """What identifies the sampler beyond its label (sampler name and options), for the sample cache."""


@dataclass
class Method:
    """One generative method on one case: its trainable network, its loss and its sampler points."""

    name: str
    net: nn.Module
    loss: Callable[[Tensor, torch.Generator], Tensor]
    points: Callable[[Sequence[int], int], list[Point]]
    """``points(nfe_grid, floor_nfe)``: every sampler point of the method."""
    fingerprints: bool = False
    """Whether a cached sample must match a fresh fingerprint of the sampler's numerics (the library's samplers)."""
    extras: Callable[[nn.Module], dict[str, Any]] | None = None
    """Further numbers of a trained network (e.g. a likelihood bound): ``extras(ema_net) -> dict``."""


def as_signed(x: Tensor, case: Case) -> Tensor:
    """Training data of a Gaussian peer: continuous / discretised values as they are; binary ``k`` as ``2k - 1``."""
    return x.to(torch.float32) * 2.0 - 1.0 if case.kind == "discrete" else x


def finish_continuous(samples: Tensor, case: Case, num_bins: int | None) -> Tensor:
    """A peer's real-valued samples in the data's own form (clipped; nearest bin centre; thresholded class)."""
    samples = samples.clamp(-1.0, 1.0)
    if case.kind == "discretised":
        assert num_bins is not None
        k = torch.floor((samples + 1.0) * num_bins / 2.0).clamp(0, num_bins - 1)
        return bins_to_centres(k, num_bins)
    if case.kind == "discrete":
        return (samples > 0).long()
    return samples


def describe_config(sampler: str, options: dict[str, Any]) -> str:
    """``sampler key=value ...`` of a sampler configuration (what ``auto`` resolved to)."""
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(options.items())]
    return " ".join([sampler, *parts])


def bfn_model(config: TrainConfig, bundle: Any) -> bfn.BFN:
    torch.manual_seed(SEED)
    return config.model_config(bundle).build()


def bfn_method(config: TrainConfig, bundle: Any, case: Case) -> Method:
    model = bfn_model(config, bundle)
    flow, shape = model.flow, model.data_shape

    def loss(x: Tensor, generator: torch.Generator) -> Tensor:
        return model.loss(x, generator=generator)

    def run(sampler: str, options: dict[str, Any], nfe: int) -> Callable[[nn.Module, int, int], Drawn]:
        def draw(net: nn.Module, num: int, seed: int) -> Drawn:
            steps = steps_for_nfe(sampler, case.kind, nfe, **options)
            out = bfn.BFN(net, flow, shape).eval().sample(num, sampler, steps, torch.Generator().manual_seed(seed),
                                                          **options)  # fmt: skip
            return Drawn(out.nfe, out.samples, describe_config(out.sampler, out.options))

        return draw

    def points(grid: Sequence[int], floor: int) -> list[Point]:
        out = [Point("bfn auto", "auto", n, run("auto", {}, n), "auto") for n in grid]
        for sampler, options in NAMED_SOLVERS[case.kind]:
            label = f"bfn {sampler}" + "".join(f":{v}" for v in options.values())
            key = describe_config(sampler, options)
            out += [Point(label, "named", n, run(sampler, options, n), key) for n in grid]
        original = [n for n in ORIGINAL_NFE if n <= floor] if floor < REFERENCE_NFE else list(ORIGINAL_NFE)
        out += [Point("bfn original", "original", n, run("bfn", {}, n), "bfn") for n in original]
        out.append(Point("bfn reference", "reference", max(original), run("bfn", {}, max(original)), "bfn"))
        return out

    def extras(net: nn.Module) -> dict[str, Any]:
        if not case.is_text:
            return {}
        from bfn.training import evaluate_nll

        return {"test_bits_per_char": evaluate_nll(bfn.BFN(net, flow, shape).eval(), bundle.test, seed=SEED)}

    return Method("bfn", model.net, loss, points, fingerprints=True, extras=extras)


def ddpm_method(config: TrainConfig, bundle: Any, case: Case) -> Method:
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    torch.manual_seed(SEED)
    net = build_net(config.net, bundle.data_shape, 1, 1, **(config.net_options or {}))
    wrapped = TimeMapped(net, "ddpm")
    train_sched = DDPMScheduler(num_train_timesteps=DDPM_TRAIN_STEPS, beta_schedule="linear")
    alphas_bar = train_sched.alphas_cumprod.to(torch.float32)
    num_bins = bundle.num_bins if case.kind == "discretised" else None

    def loss(x: Tensor, generator: torch.Generator) -> Tensor:
        x = as_signed(x, case)
        k = torch.randint(0, DDPM_TRAIN_STEPS, (x.shape[0],), generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        a = alphas_bar[k].reshape(-1, *([1] * (x.dim() - 1)))
        noisy = a.sqrt() * x + (1 - a).sqrt() * noise  # = DDPMScheduler.add_noise
        return F.mse_loss(wrapped(noisy, k.to(torch.float32)), noise)

    def run(make: Callable[[], Any], steps: int) -> Callable[[nn.Module, int, int], Drawn]:
        def draw(ema_net: nn.Module, num: int, seed: int) -> Drawn:
            scheduler = make()
            generator = torch.Generator().manual_seed(seed)
            shaped = TimeMapped(ema_net, "ddpm")
            scheduler.set_timesteps(steps)
            x = torch.randn((num, *bundle.data_shape), generator=generator)
            for k in scheduler.timesteps:
                eps = shaped(x, torch.full((num,), float(k)))
                kwargs = {"generator": generator} if isinstance(scheduler, DDPMScheduler) else {}
                x = scheduler.step(eps, k, x, **kwargs).prev_sample
            return Drawn(shaped.calls, finish_continuous(x, case, num_bins))

        return draw

    def points(grid: Sequence[int], floor: int) -> list[Point]:
        cfg = train_sched.config
        dpm = lambda: DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2)
        unipc = lambda: UniPCMultistepScheduler.from_config(cfg, solver_order=2)
        out = [Point("ddpm dpm-solver++2m", "peer", n, run(dpm, n)) for n in grid]
        out += [Point("ddpm unipc-2", "peer", n, run(unipc, n)) for n in grid]
        out.append(Point("ddpm ancestral", "peer", floor, run(lambda: DDPMScheduler.from_config(cfg), floor)))
        return out

    return Method("ddpm", net, loss, points)


def fm_method(config: TrainConfig, bundle: Any, case: Case) -> Method:
    if case.kind == "discrete":
        return discrete_fm_method(config, bundle, case)
    from flow_matching.path import CondOTProbPath
    from flow_matching.solver import ODESolver

    torch.manual_seed(SEED)
    net = build_net(config.net, bundle.data_shape, 1, 1, **(config.net_options or {}))
    wrapped = TimeMapped(net, "fm")
    path = CondOTProbPath()
    num_bins = bundle.num_bins if case.kind == "discretised" else None

    def loss(x: Tensor, generator: torch.Generator) -> Tensor:
        x1 = as_signed(x, case)
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(x1.shape[0], generator=generator)
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        return F.mse_loss(wrapped(sample.x_t, sample.t), sample.dx_t)

    def run(method: str, steps: int) -> Callable[[nn.Module, int, int], Drawn]:
        def draw(ema_net: nn.Module, num: int, seed: int) -> Drawn:
            shaped = TimeMapped(ema_net, "fm")
            x0 = torch.randn((num, *bundle.data_shape), generator=torch.Generator().manual_seed(seed))
            times = torch.linspace(0.0, 1.0, steps + 1)
            x1 = ODESolver(velocity_model=shaped).sample(x_init=x0, step_size=None, method=method, time_grid=times)
            return Drawn(shaped.calls, finish_continuous(x1, case, num_bins))

        return draw

    def points(grid: Sequence[int], floor: int) -> list[Point]:
        return [
            Point(f"fm {method}", "peer", n, run(method, max(n // calls, 1)))
            for method, calls in (("euler", 1), ("midpoint", 2))
            for n in grid
        ]

    return Method("fm", net, loss, points)


def discrete_fm_method(config: TrainConfig, bundle: Any, case: Case) -> Method:
    from flow_matching.loss import MixturePathGeneralizedKL
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

    def run(nfe: int) -> Callable[[nn.Module, int, int], Drawn]:
        def draw(ema_net: nn.Module, num: int, seed: int) -> Drawn:
            shaped = TimeMapped(ema_net, "fm", num_classes=vocab)
            solver = MixtureDiscreteEulerSolver(model=Posterior(shaped), path=path, vocabulary_size=vocab)
            x0 = torch.full((num, *bundle.data_shape), mask, dtype=torch.long)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # the solver draws from torch's default generator
                out = solver.sample(x_init=x0, step_size=None, time_grid=torch.linspace(0.0, 1.0 - 1e-3, nfe + 1))
            return Drawn(shaped.calls, out)

        return draw

    def points(grid: Sequence[int], floor: int) -> list[Point]:
        return [Point("fm discrete-euler", "peer", n, run(n)) for n in grid]

    def extras(ema_net: nn.Module) -> dict[str, Any]:
        """Test bits/char of the continuous-time ELBO of the mixture path (text only)."""
        if not case.is_text:
            return {}
        elbo = MixturePathGeneralizedKL(path, reduction="none")
        shaped = TimeMapped(ema_net, "fm", num_classes=vocab)
        test = torch.stack([bundle.test[i] for i in range(len(bundle.test))])
        total = 0.0
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(SEED)
            for start in range(0, test.shape[0], 256):
                x1 = test[start : start + 256]
                t = torch.rand(x1.shape[0])
                x_t = path.sample(x_0=torch.full_like(x1, mask), x_1=x1, t=t).x_t
                total += float(elbo(logits(shaped, x_t, t), x1, x_t, t).double().sum())
        return {"test_bits_per_char": total / test.numel() / math.log(2)}

    return Method("fm", net, loss, points, extras=extras)


METHODS: dict[str, Callable[[TrainConfig, Any, Case], Method]] = {
    "bfn": bfn_method,
    "ddpm": ddpm_method,
    "fm": fm_method,
}


# ================================================================================================== training


def train_method(method: Method, config: TrainConfig, data: Tensor, seed: int = SEED) -> tuple[nn.Module, float]:
    """Train ``method.net`` with the shared recipe; returns the EMA network and the CPU seconds spent.

    Identical for every method: AdamW (``lr``, ``betas``, ``weight_decay``), linear warm-up, gradient clipping,
    EMA with :class:`bfn.training.EMA`, batches drawn in the same order (a permutation per epoch seeded by
    ``seed``) and the loss noise from one generator seeded by ``seed + 1``.
    """
    net = method.net.train()
    ema = EMA(net, config.ema_decay)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
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


RECIPE_FIELDS = ("data", "data_options", "seq_len", "split_seed", "binarize", "flow", "sigma_1", "num_bins", "beta_1",
                 "net", "net_options", "steps", "batch_size", "lr", "weight_decay", "betas", "warmup", "grad_clip",
                 "ema_decay", "loss", "seed")  # fmt: skip
"""The :class:`TrainConfig` fields a trained network depends on (the key of the network cache)."""


def recipe(config: TrainConfig) -> dict[str, Any]:
    values = config.to_dict()
    return {k: values[k] for k in RECIPE_FIELDS}


def weights_digest(net: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def trained(
    name: str,
    case: Case,
    config: TrainConfig,
    bundle: Any,
    data: Tensor,
    cache: Path | None,
    log: Callable[[str], None],
) -> tuple[Method, nn.Module, dict[str, Any]]:
    """The method, its trained EMA network and its training record; loaded from ``cache`` when a network of the same
    recipe is there, else trained (and stored there)."""
    from safetensors.torch import load_file, save_file

    method = METHODS[name](config, bundle, case)
    key = {"method": name, "version": NET_CACHE_VERSION, "recipe": recipe(config), "train_size": int(data.shape[0])}
    folder = None if cache is None else cache / case.slug
    if folder is not None and (folder / f"{name}.json").is_file() and (folder / f"{name}.safetensors").is_file():
        meta = json.loads((folder / f"{name}.json").read_text())
        if meta["key"] == json.loads(json.dumps(key)):
            net = copy.deepcopy(method.net).eval().requires_grad_(False)
            net.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
            log(f"{case.name}: {name} loaded from {folder} (trained in {meta['train']['cpu_seconds']:.0f} s CPU)")
            return method, net, meta["train"]
        log(f"{case.name}: the cached {name} network has another recipe; training again")
    log(f"{case.name}: training {name} ({config.steps} steps)")
    net, seconds = train_method(method, config, data)
    info = {"cpu_seconds": round(seconds, 2), "parameters": sum(p.numel() for p in net.parameters())}
    info["weights"] = weights_digest(net)
    log(f"{case.name}: trained {name} in {seconds:.1f} s CPU")
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.json").write_text(json.dumps({"key": key, "train": info}, indent=1) + "\n")
    return method, net, info


def store_info(cache: Path | None, case: Case, name: str, info: dict[str, Any]) -> None:
    """Rewrite the training record of a cached network (e.g. with numbers computed from it later)."""
    path = None if cache is None else cache / case.slug / f"{name}.json"
    if path is not None and path.is_file():
        meta = json.loads(path.read_text())
        meta["train"] = info
        path.write_text(json.dumps(meta, indent=1) + "\n")


# ================================================================================================== sampling


def fingerprint(point: Point, net: nn.Module) -> str:
    """The bytes of a tiny run of ``point`` (2 samples, fixed seed): a change of the library's sampler numerics
    (or of what ``auto`` resolves to) changes it, a change of wording does not."""
    drawn = point.draw(net, 2, CANARY_SEED)
    h = hashlib.sha256(drawn.samples.detach().cpu().contiguous().numpy().tobytes())
    h.update(f"{drawn.nfe} {drawn.resolved}".encode())
    return h.hexdigest()[:16]


def draw_cached(
    point: Point, method: Method, net: nn.Module, info: dict[str, Any], num: int, seed: int, folder: Path | None
) -> Drawn:
    """``point.draw(net, num, seed)``, or its result stored in ``folder`` by an earlier run of the same sampler on
    the same weights (for BFN's samplers: with the same fingerprint)."""
    parts = [method.name, info.get("weights"), point.label, point.key, point.nfe, num, seed]
    if method.fingerprints:
        parts.append(fingerprint(point, net))
    name = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]
    path = None if folder is None else folder / f"{name}.pt"
    if path is not None and path.is_file():
        stored = torch.load(path, weights_only=True)
        return Drawn(int(stored["nfe"]), stored["samples"], stored["resolved"] or None)
    with torch.no_grad():
        drawn = point.draw(net, num, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"nfe": drawn.nfe, "samples": drawn.samples, "resolved": drawn.resolved or ""}, tmp)
        tmp.replace(path)
    return drawn


# ================================================================================================== metrics


@dataclass(frozen=True)
class MetricInfo:
    """A metric of the tables: its label, direction and how a value prints."""

    label: str
    higher_is_better: bool = False
    percent: bool = False

    def fmt(self, value: float | None) -> str:
        if value is None:
            return ""
        return f"{100 * value:.1f}" if self.percent else f"{value:.3f}" if abs(value) < 0.1 else f"{value:.2f}"

    def as_metric(self) -> Any:
        """The :class:`benchlib.Metric` of the speed-up code."""
        from benchlib import Metric

        return Metric(self.label, self.higher_is_better)


METRICS: dict[str, MetricInfo] = {
    "off_manifold": MetricInfo("off-manifold %", percent=True),
    "coverage": MetricInfo("coverage %", higher_is_better=True, percent=True),
    "regions_lost": MetricInfo("regions lost"),
    "sliced_w1": MetricInfo("sliced W1"),
    "fid": MetricInfo("FID-digits"),
    "spelling": MetricInfo("spelling %", higher_is_better=True, percent=True),
    "bigram_tv": MetricInfo("bigram TV"),
    "spelling_gap": MetricInfo("spelling gap (points)", percent=True),
}

REAL_METRICS: dict[str, tuple[str, ...]] = {
    "toy": ("off_manifold", "sliced_w1", "coverage", "regions_lost"),
    "digits": ("fid",),
    "text": ("spelling",),
}
MODEL_METRICS: dict[str, tuple[str, ...]] = {
    "toy": ("sliced_w1", "off_manifold"),  # a solver's points are rarely off the model's own samples: W1 first
    "digits": ("fid",),
    "text": ("bigram_tv", "spelling_gap"),
}
"""The metrics against real data and against the model's own samples per data family; the first is the primary."""


def family_of(result: dict[str, Any]) -> str:
    return "toy" if result["data"].startswith("toy:") else "text" if result.get("text") else "digits"


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


def ngram_tv(a: Sequence[str], b: Sequence[str], n: int = 2) -> float:
    """Total variation distance between the frequencies of the character ``n``-grams (within each text) of two
    sets of texts: 0 for equal frequencies, 1 for disjoint ones."""

    def frequencies(texts: Sequence[str]) -> dict[str, float]:
        counts = Counter(text[i : i + n] for text in texts for i in range(len(text) - n + 1))
        total = sum(counts.values())
        if total == 0:
            raise ValueError(f"no {n}-grams in the texts")
        return {k: v / total for k, v in counts.items()}

    p, q = frequencies(a), frequencies(b)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in p.keys() | q.keys())


def _stack(split: Any) -> Tensor:
    return torch.stack([split[i] for i in range(len(split))])


class CaseScorer:
    """The metrics of one case: against real data, and against a reference sample set of a BFN model."""

    def __init__(self, case: Case, bundle: Any) -> None:
        self.case, self.bundle = case, bundle
        self.flow = case.config(1).flow_for(bundle)
        if case.is_toy:
            self.train_pts, self.test = _stack(bundle.train).double(), _stack(bundle.test).double()
            self.centres = region_centres(self.train_pts)
        elif not case.is_text:
            metric = quality_metric(case.data, bundle, self.flow, seed=SEED)
            assert metric is not None
            self.fid = metric.score

    def texts(self, samples: Tensor) -> list[str]:
        from bfn.data import decode_text

        return list(decode_text(samples.reshape(samples.shape[0], -1)))

    def real(self, samples: Tensor) -> dict[str, float]:
        """The metrics against real data (toy: training / test points; digits: training images; text: words)."""
        if self.case.is_toy:
            return toy_scores(samples, self.train_pts, self.test, self.centres)
        if self.case.is_text:
            from bfn.metrics import spelling_accuracy

            return {"spelling": spelling_accuracy(self.texts(samples))}
        return {"fid": self.fid(samples)}

    def against(self, reference: Tensor) -> Callable[[Tensor], dict[str, float]]:
        """``samples -> metrics`` against ``reference`` samples of the same model (see the module docstring)."""
        if self.case.is_toy:
            ref = reference.reshape(reference.shape[0], -1).double()

            def toy(samples: Tensor) -> dict[str, float]:
                off = float((nearest_distance(samples, ref) > OFF_MANIFOLD_RADIUS).double().mean())
                return {"off_manifold": off, "sliced_w1": sliced_wasserstein(samples, ref)}

            return toy
        if self.case.is_text:
            from bfn.metrics import spelling_accuracy

            ref_texts = self.texts(reference)
            ref_spelling = spelling_accuracy(ref_texts)

            def text(samples: Tensor) -> dict[str, float]:
                texts = self.texts(samples)
                return {
                    "bigram_tv": ngram_tv(texts, ref_texts, 2),
                    "spelling_gap": abs(spelling_accuracy(texts) - ref_spelling),
                }

            return text
        from bfn.metrics import image_fid, load_feature_extractor
        from bfn.training.samples import to_images

        extractor = load_feature_extractor("digits")
        ref_images = to_images(reference, self.flow)
        return lambda samples: {"fid": image_fid(to_images(samples, self.flow), ref_images, extractor)}

    def held_out(self) -> dict[str, float]:
        """The metrics of held-out real data, the floor of every method: ``num_samples`` fresh points of a toy set
        (its validation stream), the test split of the digits, or ``num_samples`` test sequences of text."""
        if self.case.is_toy:
            from bfn.data.toy import toy_bundle

            held = toy_bundle(self.case.data.partition(":")[2], num_val=self.case.num_samples).val
            return self.real(_stack(held))
        if self.case.is_text:
            return self.real(_stack(self.bundle.test)[: self.case.num_samples])
        return self.real(_stack(self.bundle.test))


# ================================================================================================== one case


def speedup_blocks(rows: Sequence[dict[str, Any]], family: str, at: int = SPEEDUP_NFE) -> dict[str, Any]:
    """Speed-ups at ``at`` NFE of BFN's ``auto`` and named solvers over its original sampler, against real data
    (``"real"``) and against the model's own samples (``"model"``), for every metric of the two directions
    (``quality_vs_nfe.speedups``: the original sampler's NFE for equal quality, interpolated in log NFE)."""
    from quality_vs_nfe import speedups

    out: dict[str, Any] = {}
    for direction, metrics, source in (("real", REAL_METRICS, "real"), ("model", MODEL_METRICS, "vs_model")):
        out[direction] = {}
        for metric in metrics[family]:
            if metric == "regions_lost" or metric == "coverage":
                continue
            curves: dict[str, Any] = {}
            for r in rows:
                if r["method"] != "bfn" or metric_value(r, metric, source) is None:
                    continue
                label = "bfn" if r["role"] == "original" else r["sampler"]
                curve = curves.setdefault(label, {"points": [], "off_grid": []})
                curve["points"].append({"nfe": r["nfe"], "value": metric_value(r, metric, source)})
            found = speedups(curves, METRICS[metric].as_metric(), at)
            out[direction][metric] = [
                {k: v for k, v in row.items() if k in ("solver", "nfe", "value", "bfn_nfe_text", "speedup_text")}
                | {"speedup": None if row["speedup"] is None or math.isinf(row["speedup"]) else row["speedup"]}
                for row in found
            ]
    return out


def run_case(
    case: Case,
    methods: Sequence[str],
    grid: Sequence[int] = NFE_GRID,
    floor: int = DDPM_FLOOR_NFE,
    cache: Path | None = None,
    train_only: bool = False,
    previous: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Train (or load) every method on ``case`` and score every sampler point; a JSON-able dict.

    Rows of methods not in ``methods`` are kept from ``previous`` (an earlier result of the same case and recipe).
    """
    config = case.config()
    bundle = load_bundle(config)
    data = _stack(bundle.train)
    skip = NOT_APPLICABLE.get(case.family, {})
    methods = [m for m in methods if m not in skip]
    scorer = None if train_only else CaseScorer(case, bundle)
    keep = previous if previous and previous.get("recipe") == recipe(config) else {}
    rows = [r for r in keep.get("rows", []) if r["method"] not in methods]
    train_info = {k: v for k, v in keep.get("train", {}).items() if k not in methods}
    extras = {k: v for k, v in keep.get("extras", {}).items() if k not in methods}
    for name in methods:
        method, net, info = trained(name, case, config, bundle, data, cache, log)
        train_info[name] = info
        if train_only:
            continue
        assert scorer is not None
        start = time.process_time()
        folder = None if cache is None else cache / case.slug / "samples"
        points = method.points(grid, floor)
        against = None
        reference = [p for p in points if p.role == "reference"]
        if reference:
            ref_num = case.reference_samples or case.num_samples
            ref = draw_cached(reference[0], method, net, info, ref_num, REFERENCE_SEED, folder)
            against = scorer.against(ref.samples)
            extras.setdefault(name, {})["reference"] = {"nfe": ref.nfe, "seed": REFERENCE_SEED, "samples": ref_num}
        for point in points:
            if point.role == "reference":
                continue
            drawn = draw_cached(point, method, net, info, case.num_samples, SEED, folder)
            row: dict[str, Any] = {"method": name, "sampler": point.label, "role": point.role, "nfe": drawn.nfe}
            if drawn.resolved and point.role == "auto":
                row["resolved"] = drawn.resolved
            real = scorer.real(drawn.samples)
            row.update(real)
            if against is not None:
                row["vs_model"] = against(drawn.samples)
            rows.append(row)
            log(f"{case.name}: {point.label} @ {drawn.nfe}: " + json.dumps(real))
        if method.extras is not None:
            if "extras" not in info:  # computed once per trained network
                info["extras"] = method.extras(net)
                store_info(cache, case, name, info)
            extras.setdefault(name, {}).update(info["extras"])
        train_info[name]["sample_cpu_seconds"] = round(time.process_time() - start, 2)
    if train_only:
        return None
    assert scorer is not None
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: order.get(r["method"], len(order)))
    family = "toy" if case.is_toy else "text" if case.is_text else "digits"
    return {
        "case": case.name,
        "title": case.title,
        "data": case.data,
        "kind": case.kind,
        "text": case.is_text,
        "num_samples": case.num_samples,
        "nfe_grid": list(grid),
        "floor_nfe": floor,
        "recipe": recipe(config),
        "bfn_flow": {"sigma_1": config.sigma_1, "beta_1": config.beta_1, "num_bins": bundle.num_bins},
        "not_applicable": skip,
        "train": train_info,
        "extras": extras,
        "rows": rows,
        "speedups": speedup_blocks(rows, family),
        "real_data": scorer.held_out(),
    }


# ================================================================================================== reports


def _near(nfe: int, target: int) -> bool:
    """The multistep solvers hit every budget exactly; FM midpoint may use one call fewer."""
    return target - 1 <= nfe <= target


def _hits(result: dict[str, Any], nfe: int, **match: Any) -> list[dict[str, Any]]:
    return [r for r in result["rows"] if _near(r["nfe"], nfe) and all(r.get(k) == v for k, v in match.items())]


def metric_value(row: dict[str, Any], metric: str, source: str = "real") -> float | None:
    """A row's value of ``metric`` against real data (``source="real"``: the row's own keys) or against the
    model's own samples (``"vs_model"``), ``None`` where it has none."""
    values = row if source == "real" else row.get(source, {})
    return values.get(metric)


def _best(rows: Sequence[dict[str, Any]], metric: str, source: str = "real") -> dict[str, Any] | None:
    info = METRICS[metric]
    rows = [r for r in rows if metric_value(r, metric, source) is not None]
    if not rows:
        return None
    sign = -1.0 if info.higher_is_better else 1.0
    return min(rows, key=lambda r: sign * metric_value(r, metric, source))


def primary(result: dict[str, Any], direction: str = "real") -> str:
    return (REAL_METRICS if direction == "real" else MODEL_METRICS)[family_of(result)][0]


def case_table(result: dict[str, Any]) -> str:
    """Markdown of one case: the primary metric against NFE for every sampler; the other metrics at 10 NFE; BFN's
    samplers against the model's own samples; the speed-ups both ways."""
    family, metric = family_of(result), primary(result)
    info = METRICS[metric]
    labels = list(dict.fromkeys(r["sampler"] for r in result["rows"]))
    columns = sorted(
        {*result["nfe_grid"], result["floor_nfe"], *[r["nfe"] for r in result["rows"]]}
        - {n - 1 for n in result["nfe_grid"]}
    )
    lines = [f"| sampler ({info.label}) | " + " | ".join(f"{n}" for n in columns) + " |"]
    lines.append("|" + "---|" * (len(columns) + 1))
    for label in labels:
        cells = []
        for nfe in columns:
            hits = [r for r in result["rows"] if r["sampler"] == label and _near(r["nfe"], nfe)]
            cells.append(info.fmt(hits[0][metric]) if hits else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    real = result.get("real_data")
    if real:
        lines.append(f"| real data (held out) | {info.fmt(real[metric])} |" + " |" * (len(columns) - 1))
    auto = [r for r in result["rows"] if r.get("resolved")]
    if auto:
        resolved = dict.fromkeys(f"{r['resolved']} (at {r['nfe']})" for r in auto)
        lines += ["", "`auto` ran: " + "; ".join(resolved) + "."]
    others = REAL_METRICS[family][1:]
    if others:
        head = ["sampler @ 10 NFE", *(METRICS[m].label for m in REAL_METRICS[family])]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label in labels:
            hits = [r for r in result["rows"] if r["sampler"] == label and _near(r["nfe"], SPEEDUP_NFE)]
            r = (hits or [r for r in result["rows"] if r["sampler"] == label])[0]
            cells = [_fmt_any(m, r[m]) for m in REAL_METRICS[family]]
            lines.append(f"| {label} ({r['nfe']}) | " + " | ".join(cells) + " |")
        if real:
            cells = [_fmt_any(m, real[m]) for m in REAL_METRICS[family]]
            lines.append("| real data (held out) | " + " | ".join(cells) + " |")
    model_rows = [r for r in result["rows"] if "vs_model" in r]
    if model_rows:
        reference = result.get("extras", {}).get("bfn", {}).get("reference", {})
        lines += [
            "",
            f"BFN against its own converged distribution ({reference.get('samples')} samples of the original "
            f"sampler at {reference.get('nfe')} NFE, seed {reference.get('seed')}):",
            "",
        ]
        for m in MODEL_METRICS[family]:
            mi = METRICS[m]
            bfn_labels = list(dict.fromkeys(r["sampler"] for r in model_rows))
            lines += [f"| sampler ({mi.label}) | " + " | ".join(str(n) for n in columns) + " |"]
            lines.append("|" + "---|" * (len(columns) + 1))
            for label in bfn_labels:
                cells = []
                for nfe in columns:
                    hits = [r for r in model_rows if r["sampler"] == label and _near(r["nfe"], nfe)]
                    cells.append(mi.fmt(hits[0]["vs_model"][m]) if hits else "")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += speedup_lines(result)
    na = result.get("not_applicable") or {}
    for method, reason in na.items():
        lines += ["", f"{method}: {reason}."]
    extras = {m: e for m, e in (result.get("extras") or {}).items() if "test_bits_per_char" in e}
    if extras:
        lines += ["", "Test bits/char (a bound): " + ", ".join(
            f"{m} {e['test_bits_per_char']:.3f}" for m, e in extras.items()) + "."]  # fmt: skip
    cpu = ", ".join(f"{m} {v['cpu_seconds']:.0f} s" for m, v in result["train"].items())
    lines += ["", f"Training CPU time: {cpu}."]
    return "\n".join(lines)


def _fmt_any(metric: str, value: float) -> str:
    return str(int(value)) if metric == "regions_lost" else METRICS[metric].fmt(value)


def speedup_lines(result: dict[str, Any]) -> list[str]:
    """The speed-up table of one case: per BFN sampler, both directions, every metric."""
    blocks = result.get("speedups") or {}
    head = ["sampler @ 10 NFE"]
    columns: list[tuple[str, str]] = []
    for direction in ("real", "model"):
        for metric in blocks.get(direction, {}):
            columns.append((direction, metric))
            head.append(f"vs {'real data' if direction == 'real' else 'model'}: {METRICS[metric].label}")
    if not columns:
        return []
    solvers = list(dict.fromkeys(r["solver"] for d, m in columns for r in blocks[d][m]))
    lines = [
        "Speed-up over the original sampler at 10 NFE (its NFE for equal quality / 10; quality, then bfn NFE):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for solver in solvers:
        cells = []
        for d, m in columns:
            found = [r for r in blocks[d][m] if r["solver"] == solver]
            if not found:
                cells.append("")
                continue
            r = found[0]
            cells.append(f"{r['speedup_text']}x ({METRICS[m].fmt(r['value'])}; {r['bfn_nfe_text']})")
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
    return lines


def best_named(result: dict[str, Any], nfe: int = SPEEDUP_NFE) -> dict[str, Any] | None:
    return _best(_hits(result, nfe, method="bfn", role="named"), primary(result))


def _speedup_of(result: dict[str, Any], solver: str, direction: str) -> str:
    metric = primary(result, direction)
    for r in (result.get("speedups") or {}).get(direction, {}).get(metric, []):
        if r["solver"] == solver:
            return f"{r['speedup_text']}x"
    return ""


def summary_table(results: Sequence[dict[str, Any]], nfe: int = SPEEDUP_NFE) -> str:
    """Markdown: per case, BFN's default sampler, its best named solver, and the best sampler of each peer at
    ``nfe`` (primary metric), held-out real data, and the speed-ups of BFN's two rows both ways."""
    head = [f"data set (metric) @ {nfe} NFE", "BFN `auto`", "BFN best named", "DDPM", "FM", "real data",
            "speed-up `auto` (vs real / vs model)", "speed-up best named (vs real / vs model)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        metric = primary(res)
        info = METRICS[metric]
        cells = []
        auto = _best(_hits(res, nfe, method="bfn", role="auto"), metric)
        named = best_named(res, nfe)
        for row in (auto, named):
            cells.append(f"{info.fmt(row[metric])}" if row else "")
        for method in ("ddpm", "fm"):
            if method in (res.get("not_applicable") or {}):
                cells.append("n/a")
                continue
            row = _best(_hits(res, nfe, method=method), metric)
            cells.append(f"{info.fmt(row[metric])} ({row['sampler'].split(' ', 1)[1]})" if row else "")
        real = res.get("real_data")
        cells.append(info.fmt(real[metric]) if real else "")
        for row in (auto, named):
            if row is None:
                cells.append("")
                continue
            cells.append(f"{_speedup_of(res, row['sampler'], 'real')} / {_speedup_of(res, row['sampler'], 'model')}")
        if named:
            cells[1] += f" ({named['sampler'].split(' ', 1)[1]})"
        lines.append(f"| {res['case']} ({info.label}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """One panel per case: primary metric against NFE for every sampler (log NFE axis; log FID axis); BFN's
    default in red, its original sampler in black, BFN solid, diffusion dashed, flow matching dash-dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(results), 4)
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False)
    for ax, res in zip(axes.flat, results):
        metric = primary(res)
        info = METRICS[metric]
        scale = 100.0 if info.percent else 1.0
        labels = list(dict.fromkeys(r["sampler"] for r in res["rows"]))
        colours = iter(plt.get_cmap("tab10").colors[1:])  # red (index 3) is kept for BFN's default below
        for label in labels:
            pts = sorted((r["nfe"], scale * r[metric]) for r in res["rows"] if r["sampler"] == label)
            method = label.split()[0]
            if label == "bfn auto":
                style = {"color": "tab:red", "lw": 2.4, "zorder": 5}
            elif label == "bfn original":
                style = {"color": "black", "lw": 2}
            else:
                colour = next(c for c in colours if c != plt.get_cmap("tab10").colors[3])
                style = {"color": colour, "lw": 1.2, "ls": {"bfn": "-", "ddpm": "--", "fm": "-."}.get(method, "-")}
            if len(pts) == 1:
                ax.axhline(pts[0][1], ls=":", color="grey", label=f"{label} @ {pts[0][0]}")
            else:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label, **style)
        real = res.get("real_data")
        if real:
            ax.axhline(scale * real[metric], ls="--", color="green", lw=1, label="real data")
        ax.set_xscale("log")
        if metric == "fid":  # the original sampler's few-call FID is 10-100x the rest
            ax.set_yscale("log")
        ticks = sorted({*res["nfe_grid"], res["floor_nfe"]})
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
        ax.set_title(res["case"], fontsize=9)
        ax.set_xlabel("NFE")
        ax.set_ylabel(info.label + (" (higher is better)" if info.higher_is_better else ""))
        ax.legend(fontsize=5)
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces a result (``--out`` and ``--cache`` left out: they do not change the numbers)."""
    args = list(argv)
    for flag in ("--out", "--cache"):
        if flag in args:
            i = args.index(flag)
            del args[i : i + 2]
    return " ".join(["python", "benchmarks/peers.py", *args])


def result_path(out: Path, case: str) -> Path:
    return out / f"peers_{case.replace(':', '-')}.json"


def write_reports(results: list[dict[str, Any]], out: Path, argv: Sequence[str]) -> list[dict[str, Any]]:
    """Write each case's JSON, then ``peers.md`` and ``peers.png`` over every case whose JSON is in ``out``.

    Cases run by earlier invocations into the same folder stay in the report (each JSON records its command).
    """
    out.mkdir(parents=True, exist_ok=True)
    for res in results:
        res["command"] = command_line(argv)
        result_path(out, res["case"]).write_text(json.dumps(res, indent=1) + "\n")
    order = list(cases())
    stored = [json.loads(path.read_text()) for path in sorted(out.glob("peers_*.json"))]
    stored = [r for r in stored if "speedups" in r]
    results = sorted(stored, key=lambda r: order.index(r["case"]) if r["case"] in order else len(order))
    commands = list(dict.fromkeys(r["command"] for r in results if "command" in r))
    parts = [
        "# Against the peers",
        "",
        "Commands:",
        "",
        *[f"    {c}" for c in commands],
        "",
        f"## Summary at {SPEEDUP_NFE} NFE (BFN's default sampler, its best named solver, the best sampler of each "
        "peer; the speed-ups of BFN's samplers over its original sampler)",
        "",
        summary_table(results),
    ]
    for res in results:
        parts += ["", f"## {res['case']} ({res['num_samples']} samples, {res['recipe']['steps']} steps)", ""]
        parts.append(case_table(res))
    (out / "peers.md").write_text("\n".join(parts) + "\n")
    if results:
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
    parser.add_argument("--text-data", default="kjv", help="the text case's data set (default kjv; or text:PATH)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--cache", type=Path, help="trained networks and samples (default runs/bench/peers)")
    parser.add_argument("--no-cache", action="store_true", help="train and sample afresh, store nothing")
    parser.add_argument("--train-only", action="store_true", help="only train (or load) the networks")
    parser.add_argument("--report", action="store_true", help="only rewrite peers.md / peers.png from the JSON files")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = cases(args.quick, args.text_data)
    names = args.cases or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(table)}")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    out = args.out or RESULTS_DIR
    cache = None if args.no_cache else args.cache or DEFAULT_CACHE
    grid, floor = ((5, 10), 20) if args.quick else (NFE_GRID, DDPM_FLOOR_NFE)
    if args.report:
        write_reports([], out, argv)
        return 0
    for name in names:  # the report is rewritten after each case, so an interrupted run keeps what it finished
        case = table[name]
        if args.steps or args.quick:
            case = Case(case.name, case.title, case.num_samples, case.train, args.steps or 20, case.reference_samples)
        previous = json.loads(result_path(out, name).read_text()) if result_path(out, name).is_file() else None
        result = run_case(case, args.methods, grid, floor, cache, args.train_only, previous)
        if result is not None:
            write_reports([result], out, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
