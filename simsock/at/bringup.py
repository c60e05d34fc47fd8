"""Bringing the module up, as a session procedure (reference 3, 6).

The order follows the reference's section 6 flow: synchronise, echo off,
learn the module's ranges, settings that need a closed network, ``AT+NETOPEN``
(only when ``AT+NETOPEN?`` says the network is closed), then the receive
mode. Links left open by an earlier host program are closed so both link
numbers start free. The session runs this at start and again after ``RDY``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from . import commands as at
from .commands import Command
from .note import CSOCKETPN_IPV6, MAX_LINK, MAX_SEND_BYTES, MAX_SERVER
from .procedures import Cmd, Procedure, Sync, close_network, open_network, reopen_network
from .response import Response

__all__ = ["BringUpOptions", "Capabilities", "ModuleInfo", "bring_up", "parse_ranges"]

logger = logging.getLogger("simsock.at.bringup")

#: How many probes synchronising tries (each waits the session's resync_probe_s).
SYNC_ATTEMPTS = 10

_RANGE = re.compile(r"\((-?\d+)-(-?\d+)\)|\((-?\d+)\)")


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """The ``(a-b)`` and ``(a)`` ranges of a test-command answer, in order.

    ``'+CIPSEND: (0-1),(1-1500)'`` → ``[(0, 1), (1, 1500)]``; quoted lists
    such as ``("TCP","UDP")`` are skipped.
    """
    out = []
    for match in _RANGE.finditer(text):
        if match.group(1) is not None:
            out.append((int(match.group(1)), int(match.group(2))))
        else:
            out.append((int(match.group(3)), int(match.group(3))))
    return out


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the module says it supports (its ``=?`` answers), capped at the reference's values."""

    links: tuple[int, int] = (0, MAX_LINK)
    servers: tuple[int, int] = (0, MAX_SERVER)
    max_send: int = MAX_SEND_BYTES
    protocols: tuple[str, ...] = ("TCP", "UDP")


@dataclass(frozen=True, slots=True)
class BringUpOptions:
    """What ``open_modem`` asked for."""

    rx_mode: str = "buffer"
    apn: str | None = None
    ip_family: int = 4
    transparent: bool = False


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """What bring-up learned."""

    ip_address: str | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    push_mode: bool = False
    #: Pushed data names its link (``+RECEIVE,<link>,<len>``, CIPCCFG HeaderType 1).
    link_headers: bool = False


def synchronise(attempts: int = SYNC_ATTEMPTS) -> Procedure:
    """Probe until the module answers, proving the answer is the probe's (:mod:`.resync`).

    A bare ``AT`` would take a stale ``OK`` (a command written before a
    restart, output an earlier program left) as its own, and every command
    after it would get the previous one's answer.
    """
    yield Sync(attempts)
    return None


def capabilities() -> Procedure:
    """Ask the module's test commands (3.3, 3.4, 3.14) what it supports."""
    defaults = Capabilities()
    found: dict[str, list[tuple[int, int]]] = {}
    protocols = defaults.protocols
    for name in ("+CIPOPEN", "+CIPSEND", "+SERVERSTART"):
        response: Response = yield Cmd(at.test(name))
        if response.ok:
            text = " ".join(line for line in response.lines if line.startswith(name))
            found[name] = parse_ranges(text)
            if name == "+CIPOPEN":
                protocols = tuple(re.findall(r'"([A-Z]+)"', text)) or protocols
    links = found.get("+CIPOPEN", [])[:1] or [defaults.links]
    send = found.get("+CIPSEND", [])[1:2] or [(1, defaults.max_send)]
    servers = found.get("+SERVERSTART", [])[1:2] or [defaults.servers]
    return Capabilities(
        links=(links[0][0], min(links[0][1], MAX_LINK)),
        servers=(servers[0][0], min(servers[0][1], MAX_SERVER)),
        max_send=min(send[0][1], MAX_SEND_BYTES),
        protocols=protocols,
    )


def before_netopen(command: Command, wanted: list[int]) -> Procedure:
    """A setting the module takes only while the network is closed (CSOCKETPN 3.18, CIPMODE 3.10).

    Nothing is sent when ``AT<name>?`` already answers ``wanted``. When the
    module refuses it because the network is open, close the network, apply
    it, and let the caller open the network again.
    """
    current: Response = yield Cmd(at.query(command.name))
    values = current.info(command.name)
    if current.ok and values and values[0] == wanted:
        return None
    if (yield Cmd(command)).ok:
        return None
    yield from close_network()
    (yield Cmd(command)).raise_for_error()
    return None


def configure_push() -> Procedure:
    """Direct push (2, 4.1) with every header: length, sender, and the link's number.

    ``+RECEIVE,<link>,<len>`` (CIPCCFG HeaderType 1) names the link, so two
    links to the same peer never get each other's data; a module that refuses
    HeaderType 1 falls back to ``+IPD<len>`` with ``RECV FROM`` routing. The
    value says whether the link is named.
    """
    for command in (at.ciprxget_mode(0), at.ciphead(1), at.cipsrip(1)):
        (yield Cmd(command)).raise_for_error()
    if (yield Cmd(at.cipccfg(header_type=1))).ok:
        return True
    logger.warning(
        "the module refused CIPCCFG HeaderType 1: pushed data is routed by sender address,"
        " so only one link per peer (and one UDP link) can be open"
    )
    return False


def close_stale_links(max_link: int) -> Procedure:
    """Close links an earlier program left open (``AT+CIPOPEN?`` lists them, 3.3)."""
    response: Response = yield Cmd(at.query("+CIPOPEN"))
    if not response.ok:
        return None
    for fields in response.info("+CIPOPEN"):
        if len(fields) > 1 and type(fields[0]) is int and fields[0] <= max_link:
            logger.info("closing link %d left open by an earlier session", fields[0])
            yield Cmd(at.cipclose(fields[0]), late=("+CIPCLOSE", fields[0]))
    return None


def bring_up(options: BringUpOptions, *, after_drop: bool = False) -> Procedure:
    """The start-up sequence after :func:`synchronise`; the value is a :class:`ModuleInfo`.

    ``after_drop``: the network dropped meanwhile, so a network that
    ``AT+NETOPEN?`` still calls open is closed and opened again (4.2).
    """
    if options.rx_mode not in ("buffer", "push"):
        raise ValueError(f"rx_mode must be 'buffer' or 'push', not {options.rx_mode!r}")
    (yield Cmd(at.echo(False))).raise_for_error()
    caps: Capabilities = yield from capabilities()
    if options.apn is not None:
        (yield Cmd(at.cgdcont(options.apn))).raise_for_error()
    if options.ip_family == 6:
        yield from before_netopen(at.csocketpn(6), [1, CSOCKETPN_IPV6])
    yield from before_netopen(at.cipmode(int(options.transparent)), [int(options.transparent)])
    yield from (reopen_network() if after_drop else open_network())
    link_headers = False
    if options.rx_mode == "buffer":
        (yield Cmd(at.ciprxget_mode(1))).raise_for_error()
    else:
        link_headers = yield from configure_push()
    yield from close_stale_links(caps.links[1])
    address: Response = yield Cmd(at.ipaddr())
    ip = None
    if address.ok:
        values = address.info("+IPADDR")
        if values and values[0]:
            ip = str(values[0][0])
    return ModuleInfo(
        ip_address=ip,
        capabilities=caps,
        push_mode=options.rx_mode == "push",
        link_headers=link_headers,
    )
