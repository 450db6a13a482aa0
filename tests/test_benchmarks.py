"""Smoke tests of the benchmark scripts (tiny ``--quick`` models) and of their bookkeeping (NFE, speed-up, commands)."""

from __future__ import annotations

import importlib
import json
import math
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def benchlib() -> ModuleType:
    return _load("benchlib")


def _kjv_available() -> bool:
    from bfn.data import DataUnavailableError, load_dataset

    try:
        load_dataset("kjv", "discrete", seq_len=16)
    except DataUnavailableError:
        return False
    return True


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Tiny trained runs of an image model and (when the KJV text is installed) the text model."""
    runs = tmp_path_factory.mktemp("bench-runs")
    models = ["digits-binary"] + (["kjv"] if _kjv_available() else [])
    assert _load("train_models").main(["--quick", "--threads", "1", "--runs-dir", str(runs), "--models", *models]) == 0
    return runs, models


# ------------------------------------------------------------------------------------------------- bookkeeping


def test_steps_for_nfe(benchlib: ModuleType) -> None:
    variant = benchlib.Variant
    assert variant("bfn", "bfn").steps_for(10) == 9  # n + 1 calls
    assert variant("++2", "bfn-solver++2").steps_for(10) == 10
    assert variant("++3s", "bfn-solver++3s").steps_for(10) == 4  # 3 (n - 1) + 1
    two_stage = variant("++2s", "bfn-solver++2s")
    assert two_stage.steps_for(10) is None  # 2 (n - 1) + 1 is odd
    assert two_stage.steps_at_most(10) == 5 and two_stage.nfe(5) == 9


def test_every_registered_sampler_appears(benchlib: ModuleType) -> None:
    from bfn.sampling import SAMPLERS

    for kind in ("continuous", "discretised", "discrete"):
        names = {v.sampler for v in benchlib.sampler_variants(kind)}
        assert names == {name for name, spec in SAMPLERS.items() if kind in spec.kinds}


def test_nfe_to_match_interpolates_in_log_nfe() -> None:
    quality = _load("quality_vs_nfe")
    fid = _load("benchlib").FID
    curve = [(5, 10.0), (10, 5.0), (20, 2.0)]
    nfe, _ = quality.nfe_to_match(curve, 3.5, fid)
    assert nfe == pytest.approx(math.sqrt(10 * 20))
    assert quality.nfe_to_match(curve, 1.0, fid) == (None, "> 20")
    assert quality.nfe_to_match(curve, 12.0, fid)[1] == "<= 5"


def test_train_commands_resolve_to_the_benchmark_configs(benchlib: ModuleType) -> None:
    from bfn.cli import build_parser, train_config_from_args

    runs = benchlib.default_runs_dir("cpu")
    for mode in ("cpu", "full"):
        for spec in benchlib.bench_models(mode).values():
            argv = shlex.split(benchlib.train_command(spec, runs))[1:]
            from_cli = train_config_from_args(build_parser().parse_args(argv)).to_dict()
            wanted = benchlib.train_config(spec, runs).to_dict()
            for key in ("out", "progress"):
                from_cli.pop(key), wanted.pop(key)
            assert from_cli == wanted, spec.name


# ------------------------------------------------------------------------------------------------- scripts


def test_quality_vs_nfe_quick_is_reproducible(quick_runs: tuple[Path, list[str]], tmp_path: Path) -> None:
    runs, models = quick_runs
    quality = _load("quality_vs_nfe")
    argv = ["--quick", "--threads", "1", "--runs-dir", str(runs), "--models", *models]
    assert quality.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert quality.main([*argv, "--out", str(tmp_path / "b"), "--recompute"]) == 0
    for name in models:
        a = json.loads((tmp_path / "a" / f"quality_vs_nfe_{name}.json").read_text())
        b = json.loads((tmp_path / "b" / f"quality_vs_nfe_{name}.json").read_text())
        values = {k: [p["value"] for p in c["points"]] for k, c in a["curves"].items()}
        assert values == {k: [p["value"] for p in c["points"]] for k, c in b["curves"].items()}
        assert a["bits_per_dim"] == b["bits_per_dim"]
        assert a["speedups"]["10"]["rows"] and all(math.isfinite(v) for vs in values.values() for v in vs)
        assert (tmp_path / "a" / f"quality_vs_nfe_{name}.png").stat().st_size > 0
    assert "Speed-up" in (tmp_path / "a" / "quality_vs_nfe.md").read_text()


def test_h_dial_quick(quick_runs: tuple[Path, list[str]], tmp_path: Path) -> None:
    runs, models = quick_runs
    h_dial = _load("h_dial")
    assert (
        h_dial.main(["--quick", "--threads", "1", "--runs-dir", str(runs), "--out", str(tmp_path), "--models", *models])
        == 0
    )
    result = json.loads((tmp_path / f"h_dial_{models[0]}.json").read_text())
    assert {(p["h"], p["order"]) for p in result["points"]} == {(0.0, 1), (1.0, 1), (0.0, 2), (1.0, 2)}
    assert (tmp_path / "h_dial.md").read_text().count("| h |") == len(models)


def test_costs_quick(tmp_path: Path) -> None:
    costs = _load("costs")
    assert (
        costs.main(["--quick", "--threads", "1", "--out", str(tmp_path), "--models", "digits-continuous", "kjv"]) == 0
    )
    rows = json.loads((tmp_path / "costs.json").read_text())["rows"]
    assert [r["case"] for r in rows] == ["digits-continuous", "kjv"]
    assert all(r["net_ms"] > 0 and r["loss_ms"] > 0 and len(r["samplers"]) == 3 for r in rows)
    assert "Training step" in (tmp_path / "costs.md").read_text()


@pytest.mark.slow
def test_costs_images_quick(tmp_path: Path) -> None:
    costs = _load("costs")
    argv = ["--images", "--quick", "--threads", "1", "--image-batch", "2", "--steps", "2", "--out", str(tmp_path)]
    assert costs.main(argv) == 0
    result = json.loads((tmp_path / "costs_images.json").read_text())
    assert [r["num_bins"] for r in result["rows"]] == [16]
    assert set(result["rows"][0]["samplers"]) == set(costs.IMAGE_SAMPLERS)
    assert all(r["ns_per_element"] > 0 for r in result["scaling"])
    assert "discretised images" in (tmp_path / "costs_images.md").read_text()


def test_describe_quick(quick_runs: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    runs, models = quick_runs
    quality = _load("quality_vs_nfe")
    argv = ["--quick", "--threads", "1", "--runs-dir", str(runs), "--models", models[-1]]
    assert quality.main([*argv, "--describe", "bfn@5,bfn-solver2:tuned@5"]) == 0
    out = capsys.readouterr().out
    assert "bfn @ 5 NFE" in out and "bfn-solver2:tuned @ 5 NFE" in out


def test_peers_quick(tmp_path: Path) -> None:
    pytest.importorskip("diffusers", reason="the peers benchmark needs the bench extra: pip install -e '.[bench]'")
    pytest.importorskip("flow_matching", reason="the peers benchmark needs the bench extra: pip install -e '.[bench]'")
    peers = _load("peers")
    argv = ["--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "cache"), "--cases", "toy:two_moons",
            "digits-binary"]  # fmt: skip
    assert peers.main(argv) == 0
    toy = json.loads((tmp_path / "peers_toy-two_moons.json").read_text())
    samplers = {(r["method"], r["sampler"]) for r in toy["rows"]}
    assert {m for m, _ in samplers} == {"bfn", "ddpm", "fm"}
    assert ("ddpm", "ddpm ancestral") in samplers and ("fm", "fm midpoint") in samplers
    for row in toy["rows"]:  # every sampler spends the NFE it is listed at (one call less at most)
        budget = (
            row["nfe"]
            if row["sampler"] in ("ddpm ancestral", "bfn original")
            else min(toy["nfe_grid"], key=lambda n: abs(n - row["nfe"]))
        )
        assert budget - 1 <= row["nfe"] <= budget
        assert 0.0 <= row["off_manifold"] <= 1.0 and 0.0 <= row["coverage"] <= 1.0 and row["sliced_w1"] > 0
    # the library as a user gets it: the default sampler (reporting what it ran), named solvers, the original one
    roles = {r["role"] for r in toy["rows"] if r["method"] == "bfn"}
    assert roles == {"auto", "named", "original"}
    assert all(r["resolved"] for r in toy["rows"] if r["role"] == "auto")
    assert [r["nfe"] for r in toy["rows"] if r["role"] == "original"] == [5, 10, 20]
    for row in toy["rows"]:  # BFN's samplers are also scored against the model's own converged samples
        assert ("vs_model" in row) == (row["method"] == "bfn")
    original = {r["nfe"]: r["vs_model"]["sliced_w1"] for r in toy["rows"] if r["role"] == "original"}
    assert original[20] < original[5]  # the original sampler converges to its own 20-call samples
    for direction in ("real", "model"):
        solvers = {r["solver"] for r in toy["speedups"][direction]["off_manifold"]}
        assert "bfn auto" in solvers and "bfn original" not in solvers
    binary = json.loads((tmp_path / "peers_digits-binary.json").read_text())
    assert {r["sampler"] for r in binary["rows"] if r["method"] == "fm"} == {"fm discrete-euler"}
    assert all(math.isfinite(r["fid"]) for r in binary["rows"])
    assert binary["real_data"]["fid"] < min(r["fid"] for r in binary["rows"])  # untrained models lose to real data
    assert toy["real_data"]["off_manifold"] == 0.0 and toy["real_data"]["regions_lost"] == 0
    report = (tmp_path / "peers.md").read_text()
    assert "| toy:two_moons (off-manifold %) |" in report and "| digits-binary (FID-digits) |" in report
    assert "| real data (held out) |" in report
    assert (tmp_path / "peers.png").stat().st_size > 0
    assert "speed-up `auto` (vs real / vs model)" in report
    # rerunning re-scores from the cached networks and samples: the same numbers, no training
    first = toy["rows"]
    assert peers.main([*argv[:-2], "--cases", "toy:two_moons", "--methods", "bfn"]) == 0
    again = json.loads((tmp_path / "peers_toy-two_moons.json").read_text())
    assert again["rows"] == first


def test_peers_quick_text(tmp_path: Path) -> None:
    pytest.importorskip("flow_matching", reason="the peers benchmark needs the bench extra: pip install -e '.[bench]'")
    pytest.importorskip("spylls", reason="spelling accuracy needs the metrics extra")
    text = tmp_path / "text.txt"
    text.write_text("in the beginning god created the heaven and the earth and the earth was without form " * 40)
    peers = _load("peers")
    argv = ["--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "cache"), "--cases", "kjv"]
    assert peers.main([*argv, "--text-data", f"text:{text}"]) == 0
    result = json.loads((tmp_path / "peers_kjv.json").read_text())
    assert {r["method"] for r in result["rows"]} == {"bfn", "fm"} and "ddpm" in result["not_applicable"]
    assert all(0.0 <= r["spelling"] <= 1.0 for r in result["rows"])
    assert all(set(r["vs_model"]) == {"bigram_tv", "spelling_gap"} for r in result["rows"] if r["method"] == "bfn")
    assert all(math.isfinite(result["extras"][m]["test_bits_per_char"]) for m in ("bfn", "fm"))
    assert "| kjv (spelling %) |" in (tmp_path / "peers.md").read_text()


def test_peers_ngram_distance() -> None:
    peers = _load("peers")
    # bigrams: ab ba ab (2/3, 1/3) against ab ba ab + ba (1/2, 1/2)
    assert peers.ngram_tv(["abab"], ["abab", "ba"]) == pytest.approx(1 / 6)
    assert peers.ngram_tv(["aaaa"], ["bbbb"]) == 1.0 and peers.ngram_tv(["the cat"], ["the cat"]) == 0.0
    with pytest.raises(ValueError, match="2-grams"):
        peers.ngram_tv(["a"], ["ab"])


def test_peers_toy_scores_count_off_manifold_points() -> None:
    import torch

    peers = _load("peers")
    train = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    centres = train.clone()
    samples = torch.tensor([[0.01, 0.0], [1.0, 0.02], [0.5, 0.5], [0.0, 0.99]])  # one of four off the data
    scores = peers.toy_scores(samples, train, train, centres)
    assert scores["off_manifold"] == pytest.approx(0.25)
    assert scores["coverage"] == pytest.approx(0.75)  # (1, 1) has no sample within 0.05
    assert scores["regions_lost"] == 1  # no sample is nearest to (1, 1)


def test_text_recipes_quick(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    words = "in the beginning god created the heaven and the earth and the earth was without form and void "
    text.write_text(words * 40)
    recipes = _load("text_recipes")
    argv = ["--quick", "--threads", "1", "--data", f"text:{text}", "--runs", str(tmp_path / "runs")]
    assert recipes.main([*argv, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "text_recipes_quick.json").read_text())
    assert set(result["points"]) == set(recipes.SWEEP)
    for res in [*result["points"].values(), result["final"]]:
        assert res["step"] == 3 and math.isfinite(res["val_bpc"]) and 0 <= res["spelling_draw"] <= 100
    table = result["final"]["spelling_vs_nfe"]
    assert set(table) == {s + (" (mode)" if o.get("mode") else "") for s, o in recipes.SOLVERS}
    assert all(set(row) == {str(n) for n in recipes.NFE_GRID} for row in table.values())
    assert result["recipe"]["net_options"]["conv_kernel"] > 0  # the quick run uses the recipe's network
    assert "Final run" in (tmp_path / "text_recipes_quick.md").read_text()
    # a second call reuses the finished runs instead of training again
    assert recipes.main([*argv, "--out", str(tmp_path), "--only", "final"]) == 0


def test_recipes_quick(tmp_path: Path) -> None:
    """The recipe sweeps run end to end, keep their points, and resume without retraining."""
    pytest.importorskip("diffusers", reason="the recipe sweeps reuse the peers benchmark: pip install -e '.[bench]'")
    recipes = _load("recipes")
    common = ["--quick", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")]
    assert recipes.main([*common, "times", "--cases", "toy:two_moons", "--seeds", "1"]) == 0
    points = json.loads((tmp_path / "time_sampling_quick.json").read_text())["points"]
    assert {p["time_sampling"] for p in points} == {"uniform", "stratified"}
    for point in points:
        assert point["case"] == "toy:two_moons" and point["scores"]["nfe"] == 10
        assert 0.0 <= point["scores"]["off_manifold"] <= 1.0 and point["scores"]["named"]
    assert "| toy:two_moons | stratified |" in (tmp_path / "time_sampling_quick.md").read_text()
    argv = [*common, "digits", "--lr", "1e-3", "--ema-decay", "0.99"]
    assert recipes.main(argv) == 0
    first = json.loads((tmp_path / "recipes_digits_quick.json").read_text())["points"]
    assert len(first) == 1 and first[0]["lr"] == 1e-3 and math.isfinite(first[0]["scores"]["fid"])
    assert recipes.main(argv) == 0  # a finished point is kept, not trained again
    assert json.loads((tmp_path / "recipes_digits_quick.json").read_text())["points"] == first
