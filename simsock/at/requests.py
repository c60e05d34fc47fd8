"""The session's bookkeeping records: the command in flight, and a running procedure."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .commands import Command
from .events import Line
from .late import LateWaiter
from .note import ESCAPE_SEQUENCE
from .procedures import Procedure, Step
from .response import Response

__all__ = ["InFlight", "Proc"]


class InFlight:
    """The one command in flight: collects its lines until the final result, within bounds."""

    __slots__ = (
        "accepts_other_lines",
        "command",
        "deadline",
        "late",
        "late_after_ok",
        "on_done",
        "on_fail",
        "payload",
        "probe",
        "prompt_deadline",
        "response",
        "until_connect",
    )

    def __init__(
        self,
        command: Command,
        response: Response,
        on_done: Callable[[Response], None],
        on_fail: Callable[[BaseException], None],
        *,
        deadline: float,
        until_connect: bool = False,
        late: LateWaiter | None = None,
        payload: bytes | None = None,
        prompt_deadline: float = math.inf,
        probe: bool = False,
        late_after_ok: bool = False,
    ) -> None:
        self.command = command
        self.response = response
        self.on_done = on_done
        #: The command will get no answer (its bound passed, or the module restarted).
        self.on_fail = on_fail
        self.deadline = deadline
        # Transparent open and ATO end with CONNECT / CONNECT FAIL, not OK (3.3, 2).
        self.until_connect = until_connect
        self.late = late
        #: Its late result only ever follows its ``OK``: when the late result comes,
        #: a lost ``OK`` is proven to have been sent.
        self.late_after_ok = late_after_ok
        #: A CIPSEND's payload, written when ``>`` comes (``None``: written already).
        self.payload = payload
        self.prompt_deadline = prompt_deadline
        self.probe = probe
        # ATI and friends answer with lines that are not "+NAME:"; take those too.
        self.accepts_other_lines = not command.name.startswith("+")

    def wire(self) -> bytes:
        """The bytes that put this command on the line."""
        if self.command.line == ESCAPE_SEQUENCE:  # the escape's pseudo-command: no CR (2)
            return ESCAPE_SEQUENCE.encode()
        return self.command.wire

    def next_deadline(self) -> float:
        """The earliest of the prompt's and the final result's bounds."""
        return min(self.deadline, self.prompt_deadline)

    def claims(self, line: Line) -> bool:
        """Whether ``line`` is part of this command's response."""
        name = line.name
        if name is None:
            return self.accepts_other_lines or not line.text.startswith("+")
        return name == self.command.name


class Proc:
    """A running procedure (:mod:`.procedures`) and what the session knows of it."""

    __slots__ = (
        "cancelled",
        "deadline",
        "gen",
        "on_finish",
        "pending",
        "request",
        "started",
        "step",
        "steps",
        "urgent",
        "wrote",
    )

    def __init__(self, request: int, gen: Procedure, *, urgent: bool = False) -> None:
        self.request = request
        self.gen = gen
        self.urgent = urgent
        self.started = False
        self.wrote = False  # one of its commands reached the wire
        self.cancelled = False
        #: The step it yielded last (a command held back, a sleep, a wait).
        self.step: Step | None = None
        #: Steps taken: a result for an earlier step (a late callback) is ignored.
        self.steps = 0
        #: What to send into it next: (value, error).
        self.pending: tuple[Any, BaseException | None] | None = None
        self.deadline = math.inf
        #: Called instead of reporting the request (recovery's own procedures).
        self.on_finish: Callable[[Any, BaseException | None], None] | None = None
