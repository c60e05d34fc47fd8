"""Matching the module's lines to the command in flight and to awaited late results.

Some commands report their real outcome after their final result, in a line
shaped like a URC (``+NETOPEN: 0``, ``+CIPOPEN: 1,0``, ``+CIPSEND: 1,5,5``,
``+CIPCLOSE: 1,0``; reference 1 and 3). A waiter for such a line is registered
*before* the command is written (zigpy-znp's rule), so a result that arrives
in the same chunk as the ``OK``, or before it, is never lost.
"""

from __future__ import annotations

import asyncio
import errno
from collections import deque
from dataclasses import dataclass, field

from ..at.commands import Command
from ..at.errors import ProtocolError, err_to_oserror, ip_error_to_oserror, module_error
from ..at.events import CmeError, Connect, ConnectFail, Error, FinalResult, Line, Ok
from ..at.fields import Field, int_fields

__all__ = ["InFlight", "LateResults", "Response"]

#: Late results and the number of integer fields each carries (3.1-3.15).
LATE_RESULT_FIELDS: dict[str, int] = {
    "+NETOPEN": 1,
    "+NETCLOSE": 1,
    "+CIPOPEN": 2,
    "+CIPCLOSE": 2,
    "+CIPSEND": 3,
    "+SERVERSTOP": 2,
}


@dataclass(slots=True)
class Response:
    """What a command got back: its information lines, final result and error detail."""

    command: Command
    lines: list[str] = field(default_factory=list)
    final: FinalResult | Connect | ConnectFail | None = None
    ip_error: str | None = None  # "+IP ERROR:" text or number
    cip_error: int | None = None  # "+CIPERROR:" code
    prompt_missing: bool = False  # no '>' came: the payload was not sent (ESC cancelled)

    @property
    def ok(self) -> bool:
        """The final result was ``OK`` (or ``CONNECT`` for a transparent open or ``ATO``).

        A send whose ``>`` never came is not: its payload was never written.
        """
        return isinstance(self.final, Ok | Connect) and not self.prompt_missing

    def error(self, context: str | None = None) -> OSError:
        """The OSError this failed response stands for."""
        what = context or self.command.name.lstrip("+")
        if self.prompt_missing:
            return module_error(
                errno.ETIMEDOUT, f"{what}: no '>' prompt; cancelled with ESC", None, None
            )
        if isinstance(self.final, ConnectFail):
            return err_to_oserror(1, context="CIPOPEN")  # CONNECT FAIL (3.3)
        if self.ip_error is not None:
            return ip_error_to_oserror(self.ip_error, context=what)
        if self.cip_error is not None:
            return err_to_oserror(self.cip_error, context=what)
        if isinstance(self.final, CmeError):
            return err_to_oserror(12, context=f"{what}: +CME ERROR: {self.final.code}")
        return err_to_oserror(12, context=f"{what}: ERROR")

    def raise_for_error(self) -> None:
        """Raise :meth:`error` unless the final result was ``OK``."""
        if not self.ok:
            raise self.error()

    def info(self, name: str) -> list[list[Field]]:
        """The parsed fields of each ``name: ...`` line (e.g. ``"+CIPOPEN"``)."""
        out = []
        for text in self.lines:
            parsed = Line(text)
            if parsed.name == name:
                out.append(parsed.fields)
        return out


class InFlight:
    """The one command in flight: collects its lines until the final result."""

    __slots__ = ("_future", "accepts_other_lines", "prompt", "response", "until_connect")

    def __init__(
        self, command: Command, *, wants_prompt: bool = False, until_connect: bool = False
    ) -> None:
        loop = asyncio.get_running_loop()
        self.response = Response(command)
        self._future: asyncio.Future[Response] = loop.create_future()
        self.prompt: asyncio.Future[None] | None = loop.create_future() if wants_prompt else None
        # Transparent open and ATO end with CONNECT / CONNECT FAIL, not OK (3.3, 2).
        self.until_connect = until_connect
        # ATI and friends answer with lines that are not "+NAME:"; take those too.
        self.accepts_other_lines = not command.name.startswith("+")

    @property
    def done(self) -> asyncio.Future[Response]:
        """Resolves with the response when the final result arrives."""
        return self._future

    def claims(self, line: Line) -> bool:
        """Whether ``line`` is part of this command's response."""
        name = line.name
        if name is None:
            return self.accepts_other_lines or not line.text.startswith("+")
        return name == self.response.command.name

    def add_line(self, text: str) -> None:
        """Append an information line."""
        self.response.lines.append(text)

    def finish(self, final: Ok | Error | CmeError | Connect | ConnectFail) -> None:
        """The final result arrived."""
        self.response.final = final
        if self.prompt is not None and not self.prompt.done():
            self.prompt.set_exception(self.response.error())
            self.prompt.exception()  # mark retrieved: the response carries it too
        if not self._future.done():
            self._future.set_result(self.response)

    def fail(self, exc: BaseException) -> None:
        """The port died or the engine stopped: fail every waiter."""
        for fut in (self.prompt, self._future):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()


class LateResults:
    """Waiters for late results, FIFO per (name, key): key is the link or server, or None."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int | None], deque[asyncio.Future[list[int]]]] = {}

    def expect(self, name: str, key: int | None) -> asyncio.Future[list[int]]:
        """A future for the next ``name`` result about ``key``; register before writing."""
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((name, key), deque()).append(fut)
        return fut

    def discard(self, name: str, key: int | None, fut: asyncio.Future[list[int]]) -> None:
        """Forget a waiter (its command failed before any late result)."""
        queue = self._waiters.get((name, key))
        if queue is not None and fut in queue:
            queue.remove(fut)
            if not queue:
                del self._waiters[(name, key)]

    def resolve(self, line: Line) -> bool:
        """Give ``line`` to its waiter; ``False`` when nobody waits for it."""
        name = line.name
        count = LATE_RESULT_FIELDS.get(name or "")
        if name is None or count is None:
            return False
        try:
            values = int_fields(line.fields, count, line.text)
        except ProtocolError:
            return False  # same name, other shape (a query's answer): not a late result
        key = values[0] if count > 1 else None
        queue = self._waiters.get((name, key))
        while queue:
            fut = queue.popleft()
            if not queue:
                del self._waiters[(name, key)]
            if not fut.done():
                fut.set_result(values)
                return True
        return False

    def fail_all(self, exc: BaseException) -> None:
        """Fail every waiter (the port closed, the module restarted)."""
        for queue in self._waiters.values():
            for fut in queue:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()
        self._waiters.clear()
