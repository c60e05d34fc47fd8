"""The benchmarks' independent line (``simsock.bench.relay``): bytes intact, never faster
than the line, in both directions at once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

from simsock.bench.relay import RelayProcess

BAUD = 115_200
CAPACITY = BAUD / 10  # bytes/s, 8N1


async def test_the_relay_carries_bytes_intact_and_never_faster_than_the_line() -> None:
    """5,760 bytes each way through a 115200-baud relay to an echo "module": everything
    comes back in order, and it takes at least the line time of one direction (0.5 s)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    module = await asyncio.start_server(echo, "127.0.0.1", 0)
    payload = os.urandom(int(CAPACITY / 2))
    async with (
        module,
        RelayProcess(BAUD, f"127.0.0.1:{module.sockets[0].getsockname()[1]}") as line,
    ):
        host, port = line.url.removeprefix("socket://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        writer.write(payload)
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        elapsed = time.monotonic() - started
        writer.close()
        await writer.wait_closed()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert elapsed >= len(payload) / CAPACITY  # a faithful line is never faster
