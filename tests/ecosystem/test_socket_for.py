"""Blocking code over the module: ``socket_for`` / ``udp_socket_for`` used from threads.

Every test checks that its traffic went through a module link (``AT+CIPOPEN``
counted, the link freed when the socket is closed), and every transfer its
length and SHA-256.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest

import simsock
from simsock.ecosystem.socket_relay import (
    RELAY_CHUNK_BYTES,
    RELAY_HIGH_WATER_BYTES,
    RelayedSocket,
    SocketRelay,
    socket_for,
)
from simsock.ecosystem.udp_relay import udp_socket_for
from simsock.emulator import VirtualModem

from .conftest import cipopens

#: The most the module hands over in one read (``AT+CIPRXGET=2,<link>,1500``).
DELIVERY_MAX_BYTES = 1500
#: Larger than what 127.0.0.1's socket buffers absorb (the module's own host socket
#: autotunes its send buffer up to 4 MiB), so a stalled side really stalls.
PAYLOAD_BYTES = 8 * 1024 * 1024


def relay_of(sock: RelayedSocket) -> SocketRelay:
    assert sock.relay is not None
    return sock.relay


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Blocking: ``size`` bytes from ``sock`` (fails on an early EOF)."""
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(min(65536, size - len(got)))
        assert chunk, f"EOF after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


def recv_to_eof(sock: socket.socket) -> bytes:
    got = bytearray()
    while chunk := sock.recv(65536):
        got += chunk
    return bytes(got)


async def link_freed(modem: simsock.Modem, relay: SocketRelay, timeout: float = 5.0) -> None:
    """The relay finished and the module has no link left."""
    await asyncio.wait_for(relay.wait_closed(), timeout)
    deadline = time.monotonic() + timeout
    while modem.engine.links:
        assert time.monotonic() < deadline, f"links still open: {modem.engine.links}"
        await asyncio.sleep(0.02)


async def serve(handler: Callable[..., object]) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    async with server:
        yield server.sockets[0].getsockname()[1]


# -- TCP ---------------------------------------------------------------------------------


async def test_echo_one_mib_from_a_thread(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    sock = await socket_for(modem, "localhost", echo_server[1])
    relay = relay_of(sock)
    assert isinstance(sock, socket.socket)
    assert sock.type == socket.SOCK_STREAM
    assert cipopens(modem) == 1
    assert relay.transport is not None
    assert relay.transport.get_extra_info("peername") == echo_server
    payload = os.urandom(1024 * 1024)

    def blocking_echo() -> bytes:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = recv_exactly(sock, len(payload))
        sender.join()
        sock.close()
        return received

    received = await asyncio.wait_for(asyncio.to_thread(blocking_echo), 30)
    assert len(received) == len(payload)
    assert digest(received) == digest(payload)
    await link_freed(modem, relay)
    assert relay.exception is None


async def test_gc_during_transfer_loses_nothing(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    """The relay tasks are owned by the relay registry: collecting garbage all the way
    through a transfer must not take them (nor the link protocol) away."""
    sock = await socket_for(modem, "127.0.0.1", echo_server[1])
    relay = relay_of(sock)
    payload = os.urandom(1024 * 1024)
    done = threading.Event()
    collections = 0

    def blocking_echo() -> bytes:
        try:
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            received = recv_exactly(sock, len(payload))
            sender.join()
            return received
        finally:
            done.set()

    async def collect() -> None:
        nonlocal collections
        while not done.is_set():
            gc.collect()
            collections += 1
            await asyncio.sleep(0.005)

    collector = asyncio.create_task(collect())
    received = await asyncio.wait_for(asyncio.to_thread(blocking_echo), 30)
    await collector
    assert collections > 10
    assert len(received) == len(payload)
    assert digest(received) == digest(payload)
    sock.close()
    await link_freed(modem, relay)
    assert cipopens(modem) == 1


async def test_peer_eof_reaches_the_socket(modem: simsock.Modem) -> None:
    """The peer closes after its reply: the socket reads the reply, then EOF."""
    reply = os.urandom(200_000)

    async def reply_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        writer.close()

    async for port in serve(reply_and_close):
        sock = await socket_for(modem, "127.0.0.1", port)
        relay = relay_of(sock)
        received = await asyncio.wait_for(asyncio.to_thread(recv_to_eof, sock), 20)
        assert len(received) == len(reply)
        assert digest(received) == digest(reply)
        await link_freed(modem, relay)  # the link ended with the peer: the relay too
        with pytest.raises(
            OSError, match=r"Broken pipe|Connection reset"
        ) as raised:  # nothing goes out
            await asyncio.to_thread(sock.sendall, b"x" * 100_000)
        assert raised.value.errno in (errno.EPIPE, errno.ECONNRESET)
        sock.close()
        assert relay.exception is None
        assert cipopens(modem) == 1


async def test_app_half_close_keeps_reading(modem: simsock.Modem) -> None:
    """``shutdown(SHUT_WR)`` by the application: the module cannot half-close, so the link
    stays open and the reply still arrives; closing the socket then closes the link."""
    request = os.urandom(100_000)
    seen_eof = asyncio.Event()

    async def digest_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(len(request))
        writer.write(digest(data))
        await writer.drain()
        if await reader.read(1) == b"":
            seen_eof.set()
        writer.close()

    async for port in serve(digest_server):
        sock = await socket_for(modem, "127.0.0.1", port)
        relay = relay_of(sock)

        def half_close_then_read(sock: socket.socket) -> bytes:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            return recv_exactly(sock, 32)

        assert await asyncio.to_thread(half_close_then_read, sock) == digest(request)
        await asyncio.sleep(0.3)
        assert not seen_eof.is_set()  # the link is still open
        assert modem.engine.links
        sock.close()
        await asyncio.wait_for(seen_eof.wait(), 5)  # the peer sees the close
        await link_freed(modem, relay)
        assert cipopens(modem) == 1


async def test_close_propagates_to_the_peer(modem: simsock.Modem) -> None:
    """Closing the socket from a thread closes the link, after what was written is sent."""
    received = asyncio.get_running_loop().create_future()

    async def collect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to EOF: the close
        received.set_result(data)
        writer.close()

    payload = os.urandom(150_000)
    async for port in serve(collect):
        sock = await socket_for(modem, "127.0.0.1", port)
        relay = relay_of(sock)

        def send_and_close(sock: socket.socket) -> None:
            sock.sendall(payload)
            sock.close()

        await asyncio.to_thread(send_and_close, sock)
        data = await asyncio.wait_for(received, 10)
        assert len(data) == len(payload)
        assert digest(data) == digest(payload)
        await link_freed(modem, relay)
        assert relay.exception is None
        assert cipopens(modem) == 1


async def test_dropping_the_socket_closes_the_link(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    sock = await socket_for(modem, "127.0.0.1", echo_server[1])
    relay = relay_of(sock)
    del sock
    gc.collect()
    await link_freed(modem, relay)


async def test_link_error_closes_the_socket(vm: VirtualModem, modem: simsock.Modem) -> None:
    """The network drops under the link: the socket reads EOF; the error is kept."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async for port in serve(silent):
        sock = await socket_for(modem, "127.0.0.1", port)
        relay = relay_of(sock)
        reader = asyncio.create_task(asyncio.to_thread(recv_to_eof, sock))
        await asyncio.sleep(0.1)
        vm.drop_network()
        assert await asyncio.wait_for(reader, 10) == b""
        await asyncio.wait_for(relay.wait_closed(), 10)
        assert isinstance(relay.exception, OSError)
        assert relay.exception.errno == errno.ENETDOWN
        sock.close()


async def test_refused_connection_raises(modem: simsock.Modem) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError):
            await socket_for(modem, "127.0.0.1", port)
    assert cipopens(modem) == 1
    assert not modem.engine.links


async def stalled(progress: Callable[[], int], total: int, deadline_s: float = 20.0) -> bool:
    """Whether ``progress()`` stops short of ``total``: no change over half a second.

    Kernel socket buffers on 127.0.0.1 grow to megabytes, so "not finished yet"
    says little; a count that stops moving before the end says the sender is
    held back.
    """
    deadline = time.monotonic() + deadline_s
    before = progress()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = progress()
        if now >= total:
            return False
        if now == before:
            return True
        before = now
    return False


async def test_backpressure_slow_reader(modem: simsock.Modem) -> None:
    """The application stops reading while the peer sends: the relay holds no more than
    its bound, the peer is held back, and everything arrives once reading resumes."""
    payload = os.urandom(PAYLOAD_BYTES)
    sent = [0]

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        writer.transport.set_write_buffer_limits(high=64 * 1024)
        for offset in range(0, len(payload), 64 * 1024):
            writer.write(payload[offset : offset + 64 * 1024])
            await writer.drain()
            sent[0] = offset + 64 * 1024
        writer.close()

    async for port in serve(flood):
        sock = await socket_for(modem, "127.0.0.1", port)
        assert cipopens(modem) == 1  # now: the transfer's commands overrun the trace
        relay = relay_of(sock)
        # nobody reads the socket: the module stops reading the peer
        assert await stalled(lambda: sent[0], len(payload))
        # what the link holds, the chunk the socket is taking, and what was in flight
        bound = RELAY_HIGH_WATER_BYTES + RELAY_CHUNK_BYTES + 2 * DELIVERY_MAX_BYTES
        assert relay.held_bytes <= bound
        assert relay.peak_held_bytes > RELAY_HIGH_WATER_BYTES // 2  # it did fill up
        assert relay.peak_held_bytes <= bound
        received = await asyncio.wait_for(asyncio.to_thread(recv_to_eof, sock), 60)
        assert len(received) == len(payload)
        assert digest(received) == digest(payload)
        assert relay.peak_held_bytes <= bound
        sock.close()
        await link_freed(modem, relay)


async def test_backpressure_slow_peer(modem: simsock.Modem) -> None:
    """The peer stops reading while the application sends: ``send`` blocks, the relay's
    link writes stay under the link's high-water mark plus one chunk."""
    payload = os.urandom(PAYLOAD_BYTES)
    reading = asyncio.Event()
    received = asyncio.get_running_loop().create_future()
    accepted = [0]

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        await reading.wait()
        received.set_result(await reader.readexactly(len(payload)))
        writer.close()

    def send_all(sock: socket.socket) -> None:
        view = memoryview(payload)
        while accepted[0] < len(view):
            accepted[0] += sock.send(view[accepted[0] : accepted[0] + 65536])

    async for port in serve(slow):
        sock = await socket_for(modem, "127.0.0.1", port)
        relay = relay_of(sock)
        sender = asyncio.create_task(asyncio.to_thread(send_all, sock))
        assert await stalled(lambda: accepted[0], len(payload))  # blocked by the pipe's own buffers
        assert not sender.done()
        transport = relay.transport
        assert isinstance(transport, asyncio.WriteTransport)
        bound = transport.get_write_buffer_limits()[1] + RELAY_CHUNK_BYTES
        assert 0 < relay.peak_held_bytes <= bound
        reading.set()
        data = await asyncio.wait_for(received, 60)
        await asyncio.wait_for(sender, 5)
        assert len(data) == len(payload)
        assert digest(data) == digest(payload)
        assert relay.peak_held_bytes <= bound
        sock.close()
        await link_freed(modem, relay)


# -- UDP ---------------------------------------------------------------------------------


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.sizes: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.sizes.append(len(data))
        assert self.transport is not None
        self.transport.sendto(data, addr)


async def test_udp_keeps_datagram_boundaries(modem: simsock.Modem) -> None:
    transport, echo = await asyncio.get_running_loop().create_datagram_endpoint(
        _UdpEcho, local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        sock = await udp_socket_for(modem, "127.0.0.1", port)
        relay = relay_of(sock)
        assert sock.type == socket.SOCK_DGRAM
        assert cipopens(modem) == 1
        sizes = [1, 2, 3, 100, 999, 1000, 1400, 1500, 7, 1499]
        payloads = [os.urandom(size) for size in sizes]

        def exchange() -> tuple[list[bytes], list[bytes]]:
            sock.settimeout(10)
            one_by_one = []
            for payload in payloads:  # one out, one back
                sock.send(payload)
                one_by_one.append(sock.recv(65536))
            for payload in payloads[:5]:  # five out, five back (a connected peer keeps order)
                sock.send(payload)
            burst = [sock.recv(65536) for _ in range(5)]
            return one_by_one, burst

        one_by_one, burst = await asyncio.wait_for(asyncio.to_thread(exchange), 30)
        assert [len(d) for d in one_by_one] == sizes
        assert [digest(d) for d in one_by_one] == [digest(p) for p in payloads]
        assert [digest(d) for d in burst] == [digest(p) for p in payloads[:5]]
        assert echo.sizes == sizes + sizes[:5]  # the peer saw the same boundaries
        assert relay.dropped_datagrams == 0  # type: ignore[attr-defined]
        sock.close()
        await link_freed(modem, relay)
    finally:
        transport.close()
