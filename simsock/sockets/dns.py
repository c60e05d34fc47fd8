"""Name resolution through the module (``AT+CDNSGIP``, reference 3.17), shaped like getaddrinfo."""

from __future__ import annotations

import socket
import time
from collections import OrderedDict
from typing import Any

from ..at import commands as at
from ..at.commands import check_host, check_port, ip_literal
from ..at.errors import gai_error
from ..driver.driver import Driver

__all__ = ["AddrInfo", "NameCache", "getaddrinfo", "host_or_gaierror", "service_port"]

#: One entry of ``loop.getaddrinfo``'s answer.
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]


def service_port(port: int | str | None, proto: str) -> int:
    """A port as ``loop.getaddrinfo`` takes it: a number, digits, or a service name ("http").

    Names are looked up in this host's services database, as the stdlib does;
    an unknown one raises ``socket.gaierror`` (EAI_SERVICE).
    """
    if port is None:
        return 0
    if isinstance(port, str):
        if port.isascii() and port.isdigit():
            return int(port)
        try:
            return socket.getservbyname(port, proto)
        except OSError:
            raise socket.gaierror(socket.EAI_SERVICE, f"unknown service {port!r}") from None
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int or a str, not {type(port).__name__}")
    return port


def host_or_gaierror(host: str) -> str:
    """``host`` checked for the wire (3.17); a name the module could misread is a gaierror.

    ``loop.create_connection`` raises ``socket.gaierror`` for a host it cannot
    resolve; a host name with a quote or a CR is such a name, and never reaches
    the wire.
    """
    try:
        return check_host(host)
    except ValueError as exc:
        raise socket.gaierror(socket.EAI_NONAME, str(exc)) from None


async def getaddrinfo(
    driver: Driver,
    host: str,
    port: int | str | None,
    *,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
) -> list[AddrInfo]:
    """Resolve ``host`` through the module, shaped like ``loop.getaddrinfo``.

    IP literals are answered without asking the module. Names are checked
    against the rules of 3.17 before anything is sent; a name the module
    cannot resolve raises ``socket.gaierror``. While the module recovers its
    network, the question waits for it (up to the connect timeout).
    """
    number = service_port(port, "udp" if type == socket.SOCK_DGRAM else "tcp")
    check_port(number, allow_zero=True)
    address = ip_literal(host) if isinstance(host, str) else None
    if address is None:
        try:
            at.check_domain(host)
        except ValueError as exc:
            raise socket.gaierror(socket.EAI_NONAME, str(exc)) from None
        response = await driver.execute(at.cdnsgip(host), wait_up=True)
        values = response.info("+CDNSGIP")
        if not response.ok or not values or values[0][:1] != [1] or len(values[0]) < 3:
            code = values[0][1] if values and len(values[0]) > 1 else None
            raise gai_error(
                f"AT+CDNSGIP could not resolve {host!r}",
                code if isinstance(code, int) else None,
                "DNS general error",
            )
        address = ip_literal(str(values[0][2]))
        if address is None:
            raise gai_error(f"AT+CDNSGIP gave no address for {host!r}", None, None)
    af = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    if family not in (0, af):
        raise socket.gaierror(socket.EAI_FAMILY, f"{host!r} has no address of family {family}")
    kinds = [type] if type else [socket.SOCK_STREAM, socket.SOCK_DGRAM]
    out: list[AddrInfo] = []
    for kind in kinds:
        sockaddr: tuple[Any, ...] = (
            (str(address), number, 0, 0) if af == socket.AF_INET6 else (str(address), number)
        )
        protocol = socket.IPPROTO_TCP if kind == socket.SOCK_STREAM else socket.IPPROTO_UDP
        out.append((af, socket.SocketKind(kind), proto or protocol, "", sockaddr))
    return out


class NameCache:
    """Addresses the module resolved for ``sendto(data, (name, port))``: few, and not for long.

    A datagram sent to a name must not cost an ``AT+CDNSGIP`` each time; an
    answer is kept :data:`TTL_S` seconds (the module's own answers carry no
    TTL), and the least recently used of more than :data:`SIZE` names goes.
    """

    TTL_S = 60.0
    SIZE = 32

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, name: str) -> str | None:
        """The address cached for ``name``, or ``None``."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return entry[1]

    def put(self, name: str, address: str) -> None:
        """Remember that ``name`` is ``address``."""
        self._entries[name] = (time.monotonic() + self.TTL_S, address)
        self._entries.move_to_end(name)
        while len(self._entries) > self.SIZE:
            self._entries.popitem(last=False)
