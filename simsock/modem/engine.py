"""The engine: one serial port, ONE reader task, ONE command in flight.

Data flows up: the reader task feeds the port's bytes to the sans-I/O parser
and dispatches each event: a final result or response line to the command in
flight, a late result to the waiter registered for it, a URC to its link.
Commands flow down: only the scheduler task writes to the port, one command at
a time, choosing round-robin between the control queue (user commands, opens,
DNS) and each link's reads, sends and closes, so no link starves another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..at import commands as at
from ..at.commands import Command
from ..at.errors import ProtocolError
from ..at.events import (
    ClientAccepted,
    Line,
)
from ..at.parser import Parser
from .demux import Demultiplexer
from .exchange import InFlight, LateResults, Response
from .linkops import LinkOperations
from .links import Link
from .stats import Stats
from .transparent import ESCAPE_GUARD_S, ESCAPE_SEQUENCE, TransparentMode

__all__ = ["Engine", "EngineClosedError", "ModuleUnresponsiveError"]

logger = logging.getLogger("simsock.modem")
wire_logger = logging.getLogger("simsock.modem.wire")

#: How long the module may take to send ``>`` after ``AT+CIPSEND`` before we
#: give up and cancel with ESC (3.4); the reference gives no figure, a module
#: answers within milliseconds.
PROMPT_TIMEOUT_S = 5.0
#: The module's factory rate, and bits on the line per byte (8N1).
DEFAULT_BAUDRATE = 115200
BITS_PER_BYTE = 10
#: Bytes the OS and a serial driver may hold between a drained write and the
#: wire (measured: a Linux pty holds 18 KiB).
BUFFERED_WRITE_BYTES = 20 * 1024
#: How much longer than the module's own AT+CIPTIMEOUT the library waits.
CIPTIMEOUT_MARGIN_S = 5.0
#: Bytes asked of the port per read.
READ_SIZE = 65536
#: After a command timed out: how long one ``AT`` probe waits, and how many
#: probes fail before the module is declared unresponsive.
RESYNC_PROBE_S = 1.0
RESYNC_ATTEMPTS = 5
#: How often an idle link that is being read is asked ``AT+CIPRXGET=4`` in
#: case the module forgot its ``+CIPRXGET: 1`` (3.5: a host must not rely on it).
POLL_INTERVAL_S = 5.0


#: The reason a user's ``close()`` gives (state listeners see it).
USER_CLOSE_REASON = "the modem is closed"


class EngineClosedError(ConnectionError):
    """The modem was closed, or its port went away."""


class ModuleUnresponsiveError(EngineClosedError, TimeoutError):
    """The module stopped answering (no ``OK`` to ``AT`` after a command timed out)."""


@dataclass(slots=True)
class Job:
    """A control command waiting for its turn, then its response."""

    command: Command
    future: asyncio.Future[Response]
    until_connect: bool = False  # ends with CONNECT / CONNECT FAIL (transparent open)
    sent: bool = False  # the scheduler wrote it: it will run to its final result
    skip: bool = False  # its caller gave up before it was written

    async def wait(self) -> Response:
        """The response; if the caller is cancelled before the command was written, drop it."""
        try:
            return await asyncio.shield(self.future)
        except asyncio.CancelledError:
            if not self.sent:
                self.skip = True
            raise


class Engine(Demultiplexer, LinkOperations, TransparentMode):
    """Owns the port, the parser, the reader and scheduler tasks, and the links."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_link: int = at.MAX_LINK,
        trace_lines: int = 0,
        baudrate: int = DEFAULT_BAUDRATE,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = Parser()
        self._late = LateResults()
        self._inflight: InFlight | None = None
        self._control: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self.links: dict[int, Link] = {}
        self.max_link = max_link
        #: Direct-push receive mode (AT+CIPRXGET=0): data arrives unasked, no reads.
        self.push_mode = False
        #: Maximum response times that AT+CIPTIMEOUT sets (3.12), in seconds.
        self._cip_timeouts = {
            "+NETOPEN": at.CIPTIMEOUT_DEFAULT_S,
            "+NETCLOSE": at.CIPTIMEOUT_DEFAULT_S,
            "+CIPOPEN": at.CIPTIMEOUT_DEFAULT_S,
            "+CIPSEND": at.CIPTIMEOUT_DEFAULT_S,
            "+CIPCLOSE": at.CIPTIMEOUT_DEFAULT_S,
        }
        self.stats = Stats(trace=deque(maxlen=trace_lines) if trace_lines else None)
        self._closed: BaseException | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._sched_task: asyncio.Task[None] | None = None
        self._rr = 0  # round-robin position of the scheduler
        self._prefer_send: dict[int, bool] = {}
        self.on_unsolicited: Callable[[Line], None] | None = None
        self.on_client: Callable[[ClientAccepted], None] | None = None
        self.on_network_closed: Callable[[], None] | None = None
        self.on_ready: Callable[[], None] | None = None
        self.on_resync: Callable[[bool], None] | None = None
        self.on_closed: Callable[[BaseException], None] | None = None
        #: Called with ("->" or "<-", bytes) for every write to and read from the
        #: port: the raw material of a replayable trace (``simsock --trace``).
        self.wire_tap: Callable[[str, bytes], None] | None = None
        self.poll_interval_s = POLL_INTERVAL_S
        self.resync_attempts = RESYNC_ATTEMPTS
        self._poll_due = False
        #: Transparent mode (2): the link that is a raw pipe in data mode, if open.
        self.transparent_link: Link | None = None
        self.data_mode = False
        self.escape_guard_s = ESCAPE_GUARD_S
        #: When the line will have carried everything written so far: the module
        #: sees our bytes only then, which is what its +++ guard time counts from.
        self.baudrate = baudrate
        self._line_free_at = 0.0
        self._raw_flush: asyncio.TimerHandle | None = None

    # -- life cycle --------------------------------------------------------------

    def start(self) -> None:
        """Start the reader and scheduler tasks."""
        self._read_task = asyncio.create_task(self._read_loop(), name="simsock-reader")
        self._sched_task = asyncio.create_task(self._schedule_loop(), name="simsock-scheduler")

    @property
    def closed(self) -> bool:
        """The engine stopped (closed by the user or the port died)."""
        return self._closed is not None

    async def close(self) -> None:
        """Stop both tasks, fail every waiter, close the port."""
        self._shutdown(EngineClosedError(USER_CLOSE_REASON))
        for task in (self._read_task, self._sched_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    def _shutdown(self, exc: BaseException) -> None:
        if self._closed is not None:
            return
        self._closed = exc
        if self._inflight is not None:
            self._inflight.fail(exc)
        self._late.fail_all(exc)
        while self._control:
            job = self._control.popleft()
            if not job.future.done():
                job.future.set_exception(exc)
                job.future.exception()
        for link in list(self.links.values()):
            link.finish(exc)
        self.links.clear()
        self._wakeup.set()
        if self.on_closed is not None:
            self.on_closed(exc)

    # -- commands ----------------------------------------------------------------

    async def execute(self, command: Command) -> Response:
        """Queue ``command``, wait for its response (final result included).

        Cancelling the caller never leaves half a command on the wire: once the
        scheduler has written it, it runs to its final result regardless.
        """
        return await self.submit(command).wait()

    def submit(self, command: Command, *, until_connect: bool = False) -> Job:
        """Queue ``command``; the job's ``wait()`` gives its response."""
        if self._closed is not None:
            raise EngineClosedError("the modem is closed") from self._closed
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        job = Job(command, future, until_connect=until_connect)
        self._control.append(job)
        self._wakeup.set()
        return job

    def set_timeouts(self, netopen_s: float, cipopen_s: float, cipsend_s: float) -> None:
        """Follow the module's AT+CIPTIMEOUT (3.12) in every wait of those commands."""
        self._cip_timeouts.update(
            {
                "+NETOPEN": netopen_s,
                "+NETCLOSE": netopen_s,
                "+CIPOPEN": cipopen_s,
                "+CIPCLOSE": cipopen_s,
                "+CIPSEND": cipsend_s,
            }
        )

    def timeout_for(self, command: Command) -> float:
        """How long ``command`` (and its late result) may take on this module.

        For the commands AT+CIPTIMEOUT governs, the module reports its own
        timeout (``+CIPOPEN: <link>,10``): we wait a little longer, so that
        answer, with its code, is what the caller gets.
        """
        limit = self._cip_timeouts.get(command.name)
        if limit is None:
            return command.timeout_s
        return limit + CIPTIMEOUT_MARGIN_S

    def expect_late(self, name: str, key: int | None) -> asyncio.Future[list[int]]:
        """Register a waiter for a late result (before the command is queued)."""
        return self._late.expect(name, key)

    def discard_late(self, name: str, key: int | None, fut: asyncio.Future[list[int]]) -> None:
        """Forget a late-result waiter whose command failed."""
        self._late.discard(name, key, fut)

    def wake(self) -> None:
        """Something a link wants changed: let the scheduler look again."""
        self._wakeup.set()

    def _write(self, data: bytes) -> None:
        if wire_logger.isEnabledFor(logging.DEBUG):
            wire_logger.debug("-> %r", data[:80] if len(data) > 80 else data)
        self.stats.bytes_written += len(data)
        now = asyncio.get_running_loop().time()
        # Written bytes wait at most in the OS and driver buffers, not longer:
        # past that, drain() held us back (or the line is faster than we think).
        seconds_per_byte = BITS_PER_BYTE / self.baudrate
        free_at = max(now, self._line_free_at) + len(data) * seconds_per_byte
        self._line_free_at = min(free_at, now + BUFFERED_WRITE_BYTES * seconds_per_byte)
        if self.wire_tap is not None:
            self.wire_tap("->", data)
        self._writer.write(data)

    async def _exchange(
        self, command: Command, payload: bytes | None = None, *, until_connect: bool = False
    ) -> Response:
        """Write ``command`` (and its payload after ``>``) and wait for its final result."""
        inflight = InFlight(command, wants_prompt=payload is not None, until_connect=until_connect)
        self._inflight = inflight
        self.stats.commands += 1
        if self.stats.trace is not None:
            self.stats.trace.append(("->", command.line))
        try:
            escape = command.line == ESCAPE_SEQUENCE  # "+++" goes without a CR
            self._write(ESCAPE_SEQUENCE.encode() if escape else command.wire)
            if payload is not None and inflight.prompt is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(inflight.prompt), PROMPT_TIMEOUT_S)
                except TimeoutError:
                    # No '>': cancel so the module never takes our next command as payload.
                    logger.warning("no '>' after %s: cancelling with ESC", command.line)
                    inflight.response.prompt_missing = True
                    self._write(bytes([at.ESC]))
                except OSError:
                    pass  # the final result (ERROR) came instead of the prompt
                else:
                    self._write(payload)
                    self.stats.payload_sent += len(payload)
                    await self._writer.drain()
            limit = self.timeout_for(command)
            # One timer that fails the future, not wait_for(shield()): two fewer
            # task hops per command, which is most of a command's CPU.
            overdue = asyncio.get_running_loop().call_later(
                limit,
                inflight.fail,
                TimeoutError(f"{command.line}: no final result within {limit} s"),
            )
            try:
                return await inflight.done
            finally:
                overdue.cancel()
        finally:
            self._inflight = None

    # -- the reader task -----------------------------------------------------------

    async def _read_loop(self) -> None:
        parser = self._parser
        try:
            while True:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    self._shutdown(EngineClosedError("the serial port closed"))
                    return
                self.stats.bytes_read += len(data)
                if self.wire_tap is not None:
                    self.wire_tap("<-", data)
                if wire_logger.isEnabledFor(logging.DEBUG):
                    wire_logger.debug("<- %r", data[:200])
                parser.feed(data)
                while True:
                    try:
                        event = parser.next_event()
                    except ProtocolError as exc:
                        self.stats.protocol_errors += 1
                        logger.warning("protocol error (resynchronised): %s", exc)
                        continue
                    if event is None:
                        if parser.raw and parser.buffered:
                            self._arm_raw_flush()
                        break
                    try:
                        self._dispatch(event)
                    except ProtocolError as exc:
                        self.stats.protocol_errors += 1
                        logger.warning("protocol error: %s", exc)
                    except Exception:
                        # The reader never dies of a bug above it (zigpy-znp).
                        logger.exception("error while handling %r", event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("serial port failed")
            self._shutdown(EngineClosedError(f"the serial port failed: {exc}"))

    async def _schedule_loop(self) -> None:
        try:
            while self._closed is None:
                op = self._next_op()
                if op is None:
                    self._wakeup.clear()
                    op = self._next_op()
                    if op is None:
                        await self._idle()
                        continue
                try:
                    await op
                except TimeoutError as exc:
                    if self.data_mode:
                        # "AT" probes would go to the peer as data: nothing to resync.
                        logger.error("scheduler: %s", exc)
                        self._shutdown(ModuleUnresponsiveError(str(exc)))
                        continue
                    logger.warning("scheduler: %s; resynchronising", exc)
                    await self._resync()
                except (OSError, ProtocolError) as exc:
                    logger.warning("scheduler: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("scheduler failed")
            self._shutdown(EngineClosedError(f"scheduler failed: {exc}"))

    async def _idle(self) -> None:
        """Wait for work; when links are read and quiet, poll them now and then."""
        pollable = self._pollable()
        if not pollable:
            await self._wakeup.wait()
            return
        try:
            await asyncio.wait_for(self._wakeup.wait(), self.poll_interval_s)
        except TimeoutError:
            self._poll_due = True

    async def _resync(self) -> None:
        """After a timeout: ``AT`` until ``OK``, so the next command's answer is its own."""
        probe = Command("AT", RESYNC_PROBE_S)
        for _ in range(self.resync_attempts):
            try:
                response = await self._exchange(probe)
            except TimeoutError:
                continue
            if response.ok:
                logger.info("resynchronised with the module")
                if self.on_resync is not None:
                    self.on_resync(True)
                return
        logger.error("the module does not answer: giving up on the port")
        if self.on_resync is not None:
            self.on_resync(False)
        self._shutdown(ModuleUnresponsiveError("the module stopped answering AT"))

    def fail_links(self, exc: BaseException) -> None:
        """Every link is gone in the module (network lost, module restarted): fail them."""
        for link in list(self.links.values()):
            self.links.pop(link.number, None)
            link.finish(exc)
        self._late.fail_all(exc)
        self._wakeup.set()

    def _next_op(self) -> Coroutine[Any, Any, None] | None:
        """The next operation, round-robin over [control, link 0, link 1, ...]."""
        if self.transparent_link is not None or self.data_mode:
            op = self._transparent_op()
            if op is not None or self.data_mode:
                return op
        if self._poll_due:
            self._poll_due = False
            return self._poll()
        sources = 1 + self.max_link + 1
        for step in range(sources):
            index = (self._rr + step) % sources
            op = self._control_op() if index == 0 else self._link_op(index - 1)
            if op is not None:
                self._rr = (index + 1) % sources
                return op
        return None

    def _control_op(self) -> Coroutine[Any, Any, None] | None:
        while self._control:
            job = self._control.popleft()
            if not job.skip and not job.future.done():  # a cancelled caller's job is skipped
                job.sent = True
                return self._run_job(job)
        return None

    async def _run_job(self, job: Job) -> None:
        try:
            response = await self._exchange(job.command, until_connect=job.until_connect)
        except BaseException as exc:
            if not job.future.done():
                job.future.set_exception(exc)
                job.future.exception()
            if isinstance(exc, asyncio.CancelledError | TimeoutError):
                raise  # a timeout makes the scheduler resynchronise
            return
        if not job.future.done():
            job.future.set_result(response)
