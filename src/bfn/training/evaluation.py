"""Evaluation: the NLL bound on a data split, the PF-ODE NLL, sample quality against NFE, and their report.

:func:`evaluate_run` is ``bfn eval``: test bits/dim (bits/char for text) from :func:`evaluate_nll`, optionally the
probability-flow ODE bound, and per sampler and NFE budget the score of :func:`quality_metric` (FID-digits,
spelling accuracy, sliced Wasserstein-1), written to ``eval.json`` and a quality-against-NFE plot.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from bfn._checks import require_extra
from bfn.checkpoint import atomic_write_json
from bfn.metrics.distances import sliced_wasserstein
from bfn.model import BFN, bits_per_dim
from bfn.training.config import (
    data_description,
    data_source,
    is_text,
    json_safe,
    load_bundle,
    load_run_config,
    nll_unit,
)
from bfn.training.distributed import derive_seed, pick_device
from bfn.training.samples import to_images

if TYPE_CHECKING:
    from torch import Tensor

    from bfn.data import DataBundle
    from bfn.flows import Flow

__all__ = [
    "EvalReport",
    "QualityMetric",
    "evaluate_nll",
    "evaluate_run",
    "format_score",
    "plot_quality",
    "quality_metric",
    "quality_row",
    "require_metric",
    "steps_for_nfe",
]


@torch.no_grad()
def evaluate_nll(
    model: BFN,
    dataset: Dataset,
    *,
    steps: int | None = None,
    max_examples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    samples: int = 1,
) -> float:
    """Mean NLL bound of the first ``max_examples`` examples of ``dataset`` in bits per data element.

    Uses ``model.nll`` (``L_inf + L_r``, or ``L_n + L_r`` with ``steps=n``) with its own generator seeded by
    ``seed``; torch's global random state is left untouched (``fork_rng``). Bits/dim for images, bits/char for text.
    """
    count = len(dataset) if max_examples is None else min(max_examples, len(dataset))  # type: ignore[arg-type]
    if count < 1:
        raise ValueError("the evaluation split is empty")
    device = model.device
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "eval-data"))
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "eval-noise"))
        for first in range(0, count, batch_size):
            x = torch.stack([dataset[i] for i in range(first, min(first + batch_size, count))]).to(device)
            total += float(model.nll(x, steps=steps, generator=generator, samples=samples).sum())
    model.train(was_training)
    return float(bits_per_dim(total / count, model.data_shape))


def steps_for_nfe(sampler: str, kind: str, nfe: int, **options: Any) -> int:
    """The steps of ``sampler`` for a budget of ``nfe`` network calls (at least 1 step).

    :meth:`bfn.sampling.SamplerSpec.steps_for_nfe`, the inverse of the registry's cost model: e.g. 10 NFE is 9 steps
    of ``bfn`` (``n + 1`` calls) and 10 steps of ``bfn-solver++2`` (``n`` calls with ``final="drop"``); a budget
    below one step's cost still gets one step. ``"auto"`` counts network calls (steps = ``nfe``).
    """
    from bfn.sampling import get_sampler
    from bfn.sampling.auto import AUTO

    if sampler == AUTO:
        return nfe  # steps are network calls
    spec = get_sampler(sampler, kind)  # type: ignore[arg-type]
    final = options.get("final", "drop")
    return spec.steps_for_nfe(nfe, final) if nfe >= spec.nfe(1, final) else 1


@dataclass
class QualityMetric:
    """A sample-quality metric for one data set: ``score(samples) -> float`` (lower or higher is better)."""

    name: str
    score: Callable[[Tensor], float]
    higher_is_better: bool = False


def quality_metric(data: str, bundle: DataBundle, flow: Flow, seed: int = 0) -> QualityMetric | None:
    """The sample-quality metric for a data set and the flow of the model whose samples it scores, or ``None``.

    * ``digits`` images: FID-digits (:func:`bfn.metrics.image_fid` on the shipped digits classifier's features)
      against the training split; ``mnist`` / ``fashion-mnist``: FID-<name> with a classifier trained on the
      training split if none is cached (needs the labels).
    * text: spelling accuracy (:func:`bfn.metrics.spelling_accuracy`, higher is better).
    * 2-D toy data: :func:`bfn.metrics.sliced_wasserstein` against the test split.
    """
    from torch.utils.data import Subset

    source = data_source(data)
    info = bundle.info
    if is_text(info):
        from bfn.data import decode_text
        from bfn.metrics import spelling_accuracy

        return QualityMetric(
            "spelling accuracy",
            lambda s: spelling_accuracy(decode_text(s.reshape(s.shape[0], -1))),
            higher_is_better=True,
        )
    if tuple(bundle.data_shape) == (2,):
        reference = torch.stack([bundle.test[i] for i in range(len(bundle.test))])  # type: ignore[arg-type]
        return QualityMetric("sliced W1", lambda s: sliced_wasserstein(s, reference, seed=seed))
    if len(bundle.data_shape) == 3 and source in ("digits", "mnist", "fashion-mnist"):
        from bfn.metrics import image_fid, load_feature_extractor

        count = min(len(bundle.train), 10_000)  # type: ignore[arg-type]
        subset = Subset(bundle.train, range(count))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            reference = to_images(torch.stack([subset[i] for i in range(count)]), flow)
        if source == "digits":
            extractor = load_feature_extractor("digits")
        else:
            if bundle.labels is None:
                return None
            extractor = load_feature_extractor(source, images=reference, labels=bundle.labels["train"][:count])
        return QualityMetric(f"FID-{source}", lambda s: image_fid(to_images(s, flow), reference, extractor))
    return None


def require_metric(data: str, info: Mapping[str, Any]) -> None:
    """Fail before any work when the optional package behind ``data``'s quality metric is missing.

    FID needs ``torchmetrics`` and spelling accuracy ``spylls``, both from the ``metrics`` extra.
    """
    if is_text(info) or data_source(data) in ("text8", "kjv", "text"):
        require_extra("spylls", "metrics", f"the spelling-accuracy metric of {data}")
    elif data_source(data) in ("digits", "mnist", "fashion-mnist"):
        require_extra("torchmetrics", "metrics", f"FID on {data}")


@dataclass
class EvalReport:
    """The outcome of :func:`evaluate_run`.

    Attributes:
        nll_bpd: ELBO NLL bound on the split in bits/dim (bits/char for text).
        pf_ode_bpd: PF-ODE NLL bound in bits/dim, when requested.
        metric: name of the sample-quality metric (``None`` when the data set has none).
        rows: one dict per (sampler, NFE): ``sampler``, ``nfe_budget``, ``steps``, ``nfe``, ``score``, ``seconds``.
        plot: path of the quality-vs-NFE plot, when written.
    """

    split: str
    examples: int
    nll_bpd: float
    pf_ode_bpd: float | None = None
    metric: str | None = None
    higher_is_better: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    plot: Path | None = None

    def table(self) -> str:
        """A plain-text table of the sample-quality rows."""
        if not self.rows:
            return ""
        score = self.metric or "score"
        lines = [f"{'sampler':<22}{'NFE budget':>11}{'steps':>7}{'NFE':>6}{score:>22}{'seconds':>9}"]
        for r in self.rows:
            value = format_score(self.metric, r["score"])
            lines.append(
                f"{r['sampler']:<22}{r['nfe_budget']:>11}{r['steps']:>7}{r['nfe']:>6}{value:>22}{r['seconds']:>9.2f}"
            )
        return "\n".join(lines)


def format_score(metric: str | None, score: float | None) -> str:
    """A sample-quality score at its precision: accuracies as a percent (one decimal), FID to 2 decimals, else
    4 significant digits."""
    if score is None:
        return "n/a"
    if metric is not None and "accuracy" in metric:
        return f"{100 * score:.1f}%"
    if metric is not None and metric.startswith("FID"):
        return f"{score:.2f}"
    return f"{score:.4g}"


def plot_quality(rows: list[dict[str, Any]], metric: str, path: str | os.PathLike[str]) -> Path:
    """Plot sample quality against NFE, one line per sampler, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["sampler"] for r in rows):
        points = [(r["nfe"], r["score"]) for r in rows if r["sampler"] == name and r["score"] is not None]
        if points:
            ax.plot(*zip(*points), "o-", label=name)
    ax.set_xlabel("NFE (network evaluations)")
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _split(bundle: DataBundle, split: str) -> Dataset:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return getattr(bundle, split)


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    max_examples: int | None = None,
    likelihood: bool = False,
    samplers: list[str] | None = None,
    nfes: list[int] | None = None,
    num_samples: int = 500,
    seed: int = 0,
    device: str = "auto",
    ema: bool = True,
    out_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> EvalReport:
    """Evaluate a training run: NLL on a split, optionally the PF-ODE NLL and sample quality against NFE.

    Args:
        run_dir: the run folder (its ``config.json`` says which data to load).
        split, max_examples: the examples scored (default: the whole test split).
        likelihood: also compute :func:`bfn.likelihood.pf_ode_nll` (tens to hundreds of network calls per example).
        samplers, nfes: sample ``num_samples`` with every sampler at every NFE budget (steps from
            :func:`steps_for_nfe`) and score them with :func:`quality_metric`.
        seed: seeds the NLL noise and the samplers.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        ema: use the EMA weights (default) or the raw ones.
        out_dir: where the quality plot (``quality.png``) and ``eval.json`` go (default: the run folder).
        log: progress messages.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if samplers:
        require_metric(config.data, data_description(run_dir))
    dev = pick_device(device, 0)
    model = BFN.from_pretrained(run_dir, map_location=dev, ema=ema)
    bundle = load_bundle(config)
    dataset = _split(bundle, split)
    count = len(dataset) if max_examples is None else min(max_examples, len(dataset))  # type: ignore[arg-type]
    bpd = evaluate_nll(model, dataset, steps=config.loss_steps, max_examples=count, seed=seed)
    report = EvalReport(split=split, examples=count, nll_bpd=bpd)
    unit = nll_unit(bundle.info)
    log(f"{split} NLL (ELBO, {count} examples): {bpd:.4f} {unit}")
    if likelihood:
        report.pf_ode_bpd = _pf_ode_bpd(model, dataset, count, seed, log=log)
        log(f"{split} NLL (PF-ODE, {count} examples): {report.pf_ode_bpd:.4f} {unit}")
    if samplers:
        metric = quality_metric(config.data, bundle, model.flow, seed)
        report.metric = metric.name if metric else None
        report.higher_is_better = metric.higher_is_better if metric else False
        budgets = nfes or [10]
        for i, name in enumerate(samplers):
            for j, budget in enumerate(budgets):
                log(f"  [{i * len(budgets) + j + 1}/{len(samplers) * len(budgets)}] {name} @ {budget} NFE ...")
                report.rows.append(quality_row(model, name, budget, num_samples, seed, metric))
                row = report.rows[-1]
                log(f"  {name} @ {budget} NFE: {format_score(report.metric, row['score'])} ({row['seconds']:.1f} s)")
        folder = Path(out_dir) if out_dir is not None else run_dir
        folder.mkdir(parents=True, exist_ok=True)
        if metric is not None:
            report.plot = plot_quality(report.rows, metric.name, folder / "quality.png")
        atomic_write_json(folder / "eval.json", json_safe(dataclasses.asdict(report)))
    return report


def _pf_ode_bpd(
    model: BFN,
    dataset: Dataset,
    count: int,
    seed: int,
    batch_size: int = 64,
    log: Callable[[str], None] | None = None,
) -> float:
    from bfn.likelihood import pf_ode_nll

    generator = torch.Generator(device=model.device).manual_seed(derive_seed(seed, "pf-ode"))
    total = 0.0
    started = time.perf_counter()
    for first in range(0, count, batch_size):
        x = torch.stack([dataset[i] for i in range(first, min(first + batch_size, count))]).to(model.device)
        total += float(pf_ode_nll(model, x, generator=generator).nll.sum())
        done = min(first + batch_size, count)
        if log is not None and done < count:
            log(f"  PF-ODE likelihood: {done}/{count} examples ({time.perf_counter() - started:.0f} s)")
    return float(bits_per_dim(total / count, model.data_shape))


def quality_row(
    model: BFN, sampler: str, budget: int, num_samples: int, seed: int, metric: QualityMetric | None
) -> dict[str, Any]:
    """Sample ``num_samples`` with ``sampler`` at ``budget`` network calls (:func:`steps_for_nfe`; seeded by
    ``seed``, the sampler and the budget) and score them: ``sampler``, ``nfe_budget``, ``steps``, ``nfe``,
    ``score`` (``None`` without a metric), ``seconds`` and ``ran``, the sampler that ran (what ``"auto"`` resolved
    to)."""
    steps = steps_for_nfe(sampler, model.flow.kind, budget)
    generator = torch.Generator(device=model.device).manual_seed(derive_seed(seed, "sample", sampler, budget))
    started = time.perf_counter()
    out = model.sample(num_samples, sampler=sampler, steps=steps, generator=generator)
    seconds = time.perf_counter() - started
    score = metric.score(out.samples) if metric is not None else None
    row = {"sampler": sampler, "nfe_budget": budget, "steps": steps, "nfe": out.nfe}
    return {**row, "score": score, "seconds": seconds, "ran": out.sampler}
