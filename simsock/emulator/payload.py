"""The payload of one ``AT+CIPSEND``, read from the host after the ``>`` prompt (3.4).

Fixed length: exactly ``<length>`` bytes, taken as they are. Variable
length: bytes up to Ctrl+Z (0x1A); ESC (0x1B) cancels; inside the data 0x03
escapes the next 0x1A, 0x1B or 0x03. The reader may be fed in any pieces.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from ..at.note import CTRL_Z, ESC, ETX, MAX_SEND_BYTES

__all__ = ["PayloadReader", "PayloadState"]

#: The bytes that end, cancel or escape inside a variable-length payload.
_SPECIAL: Final = re.compile(b"[%s]" % bytes((ETX, CTRL_Z, ESC)))


class PayloadState(enum.Enum):
    """Where the payload is after a :meth:`PayloadReader.feed`."""

    MORE = "more"  # still reading
    DONE = "done"  # complete: :attr:`PayloadReader.data`
    CANCELLED = "cancelled"  # ESC


class PayloadReader:
    """Collects one CIPSEND payload for ``link`` (``length`` ``None``: Ctrl+Z ends it)."""

    def __init__(self, link: int, length: int | None, address: tuple[str, int] | None) -> None:
        self.link = link
        self.length = length
        self.address = address
        self._data = bytearray()
        self._escaped = False

    @property
    def data(self) -> bytes:
        """The payload so far (unescaped)."""
        return bytes(self._data)

    @property
    def too_long(self) -> bool:
        """A variable-length payload ran past the 1500-byte limit."""
        return len(self._data) > MAX_SEND_BYTES

    def feed(self, buf: bytearray) -> PayloadState:
        """Take what belongs to the payload from the front of ``buf``."""
        if self.length is not None:
            need = self.length - len(self._data)
            self._data += buf[:need]
            del buf[:need]
            return PayloadState.DONE if len(self._data) == self.length else PayloadState.MORE
        index = 0
        state = PayloadState.MORE
        while index < len(buf):
            if self._escaped:
                self._escaped = False
                if buf[index] in (ETX, CTRL_Z, ESC):
                    self._data.append(buf[index])
                    index += 1
                else:  # a lone ETX is data; the byte after it is read as usual
                    self._data.append(ETX)
                continue
            match = _SPECIAL.search(buf, index)
            stop = len(buf) if match is None else match.start()
            self._data += buf[index:stop]
            index = stop if match is None else stop + 1
            if match is None:
                break
            special = buf[stop]
            if special == ETX:
                self._escaped = True
            else:
                state = PayloadState.DONE if special == CTRL_Z else PayloadState.CANCELLED
                break
        del buf[:index]
        # Past the limit the payload is refused anyway: keep one byte too many, not all.
        del self._data[MAX_SEND_BYTES + 1 :]
        return state
