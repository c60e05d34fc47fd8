"""Command lines assembled from the host's bytes (reference section 1).

``<CR>`` ends a line; the ``<LF>`` of a ``<CR><LF>`` terminator belongs to
the line that just ended (echoed with it, never read as the start of the
next one, nor as payload). Backspace edits the line, as for a person at a
terminal. A line longer than :data:`MAX_COMMAND_LINE_BYTES` is refused
whole. Pure: bytes in, echo and complete lines out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_COMMAND_LINE_BYTES", "CommandLine", "CommandLineReader"]

#: A command line longer than this is discarded and answered ``ERROR``.
MAX_COMMAND_LINE_BYTES: Final = 1024

_CR: Final = 0x0D
_LF: Final = 0x0A
_BACKSPACE: Final = 0x08


@dataclass(frozen=True, slots=True)
class CommandLine:
    """One complete line, without terminator and surrounding blanks; ``too_long`` if refused."""

    text: str
    too_long: bool = False


class CommandLineReader:
    """Turns host bytes into echo and complete :class:`CommandLine` s."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._too_long = False
        self._after_cr = False
        #: When the last byte of an unfinished line arrived (caller's clock).
        self.last_byte_at = 0.0

    @property
    def partial(self) -> bool:
        """The host is in the middle of a line."""
        return bool(self._line)

    def feed(self, buf: bytearray, now: float) -> tuple[bytes, CommandLine | None]:
        """Take bytes from ``buf`` up to one line end: (their echo, the line or ``None``)."""
        if self._after_cr:
            self._after_cr = False
            if buf[:1] == b"\n":  # the LF of a <CR><LF> that came in a later piece
                del buf[0]
                return b"\n", None
        cr = buf.find(_CR)
        end = len(buf) if cr < 0 else cr + 1
        if 0 <= cr < len(buf) - 1 and buf[cr + 1] == _LF:
            end += 1
        chunk = bytes(buf[:end])
        del buf[:end]
        body = chunk[:cr] if cr >= 0 else chunk
        if body:
            self.last_byte_at = now
            if len(self._line) + len(body) > MAX_COMMAND_LINE_BYTES:
                self._too_long = True
            else:
                self._line += body
        if cr < 0:
            return chunk, None
        self._after_cr = not chunk.endswith(b"\n")
        raw, too_long = bytes(self._line), self._too_long
        self._line.clear()
        self._too_long = False
        return chunk, CommandLine(_apply_backspaces(raw).decode("latin-1").strip(), too_long)


def _apply_backspaces(raw: bytes) -> bytes:
    if _BACKSPACE not in raw:
        return raw
    kept = bytearray()
    for byte in raw:
        if byte == _BACKSPACE:
            del kept[-1:]
        else:
            kept.append(byte)
    return bytes(kept)
