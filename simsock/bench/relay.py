"""An independent serial line: a paced TCP relay in its own process.

The benchmarks' own line is the virtual SIM7028's pacing (:mod:`simsock.emulator.pacing`),
which the emulator applies to itself. To check it, this module is a second,
unrelated line model: the emulator runs *unpaced* on a ``socket://`` port,
and this relay sits between it and the host, moving each direction at exactly
``baud / 10`` bytes per second (8N1) as a UART would:

- a byte cannot start on the wire before it was written, nor before the
  byte ahead of it has left (one clock per direction, no credit for idle
  time: when the relay had to wait for data, the clock restarts at its
  arrival);
- bytes arrive at the far side in slices of :data:`SLICE_S` of line time,
  each delivered when its last byte would have arrived;
- both sockets have 4 KiB buffers (:data:`SOCKET_BUFFER_BYTES`): the host's
  serial driver buffer and the module's UART FIFO are small, so a writer
  that outruns the line blocks, as it would on a real port.

Run as ``python -m simsock.bench.relay --baud 921600 --to 127.0.0.1:PORT``;
it prints ``{"url": "socket://127.0.0.1:N"}`` and relays one host connection
at a time until standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Final

from ..emulator.pacing import tight_timer_slack

__all__ = ["SLICE_S", "SOCKET_BUFFER_BYTES", "RelayProcess", "main", "pace"]

#: 8N1: start bit, eight data bits, stop bit.
BITS_PER_BYTE: Final = 10
#: Line time moved at once (s). Each slice reaches the far side when its last
#: byte would have, so an answer is complete exactly on time; only the first
#: bytes of a long one come up to a slice late (as behind a USB adapter's
#: latency timer). Longer slices cost fewer wake-ups on a 2-core machine.
SLICE_S: Final = 0.005
#: A thread that comes back later than this (s) after its slice may have left the
#: line idle meanwhile: the next slice then starts when it is read, not earlier.
LATE_S: Final = 0.001
#: Send and receive buffer of each relayed socket (bytes).
SOCKET_BUFFER_BYTES: Final = 4096


def _small_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def pace(source: socket.socket, sink: socket.socket, baud: int) -> None:
    """Move bytes from ``source`` to ``sink`` at the line's rate until ``source`` ends.

    A blocking loop for a thread of its own: ``time.sleep`` wakes within tens
    of microseconds, where the event loop's timers round up to a millisecond
    (epoll), which would add that much to every turn of the line.
    """
    tight_timer_slack()
    rate = baud / BITS_PER_BYTE
    slice_bytes = max(1, round(rate * SLICE_S))
    free_at = 0.0  # when the line has carried everything booked so far
    source.setblocking(False)
    while True:
        waited = False
        try:
            data = source.recv(slice_bytes)  # already queued: the line stayed busy
        except BlockingIOError:
            select.select([source], [], [])
            waited = True
            try:
                data = source.recv(slice_bytes)
            except BlockingIOError:
                continue
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            return
        now = time.monotonic()
        # A byte that had to be waited for starts when it came. One that was queued
        # starts when the byte ahead of it has left, unless this thread came back
        # late (then it may have come in the gap: take the later time).
        start = max(free_at, now) if waited or now > free_at + LATE_S else free_at
        free_at = start + len(data) / rate
        delay = free_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            sink.setblocking(True)
            sink.sendall(data)
            sink.setblocking(False)
        except OSError:
            return


def _relay_one(host: socket.socket, target: tuple[str, int], baud: int) -> None:
    module = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _small_buffers(module)
    try:
        module.connect(target)
        threads = [
            threading.Thread(target=pace, args=(host, module, baud), daemon=True),
            threading.Thread(target=pace, args=(module, host, baud), daemon=True),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        module.close()
        host.close()


def serve(baud: int, target: tuple[str, int]) -> None:
    """Listen on 127.0.0.1, print the URL, relay host connections until stdin closes."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _small_buffers(listener)  # inherited by accepted sockets, before the handshake
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(json.dumps({"url": f"socket://127.0.0.1:{listener.getsockname()[1]}"}), flush=True)

    def accept_forever() -> None:
        while True:
            try:
                host, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_relay_one, args=(host, target, baud), daemon=True).start()

    threading.Thread(target=accept_forever, daemon=True).start()
    sys.stdin.read()  # until the benchmark closes our standard input
    listener.close()


class RelayProcess:
    """``async with RelayProcess(baud, "socket://127.0.0.1:N") as relay``: ``relay.url``
    is the paced line to that unpaced module, served by a process of its own."""

    def __init__(self, baud: int, module_url: str) -> None:
        self.baud = baud
        self.module_url = module_url
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> RelayProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simsock.bench.relay",
            "--baud",
            str(self.baud),
            "--to",
            self.module_url.removeprefix("socket://"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError("the line relay process exited")
        self.url = str(json.loads(line)["url"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        from .cases import stop_child  # (cases imports simsock: not for the relay process)

        await stop_child(self._proc)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simsock.bench.relay --baud B --to HOST:PORT``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baud", type=int, required=True)
    parser.add_argument("--to", required=True, help="the unpaced module's HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    serve(args.baud, (host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
