"""A SOCKS5 server (RFC 1928) whose every connection goes over the module.

``await serve_socks5(modem)`` listens on 127.0.0.1:1080 with the host's own
sockets (the clients are on this machine); each CONNECT becomes a module link
(``modem.open_connection``; a domain name is resolved by the module), and
each UDP ASSOCIATE a host UDP socket for the client relayed through
``modem.create_datagram_endpoint``. The Modem API is called directly, never
through ``use_modem``, so the proxy's own listening sockets stay host sockets.

Choices, and why:

- **Two links.** The module has two; a request waits up to ``link_wait_s``
  (3 s) for one to become free, then gets 0x01 "general SOCKS server
  failure": the server's own resources are exhausted, which no other §6 code
  describes (0x05 would tell the client the *destination* refused).
- **Backpressure** both ways: each direction awaits ``drain()``, and the
  module side's ``StreamReader`` pauses ``AT+CIPRXGET`` reads when the client
  reads slowly.
- **Half-close.** The remote's end reaches the client as a FIN once every
  byte is delivered (the module closes the link then, so nothing more can go
  the other way). A client's FIN cannot reach the remote: the module has no
  TCP half-close, and a FIN does not say whether the client closed or only
  shut down its sending side. So the link stays open and the relay keeps
  delivering the remote's data until the remote closes, but such a
  connection holds a link nobody may need: when a request finds both links
  taken, the oldest half-closed connection is closed first to make room.
- **UDP** (§7): :mod:`.udp`; in push mode one module endpoint for every
  destination, in buffer mode a connected endpoint (a link) per destination.
- **BIND** is answered 0x07 "command not supported".
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from . import socks5
from .linkwait import LINK_WAIT_S, open_with_link_wait
from .record import ConnectionRecord, hostport
from .socks5 import Command, Method, Reply, Request, Socks5Error
from .udp import UdpAssociation

__all__ = [
    "DEFAULT_PORT",
    "LINK_WAIT_S",
    "ConnectionRecord",
    "Socks5Proxy",
    "check_listen_address",
    "serve_socks5",
]

if TYPE_CHECKING:
    from ..sockets.modem import Modem

logger = logging.getLogger("simsock.proxy")

T = TypeVar("T")

#: The SOCKS port (RFC 1928 §3).
DEFAULT_PORT: Final = 1080
#: Longest time a client may take to send its greeting and request (s).
HANDSHAKE_TIMEOUT_S: Final = 10.0
#: Largest read per relay step (bytes); asyncio's StreamReader limit.
RELAY_CHUNK_BYTES: Final = 64 * 1024


def check_listen_address(host: str, allow_remote: bool = False) -> None:
    """Refuse a listening address other hosts could reach, unless ``allow_remote``.

    The proxy asks for no password, so anyone who reaches it spends the
    module's links and data; only loopback addresses (and ``localhost``) are
    safe. With ``allow_remote`` a warning is logged instead.
    """
    if host == "localhost" or _is_loopback(host):
        return
    if not allow_remote:
        raise ValueError(
            f"refusing to listen on {host!r}: the SOCKS5 proxy has no authentication, so "
            "only loopback addresses are allowed (allow_remote=True / --allow-remote)"
        )
    logger.warning(
        "SOCKS5 proxy on %r without authentication: whoever reaches it uses the module", host
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _read_message(
    reader: asyncio.StreamReader,
    buffer: bytearray,
    parse: Callable[[bytes], tuple[T, int] | None],
) -> T:
    """The next message ``parse`` finds in ``buffer`` + what ``reader`` brings; rest kept."""
    while (parsed := parse(bytes(buffer))) is None:
        chunk = await reader.read(socks5.MAX_REQUEST_BYTES)
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buffer), None)
        buffer += chunk
    message, used = parsed
    del buffer[:used]
    return message


class Socks5Proxy:
    """The proxy's state: the modem, its options, its connections; ``handle`` serves one client.

    ``link_wait_s`` bounds the wait for a free link; ``on_record`` is called
    with each :class:`ConnectionRecord` as its connection ends.
    """

    def __init__(
        self,
        modem: Modem,
        *,
        link_wait_s: float = LINK_WAIT_S,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        on_record: Callable[[ConnectionRecord], None] | None = None,
    ) -> None:
        self.modem = modem
        self.link_wait_s = link_wait_s
        self.handshake_timeout_s = handshake_timeout_s
        self.on_record = on_record
        self.started = time.time()
        #: Totals over finished connections.
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._active: dict[asyncio.Task[Any], ConnectionRecord] = {}
        # CONNECTs whose client sent its FIN, oldest first: the links to reclaim first.
        self._half_closed: dict[asyncio.StreamWriter, ConnectionRecord] = {}

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        allow_remote: bool = False,
        **options: Any,
    ) -> asyncio.Server:
        """Listen on ``host``:``port`` (see :func:`check_listen_address`); ``options`` go to
        ``asyncio.start_server``."""
        check_listen_address(host, allow_remote)
        return await asyncio.start_server(self.handle, host, port, **options)

    def status(self) -> dict[str, Any]:
        """Counters and the connections in progress, JSON-ready."""
        return {
            "active": [record.as_dict() for record in self._active.values()],
            "connections": self.connections,
            "bytes_up": self.bytes_up + sum(r.bytes_up for r in self._active.values()),
            "bytes_down": self.bytes_down + sum(r.bytes_down for r in self._active.values()),
            "uptime_s": round(time.time() - self.started, 3),
        }

    async def abort_clients(self) -> None:
        """End every connection in progress (their module links are closed too), and wait."""
        tasks = list(self._active)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client: method selection, request, then relay (``asyncio.start_server``'s
        callback)."""
        record = ConnectionRecord(client=hostport(writer.get_extra_info("peername")))
        task = asyncio.current_task()
        assert task is not None
        self._active[task] = record
        try:
            await self._serve(reader, writer, record)
        except Socks5Error as exc:
            record.error = f"malformed: {exc}"
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            record.error = record.error or f"{type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            record.error = record.error or "cancelled"
            raise
        finally:
            del self._active[task]
            writer.close()
            self._finish(record)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: ConnectionRecord
    ) -> None:
        buffer = bytearray()
        async with asyncio.timeout(self.handshake_timeout_s):
            greeting = await _read_message(reader, buffer, socks5.parse_greeting)
            method = socks5.choose_method(greeting)
            writer.write(socks5.build_method_selection(method))
            if method is Method.NO_ACCEPTABLE:
                record.error = f"no acceptable method among {list(greeting.methods)}"
                await writer.drain()
                return
            try:
                request = await _read_message(reader, buffer, socks5.parse_request)
            except Socks5Error as exc:
                record.reply = exc.reply
                writer.write(socks5.build_reply(exc.reply))
                await writer.drain()
                raise
        record.command = request.command.name.lower().replace("_", "-")
        record.destination = hostport((request.host, request.port))
        if request.command is Command.CONNECT:
            await self._connect(request, reader, writer, record, bytes(buffer))
        elif request.command is Command.UDP_ASSOCIATE:
            await self._associate(request, reader, writer, record)
        else:
            await self._reply(writer, record, Reply.COMMAND_NOT_SUPPORTED)

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        record: ConnectionRecord,
        reply: Reply,
        bound: Any = ("0.0.0.0", 0),
    ) -> None:
        record.reply = reply
        writer.write(socks5.build_reply(reply, str(bound[0]), int(bound[1])))
        await writer.drain()

    async def _connect(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: ConnectionRecord,
        early: bytes,
    ) -> None:
        try:
            remote_reader, remote_writer = await open_with_link_wait(
                lambda: self.modem.open_connection(request.host, request.port),
                self.link_wait_s,
                self._reclaim_half_closed,
            )
        except (OSError, ValueError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            await self._reply(writer, record, socks5.reply_for_error(exc))
            return
        record.link = remote_writer.get_extra_info("link")
        try:
            bound = remote_writer.get_extra_info("sockname") or ("0.0.0.0", 0)
            await self._reply(writer, record, Reply.SUCCEEDED, bound)
            if early:  # sent before our reply (an optimistic client): it goes first
                remote_writer.write(early)
                record.bytes_up += len(early)
            await self._relay(reader, writer, remote_reader, remote_writer, record)
        finally:
            self._half_closed.pop(remote_writer, None)
            if record.error is None:
                remote_writer.close()
            else:
                remote_writer.transport.abort()

    def _reclaim_half_closed(self) -> None:
        """Close the link of the oldest connection whose client has sent its FIN."""
        for remote_writer, record in self._half_closed.items():
            if not remote_writer.is_closing():
                logger.info("%s: closing its half-closed link for a new request", record.client)
                remote_writer.close()  # the remote's data stops; the client gets its FIN
                return

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote_reader: asyncio.StreamReader,
        remote_writer: asyncio.StreamWriter,
        record: ConnectionRecord,
    ) -> None:
        """Copy both ways until the remote ends (or either side fails)."""

        def count_up(n: int) -> None:
            record.bytes_up += n

        def count_down(n: int) -> None:
            record.bytes_down += n

        up = asyncio.create_task(_pipe(reader, remote_writer, count_up))
        down = asyncio.create_task(_pipe(remote_reader, writer, count_down))
        pending = {up, down}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (exc := task.exception()) is not None:
                        side = "client" if task is up else "remote"
                        record.error = f"{side}: {type(exc).__name__}: {exc}"
                        writer.transport.abort()
                        return
                if down in done:
                    return  # the remote's end: the client gets its FIN as we close
                if remote_writer.can_write_eof():
                    remote_writer.write_eof()
                else:
                    logger.debug("%s half-closed; the module cannot: waiting", record.client)
                    self._half_closed[remote_writer] = record
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)

    async def _associate(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: ConnectionRecord,
    ) -> None:
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        association = UdpAssociation(
            self.modem, (str(peer[0]), request.port or None), record, self.link_wait_s
        )
        try:
            bound = await association.start(str(local[0]))
        except (OSError, ValueError) as exc:
            association.close()
            record.error = f"{type(exc).__name__}: {exc}"
            await self._reply(writer, record, socks5.reply_for_error(exc))
            return
        try:
            await self._reply(writer, record, Reply.SUCCEEDED, bound)
            # The association lives as long as this TCP connection (§7).
            while await reader.read(4096):
                pass
        finally:
            association.close()

    def _finish(self, record: ConnectionRecord) -> None:
        record.duration_s = round(time.time() - record.started, 3)
        self.connections += 1
        self.bytes_up += record.bytes_up
        self.bytes_down += record.bytes_down
        logger.info(
            "%s %s %s: reply %s, %d bytes up, %d down, %.2f s%s",
            record.client,
            record.command,
            record.destination,
            "-" if record.reply is None else f"{record.reply:#04x}",
            record.bytes_up,
            record.bytes_down,
            record.duration_s,
            f" ({record.error})" if record.error else "",
        )
        if self.on_record is not None:
            try:
                self.on_record(record)
            except Exception:
                logger.exception("on_record raised")


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, count: Callable[[int], None]
) -> None:
    """Copy until the source's end, waiting whenever the sink's buffer is full."""
    while data := await source.read(RELAY_CHUNK_BYTES):
        sink.write(data)
        count(len(data))
        await sink.drain()


async def serve_socks5(
    modem: Modem,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    allow_remote: bool = False,
    link_wait_s: float = LINK_WAIT_S,
    on_record: Callable[[ConnectionRecord], None] | None = None,
    **options: Any,
) -> asyncio.Server:
    """Start a SOCKS5 server on ``host``:``port`` that carries every connection over ``modem``.

    Returns the listening ``asyncio.Server`` (port 0 picks a free port:
    ``server.sockets[0].getsockname()``). Only loopback addresses unless
    ``allow_remote`` (the proxy asks for no password). ``link_wait_s`` bounds
    the wait for a free module link; ``on_record(record)`` sees each finished
    connection. For ``abort_clients()`` and ``status()``, make a
    :class:`Socks5Proxy` and call its ``serve``.
    """
    proxy = Socks5Proxy(modem, link_wait_s=link_wait_s, on_record=on_record)
    return await proxy.serve(host, port, allow_remote=allow_remote, **options)
