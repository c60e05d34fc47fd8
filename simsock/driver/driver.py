"""The asyncio driver: the serial port on one side, the sans-I/O session on the other.

One reader task feeds the port's bytes to :meth:`Session.receive_data`; what
:meth:`Session.data_to_send` returns is written; one ``call_at`` timer follows
:meth:`Session.get_timer`; and each outcome goes where it belongs: a
request's future, a link's transport, the state listeners. Every protocol
decision is the session's (:mod:`simsock.at.session`); nothing here decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ..at import commands as at
from ..at.bringup import BringUpOptions, ModuleInfo
from ..at.commands import Command
from ..at.datamode import PORT_BUFFER_BYTES
from ..at.errors import EngineClosedError
from ..at.events import Line
from ..at.link import Link
from ..at.outcomes import (
    ClientConnected,
    LinkData,
    LinkDatagram,
    LinkEof,
    LinkLost,
    LinkSent,
    Outcome,
    RequestDone,
    RequestFailed,
    StateChanged,
    Unsolicited,
)
from ..at.procedures import Procedure, run_command
from ..at.response import Response
from ..at.session import Session, SessionConfig
from ..at.stats import Stats

__all__ = ["READ_SIZE", "Driver", "LinkOwner"]

logger = logging.getLogger("simsock.driver")
wire_logger = logging.getLogger("simsock.driver.wire")

#: Bytes asked of the port per read.
READ_SIZE = 65536


class LinkOwner(Protocol):
    """What the driver tells the transport that owns a link."""

    def link_data(self, data: bytes) -> None: ...
    def link_datagram(self, data: bytes, address: tuple[str, int]) -> None: ...
    def link_eof(self) -> None: ...
    def link_sent(self) -> None: ...
    def link_lost(self, exc: BaseException | None) -> None: ...


class Driver:
    """Owns the port, the reader task and the timer; see the module docstring."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        config: SessionConfig | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self.session = Session(config, now=self._loop.time())
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._owners: dict[int, LinkOwner] = {}  # by link serial
        self._early: dict[int, list[Outcome]] = {}  # outcomes before the owner attached
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        # The port pauses over this backlog, and _write_out stops at it.
        writer.transport.set_write_buffer_limits(high=PORT_BUFFER_BYTES)
        self._flushing = False
        self._again = False
        self.on_unsolicited: Callable[[Line], None] | None = None
        self.on_client: Callable[[Link], None] | None = None
        self.on_state: list[Callable[[StateChanged], None]] = []
        #: Called with ("->" or "<-", bytes) for every write to and read from the
        #: port: the raw material of a replayable trace (``simsock --trace``).
        self.wire_tap: Callable[[str, bytes], None] | None = None

    # -- what tests, benchmarks and the CLI look at -----------------------------------

    @property
    def stats(self) -> Stats:
        """Counters of what crossed the port."""
        return self.session.stats

    @property
    def links(self) -> dict[int, Link]:
        """The links whose numbers are taken."""
        return self.session.links

    @property
    def data_mode(self) -> bool:
        """The transparent link is in data mode."""
        return self.session.datamode.in_data_mode

    @property
    def closed(self) -> bool:
        """The session has ended."""
        return self.session.closed

    # -- life cycle --------------------------------------------------------------

    def start(self) -> None:
        """Start the reader task."""
        self._read_task = asyncio.create_task(self._read_loop(), name="simsock-reader")

    async def bring_up(self, options: BringUpOptions) -> ModuleInfo:
        """Bring the module up (:func:`simsock.at.bringup.bring_up`)."""
        self.session.datamode.enabled = options.transparent
        info: ModuleInfo = await self._wait(self.session.start(options))
        return info

    async def close(self, exc: BaseException | None = None) -> None:
        """End the session, stop the reader, close the port."""
        self.session.close(exc)
        self._flush()
        task = self._read_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._timer is not None:
            self._timer.cancel()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        if self._drain_task is not None:
            self._drain_task.cancel()

    # -- requests ----------------------------------------------------------------------

    async def execute(self, command: Command, *, wait_up: bool = False) -> Response:
        """Queue ``command``, wait for its response (final result included).

        ``wait_up``: while the module recovers its network, wait for it first
        (up to the connect timeout, then ``OSError(ENETDOWN)``).
        """
        session = self.session
        if wait_up:
            bound = session.timeout_for(at.cipopen_udp(0, 0))
            request = session.run(run_command(command, wait_up_s=bound))
        else:
            request = session.command(command)
        response: Response = await self._wait(request)
        return response

    async def run(self, procedure: Procedure) -> Any:
        """Run a session procedure; its value."""
        return await self._wait(self.session.run(procedure))

    async def open_tcp(
        self, host: str, port: int, local_port: int | None = None, *, paused: bool = False
    ) -> Link:
        """Open a TCP link; the :class:`Link`."""
        link: Link = await self._wait(self.session.open_tcp(host, port, local_port, paused=paused))
        return link

    async def open_udp(self, local_port: int, remote: tuple[str, int] | None) -> Link:
        """Open a UDP link; the :class:`Link`."""
        link: Link = await self._wait(self.session.open_udp(local_port, remote))
        return link

    async def _wait(self, request: int) -> Any:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._futures[request] = future
        self._kick()
        try:
            return await future
        except asyncio.CancelledError:
            # The session runs a written command to its end; an open is closed again.
            self._futures.pop(request, None)
            self.session.cancel(request)
            self._kick()
            raise

    # -- links ---------------------------------------------------------------------

    def attach(self, link: Link, owner: LinkOwner) -> None:
        """``owner`` takes ``link``'s outcomes; what came before is delivered now."""
        self._owners[link.serial] = owner
        for outcome in self._early.pop(link.serial, []):
            self._deliver(outcome)

    def send(self, link: Link, data: bytes) -> None:
        """Queue stream bytes."""
        self.session.send(link, data)
        self._kick()

    def send_datagram(self, link: Link, data: bytes, address: tuple[str, int]) -> None:
        """Queue one datagram."""
        self.session.send_datagram(link, data, address)
        self._kick()

    def pause_reading(self, link: Link) -> None:
        """Stop reading ``link``."""
        self.session.pause_reading(link)

    def resume_reading(self, link: Link) -> None:
        """Read ``link`` again."""
        self.session.resume_reading(link)
        self._kick()

    def close_link(self, link: Link, *, abort: bool = False) -> None:
        """Close ``link`` (flushing unless ``abort``)."""
        self.session.close_link(link, abort=abort)
        self._kick()

    # -- the port ------------------------------------------------------------------

    async def _read_loop(self) -> None:
        session = self.session
        try:
            while not session.closed:
                data = await self._reader.read(READ_SIZE)
                if data:
                    if self.wire_tap is not None:
                        self.wire_tap("<-", data)
                    if wire_logger.isEnabledFor(logging.DEBUG):
                        wire_logger.debug("<- %r", data[:200])
                session.receive_data(data, self._loop.time())
                self._flush()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("serial port failed")
            session.close(EngineClosedError(f"the serial port failed: {exc}"))
            self._flush()

    def _kick(self) -> None:
        """An intent was queued: let the session write and decide now."""
        self.session.handle_timer(self._loop.time())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._kick()

    def _flush(self) -> None:
        """Write what the session has to say, deliver its outcomes, re-arm the timer."""
        if self._flushing:
            self._again = True  # a protocol callback asked for more: the outer loop does it
            return
        self._flushing = True
        try:
            while True:
                self._again = False
                self._write_out()
                while (outcome := self.session.next_event()) is not None:
                    try:
                        self._deliver(outcome)
                    except Exception:
                        logger.exception("delivering %r failed", outcome)
                if not self._again:
                    break
                self.session.handle_timer(self._loop.time())
        finally:
            self._flushing = False
        self._arm_timer()

    def _write_out(self) -> None:
        """Write what the session gives while the port's backlog is small.

        At most :data:`PORT_BUFFER_BYTES` wait in the port (its high-water
        mark): a large transparent write waits in the session instead, which
        counts the line's time from what it handed out. When the port is
        behind, one task waits for it to drain, then flushes again.
        """
        session = self.session
        transport = self._writer.transport
        # (A closing port takes nothing more; the reader task sees it end.)
        while session.wants_write and not transport.is_closing():
            if transport.get_write_buffer_size() > PORT_BUFFER_BYTES:
                if self._drain_task is None:
                    self._drain_task = self._loop.create_task(self._drained())
                return
            data = session.data_to_send()
            if self.wire_tap is not None:
                self.wire_tap("->", data)
            if wire_logger.isEnabledFor(logging.DEBUG):
                wire_logger.debug("-> %r", data[:80])
            self._writer.write(data)

    async def _drained(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, RuntimeError):
            return  # the port is gone; the reader reports it
        finally:
            self._drain_task = None
        self._flush()

    def _arm_timer(self) -> None:
        when = self.session.get_timer()
        if when is None:
            return  # an armed timer that finds nothing due costs one idle look
        if self._timer_at is not None and self._timer_at <= when:
            return  # it fires first; the session then says when again
        if self._timer is not None:
            self._timer.cancel()
        # Each command moves the session's deadline later, so this runs when a
        # deadline comes sooner, not once per command.
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _deliver(self, outcome: Outcome) -> None:
        if type(outcome) is LinkData:  # the hot path: payload for an attached transport
            owner = self._owners.get(outcome.serial)
            if owner is not None:
                owner.link_data(outcome.data)
                return
        match outcome:
            case RequestDone(request=request, value=value):
                future = self._futures.pop(request, None)
                if future is not None and not future.done():
                    future.set_result(value)
            case RequestFailed(request=request, error=error):
                future = self._futures.pop(request, None)
                if future is not None and not future.done():
                    future.set_exception(error)
            case LinkData() | LinkDatagram() | LinkEof() | LinkSent() | LinkLost():
                owner = self._owners.get(outcome.serial)
                if owner is None:
                    if isinstance(outcome, LinkLost) or outcome.link in self.session.links:
                        self._early.setdefault(outcome.serial, []).append(outcome)
                    if isinstance(outcome, LinkLost):
                        # Nobody will attach to a lost link that no open returned.
                        self._loop.call_later(1.0, self._early.pop, outcome.serial, None)
                    return
                self._to_owner(owner, outcome)
            case ClientConnected(link=number, serial=serial):
                link = self.session.links.get(number)
                if link is not None and link.serial == serial and self.on_client is not None:
                    self.on_client(link)
            case StateChanged():
                for callback in list(self.on_state):
                    try:
                        callback(outcome)
                    except Exception:
                        logger.exception("state listener failed")
            case Unsolicited(line=line):
                if self.on_unsolicited is not None:
                    self.on_unsolicited(line)

    def _to_owner(self, owner: LinkOwner, outcome: Outcome) -> None:
        match outcome:
            case LinkData(data=data):
                owner.link_data(data)
            case LinkDatagram(data=data, address=address):
                owner.link_datagram(data, address)
            case LinkEof():
                owner.link_eof()
            case LinkSent():
                owner.link_sent()
            case LinkLost(serial=serial, error=error):
                self._owners.pop(serial, None)
                owner.link_lost(error)
