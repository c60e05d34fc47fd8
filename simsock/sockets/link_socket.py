"""``LinkSocket``: what ``transport.get_extra_info("socket")`` returns for a module link.

A link has no host socket, yet libraries ask a transport for one to read its
addresses or to set options: asyncpg's cancel request and aiohttp call
``setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)``, anyio's ``SocketStream`` reads
``family``, ``getsockname()`` and ``getpeername()``, aiohttp servers turn on
``SO_KEEPALIVE``. ``LinkSocket`` mirrors ``asyncio.trsock.TransportSocket``
(the object asyncio hands out for its own transports): the addresses and the
options that mean something for the module, ``fileno()`` ``-1``, a timeout of
0 and non-blocking only. Everything that would move data or change the
connection behind the transport's back (``send``, ``recv``, ``connect``,
``close``, ``dup``, ...) raises ``OSError(EOPNOTSUPP)``: use the transport.

Options (``setsockopt``):

- ``TCP_NODELAY`` is accepted and has no effect: the module offers no control
  of Nagle's algorithm. simsock hands each write to ``AT+CIPSEND`` as soon as
  the link can take it; what the module's own stack does is its business.
- ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``, ``TCP_KEEPCNT`` and ``TCP_KEEPINTVL``
  set the module's TCP keepalive (``AT+CTCPKA``, 3.19): on/off, idle time,
  probe count and interval; what is not set keeps the module's value. The
  module counts minutes: seconds are rounded up to whole minutes (redis-py's
  default idle of 30 s becomes 1 minute), and values outside 3.19's ranges
  (idle and interval 1-120 minutes, 1-10 probes) raise ``OSError(EINVAL)``.
  That setting is **module-wide**: it applies to every TCP link, not only this
  one. Since ``setsockopt`` is synchronous, the command is scheduled on the
  loop (the options set in one go become one ``AT+CTCPKA?`` and at most one
  ``AT+CTCPKA=``), and a failure is logged (``simsock.sockets`` logger), not
  raised.
- Every other option raises ``OSError(ENOPROTOOPT)`` naming it.

``getsockopt`` answers those options with the value last set through this
object (0 before), ``SO_TYPE`` and ``SO_ERROR`` (0); the module's keepalive
itself is ``await modem.keepalive()``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any, NoReturn

from ..at.note import CTCPKA_RANGES
from ..driver.control import ModuleControl
from ..driver.driver import Driver

__all__ = ["LinkSocket", "apply_keepalive", "keepalive_field", "option_name"]

logger = logging.getLogger("simsock.sockets")

#: What ``getsockopt(..., buflen)`` packs an integer option as (a C ``int``, as the kernel does).
_INT = struct.Struct("i")

#: Socket-module prefixes of the option names of each level, for error messages.
_OPTION_PREFIXES = {
    socket.SOL_SOCKET: ("SOL_SOCKET", "SO_"),
    socket.IPPROTO_TCP: ("IPPROTO_TCP", "TCP_"),
    socket.IPPROTO_UDP: ("IPPROTO_UDP", "UDP_"),
    socket.IPPROTO_IP: ("IPPROTO_IP", "IP_"),
    socket.IPPROTO_IPV6: ("IPPROTO_IPV6", "IPV6_"),
}


def option_name(level: int, optname: int) -> str:
    """``"SOL_SOCKET/SO_REUSEADDR"`` for ``(SOL_SOCKET, SO_REUSEADDR)``, numbers when unknown."""
    level_name, prefix = _OPTION_PREFIXES.get(level, (f"level {level}", None))
    names = (
        sorted(
            name
            for name, value in vars(socket).items()
            if name.startswith(prefix) and isinstance(value, int) and value == optname
        )
        if prefix is not None
        else []
    )
    return f"{level_name}/{'|'.join(names) if names else f'option {optname}'}"


class _Control(ModuleControl):
    """The driver's typed commands (``set_keepalive`` and ``keepalive``) for one driver."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver


#: AT+CTCPKA's fields (3.19), in order, and their ranges.
_KEEPALIVE_RANGES = dict(zip(("on", "idle", "count", "interval"), CTCPKA_RANGES, strict=True))
#: set_keepalive's defaults, for a field the module reports outside its range.
_KEEPALIVE_DEFAULTS = {"idle": 1, "count": 9, "interval": 1}
#: Sockets count keepalive times in seconds, the module in minutes (3.19).
SECONDS_PER_MINUTE = 60

#: The keepalive socket options: (level, option) -> (AT+CTCPKA field, in seconds?).
#: (TCP_KEEPALIVE is macOS's name for the idle time; each platform has its subset.)
_KEEPALIVE_OPTIONS: dict[tuple[int, int], tuple[str, bool]] = {
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE): ("on", False),
    **{
        (socket.IPPROTO_TCP, getattr(socket, name)): (field, in_seconds)
        for name, field, in_seconds in (
            ("TCP_KEEPIDLE", "idle", True),
            ("TCP_KEEPALIVE", "idle", True),
            ("TCP_KEEPCNT", "count", False),
            ("TCP_KEEPINTVL", "interval", True),
        )
        if hasattr(socket, name)
    },
}


def keepalive_field(level: int, optname: int, value: int) -> tuple[str, int]:
    """The AT+CTCPKA field and module value for a keepalive socket option.

    Raises ``OSError(EINVAL)`` when the module cannot take the value.
    """
    field, in_seconds = _KEEPALIVE_OPTIONS[(level, optname)]
    if field == "on":
        return field, int(value != 0)
    module_value = -(-value // SECONDS_PER_MINUTE) if in_seconds and value > 0 else value
    low, high = _KEEPALIVE_RANGES[field]
    if not low <= module_value <= high:
        unit = f" ({low}-{high} minutes, given in seconds)" if in_seconds else f" ({low}-{high})"
        raise OSError(
            errno.EINVAL,
            f"{option_name(level, optname)} {value} is outside the module's range{unit} (3.19)",
        )
    return field, module_value


async def apply_keepalive(driver: Driver, wanted: dict[str, int]) -> None:
    """``AT+CTCPKA`` with the ``wanted`` fields changed, the others as the module has them.

    Nothing is written when the module is already so (aiohttp's server turns
    keepalive on for every client it accepts: one query each, not a write).
    """
    control = _Control(driver)
    current = await control.keepalive()
    have = {
        "on": int(current.enabled),
        "idle": current.idle_min,
        "count": current.count,
        "interval": current.interval_min,
    }
    if all(have[field] == value for field, value in wanted.items()):
        return
    new = have | wanted
    for field, default in _KEEPALIVE_DEFAULTS.items():
        low, high = _KEEPALIVE_RANGES[field]
        if not low <= new[field] <= high:  # the module reported a value 3.19 does not allow
            new[field] = default
    await control.set_keepalive(bool(new["on"]), new["idle"], new["count"], new["interval"])


def _unsupported(name: str) -> Callable[..., NoReturn]:
    """A method that refuses: the operation needs a host socket, and a link has none."""

    def method(self: LinkSocket, *args: Any, **kwargs: Any) -> NoReturn:
        raise OSError(
            errno.EOPNOTSUPP,
            f"{name}() is not available on a module link's socket: there is no host"
            " socket behind it; use the transport",
        )

    method.__name__ = name
    method.__doc__ = f"Raises ``OSError(EOPNOTSUPP)``: {name}() needs a host socket."
    return method


class LinkSocket:
    """A socket-like view of one module link; see the module docstring."""

    __slots__ = (
        "_driver",
        "_family",
        "_keepalive_dirty",
        "_keepalive_task",
        "_keepalive_wanted",
        "_link",
        "_loop",
        "_options",
        "_peername",
        "_proto",
        "_sockname",
        "_type",
    )

    def __init__(
        self,
        driver: Driver,
        link: int,
        sockname: tuple[str, int],
        peername: tuple[str, int] | None,
        *,
        kind: int = socket.SOCK_STREAM,
    ) -> None:
        if kind not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            raise ValueError(f"kind must be SOCK_STREAM or SOCK_DGRAM, not {kind!r}")
        self._driver = driver
        self._loop = asyncio.get_running_loop()
        self._link = link
        host = peername[0] if peername is not None else sockname[0]
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._type = socket.SocketKind(kind)
        self._proto = socket.IPPROTO_TCP if kind == socket.SOCK_STREAM else socket.IPPROTO_UDP
        self._sockname = sockname
        self._peername = peername
        self._options: dict[tuple[int, int], int] = {}
        # What this socket asked of AT+CTCPKA, by field; applied by one task at a time.
        self._keepalive_wanted: dict[str, int] = {}
        self._keepalive_dirty = False
        self._keepalive_task: asyncio.Task[None] | None = None

    # -- what asyncio.trsock.TransportSocket has -----------------------------------------

    @property
    def family(self) -> socket.AddressFamily:
        """``AF_INET`` or ``AF_INET6``: the family of the peer's address."""
        return self._family

    @property
    def type(self) -> socket.SocketKind:
        """``SOCK_STREAM`` (TCP link) or ``SOCK_DGRAM`` (UDP link)."""
        return self._type

    @property
    def proto(self) -> int:
        """``IPPROTO_TCP`` or ``IPPROTO_UDP``."""
        return self._proto

    def __repr__(self) -> str:
        return (
            f"<simsock.LinkSocket link={self._link} fd=-1, family={self.family!s},"
            f" type={self.type!s}, proto={self.proto}, laddr={self._sockname},"
            f" raddr={self._peername}>"
        )

    def __getstate__(self) -> NoReturn:
        raise TypeError("Cannot serialize simsock.LinkSocket object")

    def fileno(self) -> int:
        """``-1``: a module link has no file descriptor."""
        return -1

    def getsockname(self) -> tuple[Any, ...]:
        """The module's address and the link's local port (0 where the module reports none)."""
        return self._address(self._sockname)

    def getpeername(self) -> tuple[Any, ...]:
        """The peer's address; ``OSError(ENOTCONN)`` for a UDP link without a remote."""
        if self._peername is None:
            raise OSError(errno.ENOTCONN, "the link has no fixed peer")
        return self._address(self._peername)

    def _address(self, address: tuple[str, int]) -> tuple[Any, ...]:
        # Shaped as a socket of the family would give it: IPv6 has flowinfo and scope.
        host, port = str(address[0]), int(address[1])
        return (host, port, 0, 0) if self._family == socket.AF_INET6 else (host, port)

    def gettimeout(self) -> float:
        """``0``: the link is non-blocking, as every transport socket is."""
        return 0

    def settimeout(self, value: float | None) -> None:
        """Only 0 is allowed (as on asyncio's TransportSocket)."""
        if value == 0:
            return
        raise ValueError("settimeout(): only 0 timeout is allowed on transport sockets")

    def setblocking(self, flag: bool) -> None:
        """Only ``False`` is allowed (as on asyncio's TransportSocket)."""
        if not flag:
            return
        raise ValueError("setblocking(): transport sockets cannot be blocking")

    # -- options ------------------------------------------------------------------------

    def _known(self, level: int, optname: int) -> bool:
        option = (level, optname)
        return self._type == socket.SOCK_STREAM and (
            option == (socket.IPPROTO_TCP, socket.TCP_NODELAY) or option in _KEEPALIVE_OPTIONS
        )

    def setsockopt(
        self, level: int, optname: int, value: int | bytes | None, optlen: int | None = None
    ) -> None:
        """``TCP_NODELAY`` (no effect) and the keepalive options (``AT+CTCPKA``, module-wide).

        Any other option raises ``OSError(ENOPROTOOPT)``; see the module docstring.
        """
        name = option_name(level, optname)
        if not self._known(level, optname):
            raise OSError(errno.ENOPROTOOPT, f"{name} is not supported on a module link")
        if optlen is not None or value is None:
            raise TypeError(f"{name} takes an int, not a NULL value")
        if isinstance(value, bytes | bytearray | memoryview):
            if len(value) != _INT.size:
                raise OSError(errno.EINVAL, f"{name} takes an int")
            number = int(_INT.unpack(bytes(value))[0])
        elif isinstance(value, int):
            number = value
        else:
            raise TypeError(f"{name} takes an int, not {value!r}")
        if (level, optname) not in _KEEPALIVE_OPTIONS:  # TCP_NODELAY: remembered only
            self._options[(level, optname)] = int(number != 0)
            return
        field, module_value = keepalive_field(level, optname, number)  # EINVAL first
        self._options[(level, optname)] = number if field != "on" else module_value
        if self._keepalive_wanted.get(field) != module_value:
            self._keepalive_wanted[field] = module_value
            self._keepalive_dirty = True
            if self._keepalive_task is None:
                self._keepalive_task = self._loop.create_task(self._sync_keepalive())
                self._keepalive_task.add_done_callback(self._keepalive_done)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        """The value last set through this object (0 before), or ``SO_TYPE`` / ``SO_ERROR``.

        The keepalive options say what this socket asked for; the module-wide
        setting is ``await modem.keepalive()``.
        """
        if (level, optname) == (socket.SOL_SOCKET, socket.SO_TYPE):
            value = int(self._type)
        elif (level, optname) == (socket.SOL_SOCKET, socket.SO_ERROR):
            value = 0
        elif self._known(level, optname):
            value = self._options.get((level, optname), 0)
        else:
            raise OSError(
                errno.ENOPROTOOPT,
                f"{option_name(level, optname)} is not supported on a module link",
            )
        if buflen is None:
            return value
        if buflen < _INT.size:
            raise OSError(errno.EINVAL, f"buflen {buflen} is too small for an int option")
        return _INT.pack(value)

    async def _sync_keepalive(self) -> None:
        # Runs after the caller's synchronous setsockopt calls: they become one command.
        while self._keepalive_dirty:
            self._keepalive_dirty = False
            await apply_keepalive(self._driver, dict(self._keepalive_wanted))

    def _keepalive_done(self, task: asyncio.Task[None]) -> None:
        self._keepalive_task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.warning(
                "setsockopt(SO_KEEPALIVE/TCP_KEEP*) on link %d: AT+CTCPKA failed: %s",
                self._link,
                exc,
            )

    # -- what needs a host socket ---------------------------------------------------------

    accept = _unsupported("accept")
    bind = _unsupported("bind")
    close = _unsupported("close")
    connect = _unsupported("connect")
    connect_ex = _unsupported("connect_ex")
    detach = _unsupported("detach")
    dup = _unsupported("dup")
    getsockbyname = _unsupported("getsockbyname")  # on TransportSocket too (no such call)
    get_inheritable = _unsupported("get_inheritable")
    set_inheritable = _unsupported("set_inheritable")
    listen = _unsupported("listen")
    makefile = _unsupported("makefile")
    recv = _unsupported("recv")
    recv_into = _unsupported("recv_into")
    recvfrom = _unsupported("recvfrom")
    recvfrom_into = _unsupported("recvfrom_into")
    recvmsg = _unsupported("recvmsg")
    recvmsg_into = _unsupported("recvmsg_into")
    send = _unsupported("send")
    sendall = _unsupported("sendall")
    sendfile = _unsupported("sendfile")
    sendmsg = _unsupported("sendmsg")
    sendto = _unsupported("sendto")
    shutdown = _unsupported("shutdown")
