"""A virtual SIM7028: the module's AT interface on a pty or a TCP port, over real sockets.

``VirtualModem`` is the product: people test firmware and the simsock
library against it. It is built like the library, a sans-I/O AT
interpreter (:class:`Interpreter`, bytes and network outcomes in, bytes and
:mod:`~simsock.emulator.actions` out) inside a thin asyncio shell that bridges
the module's links and servers to host sockets and paces the serial line at
its baud rate. Faults (network loss, peer resets, closes by the module with
any ``+IPCLOSE`` reason, restarts, line noise, a mute module, URC storms,
full send buffers, connect timeouts, forgotten notices, withheld prompts,
chunked output, latency jitter) are injected as options or calls, all driven
by one seeded random source (:mod:`.faults`). Results that differ between
SIMCom firmware builds take the shapes a :class:`FirmwareShapes` picks.
"""

from __future__ import annotations

from .actions import (
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
from .device import VirtualModem
from .faults import HOSTILE, FaultConfig, Faults
from .firmware import FirmwareShapes
from .interpreter import Interpreter, Stats
from .settings import ModuleConfig, ModuleSettings

__all__ = [
    "HOSTILE",
    "Action",
    "Close",
    "FaultConfig",
    "Faults",
    "FirmwareShapes",
    "Interpreter",
    "Listen",
    "ModuleConfig",
    "ModuleSettings",
    "OpenTcp",
    "OpenUdp",
    "PauseReading",
    "ResumeReading",
    "Send",
    "Stats",
    "StopListening",
    "VirtualModem",
]
