"""What crossed the port: the session's counters (benchmarks, the demo and tests read them)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """Counters of what crossed the port (for benchmarks and the demo)."""

    bytes_written: int = 0
    bytes_read: int = 0
    commands: int = 0
    payload_sent: int = 0
    payload_received: int = 0
    protocol_errors: int = 0
    unsolicited: int = 0
    trace: deque[tuple[str, str]] | None = field(default=None)
