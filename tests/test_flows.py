"""The core maths of the three flows against the closed-form oracles of Graves et al. (2023) (docs/bfn.md section 5)."""

from __future__ import annotations

import math

import pytest
import torch

import bfn
from bfn.flows.discretised import gaussian_bin_mass, gaussian_bin_mean, gaussian_bin_probs
from oracles import CategoricalDenoiser, GaussianDenoiser, ZeroNet

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------- schedules
def test_schedule_sums_and_anchor_values():
    flow = bfn.ContinuousFlow(1e-3)
    alphas = flow.step_accuracies(10)
    assert alphas[0].item() == pytest.approx(2.98107, abs=5e-6)
    assert alphas.sum().item() == pytest.approx(flow.beta(torch.tensor(1.0)).item(), rel=1e-13)
    assert flow.gamma(torch.tensor(1.0)).item() == pytest.approx(1 - 1e-6, rel=1e-15)
    # closed form of the n-step accuracies
    i = torch.arange(1, 11, dtype=F64)
    assert torch.allclose(alphas, 1e-3 ** (-2 * i / 10) * (1 - 1e-3 ** (2 / 10)), rtol=1e-12)
    discrete = bfn.DiscreteFlow(27, 0.5625)
    alphas = discrete.step_accuracies(7)
    assert alphas.sum().item() == pytest.approx(0.5625, rel=1e-14)
    assert torch.allclose(alphas, 0.5625 * (2 * torch.arange(1, 8, dtype=F64) - 1) / 49, rtol=1e-13)


def test_gamma_is_precise_at_small_tau():
    flow = bfn.ContinuousFlow(1e-3)
    tau = torch.tensor(1e-12, dtype=F64)
    # gamma ~ -2 tau ln sigma_1 for tiny tau; the naive 1 - sigma_1^(2 tau) loses all digits
    assert flow.gamma(tau).item() == pytest.approx(-2e-12 * math.log(1e-3), rel=1e-9)


# ------------------------------------------------------------------------------------- Bayesian update identities
def test_continuous_updates_accumulate_to_the_flow_distribution():
    flow = bfn.ContinuousFlow(0.02)
    n, x, num = 50, 0.7, 200_000
    g = gen(1)
    xs = torch.full((num, 1), x, dtype=F64)
    mu, rho = torch.zeros_like(xs), torch.ones_like(xs)
    alphas = flow.step_accuracies(n)
    for i in range(n):
        mu, rho = flow.bayesian_update(mu, rho, flow.sender_sample(xs, alphas[i], g), alphas[i])
        if i + 1 in (10, 25):  # intermediate steps follow p_F(. | x; i/n)
            gamma = flow.gamma(torch.tensor((i + 1) / n)).item()
            _assert_moments(mu, gamma * x, gamma * (1 - gamma))
    assert rho[0].item() == pytest.approx(2500.0, rel=1e-10)
    gamma = flow.gamma(torch.tensor(1.0)).item()
    assert gamma * x == pytest.approx(0.69972, abs=1e-5)
    assert gamma * (1 - gamma) == pytest.approx(3.998e-4, rel=1e-3)
    _assert_moments(mu, gamma * x, gamma * (1 - gamma))


def test_discrete_updates_accumulate_to_the_flow_distribution():
    k, beta_1, n, num = 4, 2.5, 20, 100_000
    flow = bfn.DiscreteFlow(k, beta_1)
    g = gen(2)
    x = torch.full((num, 1), 2, dtype=torch.long)
    z = flow.prior_state(num, (1,), F64, "cpu")
    for alpha in flow.step_accuracies(n):
        z = flow.bayesian_update(z, flow.sender_sample(x, alpha, F64, g))
    mean = beta_1 * (k * torch.nn.functional.one_hot(x, k).to(F64) - 1)
    for j in range(k):
        _assert_moments(z[..., j], mean[0, 0, j].item(), k * beta_1)
    # the closed-form flow sample has the same law as the accumulated updates
    z_flow = flow.flow_state(x, torch.ones(num, dtype=F64), gen(3), dtype=F64)
    for j in range(k):
        _assert_moments(z_flow[..., j], mean[0, 0, j].item(), k * beta_1)


def test_discrete_theta_update_equals_logit_update():
    flow = bfn.DiscreteFlow(5, 3.0)
    z = torch.randn(7, 3, 5, generator=gen(4), dtype=F64)
    y = torch.randn(7, 3, 5, generator=gen(5), dtype=F64)
    theta = torch.softmax(z, -1) * torch.exp(y)
    theta = theta / theta.sum(-1, keepdim=True)
    assert torch.allclose(flow.net_input(flow.bayesian_update(z, y)), theta, atol=1e-14)


def test_binary_flow_is_a_logistic_normal():
    """K = 2: theta_1 = sigmoid(l) with l ~ N(2 beta, 4 beta) when x is class 1 (docs/bfn.md oracle 10)."""
    beta_1, num = 1.7, 200_000
    flow = bfn.DiscreteFlow(2, beta_1)
    z = flow.flow_state(torch.ones(num, 1, dtype=torch.long), torch.ones(num, dtype=F64), gen(6), dtype=F64)
    logit = z[..., 1] - z[..., 0]
    _assert_moments(logit, 2 * beta_1, 4 * beta_1)


def _assert_moments(samples: torch.Tensor, mean: float, var: float) -> None:
    s = samples.flatten().to(F64)
    n = s.numel()
    assert abs(s.mean().item() - mean) < 4 * math.sqrt(var / n), (s.mean().item(), mean)
    # standard error of the sample variance of a Gaussian: var sqrt(2 / (n - 1))
    assert abs(s.var().item() - var) < 4 * var * math.sqrt(2 / (n - 1)), (s.var().item(), var)


# ----------------------------------------------------------------------------------------------------- outputs
def test_noise_prediction_inversion_recovers_the_data():
    flow = bfn.ContinuousFlow(1e-3, clip=False)
    x = torch.randn(64, 3, dtype=F64)
    tau = torch.rand(64, dtype=F64, generator=gen(7)).clamp_min(1e-5)
    gamma = flow.gamma(tau)[:, None]
    eps = torch.randn(64, 3, dtype=F64, generator=gen(8))
    mu = gamma * x + torch.sqrt(gamma * (1 - gamma)) * eps
    assert torch.allclose(flow.x_hat(eps, mu, tau), x, atol=1e-8)


def test_x_hat_is_zero_below_t_min_and_clipped():
    flow = bfn.ContinuousFlow(1e-3)
    mu = torch.full((2, 1), 0.3, dtype=F64)
    out = flow.x_hat(torch.full((2, 1), -50.0, dtype=F64), mu, torch.tensor([0.0, 0.5], dtype=F64))
    assert out[0].item() == 0.0 and out[1].item() == 1.0


@pytest.mark.parametrize("num_bins", [2, 16, 256])
def test_discretised_output_is_a_distribution_even_far_outside(num_bins):
    mu_x = torch.tensor([-40.0, -1.0, 0.0, 0.3, 1.0, 25.0], dtype=F64)
    sigma_x = torch.tensor([1e-3, 0.1, 10.0, 1e-3, 0.5, 1e-3], dtype=F64)
    p = gaussian_bin_probs(mu_x, sigma_x, num_bins)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(6, dtype=F64), atol=1e-12)
    assert p[0, 0].item() == pytest.approx(1.0) and p[-1, -1].item() == pytest.approx(1.0)
    flow = bfn.DiscretisedFlow(num_bins, 1e-3)
    k_hat = flow.k_hat(p)
    assert (k_hat >= -1 + 1 / num_bins - 1e-12).all() and (k_hat <= 1 - 1 / num_bins + 1e-12).all()


def test_discretised_probs_equal_quantised_gaussian_draws():
    """Drawing a Gaussian and quantising with clamping has the law of p_O (docs/bfn.md oracle 8)."""
    flow = bfn.DiscretisedFlow(8, 1e-3)
    mu_x, sigma_x = torch.tensor([0.37], dtype=F64), torch.tensor([0.6], dtype=F64)
    p = gaussian_bin_probs(mu_x, sigma_x, 8)[0]
    draws = mu_x + sigma_x * torch.randn(400_000, dtype=F64, generator=gen(9))
    freq = torch.bincount(flow.bin_index(draws), minlength=8).to(F64) / draws.numel()
    assert (freq - p).abs().max().item() < 4 * math.sqrt(0.25 / draws.numel())


def _discretised_inputs(
    num_bins: int, copies: int
) -> tuple[bfn.DiscretisedFlow, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network outputs, states and times whose ``(mu_x, sigma_x)`` span narrow to wide, inside and outside [-1, 1]."""
    flow = bfn.DiscretisedFlow(num_bins, 1e-3)
    mu = torch.tensor([-0.3, 0.95, 0.0, 1.3, -1.02], dtype=F64).expand(copies, 5)
    mu_eps = torch.tensor([0.1, -0.4, 0.0, 0.2, 1.0], dtype=F64)
    log_sigma_eps = torch.tensor([-2.5, -1.0, 0.5, -3.0, -4.0], dtype=F64)
    net_out = torch.stack([mu_eps, log_sigma_eps], -1).expand(copies, 5, 2)
    tau = torch.full((copies,), 0.6, dtype=F64)
    return flow, net_out, mu, tau


@pytest.mark.parametrize("num_bins", [2, 16, 256])
def test_discretised_draws_have_the_bin_probabilities(num_bins):
    """The O(1) draw (quantised Gaussian, clamped) has the law p_O of the exact bin masses: chi-square per element."""
    from scipy.stats import chi2

    copies = 100_000
    flow, net_out, mu, tau = _discretised_inputs(num_bins, copies)
    bins = flow.draw_bins(net_out, mu, tau, gen(11))
    assert bins.dtype == torch.long and bins.shape == mu.shape
    mu_x, sigma_x = flow.output_params(net_out[:1], mu[:1], tau[:1])
    probs = gaussian_bin_probs(mu_x[0], sigma_x[0], num_bins)  # (5, K)
    for d in range(5):
        counts = torch.bincount(bins[:, d], minlength=num_bins).to(F64)
        expected = copies * probs[d]
        assert counts[expected < 1e-9].sum() == 0  # nothing lands where p_O is negligible
        big = expected >= 5
        stat = ((counts[big] - expected[big]) ** 2 / expected[big]).sum()
        rest_o, rest_e = counts[~big].sum(), expected[~big].sum()
        if rest_e >= 5:
            stat = stat + (rest_o - rest_e) ** 2 / rest_e
        dof = int(big.sum()) - (0 if rest_e >= 5 else 1)
        if dof > 0:
            assert chi2.sf(stat.item(), dof) > 1e-4, (d, stat.item(), dof)
        tv = 0.5 * (counts / copies - probs[d]).abs().sum().item()
        assert tv < 0.02


@pytest.mark.parametrize("num_bins", [2, 16, 256])
def test_discretised_bin_mass_and_mode_match_the_full_probabilities(num_bins):
    flow, net_out, mu, tau = _discretised_inputs(num_bins, 1)
    mu_x = torch.tensor([-40.0, -1.0, 0.0, 0.3, 1.0, 25.0, 0.999, -0.5, 0.2], dtype=F64)
    sigma_x = torch.tensor([1e-3, 0.1, 10.0, 1e-3, 0.5, 1e-3, 0.002, 3.0, 0.02], dtype=F64)
    probs = gaussian_bin_probs(mu_x, sigma_x, num_bins)
    bins = torch.arange(num_bins).expand(9, num_bins)
    mass = gaussian_bin_mass(mu_x[:, None], sigma_x[:, None], bins, num_bins)
    torch.testing.assert_close(mass, probs, rtol=1e-12, atol=0.0)
    mode = flow.mode_bins(net_out, mu, tau)
    mu_x, sigma_x = flow.output_params(net_out, mu, tau)
    assert torch.equal(mode, gaussian_bin_probs(mu_x, sigma_x, num_bins).argmax(-1))
    out = flow.sample_output(net_out, mu, gen(3), mode=True)  # at tau = 1
    assert torch.equal(out, flow.bin_centres()[flow.mode_bins(net_out, mu, torch.ones_like(tau))])


def test_discretised_mode_is_the_argmax_of_the_probabilities():
    """The mode (bin of mu_x, or an outer bin) against the argmax of all K masses on a dense grid."""
    flow = bfn.DiscretisedFlow(16, 1e-3)
    g = gen(12)
    mu = torch.rand(2000, generator=g, dtype=F64) * 3 - 1.5
    net_out = torch.stack([torch.zeros_like(mu), torch.rand(2000, generator=g, dtype=F64) * 8 - 6], -1)
    tau = torch.ones(2000, dtype=F64)
    mu_x, sigma_x = flow.output_params(net_out, mu, tau)
    expected = gaussian_bin_probs(mu_x, sigma_x, 16).argmax(-1)
    assert torch.equal(flow.mode_bins(net_out, mu, tau), expected)


def test_discretised_sampler_guess_is_a_drawn_centre_or_k_hat():
    flow, net_out, mu, tau = _discretised_inputs(16, 50)
    guess = flow.sampler_guess(net_out, mu, tau, gen(13))
    assert torch.equal(flow.quantize(guess), guess)
    torch.testing.assert_close(guess, flow.bin_centres()[flow.draw_bins(net_out, mu, tau, gen(13))])
    mean = flow.sampler_guess(net_out, mu, tau, gen(13), categorical=False)
    torch.testing.assert_close(mean, flow.k_hat(flow.bin_probs(net_out, mu, tau)), rtol=0, atol=1e-12)


def test_quantize_maps_to_bin_centres():
    flow = bfn.DiscretisedFlow(4, 0.1)
    x = torch.tensor([-1.0, -0.51, -0.49, 0.0, 0.74, 1.0])
    assert flow.quantize(x).tolist() == [-0.75, -0.75, -0.25, 0.25, 0.75, 0.75]
    assert flow.bin_centres().tolist() == [-0.75, -0.25, 0.25, 0.75]


# ------------------------------------------------------------------------------------------------------ losses
def test_constant_predictor_losses_continuous():
    """x_hat = c (no clipping): L_n = L_inf = beta(1)/2 ||x - c||^2 for every n (docs/bfn.md oracle 3)."""
    flow = bfn.ContinuousFlow(0.05, clip=False)
    c, x = 0.2, torch.tensor([[0.5, -0.3]], dtype=F64)
    beta_1 = flow.beta(torch.tensor(1.0)).item()
    expected = beta_1 / 2 * ((x - c) ** 2).sum().item()
    # integrate the continuous-time integrand over tau with a fine midpoint rule (x_hat = c is exact here)
    taus = (torch.arange(20_000, dtype=F64) + 0.5) / 20_000
    per_tau = flow.continuous_time_loss(_eps_for(flow, x, c, taus), x.expand(len(taus), 2), _mu(flow, x, taus), taus)
    assert per_tau.mean().item() == pytest.approx(expected, rel=1e-6)
    for n in (1, 3, 10):
        alphas = flow.step_accuracies(n)
        taus = torch.arange(n, dtype=F64) / n
        taus[0] = 0.5  # x_hat := 0 at tau = 0; use any tau > 0 since the predictor is constant
        terms = flow.discrete_time_loss(_eps_for(flow, x, c, taus), x.expand(n, 2), _mu(flow, x, taus), taus, alphas, n)
        assert terms.mean().item() == pytest.approx(expected, rel=1e-10)


def _mu(flow, x, taus):
    gamma = flow.gamma(taus)[:, None]
    return gamma * x + 0.1 * torch.sqrt(gamma * (1 - gamma))


def _eps_for(flow, x, c, taus):
    """The noise prediction whose data estimate is the constant c."""
    gamma = flow.gamma(taus)[:, None]
    return (_mu(flow, x, taus) - gamma * c) / torch.sqrt(gamma * (1 - gamma))


def test_uniform_predictor_discrete_loss_is_the_fresh_network_loss():
    """e_hat uniform: L_inf = beta_1 (K - 1)/2 per element (7.3125 nats for text8, 4.5 for binarised MNIST)."""
    for k, beta_1, expected in ((27, 0.5625, 7.3125), (2, 9.0, 4.5)):
        flow = bfn.DiscreteFlow(k, beta_1)
        taus = (torch.arange(1000, dtype=F64) + 0.5) / 1000
        x = torch.zeros(1000, 1, dtype=torch.long)
        loss = flow.continuous_time_loss(torch.zeros(1000, 1, k, dtype=F64), x, None, taus).mean()
        assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_continuous_loss_integrand_at_the_ends():
    """At tau -> 0 the integrand is -ln(sigma_1) ||x||^2 (x_hat = 0); discrete: 0 at tau = 0."""
    flow = bfn.ContinuousFlow(1e-3)
    x = torch.tensor([[0.4, -0.8]], dtype=F64)
    tau = torch.zeros(1, dtype=F64)
    value = flow.continuous_time_loss(torch.randn(1, 2, dtype=F64), x, torch.zeros_like(x), tau)
    assert value.item() == pytest.approx(-math.log(1e-3) * 0.8, rel=1e-12)
    discrete = bfn.DiscreteFlow(3, 2.0)
    logits = torch.randn(1, 2, 3, dtype=F64)
    x = torch.tensor([[0, 2]])
    assert discrete.continuous_time_loss(logits, x, None, tau).item() == 0.0
    e_hat = torch.softmax(logits, -1)
    expected = 3 * 2.0 * ((torch.nn.functional.one_hot(x, 3) - e_hat) ** 2).sum().item()
    assert discrete.continuous_time_loss(logits, x, None, torch.ones(1, dtype=F64)).item() == pytest.approx(expected)


def test_discretised_kl_matches_quadrature_and_its_small_alpha_limit():
    """The Monte-Carlo sender/receiver KL equals a 1-D quadrature; the KL tends to alpha/2 (x - k_hat)^2.

    docs/bfn.md oracle 7.
    """
    flow = bfn.DiscretisedFlow(16, 0.1)
    net_out = torch.tensor([[[0.1, -1.0]]], dtype=F64)
    mu, tau = torch.full((1, 1), 0.05, dtype=F64), torch.full((1,), 0.5, dtype=F64)
    probs = flow.bin_probs(net_out, mu, tau)[0, 0]
    centres = flow.bin_centres()
    x = centres[9].item()

    def quadrature_kl(alpha: float) -> float:
        std = 1 / math.sqrt(alpha)
        y = torch.linspace(x - 12 * std, x + 12 * std, 200_001, dtype=F64)
        log_sender = -0.5 * alpha * (y - x) ** 2
        log_receiver = torch.logsumexp(torch.log(probs) - 0.5 * alpha * (y[:, None] - centres) ** 2, -1)
        weight = torch.exp(log_sender) / math.sqrt(2 * math.pi) / std
        return torch.trapezoid(weight * (log_sender - log_receiver), y).item()

    num, alpha = 200_000, 50.0
    kl = flow.discrete_time_loss(
        net_out.expand(num, 1, 2),
        torch.full((num, 1), x, dtype=F64),
        mu.expand(num, 1),
        tau.expand(num),
        torch.full((num,), alpha, dtype=F64),
        1,
        gen(11),
    )
    assert kl.mean().item() == pytest.approx(quadrature_kl(alpha), abs=4 * kl.std().item() / math.sqrt(num))
    k_hat = flow.k_hat(probs).item()
    for small in (1e-3, 1e-4):
        assert quadrature_kl(small) == pytest.approx(small / 2 * (x - k_hat) ** 2, rel=20 * small)


# --------------------------------------------------------------------------------- losses with exact denoisers
def test_gaussian_data_losses_match_closed_forms():
    """Exact denoiser for N(m, s^2): L_inf = 1/2 ln(1 + beta(1) s^2); L_n is the left Riemann sum.

    docs/bfn.md oracle 5.
    """
    m, s = 0.3, 0.5
    flow = bfn.ContinuousFlow(1e-3, clip=False)
    model = bfn.BFN(GaussianDenoiser(flow, m, s), flow, (1,), dtype=F64)
    x = m + s * torch.randn(400_000, 1, generator=gen(12), dtype=F64)
    beta_1 = flow.beta(torch.tensor(1.0)).item()
    assert 0.5 * math.log(1 + beta_1 * s**2) == pytest.approx(6.21461, abs=1e-5)
    l_inf = model.loss_per_example(x, generator=gen(13)).mean().item()
    assert l_inf == pytest.approx(6.21461, rel=0.02)
    previous = math.inf
    for n, reference in ((10, 12.8185), (100, 6.6364), (1000, 6.2551)):
        alphas = flow.step_accuracies(n)
        betas = flow.beta(torch.arange(n, dtype=F64) / n)
        riemann = (alphas / 2 * s**2 / (1 + betas * s**2)).sum().item()
        assert riemann == pytest.approx(reference, rel=1e-4)
        l_n = model.loss_per_example(x, steps=n, generator=gen(14)).mean().item()
        assert l_n == pytest.approx(reference, rel=0.02)
        assert l_n < previous
        previous = l_n
    assert previous > l_inf - 0.02 * l_inf  # decreasing towards L_inf


def test_categorical_losses_give_the_entropy():
    """Exact posterior: L_inf + L_r = H(x) and, with the paper's receiver, L_n + L_r = H(x) for every n.

    docs/bfn.md oracle 6.
    """
    probs = [0.5, 0.3, 0.2]
    entropy = -sum(p * math.log(p) for p in probs)
    assert entropy == pytest.approx(1.02965, abs=1e-5)
    flow = bfn.DiscreteFlow(3, 2.0)
    model = bfn.BFN(CategoricalDenoiser(probs), flow, (1,), dtype=F64)
    x = torch.multinomial(torch.tensor(probs), 400_000, replacement=True, generator=gen(15)).reshape(-1, 1)
    l_inf = model.loss_per_example(x, generator=gen(16)).mean().item()
    l_r = model.reconstruction_loss(x, generator=gen(17)).mean().item()
    assert l_inf == pytest.approx(0.845, abs=0.01)
    assert l_r == pytest.approx(0.186, abs=0.01)
    assert l_inf + l_r == pytest.approx(entropy, rel=0.02)
    for n in (1, 2, 5, 20):
        assert model.nll(x, steps=n, generator=gen(18 + n)).mean().item() == pytest.approx(entropy, abs=0.01)
    # the factorised receiver of the original code is a looser bound at n = 1 (1.108 against 0.843)
    tau = torch.zeros(len(x), dtype=F64)
    logits = model.call_net(flow.prior_state(len(x), (1,), F64, "cpu"), tau)
    alpha = flow.step_accuracies(1).expand(len(x))
    joint = flow.discrete_time_loss(logits, x, None, tau, alpha, 1, gen(30)).mean().item()
    factorised = flow.discrete_time_loss(logits, x, None, tau, alpha, 1, gen(31), receiver="factorised").mean().item()
    assert joint == pytest.approx(0.843, abs=0.01)
    assert factorised == pytest.approx(1.108, abs=0.01)


def test_discretised_reconstruction_with_a_sharp_output_is_near_zero():
    flow = bfn.DiscretisedFlow(16, 1e-3)
    model = bfn.BFN(ZeroNet(channels=2), flow, (5,), dtype=F64)
    x = flow.quantize(torch.rand(32, 5, generator=gen(40), dtype=F64) * 2 - 1)
    # eps prediction 0 => mu_x = mu / gamma ~ x (sigma_1 tiny), sigma_x = max(sqrt((1-g)/g), 1e-3) ~ 1e-3 << 1/16
    assert model.reconstruction_loss(x, gen(41)).abs().max().item() < 1e-6


def test_discretised_data_prediction_is_the_output_mean():
    """The CDF-sum form of k_hat equals sum_k p_O(k) k_c, also far outside [-1, 1] and for tiny sigma_x."""
    flow = bfn.DiscretisedFlow(17, 0.02)
    g = gen(50)
    net_out = torch.randn(64, 3, 2, generator=g, dtype=F64) * 4
    mu = torch.randn(64, 3, generator=g, dtype=F64) * 2
    tau = torch.rand(64, generator=g, dtype=F64)
    tau[:4] = torch.tensor([0.0, 1e-7, 1.0, 0.5])
    expected = flow.k_hat(flow.bin_probs(net_out, mu, tau))
    assert torch.allclose(flow.data_prediction(net_out, mu, tau), expected, atol=1e-12)


def _full_sum_mean(mu_x: torch.Tensor, sigma_x: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Reference ``k_hat = k_c(K) - D sum_{j=1}^{K-1} Phi((e_j - mu_x)/sigma_x)`` over all interior edges."""
    edges = torch.arange(1, num_bins, dtype=mu_x.dtype) * (2.0 / num_bins) - 1.0
    cdf = torch.special.ndtr((edges - mu_x.unsqueeze(-1)) / sigma_x.unsqueeze(-1))
    return (1.0 - 1.0 / num_bins) - (2.0 / num_bins) * cdf.sum(-1)


def _mean_grid(num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mu_x from far below to far above [-1, 1] against sigma_x from 1e-3 to 10 (both sides of the switch)."""
    width = 2.0 / num_bins
    sigmas = torch.cat([torch.logspace(-3, 1, 41, dtype=F64), width * torch.tensor([1.49, 1.51, 2.0, 0.3], dtype=F64)])
    mus = torch.cat([torch.linspace(-1.3, 1.3, 397, dtype=F64), torch.tensor([-1e4, -40.0, -3.0, 3.0, 40.0, 1e4])])
    mu_x, sigma_x = torch.meshgrid(mus, sigmas.clamp(1e-3, 10.0), indexing="ij")
    return mu_x, sigma_x


@pytest.mark.parametrize("num_bins", [2, 16, 32, 256])
def test_discretised_mean_equals_the_full_sum(num_bins):
    """The O(1) k_hat (window of edges / Euler-Maclaurin) equals the sum over all K - 1 edges within 1.1e-7 D."""
    mu_x, sigma_x = _mean_grid(num_bins)
    error = (gaussian_bin_mean(mu_x, sigma_x, num_bins) - _full_sum_mean(mu_x, sigma_x, num_bins)).abs().max()
    assert error.item() <= 1.1e-7 * 2.0 / num_bins
    if num_bins <= 17:  # all edges fit in the window: exact
        assert error.item() < 1e-14
    probs_mean = bfn.DiscretisedFlow(num_bins).k_hat(gaussian_bin_probs(mu_x, sigma_x, num_bins))
    torch.testing.assert_close(gaussian_bin_mean(mu_x, sigma_x, num_bins), probs_mean, rtol=0, atol=2e-7 / num_bins)


@pytest.mark.parametrize("num_bins", [2, 16, 256])
def test_discretised_mean_in_float32_is_as_precise_as_the_full_sum(num_bins):
    mu_x, sigma_x = _mean_grid(num_bins)
    mu_x, sigma_x = mu_x.float().double(), sigma_x.float().double()  # the same inputs in both precisions
    exact = _full_sum_mean(mu_x, sigma_x, num_bins)
    error = (gaussian_bin_mean(mu_x.float(), sigma_x.float(), num_bins).double() - exact).abs()
    error_full = (_full_sum_mean(mu_x.float(), sigma_x.float(), num_bins).double() - exact).abs()
    assert gaussian_bin_mean(mu_x.float(), sigma_x.float(), num_bins).dtype == torch.float32
    assert error.max().item() < max(4 * error_full.max().item(), 2.5e-7) and error.max().item() < 1e-6


@pytest.mark.parametrize("num_bins", [2, 16, 256])
def test_discretised_mean_gradients(num_bins):
    """Closed-form gradients (window) and the Euler-Maclaurin form's agree with autograd of the full sum."""
    g = gen(60)
    mu_x = (torch.rand(300, generator=g, dtype=F64) * 3 - 1.5).requires_grad_()
    sigma_x = torch.exp(torch.rand(300, generator=g, dtype=F64) * math.log(1e4)) * 1e-3
    sigma_x = sigma_x.requires_grad_()
    grads = torch.autograd.grad(gaussian_bin_mean(mu_x, sigma_x, num_bins).sum(), (mu_x, sigma_x))
    expected = torch.autograd.grad(_full_sum_mean(mu_x, sigma_x, num_bins).sum(), (mu_x, sigma_x))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    few = [t[::10].detach().clone().requires_grad_() for t in (mu_x, sigma_x)]  # both forms, finite differences
    assert torch.autograd.gradcheck(lambda m, s: gaussian_bin_mean(m, s, num_bins), few)


def test_quantize_agrees_with_bin_centres_in_float32():
    flow = bfn.DiscretisedFlow(10, 0.02)
    centres = flow.bin_centres(torch.float32)
    assert torch.equal(flow.quantize(centres), centres)
