"""``ModuleServer``: a TCP server on the module (``AT+SERVERSTART``, 3.14), like asyncio.Server.

Each ``+CLIENT: <link>,<server>,<ip>:<port>`` becomes a connection on that link
with a fresh protocol, as ``loop.create_server`` would make. Closing follows
asyncio: ``close()`` stops accepting (clients the module accepts afterwards are
closed at once), connections already accepted live on, and because the module
refuses ``AT+SERVERSTOP`` while they do (3.15), the stop is sent when the last
one has closed; ``wait_closed()`` waits for it. ``close_clients()`` and
``abort_clients()`` (Python 3.13's names) end them sooner.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..at.link import Link
from .transport import LinkTransport, start_tls_for

if TYPE_CHECKING:
    from .modem import Modem

__all__ = ["ModuleServer", "ServerSocket"]

logger = logging.getLogger("simsock.sockets.server")


class ServerSocket:
    """What ``server.sockets`` holds: enough of a socket for code that asks its address."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._address = address
        self.family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.type = socket.SOCK_STREAM
        self.proto = socket.IPPROTO_TCP

    def getsockname(self) -> tuple[str, int]:
        """The module's address and the listening port."""
        return self._address

    def fileno(self) -> int:
        """A module socket has no file descriptor."""
        return -1

    def __repr__(self) -> str:
        return f"<simsock.ServerSocket {self._address[0]}:{self._address[1]}>"


class ModuleServer(asyncio.AbstractServer):
    """A listening module server; see the module docstring."""

    def __init__(
        self,
        modem: Modem,
        index: int,
        port: int,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        backlog: int,
        ssl: ssl_module.SSLContext | None,
        ssl_handshake_timeout: float | None,
    ) -> None:
        self._modem = modem
        self._loop = asyncio.get_running_loop()
        self.index = index
        self.port = port
        self._factory = protocol_factory
        self._backlog = backlog
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._serving = False
        self._started = False
        self._closing = False
        self._transports: set[LinkTransport] = set()
        self._idle = asyncio.Event()  # set while no accepted connection is open
        self._idle.set()
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        self._stop_task: asyncio.Task[None] | None = None
        self._forever: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        state = "serving" if self._serving else "closed" if self._closing else "idle"
        return (
            f"<ModuleServer {self.index} port={self.port} {state} clients={len(self._transports)}>"
        )

    # -- asyncio.AbstractServer ----------------------------------------------------

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the server runs on."""
        return self._loop

    def is_serving(self) -> bool:
        """Whether the module is listening for this server."""
        return self._serving

    @property
    def sockets(self) -> tuple[ServerSocket, ...]:
        """One pseudo-socket with the listening address (empty once closed)."""
        if not self._serving:
            return ()
        return (ServerSocket((self._modem.address or "0.0.0.0", self.port)),)

    async def start_serving(self) -> None:
        """``AT+SERVERSTART`` (done already unless ``start_serving=False`` was given)."""
        if self._closing:
            raise RuntimeError(f"server {self!r} is closed")
        if self._started:
            return
        self._started = True
        driver = self._modem.driver
        try:
            self.port = await driver.run(
                driver.session.start_server(self.port, self.index, self._backlog)
            )
        except BaseException:
            self._started = False
            self._modem.forget_server(self)
            raise
        self._serving = True

    async def serve_forever(self) -> None:
        """Serve until cancelled, then close (as asyncio.Server does)."""
        if self._forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closing:
            raise RuntimeError(f"server {self!r} is closed")
        await self.start_serving()
        self._forever = self._loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._forever = None

    def close(self) -> None:
        """Stop accepting; ``AT+SERVERSTOP`` follows once accepted links are closed."""
        if self._closing:
            return
        self._closing = True
        self._serving = False
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()
        self._stop_task = asyncio.ensure_future(self._stop())

    def close_clients(self) -> None:
        """Close every accepted connection (flushing what they queued)."""
        for transport in list(self._transports):
            transport.close()

    def abort_clients(self) -> None:
        """Abort every accepted connection."""
        for transport in list(self._transports):
            transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the module has stopped the server (after ``close()``)."""
        if not self._closing:
            return
        await asyncio.shield(self._stopped)

    async def _stop(self) -> None:
        try:
            await self._idle.wait()
            if self._started:
                driver = self._modem.driver
                await driver.run(driver.session.stop_server(self.index))
        except Exception as exc:
            logger.warning("server %d did not stop cleanly: %s", self.index, exc)
        finally:
            self._modem.forget_server(self)
            if not self._stopped.done():
                self._stopped.set_result(None)

    def lost(self, reason: str) -> None:
        """The module dropped this server (network lost, module restarted)."""
        logger.warning("server %d on port %d is gone: %s", self.index, self.port, reason)
        self._started = False  # nothing to stop in the module any more
        self.close()

    # -- accepting -----------------------------------------------------------------

    def accept(self, link: Link) -> None:
        """The module accepted a client on ``link`` for this server."""
        driver = self._modem.driver
        if self._closing:
            logger.info("server %d is closing: client on link %d closed", self.index, link.number)
            driver.close_link(link)
            return
        extra = {
            "peername": link.peer,
            "sockname": (self._modem.address or "0.0.0.0", self.port),
            "server": self.index,
        }
        if self._ssl is None:
            try:
                protocol = self._factory()
            except Exception:
                logger.exception("the server's protocol factory raised: client closed")
                driver.close_link(link, abort=True)
                return
            transport = LinkTransport(driver, link, protocol, extra)
            self._track(transport)
            driver.resume_reading(link)
            return
        # TLS: the placeholder protocol holds the link paused until start_tls takes over.
        transport = LinkTransport(driver, link, asyncio.Protocol(), extra)
        self._track(transport)
        task = asyncio.ensure_future(self._start_tls(transport))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _track(self, transport: LinkTransport) -> None:
        self._transports.add(transport)
        self._idle.clear()

        def lost() -> None:
            self._transports.discard(transport)
            if not self._transports:
                self._idle.set()

        transport.on_lost(lost)

    async def _start_tls(self, transport: LinkTransport) -> None:
        assert self._ssl is not None
        protocol = self._factory()
        try:
            # start_tls_for, not loop.start_tls: the new protocol needs connection_made.
            await start_tls_for(
                transport,
                protocol,
                self._ssl,
                server_side=True,
                ssl_handshake_timeout=self._ssl_handshake_timeout,
            )
        except Exception as exc:
            logger.warning("TLS handshake with a client failed: %s", exc)
            transport.abort()
