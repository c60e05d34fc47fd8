"""Comma-separated AT parameter lists, in both directions of the wire.

``+CIPOPEN: 0,"TCP","1.2.3.4",80,-1`` (a response) and
``AT+CIPOPEN=0,"TCP","1.2.3.4",80`` (a command) share one grammar: fields
separated by commas, each empty, a decimal integer (maybe negative), a quoted
string (no escapes: the module cannot carry ``"`` inside one) or a bare token.
The library parses responses with it; the virtual SIM7028 parses commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ProtocolError

__all__ = [
    "Field",
    "Quoted",
    "info_name",
    "int_fields",
    "split_fields",
    "split_info_line",
]


@dataclass(frozen=True, slots=True)
class Quoted:
    """A field that was written in double quotes (``"TCP"``)."""

    text: str

    def __str__(self) -> str:
        return self.text


#: One parsed field: ``None`` when empty, ``int`` for a decimal number,
#: :class:`Quoted` for a quoted string and ``str`` for any other bare token.
Field = int | str | Quoted | None


def _bare(token: str) -> Field:
    token = token.strip()
    if not token:
        return None
    body = token[1:] if token[0] in "+-" else token
    if body.isdigit() and body.isascii():
        return int(token)
    return token


def split_fields(text: str) -> list[Field]:
    """Split ``text`` at the commas that are not inside double quotes.

    ``'0,"TCP",,5'`` gives ``[0, Quoted("TCP"), None, 5]``. An unterminated
    quote, or a quote that is not a whole field, raises :class:`ProtocolError`.
    """
    fields: list[Field] = []
    i = 0
    n = len(text)
    if n == 0:
        return []
    while True:
        # skip spaces before a field
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise ProtocolError(f"unterminated quoted field in {text!r}")
            fields.append(Quoted(text[i + 1 : end]))
            i = end + 1
            while i < n and text[i] == " ":
                i += 1
            if i < n and text[i] != ",":
                raise ProtocolError(f"text after a quoted field in {text!r}")
        else:
            comma = text.find(",", i)
            stop = n if comma < 0 else comma
            token = text[i:stop]
            if '"' in token:
                raise ProtocolError(f"stray quote in {text!r}")
            fields.append(_bare(token))
            i = stop
        if i >= n:
            return fields
        i += 1  # the comma
        if i >= n:
            fields.append(None)
            return fields


def info_name(line: str) -> str | None:
    """``'+CIPOPEN'`` for ``'+CIPOPEN: 0,1'``; ``None`` for a line of another shape."""
    if not line.startswith("+"):
        return None
    colon = line.find(":")
    if colon < 0:
        return None
    name = line[:colon]
    if not name[1:].replace("_", "").isalnum():
        return None
    return name


def split_info_line(line: str) -> tuple[str, list[Field]] | None:
    """``'+CIPOPEN: 0,1'`` → ``('+CIPOPEN', [0, 1])``; ``None`` for a line of another shape."""
    name = info_name(line)
    if name is None:
        return None
    return name, split_fields(line[len(name) + 1 :])


def int_fields(fields: Sequence[Field], count: int, what: str, *, exact: bool = True) -> list[int]:
    """The first ``count`` fields as ints (all of them when ``exact``), or ProtocolError.

    ``what`` names the line or answer in the error message.
    """
    head = fields[:count]
    if len(head) < count or (exact and len(fields) != count):
        raise ProtocolError(f"malformed {what}: {fields!r}")
    values = [f for f in head if type(f) is int]
    if len(values) != count:
        raise ProtocolError(f"malformed {what}: {fields!r}")
    return values
