"""UDP in both receive modes (3.3.2 buffer access, 4.1 push): boundaries and senders kept."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import random
import socket
from collections.abc import AsyncIterator

import pytest

import simsock
from simsock.emulator import VirtualModem


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


class _Burst(asyncio.DatagramProtocol):
    """Answers any datagram with ``replies``, all at once, to its sender."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.senders: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.received: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.senders.put_nowait(addr)
        self.received.append(data)
        for reply in self.replies:
            self.transport.sendto(reply, addr)  # type: ignore[attr-defined]


@pytest.fixture
async def buffer_modem(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    async with simsock.open_modem(vm.url, rx_mode="buffer") as opened:
        yield opened


async def test_buffer_mode_connected_udp_reads_one_datagram_per_read(
    buffer_modem: simsock.Modem,
) -> None:
    """50 datagrams of distinct sizes land in the module at once; each is read back whole."""
    rng = random.Random(12)
    sizes = [*rng.sample(range(1, 1401), 48), 1, 1400]
    sizes = list(dict.fromkeys(sizes))  # distinct
    replies = [rng.randbytes(size) for size in sizes]
    loop = asyncio.get_running_loop()
    peer, _burst = await loop.create_datagram_endpoint(
        lambda: _Burst(replies), local_addr=("127.0.0.1", 0)
    )
    address = peer.get_extra_info("sockname")
    transport, collector = await buffer_modem.create_datagram_endpoint(
        _Collector, remote_addr=address
    )
    try:
        transport.sendto(b"go")
        got = [await asyncio.wait_for(collector.queue.get(), 20) for _ in replies]
        assert [len(data) for data, _ in got] == [len(r) for r in replies]
        assert [hashlib.sha256(d).digest() for d, _ in got] == [
            hashlib.sha256(r).digest() for r in replies
        ]
        assert {addr for _, addr in got} == {address}
        assert collector.queue.empty()
    finally:
        transport.close()
        peer.close()


async def test_buffer_mode_refuses_unconnected_udp_and_names_push_mode(
    buffer_modem: simsock.Modem,
) -> None:
    with pytest.raises(OSError, match="rx_mode='push'") as info:
        await buffer_modem.create_datagram_endpoint(asyncio.DatagramProtocol)
    assert info.value.errno == errno.EOPNOTSUPP


async def test_push_mode_connected_udp_drops_other_senders(vm: VirtualModem) -> None:
    """As a connected socket: datagrams from anyone but ``remote_addr`` never arrive."""
    loop = asyncio.get_running_loop()
    async with simsock.open_modem(vm.url, rx_mode="push") as modem:
        peer, burst = await loop.create_datagram_endpoint(
            lambda: _Burst([b"from the peer"]), local_addr=("127.0.0.1", 0)
        )
        stranger, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        address = peer.get_extra_info("sockname")
        transport, collector = await modem.create_datagram_endpoint(_Collector, remote_addr=address)
        try:
            transport.sendto(b"hello")
            assert await asyncio.wait_for(collector.queue.get(), 10) == (b"from the peer", address)
            module_side = await asyncio.wait_for(burst.senders.get(), 10)
            stranger.sendto(b"from a stranger", module_side)
            transport.sendto(b"again")  # the peer answers after the stranger's datagram
            assert await asyncio.wait_for(collector.queue.get(), 10) == (b"from the peer", address)
            assert collector.queue.empty()
        finally:
            transport.close()
            peer.close()
            stranger.close()


class _Errors(_Collector):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[Exception] = []

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def test_sendto_a_name_resolves_it_through_the_module_once_and_keeps_order(
    vm: VirtualModem,
) -> None:
    written: list[bytes] = []
    loop = asyncio.get_running_loop()
    peer, burst = await loop.create_datagram_endpoint(
        lambda: _Burst([]), local_addr=("127.0.0.1", 0)
    )
    port = peer.get_extra_info("sockname")[1]
    async with simsock.open_modem(
        vm.url, rx_mode="push", wire_tap=lambda d, b: written.append(b) if d == "->" else None
    ) as modem:
        transport, collector = await modem.create_datagram_endpoint(_Errors)
        try:
            transport.sendto(b"one", ("localhost", port))  # resolved by the module
            transport.sendto(b"two", ("127.0.0.1", port))  # waits behind it: order kept
            transport.sendto(b"three", ("localhost", port))
            transport.sendto(b"bad", ('evil"\r\nAT+CFUN=0', port))  # never reaches the wire
            transport.sendto(b"nobody", ("no.such.name", port))
            for _ in range(3):
                await asyncio.wait_for(burst.senders.get(), 10)
            assert burst.received == [b"one", b"two", b"three"]  # in the order sent
            for _ in range(100):
                if len(collector.errors) == 2:
                    break
                await asyncio.sleep(0.05)
            assert len(collector.errors) == 2
            assert all(isinstance(e, socket.gaierror) for e in collector.errors)
        finally:
            transport.close()
            peer.close()
    wire = b"".join(written)
    assert wire.count(b'AT+CDNSGIP="localhost"') == 1
    assert b"CFUN" not in wire
    assert b"evil" not in wire
    assert b'AT+CDNSGIP="no.such.name"' in wire
