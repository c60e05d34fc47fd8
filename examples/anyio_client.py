"""anyio code over the modem: a SocketStream, anyio's TLSStream on top, typed attributes.

    python examples/anyio_client.py                    # own virtual SIM7028 + local echo server
    python examples/anyio_client.py --port /dev/ttyUSB2 --host example.org --echo-port 7

With no ``--port`` it starts a VirtualModem and a TCP echo server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator

import anyio
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

import simsock
from simsock.ecosystem import ModemAttribute, connect_tcp
from simsock.emulator import VirtualModem


@contextlib.asynccontextmanager
async def local_echo_server() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def modem_url(port: str | None) -> AsyncIterator[str]:
    if port:
        yield port
        return
    async with VirtualModem() as vm:
        yield vm.url


async def talk(port: str, host: str, echo_port: int) -> None:
    async with simsock.open_modem(port) as modem:
        stream = await connect_tcp(modem, host, echo_port)
        print(
            "link",
            stream.extra(ModemAttribute.link),
            "to",
            stream.extra(SocketAttribute.remote_address),
        )
        payload = os.urandom(50_000)
        async with stream, anyio.create_task_group() as group:
            group.start_soon(stream.send, payload)
            echoed = await BufferedByteReceiveStream(stream).receive_exactly(len(payload))
        same = hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        print(f"{len(echoed)} bytes echoed, identical: {same}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", help="serial port URL of the modem (default: a virtual one)")
    parser.add_argument("--host", default="127.0.0.1", help="echo server host")
    parser.add_argument("--echo-port", type=int, help="echo server port (default: a local one)")
    args = parser.parse_args()
    async with modem_url(args.port) as port:
        if args.echo_port:
            await talk(port, args.host, args.echo_port)
        else:
            async with local_echo_server() as echo_port:
                await talk(port, "127.0.0.1", echo_port)


if __name__ == "__main__":
    anyio.run(main)
