"""The default sampler (``sampler="auto"``) against every named sampler on the trained digits models, at 5, 10, 20 NFE.

    python benchmarks/default_vs_named.py                          # digits continuous, discretised, binarised
    python benchmarks/default_vs_named.py --models digits-binary --nfe 10 --seeds 0

The models are the CPU-sized benchmark models of ``benchmarks/train_models.py`` (trained on first use). Every
sampler registered for the model's kind runs with its defaults (the paper protocol: uniform grid in ``t``, ``eta``
1e-2 / 1e-3, ``final="drop"``), the main multistep solvers also on the second grid of ``quality_vs_nfe.py`` (log-SNR;
discrete: tuned), with the number of steps that makes exactly the NFE (a sampler that cannot is left out at that
NFE); ``auto`` gets the NFE as its ``steps``. Quality: FID-digits (Frechet distance on the features of the digits
classifier that ``bfn.metrics`` ships, lower is better) of 1000 samples against the validation + test images, mean
and min-max over the seeds. The table ends with the rank of ``auto`` among all rows per NFE.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from benchlib import (
    Scorer,
    Variant,
    add_common_arguments,
    default_runs_dir,
    ensure_model,
    generate,
    mode_of,
    resolve_device,
    sampler_variants,
    select_models,
    set_threads,
)

MODELS = ("digits-continuous", "digits-discretised", "digits-binary")
NFES = (5, 10, 20)
SEEDS = (0, 1, 2)
AUTO = Variant("auto (default)", "auto")


def steps_for(variant: Variant, nfe: int) -> int | None:
    """Steps that make exactly ``nfe`` calls (``auto``: ``nfe`` itself)."""
    return nfe if variant.sampler == "auto" else variant.steps_for(nfe)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--nfe", type=lambda s: [int(v) for v in s.split(",")], default=list(NFES))
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=list(SEEDS))
    parser.add_argument("--num-samples", type=int, help="samples per point (default: the model's, 1000)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    mode = mode_of(args)
    names = args.models or list(MODELS)
    for spec in select_models(mode, names):
        loaded = ensure_model(spec, args.runs_dir or default_runs_dir(mode), args.device)
        scorer = Scorer(spec, resolve_device(args.device))
        num = args.num_samples or spec.num_samples
        print(f"### {spec.name} ({spec.metric.label}, {num} samples, seeds {args.seeds})\n")
        print("| sampler | " + " | ".join(f"NFE {n}" for n in args.nfe) + " |")
        print("|---|" + "---|" * len(args.nfe))
        means: dict[int, dict[str, float]] = {n: {} for n in args.nfe}
        for variant in [AUTO, *sampler_variants(spec.kind)]:
            cells = []
            for nfe in args.nfe:
                steps = steps_for(variant, nfe)
                if steps is None:
                    cells.append("—")
                    continue
                values = []
                for seed in args.seeds:
                    samples, used = generate(loaded.model, variant, steps, num, spec.sample_batch, seed)
                    if used != nfe:
                        raise RuntimeError(f"{variant.label} made {used} calls, expected {nfe}")
                    values.append(scorer(samples))
                means[nfe][variant.label] = statistics.mean(values)
                cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
            print(f"| {variant.label} | " + " | ".join(cells) + " |", flush=True)
        ranks = []
        for nfe in args.nfe:
            ordered = sorted(means[nfe].values())
            ranks.append(f"{ordered.index(means[nfe][AUTO.label]) + 1} of {len(ordered)}")
        print("| rank of auto | " + " | ".join(ranks) + " |\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
