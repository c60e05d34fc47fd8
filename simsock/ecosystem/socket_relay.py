"""Blocking code over the module: a real ``socket.socket`` relayed to a module link.

``await socket_for(modem, host, port)`` returns one end of a
``socket.socketpair()``; tasks on the modem's loop relay the other end to a
link opened with ``modem.create_connection``. The returned socket is a host
socket like any other, so code that wants one (``sock.sendall``/``sock.recv``
in a thread, paho-mqtt, ``ssl.wrap_socket``, ``select``) runs over the module.
:func:`~simsock.ecosystem.udp_relay.udp_socket_for` does the same for UDP.

How it behaves, and why:

- Backpressure both ways, nothing buffered without a bound. Towards the link
  the relay reads the socketpair only after the link's write buffer has
  drained below its high-water mark. Towards the application it holds about
  :data:`RELAY_HIGH_WATER_BYTES` of link data (plus the chunk the socketpair is
  taking and the deliveries already in flight when it paused); above that
  the link is paused (no ``AT+CIPRXGET``: the data waits in the module) until
  the socketpair, whose own kernel buffers are the rest of the pipe, takes it.
- The relay's tasks are owned by a module-level registry until they end: a
  task referenced only by the loop can be garbage-collected in mid-transfer.
- End of stream and close: the peer's end of stream becomes
  ``shutdown(SHUT_WR)`` on the relay's end (the application reads EOF). The
  module has no TCP half-close, so the application's ``shutdown(SHUT_WR)``
  keeps the link open for reading; the link is closed (after what was written
  is sent) when the application closes its socket, which the relay sees as
  end of stream plus a hang-up on the pair (``POLLHUP``). A link error, or the
  peer closing, closes the relay's end: the application reads EOF, then gets
  ``EPIPE`` or ``ECONNRESET``. The error is kept as ``relay.exception``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import ssl as ssl_module
import weakref
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sockets.modem import Modem

__all__ = [
    "RELAY_CHUNK_BYTES",
    "RELAY_HIGH_WATER_BYTES",
    "RelayedSocket",
    "SocketRelay",
    "WriteGate",
    "socket_for",
    "socket_for_nowait",
]

logger = logging.getLogger("simsock.ecosystem")

#: Largest read from the socketpair, and largest write to it, in one go.
RELAY_CHUNK_BYTES = 16 * 1024
#: Link data held for the application before the link is paused; asyncio's
#: transport default high-water mark. Reading resumes below a quarter of it.
RELAY_HIGH_WATER_BYTES = 64 * 1024
RELAY_LOW_WATER_BYTES = RELAY_HIGH_WATER_BYTES // 4
#: After the application's ``shutdown(SHUT_WR)``: how often to look whether
#: it has closed its socket (the kernel does not wake anyone for that).
HALF_CLOSE_POLL_S = 0.25

#: Relays whose tasks or link are still running; see the module docstring.
_LIVE: set[SocketRelay] = set()


def _hung_up(sock: socket.socket) -> bool:
    """Whether the other end of the pair is closed (not only shut down for writing)."""
    poller = select.poll()
    poller.register(sock.fileno(), 0)  # POLLHUP and POLLERR are always reported
    return any(event & (select.POLLHUP | select.POLLERR) for _, event in poller.poll(0))


class RelayedSocket(socket.socket):
    """The application's end: a real socket; ``relay`` is the loop's side of it.

    Closing it (or dropping it) tells the relay at once, from any thread. A
    socket handed on with ``detach()`` (``ssl.wrap_socket`` does that) is
    watched through the pair itself.
    """

    def __init__(
        self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None
    ) -> None:
        super().__init__(family, type, proto, fileno)
        #: The relay behind this socket (``None`` on a ``dup()``).
        self.relay: SocketRelay | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @classmethod
    def _adopt(cls, sock: socket.socket, relay: SocketRelay) -> RelayedSocket:
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.relay = relay
        adopted._finalizer = weakref.finalize(adopted, relay.app_closed_threadsafe)
        adopted._finalizer.atexit = False
        return adopted

    def _real_close(self, *args: Any) -> None:  # socket.socket's one place that closes the fd
        super()._real_close(*args)  # type: ignore[misc]
        if self._finalizer is not None:
            self._finalizer()

    def detach(self) -> int:
        """As ``socket.detach``; the relay then watches the pair, not this object."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        return super().detach()


class SocketRelay:
    """The loop's side of a :class:`RelayedSocket`: the link, the tasks, the bytes held."""

    def __init__(self, inner: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        inner.setblocking(False)
        self._inner = inner
        self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.Transport | asyncio.DatagramTransport | None = None
        self._link_lost = False
        self._done = loop.create_future()
        self._app_gone = asyncio.Event()
        #: The link's error, or the opening's, once there is one.
        self.exception: BaseException | None = None
        #: The most bytes the relay held at once (see :attr:`held_bytes`).
        self.peak_held_bytes = 0
        _LIVE.add(self)

    # -- what callers look at ------------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport | asyncio.DatagramTransport | None:
        """The module link's transport, once open."""
        return self._transport

    @property
    def held_bytes(self) -> int:
        """Bytes in the relay's memory now: link data for the application and unsent writes."""
        return 0

    def _note_held(self) -> None:
        self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)

    def done(self) -> bool:
        """Whether the link and the relay's tasks are over and its end is closed."""
        return self._done.done()

    async def wait_closed(self) -> None:
        """Wait until :meth:`done`."""
        await asyncio.shield(self._done)

    # -- life cycle ----------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = self._loop.create_task(coroutine, name=f"simsock-relay-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("relay task failed", exc_info=task.exception())
            self._fail(task.exception())
        self._finish_if_done()

    def _set_transport(self, transport: asyncio.Transport | asyncio.DatagramTransport) -> None:
        self._transport = transport

    def _lost(self, exc: BaseException | None) -> None:
        """(link protocol) The link is over."""
        self._link_lost = True
        if exc is not None and self.exception is None:
            self.exception = exc
        self._finish_if_done()

    def _fail(self, exc: BaseException | None) -> None:
        """The relay cannot go on: close the link and, through ``_finish_if_done``, our end."""
        if exc is not None and self.exception is None:
            self.exception = exc
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._transport is not None:
            self._transport.abort()
        else:
            self._link_lost = True
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if self._tasks or not self._link_lost or self._done.done():
            return
        self._inner.close()
        _LIVE.discard(self)
        self._done.set_result(None)

    def app_closed_threadsafe(self) -> None:
        """The application closed (or dropped) its socket; any thread may call this."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell
            self._loop.call_soon_threadsafe(self._app_closed)

    def _app_closed(self) -> None:
        self._app_gone.set()


class WriteGate:
    """A link protocol's side of write flow control: ``drain()`` waits while it is paused."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drain(self) -> None:
        """Wait until the link's write buffer is below its low-water mark, or the link is gone."""
        await self._writable.wait()


# -- TCP ---------------------------------------------------------------------------------


class _LinkSide(WriteGate, asyncio.Protocol):
    """The relay's protocol on the link: a bounded queue in, ``drain()`` out."""

    def __init__(self, relay: _StreamRelay) -> None:
        super().__init__()
        self._relay = relay
        self._chunks: deque[bytes] = deque()
        self.queued = 0
        self._eof = False
        self._paused = False
        self._readable = asyncio.Event()
        self.lost = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self.queued += len(data)
        self._readable.set()
        self._relay._note_held()
        if not self._paused and self.queued > RELAY_HIGH_WATER_BYTES:
            assert self.transport is not None
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._readable.set()
        return True  # the relay closes the link when both directions are done

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._eof = True
        self._readable.set()
        self._writable.set()
        self._relay._lost(exc)

    async def read(self) -> bytes:
        """Up to :data:`RELAY_CHUNK_BYTES` of link data; ``b""`` at the end."""
        while not self._chunks and not self._eof:
            self._readable.clear()
            await self._readable.wait()
        parts: list[bytes] = []
        size = 0
        while self._chunks and size + len(self._chunks[0]) <= RELAY_CHUNK_BYTES:
            parts.append(self._chunks.popleft())
            size += len(parts[-1])
        if not parts and self._chunks:  # one delivery larger than a chunk
            parts.append(self._chunks.popleft())
            size = len(parts[0])
        self.queued -= size
        return b"".join(parts)

    def consumed(self) -> None:
        """The application's socket took what ``read`` gave: read the link again if low."""
        transport = self.transport
        if self._paused and self.queued <= RELAY_LOW_WATER_BYTES and transport is not None:
            self._paused = False
            if not transport.is_closing():
                transport.resume_reading()


class _StreamRelay(SocketRelay):
    """Relays a ``SOCK_STREAM`` pair and a TCP link; see the module docstring."""

    def __init__(self, inner: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(inner, loop)
        self._side = _LinkSide(self)
        self._in_hand = 0
        self._uplink: asyncio.Task[None] | None = None

    @property
    def held_bytes(self) -> int:
        """Link data not yet taken by the application's socket, plus unsent link writes."""
        transport = self._side.transport
        unsent = 0 if transport is None else transport.get_write_buffer_size()
        return self._side.queued + self._in_hand + unsent

    async def open(self, modem: Modem, host: str, port: int | str, **options: Any) -> None:
        """Open the link and start relaying; raises what ``create_connection`` raises."""
        transport, _ = await modem.create_connection(lambda: self._side, host, port, **options)
        self._set_transport(transport)
        self._uplink = self._spawn(self._to_link(), "uplink")
        self._spawn(self._to_app(), "downlink")

    async def open_or_close(self, modem: Modem, host: str, port: int | str, **options: Any) -> None:
        """:meth:`open`, for a task: a failure closes the relay's end (the app reads EOF)."""
        try:
            await self.open(modem, host, port, **options)
        except Exception as exc:
            logger.warning("relayed connection to %s:%s failed: %r", host, port, exc)
            self._fail(exc)

    def _lost(self, exc: BaseException | None) -> None:
        # Nothing the application writes can leave now; what came in is still delivered.
        if self._uplink is not None:
            self._uplink.cancel()
        super()._lost(exc)

    async def _to_link(self) -> None:
        """Application → link, one chunk at a time, each after the link drained."""
        transport = self._side.transport
        assert transport is not None
        try:
            while data := await self._loop.sock_recv(self._inner, RELAY_CHUNK_BYTES):
                transport.write(data)
                self._note_held()
                await self._side.drain()
                if self._side.lost:
                    return
        except ConnectionError:
            pass  # the application reset its end: it is gone
        else:
            # End of stream: closed, or only shut down for writing (the module
            # cannot half-close, so the link stays open for the other way).
            while not (_hung_up(self._inner) or self._app_gone.is_set() or self._side.lost):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._app_gone.wait(), HALF_CLOSE_POLL_S)
        transport.close()  # sends what is queued, then AT+CIPCLOSE

    async def _to_app(self) -> None:
        """Link → application; the link's end of stream becomes ``shutdown(SHUT_WR)``."""
        transport = self._side.transport
        assert transport is not None
        try:
            while data := await self._side.read():
                self._in_hand = len(data)
                try:
                    await self._loop.sock_sendall(self._inner, data)
                finally:
                    self._in_hand = 0
                self._side.consumed()
        except OSError:
            transport.close()  # the application closed its socket: nobody reads
            return
        if self.exception is not None:
            self._fail(self.exception)  # an error, not an end: the app sees its end closed
            return
        with contextlib.suppress(OSError):
            self._inner.shutdown(socket.SHUT_WR)


def _stream_pair(loop: asyncio.AbstractEventLoop) -> tuple[RelayedSocket, _StreamRelay]:
    outer, inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    relay = _StreamRelay(inner, loop)
    return RelayedSocket._adopt(outer, relay), relay


async def socket_for(
    modem: Modem,
    host: str,
    port: int | str,
    *,
    ssl: ssl_module.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
    local_port: int | None = None,
) -> RelayedSocket:
    """A connected, blocking ``socket.socket`` whose bytes go through a module TCP link.

    Arguments and errors are those of ``modem.create_connection`` (the
    socket is returned once the link is open). With ``ssl``, TLS runs on the
    loop and the socket carries plaintext; without it, code can put its own
    TLS on the socket (``ssl.SSLContext.wrap_socket``), verified on the host.
    The socket may be used from any thread. See the module docstring for
    flow control, end of stream and close.
    """
    sock, relay = _stream_pair(asyncio.get_running_loop())
    try:
        await relay.open(
            modem,
            host,
            port,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            local_port=local_port,
        )
    except BaseException as exc:
        relay._fail(exc)
        sock.close()
        raise
    return sock


def socket_for_nowait(
    modem: Modem, host: str, port: int | str, *, local_port: int | None = None
) -> RelayedSocket:
    """:func:`socket_for` without waiting: for code on the loop's thread that cannot block.

    The socket is returned at once and the link opens in the background; what
    is written meanwhile waits in the socketpair. If the link cannot be
    opened the socket reads EOF (the error is ``sock.relay.exception``). No
    ``ssl`` here: a TLS handshake would have to wait for the link.
    """
    sock, relay = _stream_pair(asyncio.get_running_loop())
    relay._spawn(relay.open_or_close(modem, host, port, local_port=local_port), "open")
    return sock
