"""One module link's wire state, and the table of its life (reference 3.3-3.6, 4.2).

A :class:`Link` belongs to the :class:`~simsock.at.session.Session`; the
asyncio layer only reads it (``queued``, ``unconfirmed``) and asks the
session to change it. Its life is an explicit state table:

========== ============================================ ===========================
state      entered when                                 left for
========== ============================================ ===========================
OPENING    ``AT+CIPOPEN`` is about to be written        OPEN (``+CIPOPEN: n,0``),
                                                        CLOSED (an error result),
                                                        CLOSING (no clear answer:
                                                        reclaimed)
OPEN       the module reported it connected, or         CLOSING (flushed after
           ``+CLIENT`` named it                         ``close()``, or failed),
                                                        PEER_CLOSED (``+IPCLOSE``)
PEER_CLOSED ``+IPCLOSE``: the module freed it; buffered CLOSED (read out and
           data stays readable (4.2)                    closed by the user, or a
                                                        ``+CLIENT`` reused it)
CLOSING    ``AT+CIPCLOSE`` written                      CLOSED (``+CIPCLOSE:``,
                                                        ``ERROR``, or its bound)
CLOSED     the number is free again                     (final)
========== ============================================ ===========================
"""

from __future__ import annotations

import enum
import itertools
from collections import deque

__all__ = ["SEND_WINDOW_BYTES", "Link", "LinkState"]

#: Bytes sent and not yet confirmed by ``+CIPSEND:`` that a link may have:
#: two full ``AT+CIPSEND`` (3.4).
SEND_WINDOW_BYTES = 3000

_serials = itertools.count(1)


class LinkState(enum.Enum):
    """Where a link is in its life (see the module docstring)."""

    OPENING = "opening"
    OPEN = "open"
    PEER_CLOSED = "peer-closed"
    CLOSING = "closing"
    CLOSED = "closed"


class Link:
    """One link's wire state; see the module docstring."""

    __slots__ = (
        "close_attempts",
        "close_requested",
        "datagrams",
        "eof_delivered",
        "failed",
        "lost_reported",
        "number",
        "peer",
        "readable",
        "reading",
        "remote_reason",
        "serial",
        "server",
        "state",
        "transparent",
        "tx",
        "udp",
        "unconfirmed",
    )

    def __init__(
        self,
        number: int,
        peer: tuple[str, int],
        *,
        udp: bool = False,
        server: int | None = None,
        state: LinkState = LinkState.OPENING,
    ) -> None:
        self.number = number
        #: Unique for each life of a link number: events name it, so a late
        #: event of an earlier life never reaches the next owner of the number.
        self.serial = next(_serials)
        self.peer = peer
        self.udp = udp
        self.server = server  # the module server that accepted this link, if any
        self.transparent = False  # the raw pipe of transparent mode (2)
        self.state = state
        self.reading = True  # the protocol has not paused reading
        self.readable = False  # the module said data waits (+CIPRXGET: 1, rest_len > 0)
        self.remote_reason: int | None = None  # +IPCLOSE reason
        self.eof_delivered = False
        self.close_requested = False
        self.close_attempts = 0  # AT+CIPCLOSE written without a clear answer
        self.failed = False  # an error was reported to the owner: nothing more is
        self.lost_reported = False
        self.tx = bytearray()  # stream bytes written and not yet handed to AT+CIPSEND
        self.datagrams: deque[tuple[bytes, tuple[str, int]]] = deque()  # UDP sends
        #: Sizes of the sends whose ``+CIPSEND:`` has not come, oldest first.
        self.unconfirmed: deque[int] = deque()

    def __repr__(self) -> str:
        return (
            f"<Link {self.number}#{self.serial} {self.state.value} peer={self.peer}"
            f" tx={len(self.tx)} unconfirmed={sum(self.unconfirmed)} readable={self.readable}>"
        )

    @property
    def queued(self) -> int:
        """Bytes written and not yet handed to the module."""
        return len(self.tx) + sum(len(d) for d, _ in self.datagrams)

    @property
    def unconfirmed_bytes(self) -> int:
        """Bytes handed to the module whose ``+CIPSEND:`` has not come."""
        return sum(self.unconfirmed)

    @property
    def connected_udp(self) -> bool:
        """A UDP link opened with a remote address: its peer is the only sender."""
        return self.udp and self.peer[1] != 0

    def wants_read(self, push_mode: bool) -> bool:
        """Whether ``AT+CIPRXGET=2`` should be issued for this link now."""
        return (
            not push_mode
            and self.state in (LinkState.OPEN, LinkState.PEER_CLOSED)
            and self.reading
            and not self.close_requested
            and not self.eof_delivered
            and not self.failed
            and (self.readable or self.state is LinkState.PEER_CLOSED)
        )

    def wants_send(self) -> bool:
        """Whether ``AT+CIPSEND`` should be issued for this link now.

        At most :data:`SEND_WINDOW_BYTES` await their ``+CIPSEND:`` at a time,
        so the module's buffer never overflows into ``+CIPSEND: <link>,<n>,0``
        (3.4), while the next send need not wait for the previous one's
        confirmation line.
        """
        return (
            self.state is LinkState.OPEN
            and not self.failed
            and bool(self.tx or self.datagrams)
            and self.unconfirmed_bytes < SEND_WINDOW_BYTES
        )

    def wants_close(self) -> bool:
        """Whether ``AT+CIPCLOSE`` should be issued for this link now."""
        return (
            self.state is LinkState.OPEN
            and self.close_requested
            and not self.tx
            and not self.datagrams
            and not self.unconfirmed
        )

    def pollable(self, push_mode: bool) -> bool:
        """A quiet link being read: ``AT+CIPRXGET=4`` finds data the module forgot to announce."""
        return (
            not push_mode
            and self.state is LinkState.OPEN
            and self.reading
            and not self.readable
            and not self.transparent
            and not self.close_requested
            and not self.failed
        )
