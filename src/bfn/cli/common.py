"""What every ``bfn`` command shares: ``KEY=VALUE`` options, the resolved-settings printout, count checks."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["check_count", "is_main_process", "key_values", "one_line", "parse_value", "print_json"]


def parse_value(text: str) -> Any:
    """A JSON value when ``text`` parses as one (numbers, true/false, lists), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def key_values(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` options as a dict (dashes in keys become underscores; values via :func:`parse_value`);
    ``ValueError`` naming the flag ``what`` for an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = parse_value(value)
    return out


def is_main_process() -> bool:
    """Whether this process prints (rank 0 under ``torchrun``, or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


def print_json(title: str, values: dict[str, Any], dry_run: bool = False) -> None:
    """The resolved settings: pure JSON on stdout for ``--dry-run`` (machine-readable), else under a title line."""
    if is_main_process():
        text = json.dumps(values, indent=2, default=str)
        print(text if dry_run else f"{title}:\n{text}", flush=True)


def check_count(value: int | None, flag: str, minimum: int = 1) -> None:
    """An integer flag's range (argparse has checked that it is an integer)."""
    if value is not None and value < minimum:
        raise ValueError(f"{flag} must be >= {minimum}, got {value}")


def one_line(err: BaseException) -> str:
    """An exception as one line: its message with newlines folded (file errors keep the file name)."""
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in str(err.strerror):
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err)
    return " ".join(text.split())
