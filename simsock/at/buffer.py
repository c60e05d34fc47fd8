"""The parser's receive buffer: line extraction and length-delimited reads in linear time.

It follows h11's ``ReceiveBuffer`` (remember how far a line terminator was
already searched for, so a long line arriving a byte at a time costs O(n), not
O(n²)) and wsproto's ``consume_exactly`` (``None`` while short).
"""

from __future__ import annotations

import re

__all__ = ["ReceiveBuffer"]

_CR = 0x0D
_LF = 0x0A
_LINE_END = re.compile(b"[\r\n]")
#: Drop the consumed prefix once it is this large: amortised O(1) per byte.
_COMPACT_AT_BYTES = 64 * 1024


class ReceiveBuffer:
    """Bytes received and not yet parsed."""

    __slots__ = ("_data", "_scanned", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0  # first unconsumed byte
        self._scanned = 0  # bytes from _start already known to hold no CR/LF

    def __len__(self) -> int:
        return len(self._data) - self._start

    def feed(self, data: bytes) -> None:
        """Append ``data``."""
        if self._start >= _COMPACT_AT_BYTES and self._start * 2 >= len(self._data):
            del self._data[: self._start]
            self._start = 0
        self._data += data

    def peek(self) -> int | None:
        """The next byte, or ``None`` when empty."""
        if self._start < len(self._data):
            return self._data[self._start]
        return None

    def skip(self, count: int) -> None:
        """Consume ``count`` bytes (at most what is buffered)."""
        self._start = min(self._start + count, len(self._data))
        self._scanned = 0

    def skip_line_ends(self) -> None:
        """Consume any CR and LF bytes at the front (the empty lines between V1 lines)."""
        data = self._data
        start = self._start
        end = len(data)
        while start < end and data[start] in (_CR, _LF):
            start += 1
        if start != self._start:
            self._start = start
            self._scanned = 0

    def consume_exactly(self, count: int) -> bytes | None:
        """The next ``count`` bytes, consumed; ``None`` (nothing consumed) while fewer are here."""
        if len(self._data) - self._start < count:
            return None
        start = self._start
        self._start = start + count
        self._scanned = 0
        return bytes(self._data[start : start + count])

    def take_line(self) -> tuple[bytes, int] | None:
        """The next line and the terminator byte (CR or LF) that ended it, both consumed.

        ``None`` while no terminator is buffered. Only the one terminator byte is
        consumed: the LF of a CRLF is left for the caller to skip or to use.
        """
        data = self._data
        start = self._start
        search = start + self._scanned
        found = _LINE_END.search(data, search)
        if found is None:
            self._scanned = len(data) - start
            return None
        end = found.start()
        line = bytes(data[start:end])
        self._start = end + 1
        self._scanned = 0
        return line, data[end]

    def pending_line_length(self) -> int:
        """How many bytes an unterminated line at the front holds so far."""
        return len(self._data) - self._start

    def peek_all(self) -> bytes:
        """Everything buffered, not consumed."""
        return bytes(self._data[self._start :])

    def take_all(self) -> bytes:
        """Everything buffered, consumed."""
        data = bytes(self._data[self._start :])
        self.clear()
        return data

    def endswith(self, suffix: bytes) -> bool:
        """Whether the buffered bytes end with ``suffix``."""
        return len(self) >= len(suffix) and self._data.endswith(suffix)

    def tail_prefix_length(self, marker: bytes) -> int:
        """The length of the longest tail of the buffer that is a proper prefix of ``marker``."""
        data = self._data
        for size in range(min(len(marker) - 1, len(self)), 0, -1):
            if data.endswith(marker[:size]):
                return size
        return 0

    def clear(self) -> None:
        """Forget everything buffered."""
        self._data.clear()
        self._start = 0
        self._scanned = 0
