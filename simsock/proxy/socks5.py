"""The SOCKS5 wire format (RFC 1928): small pure functions, no I/O.

The stream messages are parsed h11-style: a parser takes the bytes received
so far and returns ``(message, bytes_consumed)``, or ``None`` when more bytes
are needed, or raises :class:`Socks5Error` for input no more bytes can fix.
The error carries the reply code to send (RFC 1928 §6), so the server never
guesses. UDP datagrams (§7) arrive whole, so their parser has no "need more".

Only method 0x00 ("no authentication required") is offered; RFC 1929
(username/password) is not implemented, and a client that offers only other
methods gets 0xFF ("no acceptable methods", §3).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "MAX_GREETING_BYTES",
    "MAX_REQUEST_BYTES",
    "SOCKS_VERSION",
    "AddressType",
    "Command",
    "Greeting",
    "Method",
    "Reply",
    "Request",
    "Socks5Error",
    "UdpDatagram",
    "build_method_selection",
    "build_reply",
    "build_udp_datagram",
    "choose_method",
    "encode_address",
    "parse_greeting",
    "parse_request",
    "parse_udp_datagram",
    "reply_for_error",
]

#: VER of every message (RFC 1928 §3).
SOCKS_VERSION: Final = 5
#: VER, NMETHODS and up to 255 methods (§3).
MAX_GREETING_BYTES: Final = 2 + 255
#: VER CMD RSV ATYP, a domain of up to 255 bytes with its length, a port (§4).
MAX_REQUEST_BYTES: Final = 4 + 1 + 255 + 2


class Method(IntEnum):
    """Authentication methods (§3)."""

    NO_AUTHENTICATION = 0x00
    GSSAPI = 0x01
    USERNAME_PASSWORD = 0x02
    NO_ACCEPTABLE = 0xFF


class Command(IntEnum):
    """CMD of a request (§4)."""

    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


_COMMANDS: Final = frozenset(int(command) for command in Command)


class AddressType(IntEnum):
    """ATYP (§5)."""

    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


class Reply(IntEnum):
    """REP of a reply (§6)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class Socks5Error(ValueError):
    """Malformed or unsupported SOCKS5 input; ``reply`` is the code to answer with (§6)."""

    def __init__(self, message: str, reply: Reply = Reply.GENERAL_FAILURE) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Greeting:
    """The client's version identifier / method selection message (§3)."""

    methods: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Request:
    """A SOCKS request (§4): ``host`` is an IP literal (normalised) or a domain name."""

    command: Command
    address_type: AddressType
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """One UDP request header and its data (§7)."""

    fragment: int
    address_type: AddressType
    host: str
    port: int
    data: bytes


def _version_then_more(data: bytes) -> bool:
    """Whether ``data`` holds VER (checked: 5) and at least one byte after it."""
    if data and data[0] != SOCKS_VERSION:
        raise Socks5Error(f"not SOCKS version 5 (VER {data[0]:#04x})")
    return len(data) >= 2


def parse_greeting(data: bytes) -> tuple[Greeting, int] | None:
    """The greeting at the start of ``data`` and its length; ``None`` when it is incomplete."""
    if not _version_then_more(data):
        return None
    count = data[1]
    if count == 0:
        raise Socks5Error("the greeting offers no authentication method")
    end = 2 + count
    if len(data) < end:
        return None
    return Greeting(tuple(data[2:end])), end


def choose_method(greeting: Greeting) -> Method:
    """``NO_AUTHENTICATION`` when offered, else ``NO_ACCEPTABLE`` (the only method served)."""
    if Method.NO_AUTHENTICATION in greeting.methods:
        return Method.NO_AUTHENTICATION
    return Method.NO_ACCEPTABLE


def build_method_selection(method: Method) -> bytes:
    """The server's METHOD selection message (§3)."""
    return bytes((SOCKS_VERSION, method))


def _parse_address(data: bytes, start: int) -> tuple[AddressType, str, int, int] | None:
    """ATYP, address and port at ``data[start:]``: ``(type, host, port, end)`` or ``None``."""
    if len(data) <= start:
        return None
    kind = data[start]
    if kind == AddressType.IPV4:
        first, end = start + 1, start + 1 + 4
    elif kind == AddressType.IPV6:
        first, end = start + 1, start + 1 + 16
    elif kind == AddressType.DOMAIN:
        if len(data) < start + 2:
            return None
        if data[start + 1] == 0:
            raise Socks5Error("an empty domain name", Reply.HOST_UNREACHABLE)
        first, end = start + 2, start + 2 + data[start + 1]
    else:
        raise Socks5Error(
            f"address type {kind:#04x} is not supported", Reply.ADDRESS_TYPE_NOT_SUPPORTED
        )
    if len(data) < end + 2:
        return None
    raw = data[first:end]
    if kind == AddressType.IPV4:
        host = str(ipaddress.IPv4Address(raw))
    elif kind == AddressType.IPV6:
        host = str(ipaddress.IPv6Address(raw))
    else:
        host = raw.decode("ascii", "replace")
        if not all(0x21 <= byte <= 0x7E for byte in raw):
            message = f"domain name {host!r} is not printable ASCII"
            raise Socks5Error(message, Reply.HOST_UNREACHABLE)
    port = int.from_bytes(data[end : end + 2], "big")
    return AddressType(kind), host, port, end + 2


def parse_request(data: bytes) -> tuple[Request, int] | None:
    """The request at the start of ``data`` and its length; ``None`` when it is incomplete.

    Checked in wire order, so the error names the first bad field: VER,
    CMD (``COMMAND_NOT_SUPPORTED``), RSV, ATYP (``ADDRESS_TYPE_NOT_SUPPORTED``).
    """
    if not _version_then_more(data):
        return None
    if data[1] not in _COMMANDS:
        raise Socks5Error(f"unknown command {data[1]:#04x}", Reply.COMMAND_NOT_SUPPORTED)
    if len(data) < 3:
        return None
    if data[2] != 0:
        raise Socks5Error(f"reserved byte is {data[2]:#04x}, not 0x00")
    parsed = _parse_address(data, 3)
    if parsed is None:
        return None
    kind, host, port, end = parsed
    return Request(Command(data[1]), kind, host, port), end


def encode_address(host: str, port: int) -> bytes:
    """ATYP, address and port for ``host`` (an IP literal, else a domain name) (§5)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} outside 0..65535")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raw = host.encode("ascii")
        if not 1 <= len(raw) <= 255:
            raise ValueError(f"domain name of {len(raw)} bytes, not 1..255") from None
        body = bytes((AddressType.DOMAIN, len(raw))) + raw
    else:
        kind = AddressType.IPV4 if address.version == 4 else AddressType.IPV6
        body = bytes((kind,)) + address.packed
    return body + port.to_bytes(2, "big")


def build_reply(reply: Reply, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """A reply (§6): REP and the bound address (``0.0.0.0:0`` when there is none)."""
    return bytes((SOCKS_VERSION, reply, 0)) + encode_address(host, port)


def parse_udp_datagram(data: bytes) -> UdpDatagram:
    """A client's UDP datagram: the §7 header and the data after it (whole, so no ``None``)."""
    if len(data) < 3:
        raise Socks5Error(f"a UDP datagram of {len(data)} bytes has no header")
    if data[0] != 0 or data[1] != 0:
        raise Socks5Error("the UDP header's RSV is not 0x0000")
    parsed = _parse_address(data, 3)
    if parsed is None:
        raise Socks5Error("the UDP header is cut short")
    kind, host, port, end = parsed
    return UdpDatagram(data[2], kind, host, port, data[end:])


def build_udp_datagram(host: str, port: int, data: bytes) -> bytes:
    """A datagram for the client: the §7 header (FRAG 0, the sender's address), then ``data``."""
    return b"\x00\x00\x00" + encode_address(host, port) + data


def reply_for_error(exc: BaseException) -> Reply:
    """The reply code closest to a failed connect or resolve (§6).

    A name the module could not resolve is "host unreachable" (0x04): SOCKS5
    has no code of its own for it, and that is what curl and most servers use.
    A timeout is "TTL expired" (0x06), the usual reading of that code. A modem
    that closed or stopped answering is a failure of this server (0x01).
    """
    if isinstance(exc, socket.gaierror):
        return Reply.HOST_UNREACHABLE
    if isinstance(exc, ConnectionRefusedError):
        return Reply.CONNECTION_REFUSED
    if isinstance(exc, ConnectionAbortedError):
        return Reply.GENERAL_FAILURE  # the modem went away (EngineClosedError)
    if isinstance(exc, TimeoutError):
        return Reply.TTL_EXPIRED
    if isinstance(exc, OSError):
        return _REPLY_BY_ERRNO.get(exc.errno or 0, Reply.GENERAL_FAILURE)
    return Reply.GENERAL_FAILURE


_REPLY_BY_ERRNO: Final[dict[int, Reply]] = {
    errno.ECONNREFUSED: Reply.CONNECTION_REFUSED,
    errno.ETIMEDOUT: Reply.TTL_EXPIRED,
    errno.ENETUNREACH: Reply.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Reply.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: Reply.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Reply.HOST_UNREACHABLE,
    errno.EACCES: Reply.NOT_ALLOWED,
    errno.EPERM: Reply.NOT_ALLOWED,
}
