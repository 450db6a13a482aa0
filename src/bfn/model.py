"""``BFN``: a network plus a flow; the entry points for losses, likelihood bounds and sampling."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from bfn._checks import (
    MAX_REPEATS,
    MAX_STEPS,
    check_batch,
    check_data_shape,
    check_dtype,
    check_finite_output,
    check_generator,
    check_int,
)
from bfn.flows.base import Flow, as_f64

if TYPE_CHECKING:
    from bfn.sampling import SampleOutput

TimeSampling = Literal["uniform", "stratified"]
TIME_SAMPLING: tuple[TimeSampling, ...] = ("uniform", "stratified")
"""How :meth:`BFN.loss_per_example` draws a batch's times: independently, or as one low-discrepancy set."""


class BFN(nn.Module):
    """A Bayesian Flow Network: a network ``net(params, tau)`` and the :class:`~bfn.flows.Flow` of a data kind.

    Network contract (per flow, ``S = data_shape``):

    ============================  =========================  ============================================
    flow                          network input              network output
    ============================  =========================  ============================================
    ``ContinuousFlow``            mean ``mu``, ``(B, *S)``   noise prediction ``eps_hat``, ``(B, *S)``
    ``DiscretisedFlow``           mean ``mu``, ``(B, *S)``   ``(mu_eps, log sigma_eps)``, ``(B, *S, 2)``
    ``DiscreteFlow``              ``theta``, ``(B, *S, K)``  logits, ``(B, *S, K)``
    ============================  =========================  ============================================

    and ``tau`` of shape ``(B,)`` in the input's dtype (BFN time: 0 = prior, 1 = data). A class-conditional
    model (``num_classes=C``) calls ``net(params, tau, labels)`` with ``labels`` a ``(B,)`` long tensor in
    ``0..C``; ``C`` is the null label (unconditional), used when no labels are given (see
    :mod:`bfn.sampling.conditioning` for classifier-free guidance and inpainting).

    Args:
        net: any ``nn.Module`` (or callable) of the contract above.
        flow: the data kind's flow.
        data_shape: shape of one example, without the batch (and, for discrete data, the class) dimension.
        dtype: floating dtype for discrete states when the network has no parameters to infer it from.
        num_classes: number of classes ``C`` of a class-conditional model (``None``: unconditional).
        label_dropout: probability with which :meth:`loss` replaces a label by the null label ``C``.
    """

    def __init__(
        self,
        net: nn.Module,
        flow: Flow,
        data_shape: tuple[int, ...] | int,
        dtype: torch.dtype | None = None,
        *,
        num_classes: int | None = None,
        label_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if net is None or not callable(net):
            raise ValueError(f"net must be an nn.Module or a callable net(params, tau), got {type(net).__name__}")
        if not isinstance(flow, Flow):
            raise ValueError(f"flow must be a bfn Flow (ContinuousFlow, ...), got {type(flow).__name__}")
        shape = check_data_shape(data_shape)
        dtype = check_dtype(dtype)
        _check_conditional(num_classes, label_dropout)
        self.net = net
        self.flow = flow
        self.data_shape = shape
        self._dtype = dtype
        self.num_classes = num_classes
        self.label_dropout = float(label_dropout)
        self._compiled: dict[str, Callable[..., Tensor]] = {}  # set by compile_core

    # ----------------------------------------------------------------------------------------------- basics
    @property
    def num_dims(self) -> int:
        """Number of data elements per example (``prod(data_shape)``)."""
        return math.prod(self.data_shape)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the network (parameters), or the default dtype."""
        if self._dtype is not None:
            return self._dtype
        for tensor in self._tensors():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        for tensor in self._tensors():
            return tensor.device
        return torch.device("cpu")

    def _tensors(self):
        if isinstance(self.net, nn.Module):
            yield from self.net.parameters()
            yield from self.net.buffers()

    def state_dtype(self, x: Tensor | None = None) -> torch.dtype:
        """The floating dtype of states: the data's own for continuous data, else the network's."""
        if x is not None and x.is_floating_point():
            return x.dtype
        return self.dtype

    def call_net(self, state: Tensor, tau: Tensor, labels: Tensor | None = None) -> Tensor:
        """Run the network on a state at BFN times ``tau`` (shape ``(B,)`` or scalar) and check its output.

        A conditional model passes ``labels`` (``(B,)`` long; the null label ``num_classes`` when ``None``).
        """
        inputs = self.flow.net_input(state)
        batch = state.shape[0]
        tau = as_f64(tau, state.device)
        if tau.ndim == 0:
            tau = tau.expand(batch)
        net = self.net if torch.compiler.is_compiling() else self._compiled.get("net", self.net)
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("labels given, but the model is unconditional (build it with BFN(..., num_classes=C))")
            out = net(inputs, tau.to(inputs.dtype))
        else:
            if labels is None:
                labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=state.device)
            out = net(inputs, tau.to(inputs.dtype), labels)
        expected = (batch, *self.flow.output_shape(self.data_shape))
        if not isinstance(out, Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"network returned shape {got}; expected {expected} for {type(self.flow).__name__}")
        if not torch.compiler.is_compiling():  # a data-dependent check: kept out of compiled graphs
            check_finite_output(out, f"network output ({type(self.net).__name__}, {type(self.flow).__name__})")
        return out

    def denoise(self, state: Tensor, t: Tensor | float, **conditioning: Any) -> Tensor:
        """Data prediction ``x0_hat`` in state space at *solver* time ``t`` (one network call, two when guided).

        ``conditioning``: ``labels``, ``guidance``, ``known``, ``mask``, ``inpaint`` as for :meth:`sample`
        (see :func:`bfn.sampling.conditioning.build_conditioning`). The prediction is made by
        :class:`bfn.sampling.Predictor`, as in every sampler.
        """
        from bfn.sampling.conditioning import build_conditioning
        from bfn.sampling.engine import Predictor

        cond = None
        if conditioning:
            cond = build_conditioning(self, state.shape[0], dtype=state.dtype, device=state.device, **conditioning)
        return Predictor(self, conditioning=cond)(state, t)

    def _check(self, x: Tensor) -> Tensor:
        """Validate a data batch and return it in the flow's dtype (discrete: class indices as ``torch.long``)."""
        check_batch(x, "x")
        self.flow.check_data(x, self.data_shape)
        return self.flow.normalise_data(x)

    def _check_labels(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        if labels is None:
            return None
        if isinstance(labels, Tensor) and labels.ndim == 0:
            raise ValueError(f"labels must have shape ({batch},), got a scalar tensor")
        from bfn.sampling.conditioning import check_labels

        return check_labels(labels, self.num_classes, batch, device)

    @staticmethod
    def _check_steps(steps: int | None) -> int | None:
        if steps is None:
            return None
        return check_int(steps, "steps", 1, MAX_STEPS)  # the n of the n-step loss; None: continuous time

    # ----------------------------------------------------------------------------------------------- losses
    def loss_per_example(
        self,
        x: Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        mc_samples: int = 1,
        labels: Tensor | None = None,
        time_sampling: TimeSampling = "uniform",
    ) -> Tensor:
        """Single-sample estimate of ``L_inf(x)`` (``steps=None``) or ``L_n(x)`` in nats per example, ``(B,)``.

        Each example gets its own time: ``tau ~ U(0, 1)``, or ``i ~ U{1..n}`` and ``tau = (i - 1)/n``. A conditional
        model takes ``labels`` ``(B,)`` in ``0..C`` (``None``: the null label ``C``); no label dropout here.

        ``time_sampling="stratified"`` draws the batch's times as one low-discrepancy set instead of independently
        (the variance reduction of Kingma et al., 2021, Variational Diffusion Models): one ``u_0 ~ U(0, 1)`` and
        ``u_b = (u_0 + b / B) mod 1`` for example ``b`` of ``B``, so every interval of length ``1 / B`` holds one
        time. Each ``u_b`` is still uniform, so every example's loss stays an unbiased estimate; only the batch
        mean's variance changes. ``"uniform"`` (the default) draws ``B`` independent times.
        """
        x = self._check(x)
        steps = self._check_steps(steps)
        mc_samples = check_int(mc_samples, "mc_samples", 1, MAX_REPEATS)
        check_generator(generator, x.device)
        _check_time_sampling(time_sampling)
        labels = self._check_labels(labels, x.shape[0], x.device)
        batch, device = x.shape[0], x.device
        if batch == 0:
            return torch.zeros(0, dtype=self.state_dtype(x), device=device)
        dtype = self.state_dtype(x)
        if time_sampling == "stratified":
            u0 = torch.rand(1, generator=generator, dtype=torch.float64, device=device)
            u = torch.remainder(u0 + torch.arange(batch, dtype=torch.float64, device=device) / batch, 1.0)
        else:
            u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
        alpha = None
        if steps is None:
            tau = u
        else:
            i = torch.floor(u * steps).clamp(max=steps - 1)  # i - 1 in {0, .., n - 1}
            tau = i / steps
            alpha = self.flow.step_accuracies(steps).to(device)[i.long()]
        state = self.flow.flow_state(x, tau, generator, dtype=dtype)
        core = self._compiled.get("loss", self._loss_from_state)
        return core(x, state, tau, alpha, steps, generator, mc_samples, labels)

    def _loss_from_state(
        self,
        x: Tensor,
        state: Tensor,
        tau: Tensor,
        alpha: Tensor | None,
        steps: int | None,
        generator: torch.Generator | None,
        mc_samples: int,
        labels: Tensor | None = None,
    ) -> Tensor:
        """Network call and loss on checked data and drawn inputs: the region :meth:`compile_core` compiles."""
        out = self.call_net(state, tau, labels)
        if steps is None:
            return self.flow.continuous_time_loss(out, x, state, tau)
        return self.flow.discrete_time_loss(out, x, state, tau, alpha, steps, generator, mc_samples=mc_samples)

    def compile_core(self, **options: Any) -> BFN:
        """Compile the network call and BFN's tensor maths with ``torch.compile(**options)``, in place.

        Compiled: the loss after the data checks and random draws (network, output distribution, loss; forward and
        backward), and every network call of the samplers and likelihoods. The checks stay outside the compiled
        region, so it has no graph breaks from them; weights, ``state_dict`` and checkpoints are unchanged. The first
        calls compile (seconds to minutes); later ones reuse the code. Returns ``self``.
        """
        self._compiled = {
            "loss": torch.compile(self._loss_from_state, **options),
            "net": torch.compile(self.net, **options),
        }
        return self

    def loss(
        self,
        x: Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        time_sampling: TimeSampling = "uniform",
    ) -> Tensor:
        """Training loss: ``L_inf`` (or ``L_n`` with ``steps=n``) in nats per data element, averaged over the batch.

        A conditional model trains on ``labels`` ``(B,)``, each replaced by the null label ``C`` with probability
        ``label_dropout`` (drawn from ``generator``), so that one network learns the conditional and the
        unconditional prediction (classifier-free guidance, Ho & Salimans, 2022). ``time_sampling``: how the batch's
        times are drawn, ``"uniform"`` (independent, the default) or ``"stratified"`` (see :meth:`loss_per_example`).
        """
        if isinstance(x, Tensor) and x.ndim >= 1 and x.shape[0] == 0:
            raise ValueError("x is an empty batch (shape[0] == 0); the mean loss of no examples is undefined")
        check_batch(x, "x")
        _check_time_sampling(time_sampling)
        labels = self._check_labels(labels, x.shape[0], x.device)
        labels = self.drop_labels(labels, generator) if labels is not None else None
        per_example = self.loss_per_example(x, steps, generator, labels=labels, time_sampling=time_sampling)
        return per_example.mean() / self.num_dims

    def drop_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Label dropout: each label replaced by the null label ``num_classes`` with probability ``label_dropout``."""
        if self.num_classes is None or self.label_dropout == 0:
            return labels
        drop = torch.rand(labels.shape, generator=generator, dtype=torch.float64, device=labels.device)
        return torch.where(drop < self.label_dropout, torch.full_like(labels, self.num_classes), labels)

    forward = loss

    def reconstruction_loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``L_r(x) = -E log p_O(x | params, 1)``, one Monte-Carlo sample, nats per example ``(B,)``."""
        x = self._check(x)
        check_generator(generator, x.device)
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=self.state_dtype(x), device=x.device)
        tau = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        state = self.flow.flow_state(x, tau, generator, dtype=self.state_dtype(x))
        return self.flow.reconstruction_loss(self.call_net(state, tau), x, state)

    def nll(
        self,
        x: Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        samples: int = 1,
        mc_samples: int = 1,
    ) -> Tensor:
        """Upper bound on ``-log p(x)`` in nats per example: ``L_inf + L_r`` or ``L_n + L_r``, shape ``(B,)``.

        An unbiased Monte-Carlo estimate; ``samples`` averages that many draws of the time (and flow) per example,
        ``mc_samples`` that many sender samples inside the n-step KL. Use :func:`bfn.bits_per_dim` to convert.
        """
        x = self._check(x)
        steps = self._check_steps(steps)
        samples = check_int(samples, "samples", 1, MAX_REPEATS)
        mc_samples = check_int(mc_samples, "mc_samples", 1, MAX_REPEATS)
        check_generator(generator, x.device)
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for _ in range(samples):
            loss = self.loss_per_example(x, steps, generator, mc_samples=mc_samples)
            total += (loss + self.reconstruction_loss(x, generator)).to(torch.float64)
        return total / samples

    # --------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        sampler: str = "auto",
        steps: int | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> SampleOutput:
        """Draw ``num_samples`` samples with a registered sampler (see :data:`bfn.sampling.SAMPLERS`).

        The default ``sampler="auto"`` runs the library's best measured configuration for the flow's kind with
        ``steps`` network calls (default 20; :mod:`bfn.sampling.auto`); a named sampler makes ``steps`` steps
        (default 100). Returns a :class:`~bfn.sampling.SampleOutput` with ``samples`` (continuous: floats in [-1, 1];
        discretised: bin centres; discrete: class indices), ``nfe``, the network calls actually made, and
        ``sampler`` / ``steps`` / ``options``, the configuration that ran.
        Conditioning: ``labels``, ``guidance``, ``known``, ``mask``, ``inpaint`` (see :func:`bfn.sampling.sample`).
        """
        from bfn.sampling import sample

        return sample(self, num_samples, sampler=sampler, steps=steps, generator=generator, **options)

    # ------------------------------------------------------------------------------------------ save / load
    def save_pretrained(
        self, folder: str | os.PathLike[str], *, net_name: str | None = None, net_options: dict | None = None
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``folder`` (see :func:`bfn.checkpoint.save_pretrained`).

        The network must be a reference network; its name and options come from ``net_name``/``net_options`` or,
        for models built by :meth:`from_pretrained` or by training, from the model itself.
        """
        from bfn.checkpoint import save_pretrained

        return save_pretrained(self, folder, net_name=net_name, net_options=net_options)

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], map_location: str | torch.device = "cpu", ema: bool = True
    ) -> BFN:
        """Rebuild a model from a model folder or a training run folder; never executes pickled code.

        Loads the EMA weights when ``ema`` and present, else the raw weights (see
        :func:`bfn.checkpoint.load_pretrained`). The model is returned in eval mode on ``map_location``.
        """
        from bfn.checkpoint import load_pretrained

        return load_pretrained(folder, map_location=map_location, ema=ema)


def _check_time_sampling(value: Any) -> None:
    if not isinstance(value, str) or value not in TIME_SAMPLING:
        raise ValueError(f"time_sampling must be one of {', '.join(map(repr, TIME_SAMPLING))}, got {value!r}")


def _check_conditional(num_classes: Any, label_dropout: Any) -> None:
    if num_classes is not None:
        check_int(num_classes, "num_classes (None for an unconditional model)")
    if isinstance(label_dropout, bool) or not isinstance(label_dropout, (int, float)) or not 0 <= label_dropout <= 1:
        raise ValueError(f"label_dropout must lie in [0, 1], got {label_dropout!r}")


NLL = TypeVar("NLL", float, Tensor)


def bits_per_dim(nll: NLL, data_shape: tuple[int, ...] | int) -> NLL:
    """An NLL in nats per example as bits per data element: ``nll / (D ln 2)`` (bits/dim, or bits/char for text).

    ``data_shape`` is the shape of one example or its number of elements ``D`` (``C * H * W`` for images, the
    sequence length for text). Works elementwise on tensors and arrays of any shape and on Python numbers. The one
    conversion of the package (also :func:`bfn.metrics.bits_per_dim` and the likelihood results' ``bits_per_dim``).
    """
    dims = math.prod(check_data_shape(data_shape))
    if nll is None or isinstance(nll, (bool, str, bytes)):
        raise ValueError(f"nll must be a tensor or a number of nats per example, got {type(nll).__name__}")
    return nll / (dims * math.log(2.0))
