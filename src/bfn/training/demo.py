"""The demo (``bfn demo``, ``make demo``): a small discretised BFN on the 8x8 digits, the original sampler next to
the library's default sampler (``sampler="auto"``) at the same number of network calls, and FID-digits for both."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bfn.checkpoint import find_checkpoint
from bfn.training.config import TrainConfig, load_bundle
from bfn.training.distributed import derive_seed
from bfn.training.evaluation import evaluate_nll, format_score, quality_metric, quality_row, require_metric
from bfn.training.loop import TrainResult, train
from bfn.training.samples import image_grid, to_images

__all__ = ["DEMO_SAMPLERS", "DEMO_STEPS", "DemoResult", "demo_config", "run_demo", "sampler_label"]

DEMO_STEPS = 3000


def demo_config(out: str | os.PathLike[str], steps: int = DEMO_STEPS, seed: int = 0, **changes: Any) -> TrainConfig:
    """The demo's training config: a discretised BFN (17 bins) with a small MLP on the 8x8 ``digits`` images.

    About 70 s of single-core CPU time for 3000 steps; the 1437 training images overfit a larger MLP or longer
    training (validation bits/dim rises again), and a U-Net, though better (about 1.75 bits/dim), is 3-4 times
    slower per step on a CPU.
    """
    base = TrainConfig(
        data="digits",
        flow="discretised",
        sigma_1=0.02,
        net="mlp",
        net_options={"hidden": 256, "depth": 3, "layer_norm": True},
        steps=steps,
        batch_size=128,
        lr=2e-3,
        warmup=200,
        ema_decay=0.998,
        val_every=max(steps // 4, 1),
        ckpt_every=max(steps // 4, 1),
        seed=seed,
        out=str(out),
    )
    return base.replace(**changes)


@dataclass
class DemoResult:
    """The outcome of :func:`run_demo`: the training result, test bits/dim, the PNG and each sampler's row."""

    train: TrainResult
    test_bpd: float
    image: Path
    rows: list[dict[str, Any]]
    metric: str | None


DEMO_SAMPLERS = ("bfn", "auto")  # the original sampler and the default one


def run_demo(
    config: TrainConfig,
    *,
    nfe: int = 10,
    num_samples: int = 100,
    metric_samples: int = 500,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Train (or, if already trained, reload) the demo model, then compare the original sampler with the default
    sampler at the same NFE: a side-by-side PNG (``demo.png`` in the run folder) and FID-digits scores.

    Returns the test bits/dim (ELBO, EMA weights) and each sampler's steps, NFE and score.
    """
    run_dir = Path(config.out)
    if metric_samples:
        require_metric(config.data, {})
    if find_checkpoint(run_dir) is not None and not config.resume:
        config = config.replace(resume=True)
    result = train(config)
    model = result.ema_model.eval()
    bundle = load_bundle(result_config := config.resolved())
    test_bpd = evaluate_nll(model, bundle.test, steps=result_config.loss_steps, seed=config.seed)
    metric = quality_metric(result_config.data, bundle, model.flow, seed=config.seed) if metric_samples else None
    rows, grids = [], []
    for name in DEMO_SAMPLERS:
        row = quality_row(model, name, nfe, max(num_samples, metric_samples), config.seed, metric)
        generator = torch.Generator(device=model.device).manual_seed(derive_seed(config.seed, "demo", name))
        shown = model.sample(num_samples, sampler=name, steps=row["steps"], generator=generator)
        rows.append(row)
        grids.append(image_grid(to_images(shown.samples, model.flow)))
        scored = f", {metric.name} {format_score(metric.name, row['score'])}" if metric else ""
        log(f"{sampler_label(row)}: {row['steps']} steps, {row['nfe']} NFE{scored}")
    image = _side_by_side(grids, rows, metric.name if metric else None, run_dir / "demo.png")
    return DemoResult(result, test_bpd, image, rows, metric.name if metric else None)


def sampler_label(row: dict[str, Any]) -> str:
    """A quality row's sampler, with what ``"auto"`` ran: ``"auto (sde-bfn-solver++2)"``."""
    return f"{row['sampler']} ({row['ran']})" if row["sampler"] != row["ran"] else row["sampler"]


def _side_by_side(grids: list[Tensor], rows: list[dict[str, Any]], metric: str | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 5.4))
    for ax, grid, row in zip(axes, grids, rows):
        ax.imshow(grid.squeeze(-1).numpy() if grid.shape[-1] == 1 else grid.numpy(), cmap="gray", vmin=0, vmax=1)
        score = f"\n{metric} = {row['score']:.2f}" if metric and row["score"] is not None else ""
        ax.set_title(f"{sampler_label(row)}: {row['nfe']} NFE{score}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
