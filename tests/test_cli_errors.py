"""The CLI on bad input: one line naming the flag, file or field, exit status 2, no traceback, nothing lost.

One test per class of bad input: bad values, flags that do not apply, bad files, resume state, data loss (a
folder that holds a saved model or another run), non-finite training, missing optional packages, --dry-run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bfn import BFN
from bfn._checks import NonFiniteError
from bfn.checkpoint import load_checkpoint, manifest_checksum, save_pretrained
from bfn.cli import main
from bfn.training import TrainConfig, train
from test_training import tiny

TINY = ["--net", "mlp", "--net-option", "hidden=16", "--net-option", "depth=1"]
TOY = ["--data", "toy:two_moons", "--data-option", "num_train=128", "--data-option", "num_test=64"]
QUICK = ["--steps", "4", "--batch-size", "16", "--val-every", "0", "--val-examples", "16", "--no-progress"]
TOY_RUN = [*TOY, "--flow", "continuous", "--sigma-1", "0.02", *TINY, *QUICK]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained toy run."""
    folder = tmp_path_factory.mktemp("toy") / "run"
    assert main(["train", *TOY_RUN, "--out", str(folder)]) == 0
    return folder


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str, code: int = 2) -> str:
    """Run the CLI, expect exit status ``code`` and one error line on stderr holding every needle."""
    capsys.readouterr()
    assert main(args) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    command = next(a for a in args if a in ("train", "sample", "eval", "demo"))
    assert len(lines) == 1 and lines[0].startswith(f"bfn {command}: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--net-option", "hidden=abc"], ["hidden", "integer"]),
        (["--net-option", "bogus=1"], ["bogus", "valid options"]),
        (["--net-option", "hidden=1e12"], ["hidden"]),
        (["--lr", "inf"], ["lr", "finite"]),
        (["--grad-clip", "nan"], ["grad_clip"]),
        (["--grad-clip", "-1"], ["grad_clip"]),
        (["--sigma-1", "2"], ["sigma_1"]),
        (["--steps", "1000000000000"], ["steps", "at most"]),
        (["--batch-size", "0"], ["batch_size", ">= 1"]),
    ],
)
def test_bad_train_values(extra, needles, capsys, tmp_path: Path) -> None:
    args = ["train", *TOY_RUN, *extra, "--out", str(tmp_path / "run")]
    _fails(args, capsys, *needles)
    _fails([*args, "--dry-run"], capsys, *needles)
    assert not (tmp_path / "run").exists()


def test_bad_global_and_sample_values(run: Path, capsys, tmp_path: Path) -> None:
    _fails(["--threads", "0", "sample", str(run)], capsys, "--threads")
    _fails(["sample", str(run), "--device", "nonsense", "--out", str(tmp_path / "s.png")], capsys, "nonsense")
    _fails(["sample", str(run), "--num", "0"], capsys, "--num")
    _fails(["sample", str(run), "--nfe", "0"], capsys, "--nfe")
    _fails(["sample", str(run), "--sampler", "h-solver", "--h", "nan"], capsys, "h must be")
    _fails(["sample", str(run), "--option", "bogus=1"], capsys, "bogus")
    _fails(["eval", str(run), "--nfe", "0"], capsys, "--nfe")
    _fails(["eval", str(run), "--samplers", "nope"], capsys, "unknown sampler")
    _fails(["demo", "--metric-samples", "-1", "--out", str(tmp_path / "d")], capsys, "--metric-samples")
    _fails(["demo", "--nfe", "0", "--out", str(tmp_path / "d")], capsys, "--nfe")
    assert not (tmp_path / "d").exists()


def test_threads_error_is_one_line(capsys) -> None:
    line = _fails(["--threads", "0", "demo", "--dry-run"], capsys)
    assert "--threads must be >= 1" in line


# --------------------------------------------------------------------------------------- flags that don't apply
@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--data", "digits", "--flow", "discrete", "--num-bins", "17"], ["--num-bins", "discretised"]),
        (["--data", "digits", "--flow", "discretised", "--beta-1", "2"], ["--beta-1"]),
        (["--data", "digits", "--flow", "discrete", "--binarize", "--sigma-1", "0.01"], ["--sigma-1"]),
        (["--data", "digits", "--amp", "fp16", "--device", "cpu"], ["fp16", "CUDA"]),
        (["--data", "nope"], ["unknown data set"]),
        (["--data", "digits", "--data-root", "/tmp"], ["--data-root"]),
        (["--data", "toy:two_moons", "--flow", "continuous", "--data-option", "val_size=3"], ["val_size"]),
    ],
)
def test_train_flags_that_do_not_apply(extra, needles, capsys, tmp_path: Path) -> None:
    args = ["train", *extra, *TINY, "--out", str(tmp_path / "run")]
    _fails([*args, "--dry-run"], capsys, *needles)  # the dry run refuses what the run would
    _fails(args, capsys, *needles)


def test_sample_flags_that_do_not_apply(run: Path, capsys, tmp_path: Path) -> None:
    _fails(["sample", str(run), "--steps", "3", "--nfe", "20"], capsys, "--steps", "--nfe")
    _fails(["sample", str(run), "--sampler", "bfn", "--h", "0.5"], capsys, "'h'")
    _fails(["sample", str(run), "--steps", "3", "--nfe", "20", "--dry-run"], capsys, "not both")


def test_resume_dry_run_of_a_missing_run(capsys, tmp_path: Path) -> None:
    _fails(["train", "--resume", "--out", str(tmp_path / "missing"), "--dry-run"], capsys, "not a training run")
    _fails(["train", "--resume", "--overwrite", "--out", str(tmp_path)], capsys, "--overwrite", "--resume")


# ------------------------------------------------------------------------------------------------ bad files
def test_bad_config_files(capsys, tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    _fails(["train", "--config", str(listed), "--dry-run"], capsys, "--config", "JSON object", "list")
    broken = tmp_path / "broken.json"
    broken.write_text('{"steps": ')
    _fails(["train", "--config", str(broken), "--dry-run"], capsys, "--config", "not valid JSON")
    _fails(["train", "--config", str(tmp_path / "missing.json"), "--dry-run"], capsys, "--config", "missing.json")
    typo = tmp_path / "typo.json"
    typo.write_text('{"stepz": 3}')
    _fails(["train", "--config", str(typo), "--dry-run"], capsys, "--config", "stepz")
    bad_type = tmp_path / "type.json"
    bad_type.write_text('{"betas": 5}')
    _fails(["train", "--config", str(bad_type), "--dry-run"], capsys, "--config")


def test_out_that_is_a_file_or_a_bad_suffix(run: Path, capsys, tmp_path: Path) -> None:
    existing = tmp_path / "file"
    existing.write_text("keep me")
    _fails(["train", *TOY_RUN, "--out", str(existing)], capsys, "existing file")
    _fails(["train", *TOY_RUN, "--out", str(existing), "--overwrite"], capsys, "existing file")
    assert existing.read_text() == "keep me"
    _fails(["sample", str(run), "--out", str(tmp_path / "x.unknownsuffix")], capsys, ".unknownsuffix", ".png")
    _fails(["sample", str(run), "--out", str(tmp_path / "x.txt")], capsys, "2-D points", ".png")
    _fails(["sample", str(run), "--out", str(tmp_path)], capsys, "is a folder")
    assert not (tmp_path / "x.unknownsuffix").exists() and not (tmp_path / "x.txt").exists()


def test_text_samples_are_never_written_into_a_png(tmp_path: Path) -> None:
    from bfn.flows import DiscreteFlow
    from bfn.training import write_samples

    text = torch.randint(0, 27, (3, 12))
    with pytest.raises(ValueError, match=r"\.txt or \.pt"):
        write_samples(text, tmp_path / "t.png", flow=DiscreteFlow(27), data_shape=(12,), text=True)
    assert not (tmp_path / "t.png").exists()


def test_sample_from_a_folder_without_config(capsys, tmp_path: Path) -> None:
    _fails(["sample", str(tmp_path)], capsys, "config.json", "not found")
    (tmp_path / "config.json").write_text("[]")
    _fails(["sample", str(tmp_path)], capsys, "config.json", "JSON object")


# --------------------------------------------------------------------------------------------- resume state
def _edit_state(run: Path, **changes) -> None:
    path = run / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    state.update(changes)
    state["checksum"] = manifest_checksum(state)
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("step", [-5, True, "3"])
def test_resume_validates_state_json(step, capsys, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TOY_RUN, "--ckpt-every", "0", "--out", str(out)]) == 0
    _edit_state(out, step=step)
    _fails(["train", "--resume", "--out", str(out), "--steps", "6"], capsys, "state.json", "step")


def test_resume_with_an_rng_state_lacking_a_key(capsys, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TOY_RUN, "--out", str(out)]) == 0
    rng_path = out / "checkpoint" / "rng.pt"
    rng = torch.load(rng_path, weights_only=True)
    del rng["loss"]
    torch.save(rng, rng_path)
    data = rng_path.read_bytes()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    files = {**state["files"], "rng.pt": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    _edit_state(out, files=files)
    _fails(["train", "--resume", "--out", str(out), "--steps", "6"], capsys, "rng.pt", "'loss'")


# ------------------------------------------------------------------------------------------------ data loss
def test_train_refuses_a_saved_model_folder_unless_overwrite(run: Path, capsys, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    save_pretrained(BFN.from_pretrained(run), folder)
    before = (folder / "config.json").read_text(), (folder / "model.safetensors").read_bytes()
    args = ["train", *TOY_RUN, "--sigma-1", "0.05", "--out", str(folder)]
    _fails(args, capsys, "saved model", "--overwrite", "--resume")
    _fails([*args, "--dry-run"], capsys, "saved model")  # the dry run refuses it too
    capsys.readouterr()
    assert main([*args, "--overwrite", "--dry-run"]) == 0 and json.loads(capsys.readouterr().out)["sigma_1"] == 0.05
    assert ((folder / "config.json").read_text(), (folder / "model.safetensors").read_bytes()) == before
    assert main([*args, "--overwrite"]) == 0
    assert not (folder / "model.safetensors").exists()  # the old weights can no longer be loaded by mistake
    model = BFN.from_pretrained(folder, ema=False)
    raw = load_checkpoint(folder).model
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in raw.items())
    assert model.flow.sigma_1 == 0.05


def test_train_refuses_a_run_of_other_settings(run: Path, capsys, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text((run / "config.json").read_text())  # a run that has no checkpoint yet
    _fails(["train", *TOY_RUN, "--lr", "0.01", "--out", str(folder)], capsys, "different settings")
    assert main(["train", *TOY_RUN, "--out", str(folder)]) == 0  # the same settings: restarting loses nothing
    _fails(["train", *TOY_RUN, "--out", str(folder)], capsys, "already holds a checkpoint")


# ------------------------------------------------------------------------------------------- non-finite runs
def _tiny(out: Path, **changes) -> TrainConfig:
    """The training tests' tiny two-moons run, smaller still: 6 steps, a checkpoint every 2."""
    small = {
        "data_options": {"num_train": 128, "num_val": 32, "num_test": 32},
        "net_options": {"hidden": 16, "depth": 1},
    }
    settings = {**small, "steps": 6, "warmup": 1, "val_every": 0, "val_examples": 16, "ckpt_every": 2}
    return tiny(out, **{**settings, **changes})


def test_a_non_finite_loss_stops_training_without_a_nan_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from bfn import training

    real = training.GlobalBatchLoss.forward
    calls = []

    def poisoned(self, x, generator, labels=None):
        calls.append(1)
        loss = real(self, x, generator, labels)
        return loss * math.nan if len(calls) == 3 else loss

    monkeypatch.setattr(training.GlobalBatchLoss, "forward", poisoned)
    with pytest.raises(NonFiniteError, match=r"step 3.*loss is not finite"):
        train(_tiny(tmp_path / "run"))
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 2
    weights = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_cli_reports_a_diverged_run_in_one_line(capsys, tmp_path: Path, monkeypatch) -> None:
    from bfn import training

    real = training.GlobalBatchLoss.forward
    monkeypatch.setattr(training.GlobalBatchLoss, "forward", lambda self, x, g, y=None: real(self, x, g, y) * math.inf)
    line = _fails(["train", *TOY_RUN, "--out", str(tmp_path / "run")], capsys, "not finite", code=1)
    assert "step 1" in line and not (tmp_path / "run" / "checkpoint").exists()


# ---------------------------------------------------------------------------------------- optional packages
def test_missing_metrics_extra_fails_before_training(capsys, tmp_path: Path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchmetrics" else real(name))
    out = tmp_path / "demo"
    _fails(["demo", "--out", str(out)], capsys, "pip install 'bfn[metrics]'")
    _fails(["demo", "--out", str(out), "--dry-run"], capsys, "pip install 'bfn[metrics]'")
    assert not out.exists()
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--metric-samples", "0", "--dry-run"]) == 0  # no metric: no extra


# ---------------------------------------------------------------------------------------------------- dry run
def test_dry_runs_print_pure_json(run: Path, capsys) -> None:
    for args in (
        ["train", *TOY_RUN, "--out", str(run.parent / "fresh")],
        ["sample", str(run)],
        ["eval", str(run)],
        ["demo", "--out", str(run.parent / "demo")],
    ):
        capsys.readouterr()
        assert main([*args, "--dry-run"]) == 0
        assert isinstance(json.loads(capsys.readouterr().out), dict)


# ---------------------------------------------------------------------------------------- what a user sees
def test_training_off_a_terminal_prints_timed_progress_lines(capsys, tmp_path: Path, monkeypatch) -> None:
    from bfn.training import loop

    monkeypatch.setattr(loop, "PROGRESS_SECONDS", 0.0)
    train(_tiny(tmp_path / "run", ckpt_every=0))
    printed = capsys.readouterr().out.splitlines()
    lines = [line for line in printed if "steps/s" in line]
    assert [line.split(":")[0] for line in lines] == [f"step {i}/6" for i in range(2, 6)]  # 6: the validation line
    assert all("left" in line and "loss" in line for line in lines)
    assert any(line.startswith("step 6/6:") and line.endswith("bits/dim") for line in printed)


def test_scores_are_printed_at_their_precision() -> None:
    from bfn.training import format_score, nll_unit

    assert format_score("spelling accuracy", 0.83456) == "83.5%"
    assert format_score("FID-digits", 12.34567) == "12.35"
    assert format_score("sliced W1", 0.0123456) == "0.01235"
    assert format_score("FID-digits", None) == "n/a"
    assert nll_unit({"alphabet": "abc"}) == "bits/char" and nll_unit({}) == "bits/dim"


def test_help_names_the_real_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    torchrun = next(line.strip() for line in text.splitlines() if line.strip().startswith("torchrun"))
    assert torchrun in readme
