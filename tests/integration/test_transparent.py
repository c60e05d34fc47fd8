"""Transparent mode (AT+CIPMODE=1): link 0 as a raw pipe, +++ / ATO while link 1 works."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator

import pytest

import simsock
from simsock.emulator import VirtualModem

from .test_tcp_streams import echo_through, nasty_payload

GUARD_S = 0.2  # a short +++ guard time, the same on both sides, keeps the test fast


@pytest.fixture
async def raw_modem() -> AsyncIterator[simsock.Modem]:
    async with (
        VirtualModem(escape_guard_s=GUARD_S) as vm,
        simsock.open_modem(vm.url, transparent=True, escape_guard_s=GUARD_S) as modem,
    ):
        yield modem


async def test_transparent_mebibyte_echo(
    raw_modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    payload = nasty_payload(1024 * 1024, seed=21) + b"\r\nCLOSED"  # marker-like, not at the end
    received = await echo_through(raw_modem, echo_server, payload)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    # the raw pipe carries no AT framing: far fewer commands than 1 MiB of CIPSEND/CIPRXGET
    assert raw_modem.engine.stats.commands < 100


async def test_commands_between_escapes_while_the_raw_link_stays_open(
    raw_modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    reader0, writer0 = await raw_modem.open_connection(*echo_server)
    assert writer0.get_extra_info("link") == 0
    writer0.write(b"raw first")
    assert await asyncio.wait_for(reader0.readexactly(9), 10) == b"raw first"
    assert raw_modem.engine.data_mode

    # each command escapes with +++, runs in command mode, and ATO returns to data mode
    assert await raw_modem.ip_address()
    assert any(line.startswith("+CSQ") for line in await raw_modem.command("AT+CSQ"))
    payload = nasty_payload(20_000, seed=22)
    writer0.write(payload)
    assert await asyncio.wait_for(reader0.readexactly(len(payload)), 20) == payload
    # the module refuses client opens on link 1 in transparent mode (3.3)
    with pytest.raises(OSError, match="CIPOPEN"):
        await raw_modem.open_connection(*echo_server)
    writer0.write(b"still raw")
    assert await asyncio.wait_for(reader0.readexactly(9), 20) == b"still raw"
    writer0.close()
    await asyncio.wait_for(writer0.wait_closed(), 20)
    assert raw_modem.engine.links == {}
    assert not raw_modem.engine.data_mode


async def test_peer_close_in_data_mode(raw_modem: simsock.Modem) -> None:
    async def blurt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * 5000 + b"\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(blurt, "127.0.0.1", 0)
    async with server:
        reader, writer = await raw_modem.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        assert await asyncio.wait_for(reader.read(), 10) == b"x" * 5000 + b"\r\n"
        writer.close()
        await writer.wait_closed()
    assert not raw_modem.engine.data_mode
    assert await raw_modem.ip_address()


async def test_9_closed_sent_by_the_peer_is_data_not_a_close(raw_modem: simsock.Modem) -> None:
    # The peer's bytes end like the module's CLOSED (4.2), then a pause: the
    # session checks with an escape before it believes it, and the link stays.
    async def tricky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\r\nCLOSED\r\n")
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(tricky, "127.0.0.1", 0)
    async with server:
        reader, writer = await raw_modem.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        greeting = b"hello\r\nCLOSED\r\n"
        assert await asyncio.wait_for(reader.readexactly(len(greeting)), 10) == greeting
        await asyncio.sleep(5 * GUARD_S)  # the pause after the marker
        assert any(line.startswith("+CSQ") for line in await raw_modem.command("AT+CSQ"))
        writer.write(b"still a link")  # not sent to the module as a command, nor lost
        assert await asyncio.wait_for(reader.readexactly(12), 10) == b"still a link"
        assert raw_modem.engine.links  # the link is still open
        writer.close()
        await writer.wait_closed()


async def test_escape_waits_for_the_line_to_carry_what_was_written(
    echo_server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """At 115200 baud a 4 KiB raw write takes 0.36 s on the wire: the guard counts from then."""
    payload = nasty_payload(16 * 1024, seed=23)
    async with (
        VirtualModem(escape_guard_s=GUARD_S, baudrate=115200) as vm,
        simsock.open_modem(vm.url, transparent=True, escape_guard_s=GUARD_S) as modem,
    ):
        reader, writer = await modem.open_connection(*echo_server)
        writer.write(payload)
        await writer.drain()
        assert await modem.ip_address()  # escapes right after the queue drained
        received = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        writer.close()
        await writer.wait_closed()
    assert "no OK after +++" not in caplog.text  # the first escape was seen


async def test_a_large_write_then_a_command_sends_no_escape_inside_the_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """256 KiB is 2.8 s of line at 921600: ``+++`` waits until the line has carried it all.

    The session used to hand the whole write to the port at once and count the
    guard time from a line model capped at 20 KiB, so ``+++`` went out in the
    middle of the data, the module took it as data, and the peer received it.
    """
    payload = nasty_payload(256 * 1024, seed=24)
    got = bytearray()
    done = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            got.extend(chunk)
            if len(got) >= len(payload):
                done.set()
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    async with (
        server,
        VirtualModem(escape_guard_s=GUARD_S, baudrate=921600) as vm,
        simsock.open_modem(vm.url, transparent=True, escape_guard_s=GUARD_S) as modem,
    ):
        _, writer = await modem.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(payload)
        assert await asyncio.wait_for(modem.ip_address(), 30)
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(0.2)  # anything after the payload would have arrived too
        writer.close()
        await writer.wait_closed()
    assert len(got) == len(payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert "no OK after +++" not in caplog.text


async def test_servers_use_index_one_in_transparent_mode(raw_modem: simsock.Modem) -> None:
    """Server 0's clients would be raw links: simsock serves on server 1, in command mode."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with await raw_modem.start_server(echo, port) as server:
        assert server.index == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
        writer.close()
        await writer.wait_closed()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Gather(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.addresses: set[tuple[str, int]] = set()
        self.more = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.data += data
        self.addresses.add(addr)
        self.more.set()


async def test_udp_in_transparent_mode_is_a_raw_pipe_to_one_peer() -> None:
    """3.3.3: link 0 opened with the remote address; bytes flow raw both ways."""
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
    address = echo.get_extra_info("sockname")
    written: list[bytes] = []
    async with (
        VirtualModem(escape_guard_s=GUARD_S) as vm,
        simsock.open_modem(
            vm.url,
            transparent=True,
            escape_guard_s=GUARD_S,
            wire_tap=lambda d, b: written.append(b) if d == "->" else None,
        ) as modem,
    ):
        with pytest.raises(OSError, match="remote_addr"):
            await modem.create_datagram_endpoint(asyncio.DatagramProtocol)
        transport, gather = await modem.create_datagram_endpoint(_Gather, remote_addr=address)
        assert transport.get_extra_info("link") == 0
        payload = nasty_payload(12_000, seed=25)
        for offset in range(0, len(payload), 1000):  # one at a time: UDP may drop a burst
            transport.sendto(payload[offset : offset + 1000])
            while len(gather.data) < offset + 1000:
                gather.more.clear()
                await asyncio.wait_for(gather.more.wait(), 10)
        assert modem.engine.data_mode
        assert await modem.ip_address()  # +++, a command, and ATO
        transport.sendto(b"after the escape")
        while not gather.data.endswith(b"after the escape"):
            gather.more.clear()
            await asyncio.wait_for(gather.more.wait(), 10)
        transport.close()
        await asyncio.sleep(0.5)
    echo.close()
    expected = payload + b"after the escape"
    assert hashlib.sha256(gather.data).digest() == hashlib.sha256(expected).digest()
    assert gather.addresses == {address}
    assert f'AT+CIPOPEN=0,"UDP","127.0.0.1",{address[1]},0\r'.encode() in b"".join(written)


async def test_transparent_server_client_is_a_raw_pipe_on_link_zero(
    raw_modem: simsock.Modem,
) -> None:
    """3.4.1: server 0's client is +CLIENT: 0,0,... then CONNECT 115200, a raw pipe."""
    payload = nasty_payload(200_000, seed=26) + b"\r\nCLOSED\r\n+CLIENT: 1,1,x:1\r\n"
    served: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await reader.readexactly(len(payload))
        writer.write(got)
        await writer.drain()
        # commands still work: +++, AT+IPADDR, ATO, while the client stays connected
        assert await raw_modem.ip_address()
        writer.write(b"after the escape")
        await writer.drain()
        served.set_result((writer.get_extra_info("link"), got))
        writer.close()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with await raw_modem.start_server(echo, port, transparent=True) as server:
        assert server.index == 0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
        tail = await asyncio.wait_for(reader.read(), 20)  # then the module closes it
        link, got = await asyncio.wait_for(served, 10)
        writer.close()
        await writer.wait_closed()
    assert link == 0
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert tail == b"after the escape"
    assert raw_modem.engine.links == {}
    assert not raw_modem.engine.data_mode


async def test_close_right_after_a_large_write_sends_every_byte_first(
    raw_modem: simsock.Modem,
) -> None:
    """close() flushes the raw link's queue before +++ and AT+CIPCLOSE, as asyncio does."""
    payload = nasty_payload(150_000, seed=27)
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    async with server:
        _, writer = await raw_modem.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(payload)
        writer.close()  # no drain(): most of it is still queued in the session
        await asyncio.wait_for(writer.wait_closed(), 30)
        got = await asyncio.wait_for(received, 10)
    assert len(got) == len(payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert raw_modem.engine.links == {}
