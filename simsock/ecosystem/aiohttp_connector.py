"""aiohttp over the module: ``aiohttp.ClientSession(connector=ModemConnector(modem))``.

Every connection the session makes is a module link (``AT+CIPOPEN``), names
are resolved by the module (``AT+CDNSGIP``, through :class:`ModemResolver`)
and HTTPS runs on the host over the link (``loop.start_tls``), verified with
the connector's ``ssl`` context as aiohttp would verify it. Keep-alive works
as in aiohttp: a released connection goes back to the pool and the next
request to the same host reuses it, without a new ``AT+CIPOPEN``.

Why a :class:`aiohttp.TCPConnector` subclass, and where it hooks in:

- aiohttp has no public hook for "make the connection this way".
  ``TCPConnector._wrap_create_connection`` is the narrowest one: it receives
  the resolved addresses and the arguments of ``loop.create_connection`` and
  returns ``(transport, protocol)``; everything above it (pool, limits,
  keep-alive, DNS cache, fingerprints, error types) stays aiohttp's.
  It is private, but it has kept this shape since aiohttp 3.10 and is what
  third-party connectors (aiohttp-socks) override. The alternative,
  ``socket_factory=``, hands aiohttp a host socket, which a module is not.
- ``limit`` counts *acquired* connections in aiohttp, but idle pooled ones
  hold module links too. A new connection that finds this connector's links
  at its limit, or the module without a free link, closes this connector's
  oldest idle connection (``AT+CIPCLOSE``) and waits until the module has
  freed that link; links the application holds elsewhere are left alone
  (when they fill the module: ``OSError(EMFILE)``, as a socket would say).
  This reads aiohttp's pool (``_conns``), private as well.
- Nothing falls back to host sockets: the one other path that would connect
  (``_wrap_existing_connection``, given a host socket, used by aiohttp only
  for TLS through a proxy on loops without ``start_tls``) raises.

Needs the ``aiohttp`` extra (``pip install simsock[aiohttp]``).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler

from ..at.note import MAX_LINK
from ..sockets.transport import LinkTransport, start_tls_for

if TYPE_CHECKING:
    from ..sockets.modem import Modem

__all__ = ["MODULE_LINKS", "ModemConnector", "ModemResolver"]

# Private aiohttp names used here: TCPConnector._wrap_create_connection (its
# keyword-only ``addr_infos``, ``req``, ``timeout``, ``client_error`` since 3.10),
# _wrap_existing_connection, _get_fingerprint and BaseConnector._conns
# (a mapping of ConnectionKey to (protocol, last-use time) pairs).
# Tested with aiohttp 3.14.5; expected to hold for aiohttp >=3.10,<4.

#: The SIM7028 has two links (3.3); a connector may hold at most that many.
MODULE_LINKS: Final = MAX_LINK + 1
#: The longest wait for a closing link to be freed (AT+CIPCLOSE has its own bound;
#: aiohttp's ``sock_connect`` timeout, 30 s by default, applies as well).
LINK_LOST_WAIT_S: Final = 30.0

_NUMERIC_FLAGS: Final = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class ModemResolver(AbstractResolver):
    """aiohttp's resolver interface answered by the module's DNS (``AT+CDNSGIP``, 3.17).

    IP literals are answered without asking the module; a name the module
    cannot resolve raises ``socket.gaierror`` (aiohttp turns it into
    ``aiohttp.ClientConnectorDNSError``).
    """

    def __init__(self, modem: Modem) -> None:
        self.modem = modem

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The module's addresses for ``host``, shaped as aiohttp's resolvers answer."""
        infos = await self.modem.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        return [
            ResolveResult(
                hostname=host,
                host=str(address[0]),
                port=int(address[1]),
                family=int(af),
                proto=proto,
                flags=_NUMERIC_FLAGS,
            )
            for af, _, proto, _, address in infos
        ]

    async def close(self) -> None:
        """Nothing to release: the module keeps no resolver state for us."""


class _Held(asyncio.Protocol):
    """Holds a new link paused until ``start_tls_for`` puts TLS on it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()


class ModemConnector(aiohttp.TCPConnector):
    """A :class:`aiohttp.TCPConnector` whose connections are module links.

    The arguments mean what they mean for ``TCPConnector``, with two
    differences: ``limit`` defaults to, and may not exceed, the module's
    :data:`MODULE_LINKS` links (aiohttp's ``0``, "no limit", is refused too);
    the resolver is always :class:`ModemResolver`. ``ssl`` is ``True``
    (verify against the default trust store), an ``SSLContext``, an
    ``aiohttp.Fingerprint``, or ``False`` (no verification: only when asked).
    Options that exist only for host sockets (``local_addr``,
    ``happy_eyeballs_delay``, ``interleave``, ``socket_factory``) are not offered.

    Uses private hooks of ``TCPConnector``; see the module docstring.
    """

    def __init__(
        self,
        modem: Modem,
        *,
        ssl: bool | aiohttp.Fingerprint | ssl_module.SSLContext = True,
        limit: int = MODULE_LINKS,
        limit_per_host: int = 0,
        keepalive_timeout: float | None = 15.0,
        force_close: bool = False,
        use_dns_cache: bool = True,
        ttl_dns_cache: int | None = 10,
        family: socket.AddressFamily = socket.AF_UNSPEC,
        timeout_ceil_threshold: float = 5,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        if not 1 <= limit <= MODULE_LINKS:
            raise ValueError(
                f"limit={limit}: the SIM7028 has {MODULE_LINKS} links, so a connector "
                f"can hold 1 to {MODULE_LINKS} connections"
            )
        if not 0 <= limit_per_host <= limit:
            raise ValueError(f"limit_per_host={limit_per_host}: must be 0 (none) to limit={limit}")
        super().__init__(
            ssl=ssl,
            limit=limit,
            limit_per_host=limit_per_host,
            # aiohttp refuses a keep-alive timeout together with force_close
            keepalive_timeout=None if force_close else keepalive_timeout,
            force_close=force_close,
            use_dns_cache=use_dns_cache,
            ttl_dns_cache=ttl_dns_cache,
            family=family,
            resolver=ModemResolver(modem),
            timeout_ceil_threshold=timeout_ceil_threshold,
        )
        self.modem = modem
        # This connector's links that are not lost yet, with the protocol on each.
        self._links: dict[LinkTransport, ResponseHandler | None] = {}
        self._opening = 0  # links being opened (counted against the limit)
        self._waiting_links: set[asyncio.Future[None]] = set()

    # -- the hook (private in aiohttp: see the module docstring) ----------------------

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[AddrInfoType],
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        """``loop.create_connection`` over a module link, errors mapped as aiohttp maps them.

        ``args[0]`` is aiohttp's protocol factory; ``kwargs`` carry ``ssl``
        (an ``SSLContext`` or ``None``) and ``server_hostname``. The first of
        ``addr_infos`` is tried; aiohttp tries the next one if this fails.
        """
        factory = args[0]
        if not addr_infos:
            raise client_error(req.connection_key, OSError(errno.EHOSTUNREACH, "no address"))
        host, port = str(addr_infos[0][4][0]), int(addr_infos[0][4][1])
        sslcontext = kwargs.get("ssl")
        try:
            async with asyncio.timeout(timeout.sock_connect):
                return await self._connect(
                    factory, host, port, sslcontext, kwargs.get("server_hostname"), req
                )
        except ssl_module.CertificateError as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl_module.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            if exc.errno is None and isinstance(exc, TimeoutError):
                raise  # aiohttp's own rule: a timeout stays a timeout
            raise client_error(req.connection_key, exc) from exc

    async def _wrap_existing_connection(self, *args: Any, **kwargs: Any) -> Any:
        """aiohttp would connect over a host socket here: refused."""
        raise NotImplementedError(
            "ModemConnector cannot use a host socket (TLS through a proxy needs loop.start_tls)"
        )

    # -- connecting --------------------------------------------------------------------

    async def _connect(
        self,
        factory: Callable[[], ResponseHandler],
        host: str,
        port: int,
        sslcontext: ssl_module.SSLContext | None,
        server_hostname: str | None,
        req: aiohttp.ClientRequest,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        if sslcontext is None:
            link = await self._open_link(host, port, factory)
            protocol = link.get_protocol()
            assert isinstance(protocol, ResponseHandler)
            self._links[link] = protocol
            return link, protocol
        link = await self._open_link(host, port, _Held)
        protocol = factory()
        self._links[link] = protocol
        try:
            tls = await start_tls_for(
                link,
                protocol,
                sslcontext,
                server_side=False,
                server_hostname=host if server_hostname is None else server_hostname,
            )
            # Checked here, before aiohttp's own check, so that a mismatch aborts
            # the link at once; aiohttp's, on a mismatch, asks the socket behind
            # the transport for the peer's address before it raises.
            fingerprint = self._get_fingerprint(req)
            if fingerprint is not None:
                fingerprint.check(tls)
        except BaseException:
            link.abort()
            raise
        return tls, protocol

    async def _open_link(
        self, host: str, port: int, factory: Callable[[], asyncio.Protocol]
    ) -> LinkTransport:
        """A new link to ``host:port`` within the limit.

        When this connector's links fill its limit, or the module has no free
        link, the oldest idle pooled connection of this connector is closed
        and the new one waits until that link is gone (``connection_lost``
        comes once the module has freed the link). Links held by others
        (``modem.open_connection``, servers' clients) are not touched: when
        they fill the module, ``OSError(EMFILE)`` is raised as for a socket.
        """
        while True:
            if len(self._links) + self._opening >= self.limit:
                # This connector's own links fill the limit: some are idle or closing.
                if not self._close_oldest_idle() and not self._closing():
                    raise OSError(errno.EMFILE, f"all {self.limit} connections are in use")
            else:
                self._opening += 1
                try:
                    transport, _ = await self.modem.create_connection(factory, host, port)
                except OSError as exc:
                    # Taken module links: wait only if one of ours is on its way out.
                    if exc.errno != errno.EMFILE or not (
                        self._close_oldest_idle() or self._closing()
                    ):
                        raise
                else:
                    assert isinstance(transport, LinkTransport)
                    self._track(transport)
                    return transport
                finally:
                    self._opening -= 1
            await self._link_lost()

    def _track(self, link: LinkTransport) -> None:
        """Count ``link`` against the limit until it is lost; then wake who waits for one."""

        def lost() -> None:
            self._links.pop(link, None)
            for waiter in self._waiting_links:
                if not waiter.done():
                    waiter.set_result(None)

        self._links[link] = None
        link.on_lost(lost)

    def _closing(self) -> bool:
        """Whether one of this connector's links is being closed."""
        return any(link.is_closing() for link in self._links)

    async def _link_lost(self) -> None:
        """Until one of this connector's links is lost (at most :data:`LINK_LOST_WAIT_S`)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting_links.add(waiter)
        try:
            async with asyncio.timeout(LINK_LOST_WAIT_S):
                await waiter
        except TimeoutError:
            raise OSError(
                errno.EMFILE, f"no module link was freed in {LINK_LOST_WAIT_S} s"
            ) from None
        finally:
            self._waiting_links.discard(waiter)

    def _close_oldest_idle(self) -> bool:
        """Take this connector's oldest idle connection out of the pool; close its link."""
        owner = {protocol: link for link, protocol in self._links.items() if protocol is not None}
        oldest: tuple[float, Any, ResponseHandler] | None = None
        for key, pooled in self._conns.items():
            for protocol, used in pooled:
                if protocol in owner and (oldest is None or used < oldest[0]):
                    oldest = (used, key, protocol)
        if oldest is None:
            return False
        used, key, protocol = oldest
        self._conns[key].remove((protocol, used))
        if not self._conns[key]:
            del self._conns[key]
        # Close the link itself: AT+CIPCLOSE now (no TLS close_notify, as aiohttp
        # aborts TLS on close); the protocol hears connection_lost once it is done.
        owner[protocol].close()
        return True
