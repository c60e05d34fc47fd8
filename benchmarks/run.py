"""Run simsock's benchmarks: ``python benchmarks/run.py [--quick] [--only GROUP] [--out DIR]``.

The harness lives in :mod:`simsock.bench` (also ``simsock bench``); results go
to ``benchmarks/results/latest.{json,md,png}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simsock.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
