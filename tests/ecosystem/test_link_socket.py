"""``get_extra_info("socket")`` and ``sockname`` of module links, against real peers.

The socket stand-in is checked the way clients use it: asyncio's own
``TransportSocket`` interface, asyncpg's cancel path and aiohttp's helpers
(``TCP_NODELAY``, ``SO_KEEPALIVE`` -> ``AT+CTCPKA``), anyio's own
``SocketStream`` (``anyio.connect_tcp`` under ``use_modem``, and httpx's
default transport, which uses it), and a TLS transport on top.
``sockname`` is checked against what the peer saw.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import pickle
import socket
import struct
from asyncio.trsock import TransportSocket

import anyio
import httpx
import pytest
from aiohttp.tcp_helpers import tcp_keepalive, tcp_nodelay
from anyio.abc import SocketAttribute

import simsock
from simsock.driver.control import Keepalive
from simsock.ecosystem import use_modem
from simsock.emulator import VirtualModem
from simsock.sockets.link_socket import LinkSocket

from .conftest import Certificates, HttpServer, body_for, cipopens, free_port

#: What a socket stand-in must refuse: each would act on a host socket.
BLOCKED = [
    ("send", (b"x",)),
    ("sendall", (b"x",)),
    ("sendto", (b"x", ("127.0.0.1", 9))),
    ("recv", (10,)),
    ("recv_into", (bytearray(10),)),
    ("accept", ()),
    ("connect", (("127.0.0.1", 9),)),
    ("bind", (("127.0.0.1", 0),)),
    ("listen", ()),
    ("dup", ()),
    ("detach", ()),
    ("close", ()),
    ("shutdown", (socket.SHUT_RDWR,)),
    ("makefile", ()),
]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> bytes:
    payload = os.urandom(size)
    writer.write(payload)
    received = await asyncio.wait_for(reader.readexactly(size), 20)
    assert len(received) == size
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    return received


async def _keepalive_becomes(modem: simsock.Modem, enabled: bool) -> Keepalive:
    async with asyncio.timeout(10):
        while (state := await modem.keepalive()).enabled is not enabled:
            await asyncio.sleep(0.02)
    return state


def _sent(modem: simsock.Modem, prefix: str) -> list[str]:
    trace = modem.engine.stats.trace
    assert trace is not None
    return [line for way, line in trace if way == "->" and line.startswith(prefix)]


async def test_socket_mirrors_transport_socket(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    reader, writer = await modem.open_connection(*echo_server)
    sock = writer.get_extra_info("socket")
    assert isinstance(sock, LinkSocket)
    # every public name of asyncio's TransportSocket is there
    public = {name for name in dir(TransportSocket) if not name.startswith("_")}
    assert public <= set(dir(sock))
    assert (sock.family, sock.type, sock.proto) == (
        socket.AF_INET,
        socket.SOCK_STREAM,
        socket.IPPROTO_TCP,
    )
    assert sock.fileno() == -1
    assert sock.getpeername() == echo_server == writer.get_extra_info("peername")
    assert sock.getsockname() == (modem.address, 0) == writer.get_extra_info("sockname")
    assert sock.gettimeout() == 0
    sock.setblocking(False)
    sock.settimeout(0)
    with pytest.raises(ValueError, match="blocking"):
        sock.setblocking(True)
    with pytest.raises(ValueError, match="timeout"):
        sock.settimeout(1.0)
    for name, args in BLOCKED:
        with pytest.raises(OSError, match=f"{name}\\(\\)") as refused:
            getattr(sock, name)(*args)
        assert refused.value.errno == errno.EOPNOTSUPP
    with pytest.raises(TypeError):
        pickle.dumps(sock)
    assert "fd=-1" in repr(sock)
    # none of that touched the link
    await _echo(reader, writer, 20_000)
    assert cipopens(modem) == 1
    writer.close()
    await writer.wait_closed()


async def test_options_nodelay_and_refusals(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    reader, writer = await modem.open_connection(*echo_server)
    sock = writer.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    # asyncpg's non-TLS cancel path (connect_utils._get_socket / _set_nodelay), verbatim
    got = writer.transport.get_extra_info("socket")
    if got is None:
        raise ConnectionError(f"could not get the socket for transport {writer.transport!r}")
    if not hasattr(socket, "AF_UNIX") or got.family != socket.AF_UNIX:
        got.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 4) == struct.pack("i", 1)
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    tcp_nodelay(transport, False)  # aiohttp's helper
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    for level, option, name in [
        (socket.SOL_SOCKET, socket.SO_REUSEADDR, "SO_REUSEADDR"),
        (socket.SOL_SOCKET, socket.SO_RCVBUF, "SO_RCVBUF"),
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"),
        (socket.IPPROTO_IP, socket.IP_TOS, "IP_TOS"),
    ]:
        with pytest.raises(OSError, match=name) as refused:
            sock.setsockopt(level, option, 1)
        assert refused.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError, match=name):
            sock.getsockopt(level, option)
    with pytest.raises(TypeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, "1")
    assert not _sent(modem, "AT+CTCPKA")  # TCP_NODELAY sends nothing: the module has no Nagle
    await _echo(reader, writer, 10_000)
    writer.close()
    await writer.wait_closed()


async def test_so_keepalive_switches_the_module_keepalive(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    before = await modem.keepalive()
    assert not before.enabled  # the virtual module starts with keepalive off
    transport, _ = await modem.create_connection(asyncio.Protocol, *echo_server)
    tcp_keepalive(transport)  # aiohttp's helper: setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
    after = await _keepalive_becomes(modem, True)
    # only the switch changed: idle time, probes and interval are the module's
    assert (after.idle_min, after.count, after.interval_min) == (
        before.idle_min,
        before.count,
        before.interval_min,
    )
    assert _sent(modem, "AT+CTCPKA=") == [
        f"AT+CTCPKA=1,{before.idle_min},{before.count},{before.interval_min}"
    ]
    sock = transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # unchanged: nothing sent
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
    await _keepalive_becomes(modem, False)
    assert len(_sent(modem, "AT+CTCPKA=")) == 2
    transport.close()


async def test_keepalive_options_as_redis_sets_them(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    """redis-py 8's defaults: SO_KEEPALIVE, then idle 30 s, interval 5 s, 3 probes."""
    transport, _ = await modem.create_connection(asyncio.Protocol, *echo_server)
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.SOL_TCP, socket.TCP_KEEPIDLE, 30)
    sock.setsockopt(socket.SOL_TCP, socket.TCP_KEEPINTVL, 5)
    sock.setsockopt(socket.SOL_TCP, socket.TCP_KEEPCNT, 3)
    state = await _keepalive_becomes(modem, True)
    # the module counts minutes: 30 s and 5 s become 1 minute each
    assert (state.idle_min, state.count, state.interval_min) == (1, 3, 1)
    assert _sent(modem, "AT+CTCPKA=") == ["AT+CTCPKA=1,1,3,1"]  # four options, one command
    assert sock.getsockopt(socket.SOL_TCP, socket.TCP_KEEPIDLE) == 30  # as set, in seconds
    sock.setsockopt(socket.SOL_TCP, socket.TCP_KEEPIDLE, 600)  # 10 minutes
    async with asyncio.timeout(10):
        while (await modem.keepalive()).idle_min != 10:
            await asyncio.sleep(0.02)
    for option, value in [
        (socket.TCP_KEEPIDLE, 121 * 60),  # above 120 minutes
        (socket.TCP_KEEPIDLE, 0),
        (socket.TCP_KEEPCNT, 11),  # above 10 probes
        (socket.TCP_KEEPINTVL, -1),
    ]:
        with pytest.raises(OSError, match=r"outside the module's range") as refused:
            sock.setsockopt(socket.SOL_TCP, option, value)
        assert refused.value.errno == errno.EINVAL
    assert (await modem.keepalive()).idle_min == 10  # refused values changed nothing
    transport.close()


async def test_so_keepalive_failure_is_logged(
    vm: VirtualModem, echo_server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    modem = await simsock.open_modem(vm.url)
    transport, _ = await modem.create_connection(asyncio.Protocol, *echo_server)
    sock = transport.get_extra_info("socket")
    await modem.close()
    with caplog.at_level(logging.WARNING, logger="simsock.sockets"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # synchronous: no raise
        async with asyncio.timeout(5):
            while "AT+CTCPKA failed" not in caplog.text:
                await asyncio.sleep(0.02)
    assert "SO_KEEPALIVE" in caplog.text


async def test_tls_transport_passes_the_socket_through(
    modem: simsock.Modem, tls_echo_server: tuple[str, int], certs: Certificates
) -> None:
    reader, writer = await modem.open_connection("localhost", tls_echo_server[1], ssl=certs.client)
    assert writer.get_extra_info("ssl_object") is not None
    sock = writer.get_extra_info("socket")
    assert isinstance(sock, LinkSocket)
    assert sock.getpeername() == tls_echo_server
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await _echo(reader, writer, 30_000)
    writer.close()
    await writer.wait_closed()


async def test_anyio_connect_tcp_gets_its_socket_stream(
    apart_modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    """anyio's own asyncio-backend SocketStream reads family and addresses from the socket."""
    with use_modem(apart_modem):
        stream = await anyio.connect_tcp(*echo_server)
    async with stream:
        assert stream.extra(SocketAttribute.family) == socket.AF_INET
        assert isinstance(stream.extra(SocketAttribute.raw_socket), LinkSocket)
        assert stream.extra(SocketAttribute.remote_address) == echo_server
        assert stream.extra(SocketAttribute.remote_port) == echo_server[1]
        assert stream.extra(SocketAttribute.local_address) == (apart_modem.address, 0)
        assert stream.extra(SocketAttribute.local_port) == 0
        payload = os.urandom(100_000)
        received = bytearray()
        async with anyio.create_task_group() as group:
            group.start_soon(stream.send, payload)
            with anyio.fail_after(20):
                while len(received) < len(payload):
                    received += await stream.receive()
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert cipopens(apart_modem) == 1  # anyio's connection was a module link


# -- sockname ----------------------------------------------------------------------------


async def _client_ports() -> tuple[asyncio.Server, asyncio.Queue[int]]:
    """A host server that reports the port each client came from."""
    ports: asyncio.Queue[int] = asyncio.Queue()

    async def note(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports.put_nowait(writer.get_extra_info("peername")[1])
        await reader.read()
        writer.close()

    return await asyncio.start_server(note, "127.0.0.1", 0), ports


async def test_sockname_of_a_client_link(modem: simsock.Modem) -> None:
    server, ports = await _client_ports()
    async with server:
        port = server.sockets[0].getsockname()[1]
        local = free_port()
        transport, _ = await modem.create_connection(
            asyncio.Protocol, "127.0.0.1", port, local_port=local
        )
        # the local port asked for is the one the peer sees, and what sockname says
        assert await asyncio.wait_for(ports.get(), 10) == local
        assert transport.get_extra_info("sockname") == (modem.address, local)
        assert transport.get_extra_info("socket").getsockname() == (modem.address, local)
        transport.close()
        # the module picks a port it never reports: the module's address and port 0
        transport, _ = await modem.create_connection(asyncio.Protocol, "127.0.0.1", port)
        assert await asyncio.wait_for(ports.get(), 10) != 0
        assert transport.get_extra_info("sockname") == (modem.address, 0)
        transport.close()
    assert cipopens(modem) == 2


async def test_sockname_of_an_accepted_link(modem: simsock.Modem) -> None:
    accepted: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            accepted.set_result(transport)

    server = await modem.create_server(Accepted, 0)
    port = server.sockets[0].getsockname()[1]
    assert port != 0
    _, writer = await asyncio.open_connection("127.0.0.1", port)  # a host client
    transport = await asyncio.wait_for(accepted, 10)
    assert transport.get_extra_info("sockname") == (modem.address, port)
    sock = transport.get_extra_info("socket")
    assert sock.getsockname() == (modem.address, port)
    assert sock.getpeername() == transport.get_extra_info("peername")
    assert sock.getpeername()[1] == writer.get_extra_info("sockname")[1]
    writer.close()
    transport.close()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)


async def test_sockname_of_a_udp_link(push_modem: simsock.Modem) -> None:
    loop = asyncio.get_running_loop()
    senders: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    class Peer(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            senders.put_nowait((data, addr))

    peer, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            local = int(probe.getsockname()[1])
        transport, _ = await push_modem.create_datagram_endpoint(
            asyncio.DatagramProtocol,
            local_addr=("0.0.0.0", local),
            remote_addr=peer.get_extra_info("sockname"),
        )
        assert transport.get_extra_info("sockname") == (push_modem.address, local)
        transport.sendto(b"from the module")
        data, sender = await asyncio.wait_for(senders.get(), 10)
        assert (data, sender[1]) == (b"from the module", local)  # the bound port is real
        transport.close()
    finally:
        peer.close()


async def test_httpx_default_transport_under_use_modem(
    apart_modem: simsock.Modem, http_server: HttpServer
) -> None:
    """httpx's own transport (httpcore over anyio.connect_tcp) needs the socket stand-in."""
    with use_modem(apart_modem):
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{http_server.port}/bytes/50000")
    assert response.status_code == 200
    assert len(response.content) == 50_000
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(body_for(50_000)).digest()
    assert cipopens(apart_modem) == 1


async def test_ipv6_link_socket(vm: VirtualModem) -> None:
    """An IPv6 link's stand-in says AF_INET6 and gives addresses as an AF_INET6 socket does."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await reader.read())
        writer.close()

    try:
        server = await asyncio.start_server(keep, "::1", 0, family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    async with server, simsock.open_modem(vm.url, ip_family=6, trace_lines=100) as modem:
        port = server.sockets[0].getsockname()[1]
        transport, _ = await modem.create_connection(asyncio.Protocol, "::1", port)
        sock = transport.get_extra_info("socket")
        assert sock.family == socket.AF_INET6
        assert sock.getpeername() == ("::1", port, 0, 0)
        assert sock.getsockname()[1:] == (0, 0, 0)
        payload = os.urandom(10_000)
        transport.write(payload)
        transport.close()
        arrived = await asyncio.wait_for(got.get(), 10)
        assert hashlib.sha256(arrived).digest() == hashlib.sha256(payload).digest()
        assert cipopens(modem) == 1


async def test_a_datagram_transport_has_a_socket_too(modem: simsock.Modem) -> None:
    """asyncio's datagram transports carry one; aiocoap reads its family and sockname."""
    loop = asyncio.get_running_loop()
    peer, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    address = peer.get_extra_info("sockname")
    try:
        transport, _ = await modem.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=address
        )
        sock = transport.get_extra_info("socket")
        assert isinstance(sock, LinkSocket)
        assert (sock.family, sock.type) == (socket.AF_INET, socket.SOCK_DGRAM)
        assert sock.getpeername() == address
        assert sock.getsockname() == transport.get_extra_info("sockname")
        with pytest.raises(OSError, match=r"SO_BROADCAST|not supported|option") as refused:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        assert refused.value.errno == errno.ENOPROTOOPT
        transport.close()
    finally:
        peer.close()
