"""The training loop: config round trip, data order, world-size-invariant loss noise, bit-identical resume,
signals, logs, evaluation helpers. Tiny models on toy data (a few seconds in all)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bfn import BFN
from bfn.checkpoint import build_model, find_checkpoint, load_checkpoint
from bfn.cli import main
from bfn.data import DataBundle
from bfn.flows import ContinuousFlow, DiscreteFlow
from bfn.nets import build_net, net_spec
from bfn.sampling import SAMPLERS, get_sampler
from bfn.training import (
    EMA,
    LOG_COLUMNS,
    GlobalBatchLoss,
    GlobalBatchSampler,
    TrainConfig,
    evaluate_nll,
    image_grid,
    load_run_config,
    read_log,
    steps_for_nfe,
    train,
    write_samples,
)


def tiny(out: Path, **changes) -> TrainConfig:
    """A few-second config: a small MLP on two moons."""
    base = TrainConfig(
        data="toy:two_moons",
        data_options={"num_train": 256, "num_val": 64, "num_test": 64},
        flow="continuous",
        sigma_1=0.02,
        net="mlp",
        net_options={"hidden": 32, "depth": 2},
        steps=20,
        batch_size=16,
        lr=1e-3,
        ema_decay=0.999,
        warmup=5,
        val_every=10,
        val_examples=32,
        ckpt_every=10,
        out=str(out),
        progress=False,
    )
    return base.replace(**changes)


# ----------------------------------------------------------------------------------------------- config


def test_config_json_round_trip() -> None:
    config = TrainConfig(loss=20, betas=(0.8, 0.95), net_options={"hidden": 8}).resolved()
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.betas == (0.8, 0.95) and again.loss_steps == 20


def _bundle(kind: str, data_shape: tuple[int, ...], **fields) -> DataBundle:
    """A data bundle without data: what the model section of ``config.json`` is made from."""
    return DataBundle(train=[], val=[], test=[], data_shape=data_shape, kind=kind, **fields)


def test_the_model_section_of_a_training_run_keeps_its_format() -> None:
    """TrainConfig.model_config writes the model section exactly as earlier releases did, for every flow."""
    toy = TrainConfig(data="toy:two_moons", flow="continuous").resolved()
    assert toy.model_config(_bundle("continuous", (2,))).to_dict() == {
        "format": "bfn",
        "version": 1,
        "flow": {"kind": "continuous", "config": {"sigma_1": 0.02, "clip": True}},
        "data_shape": [2],
        "net": {"name": "mlp", "options": {"hidden": 256, "depth": 3}},
    }
    labels = {"train": torch.tensor([0, 9, 3]), "val": torch.tensor([1]), "test": torch.tensor([], dtype=torch.long)}
    digits = TrainConfig(conditional=True, net_options={"hidden": 8}).resolved()
    section = digits.model_config(_bundle("discretised", (1, 8, 8), num_bins=17, labels=labels)).to_dict()
    assert section == {
        "format": "bfn",
        "version": 1,
        "flow": {"kind": "discretised", "config": {"num_bins": 17, "sigma_1": 0.001}},
        "data_shape": [1, 8, 8],
        "net": {"name": "mlp", "options": {"hidden": 8, "num_classes": 10}},
        "num_classes": 10,
        "label_dropout": 0.1,
    }
    text = TrainConfig(data="kjv", flow="discrete", net_options={"width": 16}).resolved()
    assert text.model_config(_bundle("discrete", (256,), num_classes=27)).to_dict()["flow"] == {
        "kind": "discrete",
        "config": {"num_classes": 27, "beta_1": 0.75},
    }
    with pytest.raises(ValueError, match="needs class labels"):
        digits.model_config(_bundle("discretised", (1, 8, 8), num_bins=17))


def test_config_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"unknown training config field.*stepz"):
        TrainConfig.from_dict({"stepz": 3})
    bad = [
        {"steps": 0},
        {"loss": "discrete"},
        {"loss": 0},
        {"amp": "fp8"},
        {"flow": "gaussian"},
        {"ema_decay": 1.0},
        {"device": "tpu"},
        {"grad_clip": 0.0},
    ]
    for changes in bad:
        with pytest.raises(ValueError, match=next(iter(changes))):
            TrainConfig(**changes).resolved()


@pytest.mark.parametrize(
    ("data", "flow", "net", "extra"),
    [
        ("digits", "discretised", "mlp", {"sigma_1": 1e-3}),
        ("toy:checkerboard", "continuous", "mlp", {"sigma_1": 0.02}),
        ("mnist", "discrete", "unet", {"beta_1": 3.0}),
        ("text8:/x", "discrete", "transformer", {"beta_1": 0.75}),
        ("text:/some/file.txt", "discrete", "transformer", {"beta_1": 0.75}),
    ],
)
def test_per_data_defaults(data: str, flow: str, net: str, extra: dict) -> None:
    config = TrainConfig(data=data, flow=flow).resolved()
    assert config.net == net
    assert isinstance(config.net_options, dict)
    for key, value in extra.items():
        assert getattr(config, key) == value


# ----------------------------------------------------------------------------------------------- data order


def test_global_batches_do_not_depend_on_the_number_of_processes() -> None:
    dataset = list(range(100))
    single = list(GlobalBatchSampler(dataset, batch_size=12, num_replicas=1, rank=0, seed=5))
    ranks = [list(GlobalBatchSampler(dataset, batch_size=4, num_replicas=3, rank=r, seed=5)) for r in range(3)]
    assert len(single) == 96 and all(len(r) == 32 for r in ranks)
    for k in range(8):  # global batch k is the concatenation of the ranks' k-th batches, in rank order
        assert single[12 * k : 12 * (k + 1)] == [i for r in ranks for i in r[4 * k : 4 * (k + 1)]]
    sampler = GlobalBatchSampler(dataset, batch_size=12, seed=5)
    sampler.set_position(epoch=0, batch_index=3)
    assert list(sampler) == single[36:]
    sampler.set_position(epoch=1, batch_index=0)
    assert list(sampler) != single and sorted(list(sampler)) != single


def test_sampler_needs_one_global_batch() -> None:
    with pytest.raises(ValueError, match="fewer than one global batch"):
        GlobalBatchSampler(list(range(10)), batch_size=8, num_replicas=2)


@pytest.mark.parametrize("kind", ["continuous", "discretised", "discrete"])
def test_sharded_loss_equals_the_single_process_loss(kind: str) -> None:
    """Each rank's share, with the global batch's noise, averages to the single-process loss of that batch."""
    flow_config = {"continuous": {"sigma_1": 0.02}, "discretised": {"num_bins": 5}, "discrete": {"num_classes": 3}}
    spec = {"flow": {"kind": kind, "config": flow_config[kind]}, "data_shape": [4], "net": {"name": "mlp"}}
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    bins = (torch.randint(0, 5, (12, 4)) + 0.5) * 0.4 - 1.0
    x = torch.randint(0, 3, (12, 4)) if kind == "discrete" else bins
    whole = GlobalBatchLoss(model, 0, 1, 12, None)(x, torch.Generator().manual_seed(1))
    shares = [
        GlobalBatchLoss(model, r, 3, 4, None)(x[4 * r : 4 * r + 4], torch.Generator().manual_seed(1)) for r in range(3)
    ]
    torch.testing.assert_close(torch.stack(shares).mean(), whole, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------- the loop


def test_train_writes_a_complete_run_folder(tmp_path: Path) -> None:
    seen = []
    result = train(tiny(tmp_path / "run"), callback=seen.append)
    run = tmp_path / "run"
    assert result.step == 20 and len(result.losses) == 20 and result.interrupted is None
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert [s.step for s in seen] == list(range(1, 21))
    assert sorted(os.listdir(run)) == ["checkpoint", "checkpoint.old", "config.json", "log.csv", "loss.png"]
    stored = json.loads((run / "config.json").read_text())
    assert stored["flow"]["kind"] == "continuous" and stored["data_shape"] == [2]
    assert load_run_config(run) == tiny(run).resolved()
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_COLUMNS and len(rows) == 20
    assert [r["val_bpd"] != "" for r in rows].count(True) == 2  # steps 10 and 20
    assert float(rows[0]["lr"]) == pytest.approx(1e-3 / 5)  # warm-up
    assert load_checkpoint(run).step == 20
    model = BFN.from_pretrained(run)
    assert evaluate_nll(model, [torch.zeros(2)] * 4) == pytest.approx(
        evaluate_nll(result.ema_model, [torch.zeros(2)] * 4)
    )


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = train(tiny(tmp_path / "a", steps=30))
    first = train(tiny(tmp_path / "b", steps=10))
    resumed = train(tiny(tmp_path / "b", steps=30, resume=True))
    assert resumed.step == 30 and len(resumed.losses) == 20
    assert first.losses + resumed.losses == straight.losses
    log = read_log(tmp_path / "b" / "log.csv")
    assert [r["step"] for r in log] == list(range(1, 31))
    assert [r["loss"] for r in log] == straight.losses
    for a, b in zip(straight.model.net.parameters(), resumed.model.net.parameters()):
        assert torch.equal(a, b)


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_old_folders(tmp_path: Path) -> None:
    train(tiny(tmp_path, steps=5))
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        train(tiny(tmp_path, steps=10))
    with pytest.raises(ValueError, match=r"lr: 0\.001 -> 0\.01"):
        train(tiny(tmp_path, steps=10, lr=1e-2, resume=True))
    with pytest.raises(ValueError, match="not a training run folder"):
        train(tiny(tmp_path / "empty", resume=True))
    done = train(tiny(tmp_path, steps=5, resume=True))  # nothing left to do
    assert done.step == 5 and done.losses == []


def test_sigint_checkpoints_the_current_step_and_restores_handlers(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)

    def interrupt(info) -> None:
        if info.step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(tiny(tmp_path, steps=50), callback=interrupt)
    # the signal arrives after step 7 was checked for one: the loop completes step 8, checkpoints and stops
    assert result.interrupted == "SIGINT" and result.step == 8
    assert load_checkpoint(tmp_path).step == 8
    assert signal.getsignal(signal.SIGINT) is before


def test_bf16_autocast_and_n_step_loss_run(tmp_path: Path) -> None:
    result = train(tiny(tmp_path, steps=4, amp="bf16", loss=10, grad_clip=None))
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_discrete_flow_on_binarised_digits(tmp_path: Path) -> None:
    config = tiny(tmp_path, data="digits", data_options={}, flow="discrete", binarize=True, sigma_1=None, steps=3)
    result = train(config)
    assert result.model.flow.kind == "discrete" and result.val_bpd is not None


def test_evaluate_nll_is_deterministic_and_leaves_global_rng_alone(tmp_path: Path) -> None:
    result = train(tiny(tmp_path, steps=2))
    data = [torch.full((2,), 0.1 * i) for i in range(8)]
    state = torch.get_rng_state()
    first = evaluate_nll(result.ema_model, data, batch_size=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert evaluate_nll(result.ema_model, data, batch_size=3) == first  # the noise depends on the batching
    assert evaluate_nll(result.ema_model, data, seed=1) != first


# ----------------------------------------------------------------------------------------------- helpers


def test_steps_for_nfe_uses_the_registry_cost() -> None:
    assert steps_for_nfe("bfn", "discretised", 10) == 9
    assert steps_for_nfe("bfn-solver++2", "continuous", 10) == 10
    assert steps_for_nfe("bfn-solver++2s", "continuous", 11) == 6
    assert steps_for_nfe("bfn-solver2", "discrete", 1) == 1


SPECS = [(name, kind) for name, spec in SAMPLERS.items() for kind in spec.kinds]


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(SPECS), final=st.sampled_from(["drop", "denoise"]), budget=st.integers(1, 5000))
def test_steps_for_nfe_inverts_the_sampler_cost(case: tuple[str, str], final: str, budget: int) -> None:
    """``spec.nfe(spec.steps_for_nfe(n)) == n`` wherever a step count makes n calls; else the most steps within n."""
    spec = get_sampler(*case)
    exact = [steps for steps in range(1, budget + 2) if spec.nfe(steps, final) == budget]
    if spec.nfe(1, final) > budget:  # no step count fits the budget
        with pytest.raises(ValueError, match=f"one step makes {spec.nfe(1, final)}"):
            spec.steps_for_nfe(budget, final)
        return
    steps = spec.steps_for_nfe(budget, final)
    assert spec.nfe(steps, final) <= budget < spec.nfe(steps + 1, final)
    if exact:
        assert [steps] == exact and spec.nfe(steps, final) == budget  # the round trip
        assert spec.steps_for_nfe(budget, final, exact=True) == steps
    else:
        with pytest.raises(ValueError, match=f"exactly {budget} network calls"):
            spec.steps_for_nfe(budget, final, exact=True)


@pytest.mark.parametrize("steps", [1, 2, 7, 100, 10**6])
@pytest.mark.parametrize("case", SPECS)
def test_steps_for_nfe_round_trips_every_cost(case: tuple[str, str], steps: int) -> None:
    spec = get_sampler(*case)
    for final in ("drop", "denoise"):
        assert spec.steps_for_nfe(spec.nfe(steps, final), final, exact=True) == steps


def test_steps_for_nfe_refuses_bad_budgets() -> None:
    spec = get_sampler("bfn-solver++2", "continuous")
    for bad in (0, -3, 2.0, True, "10"):
        with pytest.raises(ValueError, match="nfe must be an integer >= 1"):
            spec.steps_for_nfe(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="final must be"):
        spec.steps_for_nfe(10, "last")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no step count fits 1 network calls: one step makes 2"):
        get_sampler("bfn", "discrete").steps_for_nfe(1)
    assert steps_for_nfe("bfn", "discrete", 1) == 1  # the training helper still takes one step


def test_the_ema_copy_rebuilds_like_its_network(tmp_path: Path) -> None:
    """The EMA copy carries the network's spec, so the EMA model saves and loads like the trained one."""
    net = build_net("mlp", (2,), 1, 1, hidden=8, depth=1)
    ema = EMA(net, 0.9)
    assert net_spec(ema.net) == net_spec(net) and ema.net is not net
    folder = BFN(ema.net, ContinuousFlow(0.02), (2,)).save_pretrained(tmp_path)
    assert BFN.from_pretrained(folder).net.state_dict().keys() == net.state_dict().keys()


def test_write_samples_formats(tmp_path: Path) -> None:
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    assert write_samples(images, tmp_path / "g", flow=ContinuousFlow(), data_shape=(1, 8, 8)).suffix == ".png"
    binary = torch.randint(0, 2, (4, 1, 8, 8))
    assert write_samples(binary, tmp_path / "b.png", flow=DiscreteFlow(2), data_shape=(1, 8, 8)).is_file()
    text = torch.randint(0, 27, (3, 12))
    path = write_samples(text, tmp_path / "t", flow=DiscreteFlow(27), data_shape=(12,), text=True)
    assert path.suffix == ".txt" and len(path.read_text().splitlines()) == 3
    points = torch.rand(50, 2)
    assert write_samples(points, tmp_path / "p.png", flow=ContinuousFlow(), data_shape=(2,)).stat().st_size > 0
    tensor = write_samples(points, tmp_path / "p.pt", flow=ContinuousFlow(), data_shape=(2,))
    assert torch.equal(torch.load(tensor, weights_only=True), points)
    assert tuple(image_grid(images, columns=5).shape) == (10, 46, 1)


def test_find_checkpoint_of_a_fresh_folder(tmp_path: Path) -> None:
    assert find_checkpoint(tmp_path) is None


# ----------------------------------------------------------------------------------------------- interrupted runs

TOY_ARGS = ["--data", "toy:two_moons", "--data-option", "num_train=256", "--data-option", "num_val=32"]
TINY_ARGS = ["--flow", "continuous", "--sigma-1", "0.02", "--net", "mlp", "--net-option", "hidden=32"]
RUN_ARGS = ["--batch-size", "16", "--warmup", "5", "--val-every", "0", "--val-examples", "16", "--no-progress"]


def _start(out: Path, ckpt_every: int) -> subprocess.Popen:
    """A long CLI training run in a subprocess (it never finishes on its own)."""
    command = [sys.executable, "-m", "bfn", "train", *TOY_ARGS, *TINY_ARGS, *RUN_ARGS]
    command += ["--steps", "1000000", "--ckpt-every", str(ckpt_every), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_step(proc: subprocess.Popen, log: Path, step: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.communicate()}")
        if log.is_file() and len(log.read_text().splitlines()) > step:
            return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no step {step} within {timeout} s")


def _losses_after_resume(run: Path, reference: Path, start: int, count: int = 20) -> tuple[list, list]:
    """Resume ``run`` for ``count`` more steps and train ``reference`` straight; both logs' losses after ``start``."""
    assert main(["train", "--resume", "--out", str(run), "--steps", str(start + count)]) == 0
    args = [*TOY_ARGS, *TINY_ARGS, *RUN_ARGS, "--steps", str(start + count), "--out", str(reference)]
    assert main(["train", *args]) == 0
    resumed = [r["loss"] for r in read_log(run / "log.csv")]
    straight = [r["loss"] for r in read_log(reference / "log.csv")]
    assert len(resumed) == len(straight) == start + count
    return resumed[start:], straight[start:]


def test_sigkill_loses_at_most_one_interval_and_resume_continues_identically(tmp_path: Path) -> None:
    run, every = tmp_path / "run", 10
    proc = _start(run, every)
    _wait_for_step(proc, run / "log.csv", 25)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate()
    reached = int(read_log(run / "log.csv")[-1]["step"])
    saved = load_checkpoint(run).step
    assert saved % every == 0 and 0 <= reached - saved <= every
    resumed, straight = _losses_after_resume(run, tmp_path / "reference", saved)
    assert resumed == straight  # bit-identical, not just close


def test_sigint_writes_a_checkpoint_and_exits_cleanly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start(run, ckpt_every=100000)
    _wait_for_step(proc, run / "log.csv", 15)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    saved = load_checkpoint(run).step
    assert f"stopped by SIGINT at step {saved}" in out and "--resume" in out
    assert saved >= 15 and int(read_log(run / "log.csv")[-1]["step"]) == saved
    resumed, straight = _losses_after_resume(run, tmp_path / "reference", saved)
    assert resumed == straight


# ----------------------------------------------------------------------------------------------- the flow decides
def test_images_and_file_formats_follow_the_flow() -> None:
    """Sample writing asks the flow (to_unit, class_indices), not the kind's name."""
    from bfn.flows import DiscretisedFlow
    from bfn.training import natural_suffix, to_images

    binary = torch.tensor([[0, 1], [1, 0]])
    assert torch.equal(to_images(binary, DiscreteFlow(2)), torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
    assert torch.equal(to_images(torch.tensor([0, 13, 26]), DiscreteFlow(27)), torch.tensor([-1.0, 0.0, 1.0]))
    real = torch.tensor([-3.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    assert torch.equal(to_images(real, ContinuousFlow()), torch.tensor([-1.0, -0.5, 0.25, 1.0]))
    centres = DiscretisedFlow(4).bin_centres(torch.float32)
    assert torch.equal(to_images(centres, DiscretisedFlow(4)), centres)
    assert natural_suffix(ContinuousFlow(), (2,)) == natural_suffix(DiscretisedFlow, (2,)) == ".png"
    assert natural_suffix(DiscreteFlow(27), (2,)) == ".pt" and natural_suffix(DiscreteFlow, (2,), text=True) == ".txt"
    assert natural_suffix(DiscreteFlow(2), (1, 8, 8)) == ".png"


def test_flow_fields_come_from_the_flow_types() -> None:
    """Which flow options apply where follows each flow's constructor arguments and whether its data are classes."""
    from bfn.cli.train import FLOW_FLAGS
    from bfn.training import FLOW_FIELDS, flow_fields, flows_taking

    assert flow_fields("continuous") == ("sigma_1",)
    assert flow_fields("discretised") == ("sigma_1", "num_bins")
    assert flow_fields("discrete") == ("beta_1", "binarize")
    assert flows_taking("sigma_1") == ("continuous", "discretised") and flows_taking("binarize") == ("discrete",)
    assert {name: (f"--{name.replace('_', '-')}", flows_taking(name)) for name in FLOW_FIELDS} == FLOW_FLAGS
    with pytest.raises(ValueError, match="binarize applies to the discrete flow only"):
        TrainConfig(data="digits", binarize=True).resolved()
    with pytest.raises(ValueError, match="num_bins"):
        TrainConfig(data="digits", num_bins=1).resolved()
    with pytest.raises(ValueError, match="beta_1"):
        TrainConfig(data="kjv", beta_1=-1.0).resolved()
    ignored = TrainConfig(data="kjv", sigma_1=0.5, num_bins=1).resolved()  # options of other flows are not used
    assert ignored.flow == "discrete" and ignored.beta_1 == 0.75


@pytest.mark.parametrize(
    ("data", "flow", "lr", "ema_decay", "extra"),
    [
        ("toy:two_moons", "continuous", 3e-3, 0.99, {"sigma_1": 0.02, "beta_1": None}),
        ("toy:checkerboard", "continuous", 3e-3, 0.99, {"sigma_1": 0.02}),
        ("kjv", "discrete", 1e-3, 0.999, {"beta_1": 0.75, "sigma_1": None}),
        ("text8:/x", "discrete", 1e-3, 0.999, {"beta_1": 0.75}),
        ("text:/some/file.txt", "discrete", 1e-3, 0.999, {"beta_1": 0.75}),
        ("digits", "discretised", 1e-3, 0.999, {"sigma_1": 1e-3, "beta_1": None}),
        ("mnist", "discretised", 1e-3, 0.999, {"sigma_1": 1e-3}),
        ("fashion-mnist", "discretised", 1e-3, 0.999, {}),
        ("cifar10:/x", "discretised", 1e-3, 0.999, {}),
    ],
)
def test_defaults_follow_the_data(data: str, flow: str, lr: float, ema_decay: float, extra: dict) -> None:
    """No flag needed: the flow, lr and EMA decay default per data source (toy: the measured toy recipe)."""
    config = TrainConfig(data=data).resolved()
    assert (config.flow, config.lr, config.ema_decay) == (flow, lr, ema_decay)
    for key, value in extra.items():
        assert getattr(config, key) == value
    assert TrainConfig(data=data).flow_kind == flow
    given = TrainConfig(data=data, flow="continuous", lr=5e-4, ema_decay=0.9).resolved()
    assert (given.flow, given.lr, given.ema_decay) == ("continuous", 5e-4, 0.9)


def test_every_data_source_defaults_to_a_flow_it_supports() -> None:
    from bfn.data import SOURCES
    from bfn.training import DEFAULT_FLOWS, SOURCE_DEFAULTS, source_default

    assert SOURCE_DEFAULTS["flow"] is DEFAULT_FLOWS
    for name, source in SOURCES.items():
        assert source_default(DEFAULT_FLOWS, name) in source.kinds, name
