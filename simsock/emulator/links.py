"""Per-link state inside the virtual module: what is open, and its receive buffer.

A link is ``FREE``, ``CONNECTING`` (``AT+CIPOPEN`` sent, the bridge is
connecting or binding) or ``OPEN``. Its receive buffer outlives a close by the
peer: in buffer access mode the host may still read what arrived before the
close, until it has read it all or opens the link again (4.2).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Link", "LinkState"]


class LinkState(enum.Enum):
    """Where a link is in its life."""

    FREE = "free"
    CONNECTING = "connecting"
    OPEN = "open"


@dataclass(slots=True)
class Link:
    """One of the module's sockets (``<link_num>``)."""

    number: int
    state: LinkState = LinkState.FREE
    #: ``"TCP"`` or ``"UDP"``.
    kind: str = ""
    remote_host: str = ""
    remote_port: int = 0
    local_port: int = 0
    #: The server index that accepted this link, or -1 for a client (3.3 ``<index>``).
    server: int = -1
    #: Data received from the network that the host has not read yet (buffer mode).
    rx: bytearray = field(default_factory=bytearray)
    #: The bridge was told to stop reading this link's socket.
    reading_paused: bool = False
    #: Lengths of CIPSENDs handed to the bridge whose ``+CIPSEND:`` is not out yet.
    unconfirmed: deque[int] = field(default_factory=deque)
    #: ``AT+CIPACK`` counters (3.16).
    bytes_sent: int = 0
    bytes_acked: int = 0
    bytes_received: int = 0

    @property
    def is_open(self) -> bool:
        """The link carries data (connected TCP, or a bound UDP socket)."""
        return self.state is LinkState.OPEN

    def reset(self, *, keep_rx: bool = False) -> None:
        """Forget the connection; ``keep_rx`` keeps unread data readable after a peer close."""
        self.state = LinkState.FREE
        self.kind = ""
        self.remote_host = ""
        self.remote_port = 0
        self.local_port = 0
        self.server = -1
        if not keep_rx:
            self.rx.clear()
        self.reading_paused = False
        self.unconfirmed.clear()
        self.bytes_sent = self.bytes_acked = self.bytes_received = 0

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` from the receive buffer."""
        chunk = bytes(self.rx[:max_bytes])
        del self.rx[:max_bytes]
        return chunk
