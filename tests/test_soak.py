"""Soak, bounded for CI: 12 MiB through the hostile virtual SIM7028 with faults between transfers.

The code is ``benchmarks/soak.py`` (run it for as long as you like with
``--minutes``). The seed is printed; set ``SIMSOCK_SOAK_SEED`` to replay a run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SOAK_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
#: Payload moved intact, both directions together (bytes).
TOTAL_BYTES = 12 * 1024 * 1024
#: Faults that cost a command timeout each: one of each slow kind, no more.
SLOW_FAULT_CAP = 3


def load_soak() -> ModuleType:
    """``benchmarks/soak.py`` as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("simsock_soak", SOAK_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)
async def test_soak_nothing_lost_nothing_hangs() -> None:
    soak = load_soak()
    seed = soak.seed_from_env()
    print(f"\nsoak seed {seed}: replay with {soak.SEED_ENV}={seed}")
    summary = await soak.soak(
        seed,
        total_bytes=TOTAL_BYTES,
        during_rate=0.0,  # faults strike between transfers
        kinds=soak.CI_KINDS,
        slow_fault_cap=SLOW_FAULT_CAP,
        log=lambda line: None,
    )
    print(soak.format_summary(summary))
    assert summary.violations == [], f"seed {seed}: {summary.violations}"
    assert summary.bytes_moved >= TOTAL_BYTES
    assert summary.clean_transfers > 0
    # the first fault rounds go through every kind once
    assert set(summary.faults) == set(soak.CI_KINDS), f"seed {seed}: {summary.faults}"
