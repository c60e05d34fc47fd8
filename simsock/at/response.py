"""What a command got back, and the shapes of the late results (reference 1, 3.1-3.15).

Some commands report their real outcome after their final result, in a line
shaped like a URC (``+NETOPEN: 0``, ``+CIPOPEN: 1,0``, ``+CIPSEND: 1,5,5``,
``+CIPCLOSE: 1,0``). Such a line is recognised by its name *and* its shape:
exactly :data:`LATE_RESULT_FIELDS` integer fields.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from .commands import Command
from .errors import (
    CIPOPEN_CONNECT_FAILED,
    ProtocolError,
    err_to_oserror,
    ip_error_to_oserror,
    module_error,
)
from .events import CmeError, Connect, ConnectFail, FinalResult, Line, Ok
from .fields import Field, int_fields

__all__ = ["LATE_RESULT_FIELDS", "QUERY_SHAPE_DIFFERS", "Response", "late_values"]

#: Late results and the number of integer fields each carries (3.1-3.15).
LATE_RESULT_FIELDS: dict[str, int] = {
    "+NETOPEN": 1,
    "+NETCLOSE": 1,
    "+CIPOPEN": 2,
    "+CIPCLOSE": 2,
    "+CIPSEND": 3,
    "+SERVERSTOP": 2,
}
#: Queries whose answer lines never have their late result's shape
#: (``+CIPOPEN: 0`` or five fields, 3.3). The others (``+NETOPEN: <state>``,
#: ``+CIPCLOSE: <s0>,<s1>``) look exactly like a late result, so the session
#: writes such a query only while no late result of that name is awaited.
QUERY_SHAPE_DIFFERS = frozenset({"+CIPOPEN"})


def late_values(line: Line) -> list[int] | None:
    """The integers of ``line`` when it has a late result's name and shape, else ``None``.

    Some firmware confirms a send with two fields, ``+CIPSEND: <link>,<len>``:
    that is read as ``<link>,<len>,<len>`` (all of it sent).
    """
    name = line.name
    count = LATE_RESULT_FIELDS.get(name or "")
    if count is None:
        return None
    try:
        fields = line.fields
        if name == "+CIPSEND" and len(fields) == 2:
            link, length = int_fields(fields, 2, line.text)
            return [link, length, length]
        return int_fields(fields, count, line.text)
    except ProtocolError:
        return None  # same name, other shape (a query's answer)


@dataclass(slots=True)
class Response:
    """What a command got back: its information lines, final result and error detail."""

    command: Command
    lines: list[str] = field(default_factory=list)
    final: FinalResult | Connect | ConnectFail | None = None
    ip_error: str | None = None  # "+IP ERROR:" text or number
    cip_error: int | None = None  # "+CIPERROR:" code
    prompt_missing: bool = False  # no '>' came: the payload was not sent
    #: The late result's integers, when the command has one and it came.
    late: list[int] | None = None

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
            return module_error(errno.ETIMEDOUT, f"{what}: no '>' prompt", None, None)
        if isinstance(self.final, ConnectFail):
            return err_to_oserror(CIPOPEN_CONNECT_FAILED, context="CIPOPEN")  # CONNECT FAIL (3.3)
        if self.late is not None and len(self.late) >= 2 and self.late[-1] > 0:
            return err_to_oserror(self.late[-1], context=what)  # "+CIPOPEN: 0,4" ERROR
        if self.ip_error is not None:
            return ip_error_to_oserror(self.ip_error, context=what)
        if self.cip_error is not None:
            return err_to_oserror(self.cip_error, context=what)
        # No reason given, or a 3GPP one: the module's number is kept as it
        # came (CME) or left None, never made up.
        if isinstance(self.final, CmeError):
            code = self.final.code
            text = f"+CME ERROR: {code}"
            return module_error(
                errno.EIO, f"{what}: {text}", code if isinstance(code, int) else None, text
            )
        return module_error(errno.EIO, f"{what}: ERROR", None, None)

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
