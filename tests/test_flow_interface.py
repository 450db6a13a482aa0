"""The Flow interface: every flow implements all of it, and each kind-specific method does what it promises per kind.

The flows are the only code that knows a data kind; the samplers, the likelihood, conditioning and the data layer
ask them. These tests pin each of those answers per kind against its closed form (docs/solvers.md 4 for the
sampling rules, docs/likelihood.md 6.4 for the decoder term).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import bfn
from bfn.data import KINDS as DATA_KINDS
from bfn.flows import FLOWS, KINDS, AutoChoice, Flow, SamplingDefaults, flow_type
from bfn.sampling import SAMPLERS, resolve_options
from oracles import ExactBinPosteriorFlow, ZeroNet

F64 = torch.float64

FLOW_CASES = {
    "continuous": lambda: bfn.ContinuousFlow(0.02),
    "discretised": lambda: bfn.DiscretisedFlow(8, 0.05),
    "discrete": lambda: bfn.DiscreteFlow(5, 2.0),
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def abstract_names() -> list[str]:
    return sorted(Flow.__abstractmethods__)


# ------------------------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("cls", [*FLOWS.values(), ExactBinPosteriorFlow], ids=lambda c: c.__name__)
def test_every_flow_implements_the_whole_interface(cls):
    assert not inspect.isabstract(cls)
    for name in abstract_names():
        member = inspect.getattr_static(cls, name)
        assert member is not inspect.getattr_static(Flow, name), f"{cls.__name__} does not implement {name}"
        base = inspect.signature(getattr(Flow, name))
        own = inspect.signature(getattr(cls, name))
        extra = list(own.parameters)[len(base.parameters) :]  # same parameters everywhere (extras optional)
        assert list(own.parameters)[: len(base.parameters)] == list(base.parameters), (cls.__name__, name)
        assert all(own.parameters[p].default is not inspect.Parameter.empty for p in extra), (cls.__name__, name)
    assert cls.kind in KINDS and issubclass(cls, FLOWS[cls.kind])
    assert isinstance(cls.sampling, SamplingDefaults) and 0 < cls.sampling.eta < 1
    assert cls.sampling.tuned_grid in ("logsnr", "time") and cls.sampling.tuned_power > 0
    assert cls.sampling.auto and cls.sampling.auto[-1].max_nfe is None  # every budget has a configuration
    for choice in cls.sampling.auto:  # each names a sampler of the kind with options it accepts
        spec = SAMPLERS[choice.sampler]
        assert cls.kind in spec.kinds
        resolve_options(choice.sampler, spec, cls.kind, choice.options)
    assert isinstance(cls.class_indices, bool) and cls.min_eta < cls.sampling.eta


def test_the_kind_registry_is_one_definition():
    assert tuple(FLOWS) == KINDS == DATA_KINDS
    for kind in KINDS:
        assert flow_type(kind).kind == kind
        assert bfn.time.DEFAULT_ETA[kind] == bfn.sampling.DEFAULT_ETA[kind] == FLOWS[kind].sampling.eta
    with pytest.raises(ValueError, match="unknown flow kind"):
        flow_type("gaussian")
    assert all(set(spec.kinds) <= set(KINDS) for spec in SAMPLERS.values())


def test_discretised_flow_holds_a_continuous_flow_instead_of_inheriting():
    flow = bfn.DiscretisedFlow(16, 0.01)
    assert not isinstance(flow, bfn.ContinuousFlow)
    assert isinstance(flow.gaussian, bfn.ContinuousFlow) and flow.gaussian.sigma_1 == flow.sigma_1
    tau = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    assert torch.equal(flow.gamma(tau), bfn.ContinuousFlow(0.01).gamma(tau))
    assert flow.sde is flow.gaussian.sde


def test_auto_choices_pick_by_budget():
    small, large = AutoChoice("a", {"x": 1}, max_nfe=3), AutoChoice("b", {})
    defaults = SamplingDefaults(eta=0.1, auto=(small, large), tuned_grid="time", tuned_power=1.0)
    assert [defaults.auto_choice(n).sampler for n in (1, 3, 4, 100)] == ["a", "a", "b", "b"]
    with pytest.raises(TypeError):
        small.options["x"] = 2  # read-only


# ---------------------------------------------------------------------------------------------- data maps
def test_unit_maps_of_continuous_data():
    flow = bfn.ContinuousFlow(0.02)
    v = torch.linspace(0, 1, 101, dtype=F64)
    x = flow.from_unit(v)
    torch.testing.assert_close(x, 2 * v - 1, rtol=0, atol=0)
    torch.testing.assert_close(flow.to_unit(x), v, rtol=0, atol=1e-15)
    assert flow.to_unit(torch.tensor([-3.0, 2.0])).tolist() == [0.0, 1.0]  # unbounded values clipped for display
    levels = torch.arange(256)
    torch.testing.assert_close(flow.from_levels(levels, 256), flow.from_unit(levels / 255.0).float())


@pytest.mark.parametrize("num_bins", [2, 7, 16])
def test_unit_maps_of_discretised_data_round_trip_on_the_bin_centres(num_bins):
    flow = bfn.DiscretisedFlow(num_bins, 0.05)
    centres = flow.bin_centres()
    assert torch.equal(flow.from_unit(flow.to_unit(centres)), centres)
    v = torch.rand(1000, dtype=F64, generator=gen(1))
    x = flow.from_unit(v)
    assert torch.equal(flow.quantize(x), x)  # bin centres
    assert (flow.bin_index(x) == torch.floor(v * num_bins).clamp(max=num_bins - 1)).all()  # the bin of 2v - 1
    flow.check_data(x[:, None].float(), (1,))
    levels = torch.arange(256)  # L levels in K bins: floor(v K / L), as the data sets store them
    expected = (2 * torch.div(levels * num_bins, 256, rounding_mode="floor") + 1) / num_bins - 1
    torch.testing.assert_close(flow.from_levels(levels, 256), expected.float())


@pytest.mark.parametrize("num_classes", [2, 5])
def test_unit_maps_of_discrete_data(num_classes):
    flow = bfn.DiscreteFlow(num_classes, 2.0)
    k = torch.arange(num_classes)
    v = flow.to_unit(k)
    assert v.dtype == torch.get_default_dtype()
    torch.testing.assert_close(v, k / (num_classes - 1))
    assert torch.equal(flow.from_unit(v), k)  # round trip on the classes
    edges = torch.arange(num_classes + 1, dtype=F64) / num_classes  # K equal intervals; v = 1 in the last
    assert flow.from_unit(edges).tolist() == [*range(num_classes), num_classes - 1]
    assert flow.from_unit(edges[1:] - 1e-9).tolist() == list(range(num_classes))
    assert flow.from_unit(torch.tensor([-0.5, 1.5])).tolist() == [0, num_classes - 1]
    levels = torch.arange(17)
    assert torch.equal(flow.from_levels(levels, 17), flow.from_unit(levels / 16.0))
    if num_classes == 2:  # static binarisation: the intensity thresholded at 1/2
        assert torch.equal(flow.from_levels(levels, 17), (2 * levels >= 16).long())


def test_for_data_builds_a_flow_of_the_resolution_or_names_the_problem():
    assert bfn.ContinuousFlow.for_data() == bfn.ContinuousFlow()
    assert bfn.DiscretisedFlow.for_data(num_levels=17).num_bins == 17
    assert bfn.DiscretisedFlow.for_data(num_bins=4, num_levels=17).num_bins == 4
    assert bfn.DiscreteFlow.for_data(num_classes=27).num_classes == 27
    assert bfn.DiscreteFlow.for_data().num_classes == 2
    with pytest.raises(ValueError, match="discretised data only"):
        bfn.ContinuousFlow.for_data(num_bins=8)
    with pytest.raises(ValueError, match="num_bins must be an int >= 2"):
        bfn.DiscretisedFlow.for_data(num_bins=1)
    with pytest.raises(ValueError, match="'digits' as discrete data has 2 classes"):
        bfn.DiscreteFlow.for_data(num_bins=5, num_classes=2, source="digits")
    assert bfn.ContinuousFlow().num_bins is None and bfn.ContinuousFlow().num_classes is None
    assert bfn.DiscretisedFlow(8).num_classes is None and bfn.DiscreteFlow(3).num_bins is None


def test_data_in_state_space_and_normalised_data():
    x = torch.tensor([[0, 2], [1, 1]], dtype=torch.int32)
    flow = bfn.DiscreteFlow(3, 2.0)
    flow.check_data(x, (2,))
    assert flow.normalise_data(x).dtype == torch.long and torch.equal(flow.normalise_data(x), x.long())
    x0 = flow.data_in_state_space(x.long())
    assert x0.dtype == F64 and x0.shape == (2, 2, 3)
    assert torch.equal(x0, 3 * torch.nn.functional.one_hot(x.long(), 3).double() - 1)
    for flow in (bfn.ContinuousFlow(0.02), bfn.DiscretisedFlow(4)):
        y = torch.tensor([[-0.75, 0.25]])
        assert flow.normalise_data(y) is y
        assert torch.equal(flow.data_in_state_space(y), y.double())
        assert flow.data_in_state_space(y, torch.float32).dtype == torch.float32


# ------------------------------------------------------------------------------------------ predictions
def test_clip_override_of_the_data_prediction_and_the_final_output():
    flow = bfn.ContinuousFlow(0.02, clip=True)
    mu = torch.full((3, 2), 0.5, dtype=F64)
    eps = torch.full((3, 2), -40.0, dtype=F64)  # x_hat far above 1
    tau = torch.full((3,), 0.5, dtype=F64)
    assert flow.data_prediction(eps, mu, tau).max() == 1.0
    assert flow.data_prediction(eps, mu, tau, clip=False).max() > 1.0
    free = bfn.ContinuousFlow(0.02, clip=False)
    assert free.data_prediction(eps, mu, tau, clip=True).max() == 1.0
    ones = torch.ones(3, dtype=F64)
    torch.testing.assert_close(flow.sample_output(eps, mu, None, clip=False), flow.x_hat(eps, mu, ones, clip=False))
    assert flow.sample_output(eps, mu, None).max() == 1.0
    for flow in (bfn.DiscretisedFlow(8), bfn.DiscreteFlow(3)):  # in range already: clip changes nothing
        net_out = torch.randn((3, 2, flow.output_channels), dtype=F64, generator=gen(2))
        state = torch.randn((3, *flow.state_shape((2,))), dtype=F64, generator=gen(3))
        assert torch.equal(
            flow.data_prediction(net_out, state, tau, clip=False), flow.data_prediction(net_out, state, tau)
        )
        a = flow.sample_output(net_out, state, gen(4), clip=True)
        assert torch.equal(a, flow.sample_output(net_out, state, gen(4)))


def test_decode_prediction_per_kind():
    x0 = torch.tensor([[-1.3, -0.51, 0.0, 0.49, 0.99]], dtype=F64)
    assert torch.equal(bfn.ContinuousFlow(0.02).decode_prediction(x0), x0)
    flow = bfn.DiscretisedFlow(4)
    assert flow.decode_prediction(x0).tolist() == [[-0.75, -0.75, 0.25, 0.25, 0.75]]  # the bin holding k_hat
    centres = flow.bin_centres()
    assert torch.equal(flow.decode_prediction(centres), centres)
    flow = bfn.DiscreteFlow(3)
    e = torch.tensor([[[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]], dtype=F64)
    assert flow.decode_prediction(3 * e - 1).tolist() == [[1, 0]]  # the argmax of e_hat


@pytest.mark.parametrize("kind", KINDS)
def test_moments_are_those_of_the_data_in_state_space(kind):
    flow = FLOW_CASES[kind]()
    g = gen(5)
    if kind == "discrete":
        e_bar = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25], [0.5, 0.5, 0.0, 0.0, 0.0]], dtype=F64)
        x = torch.stack([torch.multinomial(e_bar[i], 200_000, replacement=True, generator=g) for i in range(2)], 1)
        mean, var = flow.moments((2,), e_bar, None)
    else:
        centres = torch.tensor([-0.875, 0.125, 0.625], dtype=F64)  # bin centres of 8 bins
        x = centres[torch.randint(3, (200_000, 2), generator=g)]
        mean, var = flow.moments((2,), x.mean(0), x.var(0))
    x0 = flow.data_in_state_space(x)
    assert mean.shape == var.shape == x0.shape[1:] and mean.dtype == F64
    torch.testing.assert_close(mean, x0.mean(0), rtol=0, atol=0.02)
    torch.testing.assert_close(var, x0.var(0), rtol=0.02, atol=1e-3)


def test_moments_reject_statistics_that_do_not_fit():
    with pytest.raises(ValueError, match="does not broadcast"):
        bfn.ContinuousFlow().moments((2,), [0.0, 0.1, 0.2], 1.0)
    with pytest.raises(ValueError, match="data_var finite and >= 0"):
        bfn.DiscretisedFlow(4).moments((2,), 0.0, -1.0)
    with pytest.raises(ValueError, match="class frequencies"):
        bfn.DiscreteFlow(2).moments((2,), [0.7, 0.7], None)
    mean, var = bfn.ContinuousFlow().moments((2, 3), 0.5, 0.1)  # scalars broadcast
    assert mean.shape == (2, 3) and torch.all(var == 0.1)


def test_sampler_option_checks_per_kind():
    bfn.ContinuousFlow.check_sampler_options(True, None, None)
    bfn.ContinuousFlow.check_sampler_options(None, 0.0, 1.0)
    bfn.DiscreteFlow.check_sampler_options(None, [0.5, 0.5], None)
    for cls in (bfn.DiscretisedFlow, bfn.DiscreteFlow):
        with pytest.raises(ValueError, match="clip applies to continuous data only"):
            cls.check_sampler_options(False, None, None)
    for cls in (bfn.ContinuousFlow, bfn.DiscretisedFlow):
        with pytest.raises(ValueError, match="needs data_var"):
            cls.check_sampler_options(None, 0.0, None)
    with pytest.raises(ValueError, match="data_mean \\(class frequencies\\) only"):
        bfn.DiscreteFlow.check_sampler_options(None, [0.5, 0.5], 0.1)


# ------------------------------------------------------------------------------------------ conditioning
@pytest.mark.parametrize("kind", KINDS)
def test_known_output_predicts_the_known_values_and_guidance_interpolates(kind):
    flow = FLOW_CASES[kind]()
    batch, shape = 4, (3,)
    g = gen(6)
    state = flow.flow_state(flow.from_unit(torch.rand((batch, *shape), dtype=F64, generator=g)), torch.full((4,), 0.4))
    state = state.to(F64)
    known = flow.from_unit(torch.rand((batch, *shape), dtype=F64, generator=g))
    known = known if flow.class_indices else known.to(F64)
    mask = torch.tensor([True, False, True]).expand(batch, 3)
    tau = torch.full((batch,), 0.6, dtype=F64)
    out = torch.randn((batch, *flow.output_shape(shape)), dtype=F64, generator=g)
    out_known = flow.known_output(out, state, known, mask, tau)
    x0 = flow.data_prediction(out_known, state, tau)
    expected = flow.data_in_state_space(known)
    m = flow.state_mask(mask).expand_as(x0)
    torch.testing.assert_close(x0[m], expected.expand_as(x0)[m], rtol=0, atol=1e-6 if kind == "discretised" else 1e-9)
    assert torch.equal(out_known[~mask], out[~mask])  # unknown elements keep the network output
    certain = flow.certain_state(known, tau, state)
    assert certain.shape == state.shape and certain.dtype == state.dtype
    if flow.class_indices:  # a one-hot belief
        assert torch.equal(flow.net_input(certain).argmax(-1), known)
    else:  # the noise-free flow mean gamma x
        torch.testing.assert_close(certain, flow.gamma(tau)[:, None] * known)
    out_u = torch.randn(out.shape, dtype=F64, generator=g)
    same = flow.data_prediction(flow.guide(out, out_u, 1.0), state, tau)
    torch.testing.assert_close(same, flow.data_prediction(out, state, tau))  # s = 1: the conditional model
    none = flow.data_prediction(flow.guide(out, out_u, 0.0), state, tau)
    if kind != "discretised":  # discretised keeps the conditional spread at s = 0
        torch.testing.assert_close(none, flow.data_prediction(out_u, state, tau))


@pytest.mark.parametrize("kind", KINDS)
def test_fill_known_keeps_known_values_and_rejects_the_wrong_dtype(kind):
    flow = FLOW_CASES[kind]()
    mask = torch.tensor([[True, False]])
    if flow.class_indices:
        known = torch.tensor([[3, 9]])
        filled = flow.fill_known(known, mask, F64)
        assert filled.tolist() == [[3, 0]] and not filled.is_floating_point()
        with pytest.raises(ValueError, match="integer class indices"):
            flow.fill_known(known.float(), mask, F64)
    else:
        known = flow.from_unit(torch.tensor([[0.9, 5.0]]))
        filled = flow.fill_known(known, mask, F64)
        assert filled.dtype == F64 and filled[0, 0] == known[0, 0].double()
        flow.check_data(filled, (2,))  # the placeholder is valid data
        with pytest.raises(ValueError, match="floating point"):
            flow.fill_known(torch.tensor([[1, 0]]), mask, F64)


# -------------------------------------------------------------------------------------------- likelihood
def test_decoder_term_per_kind():
    log_r = torch.tensor([-1.0, 2.0], dtype=F64)

    def no_call() -> torch.Tensor:
        raise AssertionError("the continuous decoder makes no network call")

    flow = bfn.ContinuousFlow(0.02)
    x = torch.zeros(2, 3, dtype=F64)
    ratio, calls = flow.decoder_log_ratio(x, x, log_r, no_call)
    assert calls == 0  # D log gamma_0, gamma_0 = 1 - sigma_1^2 (docs/likelihood.md 6.4)
    torch.testing.assert_close(ratio, torch.full((2,), 3 * math.log(1 - 0.02**2), dtype=F64), rtol=1e-14, atol=0)
    flow = bfn.DiscreteFlow(3, 2.0)
    x = torch.tensor([[0, 2], [1, 1]])
    state = torch.zeros(2, 2, 3, dtype=F64)
    net = ZeroNet(3, True)
    ratio, calls = flow.decoder_log_ratio(x, state, log_r, lambda: net(state, torch.ones(2)))
    assert calls == 1  # the output distribution at tau = 1 (uniform here): 2 log(1/3) per example
    torch.testing.assert_close(ratio, 2 * math.log(1 / 3) - log_r)


# ----------------------------------------------------------------------------- one prediction, one score
def test_denoise_the_samplers_and_the_likelihood_share_one_prediction_and_one_score():
    from bfn.likelihood import bfn_score
    from bfn.likelihood.model import data_prediction
    from bfn.sampling import Predictor, score
    from oracles import GaussianDenoiser

    flow = bfn.ContinuousFlow(0.05, clip=True)
    model = bfn.BFN(GaussianDenoiser(flow, 0.9, 0.5), flow, (3,), dtype=F64)
    x = torch.randn(4, 3, dtype=F64, generator=gen(7))
    t = torch.full((4,), 0.2, dtype=F64)
    clipped = Predictor(model)(x, t)
    assert clipped.abs().max() <= 1.0 and torch.equal(model.denoise(x, t), clipped)
    free = Predictor(model, clip=False)(x, t)
    assert free.abs().max() > 1.0  # the likelihood's prediction is unclipped whatever the flow says
    assert torch.equal(data_prediction(model, x, t), free)
    unclipped = bfn.BFN(model.net, bfn.ContinuousFlow(0.05, clip=False), (3,), dtype=F64)
    torch.testing.assert_close(bfn_score(model)(x, t), score(unclipped, x, t), rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_config_keys_are_the_constructor_arguments(kind):
    flow = FLOW_CASES[kind]()
    assert set(flow.config_keys()) == set(flow.config()) and type(flow).config_keys() == flow.config_keys()


@pytest.mark.parametrize("num_bins", [2, 10, 17, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_bin_centre_formula(num_bins, dtype):
    """Data sets, quantize, bin_centres and the flow's draws share bins_to_centres: the same floats, bit for bit."""
    from bfn.data import bins_to_centres, values_to_bins

    flow = bfn.DiscretisedFlow(num_bins)
    k = torch.arange(num_bins)
    centres = bins_to_centres(k, num_bins, dtype)
    assert torch.equal(flow.bin_centres(dtype), centres)
    assert torch.equal(flow.quantize(centres), centres)
    assert torch.equal(bins_to_centres(k, num_bins), bins_to_centres(k, num_bins, torch.float32))
    levels = torch.arange(256)
    data = flow.from_levels(levels, 256)
    assert data.dtype == torch.float32 and torch.equal(data, flow.quantize(data))
    assert torch.equal(data, bins_to_centres(values_to_bins(levels, 256, num_bins), num_bins))


def test_the_discrete_receiver_is_checked_before_any_work():
    flow = bfn.DiscreteFlow(3, 2.0)
    x = torch.zeros(2, 4, dtype=torch.long)
    logits = torch.zeros(2, 4, 3)
    tau = torch.zeros(2, dtype=F64)
    alpha = flow.step_accuracies(2)[:1].expand(2)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"unknown receiver 'paper'; expected one of \('joint', 'factorised'\)"):
        flow.discrete_time_loss(logits, x, None, tau, alpha, 2, generator, receiver="paper")  # type: ignore[arg-type]
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())  # no draw was made
