"""The BFN model: input validation, numerical robustness, dtypes, torch.compile and a short training run."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import bfn
from oracles import ZeroNet

F64 = torch.float64


class TinyNet(nn.Module):
    """A small MLP of the network contract for any flow (flattened input and a time feature)."""

    def __init__(self, flow: bfn.Flow, data_shape: tuple[int, ...], hidden: int = 64) -> None:
        super().__init__()
        self.in_shape = flow.state_shape(data_shape)
        self.out_shape = flow.output_shape(data_shape)
        self.body = nn.Sequential(
            nn.Linear(math.prod(self.in_shape) + 1, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, math.prod(self.out_shape)),
        )

    def forward(self, inputs: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        h = torch.cat([inputs.flatten(1), tau[:, None]], dim=1)
        return self.body(h).reshape(inputs.shape[0], *self.out_shape)


def make_model(kind: str, data_shape=(3,), dtype=torch.float32, **flow_kw) -> bfn.BFN:
    flow = {
        "continuous": lambda: bfn.ContinuousFlow(**({"sigma_1": 0.02} | flow_kw)),
        "discretised": lambda: bfn.DiscretisedFlow(**({"num_bins": 8, "sigma_1": 0.02} | flow_kw)),
        "discrete": lambda: bfn.DiscreteFlow(**({"num_classes": 4, "beta_1": 2.0} | flow_kw)),
    }[kind]()
    return bfn.BFN(TinyNet(flow, data_shape).to(dtype), flow, data_shape)


def make_data(model: bfn.BFN, batch: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *model.data_shape)
    if model.flow.kind == "discrete":
        return torch.randint(0, model.flow.num_classes, shape, generator=g)
    x = torch.rand(shape, generator=g, dtype=model.dtype) * 2 - 1
    return model.flow.quantize(x) if model.flow.kind == "discretised" else x


KINDS = ["continuous", "discretised", "discrete"]


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: bfn.ContinuousFlow(0.0), "sigma_1"),
        (lambda: bfn.ContinuousFlow(1.0), "sigma_1"),
        (lambda: bfn.ContinuousFlow(-0.1), "sigma_1"),
        (lambda: bfn.DiscretisedFlow(16, 1.5), "sigma_1"),
        (lambda: bfn.DiscretisedFlow(1, 0.1), "num_bins"),
        (lambda: bfn.DiscreteFlow(1, 1.0), "num_classes"),
        (lambda: bfn.DiscreteFlow(3, 0.0), "beta_1"),
        (lambda: bfn.DiscreteFlow(3, -2.0), "beta_1"),
        (lambda: bfn.DiscreteFlow(3, math.inf), "beta_1"),
        (lambda: bfn.BFN(nn.Identity(), "continuous", (2,)), "flow"),
        (lambda: bfn.BFN(nn.Identity(), bfn.ContinuousFlow(), (0,)), "data_shape"),
    ],
)
def test_bad_hyper_parameters_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _bad_data_cases():
    cont = make_model("continuous")
    disc = make_model("discretised")
    cat = make_model("discrete")
    x = torch.zeros(4, 3)
    return [
        (cont, torch.zeros(4, 2), "shape"),
        (cont, torch.zeros(4, 3, 1), "shape"),
        (cont, torch.tensor([[0.0, math.nan, 0.0]]), "NaN"),
        (cont, torch.tensor([[0.0, math.inf, 0.0]]), "NaN or Inf"),
        (cont, x + 1.5, r"\[-1, 1\]"),
        (cont, torch.zeros(4, 3, dtype=torch.long), "floating"),
        (disc, x + 0.01, "quantize"),
        (disc, x - 2, r"\[-1, 1\]"),
        (cat, torch.full((4, 3), 4), r"\[0, 4\)"),
        (cat, torch.full((4, 3), -1), r"\[0, 4\)"),
        (cat, torch.zeros(4, 3), "non-integer"),
        (cat, torch.zeros(4, 3, dtype=torch.bool), "bool"),
        (cat, torch.zeros(4, 3, 4, dtype=torch.long), "shape"),
    ]


@pytest.mark.parametrize("case", range(13))
@pytest.mark.parametrize("entry", ["loss", "loss_steps", "nll", "reconstruction"])
def test_bad_data_raises_before_any_work(case, entry):
    model, x, match = _bad_data_cases()[case]
    calls = []
    model.net.register_forward_hook(lambda *a: calls.append(1))
    run = {
        "loss": lambda: model.loss(x),
        "loss_steps": lambda: model.loss(x, steps=5),
        "nll": lambda: model.nll(x),
        "reconstruction": lambda: model.reconstruction_loss(x),
    }[entry]
    with pytest.raises(ValueError, match=match):
        run()
    assert not calls, "the network ran before the input was validated"


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps(steps):
    model = make_model("continuous")
    with pytest.raises(ValueError, match="steps"):
        model.loss(make_data(model), steps=steps)


@pytest.mark.parametrize("kind", KINDS)
def test_network_with_wrong_output_shape_is_named(kind):
    model = make_model(kind)
    model.net = ZeroNet(channels=7, input_has_channels=kind == "discrete")
    expected = (5, *model.flow.output_shape(model.data_shape))
    with pytest.raises(ValueError, match=rf"network returned shape .*expected {re.escape(str(expected))}"):
        model.loss(make_data(model))


# ------------------------------------------------------------------------------------- numerical robustness
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sigma_1=st.floats(1e-4, 0.5),
    tau=st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)),
    seed=st.integers(0, 2**16),
    steps=st.integers(1, 50),
)
def test_continuous_and_discretised_are_finite_everywhere(sigma_1, tau, seed, steps):
    g = torch.Generator().manual_seed(seed)
    for flow in (bfn.ContinuousFlow(sigma_1), bfn.DiscretisedFlow(1 + seed % 255 + 1, sigma_1)):
        x = torch.rand(4, 3, generator=g) * 2 - 1
        if flow.kind == "discretised":
            x = flow.quantize(x)
        t = torch.full((4,), tau, dtype=F64)
        for value in (flow.beta(t), flow.gamma(t), flow.sde.alpha(1 - t), flow.sde.f((1 - t).clamp(max=1 - 1e-9))):
            assert torch.isfinite(value).all()
        state = flow.flow_state(x, t, g)
        net_out = torch.randn((4, *flow.output_shape((3,))), generator=g) * 3
        pred = flow.data_prediction(net_out, state, t)
        assert torch.isfinite(state).all() and torch.isfinite(pred).all()
        assert (pred.abs() <= 1).all()
        assert torch.isfinite(flow.continuous_time_loss(net_out, x, state, t)).all()
        assert (flow.continuous_time_loss(net_out, x, state, t) >= 0).all()
        alpha = flow.step_accuracies(steps)[-1].expand(4)
        assert torch.isfinite(flow.discrete_time_loss(net_out, x, state, t, alpha, steps, g)).all()
        assert torch.isfinite(flow.reconstruction_loss(net_out, x, state)).all()
        new = flow.sampler_step(net_out, state, t, alpha, g)
        assert torch.isfinite(new).all()
        assert torch.isfinite(flow.sample_output(net_out, new, g)).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    beta_1=st.floats(0.01, 20.0),
    num_classes=st.integers(2, 256),
    tau=st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)),
    seed=st.integers(0, 2**16),
    steps=st.integers(1, 50),
)
def test_discrete_is_finite_everywhere(beta_1, num_classes, tau, seed, steps):
    g = torch.Generator().manual_seed(seed)
    flow = bfn.DiscreteFlow(num_classes, beta_1)
    x = torch.randint(0, num_classes, (4, 3), generator=g)
    t = torch.full((4,), tau, dtype=F64)
    state = flow.flow_state(x, t, g, dtype=torch.float32)
    theta = flow.net_input(state)
    assert torch.isfinite(theta).all() and torch.allclose(theta.sum(-1), torch.ones(4, 3), atol=1e-4)
    logits = torch.randn(4, 3, num_classes, generator=g) * 5
    assert torch.isfinite(flow.data_prediction(logits, state, t)).all()
    loss = flow.continuous_time_loss(logits, x, state, t)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    alpha = flow.step_accuracies(steps)[-1].expand(4)
    assert torch.isfinite(flow.discrete_time_loss(logits, x, state, t, alpha, steps, g)).all()
    recon = flow.reconstruction_loss(logits, x, state)
    assert torch.isfinite(recon).all() and (recon >= 0).all()
    new = flow.sampler_step(logits, state, t, alpha, g)
    assert torch.isfinite(new).all()
    out = flow.sample_output(logits, new, g)
    assert out.dtype == torch.long and (out >= 0).all() and (out < num_classes).all()


# -------------------------------------------------------------------------------------- dtypes and compile
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_any_module_in_float32_and_float64(kind, dtype):
    model = make_model(kind, data_shape=(2, 3), dtype=dtype)
    x = make_data(model, batch=6)
    for loss in (model.loss(x), model.loss(x, steps=4)):
        assert loss.dtype == dtype and loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    nll = model.nll(x)
    assert nll.shape == (6,) and torch.isfinite(nll).all()
    bpd = bfn.bits_per_dim(nll, model.data_shape)
    assert torch.allclose(bpd, nll / (6 * math.log(2)))


def test_losses_are_reproducible_with_a_generator():
    model = make_model("discrete")
    x = make_data(model)
    a = model.loss(x, generator=torch.Generator().manual_seed(3))
    b = model.loss(x, generator=torch.Generator().manual_seed(3))
    c = model.loss(x, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item() and a.item() != c.item()


@pytest.mark.parametrize("kind", KINDS)
def test_torch_compile(kind):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    model = make_model(kind)
    x = make_data(model)
    eager = model.loss(x, generator=torch.Generator().manual_seed(0))
    try:
        compiled = torch.compile(model.net, dynamic=False)
        model.net = compiled
        value = model.loss(x, generator=torch.Generator().manual_seed(0))
    except Exception as error:  # no compiler toolchain on this machine
        pytest.skip(f"torch.compile unavailable here: {type(error).__name__}: {error}")
    assert torch.allclose(value, eager, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- training
def test_training_a_small_mlp_lowers_the_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    angle = torch.rand(4096, generator=g) * 2 * math.pi
    radius = 0.6 + 0.05 * torch.randn(4096, generator=g)
    data = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1).clamp(-1, 1)
    flow = bfn.ContinuousFlow(0.01)
    model = bfn.BFN(TinyNet(flow, (2,), hidden=128), flow, (2,))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    evaluate = lambda: model.loss(data[:2048], generator=torch.Generator().manual_seed(1)).item()
    with torch.no_grad():
        before = evaluate()
    for _ in range(400):
        batch = data[torch.randint(0, 4096, (256,), generator=g)]
        loss = model.loss(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = evaluate()
    assert after < 0.9 * before, (before, after)


# ------------------------------------------------------------------------------------------ time sampling
class TimeRecorder(nn.Module):
    """A :class:`ZeroNet` (uniform logits for discrete data) that records the times it is called at."""

    def __init__(self, channels: int = 1, input_has_channels: bool = False) -> None:
        super().__init__()
        self.zero = ZeroNet(channels, input_has_channels)
        self.taus: list[torch.Tensor] = []

    def forward(self, inputs: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        self.taus.append(tau.detach().to(F64).clone())
        return self.zero(inputs, tau)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_default_time_sampling_draws_independent_uniform_times():
    net = TimeRecorder()
    model = bfn.BFN(net, bfn.ContinuousFlow(0.02), (3,), dtype=F64)
    x = torch.zeros(7, 3, dtype=F64)
    model.loss_per_example(x, generator=_gen(5))
    assert torch.equal(net.taus[-1], torch.rand(7, generator=_gen(5), dtype=F64))
    model.loss_per_example(x, generator=_gen(5), time_sampling="uniform")
    assert torch.equal(net.taus[-1], net.taus[-2])


def test_stratified_times_put_one_time_in_each_interval():
    net = TimeRecorder()
    model = bfn.BFN(net, bfn.ContinuousFlow(0.02), (3,), dtype=F64)
    x = torch.zeros(8, 3, dtype=F64)
    for seed in range(5):
        model.loss_per_example(x, generator=_gen(seed), time_sampling="stratified")
        assert torch.equal(torch.floor(net.taus[-1] * 8).sort().values, torch.arange(8, dtype=F64))
        model.loss_per_example(x, steps=8, generator=_gen(seed), time_sampling="stratified")  # L_n: each i once
        assert torch.equal((net.taus[-1] * 8).round().sort().values, torch.arange(8, dtype=F64))
    a = model.loss(x, generator=_gen(3), time_sampling="stratified")
    b = model.loss(x, generator=_gen(3), time_sampling="stratified")
    assert a.item() == b.item()


def test_stratified_times_keep_the_expected_loss_and_cut_the_spread_of_the_batch_mean():
    # uniform logits: L_inf(x) = K beta_1 tau ||e_x - 1/K||^2 = c tau, so a batch mean is c times the mean time
    classes, batch = 4, 16
    net = TimeRecorder(channels=classes, input_has_channels=True)
    model = bfn.BFN(net, bfn.DiscreteFlow(classes, beta_1=2.0), (5,), dtype=F64)
    x = torch.randint(0, classes, (batch, 5), generator=_gen(0))
    c = 2.0 * (classes - 1) * 5
    spread = {}
    for mode in ("uniform", "stratified"):
        means = []
        for seed in range(200):
            loss = model.loss_per_example(x, generator=_gen(seed), time_sampling=mode)
            assert torch.allclose(loss, c * net.taus[-1], rtol=1e-12)
            means.append(loss.mean().item() / c)
        spread[mode] = max(abs(m - 0.5) for m in means)
        assert abs(sum(means) / len(means) - 0.5) < 0.03  # unbiased either way
    assert spread["stratified"] <= 1 / (2 * batch)  # within half an interval of the expectation, always
    assert spread["uniform"] > 3 / (2 * batch)


@pytest.mark.parametrize("value", ["sobol", "", None, 1])
def test_bad_time_sampling_is_refused(value):
    model = make_model("continuous")
    x = make_data(model)
    for run in (model.loss, model.loss_per_example):
        with pytest.raises(ValueError, match="time_sampling"):
            run(x, time_sampling=value)
