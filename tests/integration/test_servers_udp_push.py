"""Module servers, UDP datagram endpoints and direct-push mode, end to end through a real pty."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import socket
from collections.abc import AsyncIterator

import pytest

import simsock
from simsock.emulator import VirtualModem

from .test_tcp_streams import echo_through, nasty_payload


@pytest.fixture
async def push_modem(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    """The library on ``vm`` in direct-push receive mode."""
    async with simsock.open_modem(vm.url, rx_mode="push") as opened:
        yield opened


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the emulator will bind it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_module_server_echoes_256_kib_to_a_host_client(modem: simsock.Modem) -> None:
    port = free_port()
    server = await modem.start_server(_echo_handler, port)
    assert server.is_serving()
    assert server.sockets[0].getsockname()[1] == port
    payload = os.urandom(256 * 1024)
    # the host client reaches the module's server through the emulator's bridge
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()

    sender = asyncio.create_task(send())
    received = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
    await sender
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    writer.close()
    await writer.wait_closed()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)
    assert not server.is_serving()
    assert server.sockets == ()


async def test_server_peername_and_link(modem: simsock.Modem) -> None:
    seen: asyncio.Future[tuple[object, object]] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result((writer.get_extra_info("peername"), writer.get_extra_info("link")))
        writer.close()

    port = free_port()
    async with await modem.start_server(handler, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer, link = await asyncio.wait_for(seen, 10)
        assert peer == writer.get_extra_info("sockname")[:2]
        assert link in (0, 1)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


async def test_links_are_shared_between_clients_and_servers(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    port = free_port()
    async with await modem.start_server(_echo_handler, port):
        host_reader, host_writer = await asyncio.open_connection("127.0.0.1", port)
        host_writer.write(b"x")
        assert await asyncio.wait_for(host_reader.readexactly(1), 10) == b"x"
        _reader, writer = await modem.open_connection(*echo_server)  # the second link
        with pytest.raises(OSError, match="links") as info:
            await modem.open_connection(*echo_server)
        assert info.value.errno == errno.EMFILE
        writer.close()
        await writer.wait_closed()
        host_writer.close()
        await host_writer.wait_closed()


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def test_fifty_udp_datagrams_keep_boundaries_and_addresses(
    push_modem: simsock.Modem,
) -> None:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
    address = echo.get_extra_info("sockname")
    transport, collector = await push_modem.create_datagram_endpoint(
        _Collector, local_addr=("0.0.0.0", 0)
    )
    rng = random.Random(7)
    sizes = [1, 1400, *(rng.randrange(1, 1401) for _ in range(48))]
    try:
        for size in sizes:
            datagram = rng.randbytes(size)
            transport.sendto(datagram, address)
            data, addr = await asyncio.wait_for(collector.queue.get(), 10)
            assert data == datagram
            assert addr == address
        transport.sendto(b"x" * 1501, address)
        assert collector.errors
        assert isinstance(collector.errors[0], OSError)
        assert collector.errors[0].errno == errno.EMSGSIZE
    finally:
        transport.close()
        echo.close()


async def test_udp_needs_push_mode(modem: simsock.Modem) -> None:
    with pytest.raises(OSError, match="push") as info:
        await modem.create_datagram_endpoint(asyncio.DatagramProtocol)
    assert info.value.errno == errno.EOPNOTSUPP


async def test_push_mode_mebibyte_echo_on_two_links_interleaved(
    push_modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    # Both links go to the same peer address: only +RECEIVE,<link>,<n> tells them apart.
    payloads = [nasty_payload(512 * 1024, seed=11), nasty_payload(512 * 1024, seed=12)]
    results = await asyncio.gather(*(echo_through(push_modem, echo_server, p) for p in payloads))
    for sent, got in zip(payloads, results, strict=True):
        assert len(got) == len(sent)
        assert hashlib.sha256(got).digest() == hashlib.sha256(sent).digest()


async def test_push_mode_peer_close_gives_eof(push_modem: simsock.Modem) -> None:
    payload = os.urandom(30_000)

    async def blurt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(blurt, "127.0.0.1", 0)
    async with server:
        reader, writer = await push_modem.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        received = await asyncio.wait_for(reader.read(), 20)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        writer.close()
        await writer.wait_closed()


async def test_dns_failure_and_rejected_name(modem: simsock.Modem) -> None:
    with pytest.raises(socket.gaierror):
        await modem.getaddrinfo("unknown.invalid", 80)
    before = modem.engine.stats.bytes_written
    with pytest.raises(socket.gaierror, match="invalid host name"):
        await modem.getaddrinfo("bad_name!.example", 80)
    assert modem.engine.stats.bytes_written == before
    infos = await modem.getaddrinfo("::1", 443)
    assert infos[0][0] == socket.AF_INET6
