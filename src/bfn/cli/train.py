"""``bfn train`` and ``bfn demo``: the :class:`~bfn.training.TrainConfig` the arguments describe, then training."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any

from bfn.cli.common import check_count, is_main_process, key_values, print_json

__all__ = [
    "FLOW_FLAGS",
    "TRAIN_FIELDS",
    "check_flow_flags",
    "cmd_demo",
    "cmd_train",
    "config_file",
    "train_config_from_args",
]

TRAIN_FIELDS = {
    "data": "data", "data_root": "data_root", "seq_len": "seq_len", "split_seed": "split_seed",
    "binarize": "binarize", "flow": "flow", "sigma_1": "sigma_1", "num_bins": "num_bins", "beta_1": "beta_1",
    "net": "net", "steps": "steps", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
    "betas": "betas", "warmup": "warmup", "ema_decay": "ema_decay", "loss": "loss", "amp": "amp", "out": "out",
    "resume": "resume", "val_every": "val_every", "val_examples": "val_examples", "ckpt_every": "ckpt_every",
    "device": "device", "seed": "seed", "num_workers": "num_workers", "progress": "progress", "compile": "compile",
}  # fmt: skip
TRAIN_FIELDS.update(conditional="conditional", label_dropout="label_dropout")
"""``bfn train`` arguments (``argparse`` names) that set the :class:`~bfn.training.TrainConfig` field of the same
name; ``--grad-clip``, ``--net-option`` and ``--data-option`` are converted first."""


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
        changes["net_options"] = key_values(args.net_option, "--net-option")
    if args.data_option:
        changes["data_options"] = key_values(args.data_option, "--data-option")
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out RUN_FOLDER")
        base = load_run_config(args.out)
    elif args.config is not None:
        base = config_file(args.config).replace(resume=False)
    else:
        base = TrainConfig()
    if "net" in changes and "net_options" not in changes:
        changes["net_options"] = None  # the new network's defaults, not the old network's options
    config = base.replace(**changes)
    if args.out is None and not args.resume and args.config is None:
        safe = config.data.replace(":", "-").replace("/", "_")
        config = config.replace(out=str(Path("runs") / f"{safe}-{config.flow_kind}"))
    check_flow_flags(args, config.flow_kind)
    return config.resolved()


def _flow_flags() -> dict[str, tuple[str, tuple[str, ...]]]:
    from bfn.training.recipes import FLOW_FIELDS, flows_taking

    return {name: (f"--{name.replace('_', '-')}", flows_taking(name)) for name in FLOW_FIELDS}


FLOW_FLAGS = _flow_flags()
"""The flow options of ``bfn train`` (one per :data:`~bfn.training.FLOW_FIELDS`): field -> (flag, the flows it
applies to, :func:`~bfn.training.flows_taking`)."""


def check_flow_flags(args: argparse.Namespace, flow: str) -> None:
    """Refuse flow options given on the command line that the chosen flow would ignore."""
    from bfn.training.recipes import flow_fields

    applies = flow_fields(flow)
    for name, (flag, flows) in FLOW_FLAGS.items():
        if getattr(args, name) is not None and name not in applies:
            raise ValueError(f"{flag} applies to the {' and '.join(flows)} flow(s), not to --flow {flow}")


def config_file(path: Path) -> Any:
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
    print_json("resolved training config", config.to_dict(), args.dry_run)
    if args.dry_run:
        return 0
    result = train(config, overwrite=args.overwrite)
    if is_main_process():
        unit = nll_unit(data_description(result.run_dir))
        val = f", validation {result.val_bpd:.4f} {unit}" if result.val_bpd is not None else ""
        print(f"done: {result.step} steps in {result.elapsed:.1f} s{val}; run folder {result.run_dir}")
    if result.interrupted:
        return 128 + int(getattr(signal, result.interrupted))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``bfn demo``."""
    from bfn.training import DEMO_STEPS, check_run_config, demo_config, require_metric, run_demo, sampler_label

    check_count(args.steps, "--steps")
    check_count(args.nfe, "--nfe")
    check_count(args.num, "--num")
    check_count(args.metric_samples, "--metric-samples", minimum=0)
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
    print_json("resolved demo config", config.to_dict(), args.dry_run)
    if args.dry_run:
        return 0
    if args.threads is None:  # a tiny model: one thread is as fast, and immune to oversubscribed cores
        import torch

        torch.set_num_threads(1)
        print("using 1 CPU thread (bfn --threads N demo to change)")
    result = run_demo(config, nfe=args.nfe, num_samples=num, metric_samples=metric_samples)
    print(f"test NLL: {result.test_bpd:.4f} bits/dim (digits test split, EMA weights)")
    compared = " vs ".join(f"{sampler_label(row)} @ {row['nfe']} NFE" for row in result.rows)
    print(f"wrote {result.image} ({compared})")
    print(f"training took {result.train.elapsed:.1f} s; run folder {config.out}")
    return 0
