"""Model folders and checkpoints: round trips, atomic writes, crash recovery, corrupted and unsafe files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from bfn import BFN
from bfn.checkpoint import (
    CheckpointError,
    ModelConfig,
    atomic_write_bytes,
    build_model,
    find_checkpoint,
    load_checkpoint,
    load_safetensors,
    load_torch,
    manifest_checksum,
    safetensors_bytes,
    save_checkpoint,
    verify_checkpoint,
)
from bfn.flows import ContinuousFlow, DiscreteFlow, DiscretisedFlow
from bfn.nets import MLP, NetSpec

SPEC = {
    "flow": {"kind": "discretised", "config": {"num_bins": 5, "sigma_1": 0.05}},
    "data_shape": [3],
    "net": {"name": "mlp", "options": {"hidden": 16, "depth": 1}},
}


def _model(seed: int = 0) -> BFN:
    torch.manual_seed(seed)
    model = build_model(SPEC)
    with torch.no_grad():  # the output layer starts at zero: make the outputs informative
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _outputs(model: BFN) -> torch.Tensor:
    mu = torch.linspace(-1, 1, 6).reshape(2, 3)
    return model.net(mu, torch.tensor([0.3, 0.7]))


def _write_checkpoint(run: Path, step: int = 7, seed: int = 0) -> BFN:
    model = _model(seed)
    optimizer = torch.optim.AdamW(model.net.parameters())
    model.loss(torch.zeros(4, 3)).backward()
    optimizer.step()
    ema = {k: v + 1 for k, v in model.net.state_dict().items()}
    rng = {"torch": [torch.get_rng_state()], "loss": torch.Generator().manual_seed(3).get_state()}
    save_checkpoint(run, step, model.net.state_dict(), ema, {"optimizer": optimizer.state_dict()}, rng, {"x": 1})
    return model


def _rehash(folder: Path, name: str) -> None:
    """Record the current bytes of ``name`` in state.json, as a consistent (but crafted) checkpoint would."""
    state = json.loads((folder / "state.json").read_text())
    data = (folder / name).read_bytes()
    state["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    state["checksum"] = manifest_checksum(state)
    (folder / "state.json").write_text(json.dumps(state))


# ----------------------------------------------------------------------------------------------- model folders


def test_save_and_load_pretrained_round_trip(tmp_path: Path) -> None:
    model = _model()
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["flow"] == {"kind": "discretised", "config": {"num_bins": 5, "sigma_1": 0.05}}
    assert config["data_shape"] == [3] and config["net"]["name"] == "mlp"
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "model.safetensors"]
    loaded = BFN.from_pretrained(tmp_path / "m")
    assert loaded.flow == model.flow and loaded.data_shape == (3,)
    assert not loaded.training
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)


def test_save_pretrained_needs_a_network_spec(tmp_path: Path) -> None:
    reference = _model()
    net = MLP((3,), 1, 2, hidden=16, depth=1)  # a network built by hand records no spec
    net.load_state_dict(reference.net.state_dict())
    model = BFN(net, reference.flow, (3,))
    with pytest.raises(ValueError, match="net_name"):
        model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, net_name="mlp", net_options={"hidden": 16, "depth": 1})
    torch.testing.assert_close(_outputs(BFN.from_pretrained(tmp_path)), _outputs(model))


def test_save_pretrained_round_trips_a_build_net_network(tmp_path: Path) -> None:
    model = _model()  # build_net records its name and options on the network
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(_outputs(BFN.from_pretrained(tmp_path)), _outputs(model))


def test_from_pretrained_on_a_run_folder_prefers_ema_weights(tmp_path: Path) -> None:
    model = _write_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(SPEC))
    ema = BFN.from_pretrained(tmp_path)
    raw = BFN.from_pretrained(tmp_path, ema=False)
    torch.testing.assert_close(_outputs(raw), _outputs(model))
    first = next(iter(ema.net.state_dict()))
    torch.testing.assert_close(ema.net.state_dict()[first], model.net.state_dict()[first] + 1)


def test_from_pretrained_rejects_weights_of_another_network(tmp_path: Path) -> None:
    _model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["net"]["options"]["hidden"] = 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*do not fit"):
        BFN.from_pretrained(tmp_path)


def test_truncated_model_folder_weights_name_the_file(tmp_path: Path) -> None:
    _model().save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        BFN.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        BFN.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------ model config
CONFIGS = [
    ModelConfig(ContinuousFlow(0.02), (2,), NetSpec("mlp", {"hidden": 16, "depth": 1})),
    ModelConfig(DiscretisedFlow(5, 0.05), (1, 4, 4), NetSpec("unet", {"base": 8, "channel_mults": (1, 2)})),
    ModelConfig(DiscreteFlow(3, 2.0), (6,), NetSpec("transformer", {"width": 16, "depth": 1, "heads": 2})),
    ModelConfig(ContinuousFlow(0.05), (3,), NetSpec("mlp", {"hidden": 8, "num_classes": 4}), 4, 0.25),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["continuous", "discretised", "discrete", "conditional"])
def test_model_config_round_trips_through_json(config: ModelConfig, tmp_path: Path) -> None:
    """config -> dict -> JSON -> config -> model: the same config, and the same model from the same seed."""
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.to_dict() == config.to_dict()
    torch.manual_seed(0)
    model = config.build()
    torch.manual_seed(0)
    rebuilt = again.build()
    assert ModelConfig.of(model) == ModelConfig.of(rebuilt) == config
    assert (rebuilt.num_classes, rebuilt.label_dropout) == (model.num_classes, model.label_dropout)
    state, other = model.net.state_dict(), rebuilt.net.state_dict()
    assert state.keys() == other.keys() and all(torch.equal(state[k], other[k]) for k in state)
    model.save_pretrained(tmp_path)  # the model folder's config.json is the same section
    assert ModelConfig.read(tmp_path) == config
    assert json.loads((tmp_path / "config.json").read_text()) == config.to_dict()


#: config.json model sections exactly as the earlier releases wrote them (save_pretrained and training runs)
WRITTEN_BEFORE = [
    {
        "format": "bfn",
        "version": 1,
        "flow": {"kind": "continuous", "config": {"sigma_1": 0.02, "clip": True}},
        "data_shape": [2],
        "net": {"name": "mlp", "options": {"hidden": 16, "depth": 1}},
    },
    {
        "format": "bfn",
        "version": 1,
        "flow": {"kind": "discretised", "config": {"num_bins": 17, "sigma_1": 0.001}},
        "data_shape": [1, 8, 8],
        "net": {"name": "mlp", "options": {"hidden": 16, "depth": 1, "layer_norm": True, "num_classes": 10}},
        "num_classes": 10,
        "label_dropout": 0.1,
    },
    {
        "format": "bfn",
        "version": 1,
        "flow": {"kind": "discrete", "config": {"num_classes": 27, "beta_1": 0.75}},
        "data_shape": [8],
        "net": {"name": "transformer", "options": {"width": 16, "depth": 1, "heads": 2}},
    },
]


@pytest.mark.parametrize("section", WRITTEN_BEFORE, ids=["continuous", "conditional", "text"])
def test_folders_written_by_earlier_releases_still_load(section: dict, tmp_path: Path) -> None:
    """A model folder and a run folder in the format the library wrote before :class:`ModelConfig` existed."""
    torch.manual_seed(0)
    model = build_model(section)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(section))
    atomic_write_bytes(tmp_path / "model" / "model.safetensors", safetensors_bytes(model.net.state_dict()))
    run = {**section, "train": {"data": "digits"}, "data": {"name": "digits"}, "world_size": 1}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(run))
    state = model.net.state_dict()
    save_checkpoint(tmp_path / "run", 3, state, state, {"optimizer": {}}, {"loss": torch.zeros(1)})
    for folder in ("model", "run"):
        config = ModelConfig.read(tmp_path / folder)
        assert config.to_dict() == section  # the dict format is unchanged
        loaded = BFN.from_pretrained(tmp_path / folder)
        assert loaded.flow == model.flow and loaded.num_classes == model.num_classes
        assert all(torch.equal(loaded.net.state_dict()[k], v) for k, v in state.items())


def test_model_config_errors_name_the_file_and_the_entry(tmp_path: Path) -> None:
    for broken, words in [
        ({**SPEC, "flow": {"kind": "gaussian", "config": {}}}, "unknown flow kind"),
        ({**SPEC, "net": {"name": "resnet"}}, "unknown network"),
        ({**SPEC, "net": {"name": "mlp", "options": {"widht": 3}}}, "widht"),
        ({k: v for k, v in SPEC.items() if k != "net"}, "'net'"),
        ({**SPEC, "data_shape": [0]}, "data_shape"),
    ]:
        (tmp_path / "config.json").write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=rf"config\.json: .*{words}"):
            ModelConfig.read(tmp_path)
    with pytest.raises(ValueError, match="NetSpec"):
        ModelConfig.of(BFN(MLP((3,), 1, 2), DiscretisedFlow(5), (3,)))  # built by hand: no recorded spec


# ----------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_layout(tmp_path: Path) -> None:
    model = _write_checkpoint(tmp_path, step=7)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    files = sorted(os.listdir(tmp_path / "checkpoint"))
    assert files == ["ema.safetensors", "model.safetensors", "optimizer.pt", "rng.pt", "state.json"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 7 and ckpt.state["x"] == 1
    for name, value in model.net.state_dict().items():
        assert torch.equal(ckpt.model[name], value)
        assert torch.equal(ckpt.ema[name], value + 1)
    restored = torch.Generator().set_state(ckpt.rng["loss"])
    assert torch.equal(torch.rand(3, generator=restored), torch.rand(3, generator=torch.Generator().manual_seed(3)))
    assert "state" in ckpt.optimizer["optimizer"]


def test_a_new_checkpoint_replaces_the_old_one(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, step=1, seed=1)
    model = _write_checkpoint(tmp_path, step=2, seed=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "checkpoint.old"]  # the previous generation is kept
    assert verify_checkpoint(tmp_path / "checkpoint.old")["step"] == 1
    _write_checkpoint(tmp_path, step=3, seed=3)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "checkpoint.old"]  # but only one
    assert verify_checkpoint(tmp_path / "checkpoint.old")["step"] == 2
    _write_checkpoint(tmp_path, step=2, seed=2)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 2
    assert all(torch.equal(ckpt.model[k], v) for k, v in model.net.state_dict().items())


def test_crash_between_the_renames_keeps_a_complete_checkpoint(tmp_path: Path, monkeypatch) -> None:
    _write_checkpoint(tmp_path, step=1, seed=1)
    real_rename = os.rename

    def crash_on_second(src: str, dst: str) -> None:
        if str(src).endswith("checkpoint.tmp"):
            raise OSError("simulated crash")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_on_second)
    with pytest.raises(OSError, match="simulated"):
        _write_checkpoint(tmp_path, step=2, seed=2)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not (tmp_path / "checkpoint").exists()
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint.tmp"  # complete: the newer one wins
    assert load_checkpoint(tmp_path).step == 2
    (tmp_path / "checkpoint.tmp" / "state.json").unlink()  # a crash while writing: the old one wins
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint.old"
    assert load_checkpoint(tmp_path).step == 1


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors", "optimizer.pt", "rng.pt"])
def test_truncated_checkpoint_file_names_the_file(tmp_path: Path, name: str) -> None:
    _write_checkpoint(tmp_path)
    path = tmp_path / "checkpoint" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{name}.*truncated"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt"])
def test_corrupted_file_is_refused_even_when_its_hash_matches(tmp_path: Path, name: str) -> None:
    _write_checkpoint(tmp_path)
    folder = tmp_path / "checkpoint"
    (folder / name).write_bytes(b"\x00garbage" * 10)
    _rehash(folder, name)
    with pytest.raises(CheckpointError, match=rf"{name}.*(truncated|corrupted)"):
        load_checkpoint(tmp_path)


def test_corrupted_state_json(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path)
    (tmp_path / "checkpoint" / "state.json").write_text('{"step": 3, "fi')
    with pytest.raises(CheckpointError, match=r"state\.json"):
        load_checkpoint(tmp_path)


class _Exploit:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path)
    folder = tmp_path / "checkpoint"
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _Exploit(marker)}, folder / "optimizer.pt")
    _rehash(folder, "optimizer.pt")  # a consistent checkpoint: only weights_only stands in the way
    verify_checkpoint(folder)
    with pytest.raises(CheckpointError, match=r"optimizer\.pt: refused to load") as info:
        load_checkpoint(tmp_path)
    assert "code" in str(info.value)
    with pytest.raises(CheckpointError, match="refused"):
        load_torch(folder / "optimizer.pt")
    assert not marker.exists()


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"one")
    atomic_write_bytes(tmp_path / "a.bin", b"two")
    assert (tmp_path / "a.bin").read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_load_safetensors_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_safetensors(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------------------- previous generation
def test_a_corrupted_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    old = _write_checkpoint(tmp_path, step=1, seed=1)
    _write_checkpoint(tmp_path, step=2, seed=2)
    path = tmp_path / "checkpoint" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match=r"model\.safetensors.*falling back to the previous checkpoint.*step 1"):
        ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 1 and ckpt.path == tmp_path / "checkpoint.old"
    assert all(torch.equal(ckpt.model[k], v) for k, v in old.net.state_dict().items())
    old_ema = path.parent.parent / "checkpoint.old" / "ema.safetensors"
    old_ema.write_bytes(b"")  # both broken: the newest one's error
    with pytest.raises(CheckpointError, match=r"checkpoint/model\.safetensors"):
        load_checkpoint(tmp_path)


def test_from_pretrained_falls_back_to_the_previous_generation(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(SPEC))
    old = _write_checkpoint(tmp_path, step=1, seed=1)
    _write_checkpoint(tmp_path, step=2, seed=2)
    (tmp_path / "checkpoint" / "state.json").write_text("{")
    with pytest.warns(RuntimeWarning, match="previous checkpoint"):
        model = BFN.from_pretrained(tmp_path, ema=False)
    assert torch.equal(_outputs(model), _outputs(old))


# ------------------------------------------------------------------------------------- manifest safety
def _edit_state(folder: Path, rehash: bool = True, **changes) -> None:
    state = json.loads((folder / "state.json").read_text())
    state.update(changes)
    if rehash:
        state["checksum"] = manifest_checksum(state)
    (folder / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("name", ["../../etc/hostname", "/etc/hostname", "sub/model.safetensors", "..", ""])
def test_manifest_file_names_stay_inside_the_checkpoint_folder(tmp_path: Path, name: str, monkeypatch) -> None:
    _write_checkpoint(tmp_path)
    folder = tmp_path / "checkpoint"
    state = json.loads((folder / "state.json").read_text())
    files = {**state["files"], name: {"bytes": 3, "sha256": "0" * 64}}
    _edit_state(folder, files=files)
    opened: list[str] = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    with pytest.raises(CheckpointError, match="not a plain name inside the checkpoint folder"):
        verify_checkpoint(folder)
    assert not any("hostname" in path for path in opened)


def test_manifest_must_list_every_file(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path)
    folder = tmp_path / "checkpoint"
    files = json.loads((folder / "state.json").read_text())["files"]
    del files["model.safetensors"]  # a manifest without the weights would let any weights load
    _edit_state(folder, files=files)
    with pytest.raises(CheckpointError, match=r"does not list model\.safetensors"):
        verify_checkpoint(folder)


def test_an_edited_manifest_is_refused(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path, step=7)
    folder = tmp_path / "checkpoint"
    _edit_state(folder, rehash=False, step=8)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("step", [-5, True, 2.5, "7", None])
def test_invalid_steps_in_a_consistent_manifest_are_refused(tmp_path: Path, step) -> None:
    _write_checkpoint(tmp_path)
    _edit_state(tmp_path / "checkpoint", step=step)
    with pytest.raises(CheckpointError, match="step"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("elapsed", [-1.0, "1", True])
def test_invalid_elapsed_time_is_refused(tmp_path: Path, elapsed) -> None:
    _write_checkpoint(tmp_path)
    _edit_state(tmp_path / "checkpoint", elapsed=elapsed)
    with pytest.raises(CheckpointError, match="elapsed"):
        load_checkpoint(tmp_path)
