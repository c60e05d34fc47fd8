"""Phase 3: transparent mode (CIPMODE=1), its ``+++`` escape, ATO and CLOSED (sections 2, 3.3)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from simsock.emulator import VirtualModem

if TYPE_CHECKING:
    from conftest import AtHost, HostOpener, PeerStarter

pytestmark = pytest.mark.timeout(30)

#: The guard time is shortened from the reference's 1 s to keep the tests quick.
GUARD_S = 0.2


class Echo:
    """A peer that echoes, and that the test can talk through or close."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connected.set()
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()


@pytest.fixture
async def echo_peer(peer: PeerStarter) -> AsyncIterator[tuple[Echo, int]]:
    echo = Echo()
    server, port = await peer(echo.handle)
    async with server:
        yield echo, port


@pytest.fixture
async def quick_vm() -> AsyncIterator[VirtualModem]:
    async with VirtualModem(echo=False, escape_guard_s=GUARD_S) as vm:
        yield vm


@pytest.fixture
async def data_host(quick_vm: VirtualModem, open_host: HostOpener) -> AtHost:
    """A host with CIPMODE=1 and the network open."""
    host = await open_host(quick_vm.url)
    assert await host.command("AT+CIPMODE=1") == ["OK"]
    await host.send(b"AT+NETOPEN\r")
    await host.expect(b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n")
    return host


async def escape(host: AtHost) -> None:
    await asyncio.sleep(GUARD_S * 1.2)
    await host.send(b"+++")
    await host.expect(b"\r\nOK\r\n", wait_s=GUARD_S * 5)


async def test_transparent_tcp_client_flow(
    data_host: AtHost, quick_vm: VirtualModem, echo_peer: tuple[Echo, int]
) -> None:
    host, (echo, port) = data_host, echo_peer
    assert await host.command("AT+CIPMODE=0") == ["ERROR"]  # not while the network is open
    await host.send(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}\r'.encode())
    await host.expect(b"\r\nCONNECT 115200\r\n")
    # A raw byte pipe: "+++" without guard times and "OK" are just data.
    await host.send(b"ping+++\r\nOK\r\n\x1a")
    await host.expect(b"ping+++\r\nOK\r\n\x1a")
    quick_vm.inject_urc("+CEREG: 1")  # held until command mode
    await escape(host)
    await host.expect(b"\r\n+CEREG: 1\r\n")
    status = f'\r\n+CIPOPEN: 0,"TCP","127.0.0.1",{port},-1\r\n\r\n+CIPOPEN: 1\r\n\r\nOK\r\n'
    await host.send(b"AT+CIPOPEN?\r")
    await host.expect(status.encode())
    assert await host.command("AT+CIPSEND=0,5") == ["+CIPERROR: 4", "ERROR"]
    assert echo.writer is not None
    echo.writer.write(b"while away")  # kept in the module until ATO
    await host.expect_silence(0.1)
    await host.send(b"ATO\r")
    await host.expect(b"\r\nCONNECT 115200\r\nwhile away")
    await host.send(b"back")
    await host.expect(b"back")
    await escape(host)
    await host.send(b"AT+CIPCLOSE=0\r")
    await host.expect(b"\r\nOK\r\n\r\nCLOSED\r\n\r\n+CIPCLOSE: 0,0\r\n")
    assert await host.command("ATO") == ["ERROR"]


async def test_peer_close_in_data_mode(data_host: AtHost, echo_peer: tuple[Echo, int]) -> None:
    host, (echo, port) = data_host, echo_peer
    await host.send(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}\r'.encode())
    await host.expect(b"\r\nCONNECT 115200\r\n")
    await echo.connected.wait()
    assert echo.writer is not None
    echo.writer.write(b"bye")
    echo.writer.close()
    await host.expect(b"bye\r\nCLOSED\r\n")
    assert await host.command("AT") == ["OK"]  # command mode again
    assert await host.command("AT+NETCLOSE") == ["OK"]
    assert await host.line() == "+NETCLOSE: 0"


async def test_connect_fail_and_link_one(data_host: AtHost) -> None:
    host = data_host
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    await host.send(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{closed_port}\r'.encode())
    await host.expect(b"\r\nCONNECT FAIL\r\n")
    await host.send(b'AT+CIPOPEN=0,"TCP","no.such.name",80\r')
    await host.expect(b"\r\nCONNECT FAIL\r\n")
    assert await host.command('AT+CIPOPEN=1,"TCP","127.0.0.1",80') == ["+CIPOPEN: 1,4", "ERROR"]


async def test_transparent_udp(data_host: AtHost) -> None:
    host = data_host
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    class Peer(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
            got.put_nowait((data, addr))

    transport, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    await host.send(f'AT+CIPOPEN=0,"UDP","127.0.0.1",{port},0\r'.encode())
    await host.expect(b"\r\nCONNECT 115200\r\n")
    await host.send(b"datagram")
    data, source = await asyncio.wait_for(got.get(), 5)
    assert data == b"datagram"
    transport.sendto(b"reply", source)
    await host.expect(b"reply")
    await escape(host)
    await host.send(b"AT+CIPCLOSE=0\r")
    await host.expect(b"\r\nOK\r\n\r\nCLOSED\r\n\r\n+CIPCLOSE: 0,0\r\n")
    transport.close()
