"""anyio streams over the module: ``SocketStream``, ``SocketListener`` and UDP sockets.

The functions mirror ``anyio.connect_tcp``, ``anyio.create_tcp_listener``,
``anyio.create_udp_socket`` and ``anyio.create_connected_udp_socket`` but take
the :class:`~simsock.Modem` first. What they return are the anyio abstract
classes (:class:`anyio.abc.SocketStream` and friends), so code typed against
anyio's interfaces runs unchanged, and ``anyio.streams.tls.TLSStream`` wraps a
module stream like any other.

They run on anyio's asyncio backend only: the module is driven by asyncio
transports. Typed attributes come from the link, not from a host socket:
``family``, ``local_address``, ``local_port``, ``remote_address`` and
``remote_port`` are answered; ``raw_socket`` is not (there is none), and
``ModemAttribute.link`` gives the module's link number.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfStream,
    TypedAttributeSet,
    typed_attribute,
)
from anyio.abc import ConnectedUDPSocket, SocketAttribute, SocketListener, SocketStream, UDPSocket
from anyio.streams.tls import TLSStream

if TYPE_CHECKING:
    from ..sockets.modem import Modem
    from ..sockets.server import ModuleServer

__all__ = [
    "ModemAttribute",
    "ModemConnectedUDPSocket",
    "ModemSocketListener",
    "ModemSocketStream",
    "ModemUDPSocket",
    "connect_tcp",
    "create_connected_udp_socket",
    "create_tcp_listener",
    "create_udp_socket",
]

#: Bytes a stream buffers on the host before it stops reading the link (the
#: rest waits in the module); asyncio's StreamReader default limit.
READ_HIGH_WATER_BYTES = 64 * 1024
#: Datagrams a UDP socket keeps before dropping the oldest (anyio keeps 100).
UDP_QUEUE_DATAGRAMS = 100


class ModemAttribute(TypedAttributeSet):
    """simsock's own typed attributes on module streams."""

    #: the module's link number (0-1) of a stream or UDP socket
    link: int = typed_attribute()


def _family(address: tuple[Any, ...]) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET


def _link_attributes(transport: asyncio.BaseTransport) -> dict[Any, Callable[[], Any]]:
    """Typed attributes from a link transport's extra info (no ``raw_socket``)."""
    sockname = tuple(transport.get_extra_info("sockname") or ("0.0.0.0", 0))
    attributes: dict[Any, Callable[[], Any]] = {
        SocketAttribute.family: lambda: _family(sockname),
        SocketAttribute.local_address: lambda: (str(sockname[0]), int(sockname[1])),
        SocketAttribute.local_port: lambda: int(sockname[1]),
        ModemAttribute.link: lambda: int(transport.get_extra_info("link")),
    }
    peername = transport.get_extra_info("peername")
    if peername is not None:
        attributes[SocketAttribute.remote_address] = lambda: (str(peername[0]), int(peername[1]))
        attributes[SocketAttribute.remote_port] = lambda: int(peername[1])
    return attributes


class _StreamProtocol(asyncio.Protocol):
    """Buffers what the link delivers; stops reading the link above the high-water mark."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.exception: BaseException | None = None
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.readable.set()
        if len(self.buffer) > READ_HIGH_WATER_BYTES and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self.readable.set()
        return True  # the stream decides when to close, as anyio's does

    def connection_lost(self, exc: BaseException | None) -> None:
        self.exception = exc
        self.readable.set()
        self.writable.set()
        self.lost.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class ModemSocketStream(SocketStream):
    """A module TCP link as an anyio :class:`~anyio.abc.SocketStream`."""

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self._attributes = _link_attributes(transport)

    @property
    def transport(self) -> asyncio.Transport:
        """The underlying :class:`~simsock.LinkTransport`."""
        return self._transport

    @property
    def _raw_socket(self) -> socket.socket:
        raise anyio.TypedAttributeLookupError("a module link has no host socket")

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """Address attributes from the link (``raw_socket`` is absent: there is no socket)."""
        return self._attributes

    def is_readable(self) -> bool:
        """Whether ``receive()`` would return at once (data, end of stream or loss)."""
        protocol = self._protocol
        return bool(protocol.buffer) or protocol.eof or protocol.lost.is_set()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Bytes from the peer; ``EndOfStream`` once it closed and all were read."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        protocol = self._protocol
        if not protocol.buffer and not self._closed:
            if not (protocol.eof or protocol.lost.is_set()):
                protocol.readable.clear()
                await protocol.readable.wait()
        else:
            await anyio.lowlevel.checkpoint()
        if self._closed:
            raise ClosedResourceError
        if not protocol.buffer:
            if protocol.exception is not None:
                raise BrokenResourceError from protocol.exception
            raise EndOfStream
        chunk = bytes(protocol.buffer[:max_bytes])
        del protocol.buffer[:max_bytes]
        if len(protocol.buffer) <= READ_HIGH_WATER_BYTES // 4 and not protocol.lost.is_set():
            self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes) -> None:
        """Queue ``item`` and wait while the link's write buffer is above its high-water mark."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise ClosedResourceError
        if self._protocol.lost.is_set() or self._transport.is_closing():
            raise BrokenResourceError from self._protocol.exception
        self._transport.write(item)
        await self._protocol.writable.wait()
        if self._protocol.lost.is_set() and self._protocol.exception is not None:
            raise BrokenResourceError from self._protocol.exception

    async def send_eof(self) -> None:
        """The module cannot half-close a TCP link (no such AT command)."""
        raise NotImplementedError("the SIM7028 cannot half-close a TCP link")

    async def send_fds(self, message: bytes, fds: Any) -> None:
        """A module link cannot carry file descriptors."""
        raise NotImplementedError("file descriptors need a UNIX socket")

    async def receive_fds(self, msglen: int, maxfds: int) -> tuple[bytes, list[int]]:
        """A module link cannot carry file descriptors."""
        raise NotImplementedError("file descriptors need a UNIX socket")

    async def aclose(self) -> None:
        """Send what is queued, close the link and wait until the module freed it.

        Cancelled while waiting, the link is aborted instead, so the number is
        never left taken.
        """
        if self._closed:
            return
        self._closed = True
        self._protocol.readable.set()  # wake a pending receive() with ClosedResourceError
        self._transport.close()
        try:
            await self._protocol.lost.wait()
        except BaseException:
            self._transport.abort()
            raise


async def connect_tcp(
    modem: Modem,
    remote_host: str,
    remote_port: int,
    *,
    tls: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    tls_standard_compatible: bool = True,
    tls_hostname: str | None = None,
    local_port: int | None = None,
) -> SocketStream | TLSStream:
    """``anyio.connect_tcp`` through the module (the name is resolved by the module).

    With ``tls`` (or an ``ssl_context``) the stream is wrapped in anyio's own
    :class:`~anyio.streams.tls.TLSStream`, as anyio.connect_tcp does.
    """
    transport, protocol = await modem.create_connection(
        _StreamProtocol, remote_host, remote_port, local_port=local_port
    )
    stream = ModemSocketStream(transport, protocol)
    if not (tls or ssl_context):
        return stream
    try:
        return await TLSStream.wrap(
            stream,
            server_side=False,
            hostname=tls_hostname or remote_host,
            ssl_context=ssl_context,
            standard_compatible=tls_standard_compatible,
        )
    except BaseException:
        transport.abort()
        raise


class ModemSocketListener(SocketListener):
    """A module server (``AT+SERVERSTART``) as an anyio :class:`~anyio.abc.SocketListener`."""

    def __init__(self, modem: Modem, port: int) -> None:
        self._modem = modem
        self._port = port
        self._server: ModuleServer | None = None
        self._accepted: asyncio.Queue[ModemSocketStream] = asyncio.Queue()

    async def _start(self, backlog: int) -> None:
        def factory() -> _StreamProtocol:
            return _AcceptedProtocol(self._accepted)

        self._server = await self._modem.create_server(factory, self._port, backlog=backlog)

    @property
    def server(self) -> ModuleServer:
        """The module server behind the listener."""
        assert self._server is not None
        return self._server

    @property
    def _raw_socket(self) -> socket.socket:
        raise anyio.TypedAttributeLookupError("a module server has no host socket")

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """``family``, ``local_address`` and ``local_port`` of the module server."""
        address = (self._modem.address or "0.0.0.0", self._port)
        return {
            SocketAttribute.family: lambda: _family(address),
            SocketAttribute.local_address: lambda: address,
            SocketAttribute.local_port: lambda: self._port,
        }

    async def accept(self) -> SocketStream:
        """The next client the module accepted."""
        if self._server is None or not self._server.is_serving():
            raise ClosedResourceError
        return await self._accepted.get()

    async def aclose(self) -> None:
        """Stop accepting; accepted streams stay open (``AT+SERVERSTOP`` waits for them)."""
        if self._server is not None:
            self._server.close()
        while not self._accepted.empty():
            await self._accepted.get_nowait().aclose()


class _AcceptedProtocol(_StreamProtocol):
    """A server connection: hands its stream to the listener as soon as it exists."""

    def __init__(self, queue: asyncio.Queue[ModemSocketStream]) -> None:
        super().__init__()
        self._queue = queue

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self._queue.put_nowait(ModemSocketStream(self.transport, self))


async def create_tcp_listener(
    modem: Modem, *, local_port: int, backlog: int = 3
) -> ModemSocketListener:
    """``anyio.create_tcp_listener`` on the module (``backlog`` 1-3, a fixed port)."""
    listener = ModemSocketListener(modem, local_port)
    await listener._start(backlog)
    return listener


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: deque[tuple[bytes, tuple[str, int]]] = deque(maxlen=UDP_QUEUE_DATAGRAMS)
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = False
        self.exception: BaseException | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queue.append((data, (str(addr[0]), int(addr[1]))))
        self.readable.set()

    def error_received(self, exc: Exception) -> None:
        self.exception = exc
        self.readable.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.exception = exc or self.exception
        self.readable.set()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class _UDPBase:
    def __init__(self, transport: asyncio.DatagramTransport, protocol: _DatagramProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self._attributes = _link_attributes(transport)

    @property
    def _raw_socket(self) -> socket.socket:
        raise anyio.TypedAttributeLookupError("a module link has no host socket")

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """Address attributes from the link (no ``raw_socket``)."""
        return self._attributes

    async def _receive(self) -> tuple[bytes, tuple[str, int]]:
        protocol = self._protocol
        while not protocol.queue:
            if self._closed:
                raise ClosedResourceError
            if protocol.exception is not None:
                exc, protocol.exception = protocol.exception, None
                if isinstance(exc, OSError) and not protocol.lost:
                    raise exc  # an error_received for a datagram we sent (EMSGSIZE)
                raise BrokenResourceError from exc
            if protocol.lost:
                raise BrokenResourceError
            protocol.readable.clear()
            await protocol.readable.wait()
        await anyio.lowlevel.checkpoint()
        return protocol.queue.popleft()

    async def _send(self, data: bytes, address: tuple[str, int] | None) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise ClosedResourceError
        if self._protocol.lost:
            raise BrokenResourceError
        self._transport.sendto(data, address)
        await self._protocol.writable.wait()

    async def aclose(self) -> None:
        """Close the UDP link."""
        if self._closed:
            return
        self._closed = True
        self._protocol.readable.set()
        self._transport.close()
        await anyio.lowlevel.checkpoint()


class ModemUDPSocket(_UDPBase, UDPSocket):
    """An unconnected module UDP link as an anyio :class:`~anyio.abc.UDPSocket`."""

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        """The next datagram and its sender."""
        return await self._receive()

    async def send(self, item: tuple[bytes, tuple[str, int]]) -> None:
        """Send ``(data, (ip, port))``; at most 1500 bytes a datagram."""
        data, address = item
        await self._send(data, address)


class ModemConnectedUDPSocket(_UDPBase, ConnectedUDPSocket):
    """A connected module UDP link as an anyio :class:`~anyio.abc.ConnectedUDPSocket`."""

    async def receive(self) -> bytes:
        """The next datagram."""
        return (await self._receive())[0]

    async def send(self, item: bytes) -> None:
        """Send one datagram to the connected peer."""
        await self._send(item, None)


async def create_udp_socket(modem: Modem, *, local_port: int = 0) -> ModemUDPSocket:
    """``anyio.create_udp_socket`` on the module; needs ``open_modem(..., rx_mode="push")``."""
    transport, protocol = await modem.create_datagram_endpoint(
        _DatagramProtocol, local_addr=("0.0.0.0", local_port)
    )
    return ModemUDPSocket(transport, protocol)


async def create_connected_udp_socket(
    modem: Modem, remote_host: str, remote_port: int, *, local_port: int = 0
) -> ModemConnectedUDPSocket:
    """``anyio.create_connected_udp_socket`` on the module (``rx_mode="push"``)."""
    transport, protocol = await modem.create_datagram_endpoint(
        _DatagramProtocol,
        local_addr=("0.0.0.0", local_port),
        remote_addr=(remote_host, remote_port),
    )
    return ModemConnectedUDPSocket(transport, protocol)
