"""``bfn eval``: the NLL bound, sample quality against NFE and, for conditional digits models, class accuracy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bfn.cli.common import check_count, print_json

__all__ = ["check_guidance_eval", "cmd_eval", "guidance_table"]


def cmd_eval(args: argparse.Namespace) -> int:
    """``bfn eval``."""
    from bfn.sampling import get_sampler
    from bfn.sampling.auto import AUTO
    from bfn.training import data_description, load_run_config, pick_device, require_metric

    check_count(args.max_examples, "--max-examples")
    check_count(args.num_samples, "--num-samples")
    for budget in args.nfe:
        check_count(budget, "--nfe")
    if not args.nfe:
        raise ValueError("--nfe needs at least one budget, e.g. --nfe 5,10,20")
    train_config = load_run_config(args.run)  # a training run folder, before any work
    for name in args.samplers:
        if name != AUTO:  # the default sampler fits every kind
            get_sampler(name, train_config.flow)  # type: ignore[arg-type]
    if args.samplers:
        require_metric(train_config.data, data_description(args.run))
    pick_device(args.device, 0)
    settings = {
        "run": str(args.run),
        "split": args.split,
        "max_examples": args.max_examples,
        "likelihood": args.likelihood,
        "samplers": args.samplers,
        "nfe": args.nfe,
        "num_samples": args.num_samples,
        "seed": args.seed,
        "weights": "raw" if args.raw else "ema",
        "out": str(args.out or args.run),
    }
    if args.guidance is not None:
        check_guidance_eval(args, train_config.data)
        settings["guidance"] = args.guidance
    print_json("resolved evaluation settings", settings, args.dry_run)
    if args.dry_run:
        return 0
    from bfn.training import evaluate_run

    report = evaluate_run(
        args.run,
        split=args.split,
        max_examples=args.max_examples,
        likelihood=args.likelihood,
        samplers=args.samplers,
        nfes=args.nfe,
        num_samples=args.num_samples,
        seed=args.seed,
        device=args.device,
        ema=not args.raw,
        out_dir=args.out,
    )
    if report.rows:
        better = "higher" if report.higher_is_better else "lower"
        print(f"\nsample quality ({report.metric or 'no metric for this data'}; {better} is better):")
        print(report.table())
        if report.plot is not None:
            print(f"plot: {report.plot}")
    if args.guidance is not None:
        guidance_table(args)
    return 0


def check_guidance_eval(args: argparse.Namespace, data: str) -> None:
    """``--guidance`` needs a class-conditional model of ``data="digits"`` and ``--samplers`` (``ValueError``
    otherwise)."""
    from bfn.checkpoint import ModelConfig

    if ModelConfig.read(args.run).num_classes is None:
        raise ValueError("--guidance needs a class-conditional model (trained with --conditional)")
    if data != "digits":
        raise ValueError("--guidance reports class accuracy with the digits classifier: a digits model is needed")
    if not args.samplers:
        raise ValueError("--guidance needs --samplers (and --nfe) to sample with")


def guidance_table(args: argparse.Namespace) -> None:
    """Class accuracy against guidance (digits classifier); prints a table and writes class_accuracy.json."""
    from bfn import BFN
    from bfn.metrics import load_classifier
    from bfn.metrics.conditional import guidance_accuracy
    from bfn.training import pick_device

    model = BFN.from_pretrained(args.run, map_location=pick_device(args.device, 0), ema=not args.raw)
    classifier = load_classifier("digits").eval().to(model.device)
    rows = [
        row
        for sampler in args.samplers
        for nfe in args.nfe
        for row in guidance_accuracy(model, classifier, sampler, nfe, args.guidance, seed=args.seed)
    ]
    print("\nclass accuracy of conditional samples (digits classifier):")
    print("| sampler | NFE | guidance | class accuracy |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row.sampler} | {row.nfe} | {row.guidance:g} | {row.accuracy:.3f} |")
    out = Path(args.out or args.run) / "class_accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([row.__dict__ for row in rows], indent=1))
    print(f"wrote {out}")
