"""Waiters for late results: one table, each with a bound (reference 1, 3.1-3.15).

A waiter is registered *before* its command is written (zigpy-znp's rule),
so a result that arrives in the same chunk as the ``OK``, or before it, is
never lost. Its bound starts when the command's final result arrives
(:meth:`LateWaiter.arm`); the session's timer fails it once that passes.
Waiters of one ``(name, key)`` are served first in, first out.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator

from .errors import timeout_error
from .events import Line
from .response import LATE_RESULT_FIELDS, late_values

__all__ = ["LateTable", "LateWaiter"]


class LateWaiter:
    """One awaited late result; ``on_result(values)`` or ``on_error(exc)`` ends it."""

    __slots__ = ("deadline", "key", "name", "on_error", "on_result", "values")

    def __init__(
        self,
        name: str,
        key: int | None,
        on_result: Callable[[list[int]], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.name = name
        self.key = key
        self.on_result = on_result
        self.on_error = on_error
        self.deadline = math.inf  # armed when the command's final result comes
        self.values: list[int] | None = None

    def arm(self, deadline: float) -> None:
        """The command finished with ``OK``: the late result must come by ``deadline``."""
        self.deadline = deadline


class LateTable:
    """Every awaited late result, keyed by ``(name, key)``; key is the link or server, or None."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int | None], deque[LateWaiter]] = {}

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def __iter__(self) -> Iterator[LateWaiter]:
        for queue in list(self._waiters.values()):
            yield from list(queue)

    def add(self, waiter: LateWaiter) -> LateWaiter:
        """Register ``waiter`` (before its command is written)."""
        self._waiters.setdefault((waiter.name, waiter.key), deque()).append(waiter)
        return waiter

    def discard(self, waiter: LateWaiter) -> None:
        """Forget ``waiter`` (its command failed, or its link is gone)."""
        queue = self._waiters.get((waiter.name, waiter.key))
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiters[(waiter.name, waiter.key)]

    def awaits(self, name: str) -> bool:
        """Whether any late result called ``name`` is awaited."""
        return any(n == name for n, _ in self._waiters)

    def resolve(self, line: Line) -> bool:
        """Give ``line`` to its waiter; ``False`` when it is not a late result anyone awaits."""
        values = late_values(line)
        if values is None:
            return False
        name = line.name or ""
        key = values[0] if LATE_RESULT_FIELDS[name] > 1 else None
        queue = self._waiters.get((name, key))
        if not queue:
            return False
        waiter = queue.popleft()
        if not queue:
            del self._waiters[(name, key)]
        waiter.values = values
        waiter.on_result(values)
        return True

    def next_deadline(self) -> float:
        """The earliest armed bound, or ``inf``."""
        return min((w.deadline for w in self), default=math.inf)

    def expire(self, now: float) -> None:
        """Fail every waiter whose bound has passed."""
        for waiter in self:
            if waiter.deadline <= now:
                self.discard(waiter)
                what = waiter.name if waiter.key is None else f"{waiter.name}: {waiter.key},..."
                waiter.on_error(timeout_error(f"the module never sent its late result {what}"))

    def fail_where(self, keep: Callable[[LateWaiter], bool], exc: BaseException) -> None:
        """Fail every waiter for which ``keep`` is false (the network or module is gone)."""
        for waiter in self:
            if not keep(waiter):
                self.discard(waiter)
                waiter.on_error(exc)
