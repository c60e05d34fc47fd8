"""The wire-level state of one module link (0-1): what to read, what to send, when to close.

A :class:`Link` is owned by the engine and driven by its scheduler; the
sockets layer attaches a :class:`LinkOwner` (the asyncio transport) that
receives data, end of stream and loss. Keeping the wire state here, apart from
the asyncio contract, lets the scheduler decide fairly what the module is asked
next without knowing about protocols.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from typing import Protocol, cast

__all__ = ["DatagramOwner", "Link", "LinkOwner", "LinkState"]

logger = logging.getLogger("simsock.modem.links")

#: Bytes sent and not yet confirmed by ``+CIPSEND:`` that a link may have:
#: two full ``AT+CIPSEND`` (3.4).
SEND_WINDOW_BYTES = 3000


class LinkOwner(Protocol):
    """What the engine tells the socket that owns a link."""

    def link_data(self, data: bytes) -> None:
        """Payload arrived, in order."""

    def link_eof(self) -> None:
        """The peer closed and every byte it sent has been delivered."""

    def link_sent(self) -> None:
        """The module confirmed a send: the write buffer shrank."""

    def link_lost(self, exc: BaseException | None) -> None:
        """The link is finished (closed, or failed with ``exc``); the number is free again."""


class DatagramOwner(LinkOwner, Protocol):
    """The owner of a UDP link also takes whole datagrams with their sender."""

    def link_datagram(self, data: bytes, address: tuple[str, int]) -> None:
        """One datagram arrived from ``address``."""


class LinkState(enum.Enum):
    """Where a link is in its life."""

    OPENING = "opening"  # AT+CIPOPEN sent, +CIPOPEN: <link>,0 not yet seen
    OPEN = "open"
    CLOSING = "closing"  # AT+CIPCLOSE sent
    CLOSED = "closed"


class Link:
    """One link's wire state; see the module docstring."""

    __slots__ = (
        "close_requested",
        "datagrams",
        "early",
        "eof_delivered",
        "number",
        "owner",
        "peer",
        "readable",
        "reading",
        "remote_closed",
        "remote_reason",
        "server",
        "state",
        "transparent",
        "tx",
        "udp",
        "unconfirmed",
    )

    def __init__(
        self, number: int, peer: tuple[str, int], *, udp: bool = False, server: int | None = None
    ) -> None:
        self.number = number
        self.peer = peer
        self.udp = udp
        self.transparent = False  # the raw pipe of transparent mode (2)
        self.server = server  # the module server that accepted this link, if any
        self.datagrams: deque[tuple[bytes, tuple[str, int]]] = deque()  # UDP sends
        self.owner: LinkOwner | None = None
        # What arrived between the module's "+CIPOPEN: <link>,0" (or "+CLIENT")
        # and the owner attaching: pushed data can come in the same chunk.
        self.early: list[tuple[bytes, tuple[str, int] | None]] = []
        self.state = LinkState.OPENING
        self.reading = True  # the protocol has not paused reading
        self.readable = False  # the module said data waits (+CIPRXGET: 1 or rest_len > 0)
        self.remote_closed = False  # +IPCLOSE seen
        self.remote_reason: int | None = None
        self.eof_delivered = False
        self.tx = bytearray()  # bytes written and not yet handed to AT+CIPSEND
        self.unconfirmed = 0  # bytes sent whose +CIPSEND: result has not come
        self.close_requested = False

    def __repr__(self) -> str:
        return (
            f"<Link {self.number} {self.state.value} peer={self.peer} tx={len(self.tx)}"
            f" unconfirmed={self.unconfirmed} readable={self.readable}>"
        )

    @property
    def active(self) -> bool:
        """Open or closing: the module still has this link."""
        return self.state in (LinkState.OPEN, LinkState.CLOSING)

    @property
    def alive(self) -> bool:
        """Not closed: data and closes for it are kept (it may still be opening)."""
        return self.state is not LinkState.CLOSED

    def attach(self, owner: LinkOwner) -> None:
        """Give the link its owner and hand it what arrived before it existed."""
        self.owner = owner
        early, self.early = self.early, []
        for data, address in early:
            self.deliver(data, address)
        if self.eof_delivered:
            owner.link_eof()

    def wants_read(self) -> bool:
        """Whether the scheduler should issue ``AT+CIPRXGET=2`` for this link now."""
        return (
            self.state is LinkState.OPEN
            and self.reading
            and not self.eof_delivered
            and (self.readable or self.remote_closed)
        )

    def wants_send(self) -> bool:
        """Whether the scheduler should issue ``AT+CIPSEND`` for this link now.

        At most :data:`SEND_WINDOW_BYTES` await their ``+CIPSEND:`` at a time,
        so the module's buffer never overflows into ``+CIPSEND: <link>,<n>,0``
        (3.4), while the next send need not wait for the previous one's
        confirmation line (the uplink would idle meanwhile).
        """
        return (
            self.state is LinkState.OPEN
            and bool(self.tx or self.datagrams)
            and self.unconfirmed < SEND_WINDOW_BYTES
            and not self.remote_closed
        )

    @property
    def queued(self) -> int:
        """Bytes written and not yet handed to the module."""
        return len(self.tx) + sum(len(d) for d, _ in self.datagrams)

    def wants_close(self) -> bool:
        """Whether the scheduler should issue ``AT+CIPCLOSE`` for this link now."""
        return (
            self.state is LinkState.OPEN
            and self.close_requested
            and not self.tx
            and not self.datagrams
            and self.unconfirmed == 0
        )

    def deliver(self, data: bytes, address: tuple[str, int] | None = None) -> None:
        """Hand received bytes (a datagram, for UDP) to the owner."""
        if self.owner is None:
            if self.state is LinkState.OPENING:
                self.early.append((data, address))
            return
        if self.udp:
            cast(DatagramOwner, self.owner).link_datagram(data, address or self.peer)
        elif data:
            self.owner.link_data(data)

    def deliver_eof(self) -> None:
        """Report end of stream once."""
        if not self.eof_delivered:
            self.eof_delivered = True
            self.readable = False
            if self.owner is not None:
                self.owner.link_eof()

    def finish(self, exc: BaseException | None) -> None:
        """The link is over: tell the owner once."""
        if self.state is LinkState.CLOSED:
            return
        self.state = LinkState.CLOSED
        self.tx.clear()
        self.datagrams.clear()
        owner, self.owner = self.owner, None
        if owner is not None:
            try:
                owner.link_lost(exc)
            except Exception:
                logger.exception("link %d: connection_lost raised", self.number)
