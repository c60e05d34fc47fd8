"""Wire traces: every byte between host and module, timestamped, and their replay.

``simsock --trace FILE ...`` (or :func:`open_trace` with ``engine.wire_tap``)
writes one line per port read or write::

    # simsock wire trace v1
    # url /dev/ttyUSB2
    0.000312 -> AT\\r
    0.004118 <- \\r\\nOK\\r\\n
    0.120544 <- \\r\\n+CIPRXGET: 1,0\\r\\n

The first field is seconds on the monotonic clock since the trace started,
the second the direction (``->`` host to module, ``<-`` module to host), the
rest the bytes: printable ASCII as is, ``\\\\``, ``\\r``, ``\\n``, ``\\t`` and
``\\xHH`` for everything else, so a trace is text that diff and grep handle
and that still holds binary payloads exactly.

:func:`replay` feeds the module's bytes of a trace to the same
:class:`~simsock.at.parser.Parser` the engine uses and yields what it made of
them, so a trace from a user's module can be examined, and turned into a
parser test, without the module (``simsock trace-replay FILE`` or
``python -m simsock.trace FILE``).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .at.errors import ProtocolError
from .at.events import Event, describe
from .at.parser import Parser

if TYPE_CHECKING:
    from .sockets.modem import Modem

__all__ = [
    "TRACE_HEADER",
    "Replayed",
    "TraceRecord",
    "WireTrace",
    "escape",
    "main",
    "open_trace",
    "open_traced_modem",
    "read_trace",
    "replay",
    "unescape",
]

#: First line of every trace file; :func:`read_trace` accepts files without it.
TRACE_HEADER = "# simsock wire trace v1"
#: The two directions, as ``engine.wire_tap`` names them.
HOST_TO_MODULE = "->"
MODULE_TO_HOST = "<-"

_NAMED = {0x5C: "\\\\", 0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t"}
#: How each byte value is written in a trace (built once: escaping is a table lookup).
_ESCAPES = tuple(_NAMED.get(b, chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in range(256))
_TOKEN = re.compile(r"\\x([0-9a-fA-F]{2})|\\(.)|([^\\]+)", re.DOTALL)
_UNNAMED = {"\\": 0x5C, "r": 0x0D, "n": 0x0A, "t": 0x09}


def escape(data: bytes) -> str:
    """``data`` as one line of trace text (reversible with :func:`unescape`)."""
    return "".join([_ESCAPES[b] for b in data])


def unescape(text: str) -> bytes:
    """The bytes :func:`escape` wrote as ``text``; ValueError for text it cannot have written."""
    out = bytearray()
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() != position:
            break
        position = match.end()
        hex_digits, named, plain = match.groups()
        if hex_digits is not None:
            out.append(int(hex_digits, 16))
        elif named is not None:
            if named not in _UNNAMED:
                raise ValueError(f"unknown escape \\{named} in trace text")
            out.append(_UNNAMED[named])
        else:
            out += plain.encode("latin-1")
    if position != len(text):
        raise ValueError(f"bad escape at column {position} of trace text")
    return bytes(out)


class WireTrace:
    """A trace file being written; call it as ``engine.wire_tap``.

    Writes go to a buffered text file, so the cost on the engine's reader and
    writer paths is one table-driven escape and one buffered write per chunk.
    """

    def __init__(self, stream: TextIO, *, url: str | None = None, owns: bool = False) -> None:
        self._stream = stream
        self._owns = owns
        self._t0 = time.monotonic()
        stream.write(TRACE_HEADER + "\n")
        stream.write(f"# started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        if url is not None:
            stream.write(f"# url {url}\n")

    def __call__(self, direction: str, data: bytes) -> None:
        """Record ``data`` that crossed the port in ``direction`` (``"->"`` or ``"<-"``)."""
        if self._stream.closed:
            return
        self._stream.write(f"{time.monotonic() - self._t0:.6f} {direction} {escape(data)}\n")

    def note(self, text: str) -> None:
        """A comment line (``# text``) in the trace, ignored by :func:`replay`."""
        if not self._stream.closed:
            self._stream.write(f"# {text}\n")

    def flush(self) -> None:
        """Push buffered lines to the file."""
        if not self._stream.closed:
            self._stream.flush()

    def close(self) -> None:
        """Flush, and close the file if this trace opened it."""
        if self._stream.closed:
            return
        self._stream.flush()
        if self._owns:
            self._stream.close()


def open_trace(path: str | Path, *, url: str | None = None) -> WireTrace:
    """Start a trace in the file ``path`` (``-`` for standard error)."""
    if str(path) == "-":
        return WireTrace(sys.stderr, url=url)
    return WireTrace(open(path, "w", encoding="ascii", newline="\n"), url=url, owns=True)


@contextlib.asynccontextmanager
async def open_traced_modem(
    url: str, trace: str | Path | None, **options: Any
) -> AsyncIterator[Modem]:
    """``open_modem(url, **options)`` with its wire traced to the file ``trace`` (if not None).

    The tap is on from the first byte, so the start-up exchange is in the trace.
    """
    from .sockets.opener import open_modem

    if trace is None:
        async with open_modem(url, **options) as modem:
            yield modem
        return
    tracer = open_trace(trace, url=url)
    try:
        async with open_modem(url, wire_tap=tracer, **options) as modem:
            yield modem
    finally:
        tracer.close()


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One line of a trace: when (s), which way, and the bytes."""

    time_s: float
    direction: str
    data: bytes


def read_trace(lines: Iterable[str]) -> Iterator[TraceRecord]:
    """The records of a trace's text lines (comments and blank lines skipped).

    Raises ValueError naming the line number of a line that is not a record.
    """
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[1] not in (HOST_TO_MODULE, MODULE_TO_HOST):
            raise ValueError(f"line {number}: not a trace record: {line[:60]!r}")
        try:
            when = float(parts[0])
            data = unescape(parts[2] if len(parts) > 2 else "")
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        yield TraceRecord(when, parts[1], data)


@dataclass(frozen=True, slots=True)
class Replayed:
    """What replay made of one record: the parser's event, an error, or a host write."""

    time_s: float
    direction: str
    event: Event | None = None
    error: ProtocolError | None = None
    data: bytes = b""

    def describe(self) -> str:
        """One line for a person: time, direction, and the event as the module wrote it."""
        if self.error is not None:
            what = f"protocol error: {self.error}"
        elif self.event is not None:
            what = f"{describe(self.event)}  [{type(self.event).__name__}]"
        else:
            what = escape(self.data)
        return f"{self.time_s:10.6f} {self.direction} {what}"


def replay(records: Iterable[TraceRecord], *, host: bool = False) -> Iterator[Replayed]:
    """Feed the module's bytes to a fresh parser; yield each event (and each parse error).

    With ``host``, the host's writes are yielded too, in order, as raw data.
    A parse error is yielded and parsing goes on, as the engine does.
    """
    parser = Parser()
    last = 0.0
    for record in records:
        last = record.time_s
        if record.direction == HOST_TO_MODULE:
            if host:
                yield Replayed(record.time_s, HOST_TO_MODULE, data=record.data)
            continue
        parser.feed(record.data)
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                yield Replayed(record.time_s, MODULE_TO_HOST, error=exc)
                continue
            if event is None:
                break
            yield Replayed(record.time_s, MODULE_TO_HOST, event=event)
    if parser.buffered:
        partial = ProtocolError(f"{parser.buffered} bytes left incomplete at the end of the trace")
        yield Replayed(last, MODULE_TO_HOST, error=partial)


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``simsock trace-replay`` / ``python -m simsock.trace``."""
    parser.add_argument("file", type=Path, help="a trace written by 'simsock --trace FILE'")
    parser.add_argument(
        "--events-only",
        action="store_true",
        help="leave out what the host wrote (by default its commands are shown in order)",
    )


def run_replay(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the replay of ``args.file``; exit status 0, or 1 when a parse error occurred."""
    out = out or sys.stdout
    errors = 0
    with args.file.open(encoding="ascii", errors="replace") as stream:
        for item in replay(read_trace(stream), host=not args.events_only):
            errors += item.error is not None
            print(item.describe(), file=out)
    return 1 if errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simsock.trace FILE``: replay a trace through the parser."""
    parser = argparse.ArgumentParser(
        prog="python -m simsock.trace",
        description="Feed the module's bytes of a wire trace to simsock's parser and print "
        "the events it makes of them.",
    )
    add_replay_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_replay(args)
    except (OSError, ValueError) as exc:
        print(f"simsock: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
