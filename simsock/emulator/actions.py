"""Requests the AT interpreter makes of the network bridge.

The interpreter never touches a socket. When a command needs the network it
queues one of these small records; the I/O shell (:mod:`.bridge`) carries it
out and reports the outcome back through the interpreter's feedback methods
(``connected``, ``connect_failed``, ``received``, ``peer_closed``, ``sent``,
``listening``, ``listen_failed``, ``accepted``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Action",
    "Close",
    "Listen",
    "OpenTcp",
    "OpenUdp",
    "PauseReading",
    "ResumeReading",
    "Send",
    "StopListening",
]


@dataclass(frozen=True, slots=True)
class OpenTcp:
    """Connect link ``link`` to ``host:port`` (``host`` already resolved to an address).

    ``name`` is what the host wrote in ``AT+CIPOPEN`` (a domain name or the
    address itself), so the bridge can check its allow-list against either.
    Report with ``connected(link)`` or ``connect_failed(link, err)``.
    """

    link: int
    host: str
    port: int
    name: str
    local_port: int | None
    timeout_s: float


@dataclass(frozen=True, slots=True)
class OpenUdp:
    """Bind a UDP socket for link ``link`` on ``local_port`` (0: any port).

    ``family`` is 4 or 6 (``AT+CSOCKETPN``). Report with ``connected`` or
    ``connect_failed``.
    """

    link: int
    local_port: int
    family: int


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` on link ``link``; ``address`` is the destination of a UDP datagram.

    Report with ``sent(link, len(data), confirmed)`` once the bytes have left
    (the socket's write buffer is below its high-water mark; with
    ``wait_acked``, ``AT+CIPSENDMODE=1``, once it is empty).
    """

    link: int
    data: bytes
    address: tuple[str, int] | None = None
    wait_acked: bool = False


@dataclass(frozen=True, slots=True)
class Close:
    """Close link ``link`` (a local close: no feedback is expected)."""

    link: int


@dataclass(frozen=True, slots=True)
class PauseReading:
    """The module's receive buffer of ``link`` is full: stop reading its host socket."""

    link: int


@dataclass(frozen=True, slots=True)
class ResumeReading:
    """The host drained the module's receive buffer of ``link``: read its socket again."""

    link: int


@dataclass(frozen=True, slots=True)
class Listen:
    """Listen for TCP clients for server ``server`` on ``port`` (0: any free port).

    Report with ``listening(server, port)`` or ``listen_failed(server, err)``;
    offer each client with ``accepted(server, ip, port)`` only while
    ``free_link()`` is not ``None``.
    """

    server: int
    port: int
    backlog: int
    family: int


@dataclass(frozen=True, slots=True)
class StopListening:
    """Stop server ``server`` (its accepted links are closed separately)."""

    server: int


Action = OpenTcp | OpenUdp | Send | Close | PauseReading | ResumeReading | Listen | StopListening
