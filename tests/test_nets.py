"""Tests for the reference networks: the shape contract, dtypes, initialisation, gradients and the registry."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bfn.nets import MLP, NETS, NetSpec, Transformer, UNet, build_net, net_spec, sinusoidal_embedding

SMALL: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": 32, "depth": 2, "time_dim": 16},
    "unet": {"base": 16, "channel_mults": (1, 2), "num_res_blocks": 1},
    "transformer": {"width": 32, "depth": 2, "heads": 4},
}

# (net, data_shape, in_channels, out_channels, extra options)
CASES: list[tuple[str, tuple[int, ...], int, int, dict[str, Any]]] = [
    ("mlp", (2,), 1, 1, {}),
    ("mlp", (2,), 1, 2, {}),
    ("mlp", (1, 8, 8), 1, 1, {}),
    ("mlp", (1, 8, 8), 1, 2, {}),
    ("mlp", (1, 8, 8), 2, 2, {"layer_norm": True}),
    ("unet", (1, 8, 8), 1, 1, {}),
    ("unet", (1, 8, 8), 2, 2, {}),
    ("unet", (1, 28, 28), 1, 2, {}),
    ("unet", (1, 28, 28), 2, 2, {"channel_mults": (1, 2, 2)}),
    ("unet", (3, 32, 32), 1, 1, {"attention_resolutions": (16,)}),
    ("unet", (3, 32, 32), 1, 2, {"channel_mults": (1, 2, 2, 2), "attention_heads": 2}),
    ("transformer", (16,), 27, 27, {}),
    ("transformer", (16,), 1, 2, {}),
]


def make(name: str, shape: tuple[int, ...], cin: int, cout: int, extra: dict[str, Any]) -> nn.Module:
    return build_net(name, shape, cin, cout, **{**SMALL[name], **extra})


def random_inputs(shape: tuple[int, ...], cin: int, batch: int = 3, dtype: torch.dtype = torch.float32) -> Tensor:
    if cin > 1:
        return torch.softmax(torch.randn(batch, *shape, cin, dtype=dtype), dim=-1)
    return torch.rand(batch, *shape, dtype=dtype) * 2 - 1


def expected_shape(batch: int, shape: tuple[int, ...], channels: int) -> tuple[int, ...]:
    return (batch, *shape, channels) if channels > 1 else (batch, *shape)


def case_id(case: tuple[Any, ...]) -> str:
    name, shape, cin, cout, extra = case
    return f"{name}-{'x'.join(map(str, shape))}-{cin}to{cout}" + ("-" + "-".join(extra) if extra else "")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_output_shape_and_zero_init(case: tuple[Any, ...]) -> None:
    name, shape, cin, cout, extra = case
    net = make(name, shape, cin, cout, extra)
    out = net(random_inputs(shape, cin), torch.rand(3))
    assert out.shape == expected_shape(3, shape, cout)
    assert out.dtype == torch.float32
    assert torch.count_nonzero(out) == 0, "a fresh network must predict zeros (eps = 0 / uniform logits)"


@pytest.mark.parametrize("case", [CASES[4], CASES[6], CASES[11]], ids=case_id)
def test_float64(case: tuple[Any, ...]) -> None:
    name, shape, cin, cout, extra = case
    net = make(name, shape, cin, cout, extra).double()
    nn.init.normal_(output_layer(net).weight)
    x = random_inputs(shape, cin, dtype=torch.float64)
    out = net(x, torch.rand(3, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == expected_shape(3, shape, cout)
    assert torch.isfinite(out).all()
    # a float32 network given float64 inputs and a float32 t computes in float32 and answers in float64
    net32 = make(name, shape, cin, cout, extra)
    out32 = net32(x, torch.rand(3, dtype=torch.float32))
    assert out32.dtype == torch.float64


def test_float32_net_accepts_float64_time() -> None:
    net = MLP((2,), 1, 1, hidden=16, depth=1, time_dim=8)
    out = net(torch.zeros(4, 2), torch.rand(4, dtype=torch.float64))
    assert out.dtype == torch.float32


def output_layer(net: nn.Module) -> nn.Conv2d | nn.Linear:
    if isinstance(net, UNet):
        return net.out_conv
    assert isinstance(net, MLP | Transformer)
    return net.head


@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[9], CASES[11]], ids=case_id)
def test_gradients_reach_every_layer(case: tuple[Any, ...]) -> None:
    name, shape, cin, cout, extra = case
    net = make(name, shape, cin, cout, extra)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = random_inputs(shape, cin)
    target = torch.randn(expected_shape(3, shape, cout))
    for _ in range(2):  # the zero output layer blocks gradients upstream until it has taken one step
        opt.zero_grad()
        loss = (net(x, torch.rand(3)) - target).square().mean()
        loss.backward()
        opt.step()
    for module_name, module in net.named_modules():
        params = list(module.parameters(recurse=False))
        if params:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), module_name


@pytest.mark.parametrize("case", [CASES[0], CASES[6], CASES[11]], ids=case_id)
def test_output_depends_on_time(case: tuple[Any, ...]) -> None:
    name, shape, cin, cout, extra = case
    net = make(name, shape, cin, cout, extra)
    nn.init.normal_(output_layer(net).weight)
    x = random_inputs(shape, cin, batch=1).repeat_interleave(2, dim=0)
    out = net(x, torch.tensor([0.1, 0.9]))
    assert not torch.allclose(out[0], out[1])


def test_scalar_time_is_broadcast() -> None:
    net = MLP((2,), 1, 1, hidden=16, depth=1, time_dim=8)
    nn.init.normal_(net.head.weight)
    x = torch.randn(5, 2)
    torch.testing.assert_close(net(x, torch.tensor(0.3)), net(x, torch.full((5,), 0.3)))


def test_batch_elements_are_independent() -> None:
    net = make(*CASES[6])
    nn.init.normal_(net.out_conv.weight)
    x, t = random_inputs((1, 8, 8), 2, batch=4), torch.rand(4)
    torch.testing.assert_close(net(x, t)[1:2], net(x[1:2], t[1:2]), rtol=1e-4, atol=1e-5)


def test_transformer_conv_kernel_sees_neighbours_only_within_its_reach() -> None:
    # one block, no attention reach: with conv_kernel=3 and depth=1, before attention a token's features depend only on
    # itself and its two neighbours; check the local path by zeroing the attention and MLP outputs
    torch.manual_seed(0)
    net = Transformer((16,), 27, 27, width=32, depth=1, heads=4, conv_kernel=3)
    nn.init.normal_(net.head.weight)
    block = net.blocks[0]
    for layer in (block.attn.proj, block.mlp[2]):
        nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)
    x = random_inputs((16,), 27, batch=1)
    y = x.clone()
    y[0, 8] = torch.softmax(torch.randn(27), dim=-1)  # change the belief at position 8 only
    changed = (net(x, torch.tensor([0.5])) - net(y, torch.tensor([0.5]))).abs().sum(-1)[0] > 0
    # input conv (reach 1) then the block's depthwise conv (reach 1): positions 6..10
    assert changed.nonzero().flatten().tolist() == [6, 7, 8, 9, 10]


def test_transformer_conv_kernel_option() -> None:
    net = build_net("transformer", (16,), 27, 27, width=32, depth=2, heads=4, conv_kernel=5)
    out = net(random_inputs((16,), 27), torch.rand(3))
    assert out.shape == (3, 16, 27) and torch.count_nonzero(out) == 0
    assert all(block.local is not None for block in net.blocks)
    plain = build_net("transformer", (16,), 27, 27, width=32, depth=2, heads=4)
    assert all(block.local is None for block in plain.blocks) and isinstance(plain.in_proj, nn.Linear)
    for bad in (-1, 2, 4):
        with pytest.raises(ValueError, match="conv_kernel"):
            build_net("transformer", (16,), 27, 27, width=32, depth=1, heads=4, conv_kernel=bad)


@pytest.mark.parametrize(
    ("name", "shape", "cin", "bad"),
    [("mlp", (2,), 1, (3, 2, 1)), ("unet", (1, 8, 8), 2, (3, 1, 8, 8)), ("transformer", (16,), 27, (3, 16, 26))],
)
def test_wrong_input_shape_is_a_value_error(name: str, shape: tuple[int, ...], cin: int, bad: tuple[int, ...]) -> None:
    net = make(name, shape, cin, cin, {})
    with pytest.raises(ValueError, match="expected inputs of shape"):
        net(torch.zeros(bad), torch.rand(3))


def test_wrong_time_shape_is_a_value_error() -> None:
    net = MLP((2,), 1, 1, hidden=16, depth=1, time_dim=8)
    with pytest.raises(ValueError, match="t must have shape"):
        net(torch.zeros(3, 2), torch.rand(2))


def test_unet_rejects_non_image_shape() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        UNet((8, 8), 1, 1)


def test_build_net_registry() -> None:
    assert set(NETS) == {"mlp", "unet", "transformer"}
    assert isinstance(build_net("mlp", (2,), 1, 1, hidden=8), MLP)
    with pytest.raises(ValueError, match="mlp, transformer, unet"):
        build_net("resnet", (2,), 1, 1)  # type: ignore[arg-type]


def test_sinusoidal_embedding() -> None:
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    emb = sinusoidal_embedding(t, 7)
    assert emb.shape == (3, 7) and emb.dtype == torch.float64
    torch.testing.assert_close(emb[0, :3], torch.ones(3, dtype=torch.float64))  # cos(0)
    assert torch.all(emb[:, -1] == 0)  # odd dim padding
    assert not torch.allclose(emb[1], emb[2])


def test_mlp_under_torch_compile() -> None:
    dynamo = pytest.importorskip("torch._dynamo")
    if not dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform")
    net = MLP((2,), 1, 2, hidden=16, depth=2, time_dim=8)
    nn.init.normal_(net.head.weight)
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    x, t = torch.randn(4, 2), torch.rand(4, dtype=torch.float64)
    out = compiled(x, t)
    torch.testing.assert_close(out, net(x, t))
    out.sum().backward()
    assert net.body[0].weight.grad is not None


# ------------------------------------------------------------------------------------------------ net specs
def test_build_net_records_its_spec_in_a_net_spec() -> None:
    net = build_net("unet", (1, 8, 8), 1, 2, base=8, channel_mults=(1, 2))
    spec = net_spec(net)
    assert spec == NetSpec("unet", {"base": 8, "channel_mults": [1, 2]})  # options in their JSON form
    assert NetSpec.from_dict(spec.to_dict()) == spec and spec.to_dict()["name"] == "unet"
    assert not hasattr(net, "net_spec")  # nothing is attached to the module
    assert net_spec(UNet((1, 8, 8), 1, 2, base=8)) is None  # a network built by hand records none
    assert net_spec(object()) is None and net_spec(3) is None
    rebuilt = spec.build((1, 8, 8), 1, 2)
    assert net_spec(rebuilt) == spec and rebuilt.state_dict().keys() == net.state_dict().keys()
    copy = UNet((1, 8, 8), 1, 2, base=8, channel_mults=(1, 2))
    assert spec.record(copy) is copy and net_spec(copy) == spec


def test_net_spec_checks_its_options_when_made() -> None:
    with pytest.raises(ValueError, match="unknown network"):
        NetSpec("resnet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="widht"):
        NetSpec("mlp", {"widht": 3})
    with pytest.raises(ValueError, match="hidden"):
        NetSpec.from_dict({"name": "mlp", "options": {"hidden": "wide"}})
    with pytest.raises(ValueError, match="'name'"):
        NetSpec.from_dict({"options": {}})
    assert NetSpec.from_dict({"name": "mlp"}) == NetSpec.from_dict({"name": "mlp", "options": None}) == NetSpec("mlp")
