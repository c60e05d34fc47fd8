"""The serial lines the benchmarks run on: the virtual module's own pty, or the relay's."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from .cases import Peer
from .line import BITS_PER_BYTE
from .relay import RelayProcess

__all__ = ["LINES", "capacity", "open_line"]

#: The lines every paced case runs on: the independent relay over socket:// (first:
#: the published figures) and the virtual module's own pacing on a pty.
LINES: Final = ("socket", "pty")


def capacity(baud: int | None) -> float | None:
    """C: bytes per second one direction of the line carries (8N1), ``None`` unpaced."""
    return None if baud is None else baud / BITS_PER_BYTE


@contextlib.asynccontextmanager
async def open_line(
    baud: int | None, line: str, *, latency_s: float = 0.0, count: int = 1
) -> AsyncIterator[tuple[list[str], dict[str, int], Peer]]:
    """Virtual modems behind ``line``: their URLs, the servers' ports, the peer process.

    ``"pty"``: the virtual module paces its own line on a pty. ``"socket"``: the
    module runs unpaced on a TCP port and an independent relay process
    (:mod:`.relay`) paces the ``socket://`` line; unpaced, there is no relay.
    """
    if line == "pty":
        async with Peer(baud, latency_s=latency_s, count=count) as peer:
            yield peer.urls, peer.ports, peer
        return
    async with (
        Peer(None, latency_s=latency_s, count=count, transport="tcp") as peer,
        contextlib.AsyncExitStack() as stack,
    ):
        if baud is None:
            yield peer.urls, peer.ports, peer
            return
        relays = [await stack.enter_async_context(RelayProcess(baud, u)) for u in peer.urls]
        yield [relay.url for relay in relays], peer.ports, peer
