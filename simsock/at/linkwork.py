"""Each link's turns: reads, data, end of stream, closes, failures and polls (3.5-3.6, 4).

The session gives every link a turn in round-robin with control work, one
command at a time, alternating a link's reads and sends. Reads follow
``+CIPRXGET: 1`` (and ``AT+CIPRXGET=4`` polls, since modules forget that
notice); sends are :mod:`.sending`'s; a close is ``AT+CIPCLOSE`` once the
queue is flushed. Opening is :mod:`.opening`'s. The changes of a link's
state after it opened (:class:`~simsock.at.link.LinkState`) are made here.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import commands as at
from .commands import Command
from .errors import (
    IPCLOSE_SEND_TIMEOUT,
    ProtocolError,
    closed_by_module_error,
    module_error,
)
from .events import PushedData, RawData, ReceivedData
from .late import LateWaiter
from .link import Link, LinkState
from .note import MAX_HEX_READ_BYTES, MAX_READ_BYTES
from .outcomes import LinkData, LinkDatagram, LinkEof, LinkLost
from .requests import InFlight
from .response import Response
from .sending import Dropped, broken_pipe, drop_confirmations, send

if TYPE_CHECKING:
    from .session import Session

__all__ = ["LinkWork"]

logger = logging.getLogger("simsock.at.links")

#: ``AT+CIPCLOSE`` tries on a link before its number is freed without an answer.
CLOSE_ATTEMPTS = 3


@functools.cache
def _read_command(link: int, hex_: bool = False) -> Command:
    """``AT+CIPRXGET=2,<link>,1500`` (or ``=3,<link>,750``), built once per link and form."""
    if hex_:
        return at.ciprxget_read(link, MAX_HEX_READ_BYTES, hex=True)
    return at.ciprxget_read(link, MAX_READ_BYTES)


class LinkWork:
    """The links' share of the session's work; see the module docstring."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._rr = 0  # round-robin position: 0 is control work, 1.. the links
        self._prefer_send: dict[int, bool] = {}
        self._poll_at = math.inf
        self._poll_queue: list[int] = []  # quiet links still to poll in this round

    # -- turns -----------------------------------------------------------------------

    def next_op(self, control: Callable[[], bool]) -> bool:
        """One operation, round-robin over [control, link 0, link 1, ...]; ``False``: none."""
        s = self._s
        if self._poll_at <= s.now:
            self._poll_at = math.inf
            if self._poll():
                return True
        sources = 1 + s.max_link + 1
        for step in range(sources):
            index = (self._rr + step) % sources
            started = control() if index == 0 else self._link_op(index - 1)
            if started:
                self._rr = (index + 1) % sources
                return True
        self._arm_poll()
        return False

    def _link_op(self, number: int) -> bool:
        link = self._s.links.get(number)
        if link is None:
            return False
        if link.wants_close():
            self._close(link)
            return True
        if link.transparent:
            return False  # its data moves only in data mode
        can_read = link.wants_read(self._s.push_mode)
        can_send = link.wants_send()
        if can_read and can_send:
            # alternate directions so a busy upload does not starve the download
            can_read = not self._prefer_send.get(number, False)
            self._prefer_send[number] = can_read
        if can_read:
            self._read(link)
        elif can_send:
            send(self._s, link)
        return can_read or can_send

    # -- reads and data ------------------------------------------------------------------

    def _read(self, link: Link) -> None:
        s = self._s

        def done(response: Response) -> None:
            if response.ok:
                if link.state is LinkState.PEER_CLOSED and not link.readable:
                    self.deliver_eof(link)
                return
            # "+IP ERROR: No data" (3.5): nothing waits; after +IPCLOSE that means EOF.
            link.readable = False
            if link.state is LinkState.PEER_CLOSED:
                self.deliver_eof(link)
            elif response.ip_error is None or response.error().errno != errno.EAGAIN:
                logger.warning("link %d: read failed: %s", link.number, response.error())

        command = _read_command(link.number, s.config.hex_reads)
        s.issue(
            InFlight(
                command,
                Response(command),
                done,
                _ignore,
                deadline=s.now + s.timeout_for(command),
            )
        )

    def data(self, event: ReceivedData | PushedData | RawData) -> None:
        """Payload from the module: to its link's owner, in order."""
        s = self._s
        s.stats.payload_received += len(event.data)
        if isinstance(event, RawData):
            if s.datamode.hold(event.data):
                s.stats.payload_received -= len(event.data)  # counted once it is known
                return
            link = s.datamode.link
            if link is None:
                logger.warning("%d raw bytes with no transparent link: dropped", len(event.data))
                return
        elif isinstance(event, PushedData):
            found = self._route_push(event)
            if found is None:
                return
            link = found
        else:
            got = s.links.get(event.link)
            if got is None or got.state not in (LinkState.OPEN, LinkState.PEER_CLOSED):
                logger.warning("data for link %d, which is not open: dropped", event.link)
                return
            link = got
            # Without rest_len (some firmware), read again until "No data".
            link.readable = bool(event.data) if event.rest is None else event.rest > 0
        if link.close_requested or link.failed or link.eof_delivered:
            return  # asyncio delivers nothing after close()
        if link.udp:
            address = event.address if isinstance(event, PushedData) else None
            if address is not None and link.connected_udp and address != link.peer:
                # A connected socket's kernel drops other senders' datagrams; so do we.
                logger.debug(
                    "link %d: datagram from %s, not its peer: dropped", link.number, address
                )
                return
            s.emit(LinkDatagram(link.number, link.serial, event.data, address or link.peer))
        elif event.data:
            s.emit(LinkData(link.number, link.serial, event.data))

    def _route_push(self, event: PushedData) -> Link | None:
        """Pushed data's link: named by ``+RECEIVE``, else found by its sender (4.1)."""
        s = self._s
        if event.link is not None:
            link = s.links.get(event.link)
        else:
            alive = [x for x in s.links.values() if x.state is LinkState.OPEN]
            matching = [
                x for x in alive if event.address is None or x.udp or x.peer == event.address
            ]
            link = matching[0] if len(matching) == 1 else None
            if link is None and len(alive) > 1:
                # Never a silent hole in a stream: every link it could be for fails.
                exc = ProtocolError(
                    f"pushed data from {event.address} matches {len(matching)} links"
                    " (the module does not name the link: CIPCCFG HeaderType 1)"
                )
                for other in matching or alive:
                    self.fail(
                        other, module_error(errno.ECONNRESET, f"data lost: {exc}", None, None)
                    )
                raise exc
        if link is None or link.state not in (LinkState.OPEN, LinkState.PEER_CLOSED):
            logger.warning("pushed data for a link that is not open: dropped")
            return None
        return link

    def data_waiting(self, number: int | None) -> None:
        """``+CIPRXGET: 1,<link>``: a read is due (on every open link, when unnamed)."""
        if number is None:
            for each in self._s.links.values():
                if each.state in (LinkState.OPEN, LinkState.PEER_CLOSED):
                    each.readable = True
            return
        link = self._s.links.get(number)
        if link is not None and not link.readable:
            link.readable = True

    def deliver_eof(self, link: Link) -> None:
        """End of stream once; then the link is over (the module has no half-close)."""
        if link.eof_delivered:
            return
        link.eof_delivered = True
        link.readable = False
        s = self._s
        quiet = link.close_requested or link.failed
        if link.remote_reason == IPCLOSE_SEND_TIMEOUT and not quiet:
            # Not an end of stream: the connection broke (4.2), after every byte
            # that came before it.
            error = closed_by_module_error(link.number, link.remote_reason)
            if link.state is LinkState.PEER_CLOSED:
                self.release(link, error)
            else:
                self._report_lost(link, error)
            return
        if not quiet and not link.udp:
            s.emit(LinkEof(link.number, link.serial))
        if link.state is LinkState.PEER_CLOSED:
            self.release(link, None)

    def peer_closed(self, number: int, reason: int) -> None:
        """``+IPCLOSE`` (4.2), or a ``+CIPCLOSE:`` of NETCLOSE: the module freed the link."""
        s = self._s
        link = s.links.get(number)
        if link is None or link.state in (LinkState.CLOSING, LinkState.CLOSED):
            logger.debug("+IPCLOSE for link %d, not open (or ours to close)", number)
            return
        if link.state is LinkState.OPENING:
            return  # the open's own result says how it ended
        link.state = LinkState.PEER_CLOSED
        link.remote_reason = reason
        unsent = bool(link.queued or link.unconfirmed)  # close() flushes: not done either
        drop_confirmations(self._s, link)
        link.tx.clear()
        link.datagrams.clear()
        if unsent:
            # Written bytes can no longer leave: a broken pipe, as a socket says.
            self.fail(link, broken_pipe(link))
            return
        if s.push_mode or link.udp or link.transparent or link.close_requested or link.failed:
            self.deliver_eof(link)  # everything was pushed (or came raw) already
        # Buffer mode: data that came before the close stays readable (4.2);
        # it is read out, then end of stream.

    # -- closing and failing -------------------------------------------------------------

    def request_close(self, link: Link, *, abort: bool = False) -> None:
        """The owner closed its transport: flush (unless ``abort``), then AT+CIPCLOSE."""
        if abort:
            link.tx.clear()
            link.datagrams.clear()
            drop_confirmations(self._s, link)
        link.close_requested = True
        if link.state is LinkState.PEER_CLOSED:
            self.release(link, None)  # the module freed it: nothing to send

    def _close(self, link: Link) -> None:
        s = self._s
        link.state = LinkState.CLOSING
        link.close_attempts += 1
        command = at.cipclose(link.number)

        def late(values: list[int]) -> None:
            self.release(link, None)

        def unclear(exc: BaseException) -> None:
            if not isinstance(exc, Dropped):
                self._close_unclear(link, exc)

        waiter = s.late.add(LateWaiter("+CIPCLOSE", link.number, late, unclear))

        def done(response: Response) -> None:
            if response.ok:
                if waiter.values is None:
                    waiter.arm(s.now + s.timeout_for(command))
                return
            # Already closed in the module (the peer raced us): the link is over.
            s.late.discard(waiter)
            self.release(link, None)

        def failed(exc: BaseException) -> None:
            s.late.discard(waiter)
            self._close_unclear(link, exc)

        s.issue(
            InFlight(
                command,
                Response(command),
                done,
                failed,
                deadline=s.now + s.timeout_for(command),
            )
        )

    def _close_unclear(self, link: Link, exc: BaseException) -> None:
        """No answer to ``AT+CIPCLOSE``: the owner hears now; the number is freed once the
        module answers a close again (``ERROR`` if it had closed it), or after a last try."""
        if link.state is not LinkState.CLOSING:
            return
        logger.warning("link %d: closing had no clear answer: %s", link.number, exc)
        self._report_lost(link, None)
        if link.close_attempts >= CLOSE_ATTEMPTS:
            self.release(link, None)
            return
        link.state = LinkState.OPEN  # its close_requested makes the next turn close it again

    def fail(self, link: Link, exc: BaseException) -> None:
        """A link broke: report it now, and close it in the module if it is still there."""
        if link.failed or link.state is LinkState.CLOSED:
            return
        logger.warning("link %d failed: %s", link.number, exc)
        link.failed = True
        self._report_lost(link, exc)
        link.tx.clear()
        link.datagrams.clear()
        drop_confirmations(self._s, link)
        link.close_requested = True
        if link.state is not LinkState.OPEN:
            self.release(link, None)

    def release(self, link: Link, exc: BaseException | None) -> None:
        """The link is over in the module: report it (once) and free its number."""
        s = self._s
        if link.state is LinkState.CLOSED:
            return
        link.state = LinkState.CLOSED
        link.tx.clear()
        link.datagrams.clear()
        s.datamode.released(link)
        if s.links.get(link.number) is link:
            del s.links[link.number]
        self._report_lost(link, exc)

    def _report_lost(self, link: Link, exc: BaseException | None) -> None:
        if not link.lost_reported:
            link.lost_reported = True
            self._s.emit(LinkLost(link.number, link.serial, exc))

    # -- polling ---------------------------------------------------------------------

    def _arm_poll(self) -> None:
        s = self._s
        if (
            self._poll_at == math.inf
            and not s.push_mode
            and any(link.pollable(s.push_mode) for link in s.links.values())
        ):
            self._poll_at = s.now + s.config.poll_interval_s

    def poll_deadline(self) -> float:
        """When quiet links are asked ``AT+CIPRXGET=4`` next."""
        return self._poll_at

    def _poll(self) -> bool:
        """``AT+CIPRXGET=4`` for the quiet links, one a turn: data the module forgot to announce."""
        s = self._s
        if not self._poll_queue:
            self._poll_queue = [n for n, x in s.links.items() if x.pollable(s.push_mode)]
        while self._poll_queue:
            link = s.links.get(self._poll_queue.pop(0))
            if link is not None and link.pollable(s.push_mode):
                break
        else:
            return False
        if self._poll_queue:
            self._poll_at = s.now  # the next quiet link at its next turn
        command = at.ciprxget_pending(link.number)

        def done(response: Response) -> None:
            values = response.info("+CIPRXGET")
            if not response.ok:
                s.reconcile_soon()  # the module may have freed the link unheard
            elif values and len(values[0]) == 3 and values[0][2] != 0:
                logger.info("link %d: %s bytes waited unannounced", link.number, values[0][2])
                link.readable = True

        s.issue(
            InFlight(
                command,
                Response(command),
                done,
                _ignore,
                deadline=s.now + s.timeout_for(command),
            )
        )
        return True


def _ignore(_: BaseException) -> None:
    """A failed read or poll changes nothing: the session resynchronises, the link stays."""
