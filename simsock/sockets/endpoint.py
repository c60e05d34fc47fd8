"""What every link transport shares: the link, the protocol, closing and loss.

``LinkTransport`` (TCP, a stream) and ``LinkDatagramTransport`` (UDP) both
hold one module link and differ only in how data moves; the life cycle
(``close``, ``abort``, ``_force_close``, ``connection_lost`` exactly once) is
written once here.

What ``connection_lost`` gets follows asyncio: ``None`` after ``abort()``,
whatever happens to the link afterwards; after ``close()``, ``None`` too when
the link ends because the modem closed (:class:`~simsock.EngineClosedError`):
the application asked for the end, and the modem's closing only finished it.
An error that the close itself meets (the peer resets the link while queued
bytes are flushed) is still reported, as asyncio reports a failed flush.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..at.errors import EngineClosedError
from ..at.link import Link
from ..driver.driver import Driver

__all__ = ["LinkEndpoint"]

logger = logging.getLogger("simsock.sockets")


class LinkEndpoint:
    """Mixin for transports over one module link (put it first among the bases)."""

    _protocol: Any

    def __init__(
        self,
        driver: Driver,
        link: Link,
        protocol: asyncio.BaseProtocol,
        extra: dict[str, Any] | None = None,
    ) -> None:
        extra = dict(extra or {})
        extra.setdefault("link", link.number)
        super().__init__(extra)  # type: ignore[call-arg]  # asyncio.BaseTransport
        self._loop = asyncio.get_running_loop()
        self._driver = driver
        self._link = link
        self._protocol = protocol
        self._closing = False
        self._lost = False
        self._closed_by_app = False  # close() was called
        self._aborted = False  # abort() was called
        self._lost_callbacks: list[Callable[[], None]] = []

    def _attach(self) -> None:
        """Become the link's owner (after ``connection_made``): early data flows now."""
        self._driver.attach(self._link, self)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<{type(self).__name__} link={self._link.number} {state}>"

    def is_closing(self) -> bool:
        """``close()`` or ``abort()`` was called, or the link is gone."""
        return self._closing or self._lost

    def close(self) -> None:
        """Send what is queued, then ``AT+CIPCLOSE``; ``connection_lost(None)`` follows."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._closed_by_app = True
        self._driver.close_link(self._link)

    def abort(self) -> None:
        """Drop what is queued and close now; ``connection_lost(None)`` follows, as in asyncio."""
        if self._lost:
            return
        self._closing = True
        self._aborted = True
        self._driver.close_link(self._link, abort=True)
        self._loop.call_soon(self._call_connection_lost, None)

    def _force_close(self, exc: BaseException | None) -> None:
        """Close on a fatal error; asyncio's SSLProtocol calls this (with the error)."""
        if self._lost:
            return
        self._closing = True
        if exc is None:  # Python 3.12+'s TLS transport aborts through here
            self._aborted = True
        self._driver.close_link(self._link, abort=True)
        self._loop.call_soon(self._call_connection_lost, exc)

    def link_lost(self, exc: BaseException | None) -> None:
        """(driver) The link is over; after ``abort()``/``close()`` see the module docstring."""
        if self._aborted or (self._app_closed() and isinstance(exc, EngineClosedError)):
            exc = None
        self._closing = True
        self._loop.call_soon(self._call_connection_lost, exc)

    def _app_closed(self) -> bool:
        """``close()`` was called here, or on the TLS transport layered on this one.

        asyncio's ``SSLProtocol`` closes the link only once its TLS shutdown is
        done; until then the application's ``close()`` shows only on its
        transport (``is_closing()``).
        """
        if self._closed_by_app:
            return True
        app_transport = getattr(self._protocol, "_app_transport", None)
        return app_transport is not None and bool(app_transport.is_closing())

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        try:
            self._protocol.connection_lost(exc)
        except Exception:
            logger.exception("connection_lost raised")
        for callback in self._lost_callbacks:
            callback()

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after ``connection_lost`` (servers track their clients so)."""
        self._lost_callbacks.append(callback)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Replace the protocol (as ``loop.start_tls`` does)."""
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The current protocol."""
        return self._protocol  # type: ignore[no-any-return]
