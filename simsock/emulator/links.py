"""Per-link state inside the virtual module: what is open, and its receive buffer.

A link is ``FREE``, ``CONNECTING`` (``AT+CIPOPEN`` sent, the bridge is
connecting or binding) or ``OPEN``. Its receive buffer outlives a close by the
peer: in buffer access mode the host may still read what arrived before the
close, until it has read it all or opens the link again (4.2).

The buffer holds at most ``capacity`` bytes. A byte stream (TCP) never loses
data: what arrives while the buffer is full waits in ``backlog`` (it stands
for the bytes a real module's TCP window keeps in the network) and moves into
the buffer as the host reads. Datagrams (UDP) keep their boundaries: a read
never joins two, and one that does not fit is dropped, as UDP does.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DEFAULT_CAPACITY", "Address", "Datagram", "Link", "LinkState"]

#: Default receive buffer of a link (bytes).
DEFAULT_CAPACITY: Final = 64 * 1024

#: An IP address and port.
Address = tuple[str, int]


@dataclass(slots=True)
class Datagram:
    """Where one datagram's bytes are in a link's buffer: how many are left unread."""

    length: int
    sender: Address | None


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
    #: The most bytes ``rx`` holds.
    capacity: int = DEFAULT_CAPACITY
    #: The datagrams in ``rx``, oldest first (empty for a byte stream).
    datagrams: deque[Datagram] = field(default_factory=deque)
    #: Stream bytes that arrived while ``rx`` was full, oldest first.
    backlog: bytearray = field(default_factory=bytearray)
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
            self.datagrams.clear()
            self.backlog.clear()
        self.reading_paused = False
        self.unconfirmed.clear()
        self.bytes_sent = self.bytes_acked = self.bytes_received = 0

    @property
    def full(self) -> bool:
        """Nothing more fits: the bridge stops reading the socket (TCP)."""
        return len(self.rx) >= self.capacity or bool(self.backlog)

    def buffer_stream(self, data: bytes) -> None:
        """Keep stream bytes for the host; past ``capacity`` they wait in ``backlog``."""
        if not self.backlog:
            room = max(self.capacity - len(self.rx), 0)
            self.rx += data[:room]
            self.bytes_received += min(room, len(data))
            data = data[room:]
        self.backlog += data

    def buffer_datagram(self, data: bytes, sender: Address | None) -> bool:
        """Keep one datagram for the host; ``False`` (dropped) if it does not fit."""
        if len(self.rx) + len(data) > self.capacity:
            return False
        self.rx += data
        self.datagrams.append(Datagram(len(data), sender))
        self.bytes_received += len(data)
        return True

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` from the receive buffer.

        A datagram is never joined with the next: the read stops at its end. One
        longer than ``max_bytes`` is read in pieces, the rest staying first in
        line, as the note's reads of one 16-byte datagram show (3.3.2).
        Backlogged stream bytes move in as room is made.
        """
        if self.datagrams:
            head = self.datagrams[0]
            max_bytes = min(max_bytes, head.length)
            head.length -= max_bytes
            if not head.length:
                self.datagrams.popleft()
        chunk = bytes(self.rx[:max_bytes])
        del self.rx[:max_bytes]
        if self.backlog:
            moved = self.backlog[: self.capacity - len(self.rx)]
            del self.backlog[: len(moved)]
            self.rx += moved
            self.bytes_received += len(moved)
        return chunk

    def take_all(self) -> bytes:
        """Remove and return everything received, as one byte string."""
        data = bytes(self.rx + self.backlog)
        self.bytes_received += len(self.backlog)
        self.rx.clear()
        self.datagrams.clear()
        self.backlog.clear()
        return data

    def drain(self) -> Iterator[tuple[bytes, Address | None]]:
        """Remove everything received as units: each datagram with its sender, or the stream."""
        while self.datagrams:
            sender = self.datagrams[0].sender
            yield self.take(self.datagrams[0].length), sender
        if self.rx or self.backlog:
            yield self.take_all(), None
