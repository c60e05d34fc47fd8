"""A deterministic, sans-I/O model of the network behind the virtual module's interpreter.

It stands in for :mod:`simsock.emulator.bridge` in a deterministic simulation:
it carries out the interpreter's actions (:mod:`simsock.emulator.actions`) on
a simulated internet of echo peers, and reports outcomes through the
interpreter's feedback methods. There are no sockets, threads or clocks: time
enters only as ``now``, every random choice (latency, chunk sizes) draws from
the ``rng`` it is given, so one seed is one execution.

Nothing is reported from inside :meth:`SimNetwork.execute`: every outcome is a
timed event, delivered by :meth:`SimNetwork.handle_timer` once it is due. Each
open (or accepted client) is a :class:`Connection` with its own id; events of
a connection that is gone are dropped, so a reused link number never sees
feedback meant for its previous connection.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from simsock.at.errors import CIPOPEN_CONNECT_FAILED, ERR_BIND
from simsock.emulator.actions import (
    Action,
    Close,
    Listen,
    OpenTcp,
    OpenUdp,
    PauseReading,
    ResumeReading,
    Send,
    StopListening,
)
from simsock.emulator.interpreter import Interpreter

__all__ = ["TCP_BEHAVIOURS", "Connection", "SimNetwork"]

#: What a TCP peer does: echo, refuse the connect, never answer it, or take bytes silently.
TCP_BEHAVIOURS: Final = ("echo", "refuse", "blackhole", "sink")
#: First port the network picks when asked for "any port".
EPHEMERAL_PORT: Final = 40000
#: Most bytes one delivery to the interpreter carries (one socket read).
MAX_READ_BYTES: Final = 65536
#: Pause between two deliveries of one connection's data (s): after the first
#: chunk the owner runs the interpreter's actions, so a PauseReading takes effect.
CHUNK_GAP_S: Final = (0.0001, 0.002)

Address = tuple[str, int]


@dataclass(eq=False)
class Connection:
    """One open (or accepted client) of a link, from start to end."""

    id: int
    link: int
    kind: str  # "TCP" or "UDP"
    #: The TCP peer (``None`` for UDP: its datagrams carry their own address).
    remote: Address | None
    local_port: int
    #: The server index that accepted it; ``None`` for an open by the module.
    server: int | None = None
    #: "connecting", "open", "failed" or "closed".
    state: str = "connecting"
    #: Who ended it first: "module" (Close) or "peer" (reset_peer); ``None`` while alive.
    closed_by: str | None = None
    #: Everything the remote side got (UDP: the datagrams that reached a peer, joined).
    #: Equal to what the module confirmed with ``+CIPSEND:``, except after reset_peer:
    #: what the host sends once the peer is gone is lost, yet a CIPCLOSE before the
    #: ``+IPCLOSE`` makes the module report it sent (``close_link``).
    peer_received: bytearray = field(default_factory=bytearray)
    #: Everything the remote side sent, in order (echoes and peer_send).
    peer_sent: bytearray = field(default_factory=bytearray)
    #: Everything handed to ``interpreter.received``, in order.
    delivered: bytearray = field(default_factory=bytearray)
    #: The interpreter asked not to be given data (PauseReading; TCP only).
    paused: bool = False
    behaviour: str = "echo"
    # Internals: sends not yet reported, data arrived but not delivered, pipe clocks.
    _unsent: deque[tuple[bytes, Address | None]] = field(default_factory=deque, repr=False)
    _rx: bytearray = field(default_factory=bytearray, repr=False)
    _datagrams: deque[tuple[bytes, Address]] = field(default_factory=deque, repr=False)
    _eof: bool = field(default=False, repr=False)
    _draining: bool = field(default=False, repr=False)
    _last_sent_at: float = field(default=0.0, repr=False)
    _last_arrival_at: float = field(default=0.0, repr=False)

    @property
    def alive(self) -> bool:
        """Connecting or open, and the peer has not gone away."""
        return self.state in ("connecting", "open") and self.closed_by is None


class SimNetwork:
    """The simulated internet behind one :class:`Interpreter` (see the module docstring)."""

    def __init__(
        self,
        interpreter: Interpreter,
        rng: random.Random,
        *,
        latency_s: tuple[float, float] = (0.001, 0.02),
    ) -> None:
        self.interpreter = interpreter
        self.rng = rng
        self.latency_s = latency_s
        #: Every connection ever made; a connection's id is its index here.
        self.connections: list[Connection] = []
        self._tcp_peers: dict[Address, str] = {}
        self._udp_peers: set[Address] = set()
        self._servers: dict[int, int] = {}  # server index -> listening port
        self._by_link: dict[int, Connection] = {}
        self._events: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = 0
        self._next_port = EPHEMERAL_PORT

    # --- the simulated internet ----------------------------------------------------------

    def add_tcp_peer(self, host: str, port: int, behaviour: str = "echo") -> None:
        """A TCP peer at ``host:port`` that behaves as one of :data:`TCP_BEHAVIOURS`."""
        if behaviour not in TCP_BEHAVIOURS:
            raise ValueError(f"unknown TCP peer behaviour {behaviour!r}")
        self._tcp_peers[(host, port)] = behaviour

    def add_udp_peer(self, host: str, port: int) -> None:
        """A UDP peer at ``host:port`` that echoes each datagram to its sender."""
        self._udp_peers.add((host, port))

    def connect_client(self, server_port: int, host: str, port: int, now: float) -> int | None:
        """A client from ``host:port`` connects to a module server on ``server_port``.

        Returns the link the module gave it (an echo client from then on), or
        ``None``: no server listens there, or no link is free (the client is
        refused, not queued in a backlog).
        """
        server = next((s for s, p in self._servers.items() if p == server_port), None)
        if server is None or self.interpreter.free_link() is None:
            return None
        link = self.interpreter.accepted(server, host, port)
        if link is not None:
            conn = self._new_connection(link, "TCP", (host, port), server_port, now)
            conn.server, conn.state = server, "open"
        return link

    def reset_peer(self, link: int, now: float) -> None:
        """The remote side of ``link`` closes: ``peer_closed`` after the data in flight."""
        conn = self._live(link)
        if conn is None or conn.kind != "TCP":
            return
        conn.closed_by = "peer"

        def eof() -> None:
            conn._eof = True

        self._arrive(conn, now, eof)

    def peer_send(self, link: int, data: bytes, now: float) -> None:
        """The remote side of TCP link ``link`` sends ``data`` on its own."""
        conn = self._live(link)
        if conn is not None and conn.kind == "TCP":
            self._peer_sends(conn, data, None, now)

    # --- observation -------------------------------------------------------------------

    def connection_for_link(self, link: int) -> Connection | None:
        """The latest connection of ``link`` (possibly ended), or ``None`` if it never had one."""
        return self._by_link.get(link)

    def received_by_peer(self, link_session_id: int) -> bytes:
        """Every byte the remote side of connection ``link_session_id`` received, in order."""
        return bytes(self.connections[link_session_id].peer_received)

    # --- the sans-I/O interface ----------------------------------------------------------

    def execute(self, actions: list[Action], now: float) -> None:
        """Carry out the interpreter's actions (outcomes are queued, never reported here)."""
        for action in actions:
            match action:
                case OpenTcp():
                    self._open_tcp(action, now)
                case OpenUdp():
                    self._open_udp(action, now)
                case Send():
                    self._send(action, now)
                case Close():
                    self._close(action.link)
                case PauseReading():
                    self._set_paused(action.link, now, paused=True)
                case ResumeReading():
                    self._set_paused(action.link, now, paused=False)
                case Listen():
                    self._listen(action, now)
                case StopListening():
                    self._servers.pop(action.server, None)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next, or ``None`` (nothing is pending)."""
        return self._events[0][0] if self._events else None

    def handle_timer(self, now: float) -> None:
        """Deliver every event due at or before ``now``, oldest first."""
        while self._events and self._events[0][0] <= now:
            when, _, event = heapq.heappop(self._events)
            event(when)

    # --- internals -------------------------------------------------------------------------

    def _at(self, when: float, event: Callable[[float], None]) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, event))

    def _live(self, link: int) -> Connection | None:
        """The connection of ``link`` if it is open and its peer is still there."""
        conn = self._by_link.get(link)
        return conn if conn is not None and conn.state == "open" and conn.alive else None

    def _delay(self) -> float:
        return self.rng.uniform(*self.latency_s)

    def _pick_port(self) -> int:
        self._next_port += 1
        return self._next_port - 1

    def _new_connection(
        self, link: int, kind: str, remote: Address | None, local_port: int, now: float
    ) -> Connection:
        self._close(link)  # like the bridge: a new open replaces what the link had
        conn = Connection(len(self.connections), link, kind, remote, local_port)
        conn._last_sent_at = conn._last_arrival_at = now
        self.connections.append(conn)
        self._by_link[link] = conn
        return conn

    def _open_tcp(self, action: OpenTcp, now: float) -> None:
        remote = (action.host, action.port)
        port = action.local_port or self._pick_port()
        conn = self._new_connection(action.link, "TCP", remote, port, now)
        conn.behaviour = self._tcp_peers.get(remote, "refuse")
        if conn.behaviour != "blackhole":  # a black hole: no SYN-ACK, nothing reported
            err = CIPOPEN_CONNECT_FAILED if conn.behaviour == "refuse" else None
            self._at(now + self._delay(), lambda _: self._opened(conn, err))

    def _open_udp(self, action: OpenUdp, now: float) -> None:
        port = action.local_port or self._pick_port()
        conn = self._new_connection(action.link, "UDP", None, port, now)
        in_use = any(
            c is not conn and c.kind == "UDP" and c.alive and c.local_port == port
            for c in self.connections
        )
        err = ERR_BIND if in_use else None
        self._at(now + self._delay(), lambda _: self._opened(conn, err))

    def _opened(self, conn: Connection, err: int | None) -> None:
        """Report an open's outcome: ``connected``, or ``connect_failed`` with ``err``."""
        if conn.state != "connecting":
            return  # closed meanwhile
        if err is not None:
            conn.state = "failed"
            self.interpreter.connect_failed(conn.link, err)
        else:
            conn.state = "open"
            self.interpreter.connected(conn.link, conn.local_port)

    def _send(self, action: Send, now: float) -> None:
        conn = self._live(action.link)
        if conn is None:
            return  # gone: the interpreter reports the send as failed (peer_closed)
        conn._unsent.append((action.data, action.address))
        # Reports stay in order: each is due no earlier than the one before.
        conn._last_sent_at = max(conn._last_sent_at, now + self._delay())

        def sent(when: float) -> None:
            if conn.state != "open" or not conn.alive:
                return
            data, address = conn._unsent.popleft()
            if conn.kind == "TCP":
                conn.peer_received += data
                if conn.behaviour == "echo":
                    self._peer_sends(conn, data, None, when)
            elif address in self._udp_peers:
                conn.peer_received += data
                self._peer_sends(conn, data, address, when)
            self.interpreter.sent(conn.link, len(data), len(data))

        self._at(conn._last_sent_at, sent)

    def _peer_sends(
        self, conn: Connection, data: bytes, source: Address | None, now: float
    ) -> None:
        """The remote side sends ``data`` (a datagram from ``source`` for UDP)."""
        conn.peer_sent += data
        if source is None:
            self._arrive(conn, now, lambda: conn._rx.extend(data))
        else:
            self._arrive(conn, now, lambda: conn._datagrams.append((data, source)))

    def _arrive(self, conn: Connection, now: float, land: Callable[[], None]) -> None:
        """After latency, in order, something reaches the module's socket of ``conn``."""
        conn._last_arrival_at = max(conn._last_arrival_at, now + self._delay())

        def arrive(when: float) -> None:
            if conn.state == "open":
                land()
                self._drain_soon(conn, when)

        self._at(conn._last_arrival_at, arrive)

    def _drain_soon(self, conn: Connection, when: float) -> None:
        if not conn._draining and not conn.paused:
            conn._draining = True
            self._at(when, lambda at: self._drain(conn, at))

    def _drain(self, conn: Connection, now: float) -> None:
        """Hand the interpreter one chunk (TCP) or one datagram (UDP) of what arrived."""
        conn._draining = False
        if conn.state != "open" or conn.paused:
            return
        if conn._datagrams:
            data, source = conn._datagrams.popleft()
            conn.delivered += data
            self.interpreter.received(conn.link, data, source)
        elif conn._rx:
            size = min(len(conn._rx), MAX_READ_BYTES)
            if self.rng.random() < 0.5:
                size = self.rng.randint(1, size)
            data = bytes(conn._rx[:size])
            del conn._rx[:size]
            conn.delivered += data
            self.interpreter.received(conn.link, data)
        elif conn._eof:
            conn.state = "closed"
            self.interpreter.peer_closed(conn.link)
            return
        if conn._rx or conn._datagrams or conn._eof:
            self._drain_soon(conn, now + self.rng.uniform(*CHUNK_GAP_S))

    def _close(self, link: int) -> None:
        """A local close: written data still reaches a live peer; nothing more is reported."""
        conn = self._by_link.get(link)
        if conn is None or conn.state in ("failed", "closed"):
            return
        if conn.alive:  # a graceful close flushes what was written (no echo comes back)
            for data, address in conn._unsent:
                if conn.kind == "TCP" or address in self._udp_peers:
                    conn.peer_received += data
        conn.state = "closed"
        conn.closed_by = conn.closed_by or "module"
        conn._unsent.clear()
        conn._rx.clear()
        conn._datagrams.clear()

    def _set_paused(self, link: int, now: float, *, paused: bool) -> None:
        conn = self._by_link.get(link)
        if conn is None or conn.kind != "TCP" or conn.state in ("failed", "closed"):
            return  # like the bridge, UDP is never paused: the module drops what won't fit
        conn.paused = paused
        if not paused:
            self._drain_soon(conn, now)

    def _listen(self, action: Listen, now: float) -> None:
        self._servers.pop(action.server, None)
        taken = action.port != 0 and action.port in self._servers.values()
        port = action.port or self._pick_port()
        if not taken:
            self._servers[action.server] = port

        def outcome(_: float) -> None:
            if taken:
                self.interpreter.listen_failed(action.server, ERR_BIND)
            elif self._servers.get(action.server) == port:
                self.interpreter.listening(action.server, port)

        self._at(now + self._delay(), outcome)
