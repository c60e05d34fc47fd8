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
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Final, Literal

from .bridge import Bridge
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
    ``echo``, ``sticky_echo``, ``urc_noise``, ``seed``, ``rx_buffer_bytes``
    and ``escape_guard_s``.
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
    ) -> None:
        if transport not in ("pty", "tcp"):
            raise ValueError(f"transport must be 'pty' or 'tcp', not {transport!r}")
        config = ModuleConfig(
            echo=echo,
            sticky_echo=sticky_echo,
            latency_s=latency_s,
            urc_noise=tuple(urc_noise),
            seed=seed,
            rx_buffer_bytes=rx_buffer_bytes,
            escape_guard_s=escape_guard_s,
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

    def drop_network(self) -> None:
        """Fault injection: the network drops (``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY``)."""
        self._interpreter.drop_network()
        self._pump()

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
        logger.info("virtual SIM7028 on %s (baud rate %s)", self._port.url, self.baudrate)

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
        while True:
            data = await self._port.read(pacer.chunk_bytes)
            await pacer.spend(len(data))  # the bytes are in once the line carried them
            self._interpreter.receive_data(data, loop.time())
            self._pump()

    async def _write_loop(self) -> None:
        pacer = Pacer(self.baudrate)
        while True:
            if not self._outbuf:
                self._output_ready.clear()
                await self._output_ready.wait()
                continue
            chunk = bytes(self._outbuf[: pacer.chunk_bytes])
            del self._outbuf[: len(chunk)]
            await pacer.spend(len(chunk))
            await self._port.write(chunk)
            if self._bridge is not None and len(self._outbuf) < SERIAL_BACKLOG_LOW:
                self._bridge.pause_all(False)
