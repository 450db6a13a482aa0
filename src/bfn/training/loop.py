"""The training loop: :func:`train`, the EMA of the weights, signals, progress and the run's checkpoints.

:func:`train` runs AdamW with a linear learning-rate warm-up, gradient clipping, an exponential moving average
(:class:`EMA`) of the weights, validation NLL (bits/dim, with the EMA weights) at intervals, optional mixed precision
(``torch.autocast``: bf16, or fp16 with a gradient scaler), a tqdm progress bar with loss and ETA (or, off a
terminal, a line every :data:`PROGRESS_SECONDS`), the CSV log and loss plot of :mod:`bfn.training.logs`, and
atomic checkpoints (:func:`bfn.checkpoint.save_checkpoint`) every ``ckpt_every`` steps, at the end, and when
SIGINT/SIGTERM arrives (the loop finishes the current step, checkpoints and returns).
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bfn._runs import check_finite_step, check_resume_state, clear_run_folder
from bfn.checkpoint import CONFIG_FILE, atomic_write_json, load_checkpoint, save_checkpoint
from bfn.model import BFN
from bfn.nets import net_spec
from bfn.training.config import (
    TrainConfig,
    check_amp_device,
    check_out_folder,
    check_resumable,
    json_safe,
    load_bundle,
    load_run_config,
    nll_unit,
)
from bfn.training.distributed import DistContext, GlobalBatchLoss, GlobalBatchSampler, derive_seed, endless_batches
from bfn.training.evaluation import evaluate_nll
from bfn.training.logs import LOG_FILE, PLOT_FILE, RunLog, plot_losses, read_log

__all__ = ["EMA", "LabelledItems", "StepInfo", "TrainResult", "train"]

#: without a progress bar (off a terminal), training prints a progress line at least this often (seconds)
PROGRESS_SECONDS = 60.0


class LabelledItems(Dataset):
    """Items ``(x, y)``: a dataset's items with their class labels (int64)."""

    def __init__(self, items: Dataset, labels: Tensor) -> None:
        if len(items) != len(labels):  # type: ignore[arg-type]
            raise ValueError(f"{len(items)} items but {len(labels)} labels")  # type: ignore[arg-type]
        self.items, self.labels = items, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.items[index], self.labels[index]


class EMA:
    """Exponential moving average of a network's parameters (buffers are copied), kept in a separate copy.

    ``update(step)`` uses the decay ``min(decay, (1 + step) / (10 + step))``, so early averages are not dominated
    by the random initialisation.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        spec = net_spec(net)
        if spec is not None:  # the copy rebuilds like the original (save_pretrained of the EMA model)
            spec.record(self.net)
        self.source = net
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the current weights after optimisation step ``step`` (0-based)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for ema_p, p in zip(self.net.parameters(), self.source.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.net.buffers(), self.source.buffers()):
            ema_b.copy_(b)


class _StopOnSignal(AbstractContextManager):
    """While active, SIGINT/SIGTERM set :attr:`signum` instead of killing the process; a second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        # only set the flag here: printing from a handler can re-enter a half-finished write
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopOnSignal:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()


@dataclass
class StepInfo:
    """What a callback of :func:`train` sees after every step (on every rank)."""

    step: int
    loss: float
    lr: float
    grad_norm: float
    val_bpd: float | None


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        run_dir: the run folder.
        step: steps completed in total (including those before a resume).
        losses: training losses of the steps run in this call (global-batch means, nats per dimension).
        val_bpd: the last validation bits/dim (EMA weights), or ``None``.
        interrupted: name of the signal that stopped the run early (``"SIGINT"``/``"SIGTERM"``), else ``None``.
        elapsed: training wall time in seconds, including the time before each resume.
        model: the trained model (raw weights); ema_model: the same with EMA weights.
        world_size: processes that trained.
    """

    run_dir: Path
    step: int
    losses: list[float]
    val_bpd: float | None
    interrupted: str | None
    elapsed: float
    model: BFN
    ema_model: BFN
    world_size: int = 1


def train(
    config: TrainConfig, callback: Callable[[StepInfo], None] | None = None, *, overwrite: bool = False
) -> TrainResult:
    """Train a BFN as ``config`` says (see :class:`TrainConfig` and the module docstring); returns the result.

    Works unchanged under ``torchrun`` (one process per device). With ``config.resume`` the run in
    ``config.out`` continues from its latest checkpoint (falling back to the previous generation, with a warning,
    when the newest fails verification). Without it, a folder that holds a checkpoint, a saved model or the
    ``config.json`` of a run with other settings is an error (nothing is overwritten by accident) unless
    ``overwrite``, which first removes that folder's run and model files. A non-finite loss or gradient stops
    training with :class:`~bfn._checks.NonFiniteError` before the weights are updated (no checkpoint is written);
    with ``amp="fp16"`` the gradient scaler skips such steps instead, as usual.
    """
    context = DistContext.from_env(config.device)
    try:
        return _Trainer(config, context, callback, overwrite).run()
    finally:
        context.close()


class _Trainer:
    """State of one training run; :meth:`run` is the loop."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistContext,
        callback: Callable[[StepInfo], None] | None,
        overwrite: bool = False,
    ) -> None:
        self.ctx = ctx
        self.callback = callback
        self.run_dir = Path(config.out)
        check_amp_device(config.amp, ctx.device)
        checkpoint = self._previous_checkpoint(config, overwrite)
        self.config = config.resolved()
        self.bundle = load_bundle(self.config)
        self.model_config = self.config.model_config(self.bundle)
        if self.config.conditional:
            assert self.bundle.labels is not None  # model_config checked
            self.bundle.train = LabelledItems(self.bundle.train, self.bundle.labels["train"])
        self._build_model()
        self.loss_generator = torch.Generator(device=ctx.device).manual_seed(derive_seed(self.config.seed, "loss"))
        torch.manual_seed(derive_seed(self.config.seed, "torch", ctx.rank))
        self.step = 0
        self.elapsed = 0.0
        if checkpoint is not None:
            self._restore(checkpoint)
        self._build_loss()
        self._build_loader()
        self.show_progress = ctx.is_main and (
            self.config.progress if self.config.progress is not None else sys.stderr.isatty()
        )

    # ---------------------------------------------------------------------------------------------- setup
    def _previous_checkpoint(self, config: TrainConfig, overwrite: bool = False) -> Any:
        """The checkpoint to resume from (``None`` for a fresh run); refuses to overwrite an existing run."""
        if config.resume:
            if overwrite:
                raise ValueError("resume and overwrite exclude each other (--resume continues the run in --out)")
            check_resumable(load_run_config(self.run_dir), config.resolved())
            checkpoint = load_checkpoint(self.run_dir, map_location=self.ctx.device)
            check_resume_state(checkpoint.rng, checkpoint.path)
            return checkpoint
        problem = check_out_folder(config, overwrite)
        if problem is not None and self.ctx.is_main:
            clear_run_folder(self.run_dir)
        self.ctx.barrier()
        return None

    def _build_model(self) -> None:
        """The model (seeded identically on every rank), its EMA copy, the optimizer and the gradient scaler."""
        torch.manual_seed(derive_seed(self.config.seed, "init"))
        self.model = self.model_config.build().to(self.ctx.device).train()
        self.ema = EMA(self.model.net, self.config.ema_decay)
        self.ema_model = BFN(self.ema.net, self.model.flow, self.model.data_shape, num_classes=self.model.num_classes)
        self.optimizer = torch.optim.AdamW(
            self.model.net.parameters(),
            lr=self.config.lr,
            betas=self.config.betas,
            weight_decay=self.config.weight_decay,
        )
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.config.amp == "fp16")

    def _build_loss(self) -> None:
        """This rank's loss module, wrapped in ``DistributedDataParallel`` when there are several processes."""
        ctx = self.ctx
        self.loss_module: nn.Module = GlobalBatchLoss(
            self.model, ctx.rank, ctx.world_size, self.config.batch_size, self.config.loss_steps
        )
        if self.config.compile:
            self.loss_module.model.compile_core()  # type: ignore[operator]
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)

    def _build_loader(self) -> None:
        """The sharded sampler and the DataLoader (with its own generator, so it never draws from the global one)."""
        self.sampler = GlobalBatchSampler(
            self.bundle.train,
            self.config.batch_size,
            num_replicas=self.ctx.world_size,
            rank=self.ctx.rank,
            seed=derive_seed(self.config.seed, "order"),
        )
        self.loader = DataLoader(
            self.bundle.train,
            batch_size=self.config.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(derive_seed(self.config.seed, "loader")),
        )

    # ---------------------------------------------------------------------------------------------- state
    def _restore(self, checkpoint: Any) -> None:
        """Load weights, optimizer and generator states from a checkpoint."""
        self.model.net.load_state_dict(checkpoint.model)
        self.ema.net.load_state_dict(checkpoint.ema)
        self.optimizer.load_state_dict(checkpoint.optimizer["optimizer"])
        if checkpoint.optimizer.get("scaler"):
            self.scaler.load_state_dict(checkpoint.optimizer["scaler"])
        rng = checkpoint.rng
        self.loss_generator.set_state(rng["loss"])
        per_rank = rng.get("torch", [])
        if len(per_rank) == self.ctx.world_size:
            torch.set_rng_state(per_rank[self.ctx.rank])
        else:  # another world size: fresh but deterministic dataset randomness
            torch.manual_seed(derive_seed(self.config.seed, "torch", self.ctx.rank, checkpoint.step))
        cuda = rng.get("cuda") or []
        if self.ctx.device.type == "cuda" and len(cuda) == self.ctx.world_size and cuda[self.ctx.rank] is not None:
            torch.cuda.set_rng_state(cuda[self.ctx.rank], self.ctx.device)
        self.step = checkpoint.step
        self.elapsed = float(checkpoint.state.get("elapsed", 0.0))

    def _checkpoint(self) -> None:
        """All ranks gather their generator states; rank 0 writes; everyone waits for the write."""
        cuda_state = torch.cuda.get_rng_state(self.ctx.device) if self.ctx.device.type == "cuda" else None
        states = self.ctx.gather((torch.get_rng_state(), cuda_state))
        if self.ctx.is_main:
            rng = {
                "loss": self.loss_generator.get_state(),
                "torch": [s[0] for s in states],
                "cuda": [s[1] for s in states],
            }
            optimizer = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}
            extra = {"elapsed": self.elapsed, "world_size": self.ctx.world_size, "saved": time.time()}
            save_checkpoint(
                self.run_dir, self.step, self.model.net.state_dict(), self.ema.net.state_dict(), optimizer, rng, extra
            )
        self.ctx.barrier()

    def _write_config(self) -> None:
        if not self.ctx.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            **self.model_config.to_dict(),
            "train": self.config.to_dict(),
            "data": json_safe(self.bundle.info),
            "world_size": self.ctx.world_size,
            "global_batch_size": self.config.batch_size * self.ctx.world_size,
        }
        atomic_write_json(self.run_dir / CONFIG_FILE, record)

    # ---------------------------------------------------------------------------------------------- step
    def _lr(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then constant."""
        warmup = self.config.warmup
        return self.config.lr * min(1.0, (step + 1) / warmup) if warmup > 0 else self.config.lr

    def _train_step(self, x: Tensor, lr: float, labels: Tensor | None = None) -> tuple[Tensor, float]:
        """Forward, backward, clip, optimizer and EMA update; returns the local loss and the gradient norm."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        amp = self.config.amp
        autocast = (
            torch.autocast(self.ctx.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
            if amp != "off"
            else nullcontext()
        )
        with autocast:
            loss = self.loss_module(x, self.loss_generator, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.net.parameters(), clip))
        if not self.scaler.is_enabled():  # fp16: the scaler skips non-finite steps itself
            check_finite_step(loss.detach(), grad_norm, self.step + 1)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.step)
        return loss.detach(), grad_norm

    def _validate(self) -> float | None:
        if not self.ctx.is_main:
            return None
        return evaluate_nll(
            self.ema_model,
            self.bundle.val,
            steps=self.config.loss_steps,
            max_examples=self.config.val_examples,
            seed=self.config.seed,
        )

    def _due(self, every: int) -> bool:
        return self.step == self.config.steps or (every > 0 and self.step % every == 0)

    # ---------------------------------------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        """The training loop (see the module docstring)."""
        from tqdm import tqdm

        cfg, ctx = self.config, self.ctx
        self._write_config()
        ctx.barrier()
        log = RunLog(self.run_dir / LOG_FILE, self.step, ctx.is_main)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.show_progress, unit="step", dynamic_ncols=True)
        say = self._announcer(bar)
        self._greet(say)
        losses: list[float] = []
        val_bpd: float | None = None
        interrupted: str | None = None
        batches = endless_batches(self.loader, self.sampler, self.step)
        last = time.perf_counter()
        try:
            with _StopOnSignal() as stop:
                while self.step < cfg.steps:
                    info, stop_now = self._step(next(batches), stop)
                    now = time.perf_counter()
                    self.elapsed, last = self.elapsed + now - last, now
                    losses.append(info.loss)
                    val_bpd = info.val_bpd if info.val_bpd is not None else val_bpd
                    log.write(info.step, info.loss, info.lr, info.grad_norm, info.val_bpd, self.elapsed)
                    self._show(bar, say, info, val_bpd)
                    if self.callback is not None:
                        self.callback(info)
                    if stop_now or self._due(cfg.ckpt_every):
                        self._checkpoint()
                    if stop_now:
                        interrupted = signal.Signals(stop.signum or signal.SIGTERM).name
                        say(
                            f"stopped by {interrupted} at step {self.step}; checkpoint written to "
                            f"{self.run_dir}; continue with --resume"
                        )
                        break
        finally:
            bar.close()
            log.close()
        if ctx.is_main and (self.run_dir / LOG_FILE).is_file() and read_log(self.run_dir / LOG_FILE):
            plot_losses(self.run_dir / LOG_FILE, self.run_dir / PLOT_FILE, nll_unit(self.bundle.info))
        ctx.barrier()
        return TrainResult(
            run_dir=self.run_dir,
            step=self.step,
            losses=losses,
            val_bpd=val_bpd,
            interrupted=interrupted,
            elapsed=self.elapsed,
            model=self.model,
            ema_model=self.ema_model,
            world_size=ctx.world_size,
        )

    def _step(self, batch: Tensor | Sequence[Tensor], stop: _StopOnSignal) -> tuple[StepInfo, bool]:
        """One optimisation step (and validation when due); returns its record and whether to stop now."""
        ctx = self.ctx
        lr = self._lr(self.step)
        x, labels = (batch[0], batch[1].to(ctx.device)) if isinstance(batch, (list, tuple)) else (batch, None)
        local_loss, grad_norm = self._train_step(x.to(ctx.device, non_blocking=True), lr, labels)
        # one collective for the global loss and the stop flag (a signal may reach ranks at different steps)
        flag = torch.tensor(1.0 if stop.signum is not None else 0.0)
        shared = ctx.all_reduce_sum(torch.stack([local_loss.float().cpu(), flag]))
        self.step += 1
        val = self._validate() if self._due(self.config.val_every) else None
        return StepInfo(self.step, float(shared[0]) / ctx.world_size, lr, grad_norm, val), bool(shared[1] > 0)

    def _greet(self, say: Callable[[str], None]) -> None:
        cfg = self.config
        if self.step >= cfg.steps:
            say(f"{self.run_dir}: already trained for {self.step} >= {cfg.steps} steps; nothing to do")
            return
        params = sum(p.numel() for p in self.model.net.parameters())
        say(
            f"training {self.model_config.flow.kind} BFN ({cfg.net}, {params:,} parameters) on {cfg.data} "
            f"for steps {self.step + 1}..{cfg.steps} with global batch {cfg.batch_size * self.ctx.world_size} "
            f"on {self.ctx.world_size} x {self.ctx.device}; run folder {self.run_dir}"
        )

    def _show(self, bar: Any, say: Callable[[str], None], info: StepInfo, val_bpd: float | None) -> None:
        """Progress bar postfix every 10 steps; a printed line at every validation; without a progress bar, also
        a line every :data:`PROGRESS_SECONDS` seconds (step, loss, speed, time left)."""
        unit = nll_unit(self.bundle.info)
        if self.show_progress and (info.step % 10 == 0 or info.val_bpd is not None):
            extra = {"val": f"{val_bpd:.4f} {unit}"} if val_bpd is not None else {}
            bar.set_postfix(loss=f"{info.loss:.4f}", **extra)
        bar.update(1)
        if info.val_bpd is not None:
            say(f"step {info.step}/{self.config.steps}: loss {info.loss:.4f}, validation {info.val_bpd:.4f} {unit}")
        elif not self.show_progress:
            now = time.perf_counter()
            since = getattr(self, "_last_line", None)
            if since is None:
                self._last_line = self._line_start = (now, info.step - 1)
            elif now - since[0] >= PROGRESS_SECONDS:
                rate = (info.step - self._line_start[1]) / max(now - self._line_start[0], 1e-9)
                left = (self.config.steps - info.step) / rate if rate > 0 else math.inf
                say(
                    f"step {info.step}/{self.config.steps}: loss {info.loss:.4f}, {rate:.2f} steps/s, "
                    f"about {timedelta(seconds=round(left))} left"
                )
                self._last_line = (now, info.step)

    def _announcer(self, bar: Any) -> Callable[[str], None]:
        """Rank 0 prints messages (through the progress bar when it is shown); other ranks stay quiet."""

        def say(message: str) -> None:
            if not self.ctx.is_main:
                return
            if self.show_progress:
                bar.write(message)
            else:
                print(message, flush=True)

        return say
