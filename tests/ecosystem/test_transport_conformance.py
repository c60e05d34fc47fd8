"""Our LinkTransport against asyncio's own socket transport: same calls, same callbacks.

Each scenario drives a transport through a sequence of calls against the
same kind of real peer on 127.0.0.1, once over a host socket
(``loop.create_connection``) and once over a module link
(``modem.create_connection``), and compares the protocol callbacks both
receive (data callbacks merged, since the chunking differs) and what the
peer received. Further: ``loop.sendfile`` over a link (asyncio's fallback),
and ``connection_lost(None)`` when the modem closes after ``abort()`` or
``close()``, as asyncio gives after those calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import simsock
from simsock.emulator import VirtualModem

from .conftest import cipopens

PAYLOAD = os.urandom(40_000)


class Recorder(asyncio.Protocol):
    """Records every callback; ``eof_keeps_open`` is what eof_received returns."""

    def __init__(self, eof_keeps_open: bool = False) -> None:
        self.events: list[Any] = []
        self.data = bytearray()
        self.eof_keeps_open = eof_keeps_open
        self.lost = asyncio.Event()
        self.got_data = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def _event(self, name: str) -> None:
        if name == "data" and self.events and self.events[-1] == "data":
            return
        self.events.append(name)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._event("connection_made")

    def data_received(self, data: bytes) -> None:
        self.data += data
        self._event("data")
        self.got_data.set()

    def eof_received(self) -> bool:
        self._event("eof_received")
        assert self.transport is not None
        self.events.append(("is_closing", self.transport.is_closing()))
        return self.eof_keeps_open

    def pause_writing(self) -> None:
        self._event("pause_writing")

    def resume_writing(self) -> None:
        self._event("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self._event(f"connection_lost({type(exc).__name__ if exc else None})")
        self.lost.set()


class BufferedRecorder(Recorder, asyncio.BufferedProtocol):
    """The same, as a BufferedProtocol (get_buffer / buffer_updated)."""

    def __init__(self, eof_keeps_open: bool = False) -> None:
        super().__init__(eof_keeps_open)
        self._buffer = bytearray(4096)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buffer[:nbytes]))


@dataclass
class Peer:
    """A real server on 127.0.0.1 that plays one role per scenario."""

    role: str
    received: bytearray = field(default_factory=bytearray)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.role == "echo_then_close":
                self.received += await reader.readexactly(len(PAYLOAD))
                writer.write(bytes(self.received))
                await writer.drain()
            elif self.role == "send_then_wait":
                writer.write(PAYLOAD)
                await writer.drain()
                self.received += await reader.read()
            elif self.role == "send_then_close":
                writer.write(PAYLOAD)
                await writer.drain()
            elif self.role == "sink":
                while data := await reader.read(65536):
                    self.received += data
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.done.set()


Connect = Callable[[Callable[[], Recorder], str, int], Awaitable[tuple[asyncio.Transport, Any]]]


async def run(
    connect: Connect, role: str, script: str, factory: Callable[[], Recorder]
) -> tuple[Any, ...]:
    peer = Peer(role)
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        transport, recorder = await connect(factory, "127.0.0.1", port)
        calls: list[Any] = [("protocol is ours", transport.get_protocol() is recorder)]
        async with asyncio.timeout(20):
            if script == "write_and_let_the_peer_close":
                transport.writelines([PAYLOAD[:1000], PAYLOAD[1000:]])
                await recorder.lost.wait()
            elif script == "pause_then_resume_reading":
                transport.pause_reading()
                calls.append(("is_reading", transport.is_reading()))
                await asyncio.sleep(0.3)
                calls.append(("data while paused", len(recorder.data)))
                transport.resume_reading()
                calls.append(("is_reading", transport.is_reading()))
                while len(recorder.data) < len(PAYLOAD):
                    recorder.got_data.clear()
                    await recorder.got_data.wait()
                transport.close()
                calls.append(("is_closing", transport.is_closing()))
                await recorder.lost.wait()
            elif script == "write_then_close_flushes":
                transport.write(PAYLOAD)
                transport.close()
                calls.append(("is_closing", transport.is_closing()))
                transport.write(b"after close")  # ignored, as asyncio does (it only logs)
                await recorder.lost.wait()
            elif script == "abort":
                transport.abort()
                calls.append(("is_closing", transport.is_closing()))
                await recorder.lost.wait()
            elif script == "eof_kept_open_then_close":
                while len(recorder.data) < len(PAYLOAD):
                    recorder.got_data.clear()
                    await recorder.got_data.wait()
                await asyncio.sleep(0.2)
                transport.close()
                await recorder.lost.wait()
            await peer.done.wait()
        # (after connection_lost asyncio's transports drop the protocol, get_protocol() is
        # None; ours keep it: not compared)
        return (
            recorder.events,
            calls,
            hashlib.sha256(recorder.data).hexdigest(),
            hashlib.sha256(peer.received).hexdigest(),
        )


SCENARIOS = [
    ("echo_then_close", "write_and_let_the_peer_close", False),
    ("send_then_wait", "pause_then_resume_reading", False),
    ("sink", "write_then_close_flushes", False),
    ("sink", "abort", False),
    ("send_then_close", "eof_kept_open_then_close", True),  # eof_received returns True
]


@pytest.mark.parametrize("factory", [Recorder, BufferedRecorder])
@pytest.mark.parametrize(("role", "script", "keep_open"), SCENARIOS)
async def test_same_callbacks_as_a_socket_transport(
    modem: simsock.Modem, role: str, script: str, keep_open: bool, factory: type[Recorder]
) -> None:
    loop = asyncio.get_running_loop()

    def make() -> Recorder:
        return factory(keep_open)

    on_socket = await run(loop.create_connection, role, script, make)
    on_module = await run(modem.create_connection, role, script, make)
    assert on_module == on_socket
    assert on_socket[0][0] == "connection_made"
    assert on_socket[0][-1] == "connection_lost(None)"


async def test_set_protocol_and_write_buffer_limits(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    first, second = Recorder(), Recorder()
    transport, _ = await modem.create_connection(lambda: first, *echo_server)
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)  # asyncio's defaults
    transport.set_write_buffer_limits(high=2000)
    assert transport.get_write_buffer_limits() == (500, 2000)
    with pytest.raises(ValueError, match="high"):
        transport.set_write_buffer_limits(high=1, low=2)
    transport.write(PAYLOAD)
    assert first.events[-1] == "pause_writing"  # above 2000 bytes queued
    while len(first.data) < len(PAYLOAD):
        first.got_data.clear()
        await first.got_data.wait()
    assert "resume_writing" in first.events
    assert transport.get_write_buffer_size() == 0
    transport.set_protocol(second)
    assert transport.get_protocol() is second
    transport.write(b"to the second")
    await asyncio.wait_for(second.got_data.wait(), 10)
    assert bytes(second.data) == b"to the second"
    assert not transport.can_write_eof()  # the module has no half-close
    with pytest.raises(NotImplementedError):
        transport.write_eof()
    transport.close()
    await asyncio.wait_for(second.lost.wait(), 10)


# -- loop.sendfile ---------------------------------------------------------------------

FILE_BYTES = 300_000


async def _sink_server() -> tuple[asyncio.Server, asyncio.Queue[bytes]]:
    """A host server that keeps what each client sent, up to its end."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await reader.read())
        writer.close()

    return await asyncio.start_server(keep, "127.0.0.1", 0), got


@pytest.mark.parametrize(("offset", "count"), [(0, None), (1000, 200_000)])
async def test_loop_sendfile_over_a_link(
    modem: simsock.Modem, tmp_path: Any, offset: int, count: int | None
) -> None:
    """asyncio's fallback (read, write, wait for resume_writing) carries a real file."""
    content = os.urandom(FILE_BYTES)
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    from_file = content[offset : offset + count if count else None]
    loop = asyncio.get_running_loop()
    server, got = await _sink_server()
    async with server:
        recorder = Recorder()
        transport, _ = await modem.create_connection(
            lambda: recorder, "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        sent_before = modem.engine.stats.payload_sent
        with path.open("rb") as file:
            async with asyncio.timeout(25):
                sent = await loop.sendfile(transport, file, offset, count)
            assert sent == len(from_file)
            assert file.tell() == offset + len(from_file)  # as asyncio leaves it
        # the transport is the application's again: its protocol, reading on
        assert transport.get_protocol() is recorder
        assert transport.is_reading()
        transport.write(b"and the tail")
        transport.close()
        await asyncio.wait_for(recorder.lost.wait(), 25)
        arrived = await asyncio.wait_for(got.get(), 10)
    expected = from_file + b"and the tail"
    assert len(arrived) == len(expected)
    assert hashlib.sha256(arrived).digest() == hashlib.sha256(expected).digest()
    assert modem.engine.stats.payload_sent - sent_before == len(expected)  # via AT+CIPSEND
    assert cipopens(modem) == 1
    # flow control calls come in pairs: the application's protocol never gets a
    # resume_writing it was not paused for (StreamReaderProtocol asserts on that)
    assert recorder.events[0] == "connection_made"
    assert recorder.events[-1] == "connection_lost(None)"
    assert recorder.events[1:-1] in ([], ["pause_writing", "resume_writing"])


# -- closing the modem after the application closed the transport -----------------------


@pytest.mark.parametrize("how", ["abort", "close", "close_tls"])
async def test_modem_closing_after_the_app_closed_reports_no_error(
    vm: VirtualModem, how: str, certs: Any
) -> None:
    """asyncio gives connection_lost(None) after abort()/close(); so does a link whose
    modem is closed meanwhile (the link was still flushing or closing)."""
    server, _ = await _sink_server() if how != "close_tls" else await _tls_sink(certs.server)
    async with server:
        port = server.sockets[0].getsockname()[1]
        modem = await simsock.open_modem(vm.url, trace_lines=100)
        recorder = Recorder()
        if how == "close_tls":
            transport, _ = await modem.create_connection(
                lambda: recorder, "localhost", port, ssl=certs.client
            )
        else:
            transport, _ = await modem.create_connection(lambda: recorder, "127.0.0.1", port)
        transport.write(PAYLOAD)  # still queued when the modem goes
        if how == "abort":
            transport.abort()
        else:
            transport.close()
        await modem.close()
        await asyncio.wait_for(recorder.lost.wait(), 10)
    assert cipopens(modem) == 1
    assert recorder.events[-1] == "connection_lost(None)"


async def _tls_sink(context: Any) -> tuple[asyncio.Server, asyncio.Queue[bytes]]:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            got.put_nowait(await reader.read())
        writer.close()

    return await asyncio.start_server(keep, "127.0.0.1", 0, ssl=context), got


async def test_an_error_before_close_is_still_reported(vm: VirtualModem) -> None:
    """The modem closing under an open link is an error for the protocol (not hidden)."""
    server, _ = await _sink_server()
    async with server:
        modem = await simsock.open_modem(vm.url)
        recorder = Recorder()
        await modem.create_connection(
            lambda: recorder, "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        await modem.close()
        await asyncio.wait_for(recorder.lost.wait(), 10)
    assert recorder.events[-1] == "connection_lost(EngineClosedError)"
