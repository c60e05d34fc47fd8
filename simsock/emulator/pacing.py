"""Baud-rate pacing: a virtual serial line moves no more bytes than its wire could.

A UART at 8N1 spends 10 bit times per byte (start, 8 data, stop), so at
115200 baud it carries 11,520 bytes per second. :class:`Pacer` books every
chunk on a virtual clock that runs ahead of real time and sleeps until the
chunk has "left"; because the clock is virtual, the sleeps' jitter does not
add up and the rate stays exact over any second of continuous traffic.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["BITS_PER_BYTE", "Pacer"]

#: 8N1: one start bit, eight data bits, one stop bit.
BITS_PER_BYTE: Final = 10
#: How much line time one chunk takes (s): short enough that output trickles
#: like a real line, long enough that the event loop is not woken per byte.
PACING_SLICE_S: Final = 0.005
#: When the line fell behind by more than this (s), it was idle, not late:
#: restart the clock instead of sending a catch-up burst.
PACING_SLACK_S: Final = 0.05
#: A caller that comes back later than this after its last chunk was waiting
#: for data (the line idled), not merely woken late: idle line time is gone,
#: not credit for a burst (found by the benchmarks: without this, a short
#: idle gap let the next command's answer cross the line in no time).
IDLE_GAP_S: Final = 0.002


class Pacer:
    """Spends one direction of a serial line's time; ``baudrate=None`` means no limit."""

    def __init__(self, baudrate: int | None) -> None:
        if baudrate is not None and baudrate <= 0:
            raise ValueError(f"baudrate must be positive, not {baudrate}")
        self.baudrate = baudrate
        self._free_at = 0.0
        self._returned_at = 0.0

    @property
    def chunk_bytes(self) -> int:
        """How many bytes to move at once (65536 when unpaced)."""
        if self.baudrate is None:
            return 65536
        return max(1, round(self.baudrate / BITS_PER_BYTE * PACING_SLICE_S))

    def seconds_for(self, nbytes: int) -> float:
        """Line time of ``nbytes`` (0 when unpaced)."""
        return 0.0 if self.baudrate is None else nbytes * BITS_PER_BYTE / self.baudrate

    async def spend(self, nbytes: int) -> None:
        """Wait until ``nbytes`` booked after everything before them have crossed the line."""
        if self.baudrate is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = now - self._returned_at > IDLE_GAP_S
        if now > self._free_at + (0.0 if idle else PACING_SLACK_S):
            self._free_at = now
        self._free_at += self.seconds_for(nbytes)
        delay = self._free_at - now
        if delay > 0:
            await asyncio.sleep(delay)
        self._returned_at = loop.time()
