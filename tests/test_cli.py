"""The ``bfn`` command line: help on every option, --dry-run, and every command on tiny runs.

The runs are trained once per module (a few steps of a small MLP); ``bfn sample`` is exercised with every
registered sampler for each data kind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bfn.cli import build_parser, main
from bfn.sampling import SAMPLERS
from bfn.sampling.auto import auto_config
from bfn.training import load_run_config, read_log

TINY_NET = ["--net", "mlp", "--net-option", "hidden=16", "--net-option", "depth=1"]
TOY = ["--data", "toy:two_moons", "--data-option", "num_train=128", "--data-option", "num_test=64"]
QUIET = ["--steps", "4", "--batch-size", "16", "--val-every", "0", "--val-examples", "16", "--no-progress"]

RUNS = {
    "continuous": [*TOY, "--flow", "continuous", "--sigma-1", "0.02"],
    "discretised": ["--data", "digits", "--flow", "discretised"],
    "discrete": ["--data", "digits", "--flow", "discrete", "--binarize"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny trained run folder per data kind."""
    torch.set_num_threads(1)
    out = {}
    for kind, args in RUNS.items():
        folder = tmp_path_factory.mktemp(kind) / "run"
        assert main(["train", *args, *TINY_NET, *QUIET, "--out", str(folder)]) == 0
        out[kind] = folder
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ----------------------------------------------------------------------------------------------- parser


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_has_help() -> None:
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"


def _helps(command: str) -> dict[str, str]:
    parser = next(p for p in _parsers(build_parser()) if p.prog == f"bfn {command}")
    return {action.dest: action.help or "" for action in parser._actions}


def test_help_states_the_library_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults in the help come from TrainConfig and the sampler registry, not from copies in the CLI."""
    from bfn.cli import parser as cli_parser
    from bfn.sampling.options import SolverOptions

    monkeypatch.setattr(cli_parser, "config_default", lambda name: f"<{name}>")
    monkeypatch.setitem(cli_parser.SIGMA_1, "default", 0.125)
    monkeypatch.setitem(cli_parser.BETA_1, "default", 0.375)
    monkeypatch.setitem(cli_parser.DEFAULT_NETS, "toy", ("transformer", {}))
    solver_defaults = {**SolverOptions.defaults(), "grid": "<grid>", "final": "<final>"}
    monkeypatch.setattr(SolverOptions, "defaults", classmethod(lambda cls: solver_defaults))
    helps = _helps("train")
    stated = ["data", "seq_len", "split_seed", "flow", "label_dropout", "steps", "batch_size", "lr", "weight_decay"]
    stated += ["betas", "warmup", "grad_clip", "ema_decay", "loss", "amp", "val_every", "val_examples", "ckpt_every"]
    stated += ["device", "seed", "num_workers"]
    assert [name for name in stated if f"<{name}>" not in helps[name]] == []
    assert "default 0.125;" in helps["sigma_1"] and "default 0.375;" in helps["beta_1"]
    assert "transformer for toy, text8" in helps["net"] and "mlp for digits;" in helps["net"]
    sample = _helps("sample")
    assert "<grid>" in sample["grid"] and "<final>" in sample["final"] and "certain" in sample["inpaint_method"]


def test_help_defaults_match_the_config() -> None:
    helps = _helps("train")
    assert "(default 2000;" in helps["steps"] and "(default 0.9 0.99)" in helps["betas"]
    assert (
        "(default 0.001; 0.02 for toy)" in helps["sigma_1"]
        and "(default 3; 0.75 for text8, kjv, text)" in helps["beta_1"]
    )
    parsers = {p.prog: p for p in _parsers(build_parser())}
    assert "(default 64)" in parsers["bfn sample"].format_help()
    assert "(default 3000)" in parsers["bfn demo"].format_help()


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["eval"], ["demo"]])
def test_help_exits_cleanly(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: bfn" in capsys.readouterr().out


def test_module_and_console_script_entry_points() -> None:
    """``python -m bfn`` runs the CLI; the installed ``bfn`` script (where present) points at ``bfn.cli:main``."""
    command = [sys.executable, "-m", "bfn", "--version"]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("bfn ")
    script = Path(sys.executable).with_name("bfn")
    if script.exists():
        assert "bfn.cli" in script.read_text()


# ----------------------------------------------------------------------------------------------- train


def _dry_run(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # pure JSON, no title line


@pytest.mark.parametrize(
    ("data", "flow", "net"),
    [("digits", "discretised", "mlp"), ("toy:swiss_roll", "continuous", "mlp"), ("kjv", "discrete", "transformer")],
)
def test_train_dry_run_prints_the_resolved_config(data, flow, net, capsys, tmp_path: Path) -> None:
    config = _dry_run(["train", "--data", data, "--flow", flow, "--out", str(tmp_path)], capsys)
    assert (config["data"], config["flow"], config["net"]) == (data, flow, net)
    assert not (tmp_path / "config.json").exists()


def test_train_options_reach_the_config(capsys, tmp_path: Path) -> None:
    args = ["train", "--loss", "25", "--amp", "--grad-clip", "0", "--betas", "0.8", "0.9", "--lr", "3e-4"]
    config = _dry_run([*args, *TINY_NET, "--out", str(tmp_path)], capsys)
    assert config["loss"] == 25 and config["amp"] == "bf16" and config["grad_clip"] is None
    assert config["betas"] == [0.8, 0.9] and config["lr"] == 3e-4
    assert config["net_options"] == {"hidden": 16, "depth": 1}
    with pytest.raises(SystemExit):
        main(["train", "--loss", "zero", "--dry-run"])


def test_train_resume_keeps_the_stored_options(runs: dict[str, Path], capsys) -> None:
    run = runs["continuous"]
    config = _dry_run(["train", "--resume", "--out", str(run), "--steps", "6"], capsys)
    assert config["steps"] == 6 and config["resume"] is True
    assert config["data_options"] == {"num_train": 128, "num_test": 64} and config["net_options"]["hidden"] == 16
    assert main(["train", "--resume", "--out", str(run), "--steps", "6"]) == 0
    assert load_run_config(run).steps == 6
    assert [r["step"] for r in read_log(run / "log.csv")] == [1, 2, 3, 4, 5, 6]


def test_train_errors_are_reported_not_raised(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "missing")]) == 2
    assert "not a training run folder" in capsys.readouterr().err


def test_train_on_text(tmp_path: Path, capsys) -> None:
    text = tmp_path / "words.txt"
    text.write_text("the quick brown fox jumps over the lazy dog and runs away " * 40)
    run = tmp_path / "run"
    args = ["train", "--data", f"text:{text}", "--flow", "discrete", "--seq-len", "16"]
    net = ["--net-option", "width=16", "--net-option", "depth=1", "--net-option", "heads=2"]
    assert main([*args, *net, *QUIET, "--steps", "2", "--batch-size", "4", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["net"]["name"] == "transformer"
    for sampler in ("bfn-solver2", "bfn"):
        assert (
            main(["sample", str(run), "--sampler", sampler, "--steps", "3", "--num", "3", "--out", str(tmp_path / "s")])
            == 0
        )
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert len(lines) == 3 and all(len(line) == 16 for line in lines)


# ----------------------------------------------------------------------------------------------- sample


SAMPLER_CASES = [(kind, name) for name, spec in SAMPLERS.items() for kind in RUNS if kind in spec.kinds]


@pytest.mark.parametrize(("kind", "sampler"), SAMPLER_CASES)
def test_sample_with_every_registered_sampler(runs, kind: str, sampler: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "samples.pt"
    extra = ["--h", "0.5"] if sampler == "h-solver" else []
    assert (
        main(["sample", str(runs[kind]), "--sampler", sampler, "--steps", "3", "--num", "5", "--out", str(out), *extra])
        == 0
    )
    samples = torch.load(out, weights_only=True)
    shape = json.loads((runs[kind] / "config.json").read_text())["data_shape"]
    assert tuple(samples.shape) == (5, *shape)
    expected_nfe = SAMPLERS[sampler].nfe(3)
    assert f"NFE {expected_nfe};" in capsys.readouterr().out


def test_sample_outputs_and_options(runs, tmp_path: Path, capsys) -> None:
    image = tmp_path / "grid.png"
    assert main(["sample", str(runs["discretised"]), "--nfe", "10", "--num", "9", "--out", str(image)]) == 0
    assert image.stat().st_size > 0 and "NFE 10;" in capsys.readouterr().out
    args = ["sample", str(runs["continuous"]), "--sampler", "h-solver", "--h", "1", "--order", "1", "--grid", "logsnr"]
    assert main([*args, "--eta", "0.05", "--final", "denoise", "--num", "20", "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p.png").is_file()
    settings = _dry_run(["sample", str(runs["discrete"]), "--sampler", "bfn", "--option", "categorical=false"], capsys)
    assert settings["options"] == {"categorical": False} and settings["weights"] == "ema"
    assert main(["sample", str(runs["discrete"]), "--sampler", "bfn-solver++2", "--out", str(tmp_path / "x")]) == 2
    assert "samplers for discrete data" in capsys.readouterr().err


def test_sample_is_reproducible_with_a_seed(runs, tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.pt" for i in range(3)]
    for path, seed in zip(paths, ["1", "1", "2"]):
        main(["sample", str(runs["continuous"]), "--sampler", "sde-bfn-solver++2", "--seed", seed, "--out", str(path)])
    first, again, other = (torch.load(p, weights_only=True) for p in paths)
    assert torch.equal(first, again) and not torch.equal(first, other)


# ----------------------------------------------------------------------------------------------- eval


def test_eval_nll_and_sample_quality_table(runs, tmp_path: Path, capsys) -> None:
    args = ["eval", str(runs["continuous"]), "--samplers", "bfn,bfn-solver++2", "--nfe", "3,5", "--num-samples", "64"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "test NLL (ELBO, 64 examples)" in out and "sliced W1" in out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert [(r["sampler"], r["nfe"]) for r in report["rows"]] == [
        ("bfn", 3),
        ("bfn", 5),
        ("bfn-solver++2", 3),
        ("bfn-solver++2", 5),
    ]
    assert all(r["score"] > 0 for r in report["rows"]) and (tmp_path / "quality.png").is_file()


def test_eval_takes_the_default_sampler(runs, tmp_path: Path) -> None:
    args = ["eval", str(runs["discrete"]), "--samplers", "auto,bfn", "--nfe", "4", "--num-samples", "16"]
    assert main([*args, "--max-examples", "4", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert [(r["sampler"], r["nfe"]) for r in rows] == [("auto", 4), ("bfn", 4)]
    assert rows[0]["ran"] == auto_config("discrete", 4)[0] and rows[1]["ran"] == "bfn"


def test_eval_digits_fid_and_likelihood(runs, tmp_path: Path, capsys) -> None:
    args = ["eval", str(runs["discretised"]), "--split", "val", "--max-examples", "4", "--likelihood"]
    assert (
        main([*args, "--samplers", "bfn-solver++2", "--nfe", "4", "--num-samples", "80", "--out", str(tmp_path)]) == 0
    )
    out = capsys.readouterr().out
    assert "val NLL (ELBO, 4 examples)" in out and "PF-ODE" in out and "FID-digits" in out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["pf_ode_bpd"] is not None and report["rows"][0]["score"] >= 0


# ----------------------------------------------------------------------------------------------- demo


def test_demo_quick_runs_the_demo_code_path(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--steps", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test NLL:" in printed and "bits/dim" in printed
    ran = auto_config("discretised", 10)[0]  # the demo compares the original sampler with the default one
    assert f"bfn @ 10 NFE vs auto ({ran}) @ 10 NFE" in printed
    assert (out / "demo.png").stat().st_size > 0 and (out / "loss.png").is_file()
    (out / "demo.png").unlink()
    assert main(["demo", "--quick", "--steps", "8", "--out", str(out)]) == 0  # trained already: reload, resample
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "demo.png").is_file() and len(read_log(out / "log.csv")) == 8


def test_demo_dry_run(capsys) -> None:
    config = _dry_run(["demo", "--out", "somewhere"], capsys)
    assert config["data"] == "digits" and config["flow"] == "discretised" and config["out"] == "somewhere"


def test_train_needs_no_flow_flag(capsys, tmp_path: Path) -> None:
    """The flow and the recipe follow the data: toy data train continuous with the toy lr and EMA decay."""
    toy = _dry_run(["train", "--data", "toy:two_moons", "--out", str(tmp_path)], capsys)
    assert (toy["flow"], toy["sigma_1"], toy["lr"], toy["ema_decay"]) == ("continuous", 0.02, 3e-3, 0.99)
    text = _dry_run(["train", "--data", "kjv", "--out", str(tmp_path)], capsys)
    assert (text["flow"], text["beta_1"], text["sigma_1"], text["lr"]) == ("discrete", 0.75, None, 1e-3)
    named = _dry_run(["train", "--data", "toy:swiss_roll"], capsys)
    assert named["out"] == str(Path("runs") / "toy-swiss_roll-continuous")
    helps = _helps("train")
    assert "(default by data: discretised; continuous for toy; discrete for text8, kjv, text)" in helps["flow"]
    assert "(default 0.001; 0.003 for toy)" in helps["lr"] and "(default 0.999; 0.99 for toy)" in helps["ema_decay"]
