"""The engine: serial I/O, one reader task, one command in flight, the links' wire state."""

from .engine import Engine, EngineClosedError
from .links import Link, LinkOwner, LinkState

__all__ = ["Engine", "EngineClosedError", "Link", "LinkOwner", "LinkState"]
