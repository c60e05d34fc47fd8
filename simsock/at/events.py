"""Typed events the parser makes of the module's output (reference sections 1 and 4).

The parser cannot know whether a line such as ``+CIPOPEN: 0,0`` answers the
command in flight or is the late result of an earlier one; such lines come out
as :class:`Line` and the engine, which knows what it is waiting for, decides.
Lines that can only be unsolicited (``+CIPRXGET: 1,<link>``, ``+IPCLOSE:``,
``+CLIENT:``, ``+CIPEVENT:``, ``RDY``, ``CLOSED``, the start-up notices) and everything framed by a
length (``+CIPRXGET: 2/3``, ``+IPD``, ``+RECEIVE``) have events of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fields import Field, info_name, split_info_line
from .note import CLOSED, CONNECT, CONNECT_FAIL, NETWORK_CLOSED, READY

__all__ = [
    "ClientAccepted",
    "CmeError",
    "Connect",
    "ConnectFail",
    "DataWaiting",
    "Echo",
    "Error",
    "Event",
    "FinalResult",
    "IpError",
    "Line",
    "LinkClosed",
    "ModuleReady",
    "NetworkClosed",
    "Notice",
    "Ok",
    "Prompt",
    "PushedData",
    "RawData",
    "ReceivedData",
    "TransparentClosed",
    "describe",
]


@dataclass(frozen=True, slots=True)
class Ok:
    """``OK``: the command in flight succeeded (its late result may follow)."""


@dataclass(frozen=True, slots=True)
class Error:
    """``ERROR``: the command in flight failed.

    A ``+IP ERROR:`` or ``+CIPERROR:`` line may precede it with the reason.
    """


@dataclass(frozen=True, slots=True)
class CmeError:
    """``+CME ERROR: <code>``: a final result carrying a 3GPP error (number or text)."""

    code: int | str


FinalResult = Ok | Error | CmeError


@dataclass(frozen=True, slots=True)
class Prompt:
    """``>``: the module waits for the payload of ``AT+CIPSEND`` (3.4)."""


@dataclass(frozen=True, slots=True)
class Echo:
    """A command line the module echoed back (echo is on until ``ATE0``, 1)."""

    text: str


@dataclass(frozen=True, slots=True)
class Line:
    """Any other text line: an information response or a URC the parser cannot classify.

    ``name`` and ``fields`` give ``+NAME: a,b`` lines parsed (``None`` / ``[]``
    for other shapes, such as ``Manufacturer: SIMCOM``).
    """

    text: str

    @property
    def name(self) -> str | None:
        """``"+CIPOPEN"`` for ``+CIPOPEN: 0,0``; ``None`` when the line has another shape."""
        return info_name(self.text)

    @property
    def fields(self) -> list[Field]:
        """The parameters after ``+NAME:``, parsed (see :func:`simsock.at.fields.split_fields`).

        Raises :class:`~simsock.at.errors.ProtocolError` when they do not parse
        (test-command answers such as ``("TCP","UDP")`` do not).
        """
        parsed = split_info_line(self.text)
        return parsed[1] if parsed else []


@dataclass(frozen=True, slots=True)
class IpError:
    """``+IP ERROR: <err_info>`` (5.1), text or number; the ``ERROR`` comes next."""

    info: str


@dataclass(frozen=True, slots=True)
class DataWaiting:
    """``+CIPRXGET: 1,<link>``: buffer mode, data waits in the module (2, 3.5).

    ``link`` is ``None`` for firmware that prints ``+CIPRXGET: 1`` alone:
    any open link may have data.
    """

    link: int | None


@dataclass(frozen=True, slots=True)
class ReceivedData:
    """A buffered read, ``+CIPRXGET: 2|3,<link>,<read_len>,<rest_len>`` and its payload (3.5).

    ``data`` is already decoded from hex for mode 3. ``rest`` is ``None`` for
    firmware that omits ``rest_len`` (``+CIPRXGET: 2,<link>,<read_len>``).
    """

    link: int
    data: bytes
    rest: int | None


@dataclass(frozen=True, slots=True)
class PushedData:
    """Direct-push data (4.1): ``+IPD<n>`` or ``+RECEIVE,<link>,<n>`` and its payload.

    ``link`` is known only with ``+RECEIVE``; ``address`` only when a
    ``RECV FROM:<ip>:<port>`` line came first (``AT+CIPSRIP=1``).
    """

    link: int | None
    data: bytes
    address: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class LinkClosed:
    """``+IPCLOSE: <link>,<reason>``: 0 closed locally, 1 by the peer, 2 send timeout (4.2)."""

    link: int
    reason: int


@dataclass(frozen=True, slots=True)
class ClientAccepted:
    """``+CLIENT: <link>,<server>,<ip>:<port>``: a module server accepted a client (3.14)."""

    link: int
    server: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class NetworkClosed:
    """``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY``: the PDP context dropped (4.2)."""


@dataclass(frozen=True, slots=True)
class ModuleReady:
    """``RDY`` (``*ATREADY: 1`` on A76xx firmware): the module (re)started.

    Every socket and setting is gone.
    """

    text: str = READY


@dataclass(frozen=True, slots=True)
class Notice:
    """A line firmware prints on its own after a restart (``SMS DONE``, ``PB DONE``, ...).

    It never answers a command, so it is never taken as one's response.
    """

    text: str


@dataclass(frozen=True, slots=True)
class Connect:
    """``CONNECT [<rate>]``: a transparent link entered data mode (3.3, 2)."""

    rate: int | None


@dataclass(frozen=True, slots=True)
class ConnectFail:
    """``CONNECT FAIL``: a transparent-mode open failed (3.3)."""


@dataclass(frozen=True, slots=True)
class RawData:
    """Bytes of the transparent link, in data mode (2): no framing at all."""

    data: bytes


@dataclass(frozen=True, slots=True)
class TransparentClosed:
    """``CLOSED``: a transparent link closed (4.2)."""


Event = (
    Ok
    | Error
    | CmeError
    | Prompt
    | Echo
    | Line
    | IpError
    | DataWaiting
    | ReceivedData
    | PushedData
    | LinkClosed
    | ClientAccepted
    | NetworkClosed
    | ModuleReady
    | Notice
    | Connect
    | ConnectFail
    | TransparentClosed
    | RawData
)


def describe(event: Event) -> str:
    """A short human form of ``event``, as the module wrote it (payloads summarised)."""
    match event:
        case Ok():
            return "OK"
        case Error():
            return "ERROR"
        case CmeError(code=code):
            return f"+CME ERROR: {code}"
        case Prompt():
            return ">"
        case Echo(text=text) | Line(text=text):
            return text
        case IpError(info=info):
            return f"+IP ERROR: {info}"
        case DataWaiting(link=link):
            return "+CIPRXGET: 1" if link is None else f"+CIPRXGET: 1,{link}"
        case ReceivedData(link=link, data=data, rest=rest):
            rest_len = "" if rest is None else f",{rest}"
            return f"+CIPRXGET: 2,{link},{len(data)}{rest_len} <{len(data)} bytes {data[:16]!r}>"
        case PushedData(link=link, data=data, address=address):
            where = f"link {link}" if link is not None else f"from {address}"
            return f"+IPD{len(data)} ({where}) <{len(data)} bytes {data[:16]!r}>"
        case LinkClosed(link=link, reason=reason):
            return f"+IPCLOSE: {link},{reason}"
        case ClientAccepted(link=link, server=server, host=host, port=port):
            return f"+CLIENT: {link},{server},{host}:{port}"
        case NetworkClosed():
            return f"+CIPEVENT: {NETWORK_CLOSED}"
        case ModuleReady(text=text) | Notice(text=text):
            return text
        case Connect(rate=rate):
            return f"{CONNECT} {rate}" if rate is not None else CONNECT
        case ConnectFail():
            return CONNECT_FAIL
        case TransparentClosed():
            return CLOSED
        case RawData(data=data):
            return f"<{len(data)} raw bytes {data[:16]!r}>"
    return repr(event)
