"""The two clocks of BFN and the solver time grids.

BFN time ``tau`` runs from 0 (prior, nothing known) to 1 (data); the network is always called with ``tau``.
Solver (SDE) time ``t = 1 - tau`` runs from 0 (data) to 1 (prior) and is used only by the samplers and the
likelihood code. :func:`flip_clock` is the only place in the package that converts one into the other.

Grids are float64 tensors of solver times ``t_0 = 1 - eta > t_1 > ... > t_n = 0``; the default ``eta`` of each data
kind is :data:`DEFAULT_ETA` (declared by the flows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from bfn._checks import MAX_STEPS, check_eta, check_int
from bfn.flows import DEFAULT_ETA as DEFAULT_ETA  # re-exported; each flow declares its own (sampling.eta)

if TYPE_CHECKING:
    from bfn.flows.base import LinearSDE

GridKind = Literal["uniform", "logsnr"]


def flip_clock(time: Tensor | float) -> Tensor | float:
    """Convert BFN time ``tau`` to solver time ``t = 1 - tau``, or back (the map is its own inverse)."""
    return 1.0 - time


def time_grid(
    steps: int,
    eta: float,
    grid: GridKind | Tensor = "uniform",
    sde: LinearSDE | None = None,
) -> Tensor:
    """Solver-time grid ``t_0 = 1 - eta > ... > t_steps = 0`` in float64.

    Args:
        steps: number of solver steps ``n`` (the grid has ``n + 1`` points).
        eta: end offset; the first network call happens at BFN time ``tau = eta``.
        grid: ``"uniform"`` (uniform in ``t``, as in the BFN-Solver paper), ``"logsnr"`` (uniform in
            ``lambda = log(alpha / sigma)``; needs ``sde``) or an explicit decreasing 1-D tensor of solver times
            in ``[0, 1]``.
        sde: the linear SDE whose ``lam`` / ``t_of_lam`` define the log-SNR grid.
    """
    steps = check_int(steps, "steps", 1, MAX_STEPS)
    if isinstance(grid, Tensor):
        if not grid.is_floating_point():
            raise ValueError(f"explicit grid must be a real floating tensor of solver times, got dtype {grid.dtype}")
        ts = grid.detach().to(dtype=torch.float64, device="cpu").flatten()
        if ts.numel() != steps + 1:
            raise ValueError(f"explicit grid must have steps + 1 = {steps + 1} points, got {ts.numel()}")
        if not torch.isfinite(ts).all() or (ts < 0).any() or (ts > 1).any():
            raise ValueError("explicit grid must hold finite solver times in [0, 1]")
        if not (ts[1:] < ts[:-1]).all():
            raise ValueError("explicit grid must be strictly decreasing in solver time t (from noise to data)")
        return ts
    eta = check_eta(eta)
    if grid == "uniform":
        return (1.0 - eta) * torch.arange(steps, -1, -1, dtype=torch.float64) / steps
    if grid == "logsnr":
        if sde is None:
            raise ValueError("grid='logsnr' needs the flow's SDE")
        end = torch.tensor([1.0 - eta, 0.0], dtype=torch.float64)
        lam = sde.lam(end)
        lams = torch.linspace(float(lam[0]), float(lam[1]), steps + 1, dtype=torch.float64)
        ts = sde.t_of_lam(lams).clamp(0.0, 1.0)
        ts[0], ts[-1] = 1.0 - eta, 0.0
        return ts
    raise ValueError(f"unknown grid {grid!r}; expected 'uniform', 'logsnr' or a tensor of solver times")
