"""Every flow of the note's section 3, driven through simsock's public API.

``tests/emulator/test_note_flows.py`` replays the note's bytes against the
virtual module; here the same flows run as an application would write them,
over a real pty, against real peers on 127.0.0.1. Each test checks what
arrived (length and SHA-256), and that the library spoke the note's commands
for it (from the wire tap), so a flow cannot pass by going another way.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

import simsock
from simsock.emulator import VirtualModem

from .test_tcp_streams import echo_through, nasty_payload

GUARD_S = 0.2


class Wire:
    """What the library wrote to the module, as one byte string.

    Commands are found anywhere in it: payloads sit between them, and the
    payloads here are random bytes that never spell a command.
    """

    def __init__(self) -> None:
        self.written = bytearray()

    def tap(self, direction: str, data: bytes) -> None:
        if direction == "->":
            self.written += data

    def sent(self, pattern: str) -> bool:
        """Whether a command matching ``pattern`` (a regex) was written."""
        return re.search(pattern.encode(), self.written) is not None


@asynccontextmanager
async def modem_on(**options: Any) -> AsyncIterator[tuple[simsock.Modem, Wire]]:
    """A virtual module, and the library on it, its writes tapped."""
    wire = Wire()
    guard = {"escape_guard_s": GUARD_S} if options.get("transparent") else {}
    async with (
        VirtualModem(**guard) as vm,
        simsock.open_modem(vm.url, wire_tap=wire.tap, **guard, **options) as modem,
    ):
        yield modem, wire


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Collect(asyncio.DatagramProtocol):
    """A datagram protocol that keeps what it is given, and wakes a waiter."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Any]] = []
        self.more = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr))
        self.more.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.datagrams) < count:
                self.more.clear()
                await self.more.wait()


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


@pytest.fixture
async def udp_echo() -> AsyncIterator[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    yield transport.get_extra_info("sockname")[:2]
    transport.close()


# --- 3.1 the context --------------------------------------------------------------------


async def test_3_1_context_up_address_down_and_up_again() -> None:
    async with modem_on() as (modem, wire):
        assert any(line.startswith("+CSQ:") for line in await modem.command("AT+CSQ"))  # 3.1.1
        assert await modem.ip_address() == "10.64.0.2"  # 3.1.3
        await modem.network_close()  # 3.1.4
        assert not await modem.network_open()
        with pytest.raises(OSError, match=r"(?i)network"):  # +IP ERROR: Network not opened
            await modem.ip_address()
        await modem.network_reopen()
        assert await modem.ip_address() == "10.64.0.2"
    assert wire.sent(r"AT\+NETCLOSE\r")
    assert wire.sent(r"AT\+IPADDR\r")


async def test_3_1_3_ipv6_context() -> None:
    async with modem_on(ip_family=6) as (modem, wire):
        assert await modem.ip_address() == "2001:db8:64::2"
    assert wire.sent(r"AT\+CSOCKETPN=1,6\r")


# --- 3.2 TCP client ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reads"),
    [
        ({"rx_mode": "push"}, None),  # 3.2.1: pushed as +IPD
        ({"rx_mode": "buffer"}, r"AT\+CIPRXGET=2,\d"),  # 3.2.2: read as it is
        ({"rx_mode": "buffer", "hex_reads": True}, r"AT\+CIPRXGET=3,\d"),  # 3.2.2: read in hex
        ({"transparent": True}, None),  # 3.2.3: a raw pipe
    ],
    ids=["3.2.1-push", "3.2.2-buffer", "3.2.2-hex", "3.2.3-transparent"],
)
async def test_3_2_tcp_client(
    options: dict[str, Any], reads: str | None, echo_server: tuple[str, int]
) -> None:
    payload = nasty_payload(60_000, seed=31)
    async with modem_on(**options) as (modem, wire):
        echoed = await echo_through(modem, echo_server, payload)
    assert len(echoed) == len(payload)
    assert sha(echoed) == sha(payload)
    assert wire.sent(r'AT\+CIPOPEN=\d,"TCP"')
    if options.get("transparent"):
        assert wire.sent(r"AT\+CIPMODE=1\r")
        assert not wire.sent(r"AT\+CIPSEND=\d")
    else:
        assert wire.sent(r"AT\+CIPSEND=\d,\d+\r")
    if reads is not None:
        assert wire.sent(r"AT\+CIPRXGET=1\r")
        assert wire.sent(reads)
    elif options.get("rx_mode") == "push":  # pushed: nothing is fetched
        assert not wire.sent(r"AT\+CIPRXGET=[1-4]")


# --- 3.3 UDP client ---------------------------------------------------------------------


async def test_3_3_1_udp_push_unconnected_with_ctrl_z_sends(udp_echo: tuple[str, int]) -> None:
    datagrams = [nasty_payload(size, seed=size) for size in (11, 5, 700, 1400)]
    async with modem_on(rx_mode="push", send_ctrl_z=True) as (modem, wire):
        transport, got = await modem.create_datagram_endpoint(Collect, local_addr=("0.0.0.0", 0))
        for data in datagrams:  # one at a time: UDP may drop a burst
            transport.sendto(data, udp_echo)
            await got.wait_for(datagrams.index(data) + 1)
        transport.close()
    assert [sha(d) for d, _ in got.datagrams] == [sha(d) for d in datagrams]
    assert {addr for _, addr in got.datagrams} == {udp_echo}
    assert wire.sent(r'AT\+CIPOPEN=\d,"UDP",,,')
    assert wire.sent(r"AT\+CIPSEND=\d,,")


async def test_3_3_2_udp_buffer_connected(udp_echo: tuple[str, int]) -> None:
    datagrams = [nasty_payload(size, seed=size) for size in (16, 1, 999, 1400)]
    async with modem_on(rx_mode="buffer") as (modem, wire):
        transport, got = await modem.create_datagram_endpoint(Collect, remote_addr=udp_echo)
        for data in datagrams:
            transport.sendto(data)
            await got.wait_for(datagrams.index(data) + 1)
        transport.close()
    assert [sha(d) for d, _ in got.datagrams] == [sha(d) for d in datagrams]  # none merged
    assert wire.sent(r"AT\+CIPRXGET=1\r")
    assert wire.sent(r"AT\+CIPRXGET=2,\d")


async def test_3_3_3_udp_transparent(udp_echo: tuple[str, int]) -> None:
    async with modem_on(transparent=True) as (modem, wire):
        transport, got = await modem.create_datagram_endpoint(Collect, remote_addr=udp_echo)
        transport.sendto(b"HELLOSERVER")
        await got.wait_for(1)
        transport.close()
    assert b"".join(d for d, _ in got.datagrams) == b"HELLOSERVER"
    assert wire.sent(f'AT\\+CIPOPEN=0,"UDP","127.0.0.1",{udp_echo[1]},')


# --- 3.4 TCP server ---------------------------------------------------------------------


def _echo_handler(done: asyncio.Event) -> Callable[..., Any]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        done.set()

    return echo


async def _client_echo(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
    writer.close()
    await writer.wait_closed()
    return echoed


async def test_3_4_1_transparent_server() -> None:
    payload = nasty_payload(40_000, seed=34)
    port, done = free_port(), asyncio.Event()
    async with modem_on(transparent=True) as (modem, wire):
        server = await modem.start_server(_echo_handler(done), port, transparent=True)
        async with server:
            echoed = await _client_echo(port, payload)
            await asyncio.wait_for(done.wait(), 20)
    assert len(echoed) == len(payload)
    assert sha(echoed) == sha(payload)
    assert wire.sent(f"AT\\+SERVERSTART={port},0")
    assert wire.sent(r"AT\+SERVERSTOP=0")
    assert not wire.sent(r"AT\+CIPSEND=\d")


async def test_3_4_2_two_servers_in_command_mode() -> None:
    payload = nasty_payload(30_000, seed=35)
    ports, done = (free_port(), free_port()), asyncio.Event()
    async with modem_on() as (modem, wire):
        first = await modem.start_server(_echo_handler(done), ports[0])
        second = await modem.start_server(_echo_handler(done), ports[1])
        async with first, second:
            assert (first.index, second.index) == (0, 1)
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[1])
            writer.write(payload[:100])
            await asyncio.wait_for(reader.readexactly(100), 10)
            table = await modem.link_table()  # 3.4.2's AT+CIPOPEN?: accepted by server 1
            assert [info.server for info in table if info.kind == "TCP"] == [1]
            writer.write(payload[100:])
            rest = await asyncio.wait_for(reader.readexactly(len(payload) - 100), 30)
            writer.close()
            await writer.wait_closed()
            await asyncio.wait_for(done.wait(), 20)
    assert sha(payload[:100] + rest) == sha(payload)
    assert wire.sent(r"AT\+SERVERSTOP=0")
    assert wire.sent(r"AT\+SERVERSTOP=1")


async def test_3_4_3_connection_state(echo_server: tuple[str, int]) -> None:
    async with modem_on() as (modem, wire):
        assert await modem.link_states() == (False, False)
        _reader, writer = await modem.open_connection(*echo_server)
        assert (await modem.link_states())[writer.get_extra_info("link")]
        writer.close()
        await writer.wait_closed()
        assert await modem.link_states() == (False, False)
    assert wire.sent(r"AT\+CIPCLOSE\?")
