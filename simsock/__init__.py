"""simsock: asyncio networking over a SIMCom SIM7028's AT-command TCP/IP stack.

``async with simsock.open_modem(url) as modem:`` then use ``modem`` as you would
the event loop: ``open_connection``, ``create_connection``, ``getaddrinfo``.
``simsock.emulator.VirtualModem`` is a virtual SIM7028 for when there is no
hardware.

The names below load lazily, so ``import simsock.at`` (the sans-I/O core)
pulls in no asyncio and no serial code.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

# A library logs, the program decides where it goes (logging HOWTO): without
# this, warnings would reach every program's stderr through the last resort.
logging.getLogger("simsock").addHandler(logging.NullHandler())

__version__ = "0.1.0.dev0"

_LAZY = {
    "CommandError": "simsock.at.errors",
    "ModuleError": "simsock.at.errors",
    "ProtocolError": "simsock.at.errors",
    "EngineClosedError": "simsock.at.errors",
    "ModuleUnresponsiveError": "simsock.at.errors",
    "LinkTransport": "simsock.sockets.transport",
    "Modem": "simsock.sockets.modem",
    "open_modem": "simsock.sockets.opener",
}

__all__ = [
    "CommandError",
    "EngineClosedError",
    "LinkTransport",
    "Modem",
    "ModuleError",
    "ModuleUnresponsiveError",
    "ProtocolError",
    "__version__",
    "open_modem",
]

if TYPE_CHECKING:
    from .at.errors import (
        CommandError,
        EngineClosedError,
        ModuleError,
        ModuleUnresponsiveError,
        ProtocolError,
    )
    from .sockets.modem import Modem
    from .sockets.opener import open_modem
    from .sockets.transport import LinkTransport


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'simsock' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
