"""Shared pieces of the quality benchmarks: the benchmark models, their cached training runs, sampling, metrics.

The benchmark models (:func:`bench_models`) come in three sizes:

* ``quick``: tiny networks trained for a few steps (smoke tests only; the numbers mean nothing);
* ``cpu`` (default): small networks trained for a few thousand steps on a laptop-class CPU;
* ``full``: larger networks and more samples, for a GPU.

Each model is trained once with :func:`bfn.training.train` into ``<runs>/<name>`` and reused on reruns
(:func:`ensure_model`); ``bfn train`` with the options of :func:`train_command` produces the same run. Every quality
number uses a fixed sampling seed, so a rerun on the same machine reproduces it exactly; computed numbers are also
cached in the run folder (``bench-cache.json``, keyed by everything that determines them, including the sha256 of the
EMA weights) so that an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

import bfn
from bfn.sampling import SAMPLERS

Mode = Literal["quick", "cpu", "full"]
MODES: tuple[Mode, ...] = ("quick", "cpu", "full")

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

NFE_GRID: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 1000)
"""Network-evaluation budgets of the quality-vs-NFE sweep."""

SAMPLING_SEED = 0
"""Seed of every sampler run (the same seed for every sampler: common random numbers make comparisons sharper)."""

NLL_SEED = 0
"""Seed of the test-set likelihood bound."""


# ================================================================================================== models


@dataclass(frozen=True)
class BenchModel:
    """One benchmark model: how it is trained and how its samples are scored.

    Attributes:
        name: run-folder name, e.g. ``"digits-continuous"``.
        title: human-readable description for tables and plots.
        train: :class:`bfn.training.TrainConfig` fields (without ``out``).
        num_samples: samples per (sampler, NFE) point.
        sample_batch: samples drawn per ``model.sample`` call (fixed: it is part of what the seed reproduces).
        nll_examples: test examples in the bits/dim estimate (``None``: the whole test split).
        nll_samples: Monte-Carlo draws of the time per example in the bits/dim estimate.
        max_solver_nfe: largest NFE at which the solvers (every sampler but the original ``bfn``) are run; the
            original sampler always runs the whole grid, since it is the reference of the speed-up.
    """

    name: str
    title: str
    train: Mapping[str, Any]
    num_samples: int
    sample_batch: int
    nll_examples: int | None = None
    nll_samples: int = 1
    max_solver_nfe: int = 1000

    @property
    def kind(self) -> str:
        return str(self.train["flow"])

    @property
    def is_text(self) -> bool:
        return self.train["data"] in ("kjv", "text8") or str(self.train["data"]).startswith("text:")

    @property
    def metric(self) -> Metric:
        return SPELLING if self.is_text else FID


def bench_models(mode: Mode = "cpu") -> dict[str, BenchModel]:
    """The four benchmark models of ``mode``: digits continuous, digits discretised (17 bins), binarised digits
    (discrete, K = 2, thresholded at 1/2) and KJV text (discrete, K = 27)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    common = {"seed": 0, "device": "auto", "progress": False}
    if mode == "quick":
        image_net = {"net": "mlp", "net_options": {"hidden": 32, "depth": 1}}
        image = {**common, **image_net, "steps": 3, "batch_size": 32, "val_every": 0, "ckpt_every": 0,
                 "val_examples": 16, "warmup": 1}  # fmt: skip
        text = {
            **common,
            "net": "transformer",
            "net_options": {"width": 16, "depth": 1, "heads": 2},
            "steps": 3,
            "batch_size": 8,
            "seq_len": 16,
            "val_every": 0,
            "ckpt_every": 0,
            "val_examples": 16,
            "warmup": 1,
        }
        sizes = {"num_samples": 24, "sample_batch": 24, "nll_examples": 16}
        text_sizes = {"num_samples": 8, "sample_batch": 8, "nll_examples": 8}
    elif mode == "cpu":
        image_net = {"net": "mlp", "net_options": {"hidden": 512, "depth": 3}}
        image = {**common, **image_net, "steps": 4000, "batch_size": 128, "val_every": 1000, "ckpt_every": 500}
        text = {**common, "net": "transformer", "net_options": {"width": 128, "depth": 3, "heads": 4},
                "steps": 3000, "batch_size": 64, "seq_len": 64, "val_every": 1000, "ckpt_every": 250}  # fmt: skip
        sizes = {"num_samples": 1000, "sample_batch": 500, "nll_samples": 8}
        text_sizes = {"num_samples": 200, "sample_batch": 200, "max_solver_nfe": 200}
    else:
        image_net = {"net": "unet", "net_options": {"base": 64, "channel_mults": [1, 2], "num_res_blocks": 2}}
        image = {**common, **image_net, "steps": 20000, "batch_size": 256, "val_every": 2000, "ckpt_every": 2000}
        text = {**common, "net": "transformer", "net_options": {"width": 512, "depth": 8, "heads": 8},
                "steps": 50000, "batch_size": 128, "seq_len": 256, "val_every": 5000, "ckpt_every": 2000}  # fmt: skip
        sizes = {"num_samples": 5000, "sample_batch": 1000, "nll_samples": 16}
        text_sizes = {"num_samples": 1000, "sample_batch": 250}
    models = [
        BenchModel("digits-continuous", "digits, continuous",
                   {"data": "digits", "flow": "continuous", **image}, **sizes),
        BenchModel("digits-discretised", "digits, discretised (17 bins)",
                   {"data": "digits", "flow": "discretised", "num_bins": 17, **image}, **sizes),
        BenchModel("digits-binary", "binarised digits, discrete (K = 2)",
                   {"data": "digits", "flow": "discrete", "binarize": False, **image}, **sizes),
        BenchModel("kjv", f"KJV text, discrete (K = 27), length {text['seq_len']}",
                   {"data": "kjv", "flow": "discrete", **text}, **text_sizes),
    ]  # fmt: skip
    return {m.name: m for m in models}


def select_models(mode: Mode, names: Sequence[str] | None) -> list[BenchModel]:
    """The benchmark models called ``names`` (all when ``None``), with a clear error for an unknown name."""
    models = bench_models(mode)
    if not names:
        return list(models.values())
    unknown = [n for n in names if n not in models]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list(models)}")
    return [models[n] for n in names]


def default_runs_dir(mode: Mode) -> Path:
    """``runs/bench`` (cpu), ``runs/bench/full`` or ``runs/bench/quick`` under the repository root."""
    base = REPO / "runs" / "bench"
    return base if mode == "cpu" else base / mode


def default_results_dir(mode: Mode) -> Path:
    """``benchmarks/results`` (cpu, committed), ``benchmarks/results/full``, or ``runs/bench/quick/results``."""
    if mode == "quick":
        return default_runs_dir("quick") / "results"
    return RESULTS_DIR if mode == "cpu" else RESULTS_DIR / "full"


def train_config(spec: BenchModel, runs_dir: Path) -> Any:
    """The resolved :class:`bfn.training.TrainConfig` of ``spec`` with its run folder in ``runs_dir``."""
    from bfn.training import TrainConfig

    return TrainConfig.from_dict({**spec.train, "out": str(runs_dir / spec.name)}).resolved()


def train_command(spec: BenchModel, runs_dir: Path) -> str:
    """The ``bfn train`` command line that trains the same run as :func:`ensure_model` (defaults left out)."""
    from bfn.training import TrainConfig

    default = TrainConfig().to_dict()
    values = {**spec.train, "out": display_path(runs_dir / spec.name)}
    args = ["bfn", "train"]
    for key, value in values.items():
        if key == "progress":
            continue
        if key == "net_options":
            args += [f"--net-option={k}={_cli_value(v)}" for k, v in value.items()]
        elif isinstance(value, bool):
            if value:
                args.append(f"--{key.replace('_', '-')}")
        elif value != default.get(key) or key in ("data", "flow", "steps", "out", "seed"):
            args.append(f"--{key.replace('_', '-')}={_cli_value(value)}")
    return " ".join(shlex.quote(a) for a in args)


def _cli_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


@dataclass
class LoadedModel:
    """A trained benchmark model (EMA weights, eval mode) and what identifies its weights."""

    spec: BenchModel
    model: bfn.BFN
    run_dir: Path
    weights_sha256: str
    train_step: int
    canaries: dict[tuple[str, str], str] = field(default_factory=dict)


def ensure_model(
    spec: BenchModel, runs_dir: Path, device: str = "auto", log: Callable[[str], None] = print
) -> LoadedModel:
    """Train ``spec`` into ``runs_dir/<name>`` unless a finished run of the same config is there; load it.

    An interrupted run is resumed. A run folder trained with another config is an error (delete it to retrain).
    """
    from bfn.checkpoint import find_checkpoint, verify_checkpoint
    from bfn.training import RESUMABLE_FIELDS, load_run_config, train

    config = train_config(spec, runs_dir)
    run_dir = Path(config.out)
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is not None:
        stored = load_run_config(run_dir).to_dict()
        wanted = config.to_dict()
        changed = sorted(k for k in wanted if k not in RESUMABLE_FIELDS and wanted[k] != stored.get(k))
        if changed:
            raise SystemExit(
                f"{run_dir} was trained with other settings ({', '.join(changed)}); delete it to retrain "
                f"or pass another --runs-dir"
            )
        step = int(verify_checkpoint(checkpoint)["step"])
        if step < config.steps:
            log(f"resuming {run_dir} from step {step}")
            train(config.replace(resume=True))
    else:
        log(f"training {spec.name} into {run_dir}: {train_command(spec, runs_dir)}")
        train(config)
    checkpoint = find_checkpoint(run_dir)
    assert checkpoint is not None
    state = verify_checkpoint(checkpoint)
    target = resolve_device(device)
    model = bfn.BFN.from_pretrained(run_dir, map_location=target)
    return LoadedModel(spec, model, run_dir, state["files"]["ema.safetensors"]["sha256"], int(state["step"]))


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_threads(threads: int | None) -> None:
    """Fix torch's CPU thread count (``None`` keeps torch's choice)."""
    if threads is not None:
        torch.set_num_threads(threads)


# ================================================================================================== samplers


@dataclass(frozen=True)
class Variant:
    """A sampler with fixed options, as one line of a table or plot."""

    label: str
    sampler: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_original(self) -> bool:
        return self.sampler == "bfn"

    def nfe(self, steps: int) -> int:
        """Network calls of ``steps`` steps (with the default ``final="drop"``)."""
        return SAMPLERS[self.sampler].nfe(steps)

    def steps_for(self, nfe: int) -> int | None:
        """The number of steps that makes exactly ``nfe`` network calls, or ``None`` if none does."""
        try:
            return SAMPLERS[self.sampler].steps_for_nfe(nfe, exact=True)
        except ValueError:
            return None

    def steps_at_most(self, nfe: int) -> int | None:
        """The most steps within ``nfe`` network calls (``None`` if even one step costs more)."""
        try:
            return SAMPLERS[self.sampler].steps_for_nfe(nfe)
        except ValueError:
            return None


LOGSNR_SOLVERS: dict[str, tuple[str, ...]] = {
    "continuous": ("bfn-solver++2", "bfn-solver++3", "sde-bfn-solver++2"),
    "discretised": ("bfn-solver++2", "bfn-solver++3", "sde-bfn-solver++2"),
    "discrete": ("bfn-solver2", "bfn-solver3", "sde-bfn-solver2"),
}
"""Multistep solvers that the sweep also runs on a second grid (:data:`SECOND_GRID`)."""

SECOND_GRID: dict[str, str] = {"continuous": "logsnr", "discretised": "logsnr", "discrete": "tuned"}
"""The second grid per kind: uniform in log-SNR; for discrete data, which refuses it, the tuned grid."""


def sampler_variants(kind: str, logsnr: bool = True) -> list[Variant]:
    """Every registered sampler applicable to ``kind``, with default options (h-solver: ``h = 0.5``, order 2).

    For discrete data the original sampler also appears with ``categorical=False`` (its mean-guess form, which is
    exactly SDE-BFN-Solver1, Xue et al. Prop. 5.3). With ``logsnr`` the main multistep solvers
    (:data:`LOGSNR_SOLVERS`) appear a second time on the grid uniform in log-SNR instead of the paper's grid uniform
    in ``t`` (discrete data: on the tuned grid, see :data:`SECOND_GRID`).
    """
    out = []
    for name, spec in SAMPLERS.items():
        if kind not in spec.kinds:
            continue
        if name == "h-solver":
            defaults = {key: spec.defaults()[key] for key in ("h", "order")}
            out.append(Variant(f"h-solver (h={defaults['h']}, order {defaults['order']})", name, defaults))
        else:
            out.append(Variant(name, name))
        if name == "bfn" and kind == "discrete":
            out.append(Variant("bfn (categorical=False)", name, {"categorical": False}))
    if logsnr:
        grid = SECOND_GRID[kind]
        out += [Variant(f"{name} ({grid} grid)", name, {"grid": grid}) for name in LOGSNR_SOLVERS[kind]]
    return out


def generate(
    model: bfn.BFN, variant: Variant, steps: int, num_samples: int, batch: int, seed: int = SAMPLING_SEED
) -> tuple[Tensor, int]:
    """``num_samples`` samples of ``variant`` in ``steps`` steps, drawn in batches of ``batch`` from one generator
    seeded with ``seed``; returns the samples (on the CPU) and the NFE per sample (counted by the sampler)."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    chunks, nfe = [], None
    for first in range(0, num_samples, batch):
        size = min(batch, num_samples - first)
        out = model.sample(size, sampler=variant.sampler, steps=steps, generator=generator, **variant.options)
        if nfe is not None and out.nfe != nfe:
            raise RuntimeError(f"{variant.label}: NFE changed between batches ({nfe} -> {out.nfe})")
        nfe = out.nfe
        chunks.append(out.samples.cpu())
    assert nfe is not None
    return torch.cat(chunks), nfe


# ================================================================================================== metrics


@dataclass(frozen=True)
class Metric:
    """A sample-quality metric: its table label and whether larger is better."""

    label: str
    higher_is_better: bool

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is at least as good as ``b``."""
        return a >= b if self.higher_is_better else a <= b

    def best(self, values: Iterable[float]) -> float:
        values = list(values)
        return max(values) if self.higher_is_better else min(values)


FID = Metric("FID-digits", higher_is_better=False)
SPELLING = Metric("spelling accuracy (%)", higher_is_better=True)


def as_images(samples: Tensor, kind: str) -> Tensor:
    """Samples (or data items) as float images in [-1, 1]: discrete K = 2 classes map to -1 / +1."""
    if kind == "discrete":
        return samples.to(torch.float32) * 2.0 - 1.0
    return samples.to(torch.float32).clamp(-1.0, 1.0)


class Scorer:
    """Scores a set of samples of one benchmark model.

    Images: FID-digits (Frechet distance on the features of the classifier that ``bfn.metrics`` ships for the
    digits data, *not* Inception FID) against the validation + test images. Text: spelling accuracy in %
    (``bfn.metrics.spelling_accuracy``: share of space-separated words hunspell en_US accepts).
    """

    def __init__(self, spec: BenchModel, device: torch.device | None = None) -> None:
        from bfn.training import load_bundle

        self.spec = spec
        self.metric = spec.metric
        self.bundle = load_bundle(train_config(spec, Path("unused")))
        self._reference: Any = None
        if not spec.is_text:
            from bfn.metrics import FeatureFID, load_feature_extractor

            extractor = load_feature_extractor("digits")
            if device is not None:
                extractor = extractor.to(device)
            self._reference = FeatureFID(extractor)
            self._reference.update(self.reference_images(), reference=True)
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        """The metric of a fixed input (the first 64 validation images / 8 test texts): enters the cache keys, so a
        change of the metric code or the reference data invalidates cached numbers."""
        if self.spec.is_text:
            return repr(self(self._split("test", 8)))
        return repr(self(self._split("val", 64)))

    def _split(self, name: str, limit: int | None = None) -> Tensor:
        data = getattr(self.bundle, name)
        count = len(data) if limit is None else min(limit, len(data))
        return torch.stack([data[i] for i in range(count)])

    def reference_images(self) -> Tensor:
        """Validation + test images in [-1, 1] (the FID reference set)."""
        return as_images(torch.cat([self._split("val"), self._split("test")]), self.spec.kind)

    def __call__(self, samples: Tensor) -> float:
        if self.spec.is_text:
            from bfn.data import decode_text
            from bfn.metrics import spelling_accuracy

            return 100.0 * spelling_accuracy(decode_text(samples))
        self._reference.reset(keep_reference=True)
        self._reference.update(as_images(samples, self.spec.kind), reference=False)
        return self._reference.compute()

    def data_score(self, num: int) -> float:
        """The metric of real data: training images against the reference (FID), or test text (spelling)."""
        if self.spec.is_text:
            return self(self._split("test", num))
        torch.manual_seed(0)  # dynamic binarisation (not used by the benchmark models) draws from the global RNG
        return self(self._split("train", num))


def test_bits_per_dim(loaded: LoadedModel, scorer: Scorer) -> float:
    """Test-set NLL bound (``model.nll``: ``L_inf + L_r``) in bits per dimension (bits per character for text)."""
    from bfn.training import evaluate_nll

    spec = loaded.spec
    return evaluate_nll(
        loaded.model, scorer.bundle.test, max_examples=spec.nll_examples, seed=NLL_SEED, samples=spec.nll_samples
    )


# ================================================================================================== cache


class ResultCache:
    """Computed numbers of one run folder, keyed by everything that determines them (a JSON file)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self.values: dict[str, Any] = {}
        if enabled and path.is_file():
            self.values = json.loads(path.read_text())

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        if self.enabled and key in self.values:
            return self.values[key]
        value = compute()
        self.values[key] = value
        if self.enabled:
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.values, indent=1, sort_keys=True))
            tmp.replace(self.path)
        return value


def cache_key(loaded: LoadedModel, *parts: Any) -> str:
    """A cache key: the weights' sha256 prefix, the device type and ``parts``."""
    return json.dumps([loaded.weights_sha256[:16], loaded.model.device.type, *parts], sort_keys=True, default=str)


def _digest(*tensors: Tensor) -> str:
    import hashlib

    h = hashlib.sha256()
    for tensor in tensors:
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def sampler_canary(loaded: LoadedModel, variant: Variant) -> str:
    """Fingerprint of what the library computes for ``variant``: the bytes of a tiny fixed-seed run (4 samples,
    3 steps). It enters the cache keys, so a change of the library's numerics invalidates cached numbers (and a
    change of its wording does not)."""
    key = (variant.sampler, json.dumps(dict(variant.options), sort_keys=True))
    if key not in loaded.canaries:
        generator = torch.Generator(device=loaded.model.device).manual_seed(12345)
        out = loaded.model.sample(4, sampler=variant.sampler, steps=3, generator=generator, **variant.options)
        loaded.canaries[key] = _digest(out.samples, out.state)
    return loaded.canaries[key]


def nll_canary(loaded: LoadedModel, scorer: Scorer) -> str:
    """Fingerprint of the likelihood code: ``model.nll`` of 4 test examples with a fixed generator."""
    x = scorer._split("test", 4).to(loaded.model.device)
    generator = torch.Generator(device=loaded.model.device).manual_seed(12345)
    with torch.no_grad():
        return _digest(loaded.model.nll(x, generator=generator))


# ================================================================================================== reporting


def format_value(value: float | None, metric: Metric) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.1f}" if metric is SPELLING else f"{value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_description() -> str:
    """CPU model, core count, torch version and threads (and the GPU, if any)."""
    import platform

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")


def add_common_arguments(parser: Any) -> None:
    """The options every quality benchmark shares."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="GPU sizes: larger networks, more samples")
    size.add_argument("--quick", action="store_true", help="tiny models and few samples (smoke test)")
    parser.add_argument("--models", nargs="*", metavar="NAME", help="benchmark models (default: all four)")
    parser.add_argument("--runs-dir", type=Path, help="where the trained runs live (default runs/bench[/MODE])")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results[/full])")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--recompute", action="store_true", help="ignore numbers cached in the run folders")


def mode_of(args: Any) -> Mode:
    return "full" if args.full else "quick" if args.quick else "cpu"
