"""``Modem``: the user's handle on a module, shaped like the event loop's networking API.

``open_connection``, ``create_connection`` and ``getaddrinfo`` mirror their
``asyncio`` namesakes (names, signatures, exceptions); the objects they return
are the real ``asyncio.StreamReader`` / ``StreamWriter`` over a
:class:`~simsock.sockets.transport.LinkTransport`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, TypeVar

from ..at import commands as at
from ..at.bringup import ModuleInfo
from ..at.commands import check_port, ip_literal
from ..at.errors import EngineClosedError
from ..at.link import Link
from ..at.outcomes import ModemState
from ..at.outcomes import StateChanged as StateChange
from ..driver.control import ModuleControl
from ..driver.driver import Driver
from .datagram import LinkDatagramTransport
from .dns import AddrInfo, NameCache, getaddrinfo, host_or_gaierror, service_port
from .server import ModuleServer
from .transport import LinkTransport, start_tls_for

__all__ = ["Modem"]

logger = logging.getLogger("simsock")

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_D = TypeVar("_D", bound=asyncio.DatagramProtocol)

#: asyncio.streams' default StreamReader limit.
DEFAULT_LIMIT = 2**16


class Modem(ModuleControl):
    """A started module; use :func:`open_modem` to get one.

    Besides the networking calls it has typed methods for every configuration
    and state command of the reference (:class:`~simsock.modem.control.ModuleControl`).
    """

    def __init__(
        self,
        driver: Driver,
        info: ModuleInfo,
        *,
        url: str,
        rx_mode: str,
        transparent: bool = False,
    ) -> None:
        self._driver = driver
        self._info = info
        #: What the module said it supports at start-up (its ``=?`` answers).
        self.capabilities_found = info.capabilities
        self.url = url
        self.rx_mode = rx_mode
        self._servers: dict[int, ModuleServer] = {}
        self._udp_names = NameCache()  # sendto(data, (name, port)) answers
        #: Transparent mode (AT+CIPMODE=1): the first connection on link 0 is a raw pipe.
        self.transparent = transparent
        driver.on_client = self._client_accepted
        driver.on_state.append(self._state_changed)

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> ModemState:
        """``UP``, ``NETWORK_DOWN``, ``RESTARTING`` or ``CLOSED`` (the session's view)."""
        return self._driver.session.state

    def add_state_listener(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``callback(change)`` on each state change; returns a function that removes it."""
        listeners = self._driver.on_state
        listeners.append(callback)
        return lambda: listeners.remove(callback) if callback in listeners else None

    async def state_changes(self) -> AsyncIterator[StateChange]:
        """``async for change in modem.state_changes():`` every change until the modem closes."""
        queue: asyncio.Queue[StateChange] = asyncio.Queue()
        remove = self.add_state_listener(queue.put_nowait)
        try:
            while True:
                change = await queue.get()
                yield change
                if change.state is ModemState.CLOSED:
                    return
        finally:
            remove()

    def _state_changed(self, change: StateChange) -> None:
        if change.state in (ModemState.NETWORK_DOWN, ModemState.RESTARTING, ModemState.CLOSED):
            for server in list(self._servers.values()):
                server.lost(change.reason)
        if change.state is ModemState.UP:
            self._info = self._driver.session.info

    @property
    def address(self) -> str | None:
        """The module's IP address as last learned (``AT+IPADDR``), or ``None``."""
        return self._info.ip_address

    @property
    def driver(self) -> Driver:
        """The driver (statistics, hooks, the session); for diagnostics and benchmarks."""
        return self._driver

    @property
    def engine(self) -> Driver:
        """The driver, by its earlier name."""
        return self._driver

    # -- life cycle --------------------------------------------------------------

    async def close(self) -> None:
        """Close the port; open links are lost with :class:`~simsock.EngineClosedError`."""
        await self._driver.close()

    async def __aenter__(self) -> Modem:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- commands ----------------------------------------------------------------

    async def command(self, line: str) -> list[str]:
        """Send one AT command (validated, serialised with the rest); its information lines.

        Raises an ``OSError`` subclass when the module answers ``ERROR``.
        Commands that move payload or switch modes are refused with ValueError.
        """
        response = await self._driver.execute(at.raw(line))
        response.raise_for_error()
        return response.lines

    async def ip_address(self) -> str:
        """The module's PDP address (``AT+IPADDR``, 3.7)."""
        response = await self._driver.execute(at.ipaddr())
        response.raise_for_error()
        values = response.info("+IPADDR")
        if not values or not values[0]:
            raise OSError(errno.EADDRNOTAVAIL, "AT+IPADDR gave no address")
        self._info = dataclasses.replace(self._info, ip_address=str(values[0][0]))
        return str(values[0][0])

    # -- DNS -----------------------------------------------------------------------

    async def getaddrinfo(
        self,
        host: str,
        port: int | str | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[AddrInfo]:
        """Resolve ``host`` through the module (``AT+CDNSGIP``, 3.17), shaped like loop.getaddrinfo.

        IP literals are answered without asking the module. Names are checked
        against the rules of 3.17 before anything is sent; a name the module
        cannot resolve raises ``socket.gaierror``. ``flags`` is accepted and ignored.
        """
        return await getaddrinfo(self._driver, host, port, family=family, type=type, proto=proto)

    # -- TCP clients -------------------------------------------------------------

    async def create_connection(
        self,
        protocol_factory: Callable[[], _P],
        host: str,
        port: int | str,
        *,
        ssl: ssl_module.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        local_port: int | None = None,
    ) -> tuple[asyncio.Transport, _P]:
        """Open a TCP link (``AT+CIPOPEN``, 3.3) and wire ``protocol_factory()`` to it.

        Like ``loop.create_connection``: host names are resolved first (here by
        the module), a port may be a number or a service name, failures raise
        ``ConnectionRefusedError``, ``TimeoutError``, ``socket.gaierror`` or
        ``OSError(EMFILE)`` when both links are in use. While the module
        recovers its network the call waits for it, up to the connect
        timeout, then raises ``OSError(ENETDOWN)``. With ``ssl``, TLS runs on
        the host through ``loop.start_tls``. ``local_port`` is AT+CIPOPEN's
        ``<local_port>``; ``get_extra_info("sockname")`` reports it, or port 0
        when the module chose one (it never says which).
        """
        number = service_port(port, "tcp")
        check_port(number)
        host = host_or_gaierror(host)
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        sslcontext = _ssl_context(ssl)
        if sslcontext is not None and server_hostname is None:
            server_hostname = host
        infos = await self.getaddrinfo(host, number, type=socket.SOCK_STREAM)
        ip = str(infos[0][4][0])
        if sslcontext is None:
            return await self._open_tcp(protocol_factory, ip, number, local_port)
        # TLS: a placeholder protocol holds the link paused until start_tls takes
        # over, so the user's protocol only ever sees the TLS transport.
        transport, _ = await self._open_tcp(asyncio.Protocol, ip, number, local_port, paused=True)
        try:
            protocol = protocol_factory()
            tls = await start_tls_for(
                transport,
                protocol,
                sslcontext,
                server_side=False,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
            )
        except BaseException:
            transport.abort()
            raise
        return tls, protocol

    async def _open_tcp(
        self,
        protocol_factory: Callable[[], _P],
        ip: str,
        port: int,
        local_port: int | None,
        *,
        paused: bool = False,
    ) -> tuple[LinkTransport, _P]:
        link = await self._driver.open_tcp(ip, port, local_port, paused=paused)
        try:
            protocol = protocol_factory()
        except BaseException:
            self._driver.close_link(link, abort=True)
            raise
        # The module reports no local port of its own choosing (3.3: AT+CIPOPEN?
        # shows the remote end only): the one asked for, else 0.
        sockname = (self._info.ip_address or "0.0.0.0", local_port or 0)
        transport = LinkTransport(
            self._driver, link, protocol, {"peername": (ip, port), "sockname": sockname}
        )
        return transport, protocol

    async def open_connection(
        self,
        host: str,
        port: int | str,
        *,
        limit: int = DEFAULT_LIMIT,
        ssl: ssl_module.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        local_port: int | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """``asyncio.open_connection`` over the module: the real StreamReader and StreamWriter."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(
            lambda: protocol,
            host,
            port,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            local_port=local_port,
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    # -- TCP servers ---------------------------------------------------------------

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        port: int,
        *,
        ssl: ssl_module.SSLContext | None = None,
        backlog: int = 3,
        ssl_handshake_timeout: float | None = None,
        start_serving: bool = True,
        transparent: bool = False,
    ) -> ModuleServer:
        """Listen on the module (``AT+SERVERSTART``, 3.14), like ``loop.create_server``.

        Each accepted client takes a free link and gets ``protocol_factory()``.
        ``port`` 0 lets the module pick one (``server.sockets[0].getsockname()``
        says which, once serving). ``backlog`` is 1-3. The module has two
        servers; a third raises ``OSError(EMFILE)``. With ``ssl`` (a
        server-side SSLContext), TLS runs on the host.

        On a transparent modem, servers use index 1 and serve in command mode,
        unless ``transparent=True``: then the server is index 0, and its client
        on link 0 is the raw pipe (3.4.1), as a transparent client would be.
        The module enters data mode for that client by itself; a command
        written in the same instant reaches the client as data (the flow's own
        race, documented in ``docs/session.md``).
        """
        check_port(port, allow_zero=True)
        if self._driver.closed:
            raise _closed_error()
        if not 1 <= backlog <= 3:
            raise ValueError(f"backlog {backlog} outside 1..3 (3.14)")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError("ssl must be an SSLContext for a server")
        if transparent and not self.transparent:
            raise ValueError("transparent=True needs open_modem(..., transparent=True)")
        first, last = self._info.capabilities.servers
        free = [i for i in range(first, last + 1) if i not in self._servers]
        if self.transparent:
            # Server 0's clients are raw links (2): only when asked for.
            free = [i for i in free if (i == 0) == transparent]
        if not free:
            raise OSError(errno.EMFILE, f"all {last - first + 1} module servers are in use")
        server = ModuleServer(
            self,
            free[0],
            port,
            protocol_factory,
            backlog=backlog,
            ssl=ssl,
            ssl_handshake_timeout=ssl_handshake_timeout,
        )
        self._servers[server.index] = server
        if start_serving:
            await server.start_serving()
        return server

    async def start_server(
        self,
        client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
        port: int,
        *,
        limit: int = DEFAULT_LIMIT,
        ssl: ssl_module.SSLContext | None = None,
        backlog: int = 3,
        ssl_handshake_timeout: float | None = None,
        start_serving: bool = True,
        transparent: bool = False,
    ) -> ModuleServer:
        """``asyncio.start_server`` on the module: ``client_connected_cb(reader, writer)``."""
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

        return await self.create_server(
            factory,
            port,
            ssl=ssl,
            backlog=backlog,
            ssl_handshake_timeout=ssl_handshake_timeout,
            start_serving=start_serving,
            transparent=transparent,
        )

    def forget_server(self, server: ModuleServer) -> None:
        """(server) Its index is free again."""
        if self._servers.get(server.index) is server:
            del self._servers[server.index]

    def _client_accepted(self, link: Link) -> None:
        server = self._servers.get(link.server) if link.server is not None else None
        if server is None:
            logger.warning("+CLIENT for server %s, which is not serving: closed", link.server)
            self._driver.close_link(link, abort=True)
            return
        server.accept(link)

    # -- UDP -------------------------------------------------------------------------

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], _D],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
    ) -> tuple[LinkDatagramTransport, _D]:
        """A UDP link (``AT+CIPOPEN=<link>,"UDP",,,<port>``), as loop.create_datagram_endpoint.

        ``local_addr``'s port is the module's local port (0: the module picks);
        ``remote_addr`` (an address or a name, resolved by the module) fixes the
        destination of ``sendto``, and, as a connected socket, only its
        datagrams are received. In buffer-access mode (``rx_mode="buffer"``) a
        ``remote_addr`` is required: each ``AT+CIPRXGET=2`` read is taken as one
        datagram from that peer, as the note's 3.3.2 flow shows (see
        :mod:`simsock.sockets.datagram`). In transparent mode the endpoint is
        the raw link 0 to ``remote_addr`` (3.3.3): the module cuts the byte
        stream into datagrams both ways, so boundaries are not kept.
        """
        if self.transparent and remote_addr is None:
            raise OSError(
                errno.EOPNOTSUPP,
                "UDP in transparent mode needs remote_addr: link 0 is a raw pipe to one"
                " peer (3.3.3), and the module refuses other links",
            )
        if self.rx_mode != "push" and remote_addr is None:
            raise OSError(
                errno.EOPNOTSUPP,
                "UDP without remote_addr needs open_modem(..., rx_mode='push'): in"
                " buffer-access mode the module does not say who sent a datagram",
            )
        local_port = 0 if local_addr is None else check_port(local_addr[1], allow_zero=True)
        remote: tuple[str, int] | None = None
        if remote_addr is not None:
            literal = ip_literal(remote_addr[0])
            if literal is None:
                infos = await self.getaddrinfo(remote_addr[0], remote_addr[1])
                literal = ip_literal(str(infos[0][4][0]))
            assert literal is not None
            remote = (str(literal), check_port(service_port(remote_addr[1], "udp")))
        link = await self._driver.open_udp(local_port, remote)
        try:
            protocol = protocol_factory()
        except BaseException:
            self._driver.close_link(link, abort=True)
            raise
        extra: dict[str, Any] = {"sockname": (self._info.ip_address or "0.0.0.0", local_port)}
        if remote is not None:
            extra["peername"] = remote

        async def resolve(host: str, port: int) -> str:
            infos = await self.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            return str(infos[0][4][0])

        transport = LinkDatagramTransport(
            self._driver, link, protocol, remote, extra, resolve, self._udp_names
        )
        return transport, protocol


def _closed_error() -> OSError:
    """What a call on a closed modem raises."""
    return EngineClosedError("the modem is closed")


def _ssl_context(ssl: ssl_module.SSLContext | bool | None) -> ssl_module.SSLContext | None:
    if ssl is None or ssl is False:
        return None
    if ssl is True:
        return ssl_module.create_default_context()
    if isinstance(ssl, ssl_module.SSLContext):
        return ssl
    raise TypeError(f"ssl must be an SSLContext, True, False or None, not {ssl!r}")
