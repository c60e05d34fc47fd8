"""The module's state and its recovery: bring-up, network drops, restarts (reference 3.1, 4.2).

States (:class:`~.outcomes.ModemState`): STARTING until the first bring-up
ends, UP, NETWORK_DOWN after ``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY`` (or
``AT+NETCLOSE``), RESTARTING after ``RDY``, CLOSED at the end.

- A network drop fails every link with ``ENETDOWN`` and re-opens the network
  (``AT+NETOPEN?``; ``AT+NETCLOSE`` if it still says 1; ``AT+NETOPEN``).
- ``RDY``: the module forgot everything; links fail with ``ECONNRESET`` and
  bring-up runs again, from a proven synchronisation.
- A drop or a restart during bring-up or recovery starts it again.
- Recovery retries with backoff until it succeeds, whatever it failed with.
- After a resynchronisation (a silence), ``AT+CIPOPEN?`` finds what the module
  said that was never heard: a lost ``+IPCLOSE`` or ``+CLIENT``.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Any

from . import commands as at
from .bringup import BringUpOptions, ModuleInfo, bring_up, synchronise
from .errors import ProtocolError, module_error
from .link import Link, LinkState
from .note import NETWORK_CLOSED
from .outcomes import ModemState, StateChanged
from .procedures import Cmd, Procedure, Sleep, close_network, reopen_network
from .requests import Proc
from .response import Response
from .runner import log_failure

if TYPE_CHECKING:
    from .session import Session

__all__ = ["START_ATTEMPTS", "USER_CLOSE_REASON", "Recovery"]

logger = logging.getLogger("simsock.at.session")

#: Tries of the first bring-up once the module has answered.
START_ATTEMPTS = 3
#: The reason a user's ``close()`` gives.
USER_CLOSE_REASON = "the modem is closed"


class Recovery:
    """The session's view of the module's state; see the module docstring."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._options = BringUpOptions()
        self._bringup: int | None = None  # the first bring-up's request
        self._recovery: Proc | None = None
        self._attempt = 0
        self._synchronised = False
        self._dropped = False  # the network dropped since the last bring-up
        self._reconciling = False

    # -- state -------------------------------------------------------------------------

    def set_state(self, state: ModemState, reason: str) -> None:
        """Change the state (UP again is reported again); waits for UP end when it is."""
        s = self._s
        if state is s.state and state is not ModemState.UP:
            return
        s.state = state
        quiet = state in (ModemState.UP, ModemState.STARTING) or reason == USER_CLOSE_REASON
        logger.log(logging.INFO if quiet else logging.WARNING, "modem %s: %s", state.value, reason)
        s.emit(StateChanged(state, reason))
        if state is ModemState.UP:
            s.runner.module_up()

    def _module_lost(self, exc: OSError) -> None:
        """The module lost every socket: links, servers and their late results are gone."""
        s = self._s
        for link in list(s.links.values()):
            s.linkwork.release(link, exc)
        s.servers.clear()
        s.late.fail_where(lambda w: w.name in ("+NETOPEN", "+NETCLOSE"), exc)

    # -- bring-up --------------------------------------------------------------------------

    def start(self, options: BringUpOptions) -> int:
        """The first bring-up; its request's value is a :class:`ModuleInfo`."""
        self._options = options
        self._bringup = self._s.runner.submit(self._starting(), urgent=True)
        return self._bringup

    def _restart_bring_up(self) -> None:
        """The first bring-up starts again from scratch, under the same request."""
        runner = self._s.runner
        proc = runner.procs.get(self._bringup) if self._bringup is not None else None
        if proc is None:
            return  # it has finished
        runner.drop(proc)
        runner.submit(self._starting(), urgent=True, request=self._bringup)

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
                yield Sleep(self._s.config.recovery_backoff_s[0])
        raise AssertionError("unreachable")

    def _bring_up(self) -> Procedure:
        s = self._s
        self._synchronised = False
        yield from synchronise()
        self._synchronised = True
        dropped, self._dropped = self._dropped, False
        try:
            info: ModuleInfo = yield from bring_up(self._options, after_drop=dropped)
        except BaseException:
            self._dropped = self._dropped or dropped
            raise
        s.info = info
        s.max_link = info.capabilities.links[1]
        s.push_mode = info.push_mode
        if s.state is ModemState.STARTING:
            self.set_state(ModemState.UP, "the module is up")
        return info

    # -- faults ----------------------------------------------------------------------------

    def network_lost(self) -> None:
        """``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY`` (4.2)."""
        s = self._s
        logger.warning("network closed unexpectedly")
        if s.state is ModemState.CLOSED:
            return
        self._module_lost(
            module_error(errno.ENETDOWN, "the module's network closed unexpectedly", None, None)
        )
        self._dropped = True  # the next bring-up closes a network still called open
        if s.state is ModemState.STARTING:
            self._restart_bring_up()  # it opens the network itself, once more
        elif s.state is ModemState.RESTARTING:
            self._recover(self._bring_up())  # bring-up opens it, once more
        else:
            self.set_state(ModemState.NETWORK_DOWN, f"+CIPEVENT: {NETWORK_CLOSED}")
            self._recover(reopen_network())

    def restarted(self) -> None:
        """``RDY``: the module restarted and forgot the command in flight, every late result,
        every link and server, and every setting."""
        s = self._s
        logger.warning("the module restarted (RDY)")
        if s.state is ModemState.CLOSED:
            return
        exc = module_error(
            errno.ECONNRESET, "the module restarted: its sockets are gone", None, None
        )
        inflight, s.inflight = s.inflight, None
        s.resync.stop()
        s.datamode.reset()
        self._module_lost(exc)
        s.late.fail_where(lambda _: False, exc)
        if inflight is not None:
            inflight.on_fail(exc)
        if s.state is ModemState.STARTING:
            self._restart_bring_up()
            return
        self.set_state(ModemState.RESTARTING, "the module restarted (RDY)")
        self._recover(self._bring_up())

    def _recover(self, procedure: Procedure) -> None:
        """Run ``procedure`` first, again with backoff until it succeeds; then the state is UP."""
        runner = self._s.runner
        if self._recovery is not None:
            runner.drop(self._recovery)
        self._attempt = 0
        proc = runner.internal(procedure)
        proc.on_finish = self._recovered
        self._recovery = proc

    def _recovered(self, value: Any, error: BaseException | None) -> None:
        s = self._s
        self._recovery = None
        if s.closed:
            return
        if error is None:
            reason = (
                "the module is up again after its restart"
                if s.state is ModemState.RESTARTING
                else "the network is open again"
            )
            self.set_state(ModemState.UP, reason)
            return
        backoff = s.config.recovery_backoff_s
        delay = backoff[min(self._attempt, len(backoff) - 1)]
        attempt = self._attempt + 1
        logger.info("recovery failed (%s); again in %.1f s", error, delay)
        again = self._bring_up() if s.state is ModemState.RESTARTING else reopen_network()

        def later() -> Procedure:
            yield Sleep(delay)
            return (yield from again)

        self._recover(later())
        self._attempt = attempt

    # -- the user's network calls ------------------------------------------------------------

    def close_network(self) -> Procedure:
        """``AT+NETCLOSE`` (3.2): links end; the network stays closed (no recovery)."""
        if self._recovery is not None:
            self._s.runner.drop(self._recovery)
            self._recovery = None
        self.set_state(ModemState.NETWORK_DOWN, "closed with AT+NETCLOSE")
        self._module_lost(
            module_error(errno.ENETDOWN, "the network was closed (AT+NETCLOSE)", None, None)
        )
        yield from close_network()
        return None

    def open_network(self) -> Procedure:
        """``AT+NETOPEN`` (3.1) after :meth:`close_network`; the state is UP again."""
        yield from reopen_network()
        if self._s.state is ModemState.NETWORK_DOWN:
            self.set_state(ModemState.UP, "opened with AT+NETOPEN")
        return None

    # -- reconciling with the module's link table ----------------------------------------

    def reconcile_soon(self) -> None:
        """Compare the link table with the module's, once (after a resync, a failed poll)."""
        s = self._s
        if s.state is ModemState.UP and self._recovery is None and not self._reconciling:
            self._reconciling = True
            proc = s.runner.internal(self._reconcile())
            proc.on_finish = self._reconciled

    def _reconciled(self, value: Any, error: BaseException | None) -> None:
        self._reconciling = False
        log_failure(value, error)

    def _reconcile(self) -> Procedure:
        """``AT+CIPOPEN?`` (3.3): a link the module freed unheard (a lost ``+IPCLOSE``) is
        closed by the peer; a link it holds that nobody owns (a lost ``+CLIENT``) is closed."""
        s = self._s
        table: Response = yield Cmd(at.query("+CIPOPEN"))
        if not table.ok:
            return None
        held: set[int] = set()
        for fields in table.info("+CIPOPEN"):
            if fields and type(fields[0]) is int and len(fields) >= 5:
                held.add(fields[0])
        for number, link in list(s.links.items()):
            if link.state is LinkState.OPEN and not link.transparent and number not in held:
                logger.warning("link %d was closed without a notice", number)
                s.linkwork.peer_closed(number, 1)
        for number in held - set(s.links):
            if number <= s.max_link:
                logger.warning("link %d is open in the module and nobody's: closing it", number)
                orphan = Link(number, ("", 0), state=LinkState.OPEN)
                orphan.lost_reported = True
                s.links[number] = orphan
                s.linkwork.request_close(orphan, abort=True)
        return None
