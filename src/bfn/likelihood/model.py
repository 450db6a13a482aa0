"""PF-ODE likelihood bound and WKB correction of a BFN model (Hirono et al., ICML 2024, applied to BFN).

A BFN's fast deterministic samplers solve the probability-flow ODE of the linear SDE of its input parameters (the
*state*: the mean ``mu`` for continuous / discretised data, the logits ``y`` for discrete data; Xue et al., 2024) in
solver time ``t = 1 - tau``, started from a Gaussian at ``t_max = 1 - eta``. With the data prediction ``x0_hat``
the score is ``s = -(state - alpha_t x0_hat) / sigma_t^2``. The ODE defines a density ``l_0`` of the state at the
data end (``t = 0``, ``tau = 1``), which is turned into a bound on the data likelihood with an encoder ``r`` (the
SDE marginal at ``t = 0``, i.e. the Bayesian flow distribution at ``tau = 1``) and a decoder ``p_dec``:

    log P(x) >= E_{z ~ r(.|x)} [ l_0(z) + log p_dec(x | z) - log r(z | x) ].

* continuous (real-valued data): ``r = N(gamma_0 x, gamma_0 (1 - gamma_0) I)``, ``gamma_0 = 1 - sigma_1^2``, and
  the Bayes-consistent Gaussian decoder ``N(x; z / gamma_0, (1 - gamma_0) / gamma_0 I)``, for which
  ``log p_dec - log r = D log gamma_0`` exactly: ``log p(x) >= E_r[l_0(z)] + D log gamma_0`` (a density in nats).
* discretised: the same ``r`` centred at the bin centre, and the discretised output distribution
  ``p_O(x | mu, tau = 1)`` as decoder: a bound on the probability of the bins.
* discrete: ``r = N(beta_1 (K e_x - 1), K beta_1 I)`` per variable and the output distribution
  ``p_O(x | theta(y), tau = 1)`` as decoder: a bound on the probability of the classes. With an exact network the
  bound is exact with zero variance (Bayes: ``P(x) r(y|x) = q(y) P(x|y)``).

Assumptions: the data prediction is used *unclipped* (``x_hat`` is not clipped to [-1, 1] here, whatever
``flow.clip`` says, because clipping breaks the score / ODE identities); ``eta`` must be at least the flow's
``tau < 1e-6`` cut-off; the prior at ``t_max`` is ``N(0, sigma_{t_max}^2 I)`` (continuous
``N(0, gamma_eta (1 - gamma_eta) I)``, discrete ``N(0, K beta_1 eta^2 I)``), the initial distribution of the
BFN-Solver samplers, so the result is the likelihood of the model those samplers draw from with the same ``eta``.
The network runs in its own dtype (float32 nets are fed float32 inputs); the ODE state, the schedules and all
sums are float64. Put the network in eval mode first (dropout would make the ODE random).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bfn._checks import check_generator
from bfn.flows import DEFAULT_ETA as DEFAULT_ETA  # re-exported by bfn.likelihood
from bfn.flows.base import LOG_2PI, LinearSDE, as_f64
from bfn.likelihood.options import (
    DEFAULT_ENCODER,
    DEFAULT_ODE,
    DEFAULT_START,
    DEFAULT_TRACE,
    WKB_ODE,
    EncoderOptions,
    LogDensityFn,
    ODEOptions,
    StartOptions,
    TraceOptions,
    check_options,
)
from bfn.likelihood.pf_ode import ODELogDensity, ScoreFn, pf_ode_logp
from bfn.likelihood.wkb import WKBResult, check_wkb_dim, wkb_first_order
from bfn.model import BFN, bits_per_dim
from bfn.sampling.engine import Predictor, score_from_prediction


@dataclass
class LikelihoodResult:
    """Per-example PF-ODE bound on the negative log-likelihood.

    Attributes:
        nll: ``-E_r[l_0 + log p_dec - log r]`` in nats per example, float64 ``(B,)`` (an upper bound on
            ``-log P(x)``; continuous data: a density, so it can be negative).
        stderr: Monte-Carlo standard error of ``nll``: over encoder draws when ``encoder.samples >= 2``, else over
            Hutchinson probes (0 for the exact trace with one encoder draw; NaN for one probe).
        nfe: network forward calls, each on the whole batch of ``B * encoder.samples`` rows (decoder call
            included); every ODE evaluation also backpropagates once through the network (vectorised over the
            ``D`` Jacobian rows or the probes).
        num_dims: data elements per example (for :attr:`bits_per_dim`).
    """

    nll: Tensor
    stderr: Tensor
    nfe: int
    num_dims: int

    @property
    def bits_per_dim(self) -> Tensor:
        """``nll / (num_dims ln 2)``: bits per data element (bits per character for text)."""
        return bits_per_dim(self.nll, self.num_dims)


# ----------------------------------------------------------------------------------------------- the BFN score
def data_prediction(model: BFN, state: Tensor, t: Tensor, predictor: Predictor | None = None) -> Tensor:
    """Unclipped ``x0_hat`` in state space at solver times ``t`` (float64; the network runs in its own dtype).

    Made by the samplers' :class:`~bfn.sampling.Predictor` (``clip=False``), from a float64 state.
    """
    predictor = predictor or Predictor(model, clip=False)
    out = as_f64(predictor.net_out(state.to(model.dtype), t))
    return as_f64(predictor.prediction(out, state, t))


def bfn_score(model: BFN) -> ScoreFn:
    """The model score of a BFN's state SDE, ``s(state, t) = -(state - alpha_t x0_hat) / sigma_t^2`` (unclipped;
    :func:`bfn.sampling.score_from_prediction`)."""
    sde, predictor = model.flow.sde, Predictor(model, clip=False)

    def score(state: Tensor, t: Tensor) -> Tensor:
        return score_from_prediction(sde, state, data_prediction(model, state, t, predictor), t)

    return score


def state_ode(model: BFN, start: StartOptions) -> tuple[ScoreFn, LinearSDE, float, LogDensityFn]:
    """The PF-ODE of a BFN's state from ``start``: the score, the SDE, ``t_max`` and the log-prior there."""
    return bfn_score(model), model.flow.sde, start.t_max(model.flow), start.log_prior(model.flow)


def latent_logp(
    model: BFN,
    state: Tensor,
    *,
    start: StartOptions = DEFAULT_START,
    ode: ODEOptions = DEFAULT_ODE,
    trace: TraceOptions = DEFAULT_TRACE,
    generator: torch.Generator | None = None,
) -> ODELogDensity:
    """``l_0(state)``: the PF-ODE log-density of the state (input parameters) at the data end ``t = 0``.

    ``state`` has the flow's state shape ``(B, *S)`` (discrete: logits ``(B, *S, K)``). This is a density of the
    state, not of the data; :func:`pf_ode_nll` turns it into a bound. Options as in :func:`pf_ode_nll`; the
    integration variable ``"auto"`` is ``lambda`` here, the robust choice for BFN.
    """
    check_options(start=start)
    score, sde, t_max, log_prior = state_ode(model, start)
    return pf_ode_logp(score, sde, state, 0.0, t_max, log_prior, ode=ode, trace=trace, generator=generator)


def latent_wkb(
    model: BFN, state: Tensor, *, start: StartOptions = DEFAULT_START, ode: ODEOptions = WKB_ODE
) -> WKBResult:
    """WKB expansion ``-log q^h_0(state) = nll0 + h coef + O(h^2)`` of the state density (state dimension <= 4)."""
    check_options(start=start)
    score, sde, t_max, log_prior = state_ode(model, start)
    return wkb_first_order(score, sde, state, 0.0, t_max, log_prior, ode=ode)


# -------------------------------------------------------------------------------------- encoder and decoder
def encode(
    model: BFN, x: Tensor, encoder: EncoderOptions, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``encoder.samples`` states per example from ``r(.|x) = N(alpha_0 x0, sigma_0^2 I)`` (rows
    example-major).

    Returns the repeated data ``(B * samples, ...)``, the states and ``log r`` of each state. With
    ``encoder.antithetic``, the noise of odd-numbered samples is the negated noise of the sample before (an unbiased
    variance reduction).
    """
    samples, sde = encoder.samples, model.flow.sde
    zero = torch.zeros((), dtype=torch.float64)
    x_rep = x.repeat_interleave(samples, dim=0)
    mean = float(sde.alpha(zero)) * model.flow.data_in_state_space(x_rep)
    sigma = float(sde.sigma(zero))
    draw = {"generator": generator, "dtype": torch.float64, "device": mean.device}
    if encoder.antithetic:
        half = torch.randn((x.shape[0], (samples + 1) // 2, *mean.shape[1:]), **draw)
        noise = torch.stack([half, -half], dim=2).flatten(1, 2)[:, :samples].reshape(mean.shape)
    else:
        noise = torch.randn(mean.shape, **draw)
    log_r = (-0.5 * noise.square() - math.log(sigma) - 0.5 * LOG_2PI).reshape(noise.shape[0], -1).sum(1)
    return x_rep, mean + sigma * noise, log_r


def decoder_minus_encoder(model: BFN, x: Tensor, state: Tensor, log_r: Tensor) -> tuple[Tensor, int]:
    """``log p_dec(x | state) - log r(state | x)`` per row and the network calls it made (the flow's decoder,
    :meth:`bfn.flows.Flow.decoder_log_ratio`).

    Continuous: ``D log gamma_0`` (Bayes-consistent Gaussian decoder, no network call). Discretised and discrete:
    the flow's output distribution at ``tau = 1`` (its reconstruction term).
    """
    tau = torch.ones(state.shape[0], dtype=torch.float64, device=state.device)

    def net_out() -> Tensor:
        return as_f64(model.call_net(state.to(model.dtype), tau))

    with torch.no_grad():
        return model.flow.decoder_log_ratio(x, state, log_r, net_out)


def encode_and_decode(
    model: BFN, x: Tensor, encoder: EncoderOptions, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, int]:
    """The encoder draws of the bound (:func:`encode`), their ``log p_dec - log r`` and the decoder's network calls
    (:func:`decoder_minus_encoder`)."""
    x_rep, state, log_r = encode(model, x, encoder, generator)
    log_ratio, decoder_calls = decoder_minus_encoder(model, x_rep, state, log_r)
    return state, log_ratio, decoder_calls


def _check_arguments(model: BFN, x: Tensor, generator: torch.Generator | None, start: StartOptions) -> Tensor:
    """Check the arguments of :func:`pf_ode_nll` / :func:`wkb_correction` before any network call (the options
    objects checked their own fields); returns the checked data batch."""
    if not isinstance(model, BFN):
        raise ValueError(f"model must be a bfn.BFN, got {type(model).__name__}")
    x = model._check(x)
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (shape[0] == 0)")
    check_generator(generator, x.device)
    start.t_max(model.flow)  # eta against the flow's limit
    return x


def _mean_and_stderr(values: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """Mean over encoder samples and its standard error (``values``: ``(B * samples,)``, example-major)."""
    values = values.reshape(-1, samples)
    if samples == 1:
        return values[:, 0], torch.zeros_like(values[:, 0])
    return values.mean(1), values.std(1) / math.sqrt(samples)


# -------------------------------------------------------------------------------------------- public entry points
def pf_ode_nll(
    model: BFN,
    x: Tensor,
    *,
    start: StartOptions = DEFAULT_START,
    ode: ODEOptions = DEFAULT_ODE,
    trace: TraceOptions = DEFAULT_TRACE,
    encoder: EncoderOptions = DEFAULT_ENCODER,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """Probability-flow ODE bound on ``-log P(x)`` of a BFN, in nats per example (module docstring for the bound).

    ``-E_{z ~ r(.|x)}[l_0(z) + log p_dec(x|z) - log r(z|x)]`` with ``l_0`` the log-density of the model's PF-ODE
    started from ``start.prior`` at ``t_max = 1 - eta`` (Hirono et al., ICML 2024; docs/likelihood.md 4.2 and 6.4;
    the module docstring). ``.bits_per_dim`` converts. For example
    ``pf_ode_nll(model, x, start=StartOptions(eta=1e-3), ode=ODEOptions(rtol=1e-7, atol=1e-7),
    trace=TraceOptions("hutchinson", probes=4), encoder=EncoderOptions(samples=8, antithetic=True), generator=g)``.

    Args:
        model: the BFN (its network in eval mode).
        x: a batch of data in the flow's format (checked by the flow).
        start: ``eta`` and the prior at ``t_max`` (:class:`~bfn.likelihood.StartOptions`; default: the samplers'
            start with the kind's default ``eta``). Use the ``eta`` of the sampler you evaluate.
        ode: the solver (:class:`~bfn.likelihood.ODEOptions`: adaptive ``rk45`` at ``rtol = atol = 1e-5``, the
            usual setting, in ``lambda``; tighten for reference numbers).
        trace: the divergence (:class:`~bfn.likelihood.TraceOptions`: exact trace for ``D <= 16``, ``D`` counting
            classes for discrete data; Hutchinson above, for images and text).
        encoder: Monte-Carlo draws of ``z ~ r(.|x)`` per example (:class:`~bfn.likelihood.EncoderOptions`;
            ``samples >= 2`` gives the standard error, ``antithetic`` pairs mirror-image draws).
        generator: random stream for the encoder noise and the probes.
    """
    check_options(start=start, ode=ode, trace=trace, encoder=encoder)
    x = _check_arguments(model, x, generator, start)
    state, log_ratio, decoder_calls = encode_and_decode(model, x, encoder, generator)
    latent = latent_logp(model, state, start=start, ode=ode, trace=trace, generator=generator)
    nll, stderr = _mean_and_stderr(-(latent.logp + log_ratio), encoder.samples)
    if encoder.samples == 1:
        stderr = latent.stderr
    return LikelihoodResult(nll=nll, stderr=stderr, nfe=latent.nfe + decoder_calls, num_dims=model.num_dims)


def wkb_correction(
    model: BFN,
    x: Tensor,
    *,
    start: StartOptions = DEFAULT_START,
    ode: ODEOptions = WKB_ODE,
    encoder: EncoderOptions = DEFAULT_ENCODER,
    generator: torch.Generator | None = None,
) -> WKBResult:
    """First-order correction in ``h`` of the BFN likelihood bound: ``NLL_h(x) = nll0 + h coef + O(h^2)``.

    ``h`` is the noise-variance dial of the ``h``-sampler (0: the PF-ODE / BFN-Solver ODE samplers, 1: the reverse
    SDE). Only the state density depends on ``h`` (the encoder and decoder do not), so with ``l1`` the first-order
    term of the state density at ``t = 0`` (see :mod:`bfn.likelihood.wkb`):

    * ``nll0 = -E_r[l_0(z) + log p_dec(x|z) - log r(z|x)]``, the :func:`pf_ode_nll` bound (exact trace);
    * ``coef = c(x) = -E_r[l1(z)]``: the derivative in ``h`` at ``h = 0`` of the bound on ``-log P(x)`` of the
      ``h``-sampler's model, i.e. of the encoder average of the state NLL ``-log q^h_0(z)``.

    The state (``D`` data elements, or ``L K`` logits for discrete data) must have dimension ``<= 4``
    (``ValueError`` above): the sweep carries the ``D x D`` Hessian of the log-density and third derivatives of
    the network (autograd). Arguments as in :func:`pf_ode_nll`; the default ``ode`` is
    :data:`~bfn.likelihood.WKB_ODE` (``rtol = atol = 1e-6``).
    """
    check_options(start=start, ode=ode, encoder=encoder)
    x = _check_arguments(model, x, generator, start)
    check_wkb_dim(math.prod(model.flow.state_shape(model.data_shape)))
    state, log_ratio, decoder_calls = encode_and_decode(model, x, encoder, generator)
    latent = latent_wkb(model, state, start=start, ode=ode)
    nll0, stderr_nll0 = _mean_and_stderr(latent.nll0 - log_ratio, encoder.samples)
    coef, stderr_coef = _mean_and_stderr(latent.coef, encoder.samples)
    return WKBResult(
        nll0=nll0,
        coef=coef,
        nfe=latent.nfe + decoder_calls,
        stderr_nll0=stderr_nll0,
        stderr_coef=stderr_coef,
        roundtrip_error=latent.roundtrip_error.reshape(-1, encoder.samples).amax(1),
    )
