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
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import simsock

from .cases import (
    Download,
    Peer,
    Run,
    Transfer,
    Upload,
    measure,
    median_run,
    request_response,
    spread,
)
from .line import BITS_PER_BYTE, check_line
from .report import write_reports

__all__ = ["Plan", "main", "run_benchmarks"]

MIB: Final = 1024 * 1024
KIB: Final = 1024
#: The two line rates of the issue (baud).
SLOW_BAUD: Final = 115_200
FAST_BAUD: Final = 921_600
#: Request/response message size (bytes).
RR_MESSAGE_BYTES: Final = 64
#: Module latency of the latency-sensitivity case (s).
RR_MODULE_LATENCY_S: Final = 0.010

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
#: Request/response: median ≤ this x wire time + one module latency.
RR_WIRE_FACTOR: Final = 1.2


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
    is_quick: bool = False

    @classmethod
    def full(cls, repeats: int = 3) -> Plan:
        """The published run: about four minutes."""
        return cls(
            bulk_slow=64 * KIB,
            bulk_fast=1 * MIB,
            bulk_unpaced=8 * MIB,
            two_links=256 * KIB,
            scale_each=128 * KIB,
            scale_counts=(1, 4, 16),
            rr_count=100,
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
            scale_each=8 * KIB,
            scale_counts=(1, 2),
            rr_count=5,
            repeats=1,
            line_seconds=0.0,
            bauds=(FAST_BAUD,),
            is_quick=True,
        )

    def bulk(self, baud: int | None) -> int:
        """The bulk payload at ``baud``."""
        if baud is None:
            return self.bulk_unpaced
        return self.bulk_slow if baud == SLOW_BAUD else self.bulk_fast


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def capacity(baud: int | None) -> float | None:
    """C: bytes per second one direction of the line carries (8N1), ``None`` unpaced."""
    return None if baud is None else baud / BITS_PER_BYTE


def throughput_row(
    case: str, mode: str, baud: int | None, runs: list[Run], *, target: float | None, note: str = ""
) -> dict[str, Any]:
    """The figures of a bulk case from its repeats (the median-time run; noise over all)."""
    run = median_run(runs)
    rate = run.payload_bytes / run.elapsed_s
    cap = capacity(baud)
    wire = run.up_bytes + run.down_bytes
    row: dict[str, Any] = {
        "kind": "throughput",
        "case": case,
        "mode": mode,
        "baud": baud,
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
    return row


async def _repeat(plan: Plan, once: Callable[[], Awaitable[Run]]) -> list[Run]:
    return [await once() for _ in range(plan.repeats)]


async def bulk_cases(plan: Plan, baud: int | None, rows: list[dict[str, Any]]) -> None:
    """Download and upload in buffer-access, direct-push and transparent mode at ``baud``."""
    size = plan.bulk(baud)
    if size == 0:
        return
    async with Peer(baud) as peer:
        for mode in ("buffer", "push", "transparent"):
            transparent = mode == "transparent"
            rx_mode = "buffer" if transparent else mode
            opened = simsock.open_modem(peer.urls[0], rx_mode=rx_mode, transparent=transparent)
            async with opened as modem:
                for case, kind, port in (
                    ("download", Download, "source"),
                    ("upload", Upload, "sink"),
                ):
                    _progress(f"{case} {mode} {baud or 'unpaced'}: {size} bytes")

                    def once(kind: type[Transfer] = kind, port: str = port) -> Awaitable[Run]:
                        return measure([modem], [kind(modem, peer.ports[port], size, 7)])

                    # Uploading is the same code in both receive modes: one run suffices.
                    # (Transparent mode: open and close, unmetered, each cost a +++ escape.)
                    same = case == "upload" and mode == "push"
                    runs = [await once()] if same else await _repeat(plan, once)
                    target = TARGETS.get((case, mode, baud)) if baud is not None else None
                    row = throughput_row(case, mode, baud, runs, target=target)
                    if baud is None and mode == "buffer":
                        mibps = row["payload_MiBps"]
                        row["target"] = f"≥ {UNPACED_TARGET_MIBPS:.0f} MiB/s"
                        row["status"] = "pass" if mibps >= UNPACED_TARGET_MIBPS else "FAIL"
                    if baud == FAST_BAUD and case == "download" and mode == "buffer":
                        row["cpu_target"] = f"CPU < {CPU_TARGET:.0%} of a core"
                        row["cpu_status"] = (
                            "pass" if row["cpu_core_fraction"] < CPU_TARGET else "FAIL"
                        )
                    rows.append(row)


async def two_link_cases(plan: Plan, rows: list[dict[str, Any]]) -> None:
    """Both links at once on the fast line: two downloads, and a download beside an upload."""
    baud = FAST_BAUD
    size = plan.two_links
    async with Peer(baud) as peer, simsock.open_modem(peer.urls[0]) as modem:
        for name, kinds in (
            ("2 links: download + download", ((Download, "source"), (Download, "source"))),
            ("2 links: download + upload", ((Download, "source"), (Upload, "sink"))),
        ):
            _progress(f"{name} {baud}: {size} bytes each x {plan.repeats}")

            def once(kinds: Any = kinds) -> Awaitable[Run]:
                return measure([modem], [k(modem, peer.ports[p], size, 9) for k, p in kinds])

            runs = await _repeat(plan, once)
            row = throughput_row(name, "buffer", baud, runs, target=None)
            seconds = row["extra"].get("seconds", [])
            if len(seconds) == 2:
                row["note"] = f"per-link time {seconds[0]:.2f} s / {seconds[1]:.2f} s"
            rows.append(row)


async def rr_cases(plan: Plan, rows: list[dict[str, Any]]) -> None:
    """64-byte request/response: median and p99 against the wire time of its bytes."""
    settings = [(b, "buffer", 0.0) for b in plan.bauds]
    settings += [(FAST_BAUD, "push", 0.0)]
    settings += [(FAST_BAUD, mode, RR_MODULE_LATENCY_S) for mode in ("buffer", "push")]
    if plan.is_quick:
        settings = settings[:1]
    for baud, mode, latency in settings:
        _progress(f"request/response {mode} {baud} latency {latency}: x {plan.rr_count}")
        async with (
            Peer(baud, latency_s=latency) as peer,
            simsock.open_modem(peer.urls[0], rx_mode=mode) as modem,
        ):
            exact, times, (up, down) = await request_response(
                modem, peer.ports["echo"], RR_MESSAGE_BYTES, plan.rr_count
            )
        cap = capacity(baud)
        assert cap is not None
        wire = (up + down) / cap
        median = statistics.median(times)
        p99 = sorted(times)[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        limit = RR_WIRE_FACTOR * wire + latency
        rows.append(
            {
                "kind": "latency",
                "case": f"request/response {RR_MESSAGE_BYTES} B",
                "mode": mode,
                "baud": baud,
                "module_latency_s": latency,
                "count": len(times),
                "median_s": median,
                "p99_s": p99,
                "wire_bytes_up": up,
                "wire_bytes_down": down,
                "wire_s": wire,
                "median_over_wire": median / wire,
                "exact": exact,
                "formula": "wire = (U + D) / C per message",
                "target": f"median ≤ {RR_WIRE_FACTOR} x wire + latency = {limit * 1000:.1f} ms",
                "status": "pass" if median <= limit else "FAIL",
            }
        )


async def scale_cases(plan: Plan, rows: list[dict[str, Any]]) -> None:
    """N modems driven from this one event loop, each downloading on the fast line."""
    baud = FAST_BAUD
    top = max(plan.scale_counts)
    async with Peer(baud, count=top) as peer, contextlib.AsyncExitStack() as stack:
        modems = [await stack.enter_async_context(simsock.open_modem(u)) for u in peer.urls]
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
        ("latency", lambda: rr_cases(plan, rows)),
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
        help="line, bulk, bulk-115200, bulk-921600, two-links, latency, unpaced, scale",
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
    for path in paths:
        _progress(f"wrote {path}")
    failed = [r for r in rows if r.get("exact") is False]
    if failed:
        _progress(f"NOT BYTE-EXACT: {[r['case'] for r in failed]}")
        return 1
    return 0
