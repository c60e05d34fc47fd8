"""Unmodified asyncio libraries over the module: ``with use_modem(modem): ...``.

Inside the block, the running loop's ``create_connection``,
``create_server``, ``create_datagram_endpoint`` and ``getaddrinfo`` go through
the module, and with them ``asyncio.open_connection`` and
``asyncio.start_server`` (which call the loop's methods). Libraries built on
those (redis-py's asyncio client, websockets, gmqtt) run unchanged::

    async with simsock.open_modem(url) as modem:
        with use_modem(modem):
            client = redis.asyncio.Redis(host="example.net")
            await client.ping()

Which calls are redirected, and why this way:

- Only the loop the block runs on is redirected, and only for the block: the
  four methods are set as attributes of that loop object and deleted on exit,
  so other loops (other threads) and code after the block are not sent to
  the module.
- The virtual SIM7028 reaches real host sockets with these same loop methods,
  often on the same loop. Redirecting those calls would send the emulator's
  own connections back into the module, endlessly. So a call is left to the
  host when the code that made it (the first caller outside asyncio's own
  modules, found by walking up the frames) lives in ``simsock.emulator`` or
  another module listed in ``exempt_modules``. The caller is looked up only
  when a connection is set up, never per byte. A marker the emulator had to
  set (a context variable) would have tied the emulator to this module;
  deciding on the caller keeps the emulator unchanged and also catches
  asyncio's internal calls (``create_connection`` resolving a name through
  ``loop.getaddrinfo``), whose caller chain leads back to the emulator.
- Application code can reach the host's network on purpose inside the block
  with ``with host_network(): ...`` (a context variable, so it holds for that
  task and the tasks it starts).
- Calls given a ready socket (``sock=``) stay on the host: the socket is one.

Everything else that would reach the host's network is refused while the
block runs (:mod:`simsock.ecosystem.guard`, process-wide, every thread):
``socket.create_connection``, ``socket.socket.connect`` / ``bind`` /
``listen`` / ``sendto``, the loop's ``sock_connect`` / ``sock_sendto``. They
raise :class:`~simsock.ecosystem.guard.HostNetworkBlockedError` (a
``PermissionError``, ``EACCES``) instead of leaking over Ethernet or Wi-Fi.
That is what happens to paho-mqtt/aiomqtt (``socket.create_connection`` in a
thread), aiohttp's connector (aiohappyeyeballs makes its own socket and calls
``loop.sock_connect``) and aiocoap's default transport (its own UDP socket):
they need simsock's glue, never a silent fallback.
:class:`~simsock.ecosystem.mqtt.ModemMqttClient` / ``attach_modem`` for
paho and aiomqtt, :class:`~simsock.ecosystem.aiohttp_connector.ModemConnector`
for aiohttp, ``transports=["simple6"]`` for aiocoap, and a real socket from
:func:`~simsock.ecosystem.socket_relay.socket_for` for other blocking code.
``use_modem(modem, allow_host=True)`` keeps only the redirection and turns
the guard off. ``AF_UNIX`` sockets and socketpairs always work.

A link's transport has a socket stand-in
(:class:`~simsock.sockets.link_socket.LinkSocket`) in
``get_extra_info("socket")``, so code that looks at it (anyio's
``SocketStream``, and with it ``anyio.connect_tcp`` and httpx's default
transport) runs unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import ssl as ssl_module
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..sockets.transport import start_tls_for
from .guard import (
    DEFAULT_EXEMPT_MODULES,
    HostNetworkBlockedError,
    called_from,
    exempt_loop,
    guard_host_network,
    host_network,
    host_network_requested,
)

if TYPE_CHECKING:
    from ..sockets.modem import Modem

__all__ = ["HostNetworkBlockedError", "ModemInterposer", "host_network", "use_modem"]

logger = logging.getLogger("simsock.ecosystem")

#: Listening on port 0: the module cannot pick a port, so we do, from the
#: IANA dynamic range (RFC 6335), a few times before giving up.
EPHEMERAL_PORTS = range(49152, 65536)
EPHEMERAL_TRIES = 5
#: The module accepts 1-3 pending clients per server (3.14).
MODULE_BACKLOG_MAX = 3

_PATCHED = ("create_connection", "create_server", "create_datagram_endpoint", "getaddrinfo")


class ModemInterposer:
    """The loop methods ``use_modem`` installs; see the module docstring."""

    def __init__(
        self,
        modem: Modem,
        loop: asyncio.AbstractEventLoop,
        exempt_modules: Iterable[str] = DEFAULT_EXEMPT_MODULES,
    ) -> None:
        self.modem = modem
        self.loop = loop
        self.exempt_modules = tuple(exempt_modules)
        self.redirected: list[tuple[str, Any]] = []  # (method, destination): for diagnostics
        self._original: dict[str, Callable[..., Any]] = {}

    # -- installing ----------------------------------------------------------------

    def install(self) -> None:
        """Put the redirecting methods on the loop object."""
        if any(name in vars(self.loop) for name in _PATCHED):
            raise RuntimeError("the loop's networking is already redirected (nested use_modem?)")
        for name in _PATCHED:
            self._original[name] = getattr(self.loop, name)
            setattr(self.loop, name, getattr(self, name))

    def uninstall(self) -> None:
        """Give the loop its own methods back."""
        for name in _PATCHED:
            vars(self.loop).pop(name, None)
        self._original.clear()

    def _to_host(self) -> bool:
        return host_network_requested() or called_from(self.exempt_modules)

    # -- the loop's methods ----------------------------------------------------------

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        ssl: ssl_module.SSLContext | bool | None = None,
        sock: socket.socket | None = None,
        local_addr: tuple[str, int] | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        """``loop.create_connection`` over a module link (family, happy eyeballs etc. ignored)."""
        if sock is not None or self._to_host():
            return await self._original["create_connection"](  # type: ignore[no-any-return]
                protocol_factory,
                host,
                port,
                ssl=ssl,
                sock=sock,
                local_addr=local_addr,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                **kwargs,
            )
        if host is None or port is None:
            raise ValueError("host and port was not specified and no sock specified")
        self.redirected.append(("create_connection", (host, port)))
        local_port = local_addr[1] if local_addr and local_addr[1] else None
        if not ssl:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            return await self.modem.create_connection(
                protocol_factory, host, int(port), local_port=local_port
            )
        # TLS as loop.create_connection(ssl=...) does it: the protocol gets
        # connection_made once the handshake is done (start_tls_for), and the
        # link is held paused until the TLS layer takes it.
        context = ssl_module.create_default_context() if ssl is True else ssl
        assert isinstance(context, ssl_module.SSLContext)
        transport, _ = await self.modem.create_connection(
            _Held, host, int(port), local_port=local_port
        )
        try:
            tls = await start_tls_for(
                transport,
                protocol_factory(),
                context,
                server_side=False,
                server_hostname=host if server_hostname is None else server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
            )
        except BaseException:
            transport.abort()
            raise
        return tls, tls.get_protocol()

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | Iterable[str] | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: ssl_module.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        start_serving: bool = True,
        **kwargs: Any,
    ) -> asyncio.AbstractServer:
        """``loop.create_server`` on the module: it listens on its own address, whatever ``host``.

        ``backlog`` is capped at the module's 3. Port 0 or ``None`` picks a
        free port from the dynamic range (the module cannot).
        """
        if sock is not None or self._to_host():
            return await self._original["create_server"](  # type: ignore[no-any-return]
                protocol_factory,
                host,
                port,
                sock=sock,
                backlog=backlog,
                ssl=ssl,
                ssl_handshake_timeout=ssl_handshake_timeout,
                start_serving=start_serving,
                **kwargs,
            )
        self.redirected.append(("create_server", port))
        ports = [int(port)] if port else random.sample(EPHEMERAL_PORTS, EPHEMERAL_TRIES)
        error: OSError | None = None
        for number in ports:
            try:
                return await self.modem.create_server(
                    protocol_factory,
                    number,
                    ssl=ssl,
                    backlog=max(1, min(backlog, MODULE_BACKLOG_MAX)),
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    start_serving=start_serving,
                )
            except OSError as exc:
                if exc.errno == errno.EMFILE:
                    raise
                error = exc
        assert error is not None
        raise error

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        *,
        sock: socket.socket | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        """``loop.create_datagram_endpoint`` on a module UDP link (``rx_mode="push"``)."""
        if sock is not None or self._to_host():
            return await self._original["create_datagram_endpoint"](  # type: ignore[no-any-return]
                protocol_factory, local_addr, remote_addr, sock=sock, **kwargs
            )
        self.redirected.append(("create_datagram_endpoint", remote_addr or local_addr))
        return await self.modem.create_datagram_endpoint(
            protocol_factory, local_addr=local_addr, remote_addr=remote_addr
        )

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]]:
        """``loop.getaddrinfo`` answered by the module's DNS (``AT+CDNSGIP``)."""
        if self._to_host():
            return await self._original["getaddrinfo"](  # type: ignore[no-any-return]
                host, port, family=family, type=type, proto=proto, flags=flags
            )
        if isinstance(host, bytes):
            host = host.decode("idna")
        if host is None:
            # getaddrinfo(None, ...) means the wildcard (AI_PASSIVE) or loopback address.
            host = "0.0.0.0" if flags & socket.AI_PASSIVE else "127.0.0.1"
        if isinstance(port, bytes):
            port = port.decode()
        if isinstance(port, str) and not port.isdigit():
            port = socket.getservbyname(port)  # /etc/services: a local table, no network
        self.redirected.append(("getaddrinfo", host))
        return await self.modem.getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )


class _Held(asyncio.Protocol):
    """Holds a new link paused until ``start_tls_for`` puts TLS on it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()


@contextlib.contextmanager
def use_modem(
    modem: Modem,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    exempt_modules: Iterable[str] = DEFAULT_EXEMPT_MODULES,
    allow_host: bool = False,
) -> Iterator[ModemInterposer]:
    """Route the running loop's TCP/UDP/DNS calls through ``modem`` for the block.

    See the module docstring for what is redirected and what stays on the
    host (the virtual modem's own calls, ``host_network()`` blocks, ``sock=``).
    Any other use of the host's network in the process raises
    ``HostNetworkBlockedError`` until the block ends, unless ``allow_host`` is
    true: then only the redirection applies, and calls made on this loop's
    thread pass even while another block guards. Connections opened in the
    block outlive it; new ones after it use the host.
    """
    exempt = tuple(exempt_modules)
    interposer = ModemInterposer(modem, loop or asyncio.get_running_loop(), exempt_modules=exempt)
    interposer.install()
    try:
        if allow_host:
            guard: contextlib.AbstractContextManager[None] = exempt_loop(interposer.loop)
        else:
            guard = guard_host_network(interposer.loop, exempt_modules=exempt)
        with guard:
            yield interposer
    finally:
        interposer.uninstall()
