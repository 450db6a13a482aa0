"""Sample quality against network evaluations (NFE) for every registered sampler, and the solvers' speed-up.

    python benchmarks/quality_vs_nfe.py                       # the four CPU-sized models (trains them if needed)
    python benchmarks/quality_vs_nfe.py --models digits-continuous --nfe 10,20
    python benchmarks/quality_vs_nfe.py --full                # GPU sizes
    python benchmarks/quality_vs_nfe.py --quick               # smoke test: tiny models, few samples

For each benchmark model (digits continuous, digits discretised with 17 bins, binarised digits as discrete K = 2,
KJV text as discrete K = 27) every sampler registered for its data kind runs at NFE in {5, 10, 20, 50, 100, 200,
1000}. The number of steps is chosen so that the sampler makes exactly that many network calls (the original
sampler makes n + 1 calls in n steps, a single-step solver k (n - 1) + 1; the count is checked against the NFE the
sampler reports). A combination that cannot make exactly that many calls is skipped and listed; single-step
solvers are then also run at the nearest lower NFE they can make, reported separately. Every sampler runs with its
defaults, i.e. the paper's time grid uniform in ``t``; the main multistep solvers run a second time on the grid
uniform in log-SNR (``grid="logsnr"``; discrete data, which refuse it, on ``grid="tuned"``; ``--no-logsnr`` leaves
those out).

Quality: FID-digits (Frechet distance on the features of the digits classifier that ``bfn.metrics`` ships, *not*
Inception FID) of the samples against the validation + test images, lower is better; spelling accuracy (%) for text,
higher is better. Every run uses the same fixed seed, so reruns give identical numbers. Each model's test-set
bits/dim (bits/char) comes from ``model.nll`` (``L_inf + L_r``).

Speed-up: for every solver, the NFE the original ``bfn`` sampler needs to reach the solver's quality at 10 NFE
(linear interpolation of the original sampler's curve in log NFE), divided by 10.

Outputs per model in the results folder: ``quality_vs_nfe_<model>.{json,md,png}``; and ``quality_vs_nfe.md`` with
every model found there.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import (
    FID,
    NFE_GRID,
    SAMPLING_SEED,
    SPELLING,
    LoadedModel,
    Metric,
    ResultCache,
    Scorer,
    Variant,
    add_common_arguments,
    cache_key,
    default_results_dir,
    default_runs_dir,
    display_path,
    ensure_model,
    format_value,
    generate,
    machine_description,
    markdown_table,
    mode_of,
    nll_canary,
    resolve_device,
    sampler_canary,
    sampler_variants,
    select_models,
    set_threads,
    test_bits_per_dim,
    train_command,
    write_json,
)

QUICK_NFE_GRID = (5, 10)
SPEEDUP_NFE = 10
SPEEDUP_AT = (SPEEDUP_NFE, 5)
"""Budgets at which the speed-up is reported: 10 NFE (the claim), and 5 NFE for comparison."""


# ================================================================================================== measuring


def evaluate_point(
    loaded: LoadedModel,
    scorer: Scorer,
    variant: Variant,
    steps: int,
    cache: ResultCache,
    num_samples: int,
    seed: int = SAMPLING_SEED,
) -> dict[str, Any]:
    """Quality of ``variant`` in ``steps`` steps: ``{"value", "nfe", "steps", "seconds"}`` (cached)."""
    spec = loaded.spec

    def compute() -> dict[str, Any]:
        start = time.perf_counter()
        samples, nfe = generate(loaded.model, variant, steps, num_samples, spec.sample_batch, seed)
        return {"value": scorer(samples), "nfe": nfe, "steps": steps, "seconds": time.perf_counter() - start}

    key = cache_key(
        loaded,
        "quality",
        variant.sampler,
        dict(variant.options),
        steps,
        num_samples,
        spec.sample_batch,
        seed,
        sampler_canary(loaded, variant),
        scorer.fingerprint,
    )
    return cache.get_or_compute(key, compute)


def sweep(
    loaded: LoadedModel,
    scorer: Scorer,
    variants: Sequence[Variant],
    nfe_grid: Sequence[int],
    cache: ResultCache,
    num_samples: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every variant at every NFE of the grid; returns the per-variant curves and the skipped combinations."""
    spec = loaded.spec
    curves: dict[str, Any] = {}
    for variant in variants:
        points, off_grid, skipped = [], [], []
        for nfe in nfe_grid:
            if not (variant.is_original and not variant.options) and nfe > spec.max_solver_nfe:
                skipped.append({"nfe": nfe, "reason": f"above the CPU budget of {spec.max_solver_nfe} NFE"})
                continue
            steps = variant.steps_for(nfe)
            if steps is None:
                skipped.append({"nfe": nfe, "reason": "no step count makes exactly this many calls"})
                steps = variant.steps_at_most(nfe)
                if steps is None:
                    continue
                target = off_grid
            else:
                target = points
            point = evaluate_point(loaded, scorer, variant, steps, cache, num_samples)
            if point["nfe"] != variant.nfe(steps) or (target is points and point["nfe"] != nfe):
                raise RuntimeError(f"{variant.label}: {steps} steps made {point['nfe']} calls, expected {nfe}")
            target.append(point)
            log(
                f"[{spec.name}] {variant.label:<34} NFE {point['nfe']:>4} ({steps} steps): "
                f"{spec.metric.label} {format_value(point['value'], spec.metric)}  ({point['seconds']:.1f} s)"
            )
        curves[variant.label] = {
            "sampler": variant.sampler,
            "options": dict(variant.options),
            "points": points,
            "off_grid": off_grid,
            "skipped": skipped,
        }
    return curves


def seed_spread(
    loaded: LoadedModel,
    scorer: Scorer,
    variants: Sequence[Variant],
    cache: ResultCache,
    num_samples: int,
    seeds: int,
    nfe: int = 10,
) -> list[dict[str, Any]]:
    """The metric of each variant at ``nfe`` (or the nearest lower NFE it can make) under seeds ``0 .. seeds - 1``:
    how much of a difference between two entries of the table is sampling noise."""
    out = []
    for variant in variants if seeds > 1 else []:
        steps = variant.steps_for(nfe) or variant.steps_at_most(nfe)
        if steps is None:
            continue
        values = [
            evaluate_point(loaded, scorer, variant, steps, cache, num_samples, seed)["value"] for seed in range(seeds)
        ]
        out.append(
            {
                "label": variant.label,
                "nfe": variant.nfe(steps),
                "values": values,
                "mean": statistics.mean(values),
                "std": statistics.stdev(values),
            }
        )
    return out


# ================================================================================================== speed-up


def nfe_to_match(curve: Sequence[tuple[int, float]], target: float, metric: Metric) -> tuple[float | None, str]:
    """The NFE at which ``curve`` (NFE, value pairs) first reaches ``target``, interpolated linearly in log NFE.

    Returns ``(nfe, text)``: ``(None, "> N")`` when the curve never gets there (``N`` its largest NFE) and
    ``(nfe_0, "<= nfe_0")`` when its first point is already as good.
    """
    curve = sorted(curve)
    if not curve:
        return None, "n/a"
    if metric.better(curve[0][1], target):
        return float(curve[0][0]), f"<= {curve[0][0]}"
    for (n0, v0), (n1, v1) in itertools.pairwise(curve):
        if metric.better(v1, target):
            frac = (target - v0) / (v1 - v0) if v1 != v0 else 1.0
            nfe = math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))
            return nfe, f"{nfe:.0f}"
    return None, f"> {curve[-1][0]}"


def speedups(curves: dict[str, Any], metric: Metric, at: int = SPEEDUP_NFE) -> list[dict[str, Any]]:
    """Per solver: its quality at ``at`` NFE (or the nearest lower NFE it can make), the NFE the original sampler
    needs for that quality and the ratio."""
    reference = curves.get("bfn")
    if reference is None:
        return []
    bfn_curve = [(p["nfe"], p["value"]) for p in reference["points"]]
    rows = []
    for label, curve in curves.items():
        if label == "bfn":
            continue
        candidates = [p for p in curve["points"] + curve["off_grid"] if p["nfe"] <= at]
        if not candidates:
            continue
        point = max(candidates, key=lambda p: p["nfe"])
        needed, text = nfe_to_match(bfn_curve, point["value"], metric)
        if needed is None:
            ratio_text = f"> {bfn_curve[-1][0] / point['nfe']:.0f}" if text.startswith(">") else "n/a"
            ratio = math.inf if text.startswith(">") else None
        else:
            ratio = needed / point["nfe"]
            ratio_text = f"<= {ratio:.1f}" if text.startswith("<=") else f"{ratio:.1f}"
        rows.append(
            {
                "solver": label,
                "nfe": point["nfe"],
                "value": point["value"],
                "bfn_nfe": needed,
                "bfn_nfe_text": text,
                "speedup": ratio,
                "speedup_text": ratio_text,
            }
        )
    return rows


def value_at(curve: Sequence[tuple[int, float]], nfe: float) -> float:
    """``curve`` (NFE, value pairs) at ``nfe``, interpolated linearly in log NFE (clamped to its ends)."""
    curve = sorted(curve)
    if nfe <= curve[0][0]:
        return curve[0][1]
    for (n0, v0), (n1, v1) in itertools.pairwise(curve):
        if nfe <= n1:
            return v0 + (v1 - v0) * (math.log(nfe) - math.log(n0)) / (math.log(n1) - math.log(n0))
    return curve[-1][1]


def judge_noise(
    blocks: dict[str, dict[str, Any]], curves: dict[str, Any], metric: Metric, spread: Sequence[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Mark which speed-ups sampling noise can explain, and bracket each bfn NFE by the metric +- 2 sigma.

    ``spread``: seed-to-seed results at 10 NFE of ``bfn`` and of the best solver. A solver counts as *resolved*
    when it beats the original sampler at the same NFE by more than ``2 sigma_diff``, ``sigma_diff`` the root sum
    of squares of the measured standard deviations (the noise of a difference). The bracket is the range of NFE over
    which the original sampler's curve passes from ``value + 2 sigma`` to ``value - 2 sigma`` (lower is better;
    mirrored for higher is better), ``sigma`` the best solver's own std (measured at the quality level where the
    match happens). The best speed-up per budget is chosen among resolved solvers only.
    """
    stds = {x["label"]: x["std"] for x in spread}
    sigma_diff = math.sqrt(sum(v * v for v in stds.values()))
    solver_stds = [v for k, v in stds.items() if k != "bfn"]
    sigma = solver_stds[0] if solver_stds else max(stds.values(), default=0.0)
    bfn_curve = [(p["nfe"], p["value"]) for p in curves["bfn"]["points"]] if "bfn" in curves else []
    sign = 1.0 if metric.higher_is_better else -1.0
    for block in blocks.values():
        for row in block["rows"]:
            gain = sign * (row["value"] - value_at(bfn_curve, row["nfe"])) if bfn_curve else 0.0
            row["resolved"] = bool(sigma_diff > 0 and gain > 2 * sigma_diff)
            _, low = nfe_to_match(bfn_curve, row["value"] - sign * 2 * sigma, metric)
            _, high = nfe_to_match(bfn_curve, row["value"] + sign * 2 * sigma, metric)
            row["bfn_nfe_band"] = f"{low} – {high}"
        resolved = [r for r in block["rows"] if r["resolved"] and r["speedup"] is not None]
        block["best"] = max(resolved, key=lambda r: (r["speedup"], -r["nfe"]), default=None)
        block["sigma"] = sigma
        block["sigma_diff"] = sigma_diff
    return blocks


# ================================================================================================== reporting


def model_markdown(result: dict[str, Any]) -> str:
    """The markdown section of one model: header numbers, quality table, skipped combinations, speed-up table."""
    metric = SPELLING if result["metric"] == SPELLING.label else FID
    arrow = "↑" if metric.higher_is_better else "↓"
    grid = result["nfe_grid"]
    lines = [
        f"### {result['title']}",
        "",
        f"Run folder `{result['run_dir']}` (step {result['train_step']}), trained with `{result['train_command']}`.",
        "",
        f"* Test-set NLL bound (`model.nll`): **{result['bits_per_dim']:.3f} {result['bits_unit']}** "
        f"({result['nll_note']}).",
        f"* {metric.label} of real data ({result['data_note']}): **{format_value(result['data_score'], metric)}**.",
        f"* {result['num_samples']} samples per point, seed {result['seed']}."
        + "".join(
            f" Seed-to-seed spread of `{s['label']}` at {s['nfe']} NFE over seeds 0-{len(s['values']) - 1}: "
            f"{format_value(s['mean'], metric)} ± {format_value(s['std'], metric)} (mean ± std)."
            for s in result.get("seed_spread", [])
        ),
        "",
        f"{metric.label} {arrow} against NFE (best per column in bold):",
        "",
    ]
    best = {}
    for nfe in grid:
        values = [p["value"] for c in result["curves"].values() for p in c["points"] if p["nfe"] == nfe]
        if values:
            best[nfe] = metric.best(values)
    rows = []
    for label, curve in result["curves"].items():
        by_nfe = {p["nfe"]: p["value"] for p in curve["points"]}
        cells = []
        for nfe in grid:
            text = format_value(by_nfe.get(nfe), metric)
            cells.append(f"**{text}**" if nfe in by_nfe and by_nfe[nfe] == best.get(nfe) else text)
        rows.append([f"`{label}`", *cells])
    lines.append(markdown_table(["sampler \\ NFE", *map(str, grid)], rows))
    off_grid = [(label, c["off_grid"]) for label, c in result["curves"].items() if c["off_grid"]]
    budget = sorted({s["nfe"] for c in result["curves"].values() for s in c["skipped"] if "budget" in s["reason"]})
    unreachable = [
        f"`{label}` at {', '.join(str(s['nfe']) for s in c['skipped'] if 'exactly' in s['reason'])}"
        for label, c in result["curves"].items()
        if any("exactly" in s["reason"] for s in c["skipped"])
    ]
    if unreachable or budget:
        lines.append("")
        lines.append("Skipped (—):")
        if unreachable:
            lines.append("* no number of steps makes exactly this many network calls: " + "; ".join(unreachable) + ".")
        if budget:
            lines.append(
                f"* solvers at NFE {', '.join(map(str, budget))}: above this size's CPU budget (`--full` runs them)."
            )
    if off_grid:
        lines += ["", "Single-step solvers at the nearest NFE they can make (below the grid value):", ""]
        rows = [
            [f"`{label}`", ", ".join(f"{format_value(p['value'], metric)} @ {p['nfe']}" for p in points)]
            for label, points in off_grid
        ]
        lines.append(markdown_table(["sampler", f"{metric.label} @ NFE"], rows))
    for at, block in result["speedups"].items():
        lines += ["", *speedup_markdown(block, int(at), metric)]
    lines += ["", f"![{result['title']}]({Path(result['plot']).name})", ""]
    return "\n".join(lines)


def _fmt_sigma(value: float | None, metric: Metric) -> str:
    return "—" if value is None else f"{value:.1f}" if metric.higher_is_better else f"{value:.3f}"


def speedup_markdown(block: dict[str, Any], at: int, metric: Metric) -> list[str]:
    """The speed-up table of every solver at ``at`` NFE; the best one in bold."""
    if not block["rows"]:
        return []
    best = (block["best"] or {}).get("solver")
    rows = [
        [
            f"`{r['solver']}`",
            str(r["nfe"]),
            format_value(r["value"], metric),
            r["bfn_nfe_text"],
            r.get("bfn_nfe_band", ""),
            f"**{r['speedup_text']}x**" if r["solver"] == best else f"{r['speedup_text']}x",
            "yes" if r.get("resolved") else "no",
        ]
        for r in block["rows"]
    ]
    head = "primary" if at == SPEEDUP_NFE else "for comparison"
    sigma, sigma_diff = block.get("sigma"), block.get("sigma_diff")
    noise = (
        f" The band brackets the bfn NFE by the solver's value +- 2 sigma (sigma = {_fmt_sigma(sigma, metric)}, the "
        f"best solver's seed-to-seed std at 10 NFE); *beats bfn* = better than the original sampler at the same NFE "
        f"by more than 2 sigma_diff = {_fmt_sigma(2 * (sigma_diff or 0.0), metric)} (seed noise of a difference). "
        "The best speed-up (bold) is taken among those."
        if sigma
        else ""
    )
    header = ["solver", "solver NFE", metric.label, "bfn NFE for equal quality", "band (+-2 sigma)", "speed-up",
              "beats bfn"]  # fmt: skip
    return [
        f"Speed-up at {at} NFE ({head}): the NFE the original `bfn` sampler needs to match each solver "
        f"(interpolated in log NFE), divided by the solver's NFE.{noise}",
        "",
        markdown_table(header, rows),
    ]


def plot(result: dict[str, Any], path: Path) -> None:
    """Quality against NFE (log axis) for every sampler; the original sampler in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = SPELLING if result["metric"] == SPELLING.label else FID
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ["-", "--", "-.", ":"]
    for index, (label, curve) in enumerate(result["curves"].items()):
        points = sorted(curve["points"] + curve["off_grid"], key=lambda p: p["nfe"])
        if not points:
            continue
        xs, ys = [p["nfe"] for p in points], [p["value"] for p in points]
        if label == "bfn":
            ax.plot(xs, ys, "o-", color="black", lw=2.5, label=label, zorder=5)
        elif " grid)" in label:
            ax.plot(xs, ys, marker="x", ms=5, ls="-", lw=1.8, label=label)
        else:
            ax.plot(xs, ys, marker="o", ms=3, ls=styles[index % len(styles)], lw=1.2, label=label)
    ax.axhline(result["data_score"], color="grey", ls=":", lw=1, label=f"real data ({result['data_note']})")
    ax.set_xscale("log")
    if not metric.higher_is_better:
        ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations per sample)")
    ax.set_ylabel(f"{metric.label} ({'higher' if metric.higher_is_better else 'lower'} is better)")
    ax.set_title(f"{result['title']}: quality vs NFE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_markdown(results_dir: Path) -> str:
    """``quality_vs_nfe.md``: every model's section found in ``results_dir``, best speed-ups first."""
    import json

    results = []
    for path in sorted(results_dir.glob("quality_vs_nfe_*.json")):
        results.append(json.loads(path.read_text()))
    parts = ["# Quality vs NFE", "", f"Machine: {results[0]['machine']}" if results else "", ""]
    parts += speedup_summary(results)
    parts += [model_markdown(r) for r in results]
    return "\n".join(parts)


def speedup_summary(results: Sequence[dict[str, Any]]) -> list[str]:
    """The best solver per model at each speed-up NFE: its quality and the original sampler's NFE for it."""
    rows = []
    for r in results:
        for at, block in r["speedups"].items():
            best = block["best"]
            if best:
                quality = f"{format_value(best['value'], _metric(r))} @ {best['nfe']}"
                rows.append(
                    [r["title"], at, f"`{best['solver']}`", quality, best["bfn_nfe_text"],
                     best.get("bfn_nfe_band", ""), f"{best['speedup_text']}x"]
                )  # fmt: skip
            else:
                rows.append([r["title"], at, "none beats bfn by > 2 sigma_diff", "", "", "", "—"])
    if not rows:
        return []
    header = ["model", "budget (NFE)", "best solver", "its quality @ NFE", "bfn NFE for equal quality",
              "band (+-2 sigma)", "speed-up"]  # fmt: skip
    return [
        "Best solver per model (the original sampler's NFE for the same quality, interpolated in log NFE):",
        "",
        markdown_table(header, rows),
        "",
    ]


def _metric(result: dict[str, Any]) -> Metric:
    return SPELLING if result["metric"] == SPELLING.label else FID


# ================================================================================================== main


def describe(args: argparse.Namespace) -> str:
    """``--describe``: what the samples of a few (sampler, NFE) points look like, beyond the single metric.

    Each item is ``SAMPLER[:logsnr]@NFE``. Text: spelling accuracy, the share of one-letter words (which hunspell
    accepts), spelling accuracy over words of two letters or more, mean word length and two example lines. Images:
    FID-digits and the mean pixel value. Same seed and sample count as the sweep.
    """
    from bfn.data import decode_text
    from bfn.metrics import spelling_accuracy, split_words

    mode = mode_of(args)
    lines = []
    for spec in select_models(mode, args.models):
        loaded = ensure_model(spec, args.runs_dir or default_runs_dir(mode), args.device)
        scorer = Scorer(spec, resolve_device(args.device))
        num_samples = args.num_samples or spec.num_samples
        for item in args.describe.split(","):
            name, _, nfe_text = item.partition("@")
            sampler, _, grid = name.partition(":")
            variant = Variant(name, sampler, {"grid": grid} if grid else {})
            steps = variant.steps_for(int(nfe_text))
            if steps is None:
                raise SystemExit(f"{sampler} cannot make exactly {nfe_text} network calls")
            samples, nfe = generate(loaded.model, variant, steps, num_samples, spec.sample_batch)
            head = f"[{spec.name}] {name} @ {nfe} NFE: {spec.metric.label} {format_value(scorer(samples), spec.metric)}"
            if spec.is_text:
                texts = decode_text(samples)
                words = [w for t in texts for w in split_words(t)]
                long_words = [w for w in words if len(w) > 1]
                lines.append(
                    f"{head}; one-letter words {100 * (len(words) - len(long_words)) / len(words):.1f}%; spelling "
                    f"accuracy of words with >= 2 letters {100 * spelling_accuracy(long_words):.1f}%; mean word "
                    f"length {statistics.mean(map(len, words)):.2f}; e.g. {texts[0]!r}, {texts[1]!r}"
                )
            else:
                lines.append(f"{head}; mean pixel {float(samples.float().mean()):.3f}")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    mode = mode_of(args)
    runs_dir = args.runs_dir or default_runs_dir(mode)
    out_dir = args.out or default_results_dir(mode)
    device = resolve_device(args.device)
    grid = tuple(args.nfe) if args.nfe else QUICK_NFE_GRID if mode == "quick" else NFE_GRID
    outputs = []
    for spec in select_models(mode, args.models):
        loaded = ensure_model(spec, runs_dir, args.device)
        scorer = Scorer(spec, device)
        cache = ResultCache(loaded.run_dir / "bench-cache.json", enabled=not args.recompute)
        num_samples = args.num_samples or spec.num_samples
        variants = sampler_variants(spec.kind, logsnr=not args.no_logsnr)
        if args.samplers:
            variants = [v for v in variants if v.sampler in args.samplers]
        text = spec.is_text
        nll_key = cache_key(loaded, "nll", spec.nll_examples, spec.nll_samples, nll_canary(loaded, scorer))
        bits = cache.get_or_compute(nll_key, partial(test_bits_per_dim, loaded, scorer))
        data_num = num_samples if text else None
        data_score = cache.get_or_compute(
            cache_key(loaded, "data", data_num, scorer.fingerprint), partial(scorer.data_score, data_num)
        )
        curves = sweep(loaded, scorer, variants, grid, cache, num_samples)
        blocks = {}
        for at in SPEEDUP_AT:
            rows = speedups(curves, spec.metric, at)
            finite = [r for r in rows if r["speedup"] is not None]
            blocks[str(at)] = {"rows": rows, "best": max(finite, key=lambda r: (r["speedup"], -r["nfe"]), default=None)}
        best = blocks[str(SPEEDUP_NFE)]["best"]
        spread_variants = [v for v in variants if v.label == "bfn" or (best and v.label == best["solver"])]
        spread = seed_spread(loaded, scorer, spread_variants, cache, num_samples, args.spread_seeds)
        blocks = judge_noise(blocks, curves, spec.metric, spread)
        n_test = (
            len(scorer.bundle.test) if spec.nll_examples is None else min(spec.nll_examples, len(scorer.bundle.test))
        )
        result = {
            "model": spec.name,
            "title": spec.title,
            "mode": mode,
            "metric": spec.metric.label,
            "machine": machine_description(),
            "run_dir": display_path(loaded.run_dir),
            "train_step": loaded.train_step,
            "train_command": train_command(spec, runs_dir),
            "weights_sha256": loaded.weights_sha256,
            "bits_per_dim": bits,
            "bits_unit": "bits/char" if text else "bits/dim",
            "nll_note": f"{n_test} test examples, {spec.nll_samples} time draw(s) each, seed 0"
            + ("; continuous data: a density, so it can be negative" if spec.kind == "continuous" else ""),
            "data_score": data_score,
            "data_note": f"{num_samples} test sequences" if text else "the 1437 training images",
            "num_samples": num_samples,
            "seed": SAMPLING_SEED,
            "nfe_grid": list(grid),
            "curves": curves,
            "speedups": blocks,
            "seed_spread": spread,
        }
        stem = out_dir / f"quality_vs_nfe_{spec.name}"
        result["plot"] = display_path(stem.with_suffix(".png"))
        plot(result, stem.with_suffix(".png"))
        write_json(stem.with_suffix(".json"), result)
        stem.with_suffix(".md").write_text(model_markdown(result))
        (out_dir / "quality_vs_nfe.md").write_text(summary_markdown(out_dir))
        print(f"[{spec.name}] wrote {stem}.{{json,md,png}}", flush=True)
        outputs.append(result)
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    add_common_arguments(parser)
    parser.add_argument("--nfe", type=lambda s: [int(v) for v in s.split(",")], help="comma-separated NFE grid")
    parser.add_argument("--samplers", type=lambda s: s.split(","), help="comma-separated sampler names (default all)")
    parser.add_argument("--num-samples", type=int, help="samples per point (default: the model's)")
    parser.add_argument(
        "--no-logsnr", action="store_true", help="do not also run the main solvers on the log-SNR-uniform grid"
    )
    parser.add_argument(
        "--spread-seeds",
        type=int,
        default=5,
        help="seeds for the noise estimate of bfn and the best solver at 10 NFE (default 5; 1 disables it)",
    )
    parser.add_argument(
        "--describe",
        metavar="SAMPLER[:logsnr]@NFE,...",
        help="instead of the sweep, describe the samples of these points (text: one-letter word share, ...)",
    )
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.describe:
        describe(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
