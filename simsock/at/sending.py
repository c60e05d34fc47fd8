"""Sending on links (reference 3.4): ``AT+CIPSEND``, its ``>`` prompt, its confirmation.

At most 1500 bytes (or one datagram) per command; the payload is written
when ``>`` comes; ``+CIPSEND: <link>,<req>,<cnf>`` confirms it, within
AT+CIPTIMEOUT. A confirmation below the request means the socket is broken
(3.4): the link fails with ``ConnectionResetError``. A ``>`` that does not
come in time is answered with a filler of the payload's length (ESC first,
then NULs), so a module that reads the payload and one that cancels on ESC
both return to command mode; the link fails with ``TimeoutError`` and a
proven resynchronisation follows.
"""

from __future__ import annotations

import errno
import logging
import math
from typing import TYPE_CHECKING

from . import commands as at
from .errors import IPCLOSE_REASONS, module_error, timeout_error
from .late import LateWaiter
from .link import Link
from .note import ESC, MAX_SEND_BYTES
from .outcomes import LinkSent
from .requests import InFlight
from .response import Response

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Dropped", "broken_pipe", "drop_confirmations", "prompt", "prompt_overdue", "send"]

logger = logging.getLogger("simsock.at.links")

#: Filler for a fixed-length CIPSEND whose ``>`` never came: ESC first (a
#: module that cancels on it is back in command mode), then NULs (a module
#: that takes ESC as payload, 3.4, gets its length and is back too).
_FILLER_FIRST = bytes([ESC])


class Dropped(Exception):
    """A waiter dropped on purpose (its link is being closed): nothing to report."""


def send(s: Session, link: Link) -> None:
    """``AT+CIPSEND`` of the link's next chunk (at most 1500 bytes, or one datagram).

    Its ``+CIPSEND:`` confirmation is awaited with a bound; the payload goes
    out when ``>`` comes (:func:`prompt`).
    """
    ctrl_z = s.config.send_ctrl_z
    if link.udp:
        chunk, (ip, port) = link.datagrams.popleft()
        command = at.cipsend(link.number, None if ctrl_z else len(chunk), ip, port)
    else:
        size = min(len(link.tx), MAX_SEND_BYTES)
        chunk = bytes(link.tx[:size])
        del link.tx[:size]
        command = at.cipsend(link.number, None if ctrl_z else size)
    size = len(chunk)
    link.unconfirmed.append(size)

    def confirmed(values: list[int]) -> None:
        _confirmed(s, link, values)

    def lost(exc: BaseException) -> None:
        if isinstance(exc, Dropped) or s.links.get(link.number) is not link:
            return
        if isinstance(exc, TimeoutError):
            exc = timeout_error(f"link {link.number}: the module never confirmed a send")
        s.linkwork.fail(link, exc)

    waiter = s.late.add(LateWaiter("+CIPSEND", link.number, confirmed, lost))

    def done(response: Response) -> None:
        if response.ok:
            if waiter.values is None:
                waiter.arm(s.now + s.timeout_for(command))
            return
        s.late.discard(waiter)
        error = response.error("CIPSEND")
        if not link.udp and not response.prompt_missing:
            # The module refuses to send on a TCP link that is gone (the peer
            # reset it meanwhile, "+CIPERROR: 4"): to a socket, a reset.
            error = module_error(
                errno.ECONNRESET,
                f"CIPSEND refused, the connection is gone: {error}",
                getattr(error, "module_code", None),
                getattr(error, "module_text", None),
            )
        s.linkwork.fail(link, error)

    def failed(exc: BaseException) -> None:
        s.late.discard(waiter)
        if s.links.get(link.number) is link:
            # Whether the module took the bytes is unknown: the stream is broken.
            s.linkwork.fail(link, exc)

    s.stats.payload_sent += size
    s.issue(
        InFlight(
            command,
            Response(command),
            done,
            failed,
            deadline=s.now + s.timeout_for(command),
            payload=at.escape_variable_payload(chunk) if ctrl_z else chunk,
            prompt_deadline=s.now + s.config.prompt_timeout_s,
            late=waiter,
            late_after_ok=True,
        )
    )


def prompt(s: Session) -> None:
    """``>``: the command in flight may have its payload now."""
    inflight = s.inflight
    if inflight is None or inflight.payload is None:
        logger.warning("unexpected '>' prompt")
        return
    payload, inflight.payload = inflight.payload, None
    inflight.prompt_deadline = math.inf
    s.write(payload)


def prompt_overdue(s: Session, inflight: InFlight) -> None:
    """No ``>`` in time: fill the payload so the module returns to command mode, then resync."""
    length = len(inflight.payload or b"")
    inflight.payload = None
    inflight.prompt_deadline = math.inf
    inflight.response.prompt_missing = True
    logger.warning("no '>' after %s: filling it and resynchronising", inflight.command.line)
    # The CR ends a junk line (NULs) for a module that cancelled on ESC, so
    # the first probe is a line of its own; a module that read the payload
    # takes it as an empty line.
    s.write(_FILLER_FIRST + bytes(max(length - 1, 0)) + b"\r")
    s.inflight = None
    exc = module_error(
        errno.ETIMEDOUT,
        f"{inflight.command.line}: no '>' prompt within {s.config.prompt_timeout_s} s",
        None,
        None,
    )
    inflight.on_fail(exc)


def _confirmed(s: Session, link: Link, values: list[int]) -> None:
    if s.links.get(link.number) is not link or not link.unconfirmed:
        return  # the link failed or is over: a late confirmation changes nothing
    _, requested, confirmed = values
    size = link.unconfirmed.popleft()
    if confirmed != requested:
        # 0: the module's or the peer's buffer is full; -1: broken (3.4).
        # Either way the reference says the socket cannot be used any more.
        reason = "send buffer full" if confirmed == 0 else "connection broken"
        s.linkwork.fail(
            link,
            module_error(
                errno.ECONNRESET,
                f"CIPSEND: {reason} (+CIPSEND: {link.number},{requested},{confirmed})",
                confirmed,
                reason,
            ),
        )
        return
    if not link.failed:
        s.emit(LinkSent(link.number, link.serial, size))


def drop_confirmations(s: Session, link: Link) -> None:
    """Forget the link's awaited ``+CIPSEND:`` results (it is closing or gone)."""
    s.late.fail_where(lambda w: not (w.name == "+CIPSEND" and w.key == link.number), Dropped())
    link.unconfirmed.clear()


def broken_pipe(link: Link) -> OSError:
    """Bytes written on a link the module freed (``+IPCLOSE``) can never leave."""
    reason = IPCLOSE_REASONS.get(link.remote_reason or 0, "closed")
    return module_error(
        errno.EPIPE,
        f"link {link.number} was {reason} (+IPCLOSE): written data cannot be sent",
        link.remote_reason,
        reason,
    )
