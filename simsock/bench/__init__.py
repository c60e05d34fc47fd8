"""Benchmarks of simsock over virtual SIM7028 serial lines (``simsock bench``).

:func:`main` is the command line; :mod:`.runner` holds the plan, :mod:`.cases`
the measured transfers, :mod:`.peer` the far end (emulators and servers, in
their own process), :mod:`.line` the raw checks of the line's pacing and
:mod:`.report` the JSON, Markdown and PNG output.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks (``simsock bench [--quick] [--only GROUP] [--out DIR]``); exit status.

    Imported lazily so ``python -m simsock.bench.peer`` loads nothing it does not use.
    """
    from .runner import main as run

    return run(argv)
