"""A deterministic simulation of the AT session against the virtual module (VOPR style).

One process, one virtual clock, no sockets, no sleeps, no asyncio. One seed is
one execution: every random choice draws from ``random.Random(seed)`` (the
interpreter's and the network's seeds are derived from it). A seeded schedule
drives both sides of the serial line:

- the line: bytes each way are delivered in random pieces (cut at any byte)
  with a small random latency, in order; a "stall" fault holds the module's
  side of the line for a few seconds (its answers then arrive late: stale);
- module faults, a random subset per schedule at random times in the first
  part of the run (see :data:`FAULT_KINDS`);
- caller actions: opens (echo peers, refused ports), writes, pause/resume,
  cancels, aborts, closes and queries; buffer-mode and push-mode schedules.

Invariants, checked at every step (see :class:`Simulation`):

1. per link life (serial) the bytes of ``LinkData`` are a prefix of what that
   connection's peer sent, and what the peer received is a prefix of what the
   caller wrote on that life (frozen once the life is reported failed: after a
   missing ``>`` the session writes filler the module may take as payload); at
   the end, on lives that ended with no error and were not aborted, everything
   written arrived and, when the peer closed, everything it sent was delivered
   before ``LinkEof``;
2. every request ends within :data:`REQUEST_BOUND_S` of virtual time, and every
   failure (request or link) is an ``OSError`` with ``errno`` set, or a
   ``ProtocolError``;
3. when both sides are quiescent, the session's link table matches the
   interpreter's (see :meth:`Simulation._quiescent`);
4. the session never has two commands in flight (its own assertion: any
   exception escaping a session method is a violation), and the module never
   reads a command line the host wrote before the previous line's final result
   reached the host, unless the session had given up on that command by then;
5. after the faults stop the session is ``UP`` again within
   :data:`RECOVERY_BOUND_S`, and a fresh open + echo of a few hundred bytes works.

Usage::

    python tests/simulation/run.py --seeds 2000 [--first 1] [--verbose] [--disable KIND,...]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from simsock.at import commands as at
from simsock.at.bringup import BringUpOptions
from simsock.at.errors import ProtocolError
from simsock.at.link import Link, LinkState
from simsock.at.outcomes import (
    LinkData,
    LinkDatagram,
    LinkEof,
    LinkLost,
    LinkSent,
    ModemState,
    Outcome,
    RequestDone,
    RequestFailed,
    StateChanged,
)
from simsock.at.requests import InFlight
from simsock.at.session import Session, SessionConfig
from simsock.emulator.actions import Close
from simsock.emulator.cmdline import CommandLine
from simsock.emulator.command import frame
from simsock.emulator.faults import STORM_URCS, FaultConfig
from simsock.emulator.interpreter import Interpreter, _Mode
from simsock.emulator.links import LinkState as ModuleLinkState
from simsock.emulator.settings import ModuleConfig
from tests.simulation.network import Connection, SimNetwork

__all__ = [
    "DEFAULT_DISABLED",
    "FAULT_KINDS",
    "Result",
    "Simulation",
    "main",
    "replay_command",
    "run_seed",
    "run_seeds",
]

HOST: Final = "127.0.0.1"
#: Echo peers the caller opens; a port not listed here refuses the connect.
ECHO_PORTS: Final = (7, 8, 9)
REFUSED_PORTS: Final = (1, 2)
#: Caller actions happen in [0, ACTIONS_END_S); faults in [FAULTS_START_S, FAULTS_END_S).
ACTIONS_END_S: Final = 20.0
FAULTS_START_S: Final = 0.5
FAULTS_END_S: Final = 15.0
#: A request ends within this much virtual time: AT+CIPTIMEOUT's 120 s plus the
#: session's margin (130 s), plus waiting for the network to be up again
#: (WaitUp, another 130 s) and the recovery's backoff.
REQUEST_BOUND_S: Final = 300.0
#: After the last fault the session is UP again within this (a command in
#: flight may take its whole CIPTIMEOUT bound first, then recovery's backoff).
RECOVERY_BOUND_S: Final = 200.0
#: The final open + echo (after recovery) completes within this.
FINAL_CHECK_BOUND_S: Final = 300.0
FINAL_ECHO_BYTES: Final = 300
#: Longest stall of the module's side of the line: a command's bound (>= 5 s,
#: the '>' prompt's) plus the resynchronisation's 5 probes of 1 s must not pass
#: before the stale answers arrive, or the session rightly gives the module up.
STALL_MAX_S: Final = 5.0
#: Steps of one schedule; more means the simulation livelocked.
MAX_STEPS: Final = 200_000

#: Every fault kind a schedule may pick (``--disable`` takes these names).
FAULT_KINDS: Final = (
    "drop_late",  # a late result (+CIPSEND:/+CIPOPEN:/+CIPCLOSE:) is lost
    "stall",  # the module's side of the line stalls 1-5 s: its answers may arrive stale
    "spoil_ok",  # an OK is garbled on the line (a lost final result)
    "mute",  # the module is silent < 3 s; what it would say meanwhile comes after
    "lossy_mute",  # silent < 3 s, and what it would say meanwhile is lost (URCs, data)
    "restart",  # RDY
    "drop_network",  # +CIPEVENT: NETWORK CLOSED UNEXPECTEDLY
    "peer_reset",  # the remote peer closes a link
    "ipclose",  # the module closes a link: +IPCLOSE: <n>,0|1|2
    "urc_storm",  # many URCs, half of them +CIPRXGET: 1 false alarms
    "forget_urc",  # +CIPRXGET: 1 notices forgotten
    "withhold_prompt",  # no '>' for an AT+CIPSEND
    "buffer_full",  # +CIPSEND: <n>,<len>,0
    "connect_timeout",  # +CIPOPEN: <n>,10 after the module's CIPOPEN timeout
    "urc_noise",  # unknown URCs between response lines (config, whole run)
)
#: Fault kinds off by default (``--enable`` turns one on): ``lossy_mute`` loses
#: notices (not delays them), which no host can always detect: a lost
#: ``+CIPEVENT`` while ``AT+NETOPEN?`` still says 1, or a lost ``+IPCLOSE`` on an
#: idle link until its next poll (docs/session.md, "Limits").
DEFAULT_DISABLED: frozenset[str] = frozenset({"lossy_mute"})
#: Checks beyond the five invariants, all on; each once caught a session bug:
#: ``timer_spin``, ``get_timer()`` is never at or before ``now`` right after
#: ``handle_timer(now)``; ``timeout_errno``, a ``TimeoutError`` has ``errno``
#: set; ``unknown_request``, no outcome names a request the caller never made;
#: ``clean_close_unsent``, a life the peer (or the module) closed that ended
#: with no error had every written byte delivered; ``busy_poll``, a quiet link
#: is not polled (``AT+CIPRXGET=4``) again within :data:`MIN_POLL_GAP_S`.
OPTIONAL_CHECKS: Final = (
    "timer_spin",
    "timeout_errno",
    "unknown_request",
    "clean_close_unsent",
    "busy_poll",
)
DEFAULT_CHECKS: frozenset[str] = frozenset(OPTIONAL_CHECKS)
#: The shortest gap between two polls of one link that is not a busy loop (s).
MIN_POLL_GAP_S: Final = 1.0

Address = tuple[str, int]


def replay_command(
    seed: int,
    disabled: frozenset[str] = DEFAULT_DISABLED,
    checks: frozenset[str] = DEFAULT_CHECKS,
) -> str:
    """The one line that replays ``seed`` with its transcript (and any non-default flags)."""
    line = f"python tests/simulation/run.py --seeds 1 --first {seed} --verbose"
    if disabled - DEFAULT_DISABLED:
        line += f" --disable {','.join(sorted(disabled - DEFAULT_DISABLED))}"
    if DEFAULT_DISABLED - disabled:
        line += f" --enable {','.join(sorted(DEFAULT_DISABLED - disabled))}"
    if checks - DEFAULT_CHECKS:
        line += f" --check {','.join(sorted(checks - DEFAULT_CHECKS))}"
    return line


# --- the module, with the harness's hooks ------------------------------------------------


class SimInterpreter(Interpreter):
    """The interpreter, plus faults the harness needs and wire bookkeeping for invariant 4.

    Bookkeeping: ``entered`` counts host bytes that reached the input buffer
    (mute discards before that); ``produced`` counts module output bytes taken
    by :meth:`data_to_send` (discarded ones too). Each command line is matched
    with the stream offset of its final result.
    """

    def __init__(self, config: ModuleConfig, sim: Simulation) -> None:
        self.sim = sim
        self.entered = 0
        self.produced = 0
        #: (end offset in the output stream, line index) of finals not yet delivered.
        self.finals: deque[tuple[int, int]] = deque()
        #: line index → virtual time its final result reached the host (inf: never).
        self.answered_at: dict[int, float] = {}
        #: Write time of the latest command line the module read, and its index.
        self.lines = 0
        self.last_line_written = -1.0
        self._polled: dict[str, float] = {}  # poll line -> when the module last read it
        #: The line whose final the module still owes (set at _end_of_line).
        self._line_open = False
        self.drop_late_prefixes: list[str] = []
        #: A mute holds the module's output (URCs, late results, pushed data)
        #: until it ends, instead of discarding it (see fault "lossy_mute").
        self.hold_when_muted = True
        super().__init__(config)

    @property
    def quiet(self) -> bool:
        """In command mode with nothing queued in either direction."""
        return (
            self._mode is _Mode.COMMAND
            and not self._inbuf
            and not self._held
            and not self._out
            and not self._lines.partial
            and not self._resume
        )

    def receive_data(self, data: bytes, now: float) -> None:
        if not self.faults.muted(max(self._now, now)):
            self.sim.host_bytes_entered(self.entered, len(data))
            self.entered += len(data)
        super().receive_data(data, now)

    def data_to_send(self) -> bytes:
        if self.hold_when_muted and self.faults.muted(self._now):
            return b""  # silent, not forgetful: what it says meanwhile comes out after
        size = len(self._out)
        start = self.produced
        data = super().data_to_send()
        self.produced += size
        if size and not data:  # muted: these bytes never reach the host
            while self.finals and self.finals[0][0] <= self.produced:
                self.answered_at[self.finals.popleft()[1]] = float("inf")
        self.sim.module_bytes_out(start, data)
        return data

    def reply(self, *parts: str | bytes) -> None:
        super().reply(*parts)
        last = parts[-1] if parts else None
        if (
            isinstance(last, str)
            and (
                last in ("OK", "ERROR", "CONNECT FAIL")
                or last.startswith(("+CME ERROR", "CONNECT"))
            )
            and self._line_open
        ):
            self._line_open = False
            # Answered once its CR is at the host (the LF may come in a later piece).
            self.finals.append((self.produced + len(self._out) - 1, self.lines - 1))

    def late(self, text: str) -> None:
        fields = text.partition(": ")[2].split(",")
        if text.startswith("+CIPSEND:") and len(set(fields[1:])) > 1:
            # A failed send's notice is never lost: the module sent nothing and goes
            # on sending later data, a gap in the stream no host could detect.
            super().late(text)
            return
        for prefix in self.drop_late_prefixes:
            if text.startswith(prefix):
                self.drop_late_prefixes.remove(prefix)
                self.sim.note(f"fault: late result {text!r} lost")
                return
        super().late(text)

    def _end_of_line(self, line: CommandLine) -> None:
        if line.text.startswith("AT+CIPRXGET=4,"):
            last = self._polled.get(line.text)
            if (
                last is not None
                and self._now - last < MIN_POLL_GAP_S
                and ("busy_poll" in self.sim.checks)
            ):
                raise Violation(
                    "7-no-busy-poll",
                    f"{line.text} at {last:.4f} and again at {self._now:.4f}",
                )
            self._polled[line.text] = self._now
        if line.text[:2].upper() == "AT" and not line.too_long:
            consumed = self.entered - len(self._inbuf)
            written = self.sim.host_write_time(consumed - 1)
            self.sim.check_line_order(self.lines, written)
            self.lines += 1
            self._line_open = True
            self.last_line_written = written
        super()._end_of_line(line)

    def mute(self, now: float, seconds: float | None = None) -> None:
        super().mute(now, seconds)
        self._line_open = False  # the line being run is abandoned: no final will come

    def restart(self, now: float, boot_s: float = 0.0) -> None:
        super().restart(now, boot_s)
        self._line_open = False

    def module_close(self, link: int, reason: int) -> None:
        """The module closes ``link`` itself: ``+IPCLOSE: <link>,<reason>`` (4.2)."""
        lk = self.links[link]
        if lk.state is not ModuleLinkState.OPEN or link == self.data_link:
            return
        self._confirm_all(lk, -1)
        lk.reset(keep_rx=True)
        self.request(Close(link))
        self._urc(frame(f"+IPCLOSE: {link},{reason}"))


# --- the serial line -------------------------------------------------------------------


class Wire:
    """One direction of the serial line: random pieces, small random latency, in order."""

    def __init__(self, rng: random.Random, name: str) -> None:
        self.rng = rng
        self.name = name
        #: (due, written at, stream offset, piece)
        self.queue: deque[tuple[float, float, int, bytes]] = deque()
        self.offset = 0
        self._last_due = 0.0
        self.stall_until = 0.0

    def put(self, data: bytes, now: float, offset: int | None = None) -> None:
        rng = self.rng
        if offset is not None:
            self.offset = offset
        pieces = rng.choice((1, 1, 1, 2, 3, 4)) if len(data) > 1 else 1
        cuts = sorted(rng.sample(range(1, len(data)), min(pieces - 1, len(data) - 1)))
        start = 0
        for cut in [*cuts, len(data)]:
            piece = data[start:cut]
            due = max(self._last_due, now + rng.uniform(0.0002, 0.004), self.stall_until)
            self._last_due = due
            self.queue.append((due, now, self.offset, piece))
            self.offset += len(piece)
            start = cut

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def stall(self, until: float) -> None:
        """Hold every piece not yet delivered until ``until``."""
        self.stall_until = until
        self.queue = deque((max(d, until), w, o, p) for d, w, o, p in self.queue)
        self._last_due = max(self._last_due, until)


# --- per-life records ----------------------------------------------------------------------


@dataclass
class Life:
    """One life (serial) of a link, as the caller saw it."""

    link: Link
    conn: Connection | None
    written: bytearray = field(default_factory=bytearray)
    delivered: bytearray = field(default_factory=bytearray)
    aborted: bool = False
    close_requested: bool = False
    eof: bool = False
    lost: bool = False
    error: BaseException | None = None
    #: Peer bytes checked against ``written`` so far; ``None`` once frozen (failed).
    peer_checked: int | None = 0


@dataclass
class Request:
    kind: str
    submitted: float
    port: int = 0


@dataclass
class Result:
    seed: int
    violations: list[tuple[str, str]]
    transcript: list[str]
    faults: list[str]
    end_time: float
    steps: int


class Violation(Exception):
    """An invariant broke: the schedule stops here."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


def _error_ok(exc: BaseException | None, checks: frozenset[str]) -> bool:
    if exc is None or isinstance(exc, ProtocolError):
        return True
    if isinstance(exc, TimeoutError) and "timeout_errno" not in checks:
        return True  # known session bug "timeout_errno": TimeoutError with errno None
    return isinstance(exc, OSError) and exc.errno is not None


# --- the simulation ------------------------------------------------------------------------


class Simulation:
    """One seed's execution; see the module docstring."""

    def __init__(
        self,
        seed: int,
        disabled: frozenset[str] = DEFAULT_DISABLED,
        checks: frozenset[str] = DEFAULT_CHECKS,
    ) -> None:
        self.seed = seed
        self.checks = checks
        rng = self.rng = random.Random(seed)
        self.push = rng.random() < 0.4
        kinds = [k for k in FAULT_KINDS if k not in disabled]
        if self.push:  # a lossy mute drops pushed data: a loss no host can recover
            kinds = [k for k in kinds if k != "lossy_mute"]
        self.kinds = [k for k in kinds if rng.random() < 0.3]
        noise = "urc_noise" in self.kinds
        config = ModuleConfig(
            seed=rng.getrandbits(32),
            latency_s=rng.choice((0.0, 0.001, 0.003)),
            urc_noise=STORM_URCS[:3] if noise else (),
            faults=FaultConfig(noise_rate=0.05 if noise else 1.0),
        )
        self.transcript: list[str] = []
        self.notes: list[str] = []
        self.it = SimInterpreter(config, self)
        self.net = SimNetwork(self.it, random.Random(rng.getrandbits(64)))
        for port in ECHO_PORTS:
            self.net.add_tcp_peer(HOST, port, "echo")
        self.s = Session(SessionConfig())
        issue = self.s.issue

        def issuing(inflight: InFlight) -> None:
            # A command the session dropped unanswered (a timeout, a missing '>',
            # a restart) is given up at the moment the next one is written.
            last = self._last_issued
            if last is not None and last.response.final is None:
                self.give_ups.append(self.now)
            self._last_issued = inflight
            issue(inflight)

        self._last_issued: InFlight | None = None
        self.s.issue = issuing  # type: ignore[method-assign]
        self.h2m = Wire(random.Random(rng.getrandbits(64)), "->")
        self.m2h = Wire(random.Random(rng.getrandbits(64)), "<-")
        self.now = 0.0
        self.steps = 0
        self.requests: dict[int, Request] = {}
        self.cancelled: set[int] = set()
        self._life_ids: dict[int, int] = {}
        self.lives: dict[int, Life] = {}
        self.owned: list[Link] = []  # links the caller holds (open, not lost)
        self.state = ModemState.STARTING
        self.last_fault = 0.0
        #: host stream: (end offset, write time) of each piece that reached the module.
        self._host_pieces: deque[tuple[int, float]] = deque()
        #: Times the session gave up on a command (timeout, missing prompt).
        self.give_ups: list[float] = []
        self._inflight: InFlight | None = None
        self._inflight_since = 0.0
        self.schedule: list[tuple[float, int, str, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.phase = "run"

    # -- bookkeeping for invariant 4 ------------------------------------------------

    def host_bytes_entered(self, offset: int, size: int) -> None:
        self._host_pieces.append((offset + size, self._piece_written))

    def host_write_time(self, offset: int) -> float:
        pieces = self._host_pieces
        while pieces and pieces[0][0] <= offset:
            pieces.popleft()
        return pieces[0][1] if pieces else self.now

    def module_bytes_out(self, start: int, data: bytes) -> None:
        if data:
            self.m2h.put(data, self.now, start)

    def check_line_order(self, index: int, written: float) -> None:
        """Line ``index`` was written at ``written``: the previous one must be answered by then."""
        if index == 0:
            return
        previous = index - 1
        answered = self.it.answered_at.get(previous)
        if answered is not None and answered <= written:
            return
        since = self.it.last_line_written
        # The session gave up on it (timeout, missing '>', a restart).
        if any(since <= t <= written for t in self.give_ups):
            return
        raise Violation(
            "4-one-command-in-flight",
            f"a command line written at {written:.4f} reached the module while line {previous}"
            f" (written {since:.4f}) had no final result at the host"
            f" ({'never' if answered is None else f'{answered:.4f}'})",
        )

    def life_id(self, serial: int) -> int:
        """Link serials count across the process: name lives by their order in this run."""
        return self._life_ids.setdefault(serial, len(self._life_ids) + 1)

    def note(self, text: str) -> None:
        self.transcript.append(f"{self.now:10.4f} !! {text}")

    # -- calling the session safely (an escaping exception is invariant 4) ----------

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Violation:
            raise
        except Exception as exc:
            raise Violation(
                "4-no-exception-escapes", f"{what} raised {type(exc).__name__}: {exc}"
            ) from exc

    def kick(self) -> None:
        self.call("handle_timer", self.s.handle_timer, self.now)
        timer = self.s.get_timer()
        if timer is not None and timer <= self.now:
            # handle_timer(now) ran and left a deadline at or before now: an owner
            # that sleeps until get_timer() spins (session bug "timer_spin").
            self._spinning = True
            if "timer_spin" in self.checks:
                raise Violation(
                    "6-timer-not-in-past",
                    f"get_timer() is {timer:.4f} right after handle_timer({self.now:.4f})",
                )
        else:
            self._spinning = False

    # -- scheduling -----------------------------------------------------------------

    def at(self, when: float, label: str, action: Callable[[], None]) -> None:
        self.schedule.append((when, next(self._seq), label, action))

    def plan(self) -> None:
        rng = self.rng
        for kind in self.kinds:
            if kind == "urc_noise":
                continue
            for _ in range(rng.choice((1, 1, 2))):
                when = rng.uniform(FAULTS_START_S, FAULTS_END_S)
                self.at(when, f"fault {kind}", self._fault_action(kind))
        for _ in range(rng.randint(3, 10)):
            when = rng.uniform(0.0, ACTIONS_END_S)
            kind = rng.choices(
                ("open", "write", "pause", "resume", "cancel", "abort", "close", "query", "peer"),
                weights=(4, 6, 1, 1, 1, 1, 2, 1, 1),
            )[0]
            self.at(when, f"caller {kind}", self._caller_action(kind))
        self.schedule.sort(key=lambda item: (item[0], item[1]))

    def _fault_action(self, kind: str) -> Callable[[], None]:
        rng = self.rng
        it = self.it

        def act() -> None:
            self.last_fault = self.now
            if kind == "drop_late":
                it.drop_late_prefixes.append(rng.choice(("+CIPSEND:", "+CIPOPEN:", "+CIPCLOSE:")))
            elif kind == "stall":
                self.m2h.stall(self.now + rng.uniform(1.0, STALL_MAX_S))
            elif kind == "spoil_ok":
                it.faults.arm_spoil_line(1, prefix="OK")
            elif kind in ("mute", "lossy_mute"):
                it.hold_when_muted = kind == "mute"
                it.mute(self.now, rng.uniform(0.1, 2.9))
            elif kind == "restart":
                it.restart(self.now, rng.choice((0.0, rng.uniform(0.0, 2.0))))
            elif kind == "drop_network":
                it.drop_network()
            elif kind == "peer_reset":
                open_links = [lk.number for lk in it.links if lk.is_open]
                if open_links:
                    self.net.reset_peer(rng.choice(open_links), self.now)
            elif kind == "ipclose":
                open_links = [lk.number for lk in it.links if lk.is_open]
                if open_links:
                    it.module_close(rng.choice(open_links), rng.choice((0, 1, 2)))
            elif kind == "urc_storm":
                it.urc_storm(rng.randint(5, 100))
            elif kind == "forget_urc":
                it.faults.arm_forget_data_urc(rng.randint(1, 3))
            elif kind == "withhold_prompt":
                it.faults.arm_withhold_prompt(1)
            elif kind == "buffer_full":
                it.faults.arm_send_buffer_full()
            elif kind == "connect_timeout":
                it.faults.arm_connect_timeout(1)

        return act

    def _caller_action(self, kind: str) -> Callable[[], None]:
        rng = self.rng

        def act() -> None:
            s = self.s
            if s.closed:
                return
            links = [lk for lk in self.owned if not self.lives[lk.serial].close_requested]
            if kind == "open":
                refused = rng.random() < 0.15
                port = rng.choice(REFUSED_PORTS if refused else ECHO_PORTS)
                self.open(port)
            elif kind == "write" and links:
                self.write(rng.choice(links), rng.randint(1, 3000))
            elif kind == "pause" and links:
                self.call("pause_reading", s.pause_reading, rng.choice(links))
            elif kind == "resume" and links:
                self.call("resume_reading", s.resume_reading, rng.choice(links))
            elif kind == "cancel":
                if self.requests:
                    request = rng.choice(sorted(self.requests))
                    del self.requests[request]  # a cancelled request reports nothing
                    self.cancelled.add(request)
                    self.call("cancel", s.cancel, request)
            elif kind in ("abort", "close") and links:
                self.close(rng.choice(links), abort=kind == "abort")
            elif kind == "query":
                name = rng.choice(("+CIPOPEN", "+NETOPEN"))
                request = self.call("command", s.command, at.query(name))
                self.requests[request] = Request("query", self.now)
            elif kind == "peer":
                open_links = [lk.number for lk in self.it.links if lk.is_open]
                if open_links:
                    data = rng.randbytes(rng.randint(1, 500))
                    self.net.peer_send(rng.choice(open_links), data, self.now)
            self.kick()

        return act

    # -- caller operations -------------------------------------------------------------

    def open(self, port: int) -> int:
        request = self.call("open_tcp", self.s.open_tcp, HOST, port)
        self.requests[request] = Request("open", self.now, port=port)
        self.kick()
        return int(request)

    def write(self, link: Link, size: int) -> None:
        life = self.lives[link.serial]
        data = self.rng.randbytes(size)
        accepted = (
            self.s.links.get(link.number) is link
            and link.state is LinkState.OPEN
            and not link.failed
        )
        self.call("send", self.s.send, link, data)
        if accepted:
            life.written += data
        self.kick()

    def close(self, link: Link, *, abort: bool) -> None:
        life = self.lives[link.serial]
        life.close_requested = True
        life.aborted = life.aborted or abort
        self.call("close_link", self.s.close_link, link, abort=abort)
        self.kick()

    # -- events ----------------------------------------------------------------------

    def drain_events(self) -> None:
        while True:
            event = self.call("next_event", self.s.next_event)
            if event is None:
                return
            self.on_event(event)

    def on_event(self, event: Outcome) -> None:
        match event:
            case RequestDone(request=request, value=value):
                req = self._finish_request(request, event)
                if req is not None and req.kind == "open":
                    if not isinstance(value, Link):
                        raise Violation("2-request-ends", f"open {request} gave {value!r}")
                    conn = self.net.connection_for_link(value.number)
                    self.lives[value.serial] = Life(value, conn)
                    self.owned.append(value)
                    if self.phase == "settle":  # the caller is closing everything now
                        self.close(value, abort=False)
                    self.transcript.append(
                        f"{self.now:10.4f} == open {request}: link {value.number}"
                        f"#{self.life_id(value.serial)} conn {conn.id if conn else None}"
                    )
            case RequestFailed(request=request, error=error):
                self._finish_request(request, event)
                if not _error_ok(error, self.checks):
                    raise Violation(
                        "2-failure-is-oserror",
                        f"request {request} failed with {type(error).__name__}: {error}",
                    )
                self.transcript.append(f"{self.now:10.4f} == request {request} failed: {error}")
            case LinkData(serial=serial, data=data):
                self._on_data(serial, data)
            case LinkEof(serial=serial):
                life = self.lives.get(serial)
                if life is not None:
                    if life.eof or life.lost:
                        raise Violation("1-no-byte-lost", f"life {serial}: EOF after EOF/loss")
                    life.eof = True
            case LinkLost(serial=serial, error=error):
                self.transcript.append(
                    f"{self.now:10.4f} == link #{self.life_id(serial)} lost: {error}"
                )
                if not _error_ok(error, self.checks):
                    raise Violation(
                        "2-failure-is-oserror",
                        f"link #{self.life_id(serial)} lost with {type(error).__name__}: {error}",
                    )
                life = self.lives.get(serial)
                if life is not None:
                    if life.lost:
                        raise Violation("1-no-byte-lost", f"life {serial}: LinkLost twice")
                    life.lost = True
                    life.error = error
                    if error is not None:
                        self._check_peer(life)
                        life.peer_checked = None  # frozen: filler may follow a missing '>'
                    if life.link in self.owned:
                        self.owned.remove(life.link)
            case LinkSent() | LinkDatagram():
                pass
            case StateChanged(state=state, reason=reason):
                self.state = state
                self.transcript.append(f"{self.now:10.4f} == state {state.value}: {reason}")
            case _:
                pass

    def _finish_request(self, request: int, event: Outcome) -> Request | None:
        req = self.requests.pop(request, None)
        if req is None:
            if request == self.bringup:
                return None
            if request not in self.cancelled and "unknown_request" not in self.checks:
                return None  # known session bug "unknown_request" (see OPTIONAL_CHECKS)
            what = "cancelled" if request in self.cancelled else "unknown"
            raise Violation("2-request-ends", f"outcome for {what} request {request}: {event}")
        return req

    def _on_data(self, serial: int, data: bytes) -> None:
        life = self.lives.get(serial)
        if life is None:
            raise Violation(
                "1-no-byte-crossed", f"LinkData for unknown life #{self.life_id(serial)}"
            )
        if life.eof or life.lost:
            raise Violation(
                "1-no-byte-lost", f"life #{self.life_id(serial)}: data after EOF/LinkLost"
            )
        offset = len(life.delivered)
        life.delivered += data
        conn = life.conn
        sent = conn.peer_sent if conn is not None else b""
        if sent[offset : offset + len(data)] != data:
            raise Violation(
                "1-no-byte-lost",
                f"life #{self.life_id(serial)}: delivered bytes {offset}..{offset + len(data)}"
                f" are not what the peer sent (peer sent {len(sent)},"
                f" conn {conn.id if conn else None})",
            )

    def _check_peer(self, life: Life) -> None:
        if life.peer_checked is None or life.conn is None:
            return
        got = life.conn.peer_received
        start = life.peer_checked
        if len(got) == start:
            return
        if got[start:] != life.written[start : len(got)]:
            raise Violation(
                "1-no-byte-lost",
                f"life #{self.life_id(life.link.serial)}: the peer received bytes"
                f" {start}..{len(got)} that were not written (written {len(life.written)})",
            )
        life.peer_checked = len(got)

    # -- invariants at every step ---------------------------------------------------------

    def check_step(self) -> None:
        for life in self.lives.values():
            if life.peer_checked is not None:
                self._check_peer(life)
        inflight = self.s.inflight
        if inflight is not self._inflight:
            old = self._inflight
            if old is not None and old.response.final is None:
                self.give_ups.append(self.now)
            self._inflight = inflight
        for request, req in self.requests.items():
            if self.now - req.submitted > REQUEST_BOUND_S:
                raise Violation(
                    "2-request-ends",
                    f"{req.kind} request {request} (at {req.submitted:.3f}) not ended by"
                    f" {self.now:.3f}",
                )
        if self._quiescent():
            self._compare_links()

    def _quiescent(self) -> bool:
        """Nothing in flight anywhere: no command, no late result, no bytes in transit.

        Session: no command in flight, no late result awaited, not
        resynchronising, no work due now. Line: both directions empty. Module:
        in command mode, nothing buffered in or out. Network: no event pending.
        """
        s = self.s
        if s.closed or s.inflight is not None or s.resync.active:
            return False
        timer = s.get_timer()
        if timer is not None and timer <= self.now:
            return False
        if self.h2m.queue or self.m2h.queue or self.net.get_timer() is not None:
            return False
        if not self.it.quiet or self.it._boot_at is not None:
            return False
        return next(iter(s.late), None) is None

    def _compare_links(self) -> None:
        ours = {
            n: lk
            for n, lk in self.s.links.items()
            if lk.state in (LinkState.OPEN, LinkState.OPENING, LinkState.CLOSING)
        }
        theirs = {lk.number: lk for lk in self.it.open_links()}
        if set(ours) != set(theirs):
            raise Violation(
                "3-link-tables-match",
                f"session {sorted((n, lk.state.value) for n, lk in ours.items())} vs module"
                f" {sorted((n, lk.state.value) for n, lk in theirs.items())}",
            )
        for number, link in ours.items():
            mod = theirs[number]
            if link.state is LinkState.OPEN and link.peer != (mod.remote_host, mod.remote_port):
                raise Violation(
                    "3-link-tables-match",
                    f"link {number}: session peer {link.peer}, module"
                    f" {(mod.remote_host, mod.remote_port)}",
                )

    # -- the loop -------------------------------------------------------------------------

    _piece_written = 0.0
    _spinning = False

    def _spin_deadline(self) -> float | None:
        """While get_timer() is stuck in the past (bug "timer_spin"): the other deadlines.

        The poll deadline that stays in the past while a command is in flight is
        left out; every other bound the session keeps is honoured exactly.
        """
        s = self.s
        deadlines = [s.late.next_deadline(), s.datamode.deadline()]
        if s.inflight is not None:
            deadlines.append(s.inflight.next_deadline())
        deadlines.extend(p.deadline for p in s.runner.parked)
        poll = s.linkwork.poll_deadline()
        if poll > self.now:
            deadlines.append(poll)
        when = min(deadlines)
        return None if when == float("inf") else when

    def _next_time(self) -> float | None:
        times = [
            self._spin_deadline() if self._spinning else self.s.get_timer(),
            self.it.get_timer(),
            self.net.get_timer(),
            self.h2m.next_due(),
            self.m2h.next_due(),
            self.schedule[0][0] if self.schedule else None,
        ]
        due = [t for t in times if t is not None]
        return max(min(due), self.now) if due else None

    def step(self) -> None:
        now = self.now
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise Violation("5-recovers", f"no end after {MAX_STEPS} steps (livelock?)")
        self.net.handle_timer(now)
        timer = self.it.get_timer()
        if timer is not None and timer <= now:
            self.it.handle_timer(now)
        while self.h2m.queue and self.h2m.queue[0][0] <= now:
            _, written, _, piece = self.h2m.queue.popleft()
            self._piece_written = written
            self.transcript.append(f"{now:10.4f} -> {piece!r}")
            self.it.receive_data(piece, now)
        while self.m2h.queue and self.m2h.queue[0][0] <= now:
            _, _, offset, piece = self.m2h.queue.popleft()
            self.transcript.append(f"{now:10.4f} <- {piece!r}")
            end = offset + len(piece)
            finals = self.it.finals
            while finals and finals[0][0] <= end:
                self.it.answered_at[finals.popleft()[1]] = now
            self.call("receive_data", self.s.receive_data, piece, now)
        self.drain_events()
        timer = self.s.get_timer()
        if timer is not None and timer <= now:
            self.kick()
        while self.schedule and self.schedule[0][0] <= now:
            _, _, label, action = self.schedule.pop(0)
            self.note(label)
            action()
        self.flush()

    def flush(self) -> None:
        """Move what each side wrote onto the line and the network; deliver outcomes."""
        for _ in range(100):
            self.drain_events()
            timer = self.s.get_timer()
            if timer is not None and timer <= self.now:
                self.kick()
            out = self.call("data_to_send", self.s.data_to_send)
            if out:
                self.h2m.put(out, self.now)
            self.it.data_to_send()  # onto the line (module_bytes_out)
            self.net.execute(self.it.actions(), self.now)
            if not out and not self.s._events:
                break
        self.check_step()

    def run_until(self, done: Callable[[], bool], limit: float, what: str) -> None:
        while not done():
            when = self._next_time()
            if when is None or when > limit:
                raise Violation(what, f"not reached by {limit:.3f} (now {self.now:.3f})")
            self.now = when
            self.step()

    def run(self) -> None:
        self.bringup = self.call(
            "start", self.s.start, BringUpOptions(rx_mode="push" if self.push else "buffer")
        )
        self.kick()
        self.plan()
        end_actions = max(ACTIONS_END_S, FAULTS_END_S)
        self.at(end_actions, "end of the random schedule", lambda: None)
        self.flush()
        self.run_until(lambda: not self.schedule and self.now >= end_actions, 1e9, "schedule")
        # Faults and random actions are over: recovery, then the final check.
        self.phase = "settle"
        self.disarm()
        if self.s.closed:
            raise Violation("5-recovers", f"the session closed: {self.s._closed!r}")
        bound = self.last_fault + RECOVERY_BOUND_S
        self.run_until(lambda: self.s.state is ModemState.UP or self.s.closed, bound, "5-recovers")
        if self.s.closed:
            raise Violation("5-recovers", f"the session closed: {self.s._closed!r}")
        for link in list(self.owned):
            if not self.lives[link.serial].close_requested:
                self.close(link, abort=False)
        self.flush()
        limit = self.now + REQUEST_BOUND_S
        self.run_until(lambda: not self.owned and not self.requests, limit, "2-request-ends")
        # Closes still awaiting their +CIPCLOSE: free every number before the final open.
        self.run_until(lambda: not self.s.links, self.now + REQUEST_BOUND_S, "2-request-ends")
        self.final_check()
        self.end_checks()

    def disarm(self) -> None:
        """The faults stop: one-shot faults armed and not yet taken are withdrawn."""
        faults = self.it.faults
        faults._forget_urcs = faults._withhold_prompts = faults._connect_timeouts = 0
        faults._spoil_lines = 0
        faults._buffer_full.clear()
        self.it.drop_late_prefixes.clear()

    def final_check(self) -> None:
        self.phase = "final"
        self.note("final open + echo")
        limit = self.now + FINAL_CHECK_BOUND_S
        request = self.open(ECHO_PORTS[0])
        self.flush()
        self.run_until(lambda: request not in self.requests, limit, "5-final-echo")
        if not self.owned:
            raise Violation("5-final-echo", "the final open failed (see transcript)")
        link = self.owned[-1]
        life = self.lives[link.serial]
        self.write(link, FINAL_ECHO_BYTES)
        self.flush()
        self.run_until(
            lambda: len(life.delivered) >= FINAL_ECHO_BYTES or life.lost, limit, "5-final-echo"
        )
        if bytes(life.delivered) != bytes(life.written):
            raise Violation("5-final-echo", f"echoed {len(life.delivered)} of {FINAL_ECHO_BYTES}")
        self.close(link, abort=False)
        self.flush()
        self.run_until(lambda: life.lost, limit, "5-final-echo")
        if life.error is not None:
            raise Violation("5-final-echo", f"the final close failed: {life.error}")

    def end_checks(self) -> None:
        for serial, life in self.lives.items():
            if not life.lost:
                raise Violation(
                    "2-request-ends", f"life #{self.life_id(serial)} never reported lost"
                )
            if life.error is not None or life.aborted or life.conn is None:
                continue
            got = bytes(life.conn.peer_received)
            if got != bytes(life.written) and (
                "clean_close_unsent" in self.checks
                or (not life.eof and life.link.remote_reason is None)
            ):
                raise Violation(
                    "1-no-byte-lost",
                    f"life #{self.life_id(serial)} ended cleanly but the peer got {len(got)} of"
                    f" {len(life.written)} bytes written",
                )
            # What reached the module (the network's `delivered`): bytes still in
            # flight when the link closed (a module-side close drops them) never did.
            if life.eof and bytes(life.delivered) != bytes(life.conn.delivered):
                raise Violation(
                    "1-no-byte-lost",
                    f"life #{self.life_id(serial)}: EOF after {len(life.delivered)} of"
                    f" {len(life.conn.delivered)} bytes the module received",
                )

    bringup = -1


@contextmanager
def _quiet_logs() -> Iterator[None]:
    logger = logging.getLogger("simsock")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_seed(
    seed: int,
    disabled: frozenset[str] = DEFAULT_DISABLED,
    checks: frozenset[str] = DEFAULT_CHECKS,
) -> Result:
    """Run one schedule; its violations (at most one: a schedule stops at the first)."""
    sim = Simulation(seed, disabled, checks)
    violations: list[tuple[str, str]] = []
    with _quiet_logs():
        try:
            sim.run()
        except Violation as exc:
            violations.append((exc.invariant, exc.detail))
    return Result(seed, violations, sim.transcript, sim.kinds, sim.now, sim.steps)


def run_seeds(
    first: int,
    count: int,
    disabled: frozenset[str] = DEFAULT_DISABLED,
    checks: frozenset[str] = DEFAULT_CHECKS,
    report: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run seeds ``first .. first+count-1``; the results with violations."""
    failed = []
    for seed in range(first, first + count):
        result = run_seed(seed, disabled, checks)
        if result.violations:
            failed.append(result)
            if report is not None:
                report(result)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many schedules")
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--verbose", action="store_true", help="print each transcript")
    parser.add_argument("--disable", default="", help="fault kinds to leave out (comma list)")
    parser.add_argument("--enable", default="", help="fault kinds disabled by default to use")
    parser.add_argument("--check", default="", help=f"extra checks: {', '.join(OPTIONAL_CHECKS)}")
    args = parser.parse_args(argv)
    checks = frozenset(n for n in args.check.split(",") if n)
    if checks - set(OPTIONAL_CHECKS):
        parser.error(f"unknown checks: {sorted(checks - set(OPTIONAL_CHECKS))}")
    checks |= DEFAULT_CHECKS
    names = {n for n in args.disable.split(",") if n}
    unknown = (names | {n for n in args.enable.split(",") if n}) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {sorted(unknown)}; choose from {FAULT_KINDS}")
    disabled = frozenset((DEFAULT_DISABLED - set(args.enable.split(","))) | names)
    violations = 0
    started = time.perf_counter()

    def report(result: Result) -> None:
        for invariant, detail in result.violations:
            print(f"seed {result.seed}: invariant {invariant}: {detail}")
            print(f"  faults: {', '.join(result.faults) or 'none'}")
            print(f"  replay: {replay_command(result.seed, disabled, checks)}")

    for seed in range(args.first, args.first + args.seeds):
        result = run_seed(seed, disabled, checks)
        if args.verbose:
            print(f"--- seed {seed}: faults {', '.join(result.faults) or 'none'}")
            print("\n".join(result.transcript))
            print(f"--- seed {seed}: {result.steps} steps, {result.end_time:.3f} s virtual")
        if result.violations:
            violations += len(result.violations)
            report(result)
    elapsed = time.perf_counter() - started
    print(f"({elapsed:.1f} s)", file=sys.stderr)
    print(f"simulation: {args.seeds} schedules, {violations} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
