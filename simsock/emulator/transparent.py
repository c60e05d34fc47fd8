"""Leaving transparent (data) mode: ``+++`` framed by guard times (reference section 2).

In data mode every byte from the host is payload for the link, except the
three characters ``+++`` sent as one unit, with at least the guard time of
silence before and after and less than 900 ms between them. Until the
after-guard has passed, the pluses might still be data; they are held and,
if anything else comes, forwarded after all. Pure: the caller passes ``now``.
"""

from __future__ import annotations

from typing import Final

from ..at.note import ESCAPE_CHAR_GAP_S, ESCAPE_GUARD_S, ESCAPE_SEQUENCE

__all__ = ["EscapeDetector"]

#: The escape is one character sent three times: which one, and how many.
_PLUS: Final = ESCAPE_SEQUENCE.encode("ascii")[0]
_PLUSES: Final = len(ESCAPE_SEQUENCE)


class EscapeDetector:
    """Splits data-mode input into payload and the ``+++`` escape."""

    def __init__(self, now: float, guard_s: float = ESCAPE_GUARD_S) -> None:
        self._guard_s = guard_s
        self._last_data = now  # entering data mode counts as activity
        self._pluses = 0
        self._plus_at = now

    def _plus_fits(self, now: float) -> bool:
        if self._pluses == 0:
            return now - self._last_data >= self._guard_s
        return self._pluses < _PLUSES and now - self._plus_at < ESCAPE_CHAR_GAP_S

    def feed(self, data: bytes, now: float) -> bytes:
        """The payload in ``data``, received at ``now`` (with held pluses that were data)."""
        out = bytearray()
        for index, byte in enumerate(data):
            if byte == _PLUS and self._plus_fits(now):
                self._pluses += 1
                self._plus_at = now
                continue
            # Not an escape: what was held is data, and so is everything from here on.
            out += bytes([_PLUS]) * self._pluses + data[index:]
            self._pluses = 0
            self._last_data = now
            break
        return bytes(out)

    def deadline(self) -> float | None:
        """When :meth:`expire` must run: the after-guard's end, or the char gap's."""
        if self._pluses == 0:
            return None
        return self._plus_at + (self._guard_s if self._pluses == _PLUSES else ESCAPE_CHAR_GAP_S)

    def expire(self, now: float) -> tuple[bytes, bool]:
        """Time passed: (held pluses that are data after all, whether ``+++`` was recognised)."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return b"", False
        pluses, self._pluses = self._pluses, 0
        if pluses == _PLUSES:
            return b"", True
        self._last_data = self._plus_at
        return bytes([_PLUS]) * pluses, False
