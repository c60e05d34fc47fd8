"""The measured transfers: the library in this process, the far end in a :mod:`.peer` process.

Every transfer records, between just before its first byte and just after its
last, the wall time, this process's CPU time (``time.process_time``: the
emulator and the servers run elsewhere, so it is the client's alone), and the
engine's counters (``engine.stats``): bytes on each direction of the serial
line, commands, payload. Downloads and uploads are checked byte for byte
(SHA-256 of what arrived against what was sent).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import simsock

from .peer import payload

__all__ = [
    "Download",
    "Exchanges",
    "Meter",
    "Peer",
    "Run",
    "Transfer",
    "Upload",
    "exchanges",
    "measure",
    "stop_child",
]

#: Where the far end's servers listen.
PEER_HOST = "127.0.0.1"
#: Bytes asked of a StreamReader per read by the download loop.
READ_BYTES = 65536
#: The far end runs the same simsock as this process, wherever it was imported from.
SIMSOCK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(simsock.__file__)))


class Peer:
    """A running :mod:`simsock.bench.peer` process: its modems' URLs and its servers' ports."""

    def __init__(
        self, baud: int | None, *, latency_s: float = 0.0, count: int = 1, transport: str = "pty"
    ) -> None:
        self.baud = baud
        self.latency_s = latency_s
        self.count = count
        self.transport = transport
        self.urls: list[str] = []
        self.ports: dict[str, int] = {}
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Peer:
        path = os.pathsep.join(x for x in (SIMSOCK_ROOT, os.environ.get("PYTHONPATH")) if x)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simsock.bench.peer",
            "--baud",
            "none" if self.baud is None else str(self.baud),
            "--latency",
            str(self.latency_s),
            "--count",
            str(self.count),
            "--transport",
            self.transport,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        hello = await self._line()
        self.urls, self.ports = hello["urls"], hello["ports"]
        return self

    async def _line(self) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the benchmark peer process exited")
        result: dict[str, Any] = json.loads(line)
        return result

    async def stats(self) -> dict[str, Any]:
        """The emulators' counters and the peer process's CPU seconds."""
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write(b"stats\n")
        await self._proc.stdin.drain()
        return await self._line()

    async def __aexit__(self, *exc: object) -> None:
        await stop_child(self._proc)


async def stop_child(proc: asyncio.subprocess.Process | None) -> None:
    """End a helper process that runs until its standard input closes (kill after 5 s)."""
    if proc is None:
        return
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@dataclass
class Run:
    """One measured transfer."""

    elapsed_s: float
    cpu_s: float
    payload_bytes: int
    up_bytes: int  # host → module on the serial line
    down_bytes: int  # module → host
    commands: int
    exact: bool  # the SHA-256 of what arrived matched
    extra: dict[str, Any] = field(default_factory=dict)


def _snapshot(modems: list[simsock.Modem]) -> tuple[int, int, int]:
    stats = [m.engine.stats for m in modems]
    return (
        sum(s.bytes_written for s in stats),
        sum(s.bytes_read for s in stats),
        sum(s.commands for s in stats),
    )


class Meter:
    """Wall time, process CPU time and wire counters of the modems, from start to stop."""

    def __init__(self, modems: list[simsock.Modem]) -> None:
        self._modems = modems
        self._t0 = self._c0 = 0.0
        self._s0 = (0, 0, 0)

    def start(self) -> None:
        """Take the starting readings."""
        self._s0 = _snapshot(self._modems)
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self, payload_bytes: int, exact: bool, **extra: Any) -> Run:
        """Take the final readings: the run."""
        elapsed = time.perf_counter() - self._t0
        cpu = time.process_time() - self._c0
        up, down, commands = (b - a for a, b in zip(self._s0, _snapshot(self._modems), strict=True))
        return Run(elapsed, cpu, payload_bytes, up, down, commands, exact, extra)


class Transfer:
    """One connection's transfer: :meth:`open` (unmetered), :meth:`run` (metered), :meth:`close`."""

    def __init__(self, modem: simsock.Modem, port: int, size: int, seed: int) -> None:
        self.modem = modem
        self.port = port
        self.size = size
        self.seed = seed
        self.data = payload(size, seed)
        self.expected = hashlib.sha256(self.data).digest()
        self.seconds = 0.0
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> None:
        """Connect to the far end (before the meter starts)."""
        self._stream = await self.modem.open_connection(PEER_HOST, self.port)

    async def run(self) -> bool:
        """Move the payload; whether it arrived byte-exact. Sets :attr:`seconds`."""
        assert self._stream is not None
        start = time.perf_counter()
        exact = await self._move(*self._stream)
        self.seconds = time.perf_counter() - start
        return exact

    async def _move(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        raise NotImplementedError

    async def close(self) -> None:
        """Close the connection (after the meter stopped)."""
        if self._stream is not None:
            writer = self._stream[1]
            writer.close()
            await writer.wait_closed()
            self._stream = None


class Download(Transfer):
    """Fetch ``size`` bytes from the source server (``<size> <seed>\\n`` asks for them)."""

    async def _move(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(f"{self.size} {self.seed}\n".encode())
        digest = hashlib.sha256()
        got = 0
        while got < self.size:
            chunk = await reader.read(READ_BYTES)
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
        return got == self.size and digest.digest() == self.expected


class Upload(Transfer):
    """Send ``size`` bytes to the sink server, which answers their SHA-256 when it has them all."""

    async def _move(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(f"{self.size}\n".encode())
        writer.write(self.data)
        answer = await reader.readline()
        return answer.strip() == self.expected.hex().encode()


async def measure(modems: list[simsock.Modem], transfers: list[Transfer]) -> Run:
    """Open every transfer, then run them all at once under one :class:`Meter`."""
    for transfer in transfers:
        await transfer.open()
    meter = Meter(modems)
    try:
        meter.start()
        results = await asyncio.gather(*(t.run() for t in transfers))
        return meter.stop(
            sum(t.size for t in transfers),
            all(results),
            seconds=[t.seconds for t in transfers],
        )
    finally:
        for transfer in transfers:
            await transfer.close()


@dataclass
class Exchanges:
    """Small request/answer exchanges, one at a time: times, and the line per exchange."""

    exact: bool
    times: list[float]
    up_bytes: float  # per exchange
    down_bytes: float
    commands: float


async def exchanges(
    modem: simsock.Modem, port: int, out_bytes: int, in_bytes: int, count: int
) -> Exchanges:
    """``count`` exchanges: ``out_bytes`` written, ``in_bytes`` awaited in answer.

    The echo server answers a message with itself (``in_bytes == out_bytes``);
    the ack server answers a 64-byte publish with a 4-byte PUBACK naming it.
    """
    reader, writer = await modem.open_connection(PEER_HOST, port)
    exact = True
    times: list[float] = []

    async def one(index: int) -> bool:
        message = payload(out_bytes, index)
        writer.write(message)
        answer = await reader.readexactly(in_bytes)
        return answer == (message if in_bytes == out_bytes else b"\x40\x02" + message[2:4])

    try:
        for index in range(3):  # warm up: the first exchanges pay for lazy set-up
            await one(index)
        before = _snapshot([modem])
        for index in range(count):
            start = time.perf_counter()
            exact = await one(index) and exact
            times.append(time.perf_counter() - start)
        after = _snapshot([modem])
    finally:
        writer.close()
        await writer.wait_closed()
    up, down, commands = ((b - a) / count for a, b in zip(before, after, strict=True))
    return Exchanges(exact, times, up, down, commands)


def median_run(runs: list[Run], key: str = "elapsed_s") -> Run:
    """The run with the median ``key`` (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: float(getattr(r, key)))
    return ordered[(len(ordered) - 1) // 2]


def spread(values: list[float]) -> float:
    """(max - min) / median: the noise of repeated measurements."""
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / statistics.median(values)
