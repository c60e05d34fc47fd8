"""Sending and receiving on links through a real pty: escapes, hex reads, peer close, two links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import AtHost, PeerStarter

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """A peer that records what it receives and sends what the test tells it to."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connected = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.got_data = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connected.set()
        while data := await reader.read(65536):
            self.received += data
            self.got_data.set()

    async def wait_for(self, size: int) -> bytes:
        async with asyncio.timeout(5):
            while len(self.received) < size:
                self.got_data.clear()
                await self.got_data.wait()
        return bytes(self.received)


@pytest.fixture
async def recorder(peer: PeerStarter) -> AsyncIterator[tuple[Recorder, int]]:
    rec = Recorder()
    server, port = await peer(rec.handle)
    async with server:
        yield rec, port


async def open_link(host: AtHost, link: int, port: int, *, buffered: bool = True) -> None:
    await host.command("ATE0")
    if (await host.command("AT+NETOPEN?"))[0] == "+NETOPEN: 0":
        await host.command("AT+NETOPEN")
        await host.wait_line(r"\+NETOPEN: 0")
    await host.command(f"AT+CIPRXGET={int(buffered)}")
    assert await host.command(f'AT+CIPOPEN={link},"TCP","127.0.0.1",{port}') == ["OK"]
    await host.wait_line(rf"\+CIPOPEN: {link},0$")


async def test_variable_length_send_with_escapes(
    host: AtHost, recorder: tuple[Recorder, int]
) -> None:
    rec, port = recorder
    await open_link(host, 0, port)
    payload = b"a\x1ab\x1bc\x03d\x00\xff"
    escaped = b"a\x03\x1ab\x03\x1bc\x03\x03d\x00\xff"
    await host.send(b"AT+CIPSEND=0\r")
    await host.expect(b"\r\n> ")
    await host.send(escaped + b"\x1a")
    await host.expect(f"\r\nOK\r\n\r\n+CIPSEND: 0,{len(payload)},{len(payload)}\r\n".encode())
    assert await rec.wait_for(len(payload)) == payload


async def test_escape_cancels_a_send(host: AtHost, recorder: tuple[Recorder, int]) -> None:
    rec, port = recorder
    await open_link(host, 0, port)
    await host.send(b"AT+CIPSEND=0\r")
    await host.expect(b"\r\n> ")
    await host.send(b"never sent\x1b")
    await host.expect(b"\r\nOK\r\n")
    await host.send_payload(0, b"sent")
    assert await rec.wait_for(4) == b"sent"


async def test_hex_read_of_binary_data(host: AtHost, recorder: tuple[Recorder, int]) -> None:
    rec, port = recorder
    await open_link(host, 1, port)
    await rec.connected.wait()
    assert rec.writer is not None
    data = bytes(range(256)) * 4  # 1024 bytes: two hex reads (750 + 274)
    rec.writer.write(data)
    await host.wait_line(r"\+CIPRXGET: 1,1$")
    assert await host.command("AT+CIPRXGET=3,1,751") == ["+IP ERROR: Invalid parameter", "ERROR"]
    first = await host.command("AT+CIPRXGET=3,1")
    assert first[0] == "+CIPRXGET: 3,1,750,274"
    assert bytes.fromhex(first[1]) == data[:750]
    assert first[1] == data[:750].hex().upper()
    second = await host.command("AT+CIPRXGET=3,1")
    assert second[0] == "+CIPRXGET: 3,1,274,0"
    assert bytes.fromhex(second[1]) == data[750:]


async def test_peer_close_keeps_unread_data(host: AtHost, recorder: tuple[Recorder, int]) -> None:
    rec, port = recorder
    await open_link(host, 0, port)
    await rec.connected.wait()
    assert rec.writer is not None
    rec.writer.write(b"last words")
    await rec.writer.drain()
    rec.writer.close()
    await host.wait_line(r"\+CIPRXGET: 1,0$")
    await host.wait_line(r"\+IPCLOSE: 0,1$")
    # The link is closed, but what arrived before the close is still there (4.2).
    assert await host.command("AT+CIPCLOSE?") == ["+CIPCLOSE: 0,0", "OK"]
    assert await host.command("AT+CIPRXGET=4,0") == ["+CIPRXGET: 4,0,10", "OK"]
    assert await host.rxget(0, 4) == (b"last", 6)
    assert await host.rxget(0) == (b" words", 0)
    assert await host.rxget(0) is None
    assert await host.command("AT+CIPSEND=0,5") == ["+CIPERROR: 4", "ERROR"]


async def test_two_links_at_once(host: AtHost, peer: PeerStarter) -> None:
    recs = [Recorder(), Recorder()]
    servers = [await peer(rec.handle) for rec in recs]
    for link, (_, port) in enumerate(servers):
        await open_link(host, link, port)
    status = await host.command("AT+CIPOPEN?")
    assert status == [
        f'+CIPOPEN: 0,"TCP","127.0.0.1",{servers[0][1]},-1',
        f'+CIPOPEN: 1,"TCP","127.0.0.1",{servers[1][1]},-1',
        "OK",
    ]
    assert await host.command("AT+CIPCLOSE?") == ["+CIPCLOSE: 1,1", "OK"]
    await host.send_payload(0, b"to zero")
    await host.send_payload(1, b"to one")
    assert await recs[0].wait_for(7) == b"to zero"
    assert await recs[1].wait_for(6) == b"to one"
    for link, rec in enumerate(recs):
        assert rec.writer is not None
        rec.writer.write(f"from {link}".encode())
    waiting = {(await host.wait_line(r"\+CIPRXGET: 1,(\d)$"))[1] for _ in range(2)}
    assert waiting == {"0", "1"}
    assert await host.rxget(0) == (b"from 0", 0)
    assert await host.rxget(1) == (b"from 1", 0)
    assert await host.command("AT+CIPACK=0") == ["+CIPACK: 7,7,6", "OK"]
    await host.command("AT+NETCLOSE")
    closes = [await host.line() for _ in range(3)]
    assert closes == ["+CIPCLOSE: 0,0", "+CIPCLOSE: 1,0", "+NETCLOSE: 0"]
    for server, _ in servers:
        server.close()
