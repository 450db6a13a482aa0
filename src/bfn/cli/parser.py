"""The argument parser of the ``bfn`` command; every default its help states comes from the library.

Training options default to ``None`` (an unset option keeps the stored or default value) and their help shows the
:class:`~bfn.training.TrainConfig` defaults (:func:`~bfn.training.config_default`, the per-source tables
:data:`~bfn.training.DEFAULT_NETS` and :data:`~bfn.training.SOURCE_DEFAULTS`, the flows each flow option applies
to, :func:`~bfn.training.flows_taking`); sampling options show the solvers' defaults
(:meth:`bfn.sampling.options.SolverOptions.defaults`, :func:`bfn.sampling.sample`).
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bfn._checks import check_int
from bfn.flows import KINDS
from bfn.training.config import config_default
from bfn.training.demo import DEMO_STEPS
from bfn.training.recipes import BETA_1, DEFAULT_NETS, SIGMA_1, SOURCE_DEFAULTS, flows_taking

__all__ = ["DEFAULT_EVAL_NFE", "DEFAULT_SAMPLE_STEPS", "EXAMPLES", "build_parser"]

EXAMPLES = """examples:
  bfn demo --out runs/demo
  bfn train --data digits --steps 4000 --out runs/digits          # the flow follows the data: discretised
  bfn train --data toy:two_moons --steps 3000 --out runs/moons   # continuous, with the toy recipe
  bfn train --resume --out runs/digits --steps 8000
  torchrun --standalone --nproc_per_node=2 -m bfn train --data digits --batch-size 64 --out runs/ddp
  bfn sample runs/digits --steps 10 --num 64 --out samples.png      # sampler auto: 10 network calls
  bfn train --data digits --conditional --out runs/digits-cond
  bfn sample runs/digits-cond --label all --guidance 2 --num 8 --out per-digit.png
  bfn sample runs/digits --inpaint digit.png --mask-rect 0,4,8,8 --num 16 --out completed.png
  bfn sample runs/kjv --prompt "in the beginning ___ created the heaven" --num 4 --out filled.txt
  bfn eval runs/digits --samplers bfn,bfn-solver++2 --nfe 5,10,20
"""

DEFAULT_SAMPLE_STEPS = 10
"""``bfn sample`` without ``--steps`` or ``--nfe``: this many steps (network calls for ``auto``)."""

DEFAULT_EVAL_NFE = (10,)
"""``bfn eval`` without ``--nfe``: the NFE budgets of the sample-quality table."""


# ================================================================================================== defaults


def _shown(value: Any) -> str:
    """A default as the help shows it: numbers in their shortest form, pairs separated by a space."""
    if isinstance(value, (tuple, list)):
        return " ".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _train_default(name: str) -> str:
    """A :class:`~bfn.training.TrainConfig` field's default; one set per data source (``None``) as its table."""
    value = config_default(name)
    if value is None and name in SOURCE_DEFAULTS:
        return _per_source(SOURCE_DEFAULTS[name])
    return _shown(value)


def _for_flows(name: str) -> str:
    """The flows a flow option applies to, as its help's prefix: ``"continuous/discretised"``."""
    return "/".join(flows_taking(name))


def _per_source(table: Mapping[str, Any]) -> str:
    """``{"default": 3.0, "kjv": 0.75, "text": 0.75}`` -> ``"3; 0.75 for kjv, text"``."""
    groups: dict[str, list[str]] = {}
    for source, value in table.items():
        if source != "default":
            groups.setdefault(_shown(value), []).append(source)
    return "; ".join([_shown(table["default"]), *(f"{v} for {', '.join(s)}" for v, s in groups.items())])


def _nets_by_source() -> str:
    """The default network per data source, e.g. ``"mlp for toy, digits; unet for mnist, ..."``."""
    groups: dict[str, list[str]] = {}
    for source, (name, _) in DEFAULT_NETS.items():
        groups.setdefault(name, []).append(source)
    return "; ".join(f"{name} for {', '.join(sources)}" for name, sources in groups.items())


def _solver_default(option: str) -> str:
    from bfn.sampling.options import SolverOptions

    return _shown(SolverOptions.defaults()[option])


def _sample_default(option: str) -> str:
    from bfn.sampling import sample

    return _shown(inspect.signature(sample).parameters[option].default)


# ================================================================================================== train


def _loss(text: str) -> str | int:
    if text == "continuous":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'continuous' or an integer n >= 1, got {text!r}") from None
    try:
        return check_int(value, "the n-step loss's n")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _add_data_and_model_options(p: argparse.ArgumentParser) -> Any:
    """``bfn train``: the data set, the flow and the network; returns the network's option group."""
    d = _train_default
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        help="data set: digits, mnist, fashion-mnist, cifar10:DIR, text8:PATH, kjv, "
        f"text:PATH, toy:NAME (two_moons, eight_gaussians, checkerboard, swiss_roll); default {d('data')}",
    )
    data.add_argument("--data-root", help="directory or file of a data source that reads files")
    data.add_argument(
        "--data-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra loader option, e.g. val_size=5000 or num_train=20000 (repeatable)",
    )
    data.add_argument("--seq-len", type=int, help=f"characters per text example (default {d('seq_len')})")
    data.add_argument("--split-seed", type=int, help=f"seed of the train/validation split (default {d('split_seed')})")
    data.add_argument(
        "--binarize",
        action="store_true",
        default=None,
        help=f"dynamic binarisation of images for the {_for_flows('binarize')} flow",
    )
    flow = p.add_argument_group("flow")
    flow.add_argument("--flow", choices=KINDS, help=f"data kind / flow (default by data: {d('flow')})")
    flow.add_argument(
        "--sigma-1", type=float, help=f"{_for_flows('sigma_1')}: std at tau = 1 (default {_per_source(SIGMA_1)})"
    )
    flow.add_argument(
        "--num-bins", type=int, help=f"{_for_flows('num_bins')}: number of bins (default: the data's grey levels)"
    )
    flow.add_argument(
        "--beta-1", type=float, help=f"{_for_flows('beta_1')}: final accuracy (default {_per_source(BETA_1)})"
    )
    net = p.add_argument_group("network")
    net.add_argument(
        "--net", choices=["mlp", "unet", "transformer"], help=f"network (default by data: {_nets_by_source()})"
    )
    net.add_argument(
        "--net-option",
        action="append",
        metavar="KEY=VALUE",
        help="network constructor option, e.g. hidden=256, depth=4, base=64 (repeatable)",
    )
    return net


def _add_optimisation_options(p: argparse.ArgumentParser) -> Any:
    """``bfn train``: the optimiser and the loss; returns their option group."""
    d = _train_default
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, help=f"total optimisation steps (default {d('steps')}; may grow on --resume)")
    opt.add_argument(
        "--batch-size",
        type=int,
        help=f"examples per step per process; global batch = batch size x processes (default {d('batch_size')})",
    )
    opt.add_argument("--lr", type=float, help=f"AdamW learning rate after warm-up (default {d('lr')})")
    opt.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {d('weight_decay')})")
    opt.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"), help=f"AdamW betas (default {d('betas')})")
    opt.add_argument("--warmup", type=int, help=f"steps of linear learning-rate warm-up (default {d('warmup')})")
    opt.add_argument(
        "--grad-clip", type=float, help=f"max gradient norm; 0 disables clipping (default {d('grad_clip')})"
    )
    opt.add_argument("--ema-decay", type=float, help=f"EMA decay of the weights (default {d('ema_decay')})")
    opt.add_argument(
        "--loss", type=_loss, help=f"'continuous' (L_inf) or n for the n-step loss L_n (default {d('loss')})"
    )
    opt.add_argument(
        "--amp",
        nargs="?",
        const="bf16",
        choices=["off", "bf16", "fp16"],
        help="mixed precision: bf16 (CPU or GPU; the value when only --amp is given) or fp16 (GPU, "
        f"with a gradient scaler); default {d('amp')}",
    )
    return opt


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """``bfn train``: the run folder, resuming, validation, checkpoints, device and seed."""
    d = _train_default
    run = p.add_argument_group("run")
    run.add_argument("--out", help="run folder (default runs/<data>-<flow>)")
    run.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in --out from its latest checkpoint (unset options keep their stored "
        "values; only --steps, --val-every, --val-examples, --ckpt-every, --device, --compile may change)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out holds (a run of other settings, or a saved model) instead of refusing",
    )
    run.add_argument(
        "--val-every", type=int, help=f"validate every N steps and at the end; 0: end only (default {d('val_every')})"
    )
    run.add_argument(
        "--val-examples", type=int, help=f"validation examples per evaluation (default {d('val_examples')})"
    )
    run.add_argument(
        "--ckpt-every",
        type=int,
        help=f"checkpoint every N steps; 0: end and signals only (default {d('ckpt_every')})",
    )
    run.add_argument("--device", help=f"auto (CUDA if available), cpu, cuda or cuda:N (default {d('device')})")
    run.add_argument("--seed", type=int, help=f"seed of everything: init, data order, loss noise (default {d('seed')})")
    run.add_argument("--num-workers", type=int, help=f"DataLoader worker processes (default {d('num_workers')})")
    _add_progress(run)
    run.add_argument(
        "--config",
        type=Path,
        help="start from this JSON config (a run's config.json or a "
        "TrainConfig dict); command-line options override it",
    )


def _add_progress(p: Any) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only on a terminal)",
    )


def _add_train_command(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="train a BFN (also under torchrun)",
        description="Train a BFN. Unset options take per-data defaults (or, with --resume, the run's stored values).",
    )
    net = _add_data_and_model_options(train)
    opt = _add_optimisation_options(train)
    net.add_argument(
        "--conditional",
        action="store_true",
        default=None,
        help="class-conditional model on the data's labels (digits, mnist, fashion-mnist, cifar10, "
        "toy:eight_gaussians, toy:checkerboard), "
        "for classifier-free guidance",
    )
    net.add_argument(
        "--label-dropout",
        type=float,
        help=f"--conditional: share of null labels in training ({_train_default('label_dropout')})",
    )
    opt.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="compile the training loss with torch.compile (network and BFN maths; slower first steps)",
    )
    _add_run_options(train)
    _add_dry_run(train, "config")


# ================================================================================================== sample, eval


def _folder_command(sub: Any, name: str, summary: str, description: str, folder: str) -> argparse.ArgumentParser:
    """The parser of a command that reads a trained run (or model) folder, with that folder's argument."""
    parser = sub.add_parser(name, help=summary, description=description)
    parser.add_argument("run", type=Path, help=folder)
    return parser


def _add_dry_run(p: argparse.ArgumentParser, what: str = "settings") -> None:
    p.add_argument("--dry-run", action="store_true", help=f"print the resolved {what} as JSON and exit")


def _add_weights_and_device(p: argparse.ArgumentParser, seed_help: str) -> None:
    """``--seed``, ``--raw`` and ``--device`` of the commands that load a trained model."""
    p.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default %(default)s)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default %(default)s)")


def _add_sample_command(sub: Any) -> None:
    from bfn.sampling.auto import AUTO

    sample = _folder_command(
        sub,
        "sample",
        "draw samples from a trained run or model folder",
        "Draw samples; writes a PNG grid (images), .txt (text), a scatter PNG "
        "(2-D data) or a .pt tensor (when FILE ends with .pt), and prints the NFE.",
        "run folder (from bfn train) or model folder (save_pretrained)",
    )
    sample.add_argument(
        "--sampler",
        default=AUTO,
        help="auto (the best measured configuration for the run's data kind; --steps counts network calls) or a "
        "sampler name from bfn.sampling.SAMPLERS (default %(default)s)",
    )
    sample.add_argument(
        "--steps", type=int, help=f"solver steps; network calls for auto (default {DEFAULT_SAMPLE_STEPS})"
    )
    sample.add_argument("--nfe", type=int, help="instead of --steps: the most steps within this many network calls")
    sample.add_argument("--num", type=int, default=64, help="number of samples (default %(default)s)")
    sample.add_argument("--h", type=float, help="h-solver: noise-variance multiplier (0 ODE, 1 reverse SDE)")
    sample.add_argument("--order", type=int, choices=[1, 2, 3], help="h-solver: order")
    sample.add_argument(
        "--grid",
        choices=["uniform", "logsnr", "tuned"],
        help=f"solver time grid (default {_solver_default('grid')})",
    )
    sample.add_argument("--eta", type=float, help="solver end offset: the grid starts at t = 1 - eta")
    sample.add_argument(
        "--final", choices=["drop", "denoise"], help=f"solver last step (default {_solver_default('final')})"
    )
    sample.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="any other sampler option, e.g. categorical=false (repeatable)",
    )
    cond = sample.add_argument_group("conditioning")
    cond.add_argument("--label", help="conditional model: a class, a comma-separated list or 'all' (a row each)")
    cond.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 conditional; default 1)")
    cond.add_argument("--inpaint", type=Path, help="image (PNG) whose known part is kept; the rest is filled in")
    cond.add_argument("--mask-rect", help="--inpaint: the region to fill, x0,y0,x1,y1 in pixels (x1, y1 exclusive)")
    cond.add_argument("--mask", type=Path, help="--inpaint: a mask image, white where the image is to be filled")
    cond.add_argument("--prompt", help="text model: known characters with _ for each one to fill in")
    cond.add_argument(
        "--inpaint-method",
        choices=["certain", "replace"],
        help=f"how known values reach the network ({_sample_default('inpaint')})",
    )
    _add_weights_and_device(sample, "seed of the sampler's noise")
    sample.add_argument(
        "--out",
        type=Path,
        default=Path("samples"),
        help="output file; its suffix picks the format (default samples.png/.txt/.pt)",
    )
    _add_dry_run(sample)


def _add_eval_command(sub: Any) -> None:
    ev = _folder_command(
        sub,
        "eval",
        "test NLL and sample quality against NFE",
        "Evaluate a run: NLL bound (bits/dim, bits/char) on a split; with --samplers, "
        "sample quality (FID-digits, spelling accuracy, sliced W1) per sampler and NFE.",
        "run folder (from bfn train)",
    )
    ev.add_argument("--split", choices=["train", "val", "test"], default="test", help="split (default %(default)s)")
    ev.add_argument("--max-examples", type=int, help="score only the first N examples of the split")
    ev.add_argument("--likelihood", action="store_true", help="also the probability-flow ODE NLL (slow)")
    ev.add_argument(
        "--samplers",
        type=_str_list,
        default=[],
        help="comma-separated sampler names for the sample-quality table, e.g. auto,bfn,bfn-solver++2 (auto: the "
        "default sampler, steps = NFE)",
    )
    ev.add_argument(
        "--nfe",
        type=_int_list,
        default=list(DEFAULT_EVAL_NFE),
        help=f"comma-separated NFE budgets (default {','.join(map(str, DEFAULT_EVAL_NFE))})",
    )
    ev.add_argument("--num-samples", type=int, default=500, help="samples per sampler and NFE (default %(default)s)")
    ev.add_argument(
        "--guidance",
        type=_float_list,
        help="conditional digits model: class accuracy of its samples (the digits classifier) at these "
        "comma-separated guidance scales, per sampler and NFE (50 samples per class)",
    )
    _add_weights_and_device(ev, "seed")
    ev.add_argument("--out", type=Path, help="folder for eval.json and quality.png (default: the run folder)")
    _add_dry_run(ev)


# ================================================================================================== demo


def _add_demo_command(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="train a small digits model (~2 min on 2 CPU cores) and compare samplers",
        description="Train a discretised BFN on the 8x8 digits, print test bits/dim, and write "
        "demo.png: the original sampler next to BFN-Solver++3s (single-step, third order) at the same NFE.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default %(default)s)")
    demo.add_argument("--steps", type=int, default=None, help=f"training steps (default {DEMO_STEPS})")
    demo.add_argument(
        "--nfe", type=int, default=10, help="network calls per sample for both samplers (default %(default)s)"
    )
    demo.add_argument("--num", type=int, default=100, help="samples shown per sampler (default %(default)s)")
    demo.add_argument(
        "--metric-samples",
        type=int,
        default=500,
        help="samples for FID-digits per sampler; 0 skips the metric (default %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default %(default)s)")
    _add_progress(demo)
    demo.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # tiny settings, for tests
    _add_dry_run(demo, "config")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bfn`` command."""
    parser = argparse.ArgumentParser(
        prog="bfn",
        description="Bayesian Flow Networks: train, sample and evaluate from the command line.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_command(sub)
    _add_sample_command(sub)
    _add_eval_command(sub)
    _add_demo_command(sub)
    return parser


def _version() -> str:
    from bfn import __version__

    return f"bfn {__version__}"
