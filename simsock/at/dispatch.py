"""Where each event from the module goes (reference 1, 4): the session's demultiplexer.

A final result, prompt or information line goes to the command in flight; a
late result to the waiter registered for it (and, when it proves a lost
``OK``, it ends the command too); ``+CIPRXGET: 1`` to its link's readable
flag; a payload to its link; ``+IPCLOSE`` and ``+CLIENT`` to the link table;
``+CIPEVENT`` and ``RDY`` to recovery; the rest is logged as unsolicited.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .events import (
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
    Notice,
    Ok,
    Prompt,
    PushedData,
    RawData,
    ReceivedData,
    TransparentClosed,
    describe,
)
from .outcomes import Unsolicited
from .sending import prompt
from .servers import client_accepted

if TYPE_CHECKING:
    from .session import Session

__all__ = ["dispatch"]

logger = logging.getLogger("simsock.at.session")


#: Events that only carry payload: they never let a command go, so after them
#: the session need not look for work (the hot path of every transfer).
_PAYLOAD = (ReceivedData, PushedData, RawData)


def dispatch(s: Session, event: Event) -> None:
    """Route one parsed event; see the module docstring."""
    if s.stats.trace is not None:
        s.stats.trace.append(("<-", describe(event)))
    if type(event) in _PAYLOAD:
        s.linkwork.data(event)  # type: ignore[arg-type]
        return
    s.kick()  # anything else may let a command go
    inflight = s.inflight
    match event:
        case DataWaiting(link=number):
            s.linkwork.data_waiting(number)
        case Connect() | ConnectFail() if inflight is not None and inflight.until_connect:
            if isinstance(event, Connect):
                s.datamode.connected()
            s.finish_inflight(event)
        case Connect() if s.datamode.client_connecting:
            s.datamode.connected()  # a transparent server's client (3.4.1): data mode
        case TransparentClosed():
            s.datamode.closed()
        case Ok() | Error() | CmeError():
            if inflight is None:
                logger.warning("final result %r with no command in flight: dropped", event)
            elif s.resync.active and inflight.probe:
                s.resync.final(event)
            else:
                s.finish_inflight(event)
        case Prompt():
            prompt(s)
        case IpError(info=info):
            if inflight is not None:
                inflight.response.ip_error = info
            else:
                logger.warning("+IP ERROR: %s with no command in flight", info)
        case Line():
            _line(s, event)
        case Echo(text=text):
            logger.debug("echo: %s", text)
        case LinkClosed(link=number, reason=reason):
            s.linkwork.peer_closed(number, reason)
        case ClientAccepted():
            client_accepted(s, event)
        case NetworkClosed():
            s.recovery.network_lost()
        case ModuleReady():
            s.recovery.restarted()
        case Notice(text=text):  # a start-up line: never a command's answer
            s.stats.unsolicited += 1
            logger.info("unsolicited: %s", text)
            s.emit(Unsolicited(Line(text)))
        case _:
            s.stats.unsolicited += 1
            logger.info("unhandled event: %r", event)


def _line(s: Session, line: Line) -> None:
    inflight = s.inflight
    name = line.name
    if name == "+CIPERROR" and inflight is not None:
        fields = line.fields
        if fields and type(fields[0]) is int:
            inflight.response.cip_error = fields[0]
            return
    # Late results first: a query that looks like one is never in flight while
    # one is awaited (runner.Runner._held_back), and +CIPOPEN? lines differ in shape.
    if s.late.resolve(line):
        if (
            inflight is not None
            and inflight is s.inflight
            and inflight.late is not None
            and inflight.late.values is not None
            and inflight.late_after_ok
        ):
            # Its late result comes only after its OK (3.1, 3.3, 3.4): the OK was lost.
            logger.warning(
                "%s: its final result was lost; its late result came", inflight.command.line
            )
            s.finish_inflight(Ok())
        return
    if inflight is not None and inflight.claims(line):
        inflight.response.lines.append(line.text)
        return
    if name == "+CIPCLOSE":
        # NETCLOSE reports each link it closes (3.2) with nobody waiting.
        fields = line.fields
        if len(fields) == 2 and type(fields[0]) is int:
            s.linkwork.peer_closed(fields[0], 0)
            return
    s.stats.unsolicited += 1
    logger.info("unsolicited: %s", line.text)
    s.emit(Unsolicited(line))
