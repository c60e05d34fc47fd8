"""The asyncio ecosystem over the module: anyio streams, httpx, unmodified libraries.

- :mod:`simsock.ecosystem.anyio_streams`: ``connect_tcp``, ``create_tcp_listener``,
  ``create_udp_socket``, ``create_connected_udp_socket`` returning anyio's
  abstract stream types (anyio is a core dependency).
- :mod:`simsock.ecosystem.httpx_backend`: ``ModemTransport`` for
  ``httpx.AsyncClient(transport=...)`` and ``ModemNetworkBackend`` for httpcore
  (the ``httpx`` extra).
- :mod:`simsock.ecosystem.interpose`: ``use_modem(modem)``, under which
  ``asyncio.open_connection``, ``asyncio.start_server`` and the loop's
  ``create_connection``, ``create_server``, ``create_datagram_endpoint`` and
  ``getaddrinfo`` go through the module.

Names load lazily, so importing this package does not import httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "ModemAttribute": "simsock.ecosystem.anyio_streams",
    "connect_tcp": "simsock.ecosystem.anyio_streams",
    "create_tcp_listener": "simsock.ecosystem.anyio_streams",
    "create_udp_socket": "simsock.ecosystem.anyio_streams",
    "create_connected_udp_socket": "simsock.ecosystem.anyio_streams",
    "ModemNetworkBackend": "simsock.ecosystem.httpx_backend",
    "ModemTransport": "simsock.ecosystem.httpx_backend",
    "host_network": "simsock.ecosystem.interpose",
    "use_modem": "simsock.ecosystem.interpose",
}

__all__ = [
    "ModemAttribute",
    "ModemNetworkBackend",
    "ModemTransport",
    "connect_tcp",
    "create_connected_udp_socket",
    "create_tcp_listener",
    "create_udp_socket",
    "host_network",
    "use_modem",
]

if TYPE_CHECKING:
    from .anyio_streams import (
        ModemAttribute,
        connect_tcp,
        create_connected_udp_socket,
        create_tcp_listener,
        create_udp_socket,
    )
    from .httpx_backend import ModemNetworkBackend, ModemTransport
    from .interpose import host_network, use_modem


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'simsock.ecosystem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
