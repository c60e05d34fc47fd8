"""UDP ASSOCIATE (RFC 1928 §7): a host UDP socket for the client, module endpoints beyond.

With a push-mode modem, one unconnected module endpoint carries every
destination and replies name their sender. With a buffer-mode modem the
module does not say who sent a datagram, so each destination gets its own
connected endpoint (a link) when the client first sends to it; a third
destination waits for a link like a CONNECT, and its datagrams are dropped
if none frees up. Datagrams with FRAG != 0 are dropped, and so are datagrams
from any address but the client's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import socks5
from .linkwait import open_with_link_wait
from .record import ConnectionRecord, hostport
from .socks5 import Socks5Error

if TYPE_CHECKING:
    from ..sockets.modem import Modem

__all__ = ["UDP_PENDING_DATAGRAMS", "UdpAssociation"]

logger = logging.getLogger("simsock.proxy")

#: Datagrams held for a destination while its link opens (buffer mode).
UDP_PENDING_DATAGRAMS: Final = 16


def _send(transport: asyncio.DatagramTransport, data: bytes, addr: Any) -> None:
    """``sendto``, with a destination the module refuses (port 0, a bad name) dropped."""
    try:
        transport.sendto(data, addr)
    except (ValueError, TypeError) as exc:
        logger.debug("UDP to %s dropped: %s", addr, exc)


class _Relay(asyncio.DatagramProtocol):
    """Hands an endpoint's datagrams (and errors) to its association."""

    def __init__(self, receive: Callable[[bytes, Any], None]) -> None:
        self._receive = receive

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.info("UDP relay: %s", exc)


class UdpAssociation:
    """One UDP ASSOCIATE (§7): a host UDP socket for the client, module endpoints beyond.

    ``client`` is the client's IP and, when the request named it, its port:
    datagrams from anywhere else are dropped.
    """

    def __init__(
        self,
        modem: Modem,
        client: tuple[str, int | None],
        record: ConnectionRecord,
        link_wait_s: float,
    ) -> None:
        self.modem = modem
        self.record = record
        self.link_wait_s = link_wait_s
        self._client = client
        self._reply_to: Any = None  # the client's address, from its first datagram
        self._host: asyncio.DatagramTransport | None = None
        self._shared: asyncio.DatagramTransport | None = None  # push mode: all destinations
        self._routes: dict[tuple[str, int], asyncio.DatagramTransport | list[bytes]] = {}
        self._openers: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self, local_ip: str) -> tuple[str, int]:
        """Open the client's socket on ``local_ip`` (and, in push mode, the module endpoint);
        returns the address to tell the client."""
        loop = asyncio.get_running_loop()
        host, _ = await loop.create_datagram_endpoint(
            lambda: _Relay(self._from_client), local_addr=(local_ip, 0)
        )
        self._host = host
        if self.modem.rx_mode == "push":
            shared, _ = await open_with_link_wait(
                lambda: self.modem.create_datagram_endpoint(lambda: _Relay(self._from_module)),
                self.link_wait_s,
            )
            self._shared = shared
            self.record.link = shared.get_extra_info("link")
        address = host.get_extra_info("sockname")
        return str(address[0]), int(address[1])

    def close(self) -> None:
        """End the association: every socket and link it holds."""
        self._closed = True
        for task in self._openers:
            task.cancel()
        for route in self._routes.values():
            if isinstance(route, asyncio.DatagramTransport):
                route.close()
        self._routes.clear()
        for transport in (self._host, self._shared):
            if transport is not None:
                transport.close()

    def _from_client(self, data: bytes, addr: Any) -> None:
        ip, port = self._client
        if addr[0] != ip or (port is not None and addr[1] != port):
            logger.debug("UDP from %s, not the client %s: dropped", addr, self._client)
            return
        try:
            datagram = socks5.parse_udp_datagram(data)
        except Socks5Error as exc:
            logger.debug("UDP from %s dropped: %s", addr, exc)
            return
        if datagram.fragment != 0:
            logger.debug("UDP fragment %d from %s dropped", datagram.fragment, addr)
            return
        self._reply_to = addr
        self.record.bytes_up += len(datagram.data)
        destination = (datagram.host, datagram.port)
        if self._shared is not None:
            _send(self._shared, datagram.data, destination)
            return
        route = self._routes.get(destination)
        if isinstance(route, asyncio.DatagramTransport):
            _send(route, datagram.data, None)
        elif route is not None:
            if len(route) < UDP_PENDING_DATAGRAMS:
                route.append(datagram.data)
        else:
            self._routes[destination] = [datagram.data]
            task = asyncio.get_running_loop().create_task(self._open_route(destination))
            self._openers.add(task)
            task.add_done_callback(self._openers.discard)

    async def _open_route(self, destination: tuple[str, int]) -> None:
        """Buffer mode: a connected module endpoint for ``destination``; then what waited."""
        try:
            transport, _ = await open_with_link_wait(
                lambda: self.modem.create_datagram_endpoint(
                    lambda: _Relay(self._from_module), remote_addr=destination
                ),
                self.link_wait_s,
            )
        except (OSError, ValueError) as exc:
            logger.warning("UDP to %s: %s; its datagrams are dropped", hostport(destination), exc)
            self._routes.pop(destination, None)
            return
        if self._closed:
            transport.close()
            return
        waiting = self._routes.get(destination)
        self._routes[destination] = transport
        if self.record.link is None:
            self.record.link = transport.get_extra_info("link")
        for data in waiting if isinstance(waiting, list) else []:
            _send(transport, data, None)

    def _from_module(self, data: bytes, addr: Any) -> None:
        if self._reply_to is None or self._host is None or self._closed:
            return
        self.record.bytes_down += len(data)
        packet = socks5.build_udp_datagram(str(addr[0]), int(addr[1]), data)
        self._host.sendto(packet, self._reply_to)
