"""The far end of a benchmark, in its own process: virtual SIM7028s and the servers they reach.

The client process (the library under test) must not pay for the emulator's
or the peers' CPU, so this process holds everything that is not the client:
``count`` :class:`~simsock.emulator.VirtualModem` instances on ptys and four
TCP servers on 127.0.0.1 that the modems' links connect to. It prints one
JSON line (the modems' URLs and the servers' ports), then answers ``stats``
lines on stdin with one JSON line each, and exits at end of input.

Run as ``python -m simsock.bench.peer --baud 115200 --count 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import random
import resource
import sys
from collections.abc import Sequence
from typing import Final, Literal

from ..emulator import VirtualModem

__all__ = ["BLAST_CHUNK_BYTES", "PUBLISH_BYTES", "main", "payload"]

#: What the blast server writes per call (bytes).
BLAST_CHUNK_BYTES: Final = 16 * 1024
#: The size of one publish the ack server answers (bytes).
PUBLISH_BYTES: Final = 64
#: The longest request line the source and sink servers accept (bytes).
REQUEST_LINE_MAX_BYTES: Final = 64


def payload(size: int, seed: int) -> bytes:
    """The deterministic payload both ends can build: ``size`` random bytes from ``seed``."""
    return random.Random(seed).randbytes(size)


async def _source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``<size> <seed>\\n`` in, then that payload out and close (the download peer)."""
    try:
        line = await reader.readline()
        size, seed = (int(x) for x in line.split()[:2])
        writer.write(payload(size, seed))
        await writer.drain()
        await reader.read()  # wait for the client to close: no early RST
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``<size>\\n`` in, then ``size`` bytes in; answers their SHA-256 (the upload peer)."""
    try:
        line = await reader.readline()
        remaining = int(line.split()[0])
        digest = hashlib.sha256()
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                break
            digest.update(data)
            remaining -= len(data)
        writer.write(digest.hexdigest().encode() + b"\n")
        await writer.drain()
        await reader.read()
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _ack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An MQTT-like broker: every :data:`PUBLISH_BYTES`-byte publish gets a 4-byte PUBACK."""
    try:
        while True:
            publish = await reader.readexactly(PUBLISH_BYTES)
            writer.write(b"\x40\x02" + publish[2:4])  # PUBACK, the packet identifier
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _blast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Write random bytes until the client goes away (the serial line pacing check)."""
    chunk = payload(BLAST_CHUNK_BYTES, 0)
    try:
        while True:
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass  # cancelled: this process is exiting, and asyncio would log the handler's end
    finally:
        writer.close()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(
    baud: int | None, latency_s: float, count: int, transport: Literal["pty", "tcp"] = "pty"
) -> None:
    """Start everything, announce it on stdout, answer ``stats`` until stdin closes."""
    servers = {
        name: await asyncio.start_server(handler, "127.0.0.1", 0)
        for name, handler in (
            ("source", _source),
            ("sink", _sink),
            ("echo", _echo),
            ("ack", _ack),
            ("blast", _blast),
        )
    }
    async with contextlib.AsyncExitStack() as stack:
        modems = [
            await stack.enter_async_context(
                VirtualModem(baudrate=baud, latency_s=latency_s, transport=transport)
            )
            for _ in range(count)
        ]
        ports = {name: s.sockets[0].getsockname()[1] for name, s in servers.items()}
        print(json.dumps({"urls": [vm.url for vm in modems], "ports": ports}), flush=True)
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        while line := await stdin.readline():
            if line.strip() == b"stats":
                stats = [dataclasses.asdict(vm.stats) for vm in modems]
                print(json.dumps({"modems": stats, "cpu_s": _cpu_s()}), flush=True)
    for server in servers.values():
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--baud`` (a rate or ``none``), ``--latency`` (s) and ``--count``; serve."""
    parser = argparse.ArgumentParser(prog="python -m simsock.bench.peer")
    parser.add_argument("--baud", default="none", help="line rate, or 'none' for unpaced")
    parser.add_argument("--latency", type=float, default=0.0, help="module latency (s)")
    parser.add_argument("--count", type=int, default=1, help="how many virtual modems")
    parser.add_argument(
        "--transport", choices=("pty", "tcp"), default="pty", help="the modems' serial port"
    )
    args = parser.parse_args(argv)
    baud = None if args.baud == "none" else int(args.baud)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(baud, args.latency, args.count, args.transport))
    return 0


if __name__ == "__main__":
    sys.exit(main())
