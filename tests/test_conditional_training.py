"""Class-conditional models: the network contract with labels, label dropout in the loss, the reference networks'
label embedding, and save / load of conditional models (unconditional ones unchanged)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

import bfn
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow
from bfn.nets import build_net

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class LabelRecorder(nn.Module):
    """A conditional network that records the labels it is called with and returns zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, inputs: Tensor, tau: Tensor, labels: Tensor) -> Tensor:
        self.seen.append(labels.clone())
        return torch.zeros_like(inputs)


def recorder_model(label_dropout: float = 0.1) -> bfn.BFN:
    return bfn.BFN(LabelRecorder(), ContinuousFlow(), (3,), dtype=F64, num_classes=4, label_dropout=label_dropout)


def test_loss_passes_labels_and_drops_them_to_the_null_label():
    model = recorder_model(label_dropout=0.25)
    x = torch.zeros(4000, 3, dtype=F64)
    labels = torch.arange(4000) % 4
    model.loss(x, labels=labels, generator=gen(0))
    seen = model.net.seen[-1]
    dropped = seen == 4
    assert abs(dropped.double().mean().item() - 0.25) < 0.03  # sd ~0.007
    assert torch.equal(seen[~dropped], labels[~dropped])
    model.loss(x, labels=labels, generator=gen(0))
    assert torch.equal(model.net.seen[-1], seen)  # dropout draws come from the generator


def test_no_dropout_and_the_null_label_without_labels():
    model = recorder_model(label_dropout=0.0)
    labels = torch.tensor([0, 1, 2, 3])
    model.loss(torch.zeros(4, 3, dtype=F64), labels=labels)
    assert torch.equal(model.net.seen[-1], labels)
    model.loss(torch.zeros(4, 3, dtype=F64))
    assert torch.equal(model.net.seen[-1], torch.full((4,), 4))
    model.nll(torch.zeros(4, 3, dtype=F64))  # likelihoods without labels are unconditional
    assert torch.equal(model.net.seen[-1], torch.full((4,), 4))
    model.loss_per_example(torch.zeros(4, 3, dtype=F64), labels=labels)  # no dropout outside loss
    assert torch.equal(model.net.seen[-1], labels)


@pytest.mark.parametrize(
    "labels, message",
    [(torch.tensor([0, 5]), "0..4"), (torch.tensor([0.0, 1.0]), "integers"), (torch.tensor([0, 1, 2]), "shape")],
)
def test_bad_training_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        recorder_model().loss(torch.zeros(2, 3, dtype=F64), labels=labels)


def test_constructor_checks():
    with pytest.raises(ValueError, match="num_classes"):
        bfn.BFN(LabelRecorder(), ContinuousFlow(), (3,), num_classes=0)
    with pytest.raises(ValueError, match="label_dropout"):
        bfn.BFN(LabelRecorder(), ContinuousFlow(), (3,), num_classes=2, label_dropout=1.5)
    with pytest.raises(ValueError, match="unconditional"):
        bfn.BFN(nn.Identity(), ContinuousFlow(), (3,)).loss(torch.zeros(2, 3), labels=torch.tensor([0, 1]))


# the U-Net needs more than 32 channels here: up to 32, GroupNorm normalises each channel on its own and cancels any
# per-channel embedding (the time embedding as well)
NETS = [
    ("mlp", (6,), {"hidden": 16, "depth": 1, "time_dim": 8}),
    ("unet", (1, 4, 4), {"base": 64, "channel_mults": (1,), "mid_attention": False}),
    ("transformer", (5,), {"width": 16, "depth": 1, "heads": 2}),
]


@pytest.mark.parametrize("name, shape, options", NETS)
def test_reference_networks_embed_labels(name, shape, options):
    torch.manual_seed(0)
    net = build_net(name, shape, 1, 1, num_classes=3, **options)
    for p in net.parameters():  # the zero-initialised head would hide the label's effect
        nn.init.normal_(p, std=0.3)
    x, t = torch.randn(2, *shape), torch.full((2,), 0.5)
    a, b = net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 1]))
    assert a.shape == (2, *shape) and not torch.allclose(a, b)
    assert torch.equal(net(x, t), net(x, t, torch.tensor([3, 3])))  # no labels: the null label 3
    plain = build_net(name, shape, 1, 1, **options)
    assert not any("label" in k for k in plain.state_dict())  # unconditional networks are unchanged
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, t, torch.tensor([0, 0]))


@pytest.mark.parametrize(
    "flow, data",
    [
        (ContinuousFlow(), torch.rand(8, 6) * 2 - 1),
        (DiscretisedFlow(4), DiscretisedFlow(4).quantize(torch.rand(8, 6) * 2 - 1)),
        (DiscreteFlow(3), torch.randint(0, 3, (8, 6))),
    ],
)
def test_conditional_model_trains_saves_and_loads(tmp_path, flow, data):
    torch.manual_seed(0)
    net = build_net("mlp", (6,), flow.input_channels, flow.output_channels, hidden=16, depth=1, num_classes=3)
    model = bfn.BFN(net, flow, (6,), num_classes=3, label_dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(3):
        loss = model.loss(data, labels=torch.arange(8) % 4, generator=gen(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.net.label_embedding.embedding.weight.grad is not None
    folder = model.save_pretrained(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    assert config["num_classes"] == 3 and config["label_dropout"] == 0.2
    loaded = bfn.BFN.from_pretrained(folder)
    assert loaded.num_classes == 3 and loaded.label_dropout == 0.2
    a = model.sample(4, "bfn", steps=3, generator=gen(1), labels=1, guidance=2.0)
    b = loaded.sample(4, "bfn", steps=3, generator=gen(1), labels=1, guidance=2.0)
    assert torch.equal(a.samples, b.samples) and a.nfe == 8


def test_unconditional_folders_are_unchanged(tmp_path):
    net = build_net("mlp", (2,), 1, 1, hidden=8, depth=1)
    folder = bfn.BFN(net, ContinuousFlow(), (2,)).save_pretrained(tmp_path / "u")
    config = json.loads((folder / "config.json").read_text())
    assert "num_classes" not in config and "label_dropout" not in config
    assert bfn.BFN.from_pretrained(folder).num_classes is None


def test_sharded_conditional_loss_equals_the_single_process_loss() -> None:
    """Labels (and their dropout, drawn for the global batch) reach every rank's rows as in one process."""
    from bfn.checkpoint import build_model
    from bfn.training import GlobalBatchLoss

    spec = {
        "flow": {"kind": "continuous", "config": {"sigma_1": 0.02}},
        "data_shape": [4],
        "net": {"name": "mlp", "options": {"num_classes": 3}},
        "num_classes": 3,
        "label_dropout": 0.3,
    }
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = torch.rand(12, 4) * 2 - 1, torch.arange(12) % 3
    whole = GlobalBatchLoss(model, 0, 1, 12, None)(x, gen(1), y)
    rows = [slice(4 * r, 4 * r + 4) for r in range(3)]
    shares = [GlobalBatchLoss(model, r, 3, 4, None)(x[rows[r]], gen(1), y[rows[r]]) for r in range(3)]
    torch.testing.assert_close(torch.stack(shares).mean(), whole, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(GlobalBatchLoss(model, 0, 1, 12, None)(x, gen(1)), whole)  # the labels matter


def test_toy_sets_with_components_have_their_labels() -> None:
    import numpy as np

    from bfn.data.toy import toy_bundle, toy_labels
    from bfn.training import label_count

    n = 2000  # replay the generators' draws: the labels are the generating components
    rng = np.random.default_rng(0)
    component = rng.integers(0, 8, n)
    angle = component * (np.pi / 4)
    points = 0.7 * np.stack([np.cos(angle), np.sin(angle)], 1) + rng.normal(0.0, 0.05, (n, 2))
    assert torch.equal(toy_labels("eight_gaussians", torch.tensor(points)), torch.from_numpy(component))
    rng = np.random.default_rng(1)
    cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    cell = rng.integers(0, 8, n)
    points = (cells[cell] + rng.random((n, 2))) * 0.45 - 0.9
    assert torch.equal(toy_labels("checkerboard", torch.tensor(points)), torch.from_numpy(cell))
    bundle = toy_bundle("eight_gaussians", num_train=64, num_val=8, num_test=8)
    assert bundle.labels["train"].shape == (64,) and label_count(bundle) == 8
    assert toy_bundle("two_moons", num_train=8, num_val=8, num_test=8).labels is None
