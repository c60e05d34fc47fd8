"""What one proxied connection did: the record logged, and printed by ``--json``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ConnectionRecord", "hostport"]


@dataclass(slots=True)
class ConnectionRecord:
    """What one client connection did; logged, and given to ``on_record``, when it ends.

    ``bytes_up`` went from the client to the destination, ``bytes_down`` back
    (payload only; for UDP, the datagrams' data without SOCKS headers).
    """

    client: str
    command: str = "-"
    destination: str = "-"
    reply: int | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    link: int | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values."""
        return asdict(self)


def hostport(address: Any) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
