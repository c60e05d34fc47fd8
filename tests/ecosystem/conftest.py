"""Fixtures for the ecosystem tests: a virtual SIM7028 on a real pty, and real peers on 127.0.0.1.

Peers are real servers: the stdlib's threaded HTTP server behind TLS with a
certificate from trustme, redis-server as a subprocess, asyncio echo servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import trustme

import simsock
from simsock.emulator import VirtualModem


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(
    process: subprocess.Popen[bytes], name: str, *ports: int, timeout_s: float = 10.0
) -> None:
    """Wait until the server ``process`` accepts connections on every port of ``ports``."""
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{name} did not listen on {port}") from None
                time.sleep(0.05)


def body_for(size: int) -> bytes:
    """The deterministic body the HTTP server sends for ``/bytes/<size>``."""
    block = hashlib.sha256(str(size).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def cipopens(modem: simsock.Modem) -> int:
    """How many links the library opened (``AT+CIPOPEN=``; needs ``trace_lines``)."""
    trace = modem.engine.stats.trace
    assert trace is not None, "open the modem with trace_lines=..."
    return sum(1 for way, line in trace if way == "->" and re.match(r"AT\+CIPOPEN=\d", line))


@pytest.fixture
async def vm() -> AsyncIterator[VirtualModem]:
    """A virtual SIM7028 on a pty, unpaced, on the test's loop."""
    async with VirtualModem() as modem:
        yield modem


@pytest.fixture
async def modem(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    """The library on ``vm`` (buffer-access mode), tracing commands."""
    async with simsock.open_modem(vm.url, trace_lines=5000) as opened:
        yield opened


@pytest.fixture
async def push_modem(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    """The library on ``vm`` in direct-push mode (UDP needs it)."""
    async with simsock.open_modem(vm.url, rx_mode="push") as opened:
        yield opened


class ThreadedVirtualModem:
    """A VirtualModem on its own loop in its own thread: as a real module would be, apart."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.vm = VirtualModem()

    def __enter__(self) -> ThreadedVirtualModem:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.vm.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.vm.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return self.vm.url


@pytest.fixture
async def apart_modem() -> AsyncIterator[simsock.Modem]:
    """The library on a virtual SIM7028 that runs in another thread (own loop)."""
    with ThreadedVirtualModem() as threaded:
        async with simsock.open_modem(threaded.url, trace_lines=5000) as opened:
            yield opened


# -- TLS ---------------------------------------------------------------------------------


@dataclass
class Certificates:
    """A private CA and a certificate for localhost / 127.0.0.1 signed by it."""

    ca: trustme.CA
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def certs() -> Certificates:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Certificates(ca, server, client)


# -- a real HTTPS / HTTP server (the stdlib's, in a thread) -------------------------------


@dataclass
class HttpServer:
    """Where the server listens and what it saw."""

    url: str
    port: int
    connections: list[tuple[str, int]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        self.server.record.connections.append(self.client_address)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self.server.record.requests.append(self.path)  # type: ignore[attr-defined]
        if self.path.startswith("/bytes/"):
            body = body_for(int(self.path.rsplit("/", 1)[1]))
        else:
            body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        digest = hashlib.sha256(self.rfile.read(length)).hexdigest().encode()
        self.server.record.requests.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(digest)))
        self.end_headers()
        self.wfile.write(digest)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_http(tls: ssl.SSLContext | None) -> Iterator[HttpServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    port = int(server.server_address[1])
    scheme = "https" if tls else "http"
    record = HttpServer(f"{scheme}://localhost:{port}", port)
    server.record = record  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def https_server(certs: Certificates) -> Iterator[HttpServer]:
    """The stdlib HTTP server over TLS on 127.0.0.1 (certificate for localhost from trustme)."""
    with serve_http(certs.server) as record:
        yield record


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """The stdlib HTTP server on 127.0.0.1, keep-alive on."""
    with serve_http(None) as record:
        yield record


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    """A TCP echo server on 127.0.0.1; yields (host, port)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]


@pytest.fixture
async def tls_echo_server(certs: Certificates) -> AsyncIterator[tuple[str, int]]:
    """A TLS echo server on 127.0.0.1 (certificate for localhost)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=certs.server)
    async with server:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]


# -- redis-server ----------------------------------------------------------------------


@pytest.fixture
def redis_port() -> Iterator[int]:
    """A real redis-server on 127.0.0.1 (no persistence), stopped afterwards.

    On a developer's machine without the Debian package the redis test is
    skipped; CI (``CI`` set, as ``.ci/run`` runs) installs it and must not skip.
    """
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(executable):
        if os.environ.get("CI"):
            raise RuntimeError("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(process, "redis-server", port)
        yield port
    finally:
        process.terminate()
        process.wait(10)
