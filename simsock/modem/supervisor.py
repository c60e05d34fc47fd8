"""Recovery: network loss, module restarts, an unresponsive module; and the state users observe.

- ``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY`` (4.2): every open link fails at
  once with ``OSError(ENETDOWN)``; then, with backoff, ``AT+NETOPEN?`` and, if
  it still says 1, ``AT+NETCLOSE`` (as the reference says), then
  ``AT+NETOPEN`` until it succeeds.
- ``RDY`` (the module restarted: every socket and setting is gone): links fail
  with ``ConnectionResetError`` and the whole bring-up runs again.
- A module that stops answering: the engine resynchronises after a timeout,
  or gives up and the state becomes ``CLOSED``.

States and their changes are observable: ``modem.state``,
``modem.add_state_listener(callback)`` and ``async for change in modem.state_changes()``.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ..at import commands as at
from ..at.errors import module_error
from .engine import USER_CLOSE_REASON, Engine, EngineClosedError
from .startup import open_network

__all__ = ["ModemState", "StateChange", "Supervisor"]

logger = logging.getLogger("simsock.modem.supervisor")

#: Waits between recovery attempts, in seconds; the last one repeats.
RECOVERY_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


class ModemState(enum.Enum):
    """Where the module is, as far as simsock knows."""

    UP = "up"  # network open, links usable
    NETWORK_DOWN = "network-down"  # the PDP context dropped; re-opening
    RESTARTING = "restarting"  # the module restarted; bringing it up again
    CLOSED = "closed"  # the modem was closed, or its port or module died


@dataclass(frozen=True, slots=True)
class StateChange:
    """One change of :class:`ModemState`, with the reason in words."""

    state: ModemState
    reason: str


class Supervisor:
    """Watches the engine's hooks and runs recovery; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        bring_up: Callable[[], Awaitable[object]],
        *,
        backoff_s: tuple[float, ...] = RECOVERY_BACKOFF_S,
    ) -> None:
        self._engine = engine
        self._bring_up = bring_up
        self._backoff = backoff_s
        self.state = ModemState.UP
        self._listeners: list[Callable[[StateChange], None]] = []
        self._task: asyncio.Task[None] | None = None
        engine.on_network_closed = self._network_lost
        engine.on_ready = self._restarted
        engine.on_resync = self._resynced

    # -- observing ---------------------------------------------------------------

    def add_listener(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``callback(change)`` on every state change; returns a function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    async def changes(self) -> AsyncIterator[StateChange]:
        """Every state change from now on, until the modem closes."""
        queue: asyncio.Queue[StateChange] = asyncio.Queue()
        remove = self.add_listener(queue.put_nowait)
        try:
            while True:
                change = await queue.get()
                yield change
                if change.state is ModemState.CLOSED:
                    return
        finally:
            remove()

    def _set(self, state: ModemState, reason: str) -> None:
        if state is self.state and state is not ModemState.UP:
            return
        self.state = state
        change = StateChange(state, reason)
        # Faults are warnings; getting better, or a close the user asked for, is not.
        quiet = state is ModemState.UP or reason == USER_CLOSE_REASON
        logger.log(logging.INFO if quiet else logging.WARNING, "modem %s: %s", state.value, reason)
        for callback in list(self._listeners):
            try:
                callback(change)
            except Exception:
                logger.exception("state listener failed")

    def check_up(self) -> None:
        """Raise the OSError a socket call gets while the module is not usable."""
        if self.state is ModemState.UP:
            return
        if self.state is ModemState.CLOSED:
            raise EngineClosedError("the modem is closed")
        raise OSError(errno.ENETDOWN, f"the module's network is down ({self.state.value})")

    # -- faults --------------------------------------------------------------------

    def _network_lost(self) -> None:
        if self.state in (ModemState.CLOSED, ModemState.RESTARTING):
            return
        self._set(ModemState.NETWORK_DOWN, "+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY")
        self._engine.fail_links(
            module_error(errno.ENETDOWN, "the module's network closed unexpectedly", None, None)
        )
        self._start(self._reopen_network())

    def _restarted(self) -> None:
        if self.state is ModemState.CLOSED:
            return
        self._set(ModemState.RESTARTING, "the module restarted (RDY)")
        self._engine.fail_links(
            module_error(errno.ECONNRESET, "the module restarted: its sockets are gone", None, None)
        )
        self._start(self._reinitialise())

    def _resynced(self, ok: bool) -> None:
        if not ok:
            self._set(ModemState.CLOSED, "the module stopped answering")

    def closed(self, reason: str) -> None:
        """The modem is closed (by the user or because its port went away)."""
        if self._task is not None:
            self._task.cancel()
        self._set(ModemState.CLOSED, reason)

    # -- recovery ------------------------------------------------------------------

    def _start(self, coro: Awaitable[None]) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.ensure_future(coro)

    async def _retry(self, attempt: Callable[[], Awaitable[None]], what: str) -> None:
        for n in range(10_000):
            if self._engine.closed:
                return
            try:
                await attempt()
            except (OSError, TimeoutError) as exc:
                delay = self._backoff[min(n, len(self._backoff) - 1)]
                logger.info("%s failed (%s); again in %.1f s", what, exc, delay)
                await asyncio.sleep(delay)
                continue
            return

    async def _reopen_network(self) -> None:
        engine = self._engine

        async def attempt() -> None:
            state = await engine.execute(at.query("+NETOPEN"))
            values = state.info("+NETOPEN")
            if state.ok and values and values[0][:1] == [1]:
                # Still open per AT+NETOPEN?: close it before opening again (4.2).
                closed = engine.expect_late("+NETCLOSE", None)
                if (await engine.execute(at.netclose())).ok:
                    await asyncio.wait_for(closed, at.CIPTIMEOUT_DEFAULT_S)
                else:
                    engine.discard_late("+NETCLOSE", None, closed)
            await open_network(engine)

        await self._retry(attempt, "re-opening the network")
        if not engine.closed:
            self._set(ModemState.UP, "the network is open again")

    async def _reinitialise(self) -> None:
        async def attempt() -> None:
            await self._bring_up()

        await self._retry(attempt, "bringing the restarted module up")
        if not self._engine.closed:
            self._set(ModemState.UP, "the module is up again after its restart")
