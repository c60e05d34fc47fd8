"""The protocol session: every decision of the AT stack, with no I/O and no clock.

In the manner of h11 and aioquic's ``QuicConnection``: the owner feeds the
module's bytes to :meth:`Session.receive_data`, writes what
:meth:`Session.data_to_send` returns, delivers :meth:`Session.next_event`'s
outcomes (:mod:`.outcomes`), and calls :meth:`Session.handle_timer` at
:meth:`Session.get_timer`. Time only ever comes in as ``now``.

The session owns the one command in flight and what waits for a turn, which
line answers which command (:mod:`.late` for late results), each link's life
(:mod:`.link`), the send window, fair turns between control work and each
link (:mod:`.linkwork`), polling of quiet links, a resynchronisation that
proves the answer it accepts is its own (:mod:`.resync`), recovery after a
network drop or a restart, and transparent mode (:mod:`.datamode`).
Every wait has a bound, kept as data and reported by :meth:`get_timer`.
"""

from __future__ import annotations

import errno
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import commands as at
from .bringup import BringUpOptions, ModuleInfo, bring_up, synchronise
from .commands import Command
from .datamode import DataMode
from .errors import EngineClosedError, ProtocolError, module_error, timeout_error
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
    Ok,
    Prompt,
    PushedData,
    RawData,
    ReceivedData,
    TransparentClosed,
    describe,
)
from .late import LateTable, LateWaiter
from .link import Link, LinkState
from .linkwork import LinkWork, broken_pipe
from .outcomes import (
    ClientConnected,
    ModemState,
    Outcome,
    RequestDone,
    RequestFailed,
    StateChanged,
    Unsolicited,
)
from .parser import Parser
from .procedures import (
    Cmd,
    Procedure,
    Sleep,
    Sync,
    WaitUp,
    close_network,
    reopen_network,
    run_command,
)
from .requests import InFlight, Proc
from .response import QUERY_SHAPE_DIFFERS, Response
from .resync import Resync
from .stats import Stats

__all__ = ["RECOVERY_BACKOFF_S", "Session", "SessionConfig"]

logger = logging.getLogger("simsock.at.session")

#: How much longer than the module's own AT+CIPTIMEOUT the session waits.
CIPTIMEOUT_MARGIN_S = 5.0
#: Waits between recovery attempts, in seconds; the last one repeats.
RECOVERY_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: Tries of the first bring-up once the module has answered.
START_ATTEMPTS = 3
#: How often a stopping server looks whether its clients' links are closed.
SERVER_STOP_POLL_S = 0.05
#: The reason a user's ``close()`` gives.
USER_CLOSE_REASON = "the modem is closed"


@dataclass(slots=True)
class SessionConfig:
    """The session's tunables (``open_modem`` options)."""

    #: How long the module may take to send ``>`` after ``AT+CIPSEND`` (3.4).
    prompt_timeout_s: float = 5.0
    #: How often quiet links being read are polled with ``AT+CIPRXGET=4`` (3.5).
    poll_interval_s: float = 5.0
    #: Probes before the module is declared unresponsive, and each one's bound.
    resync_attempts: int = 5
    resync_probe_s: float = 1.0
    recovery_backoff_s: tuple[float, ...] = RECOVERY_BACKOFF_S
    #: Transparent mode's ``+++`` guard time (2) and the line's rate (for it).
    escape_guard_s: float = 1.0
    baudrate: int = 115200
    #: Recent wire lines kept for diagnostics (0: none).
    trace_lines: int = 0


class Session:
    """The sans-I/O AT protocol session; see the module docstring."""

    def __init__(self, config: SessionConfig | None = None, *, now: float = 0.0) -> None:
        self.config = config if config is not None else SessionConfig()
        self.stats = Stats(
            trace=deque(maxlen=self.config.trace_lines) if self.config.trace_lines else None
        )
        self._now = now
        self._parser = Parser()
        self._out = bytearray()
        self._events: deque[Outcome] = deque()
        self.state = ModemState.STARTING
        self._closed: BaseException | None = None
        #: Links whose numbers are taken, by number.
        self.links: dict[int, Link] = {}
        #: Listening servers: index → port.
        self.servers: dict[int, int] = {}
        self.info = ModuleInfo()
        self.max_link = at.MAX_LINK
        self.push_mode = False
        #: Maximum response times that AT+CIPTIMEOUT sets (3.12), in seconds.
        self._cip_timeouts = dict.fromkeys(
            ("+NETOPEN", "+NETCLOSE", "+CIPOPEN", "+CIPSEND", "+CIPCLOSE"),
            at.CIPTIMEOUT_DEFAULT_S,
        )
        self.late = LateTable()
        self.inflight: InFlight | None = None
        self._requests = 0
        self._procs: dict[int, Proc] = {}
        self._ready: deque[Proc] = deque()  # procedures whose next step waits for a turn
        self._urgent: deque[Proc] = deque()  # recovery and bring-up go first
        self._parked: list[Proc] = []  # sleeping, or waiting for the module to be up
        self._kick = False
        self.linkwork = LinkWork(self)
        self.datamode = DataMode(self)
        self.resync = Resync(self)
        self._options = BringUpOptions()
        self._bringup: int | None = None
        self._synchronised = False
        self._dropped = False
        self._reconciling = False
        self._recovery: Proc | None = None
        self._recovery_attempt = 0

    # -- the owner's side: bytes, events, time -------------------------------------

    @property
    def closed(self) -> bool:
        """The session has ended (closed by the user, or the module stopped answering)."""
        return self._closed is not None

    @property
    def now(self) -> float:
        """The latest time the owner passed in."""
        return self._now

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes the module wrote, read at ``now``; ``b""`` means the port closed."""
        self._advance(now)
        if self._closed is not None:
            return
        if not data:
            self.close(EngineClosedError("the serial port closed"))
            return
        self.stats.bytes_read += len(data)
        parser = self._parser
        parser.feed(data)
        while self._closed is None:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                self.stats.protocol_errors += 1
                logger.warning("protocol error (resynchronised): %s", exc)
                continue
            if event is None:
                break
            try:
                self._dispatch(event)
            except ProtocolError as exc:
                self.stats.protocol_errors += 1
                logger.warning("protocol error: %s", exc)
        self.datamode.after_receive()
        self._pump()

    def data_to_send(self) -> bytes:
        """Everything to write to the port now, in order; clears it."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def next_event(self) -> Outcome | None:
        """The next outcome for the owner, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (the owner's clock), or ``None``."""
        if self._closed is not None:
            return None
        if self._kick:
            return self._now
        deadlines = [self.late.next_deadline(), self.datamode.deadline()]
        deadlines.extend(p.deadline for p in self._parked)
        if self.inflight is not None:
            deadlines.append(self.inflight.next_deadline())
        else:
            deadlines.append(self.linkwork.poll_deadline())  # polls wait for a free turn
        when = min(deadlines)
        return None if when == math.inf else when

    def handle_timer(self, now: float) -> None:
        """Let time pass: fail what is overdue, wake what slept, run what waits."""
        self._advance(now)
        if self._closed is not None:
            return
        self._kick = False
        inflight = self.inflight
        if inflight is not None and inflight.prompt_deadline <= self._now:
            self.linkwork.prompt_overdue(inflight)
            self.resync.begin()
        elif inflight is not None and inflight.deadline <= self._now:
            self._overdue(inflight)
        self.late.expire(self._now)
        for proc in [p for p in self._parked if p.deadline <= self._now]:
            if self._closed is None and proc in self._parked:
                self._parked.remove(proc)
                error = None
                if isinstance(proc.step, WaitUp):
                    error = OSError(
                        errno.ENETDOWN, f"the module's network is down ({self.state.value})"
                    )
                self._resume(proc, error=error)
        if self._closed is None:
            self.datamode.on_timer()
            self._pump()

    def _overdue(self, inflight: InFlight) -> None:
        """The command in flight got no final result within its bound."""
        self.inflight = None
        exc = timeout_error(f"{inflight.command.line}: no final result in time")
        logger.warning("%s", exc)
        inflight.on_fail(exc)
        if not inflight.probe and not self.datamode.in_data_mode and self._closed is None:
            # Prove the next answer is ours before trusting one.
            self.resync.begin(suspect=inflight.command.name)

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)

    def emit(self, outcome: Outcome) -> None:
        """Queue an outcome for the owner."""
        self._events.append(outcome)

    def write(self, data: bytes) -> None:
        """Queue bytes for the port."""
        self.stats.bytes_written += len(data)
        self.datamode.wrote(len(data))
        self._out += data

    # -- the user's intents ----------------------------------------------------------

    def start(self, options: BringUpOptions) -> int:
        """Bring the module up; the request's value is a :class:`ModuleInfo`."""
        self._options = options
        self._bringup = self._submit(self._starting(), urgent=True)
        return self._bringup

    def command(self, command: Command, *, until_connect: bool = False) -> int:
        """Queue ``command``; the request's value is its :class:`Response`."""
        return self.run(run_command(command, until_connect=until_connect))

    def run(self, procedure: Procedure) -> int:
        """Queue a procedure (:mod:`.procedures`); its return value is the request's value."""
        return self._submit(procedure)

    def cancel(self, request: int) -> None:
        """The caller gave up on ``request``.

        A request not yet begun is dropped. One whose command is on the wire
        runs on, so the module and the session stay in step; its outcome is
        not reported, and an open it made is closed again.
        """
        proc = self._procs.get(request)
        if proc is None:
            return
        proc.cancelled = True
        if not proc.wrote:  # nothing of it reached the module: drop it
            self._forget(proc)
            proc.gen.close()

    def open_tcp(
        self, host: str, port: int, local_port: int | None = None, *, paused: bool = False
    ) -> int:
        """Open a TCP link (``AT+CIPOPEN``, 3.3); the request's value is the :class:`Link`.

        The link number is chosen when the command is written, not now: a
        ``+CLIENT`` that takes a number meanwhile leaves the other one.
        """
        at.cipopen_tcp(0, host, port, local_port)  # validated before anything is queued
        return self.run(self.linkwork.open_link(host, port, local_port, paused=paused))

    def open_udp(self, local_port: int, remote: tuple[str, int] | None) -> int:
        """Open a UDP link (``AT+CIPOPEN=<n>,"UDP",,,<port>``); the value is the :class:`Link`."""
        at.cipopen_udp(0, local_port)
        return self.run(self.linkwork.open_link(None, 0, local_port, udp_remote=remote))

    def start_server(self, port: int, index: int, backlog: int) -> Procedure:
        """``AT+SERVERSTART`` (3.14) as a procedure; ``+CLIENT`` for ``index`` is served after."""
        command = at.serverstart(port, index, backlog)
        yield WaitUp(self.timeout_for(at.cipopen_udp(0, 0)))
        self.servers[index] = port  # a +CLIENT right behind the OK is ours
        response: Response = yield Cmd(command)
        if not response.ok:
            self.servers.pop(index, None)
            raise response.error("SERVERSTART")
        return None

    def stop_server(self, index: int) -> Procedure:
        """``AT+SERVERSTOP`` (3.15) once the server's accepted links are closed, as it requires."""
        self.servers.pop(index, None)  # a client accepted from now on is closed at once
        waited = 0.0
        while any(link.server == index for link in self.links.values()):
            if waited > self.timeout_for(at.cipclose(0)):
                break  # their closes are bounded: this only guards against a bug
            yield Sleep(SERVER_STOP_POLL_S)
            waited += SERVER_STOP_POLL_S
        response: Response = yield Cmd(at.serverstop(index), late=("+SERVERSTOP", index))
        if not response.ok:
            logger.warning("server %d: %s", index, response.error("SERVERSTOP"))
        return None

    def close_network(self) -> Procedure:
        """``AT+NETCLOSE`` (3.2) as a procedure: links end, and the network stays closed
        (no recovery) until :meth:`open_network`."""
        if self._recovery is not None:
            self._forget(self._recovery)
            self._recovery.gen.close()
            self._recovery = None
        self._set_state(ModemState.NETWORK_DOWN, "closed with AT+NETCLOSE")
        self._fail_module_links(
            module_error(errno.ENETDOWN, "the network was closed (AT+NETCLOSE)", None, None)
        )
        yield from close_network()
        return None

    def open_network(self) -> Procedure:
        """``AT+NETOPEN`` (3.1) as a procedure, after :meth:`close_network`; the state is UP."""
        yield from reopen_network()
        if self.state is ModemState.NETWORK_DOWN:
            self._set_state(ModemState.UP, "opened with AT+NETOPEN")
        return None

    def send(self, link: Link, data: bytes) -> None:
        """Queue stream bytes on ``link``; they go out in ``AT+CIPSEND`` of at most 1500.

        On a link the module freed (``+IPCLOSE``) the bytes can never leave: the
        link fails with ``BrokenPipeError``, as a socket's write would.
        """
        if not self._owns(link) or link.failed:
            return
        if link.state is LinkState.OPEN:
            link.tx += data
            self._kick = True
        elif link.state is LinkState.PEER_CLOSED and not link.close_requested:
            self.linkwork.fail(link, broken_pipe(link))

    def send_datagram(self, link: Link, data: bytes, address: tuple[str, int]) -> None:
        """Queue one datagram on UDP ``link`` for ``address``."""
        if self._owns(link) and link.state is LinkState.OPEN and not link.failed:
            link.datagrams.append((data, address))
            self._kick = True

    def pause_reading(self, link: Link) -> None:
        """Stop reading ``link`` (its data waits in the module)."""
        link.reading = False

    def resume_reading(self, link: Link) -> None:
        """Read ``link`` again."""
        if not link.reading:
            link.reading = True
            self._kick = True

    def close_link(self, link: Link, *, abort: bool = False) -> None:
        """Close ``link``: flush what is queued (unless ``abort``), then ``AT+CIPCLOSE``."""
        if self._owns(link):
            self.linkwork.request_close(link, abort=abort)
            self._kick = True

    def set_timeouts(self, netopen_s: float, cipopen_s: float, cipsend_s: float) -> None:
        """Follow the module's AT+CIPTIMEOUT (3.12) in every bound of those commands."""
        self._cip_timeouts.update(
            {
                "+NETOPEN": netopen_s,
                "+NETCLOSE": netopen_s,
                "+CIPOPEN": cipopen_s,
                "+CIPCLOSE": cipopen_s,
                "+CIPSEND": cipsend_s,
            }
        )

    def close(self, exc: BaseException | None = None) -> None:
        """End the session: every request and link fails with ``exc``."""
        if self._closed is not None:
            return
        exc = exc if exc is not None else EngineClosedError(USER_CLOSE_REASON)
        self._closed = exc
        self.inflight = None
        for proc in list(self._procs.values()):
            self._forget(proc)
            proc.gen.close()
            if not proc.cancelled:
                self.emit(RequestFailed(proc.request, exc))
        self.late.fail_where(lambda _: False, exc)
        for link in list(self.links.values()):
            self.linkwork.release(link, exc)
        self._set_state(ModemState.CLOSED, str(exc))

    def timeout_for(self, command: Command) -> float:
        """How long ``command`` (and its late result) may take on this module.

        For the commands AT+CIPTIMEOUT governs, the module reports its own
        timeout (``+CIPOPEN: <link>,10``): the session waits a little longer,
        so that answer, with its code, is what the caller gets.
        """
        limit = self._cip_timeouts.get(command.name)
        if limit is None:
            return command.timeout_s
        return limit + CIPTIMEOUT_MARGIN_S

    def _owns(self, link: Link) -> bool:
        return self.links.get(link.number) is link

    # -- procedures ------------------------------------------------------------------

    def _submit(
        self, procedure: Procedure, *, urgent: bool = False, request: int | None = None
    ) -> int:
        if self._closed is not None:
            procedure.close()
            raise EngineClosedError("the modem is closed") from self._closed
        if request is None:
            self._requests += 1
            request = self._requests
        proc = Proc(request, procedure, urgent=urgent)
        self._procs[proc.request] = proc
        (self._urgent if urgent else self._ready).append(proc)
        self._kick = True
        return proc.request

    def _internal(self, procedure: Procedure) -> Proc:
        """Run a procedure of the session's own (first in line); nobody awaits its request."""
        proc = self._procs[self._submit(procedure, urgent=True)]
        proc.on_finish = _log_failure
        return proc

    def _forget(self, proc: Proc) -> None:
        self._procs.pop(proc.request, None)
        for queue in (self._ready, self._urgent):
            if proc in queue:
                queue.remove(proc)
        if proc in self._parked:
            self._parked.remove(proc)

    def _resume(
        self,
        proc: Proc,
        *,
        value: Any = None,
        error: BaseException | None = None,
        step: int | None = None,
    ) -> None:
        """Give a step's result back and run the procedure to its next step.

        A command it yields waits for its turn in the queue; a procedure that
        finishes reports at once.
        """
        if proc.request not in self._procs or (step is not None and step != proc.steps):
            return  # finished already, or a result for a step it has left
        proc.pending = (value, error)
        if self._step(proc) is not None:
            (self._urgent if proc.urgent else self._ready).append(proc)
        self._kick = True

    def _resumer(self, proc: Proc) -> Callable[[BaseException | None], None]:
        """A callback that resumes ``proc`` at its current step (with an error, or none)."""
        token = proc.steps
        return lambda exc: self._resume(proc, error=exc, step=token)

    def _step(self, proc: Proc) -> Cmd | None:
        """Run ``proc`` to its next command; ``None`` when it finished, slept or waits."""
        while True:
            try:
                value, error = proc.pending if proc.pending is not None else (None, None)
                proc.pending = None
                proc.started = True
                step = proc.gen.throw(error) if error is not None else proc.gen.send(value)
                proc.steps += 1
            except StopIteration as stop:
                self._finish(proc, value=stop.value)
                return None
            except Exception as exc:  # the procedure's own failure is the request's
                self._finish(proc, error=exc)
                return None
            proc.step = step
            if isinstance(step, Cmd):
                return step
            if isinstance(step, Sync):
                self.resync.begin(attempts=step.attempts, on_done=self._resumer(proc))
                self._kick = True  # the next turn is the probe's
                return None
            if isinstance(step, WaitUp):
                if self.state is ModemState.UP:
                    proc.pending = (None, None)
                    continue
                proc.deadline = self._now + step.timeout_s
            elif isinstance(step, Sleep):
                proc.deadline = self._now + step.seconds
            self._parked.append(proc)
            return None

    def _finish(self, proc: Proc, *, value: Any = None, error: BaseException | None = None) -> None:
        self._forget(proc)
        if proc.on_finish is not None:
            proc.on_finish(value, error)
            return
        if proc.cancelled:
            if isinstance(value, Link):
                self.linkwork.abandon(value)  # an open nobody waits for any more
            return
        if error is not None:
            self.emit(RequestFailed(proc.request, error))
        else:
            self.emit(RequestDone(proc.request, value))

    def _run_cmd(self, proc: Proc, step: Cmd) -> None:
        """Write a procedure's command; its result resumes the procedure."""
        proc.wrote = True
        token = proc.steps
        waiter: LateWaiter | None = None
        if step.late is not None:
            name, key = step.late

            def got(values: list[int]) -> None:
                if self.inflight is not None and self.inflight.late is waiter:
                    return  # before the final result: it is read then
                response.late = values
                self._resume(proc, value=response, step=token)

            def lost(exc: BaseException) -> None:
                self._resume(proc, error=exc, step=token)

            waiter = self.late.add(LateWaiter(name, key, got, lost))
        response = Response(step.command)

        def done(resp: Response) -> None:
            if waiter is not None:
                resp.late = waiter.values
                if resp.ok and waiter.values is None:
                    waiter.arm(self._now + self.timeout_for(step.command))
                    return  # the late result resumes the procedure
                self.late.discard(waiter)
            self._resume(proc, value=resp, step=token)

        def failed(exc: BaseException) -> None:
            if waiter is not None:
                self.late.discard(waiter)
            self._resume(proc, error=exc, step=token)

        self.issue(
            InFlight(
                step.command,
                response,
                done,
                failed,
                deadline=self._now + self.timeout_for(step.command),
                until_connect=step.until_connect,
                late=waiter,
                late_after_ok=step.late_after_ok,
            )
        )

    # -- the scheduler: one command in flight, fair turns ---------------------------------

    def issue(self, inflight: InFlight) -> None:
        """Write ``inflight``'s command; it is the one in flight until its final result."""
        assert self.inflight is None, "two commands in flight"
        self.inflight = inflight
        self.stats.commands += 1
        if self.stats.trace is not None:
            self.stats.trace.append(("->", inflight.command.line))
        self.write(inflight.wire())

    def finish_inflight(self, final: Ok | Error | CmeError | Connect | ConnectFail) -> None:
        """The final result of the command in flight arrived."""
        inflight = self.inflight
        assert inflight is not None
        inflight.response.final = final
        self.inflight = None
        inflight.on_done(inflight.response)

    def _pump(self) -> None:
        """Write the next command while none is in flight, as long as there is work.

        Work that arrives while a command is in flight waits for its final
        result (which runs this again), never for a timer.
        """
        while self._closed is None and self.inflight is None and not self._out_blocked():
            self._kick = False
            if not self._next_op() and not self._kick:
                break  # (a procedure that began waiting for a probe asks for one more look)
        self._kick = False

    def _out_blocked(self) -> bool:
        return self.datamode.blocks_commands()

    def _next_op(self) -> bool:
        """Start one operation; ``False`` when nothing waits for a turn."""
        if self.resync.active:
            return self.resync.next_probe()
        if self.datamode.next_op():
            return True
        if self.datamode.in_data_mode:
            return False
        if self._control_op(self._urgent):
            return True
        return self.linkwork.next_op(self._control_op)

    def _control_op(self, queue: deque[Proc] | None = None) -> bool:
        """Start the next procedure's command from ``queue`` (the ready queue by default)."""
        queue = self._ready if queue is None else queue
        held: list[Proc] = []
        started = False
        while queue and not started:
            proc = queue.popleft()
            step = proc.step if proc.started and proc.pending is None else self._step(proc)
            if self.resync.active:  # it began synchronising: the probe goes first
                queue.extendleft(reversed(held))
                return self.resync.next_probe()
            if not isinstance(step, Cmd):
                continue
            if self._held_back(step):
                held.append(proc)
                continue
            self._run_cmd(proc, step)
            started = True
        queue.extendleft(reversed(held))
        return started

    def _held_back(self, step: Cmd) -> bool:
        """A query that could be mistaken for an awaited late result waits (3.1, 3.6)."""
        command = step.command
        return (
            command.line.endswith("?")
            and command.name not in QUERY_SHAPE_DIFFERS
            and self.late.awaits(command.name)
        )

    def wants_turn(self) -> bool:
        """Control work waits for a command turn."""
        return bool(self._ready) or bool(self._urgent)

    # -- the module's side: where each event goes ------------------------------------

    def _dispatch(self, event: Event) -> None:
        if self.stats.trace is not None:
            self.stats.trace.append(("<-", describe(event)))
        inflight = self.inflight
        match event:
            case ReceivedData() | PushedData() | RawData():
                self.linkwork.data(event)
            case DataWaiting(link=number):
                self.linkwork.data_waiting(number)
            case Connect() | ConnectFail() if inflight is not None and inflight.until_connect:
                if isinstance(event, Connect):
                    self.datamode.connected()
                self.finish_inflight(event)
            case TransparentClosed():
                self.datamode.closed()
            case Ok() | Error() | CmeError():
                if inflight is None:
                    logger.warning("final result %r with no command in flight: dropped", event)
                elif self.resync.active and inflight.probe:
                    self.resync.final(event)
                else:
                    self.finish_inflight(event)
            case Prompt():
                self.linkwork.prompt()
            case IpError(info=info):
                if inflight is not None:
                    inflight.response.ip_error = info
                else:
                    logger.warning("+IP ERROR: %s with no command in flight", info)
            case Line():
                self._dispatch_line(event)
            case Echo(text=text):
                logger.debug("echo: %s", text)
            case LinkClosed(link=number, reason=reason):
                self.linkwork.peer_closed(number, reason)
            case ClientAccepted():
                self._client(event)
            case NetworkClosed():
                self._network_lost()
            case ModuleReady():
                self._restarted()
            case _:
                self.stats.unsolicited += 1
                logger.info("unhandled event: %r", event)

    def _dispatch_line(self, line: Line) -> None:
        inflight = self.inflight
        name = line.name
        if name == "+CIPERROR" and inflight is not None:
            fields = line.fields
            if fields and type(fields[0]) is int:
                inflight.response.cip_error = fields[0]
                return
        # Late results first: a query that looks like one is never in flight
        # while one is awaited (see _held_back), and +CIPOPEN? lines differ in shape.
        if self.late.resolve(line):
            if (
                inflight is not None
                and inflight is self.inflight
                and inflight.late is not None
                and inflight.late.values is not None
                and inflight.late_after_ok
            ):
                # Its late result comes only after its OK (3.3, 3.4, 3.1): the OK was lost.
                logger.warning(
                    "%s: its final result was lost; its late result came", inflight.command.line
                )
                self.finish_inflight(Ok())
            return
        if inflight is not None and inflight.claims(line):
            inflight.response.lines.append(line.text)
            return
        if name == "+CIPCLOSE":
            # NETCLOSE reports each link it closes (3.2) with nobody waiting.
            fields = line.fields
            if len(fields) == 2 and type(fields[0]) is int:
                self.linkwork.peer_closed(fields[0], 0)
                return
        self.stats.unsolicited += 1
        logger.info("unsolicited: %s", line.text)
        self.emit(Unsolicited(line))

    def _client(self, event: ClientAccepted) -> None:
        """``+CLIENT`` (3.14): the module gave a link number to an accepted client."""
        self.linkwork.take_number_for_client(event.link)
        client = Link(
            event.link, (event.host, event.port), server=event.server, state=LinkState.OPEN
        )
        self.links[event.link] = client
        if event.server not in self.servers:
            logger.warning("+CLIENT for server %d, which we did not start: closed", event.server)
            client.lost_reported = True
            self.linkwork.request_close(client, abort=True)
        else:
            client.reading = False  # until the server's transport takes it
            self.emit(ClientConnected(client.number, client.serial, event.server, client.peer))
        self._kick = True

    # -- the module's state: drops, restarts, recovery ----------------------------------

    def _set_state(self, state: ModemState, reason: str) -> None:
        if state is self.state and state is not ModemState.UP:
            return
        self.state = state
        quiet = state in (ModemState.UP, ModemState.STARTING) or reason == USER_CLOSE_REASON
        logger.log(logging.INFO if quiet else logging.WARNING, "modem %s: %s", state.value, reason)
        self.emit(StateChanged(state, reason))
        if state is ModemState.UP:
            for proc in [p for p in self._parked if isinstance(p.step, WaitUp)]:
                self._parked.remove(proc)
                self._resume(proc, value=None)

    def _fail_module_links(self, exc: OSError) -> None:
        """The module lost every socket: links, servers and their late results are gone."""
        for link in list(self.links.values()):
            self.linkwork.release(link, exc)
        self.servers.clear()
        self.late.fail_where(lambda w: w.name in ("+NETOPEN", "+NETCLOSE"), exc)

    def _network_lost(self) -> None:
        logger.warning("network closed unexpectedly")
        if self.state is ModemState.CLOSED:
            return
        self._fail_module_links(
            module_error(errno.ENETDOWN, "the module's network closed unexpectedly", None, None)
        )
        self._dropped = True  # the next bring-up closes a network still called open
        if self.state is ModemState.STARTING:
            self._restart_bring_up()  # it opens the network itself, once more
            return
        if self.state is ModemState.RESTARTING:
            self._recover(self._bring_up())  # bring-up opens it, once more
            return
        self._set_state(ModemState.NETWORK_DOWN, "+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY")
        self._recover(self._reopen_network())

    def _restarted(self) -> None:
        logger.warning("the module restarted (RDY)")
        if self.state is ModemState.CLOSED:
            return
        exc = module_error(
            errno.ECONNRESET, "the module restarted: its sockets are gone", None, None
        )
        # The module forgot the command in flight and every late result.
        inflight, self.inflight = self.inflight, None
        self.resync.stop()
        self.datamode.reset()
        self._fail_module_links(exc)
        self.late.fail_where(lambda _: False, exc)
        if inflight is not None:
            inflight.on_fail(exc)
        if self.state is ModemState.STARTING:
            self._restart_bring_up()
            return
        self._set_state(ModemState.RESTARTING, "the module restarted (RDY)")
        self._recover(self._bring_up())

    def _restart_bring_up(self) -> None:
        """The first bring-up starts again from scratch, under the same request."""
        if self._bringup is None:
            return
        proc = self._procs.get(self._bringup)
        if proc is None:
            return  # it has finished
        self._forget(proc)
        proc.gen.close()
        self._submit(self._starting(), urgent=True, request=self._bringup)

    def _recover(self, procedure: Procedure) -> None:
        """Run ``procedure`` first, again with backoff until it succeeds; then the state is UP."""
        if self._recovery is not None:
            self._forget(self._recovery)
            self._recovery.gen.close()
        self._recovery_attempt = 0
        proc = self._internal(procedure)
        proc.on_finish = self._recovered
        self._recovery = proc

    def _recovered(self, value: Any, error: BaseException | None) -> None:
        self._recovery = None
        if self._closed is not None:
            return
        if error is None:
            reason = (
                "the module is up again after its restart"
                if self.state is ModemState.RESTARTING
                else "the network is open again"
            )
            self._set_state(ModemState.UP, reason)
            return
        backoff = self.config.recovery_backoff_s
        delay = backoff[min(self._recovery_attempt, len(backoff) - 1)]
        self._recovery_attempt += 1
        logger.info("recovery failed (%s); again in %.1f s", error, delay)
        attempt = self._recovery_attempt
        again = self._bring_up() if self.state is ModemState.RESTARTING else self._reopen_network()

        def later() -> Procedure:
            yield Sleep(delay)
            return (yield from again)

        self._recover(later())
        self._recovery_attempt = attempt

    def _reopen_network(self) -> Procedure:
        return (yield from reopen_network())

    def _starting(self) -> Procedure:
        """The first bring-up: a module that answers gets a few tries (a garbled or lost
        answer makes one step time out); one that never answers fails at once."""
        for attempt in range(START_ATTEMPTS):
            try:
                return (yield from self._bring_up())
            except (OSError, ProtocolError) as exc:
                if attempt == START_ATTEMPTS - 1 or not self._synchronised:
                    raise
                logger.warning("bringing the module up failed (%s); again", exc)
                yield Sleep(self.config.recovery_backoff_s[0])
        raise AssertionError("unreachable")

    def _bring_up(self) -> Procedure:
        self._synchronised = False
        yield from synchronise()
        self._synchronised = True
        dropped, self._dropped = self._dropped, False
        try:
            info: ModuleInfo = yield from bring_up(self._options, after_drop=dropped)
        except BaseException:
            self._dropped = self._dropped or dropped
            raise
        self.info = info
        self.max_link = info.capabilities.links[1]
        self.push_mode = info.push_mode
        if self.state is ModemState.STARTING:
            self._set_state(ModemState.UP, "the module is up")
        return info

    def after_resync(self) -> None:
        """After a silence the module may have said things we never heard: ask it."""
        self.reconcile_soon()

    def reconcile_soon(self) -> None:
        """Compare the link table with the module's (once; a failed poll asks too)."""
        if self.state is ModemState.UP and self._recovery is None and not self._reconciling:
            self._reconciling = True
            proc = self._internal(self._reconcile())
            proc.on_finish = self._reconciled

    def _reconciled(self, value: Any, error: BaseException | None) -> None:
        self._reconciling = False
        _log_failure(value, error)

    def _reconcile(self) -> Procedure:
        """``AT+CIPOPEN?`` (3.3): a link the module freed unheard (a lost ``+IPCLOSE``) is
        closed by the peer; a link it holds that nobody owns (a lost ``+CLIENT``) is closed."""
        table: Response = yield Cmd(at.query("+CIPOPEN"))
        if not table.ok:
            return None
        held: set[int] = set()
        for fields in table.info("+CIPOPEN"):
            if fields and type(fields[0]) is int and len(fields) >= 5:
                held.add(fields[0])
        for number, link in list(self.links.items()):
            if link.state is LinkState.OPEN and not link.transparent and number not in held:
                logger.warning("link %d was closed without a notice", number)
                self.linkwork.peer_closed(number, 1)
        for number in held - set(self.links):
            if number <= self.max_link:
                logger.warning("link %d is open in the module and nobody's: closing it", number)
                orphan = Link(number, ("", 0), state=LinkState.OPEN)
                orphan.lost_reported = True
                self.links[number] = orphan
                self.linkwork.request_close(orphan, abort=True)
        return None


def _log_failure(value: Any, error: BaseException | None) -> None:
    if error is not None:
        logger.info("the session's own procedure failed: %s", error)
