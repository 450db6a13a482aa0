"""Recipes by measurement: sweep the continuous BFN's ``sigma_1`` (and learning rate / EMA decay) on the toy sets.

Each point trains ``bfn train --data toy:NAME --flow continuous --steps 3000`` with the listed ``sigma_1``, ``lr``
and EMA decay (through :func:`bfn.training.train`, i.e. exactly what the CLI runs) and scores the EMA model's
samples with the metrics of ``benchmarks/peers.py`` (off-manifold share, coverage, regions lost, sliced W1) at 10
and 50 NFE of BFN's sampler (:data:`peers.BFN_SAMPLERS`). Finished points are kept in the JSON file, so an
interrupted sweep resumes. The sweep's default ``lr`` / EMA decay (1e-3, 0.999) are the values before toy data got
their own (3e-3, 0.99).

``--score RUN ...`` scores run folders trained elsewhere (e.g. by ``bfn train`` with its defaults) the same way,
with the library's default sampler (``sampler="auto"``, ``steps`` = network calls) at 10 and 50 NFE.

Usage::

    python benchmarks/toy_recipes.py                                   # the sigma_1 sweep
    python benchmarks/toy_recipes.py --sigma-1 0.02 --lr 1e-3 3e-3 --ema-decay 0.999 0.99
    bfn train --data toy:two_moons --steps 3000 --out runs/moons       # the CLI's defaults, then:
    python benchmarks/toy_recipes.py --score runs/moons
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import bfn
import peers
from bfn.data import TOY_SETS
from bfn.training import TrainConfig, load_bundle, load_run_config, steps_for_nfe, train

NFES = (10, 50)
NUM_SAMPLES = 2000


def score_run(run_dir: Path, config: TrainConfig) -> dict[str, Any]:
    """Toy metrics of the run's EMA model at every NFE of :data:`NFES`."""
    model = bfn.BFN.from_pretrained(run_dir)
    bundle = load_bundle(config)
    train_pts = torch.stack([bundle.train[i] for i in range(len(bundle.train))]).double()
    test = torch.stack([bundle.test[i] for i in range(len(bundle.test))]).double()
    centres = peers.region_centres(train_pts)
    sampler, options = peers.BFN_SAMPLERS["continuous"]
    out: dict[str, Any] = {}
    for nfe in NFES:
        steps = steps_for_nfe(sampler, "continuous", nfe, **options)
        samples = model.sample(NUM_SAMPLES, sampler, steps, torch.Generator().manual_seed(peers.SEED), **options)
        out[str(nfe)] = peers.toy_scores(samples.samples, train_pts, test, centres)
    return out


def score_default_sampler(run_dir: Path) -> dict[str, Any]:
    """Toy metrics of a run folder's EMA model with the default sampler (``auto``) at every NFE of :data:`NFES`."""
    config = load_run_config(run_dir)
    model = bfn.BFN.from_pretrained(run_dir)
    bundle = load_bundle(config)
    train_pts = torch.stack([bundle.train[i] for i in range(len(bundle.train))]).double()
    test = torch.stack([bundle.test[i] for i in range(len(bundle.test))]).double()
    centres = peers.region_centres(train_pts)
    scores: dict[str, Any] = {}
    for nfe in NFES:
        out = model.sample(NUM_SAMPLES, steps=nfe, generator=torch.Generator().manual_seed(peers.SEED))
        assert out.nfe == nfe
        scores[str(nfe)] = {**peers.toy_scores(out.samples, train_pts, test, centres), "sampler": out.sampler}
    point = {k: getattr(config, k) for k in ("data", "flow", "sigma_1", "lr", "ema_decay", "steps")}
    return {**point, "run": run_dir.name, "sampler": "auto", "scores": scores}


def score_runs(runs: Sequence[Path], out: Path) -> int:
    """``--score``: score each run folder with the default sampler; JSON next to the sweep's, and a table."""
    points = [score_default_sampler(run) for run in runs]
    for p in points:
        s10, s50 = p["scores"]["10"], p["scores"]["50"]
        print(
            f"{p['data']} ({p['run']}): off-manifold {100 * s10['off_manifold']:.1f} / {100 * s50['off_manifold']:.1f}"
            f" % (10 / 50 NFE, auto = {s10['sampler']} / {s50['sampler']}), coverage {100 * s10['coverage']:.1f} %,"
            f" regions lost {s10['regions_lost']} / {s50['regions_lost']}",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"points": points}, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(points) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="*", default=list(TOY_SETS), choices=list(TOY_SETS))
    parser.add_argument("--sigma-1", nargs="*", type=float, default=[1e-3, 0.01, 0.02, 0.05, 0.1])
    parser.add_argument("--lr", nargs="*", type=float, default=[1e-3])
    parser.add_argument("--ema-decay", nargs="*", type=float, default=[0.999])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file (default results/toy_recipes.json; with --score results/toy_cli_defaults.json)",
    )
    parser.add_argument("--score", nargs="+", type=Path, metavar="RUN", help="score these run folders instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.score:
        return score_runs(args.score, args.out or peers.RESULTS_DIR / "toy_cli_defaults.json")
    args.out = args.out or peers.RESULTS_DIR / "toy_recipes.json"
    done: list[dict[str, Any]] = json.loads(args.out.read_text())["points"] if args.out.exists() else []
    for name in args.sets:
        for sigma in args.sigma_1:
            for lr in args.lr:
                for ema in args.ema_decay:
                    key = {"data": f"toy:{name}", "sigma_1": sigma, "lr": lr, "ema_decay": ema, "steps": args.steps}
                    if any(all(p[k] == v for k, v in key.items()) for p in done):
                        continue
                    with tempfile.TemporaryDirectory() as tmp:
                        config = TrainConfig(
                            data=f"toy:{name}", flow="continuous", steps=args.steps, sigma_1=sigma, lr=lr,
                            ema_decay=ema, val_every=0, ckpt_every=0, device="cpu", progress=False, out=tmp,
                        ).resolved()  # fmt: skip
                        start = time.process_time()
                        train(config)
                        seconds = time.process_time() - start
                        scores = score_run(Path(tmp), config)
                    done.append({**key, "train_cpu_seconds": round(seconds, 1), "scores": scores})
                    s10, s50 = scores["10"], scores["50"]
                    print(
                        f"{name} sigma_1={sigma:g} lr={lr:g} ema={ema:g}: off-manifold {100 * s10['off_manifold']:.1f}"
                        f" / {100 * s50['off_manifold']:.1f} % (10 / 50 NFE), regions lost {s50['regions_lost']}",
                        flush=True,
                    )
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps({"points": done}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table(done) + "\n")
    return 0


def table(points: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per point, off-manifold share / coverage / regions lost / sliced W1 at 10 and 50 NFE."""
    lines = [
        "| data | sigma_1 | lr | EMA | off-manifold % (10 / 50 NFE) | coverage % (50) | regions lost (50) | "
        "sliced W1 (10 / 50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p["data"], p["sigma_1"], p["lr"], p["ema_decay"])):
        a, b = p["scores"]["10"], p["scores"]["50"]
        lines.append(
            f"| {p['data']} | {p['sigma_1']:g} | {p['lr']:g} | {p['ema_decay']:g} | "
            f"{100 * a['off_manifold']:.1f} / {100 * b['off_manifold']:.1f} | {100 * b['coverage']:.1f} | "
            f"{b['regions_lost']} | {a['sliced_w1']:.4f} / {b['sliced_w1']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
