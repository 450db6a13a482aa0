"""Class-conditional digits models: class accuracy and FID-digits against the guidance scale and NFE.

Usage::

    python benchmarks/conditional_digits.py                 # trains (or reuses) three CPU-sized models
    python benchmarks/conditional_digits.py --kinds discretised --steps 1000
    python benchmarks/conditional_digits.py --quick         # a smoke run (tiny models, seconds)

For each data kind (continuous, discretised with 17 bins, binarised discrete) a conditional model is trained on the
8x8 digits (the demo's MLP with a label embedding, ``bfn train --data digits --flow KIND --conditional``, label
dropout 0.1) into ``runs/bench/conditional/<kind>``; a finished run is reused. Then, for guidance scales
``s = 0, 1, 2, 4`` and budgets of 10 and 50 network evaluations (a guided call costs 2, so ``s = 2, 4`` get half
the steps), it draws ``--per-class`` samples of every digit and reports

* class accuracy: the share of samples that the shipped digits classifier assigns to the requested label;
* FID-digits per class: the Frechet distance on the classifier's features between the samples of a class and the
  training images of that class, averaged over the 10 classes (small sets: compare rows, not absolute values);
* FID-digits of all samples against the whole training split.

It writes ``benchmarks/results/conditional_digits.md`` / ``.json`` and a PNG grid per kind (one row per digit,
``s = 2`` at 50 NFE).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import bfn
from bfn.checkpoint import find_checkpoint
from bfn.data import load_dataset
from bfn.metrics import image_fid, load_classifier, load_feature_extractor
from bfn.training import demo_config, image_grid, to_images, train

RESULTS = Path(__file__).parent / "results"
SCALES = (0.0, 1.0, 2.0, 4.0)
NFES = (10, 50)
SAMPLER = {"continuous": "bfn-solver++2", "discretised": "bfn-solver++2", "discrete": "bfn-solver2"}


def ensure_model(kind: str, steps: int, runs: Path, quick: bool) -> bfn.BFN:
    """Train the conditional digits model of ``kind`` unless its run folder already holds the final checkpoint."""
    out = runs / kind
    changes: dict = {"flow": kind, "conditional": True, "progress": False}
    if kind == "discrete":
        changes.update(binarize=True, sigma_1=None, beta_1=3.0)
    if quick:
        changes.update(net_options={"hidden": 32, "depth": 1}, batch_size=32, val_examples=32)
    config = demo_config(out, steps=steps, **changes)
    if find_checkpoint(out) is None:
        print(f"training {kind}: {steps} steps into {out}", flush=True)
        train(config)
    return bfn.BFN.from_pretrained(out)


def evaluate(model: bfn.BFN, kind: str, per_class: int, seed: int, suffix: str = "") -> list[dict]:
    bundle = load_dataset("digits", kind, binarize=kind == "discrete")
    train_x = torch.stack([bundle.train[i] for i in range(len(bundle.train))])
    train_y = bundle.labels["train"]
    reference = to_images(train_x, model.flow)
    classifier = load_classifier("digits").eval()
    extractor = load_feature_extractor("digits")
    labels = torch.arange(10).repeat_interleave(per_class)
    rows = []
    for nfe in NFES:
        for scale in SCALES:
            calls = 1 if scale in (0.0, 1.0) else 2
            gen = torch.Generator().manual_seed(seed)
            out = model.sample(
                len(labels), SAMPLER[kind], steps=nfe // calls, generator=gen, labels=labels, guidance=scale
            )
            images = to_images(out.samples, model.flow)
            with torch.no_grad():
                accuracy = (classifier(images).argmax(-1) == labels).double().mean().item()
            per_class_fid = [image_fid(images[labels == c], reference[train_y == c], extractor) for c in range(10)]
            row = {
                "kind": kind,
                "sampler": SAMPLER[kind],
                "nfe": out.nfe,
                "guidance": scale,
                "class_accuracy": accuracy,
                "fid_per_class": sum(per_class_fid) / 10,
                "fid_all": image_fid(images, reference, extractor),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if nfe == NFES[-1] and scale == 2.0:
                save_grid(images, per_class, RESULTS / f"conditional_digits_{kind}{suffix}.png")
    return rows


def save_grid(images: torch.Tensor, per_class: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(per_class, 10)
    chosen = torch.cat([images[c * per_class : c * per_class + columns] for c in range(10)])
    grid = image_grid(chosen, columns)
    grid = grid.repeat_interleave(4, 0).repeat_interleave(4, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid[:, :, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)


def table(rows: list[dict]) -> list[str]:
    lines = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        lines += [
            f"### digits, {kind} ({SAMPLER[kind]})",
            "",
            "| NFE | guidance | class accuracy | FID-digits per class (mean) | FID-digits (all) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            if r["kind"] == kind:
                lines.append(
                    f"| {r['nfe']} | {r['guidance']:g} | {r['class_accuracy']:.3f} | {r['fid_per_class']:.2f} "
                    f"| {r['fid_all']:.2f} |"
                )
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="continuous,discretised,discrete", help="comma-separated data kinds")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per model (default 3000)")
    parser.add_argument("--per-class", type=int, default=100, help="samples per digit (default 100)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench/conditional"), help="run folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny models and sample counts (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    kinds = [k for k in args.kinds.split(",") if k]
    steps, per_class = (20, 10) if args.quick else (args.steps, args.per_class)
    runs = args.runs / "quick" if args.quick else args.runs
    suffix = "_quick" if args.quick else ""
    rows = []
    for kind in kinds:
        model = ensure_model(kind, steps, runs, args.quick)
        rows += evaluate(model, kind, per_class, args.seed, suffix)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"conditional_digits{suffix}.json").write_text(json.dumps(rows, indent=1))
    (RESULTS / f"conditional_digits{suffix}.md").write_text("\n".join(table(rows)) + "\n")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
