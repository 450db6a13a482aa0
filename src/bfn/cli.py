"""The ``bfn`` command line: ``bfn train | sample | eval | demo`` (also ``python -m bfn``).

The CLI only parses arguments, prints the resolved settings (``--dry-run`` prints them and stops) and calls the
library (:mod:`bfn.training`, :meth:`bfn.BFN.from_pretrained`, :meth:`bfn.BFN.sample`). Run ``bfn COMMAND --help``
for every option.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

EXAMPLES = """examples:
  bfn demo --out runs/demo
  bfn train --data digits --flow discretised --steps 4000 --out runs/digits
  bfn train --data toy:two_moons --flow continuous --steps 3000 --out runs/moons
  bfn train --resume --out runs/digits --steps 8000
  torchrun --standalone --nproc_per_node=2 -m bfn train --data digits --batch-size 64 --out runs/ddp
  bfn sample runs/digits --steps 10 --num 64 --out samples.png      # sampler auto: 10 network calls
  bfn train --data digits --conditional --out runs/digits-cond
  bfn sample runs/digits-cond --label all --guidance 2 --num 8 --out per-digit.png
  bfn sample runs/digits --inpaint digit.png --mask-rect 0,4,8,8 --num 16 --out completed.png
  bfn sample runs/kjv --prompt "in the beginning ___ created the heaven" --num 4 --out filled.txt
  bfn eval runs/digits --samplers bfn,bfn-solver++2 --nfe 5,10,20
"""


# ================================================================================================== helpers


def _parse_value(text: str) -> Any:
    """A JSON value when ``text`` parses as one (numbers, true/false, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = _parse_value(value)
    return out


def _loss(text: str) -> str | int:
    if text == "continuous":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'continuous' or an integer n >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the n-step loss needs n >= 1, got {value}")
    return value


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


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _print_json(title: str, values: dict[str, Any], dry_run: bool = False) -> None:
    """The resolved settings: pure JSON on stdout for ``--dry-run`` (machine-readable), else under a title line."""
    if _is_main_process():
        text = json.dumps(values, indent=2, default=str)
        print(text if dry_run else f"{title}:\n{text}", flush=True)


def _check_count(value: int | None, flag: str, minimum: int = 1) -> None:
    """An integer flag's range (argparse has checked that it is an integer)."""
    if value is not None and value < minimum:
        raise ValueError(f"{flag} must be >= {minimum}, got {value}")


SAMPLE_SUFFIXES = (".png", ".txt", ".pt")


def _check_sample_out(out: Path, config: dict[str, Any], text: bool) -> None:
    """``bfn sample --out``: a supported suffix that fits the data, and not an existing folder."""
    from bfn.training import natural_suffix

    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / 'samples.png'}")
    suffix = out.suffix.lower()
    if not suffix:
        return
    if suffix not in SAMPLE_SUFFIXES:
        raise ValueError(f"--out {out}: unsupported suffix {out.suffix!r}; supported: {', '.join(SAMPLE_SUFFIXES)}")
    natural = natural_suffix(config["flow"]["kind"], tuple(config["data_shape"]), text)
    if suffix not in (".pt", natural):
        what = {".png": "images or 2-D points", ".txt": "text", ".pt": "tensors"}[natural]
        raise ValueError(f"--out {out}: these samples are {what}; write them as {natural} or .pt, not {suffix}")


# ================================================================================================== parser


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """Options of ``bfn train`` (all default to ``None``: unset options keep the stored or default value)."""
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        help="data set: digits, mnist, fashion-mnist, cifar10:DIR, text8:PATH, kjv, "
        "text:PATH, toy:NAME (two_moons, eight_gaussians, checkerboard, swiss_roll); default digits",
    )
    data.add_argument("--data-root", help="directory or file of a data source that reads files")
    data.add_argument(
        "--data-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra loader option, e.g. val_size=5000 or num_train=20000 (repeatable)",
    )
    data.add_argument("--seq-len", type=int, help="characters per text example (default 256)")
    data.add_argument("--split-seed", type=int, help="seed of the train/validation split (default 0)")
    data.add_argument(
        "--binarize", action="store_true", default=None, help="dynamic binarisation of images for the discrete flow"
    )
    flow = p.add_argument_group("flow")
    flow.add_argument(
        "--flow", choices=["continuous", "discretised", "discrete"], help="data kind / flow (default discretised)"
    )
    flow.add_argument("--sigma-1", type=float, help="continuous/discretised: std at tau = 1 (default 1e-3, toy 0.02)")
    flow.add_argument("--num-bins", type=int, help="discretised: number of bins (default: the data's grey levels)")
    flow.add_argument("--beta-1", type=float, help="discrete: final accuracy (default 3.0 binary, 0.75 text)")
    net = p.add_argument_group("network")
    net.add_argument(
        "--net",
        choices=["mlp", "unet", "transformer"],
        help="network (default by data: toy/digits mlp, images unet, text transformer)",
    )
    net.add_argument(
        "--net-option",
        action="append",
        metavar="KEY=VALUE",
        help="network constructor option, e.g. hidden=256, depth=4, base=64 (repeatable)",
    )
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, help="total optimisation steps (default 2000; may grow on --resume)")
    opt.add_argument(
        "--batch-size",
        type=int,
        help="examples per step per process; global batch = batch size x processes (default 128)",
    )
    opt.add_argument("--lr", type=float, help="AdamW learning rate after warm-up (default 1e-3)")
    opt.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    opt.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"), help="AdamW betas (default 0.9 0.99)")
    opt.add_argument("--warmup", type=int, help="steps of linear learning-rate warm-up (default 100)")
    opt.add_argument("--grad-clip", type=float, help="max gradient norm; 0 disables clipping (default 1.0)")
    opt.add_argument("--ema-decay", type=float, help="EMA decay of the weights (default 0.999)")
    opt.add_argument("--loss", type=_loss, help="'continuous' (L_inf, default) or n for the n-step loss L_n")
    opt.add_argument(
        "--amp",
        nargs="?",
        const="bf16",
        choices=["off", "bf16", "fp16"],
        help="mixed precision: bf16 (CPU or GPU; the value when only --amp is given) or fp16 (GPU, "
        "with a gradient scaler); default off",
    )
    net.add_argument(
        "--conditional",
        action="store_true",
        default=None,
        help="class-conditional model on the data's labels (digits, mnist, fashion-mnist, cifar10, "
        "toy:eight_gaussians, toy:checkerboard), "
        "for classifier-free guidance",
    )
    net.add_argument("--label-dropout", type=float, help="--conditional: share of null labels in training (0.1)")
    opt.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="compile the training loss with torch.compile (network and BFN maths; slower first steps)",
    )
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
    run.add_argument("--val-every", type=int, help="validate every N steps and at the end; 0: end only (default 500)")
    run.add_argument("--val-examples", type=int, help="validation examples per evaluation (default 512)")
    run.add_argument("--ckpt-every", type=int, help="checkpoint every N steps; 0: end and signals only (default 500)")
    run.add_argument("--device", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    run.add_argument("--seed", type=int, help="seed of everything: init, data order, loss noise (default 0)")
    run.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 0)")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only on a terminal)",
    )
    run.add_argument(
        "--config",
        type=Path,
        help="start from this JSON config (a run's config.json or a "
        "TrainConfig dict); command-line options override it",
    )


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

    train = sub.add_parser(
        "train",
        help="train a BFN (also under torchrun)",
        description="Train a BFN. Unset options take per-data defaults (or, with --resume, the run's stored values).",
    )
    _add_train_options(train)
    train.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")

    sample = sub.add_parser(
        "sample",
        help="draw samples from a trained run or model folder",
        description="Draw samples; writes a PNG grid (images), .txt (text), a scatter PNG "
        "(2-D data) or a .pt tensor (when FILE ends with .pt), and prints the NFE.",
    )
    sample.add_argument("run", type=Path, help="run folder (from bfn train) or model folder (save_pretrained)")
    sample.add_argument(
        "--sampler",
        default="auto",
        help="auto (the best measured configuration for the run's data kind; --steps counts network calls) or a "
        "sampler name from bfn.sampling.SAMPLERS (default auto)",
    )
    sample.add_argument("--steps", type=int, help="solver steps; network calls for auto (default 10)")
    sample.add_argument("--nfe", type=int, help="instead of --steps: the most steps within this many network calls")
    sample.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
    sample.add_argument("--h", type=float, help="h-solver: noise-variance multiplier (0 ODE, 1 reverse SDE)")
    sample.add_argument("--order", type=int, choices=[1, 2, 3], help="h-solver: order")
    sample.add_argument("--grid", choices=["uniform", "logsnr", "tuned"], help="solver time grid (default uniform)")
    sample.add_argument("--eta", type=float, help="solver end offset: the grid starts at t = 1 - eta")
    sample.add_argument("--final", choices=["drop", "denoise"], help="solver last step (default drop)")
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
        "--inpaint-method", choices=["certain", "replace"], help="how known values reach the network (certain)"
    )
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default 0)")
    sample.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    sample.add_argument(
        "--out",
        type=Path,
        default=Path("samples"),
        help="output file; its suffix picks the format (default samples.png/.txt/.pt)",
    )
    sample.add_argument("--dry-run", action="store_true", help="print the resolved settings as JSON and exit")

    ev = sub.add_parser(
        "eval",
        help="test NLL and sample quality against NFE",
        description="Evaluate a run: NLL bound (bits/dim, bits/char) on a split; with --samplers, "
        "sample quality (FID-digits, spelling accuracy, sliced W1) per sampler and NFE.",
    )
    ev.add_argument("run", type=Path, help="run folder (from bfn train)")
    ev.add_argument("--split", choices=["train", "val", "test"], default="test", help="split (default test)")
    ev.add_argument("--max-examples", type=int, help="score only the first N examples of the split")
    ev.add_argument("--likelihood", action="store_true", help="also the probability-flow ODE NLL (slow)")
    ev.add_argument(
        "--samplers",
        type=_str_list,
        default=[],
        help="comma-separated sampler names for the sample-quality table, e.g. bfn,bfn-solver++2",
    )
    ev.add_argument("--nfe", type=_int_list, default=[10], help="comma-separated NFE budgets (default 10)")
    ev.add_argument("--num-samples", type=int, default=500, help="samples per sampler and NFE (default 500)")
    ev.add_argument(
        "--guidance",
        type=_float_list,
        help="conditional digits model: class accuracy of its samples (the digits classifier) at these "
        "comma-separated guidance scales, per sampler and NFE (50 samples per class)",
    )
    ev.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ev.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    ev.add_argument("--out", type=Path, help="folder for eval.json and quality.png (default: the run folder)")
    ev.add_argument("--dry-run", action="store_true", help="print the resolved settings as JSON and exit")

    demo = sub.add_parser(
        "demo",
        help="train a small digits model (~2 min on 2 CPU cores) and compare samplers",
        description="Train a discretised BFN on the 8x8 digits, print test bits/dim, and write "
        "demo.png: the original sampler next to BFN-Solver++3s (single-step, third order) at the same NFE.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default 3000)")
    demo.add_argument("--nfe", type=int, default=10, help="network calls per sample for both samplers (default 10)")
    demo.add_argument("--num", type=int, default=100, help="samples shown per sampler (default 100)")
    demo.add_argument(
        "--metric-samples",
        type=int,
        default=500,
        help="samples for FID-digits per sampler; 0 skips the metric (default 500)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    demo.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only on a terminal)",
    )
    demo.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # tiny settings, for tests
    demo.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    return parser


def _version() -> str:
    from bfn import __version__

    return f"bfn {__version__}"


# ================================================================================================== commands


TRAIN_FIELDS = {
    "data": "data", "data_root": "data_root", "seq_len": "seq_len", "split_seed": "split_seed",
    "binarize": "binarize", "flow": "flow", "sigma_1": "sigma_1", "num_bins": "num_bins", "beta_1": "beta_1",
    "net": "net", "steps": "steps", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
    "betas": "betas", "warmup": "warmup", "ema_decay": "ema_decay", "loss": "loss", "amp": "amp", "out": "out",
    "resume": "resume", "val_every": "val_every", "val_examples": "val_examples", "ckpt_every": "ckpt_every",
    "device": "device", "seed": "seed", "num_workers": "num_workers", "progress": "progress", "compile": "compile",
}  # fmt: skip
TRAIN_FIELDS.update(conditional="conditional", label_dropout="label_dropout")


def train_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~bfn.training.TrainConfig` the ``train`` arguments describe (resolved).

    Base: the run's stored config with ``--resume``, else ``--config FILE``, else the defaults; then every option
    given on the command line overrides it.
    """
    from bfn.training import TrainConfig, load_run_config

    changes = {field: getattr(args, name) for name, field in TRAIN_FIELDS.items() if getattr(args, name) is not None}
    if args.grad_clip is not None:
        changes["grad_clip"] = None if args.grad_clip == 0 else args.grad_clip  # NaN / negative: refused later
    if args.net_option:
        changes["net_options"] = _key_values(args.net_option, "--net-option")
    if args.data_option:
        changes["data_options"] = _key_values(args.data_option, "--data-option")
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out RUN_FOLDER")
        base = load_run_config(args.out)
    elif args.config is not None:
        base = _config_file(args.config).replace(resume=False)
    else:
        base = TrainConfig()
    if "net" in changes and "net_options" not in changes:
        changes["net_options"] = None  # the new network's defaults, not the old network's options
    config = base.replace(**changes)
    if args.out is None and not args.resume and args.config is None:
        safe = config.data.replace(":", "-").replace("/", "_")
        config = config.replace(out=str(Path("runs") / f"{safe}-{config.flow}"))
    _check_flow_flags(args, config.flow)
    return config.resolved()


#: flow options of ``bfn train`` and the flows they apply to
FLOW_FLAGS = {
    "sigma_1": ("--sigma-1", ("continuous", "discretised")),
    "num_bins": ("--num-bins", ("discretised",)),
    "beta_1": ("--beta-1", ("discrete",)),
    "binarize": ("--binarize", ("discrete",)),
}


def _check_flow_flags(args: argparse.Namespace, flow: str) -> None:
    """Refuse flow options given on the command line that the chosen flow would ignore."""
    for name, (flag, flows) in FLOW_FLAGS.items():
        if getattr(args, name) is not None and flow not in flows:
            raise ValueError(f"{flag} applies to the {' and '.join(flows)} flow(s), not to --flow {flow}")


def _config_file(path: Path) -> Any:
    """The :class:`~bfn.training.TrainConfig` of a ``--config`` file (a run's config.json or a TrainConfig dict)."""
    from bfn.training import TrainConfig

    try:
        stored = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"--config {path}: cannot read it ({err.strerror or err})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--config {path}: not valid JSON ({err})") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("train", stored), dict):
        raise ValueError(
            f"--config {path}: expected a JSON object (a run's config.json or a TrainConfig dict), "
            f"got a JSON {type(stored).__name__}"
        )
    try:
        return TrainConfig.from_dict(stored.get("train", stored))
    except (TypeError, ValueError) as err:
        raise ValueError(f"--config {path}: {err}") from None


def cmd_train(args: argparse.Namespace) -> int:
    """``bfn train``."""
    from bfn.training import check_run_config, data_description, nll_unit, train

    if args.overwrite and args.resume:
        raise ValueError("--overwrite and --resume exclude each other (--resume continues the run in --out)")
    config = train_config_from_args(args)
    check_run_config(config, overwrite=args.overwrite)
    _print_json("resolved training config", config.to_dict(), args.dry_run)
    if args.dry_run:
        return 0
    result = train(config, overwrite=args.overwrite)
    if _is_main_process():
        unit = nll_unit(data_description(result.run_dir))
        val = f", validation {result.val_bpd:.4f} {unit}" if result.val_bpd is not None else ""
        print(f"done: {result.step} steps in {result.elapsed:.1f} s{val}; run folder {result.run_dir}")
    if result.interrupted:
        return 128 + int(getattr(signal, result.interrupted))
    return 0


def _sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    options = _key_values(args.option, "--option")
    for name in ("h", "order", "grid", "eta", "final"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    return options


def cmd_sample(args: argparse.Namespace) -> int:
    """``bfn sample``."""
    import torch

    from bfn import BFN
    from bfn.checkpoint import read_config
    from bfn.sampling import get_sampler
    from bfn.sampling.auto import AUTO, resolve_auto
    from bfn.sampling.registry import resolve_options
    from bfn.training import _pick_device, data_description, derive_seed, is_text, steps_for_nfe, write_samples

    config = read_config(args.run)
    kind = config["flow"]["kind"]
    options = _sampler_options(args)
    if args.nfe is not None and args.steps is not None:
        raise ValueError("give --steps or --nfe, not both (--nfe picks the most steps within that many calls)")
    _check_count(args.steps, "--steps")
    _check_count(args.nfe, "--nfe")
    _check_count(args.num, "--num")
    guided = args.label is not None and args.guidance not in (None, 0.0, 1.0)  # a guided call is 2 evaluations
    nfe = args.nfe // 2 if guided and args.nfe is not None else args.nfe
    name, checked = args.sampler, options
    if args.sampler == AUTO:  # check the configuration auto resolves to
        name, _, checked = resolve_auto(kind, nfe or args.steps or 10, options)
    resolve_options(name, get_sampler(name, kind), kind, checked)  # every option, before work
    _check_sample_out(args.out, config, is_text(data_description(args.run)))
    device = _pick_device(args.device, 0)
    steps = steps_for_nfe(args.sampler, kind, max(nfe, 1), **options) if nfe is not None else (args.steps or 10)
    settings = {
        "run": str(args.run),
        "sampler": args.sampler,
        "steps": steps,
        "num": args.num,
        "options": options,
        "seed": args.seed,
        "weights": "raw" if args.raw else "ema",
        "out": str(args.out),
    }
    conditioning = {k: getattr(args, k) for k in CONDITIONING_ARGS if getattr(args, k) is not None}
    settings.update({k: str(v) for k, v in conditioning.items()})
    _print_json("resolved sampling settings", settings, args.dry_run)
    if args.dry_run:
        return 0
    model = BFN.from_pretrained(args.run, map_location=device, ema=not args.raw)
    generator = torch.Generator(device=model.device).manual_seed(derive_seed(args.seed, "cli-sample"))
    num, cond, columns = _conditioning(args, model, config)
    from tqdm import tqdm

    with tqdm(total=steps, unit="step", desc=args.sampler, leave=False, disable=not sys.stderr.isatty()) as bar:
        progress = {"callback": lambda info: bar.update(1)} if not bar.disable else {}
        out = model.sample(num, sampler=args.sampler, steps=steps, generator=generator, **cond, **options, **progress)
    info = data_description(args.run)
    samples = out.samples
    if "mask" in cond and len(model.data_shape) == 3:  # show the known part first (the rest mid-grey)
        samples = torch.cat([_known_display(model, cond["known"], cond["mask"]).to(samples), samples])
        columns = None
    if args.prompt is not None:
        print(f"prompt: {args.prompt!r}")
    path = write_samples(
        samples,
        args.out,
        kind=kind,
        data_shape=tuple(config["data_shape"]),
        num_classes=config["flow"]["config"].get("num_classes"),
        text=is_text(info),
        title=f"{args.sampler}, {out.nfe} NFE",
        columns=columns,
    )
    ran = out.sampler if out.sampler == args.sampler else f"{args.sampler} = {out.sampler} {out.options}"
    print(f"{num} samples with {ran} ({out.steps} steps): NFE {out.nfe}; wrote {path}")
    return 0


CONDITIONING_ARGS = ("label", "guidance", "inpaint", "mask_rect", "mask", "prompt", "inpaint_method")


def _conditioning(args: argparse.Namespace, model: Any, config: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    """Sample count, the conditioning keywords of ``model.sample`` and the grid's columns (one row per label)."""
    import torch

    from bfn.prompts import image_known, parse_labels, parse_rect, prompt_known

    num, cond, columns = args.num, {}, None
    if args.label is not None:
        labels = parse_labels(args.label, model.num_classes)
        num, columns = args.num * len(labels), args.num
        cond["labels"] = torch.tensor(labels).repeat_interleave(args.num)
    if args.guidance is not None:
        cond["guidance"] = args.guidance
    if (args.mask_rect is not None or args.mask is not None) and args.inpaint is None:
        raise ValueError("--mask-rect and --mask go with --inpaint IMAGE")
    if args.inpaint is not None and args.prompt is not None:
        raise ValueError("give --inpaint (images) or --prompt (text), not both")
    if args.inpaint is not None:
        rect = parse_rect(args.mask_rect) if args.mask_rect is not None else None
        num_bins = config["flow"]["config"].get("num_bins")
        cond["known"], cond["mask"] = image_known(
            args.inpaint, model.data_shape, model.flow.kind, num_bins, rect, args.mask
        )
    if args.prompt is not None:
        if model.flow.kind != "discrete" or len(model.data_shape) != 1:
            raise ValueError("--prompt needs a text model (discrete data of shape (seq_len,))")
        cond["known"], cond["mask"] = prompt_known(args.prompt, model.data_shape[0])
    if args.inpaint_method is not None:
        if "mask" not in cond:
            raise ValueError("--inpaint-method goes with --inpaint or --prompt")
        cond["inpaint"] = args.inpaint_method
    return num, cond, columns


def _known_display(model: Any, known: Any, mask: Any) -> Any:
    """The known part of an image with the region to fill at the middle grey level (for the grid's first image)."""
    import torch

    flow = model.flow
    fill = torch.zeros((), dtype=known.dtype)
    if flow.kind == "discretised":
        fill = flow.quantize(fill)
    return torch.where(mask, known, fill)[None]


def cmd_eval(args: argparse.Namespace) -> int:
    """``bfn eval``."""
    from bfn.sampling import get_sampler
    from bfn.training import _pick_device, data_description, load_run_config, require_metric

    _check_count(args.max_examples, "--max-examples")
    _check_count(args.num_samples, "--num-samples")
    for budget in args.nfe:
        _check_count(budget, "--nfe")
    if not args.nfe:
        raise ValueError("--nfe needs at least one budget, e.g. --nfe 5,10,20")
    train_config = load_run_config(args.run)  # a training run folder, before any work
    for name in args.samplers:
        get_sampler(name, train_config.flow)  # type: ignore[arg-type]
    if args.samplers:
        require_metric(train_config.data, data_description(args.run))
    _pick_device(args.device, 0)
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
        _check_guidance_eval(args)
        settings["guidance"] = args.guidance
    _print_json("resolved evaluation settings", settings, args.dry_run)
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
        _guidance_table(args)
    return 0


def _check_guidance_eval(args: argparse.Namespace) -> None:
    from bfn.checkpoint import read_config

    config = read_config(args.run)
    if config.get("num_classes") is None:
        raise ValueError("--guidance needs a class-conditional model (trained with --conditional)")
    if config.get("train", {}).get("data") != "digits":
        raise ValueError("--guidance reports class accuracy with the digits classifier: a digits model is needed")
    if not args.samplers:
        raise ValueError("--guidance needs --samplers (and --nfe) to sample with")


def _guidance_table(args: argparse.Namespace) -> None:
    """Class accuracy against guidance (digits classifier); prints a table and writes class_accuracy.json."""
    from bfn import BFN
    from bfn.metrics import load_classifier
    from bfn.metrics.conditional import guidance_accuracy
    from bfn.training import _pick_device

    model = BFN.from_pretrained(args.run, map_location=_pick_device(args.device, 0), ema=not args.raw)
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


def cmd_demo(args: argparse.Namespace) -> int:
    """``bfn demo``."""
    from bfn.training import DEMO_STEPS, check_run_config, demo_config, require_metric, run_demo

    _check_count(args.steps, "--steps")
    _check_count(args.nfe, "--nfe")
    _check_count(args.num, "--num")
    _check_count(args.metric_samples, "--metric-samples", minimum=0)
    changes: dict[str, Any] = {"device": args.device, "progress": args.progress}
    steps = args.steps if args.steps is not None else DEMO_STEPS
    num, metric_samples = args.num, args.metric_samples
    if args.quick:
        steps = args.steps if args.steps is not None else 30
        changes.update(net_options={"hidden": 32, "depth": 1}, batch_size=32, val_examples=32)
        num, metric_samples = min(num, 16), 0
    config = demo_config(args.out, steps=steps, seed=args.seed, **changes).resolved()
    from bfn.checkpoint import find_checkpoint

    check_run_config(config.replace(resume=True) if find_checkpoint(config.out) else config)  # as run_demo runs it
    if metric_samples:
        require_metric(config.data, {})  # FID needs torchmetrics: fail now, not after training
    _print_json("resolved demo config", config.to_dict(), args.dry_run)
    if args.dry_run:
        return 0
    if args.threads is None:  # a tiny model: one thread is as fast, and immune to oversubscribed cores
        import torch

        torch.set_num_threads(1)
        print("using 1 CPU thread (bfn --threads N demo to change)")
    result = run_demo(config, nfe=args.nfe, num_samples=num, metric_samples=metric_samples)
    print(f"test NLL: {result.test_bpd:.4f} bits/dim (digits test split, EMA weights)")
    compared = " vs ".join(f"{row['sampler']} @ {row['nfe']} NFE" for row in result.rows)
    print(f"wrote {result.image} ({compared})")
    print(f"training took {result.train.elapsed:.1f} s; run folder {config.out}")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "demo": cmd_demo}


def _one_line(err: BaseException) -> str:
    """An exception as one line: its message with newlines folded (file errors keep the file name)."""
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in str(err.strerror):
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err)
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bfn`` console script; returns the exit status."""
    from bfn._checks import MissingExtraError, NonFiniteError
    from bfn.checkpoint import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            import torch

            _check_count(args.threads, "--threads")
            torch.set_num_threads(args.threads)
        return COMMANDS[args.command](args)
    except NonFiniteError as err:  # a run that diverged: not bad input
        print(f"bfn {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except (ValueError, CheckpointError, MissingExtraError, FileNotFoundError, IsADirectoryError) as err:
        print(f"bfn {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (NotADirectoryError, PermissionError) as err:
        print(f"bfn {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bfn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
