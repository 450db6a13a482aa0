"""Discretised data: K ordered bins on [-1, 1] (Graves et al., 2023, sec. 5), e.g. 8-bit images with K = 256."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from bfn._checks import check_int
from bfn.flows.base import (
    LOG_2PI,
    LOGSNR_POWER,
    MID_ETA_BUDGET,
    AutoChoice,
    Flow,
    FlowKind,
    SamplingDefaults,
    as_f64,
    expand_like,
    reject_clip,
)
from bfn.flows.bins import gaussian_bin_mass, gaussian_bin_mean, gaussian_bin_probs
from bfn.flows.continuous import (
    SDE_AUTO,
    T_MIN,
    ContinuousFlow,
    check_gaussian_statistics,
    check_real_data,
    fill_known_reals,
    gaussian_auto,
)

LOG_SIGMA_EPS_RANGE = (-10.0, 10.0)  # the network's log sigma_eps is clamped to this range (reference code)
SIGMA_X_RANGE = (1e-3, 10.0)  # and the output standard deviation to this one
MAX_BINS = 2**16  # finer bins than 16-bit data fall below float32 resolution near 1
PROB_FLOOR = 1e-5  # below this bin probability the loss scores density x bin width instead (numerical safety)
LOG_SIGMA_KNOWN = -10.0  # log sigma_eps of a known element (conditioning): the flow clamps sigma_x to its minimum


class DiscretisedFlow(Flow):
    """Bayesian flow for data on ``K`` bins of [-1, 1] (paper sec. 5).

    Bin ``k = 0..K-1`` has centre ``(2k + 1)/K - 1`` and width ``2/K``; data must be bin centres
    (:meth:`quantize` maps any value in [-1, 1] to its bin centre). The input distribution, prior, update, flow
    distribution and SDE are those of :class:`ContinuousFlow`, which this flow holds as ``gaussian`` and delegates
    them to. The network outputs ``(mu_eps, log sigma_eps)`` per element (a trailing dim of size 2); the output
    distribution is the Gaussian ``N(mu_x, sigma_x^2)`` with ``mu_x = mu/gamma - sqrt((1-gamma)/gamma) mu_eps`` and
    ``sigma_x = sqrt((1-gamma)/gamma) exp(log sigma_eps)``, integrated over each bin, the outer bins extended to
    infinity so the probabilities sum to 1.

    Args:
        num_bins: number of bins, ``2 <= K <= 65536``.
        sigma_1: standard deviation at ``tau = 1``, in (0, 1); the paper uses 1e-3 for 256 bins and
            ``sqrt(1e-3)`` for 16 bins.
    """

    kind: ClassVar[FlowKind] = "discretised"
    sampling: ClassVar[SamplingDefaults] = SamplingDefaults(
        eta=1e-2,
        # from 7 calls the second-order SDE solver from the protocol's start: on the trained digits models it beats
        # every ODE configuration there (FID-digits at 10 NFE 0.12 against 0.27; BENCHMARKS.md, "Solver oracles");
        # from 15 calls it ends with a draw at tau = 1, which halves its error on the exact bin oracle
        auto=gaussian_auto(
            AutoChoice("sde-bfn-solver++2", SDE_AUTO, MID_ETA_BUDGET),
            AutoChoice("sde-bfn-solver++2", {**SDE_AUTO, "final": "denoise"}),
        ),
        tuned_grid="logsnr",
        tuned_power=LOGSNR_POWER,
    )
    min_eta: ClassVar[float] = T_MIN
    input_channels = 1
    output_channels = 2
    num_bins: int

    sender_sample = staticmethod(ContinuousFlow.sender_sample)
    bayesian_update = staticmethod(ContinuousFlow.bayesian_update)

    def __init__(self, num_bins: int, sigma_1: float = 1e-3) -> None:
        num_bins = check_int(num_bins, "num_bins", minimum=2, maximum=MAX_BINS)
        self.gaussian = ContinuousFlow(sigma_1=sigma_1, clip=True)
        self.num_bins = num_bins
        self.sigma_1 = self.gaussian.sigma_1
        self.log_sigma_1 = self.gaussian.log_sigma_1
        self.sde = self.gaussian.sde

    def config(self) -> dict[str, Any]:
        return {"num_bins": self.num_bins, "sigma_1": self.sigma_1}

    @classmethod
    def for_data(
        cls,
        *,
        num_bins: int | None = None,
        num_classes: int | None = None,
        num_levels: int | None = None,
        source: str = "data",
    ) -> DiscretisedFlow:
        """A discretised flow with ``num_bins`` bins (default ``num_levels``: one per grey level)."""
        bins = num_bins if num_bins is not None else num_levels
        try:
            return cls(check_int(bins, "num_bins", minimum=2))
        except ValueError:  # name the data kind: without num_bins the count comes from the data's levels
            raise ValueError(f"num_bins must be an int >= 2 for discretised data, got {bins!r}") from None

    # ---------------------------------------------------------------------------------------------- schedule
    def beta(self, tau: Tensor) -> Tensor:
        """``beta(tau) = sigma_1^(-2 tau) - 1`` (as for continuous data)."""
        return self.gaussian.beta(tau)

    def gamma(self, tau: Tensor) -> Tensor:
        """``gamma(tau) = 1 - sigma_1^(2 tau)`` (as for continuous data)."""
        return self.gaussian.gamma(tau)

    def precision(self, tau: Tensor) -> Tensor:
        """Input precision ``rho(tau) = sigma_1^(-2 tau)`` (as for continuous data)."""
        return self.gaussian.precision(tau)

    # ------------------------------------------------------------------------------------------------- bins
    def bin_centres(self, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
        """The ``K`` bin centres ``(2k + 1)/K - 1`` (:func:`bins_to_centres` of every bin)."""
        return bins_to_centres(torch.arange(self.num_bins, device=device), self.num_bins, dtype)

    def bin_index(self, x: Tensor) -> Tensor:
        """Index of the bin holding each value (clamped to ``[0, K-1]``)."""
        idx = torch.floor((x + 1) / 2 * self.num_bins)
        return idx.clamp(0, self.num_bins - 1).long()

    def quantize(self, x: Tensor) -> Tensor:
        """Map values in [-1, 1] to their bin centres (use this to prepare data for the flow)."""
        return bins_to_centres(self.bin_index(x), self.num_bins, x.dtype)

    # ------------------------------------------------------------------------------------------------- data
    def check_data(self, x: Tensor, data_shape: tuple[int, ...]) -> None:
        check_real_data(x, data_shape, self.kind, bounded=True)
        if x.numel() and (x - self.quantize(x)).abs().max() > 1e-4 / self.num_bins:
            raise ValueError(
                f"discretised data must be bin centres (2k + 1)/K - 1 of the K = {self.num_bins} bins; "
                "map your data with DiscretisedFlow.quantize(x) first"
            )

    def data_in_state_space(self, x: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """The data itself (bin centres)."""
        return self.gaussian.data_in_state_space(x, dtype)

    def from_unit(self, v: Tensor) -> Tensor:
        """The bin centre of ``2 v - 1``."""
        return self.quantize(self.gaussian.from_unit(v))

    def to_unit(self, x: Tensor) -> Tensor:
        """``(x + 1) / 2`` (bin centres lie inside [0, 1])."""
        return self.gaussian.to_unit(x)

    def from_levels(self, levels: Tensor, num_levels: int) -> Tensor:
        """Level ``v`` of ``L`` to bin ``floor(v K / L)`` (:func:`values_to_bins`), as its centre, float32."""
        return bins_to_centres(values_to_bins(levels, num_levels, self.num_bins), self.num_bins)

    def fill_known(self, known: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
        placeholder = self.quantize(torch.zeros((), dtype=known.dtype if known.is_floating_point() else torch.float64))
        return fill_known_reals(self.kind, known, mask, dtype, placeholder)

    # -------------------------------------------------------------------------------------- flow & network
    def prior_state(self, batch: int, data_shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> Tensor:
        return self.gaussian.prior_state(batch, data_shape, dtype, device)

    def flow_state(
        self,
        x: Tensor,
        tau: Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``mu ~ N(gamma x, gamma (1 - gamma) I)``, as for continuous data."""
        return self.gaussian.flow_state(x, tau, generator, dtype)

    def net_input(self, state: Tensor) -> Tensor:
        return state

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

    def data_prediction(self, net_out: Tensor, state: Tensor, tau: Tensor, clip: bool | None = None) -> Tensor:
        """The output mean ``k_hat`` in O(1) per element (see :func:`gaussian_bin_mean`); in range, so no clipping."""
        mu_x, sigma_x = self.output_params(net_out, state, tau)
        return gaussian_bin_mean(mu_x, sigma_x, self.num_bins)

    def decode_prediction(self, x0: Tensor) -> Tensor:
        """The centre of the bin holding ``k_hat`` (the same centres as the draws from ``p_O``)."""
        return self.bin_centres(x0.dtype, x0.device)[self.bin_index(x0)]

    def _log_probs_at(self, x: Tensor, mu_x: Tensor, sigma_x: Tensor) -> Tensor:
        """``log p_O(bin of x)``, switching to ``log(density x width)`` where the mass is below ``PROB_FLOOR``."""
        p = gaussian_bin_mass(mu_x, sigma_x, self.bin_index(x), self.num_bins)
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
        return -self._log_probs_at(x, mu_x, sigma_x).reshape(x.shape[0], -1).sum(1)

    # ------------------------------------------------------------------------------------------- samplers
    def draw_bins(self, net_out: Tensor, state: Tensor, tau: Tensor, generator: torch.Generator | None) -> Tensor:
        """Bin indices ``k ~ p_O(. | mu, tau)`` per element, in O(1) per element.

        With the outer bins extended to infinity, ``p_O`` is exactly the law of a Gaussian draw
        ``y ~ N(mu_x, sigma_x^2)`` put into its bin, ``floor((y + 1) K / 2)`` clamped to ``[0, K-1]``.
        """
        mu_x, sigma_x = self.output_params(net_out, state, tau)
        noise = torch.randn(mu_x.shape, generator=generator, dtype=mu_x.dtype, device=mu_x.device)
        return self.bin_index(mu_x + sigma_x * noise)

    def mode_bins(self, net_out: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """The most probable bin of ``p_O(. | mu, tau)`` per element, in O(1) per element.

        Among the interior bins (all of width ``2/K``) the one holding ``mu_x`` has the largest mass, since the mass
        of an interval of fixed width is unimodal in its position; so the mode is that bin or an outer bin. The bin
        below it is a candidate too, so that ties (``mu_x`` on an edge) go to the lower bin, as with ``argmax``.
        """
        mu_x, sigma_x = self.output_params(net_out, state, tau)
        inner = self.bin_index(mu_x)
        first, last = torch.zeros_like(inner), torch.full_like(inner, self.num_bins - 1)
        candidates = torch.stack([first, (inner - 1).clamp_min(0), inner, last], -1)  # in increasing order
        mass = gaussian_bin_mass(mu_x.unsqueeze(-1), sigma_x.unsqueeze(-1), candidates, self.num_bins)
        return candidates.gather(-1, mass.argmax(-1, keepdim=True)).squeeze(-1)

    def sampler_step(
        self,
        net_out: Tensor,
        state: Tensor,
        tau: Tensor,
        accuracy: Tensor,
        generator: torch.Generator | None,
        **options: Any,
    ) -> Tensor:
        """Send ``y ~ N(guess, 1/alpha)`` around :meth:`sampler_guess`, update ``mu`` (Graves et al., Algorithm 6)."""
        guess = self.sampler_guess(net_out, state, tau, generator, **options)
        return self.gaussian.send_and_update(guess, state, tau, accuracy, generator)

    def sampler_guess(
        self, net_out: Tensor, state: Tensor, tau: Tensor, generator: torch.Generator | None, **options: Any
    ) -> Tensor:
        """A bin centre drawn from ``p_O`` (the paper's sampler), or ``k_hat`` with ``categorical=False``."""
        if not options.get("categorical", True):
            return self.data_prediction(net_out, state, tau)
        return bins_to_centres(self.draw_bins(net_out, state, tau, generator), self.num_bins, state.dtype)

    def sample_output(
        self,
        net_out: Tensor,
        state: Tensor,
        generator: torch.Generator | None,
        mode: bool = False,
        clip: bool | None = None,
    ) -> Tensor:
        tau = torch.ones(state.shape[0], dtype=torch.float64, device=state.device)
        bins = self.mode_bins(net_out, state, tau) if mode else self.draw_bins(net_out, state, tau, generator)
        return bins_to_centres(bins, self.num_bins, state.dtype)

    def moments(self, data_shape: tuple[int, ...], data_mean: Any, data_var: Any) -> tuple[Tensor, Tensor]:
        """The given data statistics (``x0 = x``), as for continuous data."""
        return self.gaussian.moments(data_shape, data_mean, data_var)

    @classmethod
    def check_sampler_options(cls, clip: bool | None, data_mean: Any, data_var: Any) -> None:
        reject_clip(cls.kind, clip)
        check_gaussian_statistics(cls.kind, data_mean, data_var)

    # --------------------------------------------------------------------------------------- conditioning
    def certain_state(self, known: Tensor, tau: Tensor, state: Tensor) -> Tensor:
        """``gamma(tau) x``, as for continuous data."""
        return self.gaussian.certain_state(known, tau, state)

    def known_output(self, out: Tensor, state: Tensor, known: Tensor, mask: Tensor, tau: Tensor) -> Tensor:
        """``mu_eps`` of the continuous noise prediction for ``known`` with the smallest ``sigma_eps``."""
        eps = self.gaussian.noise_for(known, state, tau)
        certain = torch.stack([eps.to(out.dtype), torch.full_like(eps, LOG_SIGMA_KNOWN).to(out.dtype)], -1)
        return torch.where(mask.unsqueeze(-1), certain, out)

    def guide(self, out_c: Tensor, out_u: Tensor, scale: float) -> Tensor:
        """The mean part ``mu_eps`` combined as a noise prediction; ``log sigma_eps`` is the conditional one
        (extrapolating a log standard deviation has no meaning, and keeping it leaves ``s = 1`` exact)."""
        mean = out_u[..., 0] + scale * (out_c[..., 0] - out_u[..., 0])
        return torch.stack([mean, out_c[..., 1]], -1)


# ----------------------------------------------------------------------------------------- raw grey levels
def values_to_bins(values: Tensor, num_levels: int, num_bins: int) -> Tensor:
    """Re-quantise integer levels ``0 .. num_levels - 1`` to bin indices ``floor(v * K / L)`` in [0, K), int64."""
    return torch.clamp((values.long() * num_bins) // num_levels, 0, num_bins - 1)


def bins_to_centres(bins: Tensor, num_bins: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Centres ``(2k + 1)/K - 1`` in (-1, 1) of the bin indices ``k`` of ``K`` bins on [-1, 1], in ``dtype``.

    The one formula of a bin centre: data sets, :meth:`DiscretisedFlow.quantize`, :meth:`~DiscretisedFlow.bin_centres`
    and the flow's draws all use it, so data and samples are the same floats.
    """
    return (2 * bins.to(dtype) + 1) / num_bins - 1
