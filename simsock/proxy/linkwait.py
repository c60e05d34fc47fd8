"""Waiting for one of the module's two links: retry an open while both are taken."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

__all__ = ["LINK_WAIT_S", "open_with_link_wait"]

logger = logging.getLogger("simsock.proxy")

T = TypeVar("T")

#: Longest wait for one of the module's two links to become free (s).
LINK_WAIT_S: Final = 3.0
#: errnos that mean "no link free now": both in use (EMFILE), or, in push mode
#: without link headers, a sender conflict that ends when the other link closes.
_LINK_BUSY: Final = frozenset({errno.EMFILE, errno.EADDRINUSE})


async def open_with_link_wait(
    open_: Callable[[], Awaitable[T]],
    wait_s: float,
    make_room: Callable[[], object] | None = None,
) -> T:
    """``await open_()``, retried while the module has no free link, for ``wait_s`` at most.

    ``make_room()`` is called each time no link is free (to close an idle one).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = 0.05
    while True:
        try:
            return await open_()
        except OSError as exc:
            if exc.errno not in _LINK_BUSY or loop.time() + delay > deadline:
                raise
            if make_room is not None:
                make_room()
        logger.debug("no free link yet: retrying in %.2f s", delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)
