"""Text infilling: accuracy of the filled-in characters against the truth, per method, sampler and NFE.

Usage::

    python benchmarks/text_infilling.py                          # KJV (Debian bible-kjv), CPU-sized model
    python benchmarks/text_infilling.py --data text:FILE         # any text file instead
    python benchmarks/text_infilling.py --quick                  # a smoke run (seconds)
    python benchmarks/text_infilling.py --run RUN                # an existing training run (e.g. the text recipe's)

Trains (or reuses) a discrete BFN on the text (a Transformer of width 128, depth 3, sequences of 64 characters,
``bfn train --data kjv --flow discrete --seq-len 64 --net transformer``) into ``runs/bench/infill/<name>``, then
hides characters of test sequences and fills them in with ``model.sample(..., known=x, mask=m)``:

* ``gap``: the 16 characters 24..39 of each sequence (infilling between a known prefix and suffix);
* ``random``: each character hidden with probability 1/4;
* ``suffix``: the last 32 characters (prefix completion).

Reported: the share of hidden characters filled in with the true one, for ``inpaint="certain"`` (the default),
``"replace"`` and ``ignore`` (unconditional samples: the chance level of the model's marginals). Writes
``benchmarks/results/text_infilling.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import bfn
from bfn.checkpoint import find_checkpoint
from bfn.training import TrainConfig, load_bundle, load_run_config, read_log, train

RESULTS = Path(__file__).parent / "results"
METHODS = ("certain", "replace", "ignore")
SAMPLERS = ("bfn-solver2", "sde-bfn-solver2")
NFES = (10, 50)


def config_for(data: str, out: Path, steps: int, quick: bool) -> TrainConfig:
    net = {"width": 16, "depth": 1, "heads": 2} if quick else {"width": 128, "depth": 3, "heads": 4}
    return TrainConfig(
        data=data,
        flow="discrete",
        seq_len=16 if quick else 64,
        net="transformer",
        net_options=net,
        steps=steps,
        batch_size=8 if quick else 64,
        val_every=0,
        val_examples=16 if quick else 512,
        ckpt_every=0,
        warmup=1 if quick else 100,
        progress=False,
        out=str(out),
    )


def masks(length: int, num: int) -> dict[str, torch.Tensor]:
    """True where the character is known, ``(num, length)`` per pattern."""
    gap = torch.ones(num, length, dtype=torch.bool)
    gap[:, length * 3 // 8 : length * 5 // 8] = False
    random = torch.rand(num, length, generator=torch.Generator().manual_seed(0)) >= 0.25
    suffix = torch.ones(num, length, dtype=torch.bool)
    suffix[:, length // 2 :] = False
    return {"gap": gap, "random": random, "suffix": suffix}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="kjv", help="kjv (default), text8:PATH or text:PATH")
    parser.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    parser.add_argument("--num", type=int, default=200, help="test sequences (default 200)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench/infill"), help="run folders")
    parser.add_argument("--quick", action="store_true", help="a tiny model (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--run", type=Path, help="evaluate this training run folder instead of training one")
    parser.add_argument("--suffix", default="", help="results file text_infilling<SUFFIX>.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.run is not None:
        out, config = args.run, load_run_config(args.run)
        args.data = config.data
    else:
        name = args.data.replace(":", "-").replace("/", "_")
        out = args.runs / ("quick-" + name if args.quick else name)
        config = config_for(args.data, out, 3 if args.quick else args.steps, args.quick)
    if find_checkpoint(out) is None:
        print(f"training on {args.data}: {config.steps} steps into {out}", flush=True)
        train(config)
    model = bfn.BFN.from_pretrained(out)
    trained = int(read_log(out / "log.csv")[-1]["step"])  # an interrupted run is evaluated where it stopped
    bundle = load_bundle(config.resolved())
    num = min(8 if args.quick else args.num, len(bundle.test))  # type: ignore[arg-type]
    truth = torch.stack([bundle.test[i] for i in range(num)])
    lines = [
        f"### infilling on {args.data} (sequences of {truth.shape[1]}, {num} test sequences, {trained} training steps)",
        "",
        "| pattern | sampler | NFE | " + " | ".join(METHODS) + " |",
        "|---|---|---:|" + "---:|" * len(METHODS),
    ]
    for pattern, mask in masks(truth.shape[1], num).items():
        for sampler in SAMPLERS:
            for nfe in NFES:
                cells = []
                for method in METHODS:
                    cond = {} if method == "ignore" else {"known": truth, "mask": mask, "inpaint": method}
                    gen = torch.Generator().manual_seed(1)
                    res = model.sample(num, sampler, steps=nfe, generator=gen, **cond)
                    cells.append(f"{(res.samples == truth)[~mask].double().mean().item():.3f}")
                lines.append(f"| {pattern} | {sampler} | {res.nfe} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"text_infilling{'_quick' if args.quick else ''}{args.suffix}.md"
    target.write_text("\n".join(lines) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
