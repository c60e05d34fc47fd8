"""The benchmark harness in ``--quick`` mode: it runs, writes its reports, moves bytes exactly.

No timing is asserted: CI machines are too noisy for that; the published
figures come from a full run (``python benchmarks/run.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simsock.bench.runner import main


@pytest.mark.timeout(120)
def test_quick_run_writes_reports_and_transfers_are_byte_exact(tmp_path: Path) -> None:
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "latest.json").read_text())
    rows = report["results"]
    assert report["meta"]["quick"] is True
    kinds = {row["kind"] for row in rows}
    assert {"throughput", "latency", "scale"} <= kinds
    measured = rows
    assert not [row for row in rows if row.get("status") == "not implemented"]
    # every transfer's SHA-256 matched what the far end sent or received
    assert all(row["exact"] is True for row in measured)
    cases = {(row["case"], row["mode"]) for row in rows if row["kind"] == "throughput"}
    for case in ("download", "upload"):
        for mode in ("buffer", "push", "transparent"):
            assert (case, mode) in cases
    for row in measured:
        if row["kind"] == "throughput":
            assert row["payload_Bps"] > 0
            assert row["up_bytes"] > 0
            assert row["down_bytes"] > 0
            # transparent mode moves data with no AT command at all
            assert (row["commands"] > 0) == (row["mode"] != "transparent")
    table = (tmp_path / "latest.md").read_text()
    assert "| Case |" in table
    assert "download" in table
