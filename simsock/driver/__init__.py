"""The asyncio driver: serial I/O around the sans-I/O session (:mod:`simsock.at.session`)."""

from ..at.errors import EngineClosedError, ModuleUnresponsiveError
from ..at.outcomes import ModemState
from ..at.outcomes import StateChanged as StateChange
from .driver import Driver, LinkOwner

__all__ = [
    "Driver",
    "EngineClosedError",
    "LinkOwner",
    "ModemState",
    "ModuleUnresponsiveError",
    "StateChange",
]
