"""Typed access to the module's configuration and state commands (reference 3.1-3.20).

Every command of the reference that is not a data path has a method here, so
nobody needs ``modem.command()`` for ordinary work; :class:`~simsock.Modem`
inherits them. The module's answers come back as small frozen dataclasses.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ..at import commands as at
from ..at.bringup import Capabilities, capabilities, parse_ranges
from ..at.commands import Command
from ..at.errors import ProtocolError
from ..at.fields import Field, int_fields
from ..at.response import Response
from ..at.servers import listening_ports
from .driver import Driver

__all__ = [
    "Capabilities",
    "Keepalive",
    "LinkCounters",
    "LinkInfo",
    "ModuleControl",
    "SocketConfig",
    "Timeouts",
    "parse_ranges",
]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``AT+CIPTIMEOUT`` in seconds (3.12)."""

    netopen_s: float
    cipopen_s: float
    cipsend_s: float


@dataclass(frozen=True, slots=True)
class SocketConfig:
    """``AT+CIPCCFG?`` (3.13)."""

    nm_retry: int
    delay_ms: int
    ack: int
    err_mode: int
    header_type: int
    async_mode: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One line of ``AT+CIPOPEN?`` (3.3): a free link has ``kind`` ``None``."""

    link: int
    kind: str | None = None
    host: str | None = None
    port: int | None = None
    server: int | None = None  # the accepting server's index, None for a client


@dataclass(frozen=True, slots=True)
class Keepalive:
    """``AT+CTCPKA?`` (3.19): TCP keepalive of the module's links."""

    enabled: bool
    idle_min: int
    count: int
    interval_min: int


@dataclass(frozen=True, slots=True)
class LinkCounters:
    """``AT+CIPACK=<link>`` (3.16): bytes sent, acknowledged by the peer, and received."""

    sent: int
    acked: int
    received: int


class ModuleControl:
    """Typed command methods over an engine; see the module docstring."""

    _driver: Driver

    async def _run(self, command: Command) -> Response:
        response = await self._driver.execute(command)
        response.raise_for_error()
        return response

    async def _one(self, command: Command, name: str) -> list[Field]:
        values = (await self._run(command)).info(name)
        if not values:
            raise ProtocolError(f"{command.line}: no {name} line in the answer")
        return values[0]

    async def _ints(self, command: Command, name: str, count: int) -> list[int]:
        """The first ``count`` integers of the ``name:`` line ``command`` answers."""
        return int_fields(
            await self._one(command, name), count, f"{command.line} answer", exact=False
        )

    async def capabilities(self) -> Capabilities:
        """Ask the module's test commands (3.3, 3.4, 3.14) what it supports."""
        caps: Capabilities = await self._driver.run(capabilities())
        return caps

    async def network_open(self) -> bool:
        """``AT+NETOPEN?`` (3.1): whether the socket service is up."""
        return (await self._ints(at.query("+NETOPEN"), "+NETOPEN", 1))[0] == 1

    async def network_close(self) -> None:
        """``AT+NETCLOSE`` (3.2): close the socket service; links end with ``ENETDOWN``.

        The network stays closed (simsock does not recover it) until
        :meth:`network_reopen`; opens meanwhile wait, then raise ``ENETDOWN``.
        """
        session = self._driver.session
        await self._driver.run(session.close_network())

    async def network_reopen(self) -> None:
        """``AT+NETOPEN`` (3.1) after :meth:`network_close`."""
        session = self._driver.session
        await self._driver.run(session.open_network())

    async def link_table(self) -> list[LinkInfo]:
        """``AT+CIPOPEN?`` (3.3): every link, free or open."""
        out = []
        for fields in (await self._run(at.query("+CIPOPEN"))).info("+CIPOPEN"):
            if not fields or type(fields[0]) is not int:
                raise ProtocolError(f"malformed +CIPOPEN? line: {fields!r}")
            if len(fields) < 5:
                out.append(LinkInfo(fields[0]))
                continue
            index = fields[4] if type(fields[4]) is int else -1
            out.append(
                LinkInfo(
                    fields[0],
                    str(fields[1]),
                    str(fields[2]),
                    fields[3] if type(fields[3]) is int else None,
                    None if index < 0 else index,
                )
            )
        return out

    async def timeouts(self) -> Timeouts:
        """``AT+CIPTIMEOUT?`` (3.12)."""
        values = await self._ints(at.query("+CIPTIMEOUT"), "+CIPTIMEOUT", 3)
        return Timeouts(*(v / 1000 for v in values))

    async def set_timeouts(
        self,
        netopen_s: float | None = None,
        cipopen_s: float | None = None,
        cipsend_s: float | None = None,
    ) -> None:
        """``AT+CIPTIMEOUT`` (3.12), each 3-120 s; the library's own waits follow them."""

        def ms(value: float | None) -> int | None:
            return None if value is None else round(value * 1000)

        await self._run(at.ciptimeout(ms(netopen_s), ms(cipopen_s), ms(cipsend_s)))
        current = await self.timeouts()
        self._driver.session.set_timeouts(current.netopen_s, current.cipopen_s, current.cipsend_s)

    async def socket_config(self) -> SocketConfig:
        """``AT+CIPCCFG?`` (3.13)."""
        values = await self._ints(at.query("+CIPCCFG"), "+CIPCCFG", 7)
        return SocketConfig(*values)

    async def set_socket_config(self, **changes: int) -> SocketConfig:
        """``AT+CIPCCFG=...`` (3.13): change the named fields of :class:`SocketConfig`.

        ``header_type`` and ``err_mode`` are simsock's to choose (its parser
        depends on them): changing them raises ``ValueError``.
        """
        for owned in ("header_type", "err_mode"):
            if owned in changes:
                raise ValueError(f"{owned} is managed by simsock itself")
        current = await self.socket_config()
        fields = {name: getattr(current, name) for name in SocketConfig.__dataclass_fields__}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown CIPCCFG fields: {sorted(unknown)}")
        fields.update(changes)
        await self._run(at.cipccfg(**fields))
        return await self.socket_config()

    async def send_mode(self) -> bool:
        """``AT+CIPSENDMODE?`` (3.11): whether sends are confirmed only once the peer ACKed."""
        return (await self._ints(at.query("+CIPSENDMODE"), "+CIPSENDMODE", 1))[0] == 1

    async def set_send_mode(self, wait_for_ack: bool) -> None:
        """``AT+CIPSENDMODE`` (3.11): with ``True``, ``drain()`` waits for the peer's ACK."""
        await self._run(at.cipsendmode(int(wait_for_ack)))

    async def link_counters(self, link: int) -> LinkCounters:
        """``AT+CIPACK=<link>`` (3.16); ``link`` is ``transport.get_extra_info("link")``."""
        values = await self._ints(at.cipack(link), "+CIPACK", 3)
        return LinkCounters(*values)

    async def set_keepalive(
        self, enabled: bool, idle_min: int = 1, count: int = 9, interval_min: int = 1
    ) -> None:
        """``AT+CTCPKA`` (3.19): TCP keepalive for the module's links."""
        await self._run(at.ctcpka(enabled, idle_min, count, interval_min))

    async def keepalive(self) -> Keepalive:
        """``AT+CTCPKA?`` (3.19): the keepalive settings."""
        enabled, idle, count, interval = await self._ints(at.query("+CTCPKA"), "+CTCPKA", 4)
        return Keepalive(enabled == 1, idle, count, interval)

    async def link_states(self) -> tuple[bool, ...]:
        """``AT+CIPCLOSE?`` (3.6): whether each link (0, 1, ...) is connected."""
        states = await self._one(at.query("+CIPCLOSE"), "+CIPCLOSE")
        return tuple(value == 1 for value in int_fields(states, len(states), "+CIPCLOSE? line"))

    async def listening(self) -> dict[int, int]:
        """``AT+SERVERSTART?`` (3.14): the port each listening server index uses."""
        return listening_ports(await self._driver.execute(at.query("+SERVERSTART")))

    async def set_dns_servers(
        self, primary: str, secondary: str | None = None, *, ipv6: bool = False
    ) -> None:
        """``AT+CDNSCFG`` (3.20): the DNS servers ``AT+CDNSGIP`` asks."""
        await self._run(at.cdnscfg(primary, secondary, ipv6))

    async def dns_servers(self) -> list[str]:
        """``AT+CDNSCFG?`` (3.20): the configured servers, IPv4 then IPv6."""
        out = []
        for line in (await self._run(at.query("+CDNSCFG"))).lines:
            for part in line.split(","):
                _, sep, value = part.partition(":")
                if sep and value.strip():
                    out.append(value.strip())
        return out

    async def header_settings(self) -> tuple[bool, bool]:
        """``AT+CIPHEAD?`` and ``AT+CIPSRIP?`` (3.8, 3.9): length and sender headers on pushes."""
        head = (await self._ints(at.query("+CIPHEAD"), "+CIPHEAD", 1))[0]
        srip = (await self._ints(at.query("+CIPSRIP"), "+CIPSRIP", 1))[0]
        return head == 1, srip == 1

    async def require_network(self) -> None:
        """Raise ``OSError(ENETDOWN)`` unless ``AT+NETOPEN?`` says the network is open."""
        if not await self.network_open():
            raise OSError(errno.ENETDOWN, "the module's network is not open (AT+NETOPEN? = 0)")
