"""Resynchronisation after a command got no answer: accept only an answer that is provably ours.

After a timeout the module may still owe the lost command's final result, or
may be reading a payload. A bare ``AT`` probe cannot tell its own ``OK`` from
that stale one, and the next ``AT+CIPSEND`` would then take the probe's
``OK`` as its own. So each probe is a query whose answer has an information
line of its own name (``AT+CIPHEAD?`` → ``+CIPHEAD: 1`` ``OK``): a final
result with no such line before it is stale and is skipped. Probes cycle
through :data:`PROBES`, twelve different commands, and a probe never has
the name of an answer that may still come: the command that timed out, or a
probe not answered yet (of this run or of a failed one before it). The
answers of those, which the module sends before this one's (first in, first
out), are skipped too, so once a probe is answered the stream is in step.
At most eleven probes go out in one run, so a name is always free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import commands as at
from .errors import ModuleUnresponsiveError, timeout_error
from .events import CmeError, Error, Ok
from .requests import InFlight
from .response import Response

if TYPE_CHECKING:
    from .session import Session

__all__ = ["PROBES", "Resync"]

logger = logging.getLogger("simsock.at.resync")

#: Side-effect-free commands whose answers name themselves (3.8-3.19, 3.21),
#: none of them named like a late result or a URC.
PROBES = (
    *(
        at.query(name)
        for name in (
            "+CIPHEAD",
            "+CIPSRIP",
            "+CIPSENDMODE",
            "+CIPMODE",
            "+CIPTIMEOUT",
            "+CIPCCFG",
            "+CSOCKETPN",
            "+CTCPKA",
            "+CPIN",
            "+CEREG",
        )
    ),
    at.test("+CIPACK"),
    at.test("+SERVERSTART"),
)


class Resync:
    """The session's resynchronisation; see the module docstring."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self.active = False
        self._attempts = 0
        self._limit = 0
        self._count = 0  # probes sent in this session (the cycle's position)
        #: Names whose answers may still come: never a probe's until one is answered.
        self._suspect: set[str] = set()
        #: Procedures waiting for the outcome (a Sync step); none after a timeout.
        self._waiters: list[Callable[[BaseException | None], None]] = []

    def begin(
        self,
        *,
        attempts: int | None = None,
        on_done: Callable[[BaseException | None], None] | None = None,
        suspect: str | None = None,
    ) -> None:
        """From now on only probes are written until one is provably answered.

        ``on_done(None)`` or ``on_done(TimeoutError)`` reports the outcome to a
        procedure. Without one (a command timed out), running out of probes
        ends the session with :class:`ModuleUnresponsiveError`. ``suspect``
        names the command whose answer may still come.
        """
        if suspect is not None:
            self._suspect.add(suspect)
        if on_done is not None:
            self._waiters.append(on_done)
        if not self.active:
            self.active = True
            self._attempts = 0
            limit = attempts or self._s.config.resync_attempts
            self._limit = min(limit, len(PROBES) - 1)  # see the module docstring

    def stop(self) -> None:
        """The module restarted: bring-up synchronises again from scratch."""
        self.active = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter(timeout_error("the module restarted while synchronising"))

    def next_probe(self) -> bool:
        """Write the next probe (the session's turn); ``False`` when resynchronised."""
        if not self.active:
            return False
        s = self._s
        for _ in range(len(PROBES)):
            command = PROBES[self._count % len(PROBES)]
            self._count += 1
            if command.name not in self._suspect:
                break
        self._suspect.add(command.name)
        s.issue(
            InFlight(
                command,
                Response(command),
                self._answered,
                self._unanswered,
                deadline=s.now + s.config.resync_probe_s,
                probe=True,
            )
        )
        return True

    def final(self, event: Ok | Error | CmeError) -> None:
        """A final result while a probe is in flight: the probe's own, or stale."""
        inflight = self._s.inflight
        assert inflight is not None
        response = inflight.response
        if isinstance(event, Ok) and response.info(inflight.command.name):
            self._s.finish_inflight(event)
            return
        logger.info("stale %r skipped while resynchronising", event)
        response.lines.clear()
        response.ip_error = response.cip_error = None

    def _answered(self, response: Response) -> None:
        self.active = False
        self._suspect.clear()  # everything said before this answer has been read
        waiters, self._waiters = self._waiters, []
        logger.info("synchronised with the module")
        for waiter in waiters:
            waiter(None)
        if not waiters:
            self._s.reconcile_soon()  # a silence may hide a lost notice

    def _unanswered(self, exc: BaseException) -> None:
        if not self.active:
            return  # stopped (the module restarted)
        self._attempts += 1
        if self._attempts < self._limit:
            return
        self.active = False
        waiters, self._waiters = self._waiters, []
        if waiters:
            for waiter in waiters:
                waiter(timeout_error(f"the module did not answer {self._limit} probes"))
            return
        logger.error("the module does not answer: giving up on the port")
        self._s.close(ModuleUnresponsiveError("the module stopped answering"))
