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

import logging
import math
from collections import deque
from dataclasses import dataclass

from . import commands as at
from .bringup import BringUpOptions, ModuleInfo
from .commands import Command
from .datamode import DataMode
from .dispatch import dispatch
from .errors import EngineClosedError, ProtocolError, timeout_error
from .events import (
    CmeError,
    Connect,
    ConnectFail,
    Error,
    Ok,
)
from .late import LateTable
from .link import Link, LinkState
from .linkwork import LinkWork
from .note import CIPTIMEOUT_DEFAULT_S, ESCAPE_GUARD_S, MAX_LINK
from .opening import open_link
from .outcomes import (
    LinkData,
    ModemState,
    Outcome,
)
from .parser import Parser
from .procedures import (
    Procedure,
    run_command,
)
from .recovery import USER_CLOSE_REASON, Recovery
from .requests import InFlight
from .resync import Resync
from .runner import Runner
from .sending import broken_pipe, prompt_overdue
from .servers import start_server, stop_server
from .stats import Stats

__all__ = ["RECOVERY_BACKOFF_S", "Session", "SessionConfig"]

logger = logging.getLogger("simsock.at.session")

#: How much longer than the module's own AT+CIPTIMEOUT the session waits.
CIPTIMEOUT_MARGIN_S = 5.0
#: Waits between recovery attempts, in seconds; the last one repeats.
RECOVERY_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


@dataclass(slots=True)
class SessionConfig:
    """The session's tunables (``open_modem`` options)."""

    #: How long the module may take to send ``>`` after ``AT+CIPSEND`` (3.4).
    prompt_timeout_s: float = 5.0
    #: How often quiet links being read are polled with ``AT+CIPRXGET=4`` (3.5).
    poll_interval_s: float = 5.0
    #: Probes before the module is declared unresponsive, and each one's bound.
    resync_attempts: int = 8  # at most 11 (resync.py); 8 s of silence
    resync_probe_s: float = 1.0
    recovery_backoff_s: tuple[float, ...] = RECOVERY_BACKOFF_S
    #: Transparent mode's ``+++`` guard time (2) and the line's rate (for it).
    escape_guard_s: float = ESCAPE_GUARD_S
    baudrate: int = 115200
    #: Recent wire lines kept for diagnostics (0: none).
    trace_lines: int = 0
    #: Send with the variable-length form, ``AT+CIPSEND=<link>`` and the
    #: payload escaped and ended with Ctrl+Z (3.4), not with a fixed length.
    send_ctrl_z: bool = False
    #: Read buffered data as hex, ``AT+CIPRXGET=3,<link>,750`` (3.5), not raw.
    hex_reads: bool = False


class Session:
    """The sans-I/O AT protocol session; see the module docstring."""

    def __init__(self, config: SessionConfig | None = None, *, now: float = 0.0) -> None:
        self.config = config if config is not None else SessionConfig()
        self.stats = Stats(
            trace=deque(maxlen=self.config.trace_lines) if self.config.trace_lines else None
        )
        self._now = now
        #: The parser of the module's output (transparent mode switches it).
        self.parser = Parser()
        self._out = bytearray()
        self._events: deque[Outcome] = deque()
        self.state = ModemState.STARTING
        self._closed: BaseException | None = None
        #: Links whose numbers are taken, by number.
        self.links: dict[int, Link] = {}
        #: Listening servers: index → port.
        self.servers: dict[int, int] = {}
        self.info = ModuleInfo()
        self.max_link = MAX_LINK
        self.push_mode = False
        #: Maximum response times that AT+CIPTIMEOUT sets (3.12), in seconds.
        self._cip_timeouts = dict.fromkeys(
            ("+NETOPEN", "+NETCLOSE", "+CIPOPEN", "+CIPSEND", "+CIPCLOSE"),
            CIPTIMEOUT_DEFAULT_S,
        )
        self.late = LateTable()
        self.inflight: InFlight | None = None
        self._kick = False
        self.runner = Runner(self)
        self.linkwork = LinkWork(self)
        self.datamode = DataMode(self)
        self.resync = Resync(self)
        self.recovery = Recovery(self)

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
        self.parser.feed(data)
        self.parse()
        if self.datamode.enabled:
            self.datamode.after_receive()
        if self._kick:
            self._pump()  # payload alone never lets a command go: skip the look

    def parse(self) -> None:
        """Turn what the parser holds into events, and route each one."""
        parser = self.parser
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
                dispatch(self, event)
            except ProtocolError as exc:
                self.stats.protocol_errors += 1
                logger.warning("protocol error: %s", exc)

    def data_to_send(self) -> bytes:
        """What to write to the port now, in order; clears it.

        In data mode the transparent link's bytes come a slice per call: call
        again while the port takes them at once (:attr:`wants_write`), and
        after it has drained otherwise.
        """
        if not self._out:
            self.datamode.fill()
            if not self._out:
                return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def wants_write(self) -> bool:
        """:meth:`data_to_send` has something to give."""
        return bool(self._out) or self.datamode.can_fill()

    def next_event(self) -> Outcome | None:
        """The next outcome for the owner, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (the owner's clock), or ``None``."""
        if self._closed is not None:
            return None
        if self._kick:
            return self._now
        # (Called after every read of the port: the common cases cost little.)
        inflight = self.inflight
        if inflight is not None:
            when = min(inflight.deadline, inflight.prompt_deadline)
        else:
            when = self.linkwork.poll_deadline()  # polls wait for a free turn
        if self.late:
            when = min(when, self.late.next_deadline())
        if self.runner.parked:
            when = min(when, *self.runner.next_deadline())
        if self.datamode.enabled:
            when = min(when, self.datamode.deadline())
        return None if when == math.inf else when

    def handle_timer(self, now: float) -> None:
        """Let time pass: fail what is overdue, wake what slept, run what waits."""
        self._advance(now)
        if self._closed is not None:
            return
        self._kick = False
        inflight = self.inflight
        if inflight is not None and inflight.prompt_deadline <= self._now:
            prompt_overdue(self, inflight)
            self.resync.begin()
        elif inflight is not None and inflight.deadline <= self._now:
            self._overdue(inflight)
        self.late.expire(self._now)
        self.runner.wake(self._now)
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
        """Queue an outcome for the owner.

        Stream bytes that follow stream bytes of the same link join them: one
        read of the port that carried several payloads is one delivery.
        """
        events = self._events
        if type(outcome) is LinkData and events:
            last = events[-1]
            if type(last) is LinkData and last.serial == outcome.serial:
                events[-1] = LinkData(last.link, last.serial, last.data + outcome.data)
                return
        events.append(outcome)

    def write(self, data: bytes) -> None:
        """Queue bytes for the port."""
        self.stats.bytes_written += len(data)
        self.datamode.wrote(len(data))
        self._out += data

    # -- the user's intents ----------------------------------------------------------

    def start(self, options: BringUpOptions) -> int:
        """Bring the module up; the request's value is a :class:`ModuleInfo`."""
        return self.recovery.start(options)

    def command(self, command: Command, *, until_connect: bool = False) -> int:
        """Queue ``command``; the request's value is its :class:`Response`."""
        return self.run(run_command(command, until_connect=until_connect))

    def run(self, procedure: Procedure) -> int:
        """Queue a procedure (:mod:`.procedures`); its return value is the request's value."""
        return self.runner.submit(procedure)

    def cancel(self, request: int) -> None:
        """The caller gave up on ``request``.

        A request not yet begun is dropped. One whose command is on the wire
        runs on, so the module and the session stay in step; its outcome is
        not reported, and an open it made is closed again.
        """
        self.runner.cancel(request)

    def open_tcp(
        self, host: str, port: int, local_port: int | None = None, *, paused: bool = False
    ) -> int:
        """Open a TCP link (``AT+CIPOPEN``, 3.3); the request's value is the :class:`Link`.

        The link number is chosen when the command is written, not now: a
        ``+CLIENT`` that takes a number meanwhile leaves the other one.
        """
        at.cipopen_tcp(0, host, port, local_port)  # validated before anything is queued
        return self.run(open_link(self, host, port, local_port, paused=paused))

    def open_udp(self, local_port: int, remote: tuple[str, int] | None) -> int:
        """Open a UDP link (``AT+CIPOPEN=<n>,"UDP",,,<port>``); the value is the :class:`Link`."""
        at.cipopen_udp(0, local_port)
        return self.run(open_link(self, None, 0, local_port, udp_remote=remote))

    def start_server(self, port: int, index: int, backlog: int) -> Procedure:
        """``AT+SERVERSTART`` (3.14) as a procedure (:mod:`.servers`)."""
        return start_server(self, port, index, backlog)

    def stop_server(self, index: int) -> Procedure:
        """``AT+SERVERSTOP`` (3.15) as a procedure, once the server's clients are closed."""
        return stop_server(self, index)

    def close_network(self) -> Procedure:
        """``AT+NETCLOSE`` (3.2) as a procedure: links end, and the network stays closed
        (no recovery) until :meth:`open_network`."""
        return self.recovery.close_network()

    def open_network(self) -> Procedure:
        """``AT+NETOPEN`` (3.1) as a procedure, after :meth:`close_network`; the state is UP."""
        return self.recovery.open_network()

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
        """Queue one datagram on UDP ``link`` for ``address``.

        On a transparent link (3.3.3) the bytes go raw to its one peer; the
        module, not the host, decides where one datagram ends.
        """
        if self._owns(link) and link.state is LinkState.OPEN and not link.failed:
            if link.transparent:
                link.tx += data
            else:
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
        self.runner.fail_all(exc)
        self.late.fail_where(lambda _: False, exc)
        for link in list(self.links.values()):
            self.linkwork.release(link, exc)
        self.recovery.set_state(ModemState.CLOSED, str(exc))

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

    def kick(self) -> None:
        """Something changed that may let a command go: :meth:`get_timer` says now."""
        self._kick = True

    def reconcile_soon(self) -> None:
        """Compare the link table with the module's (after a resync; a failed poll asks too)."""
        self.recovery.reconcile_soon()

    def _owns(self, link: Link) -> bool:
        return self.links.get(link.number) is link

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
        if self.runner.urgent_turn():
            return True
        return self.linkwork.next_op(self.runner.turn)

    def wants_turn(self) -> bool:
        """Control work waits for a command turn."""
        return self.runner.wants_turn()
