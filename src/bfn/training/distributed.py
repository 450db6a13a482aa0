"""Distributed plumbing: the process context, the sharded data order and the global-batch loss.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) :class:`DistContext` initialises the process group
(NCCL on GPU, gloo on CPU). :class:`GlobalBatchSampler` shards seeded *global* batches, so the sequence of global
batches does not depend on the number of processes; :class:`GlobalBatchLoss` draws the loss noise of the whole
global batch on every rank and runs the network on the rank's own rows only, so every example gets the noise it
gets in one process. :func:`derive_seed` gives every purpose (and rank) its own random stream.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from bfn.model import BFN

__all__ = [
    "DistContext",
    "GlobalBatchLoss",
    "GlobalBatchSampler",
    "derive_seed",
    "endless_batches",
    "pick_device",
]


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (independent streams for independent purposes)."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class DistContext:
    """The process's place in a (possibly single-process) run and its device.

    Built by :meth:`from_env`: under ``torchrun`` it initialises the default process group (NCCL on GPU, gloo on
    CPU) and :meth:`close` destroys it again.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> DistContext:
        """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by ``torchrun``) and pick the device."""
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = pick_device(device, local)
        owns = False
        if world > 1 and not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
            owns = True
        if world > 1:
            rank, world = dist.get_rank(), dist.get_world_size()
        return cls(rank=rank, world_size=world, local_rank=local, device=dev, owns_group=owns)

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over all ranks in place and return it (unchanged in a single process)."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (in rank order) on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """The device ``device`` names (``"auto"``: CUDA ``local_rank`` if available, else CPU); ``ValueError`` for
    a bad name or CUDA requested without CUDA; a bare ``"cuda"`` means ``cuda:<local_rank>``."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


class GlobalBatchSampler(DistributedSampler):
    """A ``DistributedSampler`` whose shards are contiguous slices of seeded *global* batches.

    Epoch ``e`` shuffles the data with a permutation seeded by ``(seed, e)`` and cuts it into
    ``len(dataset) // global_batch`` global batches (the remainder is dropped); rank ``r`` yields rows
    ``[r * batch, (r + 1) * batch)`` of each. The global batches therefore do not depend on the number of
    processes. ``set_position(epoch, batch_index)`` resumes in the middle of an epoch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.global_batch = batch_size * num_replicas
        self.batches_per_epoch = len(dataset) // self.global_batch  # type: ignore[arg-type]
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"the training split has {len(dataset)} examples, fewer than one global batch of "  # type: ignore[arg-type]
                f"{self.global_batch} (batch_size {batch_size} x {num_replicas} processes); lower batch_size"
            )
        self.start = 0

    def set_position(self, epoch: int, batch_index: int) -> None:
        """Start the next iteration at global batch ``batch_index`` of ``epoch``."""
        self.set_epoch(epoch)
        self.start = batch_index

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", self.epoch))
        perm = torch.randperm(len(self.dataset), generator=generator)  # type: ignore[arg-type]
        for k in range(self.start, self.batches_per_epoch):
            first = k * self.global_batch + self.rank * self.batch_size
            yield from perm[first : first + self.batch_size].tolist()

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start) * self.batch_size


def endless_batches(loader: DataLoader, sampler: GlobalBatchSampler, start_step: int) -> Iterator[Tensor]:
    """Endless per-rank batches from global step ``start_step`` on."""
    epoch, index = divmod(start_step, sampler.batches_per_epoch)
    while True:
        sampler.set_position(epoch, index)
        yield from loader
        epoch, index = epoch + 1, 0


class _LocalRows(nn.Module):
    """Runs ``net`` on rows ``[start, stop)`` of a global batch only; the other rows' outputs are zeros.

    Their losses are computed (cheap elementwise flow maths) but never used, so no gradient reaches them.
    """

    def __init__(self, net: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        self.net = net
        self.start, self.stop = start, stop

    def forward(self, inputs: Tensor, tau: Tensor, *labels: Tensor) -> Tensor:
        rows = slice(self.start, self.stop)
        out = self.net(inputs[rows], tau[rows], *(y[rows] for y in labels))
        before = out.new_zeros((self.start, *out.shape[1:]))
        after = out.new_zeros((inputs.shape[0] - self.stop, *out.shape[1:]))
        return torch.cat([before, out, after])


class GlobalBatchLoss(nn.Module):
    """This rank's share of the training loss, with loss noise drawn for the whole global batch.

    ``forward(x_local)`` places the local examples at rows ``[r b, (r+1) b)`` of a global batch (the other rows are
    filler copies), draws the times and flow samples of all ``world_size * b`` rows from ``generator``, and
    returns the mean loss of the local rows in nats per data element.
    """

    def __init__(self, model: BFN, rank: int, world_size: int, batch_size: int, steps: int | None) -> None:
        super().__init__()
        self.world_size = world_size
        self.rows = slice(rank * batch_size, (rank + 1) * batch_size)
        net = model.net if world_size == 1 else _LocalRows(model.net, self.rows.start, self.rows.stop)
        conditional = {"num_classes": model.num_classes, "label_dropout": model.label_dropout}
        self.model = BFN(net, model.flow, model.data_shape, **conditional)
        self.steps = steps

    def forward(self, x: Tensor, generator: torch.Generator, labels: Tensor | None = None) -> Tensor:
        """The mean loss of this rank's rows ``x`` (and ``labels``) in nats per data element."""
        if self.world_size > 1:
            x = x.repeat(self.world_size, *([1] * (x.ndim - 1)))
            labels = labels.repeat(self.world_size) if labels is not None else None
        labels = self.model.drop_labels(labels, generator) if labels is not None else None
        per_example = self.model.loss_per_example(x, self.steps, generator, labels=labels)
        return per_example[self.rows].mean() / self.model.num_dims
