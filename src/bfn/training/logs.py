"""A run's log: ``log.csv`` (one row per step, flushed as written) and the loss-curve plot ``loss.png``."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from bfn.checkpoint import atomic_write_bytes

__all__ = ["LOG_COLUMNS", "LOG_FILE", "PLOT_FILE", "RunLog", "plot_losses", "read_log"]

LOG_FILE = "log.csv"
PLOT_FILE = "loss.png"
LOG_COLUMNS = ("step", "loss", "lr", "grad_norm", "val_bpd", "time")


def read_log(path: str | os.PathLike[str]) -> list[dict[str, float | None]]:
    """Rows of a run's ``log.csv`` as dicts of floats (``None`` for empty cells)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()} for row in csv.DictReader(f)]


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log rows after ``last_step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f)]
    header, body = (rows[0], rows[1:]) if rows else (list(LOG_COLUMNS), [])
    kept = [row for row in body if row and row[0].isdigit() and int(row[0]) <= last_step]
    lines = [",".join(header)] + [",".join(row) for row in kept]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def plot_losses(log_path: str | os.PathLike[str], png_path: str | os.PathLike[str], unit: str = "bits/dim") -> Path:
    """Plot the training loss (and validation NLL in ``unit``, if logged) of a ``log.csv`` into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in rows], lw=0.6, alpha=0.5, label="training loss")
    if len(rows) >= 20:
        window = max(len(rows) // 50, 5)
        losses = torch.tensor([r["loss"] for r in rows], dtype=torch.float64)
        smooth = losses.unfold(0, window, 1).mean(1).tolist()
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"moving average ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per dimension)")
    handles, labels = ax.get_legend_handles_labels()
    val = [(r["step"], r["val_bpd"]) for r in rows if r["val_bpd"] is not None]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), "o-", color="C3", label=f"validation {unit} (EMA weights)")
        ax2.set_ylabel(f"validation {unit}", color="C3")
        more_handles, more_labels = ax2.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="upper right", fontsize="small")
    ax.set_title(f"{Path(log_path).parent.name}")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path.with_name(png_path.name + ".tmp.png"), dpi=100)
    plt.close(fig)
    os.replace(png_path.with_name(png_path.name + ".tmp.png"), png_path)
    return png_path


class RunLog:
    """Rank 0's CSV log, flushed every row (so a killed run's log is complete up to its last step).

    Resuming at ``start_step`` first drops the rows after it (written after the checkpoint the run resumes from);
    with ``enabled=False`` (other ranks) nothing is written.
    """

    def __init__(self, path: Path, start_step: int, enabled: bool) -> None:
        self.path = path
        self.file = None
        if not enabled:
            return
        if start_step > 0:
            _truncate_log(path, start_step)
        new = start_step == 0 or not path.is_file()
        self.file = open(path, "w" if new else "a", newline="")  # noqa: SIM115 (closed by close())
        if new:
            self.file.write(",".join(LOG_COLUMNS) + "\n")

    def write(self, step: int, loss: float, lr: float, grad_norm: float, val_bpd: float | None, elapsed: float) -> None:
        """Append one row (see :data:`LOG_COLUMNS`)."""
        if self.file is None:
            return
        val = "" if val_bpd is None else repr(val_bpd)
        self.file.write(f"{step},{loss!r},{lr!r},{grad_norm!r},{val},{elapsed:.3f}\n")
        self.file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self.file is not None:
            self.file.close()
            self.file = None
