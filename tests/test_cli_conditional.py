"""The conditional command-line paths: ``bfn train --conditional``, ``bfn sample --label/--guidance``,
``--inpaint IMAGE --mask-rect/--mask`` and ``--prompt`` text infilling, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

import bfn
from bfn.cli import main
from bfn.flows import ContinuousFlow, DiscreteFlow
from bfn.prompts import image_known, parse_labels, parse_rect, prompt_known

matplotlib.use("Agg")

TINY_NET = ["--net", "mlp", "--net-option", "hidden=16", "--net-option", "depth=1"]
QUIET = ["--steps", "4", "--batch-size", "16", "--val-every", "0", "--val-examples", "16", "--no-progress"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("cond") / "run"
    args = ["train", "--data", "digits", "--flow", "discretised", "--conditional", "--label-dropout", "0.2"]
    assert main([*args, *TINY_NET, *QUIET, "--out", str(folder)]) == 0
    return folder


def test_conditional_training_writes_a_conditional_model(conditional_run: Path) -> None:
    config = json.loads((conditional_run / "config.json").read_text())
    assert config["num_classes"] == 10 and config["label_dropout"] == 0.2
    assert config["net"]["options"]["num_classes"] == 10 and config["train"]["conditional"] is True
    model = bfn.BFN.from_pretrained(conditional_run)
    assert model.num_classes == 10 and model.net.label_embedding is not None


def test_sample_one_row_per_label_with_guidance(conditional_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid.pt"
    args = ["sample", str(conditional_run), "--label", "all", "--guidance", "2", "--num", "3", "--steps", "4"]
    assert main([*args, "--out", str(out)]) == 0
    assert torch.load(out).shape == (30, 1, 8, 8)
    assert "NFE 8" in capsys.readouterr().out  # 4 steps, final drop: 4 guided calls of 2 evaluations
    png = tmp_path / "grid.png"
    assert main([*args, "--out", str(png)]) == 0
    assert png.is_file()


def test_sample_inpaints_an_image(conditional_run: Path, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    image = np.zeros((8, 8))
    image[:, 3:5] = 1.0  # a vertical bar
    src = tmp_path / "digit.png"
    plt.imsave(src, image, cmap="gray", vmin=0, vmax=1)
    out = tmp_path / "filled.pt"
    args = ["sample", str(conditional_run), "--inpaint", str(src), "--mask-rect", "0,4,8,8", "--num", "5"]
    assert main([*args, "--steps", "3", "--out", str(out)]) == 0
    samples = torch.load(out)
    assert samples.shape == (6, 1, 8, 8)  # the known part first, then the samples
    known = torch.where(torch.tensor(image) > 0.5, 1 - 1 / 17, -1 + 1 / 17).float()  # top and bottom bin centres
    assert torch.allclose(samples[1:, 0, :4], known[:4].expand(5, 4, 8))
    mask_png = tmp_path / "mask.png"
    hole = np.zeros((8, 8))
    hole[2:6, 2:6] = 1.0
    plt.imsave(mask_png, hole, cmap="gray", vmin=0, vmax=1)
    args = ["sample", str(conditional_run), "--inpaint", str(src), "--mask", str(mask_png), "--label", "3"]
    assert main([*args, "--num", "2", "--steps", "3", "--inpaint-method", "replace", "--out", str(out)]) == 0
    assert torch.allclose(torch.load(out)[1:, 0, 0], known[0].expand(2, 8))


def test_sample_fills_a_text_prompt(tmp_path: Path, capsys) -> None:
    text = tmp_path / "words.txt"
    text.write_text("the quick brown fox jumps over the lazy dog and runs away " * 40)
    run = tmp_path / "run"
    args = ["train", "--data", f"text:{text}", "--flow", "discrete", "--seq-len", "16"]
    net = ["--net-option", "width=16", "--net-option", "depth=1", "--net-option", "heads=2"]
    assert main([*args, *net, *QUIET, "--steps", "2", "--batch-size", "4", "--out", str(run)]) == 0
    out = tmp_path / "filled.txt"
    assert (
        main(
            [
                "sample",
                str(run),
                "--prompt",
                "the ___ck brown",
                "--sampler",
                "bfn-solver2",
                "--num",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(len(line) == 16 and line.startswith("the ") for line in lines)
    assert all(line[7:15] == "ck brown" for line in lines)
    assert main(["sample", str(run), "--prompt", "x" * 17, "--out", str(out)]) == 2
    assert "17 characters" in capsys.readouterr().err
    assert main(["sample", str(run), "--label", "1", "--out", str(out)]) == 2
    assert "--conditional" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--label", "10"], "0..9"),
        (["--label", "x"], "comma-separated"),
        (["--guidance", "2"], "guidance needs labels"),
        (["--mask-rect", "0,0,2,2"], "go with --inpaint"),
        (["--prompt", "abc"], "text model"),
        (["--inpaint-method", "replace"], "goes with"),
    ],
)
def test_conditional_sampling_errors(conditional_run: Path, tmp_path: Path, capsys, extra, message) -> None:
    assert main(["sample", str(conditional_run), *extra, "--out", str(tmp_path / "x.pt")]) == 2
    assert message in capsys.readouterr().err


def test_conditional_training_needs_labels(tmp_path: Path, capsys) -> None:
    args = ["train", "--data", "toy:two_moons", "--flow", "continuous", "--conditional", "--out", str(tmp_path)]
    assert main([*args, *TINY_NET, *QUIET]) == 2
    assert "labels" in capsys.readouterr().err


def test_parsers() -> None:
    assert parse_labels("all", 3) == [0, 1, 2] and parse_labels("2,0", 3) == [2, 0]
    assert parse_rect("1,2,3,4") == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="x0 < x1"):
        parse_rect("3,0,1,4")
    known, mask = prompt_known("ab_ c!", 8)
    assert mask.tolist() == [True, True, False, True, True, True, False, False]
    assert known[:2].tolist() == [1, 2] and known[3].item() == 0 and known[5].item() == 0  # '!' is a space


def test_image_known_needs_one_mask(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        image_known(tmp_path / "x.png", (1, 8, 8), ContinuousFlow())
    with pytest.raises(ValueError, match="image model"):
        image_known(tmp_path / "x.png", (16,), DiscreteFlow(2), rect=(0, 0, 1, 1))


def test_eval_reports_class_accuracy_against_guidance(conditional_run: Path, tmp_path: Path, capsys) -> None:
    args = ["eval", str(conditional_run), "--max-examples", "16", "--samplers", "bfn-solver++2", "--nfe", "4"]
    assert main([*args, "--num-samples", "40", "--guidance", "0,2", "--out", str(tmp_path)]) == 0
    assert "class accuracy of conditional samples" in capsys.readouterr().out
    rows = json.loads((tmp_path / "class_accuracy.json").read_text())
    assert [(r["guidance"], r["nfe"]) for r in rows] == [(0.0, 4), (2.0, 4)]  # a guided call counts 2
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert main(["eval", str(conditional_run), "--guidance", "1", "--out", str(tmp_path)]) == 2
    assert "--samplers" in capsys.readouterr().err


def test_nfe_budget_counts_guided_calls_twice(conditional_run: Path, tmp_path: Path, capsys) -> None:
    args = ["sample", str(conditional_run), "--label", "2", "--guidance", "3", "--nfe", "10", "--num", "2"]
    assert main([*args, "--out", str(tmp_path / "s.pt")]) == 0
    assert "NFE 10" in capsys.readouterr().out


def test_known_display_fills_with_the_flows_middle_intensity() -> None:
    """The region to fill shows the flow's data of intensity 1/2 (from_unit), whatever the kind."""
    from bfn.cli.sample import known_display

    mask = torch.tensor([[[True, False]]])
    for flow, known, fill in [
        (bfn.ContinuousFlow(), torch.tensor([[[0.5, 0.5]]]), 0.0),
        (bfn.DiscretisedFlow(4), torch.tensor([[[0.75, 0.75]]]), 0.25),
        (bfn.DiscreteFlow(2), torch.tensor([[[0, 0]]]), 1),
    ]:
        model = bfn.BFN(torch.nn.Identity(), flow, (1, 1, 2))
        shown = known_display(model, known, mask)
        assert shown.shape == (1, 1, 1, 2) and shown.dtype == known.dtype
        assert shown[0, 0, 0, 0] == known[0, 0, 0] and shown[0, 0, 0, 1] == fill
