"""Transparent mode (reference 2, 3.3, 3.10): link 0 as a raw pipe, ``+++`` and ``ATO``.

In data mode every byte on the line is the transparent link's: its queue is
written raw, and anything that needs command mode (a request, another link,
a poll, closing) first escapes with ``+++`` between guard times, then returns
with ``ATO`` when nothing else waits. The guard's silence is counted from
when the line will have carried our last byte, at the port's rate, as the
module counts from when it *read* it.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from .commands import Command
from .errors import ModuleUnresponsiveError
from .link import Link, LinkState
from .note import DEFAULT_TIMEOUT_S, ESCAPE_SEQUENCE
from .outcomes import LinkData, LinkSent
from .parser import TRANSPARENT_CLOSED
from .requests import InFlight
from .response import Response

if TYPE_CHECKING:
    from .session import Session

__all__ = ["PORT_BUFFER_BYTES", "DataMode"]

logger = logging.getLogger("simsock.at.datamode")

#: The pause before ``+++`` is the guard time times this, and tries before giving up.
ESCAPE_MARGIN = 1.5
ESCAPE_ATTEMPTS = 3
#: How long past the guard times an escape that checks a ``CLOSED`` waits for ``OK`` (s).
CONFIRM_WAIT_S = 1.0
#: How long bytes that could begin ``CLOSED`` are held back in data mode.
RAW_HOLD_S = 0.02
#: Largest raw write in data mode. The driver asks for the next one only while
#: its port holds at most :data:`PORT_BUFFER_BYTES` (:meth:`Session.data_to_send`),
#: so a large write waits here, where the guard time before ``+++`` is counted.
RAW_WRITE_BYTES = 4096
PORT_BUFFER_BYTES = 8192
#: Bits on the line per byte (8N1), and bytes the OS and the driver may hold
#: between a write and the wire: a Linux pty holds 18 KiB (measured), the
#: driver's port buffer one raw write over its limit.
BITS_PER_BYTE = 10
BUFFERED_WRITE_BYTES = 18 * 1024 + PORT_BUFFER_BYTES + RAW_WRITE_BYTES


class DataMode:
    """The session's transparent mode; see the module docstring."""

    def __init__(self, session: Session) -> None:
        self._s = session
        #: Transparent mode was asked for (AT+CIPMODE=1 at bring-up).
        self.enabled = False
        #: The link that is a raw pipe in data mode, if open.
        self.link: Link | None = None
        self.in_data_mode = False
        self._flush_at = math.inf
        self._escape_at = math.inf
        self._escape_failures = 0
        self._line_free_at = 0.0
        self._confirming = False  # a CLOSED seen in data mode is being checked
        self._held_raw = bytearray()
        #: A transparent server's client was accepted: its CONNECT comes unasked.
        self.client_connecting = False

    # -- bookkeeping -------------------------------------------------------------------

    def wrote(self, size: int) -> None:
        """``size`` bytes were queued for the line now."""
        s = self._s
        per_byte = BITS_PER_BYTE / s.config.baudrate
        free_at = max(s.now, self._line_free_at) + size * per_byte
        self._line_free_at = min(free_at, s.now + BUFFERED_WRITE_BYTES * per_byte)

    def deadline(self) -> float:
        """The next time the session must look: a held-back flush, or an escape."""
        return min(self._flush_at, self._escape_at)

    def blocks_commands(self) -> bool:
        """Waiting out the silence before ``+++``: nothing may be written."""
        return self._escape_at != math.inf

    def reset(self) -> None:
        """The module restarted: no data mode, no transparent link."""
        self.in_data_mode = False
        self._confirming = False
        self._held_raw.clear()
        self.link = None
        self.client_connecting = False
        self._flush_at = self._escape_at = math.inf

    def wants_link(self) -> bool:
        """The next TCP open is the transparent link (link 0)."""
        return self.enabled and self.link is None

    def opening(self, link: Link) -> None:
        """``link`` is being opened as the raw pipe: bytes may follow ``CONNECT`` at once."""
        link.transparent = True
        self.link = link

    def released(self, link: Link) -> None:
        """``link`` is over."""
        if link is self.link:
            self.link = None
            self.client_connecting = False

    def accept(self, link: Link) -> None:
        """Server 0's client on link 0 (3.4.1): the raw pipe once its ``CONNECT`` comes."""
        self.opening(link)
        self.client_connecting = True

    # -- events from the module ----------------------------------------------------------

    def connected(self) -> None:
        """``CONNECT``: data mode."""
        self._s.parser.enter_raw()
        self.in_data_mode = True
        self.client_connecting = False

    def closed(self) -> None:
        """``CLOSED`` (4.2): the transparent link is gone and the module is in command mode.

        Unless the peer sent those very bytes: in data mode it is believed only
        once an escape proves the module is no longer there (:meth:`_confirm`).
        """
        s = self._s
        link = self.link
        if self.in_data_mode and link is not None and link.state is LinkState.OPEN:
            self._confirm()
            return
        self.in_data_mode = False
        self._flush_at = math.inf
        if link is None or link.state is LinkState.CLOSING:
            return  # our AT+CIPCLOSE; its +CIPCLOSE: result finishes the link
        s.linkwork.peer_closed(link.number, 1)

    def _confirm(self) -> None:
        """Check a ``CLOSED`` seen in data mode: ``+++`` after the guard's silence.

        ``OK``: the module was still in data mode, so the bytes were the peer's
        data (delivered with what came after them, in order). No ``OK``: the
        module was in command mode, so the link closed; what came after the
        marker were command-mode lines, and they are parsed as such.
        """
        s = self._s
        self._confirming = True
        self._held_raw.clear()
        s.parser.resume_raw()
        guard = s.config.escape_guard_s
        self._escape_at = max(s.now, self._line_free_at) + guard * ESCAPE_MARGIN + 0.05

    def hold(self, data: bytes) -> bool:
        """While a ``CLOSED`` is being checked, raw bytes wait (their order is kept)."""
        if self._confirming:
            self._held_raw += data
        return self._confirming

    def _confirmed_data(self) -> None:
        """The module answered the escape: ``CLOSED`` and what followed were the peer's."""
        s = self._s
        self._confirming = False
        link = self.link
        data, self._held_raw = TRANSPARENT_CLOSED + bytes(self._held_raw), bytearray()
        logger.info("CLOSED in data mode was the peer's data (%d bytes kept)", len(data))
        if link is not None and link.state is LinkState.OPEN and not link.close_requested:
            s.stats.payload_received += len(data)
            s.emit(LinkData(link.number, link.serial, data))

    def _confirmed_closed(self) -> None:
        """No answer to the escape: the module is in command mode, the link is gone."""
        s = self._s
        self._confirming = False
        self.in_data_mode = False
        held, self._held_raw = bytes(self._held_raw), bytearray()
        s.parser.leave_raw(replay=held)
        s.write(b"\r")  # ends the "+++" the module read as a line (a stray ERROR is skipped)
        link = self.link
        if link is not None and link.state is LinkState.OPEN:
            s.linkwork.peer_closed(link.number, 1)
        s.parse()

    def after_receive(self) -> None:
        """Bytes that could begin ``CLOSED`` wait a moment, then go to the link as data."""
        parser = self._s.parser
        self._flush_at = self._s.now + RAW_HOLD_S if parser.raw and parser.buffered else math.inf

    def on_timer(self) -> None:
        """Release held-back bytes; write ``+++`` once the silence before it has passed."""
        s = self._s
        if self._flush_at <= s.now:
            self._flush_at = math.inf
            held = s.parser.flush_raw()
            if held is not None:
                s.linkwork.data(held)
        if self._escape_at <= s.now:
            self._escape_at = math.inf
            self._write_escape()

    # -- turns -----------------------------------------------------------------------

    def _others_waiting(self) -> bool:
        """Work that needs command mode: requests, other links, closing the raw one."""
        s = self._s
        if s.wants_turn() or s.linkwork.poll_deadline() <= s.now:
            return True  # (in data mode the module holds its URCs: polls find link 1's data)
        raw = self.link
        if raw is not None and raw.wants_close():  # (once what was written has gone)
            return True
        return any(
            link is not raw
            and (link.wants_close() or link.wants_send() or link.wants_read(s.push_mode))
            for link in s.links.values()
        )

    def next_op(self) -> bool:
        """In transparent mode: raw writes in data mode, and the switches between modes."""
        s = self._s
        raw = self.link
        if self._confirming:
            return False  # only the escape that checks a CLOSED goes out
        if self.client_connecting:
            return False  # the module enters data mode itself (3.4.1): no ATO
        if self.in_data_mode:
            if self._others_waiting():
                silence = self._line_free_at + s.config.escape_guard_s * ESCAPE_MARGIN + 0.05
                if silence <= s.now:
                    self._write_escape()
                    return True
                self._escape_at = silence
                return False
            return False  # the raw link's bytes go out as the port asks (fill)
        if (
            raw is not None
            and raw.state is LinkState.OPEN
            and not raw.wants_close()  # closing still writes what was queued first
            and not raw.failed
            and not self._others_waiting()
        ):
            command = Command("ATO", DEFAULT_TIMEOUT_S)
            s.issue(
                InFlight(
                    command,
                    Response(command),
                    self._resumed,
                    _ignore,
                    deadline=s.now + s.timeout_for(command),
                    until_connect=True,
                )
            )
            return True
        return False

    def can_fill(self) -> bool:
        """Raw bytes may be written now: data mode, and nothing waits for command mode."""
        raw = self.link
        return (
            self.in_data_mode
            and raw is not None
            and bool(raw.tx)
            and raw.state is LinkState.OPEN
            and not self._confirming
            and self._escape_at == math.inf
            and not self._others_waiting()
        )

    def fill(self) -> None:
        """Write the raw link's next bytes, at most :data:`RAW_WRITE_BYTES`.

        Pulled by :meth:`Session.data_to_send` when the port has room, so a
        large write waits in the link's queue (the caller's ``drain()`` waits
        with it), not in the port's buffer, where the guard time before a
        ``+++`` could not be counted.
        """
        raw = self.link
        if raw is None or not self.can_fill():
            return
        s = self._s
        data = bytes(raw.tx[:RAW_WRITE_BYTES])
        del raw.tx[:RAW_WRITE_BYTES]
        s.stats.payload_sent += len(data)
        s.write(data)
        s.emit(LinkSent(raw.number, raw.serial, len(data)))

    def _resumed(self, response: Response) -> None:
        if not response.ok:
            logger.warning("ATO failed: %s", response.error("ATO"))

    def _write_escape(self) -> None:
        """``+++`` (2): to command mode, the raw link kept open."""
        s = self._s
        guard = s.config.escape_guard_s
        s.parser.expect_escape_ok()
        # The OK queues behind whatever the peer sent that the line has not
        # carried yet, so allow the usual 9 s on top of the guards; checking
        # a CLOSED, the module is most likely silent, so wait less.
        extra = CONFIRM_WAIT_S if self._confirming else DEFAULT_TIMEOUT_S
        command = Command(ESCAPE_SEQUENCE, 2 * guard + extra)
        s.issue(
            InFlight(
                command,
                Response(command),
                self._escaped,
                self._escape_failed,
                deadline=s.now + command.timeout_s,
            )
        )

    def _escaped(self, response: Response) -> None:
        if response.ok:
            self.in_data_mode = False
            self._escape_failures = 0
            if self._confirming:
                self._confirmed_data()

    def _escape_failed(self, exc: BaseException) -> None:
        """No ``OK`` after ``+++``: the escape reached the peer as data; try again, then give up.

        Checking a ``CLOSED``, no ``OK`` means the module was in command mode.
        """
        if self._confirming:
            self._confirmed_closed()
            return
        self._escape_failures += 1
        logger.warning("no OK after +++ (attempt %d)", self._escape_failures)
        if self._escape_failures >= ESCAPE_ATTEMPTS:
            self._s.close(
                ModuleUnresponsiveError(
                    f"the module did not leave data mode after {ESCAPE_ATTEMPTS} escapes"
                )
            )


def _ignore(_: BaseException) -> None:
    """A failure nothing needs to hear about (the session resynchronises)."""
