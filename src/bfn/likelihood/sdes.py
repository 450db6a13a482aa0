"""Two generic linear SDEs and a Gaussian prior, so the likelihood tools also run on ordinary diffusion models.

Both SDEs implement :class:`bfn.flows.LinearSDE` (``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``, drift ``f(t) x``,
squared diffusion ``g(t)^2``), the interface the BFN flows expose as ``flow.sde``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bfn.flows.base import LOG_2PI, LinearSDE, as_f64


class VESDE(LinearSDE):
    """Variance-exploding SDE with unit diffusion: ``dx = dw``, so ``alpha_t = 1``, ``sigma_t^2 = t``.

    ``f = 0``, ``g^2 = 1``, ``lambda_t = -log(t) / 2``. Data of variance ``s0^2`` have marginal variance
    ``s0^2 + t`` (the VE oracles of Hirono et al., 2024).
    """

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(as_f64(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(as_f64(t))

    def lam(self, t: Tensor) -> Tensor:
        return -0.5 * torch.log(as_f64(t))

    def t_of_lam(self, lam: Tensor) -> Tensor:
        return torch.exp(-2.0 * as_f64(lam))

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(as_f64(t))

    def g2(self, t: Tensor) -> Tensor:
        return torch.ones_like(as_f64(t))


class SimpleVPSDE(LinearSDE):
    """The "simple" variance-preserving SDE of Hirono et al. (2024): ``f(t) = -b t``, ``g(t)^2 = 2 b t``.

    ``alpha_t = exp(-b t^2 / 2)``, ``sigma_t^2 = 1 - exp(-b t^2)``, ``lambda_t = -log(expm1(b t^2)) / 2``. The
    paper's setting is ``b = 10`` on ``t in [0.01, 1]`` with an ``N(0, I)`` prior.
    """

    def __init__(self, b: float = 10.0) -> None:
        if not b > 0:
            raise ValueError(f"b must be > 0, got {b!r}")
        self.b = float(b)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.b * as_f64(t) ** 2)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(-self.b * as_f64(t) ** 2))

    def lam(self, t: Tensor) -> Tensor:
        return -0.5 * torch.log(torch.expm1(self.b * as_f64(t) ** 2))

    def t_of_lam(self, lam: Tensor) -> Tensor:
        return torch.sqrt(F.softplus(-2.0 * as_f64(lam)) / self.b)

    def f(self, t: Tensor) -> Tensor:
        return -self.b * as_f64(t)

    def g2(self, t: Tensor) -> Tensor:
        return 2.0 * self.b * as_f64(t)


@dataclass
class GaussianPrior:
    """Isotropic Gaussian log-density ``log N(x; mean, var I)`` summed over all but the batch dimension.

    ``mean`` and ``var`` are floats or tensors broadcasting against one example. Called on ``(B, ...)``, returns
    ``(B,)`` in float64.
    """

    mean: float | Tensor = 0.0
    var: float | Tensor = 1.0

    def __call__(self, x: Tensor) -> Tensor:
        x = as_f64(x)
        mean, var = as_f64(self.mean, x.device), as_f64(self.var, x.device)
        log_density = -0.5 * ((x - mean).square() / var + torch.log(var) + LOG_2PI)
        if log_density.shape != x.shape:
            log_density = log_density.expand(x.shape)
        return log_density.reshape(x.shape[0], -1).sum(1)
