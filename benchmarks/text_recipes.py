"""The KJV text recipe, by measurement: one lever at a time in short runs, then the recipe at the full CPU budget.

Usage::

    python benchmarks/text_recipes.py --threads 2                  # the sweep and the final run (hours on 2 cores)
    python benchmarks/text_recipes.py --threads 2 --only final     # the final run only (resumes an interrupted one)
    python benchmarks/text_recipes.py --only final --steps 6000    # score a shorter run of the recipe
    python benchmarks/text_recipes.py --quick                      # a smoke run (seconds)

Every point trains ``bfn train --data kjv --flow discrete`` with the settings of :data:`BASELINE` (the former
CPU benchmark model: a Transformer of width 128 and depth 3, sequences of 64 characters, batch 64) changed as the
point says, through :func:`bfn.training.train` (exactly what the command line runs), into ``RUNS/<point>``; a
finished run is reused and an interrupted one resumed. The sweep points run :data:`SWEEP_STEPS` steps each; the
final run, :data:`RECIPE`, runs :data:`BUDGET_STEPS` steps, the 45 CPU minutes of the target (2 threads, measured
uncontended; see BENCHMARKS.md, "Text recipe").

Scores of each run's EMA model: validation bits/char (``model.nll``, :data:`VAL_EXAMPLES` sequences, two time draws
each) and spelling accuracy (% of words that hunspell en_US accepts, :mod:`bfn.metrics.spelling`) of
:data:`NUM_SAMPLES` samples at 20 NFE with ``sampler="auto"``, ending with a draw from the output distribution (the
default) and with its mode (``mode=True``). The final run also gets the test-set bits/char and spelling accuracy at
5, 10, 20, 50 NFE for ``auto`` and every discrete solver. Writes ``text_recipes.json`` and ``text_recipes.md`` to the
results folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import bfn
from bfn.checkpoint import find_checkpoint, verify_checkpoint
from bfn.data.text import decode_text
from bfn.metrics.spelling import spelling_accuracy
from bfn.training import TrainConfig, evaluate_nll, load_bundle, read_log, steps_for_nfe, train

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = REPO / "runs" / "bench" / "text_recipes"

BASELINE: dict[str, Any] = {
    "data": "kjv",
    "flow": "discrete",
    "beta_1": 0.75,
    "net": "transformer",
    "net_options": {"width": 128, "depth": 3, "heads": 4},
    "seq_len": 64,
    "batch_size": 64,
    "lr": 1e-3,
    "warmup": 100,
    "ema_decay": 0.999,
    "seed": 0,
}
"""The settings of the former CPU benchmark model (``bfn train --data kjv`` with these flags: 4.06 bits/char, 28 %
spelling accuracy after 3000 steps)."""

SWEEP_STEPS = 1200
"""Steps of each sweep point."""

SWEEP: dict[str, dict[str, Any]] = {
    "baseline": {},
    "conv_kernel=5": {"net_options": {"width": 128, "depth": 3, "heads": 4, "conv_kernel": 5}},
}
"""Sweep points: changes to :data:`BASELINE`."""

BUDGET_STEPS = 10500
"""The 45-minute CPU budget in steps: 3000 steps of the baseline take 11 minutes at 2 threads (BENCHMARKS.md, "KJV
text"), i.e. 0.22 s per step with validation and checkpoints, and the local convolutions of the recipe make a step
1.14-1.16x as long (interleaved timings at one and two threads), 0.255 s: 2700 s / 0.255 s = 10,600 steps, rounded
down."""

RECIPE: dict[str, Any] = {
    **BASELINE,
    "net_options": {"width": 128, "depth": 3, "heads": 4, "conv_kernel": 5},
    "steps": BUDGET_STEPS,
}
"""What ``bfn train --data kjv`` should resolve to (the discrete flow and the network follow the data source)."""

QUICK: dict[str, Any] = {
    **BASELINE,
    "net_options": {"width": 16, "depth": 1, "heads": 2, "conv_kernel": 3},
    "seq_len": 16,
    "batch_size": 8,
    "warmup": 1,
    "val_examples": 16,
}

SPELLING_NFE = 20
NFE_GRID = (5, 10, 20, 50)
SOLVERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("auto", {}),
    ("auto", {"mode": True}),
    ("bfn-solver1", {}),
    ("bfn-solver2", {}),
    ("bfn-solver3", {}),
    ("sde-bfn-solver1", {}),
    ("sde-bfn-solver2", {}),
    ("sde-bfn-solver3", {}),
)
"""Samplers of the final run's table: ``auto`` with a final draw and with the mode; the discrete solvers with their
defaults (the paper's uniform grid, ``final="drop"``: the most probable class of the last prediction)."""

NUM_SAMPLES = 200
VAL_EXAMPLES = 1024
SEED = 0


def run_config(name: str, values: Mapping[str, Any], steps: int, runs: Path, quick: bool) -> TrainConfig:
    """The training config of one point, its run folder ``runs/<name>``."""
    extra = {"val_every": 0, "ckpt_every": 0} if quick else {"val_every": 1000, "ckpt_every": 500}
    return TrainConfig.from_dict(
        {**values, **extra, "steps": steps, "progress": False, "out": str(runs / name.replace("=", "-"))}
    ).resolved()


def ensure_trained(config: TrainConfig, log: Any = print) -> int:
    """Train ``config`` unless its run folder already holds it; resume an interrupted run. Returns the step."""
    run = Path(config.out)
    checkpoint = find_checkpoint(run)
    if checkpoint is None:
        log(f"training {run} for {config.steps} steps")
        train(config)
    elif int(verify_checkpoint(checkpoint)["step"]) < config.steps:
        log(f"resuming {run}")
        train(config.replace(resume=True))
    return int(verify_checkpoint(find_checkpoint(run))["step"])  # type: ignore[arg-type]


def spelling(model: bfn.BFN, sampler: str, nfe: int, num: int, **options: Any) -> tuple[float, int, list[str]]:
    """Spelling accuracy (%) of ``num`` samples made with ``nfe`` network calls, the NFE used, and three samples."""
    steps = steps_for_nfe(sampler, "discrete", nfe, **options)
    out = model.sample(num, sampler, steps=steps, generator=torch.Generator().manual_seed(SEED), **options)
    texts = decode_text(out.samples)
    assert isinstance(texts, list)
    return 100 * spelling_accuracy(texts), out.nfe, texts[:3]


def score(config: TrainConfig, num: int, val_examples: int, final: bool) -> dict[str, Any]:
    """Bits/char and spelling accuracy of the run's EMA model (see the module docstring)."""
    run = Path(config.out)
    model = bfn.BFN.from_pretrained(run)
    bundle = load_bundle(config)
    rows = read_log(run / "log.csv")
    step, seconds = int(rows[-1]["step"]), float(rows[-1]["time"])  # type: ignore[arg-type]
    res: dict[str, Any] = {
        "step": step,
        "train_seconds": round(seconds, 3),
        "steps_per_second": round(step / seconds, 3) if seconds > 0 else None,  # a tiny run can log 0.000 s
        "val_bpc": round(evaluate_nll(model, bundle.val, max_examples=val_examples, seed=SEED, samples=2), 4),
    }
    for label, options in (("spelling_draw", {}), ("spelling_mode", {"mode": True})):
        value, _, texts = spelling(model, "auto", SPELLING_NFE, num, **options)
        res[label], res[label + "_samples"] = round(value, 1), texts
    if final:
        res["test_bpc"] = round(evaluate_nll(model, bundle.test, seed=SEED), 4)
        table: dict[str, dict[str, float]] = {}
        for sampler, options in SOLVERS:
            label = sampler + (" (mode)" if options.get("mode") else "")
            table[label] = {}
            for nfe in NFE_GRID:
                value, used, _ = spelling(model, sampler, nfe, num, **options)
                if used != nfe:
                    raise RuntimeError(f"{label}: made {used} network calls, expected {nfe}")
                table[label][str(nfe)] = round(value, 1)
                print(f"  {label:<20} NFE {nfe:>3}: spelling {value:.1f} %", flush=True)
        res["spelling_vs_nfe"] = table
    return res


def markdown(results: Mapping[str, Any]) -> str:
    """The tables of ``text_recipes.md``."""
    lines = []
    if results["points"]:
        lines += [
            "| point | steps | train time (s) | steps/s | val bits/char | spelling @20 NFE, draw (%) | mode (%) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    for name, res in results["points"].items():
        lines.append(
            f"| {name} | {res['step']} | {res['train_seconds']:.0f} | {_rate(res['steps_per_second'])} | "
            f"{res['val_bpc']:.3f} | {res['spelling_draw']:.1f} | {res['spelling_mode']:.1f} |"
        )
    final = results.get("final")
    if final:
        lines += [
            "",
            f"Final run ({final['step']} steps, {final['train_seconds']:.0f} s): test {final['test_bpc']:.3f} "
            f"bits/char, validation {final['val_bpc']:.3f}; spelling accuracy (%) against NFE:",
            "",
        ]
        lines += ["| sampler \\ NFE | " + " | ".join(map(str, NFE_GRID)) + " |", "|---" * (len(NFE_GRID) + 1) + "|"]
        for label, row in final["spelling_vs_nfe"].items():
            lines.append(f"| `{label}` | " + " | ".join(f"{row[str(n)]:.1f}" for n in NFE_GRID) + " |")
        lines += ["", "Samples (auto, 20 NFE, final draw):", ""]
        lines += [f"    {text}" for text in final["spelling_draw_samples"]]
    return "\n".join(lines) + "\n"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="kjv", help="kjv (default), text8:PATH or text:PATH")
    parser.add_argument("--only", choices=("sweep", "final"), help="run only the sweep or only the final run")
    parser.add_argument("--points", nargs="*", choices=list(SWEEP), help="sweep points (default: all)")
    parser.add_argument("--steps", type=int, help=f"steps of the final run (default {BUDGET_STEPS})")
    parser.add_argument("--runs", type=Path, default=RUNS, help="run folders (default runs/bench/text_recipes)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="a tiny model, 3 steps, few samples (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = {**(QUICK if args.quick else BASELINE), "data": args.data}
    sweep_steps, final_steps = (3, 3) if args.quick else (SWEEP_STEPS, args.steps or BUDGET_STEPS)
    num, val_examples = (8, 16) if args.quick else (NUM_SAMPLES, VAL_EXAMPLES)
    target = args.out / ("text_recipes_quick.json" if args.quick else "text_recipes.json")
    results: dict[str, Any] = json.loads(target.read_text()) if target.is_file() else {"points": {}}
    results["baseline"] = base
    results["recipe"] = {**(QUICK if args.quick else RECIPE), "data": args.data, "steps": final_steps}
    if args.only != "final":
        for name in args.points or list(SWEEP):
            changes = SWEEP[name]
            if args.quick and "net_options" in changes:
                changes = {**changes, "net_options": QUICK["net_options"]}
            config = run_config(name, {**base, **changes}, sweep_steps, args.runs, args.quick)
            ensure_trained(config)
            start = time.perf_counter()
            results["points"][name] = {"changes": changes, **score(config, num, val_examples, final=False)}
            print(f"{name}: {json.dumps({k: v for k, v in results['points'][name].items() if 'samples' not in k})}")
            print(f"  scored in {time.perf_counter() - start:.0f} s", flush=True)
    if args.only != "sweep":
        config = run_config("final", results["recipe"], final_steps, args.runs, args.quick)
        ensure_trained(config)
        results["final"] = score(config, num, val_examples, final=True)
        results["final"]["command"] = train_command(config)
        print(f"final: test {results['final']['test_bpc']} bits/char", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=1) + "\n")
    target.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {target} and {target.with_suffix('.md')}")
    return 0


def train_command(config: TrainConfig) -> str:
    """The ``bfn train`` command line of a run (the settings that differ from the CLI's defaults)."""
    default, values = TrainConfig().to_dict(), config.to_dict()
    args = ["bfn", "train"]
    for key in ("data", "flow", "beta_1", "net", "seq_len", "batch_size", "lr", "warmup", "ema_decay", "steps"):
        if key in ("data", "flow", "steps") or values[key] != default[key]:
            args.append(f"--{key.replace('_', '-')} {values[key]}")
    args += [f"--net-option {k}={v}" for k, v in values["net_options"].items()]
    return " ".join(args)


if __name__ == "__main__":
    sys.exit(main())
