"""What the protocol session tells its owner: the events of :meth:`Session.next_event`.

The parser's events (:mod:`.events`) say what the module wrote; these say
what it *means* for the user: a request finished, a link got data, a link is
over and why, the module's state changed. Every link event names the link's
number and its ``serial`` (unique for each life of a number), so an event of
an earlier life never reaches the next owner of the number.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .events import Line

__all__ = [
    "ClientConnected",
    "LinkData",
    "LinkDatagram",
    "LinkEof",
    "LinkLost",
    "LinkSent",
    "ModemState",
    "Outcome",
    "RequestDone",
    "RequestFailed",
    "StateChanged",
    "Unsolicited",
]


class ModemState(enum.Enum):
    """Where the module is, as far as simsock knows."""

    STARTING = "starting"  # bring-up has not finished
    UP = "up"  # network open, links usable
    NETWORK_DOWN = "network-down"  # the PDP context dropped; re-opening
    RESTARTING = "restarting"  # the module restarted; bringing it up again
    CLOSED = "closed"  # the session was closed, or the module stopped answering


@dataclass(frozen=True, slots=True)
class RequestDone:
    """A request (command, open, procedure) finished; ``value`` is its result."""

    request: int
    value: Any


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request failed with ``error`` (an OSError with errno set, or ProtocolError)."""

    request: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class LinkData:
    """Stream bytes arrived on a link, in order."""

    link: int
    serial: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LinkDatagram:
    """One datagram arrived on a UDP link from ``address``."""

    link: int
    serial: int
    data: bytes
    address: tuple[str, int]


@dataclass(frozen=True, slots=True)
class LinkEof:
    """The peer closed and every byte it sent has been delivered."""

    link: int
    serial: int


@dataclass(frozen=True, slots=True)
class LinkSent:
    """The module confirmed ``size`` bytes of a send (the write buffer shrank)."""

    link: int
    serial: int
    size: int


@dataclass(frozen=True, slots=True)
class LinkLost:
    """The link is over; ``error`` is ``None`` for an orderly close. Sent once per life."""

    link: int
    serial: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class ClientConnected:
    """A module server accepted a client on ``link`` (``+CLIENT``, 3.14)."""

    link: int
    serial: int
    server: int
    peer: tuple[str, int]


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The module's state changed; ``reason`` in words."""

    state: ModemState
    reason: str


@dataclass(frozen=True, slots=True)
class Unsolicited:
    """A line nobody was waiting for (logged; the CLI's terminal shows it)."""

    line: Line


Outcome = (
    RequestDone
    | RequestFailed
    | LinkData
    | LinkDatagram
    | LinkEof
    | LinkSent
    | LinkLost
    | ClientConnected
    | StateChanged
    | Unsolicited
)
