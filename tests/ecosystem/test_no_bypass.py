"""No silent bypass: inside ``use_modem()`` every way to the host's network raises; after, it works.

Each path is tried inside the block (it must raise ``HostNetworkBlockedError``,
``EACCES``, naming the call and the way over the module, and the peer must
see nothing) and again after the block (the bytes must arrive, checked by
SHA-256). The peers are real servers on 127.0.0.1. The allowed paths are
checked the same way: ``host_network()``, ``allow_host=True``, exempt
modules, ``AF_UNIX``, connections opened before the block, and the virtual
modem's own sockets (same loop, own thread, and a ``socket://`` serial link).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap  # type: ignore[import-untyped]
import aiohttp
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import simsock
from simsock.ecosystem.guard import (
    DEFAULT_EXEMPT_MODULES,
    HostNetworkBlockedError,
    guard_host_network,
    is_guarded,
)
from simsock.ecosystem.interpose import host_network, use_modem
from simsock.emulator import VirtualModem

from .conftest import HttpServer, body_for, cipopens

#: Every refusal says how to go over the module and how to allow the host.
ADVICE = "to go over the module, or host_network() or use_modem(..., allow_host=True) to allow it"


@dataclass
class Peer:
    """A TCP echo server and a UDP sink on 127.0.0.1 that count what reached them."""

    tcp: tuple[str, int]
    udp: socket.socket
    accepted: int = 0

    @property
    def udp_address(self) -> tuple[str, int]:
        host, port = self.udp.getsockname()
        return str(host), int(port)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record.accepted += 1
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    record = Peer(("127.0.0.1", server.sockets[0].getsockname()[1]), udp)
    async with server:
        yield record
    udp.close()


def assert_refused(caught: pytest.ExceptionInfo[BaseException], call: str) -> None:
    error = caught.value
    assert isinstance(error, HostNetworkBlockedError)
    assert isinstance(error, PermissionError)
    assert error.errno == errno.EACCES
    assert call in str(error)
    assert "inside use_modem() would use the host's network" in str(error)
    assert ADVICE in str(error)


def blocking_echo(address: tuple[str, int], payload: bytes) -> bytes:
    """What blocking code does (paho, requests): connect, send, read to the end."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def loop_echo(address: tuple[str, int], payload: bytes) -> bytes:
    """The same with the loop's ``sock_*`` calls (what aiohappyeyeballs does)."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := await loop.sock_recv(sock, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_same(got: bytes, sent: bytes) -> None:
    assert len(got) == len(sent)
    assert hashlib.sha256(got).digest() == hashlib.sha256(sent).digest()


async def in_thread(function: Callable[[], Any]) -> BaseException | None:
    """Run ``function`` in a plain thread (fresh context, as paho's) and return what it raised.

    The loop keeps running meanwhile: the peers live on it.
    """
    raised: list[BaseException] = []

    def run() -> None:
        try:
            function()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    await asyncio.to_thread(thread.join, 15)
    assert not thread.is_alive()
    return raised[0] if raised else None


# -- each path raises inside the block, and works after it -----------------------------------


async def test_loop_sock_connect(modem: simsock.Modem, peer: Peer) -> None:
    loop = asyncio.get_running_loop()
    payload = os.urandom(100_000)
    with use_modem(modem):
        assert is_guarded()
        with pytest.raises(HostNetworkBlockedError) as caught:
            await loop_echo(peer.tcp, payload)
        assert_refused(caught, f"loop.sock_connect() to {peer.tcp!r}")
    assert not is_guarded()
    assert "sock_connect" not in vars(loop)
    assert_same(await loop_echo(peer.tcp, payload), payload)
    assert peer.accepted == 1


async def test_socket_create_connection_and_connect(modem: simsock.Modem, peer: Peer) -> None:
    payload = os.urandom(50_000)
    with use_modem(modem):
        with pytest.raises(HostNetworkBlockedError) as caught:
            socket.create_connection(peer.tcp, timeout=5)
        assert_refused(caught, f"socket.create_connection() to {peer.tcp!r}")
        for family in (socket.AF_INET, socket.AF_INET6):
            with socket.socket(family) as sock:
                with pytest.raises(HostNetworkBlockedError) as caught:
                    sock.connect(peer.tcp if family == socket.AF_INET else ("::1", 9))
                assert_refused(caught, "socket.socket.connect()")
                with pytest.raises(HostNetworkBlockedError) as caught:
                    sock.connect_ex(peer.tcp if family == socket.AF_INET else ("::1", 9))
                assert_refused(caught, "socket.socket.connect_ex()")
        # asyncio.to_thread: blocking code run from the loop
        with pytest.raises(HostNetworkBlockedError):
            await asyncio.to_thread(blocking_echo, peer.tcp, payload)
    await asyncio.sleep(0.05)
    assert peer.accepted == 0
    assert_same(await asyncio.to_thread(blocking_echo, peer.tcp, payload), payload)
    with socket.socket() as sock:
        assert sock.connect_ex(peer.tcp) == 0
    assert "connect" not in vars(socket.socket)  # the class is as it was


async def test_a_thread_connecting_paho_style(modem: simsock.Modem, peer: Peer) -> None:
    """The guard is process-wide: a plain thread (paho's network thread) is refused too."""
    payload = os.urandom(20_000)
    client = paho.Client(CallbackAPIVersion.VERSION2)
    with use_modem(modem):
        error = await in_thread(lambda: blocking_echo(peer.tcp, payload))
        assert isinstance(error, HostNetworkBlockedError)
        assert "socket.create_connection()" in str(error)
        error = await in_thread(lambda: client.connect(*peer.tcp))
        assert isinstance(error, HostNetworkBlockedError)  # paho.mqtt.client, unmodified
    await asyncio.sleep(0.05)
    assert peer.accepted == 0
    assert await in_thread(lambda: assert_same(blocking_echo(peer.tcp, payload), payload)) is None
    assert (
        await in_thread(lambda: client.connect(*peer.tcp)) is None
    )  # paho connects after the block
    client.disconnect()
    client.loop(timeout=0.1)  # sends DISCONNECT and closes the socket
    await asyncio.sleep(0.05)
    assert peer.accepted == 2


async def test_udp_sendto_and_sock_sendto(modem: simsock.Modem, peer: Peer) -> None:
    """An unbound UDP socket's first datagram would bind it (a new door): refused.

    A UDP socket bound before the block keeps sending, as a connection opened
    before keeps working.
    """
    loop = asyncio.get_running_loop()
    datagrams = [os.urandom(n) for n in (1, 500, 1400)]
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound_before,
    ):
        sender.setblocking(False)
        bound_before.bind(("127.0.0.1", 0))
        with use_modem(modem):
            with pytest.raises(HostNetworkBlockedError) as caught:
                sender.sendto(datagrams[0], peer.udp_address)
            assert_refused(caught, f"socket.socket.sendto() to {peer.udp_address!r}")
            with pytest.raises(HostNetworkBlockedError) as caught:
                sender.sendto(datagrams[0], 0, peer.udp_address)
            assert_refused(caught, "socket.socket.sendto()")
            with pytest.raises(HostNetworkBlockedError) as caught:
                sender.sendmsg([datagrams[0]], [], 0, peer.udp_address)  # aiocoap's way
            assert_refused(caught, "socket.socket.sendmsg()")
            with pytest.raises(HostNetworkBlockedError) as caught:
                await loop.sock_sendto(sender, datagrams[0], peer.udp_address)
            assert_refused(caught, "loop.sock_sendto()")
            with pytest.raises(BlockingIOError):
                peer.udp.recv(2048)  # nothing arrived
            bound_before.sendto(datagrams[1], peer.udp_address)
            got, source = await asyncio.wait_for(loop.sock_recvfrom(peer.udp, 2048), 5)
            assert (got, source) == (datagrams[1], bound_before.getsockname())
        for data in datagrams:
            await loop.sock_sendto(sender, data, peer.udp_address)
            got, source = await asyncio.wait_for(loop.sock_recvfrom(peer.udp, 2048), 5)
            assert got == data
            assert source[1] == sender.getsockname()[1]


async def test_bind_listen_and_create_server(modem: simsock.Modem, peer: Peer) -> None:
    with socket.socket() as bound_before:
        bound_before.bind(("127.0.0.1", 0))
        with use_modem(modem):
            with socket.socket() as sock, pytest.raises(HostNetworkBlockedError) as caught:
                sock.bind(("127.0.0.1", 0))
            assert_refused(caught, "socket.socket.bind() to ('127.0.0.1', 0)")
            with pytest.raises(HostNetworkBlockedError) as caught:
                bound_before.listen()
            assert_refused(caught, "socket.socket.listen()")
            with pytest.raises(HostNetworkBlockedError) as caught:
                socket.create_server(("127.0.0.1", 0))
            assert_refused(caught, "socket.create_server()")
        bound_before.listen()  # after the block
        with socket.create_server(("127.0.0.1", 0)) as server:
            assert server.getsockname()[1] > 0


async def test_aiohttp_default_connector(modem: simsock.Modem, http_server: HttpServer) -> None:
    """aiohappyeyeballs makes a host socket and calls loop.sock_connect: refused, not leaked."""
    async with aiohttp.ClientSession() as session:
        with use_modem(modem) as interposer:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await session.get(f"{http_server.url}/bytes/1000")
            assert isinstance(caught.value.os_error, HostNetworkBlockedError)
            assert "loop.sock_connect()" in str(caught.value)
            # the name went to the module's DNS; the connection to the host was refused
            assert interposer.redirected == [("getaddrinfo", "localhost")]
        assert http_server.connections == []
        async with session.get(f"{http_server.url}/bytes/100000") as response:
            assert_same(await response.read(), body_for(100_000))
        assert len(http_server.connections) == 1
        assert cipopens(modem) == 0


async def test_aiocoap_default_transport(modem: simsock.Modem, peer: Peer) -> None:
    """aiocoap's udp6 transport sends with sendmsg on its own socket: refused."""
    with use_modem(modem):
        context = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            request = aiocoap.Message(
                code=aiocoap.GET, uri=f"coap://127.0.0.1:{peer.udp_address[1]}/x"
            )
            with pytest.raises(aiocoap.error.NetworkError) as caught:
                await asyncio.wait_for(context.request(request).response, 5)
            assert isinstance(caught.value.__cause__, HostNetworkBlockedError)
            assert "socket.socket.sendmsg()" in str(caught.value.__cause__)
        finally:
            await context.shutdown()
    with pytest.raises(BlockingIOError):
        peer.udp.recv(2048)


# -- what is allowed inside the block --------------------------------------------------------


async def test_host_network_allows(modem: simsock.Modem, peer: Peer) -> None:
    payload = os.urandom(60_000)
    with use_modem(modem):
        with host_network():
            assert_same(await loop_echo(peer.tcp, payload), payload)
            # asyncio.to_thread copies the context: host_network() holds in the thread
            assert_same(await asyncio.to_thread(blocking_echo, peer.tcp, payload), payload)
            # a plain thread starts with a fresh context: refused
            error = await in_thread(lambda: blocking_echo(peer.tcp, payload))
            assert isinstance(error, HostNetworkBlockedError)
        with pytest.raises(HostNetworkBlockedError):
            await loop_echo(peer.tcp, payload)
    assert peer.accepted == 2


async def test_allow_host_turns_the_guard_off(modem: simsock.Modem, peer: Peer) -> None:
    loop = asyncio.get_running_loop()
    payload = os.urandom(60_000)
    with use_modem(modem, allow_host=True):
        assert not is_guarded()
        assert "sock_connect" not in vars(loop)
        assert_same(await loop_echo(peer.tcp, payload), payload)
        assert_same(await asyncio.to_thread(blocking_echo, peer.tcp, payload), payload)
        # the redirection still holds: this one goes over the module
        reader, writer = await asyncio.open_connection(*peer.tcp)
        assert writer.get_extra_info("link") is not None
        writer.write(payload)
        assert_same(await reader.readexactly(len(payload)), payload)
        writer.close()
        await writer.wait_closed()
    assert cipopens(modem) == 1
    assert peer.accepted == 3


async def test_exempt_modules(modem: simsock.Modem, peer: Peer) -> None:
    payload = os.urandom(10_000)
    with use_modem(modem, exempt_modules=(*DEFAULT_EXEMPT_MODULES, __name__)):
        assert_same(await loop_echo(peer.tcp, payload), payload)  # called from this module
    with use_modem(modem), pytest.raises(HostNetworkBlockedError):
        await loop_echo(peer.tcp, payload)


async def test_unix_sockets_and_socketpairs_work(modem: simsock.Modem, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    payload = os.urandom(200_000)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read())
        writer.close()

    path = str(tmp_path / "echo.sock")
    with use_modem(modem):
        left, right = socket.socketpair()  # how blocking code is bridged to the module
        with left, right:
            left.setblocking(False)
            right.setblocking(False)
            sending = asyncio.ensure_future(loop.sock_sendall(left, payload))
            got = bytearray()
            while len(got) < len(payload):
                got += await loop.sock_recv(right, 65536)
            await sending
            assert_same(bytes(got), payload)
        server = await asyncio.start_unix_server(echo, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(payload)
            writer.write_eof()
            assert_same(await reader.read(), payload)
            writer.close()
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
        sink_path = str(tmp_path / "sink.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
            sink.bind(sink_path)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
                sender.sendto(payload[:1000], sink_path)
            assert sink.recv(2048) == payload[:1000]
    assert cipopens(modem) == 0


async def test_connections_opened_before_keep_working(modem: simsock.Modem, peer: Peer) -> None:
    """Checks are at set-up: a host connection from before the block sends and receives."""
    payload = os.urandom(100_000)
    reader, writer = await asyncio.open_connection(*peer.tcp)
    with use_modem(modem):
        writer.write(payload)
        assert_same(await reader.readexactly(len(payload)), payload)
    writer.close()
    await writer.wait_closed()


# -- the virtual modem's own sockets stay on the host ----------------------------------------


async def test_same_loop_virtual_modem_works_inside(modem: simsock.Modem, peer: Peer) -> None:
    """The emulator connects (connect), listens (bind, listen) and accepts on this loop."""
    payload = os.urandom(80_000)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await received.put(await reader.read())
        writer.close()

    with use_modem(modem):
        assert is_guarded()
        reader, writer = await asyncio.open_connection(*peer.tcp)
        writer.write(payload)
        assert_same(await reader.readexactly(len(payload)), payload)
        writer.close()
        await writer.wait_closed()
        server = await asyncio.start_server(sink, "0.0.0.0", 0)  # the module listens
        async with server:
            port = server.sockets[0].getsockname()[1]
            with host_network():
                _, client = await asyncio.open_connection("127.0.0.1", port)
            client.write(payload)
            client.close()
            assert_same(await asyncio.wait_for(received.get(), 20), payload)
    assert cipopens(modem) == 1
    assert peer.accepted == 1


async def test_same_loop_virtual_modem_udp(push_modem: simsock.Modem, peer: Peer) -> None:
    """The emulator's UDP link binds a host socket and sends each datagram with sendto."""
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait(data)

    datagrams = [os.urandom(n) for n in (1, 700, 1400)]
    with use_modem(push_modem):
        transport, _ = await loop.create_datagram_endpoint(Collect, remote_addr=peer.udp_address)
        try:
            for data in datagrams:
                transport.sendto(data)
                arrived, module_addr = await asyncio.wait_for(loop.sock_recvfrom(peer.udp, 2048), 5)
                assert arrived == data
            for data in datagrams:  # a host UDP server bound before the block answers
                await loop.sock_sendto(peer.udp, data, module_addr)
                assert await asyncio.wait_for(got.get(), 5) == data
        finally:
            transport.close()


async def test_virtual_modem_in_its_own_thread(apart_modem: simsock.Modem, peer: Peer) -> None:
    payload = os.urandom(60_000)
    with use_modem(apart_modem):
        reader, writer = await asyncio.open_connection(*peer.tcp)
        writer.write(payload)
        assert_same(await reader.readexactly(len(payload)), payload)
        writer.close()
        await writer.wait_closed()
    assert cipopens(apart_modem) == 1


async def test_serial_link_over_socket_url_opens_inside(modem: simsock.Modem, peer: Peer) -> None:
    """pyserial's socket:// handler makes a host socket: the modem's own link (a reconnect)."""
    payload = os.urandom(30_000)
    async with VirtualModem(transport="tcp") as tcp_vm:
        assert tcp_vm.url.startswith("socket://")
        with use_modem(modem):
            async with simsock.open_modem(tcp_vm.url, trace_lines=500) as second:
                reader, writer = await second.open_connection(*peer.tcp)
                writer.write(payload)
                assert_same(await reader.readexactly(len(payload)), payload)
                writer.close()
                await writer.wait_closed()
                assert cipopens(second) == 1


# -- blocks across threads and loops ---------------------------------------------------------


async def test_blocks_are_counted_across_threads(modem: simsock.Modem, peer: Peer) -> None:
    """The wrappers stay while any block runs, and the originals come back after the last."""
    originals = (socket.create_connection, socket.create_server, socket.socket.connect)
    entered, release = threading.Event(), threading.Event()

    def other_block() -> None:
        other = asyncio.new_event_loop()
        try:
            with guard_host_network(other):
                entered.set()
                release.wait(15)
        finally:
            other.close()

    thread = threading.Thread(target=other_block)
    payload = os.urandom(30_000)
    with use_modem(modem):
        thread.start()
        assert await asyncio.to_thread(entered.wait, 15)
    try:
        assert is_guarded()  # the other thread's block still guards
        with pytest.raises(HostNetworkBlockedError):
            await loop_echo(peer.tcp, payload)
        # allow_host=True: calls on this loop's thread pass, a plain thread is refused
        with use_modem(modem, allow_host=True):
            assert_same(await loop_echo(peer.tcp, payload), payload)
            assert isinstance(
                await in_thread(lambda: blocking_echo(peer.tcp, payload)), PermissionError
            )
    finally:
        release.set()
        await asyncio.to_thread(thread.join, 15)
    assert not is_guarded()
    assert (socket.create_connection, socket.create_server, socket.socket.connect) == originals
    assert not {"connect", "connect_ex", "bind", "listen", "sendto", "sendmsg"} & set(
        vars(socket.socket)
    )
    assert_same(await asyncio.to_thread(blocking_echo, peer.tcp, payload), payload)


async def test_an_error_in_the_block_restores_everything(modem: simsock.Modem) -> None:
    loop = asyncio.get_running_loop()

    def fail_inside() -> None:
        with use_modem(modem):
            assert is_guarded()
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_inside()
    assert not is_guarded()
    assert not {"sock_connect", "sock_sendto", "create_connection"} & set(vars(loop))
    assert "connect" not in vars(socket.socket)
