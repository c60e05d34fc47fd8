"""The virtual module's options (fixed at start) and its AT-settable settings.

:class:`ModuleConfig` is what a test or the command line chooses when it
starts a :class:`~simsock.emulator.VirtualModem`. :class:`ModuleSettings` is
what the host changes with AT commands; it starts from the reference's
defaults (section numbers beside each field) and is reset by a reboot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from ..at.note import CIPCCFG_DEFAULTS, CIPTIMEOUT_DEFAULT_MS, ESCAPE_GUARD_S
from .faults import FaultConfig
from .firmware import FirmwareShapes

__all__ = ["ModuleConfig", "ModuleSettings"]

_DEFAULT_DNS: Final[Mapping[str, str]] = MappingProxyType({"localhost": "127.0.0.1"})


@dataclass(frozen=True, slots=True)
class ModuleConfig:
    """Options of one virtual SIM7028, fixed for its lifetime.

    ``echo`` is the echo state after power-up (the real module: on);
    ``sticky_echo`` keeps echo on whatever ``ATE0`` says; ``latency_s`` delays
    every command's execution, as a real module's firmware does;
    ``urc_noise`` are URC lines injected between every pair of response lines,
    between a final result and its late result, and before the ``>`` prompt
    (one line, chosen with ``seed``, at each such place); ``escape_guard_s`` is
    the silence around ``+++`` (tests shorten it); ``dns`` is the table
    ``AT+CDNSGIP`` and ``AT+CIPOPEN`` resolve names with; ``rx_buffer_bytes``
    is each link's receive buffer in the module (a full buffer stops reading
    the host socket); ``faults`` are the fault-injection options
    (:class:`~.faults.FaultConfig`), every random decision of which, like the
    choice of noise lines, draws from one source seeded with ``seed``
    (``None``: a seed is drawn and logged, see :attr:`.Interpreter.seed`);
    ``firmware`` picks the shapes of results that differ between SIMCom
    firmware builds (:class:`~.firmware.FirmwareShapes`; default: the note's).
    """

    echo: bool = True
    sticky_echo: bool = False
    latency_s: float = 0.0
    urc_noise: tuple[str, ...] = ()
    seed: int | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    dns: Mapping[str, str] = field(default_factory=lambda: dict(_DEFAULT_DNS))
    rx_buffer_bytes: int = 64 * 1024
    #: Silence around ``+++`` that leaves transparent data mode (s; section 2: 1 s).
    escape_guard_s: float = ESCAPE_GUARD_S
    ip_address: str = "10.64.0.2"
    ipv6_address: str = "2001:db8:64::2"
    manufacturer: str = "SIMCOM INCORPORATED"
    model: str = "SIMCOM_SIM7028"
    revision: str = "SIM7028_V1.04_EMU"
    imei: str = "864000000000001"
    rssi: int = 24
    ber: int = 99
    firmware: FirmwareShapes = field(default_factory=FirmwareShapes)


@dataclass(slots=True)
class ModuleSettings:
    """Everything the host sets with AT commands, at its reference default."""

    echo: bool = True
    cereg_n: int = 0
    apn: str = ""
    #: 0 direct push, 1 buffer access (3.5).
    rx_mode: int = 0
    #: ``+IPD<len>`` header on pushed data (3.8).
    ciphead: int = 1
    #: ``RECV FROM:`` line on pushed data (3.9).
    cipsrip: int = 1
    #: 0 command mode, 1 transparent (3.10).
    cipmode: int = 0
    #: 1: ``+CIPSEND:`` only once the data left (3.11).
    cipsendmode: int = 0
    #: NETOPEN, CIPOPEN, CIPSEND timeouts in ms (3.12).
    timeouts_ms: list[int] = field(default_factory=lambda: [CIPTIMEOUT_DEFAULT_MS] * 3)
    cipccfg: list[int] = field(default_factory=lambda: list(CIPCCFG_DEFAULTS))
    #: PDP family of NETOPEN: 4 or 6 (3.18 ``AT+CSOCKETPN=1,1|6``).
    pdp_family: int = 4
    #: keepalive, keepidle (min), keepcount, keepinterval (min) (3.19).
    tcp_keepalive: tuple[int, int, int, int] = (0, 120, 9, 1)
    #: Primary and secondary DNS server per family (3.20).
    dns_v4: tuple[str, str] = ("8.8.8.8", "8.8.4.4")
    dns_v6: tuple[str, str] = ("2001:4860:4860::8888", "2001:4860:4860::8844")

    @property
    def err_mode(self) -> int:
        """``AT+CIPCCFG`` errMode: 0 reports ``+IP ERROR:`` as a number, 1 as text."""
        return self.cipccfg[3]

    @property
    def header_type(self) -> int:
        """``AT+CIPCCFG`` HeaderType: 0 ``+IPD<len>``, 1 ``+RECEIVE,<link>,<len>``."""
        return self.cipccfg[4]
