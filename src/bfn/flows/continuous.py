"""Continuous data: Gaussian input distributions over real-valued data in [-1, 1] (Graves et al., 2023, sec. 4).

The Gaussian input distribution, its Bayesian update, flow distribution and SDE are shared with discretised data,
whose :class:`~bfn.flows.DiscretisedFlow` holds a :class:`ContinuousFlow` for them (composition) and reuses the
module functions below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from bfn._checks import check_batch, check_bool, check_real
from bfn.flows.base import (
    LOG_2PI,
    LOGSNR_POWER,
    MID_ETA_BUDGET,
    SMALL_BUDGET,
    SMALL_ETA_BUDGET,
    AutoChoice,
    Flow,
    FlowKind,
    LinearSDE,
    SamplingDefaults,
    as_f64,
    broadcast_statistic,
    expand_like,
)

T_MIN = 1e-6  # below this BFN time the continuous data estimate is set to 0 (reference code)
SIGMA_1_MIN = 1e-12  # smallest supported sigma_1: the loss weight -ln(sigma_1) / sigma_1^2 must fit float32


def gaussian_auto(*larger: AutoChoice) -> tuple[AutoChoice, ...]:
    """``sampler="auto"`` for the Gaussian (mu-state) kinds: ``bfn-solver++pc`` on the tuned grid (call points
    fitted per budget) from ``eta = 5e-3`` with ``final="drop"`` up to ``SMALL_ETA_BUDGET`` calls
    (``bfn-solver++1``, what it computes, up to ``SMALL_BUDGET`` calls), then the flow's ``larger`` choices. See
    :mod:`bfn.sampling.auto` for the evidence.
    """
    small = {"grid": "tuned", "eta": 5e-3, "final": "drop"}
    return (
        AutoChoice("bfn-solver++1", small, SMALL_BUDGET),
        AutoChoice("bfn-solver++pc", small, SMALL_ETA_BUDGET),
        *larger,
    )


SDE_AUTO = {"grid": "logsnr", "eta": 1e-2, "final": "drop"}
"""``sde-bfn-solver++2`` under ``sampler="auto"``: the protocol's start and the log-SNR grid, where trained networks
do best (BENCHMARKS.md, "Solver oracles" and "Against the peers")."""


class ContinuousSDE(LinearSDE):
    """The linear SDE of the input mean ``mu`` (Xue et al., 2024, Thm 4.1), in solver time ``t = 1 - tau``.

    ``alpha_t = gamma(1 - t) = 1 - sigma_1^(2(1-t))``, ``sigma_t^2 = alpha_t (1 - alpha_t)``,
    ``f = 2 ln(sigma_1) (1 - alpha_t) / alpha_t``, ``g^2 = -2 ln(sigma_1) (1 - alpha_t)``,
    ``lambda_t = 0.5 ln beta(1 - t)``.
    """

    def __init__(self, sigma_1: float) -> None:
        self.log_sigma_1 = math.log(sigma_1)

    def _one_minus_alpha(self, t: Tensor) -> Tensor:
        return torch.exp(2.0 * (1.0 - as_f64(t)) * self.log_sigma_1)

    def alpha(self, t: Tensor) -> Tensor:
        return -torch.expm1(2.0 * (1.0 - as_f64(t)) * self.log_sigma_1)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.alpha(t) * self._one_minus_alpha(t))

    def lam(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(torch.expm1(-2.0 * (1.0 - as_f64(t)) * self.log_sigma_1))

    def t_of_lam(self, lam: Tensor) -> Tensor:
        return 1.0 - F.softplus(2.0 * as_f64(lam)) / (-2.0 * self.log_sigma_1)

    def f(self, t: Tensor) -> Tensor:
        return 2.0 * self.log_sigma_1 * self._one_minus_alpha(t) / self.alpha(t)

    def g2(self, t: Tensor) -> Tensor:
        return -2.0 * self.log_sigma_1 * self._one_minus_alpha(t)


class ContinuousFlow(Flow):
    """Bayesian flow for continuous data (paper sec. 4), with the network predicting the noise.

    Input distribution ``N(mu, rho^-1 I)``, prior ``mu = 0, rho = 1``; accuracy schedule
    ``beta(tau) = sigma_1^(-2 tau) - 1``, so ``gamma(tau) = 1 - sigma_1^(2 tau)`` and the flow distribution is
    ``mu ~ N(gamma x, gamma (1 - gamma) I)``. The network maps ``(mu, tau)`` to ``eps_hat``; the data estimate is
    ``x_hat = mu / gamma - sqrt((1 - gamma) / gamma) eps_hat`` (0 for ``tau < 1e-6``), clipped to [-1, 1] when
    ``clip`` is true.

    Args:
        sigma_1: standard deviation of the input distribution at ``tau = 1``, in [1e-12, 1); e.g. 1e-3 for 8-bit
            images.
        clip: clip ``x_hat`` to [-1, 1] (data must then lie in [-1, 1]); turn off for unbounded data.
    """

    kind: ClassVar[FlowKind] = "continuous"
    sampling: ClassVar[SamplingDefaults] = SamplingDefaults(
        eta=1e-2,
        # 7-14 calls: the exact-oracle optimum (W1 1.45x the Monte-Carlo floor at 10 NFE); from 15 calls the SDE
        # solver from the protocol's start, 2-6x better on trained networks and at the floor of the oracle from 30
        auto=gaussian_auto(
            AutoChoice("bfn-solver++pc", {"grid": "tuned", "eta": 1e-3, "final": "drop"}, MID_ETA_BUDGET),
            AutoChoice("sde-bfn-solver++2", SDE_AUTO),
        ),
        tuned_grid="logsnr",
        tuned_power=LOGSNR_POWER,
    )
    min_eta: ClassVar[float] = T_MIN
    input_channels = 1
    output_channels = 1

    def __init__(self, sigma_1: float = 1e-3, clip: bool = True) -> None:
        self.sigma_1 = check_real(sigma_1, "sigma_1", SIGMA_1_MIN, 1.0, high_open=True)
        self.clip = check_bool(clip, "clip")
        self.log_sigma_1 = math.log(self.sigma_1)
        self.sde = ContinuousSDE(self.sigma_1)

    def config(self) -> dict[str, Any]:
        return {"sigma_1": self.sigma_1, "clip": self.clip}

    @classmethod
    def for_data(
        cls,
        *,
        num_bins: int | None = None,
        num_classes: int | None = None,
        num_levels: int | None = None,
        source: str = "data",
    ) -> ContinuousFlow:
        """A continuous flow with the default schedule; ``num_bins`` does not apply (``ValueError``)."""
        if num_bins is not None:
            raise ValueError(f"num_bins applies to discretised data only, not to {cls.kind} data")
        return cls()

    # ---------------------------------------------------------------------------------------------- schedule
    def beta(self, tau: Tensor) -> Tensor:
        """``beta(tau) = sigma_1^(-2 tau) - 1``."""
        return torch.expm1(-2.0 * as_f64(tau) * self.log_sigma_1)

    def gamma(self, tau: Tensor) -> Tensor:
        """``gamma(tau) = beta / (1 + beta) = 1 - sigma_1^(2 tau)``."""
        return -torch.expm1(2.0 * as_f64(tau) * self.log_sigma_1)

    def precision(self, tau: Tensor) -> Tensor:
        """Input precision ``rho(tau) = 1 + beta(tau) = sigma_1^(-2 tau)``."""
        return torch.exp(-2.0 * as_f64(tau) * self.log_sigma_1)

    # ------------------------------------------------------------------------------------------------- data
    def check_data(self, x: Tensor, data_shape: tuple[int, ...]) -> None:
        check_real_data(x, data_shape, self.kind, bounded=self.clip)

    def data_in_state_space(self, x: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """The data itself (the SDE evolves the input mean, centred on ``gamma x``)."""
        return x.to(dtype)

    def from_unit(self, v: Tensor) -> Tensor:
        """``2 v - 1``."""
        return v * 2.0 - 1.0

    def to_unit(self, x: Tensor) -> Tensor:
        """``(x + 1) / 2`` clamped to [0, 1] (unbounded data are clipped for display)."""
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)

    def from_levels(self, levels: Tensor, num_levels: int) -> Tensor:
        """``v / (L - 1) * 2 - 1`` in [-1, 1], float32."""
        return levels.to(torch.float32) * (2.0 / (num_levels - 1)) - 1.0

    def fill_known(self, known: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
        return fill_known_reals(self.kind, known, mask, dtype, torch.zeros((), dtype=known.dtype))

    # ------------------------------------------------------------------------------- Bayesian inference
    @staticmethod
    def bayesian_update(mu: Tensor, rho: Tensor, y: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """Bayesian update of ``N(mu, 1/rho)`` by a sender sample ``y`` of accuracy ``alpha``."""
        rho_new = rho + alpha
        return (rho * mu + alpha * y) / rho_new, rho_new

    @staticmethod
    def sender_sample(x: Tensor, alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``y ~ N(x, alpha^-1 I)``."""
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x + noise / torch.sqrt(alpha)

    def prior_state(self, batch: int, data_shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> Tensor:
        return torch.zeros((batch, *data_shape), dtype=dtype, device=device)

    def flow_state(
        self,
        x: Tensor,
        tau: Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``mu ~ N(gamma x, gamma (1 - gamma) I)``."""
        gamma = self.gamma(tau)
        mean_coef = expand_like(gamma, x)
        std = expand_like(torch.sqrt(gamma * (1.0 - gamma)), x)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return mean_coef * x + std * noise

    def net_input(self, state: Tensor) -> Tensor:
        return state

    # ----------------------------------------------------------------------------------- output distribution
    def x_hat(self, eps_hat: Tensor, mu: Tensor, tau: Tensor, clip: bool | None = None) -> Tensor:
        """Data estimate from the noise prediction (0 below ``tau = 1e-6``, clipped if ``clip``)."""
        tau = as_f64(tau, mu.device)
        small = tau < T_MIN
        gamma = torch.where(small, torch.ones_like(tau), self.gamma(tau))
        scale = expand_like(torch.sqrt((1.0 - gamma) / gamma), mu)
        x_hat = mu / expand_like(gamma, mu) - scale * eps_hat
        x_hat = torch.where(expand_like(small, mu).bool(), torch.zeros_like(x_hat), x_hat)
        if self.clip if clip is None else clip:
            x_hat = x_hat.clamp(-1.0, 1.0)
        return x_hat

    def data_prediction(self, net_out: Tensor, state: Tensor, tau: Tensor, clip: bool | None = None) -> Tensor:
        return self.x_hat(net_out, state, tau, clip)

    def decode_prediction(self, x0: Tensor) -> Tensor:
        return x0

    # ----------------------------------------------------------------------------------------------- losses
    def continuous_time_loss(self, net_out: Tensor, x: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """``-ln(sigma_1) sigma_1^(-2 tau) ||x - x_hat||^2`` per example."""
        x_hat = self.x_hat(net_out, state, tau)
        weight = -self.log_sigma_1 * self.precision(tau)
        return weight.to(x.dtype) * _sq_norm(x - x_hat)

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
        """``(n / 2) alpha_i ||x - x_hat||^2`` per example: the Gaussian sender/receiver KL is exact here."""
        x_hat = self.x_hat(net_out, state, tau)
        return 0.5 * steps * alpha.to(x.dtype) * _sq_norm(x - x_hat)

    def reconstruction_loss(self, net_out: Tensor, x: Tensor, state: Tensor) -> Tensor:
        """``-ln N(x; x_hat(mu, 1), sigma_1^2 I)`` per example."""
        tau = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
        x_hat = self.x_hat(net_out, state, tau)
        dims = x[0].numel()
        var = self.sigma_1**2
        return 0.5 * _sq_norm(x - x_hat) / var + 0.5 * dims * (LOG_2PI + math.log(var))

    # ------------------------------------------------------------------------------------------- samplers
    def sampler_step(
        self,
        net_out: Tensor,
        state: Tensor,
        tau: Tensor,
        accuracy: Tensor,
        generator: torch.Generator | None,
        **options: Any,
    ) -> Tensor:
        """Send ``y ~ N(x_hat, 1/alpha)`` and update ``mu`` (the precision is implied by ``tau``)."""
        guess = self.sampler_guess(net_out, state, tau, generator, **options)
        return self.send_and_update(guess, state, tau, accuracy, generator)

    def send_and_update(
        self, guess: Tensor, state: Tensor, tau: Tensor, accuracy: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """Send ``y ~ N(guess, 1/alpha)`` and update the input mean ``mu = state`` by Bayes' rule (docs/bfn.md 1);
        the precision before the update is ``rho(tau)``."""
        rho = expand_like(self.precision(tau), state)
        alpha = expand_like(accuracy, state)
        mu, _ = self.bayesian_update(state, rho, self.sender_sample(guess, alpha, generator), alpha)
        return mu

    def sampler_guess(
        self, net_out: Tensor, state: Tensor, tau: Tensor, generator: torch.Generator | None, **options: Any
    ) -> Tensor:
        """The value the sender is centred on in the original sampler (the point estimate ``x_hat``)."""
        return self.x_hat(net_out, state, tau)

    def sample_output(
        self,
        net_out: Tensor,
        state: Tensor,
        generator: torch.Generator | None,
        mode: bool = False,
        clip: bool | None = None,
    ) -> Tensor:
        tau = torch.ones(state.shape[0], dtype=torch.float64, device=state.device)
        return self.x_hat(net_out, state, tau, clip)

    def moments(self, data_shape: tuple[int, ...], data_mean: Any, data_var: Any) -> tuple[Tensor, Tensor]:
        """The given data statistics (``x0 = x``)."""
        return gaussian_moments(data_shape, data_mean, data_var)

    @classmethod
    def check_sampler_options(cls, clip: bool | None, data_mean: Any, data_var: Any) -> None:
        check_gaussian_statistics(cls.kind, data_mean, data_var)

    # --------------------------------------------------------------------------------------- conditioning
    def certain_state(self, known: Tensor, tau: Tensor, state: Tensor) -> Tensor:
        """``gamma(tau) x``, the noise-free flow mean (the input carries no precision of its own)."""
        return expand_like(self.gamma(as_f64(tau, state.device)), state) * known.to(state.dtype)

    def noise_for(self, known: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """The noise prediction ``eps = (mu - gamma x)/sqrt(gamma (1 - gamma))`` whose ``x_hat`` is ``x = known``."""
        gamma = self.gamma(as_f64(tau, state.device).clamp_min(T_MIN))
        g = expand_like(gamma, state)
        return (state - g * known.to(state.dtype)) / expand_like(torch.sqrt(gamma * (1.0 - gamma)), state)

    def known_output(self, out: Tensor, state: Tensor, known: Tensor, mask: Tensor, tau: Tensor) -> Tensor:
        """The noise prediction of :meth:`noise_for` where ``mask`` is True."""
        return torch.where(mask, self.noise_for(known, state, tau).to(out.dtype), out)

    def guide(self, out_c: Tensor, out_u: Tensor, scale: float) -> Tensor:
        """``eps_u + s (eps_c - eps_u)`` (``x_hat`` is affine in ``eps``: the same combination of predictions)."""
        return out_u + scale * (out_c - out_u)

    # ----------------------------------------------------------------------------------------- likelihood
    def decoder_log_ratio(
        self, x: Tensor, state: Tensor, log_r: Tensor, net_out: Callable[[], Tensor]
    ) -> tuple[Tensor, int]:
        """``D log gamma_0`` with the Bayes-consistent Gaussian decoder ``N(x; z/gamma_0, (1 - gamma_0)/gamma_0 I)``
        (docs/likelihood.md 6.4), without a network call."""
        log_gamma0 = math.log(float(self.sde.alpha(torch.zeros((), dtype=torch.float64))))
        return torch.full_like(log_r, math.prod(x.shape[1:]) * log_gamma0), 0


# ------------------------------------------------------------------------------ shared with discretised data
def check_real_data(x: Tensor, data_shape: tuple[int, ...], kind: str, bounded: bool) -> None:
    """``ValueError`` unless ``x`` is a finite floating batch of ``data_shape`` (in [-1, 1] when ``bounded``)."""
    check_batch(x, "data")
    if not x.is_floating_point():
        raise ValueError(f"{kind} data must be a floating-point tensor, got dtype {x.dtype}")
    Flow._check_shape(x, data_shape)
    Flow._check_finite(x)
    if bounded and x.numel() and (x.min() < -1.0 or x.max() > 1.0):
        raise ValueError(
            f"{kind} data must lie in [-1, 1] (got min {x.min().item():.4g}, max {x.max().item():.4g}); "
            "rescale it, or build the flow with clip=False for unbounded data"
        )


def gaussian_moments(data_shape: tuple[int, ...], data_mean: Any, data_var: Any) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``x0 = x`` per element: the given data statistics, broadcast to ``data_shape``."""
    m = broadcast_statistic(data_mean, data_shape, "data_mean")
    v = broadcast_statistic(data_var, data_shape, "data_var")
    if not torch.isfinite(m).all() or not torch.isfinite(v).all() or (v < 0).any():
        raise ValueError("data_mean must be finite and data_var finite and >= 0")
    return m, v


def check_gaussian_statistics(kind: str, data_mean: Any, data_var: Any) -> None:
    """``init="moment"`` for Gaussian-state data needs ``data_var`` with ``data_mean``."""
    if data_mean is not None and data_var is None:
        raise ValueError(f"init='moment' for {kind} data needs data_var as well as data_mean")


def fill_known_reals(kind: str, known: Tensor, mask: Tensor, dtype: torch.dtype, placeholder: Tensor) -> Tensor:
    """Floating known values with ``placeholder`` where ``mask`` is False, cast to ``dtype``."""
    if not known.is_floating_point():
        raise ValueError(f"known values of {kind} data must be floating point, got dtype {known.dtype}")
    return torch.where(mask, known, placeholder.to(known.device)).to(dtype)


def _sq_norm(v: Tensor) -> Tensor:
    """Squared Euclidean norm per example (all but the batch dimension)."""
    return v.reshape(v.shape[0], -1).square().sum(dim=1)
