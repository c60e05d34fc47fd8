"""``LinkTransport``: an ``asyncio.Transport`` over one module link.

It honours the asyncio contract the way ``_SelectorSocketTransport`` does:
``connection_made`` is called soon after creation, ``data_received`` (or
``get_buffer``/``buffer_updated`` for a ``BufferedProtocol``) in order,
``eof_received`` then, if it returns false, ``close()``; ``connection_lost``
exactly once. Flow control works both ways: ``pause_reading`` stops the
session's ``AT+CIPRXGET`` reads for the link (data waits in the module), and
``pause_writing`` is called while the write buffer is above its high-water mark.

``get_extra_info("socket")`` is a :class:`~simsock.sockets.link_socket.LinkSocket`
(addresses and the options the module has; no file descriptor), and
``loop.sendfile(transport, file)`` works through asyncio's fallback (read the
file, write it with flow control): the module has no zero-copy path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from asyncio import constants, transports
from typing import Any

from ..at.link import Link
from ..driver.driver import Driver
from .endpoint import LinkEndpoint
from .link_socket import LinkSocket

__all__ = ["TLS_WRITE_HIGH_WATER_BYTES", "LinkTransport", "deliver", "start_tls_for"]

logger = logging.getLogger("simsock.sockets")

#: asyncio's own defaults for a socket transport (Lib/asyncio/transports.py).
DEFAULT_HIGH_WATER_BYTES = 64 * 1024


class _FlowControl(transports._FlowControlMixin):
    """asyncio's write flow-control base, built on the running loop.

    ``loop.sendfile``'s fallback accepts only ``_FlowControlMixin``
    transports (an ``isinstance`` check in Lib/asyncio/base_events.py), and
    reads their ``_protocol_paused``; LinkTransport keeps its own water marks
    under the mixin's names.
    """

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        super().__init__(extra, loop=asyncio.get_running_loop())


class LinkTransport(LinkEndpoint, _FlowControl):
    """A module link as an asyncio transport; see the module docstring."""

    # loop.start_tls() accepts only transports that say so (Lib/asyncio/base_events.py).
    _start_tls_compatible = True
    # loop.sendfile(): no native path (no file descriptor); asyncio's fallback reads
    # the file and writes it, waiting on pause_writing / resume_writing.
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(
        self,
        driver: Driver,
        link: Link,
        protocol: asyncio.BaseProtocol,
        extra: dict[str, Any] | None = None,
    ) -> None:
        extra = dict(extra or {})
        if "socket" not in extra:
            sockname = extra.get("sockname") or ("0.0.0.0", 0)
            peername = extra.get("peername") or link.peer
            extra["socket"] = LinkSocket(
                driver, link.number, sockname, peername, kind=socket.SOCK_STREAM
            )
        super().__init__(driver, link, protocol, extra)
        self._protocol_paused = False
        # The protocols told pause_writing and not yet resume_writing (see set_protocol).
        self._paused_protocols: list[asyncio.BaseProtocol] = []
        self._high_water = DEFAULT_HIGH_WATER_BYTES
        self._low_water = DEFAULT_HIGH_WATER_BYTES // 4
        # Data that arrives while reading is paused waits here (push mode cannot
        # stop the module, and a buffered read may be in flight when paused).
        self._held: list[bytes] = []
        self._held_eof = False
        # Synchronously, so no data can reach the protocol before it knows its transport.
        try:
            self._protocol.connection_made(self)
        except Exception as exc:
            logger.exception("connection_made raised")
            self._force_close(exc)
        self._attach()

    # -- reading -------------------------------------------------------------------

    def is_reading(self) -> bool:
        """Whether the session may read the link for this transport."""
        return self._link.reading and not self._closing

    def pause_reading(self) -> None:
        """Stop asking the module for data; it waits in the module's buffer."""
        self._driver.pause_reading(self._link)

    def resume_reading(self) -> None:
        """Read again (what arrived meanwhile is delivered first)."""
        if not self._link.reading:
            self._driver.resume_reading(self._link)
            if self._held or self._held_eof:
                self._loop.call_soon(self._flush_held)

    def _flush_held(self) -> None:
        while self._held and self._link.reading and not self._lost and not self._closing:
            self._deliver(self._held.pop(0))
        if self._held_eof and not self._held and self._link.reading and not self._closing:
            self._held_eof = False
            self._deliver_eof()

    def link_data(self, data: bytes) -> None:
        """(driver) Payload for the protocol; nothing after ``close()``, as in asyncio."""
        if self._lost or self._closing:
            return
        if not self._link.reading or self._held:
            self._held.append(data)
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        try:
            deliver(self._protocol, data)
        except Exception as exc:
            logger.exception("data_received raised")
            self._force_close(exc)

    def link_datagram(self, data: bytes, address: tuple[str, int]) -> None:
        """(driver) Not for a stream."""
        self.link_data(data)

    def link_eof(self) -> None:
        """(driver) The peer closed and all its data was delivered."""
        if self._lost or self._closing:
            return
        if not self._link.reading or self._held:
            self._held_eof = True
            return
        self._deliver_eof()

    def _deliver_eof(self) -> None:
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            logger.exception("eof_received raised")
            self._force_close(exc)
            return
        if not keep_open:
            self.close()

    # -- writing -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; the session cuts it into ``AT+CIPSEND`` of at most 1500 bytes."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if not data:
            return
        if self._closing or self._lost:
            # asyncio's socket transports ignore (and log) writes after close.
            logger.warning("write() on a closed link transport ignored")
            return
        self._driver.send(self._link, bytes(data))
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        """Write each buffer in turn."""
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        """The module has no half-close: ``write_eof`` is not supported."""
        return False

    def write_eof(self) -> None:
        """Not supported by the module (no TCP half-close command)."""
        raise NotImplementedError("the SIM7028 cannot half-close a TCP link")

    def get_write_buffer_size(self) -> int:
        """Bytes queued, including those sent and not yet confirmed by the module."""
        if self._lost:
            return 0
        return self._link.queued + self._link.unconfirmed_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)`` water marks."""
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks as asyncio does (high defaults to 64 KiB, low to high/4)."""
        if high is None:
            high = DEFAULT_HIGH_WATER_BYTES if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._protocol_paused or self.get_write_buffer_size() <= self._high_water:
            return
        self._protocol_paused = True
        self._tell_paused(self._protocol)

    def _tell_paused(self, protocol: asyncio.BaseProtocol) -> None:
        if any(told is protocol for told in self._paused_protocols):
            return
        self._paused_protocols.append(protocol)
        try:
            protocol.pause_writing()
        except Exception:
            logger.exception("pause_writing raised")

    def link_sent(self) -> None:
        """(driver) The module confirmed a send: resume the protocol below the low mark."""
        if self._protocol_paused and self.get_write_buffer_size() <= self._low_water:
            self._protocol_paused = False
            told, self._paused_protocols = self._paused_protocols, []
            if any(protocol is self._protocol for protocol in told):
                try:
                    self._protocol.resume_writing()
                except Exception:
                    logger.exception("resume_writing raised")

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Replace the protocol; while writing is paused, the new one is told so first.

        asyncio's model: the pause belongs to the transport and the current
        protocol hears the resume. A protocol that never heard the pause would
        then get a ``resume_writing`` alone, which ``StreamReaderProtocol``
        rejects. ``loop.sendfile`` hands the transport back so: it writes 16 KiB
        blocks until the link pauses, so a large file ends above the mark.
        """
        super().set_protocol(protocol)
        if self._protocol_paused:
            self._tell_paused(protocol)


#: Write-buffer high-water mark put on a TLS transport after the handshake.
#: asyncio's TLS layer buffers up to 512 KiB of application data by default
#: (FLOW_CONTROL_HIGH_WATER_SSL_WRITE): 45 s at 115200 baud before drain()
#: would wait. 16 KiB is one TLS record.
TLS_WRITE_HIGH_WATER_BYTES = 16 * 1024


class _HeldProtocol(asyncio.Protocol):
    """Stands in for a fresh protocol during ``loop.start_tls``; keeps what arrives early.

    ``loop.start_tls`` never calls ``connection_made`` (it upgrades a
    connection whose protocol already has it), and it hands the application
    data that came in the same read as the end of the handshake to the
    protocol before it returns. A new protocol must see ``connection_made``
    first, so this one holds that data (and an EOF or loss) until then.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data.append(bytes(data))

    def eof_received(self) -> bool:
        self.eof = True
        return True  # decided once the real protocol has it

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)


def deliver(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Hand ``data`` to ``protocol`` as a transport would (``BufferedProtocol`` too)."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buf = memoryview(protocol.get_buffer(len(view)))
            if not buf:
                raise RuntimeError("get_buffer() returned an empty buffer")
            count = min(len(buf), len(view))
            buf[:count] = view[:count]
            protocol.buffer_updated(count)
            view = view[count:]
    else:
        protocol.data_received(data)  # type: ignore[attr-defined]


async def start_tls_for(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    sslcontext: Any,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float | None = None,
) -> asyncio.Transport:
    """TLS over ``transport`` for a protocol that has not been connected yet.

    What ``loop.create_connection(ssl=...)`` / ``create_server(ssl=...)`` do for
    sockets: the handshake runs through ``loop.start_tls``, then
    ``protocol.connection_made(tls_transport)``, then any data that arrived with
    the handshake. The TLS write buffer is lowered to
    :data:`TLS_WRITE_HIGH_WATER_BYTES` so ``drain()`` follows the link.
    """
    loop = asyncio.get_running_loop()
    held = _HeldProtocol()
    tls = await loop.start_tls(
        transport,
        held,
        sslcontext,
        server_side=server_side,
        server_hostname=server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
    )
    assert tls is not None
    tls.set_write_buffer_limits(high=TLS_WRITE_HIGH_WATER_BYTES)
    tls.set_protocol(protocol)
    protocol.connection_made(tls)
    try:
        for data in held.data:
            deliver(protocol, data)
        if held.eof and not protocol.eof_received():  # type: ignore[attr-defined]
            tls.close()
    except Exception as exc:
        logger.exception("the protocol failed on data that came with the handshake")
        tls.abort()
        if held.lost is None:
            held.lost = (exc,)
    if held.lost is not None:
        protocol.connection_lost(held.lost[0])
    return tls
