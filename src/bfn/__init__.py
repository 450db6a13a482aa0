"""bfn: Bayesian Flow Networks in PyTorch.

Implements, as one library:

* Bayesian Flow Networks (Graves et al., 2023): Bayesian updates, the Bayesian flow distribution, output / sender /
  receiver distributions, continuous-time, n-step and reconstruction losses, NLL bounds and the original sampler,
  for continuous, discretised and discrete data (:mod:`bfn.flows`, :class:`BFN`).
* BFN as linear SDEs and the BFN-Solvers (Xue et al., ICML 2024) (:mod:`bfn.sampling`).
* The path-integral dial ``h`` between the probability-flow ODE and the reverse SDE, and the PF-ODE likelihood
  with its first-order correction in ``h`` (Hirono et al., ICML 2024) (:mod:`bfn.sampling`, :mod:`bfn.likelihood`).

Glossary (symbol, meaning, name in code):

==================  =================================================================  =====================
symbol              meaning                                                            code
==================  =================================================================  =====================
tau                 BFN time, 0 = prior, 1 = data; the network always sees it          ``tau``
t = 1 - tau         solver / SDE time, 0 = data, 1 = prior                             ``t``
beta(tau)           accuracy schedule                                                  ``flow.beta``
gamma(tau)          ``beta / (1 + beta)`` (continuous)                                 ``flow.gamma``
alpha_i             sender accuracy of step i of n                                     ``flow.step_accuracies``
mu, rho             mean and precision of the continuous input distribution            ``mu``, ``rho``
theta, z            discrete input probabilities and their logits, theta = softmax(z)  ``theta``, ``z``
x_hat, k_hat        continuous / discretised data estimate                             ``x_hat``, ``k_hat``
e_hat (p_hat)       predicted class probabilities                                      ``e_hat``
alpha_t, sigma_t    SDE marginal coefficients: state | x0 ~ N(alpha_t x0, sigma_t^2)   ``sde.alpha``, ``sde.sigma``
lambda_t            half log-SNR, log(alpha_t / sigma_t)                               ``sde.lam``
f(t), g(t)^2        SDE drift and squared diffusion                                    ``sde.f``, ``sde.g2``
x0_hat              data prediction in state space (discrete: K e_hat - 1)             ``model.denoise``
eta                 end offset of the solver grid: t runs from 1 - eta to 0            ``eta``
h                   path-integral dial, noise-variance multiplier (0 ODE, 1 SDE)       ``h``
NFE                 network function evaluations                                       ``nfe``
==================  =================================================================  =====================
"""

from bfn import likelihood, sampling
from bfn._checks import MissingExtraError, NonFiniteError
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow, Flow
from bfn.model import BFN, bits_per_dim
from bfn.sampling import SAMPLERS, SampleOutput
from bfn.time import flip_clock, time_grid

__version__ = "0.1.0"

__all__ = [
    "BFN",
    "SAMPLERS",
    "ContinuousFlow",
    "DiscreteFlow",
    "DiscretisedFlow",
    "Flow",
    "MissingExtraError",
    "NonFiniteError",
    "SampleOutput",
    "__version__",
    "bits_per_dim",
    "flip_clock",
    "likelihood",
    "sampling",
    "time_grid",
]
