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
  ``getaddrinfo`` go through the module, and every other use of the host's
  network raises :class:`HostNetworkBlockedError` (:mod:`simsock.ecosystem.guard`).
- :mod:`simsock.ecosystem.socket_relay` and :mod:`~simsock.ecosystem.udp_relay`:
  ``socket_for`` / ``udp_socket_for``, a real socket relayed to a module link,
  for blocking code.
- :mod:`simsock.ecosystem.mqtt`: ``ModemMqttClient`` and ``attach_modem`` for
  paho-mqtt and aiomqtt (the ``mqtt`` extra).
- :mod:`simsock.ecosystem.aiohttp_connector`: ``ModemConnector`` for
  ``aiohttp.ClientSession`` (the ``aiohttp`` extra).

Names load lazily, so importing this package imports none of the extras.
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
    "HostNetworkBlockedError": "simsock.ecosystem.guard",
    "RelayedSocket": "simsock.ecosystem.socket_relay",
    "socket_for": "simsock.ecosystem.socket_relay",
    "udp_socket_for": "simsock.ecosystem.udp_relay",
    "ModemMqttClient": "simsock.ecosystem.mqtt",
    "ModemSocketFactory": "simsock.ecosystem.mqtt",
    "attach_modem": "simsock.ecosystem.mqtt",
    "ModemConnector": "simsock.ecosystem.aiohttp_connector",
    "ModemResolver": "simsock.ecosystem.aiohttp_connector",
}

__all__ = [
    "HostNetworkBlockedError",
    "ModemAttribute",
    "ModemConnector",
    "ModemMqttClient",
    "ModemNetworkBackend",
    "ModemResolver",
    "ModemSocketFactory",
    "ModemTransport",
    "RelayedSocket",
    "attach_modem",
    "connect_tcp",
    "create_connected_udp_socket",
    "create_tcp_listener",
    "create_udp_socket",
    "host_network",
    "socket_for",
    "udp_socket_for",
    "use_modem",
]

if TYPE_CHECKING:
    from .aiohttp_connector import ModemConnector, ModemResolver
    from .anyio_streams import (
        ModemAttribute,
        connect_tcp,
        create_connected_udp_socket,
        create_tcp_listener,
        create_udp_socket,
    )
    from .guard import HostNetworkBlockedError
    from .httpx_backend import ModemNetworkBackend, ModemTransport
    from .interpose import host_network, use_modem
    from .mqtt import ModemMqttClient, ModemSocketFactory, attach_modem
    from .socket_relay import RelayedSocket, socket_for
    from .udp_relay import udp_socket_for


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'simsock.ecosystem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
