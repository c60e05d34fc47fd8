"""Baud-rate pacing: a virtual serial line moves no more bytes than its wire could.

A UART at 8N1 spends 10 bit times per byte (start, 8 data, stop), so at
115200 baud it carries 11,520 bytes per second. :class:`Pacer` books every
chunk on a virtual clock that runs ahead of real time and sleeps until the
chunk has "left"; because the clock is virtual, the sleeps' jitter does not
add up and the rate stays exact over any second of continuous traffic.

The event loop's timers cannot do this alone: epoll counts in whole
milliseconds, so ``asyncio.sleep(0.0004)`` returns after a millisecond or
more, and every short answer (``OK``, a ``>`` prompt) would reach the host
late by up to that, several percent of a 921600-baud command turn. The
last stretch of each wait is therefore slept in a thread of the pacer's own
(``time.sleep`` wakes within tens of microseconds), which wakes the loop
when it is done, and the final 150 µs are spun on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Final

__all__ = ["BITS_PER_BYTE", "PACING_SLACK_S", "Pacer", "tight_timer_slack"]

#: 8N1: one start bit, eight data bits, one stop bit.
BITS_PER_BYTE: Final = 10
#: How much line time one chunk takes (s): short enough that output trickles
#: like a real line, long enough that the event loop is not woken per byte.
PACING_SLICE_S: Final = 0.005
#: A chunk that was already queued when its turn came starts where the one
#: before it ended (the line stayed busy: a late wake-up costs no line time),
#: unless the caller came back later than this (s): then it starts now rather
#: than as a catch-up burst.
PACING_SLACK_S: Final = 0.05
#: Waits longer than this (s) begin on the loop's coarse timer ...
COARSE_WAIT_S: Final = 0.003
#: ... which is left this much (s) early, for the precise thread to finish ...
PRECISE_TAIL_S: Final = 0.0015
#: ... which in turn hands back this much (s) early: a thread's wake-up and the
#: loop's take 40-150 µs, so the last stretch is waited on the loop itself,
#: spinning (at most this long per wait).
SPIN_S: Final = 0.00015


#: prctl(2) option that sets the calling thread's timer slack (Linux).
_PR_SET_TIMERSLACK: Final = 29


def tight_timer_slack() -> None:
    """Let this thread's sleeps end within about 40 µs instead of Linux's default 50 µs
    slack plus wake-up (about 95 µs); a no-op elsewhere or if the call fails."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


class Pacer:
    """Spends one direction of a serial line's time; ``baudrate=None`` means no limit."""

    def __init__(self, baudrate: int | None) -> None:
        if baudrate is not None and baudrate <= 0:
            raise ValueError(f"baudrate must be positive, not {baudrate}")
        self.baudrate = baudrate
        self._free_at = 0.0
        self._timer: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the precise-sleep thread (a later wait starts a new one)."""
        if self._timer is not None:
            self._timer.shutdown(wait=False, cancel_futures=True)
            self._timer = None

    async def _sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining > COARSE_WAIT_S:
            await asyncio.sleep(remaining - PRECISE_TAIL_S)
            remaining = deadline - loop.time()
        if remaining > SPIN_S:
            if self._timer is None:
                self._timer = ThreadPoolExecutor(
                    1, thread_name_prefix="simsock-pacer", initializer=tight_timer_slack
                )
            await loop.run_in_executor(self._timer, time.sleep, remaining - SPIN_S)
        while loop.time() < deadline:
            pass  # at most SPIN_S, unless the thread came back early

    @property
    def chunk_bytes(self) -> int:
        """How many bytes to move at once (65536 when unpaced)."""
        if self.baudrate is None:
            return 65536
        return max(1, round(self.baudrate / BITS_PER_BYTE * PACING_SLICE_S))

    def seconds_for(self, nbytes: int) -> float:
        """Line time of ``nbytes`` (0 when unpaced)."""
        return 0.0 if self.baudrate is None else nbytes * BITS_PER_BYTE / self.baudrate

    async def spend(self, nbytes: int, *, waited: bool) -> None:
        """Wait until ``nbytes`` booked after everything before them have crossed the line.

        ``waited`` says the caller had to wait for these bytes (it found the
        line idle): they start now, never earlier. Bytes that were queued
        already start where the previous ones ended (within
        :data:`PACING_SLACK_S`), so a late wake-up costs no line time and the
        rate stays exact over continuous traffic. (An earlier rule guessed
        idleness from the gap between calls and let a sub-2 ms turnaround
        start in the past: every command's answer crossed the line early, and
        the benchmarks read above their framing ceilings.)
        """
        if self.baudrate is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if waited or now > self._free_at + PACING_SLACK_S:
            self._free_at = max(self._free_at, now)
        self._free_at += self.seconds_for(nbytes)
        await self._sleep_until(self._free_at)
