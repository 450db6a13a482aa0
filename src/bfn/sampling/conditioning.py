"""Conditional generation: classifier-free guidance and inpainting / infilling, for every kind and every sampler.

A :class:`Conditioning` sits where the network output is made (:class:`~bfn.sampling.engine.Predictor` and
:meth:`bfn.BFN.denoise`), so every sampler in :data:`~bfn.sampling.SAMPLERS` gets it without code of its own:

* **Classifier-free guidance** (Ho & Salimans, 2022, eq. 6). A conditional network is called as
  ``net(params, tau, labels)``; label ``C = num_classes`` is the *null label* (unconditional). With guidance scale
  ``s`` the conditional and the unconditional output are computed in one batched call of ``2B`` rows and combined:

  - continuous: the noise prediction, ``eps = eps_u + s (eps_c - eps_u)``; the data estimate ``x_hat`` is affine
    in ``eps``, so this is the same combination of the data predictions (before clipping);
  - discretised: the mean part ``mu_eps`` of the output the same way; ``log sigma_eps`` is the conditional one
    (extrapolating a log standard deviation has no meaning as a noise prediction, and keeping the conditional
    spread leaves ``s = 1`` exact);
  - discrete: the log-probabilities, ``log e = log e_u + s (log e_c - log e_u)``, renormalised: the output
    distribution is ``e_u^(1-s) e_c^s / Z``, the categorical analogue of the score combination.

  ``s = 1`` is the conditional model and ``s = 0`` the unconditional one; both take one network evaluation per
  call, any other ``s`` takes two (``nfe`` counts network evaluations, so a guided step costs twice as much).
* **Inpainting / infilling.** Known values ``x`` where ``mask`` is True. The network sees a belief per element;
  for a known element it sees (``inpaint=``)

  - ``"certain"`` (default): the most confident belief its input can express: discrete the one-hot ``theta = e_x``;
    continuous / discretised the noise-free flow mean ``mu = gamma(tau) x`` (the input carries no precision of its
    own, so a sharper belief than ``beta(tau)`` cannot be stated);
  - ``"replace"``: a fresh draw from the Bayesian flow distribution ``p_F(. | x; tau)`` (Graves et al., 2023,
    eqs. 77, 185), the belief the flow itself would hold at that time: the replacement method of diffusion
    inpainting (Song et al., 2021, app. I.2).

  In both, the output for a known element is replaced by the one that predicts ``x`` (so the data prediction, the
  original sampler's guess and the final draw are ``x``), and the samples equal ``x`` exactly where ``mask`` is
  True. On the exact oracles (``tests/test_conditioning.py``; ``benchmarks/inpainting_oracle.py``) ``"certain"``
  reaches the exact conditional as the steps grow, ``"replace"`` keeps a bias from the noisy belief.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import Tensor

from bfn.flows.base import Flow, as_f64
from bfn.flows.discrete import CERTAIN_LOGIT as CERTAIN_LOGIT  # the flows own the per-kind beliefs and outputs
from bfn.flows.discretised import LOG_SIGMA_KNOWN as LOG_SIGMA_KNOWN

if TYPE_CHECKING:
    from bfn.model import BFN

InpaintMethod = Literal["certain", "replace"]
INPAINT_METHODS: tuple[str, ...] = get_args(InpaintMethod)


@dataclass(frozen=True)
class Conditioning:
    """What a sampling run is conditioned on: labels with a guidance scale, and / or known values.

    Attributes:
        labels: ``(B,)`` long in ``0..C`` (``C`` = ``null_label``), or ``None`` (no label given: a conditional
            model is run with the null label).
        guidance: the scale ``s`` (1 = conditional, 0 = unconditional).
        null_label: ``C``, the model's ``num_classes`` (``None`` for an unconditional model).
        known: ``(B, *S)`` known data values (arbitrary, but valid, where ``mask`` is False), or ``None``.
        mask: ``(B, *S)`` bool, True where the value is known.
        method: how a known element is shown to the network (``"certain"`` or ``"replace"``).
    """

    labels: Tensor | None = None
    guidance: float = 1.0
    null_label: int | None = None
    known: Tensor | None = None
    mask: Tensor | None = None
    method: InpaintMethod = "certain"

    @property
    def guided(self) -> bool:
        """Whether a call needs both the conditional and the unconditional output."""
        return self.labels is not None and self.guidance not in (0.0, 1.0)

    @property
    def calls(self) -> int:
        """Network evaluations per prediction: 2 when guided, else 1."""
        return 2 if self.guided else 1

    def _call_labels(self) -> Tensor | None:
        if self.labels is None or self.guidance != 0.0:
            return self.labels
        return torch.full_like(self.labels, self.null_label)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------- network call
    def net_out(self, model: BFN, state: Tensor, tau: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The (guided) network output at ``state`` and BFN time ``tau``, known elements set to predict ``known``."""
        flow = model.flow
        inputs = self.network_state(flow, state, tau, generator)
        if self.guided:
            assert self.labels is not None and self.null_label is not None
            batch = state.shape[0]
            tau2 = as_f64(tau, state.device)
            tau2 = tau2.expand(batch) if tau2.ndim == 0 else tau2
            null = torch.full_like(self.labels, self.null_label)
            both = model.call_net(torch.cat([inputs, inputs]), torch.cat([tau2, tau2]), torch.cat([self.labels, null]))
            out = guide(flow, both[:batch], both[batch:], self.guidance)
        else:
            out = model.call_net(inputs, tau, self._call_labels())
        return self.known_output(flow, out, state, tau)

    def network_state(self, flow: Flow, state: Tensor, tau: Tensor, generator: torch.Generator | None) -> Tensor:
        """``state`` with the known elements replaced by the belief the network is shown (see the module doc)."""
        if self.mask is None:
            return state
        assert self.known is not None
        if self.method == "replace":
            belief = flow.flow_state(self.known, as_f64(tau, state.device), generator, dtype=state.dtype)
        else:
            belief = flow.certain_state(self.known, tau, state)
        return torch.where(flow.state_mask(self.mask), belief, state)

    def known_output(self, flow: Flow, out: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """Replace the network output of known elements by one whose prediction is the known value.

        Continuous: ``eps = (mu - gamma x)/sqrt(gamma (1 - gamma))`` (so ``x_hat = x``); discretised the same
        ``mu_eps`` with the smallest ``sigma_eps``; discrete the logits of a point mass on ``x``
        (:meth:`bfn.flows.Flow.known_output`).
        """
        if self.mask is None:
            return out
        assert self.known is not None
        return flow.known_output(out, state, self.known, self.mask, tau)

    # ------------------------------------------------------------------------------------------ predictions
    def prediction(self, flow: Flow, x0: Tensor) -> Tensor:
        """The data prediction ``x0_hat`` in state space with the known elements set to the known values exactly."""
        if self.mask is None:
            return x0
        assert self.known is not None
        return torch.where(flow.state_mask(self.mask), known_state(flow, self.known, x0.dtype), x0)

    def fill(self, samples: Tensor) -> Tensor:
        """Final samples with the known values where ``mask`` is True (exactly)."""
        if self.mask is None:
            return samples
        assert self.known is not None
        return torch.where(self.mask, self.known.to(samples.dtype), samples)


# --------------------------------------------------------------------------------------------- per kind
def guide(flow: Flow, out_c: Tensor, out_u: Tensor, scale: float) -> Tensor:
    """Combine the conditional and unconditional network outputs with guidance ``scale`` (:meth:`Flow.guide`)."""
    return flow.guide(out_c, out_u, scale)


def known_state(flow: Flow, known: Tensor, dtype: torch.dtype) -> Tensor:
    """Known data in state space (the samplers' ``x0``): continuous / discretised ``x``; discrete ``K e_x - 1``."""
    return flow.data_in_state_space(known, dtype)


# ------------------------------------------------------------------------------------------- validation
def build_conditioning(
    model: BFN,
    batch: int,
    labels: Any = None,
    guidance: Any = None,
    known: Any = None,
    mask: Any = None,
    inpaint: Any = "certain",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Conditioning | None:
    """Check the conditioning arguments of a sampling run of ``batch`` samples and build them (``None`` if none).

    Every problem is a ``ValueError`` naming the argument, raised before any network call.

    Args:
        model: the model (its ``num_classes``, flow and ``data_shape``).
        batch: number of samples.
        labels: an int or a ``(batch,)`` integer tensor in ``0..C``, ``C = model.num_classes`` the null label.
        guidance: the guidance scale ``s >= 0`` (needs ``labels``; default 1).
        known: known values, of shape ``data_shape`` (shared) or ``(batch, *data_shape)``; only the entries under
            ``mask`` are used (and checked against the flow's range).
        mask: bool tensor of the same shape choices, True where the value is known.
        inpaint: ``"certain"`` or ``"replace"`` (see the module docstring).
    """
    device = torch.device(device) if device is not None else model.device
    dtype = dtype or model.state_dtype()
    null = getattr(model, "num_classes", None)
    label_tensor = check_labels(labels, null, batch, device)
    if guidance is not None and label_tensor is None:
        raise ValueError("guidance needs labels (classifier-free guidance mixes the conditional and null outputs)")
    scale = 1.0 if guidance is None else _check_guidance(guidance)
    if not isinstance(inpaint, str) or inpaint not in INPAINT_METHODS:
        raise ValueError(f"inpaint must be one of {INPAINT_METHODS}, got {inpaint!r}")
    known_t, mask_t = _check_known(model, batch, known, mask, dtype, device)
    if label_tensor is None and mask_t is None:
        return None
    return Conditioning(label_tensor, scale, null, known_t, mask_t, inpaint)  # type: ignore[arg-type]


def check_labels(labels: Any, null: int | None, batch: int, device: torch.device | str) -> Tensor | None:
    """``labels`` (an int or a ``(batch,)`` integer tensor in ``0..null``) as a long tensor; ``ValueError`` else."""
    if labels is None:
        return None
    if null is None:
        raise ValueError("labels given, but the model is unconditional (build it with BFN(..., num_classes=C))")
    if isinstance(labels, bool) or not isinstance(labels, (int, Tensor)):
        raise ValueError(f"labels must be an int or a (num_samples,) integer tensor, got {type(labels).__name__}")
    tensor = torch.as_tensor(labels)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {tensor.dtype}")
    if tensor.ndim == 0:
        tensor = tensor.expand(batch)
    if tuple(tensor.shape) != (batch,):
        raise ValueError(f"labels must be an int or have shape ({batch},), got shape {tuple(tensor.shape)}")
    if tensor.numel() and (tensor.min() < 0 or tensor.max() > null):
        raise ValueError(
            f"labels must lie in 0..{null} ({null} = the null label), got min {tensor.min().item()}, "
            f"max {tensor.max().item()}"
        )
    return tensor.to(device=device, dtype=torch.long).clone()


def _check_guidance(guidance: Any) -> float:
    if isinstance(guidance, bool) or not isinstance(guidance, Real) or not math.isfinite(guidance) or guidance < 0:
        raise ValueError(
            f"guidance must be a finite number >= 0 (1 = conditional, 0 = unconditional), got {guidance!r}"
        )
    return float(guidance)


def _check_known(
    model: BFN, batch: int, known: Any, mask: Any, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    if known is None and mask is None:
        return None, None
    if known is None or mask is None:
        raise ValueError("inpainting needs both known (the values) and mask (True where known)")
    shape, flow = model.data_shape, model.flow
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor (True where the value is known), got {got}")
    if not isinstance(known, Tensor):
        raise ValueError(f"known must be a tensor, got {type(known).__name__}")
    mask_b, known_b = (_batched(v, shape, batch, what) for v, what in ((mask, "mask"), (known, "known")))
    mask_b = mask_b.to(device)
    known_b = flow.fill_known(known_b.to(device), mask_b, dtype)
    try:
        flow.check_data(known_b, shape)
    except ValueError as err:
        raise ValueError(f"known values (where mask is True): {err}") from None
    return flow.normalise_data(known_b), mask_b


def _batched(value: Tensor, shape: tuple[int, ...], batch: int, what: str) -> Tensor:
    if tuple(value.shape) == shape:
        return value.unsqueeze(0).expand(batch, *shape)
    if tuple(value.shape) == (batch, *shape):
        return value
    raise ValueError(f"{what} must have shape {shape} or {(batch, *shape)}, got {tuple(value.shape)}")
