"""UDP for blocking code: a connected ``SOCK_DGRAM`` socket relayed to a module UDP link.

``await udp_socket_for(modem, host, port)`` is the UDP form of
:func:`~simsock.ecosystem.socket_relay.socket_for`: one end of a
``socketpair(AF_UNIX, SOCK_DGRAM)``, one datagram for one datagram, boundaries
kept. A datagram from the link that the application's socket cannot take now
is dropped (and counted), as the kernel would; one from the application that
the module cannot send (over 1500 bytes) is refused by the link and counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from .socket_relay import RelayedSocket, SocketRelay, WriteGate

if TYPE_CHECKING:
    from ..sockets.datagram import LinkDatagramTransport
    from ..sockets.modem import Modem

__all__ = ["DATAGRAM_READ_BYTES", "udp_socket_for"]

logger = logging.getLogger("simsock.ecosystem")

#: Largest datagram read from the application: 64 KiB, the UDP maximum. The
#: module sends at most 1500 bytes (``AT+CIPSEND``); larger ones are refused
#: by the link with ``EMSGSIZE`` (logged, counted in ``refused_datagrams``).
DATAGRAM_READ_BYTES = 65536


class _DatagramSide(WriteGate, asyncio.DatagramProtocol):
    """The relay's protocol on a UDP link: datagrams straight to the application's socket."""

    def __init__(self, relay: _DatagramRelay) -> None:
        super().__init__()
        self._relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._relay._deliver(data)

    def error_received(self, exc: Exception) -> None:
        logger.warning("relayed datagram refused: %r", exc)
        self._relay.refused_datagrams += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()
        self._relay._lost(exc)


class _DatagramRelay(SocketRelay):
    """Relays a ``SOCK_DGRAM`` pair and a connected UDP link, datagram for datagram."""

    def __init__(self, inner: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(inner, loop)
        self._side = _DatagramSide(self)
        self._uplink: asyncio.Task[None] | None = None
        self._link: LinkDatagramTransport | None = None
        #: Datagrams from the link the application's socket had no room for.
        self.dropped_datagrams = 0
        #: Datagrams from the application the link refused (over 1500 bytes).
        self.refused_datagrams = 0

    @property
    def held_bytes(self) -> int:
        """Datagrams queued on the link (none are held for the application)."""
        link = self._link
        return 0 if link is None else link.get_write_buffer_size()

    async def open(self, modem: Modem, host: str, port: int) -> None:
        transport, _ = await modem.create_datagram_endpoint(
            lambda: self._side, remote_addr=(host, port)
        )
        self._link = transport
        self._set_transport(transport)
        self._uplink = self._spawn(self._to_link(transport), "uplink")

    def _deliver(self, data: bytes) -> None:
        try:
            self._inner.send(data)
        except BlockingIOError:
            self.dropped_datagrams += 1  # the application is not reading: UDP drops
        except OSError as exc:  # ECONNREFUSED: the application's end is closed
            logger.debug("relayed datagram socket gone: %r", exc)
            self._app_closed()

    def _app_closed(self) -> None:
        super()._app_closed()
        if self._uplink is not None:
            self._uplink.cancel()
        if self._transport is not None:
            self._transport.close()

    def _lost(self, exc: BaseException | None) -> None:
        if self._uplink is not None:
            self._uplink.cancel()
        super()._lost(exc)

    async def _to_link(self, transport: asyncio.DatagramTransport) -> None:
        while True:
            data = await self._loop.sock_recv(self._inner, DATAGRAM_READ_BYTES)
            transport.sendto(data)
            self._note_held()
            await self._side.drain()


async def udp_socket_for(modem: Modem, host: str, port: int) -> RelayedSocket:
    """A connected ``SOCK_DGRAM`` socket whose datagrams go through a module UDP link.

    ``send``/``recv`` on it move one datagram each, boundaries kept. The link
    is ``modem.create_datagram_endpoint(remote_addr=(host, port))`` (a name is
    resolved by the module), so only that peer's datagrams arrive. A datagram
    larger than 1500 bytes cannot leave the module and is dropped (logged).
    Closing the socket closes the link.
    """
    outer, inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    relay = _DatagramRelay(inner, asyncio.get_running_loop())
    sock = RelayedSocket._adopt(outer, relay)
    try:
        await relay.open(modem, host, port)
    except BaseException as exc:
        relay._fail(exc)
        sock.close()
        raise
    return sock
