"""Bringing the module up: synchronise, echo off, network open, receive mode (reference 3, 6).

The order follows the reference's section 6 flow: ``AT+NETOPEN`` (only when
``AT+NETOPEN?`` says the network is closed), then ``AT+CIPRXGET=1`` for buffer
access. Links left open by an earlier host program are closed so both link
numbers start free.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from ..at import commands as at
from ..at.commands import Command
from ..at.errors import err_to_oserror
from .control import Capabilities, ModuleControl
from .engine import Engine

__all__ = ["ModuleInfo", "bring_up", "synchronise"]

logger = logging.getLogger("simsock.modem")

#: How long one ``AT`` waits for ``OK`` while synchronising, and how many tries.
SYNC_TIMEOUT_S = 1.0
SYNC_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """What bring-up learned."""

    ip_address: str | None
    capabilities: Capabilities = field(default_factory=Capabilities)


async def synchronise(engine: Engine, attempts: int = SYNC_ATTEMPTS) -> None:
    """Send ``AT`` until the module answers ``OK`` (echo and stale output are tolerated)."""
    probe = Command("AT", SYNC_TIMEOUT_S)
    last: BaseException | None = None
    for _ in range(attempts):
        try:
            response = await engine.execute(probe)
        except TimeoutError as exc:
            last = exc
            continue
        if response.ok:
            return
    raise TimeoutError(f"the module did not answer AT after {attempts} tries") from last


async def open_network(engine: Engine) -> None:
    """``AT+NETOPEN`` unless ``AT+NETOPEN?`` says the network is already open (3.1)."""
    state = await engine.execute(at.query("+NETOPEN"))
    state.raise_for_error()
    values = state.info("+NETOPEN")
    if values and values[0] and values[0][0] == 1:
        return
    result = engine.expect_late("+NETOPEN", None)
    response = await engine.execute(at.netopen())
    if not response.ok:
        engine.discard_late("+NETOPEN", None, result)
        error = response.error("NETOPEN")
        if getattr(error, "module_code", None) == 4:  # "Network is already opened"
            return
        raise error
    (err,) = await asyncio.wait_for(result, at.CIPTIMEOUT_DEFAULT_S)
    if err != 0:
        raise err_to_oserror(err, context="NETOPEN")


async def close_stale_links(engine: Engine) -> None:
    """Close links an earlier program left open (``AT+CIPOPEN?`` lists them, 3.3)."""
    response = await engine.execute(at.query("+CIPOPEN"))
    if not response.ok:
        return
    for fields in response.info("+CIPOPEN"):
        if len(fields) > 1 and type(fields[0]) is int and fields[0] <= engine.max_link:
            number = fields[0]
            logger.info("closing link %d left open by an earlier session", number)
            done = engine.expect_late("+CIPCLOSE", number)
            closed = await engine.execute(at.cipclose(number))
            if closed.ok:
                await asyncio.wait_for(done, at.CIPTIMEOUT_DEFAULT_S)
            else:
                engine.discard_late("+CIPCLOSE", number, done)


async def configure_push(engine: Engine) -> None:
    """Direct push (2, 4.1) with every header: length, sender, and the link's number.

    ``+RECEIVE,<link>,<len>`` (CIPCCFG HeaderType 1) names the link, so two
    links to the same peer never get each other's data; a module that refuses
    HeaderType 1 falls back to ``+IPD<len>`` with ``RECV FROM`` routing.
    """
    for command in (at.ciprxget_mode(0), at.ciphead(1), at.cipsrip(1)):
        (await engine.execute(command)).raise_for_error()
    response = await engine.execute(at.cipccfg(header_type=1))
    if not response.ok:
        logger.warning(
            "the module refused CIPCCFG HeaderType 1: pushed data is routed by sender address"
        )
    engine.push_mode = True


async def before_netopen(engine: Engine, command: Command, wanted: list[int]) -> None:
    """A setting the module takes only while the network is closed (CSOCKETPN 3.18, CIPMODE 3.10).

    Nothing is sent when ``AT<name>?`` already answers ``wanted``. When the
    module refuses it because the network is open, close the network, apply
    it, and let the caller open the network again.
    """
    current = await engine.execute(at.query(command.name))
    values = current.info(command.name)
    if current.ok and values and values[0] == wanted:
        return
    if (await engine.execute(command)).ok:
        return
    closed = engine.expect_late("+NETCLOSE", None)
    if (await engine.execute(at.netclose())).ok:
        await asyncio.wait_for(closed, at.CIPTIMEOUT_DEFAULT_S)
    else:
        engine.discard_late("+NETCLOSE", None, closed)
    (await engine.execute(command)).raise_for_error()


class _Control(ModuleControl):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine


async def bring_up(
    engine: Engine,
    *,
    rx_mode: str = "buffer",
    apn: str | None = None,
    ip_family: int = 4,
    transparent: bool = False,
) -> ModuleInfo:
    """The whole start-up sequence; returns what it learned."""
    await synchronise(engine)
    (await engine.execute(at.echo(False))).raise_for_error()
    capabilities = await _Control(engine).capabilities()
    engine.max_link = capabilities.links[1]
    if apn is not None:
        (await engine.execute(at.cgdcont(apn))).raise_for_error()
    if ip_family == 6:
        await before_netopen(engine, at.csocketpn(6), [1, 6])
    await before_netopen(engine, at.cipmode(int(transparent)), [int(transparent)])
    await open_network(engine)
    if rx_mode == "buffer":
        (await engine.execute(at.ciprxget_mode(1))).raise_for_error()
    elif rx_mode == "push":
        await configure_push(engine)
    else:
        raise ValueError(f"rx_mode must be 'buffer' or 'push', not {rx_mode!r}")
    await close_stale_links(engine)
    address = await engine.execute(at.ipaddr())
    ip = None
    if address.ok:
        values = address.info("+IPADDR")
        if values and values[0]:
            ip = str(values[0][0])
    return ModuleInfo(ip_address=ip, capabilities=capabilities)
