"""Each link's work: opening, reads, sends, closes and polls (reference 3.3-3.6, 4).

The session gives every link a turn in round-robin with control work, one
command at a time. Reads follow ``+CIPRXGET: 1`` (and ``AT+CIPRXGET=4``
polls, since modules forget that notice); sends are ``AT+CIPSEND`` of at
most 1500 bytes within a window of unconfirmed bytes; a close is
``AT+CIPCLOSE`` once the queue is flushed. Every change of a link's state
(:class:`~simsock.at.link.LinkState`) is made here.
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
from .errors import ProtocolError, module_error, timeout_error
from .events import PushedData, RawData, ReceivedData
from .late import LateWaiter
from .link import Link, LinkState
from .outcomes import LinkData, LinkDatagram, LinkEof, LinkLost, LinkSent
from .procedures import Cmd, Procedure, WaitUp
from .requests import InFlight
from .response import Response

if TYPE_CHECKING:
    from .session import Session

__all__ = ["LinkWork", "broken_pipe"]

logger = logging.getLogger("simsock.at.links")

#: Filler for a fixed-length CIPSEND whose ``>`` never came: ESC first (a
#: module that cancels on it is back in command mode), then NULs (a module
#: that takes ESC as payload, 3.4, gets its length and is back too).
_FILLER_FIRST = bytes([at.ESC])
#: ``AT+CIPCLOSE`` tries on a link before its number is freed without an answer.
CLOSE_ATTEMPTS = 3


@functools.cache
def _read_command(link: int) -> Command:
    """``AT+CIPRXGET=2,<link>,1500``, built once per link: it is sent for every read."""
    return at.ciprxget_read(link, at.MAX_READ_BYTES)


class LinkWork:
    """The links' share of the session's work; see the module docstring."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._rr = 0  # round-robin position: 0 is control work, 1.. the links
        self._prefer_send: dict[int, bool] = {}
        self._poll_at = math.inf
        self._poll_queue: list[int] = []  # quiet links still to poll in this round

    # -- opening ---------------------------------------------------------------------

    def free_number(self) -> int:
        """A free link number, or ``OSError(EMFILE)``."""
        first, last = self._s.info.capabilities.links
        for number in range(first, min(last, self._s.max_link) + 1):
            if number not in self._s.links:
                return number
        raise OSError(errno.EMFILE, f"all {last - first + 1} links of the module are in use")

    def open_link(
        self,
        host: str | None,
        port: int,
        local_port: int | None,
        *,
        paused: bool = False,
        udp_remote: tuple[str, int] | None = None,
    ) -> Procedure:
        """The procedure of one open: wait for the network, pick a number, ``AT+CIPOPEN``."""
        s = self._s
        datamode = s.datamode
        udp = host is None
        yield WaitUp(s.timeout_for(at.cipopen_udp(0, 0)))
        for _ in range(2):
            transparent = not udp and datamode.wants_link()
            number = 0 if transparent else self.free_number()
            if transparent and number in s.links:
                raise OSError(errno.EMFILE, "link 0 is in use (transparent mode)")
            self._check_routable(udp, host, port)
            if udp:
                link = Link(number, udp_remote or ("0.0.0.0", 0), udp=True)
                command = at.cipopen_udp(number, local_port or 0)
            else:
                assert host is not None
                link = Link(number, (host, port))
                command = at.cipopen_tcp(number, host, port, local_port)
            link.reading = not paused
            s.links[number] = link
            if transparent:
                datamode.opening(link)
            try:
                response: Response = yield Cmd(
                    command,
                    late=None if transparent else ("+CIPOPEN", number),
                    until_connect=transparent,
                    late_after_ok=not udp and not transparent,
                )
            except TimeoutError:
                # No answer in time: whether the module opened it is unknown.
                # Close it there before the number is used again.
                self._reclaim(link)
                raise
            except BaseException:
                self.release(link, None)
                raise
            if s.links.get(number) is not link:
                # A +CLIENT took the number meanwhile: try the other one.
                logger.info("link %d was given to a client while opening: retrying", number)
                continue
            if response.ok and (transparent or (response.late or [0, 0])[1] == 0):
                link.state = LinkState.OPEN
                return link
            self.release(link, None)
            raise response.error("CIPOPEN")
        raise OSError(errno.EMFILE, "every link was taken by clients while opening")

    def _check_routable(self, udp: bool, host: str | None, port: int) -> None:
        """Pushed data without the link's number is routed by its sender (4.1): a second
        link that the same sender could feed would get, or lose, the other's data."""
        s = self._s
        if not s.push_mode or s.info.link_headers:
            return
        for other in s.links.values():
            if other.state is LinkState.OPEN and (udp or other.udp or other.peer == (host, port)):
                raise OSError(
                    errno.EADDRINUSE,
                    f"link {other.number} already receives from that sender, and this module"
                    " does not name the link of pushed data (CIPCCFG HeaderType 1 refused)",
                )

    def abandon(self, link: Link) -> None:
        """An open whose caller gave up: close the link it made."""
        if self._s.links.get(link.number) is link:
            link.lost_reported = True
            self.request_close(link, abort=True)

    def _reclaim(self, link: Link) -> None:
        """``AT+CIPCLOSE`` a link whose open had no clear answer, then free its number."""
        link.lost_reported = True
        link.state = LinkState.OPEN
        self.request_close(link, abort=True)

    def take_number_for_client(self, number: int) -> None:
        """A ``+CLIENT`` names ``number``: the module freed it, so any old life of it ends."""
        s = self._s
        old = s.links.get(number)
        if old is not None:
            if old.state is LinkState.OPENING:
                del s.links[number]  # our open on it will fail; it retries elsewhere
            elif old.state is LinkState.PEER_CLOSED:
                self._deliver_eof(old)
                self.release(old, None)
            else:
                s.stats.protocol_errors += 1
                logger.warning("+CLIENT on link %d, which is %s: it is gone", number, old.state)
                self.release(
                    old,
                    module_error(errno.ECONNRESET, "the module reused the link", None, None),
                )

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
            self._send(link)
        return can_read or can_send

    # -- reads and data ------------------------------------------------------------------

    def _read(self, link: Link) -> None:
        s = self._s

        def done(response: Response) -> None:
            if response.ok:
                if link.state is LinkState.PEER_CLOSED and not link.readable:
                    self._deliver_eof(link)
                return
            # "+IP ERROR: No data" (3.5): nothing waits; after +IPCLOSE that means EOF.
            link.readable = False
            if link.state is LinkState.PEER_CLOSED:
                self._deliver_eof(link)
            elif response.ip_error is None or response.error().errno != errno.EAGAIN:
                logger.warning("link %d: read failed: %s", link.number, response.error())

        command = _read_command(link.number)
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
            link.readable = event.rest > 0
        if link.close_requested or link.failed or link.eof_delivered:
            return  # asyncio delivers nothing after close()
        if link.udp:
            address = event.address if isinstance(event, PushedData) else None
            s.emit(LinkDatagram(link.number, link.serial, event.data, address or link.peer))
        elif event.data:
            s.emit(LinkData(link.number, link.serial, event.data))

    def _route_push(self, event: PushedData) -> Link | None:
        """Pushed data's link: named by ``+RECEIVE``, else found by its sender (4.1)."""
        s = self._s
        alive = [x for x in s.links.values() if x.state is LinkState.OPEN]
        if event.link is not None:
            link = s.links.get(event.link)
        else:
            matching = [
                x for x in alive if event.address is None or x.udp or x.peer == event.address
            ]
            link = matching[0] if len(matching) == 1 else None
            if link is None and len(alive) > 1:
                raise ProtocolError(
                    f"pushed data from {event.address} matches {len(matching)} links: dropped"
                    " (use CIPCCFG HeaderType 1 so the module names the link)"
                )
        if link is None or link.state not in (LinkState.OPEN, LinkState.PEER_CLOSED):
            logger.warning("pushed data for a link that is not open: dropped")
            return None
        return link

    def data_waiting(self, number: int) -> None:
        """``+CIPRXGET: 1,<link>``: a read is due."""
        link = self._s.links.get(number)
        if link is not None and not link.readable:
            link.readable = True

    def _deliver_eof(self, link: Link) -> None:
        """End of stream once; then the link is over (the module has no half-close)."""
        if link.eof_delivered:
            return
        link.eof_delivered = True
        link.readable = False
        s = self._s
        if not link.close_requested and not link.failed and not link.udp:
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
        unsent = bool(link.queued or link.unconfirmed) and not link.close_requested
        self._drop_confirmations(link)
        link.tx.clear()
        link.datagrams.clear()
        if unsent:
            # Written bytes can no longer leave: a broken pipe, as a socket says.
            self.fail(link, broken_pipe(link))
            return
        if s.push_mode or link.udp or link.transparent or link.close_requested or link.failed:
            self._deliver_eof(link)  # everything was pushed (or came raw) already
        # Buffer mode: data that came before the close stays readable (4.2);
        # it is read out, then end of stream.

    # -- sends -----------------------------------------------------------------------

    def _send(self, link: Link) -> None:
        s = self._s
        if link.udp:
            chunk, (ip, port) = link.datagrams.popleft()
            command = at.cipsend(link.number, len(chunk), ip, port)
        else:
            size = min(len(link.tx), at.MAX_SEND_BYTES)
            chunk = bytes(link.tx[:size])
            del link.tx[:size]
            command = at.cipsend(link.number, size)
        size = len(chunk)
        link.unconfirmed.append(size)

        def confirmed(values: list[int]) -> None:
            self._confirmed(link, waiter, values)

        def lost(exc: BaseException) -> None:
            if isinstance(exc, _Dropped) or self._s.links.get(link.number) is not link:
                return
            if isinstance(exc, TimeoutError):
                exc = timeout_error(f"link {link.number}: the module never confirmed a send")
            self.fail(link, exc)

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
            self.fail(link, error)

        def failed(exc: BaseException) -> None:
            s.late.discard(waiter)
            if s.links.get(link.number) is link:
                # Whether the module took the bytes is unknown: the stream is broken.
                self.fail(link, exc)

        s.stats.payload_sent += size
        s.issue(
            InFlight(
                command,
                Response(command),
                done,
                failed,
                deadline=s.now + s.timeout_for(command),
                payload=chunk,
                prompt_deadline=s.now + s.config.prompt_timeout_s,
                late=waiter,
                late_after_ok=True,
            )
        )

    def prompt(self) -> None:
        """``>``: the command in flight may have its payload now."""
        inflight = self._s.inflight
        if inflight is None or inflight.payload is None:
            logger.warning("unexpected '>' prompt")
            return
        payload, inflight.payload = inflight.payload, None
        inflight.prompt_deadline = math.inf
        self._s.write(payload)

    def prompt_overdue(self, inflight: InFlight) -> None:
        """No ``>`` in time: fill the payload so the module returns to command mode, then resync."""
        s = self._s
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

    def _confirmed(self, link: Link, waiter: LateWaiter, values: list[int]) -> None:
        s = self._s
        if s.links.get(link.number) is not link or not link.unconfirmed:
            return  # the link failed or is over: a late confirmation changes nothing
        _, requested, confirmed = values
        size = link.unconfirmed.popleft()
        if confirmed != requested:
            # 0: the module's or the peer's buffer is full; -1: broken (3.4).
            # Either way the reference says the socket cannot be used any more.
            reason = "send buffer full" if confirmed == 0 else "connection broken"
            self.fail(
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

    def _drop_confirmations(self, link: Link) -> None:
        self._s.late.fail_where(
            lambda w: not (w.name == "+CIPSEND" and w.key == link.number), _Dropped()
        )
        link.unconfirmed.clear()

    # -- closing and failing -------------------------------------------------------------

    def request_close(self, link: Link, *, abort: bool = False) -> None:
        """The owner closed its transport: flush (unless ``abort``), then AT+CIPCLOSE."""
        if abort:
            link.tx.clear()
            link.datagrams.clear()
            self._drop_confirmations(link)
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
            if not isinstance(exc, _Dropped):
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
        self._drop_confirmations(link)
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
        if self._poll_at == math.inf and any(
            link.pollable(s.push_mode) for link in s.links.values()
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


def broken_pipe(link: Link) -> OSError:
    """Bytes written on a link the module freed (``+IPCLOSE``) can never leave."""
    reason = {0: "closed by the module", 1: "closed by the peer", 2: "send timeout"}.get(
        link.remote_reason or 0, "closed"
    )
    return module_error(
        errno.EPIPE,
        f"link {link.number} was {reason} (+IPCLOSE): written data cannot be sent",
        link.remote_reason,
        reason,
    )


def _ignore(_: BaseException) -> None:
    """A failed read or poll changes nothing: the session resynchronises, the link stays."""


class _Dropped(Exception):
    """A waiter dropped on purpose (its link is being closed): nothing to report."""
