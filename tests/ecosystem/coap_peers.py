"""Real aiocoap peers on the host's network for the CoAP tests, and the resources they serve.

The host-side contexts run on their own loop in their own thread, as a real
CoAP server or client elsewhere would: ``use_modem`` redirects only the
loop it is entered on, so nothing here can be routed into the module by
mistake, and the test's loop stays free for the module's traffic. The
host's aiocoap uses its default ``udp6`` transport (its own sockets,
``recvmsg``), which is what a peer on a real network would run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiocoap  # type: ignore[import-untyped]
from aiocoap import resource

__all__ = [
    "BlobResource",
    "CounterResource",
    "HostCoap",
    "RegistrationResource",
    "blob",
    "free_udp_port",
]

_T = TypeVar("_T")

#: How long a host-side step may take before the test fails instead of hanging.
PEER_STEP_TIMEOUT_S = 15.0


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def blob(size: int) -> bytes:
    """A deterministic payload of ``size`` bytes that no block repeats inside."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:size])


class BlobResource(resource.Resource):  # type: ignore[misc]
    """GET answers ``payload``; aiocoap cuts it into Block2 blocks when it is large."""

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=self.payload)


class CounterResource(resource.ObservableResource):  # type: ignore[misc]
    """An observable value: each ``set()`` notifies every observer (RFC 7641)."""

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    def set(self, value: int) -> None:
        """Change the value (on the server's loop) and notify."""
        self.value = value
        self.updated_state()

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=str(self.value).encode())


class RegistrationResource(resource.Resource):  # type: ignore[misc]
    """An LwM2M-style registration interface: ``POST /rd?ep=<name>`` (OMA LwM2M 1.x, 5.3).

    Keeps the request's remote, the address the server later reaches the
    client at, as an LwM2M server does.
    """

    def __init__(self) -> None:
        super().__init__()
        #: (endpoint name, remote) of the first registration; set from the server's thread.
        self.registered: concurrent.futures.Future[tuple[str, Any]] = concurrent.futures.Future()

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        query = dict(item.split("=", 1) for item in request.opt.uri_query if "=" in item)
        if not self.registered.done():
            self.registered.set_result((query.get("ep", ""), request.remote))
        return aiocoap.Message(code=aiocoap.CREATED, location_path=("rd", "1"))


class HostCoap:
    """aiocoap contexts on the host's network, on a loop in a thread of their own.

    ``with HostCoap() as host:`` then ``await host.run(coroutine)`` from the
    test's loop runs the coroutine on the host's loop. Contexts made with
    :meth:`serve` and :meth:`client` are shut down on exit.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._contexts: list[aiocoap.Context] = []

    def __enter__(self) -> HostCoap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            for context in self._contexts:
                await context.shutdown()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(PEER_STEP_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(PEER_STEP_TIMEOUT_S)
        self.loop.close()

    async def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the host's loop; its result, bounded in time."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), PEER_STEP_TIMEOUT_S)

    def call(self, function: Callable[[], object]) -> None:
        """Call ``function()`` on the host's loop (resources live there)."""
        self.loop.call_soon_threadsafe(function)

    async def serve(self, site: resource.Site) -> tuple[int, aiocoap.Context]:
        """A CoAP server for ``site`` on 127.0.0.1 (udp6): its port and its context."""
        port = free_udp_port()

        async def start() -> aiocoap.Context:
            return await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))

        context = await self.run(start())
        self._contexts.append(context)
        return port, context

    async def request(self, context: aiocoap.Context, message: aiocoap.Message) -> aiocoap.Message:
        """``context``'s response to ``message``, the exchange run on the host's loop."""

        async def exchange() -> aiocoap.Message:
            return await context.request(message).response

        return await self.run(exchange())

    async def client(self) -> aiocoap.Context:
        """A CoAP client context on the host (udp6); use it through :meth:`run`."""
        context = await self.run(aiocoap.Context.create_client_context())
        self._contexts.append(context)
        return context
