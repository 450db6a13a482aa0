"""Discretised data: K ordered bins on [-1, 1] (Graves et al., 2023, sec. 5), e.g. 8-bit images with K = 256."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from bfn._checks import check_int
from bfn.flows.base import LOG_2PI, as_f64, expand_like
from bfn.flows.continuous import T_MIN, ContinuousFlow

LOG_SIGMA_EPS_RANGE = (-10.0, 10.0)  # the network's log sigma_eps is clamped to this range (reference code)
SIGMA_X_RANGE = (1e-3, 10.0)  # and the output standard deviation to this one
MAX_BINS = 2**16  # finer bins than 16-bit data fall below float32 resolution near 1
PROB_FLOOR = 1e-5  # below this bin probability the loss scores density x bin width instead (numerical safety)


class DiscretisedFlow(ContinuousFlow):
    """Bayesian flow for data on ``K`` bins of [-1, 1] (paper sec. 5).

    Bin ``k = 0..K-1`` has centre ``(2k + 1)/K - 1`` and width ``2/K``; data must be bin centres
    (:meth:`quantize` maps any value in [-1, 1] to its bin centre). The input distribution, prior, update and flow
    distribution are those of :class:`ContinuousFlow`. The network outputs ``(mu_eps, log sigma_eps)`` per element
    (a trailing dim of size 2); the output distribution is the Gaussian
    ``N(mu_x, sigma_x^2)`` with ``mu_x = mu/gamma - sqrt((1-gamma)/gamma) mu_eps`` and
    ``sigma_x = sqrt((1-gamma)/gamma) exp(log sigma_eps)``, integrated over each bin, the outer bins extended to
    infinity so the probabilities sum to 1.

    Args:
        num_bins: number of bins, ``2 <= K <= 65536``.
        sigma_1: standard deviation at ``tau = 1``, in (0, 1); the paper uses 1e-3 for 256 bins and
            ``sqrt(1e-3)`` for 16 bins.
    """

    kind: ClassVar[str] = "discretised"
    input_channels = 1
    output_channels = 2

    def __init__(self, num_bins: int, sigma_1: float = 1e-3) -> None:
        num_bins = check_int(num_bins, "num_bins", minimum=2, maximum=MAX_BINS)
        super().__init__(sigma_1=sigma_1, clip=True)
        self.num_bins = num_bins

    def config(self) -> dict[str, Any]:
        return {"num_bins": self.num_bins, "sigma_1": self.sigma_1}

    # ------------------------------------------------------------------------------------------------- bins
    def bin_centres(self, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
        """The ``K`` bin centres ``(2k + 1)/K - 1``."""
        k = torch.arange(self.num_bins, dtype=dtype, device=device)
        return (2 * k + 1) / self.num_bins - 1

    def bin_index(self, x: Tensor) -> Tensor:
        """Index of the bin holding each value (clamped to ``[0, K-1]``)."""
        idx = torch.floor((x + 1) / 2 * self.num_bins)
        return idx.clamp(0, self.num_bins - 1).long()

    def quantize(self, x: Tensor) -> Tensor:
        """Map values in [-1, 1] to their bin centres (use this to prepare data for the flow)."""
        return (2 * self.bin_index(x).to(x.dtype) + 1) / self.num_bins - 1  # the formula of bin_centres

    def check_data(self, x: Tensor, data_shape: tuple[int, ...]) -> None:
        super().check_data(x, data_shape)
        if x.numel() and (x - self.quantize(x)).abs().max() > 1e-4 / self.num_bins:
            raise ValueError(
                f"discretised data must be bin centres (2k + 1)/K - 1 of the K = {self.num_bins} bins; "
                "map your data with DiscretisedFlow.quantize(x) first"
            )

    # ----------------------------------------------------------------------------------- output distribution
    def output_params(self, net_out: Tensor, mu: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation ``(mu_x, sigma_x)`` of the Gaussian behind the output distribution."""
        tau = as_f64(tau, mu.device)
        small = expand_like(tau < T_MIN, mu).bool()
        gamma = torch.where(tau < T_MIN, torch.ones_like(tau), self.gamma(tau))
        scale = expand_like(torch.sqrt((1.0 - gamma) / gamma), mu)
        mu_eps, log_sigma_eps = net_out.unbind(-1)
        mu_x = mu / expand_like(gamma, mu) - scale * mu_eps
        sigma_x = (scale * torch.exp(log_sigma_eps.clamp(*LOG_SIGMA_EPS_RANGE))).clamp(*SIGMA_X_RANGE)
        mu_x = torch.where(small, torch.zeros_like(mu_x), mu_x)
        sigma_x = torch.where(small, torch.ones_like(sigma_x), sigma_x)
        return mu_x, sigma_x

    def bin_probs(self, net_out: Tensor, mu: Tensor, tau: Tensor) -> Tensor:
        """Output distribution ``p_O(k | mu, tau)``, shape ``(*mu.shape, K)``; sums to 1 over bins."""
        mu_x, sigma_x = self.output_params(net_out, mu, tau)
        return gaussian_bin_probs(mu_x, sigma_x, self.num_bins)

    def k_hat(self, probs: Tensor) -> Tensor:
        """Output mean ``sum_k p_O(k) k_c`` from the bin probabilities."""
        return probs @ self.bin_centres(probs.dtype, probs.device)

    def data_prediction(self, net_out: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """The output mean ``k_hat``, computed from the Gaussian's CDF at the bin edges without the bin masses.

        Summation by parts of ``sum_k p_O(k) k_c`` with ``p_O(k) = F(r_k) - F(l_k)`` gives
        ``k_hat = k_c(K) - (2/K) sum_{j=1}^{K-1} F(e_j)`` over the interior edges ``e_j = 2j/K - 1``.
        """
        mu_x, sigma_x = self.output_params(net_out, state, tau)
        edges = torch.arange(1, self.num_bins, dtype=mu_x.dtype, device=mu_x.device) * (2.0 / self.num_bins) - 1.0
        cdf_sum = torch.special.ndtr((edges - mu_x.unsqueeze(-1)) / sigma_x.unsqueeze(-1)).sum(-1)
        return (1.0 - 1.0 / self.num_bins) - (2.0 / self.num_bins) * cdf_sum

    def _log_probs_at(self, probs: Tensor, x: Tensor, mu_x: Tensor, sigma_x: Tensor) -> Tensor:
        """``log p_O(bin of x)``, switching to ``log(density x width)`` where the mass is below ``PROB_FLOOR``."""
        p = probs.gather(-1, self.bin_index(x).unsqueeze(-1)).squeeze(-1)
        z = (x - mu_x) / sigma_x
        log_density = -0.5 * z.square() - torch.log(sigma_x) - 0.5 * LOG_2PI + math.log(2.0 / self.num_bins)
        return torch.where(p > PROB_FLOOR, torch.log(p.clamp_min(PROB_FLOOR)), log_density)

    # ----------------------------------------------------------------------------------------------- losses
    def continuous_time_loss(self, net_out: Tensor, x: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """``-ln(sigma_1) sigma_1^(-2 tau) ||x - k_hat||^2`` per example."""
        k_hat = self.data_prediction(net_out, state, tau)
        weight = -self.log_sigma_1 * self.precision(tau)
        return weight.to(x.dtype) * (x - k_hat).reshape(x.shape[0], -1).square().sum(1)

    def discrete_time_loss(
        self,
        net_out: Tensor,
        x: Tensor,
        state: Tensor,
        tau: Tensor,
        alpha: Tensor,
        steps: int,
        generator: torch.Generator | None = None,
        mc_samples: int = 1,
    ) -> Tensor:
        """``n KL(N(x, 1/alpha) || sum_k p_O(k) N(k_c, 1/alpha))`` by Monte Carlo over the sender sample."""
        log_probs = torch.log(self.bin_probs(net_out, state, tau).clamp_min(1e-30))
        centres = self.bin_centres(x.dtype, x.device)
        a = expand_like(alpha, x)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(mc_samples):
            y = self.sender_sample(x, a, generator)
            # log N(y; c, 1/a) up to the shared constant, which cancels between sender and receiver
            log_sender = -0.5 * a * (y - x).square()
            log_receiver = torch.logsumexp(log_probs - 0.5 * a.unsqueeze(-1) * (y.unsqueeze(-1) - centres).square(), -1)
            total = total + (log_sender - log_receiver).reshape(x.shape[0], -1).sum(1)
        return steps * total / mc_samples

    def reconstruction_loss(self, net_out: Tensor, x: Tensor, state: Tensor) -> Tensor:
        """``-log p_O(x | mu, 1)`` per example."""
        tau = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        mu_x, sigma_x = self.output_params(net_out, state, tau)
        probs = gaussian_bin_probs(mu_x, sigma_x, self.num_bins)
        return -self._log_probs_at(probs, x, mu_x, sigma_x).reshape(x.shape[0], -1).sum(1)

    # ------------------------------------------------------------------------------------ original sampler
    def sampler_guess(
        self, net_out: Tensor, state: Tensor, tau: Tensor, generator: torch.Generator | None, **options: Any
    ) -> Tensor:
        """A bin centre drawn from ``p_O`` (the paper's sampler), or ``k_hat`` with ``categorical=False``."""
        probs = self.bin_probs(net_out, state, tau)
        if not options.get("categorical", True):
            return self.k_hat(probs)
        return self._draw_centres(probs, generator)

    def _draw_centres(self, probs: Tensor, generator: torch.Generator | None) -> Tensor:
        idx = torch.multinomial(probs.reshape(-1, self.num_bins), 1, generator=generator).reshape(probs.shape[:-1])
        return self.bin_centres(probs.dtype, probs.device)[idx]

    def sample_output(
        self, net_out: Tensor, state: Tensor, generator: torch.Generator | None, mode: bool = False
    ) -> Tensor:
        tau = torch.ones(state.shape[0], dtype=torch.float64, device=state.device)
        probs = self.bin_probs(net_out, state, tau)
        if mode:
            return self.bin_centres(probs.dtype, probs.device)[probs.argmax(-1)]
        return self._draw_centres(probs, generator)


def gaussian_bin_probs(mu_x: Tensor, sigma_x: Tensor, num_bins: int) -> Tensor:
    """Mass of ``N(mu_x, sigma_x^2)`` in each of ``num_bins`` bins on [-1, 1], outer bins extended to infinity.

    Differences of the upper-tail function are used above the mean so that far-tail bins keep relative precision.
    """
    edges = torch.arange(1, num_bins, dtype=mu_x.dtype, device=mu_x.device) * (2.0 / num_bins) - 1.0
    z = (edges - mu_x.unsqueeze(-1)) / sigma_x.unsqueeze(-1)  # (..., K-1) interior edges
    lower = torch.special.ndtr(z)
    upper = torch.special.ndtr(-z)
    zeros = torch.zeros_like(z[..., :1])
    ones = torch.ones_like(z[..., :1])
    cdf = torch.cat([zeros, lower, ones], -1)  # F at the K+1 edges, -inf .. +inf
    sf = torch.cat([ones, upper, zeros], -1)  # 1 - F at the same edges
    left_z = torch.cat([torch.full_like(z[..., :1], -math.inf), z], -1)  # standardised left edge of each bin
    probs = torch.where(left_z > 0, sf[..., :-1] - sf[..., 1:], cdf[..., 1:] - cdf[..., :-1])
    return probs.clamp_min(0.0)
