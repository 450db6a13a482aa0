"""Distributed training on CPU: two gloo processes under torchrun against one process with the same global batch.

Checks that the ranks' parameters stay identical and that the loss of every step matches the single-process run
(same global batches and, by design, the same per-example noise); see :mod:`bfn.training`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DRIVER = """
import json, os, sys
import torch
from bfn.training import TrainConfig, train

torch.set_num_threads(1)
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
result = train(config)
rank = int(os.environ.get("RANK", "0"))
params = torch.cat([p.detach().flatten() for p in result.model.net.parameters()])
ema = torch.cat([p.detach().flatten() for p in result.ema_model.net.parameters()])
torch.save({"params": params, "ema": ema, "losses": result.losses, "world": result.world_size},
           os.path.join(sys.argv[2], f"rank{rank}.pt"))
"""

STEPS = 6


def _config(out: Path, batch_size: int) -> dict:
    return {
        "data": "toy:two_moons",
        "data_options": {"num_train": 256, "num_val": 32, "num_test": 32},
        "flow": "continuous",
        "sigma_1": 0.02,
        "net": "mlp",
        "net_options": {"hidden": 32, "depth": 2},
        "steps": STEPS,
        "batch_size": batch_size,
        "warmup": 2,
        "val_every": 0,
        "val_examples": 16,
        "ckpt_every": 3,
        "device": "cpu",
        "out": str(out),
        "progress": False,
    }


def _run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Per-rank dumps of a 2-process run (per-rank batch 8) and a 1-process run (batch 16)."""
    base = tmp_path_factory.mktemp("ddp")
    driver = base / "driver.py"
    driver.write_text(DRIVER)
    out: dict[str, list[dict]] = {}
    for name, procs, batch in (("ddp", 2, 8), ("single", 1, 16)):
        folder = base / name
        folder.mkdir()
        config = json.dumps(_config(folder / "run", batch))
        if procs == 1:
            _run([sys.executable, str(driver), config, str(folder)])
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
            _run([*launcher, str(driver), config, str(folder)])
        out[name] = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(procs)]
        out[name + "_dir"] = folder / "run"  # type: ignore[assignment]
    return out


def test_ranks_keep_identical_parameters(results) -> None:
    rank0, rank1 = results["ddp"]
    assert rank0["world"] == rank1["world"] == 2
    assert torch.equal(rank0["params"], rank1["params"])
    assert torch.equal(rank0["ema"], rank1["ema"])
    assert rank0["losses"] == rank1["losses"]  # the logged loss is the global mean on every rank


def test_losses_match_a_single_process_run_with_the_same_global_batch(results) -> None:
    ddp, single = results["ddp"][0], results["single"][0]
    assert len(ddp["losses"]) == len(single["losses"]) == STEPS
    assert abs(ddp["losses"][0] - single["losses"][0]) < 1e-5
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(single["losses"]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ddp["params"], single["params"], rtol=1e-4, atol=1e-5)


def test_rank_zero_writes_the_run_folder(results) -> None:
    run = results["ddp_dir"]
    stored = json.loads((run / "config.json").read_text())
    assert stored["world_size"] == 2 and stored["global_batch_size"] == 16
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == STEPS and state["world_size"] == 2
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint",
        "checkpoint.old",
        "config.json",
        "log.csv",
        "loss.png",
    ]
