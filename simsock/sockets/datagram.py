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
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..at import commands as at
from ..at.link import Link
from ..driver.driver import Driver
from .dns import NameCache
from .endpoint import LinkEndpoint
from .link_socket import LinkSocket

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
        resolve: Callable[[str, int], Awaitable[str]] | None = None,
        names: NameCache | None = None,
    ) -> None:
        if "socket" not in extra:  # asyncio's datagram transports carry one (aiocoap reads it)
            sockname = extra.get("sockname") or ("0.0.0.0", 0)
            extra = {
                **extra,
                "socket": LinkSocket(
                    driver, link.number, sockname, remote_addr, kind=socket.SOCK_DGRAM
                ),
            }
        super().__init__(driver, link, protocol, extra)
        self._remote = remote_addr
        self._resolve = resolve
        self._names = names if names is not None else NameCache()
        #: Datagrams behind one whose name is being resolved (their order is kept).
        self._waiting: deque[tuple[bytes, str, int]] = deque()
        self._resolver: asyncio.Task[None] | None = None
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
        """Queue one datagram for ``addr``, or for ``remote_addr``.

        ``addr`` is an IP literal or a name and a port. A name is resolved by
        the module (``AT+CDNSGIP``, cached a minute); datagrams sent meanwhile
        wait behind it, in order. A name the module cannot resolve, or may not
        be sent (3.17), is reported to ``error_received`` as ``socket.gaierror``,
        and a datagram above 1500 bytes (the largest ``AT+CIPSEND``) as
        ``OSError(EMSGSIZE)``, as a socket transport would.
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
        if not isinstance(host, str):
            raise TypeError(f"a UDP destination host must be a str, not {type(host).__name__}")
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
        literal = at.ip_literal(host)
        address = str(literal) if literal is not None else self._names.get(host)
        if address is None or self._waiting:
            self._wait_for_name(bytes(data), host, port)
            return
        self._send(bytes(data), (address, port))

    def _wait_for_name(self, data: bytes, host: str, port: int) -> None:
        try:
            if at.ip_literal(host) is None:
                at.check_domain(host)  # never reaches the wire otherwise
        except ValueError as exc:
            self._error(socket.gaierror(socket.EAI_NONAME, str(exc)))
            return
        if self._resolve is None:
            self._error(socket.gaierror(socket.EAI_NONAME, f"cannot resolve {host!r} here"))
            return
        self._waiting.append((data, host, port))
        if self._resolver is None:
            self._resolver = self._loop.create_task(self._resolve_waiting())

    async def _resolve_waiting(self) -> None:
        """Send the waiting datagrams in order, resolving each name once."""
        try:
            while self._waiting and not self.is_closing():
                data, host, port = self._waiting[0]
                literal = at.ip_literal(host)
                address = str(literal) if literal is not None else self._names.get(host)
                if address is None:
                    assert self._resolve is not None
                    try:
                        address = await self._resolve(host, port)
                    except OSError as exc:
                        self._waiting.popleft()
                        self._error(exc)
                        continue
                    self._names.put(host, address)
                self._waiting.popleft()
                if not self.is_closing():
                    self._send(data, (address, port))
        finally:
            self._resolver = None
            if self.is_closing():
                self._waiting.clear()  # close() does not wait for the module's DNS

    def _error(self, exc: OSError) -> None:
        try:
            self._protocol.error_received(exc)
        except Exception:
            logger.exception("error_received raised")

    def _send(self, data: bytes, address: tuple[str, int]) -> None:
        self._driver.send_datagram(self._link, data, address)
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
        """Bytes of datagrams queued (those waiting for a name too)."""
        if self._lost:
            return 0
        return self._link.queued + sum(len(data) for data, _, _ in self._waiting)
