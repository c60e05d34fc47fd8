"""UDP through the module in direct-push mode, against a UDP echo server on this machine.

    python examples/udp_client.py                       # own virtual SIM7028 + local echo
    python examples/udp_client.py --port socket://127.0.0.1:PORT   # 'simsock emulate --tcp'
    python examples/udp_client.py --port /dev/ttyUSB2 --echo 203.0.113.7:7

UDP needs ``open_modem(..., rx_mode="push")``: only pushed data carries the
sender's address (``RECV FROM:``) and one datagram per block (reference 4.1).
``modem.create_datagram_endpoint`` gives an ``asyncio.DatagramTransport``;
each datagram is one ``AT+CIPSEND=<link>,<n>,"<ip>",<port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import cast

import simsock
from simsock.emulator import VirtualModem

#: Sizes of the datagrams sent; 1400 bytes is the most operators pass (3.4).
SIZES = (1, 64, 512, 1024, 1400)


class EchoServer(asyncio.DatagramProtocol):
    """A UDP echo server on the host."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own UDP transport does not subclass DatagramTransport: cast, not check.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


class Collector(asyncio.DatagramProtocol):
    """Puts each datagram the module pushes, with its sender, on a queue."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        print("error:", exc)


@contextlib.asynccontextmanager
async def local_echo() -> AsyncIterator[tuple[str, int]]:
    """A UDP echo server on 127.0.0.1; yields its address."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(EchoServer, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[:2]
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def modem_url(port: str | None) -> AsyncIterator[str]:
    """``port`` itself, or the URL of a VirtualModem started for the example."""
    if port:
        yield port
        return
    async with VirtualModem() as vm:
        yield vm.url


async def exchange(url: str, echo: tuple[str, int]) -> None:
    """Send one datagram of each size to ``echo``, and check each comes back whole."""
    async with simsock.open_modem(url, rx_mode="push") as modem:
        transport, protocol = await modem.create_datagram_endpoint(Collector, remote_addr=echo)
        print(f"UDP link {transport.get_extra_info('link')} to {echo[0]}:{echo[1]}")
        try:
            for size in SIZES:
                payload = os.urandom(size)
                transport.sendto(payload)
                data, sender = await asyncio.wait_for(protocol.received.get(), 10)
                verdict = "ok" if data == payload else "DIFFERENT"
                origin = f"{sender[0]}:{sender[1]}"
                print(f"  {size:5d} bytes out, {len(data):5d} back from {origin}: {verdict}")
                if data != payload:
                    raise SystemExit(1)
        finally:
            transport.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", help="serial port URL of the modem (default: a virtual one)")
    parser.add_argument(
        "--echo", metavar="IP:PORT", help="a UDP echo server (default: a local one)"
    )
    args = parser.parse_args()
    async with modem_url(args.port) as url:
        if args.echo:
            host, _, port = args.echo.rpartition(":")
            await exchange(url, (host.strip("[]"), int(port)))
        else:
            async with local_echo() as echo:
                await exchange(url, echo)


if __name__ == "__main__":
    asyncio.run(main())
