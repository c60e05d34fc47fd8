"""The virtual SIM7028's AT interpreter: a sans-I/O state machine.

Bytes from the host go in with :meth:`Interpreter.receive_data`, bytes for
the host come out of :meth:`Interpreter.data_to_send`, and what the network
must do comes out of :meth:`Interpreter.actions` (see :mod:`.actions`). The
I/O shell reports the network's answers back (``connected``, ``received``,
``peer_closed`` ...). Time enters only as ``now`` (``receive_data``,
``handle_timer``); :meth:`get_timer` says when the shell must call
:meth:`handle_timer` next. Nothing here imports asyncio or sockets.

Output is built in whole units (a response line, a URC, a payload block with
its header), so a URC is only ever placed between units: never inside a line,
never inside a payload (reference section 1). While the host is half-way
through typing a command line, or sending a CIPSEND payload, URCs wait; in
transparent data mode (section 2) they wait until the host is back in
command mode.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from ..at import note
from ..at.errors import (
    ERR_NETWORK,
    ERR_NOT_SUPPORTED,
    ERR_TIMEOUT,
    IP_ERROR_STRINGS,
    IPCLOSE_BY_PEER,
    IPCLOSE_REASONS,
    ProtocolError,
)
from .actions import Action, Close, PauseReading, ResumeReading, Send, StopListening
from .cmdline import CommandLine, CommandLineReader
from .command import Handler, ParamError, frame, parse_command
from .commands_general import GENERAL_HANDLERS
from .commands_server import SERVER_HANDLERS
from .commands_socket import SOCKET_HANDLERS
from .faults import STORM_URCS, Faults
from .links import Link, LinkState
from .payload import PayloadReader, PayloadState
from .settings import ModuleConfig, ModuleSettings
from .transparent import EscapeDetector

__all__ = ["Interpreter", "Stats"]

logger = logging.getLogger("simsock.emulator")

#: How long a half-typed command line holds URCs back (s): long enough for a
#: host that writes a line in a few pieces, short enough for a person typing.
URC_HOLD_S: Final = 1.0
#: Most URCs one :meth:`Interpreter.urc_storm` sends.
MAX_STORM_URCS: Final = 100_000

_HANDLERS: Final[dict[str, Handler]] = {
    **GENERAL_HANDLERS,
    **SOCKET_HANDLERS,
    **SERVER_HANDLERS,
}


@dataclass(slots=True)
class Stats:
    """Counters of one virtual module (all since start)."""

    #: Every byte sent to / received from the host on the serial line.
    bytes_to_host: int = 0
    bytes_from_host: int = 0
    #: Network data delivered to the host (pushes, CIPRXGET reads; hex counts decoded).
    payload_to_host: int = 0
    #: CIPSEND payload accepted from the host (after unescaping).
    payload_from_host: int = 0
    #: Command lines executed.
    commands: int = 0


class _Mode(enum.Enum):
    COMMAND = "command"  # reading a command line
    BUSY = "busy"  # a line waits for the module latency to pass
    PAYLOAD = "payload"  # after the '>' prompt, reading a CIPSEND payload
    WAITING = "waiting"  # a command waits for the bridge before its final result
    DATA = "data"  # transparent mode: host bytes are the link's payload (section 2)


class Interpreter:
    """The AT state machine of one virtual SIM7028 (no I/O: see the module docstring)."""

    def __init__(self, config: ModuleConfig | None = None, *, now: float = 0.0) -> None:
        self.config = config if config is not None else ModuleConfig()
        self.stats = Stats()
        #: Fault injection, and the module's one seeded random source (``faults.rng``).
        self.faults = Faults(self.config.faults, self.config.seed)
        self._rng = self.faults.rng
        self._now = now
        self._out = bytearray()
        self._actions: list[Action] = []
        self._power_on()

    def _power_on(self) -> None:
        """The state after power-up (reference defaults); a restart comes back here."""
        #: What the host set with AT commands.
        self.settings = ModuleSettings(echo=self.config.echo)
        capacity = self.config.rx_buffer_bytes
        self.links = [Link(number, capacity=capacity) for number in range(note.MAX_LINK + 1)]
        #: Listening port of each server index, ``None`` when stopped.
        self.servers: list[int | None] = [None] * (note.MAX_SERVER + 1)
        #: Work due at a time: (when, order, what), a heap (see :meth:`call_at`).
        self._calls: list[tuple[float, int, Callable[[], None]]] = []
        self._call_order = itertools.count()
        self.network_open = False
        #: ``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY`` happened; cleared by NETCLOSE.
        self.network_lost = False
        #: The transparent link (CIPMODE=1), in data mode or escaped with ``+++``.
        self.data_link: int | None = None
        self._inbuf = bytearray()
        self._lines = CommandLineReader()
        self._hold_expired = False
        self._mode = _Mode.COMMAND
        self._pending_line = ""
        self._busy_until = 0.0
        self._outgoing: PayloadReader | None = None
        self._escape: EscapeDetector | None = None
        self._waiting_for: tuple[str, int] | None = None
        self._resume = False
        self._held: list[bytes] = []
        #: The ``>`` of the CIPSEND being read was withheld: an ESC first cancels it.
        self._prompt_withheld = False
        #: TCP connects that will time out (connect-timeout fault): link → when (s).
        self._connect_deadlines: dict[int, float] = {}
        #: When a restarting module prints its start-up URCs (``RDY`` ...).
        self._boot_at: float | None = None

    @property
    def reading_payload(self) -> int | None:
        """The link whose CIPSEND payload the module is reading now, or ``None``."""
        return self._outgoing.link if self._outgoing is not None else None

    @property
    def seed(self) -> int:
        """The seed of the module's random source: pass it as ``seed=`` to replay a run."""
        return self.faults.seed

    # --- the host side ------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes the host wrote on the serial line, at time ``now`` (seconds)."""
        self._now = max(self._now, now)
        self.stats.bytes_from_host += len(data)
        if self.faults.muted(self._now):
            logger.debug("mute: %d bytes from the host discarded", len(data))
            return
        data = self.faults.from_host.apply(data)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("host → module %r", data)
        self._inbuf += data
        self._process()

    def data_to_send(self) -> bytes:
        """Everything the module has to say to the host, in order; clears it."""
        data = bytes(self._out)
        self._out.clear()
        if data and self.faults.muted(self._now):
            logger.debug("mute: %d bytes for the host discarded", len(data))
            return b""
        data = self.faults.to_host.apply(data)
        if data:
            self.stats.bytes_to_host += len(data)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("module → host %r", data)
        return data

    def actions(self) -> list[Action]:
        """The network requests made since the last call, oldest first; clears them."""
        actions, self._actions = self._actions, []
        return actions

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (same clock as ``now``), or ``None``."""
        deadlines: list[float] = []
        if self._resume:
            deadlines.append(self._now)
        if self._mode is _Mode.BUSY:
            deadlines.append(self._busy_until)
        hold = self._hold_deadline()
        if hold is not None:
            deadlines.append(hold)
        escape = self._escape.deadline() if self._escape is not None else None
        if escape is not None:
            deadlines.append(escape)
        deadlines.extend(self._connect_deadlines.values())
        if self._calls:
            deadlines.append(self._calls[0][0])
        muted_until = self.faults.muted_until
        for when in (self._boot_at, muted_until):
            if when is not None and when != math.inf:
                deadlines.append(when)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Let time pass: run a command whose latency is over, release URCs held too long."""
        self._now = max(self._now, now)
        self._resume = False
        self.faults.muted(self._now)  # a passed mute deadline ends the silence
        if self._boot_at is not None and self._now >= self._boot_at:
            self._boot_at = None
            self._boot_urcs()
        while self._calls and self._now >= self._calls[0][0]:
            heapq.heappop(self._calls)[2]()
        for link, when in list(self._connect_deadlines.items()):
            if self._now >= when:
                del self._connect_deadlines[link]
                self.connect_failed(link, ERR_TIMEOUT)
        if self._mode is _Mode.BUSY and self._now >= self._busy_until:
            self._mode = _Mode.COMMAND
            self._execute(self._pending_line)
        hold = self._hold_deadline()
        if hold is not None and self._now >= hold:
            self._hold_expired = True
            self._release()
        if self._escape is not None:
            data, escaped = self._escape.expire(self._now)
            self._send_transparent(data)
            if escaped:  # "+++": command mode, the link stays open (section 2)
                self._leave_data_mode()
                self.reply("OK")
                self._release()
        self._process()

    def inject_urc(self, text: str) -> None:
        """Send the URC line ``text`` at the next unit boundary."""
        self._urc(frame(text))

    # --- the network side (feedback from the bridge) -------------------------------

    def connected(self, link: int, local_port: int | None = None) -> None:
        """The bridge connected (TCP) or bound (UDP) link ``link``."""
        lk = self.links[link]
        if lk.state is not LinkState.CONNECTING:
            return  # the link was closed meanwhile
        lk.state = LinkState.OPEN
        if local_port is not None:
            lk.local_port = local_port
        self._report_open(link, 0)

    def connect_failed(self, link: int, err: int) -> None:
        """Opening link ``link`` failed with the 5.2 code ``err``."""
        lk = self.links[link]
        if lk.state is not LinkState.CONNECTING:
            return
        lk.reset()
        self._report_open(link, err)

    def received(self, link: int, data: bytes, address: tuple[str, int] | None = None) -> None:
        """``data`` arrived on link ``link`` (``address``: a UDP datagram's source)."""
        lk = self.links[link]
        if not lk.is_open or not data:
            return
        transparent = link == self.data_link
        if transparent and self._mode is _Mode.DATA:
            lk.bytes_received += len(data)
            self.stats.payload_to_host += len(data)
            self._out += data  # a raw byte pipe: no header, no framing
            return
        # Escaped from data mode, the transparent link's data waits for ATO.
        if self.settings.rx_mode != 1 and not transparent:
            lk.bytes_received += len(data)
            self.push(lk, data, address)
            return
        was_empty = not lk.rx
        if lk.kind == "UDP":
            # Each datagram stays one (a read never joins two); UDP has no flow
            # control, so one that does not fit in the buffer is dropped.
            if not lk.buffer_datagram(data, address):
                logger.info("link %d: receive buffer full, datagram dropped", link)
                return
        else:
            lk.buffer_stream(data)
            if lk.full and not lk.reading_paused:
                lk.reading_paused = True
                self._actions.append(PauseReading(link))
        if was_empty and not transparent and not self.faults.forget_data_urc():
            self._urc(frame(self.config.firmware.data_notice(link)))

    def peer_closed(self, link: int) -> None:
        """The peer closed link ``link`` (or it broke): ``+IPCLOSE: <link>,1`` (4.2)."""
        lk = self.links[link]
        if lk.state is LinkState.FREE:
            return
        if link == self.data_link:
            lk.reset()
            self._close_transparent()
            return
        self._confirm_all(lk, -1)
        lk.reset(keep_rx=True)
        self._urc(frame(f"+IPCLOSE: {link},{IPCLOSE_BY_PEER}"))

    def module_close(self, link: int, reason: int) -> bool:
        """The module closes open link ``link`` itself: ``+IPCLOSE: <link>,<reason>`` (4.2).

        ``reason`` 0: closed locally, 1: closed by the peer, 2: send timeout
        or DTR off. Its socket is closed (a :class:`~.actions.Close` action);
        sends not yet reported never left (``<cnfSendLength>`` -1, 3.4). In
        buffer mode, data that arrived before the close stays readable, as
        after a close by the peer. A transparent link ends with ``CLOSED``
        instead (4.2). ``False`` when the link was not open.
        """
        if reason not in IPCLOSE_REASONS:
            raise ValueError(f"a close reason is 0, 1 or 2 (4.2), not {reason!r}")
        lk = self.links[link]
        if not lk.is_open:
            return False
        self._actions.append(Close(link))
        if link == self.data_link:
            lk.reset()
            self._close_transparent()
            return True
        self._confirm_all(lk, -1)
        lk.reset(keep_rx=True)
        self._urc(frame(f"+IPCLOSE: {link},{reason}"))
        return True

    def sent(self, link: int, requested: int, confirmed: int) -> None:
        """A CIPSEND's bytes left the module: ``+CIPSEND: <link>,<req>,<cnf>`` (3.4).

        Sends are reported in order: ``requested`` is the length of the oldest
        send not yet reported, and ``confirmed`` is -1 (broken), 0 (buffer
        full) or up to ``requested``. Anything else is a bug of the shell and
        raises ``ValueError``: the host would be told lengths it never sent.
        A report for a link with nothing unreported (closed meanwhile, its
        sends already settled) is ignored.
        """
        lk = self.links[link]
        if not lk.unconfirmed:
            return
        expected = lk.unconfirmed[0]
        if requested != expected or not -1 <= confirmed <= requested:
            raise ValueError(
                f"link {link}: sent({requested}, {confirmed}) does not match"
                f" the oldest unreported send of {expected} bytes"
            )
        lk.unconfirmed.popleft()
        lk.bytes_acked += max(confirmed, 0)
        self._send_result(link, requested, confirmed)

    def listening(self, server: int, port: int) -> None:
        """The bridge listens for server ``server`` on ``port``.

        When nobody waits for it any more (the network dropped or the module
        restarted meanwhile, and ``AT+SERVERSTART`` was answered with an
        error), the bridge is told to stop listening again.
        """
        if self._waiting_for == ("listen", server):
            self.servers[server] = port
            self._end_wait()
            self.reply("OK")
        elif self.servers[server] is None:
            self._actions.append(StopListening(server))

    def listen_failed(self, server: int, err: int) -> None:
        """Listening for server ``server`` failed with the 5.2 code ``err``."""
        if self._waiting_for == ("listen", server):
            self._end_wait()
            self.reply(f"+CIPERROR: {err}", "ERROR")

    def free_link(self, server: int | None = None) -> int | None:
        """The link a client of ``server`` would take: free and with no unread data.

        In transparent mode (CIPMODE=1) server 0 is the transparent server and
        its client takes link 0, the only transparent link; the other server's
        clients take the other links (3.4.1). ``None`` asks for any link.
        """
        for lk in self.links:
            free = lk.state is LinkState.FREE and not lk.rx
            if free and (server is None or self._serves_link(server, lk.number)):
                return lk.number
        return None

    def accepted(self, server: int, host: str, port: int) -> int | None:
        """Server ``server`` accepted a client from ``host:port``; the link it got, or ``None``.

        The transparent server's client (3.4.1) is ``+CLIENT: 0,0,...`` then
        ``CONNECT 115200``: data mode. It waits (``None``) until the host is
        idle in command mode, neither typing a command nor waiting for one.
        """
        link = self.free_link(server)
        if self.servers[server] is None or link is None:
            return None
        transparent = self._transparent_server(server)
        if transparent and (self._mode is not _Mode.COMMAND or self._lines.partial):
            return None
        lk = self.links[link]
        lk.reset()
        lk.state, lk.kind, lk.server = LinkState.OPEN, "TCP", server
        lk.remote_host, lk.remote_port, lk.local_port = host, port, self.servers[server] or 0
        self._urc(frame(f"+CLIENT: {link},{server},{host}:{port}"))
        if transparent:
            self.enter_data_mode(link)
        return link

    def _transparent_server(self, server: int) -> bool:
        return self.settings.cipmode == 1 and server == 0

    def _serves_link(self, server: int, link: int) -> bool:
        if self.settings.cipmode != 1:
            return True
        return (link == 0) == self._transparent_server(server)

    def drop_network(self) -> None:
        """Fault injection: the PDP context drops (``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY``)."""
        if not self.network_open or self.network_lost:
            return
        self.close_everything(report=False)
        self.network_lost = True
        if self._waiting_for is not None:
            kind, key = self._waiting_for
            self._end_wait()
            if kind == "open":
                self.reply(f"+CIPOPEN: {key},{ERR_NETWORK}", "ERROR")
            else:  # SERVERSTART: the listener being set up goes with the network
                self._actions.append(StopListening(key))
                self.reply(f"+CIPERROR: {ERR_NETWORK}", "ERROR")
        self._urc(frame(f"+CIPEVENT: {note.NETWORK_CLOSED}"))

    def restart(self, now: float, boot_s: float = 0.0) -> None:
        """Fault injection: the module restarts; every link, server and setting is gone.

        Its sockets are closed, echo is back on, the network is closed; after
        ``boot_s`` of silence (input is discarded meanwhile) it prints its boot
        lines (:meth:`.FirmwareShapes.boot_lines`: ``RDY``, ``+CPIN: READY``
        and ``SMS Ready`` by default). What it had already said stays said.
        """
        self._now = max(self._now, now)
        for lk in self.links:
            if lk.state is not LinkState.FREE:
                self._actions.append(Close(lk.number))
        for server, port in enumerate(self.servers):
            if port is not None or self._waiting_for == ("listen", server):
                self._actions.append(StopListening(server))
        self.faults.unmute()
        self._power_on()
        self.faults.applied["restart"] += 1
        if boot_s > 0:
            self.faults.muted_until = self._boot_at = self._now + boot_s
        else:
            self._boot_urcs()

    def mute(self, now: float, seconds: float | None = None) -> None:
        """Fault injection: read and discard everything, answer nothing, for ``seconds``.

        ``None``: until :meth:`unmute`. A CIPSEND payload being read or a
        command not yet run is abandoned. The network side keeps working (data
        is buffered), but nothing the module would say meanwhile is ever said.
        """
        self._now = max(self._now, now)
        self.faults.mute(self._now, seconds)
        # The hung firmware abandons what it was doing: a CIPSEND payload half
        # read, a command waiting out its latency, a half-typed line. After the
        # spell it is in command mode, as after any unanswered command.
        if self._mode in (_Mode.PAYLOAD, _Mode.BUSY):
            self._outgoing = None
            self._prompt_withheld = False
            self._mode = _Mode.COMMAND
        self._inbuf.clear()
        self._lines = CommandLineReader()
        # URCs held back while the payload or the line was read are said now,
        # in order, before anything the module says later (while mute, they go
        # the way of everything else it says).
        self._release()

    def unmute(self) -> None:
        """End :meth:`mute` early."""
        self.faults.unmute()

    def urc_storm(self, count: int) -> None:
        """Fault injection: ``count`` URCs at the next boundaries, half ``+CIPRXGET: 1,<n>``.

        The others are URCs a host does not know (:data:`~.faults.STORM_URCS`).
        A ``+CIPRXGET: 1`` for a link with nothing buffered is a false alarm a
        host must survive (3.5).
        """
        if not 0 <= count <= MAX_STORM_URCS:
            raise ValueError(f"a URC storm has 0..{MAX_STORM_URCS} URCs, not {count}")
        rng = self._rng
        notice = self.config.firmware.data_notice
        units = [
            frame(notice(rng.randrange(note.MAX_LINK + 1)))
            if rng.random() < 0.5
            else frame(rng.choice(STORM_URCS))
            for _ in range(count)
        ]
        self.faults.applied["urc_storm"] += 1
        self._urc(b"".join(units))

    def time_out_connect(self, link: int) -> None:
        """A TCP connect that never completes: ``+CIPOPEN: <link>,10`` when the timeout passes."""
        timeout_s = self.config.faults.connect_timeout_s
        if timeout_s is None:
            timeout_s = self.settings.timeouts_ms[1] / 1000  # AT+CIPTIMEOUT's CIPOPEN (3.12)
        self._connect_deadlines[link] = self._now + timeout_s

    # --- for the command handlers ------------------------------------------------------

    def reply(self, *parts: str | bytes) -> None:
        """A command's response: lines (``str``) and payload blocks (``bytes``), final last."""
        for index, part in enumerate(parts):
            if index:
                self._out += self._noise()
            self._out += self._line(part) if isinstance(part, str) else part

    def late(self, text: str) -> None:
        """A late result (``+CIPOPEN: 0,0`` after ``OK``): a URC, noise before it."""
        self._urc(self._noise() + self._line(text))

    def _line(self, text: str) -> bytes:
        """A response line or late result, framed; spoiled if a line fault is armed."""
        return frame(self.faults.spoil_line(text))

    def ip_error(self, code: int) -> None:
        """``+IP ERROR: <err_info>`` ``ERROR``, as a number with CIPCCFG errMode 0 (5.1)."""
        info = str(code) if self.settings.err_mode == 0 else IP_ERROR_STRINGS[code]
        self.reply(f"+IP ERROR: {info}", "ERROR")

    def request(self, action: Action) -> None:
        """Ask the bridge to do something."""
        self._actions.append(action)

    def begin_payload(self, link: int, length: int | None, address: tuple[str, int] | None) -> None:
        """Send the ``>`` prompt and read a CIPSEND payload (``length`` ``None``: Ctrl+Z ends)."""
        self._prompt_withheld = self.faults.withhold_prompt()
        self._out += self._noise()
        if not self._prompt_withheld:
            self._out += note.PROMPT
        self._outgoing = PayloadReader(link, length, address)
        self._mode = _Mode.PAYLOAD

    def enter_data_mode(self, link: int) -> None:
        """``CONNECT 115200``: link ``link`` becomes a raw byte pipe until ``+++`` (section 2)."""
        self.reply(note.CONNECT_RESULT)
        self.data_link = link
        self._mode = _Mode.DATA
        self._escape = EscapeDetector(self._now, self.config.escape_guard_s)
        lk = self.links[link]
        data = lk.take_all()  # what arrived while the host was in command mode
        if data:
            self.stats.payload_to_host += len(data)
            self._out += data
            self.after_read(lk)

    def call_at(self, when: float, what: Callable[[], None]) -> None:
        """Run ``what`` once the clock reaches ``when`` (same clock as ``now``).

        Calls due at the same time run in the order they were made. A restart
        forgets every call not yet made.
        """
        heapq.heappush(self._calls, (when, next(self._call_order), what))

    @property
    def now(self) -> float:
        """The module's clock: the latest ``now`` it was given."""
        return self._now

    def wait_for(self, kind: str, key: int) -> None:
        """Hold the final result until the bridge reports (``"open"`` / ``"listen"``)."""
        self._waiting_for = (kind, key)
        self._mode = _Mode.WAITING

    def push(self, lk: Link, data: bytes, address: tuple[str, int] | None = None) -> None:
        """Direct push of ``data`` (4.1): ``RECV FROM:``, ``+IPD<n>`` / ``+RECEIVE``, raw bytes."""
        host, port = address if address is not None else (lk.remote_host, lk.remote_port)
        settings = self.settings
        for start in range(0, len(data), note.MAX_PUSH_BYTES):
            chunk = data[start : start + note.MAX_PUSH_BYTES]
            header: list[str] = []
            if settings.cipsrip:
                header.append(self.config.firmware.sender_line(host, port))
            if settings.ciphead:
                if settings.header_type == 1:
                    header.append(f"+RECEIVE,{lk.number},{len(chunk)}")
                else:
                    header.append(f"+IPD{len(chunk)}")
            head = "".join(f"{line}\r\n" for line in header)
            prefix = b"\r\n" + head.encode("latin-1") if header else b""
            self.stats.payload_to_host += len(chunk)
            self._urc(prefix + chunk)

    def flush_buffers_as_push(self) -> None:
        """Buffer access was switched off: push what the links still hold."""
        for lk in self.links:
            if lk.rx:
                for data, sender in lk.drain():  # a datagram at a time, with its sender
                    self.push(lk, data, sender)
                self.after_read(lk)

    def after_read(self, lk: Link) -> None:
        """The host read from ``lk``'s buffer: resume its socket once half of the buffer is free."""
        # (Reads refill the buffer from its backlog: a backlog means it is full.)
        if lk.reading_paused and len(lk.rx) <= lk.capacity // 2:
            lk.reading_paused = False
            if lk.is_open:
                self._actions.append(ResumeReading(lk.number))

    def close_link(self, lk: Link) -> None:
        """Close a link locally (CIPCLOSE, NETCLOSE): the bridge drops it, unread data is gone.

        CIPSENDs whose ``+CIPSEND:`` is still due are reported as sent: closing
        a socket flushes what was written to it.
        """
        self._actions.append(Close(lk.number))
        self._connect_deadlines.pop(lk.number, None)
        while lk.unconfirmed:
            length = lk.unconfirmed.popleft()
            self._send_result(lk.number, length, length)
        lk.reset()

    def close_everything(self, *, report: bool) -> None:
        """Close every link (``+CIPCLOSE: <n>,0`` each if ``report``) and every server."""
        for lk in self.links:
            if lk.number == self.data_link:
                self.close_link(lk)
                self._close_transparent()
            elif lk.state is not LinkState.FREE:
                if not report:  # the network broke: what was not sent yet is lost
                    self._confirm_all(lk, -1)
                self.close_link(lk)
                if report:
                    self.late(f"+CIPCLOSE: {lk.number},0")
            lk.reset()
        for server, port in enumerate(self.servers):
            if port is not None:
                self._actions.append(StopListening(server))
                self.servers[server] = None

    def open_links(self) -> Iterator[Link]:
        """The links that are not free."""
        return (lk for lk in self.links if lk.state is not LinkState.FREE)

    # --- internals ------------------------------------------------------------------

    def _noise(self) -> bytes:
        noise = self.config.urc_noise
        return frame(self._rng.choice(noise)) if noise and self.faults.noise_here() else b""

    def _holding_for_line(self) -> bool:
        return self._mode is _Mode.COMMAND and self._lines.partial and not self._hold_expired

    def _hold_deadline(self) -> float | None:
        """When URCs held behind a half-typed line go out anyway."""
        if self._held and self._holding_for_line():
            return self._lines.last_byte_at + URC_HOLD_S
        return None

    def _urc(self, unit: bytes) -> None:
        if self._mode in (_Mode.PAYLOAD, _Mode.DATA) or self._holding_for_line():
            self._held.append(unit)
        else:
            self._out += unit

    def _release(self) -> None:
        if self._held:
            self._out += b"".join(self._held)
            self._held.clear()

    def _report_open(self, link: int, err: int) -> None:
        if self._waiting_for != ("open", link):  # TCP in command mode: the late result
            self.late(f"+CIPOPEN: {link},{err}")
            return
        self._end_wait()
        if self.settings.cipmode == 1:  # transparent: CONNECT or CONNECT FAIL (3.3)
            if err == 0:
                self.enter_data_mode(link)
            else:
                self.reply(note.CONNECT_FAIL)
        else:  # UDP: result, then OK / ERROR (3.3)
            self.reply(f"+CIPOPEN: {link},{err}", "OK" if err == 0 else "ERROR")

    def _leave_data_mode(self) -> None:
        self._mode = _Mode.COMMAND
        self._escape = None

    def _close_transparent(self) -> None:
        """The transparent link is gone: ``CLOSED``, and command mode (4.2)."""
        self.data_link = None
        if self._mode is _Mode.DATA:
            self._leave_data_mode()
            self._out += frame(note.CLOSED)  # before what data mode held back
            self._release()
        else:
            self._urc(frame(note.CLOSED))

    def _send_transparent(self, data: bytes) -> None:
        if not data or self.data_link is None:
            return
        lk = self.links[self.data_link]
        address = (lk.remote_host, lk.remote_port) if lk.kind == "UDP" else None
        lk.bytes_sent += len(data)
        self.stats.payload_from_host += len(data)
        # Not in lk.unconfirmed: a data-mode send reports nothing (no +CIPSEND:).
        self._actions.append(Send(lk.number, data, address))

    def _end_wait(self) -> None:
        self._waiting_for = None
        self._mode = _Mode.COMMAND
        self._resume = True  # input may have queued up meanwhile: get_timer() says "now"

    def _confirm_all(self, lk: Link, confirmed: int) -> None:
        while lk.unconfirmed:
            self._send_result(lk.number, lk.unconfirmed.popleft(), confirmed)

    def _send_result(self, link: int, requested: int, confirmed: int) -> None:
        """The late ``+CIPSEND:`` of one send, in the firmware's shape (3.4)."""
        self.late(self.config.firmware.send_result(link, requested, confirmed))

    def _boot_urcs(self) -> None:
        for text in self.config.firmware.boot_lines():
            self._urc(frame(text))

    def _process(self) -> None:
        while self._inbuf:
            if self._mode is _Mode.COMMAND:
                self._take_command_bytes()
            elif self._mode is _Mode.PAYLOAD:
                self._take_payload_bytes()
            elif self._mode is _Mode.DATA:
                assert self._escape is not None
                data = self._escape.feed(bytes(self._inbuf), self._now)
                self._inbuf.clear()
                self._send_transparent(data)
            else:
                return

    def _take_command_bytes(self) -> None:
        echoed, line = self._lines.feed(self._inbuf, self._now)
        if self.settings.echo or self.config.sticky_echo:
            self._out += echoed
        if line is not None:
            self._end_of_line(line)

    def _end_of_line(self, line: CommandLine) -> None:
        self._hold_expired = False
        self._release()
        if line.too_long:
            self.reply("ERROR")
            return
        text = line.text
        if not text:
            return
        if text[:2].upper() != "AT":
            logger.debug("ignoring a line that is no command: %r", text)
            return
        latency = self.faults.latency(self.config.latency_s)
        if latency > 0:
            self._mode = _Mode.BUSY
            self._pending_line = text
            self._busy_until = self._now + latency
        else:
            self._execute(text)

    def _execute(self, text: str) -> None:
        self.stats.commands += 1
        logger.debug("command %r", text)
        command = parse_command(text)
        handler = _HANDLERS.get(command.name) if command is not None else None
        if command is None or handler is None:
            self.reply("ERROR")
            return
        try:
            handler(self, command)
        except (ParamError, ProtocolError) as exc:
            logger.debug("%s: %s", text, exc)
            self.reply("ERROR")

    def _take_payload_bytes(self) -> None:
        assert self._outgoing is not None
        if self._prompt_withheld:
            # The host never saw '>': an ESC before any payload byte is its cancel (3.4).
            self._prompt_withheld = False
            if self._inbuf[:1] == bytes([note.ESC]) and not self._outgoing.data:
                del self._inbuf[:1]
                self._cancel_payload()
                return
        state = self._outgoing.feed(self._inbuf)
        if state is PayloadState.DONE:
            self._finish_payload()
        elif state is PayloadState.CANCELLED:
            self._cancel_payload()

    def _finish_payload(self) -> None:
        out = self._outgoing
        assert out is not None
        self._outgoing = None
        self._mode = _Mode.COMMAND
        data = out.data
        lk = self.links[out.link]
        if not data or out.too_long:
            self.reply("ERROR")
        elif not lk.is_open:
            self.reply(f"+CIPERROR: {ERR_NOT_SUPPORTED}", "ERROR")
        elif self.faults.send_buffer_full(lk.number):
            # Taken, but the module's buffer is full: <cnfSendLength> 0 (3.4), nothing sent.
            self.reply("OK")
            self._send_result(lk.number, len(data), 0)
        else:
            lk.bytes_sent += len(data)
            lk.unconfirmed.append(len(data))
            self.stats.payload_from_host += len(data)
            self._actions.append(Send(out.link, data, out.address, self.settings.cipsendmode == 1))
            self.reply("OK")
        self._release()

    def _cancel_payload(self) -> None:
        # ESC: nothing is sent; the module answers OK and no +CIPSEND follows.
        self._outgoing = None
        self._mode = _Mode.COMMAND
        self.reply("OK")
        self._release()
