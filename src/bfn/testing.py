"""Exact oracles for testing BFN code: "networks" of the bfn contract whose outputs are Bayes-optimal in closed form.

Each denoiser is an ``nn.Module`` called as ``net(params, tau)`` that computes, in float64, the optimal output for a
known data distribution, so losses, samplers and likelihoods (yours or the library's) can be checked without
training: with an exact denoiser the continuous-time loss equals the mutual information of the data and the final
message, the samplers reproduce the data distribution as the number of steps grows, and the PF-ODE bound is exact
for categorical data (Graves et al., 2023, sec. 4-6; Xue et al., ICML 2024, sec. 4-5).

* :class:`GaussianDenoiser`, :class:`MixtureDenoiser`: continuous data ``N(m, s^2)`` or a Gaussian mixture per
  element (noise prediction for :class:`~bfn.ContinuousFlow`); :func:`mixture_sample` draws from the mixture.
* :class:`CategoricalDenoiser`, :class:`JointTableDenoiser`: discrete data with independent positions or a joint
  table over positions (logits for :class:`~bfn.DiscreteFlow`).
* :class:`ExactBinPosteriorFlow`: a discretised flow whose output distribution is the exact bin posterior.
* :class:`ZeroNet`: zeros of the contract's shape (the constant predictor of the losses' closed forms).
* Conditional generation: :class:`ConditionalNet` (one oracle per label, the last for the null label),
  :class:`CorrelatedGaussianDenoiser` (correlated Gaussian examples), :class:`BinaryBinTableNet` (a joint table of
  two-bin discretised data) and :class:`TripleTable` (a joint table over three discrete positions).

Example::

    flow = bfn.ContinuousFlow(0.02, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, m=0.3, s=0.4), flow, data_shape=(1,), dtype=torch.float64)
    out = model.sample(10_000, sampler="bfn-solver++2", steps=20)   # ~ N(0.3, 0.4^2)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bfn.flows import ContinuousFlow, DiscretisedFlow
from bfn.flows.continuous import T_MIN

__all__ = [
    "BinaryBinTableNet",
    "CategoricalDenoiser",
    "ConditionalNet",
    "CorrelatedGaussianDenoiser",
    "ExactBinPosteriorFlow",
    "GaussianDenoiser",
    "JointTableDenoiser",
    "MixtureDenoiser",
    "TripleTable",
    "ZeroNet",
    "gaussian_entropy",
    "mixture_sample",
]


def _gamma(flow: ContinuousFlow | DiscretisedFlow, tau: Tensor, like: Tensor) -> Tensor:
    g = flow.gamma(tau.to(torch.float64))
    return g.reshape(g.shape + (1,) * (like.ndim - g.ndim))


class _ContinuousOracle(nn.Module):
    """Turns an exact data prediction ``x_hat(mu, gamma)`` into the noise prediction the flow expects."""

    def __init__(self, flow: ContinuousFlow) -> None:
        super().__init__()
        self.flow = flow

    def x_hat(self, mu: Tensor, gamma: Tensor) -> Tensor:
        """The exact data prediction ``E[x | mu]`` at ``gamma = gamma(tau)`` (float64, broadcast per example)."""
        raise NotImplementedError

    def forward(self, mu: Tensor, tau: Tensor) -> Tensor:
        mu64 = mu.to(torch.float64)
        tau64 = tau.to(torch.float64).clamp_min(T_MIN)
        gamma = _gamma(self.flow, tau64, mu64)
        x_hat = self.x_hat(mu64, gamma)
        eps = (mu64 - gamma * x_hat) / torch.sqrt(gamma * (1.0 - gamma))
        return eps.to(mu.dtype)


class GaussianDenoiser(_ContinuousOracle):
    """Exact ``E[x | mu]`` for data ``x ~ N(m, s^2)`` per element (optionally a mis-scaled slope)."""

    def __init__(self, flow: ContinuousFlow, m: float, s: float, slope_scale: float = 1.0) -> None:
        super().__init__(flow)
        self.m, self.s, self.slope_scale = m, s, slope_scale

    def x_hat(self, mu: Tensor, gamma: Tensor) -> Tensor:
        var = gamma**2 * self.s**2 + gamma * (1.0 - gamma)
        return self.m + self.slope_scale * gamma * self.s**2 / var * (mu - gamma * self.m)


class MixtureDenoiser(_ContinuousOracle):
    """Exact ``E[x | mu]`` for i.i.d. elements ``x ~ sum_k w_k N(m_k, s_k^2)``."""

    def __init__(self, flow: ContinuousFlow, weights: list[float], means: list[float], stds: list[float]) -> None:
        super().__init__(flow)
        self.register_buffer("w", torch.tensor(weights, dtype=torch.float64))
        self.register_buffer("m", torch.tensor(means, dtype=torch.float64))
        self.register_buffer("s", torch.tensor(stds, dtype=torch.float64))

    def x_hat(self, mu: Tensor, gamma: Tensor) -> Tensor:
        mu, gamma = mu.unsqueeze(-1), gamma.unsqueeze(-1)
        var = gamma**2 * self.s**2 + gamma * (1.0 - gamma)
        log_r = torch.log(self.w) - 0.5 * (mu - gamma * self.m) ** 2 / var - 0.5 * torch.log(var)
        r = torch.softmax(log_r, dim=-1)
        return (r * (self.m + gamma * self.s**2 / var * (mu - gamma * self.m))).sum(-1)


def mixture_sample(n: int, weights, means, stds, generator: torch.Generator) -> Tensor:
    """Draw ``n`` samples from a 1-D Gaussian mixture."""
    k = torch.multinomial(torch.tensor(weights, dtype=torch.float64), n, replacement=True, generator=generator)
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    return torch.tensor(means, dtype=torch.float64)[k] + torch.tensor(stds, dtype=torch.float64)[k] * z


class CategoricalDenoiser(nn.Module):
    """Exact ``p(x_d = k | theta)`` for independent positions with prior ``probs``: ``softmax(log pi + log theta)``."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.register_buffer("log_pi", torch.log(torch.tensor(probs, dtype=torch.float64)))

    def forward(self, theta: Tensor, tau: Tensor) -> Tensor:
        logits = self.log_pi + torch.log(theta.to(torch.float64).clamp_min(1e-300))
        return logits.to(theta.dtype)


class JointTableDenoiser(nn.Module):
    """Exact per-position marginals of the posterior ``w(x) ~ P(x) prod_d theta_d[x_d]`` for a joint table ``P``.

    ``P`` has shape ``(K,) * D`` (D positions, K classes); the network input is ``theta`` of shape ``(B, D, K)``.
    """

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("log_p", torch.log(table.to(torch.float64)))

    def forward(self, theta: Tensor, tau: Tensor) -> Tensor:
        num_pos = theta.shape[1]
        log_theta = torch.log(theta.to(torch.float64).clamp_min(1e-300))
        log_w = self.log_p.unsqueeze(0).clone()
        for d in range(num_pos):
            shape = [theta.shape[0]] + [1] * num_pos
            shape[d + 1] = theta.shape[-1]
            log_w = log_w + log_theta[:, d].reshape(shape)
        marginals = []
        for d in range(num_pos):
            other = tuple(i + 1 for i in range(num_pos) if i != d)
            marginals.append(torch.logsumexp(log_w, dim=other) if other else log_w)
        return torch.stack(marginals, dim=1).to(theta.dtype)


class ExactBinPosteriorFlow(DiscretisedFlow):
    """A discretised flow whose output distribution is the exact bin posterior for i.i.d. elements with prior ``probs``.

    ``p(k | mu, tau) ~ probs_k N(mu; gamma c_k, gamma (1 - gamma))``; the network output is ignored, so any net of
    the right output shape (e.g. :class:`ZeroNet`) can be used with it.
    """

    def __init__(self, num_bins: int, sigma_1: float, probs: list[float]) -> None:
        super().__init__(num_bins, sigma_1)
        self.log_pi = torch.log(torch.tensor(probs, dtype=torch.float64))

    def bin_probs(self, net_out: Tensor, mu: Tensor, tau: Tensor) -> Tensor:
        mu64 = mu.to(torch.float64).unsqueeze(-1)
        gamma = _gamma(self, tau.to(torch.float64), mu).unsqueeze(-1)
        centres = self.bin_centres(torch.float64, mu.device)
        var = (gamma * (1.0 - gamma)).clamp_min(1e-300)
        log_w = self.log_pi.to(mu.device) - 0.5 * (mu64 - gamma * centres) ** 2 / var
        return torch.softmax(log_w, dim=-1).to(mu.dtype)

    def data_prediction(self, net_out: Tensor, state: Tensor, tau: Tensor, clip: bool | None = None) -> Tensor:
        return self.k_hat(self.bin_probs(net_out, state, tau))

    def draw_bins(self, net_out: Tensor, state: Tensor, tau: Tensor, generator: torch.Generator | None) -> Tensor:
        probs = self.bin_probs(net_out, state, tau)
        flat = torch.multinomial(probs.reshape(-1, self.num_bins), 1, generator=generator)
        return flat.reshape(probs.shape[:-1])

    def mode_bins(self, net_out: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        return self.bin_probs(net_out, state, tau).argmax(-1)


class ZeroNet(nn.Module):
    """Outputs zeros of the contract's shape: ``(B, *S)`` or ``(B, *S, channels)``; input ``(B, *S[, C])``."""

    def __init__(self, channels: int = 1, input_has_channels: bool = False) -> None:
        super().__init__()
        self.channels, self.input_has_channels = channels, input_has_channels

    def forward(self, inputs: Tensor, tau: Tensor) -> Tensor:
        base = inputs.shape[:-1] if self.input_has_channels else inputs.shape
        shape = base if self.channels == 1 else (*base, self.channels)
        return torch.zeros(shape, dtype=inputs.dtype, device=inputs.device)


def gaussian_entropy(s: float) -> float:
    """Differential entropy of ``N(m, s^2)`` in nats."""
    return 0.5 * math.log(2 * math.pi * math.e * s**2)


# ------------------------------------------------------------------------------------ conditional oracles
class ConditionalNet(nn.Module):
    """A class-conditional network ``net(params, tau, labels)`` from one exact oracle per label.

    ``nets[c]`` answers for label ``c``; the last one answers for the null label ``C = len(nets) - 1``.
    """

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, inputs: Tensor, tau: Tensor, labels: Tensor) -> Tensor:
        outs = [net(inputs, tau) for net in self.nets]
        out = torch.stack(outs, 0)  # (C + 1, B, ...)
        index = labels.reshape(1, -1, *([1] * (out.ndim - 2))).expand(1, *out.shape[1:])
        return out.gather(0, index).squeeze(0)


class CorrelatedGaussianDenoiser(_ContinuousOracle):
    """Exact ``E[x | mu]`` for ``x ~ N(m, Sigma)`` over the ``D`` elements of an example (data shape ``(D,)``).

    ``mu ~ N(gamma x, gamma (1 - gamma) I)`` given ``x``, so
    ``x_hat = m + gamma Sigma (gamma^2 Sigma + gamma (1 - gamma) I)^-1 (mu - gamma m)``.
    """

    def __init__(self, flow: ContinuousFlow, mean: list[float], cov: list[list[float]]) -> None:
        super().__init__(flow)
        self.register_buffer("m", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("cov", torch.tensor(cov, dtype=torch.float64))

    def x_hat(self, mu: Tensor, gamma: Tensor) -> Tensor:
        g = gamma.reshape(-1, 1, 1)
        eye = torch.eye(self.m.numel(), dtype=torch.float64, device=mu.device)
        a = g**2 * self.cov + g * (1.0 - g) * eye
        r = (mu - gamma * self.m).unsqueeze(-1)
        return self.m + (g * self.cov @ torch.linalg.solve(a, r)).squeeze(-1)


class BinaryBinTableNet(nn.Module):
    """Exact network for discretised data on ``K = 2`` bins with a joint table ``P`` of shape ``(2,) * D``.

    The exact output distribution is the posterior marginal ``p_d = P(bin_d = 1 | mu)`` of
    ``w(k) ~ P(k) prod_d N(mu_d; gamma c_{k_d}, gamma (1 - gamma))``. With two bins (edge at 0) the flow's
    Gaussian output ``N(mu_x, 1)`` represents it exactly with ``mu_x = Phi^-1(p_d)``; the network returns the
    ``(mu_eps, log sigma_eps)`` that give that ``mu_x`` and ``sigma_x = 1``.
    """

    def __init__(self, flow: DiscretisedFlow, table: Tensor) -> None:
        super().__init__()
        if flow.num_bins != 2:
            raise ValueError("BinaryBinTableNet needs a flow with 2 bins")
        self.flow = flow
        self.register_buffer("log_p", torch.log(table.to(torch.float64)))

    def forward(self, mu: Tensor, tau: Tensor) -> Tensor:
        mu64 = mu.to(torch.float64)
        tau64 = tau.to(torch.float64).clamp_min(T_MIN)
        gamma = _gamma(self.flow, tau64, mu64)
        var = gamma * (1.0 - gamma)
        centres = self.flow.bin_centres(torch.float64, mu.device)  # (2,)
        # log N(mu_d; gamma c_k, var) per position and bin, (B, D, 2)
        log_lik = -0.5 * (mu64.unsqueeze(-1) - gamma.unsqueeze(-1) * centres) ** 2 / var.unsqueeze(-1)
        num_pos = mu.shape[1]
        log_w = self.log_p.unsqueeze(0).clone()
        for d in range(num_pos):
            shape = [mu.shape[0]] + [1] * num_pos
            shape[d + 1] = 2
            log_w = log_w + log_lik[:, d].reshape(shape)
        p1 = []
        for d in range(num_pos):
            other = tuple(i + 1 for i in range(num_pos) if i != d)
            marg = torch.logsumexp(log_w, dim=other) if other else log_w
            p1.append(torch.softmax(marg, dim=-1)[:, 1])
        p = torch.stack(p1, 1).clamp(1e-12, 1.0 - 1e-12)
        mu_x = torch.special.ndtri(p)
        scale = torch.sqrt((1.0 - gamma) / gamma)
        mu_eps = (mu64 / gamma - mu_x) / scale
        log_sigma_eps = -torch.log(scale).expand_as(mu_eps)
        return torch.stack([mu_eps, log_sigma_eps], -1).to(mu.dtype)


class TripleTable(nn.Module):
    """Exact per-position posterior marginals for three positions with joint table ``P`` (the maths of
    :class:`JointTableDenoiser` for D = 3, written with einsum so that 10^4 samples stay cheap)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, theta: Tensor, tau: Tensor) -> Tensor:
        a, b, c = theta.double().unbind(1)
        p = self.table
        marginals = torch.stack(
            [
                a * torch.einsum("ijk,bj,bk->bi", p, b, c),
                b * torch.einsum("ijk,bi,bk->bj", p, a, c),
                c * torch.einsum("ijk,bi,bj->bk", p, a, b),
            ],
            1,
        )
        return torch.log(marginals.clamp_min(1e-300)).to(theta.dtype)
