"""The virtual SIM7028: the interpreter, the network bridge and a serial port, wired up.

This is the thin asyncio shell around :class:`~.interpreter.Interpreter`:
one task reads the serial port (paced at the baud rate) into the
interpreter, one task writes the interpreter's output (paced too), the
bridge carries out network actions, and a timer handle serves the
interpreter's clock (command latency, held URCs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Literal

from ..at.errors import IPCLOSE_SEND_TIMEOUT
from .bridge import Bridge
from .faults import HOSTILE_URC_NOISE, FaultConfig
from .faults import preset as fault_preset
from .firmware import FirmwareShapes
from .interpreter import Interpreter, Stats
from .pacing import Pacer
from .ports import PtyPort, SerialPort, TcpPort
from .settings import ModuleConfig

__all__ = ["VirtualModem"]

logger = logging.getLogger("simsock.emulator")

#: Serial output waiting to be paced out above which links stop being read
#: (bytes), and below which they are read again: pushed data cannot pile up
#: in memory faster than the line carries it.
SERIAL_BACKLOG_HIGH: Final = 16 * 1024
SERIAL_BACKLOG_LOW: Final = 4 * 1024
#: A port read that took longer than this (s) waited for its bytes: they came
#: just now, the line was idle before them (a read of bytes already there
#: returns without yielding, in microseconds).
READ_WAIT_S: Final = 0.0002

DEFAULT_ALLOW_HOSTS: Final = ("127.0.0.1", "::1", "localhost")


class VirtualModem:
    """A virtual SIM7028 on a pty (``transport="pty"``) or a TCP port (``"tcp"``).

    ``async with VirtualModem() as vm:`` then open ``vm.url`` with pyserial.
    Its sockets are real host sockets: connections go only to ``allow_hosts``
    (others fail as ``+CIPOPEN: <link>,1``), servers and UDP links bind on
    ``bind_host`` (127.0.0.1, or ``bind_host6`` for an IPv6 PDP context).
    ``baudrate`` paces both directions (``None``: as fast as possible);
    ``latency_s`` delays every command; ``dns`` answers ``AT+CDNSGIP`` and
    names in ``AT+CIPOPEN``. See :class:`~.settings.ModuleConfig` for
    ``echo``, ``sticky_echo``, ``urc_noise``, ``seed``, ``rx_buffer_bytes``,
    ``escape_guard_s`` and ``firmware`` (the shapes of results that differ
    between firmware builds: :class:`~.firmware.FirmwareShapes`, e.g.
    ``firmware=FirmwareShapes.a76xx()``).

    Faults: ``preset`` (``"hostile"``: see :meth:`hostile`) or ``faults`` (a
    :class:`~.faults.FaultConfig`) give the starting point, and the keyword
    options ``line_noise``, ``drop_bytes``, ``chunking``, ``jitter_s``,
    ``forget_data_urc``, ``send_buffer_full``, ``connect_timeout_hosts`` and
    ``connect_timeout_s`` override single fields of it. Every random decision
    draws from one source seeded with ``seed`` (``None``: drawn, logged and
    kept in :attr:`seed`). Faults can also be injected at any moment:
    :meth:`drop_network`, :meth:`reset_peer`, :meth:`close_link`,
    :meth:`restart`, :meth:`mute`,
    :meth:`corrupt_next_output`, :meth:`corrupt_next_input`,
    :meth:`corrupt_next_line`, :meth:`urc_storm`,
    :meth:`send_buffer_full`, :meth:`connect_timeout`, :meth:`forget_data_urc`
    and :meth:`withhold_prompt`.
    """

    def __init__(
        self,
        transport: Literal["pty", "tcp"] = "pty",
        baudrate: int | None = None,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_hosts: Iterable[str] = DEFAULT_ALLOW_HOSTS,
        dns: Mapping[str, str] | None = None,
        echo: bool = True,
        sticky_echo: bool = False,
        urc_noise: Iterable[str] = (),
        seed: int | None = None,
        *,
        rx_buffer_bytes: int = 64 * 1024,
        escape_guard_s: float = 1.0,
        bind_host: str = "127.0.0.1",
        bind_host6: str = "::1",
        preset: str | None = None,
        faults: FaultConfig | None = None,
        line_noise: float | None = None,
        drop_bytes: float | None = None,
        chunking: bool | None = None,
        jitter_s: float | None = None,
        forget_data_urc: float | None = None,
        send_buffer_full: float | None = None,
        connect_timeout_hosts: Iterable[str] | None = None,
        connect_timeout_s: float | None = None,
        firmware: FirmwareShapes | None = None,
    ) -> None:
        if transport not in ("pty", "tcp"):
            raise ValueError(f"transport must be 'pty' or 'tcp', not {transport!r}")
        if preset is not None and faults is not None:
            raise ValueError("give a fault preset or a FaultConfig, not both")
        overrides: dict[str, Any] = {
            name: value
            for name, value in (
                ("line_noise", line_noise),
                ("drop_bytes", drop_bytes),
                ("chunking", chunking),
                ("jitter_s", jitter_s),
                ("forget_data_urc", forget_data_urc),
                ("send_buffer_full", send_buffer_full),
                ("connect_timeout_s", connect_timeout_s),
            )
            if value is not None
        }
        if connect_timeout_hosts is not None:
            overrides["connect_timeout_hosts"] = frozenset(connect_timeout_hosts)
        base = faults if faults is not None else fault_preset(preset or "calm")
        noise = tuple(urc_noise)
        if preset == "hostile" and not noise:
            noise = HOSTILE_URC_NOISE
        config = ModuleConfig(
            echo=echo,
            sticky_echo=sticky_echo,
            latency_s=latency_s,
            urc_noise=noise,
            seed=seed,
            rx_buffer_bytes=rx_buffer_bytes,
            escape_guard_s=escape_guard_s,
            faults=dataclasses.replace(base, **overrides),
            firmware=firmware if firmware is not None else FirmwareShapes(),
        )
        if dns is not None:
            config = dataclasses.replace(config, dns=dict(dns))
        self.config = config
        self.baudrate = baudrate
        self._port: SerialPort = PtyPort() if transport == "pty" else TcpPort(host, port)
        self._allow_hosts = tuple(allow_hosts)
        self._bind_hosts = (bind_host, bind_host6)
        self._interpreter = Interpreter(config)
        self._bridge: Bridge | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._outbuf = bytearray()
        self._output_ready = asyncio.Event()
        self._started = False

    @classmethod
    def hostile(cls, seed: int | None = None, **options: Any) -> VirtualModem:
        """A module that is hard to talk to but loses nothing a correct host would not recover.

        Output comes in random pieces, each command's latency jitters, unknown
        URCs appear between lines, one ``+CIPRXGET: 1`` in fifty is forgotten
        (see :data:`~.faults.HOSTILE`). ``options`` are the constructor's.
        """
        return cls(preset="hostile", seed=seed, **options)

    # --- public surface ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What pyserial opens: the pty slave's path, or ``socket://127.0.0.1:<port>``."""
        if not self._started:
            raise RuntimeError("the virtual modem is not started")
        return self._port.url

    @property
    def stats(self) -> Stats:
        """Counters: serial bytes each way, payload bytes each way, commands handled."""
        return self._interpreter.stats

    @property
    def interpreter(self) -> Interpreter:
        """The AT state machine (for inspection: its links, settings and servers)."""
        return self._interpreter

    def inject_urc(self, text: str) -> None:
        """Send the URC line ``text`` at the next line boundary (never inside a payload)."""
        self._interpreter.inject_urc(text)
        self._pump()

    @property
    def seed(self) -> int:
        """The seed of the module's random source (``seed=`` replays its decisions)."""
        return self._interpreter.seed

    @property
    def faults_applied(self) -> Counter[str]:
        """How many faults of each kind took effect so far."""
        return self._interpreter.faults.applied

    def drop_network(self) -> None:
        """Fault injection: the network drops (``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY``)."""
        if self._interpreter.network_open and not self._interpreter.network_lost:
            self._interpreter.faults.applied["drop_network"] += 1
        self._interpreter.drop_network()
        self._pump()

    def reset_peer(self, link: int) -> bool:
        """Fault injection: link ``link``'s TCP connection is reset: ``+IPCLOSE: <link>,1``.

        The real peer gets a reset too. ``False`` when the link has no TCP connection.
        """
        if self._bridge is None or not self._bridge.reset(link):
            return False
        self._interpreter.faults.applied["reset_peer"] += 1
        return True

    def close_link(self, link: int, reason: int = IPCLOSE_SEND_TIMEOUT) -> bool:
        """Fault injection: the module closes link ``link`` itself: ``+IPCLOSE: <link>,<reason>``.

        ``reason`` (4.2): 0 closed locally, 1 closed by the peer, 2 send
        timeout or DTR off. The real peer sees the connection closed; unread
        data stays readable in buffer mode. ``False`` when the link is not open.
        """
        closed = self._interpreter.module_close(link, reason)
        if closed:
            self._interpreter.faults.applied["close_link"] += 1
        self._pump()
        return closed

    def restart(self, boot_s: float = 0.0, *, cut_output: bool = False) -> None:
        """Fault injection: the module restarts (state lost, links and servers closed).

        After ``boot_s`` of silence: the boot lines (``RDY``, ``+CPIN: READY``,
        ``SMS Ready`` by default; see :class:`~.firmware.FirmwareShapes`), echo
        on. ``cut_output`` also drops output not yet on the line, which can cut
        a line or a payload block in the middle, as a power cut does.
        """
        if cut_output:
            self._outbuf.clear()
        self._interpreter.restart(self._now(), boot_s)
        self._pump()

    def mute(self, seconds: float | None = None) -> None:
        """Fault injection: read and discard commands, answer nothing (``None``: until unmuted)."""
        self._interpreter.mute(self._now(), seconds)
        self._pump()

    def unmute(self) -> None:
        """Answer again after :meth:`mute`."""
        self._interpreter.unmute()
        self._pump()

    def corrupt_next_output(self, nbytes: int = 1) -> None:
        """Fault injection: the next ``nbytes`` bytes to the host are corrupted on the line."""
        self._interpreter.faults.to_host.corrupt += _count(nbytes)
        self._interpreter.faults.applied["corrupt_output"] += 1

    def corrupt_next_input(self, nbytes: int = 1) -> None:
        """Fault injection: the next ``nbytes`` bytes from the host are corrupted on the line."""
        self._interpreter.faults.from_host.corrupt += _count(nbytes)
        self._interpreter.faults.applied["corrupt_input"] += 1

    def corrupt_next_line(self, count: int = 1, prefix: str = "") -> None:
        """Fault injection: one byte of each of the next ``count`` result lines is corrupted.

        Response lines, final results and late results only: never a payload
        or its header, so the host's data is never damaged, only its view of
        what happened (an ``OK`` it cannot read, a ``+CIPSEND:`` it cannot match).
        With ``prefix``, only lines starting with it count.
        """
        self._interpreter.faults.arm_spoil_line(count, prefix)

    def urc_storm(self, count: int = 300) -> None:
        """Fault injection: ``count`` URCs (``+CIPRXGET: 1,<n>`` and unknown ones) at once."""
        self._interpreter.urc_storm(count)
        self._pump()

    def send_buffer_full(self, link: int | None = None) -> None:
        """Fault injection: the next CIPSEND on ``link`` (or any) gets ``+CIPSEND: <l>,<n>,0``."""
        self._interpreter.faults.arm_send_buffer_full(link)

    def connect_timeout(self, count: int = 1) -> None:
        """Fault injection: the next ``count`` TCP CIPOPENs end ``+CIPOPEN: <link>,10``."""
        self._interpreter.faults.arm_connect_timeout(count)

    def forget_data_urc(self, count: int = 1) -> None:
        """Fault injection: the next ``count`` ``+CIPRXGET: 1,<link>`` notices are not sent."""
        self._interpreter.faults.arm_forget_data_urc(count)

    def withhold_prompt(self, count: int = 1) -> None:
        """Fault injection: the next ``count`` CIPSENDs get no ``>`` (ESC first cancels)."""
        self._interpreter.faults.arm_withhold_prompt(count)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> None:
        """Open the serial port and start serving it."""
        if self._started:
            return
        loop = asyncio.get_running_loop()
        await self._port.open()
        self._bridge = Bridge(
            self._interpreter,
            self._pump,
            allow_hosts=self._allow_hosts,
            bind_host=self._bind_hosts[0],
            bind_host6=self._bind_hosts[1],
        )
        self._interpreter.handle_timer(loop.time())
        self._tasks = [
            asyncio.ensure_future(self._read_loop()),
            asyncio.ensure_future(self._write_loop()),
        ]
        self._started = True
        logger.info(
            "virtual SIM7028 on %s (baud rate %s, seed %d)",
            self._port.url,
            self.baudrate,
            self.seed,
        )

    async def stop(self) -> None:
        """Close every socket and the serial port."""
        if not self._started:
            return
        self._started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._bridge is not None:
            await self._bridge.close()
        await self._port.close()

    async def __aenter__(self) -> VirtualModem:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the shell ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Move the interpreter's output and actions out, and re-arm its timer."""
        interpreter = self._interpreter
        data = interpreter.data_to_send()
        if data:
            self._outbuf += data
            self._output_ready.set()
        bridge = self._bridge
        if bridge is not None:
            for action in interpreter.actions():
                bridge.execute(action)
            if len(self._outbuf) > SERIAL_BACKLOG_HIGH:
                bridge.pause_all(True)
            bridge.refresh()
        self._arm_timer()

    def _arm_timer(self) -> None:
        when = self._interpreter.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._interpreter.handle_timer(asyncio.get_running_loop().time())
        self._pump()

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        pacer = Pacer(self.baudrate)
        try:
            await self._read_paced(loop, pacer)
        finally:
            pacer.close()

    async def _read_paced(self, loop: asyncio.AbstractEventLoop, pacer: Pacer) -> None:
        while True:
            asked = loop.time()
            data = await self._port.read(pacer.chunk_bytes)
            # Bytes the port had to wait for came just now; bytes that were already
            # there followed the previous ones on the line.
            waited = loop.time() - asked > READ_WAIT_S
            await pacer.spend(len(data), waited=waited)  # in once the line carried them
            self._interpreter.receive_data(data, loop.time())
            self._pump()

    async def _write_loop(self) -> None:
        pacer = Pacer(self.baudrate)
        try:
            await self._write_paced(pacer)
        finally:
            pacer.close()

    async def _write_paced(self, pacer: Pacer) -> None:
        faults = self._interpreter.faults
        waited = True
        while True:
            if not self._outbuf:
                self._output_ready.clear()
                await self._output_ready.wait()
                waited = True  # the line idled until this output was made
                continue
            size = faults.chunk_size(min(len(self._outbuf), pacer.chunk_bytes))
            chunk = bytes(self._outbuf[:size])
            del self._outbuf[: len(chunk)]
            await pacer.spend(len(chunk), waited=waited)
            waited = False
            await self._port.write(chunk)
            if faults.config.chunking:
                await asyncio.sleep(0)  # let the host read this piece on its own
            if self._bridge is not None and len(self._outbuf) < SERIAL_BACKLOG_LOW:
                self._bridge.pause_all(False)


def _count(nbytes: int) -> int:
    if nbytes < 0:
        raise ValueError(f"a byte count cannot be negative: {nbytes}")
    return nbytes
