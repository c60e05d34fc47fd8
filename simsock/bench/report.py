"""Benchmark results as JSON (everything), Markdown (the tables README shows) and a PNG chart."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["markdown", "write_reports"]

STEM = "latest"


def _baud(row: dict[str, Any]) -> str:
    baud = row.get("baud")
    return "unpaced" if baud is None else f"{baud:,}"


def _size(nbytes: int | None) -> str:
    if not nbytes:
        return ""
    if nbytes >= 1024 * 1024 and nbytes % (1024 * 1024) == 0:
        return f"{nbytes // (1024 * 1024)} MiB"
    return f"{nbytes // 1024} KiB"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _baseline_cell(row: dict[str, Any]) -> str:
    base = row.get("baseline")
    if not base:
        return "—"
    if row.get("baud") is None:
        return f"{base['payload_Bps'] / (1024 * 1024):.2f} MiB/s"
    return _pct(base["line_ratio"])


def _table(header: list[str], lines: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return [*out, ""]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown report: one table per kind of case."""
    out = [
        "# simsock benchmarks",
        "",
        f"{'Quick (CI smoke) run' if meta.get('quick') else 'Full run'}: "
        f"median of {meta.get('repeats')} runs per bulk case, "
        f"{meta.get('runtime_s', 0):.0f} s in all; Python {meta.get('python')}, "
        f"{platform.machine()}. C = baud / 10 bytes/s; U, D = bytes up / down the line; "
        "P = payload bytes. Formulas: `docs/benchmarks.md`.",
        "",
    ]
    lines = [r for r in rows if r["kind"] == "line"]
    if lines:
        out += ["## The virtual line", ""]
        out += _table(
            ["Baud", "C (B/s)", "Uplink", "Downlink (worst 1 s window)", "Idle credit", "Status"],
            [
                [
                    _baud(r),
                    f"{r['capacity_Bps']:,.0f}",
                    f"{r['uplink']['rate_Bps']:,.0f} ({r['uplink']['error']:+.2%})",
                    f"{r['downlink']['rate_Bps']:,.0f} (±{r['downlink']['worst_error']:.2%})",
                    ", ".join(
                        f"{k.removeprefix('after_').removesuffix('_s')} idle: {v * 1000:.1f} ms"
                        for k, v in r["idle_credit"].items()
                        if k.startswith("after_")
                    )
                    + f" (wire {r['idle_credit']['wire_s'] * 1000:.1f} ms)",
                    r["status"],
                ]
                for r in lines
            ],
        )
    bulk = [r for r in rows if r["kind"] == "throughput"]
    if bulk:
        out += [
            "## Throughput",
            "",
            "simsock and the bare baseline client (`simsock/bench/baseline.py`) on the same "
            "line in the same run. *socket*: the module unpaced behind the independent line "
            "relay (`simsock/bench/relay.py`, 4 KiB socket buffers); *pty*: the virtual "
            "module's own pacing. Loss = baseline ÷ line - simsock ÷ line, in points.",
            "",
        ]
        out += _table(
            [
                "Case",
                "Mode",
                "Baud",
                "Line",
                "Payload",
                "simsock ÷ line",
                "baseline ÷ line",
                "loss (pt)",
                "÷ framing ceiling",
                "Commands/s",
                "CPU s/MiB",
                "CPU % core",
                "Noise",
                "Target",
                "Status",
            ],
            [
                [
                    r["case"],
                    r["mode"],
                    _baud(r),
                    r.get("line", "pty"),
                    _size(r.get("payload_bytes")),
                    _pct(r.get("line_ratio")) or f"{r['payload_MiBps']:.2f} MiB/s",
                    _baseline_cell(r),
                    f"{r['loss_points']:+.1f}" if "loss_points" in r else "—",
                    _pct(r.get("framing_ratio")) or "—",
                    f"{r['commands_per_s']:,.0f}" if "commands_per_s" in r else "—",
                    f"{r['cpu_s_per_MiB']:.3f}" if "cpu_s_per_MiB" in r else "—",
                    _pct(r.get("cpu_core_fraction")) or "—",
                    f"±{r['noise'] / 2:.1%}" if "noise" in r else "—",
                    "; ".join(
                        x for x in (r.get("loss_target"), r.get("target"), r.get("cpu_target")) if x
                    )
                    or "—",
                    "; ".join(
                        x for x in (r.get("loss_status"), r.get("status"), r.get("cpu_status")) if x
                    )
                    or "—",
                ]
                for r in bulk
            ],
        )
        notes = [
            f"- {r['case']} ({r['mode']}, {_baud(r)}): {r['note']}" for r in bulk if r.get("note")
        ]
        out += [*notes, ""] if notes else []
    latency = [r for r in rows if r["kind"] == "latency"]
    if latency:
        out += [
            "## Small messages",
            "",
            "Median of one exchange at a time; *over wire* = median - wire time of its bytes. "
            "The baseline sends, then reads the answer, with the same commands.",
            "",
        ]
        out += _table(
            [
                "Case",
                "Mode",
                "Baud",
                "Module latency",
                "Median",
                "p99",
                "Wire time",
                "Over wire",
                "AT commands",
                "Baseline median (commands)",
                "Target",
                "Status",
            ],
            [
                [
                    r["case"],
                    r["mode"],
                    _baud(r),
                    f"{r['module_latency_s'] * 1000:.0f} ms",
                    f"{r['median_s'] * 1000:.1f} ms",
                    f"{r['p99_s'] * 1000:.1f} ms",
                    f"{r['wire_s'] * 1000:.1f} ms"
                    f" ({r['wire_bytes_up']} B up, {r['wire_bytes_down']} B down)",
                    f"{r['over_wire_s'] * 1000:.1f} ms",
                    f"{r['commands_per_exchange']:.1f}",
                    f"{r['baseline']['median_s'] * 1000:.1f} ms"
                    f" ({r['baseline']['commands_per_exchange']:.1f})",
                    r["target"],
                    r["status"],
                ]
                for r in latency
            ],
        )
    scale = [r for r in rows if r["kind"] == "scale"]
    if scale:
        out += ["## Many modems on one event loop", ""]
        out += _table(
            [
                "Modems",
                "Baud",
                "Payload each",
                "Aggregate B/s",
                "÷ line per modem",
                "Client CPU % core per modem",
                "CPU s/MiB",
                "Emulator CPU % core",
                "Target",
                "Status",
            ],
            [
                [
                    str(r["modems"]),
                    _baud(r),
                    _size(r["payload_bytes"] // r["modems"]),
                    f"{r['aggregate_Bps']:,.0f}",
                    _pct(r["line_ratio_per_modem"]),
                    _pct(r["cpu_core_fraction_per_modem"]),
                    f"{r['cpu_s_per_MiB']:.3f}",
                    _pct(r["emulator_cpu_core_fraction"]),
                    r.get("target", "—"),
                    r.get("status", "—"),
                ]
                for r in scale
            ],
        )
    return "\n".join(out)


def _chart(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    # Single-link paced cases: a download beside an upload can reach 200 % (full duplex).
    bars = [
        r
        for r in rows
        if r["kind"] == "throughput" and "line_ratio" in r and not r["case"].startswith("2 ")
    ]
    if not bars:
        return False
    labels = [f"{r['case']} {r['mode']}\n{_baud(r)} {r.get('line', 'pty')}" for r in bars]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(bars)), 4.8))
    xs = [float(i) for i in range(len(bars))]
    width = 0.38
    ax.bar(
        [x - width / 2 for x in xs], [r["line_ratio"] * 100 for r in bars], width, label="simsock"
    )
    based = [(x, r) for x, r in zip(xs, bars, strict=True) if r.get("baseline")]
    ax.bar(
        [x + width / 2 for x, _ in based],
        [r["baseline"]["line_ratio"] * 100 for _, r in based],
        width,
        label="bare AT baseline",
        color="tab:gray",
    )
    ax.scatter(
        xs,
        [r["line_ratio"] / r["framing_ratio"] * 100 for r in bars],
        marker="_",
        s=300,
        color="black",
        label="AT framing ceiling (U + D)",
    )
    ax.set_xticks(xs, labels, fontsize=6, rotation=45, ha="right")
    ax.set_ylabel("% of one direction of the line")
    ax.set_ylim(70, 105)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("simsock beside a bare AT client, virtual SIM7028 serial lines")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_reports(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> list[Path]:
    """Write ``latest.json``, ``latest.md`` and (with matplotlib) ``latest.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / f"{STEM}.json"
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, default=str) + "\n")
    written.append(path)
    path = out / f"{STEM}.md"
    path.write_text(markdown(rows, meta))
    written.append(path)
    path = out / f"{STEM}.png"
    if _chart(rows, path):
        written.append(path)
    return written
