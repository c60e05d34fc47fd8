"""``simsock get URL``: an HTTP(S) GET through the module, with a progress bar.

With httpx installed (``pip install simsock[httpx]``) the request goes
through :class:`simsock.ecosystem.ModemTransport`; otherwise through a small
HTTP/1.1 client over :meth:`~simsock.Modem.open_connection` (TLS on the host
for ``https``). Either way the body is streamed to a file or standard
output while a progress bar is drawn on standard error.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ssl
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from .sockets.modem import Modem

__all__ = ["FetchResult", "Progress", "fetch_url", "have_httpx", "split_url"]

#: Redraws of the progress bar per second, at most.
PROGRESS_HZ = 10.0
BAR_WIDTH = 30
#: Longest status or header line the built-in client accepts.
MAX_HEADER_BYTES = 64 * 1024


def have_httpx() -> bool:
    """Whether httpx and httpcore are importable (the ``httpx`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("httpx", "httpcore"))


def split_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path_and_query)`` of an http or https URL; ValueError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


class Progress:
    """A one-line progress bar on a text stream (redrawn in place on a terminal).

    On a stream that is not a terminal only the final line is written.
    """

    def __init__(self, out: TextIO, total: int | None = None) -> None:
        self._out = out
        self._tty = out.isatty()
        self.total = total
        self.done = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, count: int) -> None:
        """``count`` more bytes arrived."""
        self.done += count
        now = time.monotonic()
        if self._tty and now - self._drawn >= 1 / PROGRESS_HZ:
            self._drawn = now
            self._out.write("\r" + self._line(now))
            self._out.flush()

    def finish(self) -> None:
        """Draw the final state and end the line."""
        line = self._line(time.monotonic())
        self._out.write(("\r" if self._tty else "") + line + "\n")
        self._out.flush()

    def _line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-6)
        rate = f"{self.done / elapsed / 1024:7.1f} KiB/s"
        if self.total:
            share = min(self.done / self.total, 1.0)
            filled = int(share * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            return f"[{bar}] {share:4.0%} {self.done}/{self.total} bytes {rate} {elapsed:5.1f} s"
        return f"{self.done} bytes {rate} {elapsed:5.1f} s"


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The response's status and how many body bytes were written."""

    status: int
    reason: str
    length: int
    client: str


async def fetch_url(
    modem: Modem,
    url: str,
    sink: BinaryIO,
    *,
    progress_to: TextIO | None = None,
    client: str = "auto",
    cafile: str | None = None,
    insecure: bool = False,
) -> FetchResult:
    """GET ``url`` through ``modem`` and write the body to ``sink``.

    ``client`` is ``"httpx"``, ``"streams"`` (the built-in HTTP/1.1 client)
    or ``"auto"`` (httpx when installed). ``cafile`` adds trusted CAs for
    HTTPS; ``insecure`` turns verification off.
    """
    scheme, host, port, path = split_url(url)
    context: ssl.SSLContext | None = None
    if scheme == "https":
        context = ssl.create_default_context(cafile=cafile)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if client == "auto":
        client = "httpx" if have_httpx() else "streams"
    progress = Progress(progress_to or sys.stderr)
    if client == "httpx":
        chunks = _httpx_get(modem, url, context, progress)
    elif client == "streams":
        chunks = _streams_get(modem, host, port, path, context, progress)
    else:
        raise ValueError(f"client must be 'auto', 'httpx' or 'streams', not {client!r}")
    status = (0, "")
    async for item in chunks:
        if isinstance(item, tuple):
            status = item
            continue
        sink.write(item)
        progress.advance(len(item))
    sink.flush()
    progress.finish()
    return FetchResult(status[0], status[1], progress.done, client)


async def _httpx_get(
    modem: Modem, url: str, context: ssl.SSLContext | None, progress: Progress
) -> AsyncIterator[tuple[int, str] | bytes]:
    import httpx

    from .ecosystem import ModemTransport

    transport = ModemTransport(modem, verify=context or True)
    try:
        async with (
            httpx.AsyncClient(transport=transport) as http,
            http.stream("GET", url) as response,
        ):
            yield response.status_code, response.reason_phrase
            length = response.headers.get("content-length")
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            progress.total = int(length) if length and length.isdigit() and not encoded else None
            async for chunk in response.aiter_bytes():
                yield chunk
    except httpx.HTTPError as exc:
        # The socket error underneath (ConnectionRefusedError, gaierror ...) when there is one.
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        raise cause or ConnectionError(f"{type(exc).__name__}: {exc}") from exc


async def _streams_get(
    modem: Modem,
    host: str,
    port: int,
    path: str,
    context: ssl.SSLContext | None,
    progress: Progress,
) -> AsyncIterator[tuple[int, str] | bytes]:
    reader, writer = await modem.open_connection(
        host, port, ssl=context, server_hostname=host if context else None
    )
    try:
        authority = host if port in (80, 443) else f"{host}:{port}"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: simsock\r\n"
            "Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        status_line = (await _header_line(reader)).split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
            raise ConnectionError(f"not an HTTP response: {' '.join(status_line)[:80]!r}")
        yield int(status_line[1]), status_line[2] if len(status_line) > 2 else ""
        headers: dict[str, str] = {}
        while line := await _header_line(reader):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            async for chunk in _chunked(reader):
                yield chunk
            return
        length = headers.get("content-length")
        remaining = int(length) if length is not None and length.isdigit() else None
        progress.total = remaining
        while remaining is None or remaining > 0:
            data = await reader.read(65536 if remaining is None else min(65536, remaining))
            if not data:
                if remaining:
                    raise asyncio.IncompleteReadError(b"", remaining)
                return
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _header_line(reader: asyncio.StreamReader) -> str:
    line = await reader.readuntil(b"\n")
    if len(line) > MAX_HEADER_BYTES:
        raise ConnectionError("HTTP header line too long")
    return line.decode("latin-1").rstrip("\r\n")


async def _chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size_text = (await _header_line(reader)).split(";", 1)[0].strip()
        size = int(size_text, 16)
        if size == 0:
            while await _header_line(reader):  # trailers
                pass
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)  # CRLF after each chunk
