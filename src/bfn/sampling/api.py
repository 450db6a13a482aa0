"""``sample``: the one entry point that resolves options, builds the run and decodes the final samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from bfn._checks import MAX_NUM_SAMPLES, MAX_STEPS, check_finite_output, check_generator, check_int
from bfn.flows.base import Flow
from bfn.sampling.auto import AUTO, AUTO_NFE, resolve_auto, tuned_grid
from bfn.sampling.conditioning import InpaintMethod, build_conditioning
from bfn.sampling.engine import (
    Recorder,
    SamplerState,
    StepContext,
    integrate,
    score_from_prediction,
    standard_normal,
)
from bfn.sampling.options import SolverOptions
from bfn.sampling.registry import get_sampler, resolve_options
from bfn.time import flip_clock, time_grid

if TYPE_CHECKING:
    from bfn.model import BFN


DEFAULT_STEPS = 100
"""Steps of a named sampler when ``steps`` is not given (``sampler="auto"`` takes ``AUTO_NFE`` network calls)."""


@dataclass
class SampleOutput:
    """The result of :func:`sample`.

    Attributes:
        samples: continuous: floats (in [-1, 1] when clipped); discretised: bin centres; discrete: class indices
            (``torch.long``); shape ``(num_samples, *data_shape)``.
        nfe: network calls actually made.
        state: the final SDE state (``mu`` or logits ``z``) at solver time ``t``.
        t: solver time of ``state`` (0 after ``final="denoise"``; the last evaluated time after ``final="drop"``).
        trajectory: with ``trajectory=True``, one dict per step (``step``, ``t``, ``x0_hat``, ``x``, ``t_next``,
            ``nfe``), else ``None``.
        sampler: the registered sampler that ran (what ``sampler="auto"`` resolved to).
        steps: its number of steps.
        options: the options it ran with, as given or chosen by ``sampler="auto"`` (without ``callback``).
    """

    samples: Tensor
    nfe: int
    state: Tensor
    t: float
    trajectory: list[dict[str, Any]] | None = None
    sampler: str = ""
    steps: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def sample(
    model: BFN,
    num_samples: int,
    sampler: str = AUTO,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    *,
    labels: int | Tensor | None = None,
    guidance: float | None = None,
    known: Tensor | None = None,
    mask: Tensor | None = None,
    inpaint: InpaintMethod = "certain",
    **options: Any,
) -> SampleOutput:
    """Draw ``num_samples`` samples from ``model`` with the registered sampler ``sampler`` in ``steps`` steps.

    ``sampler="auto"`` (the default): the library's best measured configuration for the flow's kind, and ``steps``
    is the number of network calls (``out.nfe == steps``, default 20); ``out.sampler``, ``out.steps`` and
    ``out.options`` say what ran (:func:`bfn.sampling.auto.auto_config`: continuous and discretised
    ``bfn-solver++pc`` on the tuned grid fitted per budget, from ``eta`` 5e-3 / 1e-3 as the budget grows, then
    ``sde-bfn-solver++2`` on the log-SNR grid from ``eta = 1e-2`` (continuous from 15 calls, discretised from 7);
    discrete ``bfn-solver3``, from 10 calls the ``h-solver`` with ``h = 0.5``, on the tuned grid with
    ``final="denoise"``). Options given with ``"auto"`` override its choices.

    A named sampler makes ``steps`` steps (default 100); its network calls are ``SAMPLERS[name].nfe(steps, final)``.

    Samplers (:data:`~bfn.sampling.SAMPLERS`; formulas in each step function's docstring):

    * ``bfn`` (all kinds): the original sampler; ``n + 1`` calls. Option ``categorical`` (default True: the
      receiver's guess is a class / bin drawn from the output distribution; False: its mean).
    * continuous and discretised: ``bfn-solver1`` (noise form), ``bfn-solver++1``, ``bfn-solver++2`` (2M),
      ``bfn-solver++3`` (3M), ``bfn-solver++2s``, ``bfn-solver++3s`` (single step, 2 / 3 calls per step),
      ``bfn-solver++pc`` (2M predictor with a third-order corrector, no extra calls), ``sde-bfn-solver++1``,
      ``sde-bfn-solver++2``. Discretised data use the continuous SDE with ``x0_hat = k_hat``.
    * discrete: ``bfn-solver1``, ``bfn-solver2`` (multistep), ``bfn-solver2s`` (midpoint, 2 calls per step),
      ``bfn-solver3``, ``sde-bfn-solver1``, ``sde-bfn-solver2``, ``sde-bfn-solver3`` (Taylor expansions in ``t``).
    * ``h-solver`` (all kinds): the path-integral family, options ``h >= 0`` (noise-variance multiplier: 0 = PF-ODE,
      1 = reverse SDE; default 0.5) and ``order`` 1-3 (multistep, default 2).

    When to use which (the paper's findings, and the oracle benchmark ``benchmarks/solvers_oracle.py``): at about 10
    calls a second-order ODE solver (``bfn-solver++2``, ``bfn-solver++3s``; discrete ``bfn-solver2``) or the
    h-solver; from about 20-50 calls the SDE solvers (``sde-bfn-solver++2`` / ``sde-bfn-solver2``) or the h-solver
    with ``h`` around 0.5-1, which also wash out the error of an approximate start (``init="zero"``) that the ODE
    solvers keep; ``bfn`` reproduces the original paper's sampler and needs hundreds of calls.

    Options of the solvers (every sampler but ``bfn``):

    * ``grid``: ``"uniform"`` in ``t`` (the paper's), ``"logsnr"`` (uniform in ``lambda``; refused for discrete
      data), ``"tuned"`` (continuous: call points fitted per budget in ``lambda``, :mod:`bfn.sampling.grids`;
      discrete: BFN time a power 1.4 of the step index; see :func:`bfn.sampling.auto.tuned_grid`) or an explicit
      decreasing tensor of solver times (it must end at 0 for ``final="denoise"``).
    * ``eta``: the grid runs from ``t = 1 - eta``; default 0.01 (continuous, discretised) and 0.001 (discrete),
      the BFN-Solver protocol values.
    * ``init``: ``"zero"`` (default; ``N(0, sigma_{1-eta}^2 I)``, BFN-Solver ``zero_mean_and_std``), ``"moment"``
      (``N(alpha m, sigma^2 + alpha^2 v)`` per element, the moment-matched Gaussian of the data marginal at
      ``1 - eta``; needs ``data_mean`` and ``data_var`` for continuous / discretised data (scalars or tensors
      broadcasting to ``data_shape``), and ``data_mean`` = class frequencies (broadcasting to ``(*data_shape, K)``)
      for discrete data), or an explicit initial state of shape ``(num_samples, *state_shape)``.
    * ``final``: ``"drop"`` (default; BFN-Solver ``last_drop``: the last step returns the data prediction at
      ``t_{n-1}`` without an update, so ``t = 0`` is never evaluated) or ``"denoise"`` (all ``n`` updates to
      ``t = 0``, then one call at ``tau = 1`` and the output distribution: continuous ``x_hat``; discretised and
      discrete a draw from ``p_O``, or its mode with ``mode=True``).
      Decoding after ``"drop"``: continuous ``x0_hat``; discretised the bin centre nearest to ``k_hat``; discrete the
      argmax of ``e_hat`` (the mode, as in the BFN-Solver reference).
    * ``clip``: clip the continuous ``x_hat`` to [-1, 1] at every call (default: the flow's setting).
    * ``callback``: called with a dict per step (``step``, ``t``, ``x0_hat``, ``x``, ``t_next``, ``nfe``);
      ``trajectory=True`` also returns those dicts.

    The original sampler takes ``categorical``, ``mode`` (final output: mode of ``p_O`` instead of a draw),
    ``callback`` and ``trajectory``. Runs under ``torch.no_grad`` in the model's dtype and device; all randomness
    comes from ``generator`` (which must live on the model's device), so a fixed generator reproduces the samples.
    Every option is checked, with a ``ValueError`` naming the valid choices, before the first network call.

    Conditional generation works with every sampler and kind (:mod:`bfn.sampling.conditioning`): ``labels`` (an
    int or a ``(num_samples,)`` tensor in ``0..C`` for a model built with ``num_classes=C``; ``C`` is the null
    label) and ``guidance`` (classifier-free guidance scale ``s``: 1 conditional, 0 unconditional, > 1 guided; a
    guided call is one batched network call of ``2 num_samples`` rows and counts 2 in ``nfe``); ``known`` and
    ``mask`` (inpainting / infilling: the samples equal ``known`` where ``mask`` is True; both of shape
    ``data_shape`` or ``(num_samples, *data_shape)``) with ``inpaint`` (``"certain"`` or ``"replace"``).
    """
    num_samples = check_int(num_samples, "num_samples", 1, MAX_NUM_SAMPLES)
    if steps is not None:
        steps = check_int(steps, "steps", 1, MAX_STEPS)
    flow = model.flow
    if isinstance(sampler, str) and sampler == AUTO:
        sampler, steps, options = resolve_auto(flow.kind, AUTO_NFE if steps is None else steps, options)
    elif steps is None:
        steps = DEFAULT_STEPS
    spec = get_sampler(sampler, flow.kind)
    opts = resolve_options(sampler, spec, flow.kind, options)
    device, dtype = model.device, model.state_dtype()
    check_generator(generator, device, owner="the model")
    cond = build_conditioning(model, num_samples, labels, guidance, known, mask, inpaint, dtype, device)
    if isinstance(opts, SolverOptions):
        grid = _solver_grid(steps, opts, flow)
        state = _initial_state(model, num_samples, grid, opts, generator, dtype, device)
    else:  # the original sampler: from the prior at tau = 0 on the grid tau_i = i/n
        grid = flip_clock(torch.arange(steps + 1, dtype=torch.float64) / steps)
        state = SamplerState(flow.prior_state(num_samples, model.data_shape, dtype, device), float(grid[0]))
    record_predictions = opts.callback is not None or opts.trajectory
    ctx = StepContext.build(model, generator, opts.prediction_clip, record_predictions, cond)
    record = Recorder(opts.callback, opts.trajectory)
    final = opts.final_rule
    method = spec.method(flow.kind, opts)

    state = integrate(
        ctx, method, state, grid.tolist(), drop_last=final == "drop", record=record if record_predictions else None
    )
    if final == "drop":
        samples = flow.decode_prediction(state.history[0].x0)
    else:
        samples = ctx.predictor.output(ctx.predictor.net_out(state.x, state.t), state.x, opts.mode)
    if cond is not None:
        samples = cond.fill(samples)
    return SampleOutput(
        samples=samples,
        nfe=ctx.predictor.nfe,
        state=state.x,
        t=state.t,
        trajectory=record.trajectory if opts.trajectory else None,
        sampler=sampler,
        steps=steps,
        options={k: v for k, v in options.items() if k != "callback"},
    )


def score(model: BFN, x: Tensor, t: Tensor | float) -> Tensor:
    """The model's score ``grad log p_t(x) ~ -(x - alpha_t x0_hat)/sigma_t^2`` at solver time ``t`` (one call).

    ``x`` is the SDE state (continuous / discretised ``mu``, discrete logits ``z``); see :func:`score_from_prediction`.
    """
    return score_from_prediction(model.flow.sde, x, model.denoise(x, t), t)


# ------------------------------------------------------------------------------------------------- helpers
def _solver_grid(steps: int, opts: SolverOptions, flow: Flow) -> Tensor:
    """Solver times of a solver run: :func:`bfn.time.time_grid` (``grid="tuned"``: the flow's tuned grid,
    :func:`bfn.sampling.auto.tuned_grid`)."""
    if isinstance(opts.grid, str) and opts.grid == "tuned":
        grid = tuned_grid(flow.kind, steps, opts.eta, flow.sde)
    else:
        grid = time_grid(steps, opts.eta, opts.grid, flow.sde)
    if grid[0] >= 1:
        raise ValueError("the solvers start below t = 1 (the prior end is singular); give a grid with t_0 < 1")
    if opts.final == "denoise" and grid[-1] != 0:
        raise ValueError(f"final='denoise' needs a grid that ends at t = 0, got {grid[-1].item():.4g}")
    return grid


def _initial_state(
    model: BFN,
    num: int,
    grid: Tensor,
    opts: SolverOptions,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> SamplerState:
    """The state at ``grid[0]``: ``N(0, sigma^2)``, the moment-matched Gaussian or a given tensor."""
    flow, t0 = model.flow, float(grid[0])
    shape = (num, *flow.state_shape(model.data_shape))
    init = opts.init
    if isinstance(init, Tensor):
        if tuple(init.shape) != shape:
            raise ValueError(f"init tensor has shape {tuple(init.shape)}; expected {shape}")
        if init.is_complex() or init.dtype == torch.bool:
            raise ValueError(f"init tensor must be real, got dtype {init.dtype}")
        check_finite_output(init.to(dtype), "init tensor", "give finite values representable in the model's dtype")
        return SamplerState(init.to(dtype=dtype, device=device), t0)
    alpha, sigma = float(flow.sde.alpha(grid[0])), float(flow.sde.sigma(grid[0]))
    xi = standard_normal(torch.empty(shape, dtype=dtype, device=device), generator)
    if init == "zero":
        return SamplerState(sigma * xi, t0)
    mean, var = flow.moments(model.data_shape, opts.data_mean, opts.data_var)
    mean, var = mean.to(dtype=torch.float64, device=device), var.to(dtype=torch.float64, device=device)
    x = alpha * mean + torch.sqrt(sigma**2 + alpha**2 * var) * xi.to(torch.float64)
    check_finite_output(x.to(dtype), "initial state of init='moment'", f"data_mean / data_var too large for {dtype}")
    return SamplerState(x.to(dtype), t0)
