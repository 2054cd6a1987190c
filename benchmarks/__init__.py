"""GPU and CPU benchmark scripts; results and the commands that made them are in docs/BENCHMARKS.md.

Run one from the repository root as a module, after `pip install -e .`:

    python -m benchmarks.attention --shapes 4680,32760
    python -m benchmarks.train_step --config shapes-t2v --batch 512

They share timing helpers (`benchmarks.timing`) and the attention benchmark's inputs and checks, so they
form a package of their own. It is not installed: it belongs to the repository, like `tests/`.
"""
from __future__ import annotations

import sys


def command_line(module: str, argv: list[str] | None) -> str:
    """The command a result records: `python -m MODULE ARGS`, ARGS being `argv` as given to the script's
    main(), else this process's arguments."""
    return " ".join(["python -m " + module, *(sys.argv[1:] if argv is None else argv)])

