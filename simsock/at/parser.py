"""Incremental parser of the module's output: bytes in, :mod:`.events` out.

The contract follows h11: :meth:`Parser.feed` only buffers; :meth:`Parser.next_event`
returns an event, or ``None`` when it needs more bytes. Splitting the input at
any byte gives the same events. Payload blocks (``+CIPRXGET: 2/3``, ``+IPD``,
``+RECEIVE``) are read by their length, never searched.

A malformed line makes :meth:`~Parser.next_event` raise :class:`ProtocolError`
*after* the line has been dropped: the caller logs it and calls again, and
parsing goes on at the next line (the resynchronisation the reference's
framing allows). A line longer than :data:`MAX_LINE_BYTES` is dropped the same
way, so garbage cannot grow memory.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .buffer import ReceiveBuffer
from .errors import ProtocolError
from .events import (
    ClientAccepted,
    CmeError,
    Connect,
    ConnectFail,
    DataWaiting,
    Echo,
    Error,
    Event,
    IpError,
    Line,
    LinkClosed,
    ModuleReady,
    NetworkClosed,
    Notice,
    Ok,
    Prompt,
    PushedData,
    RawData,
    ReceivedData,
    TransparentClosed,
)
from .fields import int_fields, split_fields
from .note import (
    CLOSED,
    CONNECT,
    CONNECT_FAIL,
    MAX_HEX_READ_BYTES,
    MAX_PUSH_BYTES,
    MAX_READ_BYTES,
    NETWORK_CLOSED,
    PROMPT,
    READY,
    SENDER_PREFIXES,
    SMS_READY,
)

__all__ = [
    "MAX_LINE_BYTES",
    "START_UP_NOTICES",
    "Parser",
    "split_address",
]

#: Longest text line accepted. The longest the reference produces is a
#: ``+CDNSGIP`` answer with a 254-character domain (3.17), about 300 bytes.
MAX_LINE_BYTES = 1024

#: Lines SIMCom firmware prints by itself once a restart is done (besides ``RDY``
#: or ``*ATREADY: 1``, and ``+CPIN: READY``, which a query could also ask for).
#: None of them ever answers a command.
START_UP_NOTICES = frozenset({"SMS DONE", "PB DONE", SMS_READY, "Call Ready", "PB Ready"})

#: What ends transparent data mode, as the module frames it (4.2, 2).
TRANSPARENT_CLOSED = b"\r\n" + CLOSED.encode("ascii") + b"\r\n"
ESCAPE_OK = b"\r\nOK\r\n"

_CR = 0x0D
_LF = 0x0A
#: The ``>`` of the prompt and the space after it (its CR LF are skipped as line ends).
_PROMPT, _SPACE = PROMPT[2], PROMPT[3]


@dataclass(slots=True)
class _Payload:
    """A payload block announced by a header line and not yet read."""

    length: int  # bytes to read from the wire (twice the payload for hex)
    link: int | None
    pushed: bool  # +IPD / +RECEIVE (else a +CIPRXGET read)
    rest: int | None  # +CIPRXGET rest_len (None: the firmware left it out)
    hex: bool
    need_lf: bool  # the header ended with CR: skip the LF of its CRLF first
    address: tuple[str, int] | None


def split_address(text: str) -> tuple[str, int]:
    """``'1.2.3.4:80'``, ``'::1:80'`` or ``'[::1]:80'`` → ``(host, port)``; else ProtocolError."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not port.isascii():
        raise ProtocolError(f"not an address:port: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if number > 65535:
        raise ProtocolError(f"port out of range: {text!r}")
    return host, number


#: Whole CRLF-framed text lines, then perhaps the start of one more (a read may
#: end inside the URC that followed the marker).
#: ``+CIPRXGET: 2|3,<link>,<read_len>,<rest_len>`` in its usual spelling (3.5).
_CIPRXGET_READ = re.compile(r"\+CIPRXGET: ?([23]),(\d{1,2}),(\d{1,5}),(\d{1,9})\Z")
_TRAILING_LINES = re.compile(
    rb"(?:\r\n[\x20-\x7e]{1,120}\r\n)*(?:\r(?:\n[\x20-\x7e]{0,120}\r?)?)?\Z"
)
#: Command-mode output that may follow a marker in the same read.
_MAX_TRAILING_BYTES = 256


def _marker_end(data: bytes, marker: bytes) -> int:
    """Where ``marker`` ends if it closes data mode: last in ``data``, or followed only
    by a few CRLF-framed text lines (URCs the module sent after it); else -1."""
    at = data.rfind(marker)
    if at < 0:
        return -1
    end = at + len(marker)
    rest = data[end:]
    if not rest or (len(rest) <= _MAX_TRAILING_BYTES and _TRAILING_LINES.match(rest)):
        return end
    return -1


class Parser:
    """Turns the module's byte stream into events; see the module docstring."""

    __slots__ = (
        "_buffer",
        "_discarding",
        "_last_cr",
        "_payload",
        "_raw",
        "_raw_markers",
        "_recv_from",
        "_skip_lf",
    )

    def __init__(self) -> None:
        self._buffer = ReceiveBuffer()
        self._payload: _Payload | None = None
        self._recv_from: tuple[str, int] | None = None
        self._discarding = False  # inside an over-long line: drop up to its end
        self._raw = False  # transparent data mode: bytes are the link's, unframed
        self._raw_markers: dict[bytes, Event] = {}
        self._last_cr = False  # the last line ended with CR (its LF may follow)
        self._skip_lf = False

    def feed(self, data: bytes) -> None:
        """Buffer ``data``; events come from :meth:`next_event`."""
        self._buffer.feed(data)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget all buffered input and partial state (after the port was reopened)."""
        self._buffer.clear()
        self._payload = None
        self._recv_from = None
        self._discarding = False
        self._raw = False
        self._raw_markers = {}

    def events(self) -> Iterator[Event]:
        """Every event the buffered bytes complete (stops at the first ProtocolError)."""
        while (event := self.next_event()) is not None:
            yield event

    # -- transparent data mode (2) -------------------------------------------------

    @property
    def raw(self) -> bool:
        """In transparent data mode."""
        return self._raw

    def enter_raw(self) -> None:
        """After ``CONNECT``: what follows is the transparent link's bytes.

        Data mode ends only with ``CLOSED`` (the link closed) or, once
        :meth:`expect_escape_ok` was called, with the ``OK`` that answers
        ``+++``. Those are recognised only as the *last* bytes received, since
        the module sends them after the data and then nothing until asked: a
        peer that sends exactly those bytes as its last ones is misread. It is
        the limit of transparent mode itself (2), documented for users.
        """
        self._raw = True
        self._raw_markers = {TRANSPARENT_CLOSED: TransparentClosed()}
        self._skip_lf = self._last_cr  # the LF of "CONNECT 115200\r\n" is not data

    def resume_raw(self) -> None:
        """After ``CLOSED``: stay in data mode until the session knows it was not data.

        A peer may send those very bytes; the session checks with an escape
        (:mod:`simsock.at.datamode`) and meanwhile what follows is raw data.
        """
        self._raw = True
        self._raw_markers = {TRANSPARENT_CLOSED: TransparentClosed()}

    def leave_raw(self, replay: bytes = b"") -> None:
        """Command mode after all; ``replay`` (taken as raw meanwhile) is parsed as lines first."""
        self._raw = False
        self._raw_markers = {}
        if replay:
            rest = self._buffer.take_all()
            self._buffer.feed(replay + rest)

    def expect_escape_ok(self) -> None:
        """``+++`` was sent: the ``OK`` that ends data mode may come now."""
        self._raw_markers[ESCAPE_OK] = Ok()

    def flush_raw(self) -> RawData | None:
        """Release bytes held back because they could begin a marker (the engine's timer)."""
        if self._raw and len(self._buffer):
            return RawData(self._buffer.take_all())
        return None

    def _next_raw(self) -> Event | None:
        buf = self._buffer
        if self._skip_lf:
            first = buf.peek()
            if first is None:
                return None
            if first == _LF:
                buf.skip(1)
            self._skip_lf = False
        for marker, event in self._raw_markers.items():
            end = _marker_end(buf.peek_all(), marker)
            if end >= 0:
                everything = buf.take_all()
                data, rest = everything[: end - len(marker)], everything[end:]
                if data:
                    buf.feed(everything[end - len(marker) :])  # the marker's turn is next
                    return RawData(data)
                buf.feed(rest)  # command-mode lines that followed it
                self._raw = False
                self._raw_markers = {}
                return event
        hold = max((buf.tail_prefix_length(m) for m in self._raw_markers), default=0)
        if len(buf) <= hold:
            return None
        data = buf.take_all()
        if hold:
            buf.feed(data[-hold:])
            data = data[:-hold]
        return RawData(data)

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more bytes are needed."""
        buf = self._buffer
        while True:
            if self._raw:
                return self._next_raw()
            if self._payload is not None:
                return self._read_payload(self._payload)
            if self._discarding:
                if buf.take_line() is None:
                    buf.clear()
                    return None
                self._discarding = False
            buf.skip_line_ends()
            first = buf.peek()
            if first is None:
                return None
            if first == _PROMPT:
                # "\r\n> " (3.4; section 1): not followed by CRLF. A space that
                # arrives later becomes a blank line, which is ignored.
                buf.skip(1)
                if buf.peek() == _SPACE:
                    buf.skip(1)
                return Prompt()
            taken = buf.take_line()
            if taken is None:
                if buf.pending_line_length() > MAX_LINE_BYTES:
                    dropped = buf.pending_line_length()
                    buf.clear()
                    self._discarding = True
                    raise ProtocolError(
                        f"line longer than {MAX_LINE_BYTES} bytes ({dropped} dropped)"
                    )
                return None
            raw, terminator = taken
            self._last_cr = terminator == _CR
            if len(raw) > MAX_LINE_BYTES:
                raise ProtocolError(f"line longer than {MAX_LINE_BYTES} bytes ({len(raw)} dropped)")
            try:
                text = raw.decode("ascii").strip()
            except UnicodeDecodeError:
                raise ProtocolError(f"non-ASCII line dropped: {raw[:64]!r}") from None
            if not text:
                continue
            event = self._classify(text, terminator == _CR)
            if event is not None:
                return event

    # -- payloads --------------------------------------------------------------

    def _read_payload(self, payload: _Payload) -> Event | None:
        buf = self._buffer
        if payload.need_lf:
            nxt = buf.peek()
            if nxt is None:
                return None
            if nxt == _LF:
                buf.skip(1)
            payload.need_lf = False
        raw = buf.consume_exactly(payload.length)
        if raw is None:
            return None
        self._payload = None
        if payload.hex:
            try:
                data = binascii.unhexlify(raw)
            except (binascii.Error, ValueError):
                raise ProtocolError(f"bad hex payload: {raw[:32]!r}") from None
        else:
            data = raw
        if payload.pushed:
            return PushedData(payload.link, data, payload.address)
        assert payload.link is not None
        return ReceivedData(payload.link, data, payload.rest)

    def _start_payload(
        self,
        length: int,
        link: int | None,
        rest: int | None,
        hex_: bool,
        ended_cr: bool,
        limit: int,
        *,
        pushed: bool = False,
    ) -> Event | None:
        if not 0 <= length <= limit:
            raise ProtocolError(f"payload length {length} outside 0..{limit}")
        address = None
        if pushed:
            address, self._recv_from = self._recv_from, None
        self._payload = _Payload(
            length * 2 if hex_ else length, link, pushed, rest, hex_, ended_cr, address
        )
        return self.next_event()

    # -- lines -----------------------------------------------------------------

    def _classify(self, text: str, ended_cr: bool) -> Event | None:
        """The event for one text line; ``None`` when the line only sets state."""
        head = text[:2].upper()
        if head == "AT":
            return Echo(text)
        if text == "OK":
            return Ok()
        if text == "ERROR":
            return Error()
        if text[0] == "+":
            return self._classify_plus(text, ended_cr)
        if text.startswith(SENDER_PREFIXES):
            self._recv_from = split_address(text.partition(":")[2])
            return None
        if text == READY:
            return ModuleReady()
        if text.startswith("*ATREADY:"):  # A76xx firmware's RDY
            return ModuleReady(text)
        if text in START_UP_NOTICES:
            return Notice(text)
        if text == CLOSED:
            return TransparentClosed()
        if text == CONNECT_FAIL:
            return ConnectFail()
        if text == CONNECT or text.startswith(CONNECT + " "):
            rate = text[len(CONNECT) :].strip()
            return Connect(int(rate) if rate.isdigit() else None)
        return Line(text)

    def _classify_plus(self, text: str, ended_cr: bool) -> Event | None:
        if text.startswith("+IPD"):
            digits = text[4:]
            if not digits.isdigit() or not digits.isascii():
                raise ProtocolError(f"malformed +IPD header: {text!r}")
            return self._start_payload(
                int(digits), None, None, False, ended_cr, MAX_PUSH_BYTES, pushed=True
            )
        if text.startswith("+RECEIVE,"):
            link, length = int_fields(split_fields(text[9:]), 2, repr(text))
            return self._start_payload(
                length, link, None, False, ended_cr, MAX_PUSH_BYTES, pushed=True
            )
        if text.startswith(SENDER_PREFIXES):  # "+RECV FROM:" (original 1.3)
            self._recv_from = split_address(text.partition(":")[2])
            return None
        if text.startswith("+IP ERROR:"):
            return IpError(text[10:].strip())
        if text.startswith("+CME ERROR:"):
            code = text[11:].strip()
            return CmeError(int(code) if code.isdigit() else code)
        if text.startswith("+CIPRXGET:"):
            fast = _CIPRXGET_READ.match(text)
            if fast is not None:  # the hot path of buffer access: skip the general tokenizer
                hex_ = fast.group(1) == "3"
                limit = MAX_HEX_READ_BYTES if hex_ else MAX_READ_BYTES
                link, length = int(fast.group(2)), int(fast.group(3))
                return self._start_payload(length, link, int(fast.group(4)), hex_, ended_cr, limit)
            fields = split_fields(text[10:])
            mode = fields[0] if fields else None
            if mode == 1 and len(fields) == 2:
                return DataWaiting(int_fields(fields[1:], 1, repr(text))[0])
            if mode == 1 and len(fields) == 1:  # firmware that does not name the link
                return DataWaiting(None)
            if mode in (2, 3) and len(fields) in (3, 4):  # rest_len left out by some firmware
                numbers = int_fields(fields[1:], len(fields) - 1, repr(text))
                link, length = numbers[0], numbers[1]
                rest_len = numbers[2] if len(numbers) == 3 else None
                hex_ = mode == 3
                limit = MAX_HEX_READ_BYTES if hex_ else MAX_READ_BYTES
                if rest_len is not None and rest_len < 0:
                    raise ProtocolError(f"negative rest_len: {text!r}")
                return self._start_payload(length, link, rest_len, hex_, ended_cr, limit)
            return Line(text)
        if text.startswith("+IPCLOSE:"):
            link, reason = int_fields(split_fields(text[9:]), 2, repr(text))
            return LinkClosed(link, reason)
        if text.startswith("+CLIENT:"):
            fields = split_fields(text[8:])
            if len(fields) != 3 or type(fields[0]) is not int or type(fields[1]) is not int:
                raise ProtocolError(f"malformed +CLIENT: {text!r}")
            host, port = split_address(str(fields[2]))
            return ClientAccepted(fields[0], fields[1], host, port)
        if text.startswith("+CIPEVENT:") and NETWORK_CLOSED in text.upper():
            return NetworkClosed()
        return Line(text)
