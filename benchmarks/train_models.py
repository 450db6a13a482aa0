"""Train (or reuse) the benchmark models and print the equivalent ``bfn train`` commands.

    python benchmarks/train_models.py                 # all four CPU-sized models into runs/bench/<name>
    python benchmarks/train_models.py --models kjv    # one of them
    python benchmarks/train_models.py --full          # GPU-sized models into runs/bench/full/<name>
    python benchmarks/train_models.py --print         # only print the bfn train commands

The quality benchmarks call the same code, so running this first is optional; a finished run is never retrained.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchlib import (
    add_common_arguments,
    default_runs_dir,
    ensure_model,
    mode_of,
    select_models,
    set_threads,
    train_command,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--print", action="store_true", help="only print the equivalent bfn train commands")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    mode = mode_of(args)
    runs_dir = args.runs_dir or default_runs_dir(mode)
    for spec in select_models(mode, args.models):
        print(f"{spec.name}: {train_command(spec, runs_dir)}", flush=True)
        if not args.print:
            loaded = ensure_model(spec, runs_dir, args.device)
            print(f"{spec.name}: {loaded.run_dir} at step {loaded.train_step}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
