"""``LinkDatagramTransport``: an ``asyncio.DatagramTransport`` over a UDP link (3.3, 3.4, 4.1).

In direct-push mode (``open_modem(..., rx_mode="push")``) each pushed block
is one datagram and ``RECV FROM:`` names its sender (4.1). In buffer-access
mode the module does not say who sent what, so simsock serves only a
*connected* endpoint there (``remote_addr`` given), and takes each
``AT+CIPRXGET=2,<link>,1500`` read as one datagram from that peer. That is
the note's 3.3.2 flow, and it assumes a module that keeps datagrams apart in
its buffer, as the virtual SIM7028 does; a module that merged them would
deliver two datagrams as one. Unconnected UDP in buffer mode is refused with
``EOPNOTSUPP``, rather than guessing an address.

A connected endpoint, like a connected socket, receives only its peer's
datagrams: in push mode the others are dropped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

from ..at import commands as at
from ..at.link import Link
from ..driver.driver import Driver
from .endpoint import LinkEndpoint

__all__ = ["LinkDatagramTransport"]

logger = logging.getLogger("simsock.sockets")

#: asyncio's high-water default for datagram transports.
DEFAULT_HIGH_WATER_BYTES = 64 * 1024


class LinkDatagramTransport(LinkEndpoint, asyncio.DatagramTransport):
    """A UDP link as an asyncio datagram transport."""

    def __init__(
        self,
        driver: Driver,
        link: Link,
        protocol: asyncio.DatagramProtocol,
        remote_addr: tuple[str, int] | None,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(driver, link, protocol, extra)
        self._remote = remote_addr
        self._protocol_paused = False
        self._high_water = DEFAULT_HIGH_WATER_BYTES
        self._low_water = DEFAULT_HIGH_WATER_BYTES // 4
        try:
            protocol.connection_made(self)
        except Exception as exc:
            logger.exception("connection_made raised")
            self._force_close(exc)
        self._attach()

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Queue one datagram for ``addr`` (an IP literal and port), or for ``remote_addr``.

        A datagram above 1500 bytes (the largest ``AT+CIPSEND``) is reported to
        ``error_received`` as ``OSError(EMSGSIZE)``, as a socket transport would.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._remote is not None:
            if addr not in (None, self._remote):
                raise ValueError(f"Invalid address: must be None or {self._remote}")
            addr = self._remote
        if addr is None:
            raise ValueError("a destination address is required (no remote_addr)")
        host, port = addr[0], addr[1]
        literal = at.ip_literal(host) if isinstance(host, str) else None
        if literal is None:
            raise ValueError(f"UDP destinations must be IP addresses, not {host!r}")
        at.check_port(port)
        if self._closing or self._lost:
            logger.warning("sendto() on a closed datagram transport ignored")
            return
        if len(data) > at.MAX_SEND_BYTES:
            exc = OSError(errno.EMSGSIZE, f"datagram of {len(data)} bytes > {at.MAX_SEND_BYTES}")
            self._protocol.error_received(exc)
            return
        if not data:
            return  # the module cannot send an empty datagram (lengths are 1-1500)
        self._driver.send_datagram(self._link, bytes(data), (str(literal), port))
        if not self._protocol_paused and self._link.queued > self._high_water:
            self._protocol_paused = True
            try:
                self._protocol.pause_writing()
            except Exception:
                logger.exception("pause_writing raised")

    def link_datagram(self, data: bytes, address: tuple[str, int]) -> None:
        """(driver) One datagram from ``address``; nothing after ``close()``."""
        if self._lost or self._closing:
            return
        try:
            self._protocol.datagram_received(data, address)
        except Exception as exc:
            logger.exception("datagram_received raised")
            self._force_close(exc)

    def link_data(self, data: bytes) -> None:
        """(driver) Unused for UDP: every delivery carries an address."""
        self.link_datagram(data, self._link.peer)

    def link_eof(self) -> None:
        """(driver) UDP has no end of stream."""

    def link_sent(self) -> None:
        """(driver) The module took a datagram."""
        if self._protocol_paused and self._link.queued <= self._low_water:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except Exception:
                logger.exception("resume_writing raised")

    def get_write_buffer_size(self) -> int:
        """Bytes of datagrams queued."""
        return 0 if self._lost else self._link.queued
