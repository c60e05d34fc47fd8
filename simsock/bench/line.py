"""Checks of the virtual serial line itself, with raw bytes on the pty (no simsock client).

A faithful line moves ``baud / 10`` bytes per second each way (8N1) and
never more, however the traffic is shaped. These checks measure that from the
host's side of the pty, so they depend on nothing but the emulator:

- downlink: a link in direct-push mode to a server that writes without end;
  the bytes arriving per one-second window after a warm-up;
- uplink: one over-long command line of about ``seconds`` of line time; the
  module consumes it at the line rate and answers ``ERROR`` when its ``<CR>``
  arrives, so the rate is the line's length over the time to ``ERROR``;
- idle credit: a shorter line (``CREDIT_LINE_BYTES``, an unknown command, so
  ``ERROR``) sent the moment an ``OK`` arrived, and after a short and a long
  idle gap; on a faithful line every answer takes at least the line's wire
  time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import tty
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["RawPort", "check_line"]

#: 8N1: start bit, eight data bits, stop bit.
BITS_PER_BYTE: Final = 10
#: Time given to the downlink to reach its steady state before windows count (s).
WARMUP_S: Final = 0.5
#: Length of one accuracy window (s): the issue asks for 1 % over a second.
WINDOW_S: Final = 1.0
#: The idle-credit probe: a line this long (bytes) ...
CREDIT_LINE_BYTES: Final = 400
#: ... after these idle gaps (s); 0 is a turnaround: sent the moment an ``OK`` arrived.
CREDIT_GAPS_S: Final = (0.0, 0.04, 0.3)
#: How many probes per gap.
CREDIT_PROBES: Final = 5
#: Longest wait for an expected answer (s).
EXPECT_TIMEOUT_S: Final = 30.0


@dataclass
class RawPort:
    """The host side of a pty, read and written with the event loop, arrivals time-stamped."""

    path: str
    fd: int = -1
    buffer: bytearray = field(default_factory=bytearray)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        """Open the slave in raw, non-blocking mode and start reading."""
        self.fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        asyncio.get_running_loop().add_reader(self.fd, self._on_readable)

    def close(self) -> None:
        """Stop reading and close."""
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        self.arrivals.append((time.perf_counter(), len(data)))
        self.buffer += data
        self._event.set()

    async def write(self, data: bytes) -> None:
        """Write everything, waiting while the pty is full."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            with contextlib.suppress(BlockingIOError):
                view = view[os.write(self.fd, view) :]
            if view:
                ready = loop.create_future()
                loop.add_writer(self.fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(self.fd)

    async def expect(self, marker: bytes, timeout_s: float = EXPECT_TIMEOUT_S) -> float:
        """Wait until ``marker`` arrived; drop the buffer up to it; the arrival time."""
        async with asyncio.timeout(timeout_s):
            while (index := self.buffer.find(marker)) < 0:
                self._event.clear()
                await self._event.wait()
        del self.buffer[: index + len(marker)]
        return self.arrivals[-1][0]

    async def command(self, line: str, marker: bytes = b"OK\r\n") -> None:
        """Send an AT command line and wait for ``marker``."""
        await self.write(line.encode() + b"\r")
        await self.expect(marker)


async def _uplink(port: RawPort, capacity: float, seconds: float) -> dict[str, float]:
    size = int(capacity * seconds)
    port.buffer.clear()
    start = time.perf_counter()
    await port.write(b"A" * size + b"\r")
    end = await port.expect(b"ERROR\r\n")
    rate = (size + 1) / (end - start)
    return {"bytes": size + 1, "seconds": end - start, "rate_Bps": rate}


async def _credit(port: RawPort, capacity: float) -> dict[str, Any]:
    wire_s = (CREDIT_LINE_BYTES + 1) / capacity
    out: dict[str, Any] = {"line_bytes": CREDIT_LINE_BYTES + 1, "wire_s": wire_s}
    for gap in CREDIT_GAPS_S:
        times = []
        for _ in range(CREDIT_PROBES):
            if gap:
                await asyncio.sleep(gap)
            else:
                await port.command("AT")
            port.buffer.clear()
            start = time.perf_counter()
            await port.write(b"AT" + b"Z" * (CREDIT_LINE_BYTES - 2) + b"\r")
            times.append(await port.expect(b"ERROR\r\n") - start)
        out[f"after_{gap * 1000:.0f}ms_s"] = statistics.median(times)
    return out


async def _downlink(
    port: RawPort, capacity: float, blast_port: int, seconds: float
) -> dict[str, Any]:
    await port.write(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{blast_port}\r'.encode())
    opened = await port.expect(b"+CIPOPEN: 0,0")
    await asyncio.sleep(WARMUP_S + seconds + 0.2)
    begin = opened + WARMUP_S
    windows = []
    for index in range(int(seconds / WINDOW_S)):
        low, high = begin + index * WINDOW_S, begin + (index + 1) * WINDOW_S
        windows.append(sum(n for t, n in port.arrivals if low <= t < high) / WINDOW_S)
    return {
        "window_rates_Bps": windows,
        "rate_Bps": statistics.fmean(windows),
        "worst_error": max(abs(w / capacity - 1) for w in windows),
    }


async def check_line(url: str, baud: int, blast_port: int, seconds: float) -> dict[str, Any]:
    """Measure one virtual line (see the module docstring); the modem is unusable afterwards."""
    capacity = baud / BITS_PER_BYTE
    port = RawPort(url)
    port.open()
    try:
        await port.command("ATE0")
        await port.command("AT+NETOPEN", b"+NETOPEN: 0")
        uplink = await _uplink(port, capacity, seconds)
        credit = await _credit(port, capacity)
        downlink = await _downlink(port, capacity, blast_port, seconds)
    finally:
        with contextlib.suppress(OSError):
            port.close()
    return {
        "baud": baud,
        "capacity_Bps": capacity,
        "uplink": uplink | {"error": uplink["rate_Bps"] / capacity - 1},
        "downlink": downlink,
        "idle_credit": credit,
    }
