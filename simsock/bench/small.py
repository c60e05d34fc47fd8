"""Small messages, the IoT case: one exchange at a time, simsock beside the baseline.

Per exchange: the median and p99 time, the AT commands, the wire time of its
bytes and what is left over it, against "wire time + one module latency"
(push mode) or "+ two" (buffer mode, where the answer needs its own read).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from typing import Any, Final

import simsock

from .baseline import baseline_exchanges
from .cases import Exchanges, exchanges
from .lines import capacity, open_line
from .peer import PUBLISH_BYTES

__all__ = ["RR_MESSAGE_BYTES", "SMALL_LATENCIES_S", "small_message_cases"]

#: Request/response message size (bytes).
RR_MESSAGE_BYTES: Final = 64
#: Module latencies of the small-message cases (s).
SMALL_LATENCIES_S: Final = (0.0, 0.010, 0.050)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


#: The small-message exchanges: name, the ack server's port name, bytes out, bytes in.
SMALL_CASES: Final = (
    (f"request/response {RR_MESSAGE_BYTES} B", "echo", RR_MESSAGE_BYTES, RR_MESSAGE_BYTES),
    (f"publish {PUBLISH_BYTES} B + PUBACK", "ack", PUBLISH_BYTES, 4),
)


def _small_row(
    name: str, mode: str, baud: int, latency: float, line: str, ours: Exchanges, bare: Exchanges
) -> dict[str, Any]:
    cap = capacity(baud)
    assert cap is not None
    wire = (ours.up_bytes + ours.down_bytes) / cap
    median = statistics.median(ours.times)
    p99 = sorted(ours.times)[min(len(ours.times) - 1, round(0.99 * (len(ours.times) - 1)))]
    # Push: one command per exchange (AT+CIPSEND), so wire time plus one latency.
    # Buffer: the answer is read with a second command, so two latencies at most.
    latencies = 1 if mode == "push" else 2
    limit = wire + latencies * latency + SMALL_SLACK_S
    bare_median = statistics.median(bare.times)
    return {
        "kind": "latency",
        "case": name,
        "mode": mode,
        "baud": baud,
        "line": line,
        "module_latency_s": latency,
        "count": len(ours.times),
        "median_s": median,
        "p99_s": p99,
        "wire_bytes_up": round(ours.up_bytes),
        "wire_bytes_down": round(ours.down_bytes),
        "commands_per_exchange": ours.commands,
        "wire_s": wire,
        "over_wire_s": median - wire,
        "median_over_wire": median / wire,
        "baseline": {
            "median_s": bare_median,
            "commands_per_exchange": bare.commands,
            "over_wire_s": bare_median - wire,
            "exact": bare.exact,
        },
        "exact": ours.exact and bare.exact,
        "formula": "wire = (U + D) / C per exchange",
        "target": f"median ≤ wire + {latencies} x latency (+{SMALL_SLACK_S * 1000:.0f} ms)"
        f" = {limit * 1000:.1f} ms",
        "status": "pass" if median <= limit else "FAIL",
    }


#: Allowance on the small-message targets for the hops between processes (s).
SMALL_SLACK_S: Final = 0.002


async def small_message_cases(
    baud: int, line: str, latencies: Sequence[float], count: int, rows: list[dict[str, Any]]
) -> None:
    """The IoT case: 64-byte request/response and a publish with its PUBACK on ``line`` at
    ``baud``, at each module latency, buffer and push mode, simsock then the baseline."""
    for latency in latencies:
        async with open_line(baud, line, latency_s=latency) as (urls, ports, _):
            for mode in ("buffer", "push"):
                for name, port, out_bytes, in_bytes in SMALL_CASES:
                    progress(f"{name} {mode} {baud} latency {latency}: x {count}")
                    async with simsock.open_modem(urls[0], rx_mode=mode) as modem:
                        ours = await exchanges(modem, ports[port], out_bytes, in_bytes, count)
                    bare = await baseline_exchanges(
                        urls[0], baud, mode, ports[port], out_bytes, in_bytes, count
                    )
                    rows.append(_small_row(name, mode, baud, latency, line, ours, bare))
