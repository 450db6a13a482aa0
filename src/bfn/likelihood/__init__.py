"""Likelihoods of the deterministic and stochastic samplers: PF-ODE bound and its first-order correction in ``h``.

Following Hirono, Tanaka & Fukushima, *Understanding Diffusion Models by Feynman's Path Integral* (ICML 2024):

* :func:`pf_ode_nll` -- a bound on ``-log P(x)`` (nats per example; ``.bits_per_dim``) for the model that a BFN's
  probability-flow ODE samplers draw from: the instantaneous change-of-variables density of the input parameters
  at the data end, with the encoder / decoder terms that make it a data likelihood (continuous, discretised and
  discrete data). Exact trace for small states, Hutchinson for large ones; adaptive or fixed-step float64 ODE.
* :func:`wkb_correction` -- ``c(x)`` in ``NLL_h(x) = NLL_0(x) + h c(x) + O(h^2)``, where ``h`` multiplies the
  noise variance of the ``h``-sampler (0: ODE, 1: reverse SDE); for states of dimension <= 4.

When to use which: ``model.nll`` (the BFN ELBO) is the likelihood bound of BFN's own stochastic sampler and is
cheap; :func:`pf_ode_nll` is the likelihood of the fast deterministic samplers (tens to hundreds of network
calls per example, each with a backward pass); :func:`wkb_correction` tells, for toy models, how the likelihood
moves when a little noise is added to the sampler.

The generic building blocks work for any score of a linear SDE (:class:`VESDE`, :class:`SimpleVPSDE` or a flow's
``sde``): :func:`pf_ode_logp`, :func:`wkb_first_order`, :class:`GaussianPrior` and the batched integrator
:func:`integrate`.

The options are small frozen objects, checked when made and passed down unchanged (:mod:`bfn.likelihood.options`):
:class:`ODEOptions` (solver, tolerances, steps, integration variable; :data:`WKB_ODE` is the WKB default),
:class:`TraceOptions` (exact trace or Hutchinson probes), :class:`StartOptions` (``eta`` and the prior at
``t_max = 1 - eta``) and :class:`EncoderOptions` (encoder draws, antithetic pairs)::

    res = pf_ode_nll(model, x, start=StartOptions(eta=1e-3), ode=ODEOptions(rtol=1e-7, atol=1e-7),
                     trace=TraceOptions("hutchinson", probes=4), encoder=EncoderOptions(samples=8), generator=g)
"""

from bfn.likelihood.model import (
    DEFAULT_ETA,
    LikelihoodResult,
    bfn_score,
    latent_logp,
    latent_wkb,
    pf_ode_nll,
    wkb_correction,
)
from bfn.likelihood.ode import ODESolution, integrate
from bfn.likelihood.options import (
    MAX_EXACT_DIM,
    WKB_ODE,
    EncoderOptions,
    ODEOptions,
    StartOptions,
    TraceOptions,
)
from bfn.likelihood.pf_ode import ODELogDensity, pf_ode_logp
from bfn.likelihood.sdes import VESDE, GaussianPrior, SimpleVPSDE
from bfn.likelihood.wkb import MAX_WKB_DIM, WKBResult, wkb_first_order

__all__ = [
    "DEFAULT_ETA",
    "MAX_EXACT_DIM",
    "MAX_WKB_DIM",
    "VESDE",
    "WKB_ODE",
    "EncoderOptions",
    "GaussianPrior",
    "LikelihoodResult",
    "ODELogDensity",
    "ODEOptions",
    "ODESolution",
    "SimpleVPSDE",
    "StartOptions",
    "TraceOptions",
    "WKBResult",
    "bfn_score",
    "integrate",
    "latent_logp",
    "latent_wkb",
    "pf_ode_logp",
    "pf_ode_nll",
    "wkb_correction",
    "wkb_first_order",
]
