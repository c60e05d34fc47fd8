"""One AT command line taken apart, and the checks its parameters go through.

``AT+CIPOPEN=1,"TCP","10.0.0.1",80`` becomes ``Command(name="+CIPOPEN",
kind=Kind.SET, args='1,"TCP","10.0.0.1",80')``; a handler asks for
``command.fields()`` (parsed by the library's own tokenizer) and checks each
with :func:`int_param` / :func:`str_param`, which raise :class:`ParamError`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..at.fields import Field, Quoted, split_fields

if TYPE_CHECKING:
    from .interpreter import Interpreter

__all__ = [
    "Command",
    "Handler",
    "Kind",
    "ParamError",
    "field_at",
    "frame",
    "int_param",
    "only_field",
    "parse_command",
    "str_param",
]


class Kind(enum.Enum):
    """The four shapes of an AT command (``AT+X``, ``AT+X?``, ``AT+X=?``, ``AT+X=...``)."""

    EXEC = "exec"
    READ = "read"
    TEST = "test"
    SET = "set"


class ParamError(Exception):
    """A parameter the command does not accept (the handler's caller answers ``ERROR``)."""


@dataclass(frozen=True, slots=True)
class Command:
    """A command line without its ``AT`` prefix and terminator, taken apart.

    ``name`` is upper case: ``"+CIPOPEN"`` for extended commands, the letter
    (``"E"``, ``"I"``, ``"O"``, ``"&D"``) for basic ones and ``""`` for a bare
    ``AT``. ``args`` is what follows ``=`` (SET) or a basic command's digits.
    """

    line: str
    name: str
    kind: Kind
    args: str

    def fields(self) -> list[Field]:
        """The parameters, parsed; raises :class:`~simsock.at.ProtocolError` on bad quoting."""
        return split_fields(self.args)


#: A command handler: answers through the interpreter's reply methods.
Handler = Callable[["Interpreter", Command], None]

_EXTENDED: Final = re.compile(r"(\+[A-Za-z][A-Za-z0-9]*)(=\?|\?|=(.*))?", re.DOTALL)
_BASIC: Final = re.compile(r"(&?[A-Za-z])(\d*)")


def parse_command(line: str) -> Command | None:
    """Take ``line`` (``AT...`` without terminator) apart; ``None`` if it is no command.

    Only one command per line: ``;`` concatenation is not supported (the
    command is then unknown and answered ``ERROR``).
    """
    if line[:2].upper() != "AT":
        return None
    rest = line[2:]
    if not rest:
        return Command(line, "", Kind.EXEC, "")
    match = _EXTENDED.fullmatch(rest)
    if match:
        suffix = match[2]
        if suffix is None:
            kind = Kind.EXEC
        elif suffix == "=?":
            kind = Kind.TEST
        elif suffix == "?":
            kind = Kind.READ
        else:
            kind = Kind.SET
        return Command(line, match[1].upper(), kind, match[3] or "")
    match = _BASIC.fullmatch(rest)
    if match:
        return Command(line, match[1].upper(), Kind.EXEC, match[2])
    # Something AT-shaped that no handler knows: the caller answers ERROR.
    return Command(line, "?" + rest.upper(), Kind.EXEC, "")


def frame(text: str) -> bytes:
    """One response line or URC on the wire: ``<CR><LF>text<CR><LF>`` (reference section 1)."""
    return b"\r\n" + text.encode("latin-1") + b"\r\n"


def only_field(command: Command) -> Field:
    """The single parameter of a SET command (``AT+CIPHEAD=1``)."""
    fields = command.fields()
    if len(fields) != 1:
        raise ParamError(f"{command.line!r} wants exactly one parameter")
    return fields[0]


def field_at(fields: list[Field], index: int) -> Field:
    """The ``index``-th field, or ``None`` (an omitted field) past the end."""
    return fields[index] if index < len(fields) else None


def int_param(value: Field, low: int, high: int, *, default: int | None = None) -> int:
    """An integer parameter within ``low..high``; an omitted one is ``default`` if given."""
    if value is None and default is not None:
        return default
    if not isinstance(value, int) or not low <= value <= high:
        raise ParamError(f"{value!r} is not an integer in {low}..{high}")
    return value


def str_param(value: Field, *, allow_empty: bool = False) -> str:
    """A string parameter; the reference wants it in double quotes."""
    if not isinstance(value, Quoted) or (not value.text and not allow_empty):
        raise ParamError(f"{value!r} is not a quoted string")
    return value.text
