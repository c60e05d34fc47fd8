"""Running procedures (:mod:`.procedures`): the session's requests, queued, stepped, bounded.

A request is a procedure. It waits in a queue until the session gives
control work a turn (``urgent`` ones, recovery and bring-up, go first), is
run up to its next step, and that step is carried out: a command written,
a sleep or a wait for the module to be up parked with its deadline, a
synchronisation handed to :mod:`.resync`. What the step produced is sent
back in, and a result that belongs to a step the procedure has already
left (a late callback) is ignored. The request's value or error goes out as
:class:`~.outcomes.RequestDone` / :class:`~.outcomes.RequestFailed`.
"""

from __future__ import annotations

import errno
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import EngineClosedError
from .late import LateWaiter
from .link import Link
from .opening import abandon
from .outcomes import ModemState, RequestDone, RequestFailed
from .procedures import Cmd, Procedure, Sleep, Sync, WaitUp
from .requests import InFlight, Proc
from .response import QUERY_SHAPE_DIFFERS, Response

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Runner"]

logger = logging.getLogger("simsock.at.session")


class Runner:
    """The session's procedures; see the module docstring."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._requests = 0
        self.procs: dict[int, Proc] = {}
        self._ready: deque[Proc] = deque()  # procedures whose next step waits for a turn
        self._urgent: deque[Proc] = deque()  # recovery and bring-up go first
        self.parked: list[Proc] = []  # sleeping, or waiting for the module to be up

    # -- requests ----------------------------------------------------------------------

    def submit(
        self, procedure: Procedure, *, urgent: bool = False, request: int | None = None
    ) -> int:
        """Queue ``procedure``; its request number (``request``: reuse that one)."""
        s = self._s
        if s.closed:
            procedure.close()
            raise EngineClosedError("the modem is closed")
        if request is None:
            self._requests += 1
            request = self._requests
        proc = Proc(request, procedure, urgent=urgent)
        self.procs[proc.request] = proc
        (self._urgent if urgent else self._ready).append(proc)
        s.kick()
        return proc.request

    def internal(self, procedure: Procedure) -> Proc:
        """Run a procedure of the session's own (first in line); nobody awaits its request."""
        proc = self.procs[self.submit(procedure, urgent=True)]
        proc.on_finish = log_failure
        return proc

    def cancel(self, request: int) -> None:
        """The caller gave up on ``request`` (see :meth:`Session.cancel`)."""
        proc = self.procs.get(request)
        if proc is None:
            return
        proc.cancelled = True
        if not proc.wrote:  # nothing of it reached the module: drop it
            self.drop(proc)

    def drop(self, proc: Proc) -> None:
        """End ``proc`` now, reporting nothing (a bring-up started again, a recovery replaced)."""
        self._forget(proc)
        proc.gen.close()

    def fail_all(self, exc: BaseException) -> None:
        """The session ended: every request fails with ``exc``."""
        for proc in list(self.procs.values()):
            self.drop(proc)
            if not proc.cancelled and proc.on_finish is None:
                self._s.emit(RequestFailed(proc.request, exc))

    def _forget(self, proc: Proc) -> None:
        self.procs.pop(proc.request, None)
        for queue in (self._ready, self._urgent):
            if proc in queue:
                queue.remove(proc)
        if proc in self.parked:
            self.parked.remove(proc)

    # -- stepping ----------------------------------------------------------------------

    def resume(
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
        if proc.request not in self.procs or (step is not None and step != proc.steps):
            return  # finished already, or a result for a step it has left
        proc.pending = (value, error)
        if self._step(proc) is not None:
            (self._urgent if proc.urgent else self._ready).append(proc)
        self._s.kick()

    def _resumer(self, proc: Proc) -> Callable[[BaseException | None], None]:
        """A callback that resumes ``proc`` at its current step (with an error, or none)."""
        token = proc.steps
        return lambda exc: self.resume(proc, error=exc, step=token)

    def _step(self, proc: Proc) -> Cmd | None:
        """Run ``proc`` to its next command; ``None`` when it finished, slept or waits."""
        s = self._s
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
                s.resync.begin(attempts=step.attempts, on_done=self._resumer(proc))
                s.kick()  # the next turn is the probe's
                return None
            if isinstance(step, WaitUp):
                if s.state is ModemState.UP:
                    proc.pending = (None, None)
                    continue
                proc.deadline = s.now + step.timeout_s
            elif isinstance(step, Sleep):
                proc.deadline = s.now + step.seconds
            self.parked.append(proc)
            return None

    def _finish(self, proc: Proc, *, value: Any = None, error: BaseException | None = None) -> None:
        self._forget(proc)
        if proc.on_finish is not None:
            proc.on_finish(value, error)
            return
        if proc.cancelled:
            if isinstance(value, Link):
                abandon(self._s, value)  # an open nobody waits for any more
            return
        if error is not None:
            self._s.emit(RequestFailed(proc.request, error))
        else:
            self._s.emit(RequestDone(proc.request, value))

    def wake(self, now: float) -> None:
        """Resume what slept until ``now``; a wait for the module to be up ends in ENETDOWN."""
        for proc in [p for p in self.parked if p.deadline <= now]:
            if self._s.closed or proc not in self.parked:
                continue
            self.parked.remove(proc)
            error = None
            if isinstance(proc.step, WaitUp):
                error = OSError(
                    errno.ENETDOWN, f"the module's network is down ({self._s.state.value})"
                )
            self.resume(proc, error=error)

    def module_up(self) -> None:
        """The module is up: every wait for it ends."""
        for proc in [p for p in self.parked if isinstance(p.step, WaitUp)]:
            self.parked.remove(proc)
            self.resume(proc, value=None)

    def next_deadline(self) -> list[float]:
        """The deadlines of what is parked."""
        return [p.deadline for p in self.parked]

    # -- turns -------------------------------------------------------------------------

    def wants_turn(self) -> bool:
        """Control work waits for a command turn."""
        return bool(self._ready) or bool(self._urgent)

    def urgent_turn(self) -> bool:
        """The turn recovery and bring-up take before anything else; ``False``: none waits."""
        return self.turn(self._urgent)

    def turn(self, queue: deque[Proc] | None = None) -> bool:
        """Start the next procedure's command from ``queue`` (the ready queue by default)."""
        s = self._s
        queue = self._ready if queue is None else queue
        held: list[Proc] = []
        started = False
        while queue and not started:
            proc = queue.popleft()
            step = proc.step if proc.started and proc.pending is None else self._step(proc)
            if s.resync.active:  # it began synchronising: the probe goes first
                queue.extendleft(reversed(held))
                return s.resync.next_probe()
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
            and self._s.late.awaits(command.name)
        )

    def _run_cmd(self, proc: Proc, step: Cmd) -> None:
        """Write a procedure's command; its result resumes the procedure."""
        s = self._s
        proc.wrote = True
        token = proc.steps
        waiter: LateWaiter | None = None
        response = Response(step.command)
        if step.late is not None:
            name, key = step.late

            def got(values: list[int]) -> None:
                if s.inflight is not None and s.inflight.late is waiter:
                    return  # before the final result: it is read then
                response.late = values
                self.resume(proc, value=response, step=token)

            def lost(exc: BaseException) -> None:
                self.resume(proc, error=exc, step=token)

            waiter = s.late.add(LateWaiter(name, key, got, lost))

        def done(resp: Response) -> None:
            if waiter is not None:
                resp.late = waiter.values
                if resp.ok and waiter.values is None:
                    waiter.arm(s.now + s.timeout_for(step.command))
                    return  # the late result resumes the procedure
                s.late.discard(waiter)
            self.resume(proc, value=resp, step=token)

        def failed(exc: BaseException) -> None:
            if waiter is not None:
                s.late.discard(waiter)
            self.resume(proc, error=exc, step=token)

        s.issue(
            InFlight(
                step.command,
                response,
                done,
                failed,
                deadline=s.now + s.timeout_for(step.command),
                until_connect=step.until_connect,
                late=waiter,
                late_after_ok=step.late_after_ok,
            )
        )


def log_failure(value: Any, error: BaseException | None) -> None:
    """The end of a procedure of the session's own: only a failure is worth a line."""
    if error is not None:
        logger.info("the session's own procedure failed: %s", error)
