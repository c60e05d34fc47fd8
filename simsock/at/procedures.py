"""Procedures: sequences of commands that the session runs as one request.

A procedure is a generator. It yields *steps* and the session sends back
what each step produced, so a sequence such as "``AT+NETOPEN?``, and if it
says 0, ``AT+NETOPEN`` then wait for ``+NETOPEN: 0``" reads as straight-line
code while the session stays a state machine with no I/O and no clock:

- :class:`Cmd` writes a command when the session's turn comes and gives back
  its :class:`~simsock.at.response.Response`. With ``late=(name, key)`` the
  waiter for that late result is registered before the write, and the step
  ends only once the late result came too (in ``response.late``), or raises
  ``TimeoutError`` when it did not within the command's bound.
- :class:`Sleep` waits (recovery's backoff).
- :class:`WaitUp` waits until the module is up, or raises ``OSError(ENETDOWN)``.
- :class:`Sync` synchronises with the module by proof (:mod:`.resync`), or
  raises ``TimeoutError``.

A procedure starts only when its first command can be written, so whatever
it decides first (a free link number) is decided at that moment.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from . import commands as at
from .commands import Command
from .errors import IPE_ALREADY_OPENED, ProtocolError, err_to_oserror
from .response import Response

__all__ = [
    "Cmd",
    "Procedure",
    "Sleep",
    "Step",
    "Sync",
    "WaitUp",
    "close_network",
    "open_network",
    "reopen_network",
    "run_command",
]


@dataclass(frozen=True, slots=True)
class Cmd:
    """Write ``command`` (see the module docstring); ``until_connect``: ends with CONNECT."""

    command: Command
    late: tuple[str, int | None] | None = None
    until_connect: bool = False
    #: The late result only ever follows the ``OK`` (TCP CIPOPEN, NETOPEN, NETCLOSE).
    late_after_ok: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class WaitUp:
    """Wait until the module is up; ``OSError(ENETDOWN)`` after ``timeout_s``."""

    timeout_s: float


@dataclass(frozen=True, slots=True)
class Sync:
    """Probe until an answer that is provably the probe's own arrives; ``attempts`` tries."""

    attempts: int


Step = Cmd | Sleep | WaitUp | Sync
#: A procedure: yields steps, receives their results, returns the request's value.
Procedure = Generator[Step, Any, Any]


def run_command(
    command: Command, *, until_connect: bool = False, wait_up_s: float | None = None
) -> Procedure:
    """One command; the value is its :class:`Response` (an ``ERROR`` is a value, not raised).

    ``wait_up_s``: first wait that long, at most, for the module to be up.
    """
    if wait_up_s is not None:
        yield WaitUp(wait_up_s)
    response: Response = yield Cmd(command, until_connect=until_connect)
    return response


def network_is_open() -> Procedure:
    """``AT+NETOPEN?`` (3.1); the value is whether it says 1 (a garbled answer raises)."""
    state: Response = yield Cmd(at.query("+NETOPEN"))
    state.raise_for_error()
    values = state.info("+NETOPEN")
    if not values:
        raise ProtocolError("AT+NETOPEN? answered OK with no +NETOPEN: line")
    return values[0][:1] == [1]


def open_network() -> Procedure:
    """``AT+NETOPEN`` unless ``AT+NETOPEN?`` says the network is already open (3.1)."""
    if (yield from network_is_open()):
        return None
    response: Response = yield Cmd(at.netopen(), late=("+NETOPEN", None), late_after_ok=True)
    if not response.ok:
        error = response.error("NETOPEN")
        if getattr(error, "module_code", None) == IPE_ALREADY_OPENED:
            return None
        raise error
    assert response.late is not None
    if response.late[0] != 0:
        raise err_to_oserror(response.late[0], context="NETOPEN")
    return None


def close_network() -> Procedure:
    """``AT+NETCLOSE`` and its ``+NETCLOSE:`` (3.2); an ``ERROR`` (not open) is fine."""
    yield Cmd(at.netclose(), late=("+NETCLOSE", None), late_after_ok=True)
    return None


def reopen_network() -> Procedure:
    """After ``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY`` (4.2): close if still open, open again."""
    if (yield from network_is_open()):
        yield from close_network()
    yield from open_network()
    return None
