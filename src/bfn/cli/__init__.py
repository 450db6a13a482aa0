"""The ``bfn`` command line: ``bfn train | sample | eval | demo`` (also ``python -m bfn``).

The CLI only parses arguments, prints the resolved settings (``--dry-run`` prints them and stops) and calls the
library (:mod:`bfn.training`, :meth:`bfn.BFN.from_pretrained`, :meth:`bfn.BFN.sample`). Run ``bfn COMMAND --help``
for every option. One module per concern: :mod:`~bfn.cli.parser` (the arguments and their help),
:mod:`~bfn.cli.train` (``train``, ``demo``), :mod:`~bfn.cli.sample`, :mod:`~bfn.cli.evaluate` (``eval``) and
:mod:`~bfn.cli.common`. Exit status: 0 on success, 2 for bad input (one line naming the flag, file or field), 1 when
a run diverges, 128 + the signal number when SIGINT/SIGTERM stopped training (after its checkpoint), 130 for any other
interrupt.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from bfn.cli.common import check_count, one_line
from bfn.cli.evaluate import cmd_eval
from bfn.cli.parser import build_parser
from bfn.cli.sample import cmd_sample
from bfn.cli.train import cmd_demo, cmd_train, train_config_from_args

__all__ = ["COMMANDS", "build_parser", "main", "train_config_from_args"]

COMMANDS: dict[str, Callable[..., int]] = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "demo": cmd_demo}
"""The function behind each command; it takes the parsed arguments and returns the exit status."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bfn`` console script; returns the exit status."""
    from bfn._checks import MissingExtraError, NonFiniteError
    from bfn.checkpoint import CheckpointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            import torch

            check_count(args.threads, "--threads")
            torch.set_num_threads(args.threads)
        return COMMANDS[args.command](args)
    except NonFiniteError as err:  # a run that diverged: not bad input
        print(f"bfn {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 1
    except (ValueError, CheckpointError, MissingExtraError, FileNotFoundError, IsADirectoryError) as err:
        print(f"bfn {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except (NotADirectoryError, PermissionError) as err:
        print(f"bfn {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bfn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
