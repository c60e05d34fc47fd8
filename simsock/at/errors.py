"""The module's error tables (reference section 5) and their mapping to OSError.

Two tables exist. ``<err_info>`` (5.1) travels in ``+IP ERROR:`` lines, as a
string by default or as a number with ``AT+CIPCCFG`` errMode 0. ``<err>`` (5.2)
travels in ``+NETOPEN:``, ``+CIPOPEN:``, ``+CIPCLOSE:``, ``+CIPERROR:`` and the
other late results. Both map to the ``OSError`` subclass a host socket would
raise, with ``errno`` set and the module's own code kept on the exception.
"""

from __future__ import annotations

import errno
import socket
from typing import Final

__all__ = [
    "ERR_DESCRIPTIONS",
    "IPCLOSE_BY_HOST",
    "IPCLOSE_BY_PEER",
    "IPCLOSE_REASONS",
    "IPCLOSE_SEND_TIMEOUT",
    "IP_ERROR_STRINGS",
    "CommandError",
    "EngineClosedError",
    "ModuleConnectionRefusedError",
    "ModuleConnectionResetError",
    "ModuleError",
    "ModuleGaiError",
    "ModuleTimeoutError",
    "ModuleUnresponsiveError",
    "ProtocolError",
    "closed_by_module_error",
    "err_to_oserror",
    "gai_error",
    "ip_error_code",
    "ip_error_to_oserror",
    "module_error",
    "timeout_error",
]


class ProtocolError(Exception):
    """The module sent something the reference does not allow.

    Raised by the parser (after it has resynchronised to the next line) and by
    the engine when a response breaks the command's grammar. Not an OSError:
    it is the module's misbehaviour, not a network condition.
    """


class EngineClosedError(ConnectionAbortedError):
    """The modem was closed, or its port went away (``errno`` ECONNABORTED)."""

    def __init__(self, message: str = "the modem is closed") -> None:
        super().__init__(errno.ECONNABORTED, message)

    def __str__(self) -> str:
        return str(self.strerror)


class ModuleUnresponsiveError(EngineClosedError, TimeoutError):
    """The module stopped answering: no proven ``OK`` after a command timed out (ETIMEDOUT)."""

    def __init__(self, message: str = "the module stopped answering") -> None:
        super().__init__(message)
        self.errno = errno.ETIMEDOUT


class ModuleError(OSError):
    """Marker base for errors the module reported; ``module_code`` keeps its number."""

    module_code: int | None = None
    module_text: str | None = None


class CommandError(ModuleError):
    """A command failed with a result no more specific OSError describes.

    ``args`` follow OSError: ``(errno, strerror)``; ``command`` is the AT
    command line (without CR) and ``module_code`` / ``module_text`` the
    module's own error, where it gave one.
    """

    command: str | None = None


# --- 5.1 <err_info> ------------------------------------------------------------

IPE_CONNECT_TIMEOUT: Final = 0
IPE_BIND: Final = 1
IPE_PORT_OVERFLOW: Final = 2
IPE_CREATE_SOCKET: Final = 3
IPE_ALREADY_OPENED: Final = 4
IPE_ALREADY_CLOSED: Final = 5
IPE_NO_CLIENTS: Final = 6
IPE_NO_ACTIVE_CLIENT: Final = 7
IPE_NOT_OPENED: Final = 8
IPE_CLIENT_OVERFLOW: Final = 9
IPE_ALREADY_CREATED: Final = 10
IPE_NOT_CREATED: Final = 11
IPE_INVALID: Final = 12
IPE_NOT_SUPPORTED: Final = 13
IPE_DNS: Final = 14
IPE_TCP_BUSY: Final = 15
IPE_NETCLOSE_FAILED: Final = 16
IPE_SEND_TIMEOUT: Final = 17
IPE_SEND_NETWORK: Final = 18
IPE_OPEN_NETWORK: Final = 19
IPE_LISTENING: Final = 20
IPE_FAILED: Final = 21
IPE_NO_DATA: Final = 22

IP_ERROR_STRINGS: Final[dict[int, str]] = {
    IPE_CONNECT_TIMEOUT: "Connection time out",
    IPE_BIND: "Bind port failed",
    IPE_PORT_OVERFLOW: "Port overflow",
    IPE_CREATE_SOCKET: "Create socket failed",
    IPE_ALREADY_OPENED: "Network is already opened",
    IPE_ALREADY_CLOSED: "Network is already closed",
    IPE_NO_CLIENTS: "No clients connected",
    IPE_NO_ACTIVE_CLIENT: "No active client",
    IPE_NOT_OPENED: "Network not opened",
    IPE_CLIENT_OVERFLOW: "Client index overflow",
    IPE_ALREADY_CREATED: "Connection is already created",
    IPE_NOT_CREATED: "Connection is not created",
    IPE_INVALID: "Invalid parameter",
    IPE_NOT_SUPPORTED: "Operation not supported",
    IPE_DNS: "DNS query failed",
    IPE_TCP_BUSY: "TCP busy",
    IPE_NETCLOSE_FAILED: "Net close failed for socket opened",
    IPE_SEND_TIMEOUT: "Sending time out",
    IPE_SEND_NETWORK: "Sending failure for network error",
    IPE_OPEN_NETWORK: "Open failure for network error",
    IPE_LISTENING: "Server is already listening",
    IPE_FAILED: "Operation failed",
    IPE_NO_DATA: "No data",
}
_IP_ERROR_BY_TEXT: Final[dict[str, int]] = {
    text.lower(): code for code, text in IP_ERROR_STRINGS.items()
}

_IP_ERROR_ERRNO: Final[dict[int, int]] = {
    IPE_CONNECT_TIMEOUT: errno.ETIMEDOUT,
    IPE_BIND: errno.EADDRINUSE,
    IPE_PORT_OVERFLOW: errno.EADDRNOTAVAIL,
    IPE_CREATE_SOCKET: errno.EMFILE,
    IPE_ALREADY_OPENED: errno.EISCONN,
    IPE_ALREADY_CLOSED: errno.ENETDOWN,
    IPE_NO_CLIENTS: errno.ENOTCONN,
    IPE_NO_ACTIVE_CLIENT: errno.ENOTCONN,
    IPE_NOT_OPENED: errno.ENETDOWN,
    IPE_CLIENT_OVERFLOW: errno.EMFILE,
    IPE_ALREADY_CREATED: errno.EISCONN,
    IPE_NOT_CREATED: errno.ENOTCONN,
    IPE_INVALID: errno.EINVAL,
    IPE_NOT_SUPPORTED: errno.EOPNOTSUPP,
    IPE_DNS: errno.EHOSTUNREACH,  # raised as socket.gaierror, see ip_error_to_oserror
    IPE_TCP_BUSY: errno.EBUSY,
    IPE_NETCLOSE_FAILED: errno.EBUSY,
    IPE_SEND_TIMEOUT: errno.ETIMEDOUT,
    IPE_SEND_NETWORK: errno.ENETUNREACH,
    IPE_OPEN_NETWORK: errno.ENETUNREACH,
    IPE_LISTENING: errno.EADDRINUSE,
    IPE_FAILED: errno.EIO,
    IPE_NO_DATA: errno.EAGAIN,
}

# --- 5.2 <err> -----------------------------------------------------------------

ERR_SUCCESS: Final = 0
ERR_NETWORK: Final = 1
ERR_NET_NOT_OPEN: Final = 2
ERR_PARAM: Final = 3
ERR_NOT_SUPPORTED: Final = 4
ERR_CREATE_SOCKET: Final = 5
ERR_BIND: Final = 6
ERR_LISTENING: Final = 7
ERR_BUSY: Final = 8
ERR_SOCKETS_OPEN: Final = 9
ERR_TIMEOUT: Final = 10
ERR_DNS: Final = 11
ERR_UNKNOWN: Final = 12

ERR_DESCRIPTIONS: Final[dict[int, str]] = {
    ERR_SUCCESS: "operation succeeded",
    ERR_NETWORK: "network failure",
    ERR_NET_NOT_OPEN: "network not opened",
    ERR_PARAM: "wrong parameter",
    ERR_NOT_SUPPORTED: "operation not supported",
    ERR_CREATE_SOCKET: "failed to create socket",
    ERR_BIND: "failed to bind socket",
    ERR_LISTENING: "TCP server is already listening",
    ERR_BUSY: "busy",
    ERR_SOCKETS_OPEN: "sockets opened",
    ERR_TIMEOUT: "timeout",
    ERR_DNS: "DNS parse failed for AT+CIPOPEN",
    ERR_UNKNOWN: "unknown error",
}

_ERR_ERRNO: Final[dict[int, int]] = {
    ERR_NETWORK: errno.ENETUNREACH,
    ERR_NET_NOT_OPEN: errno.ENETDOWN,
    ERR_PARAM: errno.EINVAL,
    ERR_NOT_SUPPORTED: errno.EOPNOTSUPP,
    ERR_CREATE_SOCKET: errno.EMFILE,
    ERR_BIND: errno.EADDRINUSE,
    ERR_LISTENING: errno.EADDRINUSE,
    ERR_BUSY: errno.EBUSY,
    ERR_SOCKETS_OPEN: errno.EBUSY,
    ERR_TIMEOUT: errno.ETIMEDOUT,
    ERR_UNKNOWN: errno.EIO,
}

#: ``+CIPOPEN: <link>,1`` is what the module (and the virtual SIM7028) reports
#: when a TCP connect fails at the peer: the module does not tell a refusal
#: from an unreachable host, and a refusal is by far the common case.
CIPOPEN_CONNECT_FAILED: Final = ERR_NETWORK

#: ``+CDNSGIP: 0,<dns_error>``: DNS general error (3.17).
DNS_GENERAL_ERROR: Final = 10


def ip_error_code(info: str) -> int | None:
    """The 5.1 number of an ``+IP ERROR:`` payload, given as text or as a number."""
    info = info.strip()
    if info.isdigit():
        return int(info)
    return _IP_ERROR_BY_TEXT.get(info.lower())


class ModuleConnectionRefusedError(ConnectionRefusedError, ModuleError):
    """The module could not connect (``+CIPOPEN: <link>,1``)."""


class ModuleConnectionResetError(ConnectionResetError, ModuleError):
    """The module reported the connection broken."""


class ModuleTimeoutError(TimeoutError, ModuleError):
    """The module reported a timeout (5.1 code 0 or 17, 5.2 code 10)."""


class ModuleBrokenPipeError(BrokenPipeError, ModuleError):
    """The module could not send on a link that is gone."""


class ModuleGaiError(socket.gaierror, ModuleError):
    """The module's DNS failed (``+CDNSGIP: 0,<err>``, 5.1 code 14, 5.2 code 11)."""


_CLASS_BY_ERRNO: Final[dict[int, type[ModuleError]]] = {
    errno.ECONNREFUSED: ModuleConnectionRefusedError,
    errno.ECONNRESET: ModuleConnectionResetError,
    errno.ETIMEDOUT: ModuleTimeoutError,
    errno.EPIPE: ModuleBrokenPipeError,
}


def module_error(err_no: int, text: str, code: int | None, module_text: str | None) -> OSError:
    """The OSError subclass for ``err_no`` (else ``CommandError``), tagged with the module code."""
    cls = _CLASS_BY_ERRNO.get(err_no, CommandError)
    exc = cls(err_no, text)
    exc.module_code = code
    exc.module_text = module_text
    return exc


#: ``+IPCLOSE: <link>,<close_reason>`` (4.2).
IPCLOSE_BY_HOST: Final = 0
IPCLOSE_BY_PEER: Final = 1
IPCLOSE_SEND_TIMEOUT: Final = 2
IPCLOSE_REASONS: Final[dict[int, str]] = {
    IPCLOSE_BY_HOST: "closed by the host",
    IPCLOSE_BY_PEER: "closed by the peer",
    IPCLOSE_SEND_TIMEOUT: "send timeout or DTR off",
}


def closed_by_module_error(link: int, reason: int) -> OSError:
    """A link the module closed with ``+IPCLOSE: <link>,2``: ``TimeoutError`` (ETIMEDOUT).

    As a socket whose sent data was never acknowledged; ``module_code`` is the
    close reason.
    """
    text = IPCLOSE_REASONS.get(reason, f"close reason {reason}")
    return module_error(
        errno.ETIMEDOUT, f"link {link}: {text} (+IPCLOSE: {link},{reason})", reason, text
    )


def timeout_error(text: str) -> TimeoutError:
    """A ``TimeoutError`` with ``errno`` ETIMEDOUT, as a socket's would have."""
    return TimeoutError(errno.ETIMEDOUT, text)


def gai_error(text: str, code: int | None, module_text: str | None) -> OSError:
    """A ``socket.gaierror`` (EAI_NONAME) tagged with the module's code."""
    exc = ModuleGaiError(socket.EAI_NONAME, text)
    exc.module_code = code
    exc.module_text = module_text
    return exc


def err_to_oserror(code: int, *, context: str = "") -> OSError:
    """The OSError for a 5.2 ``<err>`` code; ``context`` names the command (e.g. ``"CIPOPEN"``).

    ``+CIPOPEN: <link>,1`` becomes ``ConnectionRefusedError`` and
    ``+CIPOPEN: <link>,11`` a ``socket.gaierror``, as ``loop.create_connection``
    would raise; everything else follows the table.
    """
    description = ERR_DESCRIPTIONS.get(code, f"unknown error {code}")
    text = f"{context}: {description} (module error {code})" if context else description
    if context == "CIPOPEN" and code == CIPOPEN_CONNECT_FAILED:
        return module_error(errno.ECONNREFUSED, text, code, description)
    if code == ERR_DNS:
        return gai_error(text, code, description)
    return module_error(_ERR_ERRNO.get(code, errno.EIO), text, code, description)


def ip_error_to_oserror(info: str, *, context: str = "") -> OSError:
    """The OSError for an ``+IP ERROR: <err_info>`` line (text or number)."""
    code = ip_error_code(info)
    description = IP_ERROR_STRINGS.get(code, info) if code is not None else info
    text = f"{context}: {description}" if context else description
    if code == IPE_DNS:
        return gai_error(text, code, description)
    err_no = _IP_ERROR_ERRNO.get(code, errno.EIO) if code is not None else errno.EIO
    return module_error(err_no, text, code, description)
