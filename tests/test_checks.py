"""Fuzz tests of the public API's argument checks: bad values raise ``ValueError`` naming the argument, before work.

Covered, by argument: ``steps`` (``loss``, ``nll``, ``sample``, ``time_grid``, ``pf_ode_nll``), ``mc_samples``,
``samples``, ``num_samples``, ``probes``, ``EncoderOptions.samples``, ``num_classes``, ``num_bins``, ``data_shape``
(``BFN``, ``bits_per_dim``), ``sigma_1``, ``beta_1``, ``eta``, ``rtol`` / ``atol``, ``clip``, ``antithetic``,
``x`` (``None``, lists, 0-d, complex, empty batches), ``generator``, ``dtype``, ``net``, ``init`` and ``data_var``,
explicit ``grid`` tensors, ``flow_from_config`` and ``build_net`` keys and values, and non-finite network outputs.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import bfn
from bfn._checks import MAX_NUM_SAMPLES, MAX_STEPS, NonFiniteError, check_eta, check_int, check_real
from bfn.flows import flow_from_config
from bfn.flows.continuous import SIGMA_1_MIN
from bfn.flows.discrete import BETA_1_MAX
from bfn.likelihood import EncoderOptions, ODEOptions, StartOptions, TraceOptions, pf_ode_nll
from bfn.nets import MAX_NET_SIZE, build_net, net_spec
from bfn.nets.mlp import MLP
from bfn.nets.unet import UNet
from bfn.time import time_grid
from test_model import KINDS, make_data, make_model

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: values no integer argument accepts: bools, non-integral or integral floats, strings, None, containers
NOT_INTEGERS = st.one_of(
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.none(),
    st.lists(st.integers(1, 4), max_size=2),
    st.just(np.float64(4.0)),
    st.just(np.bool_(True)),
)
#: values no real argument accepts
NOT_REALS = st.one_of(
    st.booleans(),
    st.text(max_size=4),
    st.none(),
    st.just(math.nan),
    st.just(complex(0.5, 0.0)),
    st.lists(st.floats(0.1, 0.5), max_size=2),
)


def _calls_counted(model: bfn.BFN) -> list[int]:
    calls: list[int] = []
    model.net.register_forward_hook(lambda *a: calls.append(1))
    return calls


def _raises_naming(run, name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(name)):
        run()


# ------------------------------------------------------------------------------------------------ the helpers
@FUZZ
@given(value=NOT_INTEGERS)
def test_check_int_refuses_non_integers(value):
    _raises_naming(lambda: check_int(value, "widgets"), "widgets must be an integer")


@given(value=st.integers(-(10**30), 10**30))
def test_check_int_range_and_numpy_integers(value):
    inside = 1 <= value <= 1000
    for typed in (value, *([np.int64(value), np.int32(value)] if abs(value) < 2**31 else [])):
        if inside:
            assert check_int(typed, "n", 1, 1000) == value and type(check_int(typed, "n", 1, 1000)) is int
        else:
            _raises_naming(lambda typed=typed: check_int(typed, "n", 1, 1000), "n must be")


@FUZZ
@given(value=NOT_REALS)
def test_check_real_refuses_non_reals(value):
    _raises_naming(lambda: check_real(value, "rate"), "rate must be")


# ------------------------------------------------------------------------------------------- integer options
@FUZZ
@given(value=NOT_INTEGERS, kind=st.sampled_from(KINDS))
def test_integer_arguments_refuse_non_integers(value, kind):
    model = make_model(kind)
    x = make_data(model)
    calls = _calls_counted(model)
    if value is not None:  # steps=None means continuous time
        _raises_naming(lambda: model.loss(x, steps=value), "steps")
        _raises_naming(lambda: model.nll(x, steps=value), "steps")
        _raises_naming(lambda: model.sample(2, steps=value), "steps")
    _raises_naming(lambda: model.nll(x, samples=value), "samples")
    _raises_naming(lambda: model.nll(x, steps=3, mc_samples=value), "mc_samples")
    _raises_naming(lambda: model.loss_per_example(x, steps=3, mc_samples=value), "mc_samples")
    _raises_naming(lambda: model.sample(value), "num_samples")
    assert not calls, "the network ran before the arguments were checked"


@FUZZ
@given(value=st.one_of(st.integers(-(10**6), 0), st.integers(MAX_STEPS + 1, 10**15)))
def test_integer_arguments_out_of_range_name_the_limit(value):
    model = make_model("continuous")
    x = make_data(model)
    calls = _calls_counted(model)
    _raises_naming(lambda: model.loss(x, steps=value), "steps")
    _raises_naming(lambda: model.sample(2, steps=value), "steps")
    _raises_naming(lambda: model.nll(x, steps=3, mc_samples=value), "mc_samples")
    _raises_naming(lambda: time_grid(value, 0.01), "steps")
    assert not calls


def test_absurd_sizes_are_refused_with_the_limit():
    model = make_model("continuous")
    with pytest.raises(ValueError, match=f"num_samples must be at most {MAX_NUM_SAMPLES:,}"):
        model.sample(10**15)
    with pytest.raises(ValueError, match="steps must be at most"):
        model.loss(make_data(model), steps=10**12)
    with pytest.raises(ValueError, match="data_shape"):
        bfn.BFN(nn.Identity(), bfn.ContinuousFlow(), (10**20,))
    with pytest.raises(ValueError, match="data_shape"):
        bfn.BFN(nn.Identity(), bfn.ContinuousFlow(), (2**30, 2**30, 2**30))


def test_numpy_integers_work_wherever_python_ints_do():
    torch.manual_seed(0)
    model = make_model("discrete", data_shape=(np.int64(3),))
    assert model.data_shape == (3,) and type(model.data_shape[0]) is int
    x = make_data(model)
    g = lambda: torch.Generator().manual_seed(1)
    assert torch.equal(model.loss(x, steps=np.int64(4), generator=g()), model.loss(x, steps=4, generator=g()))
    assert torch.equal(model.nll(x, samples=np.int32(2), generator=g()), model.nll(x, samples=2, generator=g()))
    out = model.sample(np.int64(3), steps=np.int16(4), generator=g())
    assert out.samples.shape == (3, 3)
    flow = bfn.DiscreteFlow(np.int64(4), np.float32(2.0))
    assert flow.num_classes == 4 and type(flow.num_classes) is int and flow.beta_1 == 2.0
    assert bfn.DiscretisedFlow(np.int64(16)).num_bins == 16
    assert float(bfn.bits_per_dim(math.log(2.0) * 6, (np.int64(2), 3))) == pytest.approx(1.0)


@FUZZ
@given(value=NOT_INTEGERS)
def test_flow_constructors_refuse_non_integer_sizes(value):
    _raises_naming(lambda: bfn.DiscreteFlow(value, 1.0), "num_classes")
    _raises_naming(lambda: bfn.DiscretisedFlow(value), "num_bins")
    if not isinstance(value, list):  # a list of sizes is a valid shape
        _raises_naming(lambda: bfn.BFN(nn.Identity(), bfn.ContinuousFlow(), value), "data_shape")
        _raises_naming(lambda: bfn.bits_per_dim(1.0, value), "data_shape")


@pytest.mark.parametrize("shape", [0, -1, (), (3, 0), (2.5,), ("4",), (True,)])
def test_bad_data_shapes(shape):
    _raises_naming(lambda: bfn.bits_per_dim(torch.ones(2), shape), "data_shape")
    _raises_naming(lambda: bfn.BFN(nn.Identity(), bfn.ContinuousFlow(), shape), "data_shape")


# ----------------------------------------------------------------------------------------------- real options
@FUZZ
@given(value=st.one_of(NOT_REALS, st.floats(max_value=SIGMA_1_MIN / 2), st.floats(min_value=1.0)))
def test_sigma_1_outside_the_supported_range(value):
    _raises_naming(lambda: bfn.ContinuousFlow(value), "sigma_1")
    _raises_naming(lambda: bfn.DiscretisedFlow(16, value), "sigma_1")


@FUZZ
@given(value=st.one_of(NOT_REALS, st.floats(max_value=0.0), st.floats(min_value=BETA_1_MAX * 1.01)))
def test_beta_1_outside_the_supported_range(value):
    _raises_naming(lambda: bfn.DiscreteFlow(3, value), "beta_1")


@pytest.mark.parametrize("kind", KINDS)
def test_the_extremes_of_the_supported_schedules_compute(kind):
    """The range limits are where float32 losses stay finite (below them: NaN / Inf, hence the limits)."""
    torch.manual_seed(0)
    extreme = {"continuous": {"sigma_1": SIGMA_1_MIN}, "discretised": {"sigma_1": SIGMA_1_MIN}}
    model = make_model(kind, **extreme.get(kind, {"beta_1": BETA_1_MAX}))
    x = make_data(model, batch=16)
    g = torch.Generator().manual_seed(0)
    for value in (model.loss(x, generator=g), model.loss(x, steps=10, generator=g), model.nll(x, generator=g)):
        assert torch.isfinite(value).all()
    samples = model.sample(4, sampler="bfn", steps=5, generator=g).samples
    assert samples.shape == (4, 3)


@FUZZ
@given(value=st.one_of(st.text(max_size=3), st.integers(0, 1), st.none(), st.floats()))
def test_clip_and_antithetic_must_be_bools(value):
    _raises_naming(lambda: bfn.ContinuousFlow(0.01, clip=value), "clip")
    model = make_model("continuous")
    _raises_naming(lambda: pf_ode_nll(model, make_data(model), encoder=EncoderOptions(antithetic=value)), "antithetic")


@FUZZ
@given(value=st.one_of(NOT_REALS, st.floats(max_value=0.0), st.floats(min_value=1.0)))
def test_eta_rtol_atol(value):
    _raises_naming(lambda: time_grid(4, value), "eta")
    model = make_model("continuous")
    x = make_data(model)
    calls = _calls_counted(model)
    if value is not None:
        _raises_naming(lambda: model.sample(2, sampler="bfn-solver++1", steps=3, eta=value), "eta")
        _raises_naming(lambda: pf_ode_nll(model, x, start=StartOptions(eta=value)), "eta")
    _raises_naming(lambda: pf_ode_nll(model, x, ode=ODEOptions(rtol=value)), "rtol")
    _raises_naming(lambda: pf_ode_nll(model, x, ode=ODEOptions(atol=value)), "atol")
    assert not calls


@FUZZ
@given(value=NOT_INTEGERS)
def test_pf_ode_nll_integer_options(value):
    model = make_model("continuous")
    x = make_data(model)
    calls = _calls_counted(model)
    options = {
        "probes": lambda: {"trace": TraceOptions(probes=value)},
        "EncoderOptions.samples": lambda: {"encoder": EncoderOptions(samples=value)},
        "steps": lambda: {"ode": ODEOptions(steps=value)},
    }
    for name, make in options.items():
        _raises_naming(lambda make=make: pf_ode_nll(model, x, **make()), name)
    assert not calls


# ------------------------------------------------------------------------------------------ tensor arguments
BAD_X = [None, [[0.0, 0.1, 0.2]], 0.5, torch.tensor(0.5), torch.zeros(4, 3, dtype=torch.complex64), "x"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("x", BAD_X, ids=["none", "list", "float", "0-d", "complex", "str"])
def test_bad_data_arguments_name_x(kind, x):
    model = make_model(kind)
    calls = _calls_counted(model)
    for run in (model.loss, model.nll, model.reconstruction_loss, model.loss_per_example):
        with pytest.raises(ValueError, match=r"\bx\b|data"):
            run(x)
    with pytest.raises(ValueError, match=r"\bx\b|data"):
        pf_ode_nll(model, x)
    assert not calls


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batches(kind):
    model = make_model(kind)
    x = make_data(model)[:0]
    calls = _calls_counted(model)
    with pytest.raises(ValueError, match="empty batch"):
        model.loss(x)
    assert model.nll(x).shape == (0,)
    assert model.loss_per_example(x).shape == (0,)
    assert model.reconstruction_loss(x).shape == (0,)
    assert not calls


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64])
def test_class_ids_of_any_integer_dtype(dtype):
    model = make_model("discrete")
    x = make_data(model)
    reference = model.nll(x, generator=torch.Generator().manual_seed(0))
    got = model.nll(x.to(dtype), generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, reference)
    assert torch.isfinite(model.loss(x.to(dtype), steps=3)).all()
    assert torch.isfinite(pf_ode_nll(model, x.to(dtype), ode=ODEOptions(solver="fixed", steps=2)).nll).all()


@FUZZ
@given(value=st.one_of(st.integers(), st.text(max_size=3), st.just(torch.zeros(2)), st.just(np.random.default_rng())))
def test_generator_must_be_a_torch_generator(value):
    model = make_model("continuous")
    x = make_data(model)
    calls = _calls_counted(model)
    _raises_naming(lambda: model.loss(x, generator=value), "generator")
    _raises_naming(lambda: model.nll(x, generator=value), "generator")
    _raises_naming(lambda: model.reconstruction_loss(x, generator=value), "generator")
    _raises_naming(lambda: model.sample(2, generator=value), "generator")
    _raises_naming(lambda: pf_ode_nll(model, x, generator=value), "generator")
    assert not calls


@pytest.mark.parametrize("dtype", ["float32", torch.long, torch.bool, 32])
def test_bfn_dtype_and_net(dtype):
    _raises_naming(lambda: bfn.BFN(nn.Identity(), bfn.ContinuousFlow(), (2,), dtype=dtype), "dtype")


@pytest.mark.parametrize("net", [None, 3, "mlp"])
def test_bfn_needs_a_callable_network(net):
    _raises_naming(lambda: bfn.BFN(net, bfn.ContinuousFlow(), (2,)), "net")


@pytest.mark.parametrize(
    "grid", [torch.tensor([1, 0]), torch.tensor([0.5 + 0j, 0.0]), torch.tensor([True, False])], ids=str
)
def test_integer_complex_and_bool_grids_are_refused(grid):
    _raises_naming(lambda: time_grid(1, 0.01, grid), "grid")


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300])
def test_non_finite_or_huge_init_and_data_var(value):
    model = make_model("continuous")
    calls = _calls_counted(model)
    _raises_naming(
        lambda: model.sample(2, sampler="bfn-solver++1", steps=3, init=torch.full((2, 3), value, dtype=torch.float64)),
        "init",
    )
    _raises_naming(
        lambda: model.sample(2, sampler="bfn-solver++1", steps=3, init="moment", data_mean=0.0, data_var=value),
        "data_var",
    )
    assert not calls


# --------------------------------------------------------------------------------------------- config dicts
def test_flow_from_config_refuses_unknown_keys_and_non_dicts():
    _raises_naming(lambda: flow_from_config("continuous", {"sigma_1": 0.01, "sigma1": 2}), "sigma1")
    _raises_naming(lambda: flow_from_config("continuous", [0.01]), "flow config")
    _raises_naming(lambda: flow_from_config(["continuous"], {}), "flow kind")
    assert flow_from_config("discrete", {"num_classes": 3, "beta_1": 1.0}) == bfn.DiscreteFlow(3, 1.0)


@FUZZ
@given(value=st.one_of(st.text(max_size=3), st.floats(), st.booleans(), st.integers(MAX_NET_SIZE + 1)))
def test_build_net_checks_option_types(value):
    _raises_naming(lambda: build_net("mlp", (3,), 1, 1, hidden=value), "hidden")
    _raises_naming(lambda: build_net("mlp", (3,), value, 1), "in_channels")


def test_build_net_refuses_unknown_options_and_names():
    _raises_naming(lambda: build_net("mlp", (3,), 1, 1, bogus=1), "bogus")
    _raises_naming(lambda: build_net("nope", (3,), 1, 1), "unknown network")
    _raises_naming(lambda: build_net(None, (3,), 1, 1), "unknown network")
    net = build_net("mlp", (3,), 1, 1, hidden=np.int64(8), depth=1)
    assert net_spec(net).to_dict() == {"name": "mlp", "options": {"hidden": 8, "depth": 1}}


# ----------------------------------------------------------------------------------------- network outputs
class _Constant(nn.Module):
    def __init__(self, flow: bfn.Flow, value: float) -> None:
        super().__init__()
        self.out_shape = flow.output_shape((3,))
        self.value = value

    def forward(self, inputs: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return torch.full((inputs.shape[0], *self.out_shape), self.value, dtype=inputs.dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_network_outputs_are_named(kind, value):
    model = make_model(kind)
    model.net = _Constant(model.flow, value)
    x = make_data(model)
    for run in (
        lambda: model.loss(x),
        lambda: model.nll(x),
        lambda: model.sample(2, sampler="bfn", steps=3),
        lambda: model.sample(2, steps=3, sampler="h-solver"),
    ):
        with pytest.raises(NonFiniteError, match="network output"):
            run()


def test_bits_per_dim_of_numbers_arrays_and_tensors():
    assert bfn.bits_per_dim(2 * math.log(2.0), 2) == pytest.approx(1.0)
    assert np.allclose(bfn.bits_per_dim(np.array([math.log(2.0)]), (1,)), [1.0])
    assert torch.allclose(bfn.bits_per_dim(torch.tensor([3 * math.log(2.0)]), (3,)), torch.tensor([1.0]))
    for bad in (None, "1.0", True):
        _raises_naming(lambda bad=bad: bfn.bits_per_dim(bad, 3), "nll")


# ------------------------------------------------------------------------------------------------- one helper each
@FUZZ
@given(value=st.one_of(NOT_REALS, st.floats(max_value=0.0), st.floats(min_value=1.0)))
def test_every_eta_is_checked_by_one_helper(value):
    """check_eta refuses what time_grid, the solvers' options and the tuned grids refuse, with one message."""
    from bfn.sampling.auto import time_power_grid
    from bfn.sampling.options import SolverOptions

    with pytest.raises(ValueError) as helper:
        check_eta(value)
    runs = [lambda: time_grid(4, value), lambda: time_power_grid(4, value, 1.0)]
    if value is not None:  # None: the flow's default
        runs.append(lambda: SolverOptions.parse("bfn-solver++1", {"eta": value}))
    for run in runs:
        with pytest.raises(ValueError) as caught:
            run()
        assert str(caught.value) == str(helper.value)


def test_check_eta_accepts_the_open_unit_interval():
    assert check_eta(0.5) == 0.5 and type(check_eta(np.float32(0.25))) is float
    assert check_eta(torch.tensor(1e-4, dtype=torch.float64)) == pytest.approx(1e-4)


def test_check_int_states_the_lower_bound_for_non_integers():
    for value in (2.0, True, "3", None):
        _raises_naming(lambda value=value: check_int(value, "widgets", minimum=2), "widgets must be an integer >= 2")
    _raises_naming(lambda: check_int(2.5, "widgets", minimum=None), "widgets must be an integer, got")


def test_bits_per_dim_is_one_function():
    """bfn.bits_per_dim and bfn.metrics.bits_per_dim are the same conversion (a shape or an element count)."""
    import bfn.metrics

    assert bfn.metrics.bits_per_dim is bfn.bits_per_dim
    nll = torch.tensor([math.log(2.0) * 192], dtype=torch.float64)
    assert torch.equal(bfn.bits_per_dim(nll, (3, 8, 8)), bfn.bits_per_dim(nll, 192))
    assert bfn.bits_per_dim(nll, 192).item() == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize(
    "build",
    [
        lambda v: MLP((4,), 1, 1, depth=v),
        lambda v: MLP((4,), 1, 1, hidden=v),
        lambda v: MLP((4,), 1, 1, time_dim=v),
        lambda v: MLP((4,), v, 1),
        lambda v: UNet((1, 8, 8), 1, 1, base=v),
        lambda v: UNet((1, 8, 8), 1, 1, num_res_blocks=v),
        lambda v: bfn.BFN(nn.Identity(), bfn.ContinuousFlow(), (2,), num_classes=v),
    ],
)
def test_sizes_of_networks_and_models_are_checked_integers(build):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            build(bad)
