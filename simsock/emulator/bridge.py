"""The network side of the virtual module: its links and servers as real host sockets.

The bridge carries out the interpreter's actions (:mod:`.actions`) with
asyncio transports and tells the interpreter what happened through its
feedback methods, then lets the owner flush the interpreter's output
(``pump``). It never calls the interpreter from inside :meth:`Bridge.execute`,
so the interpreter is never re-entered.

Flow control is real TCP flow control: a link's socket stops being read while
the module's receive buffer for it is full (:class:`~.actions.PauseReading`),
or while the serial line has a backlog (:meth:`Bridge.pause_all`); a CIPSEND
is confirmed only once the socket's write buffer is below its high-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ..at.errors import CIPOPEN_CONNECT_FAILED, ERR_BIND, ERR_TIMEOUT
from .actions import (
    Action,
    Close,
    Listen,
    OpenTcp,
    OpenUdp,
    PauseReading,
    ResumeReading,
    Send,
    StopListening,
)
from .interpreter import Interpreter

__all__ = ["Bridge"]

logger = logging.getLogger("simsock.emulator")

#: How often a CIPSENDMODE=1 send checks whether its socket's buffer is empty (s).
ACK_POLL_S: Final = 0.005
#: SO_LINGER on, zero seconds: close() sends RST instead of FIN.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
#: Why a link's socket is not being read.
_FULL: Final = "module buffer full"
_SERIAL: Final = "serial line backlog"


@dataclass(eq=False)
class _LinkSocket:
    """The host socket behind one link."""

    link: int
    task: asyncio.Task[None] | None = None
    #: A TCP link's transport, once connected.
    transport: asyncio.BaseTransport | None = None
    #: A UDP link's transport. Kept apart: CPython's selector datagram transport
    #: does not derive from asyncio.DatagramTransport, so isinstance cannot tell.
    datagram: asyncio.DatagramTransport | None = None
    paused_for: set[str] = field(default_factory=set)
    #: (length, wait_acked) of sends not yet confirmed to the interpreter.
    unconfirmed: deque[tuple[int, bool]] = field(default_factory=deque)
    #: Sends that came before the transport (an accepted client being wrapped).
    early: list[bytes] = field(default_factory=list)
    write_paused: bool = False
    closed: bool = False


class _TcpLink(asyncio.Protocol):
    def __init__(self, bridge: Bridge, sock: _LinkSocket, *, report_connected: bool) -> None:
        self._bridge = bridge
        self._sock = sock
        self._report_connected = report_connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Report here, not when create_connection returns: data may arrive in between.
        self._bridge.attach(self._sock, transport, report_connected=self._report_connected)

    def data_received(self, data: bytes) -> None:
        self._bridge.tell(self._bridge.interpreter.received, self._sock.link, data)

    def eof_received(self) -> bool:
        return False  # the module has no half-closed state: the peer closed the link

    def connection_lost(self, exc: Exception | None) -> None:
        self._bridge.lost(self._sock, exc)

    def pause_writing(self) -> None:
        self._sock.write_paused = True

    def resume_writing(self) -> None:
        self._sock.write_paused = False
        self._bridge.confirm(self._sock)


class _UdpLink(asyncio.DatagramProtocol):
    def __init__(self, bridge: Bridge, sock: _LinkSocket) -> None:
        self._bridge = bridge
        self._sock = sock

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        address = (str(addr[0]), int(addr[1]))
        self._bridge.tell(self._bridge.interpreter.received, self._sock.link, data, address)

    def error_received(self, exc: Exception) -> None:
        # Called synchronously from sendto(): only log, never re-enter the interpreter.
        logger.info("link %d: UDP error %s", self._sock.link, exc)


class Bridge:
    """Real sockets for the interpreter's links and servers (see the module docstring)."""

    def __init__(
        self,
        interpreter: Interpreter,
        pump: Callable[[], None],
        *,
        allow_hosts: Iterable[str],
        bind_host: str = "127.0.0.1",
        bind_host6: str = "::1",
    ) -> None:
        self.interpreter = interpreter
        self._pump = pump
        self._allow = {host.lower() for host in allow_hosts}
        self._bind = {4: bind_host, 6: bind_host6}
        self._links: dict[int, _LinkSocket] = {}
        self._servers: dict[int, tuple[asyncio.Task[None], socket.socket | None]] = {}
        self._serial_paused = False
        self._link_free = asyncio.Event()

    # --- glue ------------------------------------------------------------------------

    def tell(self, method: Callable[..., object], *args: object) -> None:
        """Feed an outcome to the interpreter, then let the owner flush its output."""
        method(*args)
        self._pump()

    def _tell_soon(self, method: Callable[..., object], *args: object) -> None:
        asyncio.get_running_loop().call_soon(self.tell, method, *args)

    def allowed(self, *names: str) -> bool:
        """Whether any of ``names`` (a host name, an address) is in the allow-list."""
        return any(name.lower() in self._allow for name in names)

    def refresh(self) -> None:
        """After each pump: wake server accept loops when a link becomes free."""
        if self.interpreter.free_link() is None:
            self._link_free.clear()
        else:
            self._link_free.set()

    # --- actions ---------------------------------------------------------------------

    def execute(self, action: Action) -> None:
        """Carry out one interpreter action (never calls back synchronously)."""
        match action:
            case OpenTcp():
                self._open_tcp(action)
            case OpenUdp():
                sock = self._new_link(action.link)
                sock.task = asyncio.ensure_future(self._bind_udp(sock, action))
            case Send():
                self._send(action)
            case Close():
                self._close(action.link)
            case PauseReading():
                self._set_paused(action.link, _FULL, paused=True)
            case ResumeReading():
                self._set_paused(action.link, _FULL, paused=False)
            case Listen():
                self._listen(action)
            case StopListening():
                self._stop_listening(action.server)

    def pause_all(self, paused: bool) -> None:
        """Stop (or restart) reading every link while the serial line has a backlog."""
        if paused != self._serial_paused:
            self._serial_paused = paused
            for link in list(self._links):
                self._set_paused(link, _SERIAL, paused=paused)

    async def close(self) -> None:
        """Close every socket and server."""
        for server in list(self._servers):
            self._stop_listening(server)
        for link in list(self._links):
            self._close(link)
        await asyncio.sleep(0)  # let transports run their connection_lost

    def reset(self, link: int) -> bool:
        """Fault injection: link ``link``'s connection is reset (RST both ways).

        The host socket is aborted with a zero linger time, so the real peer
        gets a reset, and the interpreter reports ``+IPCLOSE: <link>,1`` (4.2).
        ``False`` when the link has no TCP connection.
        """
        sock = self._links.get(link)
        transport = sock.transport if sock is not None else None
        if sock is None or not isinstance(transport, asyncio.WriteTransport):
            return False
        del self._links[link]
        sock.closed = True
        raw = transport.get_extra_info("socket")
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
        self.tell(self.interpreter.peer_closed, link)
        return True

    # --- links -----------------------------------------------------------------------

    def _new_link(self, link: int) -> _LinkSocket:
        self._close(link)
        sock = _LinkSocket(link)
        if self._serial_paused:
            sock.paused_for.add(_SERIAL)
        self._links[link] = sock
        return sock

    def _open_tcp(self, action: OpenTcp) -> None:
        sock = self._new_link(action.link)
        if not self.allowed(action.name, action.host):
            logger.warning("link %d: %s is not an allowed host", action.link, action.name)
            self._tell_soon(self.interpreter.connect_failed, action.link, CIPOPEN_CONNECT_FAILED)
            return
        sock.task = asyncio.ensure_future(self._connect(sock, action))

    async def _connect(self, sock: _LinkSocket, action: OpenTcp) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in action.host else socket.AF_INET
        local = None
        if action.local_port:
            local = (self._bind[6 if family == socket.AF_INET6 else 4], action.local_port)
        try:
            async with asyncio.timeout(action.timeout_s):
                await loop.create_connection(
                    lambda: _TcpLink(self, sock, report_connected=True),
                    action.host,
                    action.port,
                    family=family,
                    local_addr=local,
                )
        except TimeoutError:
            self._fail_open(sock, ERR_TIMEOUT)
        except OSError as exc:
            logger.info("link %d: connect to %s:%d: %s", sock.link, action.host, action.port, exc)
            self._fail_open(sock, CIPOPEN_CONNECT_FAILED)

    def _fail_open(self, sock: _LinkSocket, err: int) -> None:
        if self._links.get(sock.link) is sock:
            del self._links[sock.link]
            self.tell(self.interpreter.connect_failed, sock.link, err)

    async def _bind_udp(self, sock: _LinkSocket, action: OpenUdp) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpLink(self, sock),
                local_addr=(self._bind[action.family], action.local_port),
            )
        except OSError as exc:
            logger.info("link %d: UDP bind to port %d: %s", sock.link, action.local_port, exc)
            self._fail_open(sock, ERR_BIND)
            return
        sock.datagram = transport
        port = int(transport.get_extra_info("sockname")[1])
        self.tell(self.interpreter.connected, sock.link, port)

    def attach(
        self, sock: _LinkSocket, transport: asyncio.BaseTransport, *, report_connected: bool
    ) -> None:
        """A TCP transport is up for ``sock`` (called from ``connection_made``)."""
        if sock.closed:
            transport.close()
            return
        sock.transport = transport
        if sock.paused_for:
            assert isinstance(transport, asyncio.ReadTransport)
            transport.pause_reading()
        if report_connected:
            port = transport.get_extra_info("sockname")[1]
            self.tell(self.interpreter.connected, sock.link, int(port))
        early, sock.early = sock.early, []
        for data in early:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(data)
        self.confirm(sock)

    def lost(self, sock: _LinkSocket, exc: Exception | None) -> None:
        """A link's transport closed; unless the module closed it, the peer did."""
        if sock.closed:
            return
        sock.closed = True
        if self._links.get(sock.link) is sock:
            del self._links[sock.link]
        logger.debug("link %d: peer closed (%s)", sock.link, exc)
        self.tell(self.interpreter.peer_closed, sock.link)

    def _send(self, action: Send) -> None:
        sock = self._links.get(action.link)
        if sock is None:
            return  # closed meanwhile; the interpreter already reported the send as failed
        sock.unconfirmed.append((len(action.data), action.wait_acked))
        transport = sock.transport
        if sock.datagram is not None:
            assert action.address is not None
            if self.allowed(action.address[0]):
                sock.datagram.sendto(action.data, action.address)
            else:  # like UDP on a real network: the datagram just never arrives
                logger.warning("link %d: %s is not an allowed host", action.link, action.address[0])
        elif isinstance(transport, asyncio.WriteTransport):
            transport.write(action.data)
        else:
            sock.early.append(action.data)
            return
        asyncio.get_running_loop().call_soon(self.confirm, sock)

    def confirm(self, sock: _LinkSocket) -> None:
        """Report the sends whose bytes have left, in order (``+CIPSEND: ...``)."""
        transport = sock.transport
        if sock.closed or (transport is None and sock.datagram is None):
            return
        confirmed = False
        while sock.unconfirmed and not sock.write_paused:
            length, wait_acked = sock.unconfirmed[0]
            if (
                wait_acked
                and isinstance(transport, asyncio.WriteTransport)
                and transport.get_write_buffer_size()
            ):
                asyncio.get_running_loop().call_later(ACK_POLL_S, self.confirm, sock)
                break
            sock.unconfirmed.popleft()
            self.interpreter.sent(sock.link, length, length)
            confirmed = True
        if confirmed:
            self._pump()

    def _close(self, link: int) -> None:
        sock = self._links.pop(link, None)
        if sock is None:
            return
        sock.closed = True
        if sock.task is not None:
            sock.task.cancel()
        for transport in (sock.transport, sock.datagram):
            if transport is not None:
                transport.close()  # a graceful close: written data is flushed first

    def _set_paused(self, link: int, reason: str, *, paused: bool) -> None:
        sock = self._links.get(link)
        if sock is None:
            return
        if paused:
            sock.paused_for.add(reason)
        else:
            sock.paused_for.discard(reason)
        transport = sock.transport
        if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
            # Both calls are no-ops when the transport already is in that state.
            if sock.paused_for:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # --- servers ---------------------------------------------------------------------

    def _listen(self, action: Listen) -> None:
        self._stop_listening(action.server)
        family = socket.AF_INET6 if action.family == 6 else socket.AF_INET
        try:
            listener = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            self._tell_soon(self.interpreter.listen_failed, action.server, ERR_BIND)
            return
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._bind[action.family], action.port))
            listener.listen(action.backlog)
            listener.setblocking(False)
        except OSError as exc:
            logger.info("server %d: listen on port %d: %s", action.server, action.port, exc)
            listener.close()
            self._tell_soon(self.interpreter.listen_failed, action.server, ERR_BIND)
            return
        port = int(listener.getsockname()[1])
        task = asyncio.ensure_future(self._accept_loop(action.server, listener))
        self._servers[action.server] = (task, listener)
        self._tell_soon(self.interpreter.listening, action.server, port)

    async def _accept_loop(self, server: int, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Accept only while a link is free: other clients wait in the backlog.
            await self._link_free.wait()
            conn, address = await loop.sock_accept(listener)
            host, port = str(address[0]), int(address[1])
            if not self.allowed(host):
                logger.warning("server %d: refusing a client from %s", server, host)
                conn.close()
                continue
            try:
                while (link := self.interpreter.accepted(server, host, port)) is None:
                    self._link_free.clear()
                    await self._link_free.wait()
            except BaseException:
                conn.close()
                raise
            sock = self._new_link(link)
            self._pump()
            await loop.connect_accepted_socket(self._accepted_protocol(sock), conn)

    def _accepted_protocol(self, sock: _LinkSocket) -> Callable[[], _TcpLink]:
        return lambda: _TcpLink(self, sock, report_connected=False)

    def _stop_listening(self, server: int) -> None:
        entry = self._servers.pop(server, None)
        if entry is None:
            return
        task, listener = entry
        task.cancel()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
