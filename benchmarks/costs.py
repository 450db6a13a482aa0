"""What BFN costs on top of the network: training-step time, sampler time per step and peak memory.

    python benchmarks/costs.py              # the CPU-sized benchmark networks (random weights; no training needed)
    python benchmarks/costs.py --full       # the GPU-sized benchmark networks (use a GPU)
    python benchmarks/costs.py --profile    # also print the torch.profiler tables of the BFN-only work
    python benchmarks/costs.py --quick      # smoke test
    python benchmarks/costs.py --images --threads 1   # discretised 3x32x32 images, K = 16/64/256, reference U-Net

The cases are the networks of the quality benchmarks (``benchlib.bench_models``): an MLP for the three digits models
and a Transformer for KJV text, with their training batch and their sampling batch. Two measurements per cost:

* *direct*: training overhead = time(``model.loss(x)`` forward + backward) / time(bare network forward + backward on
  inputs of the same shape) - 1 (target <= 5%); sampler overhead = (time of ``model.sample`` - NFE x time of one
  network call) / (NFE x time of one call) (target <= 2% per step). The two timings alternate (ABAB...) and the
  medians are compared, but on a shared machine the network's own time jitters by more than the overhead;
* *isolated*: the same loss step and sampler with the network replaced by a stub that returns a fixed output of the
  right shape (a learnable tensor for training, so the loss still back-propagates), i.e. exactly the work BFN adds;
  overhead = stub time / network time. This one is robust to noise and is the number to quote.

On the CPU the timer is the process's CPU time (``--clock auto``), which other processes on the same cores do not
inflate; run with ``--threads 1`` so that no worker thread spins while it waits.

Peak memory: what one step (or one sampler run) adds on top of the memory in use before it: on CUDA the allocator's
peak, on the CPU the peak resident set size after resetting it (Linux ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import bfn
from benchlib import (
    BenchModel,
    bench_models,
    default_results_dir,
    machine_description,
    markdown_table,
    resolve_device,
    set_threads,
)
from bfn.nets import build_net

LOSS_TARGET = 0.05
SAMPLER_TARGET = 0.02


# ================================================================================================== cases


@dataclass(frozen=True)
class Case:
    """A network, its flow and data shape, and the batch sizes of training and sampling."""

    name: str
    flow: bfn.Flow
    net: str
    net_options: dict[str, Any]
    data_shape: tuple[int, ...]
    train_batch: int
    sample_batch: int
    samplers: tuple[str, ...]


def case_from_spec(spec: BenchModel, sample_batch: int | None = None) -> Case:
    """The cost case of a benchmark model: same flow, network and batch sizes (random weights)."""
    from bfn.training import TrainConfig

    cfg = TrainConfig.from_dict(dict(spec.train)).resolved()
    if spec.is_text:
        data_shape: tuple[int, ...] = (cfg.seq_len,)
        flow: bfn.Flow = bfn.DiscreteFlow(27, cfg.beta_1)
    else:
        data_shape = (1, 8, 8)
        if cfg.flow == "continuous":
            flow = bfn.ContinuousFlow(cfg.sigma_1)
        elif cfg.flow == "discretised":
            flow = bfn.DiscretisedFlow(cfg.num_bins or 17, cfg.sigma_1)
        else:
            flow = bfn.DiscreteFlow(2, cfg.beta_1)
    if flow.kind == "discrete":
        samplers = ("bfn", "bfn-solver2", "sde-bfn-solver2")
    else:
        samplers = ("bfn", "bfn-solver++2", "sde-bfn-solver++2")
    return Case(
        name=spec.name,
        flow=flow,
        net=str(cfg.net),
        net_options=dict(cfg.net_options or {}),
        data_shape=data_shape,
        train_batch=cfg.batch_size,
        sample_batch=sample_batch or spec.sample_batch,
        samplers=samplers,
    )


def cases(mode: str) -> list[Case]:
    return [case_from_spec(spec) for spec in bench_models(mode).values()]  # type: ignore[arg-type]


def build(case: Case, device: torch.device) -> tuple[bfn.BFN, Tensor]:
    """A freshly initialised model of ``case`` and a random batch of valid training data."""
    torch.manual_seed(0)
    net = build_net(case.net, case.data_shape, case.flow.input_channels, case.flow.output_channels, **case.net_options)
    model = bfn.BFN(net.to(device), case.flow, case.data_shape)
    shape = (case.train_batch, *case.data_shape)
    flow = case.flow
    if flow.kind == "discrete":
        x = torch.randint(0, flow.num_classes, shape, device=device)  # type: ignore[attr-defined]
    else:
        x = torch.rand(shape, device=device) * 2 - 1
        x = flow.quantize(x) if flow.kind == "discretised" else x  # type: ignore[attr-defined]
    return model, x


class StubNet(nn.Module):
    """Stands in for the network: returns a fixed output of the right shape (learnable, so losses back-propagate).

    Its own cost is one broadcast (and its gradient), so a BFN step with it costs what BFN adds to the network.
    """

    def __init__(self, output_shape: tuple[int, ...], device: torch.device) -> None:
        super().__init__()
        self.out = nn.Parameter(0.01 * torch.randn(output_shape, device=device))

    def forward(self, inputs: Tensor, t: Tensor) -> Tensor:
        return self.out.expand(inputs.shape[0], *self.out.shape).clone()  # contiguous, like a real output


def stub_model(model: bfn.BFN) -> bfn.BFN:
    """``model`` with its network replaced by a :class:`StubNet`."""
    return bfn.BFN(StubNet(model.flow.output_shape(model.data_shape), model.device), model.flow, model.data_shape)


# ================================================================================================== timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCK: Callable[[], float] = time.perf_counter


def use_clock(kind: str, device: torch.device) -> str:
    """Select the timer: ``wall`` (``perf_counter``) or ``cpu`` (this process's CPU time, ``process_time``).

    ``auto`` is CPU time on the CPU (robust to other processes sharing the cores; use ``--threads 1`` so that no
    thread spins while waiting) and wall time on a GPU.
    """
    global CLOCK
    if kind == "auto":
        kind = "wall" if device.type == "cuda" else "cpu"
    CLOCK = time.process_time if kind == "cpu" else time.perf_counter
    return kind


def alternate(fns: Sequence[Callable[[], object]], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    """Median time (s, see :func:`use_clock`) of each of ``fns``, timed in turn (ABAB...) so that drifting load
    hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync(device)
            start = CLOCK()
            fn()
            sync(device)
            times[i].append(CLOCK() - start)
    return [statistics.median(t) for t in times]


def bare_step(model: bfn.BFN, x: Tensor) -> Callable[[], None]:
    """Network forward + backward on inputs of the state's shape (what any trainer of this network pays)."""
    state = model.flow.prior_state(x.shape[0], model.data_shape, torch.float32, x.device)
    inputs = model.flow.net_input(state + 0.1 * torch.randn_like(state))
    tau = torch.rand(x.shape[0], device=x.device)

    def run() -> None:
        model.net.zero_grad(set_to_none=True)
        model.net(inputs, tau).square().mean().backward()

    return run


def bfn_step(model: bfn.BFN, x: Tensor) -> Callable[[], None]:
    """``model.loss(x)`` forward + backward (continuous-time loss, as in training)."""

    def run() -> None:
        model.net.zero_grad(set_to_none=True)
        model.loss(x).backward()

    return run


def net_call(model: bfn.BFN, batch: int) -> Callable[[], None]:
    """One network call under ``no_grad`` on a sampling batch."""
    state = model.flow.prior_state(batch, model.data_shape, torch.float32, model.device)
    inputs = model.flow.net_input(state + 0.1 * torch.randn_like(state))
    tau = torch.full((batch,), 0.5, device=model.device)

    def run() -> None:
        with torch.no_grad():
            model.net(inputs, tau)

    return run


def sampler_run(model: bfn.BFN, batch: int, sampler: str, steps: int) -> Callable[[], None]:
    generator = torch.Generator(device=model.device)

    def run() -> None:
        generator.manual_seed(0)
        model.sample(batch, sampler=sampler, steps=steps, generator=generator)

    return run


# ================================================================================================== memory


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def peak_memory(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory (MiB) that one call of ``fn`` adds on top of what was allocated before it (second call measured).

    CUDA: the allocator's peak. CPU (Linux): the peak resident set size after resetting it (``/proc/self/clear_refs``
    = 5) and returning freed heap memory to the system (``malloc_trim``); ``None`` where that is unavailable.
    """
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        before = _proc_status_kib("VmRSS")
        fn()
        return (_proc_status_kib("VmHWM") - before) / 1024
    except OSError:
        return None


# ================================================================================================== profiling


def profile(fn: Callable[[], object], title: str, rows: int = 12) -> str:
    """The torch.profiler table (self CPU time) of three calls of ``fn``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            fn()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return f"--- {title}\n{table}"


# ================================================================================================== images

IMAGE_SHAPE = (3, 32, 32)
IMAGE_SAMPLERS = ("bfn", "bfn-solver++2", "sde-bfn-solver++2", "h-solver")
IMAGE_LOSS_TARGET = {16: 0.05, 64: 0.25, 256: 0.25}  # BFN-only loss work / bare U-Net step
IMAGE_SAMPLER_TARGET = 0.05  # BFN-only work per sampler step / one network call
IMAGE_MEMORY_TARGET = 1.5  # peak added by sampling 256 images (stub network) / the bare network call's


def image_model(num_bins: int, device: torch.device) -> bfn.BFN:
    """The reference U-Net of :mod:`bfn.nets` (default options) on discretised 3x32x32 images with ``K`` bins."""
    torch.manual_seed(0)
    net = build_net("unet", IMAGE_SHAPE, 1, 2)
    return bfn.BFN(net.to(device), bfn.DiscretisedFlow(num_bins, 1e-3), IMAGE_SHAPE)


def image_data(model: bfn.BFN, batch: int, device: torch.device) -> Tensor:
    flow = model.flow
    return flow.quantize(torch.rand((batch, *IMAGE_SHAPE), device=device) * 2 - 1)  # type: ignore[attr-defined]


def measure_images(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """K = 16, 64, 256 with the U-Net: ratios of BFN-only work (stub network) to the network's own, interleaved.

    Per K, one :func:`alternate` run times, in turn: the bare U-Net step (forward + backward, batch ``B``), the
    stub-network loss step, one bare network call (no grad) and each sampler with the stub network; then the
    scaling of the stub loss step in K and batch, and the peak memory of sampling 256 images.
    """
    batch, steps = args.image_batch, args.steps
    rows = []
    for num_bins in args.bins:
        model = image_model(num_bins, device)
        stub = stub_model(model)
        x = image_data(model, batch, device)
        fns = [bare_step(model, x), bfn_step(stub, x), net_call(model, batch)]
        fns += [sampler_run(stub, batch, name, steps) for name in IMAGE_SAMPLERS]
        if args.compile:  # the stub model's loss with BFN.compile_core (compiled during the warm-up)
            fns.append(bfn_step(stub_model(model).compile_core(), x))
        times = alternate(fns, device, args.image_repeats, warmup=1)
        t_net, t_loss, t_call = times[0], times[1], times[2]
        t_samplers = times[3 : 3 + len(IMAGE_SAMPLERS)]
        nfe = {name: model.sample(1, sampler=name, steps=steps).nfe for name in IMAGE_SAMPLERS}
        row: dict[str, Any] = {
            "num_bins": num_bins,
            "batch": batch,
            "net_step_ms": 1e3 * t_net,
            "bfn_loss_ms": 1e3 * t_loss,
            "loss_overhead": t_loss / t_net,
            "net_call_ms": 1e3 * t_call,
            "samplers": {
                name: {"nfe": nfe[name], "bfn_ms_per_call": 1e3 * t / nfe[name], "overhead": t / (nfe[name] * t_call)}
                for name, t in zip(IMAGE_SAMPLERS, t_samplers, strict=True)
            },
        }
        if args.compile:
            row["bfn_loss_compiled_ms"] = 1e3 * times[-1]
            row["loss_overhead_compiled"] = times[-1] / t_net
        rows.append(row)
        print(
            f"K={num_bins}: loss {100 * row['loss_overhead']:+.1f}% of the U-Net step; "
            + ", ".join(f"{n} {100 * v['overhead']:+.2f}%" for n, v in row["samplers"].items()),
            flush=True,
        )
    result: dict[str, Any] = {"rows": rows, "scaling": image_scaling(args, device)}
    if args.image_memory:
        result["memory"] = image_memory(device)
    return result


def image_scaling(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """BFN-only loss step (stub network) per element, for K in 2 .. 1024 and several batches, interleaved."""
    cases = [(k, args.image_batch) for k in (2, 16, 64, 256, 1024)] + [(256, b) for b in (4, 64)]
    fns = []
    for num_bins, batch in cases:
        stub = stub_model(image_model(num_bins, device))
        fns.append(bfn_step(stub, image_data(stub, batch, device)))
    times = alternate(fns, device, args.image_repeats, warmup=1)
    elements = math.prod(IMAGE_SHAPE)
    return [
        {"num_bins": k, "batch": b, "bfn_loss_ms": 1e3 * t, "ns_per_element": 1e9 * t / (b * elements)}
        for (k, b), t in zip(cases, times, strict=True)
    ]


def image_memory(device: torch.device, batch: int = 256, num_bins: int = 256) -> dict[str, Any]:
    """Peak memory of one bare network call on ``batch`` images and of each sampler (2 steps) with the stub network."""
    model = image_model(num_bins, device)
    stub = stub_model(model)
    out: dict[str, Any] = {
        "batch": batch,
        "num_bins": num_bins,
        "net_call_mib": peak_memory(net_call(model, batch), device),
    }
    out["loss_step_net_mib"] = peak_memory(bare_step(model, image_data(model, 16, device)), device)
    out["loss_step_bfn_mib"] = peak_memory(bfn_step(stub, image_data(stub, 16, device)), device)
    out["samplers_mib"] = {name: peak_memory(sampler_run(stub, batch, name, 2), device) for name in IMAGE_SAMPLERS}
    return out


def images_markdown(result: dict[str, Any], machine: str, command: str) -> str:
    def pct(v: float) -> str:
        return f"{100 * v:+.1f}%"

    header = ["K", "U-Net step (ms)", "BFN loss work (ms)", "loss overhead", "net call (ms)"]
    header += [f"`{n}` per step" for n in IMAGE_SAMPLERS]
    body = []
    for r in result["rows"]:
        cells = [str(r["num_bins"]), f"{r['net_step_ms']:.0f}", f"{r['bfn_loss_ms']:.1f}", pct(r["loss_overhead"])]
        cells.append(f"{r['net_call_ms']:.0f}")
        cells += [f"{pct(v['overhead'])} ({v['bfn_ms_per_call']:.2f} ms)" for v in r["samplers"].values()]
        body.append(cells)
    compiled = [
        f"K = {r['num_bins']}: {r['bfn_loss_compiled_ms']:.1f} ms ({pct(r['loss_overhead_compiled'])})"
        for r in result["rows"]
        if "bfn_loss_compiled_ms" in r
    ]
    scaling = [
        [str(r["num_bins"]), str(r["batch"]), f"{r['bfn_loss_ms']:.1f}", f"{r['ns_per_element']:.0f}"]
        for r in result["scaling"]
    ]
    lines = [
        "# Costs: discretised images",
        "",
        f"Machine: {machine}. Command: `{command}`.",
        "",
        "3x32x32 discretised data, the reference U-Net (`build_net('unet', (3, 32, 32), 1, 2)`), batch "
        f"{result['rows'][0]['batch']}; BFN's own work isolated with a constant stub network; medians of "
        "interleaved runs. Loss overhead = stub loss step (forward + backward) / bare U-Net step (targets: "
        f"{', '.join(f'K = {k}: {100 * v:.0f}%' for k, v in IMAGE_LOSS_TARGET.items())}); sampler overhead = "
        f"stub sampler time per network call / one bare network call (target {100 * IMAGE_SAMPLER_TARGET:.0f}%).",
        "",
        markdown_table(header, body),
        "",
    ]
    if compiled:
        lines += ["BFN's loss work with `BFN.compile_core()` (stub network): " + "; ".join(compiled) + ".", ""]
    lines += [
        "Scaling of the stub loss step in K and batch (O(1) per element):",
        "",
        markdown_table(["K", "batch", "BFN loss work (ms)", "ns per element"], scaling),
        "",
    ]
    memory = result.get("memory")
    if memory:
        net = memory["net_call_mib"]
        cells = [f"`{n}`: {m:.0f} MiB" for n, m in memory["samplers_mib"].items()]
        lines += [
            f"Peak memory, {memory['batch']} images at K = {memory['num_bins']}: one bare network call "
            f"{net:.0f} MiB; sampling with the stub network (BFN's own memory, 2 steps): " + ", ".join(cells) + ". "
            f"Loss step at batch 16: U-Net forward + backward {memory['loss_step_net_mib']:.0f} MiB, BFN's own "
            f"{memory['loss_step_bfn_mib']:.0f} MiB.",
            "",
        ]
    return "\n".join(lines)


# ================================================================================================== main


def measure_case(case: Case, args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Any], list[str]]:
    model, x = build(case, device)
    stub = stub_model(model)
    t_net, t_loss, t_stub = alternate(
        [bare_step(model, x), bfn_step(model, x), bfn_step(stub, x)], device, args.repeats
    )
    row: dict[str, Any] = {
        "case": case.name,
        "net": f"{case.net} {case.net_options}",
        "train_batch": case.train_batch,
        "net_ms": 1e3 * t_net,
        "loss_ms": 1e3 * t_loss,
        "bfn_only_ms": 1e3 * t_stub,
        "loss_overhead_direct": t_loss / t_net - 1,
        "loss_overhead": t_stub / t_net,
        "mem_net_mib": peak_memory(bare_step(model, x), device),
        "mem_loss_mib": peak_memory(bfn_step(model, x), device),
        "sample_batch": case.sample_batch,
        "samplers": [],
    }
    profiles = []
    if args.profile:
        profiles.append(profile(bfn_step(stub, x), f"{case.name}: model.loss with a stub network (BFN-only work)"))
    call = net_call(model, case.sample_batch)
    row["mem_call_mib"] = peak_memory(call, device)
    for sampler in case.samplers:
        nfe = model.sample(1, sampler=sampler, steps=args.steps).nfe
        t_call, t_sample = alternate(
            [call, sampler_run(model, case.sample_batch, sampler, args.steps)],
            device,
            args.sample_repeats,
            warmup=1,
        )
        (t_stub_sample,) = alternate([sampler_run(stub, case.sample_batch, sampler, args.steps)], device, 5, warmup=1)
        row["samplers"].append(
            {
                "sampler": sampler,
                "steps": args.steps,
                "nfe": nfe,
                "call_ms": 1e3 * t_call,
                "sample_ms": 1e3 * t_sample,
                "bfn_only_ms_per_call": 1e3 * t_stub_sample / nfe,
                "overhead_direct": (t_sample - nfe * t_call) / (nfe * t_call),
                "overhead": t_stub_sample / (nfe * t_call),
                "mem_mib": peak_memory(sampler_run(model, case.sample_batch, sampler, args.steps), device),
            }
        )
        if args.profile:
            profiles.append(
                profile(
                    sampler_run(stub, case.sample_batch, sampler, args.steps),
                    f"{case.name}: {sampler}, {args.steps} steps, stub network (BFN-only work)",
                )
            )
    return row, profiles


def markdown(rows: list[dict[str, Any]], machine: str, command: str) -> str:
    def mib(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    def pct(v: float) -> str:
        return f"{100 * v:+.1f}%"

    def ok(v: float, target: float) -> str:
        return "yes" if v <= target else "**no**"

    train_rows = [
        [
            f"{r['case']} ({r['net']}, B={r['train_batch']})",
            f"{r['net_ms']:.2f}",
            f"{r['loss_ms']:.2f}",
            pct(r["loss_overhead_direct"]),
            f"{r['bfn_only_ms']:.2f}",
            pct(r["loss_overhead"]),
            ok(r["loss_overhead"], LOSS_TARGET),
            f"{mib(r['mem_net_mib'])} / {mib(r['mem_loss_mib'])}",
        ]
        for r in rows
    ]
    sample_rows = [
        [
            f"{r['case']} (B={r['sample_batch']})",
            f"`{s['sampler']}`",
            f"{s['steps']} / {s['nfe']}",
            f"{s['call_ms']:.2f}",
            f"{s['sample_ms']:.1f}",
            pct(s["overhead_direct"]),
            f"{s['bfn_only_ms_per_call']:.3f}",
            pct(s["overhead"]),
            ok(s["overhead"], SAMPLER_TARGET),
            f"{mib(r['mem_call_mib'])} / {mib(s['mem_mib'])}",
        ]
        for r in rows
        for s in r["samplers"]
    ]
    return "\n".join(
        [
            "# Costs",
            "",
            f"Machine: {machine}. Command: `{command}`.",
            "",
            f"Training step (target: BFN overhead <= {100 * LOSS_TARGET:.0f}%); times are medians in ms:",
            "",
            markdown_table(
                [
                    "case",
                    "net fwd+bwd",
                    "model.loss fwd+bwd",
                    "overhead (direct)",
                    "BFN-only (stub net)",
                    "overhead (isolated)",
                    "target met",
                    "peak MiB net / loss",
                ],
                train_rows,
            ),
            "",
            f"Sampling (target: BFN overhead <= {100 * SAMPLER_TARGET:.0f}% of a network call per step):",
            "",
            markdown_table(
                [
                    "case",
                    "sampler",
                    "steps / NFE",
                    "net call (ms)",
                    "sample (ms)",
                    "overhead (direct)",
                    "BFN-only ms per call (stub net)",
                    "overhead (isolated)",
                    "target met",
                    "peak MiB call / sample",
                ],
                sample_rows,
            ),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="GPU-sized benchmark networks")
    size.add_argument("--quick", action="store_true", help="tiny networks, few repeats (smoke test)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=20, help="solver steps for the sampler timing (default 20)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of a training step (default 20)")
    parser.add_argument("--sample-repeats", type=int, default=3, help="timed repeats of a sampler run (default 3)")
    parser.add_argument("--models", nargs="*", metavar="NAME", help="benchmark models (default: all four)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables of the BFN-only work")
    parser.add_argument("--images", action="store_true", help="only the discretised 3x32x32 U-Net cases")
    parser.add_argument("--bins", type=int, nargs="+", default=[16, 64, 256], help="K of the image cases")
    parser.add_argument("--compile", action="store_true", help="image cases: also time the compiled stub loss")
    parser.add_argument("--image-batch", type=int, default=16, help="batch of the image cases (default 16)")
    parser.add_argument("--image-repeats", type=int, default=5, help="timed repeats of the image cases (default 5)")
    parser.add_argument(
        "--no-image-memory", dest="image_memory", action="store_false", help="skip the 256-image memory peaks"
    )
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results[/full])")
    parser.add_argument(
        "--clock",
        choices=["auto", "cpu", "wall"],
        default="auto",
        help="timer: process CPU time or wall time (default auto: CPU time on the CPU, wall time on a GPU)",
    )
    args = parser.parse_args(argv)
    set_threads(args.threads)
    mode = "full" if args.full else "quick" if args.quick else "cpu"
    if args.quick:
        args.repeats, args.sample_repeats, args.steps = min(args.repeats, 3), 1, min(args.steps, 3)
    device = resolve_device(args.device)
    clock = use_clock(args.clock, device)
    out_dir = args.out or default_results_dir(mode)
    machine = f"{machine_description()}; timer: {'process CPU time' if clock == 'cpu' else 'wall time'}"
    command = "python benchmarks/costs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{machine}; device {device}", flush=True)
    if args.images:
        if args.quick:
            args.bins, args.image_repeats, args.image_memory = [16], 1, False
        result = measure_images(args, device)
        text = images_markdown(result, machine, command.strip())
        print(text)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "costs_images.md").write_text(text)
        payload = {"machine": machine, "command": command, **result}
        (out_dir / "costs_images.json").write_text(json.dumps(payload, indent=1))
        return 0
    rows, profiles = [], []
    for case in cases(mode):
        if args.models and case.name not in args.models:
            continue
        row, case_profiles = measure_case(case, args, device)
        rows.append(row)
        profiles += case_profiles
        print(
            f"{case.name}: loss overhead {100 * row['loss_overhead']:+.1f}% isolated "
            f"({100 * row['loss_overhead_direct']:+.1f}% direct); "
            + ", ".join(
                f"{s['sampler']} {100 * s['overhead']:+.2f}% ({100 * s['overhead_direct']:+.1f}% direct)"
                for s in row["samplers"]
            ),
            flush=True,
        )
    text = markdown(rows, machine, command.strip())
    print(text)
    for block in profiles:
        print(block)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "costs.md").write_text(text)
    (out_dir / "costs.json").write_text(json.dumps({"machine": machine, "command": command, "rows": rows}, indent=1))
    if profiles:
        (out_dir / "costs_profile.txt").write_text("\n".join(profiles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
