"""``bfn sample``: settings checked before any work, conditioning (labels, inpainting, text prompts), the file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bfn.checkpoint import ModelConfig
from bfn.cli.common import check_count, key_values, print_json
from bfn.cli.parser import DEFAULT_SAMPLE_STEPS

__all__ = [
    "CONDITIONING_ARGS",
    "SAMPLE_SUFFIXES",
    "check_sample_out",
    "cmd_sample",
    "conditioning",
    "known_display",
    "sampler_options",
]

SAMPLE_SUFFIXES = (".png", ".txt", ".pt")


def check_sample_out(out: Path, config: ModelConfig, text: bool) -> None:
    """``bfn sample --out``: a supported suffix that fits the data, and not an existing folder."""
    from bfn.training import natural_suffix

    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / 'samples.png'}")
    suffix = out.suffix.lower()
    if not suffix:
        return
    if suffix not in SAMPLE_SUFFIXES:
        raise ValueError(f"--out {out}: unsupported suffix {out.suffix!r}; supported: {', '.join(SAMPLE_SUFFIXES)}")
    natural = natural_suffix(config.flow, config.data_shape, text)
    if suffix not in (".pt", natural):
        what = {".png": "images or 2-D points", ".txt": "text", ".pt": "tensors"}[natural]
        raise ValueError(f"--out {out}: these samples are {what}; write them as {natural} or .pt, not {suffix}")


def sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    """The sampler options of the arguments: ``--option KEY=VALUE`` and the named option flags that are set."""
    options = key_values(args.option, "--option")
    for name in ("h", "order", "grid", "eta", "final"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    return options


def cmd_sample(args: argparse.Namespace) -> int:
    """``bfn sample``."""
    import torch

    from bfn import BFN
    from bfn.sampling import get_sampler
    from bfn.sampling.auto import AUTO, resolve_auto
    from bfn.sampling.registry import resolve_options
    from bfn.training import data_description, derive_seed, is_text, pick_device, steps_for_nfe, write_samples

    config = ModelConfig.read(args.run)
    kind = config.flow.kind
    options = sampler_options(args)
    if args.nfe is not None and args.steps is not None:
        raise ValueError("give --steps or --nfe, not both (--nfe picks the most steps within that many calls)")
    check_count(args.steps, "--steps")
    check_count(args.nfe, "--nfe")
    check_count(args.num, "--num")
    guided = args.label is not None and args.guidance not in (None, 0.0, 1.0)  # a guided call is 2 evaluations
    nfe = args.nfe // 2 if guided and args.nfe is not None else args.nfe
    name, checked = args.sampler, options
    if args.sampler == AUTO:  # check the configuration auto resolves to
        name, _, checked = resolve_auto(kind, nfe or args.steps or DEFAULT_SAMPLE_STEPS, options)
    resolve_options(name, get_sampler(name, kind), kind, checked)  # every option, before work
    check_sample_out(args.out, config, is_text(data_description(args.run)))
    device = pick_device(args.device, 0)
    given_steps = args.steps or DEFAULT_SAMPLE_STEPS
    steps = steps_for_nfe(args.sampler, kind, max(nfe, 1), **options) if nfe is not None else given_steps
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
    given = {k: getattr(args, k) for k in CONDITIONING_ARGS if getattr(args, k) is not None}
    settings.update({k: str(v) for k, v in given.items()})
    print_json("resolved sampling settings", settings, args.dry_run)
    if args.dry_run:
        return 0
    model = BFN.from_pretrained(args.run, map_location=device, ema=not args.raw)
    generator = torch.Generator(device=model.device).manual_seed(derive_seed(args.seed, "cli-sample"))
    num, cond, columns = conditioning(args, model)
    from tqdm import tqdm

    with tqdm(total=steps, unit="step", desc=args.sampler, leave=False, disable=not sys.stderr.isatty()) as bar:
        progress = {"callback": lambda info: bar.update(1)} if not bar.disable else {}
        out = model.sample(num, sampler=args.sampler, steps=steps, generator=generator, **cond, **options, **progress)
    info = data_description(args.run)
    samples = out.samples
    if "mask" in cond and len(model.data_shape) == 3:  # show the known part first (the rest mid-grey)
        samples = torch.cat([known_display(model, cond["known"], cond["mask"]).to(samples), samples])
        columns = None
    if args.prompt is not None:
        print(f"prompt: {args.prompt!r}")
    path = write_samples(
        samples,
        args.out,
        flow=model.flow,
        data_shape=config.data_shape,
        text=is_text(info),
        title=f"{args.sampler}, {out.nfe} NFE",
        columns=columns,
    )
    ran = out.sampler if out.sampler == args.sampler else f"{args.sampler} = {out.sampler} {out.options}"
    print(f"{num} samples with {ran} ({out.steps} steps): NFE {out.nfe}; wrote {path}")
    return 0


CONDITIONING_ARGS = ("label", "guidance", "inpaint", "mask_rect", "mask", "prompt", "inpaint_method")
"""The conditioning arguments of ``bfn sample`` (printed with the resolved settings when given)."""


def conditioning(args: argparse.Namespace, model: Any) -> tuple[int, dict[str, Any], Any]:
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
        cond["known"], cond["mask"] = image_known(args.inpaint, model.data_shape, model.flow, rect, args.mask)
    if args.prompt is not None:
        if not model.flow.class_indices or len(model.data_shape) != 1:
            raise ValueError("--prompt needs a text model (discrete data of shape (seq_len,))")
        cond["known"], cond["mask"] = prompt_known(args.prompt, model.data_shape[0])
    if args.inpaint_method is not None:
        if "mask" not in cond:
            raise ValueError("--inpaint-method goes with --inpaint or --prompt")
        cond["inpaint"] = args.inpaint_method
    return num, cond, columns


def known_display(model: Any, known: Any, mask: Any) -> Any:
    """The known part of an image with the region to fill at the middle grey level (for the grid's first image):
    the flow's data of intensity 1/2 (:meth:`bfn.flows.Flow.from_unit`)."""
    import torch

    fill = model.flow.from_unit(torch.tensor(0.5, dtype=known.dtype if known.is_floating_point() else None))
    return torch.where(mask, known, fill.to(known.dtype))[None]
