"""Discrete data: K classes per element, binary included (Graves et al., 2023, sec. 6)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from bfn._checks import check_batch, check_int, check_real
from bfn.flows.base import (
    NOISY_BUDGET,
    TIME_POWER,
    AutoChoice,
    Flow,
    FlowKind,
    LinearSDE,
    SamplingDefaults,
    as_f64,
    broadcast_statistic,
    expand_like,
    reject_clip,
)

Receiver = Literal["joint", "factorised"]
"""The receiver of the discrete n-step loss: the paper's K-dimensional mixture, or one 1-D mixture per coordinate."""

MAX_CLASSES = 2**24
BETA_1_MAX = 1e8  # above this the logits' noise overflows float32 for large K
CERTAIN_LOGIT = -1.0e4  # logit gap of a certain class: exp(-1e4) is 0 in every floating dtype


class DiscreteSDE(LinearSDE):
    """The linear SDE of the latent logits ``z`` (Xue et al., 2024, Thm 5.1), in solver time ``t = 1 - tau``.

    ``z_t | x ~ N(beta_t (K e_x - 1), K beta_t I)`` with ``beta_t = beta_1 (1 - t)^2``: in the generic form the
    data is ``x0 = K e_x - 1``, ``alpha_t = beta_t``, ``sigma_t = sqrt(K beta_t)``,
    ``lambda_t = 0.5 ln(beta_t / K)``, ``f = -2 / (1 - t)`` and ``g^2 = 2 K beta_1 (1 - t)``.
    """

    def __init__(self, num_classes: int, beta_1: float) -> None:
        self.num_classes = num_classes
        self.beta_1 = beta_1

    def alpha(self, t: Tensor) -> Tensor:
        return self.beta_1 * (1.0 - as_f64(t)) ** 2

    def sigma(self, t: Tensor) -> Tensor:
        return math.sqrt(self.num_classes * self.beta_1) * (1.0 - as_f64(t))

    def lam(self, t: Tensor) -> Tensor:
        return 0.5 * math.log(self.beta_1 / self.num_classes) + torch.log1p(-as_f64(t))

    def t_of_lam(self, lam: Tensor) -> Tensor:
        return 1.0 - torch.exp(as_f64(lam) - 0.5 * math.log(self.beta_1 / self.num_classes))

    def f(self, t: Tensor) -> Tensor:
        return -2.0 / (1.0 - as_f64(t))

    def g2(self, t: Tensor) -> Tensor:
        return 2.0 * self.num_classes * self.beta_1 * (1.0 - as_f64(t))


class DiscreteFlow(Flow):
    """Bayesian flow for categorical data with ``K`` classes per element (paper sec. 6; ``K = 2`` is binary).

    Input distribution: independent categoricals ``theta`` (uniform prior), kept as logits ``z`` with
    ``theta = softmax(z)``. Sender ``y ~ N(alpha (K e_x - 1), alpha K I)``; update ``z <- z + y``. Accuracy
    schedule ``beta(tau) = beta_1 tau^2``; flow distribution ``z ~ N(beta (K e_x - 1), beta K I)``. The network
    sees the probabilities ``theta`` (shape ``(B, *S, K)``) and returns ``K`` logits per element;
    ``e_hat = softmax(logits)`` is the output distribution.

    Args:
        num_classes: ``2 <= K <= 2^24``.
        beta_1: final accuracy ``beta(1)`` in ``(0, 1e8]``; 9 for binarised MNIST, 0.5625 for text8 (the released
            models).
    """

    kind: ClassVar[FlowKind] = "discrete"
    sampling: ClassVar[SamplingDefaults] = SamplingDefaults(
        eta=1e-3,
        auto=(
            AutoChoice("bfn-solver3", {"grid": "tuned", "eta": 1e-3, "final": "denoise"}, NOISY_BUDGET - 1),
            AutoChoice("h-solver", {"h": 0.5, "order": 3, "grid": "tuned", "eta": 1e-3, "final": "denoise"}),
        ),
        tuned_grid="time",
        tuned_power=TIME_POWER,
        refused_grids={
            "logsnr": "grid='logsnr' is refused for discrete data: the log-SNR of the logit SDE is log(1 - t) + const, "
            "so a grid uniform in it crowds the steps next to the prior and makes its last prediction at "
            "tau = eta^(1/n) (0.25 for 5 steps at eta = 1e-3; TV 0.22 on the oracle table); use grid='tuned' (what "
            "sampler='auto' runs) or grid='uniform' (the paper's)"
        },
    )
    class_indices: ClassVar[bool] = True
    num_classes: int
    output_channels: int

    def __init__(self, num_classes: int, beta_1: float = 3.0) -> None:
        num_classes = check_int(num_classes, "num_classes K", minimum=2, maximum=MAX_CLASSES)
        self.num_classes = num_classes
        self.beta_1 = check_real(beta_1, "beta_1", 0.0, BETA_1_MAX, low_open=True)
        self.input_channels = num_classes
        self.output_channels = num_classes
        self.sde = DiscreteSDE(num_classes, self.beta_1)

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "beta_1": self.beta_1}

    @classmethod
    def for_data(
        cls,
        *,
        num_bins: int | None = None,
        num_classes: int | None = None,
        num_levels: int | None = None,
        source: str = "data",
    ) -> DiscreteFlow:
        """A discrete flow with ``num_classes`` classes (default 2: binarised images); ``num_bins`` does not apply."""
        if num_bins is not None and num_bins != num_classes:
            raise ValueError(
                f"{source!r} as discrete data has {num_classes} classes; num_bins={num_bins} "
                "does not apply (num_bins is for discretised data)"
            )
        return cls(num_classes if num_classes is not None else 2)

    # ---------------------------------------------------------------------------------------------- schedule
    def beta(self, tau: Tensor) -> Tensor:
        """``beta(tau) = beta_1 tau^2``."""
        return self.beta_1 * as_f64(tau) ** 2

    # ------------------------------------------------------------------------------------------------- data
    def check_data(self, x: Tensor, data_shape: tuple[int, ...]) -> None:
        """Class indices of any integer dtype (``BFN`` converts them to ``torch.long`` after this check)."""
        check_batch(x, "data")
        if x.is_floating_point() or x.is_complex():
            raise ValueError(
                f"discrete data must be integer class indices, got non-integer dtype {x.dtype} (use x.long())"
            )
        if x.dtype == torch.bool:
            raise ValueError("discrete data must be integer class indices, got dtype torch.bool (use x.long())")
        self._check_shape(x, data_shape)
        if x.numel() and (x.min() < 0 or x.max() >= self.num_classes):
            raise ValueError(
                f"class indices must lie in [0, {self.num_classes}) (got min {x.min().item()}, max {x.max().item()})"
            )

    def normalise_data(self, x: Tensor) -> Tensor:
        """Class indices as ``torch.long``."""
        return x.long() if x.dtype != torch.long else x

    def data_in_state_space(self, x: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """``K e_x - 1`` (shape ``(*x.shape, K)``)."""
        return self.num_classes * F.one_hot(x, self.num_classes).to(dtype) - 1.0

    def from_unit(self, v: Tensor) -> Tensor:
        """The class ``k = floor(v K)`` (clamped to ``[0, K-1]``): ``K`` equal intervals of [0, 1]."""
        return torch.floor(v * self.num_classes).clamp(0, self.num_classes - 1).long()

    def to_unit(self, x: Tensor) -> Tensor:
        """``k / (K - 1)`` in the default floating dtype."""
        return x.to(torch.get_default_dtype()) / (self.num_classes - 1)

    def from_levels(self, levels: Tensor, num_levels: int) -> Tensor:
        """Level ``v`` of ``L`` to the class ``floor(v K / (L - 1))`` (clamped), the interval of ``v / (L - 1)``
        (for ``K = 2``: thresholding the intensity at 1/2, static binarisation)."""
        return torch.clamp((levels.long() * self.num_classes) // (num_levels - 1), 0, self.num_classes - 1)

    def fill_known(self, known: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
        """Integer class indices with class 0 where ``mask`` is False (``dtype`` does not apply)."""
        if known.is_floating_point() or known.dtype == torch.bool:
            raise ValueError(f"known values of discrete data must be integer class indices, got dtype {known.dtype}")
        return torch.where(mask, known, torch.zeros((), dtype=known.dtype, device=known.device))

    # ------------------------------------------------------------------------------- Bayesian inference
    def sender_mean(self, x: Tensor, alpha: Tensor, dtype: torch.dtype) -> Tensor:
        """``alpha (K e_x - 1)`` for class indices ``x`` (or a probability vector in place of ``e_x``)."""
        e = F.one_hot(x, self.num_classes).to(dtype) if not x.is_floating_point() else x
        return alpha * (self.num_classes * e - 1.0)

    def sender_sample(
        self, x: Tensor, alpha: Tensor, dtype: torch.dtype, generator: torch.Generator | None = None
    ) -> Tensor:
        """``y ~ N(alpha (K e_x - 1), alpha K I)``; ``alpha`` broadcasts against ``(B, *S, K)``."""
        mean = self.sender_mean(x, alpha, dtype)
        noise = torch.randn(mean.shape, generator=generator, dtype=dtype, device=mean.device)
        return mean + torch.sqrt(alpha * self.num_classes) * noise

    @staticmethod
    def bayesian_update(z: Tensor, y: Tensor) -> Tensor:
        """``theta' ~ theta * exp(y)``, done in logit space: ``z' = z + y``."""
        return z + y

    def prior_state(self, batch: int, data_shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> Tensor:
        return torch.zeros((batch, *data_shape, self.num_classes), dtype=dtype, device=device)

    def flow_state(
        self,
        x: Tensor,
        tau: Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Logits ``z ~ N(beta (K e_x - 1), beta K I)``."""
        dtype = dtype or torch.get_default_dtype()
        beta = as_f64(self.beta(tau), x.device)
        return self.sender_sample(x, beta.reshape(beta.shape + (1,) * x.ndim).to(dtype), dtype, generator)

    def net_input(self, state: Tensor) -> Tensor:
        return torch.softmax(state, dim=-1)

    # ----------------------------------------------------------------------------------- output distribution
    def data_prediction(self, net_out: Tensor, state: Tensor, tau: Tensor, clip: bool | None = None) -> Tensor:
        """``K e_hat - 1`` with ``e_hat = softmax(logits)`` (in range, so no clipping)."""
        return self.num_classes * torch.softmax(net_out, dim=-1) - 1.0

    def decode_prediction(self, x0: Tensor) -> Tensor:
        """The argmax of ``e_hat`` (the mode, as in the BFN-Solver reference)."""
        return x0.argmax(-1)

    # ----------------------------------------------------------------------------------------------- losses
    def continuous_time_loss(self, net_out: Tensor, x: Tensor, state: Tensor, tau: Tensor) -> Tensor:
        """``K beta_1 tau ||e_x - e_hat||^2`` per example."""
        e_hat = torch.softmax(net_out, dim=-1)
        e_x = F.one_hot(x, self.num_classes).to(e_hat.dtype)
        weight = (self.num_classes * self.beta_1 * as_f64(tau)).to(e_hat.dtype)
        return weight * (e_x - e_hat).reshape(x.shape[0], -1).square().sum(1)

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
        receiver: Receiver = "joint",
    ) -> Tensor:
        """``n KL(sender || receiver)`` by Monte Carlo over the sender sample ``y``.

        With the paper's receiver (a mixture of K-dimensional Gaussians) the Gaussian terms shared by all mixture
        components cancel and the per-element sample of the KL is exactly ``y_x - logsumexp_k(log e_hat_k + y_k)``.
        ``receiver="factorised"`` scores each coordinate of ``y`` with its own 1-D mixture, as the original
        reference code does: still a bound, but a looser one at small ``n``.
        """
        if receiver not in get_args(Receiver):
            raise ValueError(f"unknown receiver {receiver!r}; expected one of {get_args(Receiver)}")
        log_e_hat = torch.log_softmax(net_out, dim=-1)
        a = alpha.to(log_e_hat.dtype).reshape(alpha.shape + (1,) * x.ndim)
        total = torch.zeros(x.shape[0], dtype=log_e_hat.dtype, device=x.device)
        for _ in range(mc_samples):
            y = self.sender_sample(x, a, log_e_hat.dtype, generator)
            if receiver == "joint":
                kl = y.gather(-1, x.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(log_e_hat + y, dim=-1)
            else:
                kl = self._factorised_kl_sample(y, x, log_e_hat, a)
            total = total + kl.reshape(x.shape[0], -1).sum(1)
        return steps * total / mc_samples

    def _factorised_kl_sample(self, y: Tensor, x: Tensor, log_e_hat: Tensor, a: Tensor) -> Tensor:
        k = self.num_classes
        var = a * k  # (B, 1.., 1)
        # means of coordinate d under class j: a (K [d == j] - 1)  -> matrix (K_d, K_j)
        means = a.unsqueeze(-1) * (k * torch.eye(k, dtype=y.dtype, device=y.device) - 1.0)
        log_n = -0.5 * (y.unsqueeze(-1) - means).square() / var.unsqueeze(-1)  # (..., d, j), shared consts dropped
        log_receiver = torch.logsumexp(log_e_hat.unsqueeze(-2) + log_n, dim=-1).sum(-1)
        sender_means = self.sender_mean(x, a, y.dtype)
        log_sender = (-0.5 * (y - sender_means).square() / var).sum(-1)
        return log_sender - log_receiver

    def reconstruction_loss(self, net_out: Tensor, x: Tensor, state: Tensor) -> Tensor:
        """``-log p_O(x | theta, 1)`` per example."""
        log_e_hat = torch.log_softmax(net_out, dim=-1)
        return -log_e_hat.gather(-1, x.unsqueeze(-1)).reshape(x.shape[0], -1).sum(1)

    # ------------------------------------------------------------------------------------ original sampler
    def sampler_step(
        self,
        net_out: Tensor,
        state: Tensor,
        tau: Tensor,
        accuracy: Tensor,
        generator: torch.Generator | None,
        **options: Any,
    ) -> Tensor:
        """Draw ``k ~ e_hat`` (or use ``e_hat`` itself with ``categorical=False``), send, update the logits."""
        e_hat = torch.softmax(net_out, dim=-1)
        if options.get("categorical", True):
            k = torch.multinomial(e_hat.reshape(-1, self.num_classes), 1, generator=generator)
            guess: Tensor = F.one_hot(k.reshape(e_hat.shape[:-1]), self.num_classes).to(e_hat.dtype)
        else:
            guess = e_hat
        a = expand_like(accuracy, state)
        return self.bayesian_update(state, self.sender_sample(guess, a, state.dtype, generator))

    def sample_output(
        self,
        net_out: Tensor,
        state: Tensor,
        generator: torch.Generator | None,
        mode: bool = False,
        clip: bool | None = None,
    ) -> Tensor:
        if mode:
            return net_out.argmax(-1)
        probs = torch.softmax(net_out, dim=-1)
        idx = torch.multinomial(probs.reshape(-1, self.num_classes), 1, generator=generator)
        return idx.reshape(probs.shape[:-1])

    def moments(self, data_shape: tuple[int, ...], data_mean: Any, data_var: Any) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``x0 = K e_x - 1`` per element from the class frequencies ``e_bar = data_mean``."""
        k = self.num_classes
        e_bar = broadcast_statistic(data_mean, (*data_shape, k), "data_mean")
        if (e_bar < 0).any() or not torch.allclose(e_bar.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-6):
            raise ValueError("discrete data_mean must hold class frequencies (>= 0, summing to 1 over the last dim)")
        return k * e_bar - 1.0, k * k * e_bar * (1.0 - e_bar)

    @classmethod
    def check_sampler_options(cls, clip: bool | None, data_mean: Any, data_var: Any) -> None:
        reject_clip(cls.kind, clip)
        if data_mean is not None and data_var is not None:
            raise ValueError("for discrete data give data_mean (class frequencies) only; the variance follows from it")

    # --------------------------------------------------------------------------------------- conditioning
    def certain_state(self, known: Tensor, tau: Tensor, state: Tensor) -> Tensor:
        """Logits of the one-hot belief ``theta = e_x`` (every other class ``CERTAIN_LOGIT`` below)."""
        return self._certain_logits(known, state.dtype)

    def known_output(self, out: Tensor, state: Tensor, known: Tensor, mask: Tensor, tau: Tensor) -> Tensor:
        """The logits of a point mass on ``known`` where ``mask`` is True."""
        return torch.where(mask.unsqueeze(-1), self._certain_logits(known, out.dtype), out)

    def guide(self, out_c: Tensor, out_u: Tensor, scale: float) -> Tensor:
        """``log e = log e_u + s (log e_c - log e_u)``, renormalised: ``e_u^(1-s) e_c^s / Z``."""
        log_u, log_c = torch.log_softmax(out_u, -1), torch.log_softmax(out_c, -1)
        return torch.log_softmax(log_u + scale * (log_c - log_u), -1)

    def _certain_logits(self, known: Tensor, dtype: torch.dtype) -> Tensor:
        return CERTAIN_LOGIT * (1.0 - F.one_hot(known, self.num_classes).to(dtype))
