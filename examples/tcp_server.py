"""A TCP echo server on the module (``AT+SERVERSTART``), with a client from this machine.

    python examples/tcp_server.py                       # own virtual SIM7028
    python examples/tcp_server.py --port socket://127.0.0.1:PORT   # 'simsock emulate --tcp'
    python examples/tcp_server.py --port /dev/ttyUSB2 --forever --listen-port 5000

The module listens; each accepted client (``+CLIENT: <link>,<server>,<ip>:<port>``)
gets the real ``asyncio.StreamReader`` / ``StreamWriter`` and is echoed back.
A virtual SIM7028 listens on 127.0.0.1, so the example then connects to its
own server from this machine and checks the echo (length and SHA-256).
With ``--forever`` it only serves, e.g. on a real module's public address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import simsock
from simsock.emulator import VirtualModem


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo everything back until the client closes; runs once per accepted link."""
    peer = writer.get_extra_info("peername")
    link = writer.get_extra_info("link")
    print(f"accepted {peer[0]}:{peer[1]} on link {link}")
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the virtual module's servers bind there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def modem_url(port: str | None) -> AsyncIterator[str]:
    """``port`` itself, or the URL of a VirtualModem started for the example."""
    if port:
        yield port
        return
    async with VirtualModem() as vm:
        yield vm.url


async def check_echo(host: str, port: int, size: int) -> None:
    """Connect from this machine, send ``size`` random bytes, compare what comes back."""
    reader, writer = await asyncio.open_connection(host, port)
    payload = os.urandom(size)
    writer.write(payload)
    await writer.drain()
    echoed = await reader.readexactly(size)
    writer.close()
    await writer.wait_closed()
    same = hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    print(f"{len(echoed)} bytes echoed through the module's server, identical: {same}")
    if not same:
        raise SystemExit(1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", help="serial port URL of the modem (default: a virtual one)")
    parser.add_argument("--listen-port", type=int, help="port the module listens on")
    parser.add_argument("--client-host", default="127.0.0.1", help="where to reach the server")
    parser.add_argument("--size", type=int, default=20_000, help="bytes the client sends")
    parser.add_argument("--forever", action="store_true", help="serve until interrupted")
    args = parser.parse_args()
    listen_port = args.listen_port or free_port()
    async with modem_url(args.port) as url, simsock.open_modem(url) as modem:
        server = await modem.start_server(echo, listen_port)
        async with server:
            address = server.sockets[0].getsockname()
            print(f"module server {server.index} listening on {address[0]}:{address[1]}")
            if args.forever:
                await server.serve_forever()
            else:
                await check_echo(args.client_host, listen_port, args.size)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
