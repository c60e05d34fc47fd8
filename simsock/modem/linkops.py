"""The scheduler's work for each link: reads, sends, closes, polls (reference 3.4-3.6).

A mixin of :class:`~simsock.modem.engine.Engine`: these methods run in the
scheduler task, one command at a time, and keep each :class:`Link`'s wire
state. Reads follow ``+CIPRXGET: 1`` (and ``AT+CIPRXGET=4`` polls, since
modules forget that notice); sends are ``AT+CIPSEND`` of at most 1500 bytes
within a window of unconfirmed bytes; a close is ``AT+CIPCLOSE`` once the
queue is flushed.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..at import commands as at
from ..at.commands import Command
from ..at.errors import module_error
from .exchange import LateResults, Response
from .links import Link, LinkState

__all__ = ["LinkOperations"]

logger = logging.getLogger("simsock.modem")


@functools.cache
def _read_command(link: int) -> Command:
    """``AT+CIPRXGET=2,<link>,1500``, built once per link: it is sent for every read."""
    return at.ciprxget_read(link, at.MAX_READ_BYTES)


class LinkOperations:
    """Per-link operations of the engine's scheduler (a mixin of Engine)."""

    # Provided by Engine:
    links: dict[int, Link]
    push_mode: bool
    transparent_link: Link | None
    _late: LateResults
    _wakeup: asyncio.Event
    _prefer_send: dict[int, bool]

    if TYPE_CHECKING:

        async def _exchange(
            self, command: Command, payload: bytes | None = None, *, until_connect: bool = False
        ) -> Response: ...

        def timeout_for(self, command: Command) -> float: ...

    def _pollable(self) -> list[Link]:
        if self.push_mode:
            return []
        return [
            link
            for link in self.links.values()
            if link.state is LinkState.OPEN
            and link.reading
            and not link.readable
            and not link.remote_closed
            and not link.udp
            and link is not self.transparent_link
        ]

    async def _poll(self) -> None:
        """``AT+CIPRXGET=4`` for each quiet link: data the module forgot to announce is read."""
        for link in self._pollable():
            response = await self._exchange(at.ciprxget_pending(link.number))
            values = response.info("+CIPRXGET")
            if response.ok and values and len(values[0]) == 3 and values[0][2] != 0:
                logger.info("link %d: %s bytes waited unannounced", link.number, values[0][2])
                link.readable = True

    def _link_op(self, number: int) -> Coroutine[Any, Any, None] | None:
        link = self.links.get(number)
        if link is None:
            return None
        if link.wants_close():
            return self._close_op(link)
        if link is self.transparent_link:
            return None  # its data moves only in data mode
        can_read = not self.push_mode and link.wants_read()
        can_send = link.wants_send()
        if can_read and can_send:
            # alternate directions so a busy upload does not starve the download
            send = self._prefer_send[number] = not self._prefer_send.get(number, False)
            return self._send_op(link) if send else self._read_op(link)
        if can_read:
            return self._read_op(link)
        if can_send:
            return self._send_op(link)
        return None

    async def _read_op(self, link: Link) -> None:
        response = await self._exchange(_read_command(link.number))
        if response.ok:
            if link.remote_closed and not link.readable:
                link.deliver_eof()
            return
        # "+IP ERROR: No data" (3.5): nothing waits; after +IPCLOSE that means EOF.
        link.readable = False
        if link.remote_closed:
            link.deliver_eof()
        elif response.ip_error is None or response.error().errno != errno.EAGAIN:
            logger.warning("link %d: read failed: %s", link.number, response.error())

    async def _send_op(self, link: Link) -> None:
        if link.udp:
            chunk, (ip, port) = link.datagrams[0]
            size = len(chunk)
            command = at.cipsend(link.number, size, ip, port)
        else:
            size = min(len(link.tx), at.MAX_SEND_BYTES)
            chunk = bytes(link.tx[:size])
            command = at.cipsend(link.number, size)
        confirm = self._late.expect("+CIPSEND", link.number)
        try:
            response = await self._exchange(command, chunk)
        except TimeoutError as exc:
            # Whether the module took the bytes is unknown: the stream is broken.
            self._late.discard("+CIPSEND", link.number, confirm)
            self._fail_link(link, exc)
            raise
        if not response.ok:
            self._late.discard("+CIPSEND", link.number, confirm)
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
            self._fail_link(link, error)
            return
        if link.udp:
            link.datagrams.popleft()
        else:
            del link.tx[:size]
        link.unconfirmed += size
        # "+CIPSEND: <link>,<n>,<n>" must come within AT+CIPTIMEOUT (3.12).
        late = asyncio.get_running_loop().call_later(
            self.timeout_for(command), self._confirm_overdue, link, confirm
        )

        def confirmed(fut: asyncio.Future[list[int]]) -> None:
            late.cancel()
            self._send_confirmed(link, size, fut)

        confirm.add_done_callback(confirmed)

    def _confirm_overdue(self, link: Link, confirm: asyncio.Future[list[int]]) -> None:
        if confirm.done():
            return
        self._late.discard("+CIPSEND", link.number, confirm)
        confirm.cancel()
        self._fail_link(
            link, TimeoutError(f"link {link.number}: the module never confirmed a send")
        )

    def _send_confirmed(self, link: Link, size: int, fut: asyncio.Future[list[int]]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        if link.owner is None or link.state is not LinkState.OPEN:
            return  # the link failed or is closing: this late confirmation changes nothing
        _, requested, confirmed = fut.result()
        link.unconfirmed = max(0, link.unconfirmed - size)
        if confirmed != requested:
            # 0: the module's or the peer's buffer is full; -1: broken (3.4).
            # Either way the reference says the socket cannot be used any more.
            reason = "send buffer full" if confirmed == 0 else "connection broken"
            exc = module_error(
                errno.ECONNRESET,
                f"CIPSEND: {reason} (+CIPSEND: {link.number},{requested},{confirmed})",
                confirmed,
                reason,
            )
            self._fail_link(link, exc)
            return
        if link.owner is not None:
            link.owner.link_sent()
        self._wakeup.set()

    async def _close_op(self, link: Link) -> None:
        link.state = LinkState.CLOSING
        done = self._late.expect("+CIPCLOSE", link.number)
        response = await self._exchange(at.cipclose(link.number))
        if not response.ok:
            # Already closed in the module (the peer raced us): the link is over.
            self._late.discard("+CIPCLOSE", link.number, done)
            self.release(link, None)
            return
        done.add_done_callback(lambda fut: self.release(link, None))

    def link_opened(self, link: Link) -> None:
        """The module reported the link open: from now on the scheduler serves it.

        A ``+CIPRXGET: 1`` can arrive before the open completes on our side, so
        the scheduler must look again now rather than wait for another URC.
        """
        link.state = LinkState.OPEN
        self._wakeup.set()

    def request_close(self, link: Link, *, abort: bool = False) -> None:
        """The owner closed its transport: flush (unless ``abort``), then AT+CIPCLOSE."""
        if abort:
            link.tx.clear()
            link.datagrams.clear()
        if link.remote_closed or link.state is not LinkState.OPEN:
            # The module already closed it (+IPCLOSE): nothing to send.
            if link.state is not LinkState.CLOSING:
                self.release(link, None)
            return
        link.close_requested = True
        self._wakeup.set()

    def _fail_link(self, link: Link, exc: BaseException) -> None:
        """A link broke: report it and close it in the module."""
        logger.warning("link %d failed: %s", link.number, exc)
        owner = link.owner
        link.owner = None
        if owner is not None:
            owner.link_lost(exc)
        link.tx.clear()
        link.datagrams.clear()
        link.unconfirmed = 0  # confirmations still due no longer matter; close now
        if link.state is LinkState.OPEN and not link.remote_closed:
            link.close_requested = True
            self._wakeup.set()
        else:
            self.release(link, None)

    def release(self, link: Link, exc: BaseException | None) -> None:
        """The link is over in the module: finish it and free its number."""
        if link is self.transparent_link:
            self.transparent_link = None
        link.finish(exc)
        if self.links.get(link.number) is link:
            del self.links[link.number]
        self._wakeup.set()
