"""The h dial: sample quality of the path-integral ``h-solver`` against ``h`` at 10, 20 and 100 NFE.

    python benchmarks/h_dial.py                  # the four CPU-sized models (trains them if needed)
    python benchmarks/h_dial.py --models kjv --h 0,0.5,1
    python benchmarks/h_dial.py --full           # GPU sizes
    python benchmarks/h_dial.py --quick          # smoke test

``h`` multiplies the variance of the injected noise (Hirono et al., ICML 2024): ``h = 0`` is the probability-flow
ODE, ``h = 1`` the reverse SDE, ``h > 1`` more stochastic than the SDE. The h-solver is an exponential integrator
in the half log-SNR ``lambda``, multistep, here of order 1 and 2; it makes one network call per step, so NFE =
steps. Same models, metric, seeds and sample counts as ``quality_vs_nfe.py`` (FID-digits for images, spelling
accuracy for text), cached in the same run folders.

Outputs in the results folder: ``h_dial_<model>.{json,md,png}`` and ``h_dial.md`` with every model found there.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib import (
    FID,
    SAMPLING_SEED,
    SPELLING,
    Metric,
    ResultCache,
    Scorer,
    Variant,
    add_common_arguments,
    default_results_dir,
    default_runs_dir,
    display_path,
    ensure_model,
    format_value,
    machine_description,
    markdown_table,
    mode_of,
    resolve_device,
    select_models,
    set_threads,
    train_command,
    write_json,
)
from quality_vs_nfe import evaluate_point

H_VALUES: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 1.0, 2.0)
NFE_VALUES: tuple[int, ...] = (10, 20, 100)
ORDERS: tuple[int, ...] = (1, 2)
QUICK = {"h": (0.0, 1.0), "nfe": (5,), "orders": (1, 2)}


def _metric(result: dict[str, Any]) -> Metric:
    return SPELLING if result["metric"] == SPELLING.label else FID


def model_markdown(result: dict[str, Any]) -> str:
    """One model's table: rows ``h``, columns (order, NFE); the best entry of each column in bold."""
    metric = _metric(result)
    arrow = "↑" if metric.higher_is_better else "↓"
    columns = [(order, nfe) for order in result["orders"] for nfe in result["nfe"]]
    values = {(p["h"], p["order"], p["nfe"]): p["value"] for p in result["points"]}
    best = {c: metric.best(v for (h, o, n), v in values.items() if (o, n) == c) for c in columns}
    rows = []
    for h in result["h"]:
        cells = []
        for column in columns:
            value = values.get((h, *column))
            text = format_value(value, metric)
            cells.append(f"**{text}**" if value is not None and value == best[column] else text)
        rows.append([f"{h:g}", *cells])
    header = ["h", *(f"order {o}, {n} NFE" for o, n in columns)]
    return "\n".join(
        [
            f"### {result['title']}",
            "",
            f"{metric.label} {arrow}; `h-solver`, {result['num_samples']} samples per entry, seed {result['seed']}; "
            f"model `{result['run_dir']}` (`{result['train_command']}`).",
            "",
            markdown_table(header, rows),
            "",
            f"![{result['title']}]({Path(result['plot']).name})",
            "",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    """Quality against h, one line per (order, NFE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = _metric(result)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for order, style in zip(result["orders"], ["--", "-", ":"]):
        for index, nfe in enumerate(result["nfe"]):
            points = sorted((p["h"], p["value"]) for p in result["points"] if p["order"] == order and p["nfe"] == nfe)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", ls=style, color=f"C{index}", label=f"order {order}, {nfe} NFE")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xticks(result["h"])
    ax.set_xticklabels([f"{h:g}" for h in result["h"]])
    if not metric.higher_is_better:
        ax.set_yscale("log")
    ax.set_xlabel("h (0 = probability-flow ODE, 1 = reverse SDE)")
    ax.set_ylabel(f"{metric.label} ({'higher' if metric.higher_is_better else 'lower'} is better)")
    ax.set_title(f"{result['title']}: the h dial")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_markdown(results_dir: Path) -> str:
    """``h_dial.md``: every model's table found in ``results_dir``."""
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("h_dial_*.json"))]
    head = ["# The h dial", "", f"Machine: {results[0]['machine']}" if results else "", ""]
    return "\n".join(head + [model_markdown(r) for r in results])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    mode = mode_of(args)
    runs_dir = args.runs_dir or default_runs_dir(mode)
    out_dir = args.out or default_results_dir(mode)
    device = resolve_device(args.device)
    quick = mode == "quick"
    h_values = tuple(args.h) if args.h else QUICK["h"] if quick else H_VALUES
    nfe_values = tuple(args.nfe) if args.nfe else QUICK["nfe"] if quick else NFE_VALUES
    orders = tuple(args.orders) if args.orders else QUICK["orders"] if quick else ORDERS
    outputs = []
    for spec in select_models(mode, args.models):
        loaded = ensure_model(spec, runs_dir, args.device)
        scorer = Scorer(spec, device)
        cache = ResultCache(loaded.run_dir / "bench-cache.json", enabled=not args.recompute)
        num_samples = args.num_samples or spec.num_samples
        points = []
        for order in orders:
            for nfe in nfe_values:
                for h in h_values:
                    variant = Variant(f"h-solver (h={h:g}, order {order})", "h-solver", {"h": float(h), "order": order})
                    steps = variant.steps_for(nfe)
                    assert steps is not None  # a multistep solver: one call per step
                    point = evaluate_point(loaded, scorer, variant, steps, cache, num_samples)
                    points.append({"h": float(h), "order": order, "nfe": point["nfe"], "value": point["value"],
                                   "seconds": point["seconds"]})  # fmt: skip
                    print(
                        f"[{spec.name}] h-solver order {order}, h={h:<4g} NFE {point['nfe']:>4}: "
                        f"{spec.metric.label} {format_value(point['value'], spec.metric)}",
                        flush=True,
                    )
        result = {
            "model": spec.name,
            "title": spec.title,
            "mode": mode,
            "metric": spec.metric.label,
            "machine": machine_description(),
            "run_dir": display_path(loaded.run_dir),
            "train_command": train_command(spec, runs_dir),
            "weights_sha256": loaded.weights_sha256,
            "num_samples": num_samples,
            "seed": SAMPLING_SEED,
            "h": [float(h) for h in h_values],
            "nfe": list(nfe_values),
            "orders": list(orders),
            "points": points,
        }
        stem = out_dir / f"h_dial_{spec.name}"
        result["plot"] = display_path(stem.with_suffix(".png"))
        plot(result, stem.with_suffix(".png"))
        write_json(stem.with_suffix(".json"), result)
        stem.with_suffix(".md").write_text(model_markdown(result))
        (out_dir / "h_dial.md").write_text(summary_markdown(out_dir))
        print(f"[{spec.name}] wrote {stem}.{{json,md,png}}", flush=True)
        outputs.append(result)
    return outputs


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_common_arguments(parser)
    parser.add_argument("--h", type=_floats, help="comma-separated h values (default 0,0.1,0.3,0.5,1,2)")
    parser.add_argument("--nfe", type=_ints, help="comma-separated NFE values (default 10,20,100)")
    parser.add_argument("--orders", type=_ints, help="comma-separated solver orders (default 1,2)")
    parser.add_argument("--num-samples", type=int, help="samples per point (default: the model's)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
