"""``BFN.compile_core``: the compiled loss and sampler equal the eager ones, with no graph breaks in the loss."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import bfn

F32 = torch.float32


class TinyNet(nn.Module):
    """A per-element affine map of the contract ``(B, S) -> (B, S, 2)`` (learnable, cheap to compile)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[0.3, -0.2], [0.1, 0.4]]))

    def forward(self, mu: Tensor, tau: Tensor) -> Tensor:
        features = torch.stack([mu, tau[:, None].expand_as(mu)], -1)
        return features @ self.weight - torch.tensor([0.0, 1.0])


def make_model() -> bfn.BFN:
    return bfn.BFN(TinyNet(), bfn.DiscretisedFlow(256, 1e-3), (6,))


def data() -> Tensor:
    flow = bfn.DiscretisedFlow(256, 1e-3)
    return flow.quantize(torch.rand(5, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1)


@pytest.mark.slow
def test_loss_core_has_no_graph_breaks():
    model, x = make_model(), data()
    tau = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    state = model.flow.flow_state(x, tau, torch.Generator().manual_seed(2))
    explanation = torch._dynamo.explain(model._loss_from_state)(x, state, tau, None, None, None, 1)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.slow
def test_compiled_loss_equals_eager():
    eager, compiled, x = make_model(), make_model().compile_core(), data()
    losses, grads = [], []
    for model in (eager, compiled):
        loss = model.loss(x, generator=torch.Generator().manual_seed(3))
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.net.weight.grad.clone())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="bin centres"):  # the checks still run, eagerly
        compiled.loss(x + 1e-3)
    assert compiled.state_dict().keys() == eager.state_dict().keys()


@pytest.mark.slow
def test_compiled_sampler_equals_eager():
    eager, compiled = make_model(), make_model().compile_core(backend="aot_eager")
    runs = [
        m.sample(4, "bfn-solver++2", steps=3, generator=torch.Generator().manual_seed(4)) for m in (eager, compiled)
    ]
    torch.testing.assert_close(runs[1].samples, runs[0].samples)
    torch.testing.assert_close(runs[1].state, runs[0].state, rtol=1e-5, atol=1e-6)


def test_train_compile_option():
    from bfn.cli import build_parser, train_config_from_args

    parser = build_parser()
    assert train_config_from_args(parser.parse_args(["train", "--compile", "--out", "x"])).compile is True
    assert train_config_from_args(parser.parse_args(["train", "--out", "x"])).compile is False
