"""httpx over the module: an ``httpcore.AsyncNetworkBackend`` and an ``httpx`` transport.

``httpx.AsyncClient(transport=ModemTransport(modem))`` sends every request
through the module. :class:`ModemNetworkBackend` opens module links (the
host name is resolved by the module) and wraps them in the anyio streams of
:mod:`simsock.ecosystem.anyio_streams`; ``start_tls`` wraps that stream in
anyio's own :class:`~anyio.streams.tls.TLSStream`, so HTTPS certificates are
verified on the host with the client's ``SSLContext``. httpcore's
connection pool keeps connections alive and reuses them; the pool is
limited to the module's two links by default.

Routing httpx through ``anyio.connect_tcp`` cannot work (anyio opens a host
socket), which is why this backend exists. Needs the ``httpx`` extra
(``pip install simsock[httpx]``).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import httpcore
import httpx
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from .anyio_streams import ModemSocketStream, connect_tcp

if TYPE_CHECKING:
    from ..sockets.modem import Modem

__all__ = ["ModemNetworkBackend", "ModemNetworkStream", "ModemTransport"]

#: The SIM7028 has two links (3.3), so more pooled connections could only fail.
MODULE_LINKS = 2

#: httpcore's SOCKET_OPTION (spelled out: httpcore keeps it in a private module).
_SOCKET_OPTION = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class ModemNetworkStream(httpcore.AsyncNetworkStream):
    """A module link (or TLS over one) as httpcore sees a connection."""

    def __init__(self, stream: ModemSocketStream | TLSStream) -> None:
        self._stream = stream

    def _link_stream(self) -> ModemSocketStream:
        stream: Any = self._stream
        while isinstance(stream, TLSStream):
            stream = stream.transport_stream
        assert isinstance(stream, ModemSocketStream)
        return stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        """Up to ``max_bytes``; ``b""`` at end of stream (httpcore's convention)."""
        exc_map: dict[type[Exception], type[Exception]] = {
            TimeoutError: httpcore.ReadTimeout,
            anyio.BrokenResourceError: httpcore.ReadError,
            anyio.ClosedResourceError: httpcore.ReadError,
            ssl.SSLError: httpcore.ReadError,
        }
        with _map_exceptions(exc_map), anyio.fail_after(timeout):
            try:
                return await self._stream.receive(max_bytes=max_bytes)
            except anyio.EndOfStream:
                return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send ``buffer``, waiting while the link's send queue is full."""
        if not buffer:
            return
        exc_map: dict[type[Exception], type[Exception]] = {
            TimeoutError: httpcore.WriteTimeout,
            anyio.BrokenResourceError: httpcore.WriteError,
            anyio.ClosedResourceError: httpcore.WriteError,
            ssl.SSLError: httpcore.WriteError,
        }
        with _map_exceptions(exc_map), anyio.fail_after(timeout):
            await self._stream.send(buffer)

    async def aclose(self) -> None:
        """Close the link (a TLS stream sends close_notify first when it can)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._stream.aclose()
            except (anyio.BrokenResourceError, ssl.SSLError, OSError):
                await self._link_stream().aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
    ) -> httpcore.AsyncNetworkStream:
        """TLS on the host over this link, through anyio's TLSStream."""
        exc_map: dict[type[Exception], type[Exception]] = {
            TimeoutError: httpcore.ConnectTimeout,
            anyio.BrokenResourceError: httpcore.ConnectError,
            anyio.EndOfStream: httpcore.ConnectError,
            ssl.SSLError: httpcore.ConnectError,
        }
        try:
            with _map_exceptions(exc_map), anyio.fail_after(timeout):
                tls = await TLSStream.wrap(
                    self._stream,
                    ssl_context=ssl_context,
                    hostname=server_hostname,
                    # HTTP frames its own bodies; servers often skip close_notify.
                    standard_compatible=False,
                    server_side=False,
                )
        except BaseException:
            await self.aclose()
            raise
        return ModemNetworkStream(tls)

    def get_extra_info(self, info: str) -> Any:
        """``ssl_object``, ``client_addr``, ``server_addr``, ``is_readable``; ``socket`` is None."""
        if info == "ssl_object":
            return self._stream.extra(TLSAttribute.ssl_object, None)
        if info == "client_addr":
            return self._stream.extra(SocketAttribute.local_address, None)
        if info == "server_addr":
            return self._stream.extra(SocketAttribute.remote_address, None)
        if info == "is_readable":
            # httpcore asks this of an idle pooled connection: true means the
            # server closed it (or sent junk), so it must not be reused.
            return self._link_stream().is_readable()
        return None


class ModemNetworkBackend(httpcore.AsyncNetworkBackend):
    """Opens module links for httpcore (``httpcore.AsyncConnectionPool(network_backend=...)``)."""

    def __init__(self, modem: Modem) -> None:
        self.modem = modem

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[_SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """``AT+CIPOPEN`` to ``host:port``; socket options are ignored (no host socket)."""
        exc_map: dict[type[Exception], type[Exception]] = {
            TimeoutError: httpcore.ConnectTimeout,
            OSError: httpcore.ConnectError,
            anyio.BrokenResourceError: httpcore.ConnectError,
        }
        with _map_exceptions(exc_map), anyio.fail_after(timeout):
            stream = await connect_tcp(self.modem, host, port)
        assert isinstance(stream, ModemSocketStream)
        return ModemNetworkStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[_SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A module has no UNIX sockets."""
        raise httpcore.ConnectError("a module cannot open UNIX sockets")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retry back-off)."""
        await anyio.sleep(seconds)


class ModemTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends requests through the module.

    ``verify`` and ``http1``/``http2``, ``limits`` and ``retries`` mean what
    they mean for ``httpx.AsyncHTTPTransport``. Connections are pooled and
    kept alive; at most two at a time (the module's link count).
    """

    def __init__(
        self,
        modem: Modem,
        *,
        verify: ssl.SSLContext | bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits | None = None,
        retries: int = 0,
    ) -> None:
        if isinstance(verify, ssl.SSLContext):
            context = verify
        elif verify:
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        limits = limits or httpx.Limits(
            max_connections=MODULE_LINKS, max_keepalive_connections=MODULE_LINKS
        )
        self.backend = ModemNetworkBackend(modem)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=http2,
            retries=retries,
            network_backend=self.backend,
        )

    @property
    def pool(self) -> httpcore.AsyncConnectionPool:
        """The httpcore pool (its ``connections`` show what is kept alive)."""
        return self._pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` over a pooled module connection."""
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _map_exceptions(_HTTPX_ERRORS):
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _map_exceptions(_HTTPX_ERRORS):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


# httpcore's exceptions as httpx raises them (most specific first: the first match wins).
_HTTPX_ERRORS: dict[type[Exception], type[Exception]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


@contextlib.contextmanager
def _map_exceptions(mapping: dict[type[Exception], type[Exception]]) -> Iterator[None]:
    """Re-raise the first matching exception type of ``mapping`` as its mapped type."""
    try:
        yield
    except Exception as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                if isinstance(exc, target):
                    raise
                raise target(str(exc) or type(exc).__name__) from exc
        raise
