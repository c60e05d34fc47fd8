"""anyio code over the module: SocketStream, TLSStream on top, a listener, UDP sockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSAttribute, TLSStream

import simsock
from simsock.ecosystem import (
    ModemAttribute,
    connect_tcp,
    create_connected_udp_socket,
    create_tcp_listener,
    create_udp_socket,
)

from .conftest import Certificates, free_port


async def _send_all(stream: anyio.abc.ByteSendStream, payload: bytes) -> None:
    view = memoryview(payload)
    for offset in range(0, len(view), 16384):
        await stream.send(bytes(view[offset : offset + 16384]))


async def _receive_exactly(stream: anyio.abc.ByteReceiveStream, size: int) -> bytes:
    return await BufferedByteReceiveStream(stream).receive_exactly(size)


async def test_socket_stream_echo_and_attributes(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    stream = await connect_tcp(modem, "localhost", echo_server[1])
    assert isinstance(stream, SocketStream)
    assert stream.extra(SocketAttribute.remote_address) == echo_server
    assert stream.extra(SocketAttribute.remote_port) == echo_server[1]
    assert stream.extra(SocketAttribute.family) == socket.AF_INET
    assert stream.extra(ModemAttribute.link) in (0, 1)
    assert stream.extra(SocketAttribute.raw_socket, None) is None  # there is no host socket
    payload = os.urandom(300_000)
    async with stream, anyio.create_task_group() as group:
        group.start_soon(_send_all, stream, payload)
        received = await _receive_exactly(stream, len(payload))
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()
    assert not modem.engine.links  # aclose waited for the module to free the link


async def test_end_of_stream(modem: simsock.Modem) -> None:
    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        writer.close()

    server = await asyncio.start_server(hello, "127.0.0.1", 0)
    async with server:
        stream = await connect_tcp(modem, "127.0.0.1", server.sockets[0].getsockname()[1])
        async with stream:
            assert await _receive_exactly(stream, 3) == b"bye"
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()


async def test_anyio_tls_stream_wraps_our_stream(
    modem: simsock.Modem, tls_echo_server: tuple[str, int], certs: Certificates
) -> None:
    stream = await connect_tcp(modem, "localhost", tls_echo_server[1], ssl_context=certs.client)
    assert isinstance(stream, TLSStream)
    assert stream.extra(TLSAttribute.ssl_object).server_hostname == "localhost"
    assert stream.extra(SocketAttribute.remote_port) == tls_echo_server[1]  # passed through
    payload = os.urandom(100_000)
    async with stream, anyio.create_task_group() as group:
        group.start_soon(_send_all, stream, payload)
        received = await _receive_exactly(stream, len(payload))
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


async def test_listener_serves_a_host_client(modem: simsock.Modem) -> None:
    port = free_port()
    listener = await create_tcp_listener(modem, local_port=port)
    assert listener.extra(SocketAttribute.local_port) == port

    async def handle(client: SocketStream) -> None:
        async with client:
            data = await _receive_exactly(client, 20_000)
            await client.send(hashlib.sha256(data).digest())

    payload = os.urandom(20_000)
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        # a host client (anyio's own, a real socket) reaches the module's server
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(payload)
            assert await _receive_exactly(client, 32) == hashlib.sha256(payload).digest()
        group.cancel_scope.cancel()
    await listener.aclose()


async def test_udp_sockets(push_modem: simsock.Modem) -> None:
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as peer:
        peer_address = peer.extra(SocketAttribute.local_address)
        async with await create_udp_socket(push_modem) as udp:
            await udp.sendto(b"x" * 1400, *peer_address)
            data, module_address = await peer.receive()
            assert data == b"x" * 1400
            await peer.sendto(b"reply", *module_address)
            with anyio.fail_after(10):
                assert await udp.receive() == (b"reply", peer_address)
        async with await create_connected_udp_socket(push_modem, *peer_address) as connected:
            assert connected.extra(SocketAttribute.remote_address) == peer_address
            await connected.send(b"connected")
            data, module_address = await peer.receive()
            assert data == b"connected"
            await peer.sendto(b"back", *module_address)
            with anyio.fail_after(10):
                assert await connected.receive() == b"back"
