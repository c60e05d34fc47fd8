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
import errno
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..at import commands as at
from ..at.commands import Command
from ..at.errors import ProtocolError, module_error
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
from .exchange import InFlight, LateResults, Response
from .links import Link, LinkState

__all__ = ["Engine", "EngineClosedError", "ModuleUnresponsiveError"]

logger = logging.getLogger("simsock.modem")
wire_logger = logging.getLogger("simsock.modem.wire")

#: How long the module may take to send ``>`` after ``AT+CIPSEND`` before we
#: give up and cancel with ESC (3.4); the reference gives no figure, a module
#: answers within milliseconds.
PROMPT_TIMEOUT_S = 5.0
#: Bytes asked of the port per read.
READ_SIZE = 65536
#: After a command timed out: how long one ``AT`` probe waits, and how many
#: probes fail before the module is declared unresponsive.
RESYNC_PROBE_S = 1.0
RESYNC_ATTEMPTS = 5
#: Silence before and after ``+++`` that the module needs to see an escape (2).
ESCAPE_GUARD_S = 1.0
#: The pause before ``+++`` is the guard time times this, and tries before giving up.
ESCAPE_MARGIN = 1.5
ESCAPE_ATTEMPTS = 3
#: How long bytes that could begin ``CLOSED`` are held back in data mode.
RAW_HOLD_S = 0.02
#: Largest raw write in data mode (no AT framing limits it).
RAW_WRITE_BYTES = 4096
#: How often an idle link that is being read is asked ``AT+CIPRXGET=4`` in
#: case the module forgot its ``+CIPRXGET: 1`` (3.5: a host must not rely on it).
POLL_INTERVAL_S = 5.0


#: The reason a user's ``close()`` gives (state listeners see it).
USER_CLOSE_REASON = "the modem is closed"
#: The pseudo-command line of the escape; written without a CR.
ESCAPE_SEQUENCE = "+++"


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


@dataclass(slots=True)
class Stats:
    """Counters of what crossed the port (for benchmarks and the demo)."""

    bytes_written: int = 0
    bytes_read: int = 0
    commands: int = 0
    payload_sent: int = 0
    payload_received: int = 0
    protocol_errors: int = 0
    unsolicited: int = 0
    trace: deque[tuple[str, str]] | None = field(default=None)


class Engine:
    """Owns the port, the parser, the reader and scheduler tasks, and the links."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_link: int = at.MAX_LINK,
        trace_lines: int = 0,
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
        self._last_write = 0.0
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
        """How long ``command`` (and its late result) may take on this module."""
        return self._cip_timeouts.get(command.name, command.timeout_s)

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
        self._last_write = asyncio.get_running_loop().time()
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
            self._write(command.wire if command.line != ESCAPE_SEQUENCE else b"+++")
            if payload is not None and inflight.prompt is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(inflight.prompt), PROMPT_TIMEOUT_S)
                except TimeoutError:
                    # No '>': cancel so the module never takes our next command as payload.
                    logger.warning("no '>' after %s: cancelling with ESC", command.line)
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

        The silence before it is counted from our last write plus a margin, as
        the module counts from when it *read* our last byte. An escape the
        module missed reached the peer as data (the limit of transparent mode);
        it is tried again before the module is called unresponsive.
        """
        loop = asyncio.get_running_loop()
        guard = self.escape_guard_s
        for attempt in range(ESCAPE_ATTEMPTS):
            silence = self._last_write + guard * ESCAPE_MARGIN + 0.05 - loop.time()
            if silence > 0:
                await asyncio.sleep(silence)
            self._parser.expect_escape_ok()
            try:
                response = await self._exchange(Command(ESCAPE_SEQUENCE, 2 * guard + 2))
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
        response = await self._exchange(at.ciprxget_read(link.number, at.MAX_READ_BYTES))
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
            self._fail_link(link, response.error("CIPSEND"))
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
        _, requested, confirmed = fut.result()
        link.unconfirmed -= size
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
