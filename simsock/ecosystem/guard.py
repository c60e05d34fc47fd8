"""No silent bypass: inside ``use_modem()``, reaching the host's network is an error.

``use_modem()`` redirects the loop's ``create_connection`` & co. to the
module, but code that makes its own sockets would quietly use the host's
Ethernet or Wi-Fi instead: paho-mqtt (``socket.create_connection`` in a
thread), aiohttp (aiohappyeyeballs makes a socket and calls
``loop.sock_connect``), aiocoap (its own UDP socket and ``sendmsg``). On a
gateway that is a data leak, so while a guard is active those calls raise
:class:`HostNetworkBlockedError` and name the way over the module.

What is refused, and why there:

- ``socket.socket.connect``, ``connect_ex``, ``bind`` and ``listen``, on
  every family but the local ones (``AF_UNIX``, ``AF_NETLINK``), and
  ``socket.create_connection`` / ``socket.create_server`` (the same refusal
  with their own name). These reach out or open a door; ``bind`` is refused
  because a bound UDP socket already receives from the network.
  ``connect_ex`` raises too: a refusal is not a ``connect()`` result.
- ``sendto`` / ``sendmsg`` with an address on a datagram socket that has no
  port yet (the send would bind it: a new door) — aiocoap's client, or any
  unconnected UDP client made in the block.
- The guarded loop's ``sock_connect`` and ``sock_sendto``, before asyncio
  resolves the address (through the module's DNS, inside ``use_modem``).

What was opened before the block keeps working, as it would after: a
connected socket's ``send``/``recv``, ``accept`` on a listener, and the
datagrams of a socket bound before (a UDP server started earlier answers its
clients). So the checks run at set-up, never per byte: the first datagram a
socket is allowed to send marks it, and later ones (the emulator's UDP links,
asyncio's buffered sends from a callback) pass on a set lookup.

The socket methods are wrapped on the ``socket.socket`` class, so the guard
is process-wide, every thread and loop included (paho connects from its own
thread). Blocks are counted: the first installs the wrappers, the last
restores the originals, under a lock.

Also allowed: local families (a ``socketpair()`` relay is how blocking code
is bridged to the module); ``with host_network():`` (a context variable, so
it holds for the task, tasks it starts and ``asyncio.to_thread``, not for
``threading.Thread`` or ``run_in_executor``); calls made on the thread running
a loop that is in ``use_modem(..., allow_host=True)``; and callers in exempt
modules, found by walking up the frames past asyncio, socket, ssl and
simsock's wrappers: the virtual modem (``simsock.emulator``, in any thread),
modules given in ``exempt_modules=``, and always pyserial (``serial``: the
modem's own ``socket://`` and ``rfc2217://`` links, which may reconnect
inside a block).

The error is ``PermissionError`` (``EACCES``): a policy refusal, as a local
firewall rule makes ``connect()`` fail; not a ``ConnectionError``, so code
that retries transient network errors does not retry it.

What cannot be caught: C code that calls the OS itself (``_socket.socket``
used directly, C extensions such as c-ares/aiodns, uvloop's loop, libcurl),
subprocesses, and name lookups with the host's resolver
(``socket.getaddrinfo`` / ``gethostbyname`` called directly: asyncio runs
them in executor threads where the caller, and so the emulator's exemption,
is lost; the connection that would follow is refused). On platforms without
``AF_UNIX``, ``socket.socketpair()`` is emulated over loopback TCP and is
refused as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import socket
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = [
    "ALWAYS_EXEMPT_MODULES",
    "DEFAULT_EXEMPT_MODULES",
    "LOCAL_FAMILIES",
    "HostNetworkBlockedError",
    "called_from",
    "caller_module",
    "exempt_loop",
    "guard_host_network",
    "host_network",
    "host_network_requested",
    "is_guarded",
]

#: Callers in these modules (and their submodules) keep the host's network.
DEFAULT_EXEMPT_MODULES = ("simsock.emulator",)
#: Exempt whatever ``exempt_modules`` is given: pyserial opens the modem's own
#: serial link for ``socket://`` and ``rfc2217://`` URLs (and may reopen it).
ALWAYS_EXEMPT_MODULES = ("serial",)
#: Families that never leave the machine.
LOCAL_FAMILIES = frozenset(
    int(getattr(socket, name)) for name in ("AF_UNIX", "AF_NETLINK") if hasattr(socket, name)
)
#: Frames from these modules are skipped when looking for the caller: they
#: only pass a call on (asyncio's create_connection calling sock_connect,
#: socket.create_connection calling connect, ssl calling socket's connect).
_PASS_THROUGH = ("asyncio", "socket", "ssl", "simsock.ecosystem.interpose", __name__)

_host_network: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "simsock_host_network", default=False
)


class HostNetworkBlockedError(PermissionError):
    """A call inside ``use_modem()`` would have used the host's network (``errno.EACCES``)."""


@contextlib.contextmanager
def host_network() -> Iterator[None]:
    """Inside ``use_modem``: calls made in this block (and tasks it starts) use the host."""
    token = _host_network.set(True)
    try:
        yield
    finally:
        _host_network.reset(token)


def host_network_requested() -> bool:
    """Whether the calling context is inside ``with host_network():``."""
    return _host_network.get()


def _in(name: str, modules: Iterable[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def caller_module() -> str:
    """The module of the first caller outside asyncio, socket, ssl and simsock's wrappers."""
    frame = sys._getframe(1)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if not _in(name, _PASS_THROUGH):
            return name
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def called_from(modules: Iterable[str]) -> bool:
    """Whether :func:`caller_module` is one of ``modules`` or inside one of them."""
    return _in(caller_module(), modules)


# -- the messages ------------------------------------------------------------------------

_ROUTES = {
    "connect": "modem.open_connection(), asyncio.open_connection() (redirected in the block) "
    "or simsock.ecosystem.socket_for()",
    "datagram": "modem.create_datagram_endpoint(), loop.create_datagram_endpoint() "
    "(redirected in the block) or simsock.ecosystem.udp_socket_for()",
    "listen": "modem.start_server() or asyncio.start_server() (redirected in the block)",
}


def _refusal(call: str, kind: str, address: object) -> HostNetworkBlockedError:
    where = "" if address is None else f" to {address!r}"
    return HostNetworkBlockedError(
        errno.EACCES,
        f"{call}{where} inside use_modem() would use the host's network; use {_ROUTES[kind]} "
        "to go over the module, or host_network() or use_modem(..., allow_host=True) to allow it",
    )


# -- the process-wide state --------------------------------------------------------------


class _Guard:
    """Counts active guards and owns the wrappers on ``socket``; see the module docstring."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.activations: list[tuple[str, ...]] = []
        self.exempt: tuple[str, ...] = ALWAYS_EXEMPT_MODULES
        self.allowed_loops: tuple[asyncio.AbstractEventLoop, ...] = ()  # replaced, never mutated
        # Sockets a sendto was allowed on once (the emulator's UDP links).
        self.approved: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        # (owner, name, what owner's own dict held or _MISSING, our wrapper)
        self.installed: list[tuple[Any, str, Any, Any]] = []

    @property
    def active(self) -> bool:
        return bool(self.activations)

    def activate(self, exempt_modules: tuple[str, ...]) -> None:
        with self.lock:
            if not self.activations:
                self._install()  # inert until an activation is recorded
            self.exempt = _union(ALWAYS_EXEMPT_MODULES, *self.activations, exempt_modules)
            self.activations.append(exempt_modules)

    def deactivate(self, exempt_modules: tuple[str, ...]) -> None:
        with self.lock:
            self.activations.remove(exempt_modules)
            self.exempt = _union(ALWAYS_EXEMPT_MODULES, *self.activations)
            if not self.activations:
                self._uninstall()
                self.approved.clear()

    def allows(self) -> bool:
        """Whether the calling code may use the host (called only at set-up)."""
        if _host_network.get():
            return True
        loop = asyncio._get_running_loop()
        if loop is not None and any(loop is allowed for allowed in self.allowed_loops):
            return True
        return called_from(self.exempt)

    def check(self, sock: socket.socket, call: str, kind: str, address: object) -> None:
        """Raise unless ``sock`` is local or the caller may use the host."""
        if int(sock.family) in LOCAL_FAMILIES:
            return
        if kind == "datagram" and (sock in self.approved or _bound(sock)):
            self.approved.add(sock)
            return
        if not self.allows():
            raise _refusal(call, kind, address)
        if kind == "datagram":
            self.approved.add(sock)

    def _install(self) -> None:
        for name, kind in _SOCKET_METHODS:
            self._replace(socket.socket, name, _method(getattr(socket.socket, name), name, kind))
        for name, kind in _SOCKET_FUNCTIONS:
            self._replace(socket, name, _function(getattr(socket, name), name, kind))

    def _replace(self, owner: Any, name: str, wrapper: Any) -> None:
        self.installed.append((owner, name, vars(owner).get(name, _MISSING), wrapper))
        setattr(owner, name, wrapper)

    def _uninstall(self) -> None:
        while self.installed:
            owner, name, before, wrapper = self.installed.pop()
            if vars(owner).get(name) is not wrapper:
                continue  # someone replaced ours meanwhile: theirs stays
            if before is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, before)


def _bound(sock: socket.socket) -> bool:
    """Whether an IP socket already has a port: bound before the guard, or with its leave."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return int(sock.getsockname()[1]) != 0
    except OSError:
        return False


def _union(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for group in groups for name in group))


_MISSING = object()
_guard = _Guard()

#: socket.socket methods and what they do: reach out, listen, or send a datagram.
_SOCKET_METHODS = (
    ("connect", "connect"),
    ("connect_ex", "connect"),
    ("bind", "listen"),
    ("listen", "listen"),
    ("sendto", "datagram"),
    ("sendmsg", "datagram"),
)
_SOCKET_FUNCTIONS = (("create_connection", "connect"), ("create_server", "listen"))


def _destination(name: str, args: tuple[Any, ...]) -> tuple[bool, object]:
    """Whether a call with these arguments sets something up, and the address it names."""
    if name == "sendto":  # sendto(data, address) or sendto(data, flags, address)
        return len(args) >= 2, args[-1] if len(args) >= 2 else None
    if name == "sendmsg":  # sendmsg(buffers[, ancdata[, flags[, address]]])
        address = args[3] if len(args) > 3 else None
        return address is not None, address
    if name == "listen":  # listen([backlog])
        return True, None
    return True, args[0] if args else None


def _method(original: Callable[..., Any], name: str, kind: str) -> Any:
    call = f"socket.socket.{name}()"

    @functools.wraps(original)
    def guarded(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
        if _guard.active:
            sets_up, address = _destination(name, args)
            if sets_up:
                _guard.check(self, call, kind, address)
        return original(self, *args, **kwargs)

    return guarded


def _function(original: Callable[..., Any], name: str, kind: str) -> Any:
    call = f"socket.{name}()"

    @functools.wraps(original)
    def guarded(address: Any, *args: Any, **kwargs: Any) -> Any:
        if _guard.active and not _guard.allows():
            raise _refusal(call, kind, address)
        return original(address, *args, **kwargs)

    return guarded


# -- per loop ----------------------------------------------------------------------------

#: The loop methods a guard sets on its loop object.
LOOP_METHODS = ("sock_connect", "sock_sendto")


@contextlib.contextmanager
def guard_host_network(
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    exempt_modules: Iterable[str] = DEFAULT_EXEMPT_MODULES,
) -> Iterator[None]:
    """Refuse the host's network for the block: process-wide, plus ``loop``'s ``sock_*`` calls.

    ``use_modem()`` enters this; it can also be used alone. Blocks may nest
    and overlap across threads; the originals come back when the last ends.
    """
    loop = loop or asyncio.get_running_loop()
    if any(name in vars(loop) for name in LOOP_METHODS):
        raise RuntimeError("this loop already has a host-network guard (nested use_modem?)")
    exempt = tuple(exempt_modules)
    original_connect = loop.sock_connect
    original_sendto = loop.sock_sendto

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        _guard.check(sock, "loop.sock_connect()", "connect", address)
        await original_connect(sock, address)

    async def sock_sendto(sock: socket.socket, data: Any, address: Any) -> int:
        _guard.check(sock, "loop.sock_sendto()", "datagram", address)
        return await original_sendto(sock, data, address)

    _guard.activate(exempt)
    try:
        loop.sock_connect = sock_connect  # type: ignore[method-assign]
        loop.sock_sendto = sock_sendto  # type: ignore[method-assign]
        yield
    finally:
        for name in LOOP_METHODS:
            vars(loop).pop(name, None)
        _guard.deactivate(exempt)


@contextlib.contextmanager
def exempt_loop(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Calls made on ``loop``'s thread pass any guard for the block (``allow_host=True``)."""
    with _guard.lock:
        _guard.allowed_loops = (*_guard.allowed_loops, loop)
    try:
        yield
    finally:
        with _guard.lock:
            allowed = list(_guard.allowed_loops)
            allowed.remove(loop)
            _guard.allowed_loops = tuple(allowed)


def is_guarded() -> bool:
    """Whether a guard is active anywhere in the process now."""
    return _guard.active
