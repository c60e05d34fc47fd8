"""``simsock demo``: fetch a web page through the modem with the asyncio streams API.

With no port, a virtual SIM7028 and a small HTTP server start on this machine
(127.0.0.1), so the demo needs no hardware and no internet. With ``--port`` it
drives a real module and fetches from ``--host``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .sockets.modem import Modem
from .trace import open_traced_modem

__all__ = ["DemoResult", "fetch", "run_demo", "serve_page"]

#: The page the local server returns: large enough to need many CIPRXGET reads.
PAGE_BYTES = 32 * 1024


def _page() -> bytes:
    line = b"simsock demo: this page travelled through AT+CIPRXGET reads.\n"
    return (line * (PAGE_BYTES // len(line) + 1))[:PAGE_BYTES]


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the fetch did."""

    status_line: str
    body: bytes
    seconds: float
    commands: int
    bytes_on_wire: int
    trace: list[tuple[str, str]]


@contextlib.asynccontextmanager
async def serve_page(body: bytes) -> AsyncIterator[int]:
    """A tiny HTTP/1.1 server on 127.0.0.1 that answers every GET with ``body``; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            header = (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            )
            writer.write(header + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port


async def fetch(modem: Modem, host: str, port: int, path: str = "/") -> DemoResult:
    """GET ``http://host:port/path`` through ``modem`` with asyncio streams."""
    engine = modem.engine
    commands0, wire0 = engine.stats.commands, engine.stats.bytes_read + engine.stats.bytes_written
    if engine.stats.trace is not None:
        engine.stats.trace.clear()
    started = time.perf_counter()
    reader, writer = await modem.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    writer.write(request.encode("ascii"))
    await writer.drain()
    status = (await reader.readline()).decode("latin-1").strip()
    length = None
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await (reader.readexactly(length) if length is not None else reader.read())
    writer.close()
    await writer.wait_closed()
    seconds = time.perf_counter() - started
    return DemoResult(
        status_line=status,
        body=body,
        seconds=seconds,
        commands=engine.stats.commands - commands0,
        bytes_on_wire=engine.stats.bytes_read + engine.stats.bytes_written - wire0,
        trace=list(engine.stats.trace or []),
    )


def _report(result: DemoResult, line_rate: int | None) -> str:
    digest = hashlib.sha256(result.body).hexdigest()
    out = [
        f"status:  {result.status_line}",
        f"body:    {len(result.body)} bytes, sha256 {digest[:16]}…",
        f"time:    {result.seconds:.3f} s ({len(result.body) / result.seconds / 1024:.1f} KiB/s)",
        f"wire:    {result.commands} AT commands, {result.bytes_on_wire} bytes on the serial line",
    ]
    if line_rate:
        capacity = line_rate / 10
        out.append(
            f"line:    {len(result.body) / result.seconds / capacity:.0%} of the"
            f" {line_rate}-baud line's {capacity:.0f} B/s"
        )
    out.append("AT exchange (first commands):")
    for shown, (direction, text) in enumerate(result.trace):
        if shown >= 14:
            out.append(f"  … ({len(result.trace) - shown} more)")
            break
        out.append(f"  {direction} {text}")
    return "\n".join(out)


async def run_demo(
    port: str | None = None,
    *,
    host: str = "example.com",
    http_port: int = 80,
    path: str = "/",
    baudrate: int | None = 921600,
    trace: str | None = None,
) -> DemoResult:
    """Run the demo and print what happened; returns the result (the tests use it).

    ``trace`` names a file for a wire trace (:mod:`simsock.trace`).
    """
    options = {"baudrate": baudrate or 115200, "trace_lines": 200}
    if port is not None:
        async with open_traced_modem(port, trace, **options) as modem:
            result = await fetch(modem, host, http_port, path)
        print(_report(result, None))
        return result

    from .emulator import VirtualModem

    page = _page()
    async with serve_page(page) as server_port, VirtualModem(baudrate=baudrate) as vm:
        print(f"virtual SIM7028 on {vm.url}, HTTP server on 127.0.0.1:{server_port}")
        async with open_traced_modem(vm.url, trace, **options) as modem:
            result = await fetch(modem, "127.0.0.1", server_port, "/")
    print(_report(result, baudrate))
    if result.body != page:
        raise RuntimeError("the page arrived damaged")
    return result
