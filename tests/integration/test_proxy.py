"""``simsock proxy``: real SOCKS5 clients (curl, a raw socket client) through the module.

Each test counts the links the module opened (``AT+CIPOPEN`` in the trace, or
the virtual module's own count) so a connection that went around the module
would fail it, and checks every transfer's length and SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import simsock
from simsock.emulator import VirtualModem
from simsock.proxy import ConnectionRecord, Socks5Proxy, serve_socks5, socks5
from simsock.proxy.socks5 import Reply

BODY = os.urandom(200_000)
DIGEST = hashlib.sha256(BODY).hexdigest()
REPO = Path(__file__).resolve().parents[2]


def cipopens(modem: simsock.Modem) -> int:
    trace = modem.engine.stats.trace
    assert trace is not None
    return sum(1 for way, line in trace if way == "->" and re.match(r"AT\+CIPOPEN=\d", line))


@pytest.fixture
async def traced(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    async with simsock.open_modem(vm.url, trace_lines=5000) as opened:
        yield opened


@pytest.fixture
async def body_server() -> AsyncIterator[int]:
    """A minimal HTTP/1.0 server on 127.0.0.1 sending BODY to any request."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def _curl() -> str:
    found = shutil.which("curl")
    if found is None:
        if os.environ.get("CI"):
            raise RuntimeError("curl is not installed (.ci/run installs it)")
        pytest.skip("curl is not installed")
    return found


async def curl_through(proxy_port: int, url: str) -> tuple[int, bytes]:
    process = await asyncio.create_subprocess_exec(
        _curl(),
        "--silent",
        "--max-time",
        "20",
        "--socks5-hostname",
        f"127.0.0.1:{proxy_port}",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out


class SocksClient:
    """A raw SOCKS5 client over asyncio streams, to drive what curl cannot."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> SocksClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        return cls(reader, writer)

    async def request(self, command: int, host: str, port: int) -> tuple[int, str, int]:
        self.writer.write(bytes((5, command, 0)) + socks5.encode_address(host, port))
        head = await self.reader.readexactly(4)
        assert head[:3] == bytes((5, head[1], 0))
        if head[3] == 1:
            raw = await self.reader.readexactly(4 + 2)
            bound = socket.inet_ntoa(raw[:4])
        else:
            assert head[3] == 4
            raw = await self.reader.readexactly(16 + 2)
            bound = socket.inet_ntop(socket.AF_INET6, raw[:16])
        return head[1], bound, int.from_bytes(raw[-2:], "big")

    def close(self) -> None:
        self.writer.close()


async def test_curl_fetches_through_the_module(traced: simsock.Modem, body_server: int) -> None:
    records: list[ConnectionRecord] = []
    server = await serve_socks5(traced, port=0, on_record=records.append)
    async with server:
        port = server.sockets[0].getsockname()[1]
        # a name: curl --socks5-hostname hands it to the proxy, the module resolves it
        code, out = await curl_through(port, f"http://localhost:{body_server}/blob")
    assert code == 0
    assert len(out) == len(BODY)
    assert hashlib.sha256(out).hexdigest() == DIGEST
    assert cipopens(traced) == 1
    trace = traced.engine.stats.trace or []
    assert ("->", 'AT+CDNSGIP="localhost"') in trace  # the module resolved the name
    (record,) = records
    assert (record.command, record.reply, record.destination) == (
        "connect",
        0,
        f"localhost:{body_server}",
    )
    assert record.bytes_down >= len(BODY)


async def test_a_third_connection_gets_a_clear_failure(
    traced: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    """Both links busy: the third CONNECT is answered 0x01 after link_wait_s, never hangs;
    once a link is free, the next one succeeds."""
    proxy = Socks5Proxy(traced, link_wait_s=0.5)
    server = await proxy.serve("127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        held = [await SocksClient.connect(port) for _ in range(2)]
        for client in held:
            reply, _, _ = await client.request(socks5.Command.CONNECT, *echo_server)
            assert reply == Reply.SUCCEEDED
        for number, client in enumerate(held):  # both relay, over their own links
            payload = os.urandom(5000) + bytes([number])
            client.writer.write(payload)
            assert await asyncio.wait_for(client.reader.readexactly(len(payload)), 10) == payload
        third = await SocksClient.connect(port)
        reply, _, _ = await asyncio.wait_for(third.request(socks5.Command.CONNECT, *echo_server), 5)
        assert reply == Reply.GENERAL_FAILURE
        assert await asyncio.wait_for(third.reader.read(), 5) == b""  # and closed
        held[0].close()
        fourth = await SocksClient.connect(port)
        reply, _, _ = await asyncio.wait_for(
            fourth.request(socks5.Command.CONNECT, *echo_server), 10
        )
        assert reply == Reply.SUCCEEDED
        for client in (held[1], third, fourth):
            client.close()
        await proxy.abort_clients()
    assert cipopens(traced) == 3


async def test_a_client_half_close_still_gets_the_reply(traced: simsock.Modem) -> None:
    """The module cannot pass the client's FIN on: the link stays open and the reply
    (a digest of everything sent) still comes back; the remote's close ends it."""
    request = os.urandom(100_000)

    async def digest_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(hashlib.sha256(await reader.readexactly(len(request))).digest())
        await writer.drain()
        writer.close()

    remote = await asyncio.start_server(digest_then_close, "127.0.0.1", 0)
    server = await serve_socks5(traced, port=0)
    async with remote, server:
        client = await SocksClient.connect(server.sockets[0].getsockname()[1])
        reply, _, _ = await client.request(
            socks5.Command.CONNECT, "127.0.0.1", remote.sockets[0].getsockname()[1]
        )
        assert reply == Reply.SUCCEEDED
        client.writer.write(request)
        client.writer.write_eof()
        answer = await asyncio.wait_for(client.reader.read(), 10)  # to the proxy's FIN
        assert answer == hashlib.sha256(request).digest()
        client.close()
    assert cipopens(traced) == 1


async def test_refused_unknown_and_unsupported_requests(traced: simsock.Modem) -> None:
    server = await serve_socks5(traced, port=0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))  # bound, not listening: refused
            closed_port = probe.getsockname()[1]
            client = await SocksClient.connect(port)
            reply, _, _ = await client.request(socks5.Command.CONNECT, "127.0.0.1", closed_port)
            assert reply == Reply.CONNECTION_REFUSED
            client.close()
        client = await SocksClient.connect(port)
        reply, _, _ = await client.request(socks5.Command.CONNECT, "no.such.name.invalid", 80)
        assert reply == Reply.HOST_UNREACHABLE
        client.close()
        client = await SocksClient.connect(port)
        reply, _, _ = await client.request(socks5.Command.BIND, "127.0.0.1", 80)
        assert reply == Reply.COMMAND_NOT_SUPPORTED
        client.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x05\x01\x02")  # username/password only
        assert await reader.readexactly(2) == b"\x05\xff"
        writer.close()
    assert not traced.engine.links


async def test_only_loopback_unless_allowed(traced: simsock.Modem) -> None:
    with pytest.raises(ValueError, match="only loopback"):
        await serve_socks5(traced, "0.0.0.0", 0)


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["buffer", "push"])
async def test_udp_associate_relays_datagrams(mode: str, vm: VirtualModem) -> None:
    async with simsock.open_modem(vm.url, trace_lines=5000, rx_mode=mode) as modem:
        await _associate_and_echo(modem)
        assert cipopens(modem) == 1


async def _associate_and_echo(modem: simsock.Modem) -> None:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
    echo_port = echo.get_extra_info("sockname")[1]
    server = await serve_socks5(modem, port=0)
    try:
        async with server:
            port = server.sockets[0].getsockname()[1]
            client = await SocksClient.connect(port)
            reply, relay_host, relay_port = await client.request(
                socks5.Command.UDP_ASSOCIATE, "0.0.0.0", 0
            )
            assert reply == Reply.SUCCEEDED
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.settimeout(10)
                for size in (1, 100, 1400):
                    payload = os.urandom(size)
                    udp.sendto(
                        socks5.build_udp_datagram("127.0.0.1", echo_port, payload),
                        (relay_host, relay_port),
                    )
                    packet = await asyncio.to_thread(udp.recv, 65536)
                    answer = socks5.parse_udp_datagram(packet)
                    assert (answer.host, answer.port) == ("127.0.0.1", echo_port)
                    assert hashlib.sha256(answer.data).digest() == hashlib.sha256(payload).digest()
            client.close()
    finally:
        echo.close()


async def test_the_command_line_proxy_with_json_records(body_server: int) -> None:
    """``simsock proxy --json``: where it listens, then one line per connection; SIGUSR1
    prints the status; SIGTERM stops it. It runs its own virtual module."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simsock",
        "proxy",
        "--socks-port",
        "0",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO,
    )
    assert process.stdout is not None
    try:
        listening = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert listening["event"] == "listening"
        assert listening["host"] == "127.0.0.1"
        code, out = await curl_through(listening["port"], f"http://localhost:{body_server}/")
        assert code == 0
        assert hashlib.sha256(out).hexdigest() == DIGEST
        record = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        assert record["event"] == "connection"
        assert (record["command"], record["reply"], record["link"]) == ("connect", 0, 0)
        assert record["bytes_down"] >= len(BODY)
        process.send_signal(signal.SIGUSR1)
        status = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        assert status["event"] == "status"
        assert status["connections"] == 1
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
