"""``sample``: the one entry point that resolves options, builds the run and decodes the final samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from bfn._checks import MAX_NUM_SAMPLES, MAX_STEPS, check_finite_output, check_int
from bfn.flows.base import Flow, FlowKind, LinearSDE, as_f64, expand_like
from bfn.sampling.auto import AUTO, AUTO_NFE, resolve_auto, tuned_grid
from bfn.sampling.conditioning import InpaintMethod, build_conditioning
from bfn.sampling.engine import Recorder, SamplerState, StepContext, integrate, standard_normal
from bfn.sampling.registry import SamplerSpec, get_sampler, resolve_options
from bfn.time import flip_clock, time_grid

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from bfn.model import BFN
    from bfn.sampling.registry import SamplerOptions


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
    **options: Unpack[SamplerOptions],
) -> SampleOutput:
    """Draw ``num_samples`` samples from ``model`` with the registered sampler ``sampler`` in ``steps`` steps.

    ``sampler="auto"`` (the default): the library's best measured configuration for the flow's kind, and ``steps``
    is the number of network calls (``out.nfe == steps``, default 20); ``out.sampler``, ``out.steps`` and
    ``out.options`` say what ran (:func:`bfn.sampling.auto.auto_config`: continuous and discretised
    ``bfn-solver++pc`` on the tuned grid fitted per budget, from ``eta`` 5e-3 / 1e-3 / 1e-4 as the budget grows
    (discretised from 7 calls with ``final="denoise"``);
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
    if isinstance(sampler, str) and sampler == AUTO:
        sampler, steps, options = resolve_auto(model.flow.kind, AUTO_NFE if steps is None else steps, options)
    elif steps is None:
        steps = DEFAULT_STEPS
    spec = get_sampler(sampler, model.flow.kind)
    opts = resolve_options(sampler, spec, model.flow.kind, options)
    device, dtype = model.device, model.state_dtype()
    _check_generator(generator, device)
    cond = build_conditioning(model, num_samples, labels, guidance, known, mask, inpaint, dtype, device)
    flow = model.flow
    grid = _grid(spec, steps, opts, flow.sde, flow.kind)
    record_predictions = opts["callback"] is not None or opts["trajectory"]
    ctx = StepContext.build(model, generator, _data_prediction(flow, opts.get("clip")), record_predictions, cond)
    state = _initial_state(spec, model, num_samples, grid, opts, generator, dtype, device)
    record = Recorder(opts["callback"], opts["trajectory"])
    final = "denoise" if spec.prior_start else opts["final"]
    method = spec.method(flow.kind, opts)

    state = integrate(
        ctx, method, state, grid.tolist(), drop_last=final == "drop", record=record if record_predictions else None
    )
    if final == "drop":
        samples = _DROP_OUTPUT[flow.kind](flow, state.history[0].x0)
    else:
        net_out = ctx.predictor.net_out(state.x, state.t)
        samples = _DENOISE_OUTPUT[flow.kind](ctx, net_out, state.x, opts["mode"])
    if cond is not None:
        samples = cond.fill(samples)
    return SampleOutput(
        samples=samples,
        nfe=ctx.predictor.nfe,
        state=state.x,
        t=state.t,
        trajectory=record.trajectory if opts["trajectory"] else None,
        sampler=sampler,
        steps=steps,
        options={k: v for k, v in options.items() if k != "callback"},
    )


def score(model: BFN, x: Tensor, t: Tensor | float) -> Tensor:
    """The model's score ``grad log p_t(x) ~ -(x - alpha_t x0_hat)/sigma_t^2`` at solver time ``t`` (one call).

    ``x`` is the SDE state (continuous / discretised ``mu``, discrete logits ``z``); see :func:`score_from_prediction`.
    """
    return score_from_prediction(model.flow.sde, x, model.denoise(x, t), t)


def score_from_prediction(sde: LinearSDE, x: Tensor, x0_hat: Tensor, t: Tensor | float) -> Tensor:
    """``s = -(x - alpha_t x0_hat)/sigma_t^2`` (Xue et al., sec. 4-5; discrete: ``-z/(K beta_t) + e_hat - 1/K``)."""
    t64 = as_f64(t, x.device)
    alpha, sigma = expand_like(sde.alpha(t64), x), expand_like(sde.sigma(t64), x)
    return -(x - alpha * x0_hat) / sigma**2


# ------------------------------------------------------------------------------------------------- helpers
def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    gen = generator.device
    if gen.type != device.type or (gen.index is not None and device.index is not None and gen.index != device.index):
        raise ValueError(
            f"generator lives on {gen} but the model on {device}; create it with torch.Generator(device='{device}')"
        )


def _grid(
    spec: SamplerSpec, steps: int, opts: Mapping[str, Any], sde: LinearSDE, kind: FlowKind = "continuous"
) -> Tensor:
    """Solver times of the run: ``t_i = 1 - i/n`` for the original sampler, else :func:`bfn.time.time_grid`
    (``grid="tuned"``: :func:`bfn.sampling.auto.tuned_grid` for ``kind``)."""
    if spec.prior_start:
        return flip_clock(torch.arange(steps + 1, dtype=torch.float64) / steps)
    if isinstance(opts["grid"], str) and opts["grid"] == "tuned":
        grid = tuned_grid(kind, steps, opts["eta"], sde)
    else:
        grid = time_grid(steps, opts["eta"], opts["grid"], sde)
    if grid[0] >= 1:
        raise ValueError("the solvers start below t = 1 (the prior end is singular); give a grid with t_0 < 1")
    if opts["final"] == "denoise" and grid[-1] != 0:
        raise ValueError(f"final='denoise' needs a grid that ends at t = 0, got {grid[-1].item():.4g}")
    return grid


def _data_prediction(flow: Flow, clip: bool | None) -> Callable[[Tensor, Tensor, Tensor], Tensor] | None:
    """The map network output -> ``x0_hat``: the flow's, or the continuous ``x_hat`` with ``clip`` overridden."""
    return None if clip is None else partial(flow.x_hat, clip=clip)  # type: ignore[attr-defined]


def _initial_state(
    spec: SamplerSpec,
    model: BFN,
    num: int,
    grid: Tensor,
    opts: Mapping[str, Any],
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> SamplerState:
    """The state at ``grid[0]``: the prior, ``N(0, sigma^2)``, the moment-matched Gaussian or a given tensor."""
    flow, t0 = model.flow, float(grid[0])
    shape = (num, *flow.state_shape(model.data_shape))
    if spec.prior_start:
        return SamplerState(flow.prior_state(num, model.data_shape, dtype, device), t0)
    init = opts["init"]
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
    mean, var = _MOMENTS[flow.kind](flow, model.data_shape, opts["data_mean"], opts["data_var"])
    mean, var = mean.to(dtype=torch.float64, device=device), var.to(dtype=torch.float64, device=device)
    x = alpha * mean + torch.sqrt(sigma**2 + alpha**2 * var) * xi.to(torch.float64)
    check_finite_output(x.to(dtype), "initial state of init='moment'", f"data_mean / data_var too large for {dtype}")
    return SamplerState(x.to(dtype), t0)


def _statistic(value: Any, shape: tuple[int, ...], what: str) -> Tensor:
    v = torch.as_tensor(value, dtype=torch.float64)
    try:
        return torch.broadcast_to(v.cpu(), shape).clone()
    except RuntimeError:
        raise ValueError(f"{what} of shape {tuple(v.shape)} does not broadcast to {shape}") from None


def _continuous_moments(flow: Flow, data_shape: tuple[int, ...], mean: Any, var: Any) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``x0`` per element: the given data statistics."""
    m, v = _statistic(mean, data_shape, "data_mean"), _statistic(var, data_shape, "data_var")
    if not torch.isfinite(m).all() or not torch.isfinite(v).all() or (v < 0).any():
        raise ValueError("data_mean must be finite and data_var finite and >= 0")
    return m, v


def _discrete_moments(flow: Flow, data_shape: tuple[int, ...], mean: Any, var: Any) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``x0 = K e_x - 1`` per element from the class frequencies ``e_bar``."""
    k = flow.state_shape(data_shape)[-1]
    e_bar = _statistic(mean, (*data_shape, k), "data_mean")
    if (e_bar < 0).any() or not torch.allclose(e_bar.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-6):
        raise ValueError("discrete data_mean must hold class frequencies (>= 0, summing to 1 over the last dim)")
    return k * e_bar - 1.0, k * k * e_bar * (1.0 - e_bar)


_MOMENTS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "continuous": _continuous_moments,
    "discretised": _continuous_moments,
    "discrete": _discrete_moments,
}


def _drop_continuous(flow: Flow, x0: Tensor) -> Tensor:
    return x0


def _drop_discretised(flow: Flow, x0: Tensor) -> Tensor:
    """The centre of the bin holding ``k_hat`` (the same centres as the draws from ``p_O``)."""
    return flow.bin_centres(x0.dtype, x0.device)[flow.bin_index(x0)]  # type: ignore[attr-defined]


def _drop_discrete(flow: Flow, x0: Tensor) -> Tensor:
    return x0.argmax(-1)


_DROP_OUTPUT: dict[str, Callable[[Flow, Tensor], Tensor]] = {
    "continuous": _drop_continuous,
    "discretised": _drop_discretised,
    "discrete": _drop_discrete,
}
"""Samples from the last data prediction (``final="drop"``)."""


def _denoise_continuous(ctx: StepContext, net_out: Tensor, x: Tensor, mode: bool) -> Tensor:
    return ctx.predictor.prediction(net_out, x, 0.0)


def _denoise_output(ctx: StepContext, net_out: Tensor, x: Tensor, mode: bool) -> Tensor:
    return ctx.flow.sample_output(net_out, x, ctx.generator, mode=mode)


_DENOISE_OUTPUT: dict[str, Callable[[StepContext, Tensor, Tensor, bool], Tensor]] = {
    "continuous": _denoise_continuous,
    "discretised": _denoise_output,
    "discrete": _denoise_output,
}
"""Samples from the output distribution at ``tau = 1`` (``final="denoise"`` and the original sampler)."""
