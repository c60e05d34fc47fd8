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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ..at import commands as at
from ..at.commands import check_host, check_port, ip_literal
from ..at.errors import ModuleError, err_to_oserror
from ..at.events import ClientAccepted
from ..modem.control import ModuleControl
from ..modem.engine import Engine, Job
from ..modem.links import Link
from ..modem.startup import ModuleInfo
from ..modem.supervisor import ModemState, StateChange, Supervisor
from .datagram import LinkDatagramTransport
from .dns import AddrInfo, getaddrinfo
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
        engine: Engine,
        info: ModuleInfo,
        *,
        url: str,
        rx_mode: str,
        transparent: bool = False,
        bring_up: Callable[[], Awaitable[ModuleInfo]],
        recovery_backoff_s: tuple[float, ...] | None = None,
    ) -> None:
        self._engine = engine
        self._info = info
        #: What the module said it supports at start-up (its ``=?`` answers).
        self.capabilities_found = info.capabilities
        self.url = url
        self.rx_mode = rx_mode
        self._background: set[asyncio.Future[None]] = set()
        self._servers: dict[int, ModuleServer] = {}
        #: Transparent mode (AT+CIPMODE=1): the first connection on link 0 is a raw pipe.
        self.transparent = transparent
        engine.on_client = self._client_accepted

        async def again() -> None:
            self._info = await bring_up()

        options = {} if recovery_backoff_s is None else {"backoff_s": recovery_backoff_s}
        self._supervisor = Supervisor(engine, again, **options)
        self._supervisor.add_listener(self._state_changed)
        engine.on_closed = lambda exc: self._supervisor.closed(str(exc))

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> ModemState:
        """``UP``, ``NETWORK_DOWN``, ``RESTARTING`` or ``CLOSED`` (see simsock.modem.supervisor)."""
        return self._supervisor.state

    def add_state_listener(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``callback(change)`` on each state change; returns a function that removes it."""
        return self._supervisor.add_listener(callback)

    def state_changes(self) -> AsyncIterator[StateChange]:
        """``async for change in modem.state_changes():`` every change until the modem closes."""
        return self._supervisor.changes()

    def _state_changed(self, change: StateChange) -> None:
        if change.state in (ModemState.NETWORK_DOWN, ModemState.RESTARTING, ModemState.CLOSED):
            for server in list(self._servers.values()):
                server.lost(change.reason)

    @property
    def address(self) -> str | None:
        """The module's IP address as last learned (``AT+IPADDR``), or ``None``."""
        return self._info.ip_address

    @property
    def engine(self) -> Engine:
        """The engine (statistics, hooks); for diagnostics and benchmarks."""
        return self._engine

    # -- life cycle --------------------------------------------------------------

    async def close(self) -> None:
        """Close the port; open links are lost with :class:`~simsock.EngineClosedError`."""
        await self._engine.close()

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
        response = await self._engine.execute(at.raw(line))
        response.raise_for_error()
        return response.lines

    async def ip_address(self) -> str:
        """The module's PDP address (``AT+IPADDR``, 3.7)."""
        response = await self._engine.execute(at.ipaddr())
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
        return await getaddrinfo(self._engine, host, port, family=family, type=type, proto=proto)

    # -- TCP clients -------------------------------------------------------------

    def _allocate_link(self, peer: tuple[str, int]) -> Link:
        engine = self._engine
        first, last = self._info.capabilities.links
        for number in range(first, last + 1):
            if number not in engine.links:
                link = Link(number, peer)
                engine.links[number] = link
                return link
        raise OSError(errno.EMFILE, f"all {last - first + 1} links of the module are in use")

    async def create_connection(
        self,
        protocol_factory: Callable[[], _P],
        host: str,
        port: int,
        *,
        ssl: ssl_module.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        local_port: int | None = None,
    ) -> tuple[asyncio.Transport, _P]:
        """Open a TCP link (``AT+CIPOPEN``, 3.3) and wire ``protocol_factory()`` to it.

        Like ``loop.create_connection``: host names are resolved first (here by
        the module), failures raise ``ConnectionRefusedError``, ``TimeoutError``,
        ``socket.gaierror`` or ``OSError(EMFILE)`` when both links are in use.
        With ``ssl``, TLS runs on the host through ``loop.start_tls``.
        """
        check_port(port)
        host = check_host(host)
        self._supervisor.check_up()
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        sslcontext = _ssl_context(ssl)
        if sslcontext is not None and server_hostname is None:
            server_hostname = host
        infos = await self.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        ip = str(infos[0][4][0])
        if sslcontext is None:
            return await self._open_tcp(protocol_factory, ip, port, local_port)
        # TLS: a placeholder protocol holds the link paused until start_tls takes
        # over, so the user's protocol only ever sees the TLS transport.
        transport, _ = await self._open_tcp(asyncio.Protocol, ip, port, local_port, paused=True)
        protocol = protocol_factory()
        try:
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
        engine = self._engine
        at.cipopen_tcp(0, ip, port, local_port)  # validated before a link is taken
        transparent = self.transparent and engine.transparent_link is None and 0 not in engine.links
        link = Link(0, (ip, port)) if transparent else self._allocate_link((ip, port))
        command = at.cipopen_tcp(link.number, ip, port, local_port)
        if transparent:
            engine.links[0] = link
            engine.transparent_link = link  # raw bytes may follow CONNECT at once
            link.transparent = True
        result = engine.expect_late("+CIPOPEN", link.number)
        job = engine.submit(command, until_connect=transparent)
        try:
            await self._opened(link, job, result)
        except asyncio.CancelledError:
            if not job.sent:
                # Never written: nothing happened in the module.
                engine.discard_late("+CIPOPEN", link.number, result)
                engine.release(link, None)
                raise
            # The module may still connect: close the link when its result comes.
            self._in_background(self._abandon(link, job, result))
            raise
        except TimeoutError as exc:
            # No answer in time: whether the module opened the link is unknown
            # (a lost OK, a mute module). Close it there before reusing the number.
            # (A timeout the module reported, "+CIPOPEN: <link>,10", is an answer.)
            engine.discard_late("+CIPOPEN", link.number, result)
            if engine.closed or isinstance(exc, ModuleError):
                engine.release(link, None)
            else:
                self._in_background(self._reclaim(link))
            raise
        except BaseException:
            engine.discard_late("+CIPOPEN", link.number, result)
            if engine.links.get(link.number) is link:
                engine.release(link, None)
            raise
        link.reading = not paused
        engine.link_opened(link)
        sockname = (self._info.ip_address or "0.0.0.0", 0)
        protocol = protocol_factory()
        transport = LinkTransport(
            engine, link, protocol, {"peername": (ip, port), "sockname": sockname}
        )
        return transport, protocol

    async def _opened(self, link: Link, job: Job, result: asyncio.Future[list[int]]) -> None:
        """Wait for an ``AT+CIPOPEN``'s outcome; raise the OSError of a failure (3.3).

        TCP: ``OK``, then ``+CIPOPEN: <link>,<err>``; UDP: the result comes
        before ``OK``; failure before anything is sent: the result, then
        ``ERROR``; transparent mode: ``CONNECT`` or ``CONNECT FAIL``.
        """
        engine = self._engine
        response = await job.wait()
        if job.until_connect or not response.ok:
            engine.discard_late("+CIPOPEN", link.number, result)
            if response.ok:
                return
            if result.done() and not result.cancelled() and result.result()[1] != 0:
                raise err_to_oserror(result.result()[1], context="CIPOPEN")
            raise response.error("CIPOPEN")
        limit = engine.timeout_for(job.command)
        try:
            _, err = await asyncio.wait_for(asyncio.shield(result), limit)
        except TimeoutError:
            raise TimeoutError(f"CIPOPEN: no result from the module in {limit} s") from None
        if err != 0:
            raise err_to_oserror(err, context="CIPOPEN")

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reclaim(self, link: Link) -> None:
        """``AT+CIPCLOSE`` a link whose open had no clear answer, then free its number."""
        engine = self._engine
        command = at.cipclose(link.number)
        done = engine.expect_late("+CIPCLOSE", link.number)
        try:
            if (await engine.execute(command)).ok:
                await asyncio.wait_for(done, engine.timeout_for(command))
        except (OSError, TimeoutError) as exc:
            logger.info("link %d: closing after an unclear open: %s", link.number, exc)
        finally:
            engine.discard_late("+CIPCLOSE", link.number, done)
            engine.release(link, None)

    async def _abandon(self, link: Link, job: Job, result: asyncio.Future[list[int]]) -> None:
        """A cancelled open: once the module reports the result, close a link it opened."""
        try:
            response = await job.wait()
            if not response.ok:
                err = -1
                self._engine.discard_late("+CIPOPEN", link.number, result)
            else:
                _, err = await asyncio.wait_for(result, self._engine.timeout_for(job.command))
        except BaseException:
            err = -1
        if err == 0:
            self._engine.link_opened(link)
            self._engine.request_close(link)
        else:
            self._engine.release(link, None)

    async def open_connection(
        self,
        host: str,
        port: int,
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
    ) -> ModuleServer:
        """Listen on the module (``AT+SERVERSTART``, 3.14), like ``loop.create_server``.

        Each accepted client takes a free link and gets ``protocol_factory()``.
        ``backlog`` is 1-3. The module has two servers; a third raises
        ``OSError(EMFILE)``. With ``ssl`` (a server-side SSLContext), TLS runs
        on the host.
        """
        check_port(port)
        self._supervisor.check_up()
        if not 1 <= backlog <= 3:
            raise ValueError(f"backlog {backlog} outside 1..3 (3.14)")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError("ssl must be an SSLContext for a server")
        first, last = self._info.capabilities.servers
        free = [i for i in range(first, last + 1) if i not in self._servers]
        if self.transparent:
            # Server 0's clients would be raw links (2); simsock serves in command mode.
            free = [i for i in free if i != 0]
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
        )

    def forget_server(self, server: ModuleServer) -> None:
        """(server) Its index is free again."""
        if self._servers.get(server.index) is server:
            del self._servers[server.index]

    def _client_accepted(self, event: ClientAccepted) -> None:
        engine = self._engine
        server = self._servers.get(event.server)
        existing = engine.links.get(event.link)
        if existing is not None and existing.active:
            logger.warning("+CLIENT on link %d, which is open: ignored", event.link)
            return
        link = Link(event.link, (event.host, event.port), server=event.server)
        engine.links[event.link] = link
        engine.link_opened(link)
        if server is None:
            logger.warning("+CLIENT for server %d, which we did not start: closed", event.server)
            engine.request_close(link)
            return
        server.accept(event, link)

    # -- UDP -------------------------------------------------------------------------

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], _D],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
    ) -> tuple[LinkDatagramTransport, _D]:
        """A UDP link (``AT+CIPOPEN=<link>,"UDP",,,<port>``), as loop.create_datagram_endpoint.

        Needs ``rx_mode="push"`` (see :mod:`simsock.sockets.datagram`).
        ``local_addr``'s port is the module's local port (0: the module picks);
        ``remote_addr`` (an IP literal) fixes the destination of ``sendto``.
        """
        if self.rx_mode != "push":
            raise OSError(
                errno.EOPNOTSUPP,
                "UDP needs open_modem(..., rx_mode='push'): in buffer-access mode the module"
                " keeps neither the sender's address nor datagram boundaries",
            )
        local_port = 0 if local_addr is None else check_port(local_addr[1], allow_zero=True)
        self._supervisor.check_up()
        remote: tuple[str, int] | None = None
        if remote_addr is not None:
            literal = ip_literal(remote_addr[0])
            if literal is None:
                infos = await self.getaddrinfo(remote_addr[0], remote_addr[1])
                literal = ip_literal(str(infos[0][4][0]))
            assert literal is not None
            remote = (str(literal), check_port(remote_addr[1]))
        engine = self._engine
        link = self._allocate_link(remote or ("0.0.0.0", 0))
        link.udp = True
        result = engine.expect_late("+CIPOPEN", link.number)
        try:
            await self._opened(link, engine.submit(at.cipopen_udp(link.number, local_port)), result)
        except BaseException:
            engine.discard_late("+CIPOPEN", link.number, result)
            if engine.links.get(link.number) is link:
                engine.release(link, None)
            raise
        engine.link_opened(link)
        protocol = protocol_factory()
        extra: dict[str, Any] = {"sockname": (self._info.ip_address or "0.0.0.0", local_port)}
        if remote is not None:
            extra["peername"] = remote
        transport = LinkDatagramTransport(engine, link, protocol, remote, extra)
        return transport, protocol


def _ssl_context(ssl: ssl_module.SSLContext | bool | None) -> ssl_module.SSLContext | None:
    if ssl is None or ssl is False:
        return None
    if ssl is True:
        return ssl_module.create_default_context()
    if isinstance(ssl, ssl_module.SSLContext):
        return ssl
    raise TypeError(f"ssl must be an SSLContext, True, False or None, not {ssl!r}")
