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

IP_ERROR_STRINGS: Final[dict[int, str]] = {
    0: "Connection time out",
    1: "Bind port failed",
    2: "Port overflow",
    3: "Create socket failed",
    4: "Network is already opened",
    5: "Network is already closed",
    6: "No clients connected",
    7: "No active client",
    8: "Network not opened",
    9: "Client index overflow",
    10: "Connection is already created",
    11: "Connection is not created",
    12: "Invalid parameter",
    13: "Operation not supported",
    14: "DNS query failed",
    15: "TCP busy",
    16: "Net close failed for socket opened",
    17: "Sending time out",
    18: "Sending failure for network error",
    19: "Open failure for network error",
    20: "Server is already listening",
    21: "Operation failed",
    22: "No data",
}
_IP_ERROR_BY_TEXT: Final[dict[str, int]] = {
    text.lower(): code for code, text in IP_ERROR_STRINGS.items()
}

_IP_ERROR_ERRNO: Final[dict[int, int]] = {
    0: errno.ETIMEDOUT,
    1: errno.EADDRINUSE,
    2: errno.EADDRNOTAVAIL,
    3: errno.EMFILE,
    4: errno.EISCONN,
    5: errno.ENETDOWN,
    6: errno.ENOTCONN,
    7: errno.ENOTCONN,
    8: errno.ENETDOWN,
    9: errno.EMFILE,
    10: errno.EISCONN,
    11: errno.ENOTCONN,
    12: errno.EINVAL,
    13: errno.EOPNOTSUPP,
    14: errno.EHOSTUNREACH,  # raised as socket.gaierror, see ip_error_to_oserror
    15: errno.EBUSY,
    16: errno.EBUSY,
    17: errno.ETIMEDOUT,
    18: errno.ENETUNREACH,
    19: errno.ENETUNREACH,
    20: errno.EADDRINUSE,
    21: errno.EIO,
    22: errno.EAGAIN,
}

# --- 5.2 <err> -----------------------------------------------------------------

ERR_DESCRIPTIONS: Final[dict[int, str]] = {
    0: "operation succeeded",
    1: "network failure",
    2: "network not opened",
    3: "wrong parameter",
    4: "operation not supported",
    5: "failed to create socket",
    6: "failed to bind socket",
    7: "TCP server is already listening",
    8: "busy",
    9: "sockets opened",
    10: "timeout",
    11: "DNS parse failed for AT+CIPOPEN",
    12: "unknown error",
}

_ERR_ERRNO: Final[dict[int, int]] = {
    1: errno.ENETUNREACH,
    2: errno.ENETDOWN,
    3: errno.EINVAL,
    4: errno.EOPNOTSUPP,
    5: errno.EMFILE,
    6: errno.EADDRINUSE,
    7: errno.EADDRINUSE,
    8: errno.EBUSY,
    9: errno.EBUSY,
    10: errno.ETIMEDOUT,
    12: errno.EIO,
}

#: ``+CIPOPEN: <link>,1`` is what the module (and the virtual SIM7028) reports
#: when a TCP connect fails at the peer: the module does not tell a refusal
#: from an unreachable host, and a refusal is by far the common case.
CIPOPEN_CONNECT_FAILED: Final = 1


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
IPCLOSE_BY_HOST = 0
IPCLOSE_BY_PEER = 1
IPCLOSE_SEND_TIMEOUT = 2
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
    if code == 11:
        return gai_error(text, code, description)
    return module_error(_ERR_ERRNO.get(code, errno.EIO), text, code, description)


def ip_error_to_oserror(info: str, *, context: str = "") -> OSError:
    """The OSError for an ``+IP ERROR: <err_info>`` line (text or number)."""
    code = ip_error_code(info)
    description = IP_ERROR_STRINGS.get(code, info) if code is not None else info
    text = f"{context}: {description}" if context else description
    if code == 14:
        return gai_error(text, code, description)
    err_no = _IP_ERROR_ERRNO.get(code, errno.EIO) if code is not None else errno.EIO
    return module_error(err_no, text, code, description)
