"""Unmodified libraries over the module under ``use_modem``: redis-py, websockets, asyncio."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

import simsock
from simsock.ecosystem import host_network, use_modem
from simsock.sockets.server import ModuleServer

from .conftest import Certificates, cipopens, free_port


async def test_redis_round_trip(apart_modem: simsock.Modem, redis_port: int) -> None:
    value = os.urandom(50_000)
    with use_modem(apart_modem) as interposer:
        client = aioredis.Redis(host="localhost", port=redis_port)
        try:
            assert await client.ping() is True
            await client.set("simsock:blob", value)
            got = await client.get("simsock:blob")
            assert isinstance(got, bytes)
            assert len(got) == len(value)
            assert hashlib.sha256(got).digest() == hashlib.sha256(value).digest()
            assert await client.incrby("simsock:counter", 7) == 7
            pipe = client.pipeline()
            pipe.rpush("simsock:list", *[str(i) for i in range(100)])
            pipe.lrange("simsock:list", 0, -1)
            _, items = await pipe.execute()
            assert items == [str(i).encode() for i in range(100)]
        finally:
            await client.aclose()
    # every connection redis opened was a module link (AT+CIPOPEN), to the name it was given
    opened = [where for name, where in interposer.redirected if name == "create_connection"]
    assert opened
    assert set(opened) == {("localhost", redis_port)}
    assert cipopens(apart_modem) == len(opened)


async def test_websockets_server_on_the_module_and_client_through_it(
    apart_modem: simsock.Modem,
) -> None:
    """Both ends over the module: the server listens on a module server (AT+SERVERSTART),
    the client connects over the other link to the emulator's bound port."""

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    port = free_port()
    with use_modem(apart_modem):
        async with ws_serve(echo, "0.0.0.0", port, compression=None) as server:
            # websockets reads server.sockets[i].getsockname(): the module's address
            assert isinstance(server.server, ModuleServer)
            assert server.sockets[0].getsockname()[1] == port
            async with ws_connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
                payloads = [os.urandom(n) for n in (1, 1000, 40_000)] + ["text ünïcode"]
                for payload in payloads:
                    await ws.send(payload)
                    echoed = await ws.recv()
                    assert echoed == payload
                assert ws.remote_address == ("127.0.0.1", port)
            assert cipopens(apart_modem) == 1


async def test_websockets_client_to_a_host_server(apart_modem: simsock.Modem) -> None:
    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            assert isinstance(message, bytes)
            await connection.send(hashlib.sha256(message).hexdigest())

    async with ws_serve(echo, "127.0.0.1", 0) as server:  # on the host, outside use_modem
        port = server.sockets[0].getsockname()[1]
        with use_modem(apart_modem):
            async with ws_connect(f"ws://localhost:{port}") as ws:
                blob = os.urandom(100_000)
                await ws.send(blob)
                assert await ws.recv() == hashlib.sha256(blob).hexdigest()
                assert ws.transport.get_extra_info("link") in (0, 1)


async def test_same_loop_emulator_is_exempt(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    """The virtual modem shares the loop: its own connections must stay on the host."""
    with use_modem(modem) as interposer:
        reader, writer = await asyncio.open_connection(*echo_server)
        assert writer.get_extra_info("link") is not None  # a module link, not a socket
        writer.write(b"ping" * 1000)
        assert await reader.readexactly(4000) == b"ping" * 1000
        writer.close()
        await writer.wait_closed()
    assert interposer.redirected == [("create_connection", echo_server)]


async def test_host_network_block_and_restoration(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    loop = asyncio.get_running_loop()
    with use_modem(modem):
        assert "create_connection" in vars(loop)  # on this loop object only
        with host_network():
            _reader, writer = await asyncio.open_connection(*echo_server)
        assert writer.get_extra_info("socket") is not None  # a real host socket
        assert writer.get_extra_info("link") is None
        writer.close()
        await writer.wait_closed()
        with pytest.raises(RuntimeError, match="already"), use_modem(modem):
            pass
    assert "create_connection" not in vars(loop)


async def test_getaddrinfo_and_start_server(modem: simsock.Modem) -> None:
    loop = asyncio.get_running_loop()
    received = asyncio.Queue[bytes]()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await received.put(await reader.read())
        writer.close()

    with use_modem(modem):
        infos = await loop.getaddrinfo("localhost", "http", type=socket.SOCK_STREAM)
        assert infos[0][4] == ("127.0.0.1", 80)
        server = await asyncio.start_server(handler, "127.0.0.1", 0)  # port 0: we pick one
        port = server.sockets[0].getsockname()[1]
        assert 49152 <= port <= 65535
        async with server:
            with host_network():
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            blob = os.urandom(30_000)
            writer.write(blob)
            writer.close()
            got = await asyncio.wait_for(received.get(), 20)
            assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()


async def test_datagram_endpoint(push_modem: simsock.Modem) -> None:
    loop = asyncio.get_running_loop()
    with host_network():
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait((data, addr))

    with use_modem(push_modem):
        transport, _ = await loop.create_datagram_endpoint(Protocol, remote_addr=peer.getsockname())
    try:
        transport.sendto(b"hello")
        data, module_addr = await loop.sock_recvfrom(peer, 2048)
        assert data == b"hello"
        peer.sendto(b"world" * 100, module_addr)
        data, sender = await asyncio.wait_for(got.get(), 10)
        assert data == b"world" * 100
        assert sender == peer.getsockname()
    finally:
        transport.close()
        peer.close()


async def test_websockets_over_tls_to_a_host_server(
    apart_modem: simsock.Modem, certs: Certificates
) -> None:
    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with ws_serve(echo, "127.0.0.1", 0, ssl=certs.server) as server:
        port = server.sockets[0].getsockname()[1]
        with use_modem(apart_modem):
            async with ws_connect(f"wss://localhost:{port}", ssl=certs.client) as ws:
                assert ws.transport.get_extra_info("ssl_object").server_hostname == "localhost"
                blob = os.urandom(64_000)
                await ws.send(blob)
                echoed = await ws.recv()
                assert isinstance(echoed, bytes)
                assert hashlib.sha256(echoed).digest() == hashlib.sha256(blob).digest()


async def test_tls_protocol_is_connected_before_data(
    modem: simsock.Modem, certs: Certificates
) -> None:
    """The server speaks first, right after the handshake: connection_made must come first."""

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    events: list[str] = []
    done = asyncio.Event()

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            events.append("connection_made")

        def data_received(self, data: bytes) -> None:
            events.append(data.decode())
            done.set()

    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(banner, "127.0.0.1", 0, ssl=certs.server)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with use_modem(modem):
            transport, _ = await loop.create_connection(
                Recorder, "localhost", port, ssl=certs.client
            )
        await asyncio.wait_for(done.wait(), 10)
        assert events == ["connection_made", "220 ready\r\n"]
        assert transport.get_write_buffer_limits()[1] == 16 * 1024  # lowered for the link
        transport.close()
