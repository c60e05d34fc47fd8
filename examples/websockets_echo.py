"""websockets, unmodified, through the modem (``use_modem``): an echo round trip.

    python examples/websockets_echo.py                 # own virtual SIM7028 + local echo server
    python examples/websockets_echo.py --port /dev/ttyUSB2 --uri wss://echo.example.net/

With no ``--uri`` a websockets echo server runs on 127.0.0.1 (on the host,
started before ``use_modem``), and the client reaches it through the module.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

import simsock
from simsock.ecosystem import use_modem
from simsock.emulator import VirtualModem


@contextlib.asynccontextmanager
async def modem_url(port: str | None) -> AsyncIterator[str]:
    if port:
        yield port
        return
    async with VirtualModem() as vm:
        yield vm.url


async def echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def client(port: str, uri: str) -> None:
    async with simsock.open_modem(port) as modem:
        with use_modem(modem):
            async with connect(uri) as ws:
                print("connected over link", ws.transport.get_extra_info("link"))
                for message in ("hello", "through a SIM7028", b"\x00\x01binary"):
                    await ws.send(message)
                    print("sent", repr(message), "got back", repr(await ws.recv()))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", help="serial port URL of the modem (default: a virtual one)")
    parser.add_argument("--uri", help="an echo server's ws:// or wss:// URI (default: a local one)")
    args = parser.parse_args()
    async with modem_url(args.port) as port:
        if args.uri:
            await client(port, args.uri)
        else:
            async with serve(echo, "127.0.0.1", 0) as server:
                server_port = server.sockets[0].getsockname()[1]
                await client(port, f"ws://localhost:{server_port}/")


if __name__ == "__main__":
    asyncio.run(main())
