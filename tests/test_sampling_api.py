"""The sampling API: a conformance test every registered sampler passes, seeded golden numbers, options and errors."""

from __future__ import annotations

import importlib.util
import io
import math
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow
from bfn.sampling import SAMPLERS, SampleOutput, sample

F64 = torch.float64


class CountingNet(nn.Module):
    """Wraps a deterministic function of the contract and counts its calls (the true NFE)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.calls = 0

    def forward(self, inputs: Tensor, tau: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(inputs, tau)


def _tau(tau: Tensor, like: Tensor) -> Tensor:
    return tau.reshape(-1, *([1] * (like.ndim - 1)))


def continuous_fn(mu: Tensor, tau: Tensor) -> Tensor:
    return 0.5 * torch.tanh(mu + mu.roll(1, dims=-1)) + 0.1 * _tau(tau, mu)


def discretised_fn(mu: Tensor, tau: Tensor) -> Tensor:
    return torch.stack([0.3 * torch.tanh(2 * mu.roll(1, dims=-1)), -1.0 + _tau(tau, mu).expand_as(mu)], -1)


def discrete_fn(theta: Tensor, tau: Tensor) -> Tensor:
    return 2.0 * torch.sin(3.0 * (theta + theta.roll(1, dims=1))) + _tau(tau, theta)


KIND_SETUP = {
    "continuous": (continuous_fn, lambda: ContinuousFlow(0.01), (2, 3)),
    "discretised": (discretised_fn, lambda: DiscretisedFlow(5, 0.05), (3,)),
    "discrete": (discrete_fn, lambda: DiscreteFlow(3, 3.0), (4,)),
}


def make_model(kind: str, dtype: torch.dtype = F64) -> bfn.BFN:
    fn, flow, shape = KIND_SETUP[kind]
    return bfn.BFN(CountingNet(fn), flow(), shape, dtype=dtype)


PAIRS = [(name, kind) for name, spec in SAMPLERS.items() for kind in spec.kinds]


def run(model: bfn.BFN, name: str, steps: int, seed: int, num: int = 3, **options) -> SampleOutput:
    return sample(model, num, name, steps=steps, generator=torch.Generator().manual_seed(seed), **options)


# ---------------------------------------------------------------------------------------------- conformance
def test_registry_covers_the_design_table():
    continuous = {"bfn-solver1", "bfn-solver++1", "bfn-solver++2", "bfn-solver++3", "bfn-solver++2s"}
    continuous |= {"bfn-solver++3s", "sde-bfn-solver++1", "sde-bfn-solver++2"}
    discrete = {"bfn-solver1", "bfn-solver2", "bfn-solver2s", "bfn-solver3"}
    discrete |= {"sde-bfn-solver1", "sde-bfn-solver2", "sde-bfn-solver3"}
    for name in continuous:
        assert {"continuous", "discretised"} <= set(SAMPLERS[name].kinds)
    for name in discrete:
        assert "discrete" in SAMPLERS[name].kinds
    for name in ("bfn", "h-solver"):
        assert set(SAMPLERS[name].kinds) == {"continuous", "discretised", "discrete"}
    for spec in SAMPLERS.values():
        assert spec.summary and spec.steps


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(("name", "kind"), PAIRS)
def test_conformance(name, kind, dtype):
    spec = SAMPLERS[name]
    finals = ["denoise"] if spec.prior_start else ["drop", "denoise"]
    model = make_model(kind, dtype)
    flow = model.flow
    for final in finals:
        options = {} if spec.prior_start else {"final": final}
        for steps in (1, 2, 5):
            model.net.calls = 0
            rng_before = torch.get_rng_state()
            out = run(model, name, steps, seed=0, **options)
            assert torch.equal(torch.get_rng_state(), rng_before)  # all randomness comes from the generator
            assert out.nfe == model.net.calls == spec.nfe(steps, final), (final, steps)
            assert out.samples.shape == (3, *model.data_shape)
            assert out.state.shape == (3, *flow.state_shape(model.data_shape))
            assert out.state.dtype == dtype
            assert torch.isfinite(out.state).all()
            if kind == "discrete":
                assert out.samples.dtype == torch.long
                assert ((out.samples >= 0) & (out.samples < flow.num_classes)).all()
            else:
                assert out.samples.dtype == dtype
                assert ((out.samples >= -1) & (out.samples <= 1)).all()
            if kind == "discretised":
                assert torch.isin(out.samples, flow.bin_centres(dtype)).all()
        again = run(model, name, 5, seed=0, **options)
        assert torch.equal(again.samples, out.samples) and torch.equal(again.state, out.state)
        other = run(model, name, 5, seed=1, **options)
        assert not torch.equal(other.state, out.state)


def test_typed_options_cover_every_sampler_option():
    from dataclasses import fields

    from bfn.sampling import HSolverOptions, OriginalOptions, SamplerOptions, SolverOptions

    accepted = set().union(*(spec.defaults() for spec in SAMPLERS.values()))
    families = (OriginalOptions, SolverOptions, HSolverOptions)
    assert accepted == {f.name for family in families for f in fields(family)}
    for spec in SAMPLERS.values():  # a sampler accepts exactly the typed fields of its family
        assert issubclass(spec.options, SamplerOptions)
        assert spec.defaults() == {f.name: f.default for f in fields(spec.options)}
    for family in families:  # every field is typed and checked
        assert all(f.type and callable(f.metadata["check"]) for f in fields(family))


def test_options_objects_parse_once_with_their_defaults_and_the_kind():
    from dataclasses import FrozenInstanceError

    from bfn.sampling import HSolverOptions, OriginalOptions, SolverOptions, resolve_options

    assert SolverOptions.defaults()["grid"] == "uniform" and SAMPLERS["h-solver"].defaults()["h"] == 0.5
    assert SAMPLERS["bfn"].options is OriginalOptions and SAMPLERS["h-solver"].options is HSolverOptions
    opts = resolve_options("h-solver", SAMPLERS["h-solver"], "discrete", {"order": 3, "final": "denoise"})
    assert isinstance(opts, HSolverOptions) and (opts.order, opts.final, opts.h) == (3, "denoise", 0.5)
    assert opts.eta == 1e-3  # the kind's default, filled in by the flow
    assert resolve_options("bfn-solver++2", SAMPLERS["bfn-solver++2"], "continuous", {"eta": 0.2}).eta == 0.2
    with pytest.raises(FrozenInstanceError):
        opts.h = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"expected one of \('uniform', 'logsnr', 'tuned'\) or a tensor"):
        SolverOptions.parse("bfn-solver++2", {"grid": "cosine"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['h'\] for sampler 'bfn'"):
        OriginalOptions.parse("bfn", {"h": 0.5})


def test_nfe_formula_examples():
    assert SAMPLERS["bfn"].nfe(10) == 11
    assert SAMPLERS["bfn-solver++2"].nfe(10) == 10
    assert SAMPLERS["bfn-solver++2"].nfe(10, "denoise") == 11
    assert SAMPLERS["bfn-solver++2s"].nfe(10) == 19
    assert SAMPLERS["bfn-solver++3s"].nfe(10, "denoise") == 31
    assert SAMPLERS["bfn-solver2s"].nfe(5) == 9


def test_model_sample_uses_the_registry():
    model = make_model("continuous")
    out = model.sample(4, sampler="bfn-solver++2", steps=3, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, SampleOutput) and out.nfe == 3 and out.samples.shape == (4, 2, 3)


def test_sampling_runs_without_gradients():
    flow = ContinuousFlow(0.01)
    net = nn.Linear(3, 3)
    model = bfn.BFN(lambda mu, tau: net(mu), flow, (3,), dtype=torch.float32)  # type: ignore[arg-type]
    out = sample(model, 2, "sde-bfn-solver++2", steps=3, generator=torch.Generator().manual_seed(0))
    assert not out.samples.requires_grad and not out.state.requires_grad


# --------------------------------------------------------------------------------------------- golden numbers
def fingerprint(out: SampleOutput) -> tuple[float, ...]:
    """Sum and first two entries of the final state and of the samples."""
    state, samples = out.state.flatten().double(), out.samples.flatten().double()
    return tuple(float(v) for v in (state.sum(), state[0], state[1], samples.sum(), samples[0], samples[1]))


# 3 samples, 4 steps, seed 1234, float64, default options (generated once from this implementation)
GOLDEN: dict[tuple[str, str], tuple[float, ...]] = {
    ("bfn", "continuous"): (
        0.7349254396630198,
        0.10329655826435301,
        0.1815208808774846,
        0.710542215207076,
        0.10403910269724315,
        0.17915212622304666,
    ),
    ("bfn", "discretised"): (  # regenerated when p_O's draw became a quantised Gaussian (other random numbers)
        1.960387358909427,
        0.8434065647795325,
        0.42618356048186956,
        1.5999999999999999,
        0.8,
        0.3999999999999999,
    ),
    ("bfn", "discrete"): (14.146225647905045, 4.001758459079538, -1.5296728508790745, 10.0, 0.0, 0.0),
    ("bfn-solver1", "continuous"): (
        0.4850703975346503,
        0.4618158272192321,
        0.8613154059446965,
        0.4793843097586977,
        0.46807136748105443,
        0.8462374680395823,
    ),
    ("bfn-solver1", "discretised"): (
        0.9941009610926383,
        0.38169950954111537,
        0.6124972676299141,
        0.3999999999999997,
        0.3999999999999999,
        0.3999999999999999,
    ),
    ("bfn-solver1", "discrete"): (9.078304004991967, 0.04536288017938481, 1.086305292040944, 9.0, 1.0, 1.0),
    ("bfn-solver++1", "continuous"): (
        0.48507039753464976,
        0.461815827219232,
        0.8613154059446966,
        0.4793843097586975,
        0.4680713674810543,
        0.8462374680395824,
    ),
    ("bfn-solver++1", "discretised"): (
        0.9941009610926386,
        0.3816995095411154,
        0.6124972676299141,
        0.3999999999999997,
        0.3999999999999999,
        0.3999999999999999,
    ),
    ("bfn-solver++2", "continuous"): (
        0.5008645469076127,
        0.467462766200418,
        0.8291296670102003,
        0.4948050660058174,
        0.47365936244225537,
        0.8141252883378025,
    ),
    ("bfn-solver++2", "discretised"): (
        1.015916978613522,
        0.3981195618919794,
        0.6186180197191048,
        1.2,
        0.3999999999999999,
        0.8,
    ),
    ("bfn-solver++3", "continuous"): (
        0.49154376956259027,
        0.4641420187568091,
        0.8293982246392358,
        0.4856119128332861,
        0.4703733235309364,
        0.8144065008804108,
    ),
    ("bfn-solver++3", "discretised"): (
        1.0123370155923024,
        0.39543479373335144,
        0.6176941831090837,
        1.2,
        0.3999999999999999,
        0.8,
    ),
    ("bfn-solver++2s", "continuous"): (
        0.7424844458017708,
        0.5869612471120587,
        0.6408569777031439,
        0.7322751602294708,
        0.5918236530578384,
        0.6259639603269161,
    ),
    ("bfn-solver++2s", "discretised"): (
        1.1732647793678201,
        0.540109509362656,
        0.6426370025395665,
        1.2,
        0.3999999999999999,
        0.8,
    ),
    ("bfn-solver++3s", "continuous"): (
        0.8671683660563781,
        0.6844070880983142,
        0.47477764134518735,
        0.8541442096048784,
        0.6880661982825182,
        0.46005324398136843,
    ),
    ("bfn-solver++3s", "discretised"): (1.2524586911425533, 0.6423770615663164, 0.6372166446517676, 1.6, 0.8, 0.8),
    ("sde-bfn-solver++1", "continuous"): (
        1.867274651058206,
        0.6618294834439427,
        0.879517379848584,
        1.7837365646616656,
        0.6646901546989146,
        0.863756883270773,
    ),
    ("sde-bfn-solver++1", "discretised"): (
        1.1679105044855245,
        0.8291107464697814,
        0.21646883671512032,
        1.1999999999999997,
        0.8,
        0.0,
    ),
    ("sde-bfn-solver++2", "continuous"): (
        1.947053898621408,
        0.6881238463876752,
        0.8410033743024955,
        1.817304310872255,
        0.6904417459028065,
        0.8252375945735753,
    ),
    ("sde-bfn-solver++2", "discretised"): (
        1.0201467867294929,
        0.8484954708464804,
        0.07491489645962121,
        1.1999999999999997,
        0.8,
        0.0,
    ),
    ("bfn-solver2", "discrete"): (9.078304004991967, -0.014096684587905351, 1.1127028592359376, 13.0, 2.0, 2.0),
    ("bfn-solver2s", "discrete"): (9.07830400499197, -0.15622262996490222, 1.1013526313393889, 13.0, 2.0, 2.0),
    ("bfn-solver3", "discrete"): (9.078304004991969, -0.09792361143005637, 1.0354396629384068, 10.0, 1.0, 2.0),
    ("sde-bfn-solver1", "discrete"): (-11.029029341011274, 1.140699349280421, -0.08172585711602098, 12.0, 0.0, 2.0),
    ("sde-bfn-solver2", "discrete"): (-11.029029341011272, 1.0556332297394755, -0.38303462493327023, 13.0, 0.0, 1.0),
    ("sde-bfn-solver3", "discrete"): (-11.029029341011272, 0.8545064327159604, -0.12765704146052437, 14.0, 0.0, 2.0),
    ("bfn-solver++pc", "continuous"): (
        0.4939394929584656,
        0.46497679552572224,
        0.8306854607622091,
        0.4879808993790685,
        0.4711993874985306,
        0.81568637367924,
    ),
    ("bfn-solver++pc", "discretised"): (1.0404929027548264, 0.4145925604882719, 0.624898298184442, 1.2, 0.4, 0.8),
    ("h-solver", "continuous"): (
        2.2073486857579843,
        0.6967660996803,
        0.9101542189487227,
        1.9940242700448132,
        0.6994159219171171,
        0.8942617245339937,
    ),
    ("h-solver", "discretised"): (
        1.2176929581062919,
        0.8800383976403088,
        0.19948968017580399,
        1.1999999999999997,
        0.8,
        0.0,
    ),
    ("h-solver", "discrete"): (-4.087393552567765, 0.7648782803585907, 0.6853374580618428, 9.0, 0.0, 0.0),
}


@pytest.mark.parametrize(("name", "kind"), PAIRS)
def test_golden_numbers(name, kind):
    out = run(make_model(kind), name, steps=4, seed=1234)
    assert fingerprint(out) == pytest.approx(GOLDEN[(name, kind)], rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------------------------ options
def test_callback_and_trajectory():
    model = make_model("continuous")
    seen: list[dict] = []
    out = run(model, "bfn-solver++3", 5, seed=0, callback=seen.append, trajectory=True)
    assert [d["step"] for d in seen] == list(range(5))
    assert set(seen[0]) == {"step", "t", "x0_hat", "x", "t_next", "nfe"}
    assert [d["nfe"] for d in seen] == [1, 2, 3, 4, 5]
    assert seen[-1]["t"] == seen[-1]["t_next"]  # the dropped last step does not move the state
    assert out.trajectory is not None and len(out.trajectory) == 5
    torch.testing.assert_close(out.trajectory[-1]["x0_hat"], out.samples)
    seen_bfn: list[dict] = []
    out = run(make_model("discrete"), "bfn", 4, seed=0, callback=seen_bfn.append)
    assert len(seen_bfn) == 4 and seen_bfn[0]["t"] == 1.0 and seen_bfn[-1]["t_next"] == 0.0
    assert out.trajectory is None


def test_callback_does_not_change_the_samples():
    model = make_model("discrete")
    plain = run(model, "bfn", 4, seed=0)
    with_callback = run(model, "bfn", 4, seed=0, callback=lambda d: None)
    assert torch.equal(plain.samples, with_callback.samples)


def test_init_options():
    model = make_model("continuous")
    sde = model.flow.sde
    t0 = torch.tensor(0.99, dtype=F64)
    alpha, sigma = float(sde.alpha(t0)), float(sde.sigma(t0))
    seen: list[dict] = []
    run(model, "bfn-solver++1", 1, seed=5, callback=seen.append)
    zero_x = seen[0]["x"]  # with one dropped step the state is the initial one
    seen.clear()
    mean = torch.tensor([0.1, -0.2, 0.3])
    run(model, "bfn-solver++1", 1, seed=5, callback=seen.append, init="moment", data_mean=mean, data_var=0.04)
    expected = alpha * mean + math.sqrt(sigma**2 + alpha**2 * 0.04) * zero_x / sigma
    torch.testing.assert_close(seen[0]["x"], expected)
    given = torch.randn(3, 2, 3, dtype=F64)
    seen.clear()
    run(model, "bfn-solver++1", 1, seed=5, callback=seen.append, init=given)
    torch.testing.assert_close(seen[0]["x"], given)
    # discrete: data_mean holds class frequencies; x0 = K e - 1 has variance K^2 e (1 - e)
    model = make_model("discrete")
    sde = model.flow.sde
    t0 = torch.tensor(0.999, dtype=F64)
    alpha, sigma = float(sde.alpha(t0)), float(sde.sigma(t0))
    e_bar = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    seen = []
    run(model, "bfn-solver1", 1, seed=5, callback=seen.append)
    zero_z = seen[0]["x"]
    seen = []
    run(model, "bfn-solver1", 1, seed=5, callback=seen.append, init="moment", data_mean=e_bar)
    std = torch.sqrt(sigma**2 + alpha**2 * 9 * e_bar * (1 - e_bar))
    torch.testing.assert_close(seen[0]["x"], alpha * (3 * e_bar - 1) + std * zero_z / sigma)


def test_grids_and_eta():
    model = make_model("continuous")
    seen: list[dict] = []
    run(model, "bfn-solver++2", 4, seed=0, callback=seen.append, eta=0.2, final="denoise")
    assert [d["t"] for d in seen] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    seen.clear()
    grid = torch.tensor([0.9, 0.5, 0.1, 0.0], dtype=F64)
    out = run(model, "bfn-solver++2", 3, seed=0, callback=seen.append, grid=grid, final="denoise")
    assert [d["t_next"] for d in seen] == pytest.approx([0.5, 0.1, 0.0]) and out.t == 0.0
    seen.clear()
    run(model, "bfn-solver++2", 4, seed=0, callback=seen.append, grid="logsnr", final="denoise")
    lam = model.flow.sde.lam(torch.tensor([d["t"] for d in seen] + [0.0], dtype=F64))
    torch.testing.assert_close(torch.diff(lam), torch.full((4,), float(lam[1] - lam[0]), dtype=F64))
    defaults = {kind: run(make_model(kind), "h-solver", 2, seed=0, trajectory=True) for kind in KIND_SETUP}
    assert defaults["continuous"].trajectory[0]["t"] == pytest.approx(0.99)
    assert defaults["discretised"].trajectory[0]["t"] == pytest.approx(0.99)
    assert defaults["discrete"].trajectory[0]["t"] == pytest.approx(0.999)


def test_final_rules_decode_the_last_prediction():
    model = make_model("discrete")
    out = run(model, "bfn-solver2", 3, seed=0, trajectory=True)
    torch.testing.assert_close(out.samples, out.trajectory[-1]["x0_hat"].argmax(-1))
    model = make_model("discretised")
    out = run(model, "bfn-solver++2", 3, seed=0, trajectory=True)
    torch.testing.assert_close(out.samples, model.flow.quantize(out.trajectory[-1]["x0_hat"]), rtol=0, atol=1e-12)
    mode = run(model, "bfn-solver++2", 3, seed=0, final="denoise", mode=True)
    net_out = model.call_net(mode.state, torch.ones(3, dtype=F64))
    probs = model.flow.bin_probs(net_out, mode.state, torch.ones(3, dtype=F64))
    torch.testing.assert_close(mode.samples, model.flow.bin_centres(F64)[probs.argmax(-1)])


def test_clip_option():
    flow = ContinuousFlow(0.01, clip=True)
    model = bfn.BFN(CountingNet(lambda mu, tau: -5.0 + 0 * mu), flow, (2,), dtype=F64)
    clipped = run(model, "bfn-solver++1", 3, seed=0)
    assert clipped.samples.max() <= 1.0
    free = run(model, "bfn-solver++1", 3, seed=0, clip=False)
    assert free.samples.max() > 1.0


def test_categorical_option_of_the_original_sampler():
    model = make_model("discrete")
    a = run(model, "bfn", 5, seed=0, categorical=True)
    b = run(model, "bfn", 5, seed=0, categorical=False)
    assert not torch.equal(a.state, b.state)


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("name", "kind", "options", "message"),
    [
        ("bfn-solver++9", "continuous", {}, "expected one of"),
        ("bfn-solver++2", "discrete", {}, "samplers for discrete data"),
        ("bfn-solver2", "continuous", {}, "samplers for continuous data"),
        ("bfn-solver++2", "continuous", {"h": 1.0}, "valid options"),
        ("bfn", "continuous", {"eta": 0.1}, "valid options"),
        ("bfn-solver++2", "continuous", {"final": "last"}, "expected one of"),
        ("bfn-solver++2", "continuous", {"init": "gaussian"}, "expected one of"),
        ("bfn-solver++2", "continuous", {"grid": "cosine"}, "expected one of"),
        ("bfn-solver++2", "continuous", {"eta": 1.5}, "eta must lie"),
        ("h-solver", "continuous", {"h": -0.1}, "h must be"),
        ("h-solver", "discrete", {"order": 4}, "order must be"),
        ("h-solver", "discrete", {"clip": True}, "continuous data only"),
        ("bfn-solver++2", "continuous", {"mode": True}, "final='denoise'"),
        ("bfn-solver++2", "continuous", {"init": "moment", "data_mean": 0.0}, "data_var"),
        ("bfn-solver1", "discrete", {"init": "moment", "data_mean": [0.5, 0.5, 0.0], "data_var": 1.0}, "discrete"),
        ("bfn-solver1", "discrete", {"init": "moment", "data_mean": [0.5, 0.6, 0.0]}, "class frequencies"),
        ("bfn-solver++2", "continuous", {"data_mean": 0.0}, "init='moment'"),
        ("bfn-solver++2", "continuous", {"init": torch.zeros(2, 2, 3)}, "expected (3, 2, 3)"),
        ("bfn-solver++2", "continuous", {"grid": torch.tensor([0.9, 0.5, 0.1]), "final": "denoise"}, "ends at t = 0"),
        ("bfn-solver++2", "continuous", {"grid": torch.tensor([1.0, 0.5, 0.0])}, "start below t = 1"),
        ("bfn-solver++2", "continuous", {"grid": torch.tensor([0.9, 0.5, 0.0]), "eta": 0.1}, "not both"),
        ("bfn-solver++2", "continuous", {"callback": 3}, "callable"),
        ("bfn", "discrete", {"categorical": "yes"}, "True or False"),
    ],
)
def test_invalid_options_fail_before_any_network_call(name, kind, options, message):
    model = make_model(kind)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(model, name, 2, seed=0, **options)
    assert model.net.calls == 0


def test_invalid_counts_and_generators():
    model = make_model("continuous")
    with pytest.raises(ValueError, match="steps"):
        sample(model, 3, "bfn", steps=0)
    with pytest.raises(ValueError, match="num_samples"):
        sample(model, 0, "bfn", steps=2)
    with pytest.raises(ValueError, match=r"torch\.Generator"):
        sample(model, 2, "bfn", steps=2, generator=1234)  # type: ignore[arg-type]
    from bfn._checks import check_generator

    with pytest.raises(ValueError, match="generator lives on cpu but the model on cuda"):
        check_generator(torch.Generator(), torch.device("cuda"), owner="the model")
    assert model.net.calls == 0


# ---------------------------------------------------------------------------------------------- benchmark
def test_benchmark_quick_run():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "solvers_oracle.py"
    spec = importlib.util.spec_from_file_location("solvers_oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        module.main(["--quick"])
    text = buffer.getvalue()
    assert "| h-solver |" in text and "overhead %" in text
    for oracle in ("gaussian", "mixture", "bins", "table"):
        assert f"### {oracle}" in text
