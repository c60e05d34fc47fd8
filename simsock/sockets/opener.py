"""``open_modem``: open the port, start the engine, bring the module up, hand back a Modem."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any

import serial_asyncio

from ..at.bringup import BringUpOptions
from ..at.session import SessionConfig
from ..driver.driver import Driver
from .modem import Modem

__all__ = ["RX_MODES", "SERIAL_READ_BYTES", "open_modem"]

logger = logging.getLogger("simsock")

#: Bytes the serial transport reads per wake-up.
SERIAL_READ_BYTES = 65536
#: The receive modes ``open_modem`` takes.
RX_MODES = ("buffer", "push")


class _Opener:
    """What :func:`open_modem` returns: ``await`` it or use ``async with``."""

    def __init__(self, url: str, kwargs: dict[str, Any]) -> None:
        self._url = url
        self._kwargs = kwargs
        self._modem: Modem | None = None

    def __await__(self) -> Generator[Any, None, Modem]:
        return _start(self._url, **self._kwargs).__await__()

    async def __aenter__(self) -> Modem:
        self._modem = await _start(self._url, **self._kwargs)
        return self._modem

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._modem is not None:
            await self._modem.close()


def open_modem(
    url: str,
    *,
    baudrate: int = 115200,
    rx_mode: str = "buffer",
    apn: str | None = None,
    ip_family: int = 4,
    trace_lines: int = 0,
    poll_interval_s: float | None = None,
    recovery_backoff_s: tuple[float, ...] | None = None,
    transparent: bool = False,
    escape_guard_s: float | None = None,
    wire_tap: Callable[[str, bytes], None] | None = None,
    send_ctrl_z: bool = False,
    hex_reads: bool = False,
    **serial_options: Any,
) -> _Opener:
    """Open the module at ``url`` (any pyserial URL or device path) and bring it up.

    ``async with open_modem("/dev/ttyUSB2") as modem: ...`` or
    ``modem = await open_modem(url)`` then ``await modem.close()``. The module
    is synchronised (``AT``), echo is turned off, the network opened if
    needed and buffer-access receive mode selected (``rx_mode="buffer"``).
    ``transparent=True`` selects transparent mode (``AT+CIPMODE=1``, 2): the
    first connection opened on link 0 is a raw pipe (``escape_guard_s`` is the
    ``+++`` guard time), other links work in command mode between escapes.
    ``wire_tap(direction, data)`` sees every byte both ways ("->" written,
    "<-" read) from the first one: :mod:`simsock.trace` records with it.
    ``ip_family=6`` selects an IPv6 PDP context (``AT+CSOCKETPN=1,6``, 3.18)
    before the network opens; ``apn`` sets ``AT+CGDCONT`` first.
    ``send_ctrl_z=True`` sends with the variable-length ``AT+CIPSEND=<link>``,
    the payload escaped and ended with Ctrl+Z (3.4); ``hex_reads=True`` reads
    buffered data as hex (``AT+CIPRXGET=3``, 3.5), for lines that are not
    8-bit clean on the way in. Both cost line time; the defaults are faster.
    """
    if ip_family not in (4, 6):
        raise ValueError(f"ip_family must be 4 or 6, not {ip_family!r}")
    if rx_mode not in RX_MODES:
        raise ValueError(f"rx_mode must be one of {RX_MODES}, not {rx_mode!r}")
    kwargs = dict(
        baudrate=baudrate,
        rx_mode=rx_mode,
        apn=apn,
        ip_family=ip_family,
        trace_lines=trace_lines,
        poll_interval_s=poll_interval_s,
        recovery_backoff_s=recovery_backoff_s,
        transparent=transparent,
        escape_guard_s=escape_guard_s,
        wire_tap=wire_tap,
        send_ctrl_z=send_ctrl_z,
        hex_reads=hex_reads,
        **serial_options,
    )
    return _Opener(url, kwargs)


async def _start(
    url: str,
    *,
    baudrate: int,
    rx_mode: str,
    apn: str | None,
    ip_family: int,
    trace_lines: int,
    poll_interval_s: float | None,
    recovery_backoff_s: tuple[float, ...] | None,
    transparent: bool,
    escape_guard_s: float | None,
    wire_tap: Callable[[str, bytes], None] | None,
    send_ctrl_z: bool,
    hex_reads: bool,
    **serial_options: Any,
) -> Modem:
    reader, writer = await serial_asyncio.open_serial_connection(
        url=url, baudrate=baudrate, **serial_options
    )
    # pyserial-asyncio reads at most 1024 bytes a wake-up: a 1500-byte
    # CIPRXGET answer would take two. Its transport keeps the size here.
    if hasattr(writer.transport, "_max_read_size"):
        writer.transport._max_read_size = SERIAL_READ_BYTES
    config = SessionConfig(
        baudrate=baudrate, trace_lines=trace_lines, send_ctrl_z=send_ctrl_z, hex_reads=hex_reads
    )
    if poll_interval_s is not None:
        config.poll_interval_s = poll_interval_s
    if escape_guard_s is not None:
        config.escape_guard_s = escape_guard_s
    if recovery_backoff_s is not None:
        config.recovery_backoff_s = recovery_backoff_s
    driver = Driver(reader, writer, config)
    driver.wire_tap = wire_tap  # from the first byte, so a trace includes bring-up
    driver.start()
    options = BringUpOptions(rx_mode=rx_mode, apn=apn, ip_family=ip_family, transparent=transparent)
    try:
        info = await driver.bring_up(options)
    except BaseException:
        await driver.close()
        raise
    return Modem(driver, info, url=url, rx_mode=rx_mode, transparent=transparent)
