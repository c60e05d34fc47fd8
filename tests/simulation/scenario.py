"""A small scripted harness: the session, the emulator's interpreter and the simulated network.

Where ``run.py`` draws random schedules, a :class:`Scenario` plays one fault
at one chosen moment, for the regression tests of ``test_faults.py``. The
three parts are linked byte for byte on a virtual clock; nothing sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from simsock.at.bringup import BringUpOptions, ModuleInfo
from simsock.at.commands import Command
from simsock.at.link import Link
from simsock.at.outcomes import (
    ClientConnected,
    LinkData,
    LinkDatagram,
    LinkEof,
    LinkLost,
    Outcome,
    RequestDone,
    RequestFailed,
)
from simsock.at.session import Session, SessionConfig
from simsock.emulator.interpreter import Interpreter
from simsock.emulator.settings import ModuleConfig

from .network import SimNetwork

__all__ = ["ECHO", "Scenario"]

#: The echo peer every scenario has (TCP and UDP).
ECHO = ("127.0.0.1", 7)
#: Virtual time one step may jump at most (s): bounds are seen with this precision.
MAX_STEP_S = 0.5


class Scenario:
    """One session, one virtual module, one network; see the module docstring."""

    def __init__(
        self,
        *,
        rx_mode: str = "buffer",
        seed: int = 1,
        interpreter: Interpreter | None = None,
        config: SessionConfig | None = None,
    ) -> None:
        self.now = 0.0
        self.it = interpreter or Interpreter(ModuleConfig(seed=seed, echo=True))
        self.net = SimNetwork(self.it, random.Random(seed))
        self.net.add_tcp_peer(*ECHO)
        self.net.add_udp_peer(*ECHO)
        self.s = Session(config or SessionConfig())
        self.outcomes: list[tuple[float, Outcome]] = []
        self.data: dict[int, bytearray] = {}  # by link serial
        self.datagrams: dict[int, list[tuple[bytes, tuple[str, int]]]] = {}
        self.lost: dict[int, BaseException | None] = {}  # by link serial
        self.eof: set[int] = set()
        self.clients: list[ClientConnected] = []
        self.results: dict[int, tuple[bool, Any]] = {}
        #: Module-to-host bytes held back until this time (a stalled line).
        self.hold_until = 0.0
        self._held = bytearray()
        self.wire: list[tuple[float, str, bytes]] = []
        #: Called with each outcome as it comes out (a test reacts at that moment).
        self.on_outcome: Callable[[Outcome], None] | None = None
        info = self.request(self.s.start(BringUpOptions(rx_mode=rx_mode)), 30)
        assert isinstance(info, ModuleInfo)

    # -- driving -----------------------------------------------------------------------

    def _pass_bytes(self) -> bool:
        moved = False
        out = self.s.data_to_send()
        if out:
            self.wire.append((self.now, "->", out))
            self.it.receive_data(out, self.now)
            moved = True
        self.net.execute(self.it.actions(), self.now)
        back = self.it.data_to_send()
        if back:
            self._held += back
        if self._held and self.now >= self.hold_until:
            data, self._held = bytes(self._held), bytearray()
            self.wire.append((self.now, "<-", data))
            self.s.receive_data(data, self.now)
            moved = True
        while (outcome := self.s.next_event()) is not None:
            self._record(outcome)
        return moved

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append((self.now, outcome))
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        match outcome:
            case RequestDone(request=r, value=v):
                self.results[r] = (True, v)
            case RequestFailed(request=r, error=e):
                self.results[r] = (False, e)
            case LinkData(serial=serial, data=data):
                self.data.setdefault(serial, bytearray()).extend(data)
            case LinkDatagram(serial=serial, data=data, address=address):
                self.datagrams.setdefault(serial, []).append((data, address))
            case LinkEof(serial=serial):
                self.eof.add(serial)
            case LinkLost(serial=serial, error=error):
                self.lost[serial] = error
            case ClientConnected():
                self.clients.append(outcome)

    def step(self) -> None:
        """Move bytes until the line is quiet, then jump to the next timer (at most MAX_STEP_S)."""
        self.s.handle_timer(self.now)
        while self._pass_bytes():
            self.s.handle_timer(self.now)
        timers = [t for t in (self.s.get_timer(), self.it.get_timer(), self.net.get_timer()) if t]
        if self._held:
            timers.append(self.hold_until)
        when = min([*timers, self.now + MAX_STEP_S])
        self.now = max(self.now, when)
        self.it.handle_timer(self.now)
        self.net.handle_timer(self.now)

    def run_until(self, done: Callable[[], bool], limit_s: float) -> float:
        """Step until ``done()``; the virtual seconds it took. AssertionError past ``limit_s``."""
        start = self.now
        while not done():
            assert self.now - start <= limit_s, f"not done within {limit_s} s of virtual time"
            self.step()
        return self.now - start

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass."""
        end = self.now + seconds
        while self.now < end:
            self.step()

    def request(self, request: int, limit_s: float = 150) -> Any:
        """Wait for ``request``; its value, or raise its error."""
        self.run_until(lambda: request in self.results, limit_s)
        ok, value = self.results[request]
        if not ok:
            raise value
        return value

    # -- the caller's side ------------------------------------------------------------------

    def open_tcp(self, peer: tuple[str, int] = ECHO) -> Link:
        """Open a TCP link and wait for it."""
        link = self.request(self.s.open_tcp(*peer))
        assert isinstance(link, Link)
        return link

    def command(self, command: Command) -> Any:
        """Run ``command`` and wait for its response."""
        return self.request(self.s.command(command))

    def echo(self, link: Link, payload: bytes, limit_s: float = 30) -> bytes:
        """Send ``payload`` on ``link``; what came back once it all did."""
        before = len(self.data.get(link.serial, b""))
        self.s.send(link, payload)
        self.run_until(
            lambda: len(self.data.get(link.serial, b"")) >= before + len(payload), limit_s
        )
        return bytes(self.data[link.serial][before:])

    def stall_module(self, seconds: float) -> None:
        """Hold what the module says for ``seconds`` (a stalled line): it arrives late."""
        self.hold_until = self.now + seconds

    def saw(self, kind: type, **fields: object) -> bool:
        """Whether an outcome of ``kind`` with those field values came out."""
        return any(
            isinstance(o, kind) and all(getattr(o, k) == v for k, v in fields.items())
            for _, o in self.outcomes
        )

    def module_links(self) -> list[int]:
        """The interpreter's open links."""
        return sorted(lk.number for lk in self.it.open_links())
