"""The asyncio contract where the OS and real timing matter: on a real pty, real peers.

Each test is one of the faults of the protocol-session issue that a careless
caller or a closing peer caused; the simulation covers the module's faults
(tests/simulation/test_faults.py).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

import simsock
from simsock.emulator import VirtualModem


@pytest.fixture
async def closing_server() -> AsyncIterator[tuple[str, int]]:
    """A peer that sends a greeting and closes at once."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    async with server:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]


@pytest.fixture
async def chatty_server() -> AsyncIterator[tuple[str, int]]:
    """A peer that sends 100 bytes every 10 ms until the connection ends (at most 5 s)."""

    async def chat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(500):
                writer.write(b"c" * 100)
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(chat, "127.0.0.1", 0)
    async with server:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]


async def test_7_writing_after_the_peer_closed_is_a_broken_pipe(
    modem: simsock.Modem, closing_server: tuple[str, int]
) -> None:
    reader, writer = await modem.open_connection(*closing_server)
    assert await asyncio.wait_for(reader.read(), 10) == b"bye"  # then end of stream
    writer.write(b"x" * 200_000)  # more than the high-water mark: drain() would wait
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(writer.drain(), 10)
    await asyncio.wait_for(writer.wait_closed(), 10)
    assert not modem.engine.links


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed_at: int | None = None
        self.calls: list[str] = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.calls.append("data")

    def eof_received(self) -> bool:
        self.calls.append("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def test_8_no_callbacks_after_close(
    modem: simsock.Modem, chatty_server: tuple[str, int]
) -> None:
    transport, protocol = await modem.create_connection(_Recorder, *chatty_server)
    while "data" not in protocol.calls:
        await asyncio.sleep(0.01)
    transport.close()
    closed_at = len(protocol.calls)
    assert await asyncio.wait_for(protocol.lost, 15) is None
    assert protocol.calls[closed_at:] == ["lost"]  # no data_received / eof_received after close()


async def test_15_abort_gives_connection_lost_none(
    vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    modem = await simsock.open_modem(vm.url)
    transport, protocol = await modem.create_connection(_Recorder, *echo_server)
    transport.abort()
    await modem.close()
    assert await asyncio.wait_for(protocol.lost, 5) is None  # as asyncio, not EngineClosedError


async def test_15_ports_as_digits_or_service_names(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    host, port = echo_server
    reader, writer = await modem.open_connection(host, str(port))
    writer.write(b"digits")
    assert await asyncio.wait_for(reader.readexactly(6), 10) == b"digits"
    writer.close()
    await writer.wait_closed()
    infos = await modem.getaddrinfo("127.0.0.1", "http")
    assert infos[0][4] == ("127.0.0.1", 80)
    with pytest.raises(socket.gaierror):
        await modem.open_connection(host, "no-such-service-name")


async def test_15_a_raising_protocol_factory_leaks_no_link(
    vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    async with simsock.open_modem(vm.url, rx_mode="push") as modem:

        def broken() -> asyncio.DatagramProtocol:
            raise RuntimeError("factory failed")

        with pytest.raises(RuntimeError, match="factory failed"):
            await modem.create_datagram_endpoint(broken, remote_addr=("127.0.0.1", 9))
        for _ in range(500):
            if not modem.engine.links and not any(vm.interpreter.open_links()):
                break
            await asyncio.sleep(0.01)
        assert not modem.engine.links
        assert not any(vm.interpreter.open_links())


async def test_15_a_raising_server_factory_closes_the_client(vm: VirtualModem) -> None:
    async with simsock.open_modem(vm.url) as modem:
        calls = 0

        def broken() -> asyncio.Protocol:
            nonlocal calls
            calls += 1
            raise RuntimeError("factory failed")

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = await modem.create_server(broken, port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the module
        writer.close()
        assert calls == 1
        for _ in range(500):
            if not modem.engine.links:
                break
            await asyncio.sleep(0.01)
        assert not modem.engine.links
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


def test_15_closed_errors_carry_an_errno() -> None:
    assert simsock.EngineClosedError().errno == errno.ECONNABORTED
    assert simsock.ModuleUnresponsiveError().errno == errno.ETIMEDOUT
    assert isinstance(simsock.ModuleUnresponsiveError(), TimeoutError)


def test_15_the_library_prints_nothing_by_itself() -> None:
    # A library's warnings go where the program says; with no logging set up, nowhere.
    code = (
        "import logging, simsock\n"
        "logging.getLogger('simsock.at.session').warning('a fault the program did not ask for')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stderr == ""


async def test_15_a_raising_pause_writing_does_not_break_sendto(vm: VirtualModem) -> None:
    # asyncio logs a protocol's failing flow-control callback; it never raises into sendto().
    class Pauser(asyncio.DatagramProtocol):
        paused = 0

        def pause_writing(self) -> None:
            self.paused += 1
            raise RuntimeError("pause_writing failed")

    async with simsock.open_modem(vm.url, rx_mode="push") as modem:
        transport, protocol = await modem.create_datagram_endpoint(
            Pauser, remote_addr=("127.0.0.1", 9)
        )
        for _ in range(100):  # 140 KB queued: past the 64 KiB high-water mark
            transport.sendto(b"d" * 1400)
        assert protocol.paused == 1
        transport.abort()
