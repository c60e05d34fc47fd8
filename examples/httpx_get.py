"""HTTPS GET with httpx through the modem, certificate verified on the host.

    python examples/httpx_get.py                       # own virtual SIM7028 + local HTTPS server
    python examples/httpx_get.py --port /dev/ttyUSB2 --url https://example.org/

With no ``--port`` it starts a VirtualModem and an HTTPS server on 127.0.0.1
with a certificate from trustme (``pip install trustme``), and fetches from
it twice over one kept-alive module link. Needs ``pip install simsock[httpx]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.server
import ssl
import threading
from collections.abc import AsyncIterator, Iterator

import httpx

import simsock
from simsock.ecosystem import ModemTransport
from simsock.emulator import VirtualModem


@contextlib.contextmanager
def local_https_server() -> Iterator[tuple[str, ssl.SSLContext]]:
    """The stdlib HTTP server behind TLS on 127.0.0.1; yields its URL and a trusting context."""
    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = b"hello from 127.0.0.1 over TLS\n" * 1000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://localhost:{server.server_address[1]}/", client_context
    finally:
        server.shutdown()
        server.server_close()


@contextlib.asynccontextmanager
async def modem_url(port: str | None) -> AsyncIterator[str]:
    """``port`` itself, or the URL of a VirtualModem started for the example."""
    if port:
        yield port
        return
    async with VirtualModem() as vm:
        yield vm.url


async def fetch(port: str, url: str, verify: ssl.SSLContext | bool) -> None:
    async with simsock.open_modem(port) as modem:
        transport = ModemTransport(modem, verify=verify)
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(2):
                response = await client.get(url)
                digest = hashlib.sha256(response.content).hexdigest()[:16]
                print(response.http_version, response.status_code, len(response.content), "bytes")
                print("  sha256", digest, "links in the pool:", len(transport.pool.connections))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", help="serial port URL of the modem (default: a virtual one)")
    parser.add_argument("--url", help="what to fetch (default: a local HTTPS server)")
    args = parser.parse_args()
    async with modem_url(args.port) as port:
        if args.url:
            await fetch(port, args.url, True)
        else:
            with local_https_server() as (url, context):
                await fetch(port, url, context)


if __name__ == "__main__":
    asyncio.run(main())
