"""The benchmark plan and its driver: ``simsock bench`` / ``python benchmarks/run.py``.

Every case runs the library in this process against virtual SIM7028s in a
:mod:`.peer` process, so the CPU time measured here is the client's alone.
Figures per case (see ``docs/benchmarks.md`` for the derivations):

- payload rate P/T in bytes/s, with P the payload bytes and T the wall time;
- ÷ line: P/T ÷ C, with C = baud / 10 bytes/s (8N1) the capacity of one
  direction of the line;
- ÷ framing: P/T ÷ (C x P / (U + D)), with U and D the bytes that crossed the
  line up (host → module) and down during the transfer. With one command in
  flight every command byte and every response byte are serialised: the
  busy direction idles while the other one carries what it must wait for, so
  T ≥ (U + D) / C. (In push mode U is only the request that starts the
  download, so the ceiling is ≈ C x P / D.)
- commands per second, the client's CPU seconds per MiB of payload and its
  share of one core (CPU s ÷ wall s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import simsock

from .baseline import baseline_download, baseline_upload
from .cases import (
    Download,
    Peer,
    Run,
    Upload,
    measure,
    median_run,
    spread,
)
from .line import check_line
from .lines import LINES, capacity, open_line
from .report import markdown, write_reports
from .small import SMALL_LATENCIES_S, small_message_cases

__all__ = ["Plan", "main", "run_benchmarks"]

MIB: Final = 1024 * 1024
KIB: Final = 1024
#: The two line rates of the issue (baud).
SLOW_BAUD: Final = 115_200
FAST_BAUD: Final = 921_600
#: simsock may lose at most this much of the line (points) to the bare baseline.
BASELINE_LOSS_TARGET_POINTS: Final = 1.0

#: Line-capacity targets (fraction of C) from the issue, module latency zero.
TARGETS: Final[dict[tuple[str, str, int], float]] = {
    ("download", "buffer", SLOW_BAUD): 0.94,
    ("download", "buffer", FAST_BAUD): 0.90,
    ("upload", "buffer", SLOW_BAUD): 0.96,
    ("upload", "buffer", FAST_BAUD): 0.92,
    ("download", "push", SLOW_BAUD): 0.96,
    ("download", "push", FAST_BAUD): 0.96,
    ("upload", "push", SLOW_BAUD): 0.96,
    ("upload", "push", FAST_BAUD): 0.92,
    ("download", "transparent", SLOW_BAUD): 0.99,
    ("download", "transparent", FAST_BAUD): 0.99,
    ("upload", "transparent", SLOW_BAUD): 0.99,
    ("upload", "transparent", FAST_BAUD): 0.99,
}
#: Client CPU while moving a 921600-baud line's worth (fraction of one core).
CPU_TARGET: Final = 0.05
#: The stack's own ceiling, unpaced (MiB/s).
UNPACED_TARGET_MIBPS: Final = 5.0
#: Scale: client CPU per modem, each moving data at 115200 (fraction of one core).
SCALE_CPU_TARGET: Final = 0.02


@dataclass(frozen=True)
class Plan:
    """Sizes and counts; :meth:`full` is the published run, :meth:`quick` the CI smoke test."""

    bulk_slow: int
    bulk_fast: int
    bulk_unpaced: int
    two_links: int
    scale_each: int
    scale_counts: tuple[int, ...]
    rr_count: int
    repeats: int
    line_seconds: float
    bauds: tuple[int, ...]
    lines: tuple[str, ...] = LINES
    small_latencies: tuple[float, ...] = SMALL_LATENCIES_S
    is_quick: bool = False

    @classmethod
    def full(cls, repeats: int = 3) -> Plan:
        """The published run: about four minutes."""
        return cls(
            bulk_slow=64 * KIB,
            bulk_fast=512 * KIB,
            bulk_unpaced=8 * MIB,
            two_links=256 * KIB,
            scale_each=32 * KIB,
            scale_counts=(1, 4, 16),
            rr_count=30,
            repeats=repeats,
            line_seconds=2.0,
            bauds=(SLOW_BAUD, FAST_BAUD),
        )

    @classmethod
    def quick(cls) -> Plan:
        """A few seconds: small payloads, the fast line and unpaced; checks bytes, not speed."""
        return cls(
            bulk_slow=0,
            bulk_fast=16 * KIB,
            bulk_unpaced=256 * KIB,
            two_links=8 * KIB,
            scale_each=4 * KIB,
            scale_counts=(1, 2),
            rr_count=3,
            repeats=1,
            line_seconds=0.0,
            bauds=(FAST_BAUD,),
            lines=LINES,
            small_latencies=(0.0,),
            is_quick=True,
        )

    def bulk(self, baud: int | None) -> int:
        """The bulk payload at ``baud``."""
        if baud is None:
            return self.bulk_unpaced
        return self.bulk_slow if baud == SLOW_BAUD else self.bulk_fast


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def throughput_row(
    case: str,
    mode: str,
    baud: int | None,
    runs: list[Run],
    *,
    target: float | None,
    note: str = "",
    line: str = "pty",
    baseline: list[Run] | None = None,
) -> dict[str, Any]:
    """The figures of a bulk case from its repeats (the median-time run; noise over all),
    with the bare baseline's beside them when it ran."""
    run = median_run(runs)
    rate = run.payload_bytes / run.elapsed_s
    cap = capacity(baud)
    wire = run.up_bytes + run.down_bytes
    row: dict[str, Any] = {
        "kind": "throughput",
        "case": case,
        "mode": mode,
        "baud": baud,
        "line": line,
        "payload_bytes": run.payload_bytes,
        "repeats": len(runs),
        "elapsed_s": run.elapsed_s,
        "payload_Bps": rate,
        "payload_MiBps": rate / MIB,
        "up_bytes": run.up_bytes,
        "down_bytes": run.down_bytes,
        "commands": run.commands,
        "commands_per_s": run.commands / run.elapsed_s,
        "cpu_s": run.cpu_s,
        "cpu_s_per_MiB": run.cpu_s / (run.payload_bytes / MIB),
        "cpu_core_fraction": run.cpu_s / run.elapsed_s,
        "noise": spread([r.payload_bytes / r.elapsed_s for r in runs]),
        "exact": all(r.exact for r in runs),
        "formula": "ceiling = C x P / (U + D)",
        "note": note,
        "extra": run.extra,
    }
    if cap is not None:
        ceiling = cap * run.payload_bytes / wire
        row |= {
            "capacity_Bps": cap,
            "line_ratio": rate / cap,
            "framing_ceiling_Bps": ceiling,
            "framing_ratio": rate / ceiling,
        }
    if target is not None:
        row["target"] = f"÷ line ≥ {target:.2f}"
        row["status"] = "pass" if row.get("line_ratio", 0.0) >= target else "FAIL"
    if baseline:
        base = median_run(baseline)
        base_rate = base.payload_bytes / base.elapsed_s
        row["baseline"] = {
            "payload_Bps": base_rate,
            "commands": base.commands,
            "cpu_s_per_MiB": base.cpu_s / (base.payload_bytes / MIB),
            "noise": spread([r.payload_bytes / r.elapsed_s for r in baseline]),
            "exact": all(r.exact for r in baseline),
            "up_bytes": base.up_bytes,
            "down_bytes": base.down_bytes,
        }
        row["exact"] = row["exact"] and row["baseline"]["exact"]
        # The loss: how much of the line (or of the baseline's rate, unpaced) simsock's
        # layers cost against a bare client on the same line in the same run.
        reference = cap if cap is not None else base_rate
        row["baseline"]["line_ratio"] = base_rate / reference
        row["loss_points"] = (base_rate - rate) / reference * 100
        row["loss_target"] = f"loss ≤ {BASELINE_LOSS_TARGET_POINTS:g} pt"
        row["loss_status"] = "pass" if row["loss_points"] <= BASELINE_LOSS_TARGET_POINTS else "FAIL"
    return row


async def _repeat(plan: Plan, once: Callable[[], Awaitable[Run]]) -> list[Run]:
    return [await once() for _ in range(plan.repeats)]


async def bulk_cases(plan: Plan, baud: int | None, rows: list[dict[str, Any]]) -> None:
    """Download and upload in buffer-access, direct-push and transparent mode at ``baud``,
    on each line, with the bare baseline run beside simsock (alternately) in each case."""
    size = plan.bulk(baud)
    if size == 0:
        return
    for line in plan.lines:
        async with open_line(baud, line) as (urls, ports, _):
            for mode in ("buffer", "push", "transparent"):
                await _bulk_mode(plan, baud, line, mode, urls[0], ports, size, rows)


async def _bulk_mode(
    plan: Plan,
    baud: int | None,
    line: str,
    mode: str,
    url: str,
    ports: dict[str, int],
    size: int,
    rows: list[dict[str, Any]],
) -> None:
    transparent = mode == "transparent"
    rx_mode = "buffer" if transparent else mode
    for case, kind, port, bare in (
        ("download", Download, "source", baseline_download),
        ("upload", Upload, "sink", baseline_upload),
    ):
        _progress(f"{case} {mode} {baud or 'unpaced'} on {line}: {size} bytes x {plan.repeats}")
        runs: list[Run] = []
        base: list[Run] = []
        for _ in range(plan.repeats):
            # (Transparent mode: open and close, unmetered, each cost a +++ escape.)
            opened = simsock.open_modem(url, rx_mode=rx_mode, transparent=transparent)
            async with opened as modem:
                runs.append(await measure([modem], [kind(modem, ports[port], size, 7)]))
            if not transparent:  # a raw pipe has no AT layer for simsock to lose against
                base.append(await bare(url, baud, rx_mode, ports[port], size))
        target = TARGETS.get((case, mode, baud)) if baud is not None else None
        row = throughput_row(case, mode, baud, runs, target=target, line=line, baseline=base)
        if baud is None and mode == "buffer":
            mibps = row["payload_MiBps"]
            row["target"] = f"≥ {UNPACED_TARGET_MIBPS:.0f} MiB/s"
            row["status"] = "pass" if mibps >= UNPACED_TARGET_MIBPS else "FAIL"
        if baud == FAST_BAUD and case == "download" and mode == "buffer":
            row["cpu_target"] = f"CPU < {CPU_TARGET:.0%} of a core"
            row["cpu_status"] = "pass" if row["cpu_core_fraction"] < CPU_TARGET else "FAIL"
        rows.append(row)


async def two_link_cases(plan: Plan, rows: list[dict[str, Any]]) -> None:
    """Both links at once on the fast line: two downloads, and a download beside an upload."""
    baud = FAST_BAUD
    size = plan.two_links
    line = plan.lines[0]
    async with (
        open_line(baud, line) as (urls, ports, _),
        simsock.open_modem(urls[0]) as modem,
    ):
        for name, kinds in (
            ("2 links: download + download", ((Download, "source"), (Download, "source"))),
            ("2 links: download + upload", ((Download, "source"), (Upload, "sink"))),
        ):
            _progress(f"{name} {baud}: {size} bytes each x {plan.repeats}")

            def once(kinds: Any = kinds) -> Awaitable[Run]:
                return measure([modem], [k(modem, ports[p], size, 9) for k, p in kinds])

            runs = await _repeat(plan, once)
            row = throughput_row(name, "buffer", baud, runs, target=None, line=line)
            seconds = row["extra"].get("seconds", [])
            if len(seconds) == 2:
                row["note"] = f"per-link time {seconds[0]:.2f} s / {seconds[1]:.2f} s"
            rows.append(row)


async def scale_cases(plan: Plan, rows: list[dict[str, Any]]) -> None:
    """N modems driven from this one event loop, each downloading at 115200 (the IoT
    rate; the modems' own pacing, so that 16 lines cost one peer process)."""
    baud = SLOW_BAUD
    top = max(plan.scale_counts)
    async with Peer(baud, count=top) as peer, contextlib.AsyncExitStack() as stack:
        modems = [
            await stack.enter_async_context(simsock.open_modem(u, baudrate=baud)) for u in peer.urls
        ]
        for count in plan.scale_counts:
            _progress(f"scale: {count} modems x {plan.scale_each} bytes")
            used = modems[:count]
            before = await peer.stats()
            run = await measure(
                used, [Download(m, peer.ports["source"], plan.scale_each, 11) for m in used]
            )
            after = await peer.stats()
            cap = capacity(baud)
            assert cap is not None
            rows.append(
                {
                    "kind": "scale",
                    "case": f"{count} modems",
                    "mode": "buffer",
                    "baud": baud,
                    "modems": count,
                    "payload_bytes": run.payload_bytes,
                    "elapsed_s": run.elapsed_s,
                    "aggregate_Bps": run.payload_bytes / run.elapsed_s,
                    "line_ratio_per_modem": run.payload_bytes / run.elapsed_s / count / cap,
                    "cpu_s": run.cpu_s,
                    "cpu_core_fraction_per_modem": run.cpu_s / run.elapsed_s / count,
                    "target": f"CPU < {SCALE_CPU_TARGET:.0%} of a core per modem",
                    "status": "pass"
                    if run.cpu_s / run.elapsed_s / count < SCALE_CPU_TARGET
                    else "FAIL",
                    "cpu_s_per_MiB": run.cpu_s / (run.payload_bytes / MIB),
                    "emulator_cpu_core_fraction": (after["cpu_s"] - before["cpu_s"])
                    / run.elapsed_s,
                    "exact": run.exact,
                }
            )


async def line_cases(plan: Plan, rows: list[dict[str, Any]]) -> None:
    """The emulator's line pacing, measured with raw bytes (see :mod:`.line`)."""
    if plan.line_seconds <= 0:
        return
    for baud in plan.bauds:
        _progress(f"line pacing check at {baud}")
        async with Peer(baud) as peer:
            result = await check_line(peer.urls[0], baud, peer.ports["blast"], plan.line_seconds)
        worst = max(abs(result["uplink"]["error"]), result["downlink"]["worst_error"])
        credit = result["idle_credit"]
        short = min(v for k, v in credit.items() if k.startswith("after_"))
        rows.append(
            {
                "kind": "line",
                "case": "line pacing",
                "baud": baud,
                **result,
                "target": "each way within 1 % of C over every second; no idle credit",
                "status": "pass" if worst <= 0.01 and short >= credit["wire_s"] else "FAIL",
            }
        )


async def run_benchmarks(plan: Plan, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Run every group of the plan (or those in ``only``); the result rows."""
    rows: list[dict[str, Any]] = []
    groups: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("line", lambda: line_cases(plan, rows)),
        *[(f"bulk-{b}", lambda b=b: bulk_cases(plan, b, rows)) for b in plan.bauds],
        ("two-links", lambda: two_link_cases(plan, rows)),
        (
            "small",
            lambda: small_message_cases(
                SLOW_BAUD if not plan.is_quick else FAST_BAUD,
                plan.lines[0],
                plan.small_latencies,
                plan.rr_count,
                rows,
            ),
        ),
        ("unpaced", lambda: bulk_cases(plan, None, rows)),
        ("scale", lambda: scale_cases(plan, rows)),
    ]
    for name, group in groups:
        if only is None or name in only or name.split("-")[0] in only:
            await group()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``simsock bench``: run the benchmarks, write JSON, Markdown and (with matplotlib) PNG."""
    parser = argparse.ArgumentParser(
        prog="simsock bench",
        description="Throughput and latency of simsock over virtual SIM7028 serial lines.",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds; for CI")
    parser.add_argument("--repeats", type=int, default=3, help="runs per bulk case (median)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="output directory"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="GROUP",
        help="line, bulk, bulk-115200, bulk-921600, two-links, small, unpaced, scale",
    )
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full(args.repeats)
    started = time.perf_counter()
    rows = asyncio.run(run_benchmarks(plan, set(args.only) if args.only else None))
    meta = {
        "quick": plan.is_quick,
        "repeats": plan.repeats,
        "runtime_s": time.perf_counter() - started,
        "python": sys.version.split()[0],
        "simsock": simsock.__version__,
        "plan": plan.__dict__,
    }
    paths = write_reports(rows, meta, args.out)
    print(markdown(rows, meta))
    for path in paths:
        _progress(f"wrote {path}")
    if not any(path.suffix == ".png" for path in paths):
        _progress("no chart: matplotlib is not installed (pip install 'simsock[plot]')")
    failed = [r for r in rows if r.get("exact") is False]
    if failed:
        _progress(f"NOT BYTE-EXACT: {[r['case'] for r in failed]}")
        return 1
    return 0
