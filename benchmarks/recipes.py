"""Recipes by measurement beyond the toy sweep: the digits' learning rate and EMA decay, and stratified loss times.

Two sweeps, each keeping its finished points in a JSON file (an interrupted sweep resumes):

* ``digits``: ``bfn train --data digits --steps 3000`` (the discretised flow with 17 bins, the library's defaults)
  with each listed learning rate and EMA decay, through :func:`bfn.training.train` (exactly what the command line
  runs), seeds ``0 .. --seeds - 1``; scored by FID-digits (against the training split, as in ``peers.py``) of 1000
  samples of the default sampler (``sampler="auto"``) at 10 NFE, and the test-set bits/dim (``model.nll``, 8 time
  draws per example).
* ``times``: the loss's times drawn independently (``time_sampling="uniform"``, the default of
  :meth:`bfn.BFN.loss`) or as one stratified, low-discrepancy set per batch (``"stratified"``, Kingma et al., 2021),
  on the toy sets and the discretised digits with the library's default recipe for each, 3000 steps, seeds
  ``0 .. --seeds - 1``, trained with the loop of ``peers.py`` (the same AdamW, warm-up, clipping and EMA as
  ``bfn train``; seed = network initialisation, data order and loss noise). Scored with the metrics of ``peers.py``
  at 10 NFE of ``auto`` (toy: off-manifold share and sliced W1 of 2000 samples; digits: FID-digits of 1000), the
  test-set NLL bound, and the spread of the batch-mean loss of the trained EMA model under each scheme (64 batches
  of the training batch size: the variance the scheme is meant to reduce).

Every model is also scored with the named solvers of ``peers.py`` at 10 NFE and with the original sampler at
:data:`ORIGINAL_NFE` calls, which tell the model's quality apart from the default sampler's error. The trained
models stay in ``--runs`` (run folders, or EMA weights for ``times``), so ``--rescore`` scores them again (e.g. after
a change of the samplers) without training.

Usage::

    python benchmarks/recipes.py digits --lr 1e-3 2e-3 3e-3 --ema-decay 0.999 0.99
    python benchmarks/recipes.py digits --lr 2e-3 --ema-decay 0.99 --seeds 3
    python benchmarks/recipes.py times --seeds 3
    python benchmarks/recipes.py --quick times     # smoke run (seconds; the numbers mean nothing)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import bfn
import peers
from bfn.checkpoint import find_checkpoint, verify_checkpoint
from bfn.data import TOY_SETS
from bfn.training import TrainConfig, evaluate_nll, load_bundle, steps_for_nfe, train

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(__file__).resolve().parent.parent / "runs" / "bench" / "recipes"
STEPS = 3000
NFE = 10
ORIGINAL_NFE = 100
NLL_SAMPLES = 8
LOSS_BATCHES = 64
TIME_SAMPLING = ("uniform", "stratified")


def quick_options(quick: bool) -> dict[str, Any]:
    """Tiny sizes of a smoke run."""
    return {"net": "mlp", "net_options": {"hidden": 32, "depth": 1}, "batch_size": 32, "warmup": 1} if quick else {}


def _stack(split: Any) -> torch.Tensor:
    return torch.stack([split[i] for i in range(len(split))])


def _key_matches(point: dict[str, Any], key: dict[str, Any]) -> bool:
    return all(point.get(k) == v for k, v in key.items())


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["points"] if path.is_file() else []


def _save(path: Path, points: list[dict[str, Any]], markdown: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"points": points}, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown + "\n")


def score_samples(model: bfn.BFN, case: peers.Case, scorer: peers.CaseScorer, num: int) -> dict[str, Any]:
    """The case's real-data metrics of ``num`` samples (seed ``peers.SEED``) of ``auto`` at :data:`NFE` calls (the
    top-level keys, and ``sampler``: what it ran), of each named solver of ``peers.py`` at :data:`NFE` calls
    (``named``) and of the original sampler at :data:`ORIGINAL_NFE` calls (``original``)."""

    def draw(sampler: str, nfe: int, **options: Any) -> Any:
        steps = steps_for_nfe(sampler, case.kind, nfe, **options)
        return model.sample(num, sampler, steps, torch.Generator().manual_seed(peers.SEED), **options)

    auto = draw("auto", NFE)
    named = {}
    for sampler, options in peers.NAMED_SOLVERS[case.kind]:
        named[peers.describe_config(sampler, options)] = scorer.real(draw(sampler, NFE, **options).samples)
    return {
        **scorer.real(auto.samples),
        "sampler": peers.describe_config(auto.sampler, auto.options),
        "nfe": auto.nfe,
        "named": named,
        "original": scorer.real(draw("bfn", ORIGINAL_NFE).samples),
    }


def best_named(scores: dict[str, Any], metric: str) -> tuple[str, float]:
    """The named solver with the best ``metric`` (lower is better) and its value."""
    label = min(scores["named"], key=lambda k: scores["named"][k][metric])
    return label, scores["named"][label][metric]


# ================================================================================================== digits


def digits_sweep(args: argparse.Namespace) -> int:
    """``digits``: learning rate x EMA decay x seed through ``bfn train``'s own loop."""
    path = args.out / ("recipes_digits_quick.json" if args.quick else "recipes_digits.json")
    points = _load(path)
    case = peers.cases(args.quick)["digits-discretised"]
    steps = args.steps or (20 if args.quick else STEPS)
    num = case.num_samples
    bundle = scorer = None
    for lr in args.lr:
        for ema in args.ema_decay:
            for seed in range(args.seeds):
                key = {"data": "digits", "lr": lr, "ema_decay": ema, "seed": seed, "steps": steps}
                done = [p for p in points if _key_matches(p, key)]
                if done and not args.rescore:
                    continue
                run = args.runs / f"digits-lr{lr:g}-ema{ema:g}-seed{seed}-steps{steps}"
                config = TrainConfig(
                    data="digits", steps=steps, lr=lr, ema_decay=ema, seed=seed, val_every=0, ckpt_every=0,
                    device="cpu", progress=False, out=str(run), **quick_options(args.quick),
                ).resolved()  # fmt: skip
                seconds = ensure_trained(config)
                model = bfn.BFN.from_pretrained(run)
                if bundle is None:
                    bundle = load_bundle(config)
                    scorer = peers.CaseScorer(case, bundle)
                assert scorer is not None
                scores = score_samples(model, case, scorer, num)
                bpd = evaluate_nll(model, bundle.test, seed=0, samples=NLL_SAMPLES)
                seconds = done[0]["train_cpu_seconds"] if done and seconds is None else seconds
                point = {**key, "sigma_1": config.sigma_1, "train_cpu_seconds": seconds, "test_bits_per_dim": bpd,
                         "scores": scores}  # fmt: skip
                points = [p for p in points if not _key_matches(p, key)] + [point]
                named, value = best_named(scores, "fid")
                print(f"digits lr={lr:g} ema={ema:g} seed={seed}: FID-digits at {NFE} NFE {scores['fid']:.3f} (auto), "
                      f"{value:.3f} ({named}); {bpd:.3f} bits/dim", flush=True)  # fmt: skip
                _save(path, points, digits_table(points))
    _save(path, points, digits_table(points))
    return 0


def ensure_trained(config: TrainConfig) -> float | None:
    """Train ``config`` into its run folder unless it holds the finished run; resume an interrupted one. Returns
    the CPU seconds spent (``None`` when nothing was trained); a run that stops short of its steps is an error."""
    run = Path(config.out)
    checkpoint = find_checkpoint(run)
    step = int(verify_checkpoint(checkpoint)["step"]) if checkpoint is not None else 0
    if step >= int(config.steps or 0):
        return None
    start = time.process_time()
    train(config.replace(resume=True) if checkpoint is not None else config)
    seconds = round(time.process_time() - start, 1)
    checkpoint = find_checkpoint(run)
    step = int(verify_checkpoint(checkpoint)["step"]) if checkpoint is not None else 0
    if step < int(config.steps or 0):
        raise SystemExit(f"{run} stopped at step {step} of {config.steps} (interrupted?); rerun to resume it")
    return seconds


def digits_table(points: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per (lr, EMA decay), the FID-digits of each seed and their mean, and the bits/dim."""
    groups: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["lr"], p["ema_decay"]), []).append(p)
    lines = [
        f"| lr | EMA decay | FID-digits at {NFE} NFE (`auto`), per seed | mean | best named solver at {NFE} NFE "
        f"(mean) | original sampler at {ORIGINAL_NFE} NFE (mean) | test bits/dim (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (lr, ema), group in sorted(groups.items()):
        group = sorted(group, key=lambda p: p["seed"])
        fids = [p["scores"]["fid"] for p in group]
        named = statistics.mean(best_named(p["scores"], "fid")[1] for p in group)
        original = statistics.mean(p["scores"]["original"]["fid"] for p in group)
        bpd = statistics.mean(p["test_bits_per_dim"] for p in group)
        lines.append(f"| {lr:g} | {ema:g} | {' / '.join(f'{v:.3f}' for v in fids)} | {statistics.mean(fids):.3f} | "
                     f"{named:.3f} | {original:.3f} | {bpd:.3f} |")  # fmt: skip
    return "\n".join(lines)


# ================================================================================================== times


def loss_spread(model: bfn.BFN, data: torch.Tensor, batch: int, mode: str) -> float:
    """Standard deviation of the batch-mean loss (nats per element) over :data:`LOSS_BATCHES` batches of the
    training data under the time scheme ``mode`` (fixed batches and generator: the same for both schemes)."""
    order = torch.Generator().manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    values = []
    with torch.no_grad():
        for _ in range(LOSS_BATCHES):
            index = torch.randint(0, data.shape[0], (batch,), generator=order)
            values.append(float(model.loss(data[index], generator=generator, time_sampling=mode)))
    return statistics.stdev(values)


def time_sweep(args: argparse.Namespace) -> int:
    """``times``: uniform against stratified loss times, per case and seed, through the shared training loop."""
    path = args.out / ("time_sampling_quick.json" if args.quick else "time_sampling.json")
    points = _load(path)
    table = peers.cases(args.quick)
    names = args.cases or [f"toy:{name}" for name in TOY_SETS] + ["digits-discretised"]
    steps = args.steps or (20 if args.quick else STEPS)
    for name in names:
        case = table[name]
        config = case.config(steps)
        bundle = load_bundle(config)
        data = _stack(bundle.train)
        scorer = peers.CaseScorer(case, bundle)
        for seed in range(args.seeds):
            for mode in TIME_SAMPLING:
                key = {"case": name, "time_sampling": mode, "seed": seed, "steps": steps}
                done = [p for p in points if _key_matches(p, key)]
                if done and not args.rescore:
                    continue
                torch.manual_seed(seed)
                model = config.model_config(bundle).build()
                weights = args.runs / f"times-{case.slug}-{mode}-seed{seed}-steps{steps}.safetensors"
                if weights.is_file():
                    ema_net = copy.deepcopy(model.net).eval().requires_grad_(False)
                    ema_net.load_state_dict(load_file(str(weights)))
                    seconds = done[0]["train_cpu_seconds"] if done else None
                else:
                    loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor] = (
                        lambda x, g, model=model, mode=mode: model.loss(x, generator=g, time_sampling=mode)
                    )
                    method = peers.Method("bfn", model.net, loss, lambda grid, floor: [])
                    ema_net, seconds = peers.train_method(method, config, data, seed=seed)
                    weights.parent.mkdir(parents=True, exist_ok=True)
                    save_file({k: v.contiguous() for k, v in ema_net.state_dict().items()}, str(weights))
                    seconds = round(seconds, 1)
                trained = bfn.BFN(ema_net, model.flow, model.data_shape).eval()
                point = {
                    **key,
                    "recipe": {k: getattr(config, k) for k in ("sigma_1", "lr", "ema_decay", "batch_size")},
                    "train_cpu_seconds": seconds,
                    "scores": score_samples(trained, case, scorer, case.num_samples),
                    "test_nll": evaluate_nll(trained, bundle.test, seed=0, samples=NLL_SAMPLES),
                    "loss_std": {m: loss_spread(trained, data, config.batch_size, m) for m in TIME_SAMPLING},
                }
                points = [p for p in points if not _key_matches(p, key)] + [point]
                metric = "off_manifold" if case.is_toy else "fid"
                spread = " / ".join(f"{point['loss_std'][m]:.4f}" for m in TIME_SAMPLING)
                print(f"{name} {mode} seed={seed}: {metric} {point['scores'][metric]:.4f} (auto), "
                      f"{best_named(point['scores'], metric)[1]:.4f} (best named), NLL {point['test_nll']:.3f}, "
                      f"loss std {spread}", flush=True)  # fmt: skip
                _save(path, points, time_table(points))
    _save(path, points, time_table(points))
    return 0


def time_table(points: Sequence[dict[str, Any]]) -> str:
    """Markdown: per case and scheme, the metrics' mean over seeds (and each seed's value)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["case"], p["time_sampling"]), []).append(p)
    lines = [
        f"| case | loss times | quality at {NFE} NFE (`auto`), per seed | mean | best named solver at {NFE} NFE "
        f"(mean) | original sampler at {ORIGINAL_NFE} NFE (mean) | sliced W1 (toy, `auto`, mean) | test NLL bound "
        "(mean) | batch-mean loss std, uniform / stratified |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, mode), group in sorted(groups.items(), key=lambda kv: (kv[0][0], TIME_SAMPLING.index(kv[0][1]))):
        group = sorted(group, key=lambda p: p["seed"])
        toy = name.startswith("toy:")
        metric = "off_manifold" if toy else "fid"
        scale = 100 if toy else 1
        values = [p["scores"][metric] * scale for p in group]
        named = statistics.mean(best_named(p["scores"], metric)[1] * scale for p in group)
        original = statistics.mean(p["scores"]["original"][metric] * scale for p in group)
        label = "off-manifold %" if toy else "FID-digits"
        sw1 = f"{statistics.mean(p['scores']['sliced_w1'] for p in group):.4f}" if toy else ""
        nll = statistics.mean(p["test_nll"] for p in group)
        spread = " / ".join(f"{statistics.mean(p['loss_std'][m] for p in group):.4f}" for m in TIME_SAMPLING)
        lines.append(
            f"| {name} | {mode} | {label} {' / '.join(f'{v:.2f}' for v in values)} | {statistics.mean(values):.2f} |"
            f" {named:.2f} | {original:.2f} | {sw1} | {nll:.3f} | {spread} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks, 20 steps (smoke run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--runs", type=Path, default=RUNS, help="trained models (default runs/bench/recipes)")
    parser.add_argument("--rescore", action="store_true", help="score the finished points again (no training)")
    sub = parser.add_subparsers(dest="sweep", required=True)
    digits = sub.add_parser("digits", help="learning rate x EMA decay on the discretised digits")
    digits.add_argument("--lr", nargs="+", type=float, default=[1e-3, 2e-3, 3e-3])
    digits.add_argument("--ema-decay", nargs="+", type=float, default=[0.999, 0.99])
    digits.add_argument("--seeds", type=int, default=1)
    digits.add_argument("--steps", type=int, help=f"training steps (default {STEPS})")
    times = sub.add_parser("times", help="uniform against stratified loss times")
    times.add_argument("--cases", nargs="*", help="peers.py case names (default: the toy sets and digits)")
    times.add_argument("--seeds", type=int, default=3)
    times.add_argument("--steps", type=int, help=f"training steps (default {STEPS})")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return digits_sweep(args) if args.sweep == "digits" else time_sweep(args)


if __name__ == "__main__":
    sys.exit(main())
