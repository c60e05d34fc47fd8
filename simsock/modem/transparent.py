"""Transparent mode (reference 2, 3.3, 3.10): link 0 as a raw pipe, ``+++`` and ``ATO``.

A mixin of :class:`~simsock.modem.engine.Engine`. In data mode every byte on
the line is the transparent link's: the scheduler writes the link's queue
raw, and anything that needs command mode (a user command, another link, a
poll, closing) first escapes with ``+++`` between guard times, then returns
with ``ATO`` when nothing else waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..at import commands as at
from ..at.commands import Command
from ..at.events import Event
from ..at.parser import Parser
from .exchange import Response
from .links import Link, LinkState
from .stats import Stats

if TYPE_CHECKING:
    from .engine import Job

__all__ = ["ESCAPE_GUARD_S", "ESCAPE_SEQUENCE", "TransparentMode"]

logger = logging.getLogger("simsock.modem")

#: Silence before and after ``+++`` that the module needs to see an escape (2).
ESCAPE_GUARD_S = 1.0
#: The pause before ``+++`` is the guard time times this, and tries before giving up.
ESCAPE_MARGIN = 1.5
ESCAPE_ATTEMPTS = 3
#: How long bytes that could begin ``CLOSED`` are held back in data mode.
RAW_HOLD_S = 0.02
#: Largest raw write in data mode (no AT framing limits it).
RAW_WRITE_BYTES = 4096
#: The pseudo-command line of the escape; written without a CR.
ESCAPE_SEQUENCE = "+++"


class TransparentMode:
    """Data-mode operations of the engine's scheduler (a mixin of Engine)."""

    # Provided by Engine:
    links: dict[int, Link]
    transparent_link: Link | None
    data_mode: bool
    escape_guard_s: float
    stats: Stats
    _parser: Parser
    _writer: asyncio.StreamWriter
    _wakeup: asyncio.Event
    _raw_flush: asyncio.TimerHandle | None
    _line_free_at: float
    _poll_due: bool
    _control: deque[Job]
    _dispatch: Callable[[Event], None]
    _write: Callable[[bytes], None]

    if TYPE_CHECKING:

        async def _exchange(
            self, command: Command, payload: bytes | None = None, *, until_connect: bool = False
        ) -> Response: ...

    def _arm_raw_flush(self) -> None:
        """Bytes that could begin ``CLOSED`` wait a moment, then go to the link as data."""
        if self._raw_flush is not None:
            self._raw_flush.cancel()

        def flush() -> None:
            self._raw_flush = None
            held = self._parser.flush_raw()
            if held is not None:
                self._dispatch(held)

        self._raw_flush = asyncio.get_running_loop().call_later(RAW_HOLD_S, flush)

    def _transparent_closed(self) -> None:
        """``CLOSED`` (4.2): the transparent link is gone and the module is in command mode."""
        self.data_mode = False
        link = self.transparent_link
        if link is None:
            return
        if link.state is LinkState.CLOSING:
            return  # our AT+CIPCLOSE; its +CIPCLOSE: result finishes the link
        link.remote_closed = True
        link.deliver_eof()
        self._wakeup.set()

    def _others_waiting(self) -> bool:
        """Work that needs command mode: control jobs, other links, closing the raw one."""
        if self._poll_due or any(not job.skip and not job.future.done() for job in self._control):
            return True  # (in data mode the module holds its URCs: polls find link 1's data)
        raw = self.transparent_link
        if raw is not None and raw.close_requested:
            return True
        return any(
            link is not raw and (link.wants_close() or link.wants_send() or link.wants_read())
            for link in self.links.values()
        )

    def _transparent_op(self) -> Coroutine[Any, Any, None] | None:
        """In transparent mode: raw writes in data mode, and the switches between modes."""
        raw = self.transparent_link
        if self.data_mode:
            if self._others_waiting():
                return self._escape()
            if raw is not None and raw.tx and raw.state is LinkState.OPEN:
                return self._raw_send(raw)
            return None
        if (
            raw is not None
            and raw.state is LinkState.OPEN
            and not raw.remote_closed
            and not raw.close_requested
            and not self._others_waiting()
        ):
            return self._resume_data_mode()
        return None

    async def _escape(self) -> None:
        """``+++`` with its guard times (2): to command mode, the raw link kept open.

        The silence before it is counted from when the line will have carried
        our last byte (at the port's baud rate), plus a margin, as the module
        counts from when it *read* our last byte. An escape the
        module missed reached the peer as data (the limit of transparent mode);
        it is tried again before the module is called unresponsive.
        """
        loop = asyncio.get_running_loop()
        guard = self.escape_guard_s
        for attempt in range(ESCAPE_ATTEMPTS):
            silence = self._line_free_at + guard * ESCAPE_MARGIN + 0.05 - loop.time()
            if silence > 0:
                await asyncio.sleep(silence)
            self._parser.expect_escape_ok()
            try:
                # The OK queues behind whatever the peer sent that the line has
                # not carried yet, so allow the usual 9 s on top of the guards.
                limit = 2 * guard + at.DEFAULT_TIMEOUT_S
                response = await self._exchange(Command(ESCAPE_SEQUENCE, limit))
            except TimeoutError:
                logger.warning("no OK after +++ (attempt %d)", attempt + 1)
                continue
            if response.ok:
                self.data_mode = False
                return
        raise TimeoutError(f"the module did not leave data mode after {ESCAPE_ATTEMPTS} escapes")

    async def _resume_data_mode(self) -> None:
        """``ATO`` (2): back to data mode; the link's held data flows again."""
        response = await self._exchange(Command("ATO", at.DEFAULT_TIMEOUT_S), until_connect=True)
        if not response.ok:
            logger.warning("ATO failed: %s", response.error("ATO"))

    async def _raw_send(self, link: Link) -> None:
        chunk = bytes(link.tx[:RAW_WRITE_BYTES])
        self._write(chunk)
        self.stats.payload_sent += len(chunk)
        del link.tx[: len(chunk)]
        await self._writer.drain()
        if link.owner is not None:
            link.owner.link_sent()
