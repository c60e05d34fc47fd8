"""The demultiplexer: where each event from the module goes (reference 1, 4).

A mixin of :class:`~simsock.modem.engine.Engine`, called by its reader task
for every parsed event: a final result, prompt or information line to the
command in flight; a late result (``+CIPOPEN:``, ``+CIPSEND:`` ...) to the
waiter registered for it; ``+CIPRXGET: 1`` to its link's readable flag; a
payload to its link; ``+IPCLOSE`` and ``+CLIENT`` to the link table; the
rest to the hooks (network lost, module ready, unsolicited lines).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..at.errors import ProtocolError
from ..at.events import (
    ClientAccepted,
    CmeError,
    Connect,
    ConnectFail,
    DataWaiting,
    Echo,
    Error,
    Event,
    IpError,
    Line,
    LinkClosed,
    ModuleReady,
    NetworkClosed,
    Ok,
    Prompt,
    PushedData,
    RawData,
    ReceivedData,
    TransparentClosed,
    describe,
)
from ..at.parser import Parser
from .exchange import InFlight, LateResults
from .links import Link, LinkState
from .stats import Stats

__all__ = ["Demultiplexer"]

logger = logging.getLogger("simsock.modem")


class Demultiplexer:
    """Routes parsed events (a mixin of Engine)."""

    # Provided by Engine:
    links: dict[int, Link]
    push_mode: bool
    transparent_link: Link | None
    data_mode: bool
    stats: Stats
    on_unsolicited: Callable[[Line], None] | None
    on_client: Callable[[ClientAccepted], None] | None
    on_network_closed: Callable[[], None] | None
    on_ready: Callable[[], None] | None
    _inflight: InFlight | None
    _late: LateResults
    _parser: Parser
    _wakeup: asyncio.Event
    _transparent_closed: Callable[[], None]

    def _dispatch(self, event: Event) -> None:
        inflight = self._inflight
        if inflight is not None and inflight.done.done():
            # Finished (its final result came earlier in this read): what follows
            # in the same chunk is a late result or a URC, not part of its answer.
            inflight = None
        if self.stats.trace is not None:
            self.stats.trace.append(("<-", describe(event)))
        match event:
            case ReceivedData(link=number, data=data, rest=rest):
                self.stats.payload_received += len(data)
                link = self.links.get(number)
                if link is None or not link.active:
                    logger.warning("data for link %d, which is not open: dropped", number)
                    return
                link.readable = rest > 0
                link.deliver(data)
            case PushedData():
                self.stats.payload_received += len(event.data)
                self._route_push(event)
            case RawData(data=data):
                self.stats.payload_received += len(data)
                if self.transparent_link is not None:
                    self.transparent_link.deliver(data)
                else:
                    logger.warning("%d raw bytes with no transparent link: dropped", len(data))
            case Connect() | ConnectFail() if inflight is not None and inflight.until_connect:
                if isinstance(event, Connect):
                    self._parser.enter_raw()
                    self.data_mode = True
                inflight.finish(event)
            case TransparentClosed():
                self._transparent_closed()
            case DataWaiting(link=number):
                link = self.links.get(number)
                if link is not None and not link.readable:
                    link.readable = True
                    self._wakeup.set()
            case Ok() | Error() | CmeError():
                if inflight is None:
                    logger.warning("final result %r with no command in flight: dropped", event)
                else:
                    inflight.finish(event)
            case Prompt():
                if inflight is not None and inflight.prompt is not None:
                    if not inflight.prompt.done():
                        inflight.prompt.set_result(None)
                else:
                    logger.warning("unexpected '>' prompt")
            case IpError(info=info):
                if inflight is not None:
                    inflight.response.ip_error = info
                else:
                    logger.warning("+IP ERROR: %s with no command in flight", info)
            case Line():
                self._dispatch_line(event, inflight)
            case Echo(text=text):
                logger.debug("echo: %s", text)
            case LinkClosed(link=number, reason=reason):
                self._remote_closed(number, reason)
            case NetworkClosed():
                logger.warning("network closed unexpectedly")
                if self.on_network_closed is not None:
                    self.on_network_closed()
            case ModuleReady():
                logger.warning("the module restarted (RDY)")
                if self.on_ready is not None:
                    self.on_ready()
            case ClientAccepted():
                if self.on_client is not None:
                    self.on_client(event)
                else:
                    logger.warning("client accepted with no server: %r", event)
            case _:
                self.stats.unsolicited += 1
                logger.info("unhandled event: %r", event)

    def _dispatch_line(self, line: Line, inflight: InFlight | None) -> None:
        name = line.name
        if name == "+CIPERROR" and inflight is not None:
            fields = line.fields
            if fields and type(fields[0]) is int:
                inflight.response.cip_error = fields[0]
                return
        # A query in flight owns lines of its own name (+CIPOPEN: 0,"TCP",... is
        # not a late result); otherwise late results first, then the command.
        is_query = inflight is not None and inflight.response.command.line.endswith("?")
        if inflight is not None and is_query and inflight.claims(line):
            inflight.add_line(line.text)
            return
        if self._late.resolve(line):
            return
        if inflight is not None and inflight.claims(line):
            inflight.add_line(line.text)
            return
        if name == "+CIPCLOSE":
            # NETCLOSE reports each link it closes (3.2) with nobody waiting.
            fields = line.fields
            if fields and type(fields[0]) is int:
                self._remote_closed(fields[0], 0)
                return
        self.stats.unsolicited += 1
        logger.info("unsolicited: %s", line.text)
        if self.on_unsolicited is not None:
            self.on_unsolicited(line)

    def _route_push(self, event: PushedData) -> None:
        """Give pushed data to its link: named by ``+RECEIVE``, else found by address (4.1)."""
        if event.link is not None:
            link = self.links.get(event.link)
        else:
            active = [x for x in self.links.values() if x.alive]
            matching = [
                x for x in active if event.address is None or x.udp or x.peer == event.address
            ]
            link = matching[0] if len(matching) == 1 else None
            if link is None and len(active) > 1:
                raise ProtocolError(
                    f"pushed data from {event.address} matches {len(matching)} links: dropped"
                    " (use CIPCCFG HeaderType 1 so the module names the link)"
                )
        if link is None or not link.alive:
            logger.warning("pushed data for a link that is not open: dropped")
            return
        link.deliver(event.data, event.address)

    def _remote_closed(self, number: int, reason: int) -> None:
        link = self.links.get(number)
        if link is None or not link.alive:
            logger.debug("+IPCLOSE for link %d, not open", number)
            return
        if link.state is LinkState.CLOSING:
            return  # our own AT+CIPCLOSE; its late result finishes the link
        link.remote_closed = True
        link.remote_reason = reason
        if self.push_mode:
            link.deliver_eof()  # everything was pushed already
        # Buffer mode: data that came before the close stays readable (4.2);
        # the scheduler reads it all, then reports end of stream.
        self._wakeup.set()

    # -- the scheduler task --------------------------------------------------------
