"""paho-mqtt and aiomqtt over the module: their socket comes from :func:`socket_for`.

paho-mqtt (2.x) opens its TCP connection in ``Client._create_socket_connection()``
(``socket.create_connection`` to ``client.host``, ``client.port`` with
``client.connect_timeout``), then puts TLS on the socket it got
(``_ssl_wrap_socket``: ``tls_set()`` / ``tls_set_context()``, host name and
certificate verified by paho on the host) and, for ``transport="websockets"``,
its WebSocket framing. Overriding that one method is the whole hook: the socket
it returns is a :class:`~simsock.ecosystem.socket_relay.RelayedSocket`, so
TLS, WebSockets, ``select`` and ``loop_start()`` work unchanged. aiomqtt wraps a
paho client (``aiomqtt.Client._client``) and so takes the same hook.

paho calls the hook from whatever thread runs ``connect()``/``reconnect()``:

- Another thread (paho's ``loop_start()`` thread, or aiomqtt, which runs
  ``connect()`` in the loop's default executor): the hook blocks on
  ``asyncio.run_coroutine_threadsafe(socket_for(...), loop)`` for up to
  ``client.connect_timeout`` seconds, so a refused or timed-out link raises
  there, as ``socket.create_connection`` would.
- The loop's own thread (paho driven by ``add_reader`` from a coroutine): it
  cannot block, so the socket is returned at once and the link opens in the
  background (:func:`~simsock.ecosystem.socket_relay.socket_for_nowait`); a
  failure shows as the connection closing. TLS is refused there with
  ``RuntimeError``: paho's handshake blocks, and the loop it would wait for is
  the one it blocks.

Inside ``use_modem()``: paho's ``loop_start()`` and ``loop()`` first make the
client's wake-up pipe with ``_socketpair_compat()``, a socketpair built from a
listener on 127.0.0.1, which the guard would refuse as host networking. It
never leaves the machine (a socketpair in all but its family), so it is made
under ``host_network()``: all of ``loop_start()`` (the network thread it
starts begins with an empty context, so without it, unless the interpreter
makes threads inherit contexts: ``sys.flags.thread_inherit_context``, 3.14),
and in ``loop()`` only the pipe, not the callbacks it then runs in the
caller's context.

A proxy (``proxy_set``) is not supported (``NotImplementedError``), and
``socket_options`` given to aiomqtt are applied to the relayed ``AF_UNIX``
socket, where TCP options do not exist.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from .guard import host_network
from .socket_relay import socket_for, socket_for_nowait

if TYPE_CHECKING:
    from ..sockets.modem import Modem

__all__ = ["ModemMqttClient", "ModemSocketFactory", "attach_modem"]


class ModemSocketFactory:
    """Opens module-relayed sockets for blocking code, from any thread.

    ``factory(host, port, timeout)`` returns a connected socket whose bytes go
    through ``modem`` (which runs on ``loop``, by default the running loop).
    See the module docstring for the loop's own thread.
    """

    def __init__(self, modem: Modem, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise ValueError("no running loop: pass loop=, the modem's loop") from None
        self.modem = modem
        self.loop = loop

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the modem's loop (and so must not block)."""
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def __call__(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        *,
        local_port: int | None = None,
    ) -> socket.socket:
        """A connected socket to ``host``:``port`` over a module link.

        Off the loop's thread it waits up to ``timeout`` seconds for the link
        (``TimeoutError`` after) and raises what ``modem.create_connection``
        raises. On the loop's thread it returns at once (module docstring).
        """
        if self.on_loop_thread():
            return socket_for_nowait(self.modem, host, port, local_port=local_port)
        if self.loop.is_closed():
            raise RuntimeError("the modem's loop is closed")
        future = asyncio.run_coroutine_threadsafe(
            socket_for(self.modem, host, port, local_port=local_port), self.loop
        )
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            future.add_done_callback(_close_unclaimed)  # if it finished meanwhile
            raise TimeoutError(f"no module link to {host}:{port} within {timeout} s") from None


def _close_unclaimed(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _paho_socket(client: paho.Client, factory: ModemSocketFactory) -> socket.socket:
    """paho's ``_create_socket_connection``, over the module."""
    if getattr(client, "_proxy", None):
        raise NotImplementedError("an MQTT proxy (proxy_set) over the module is not supported")
    if getattr(client, "_ssl", False) and factory.on_loop_thread():
        raise RuntimeError(
            "paho's TLS handshake blocks, and on the modem's loop thread it would block the"
            " loop that relays it: call connect() from another thread"
            " (loop.run_in_executor, asyncio.to_thread, loop_start with connect_async)"
        )
    bind_port = int(getattr(client, "_bind_port", 0) or 0)
    return factory(client.host, client.port, client.connect_timeout, local_port=bind_port or None)


class ModemMqttClient(paho.Client):
    """A ``paho.mqtt.client.Client`` whose connections go through ``modem``.

    ``ModemMqttClient(modem, CallbackAPIVersion.VERSION2, client_id=..., loop=...)``:
    the modem first, then paho's own arguments. ``loop`` is the loop the
    modem runs on (by default the running loop, so create the client in a
    coroutine or pass it). Everything else is paho's: ``connect``,
    ``loop_start``, ``tls_set`` (verified by paho, on the host), ``publish``...
    """

    def __init__(
        self,
        modem: Modem,
        *args: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.modem_sockets = ModemSocketFactory(modem, loop)

    def _create_socket_connection(self) -> socket.socket:
        return _paho_socket(self, self.modem_sockets)

    def loop_start(self) -> MQTTErrorCode:
        return _loop_start(super().loop_start)

    def loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        _make_wake_up_pipe(self)
        return super().loop(timeout)


def _loop_start(loop_start: Callable[[], MQTTErrorCode]) -> MQTTErrorCode:
    """paho's ``loop_start``, its loopback wake-up pipe allowed (module docstring)."""
    with host_network():
        return loop_start()


def _make_wake_up_pipe(client: paho.Client) -> None:
    """What paho's ``loop()`` does first, allowed (module docstring)."""
    if client._sockpairR is None or client._sockpairW is None:
        with host_network():
            client._reset_sockets(sockpair_only=True)
            client._sockpairR, client._sockpairW = paho._socketpair_compat()


def _loop(
    client: paho.Client, loop: Callable[[float], MQTTErrorCode], timeout: float = 1.0
) -> MQTTErrorCode:
    _make_wake_up_pipe(client)
    return loop(timeout)


def attach_modem(
    client: Any, modem: Modem, *, loop: asyncio.AbstractEventLoop | None = None
) -> paho.Client:
    """Make an existing paho ``Client`` or ``aiomqtt.Client`` connect through ``modem``.

    Call it before connecting (for aiomqtt: before ``async with client``). It
    returns the paho client it changed. ``loop`` is the modem's loop, by
    default the running one.
    """
    target = client if isinstance(client, paho.Client) else getattr(client, "_client", None)
    if not isinstance(target, paho.Client):
        raise TypeError(
            f"expected a paho.mqtt.client.Client or an aiomqtt.Client, not {type(client).__name__}"
        )
    factory = ModemSocketFactory(modem, loop)
    # An instance attribute shadows the method paho calls (self._create_socket_connection()).
    target._create_socket_connection = functools.partial(  # type: ignore[method-assign]
        _paho_socket, target, factory
    )
    if not isinstance(target, ModemMqttClient):
        target.loop_start = functools.partial(_loop_start, target.loop_start)  # type: ignore[method-assign]
        target.loop = functools.partial(_loop, target, target.loop)  # type: ignore[method-assign]
    return target
