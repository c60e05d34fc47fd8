"""redis-py's asyncio client, unmodified, through the modem (``use_modem``).

    python examples/redis_roundtrip.py                 # own virtual SIM7028 + redis-server
    python examples/redis_roundtrip.py --port /dev/ttyUSB2 --redis redis.example.net:6379

With no ``--redis`` it starts ``redis-server`` (it must be installed) on
127.0.0.1 without persistence, and stops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import redis.asyncio as aioredis

import simsock
from simsock.ecosystem import use_modem
from simsock.emulator import VirtualModem


@contextlib.contextmanager
def local_redis() -> Iterator[tuple[str, int]]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not installed; give --redis HOST:PORT")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [
        executable,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield "localhost", port
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def modem_url(port: str | None) -> AsyncIterator[str]:
    if port:
        yield port
        return
    async with VirtualModem() as vm:  # same loop: use_modem leaves its own calls on the host
        yield vm.url


async def round_trip(port: str, host: str, redis_port: int) -> None:
    async with simsock.open_modem(port) as modem:
        with use_modem(modem) as interposer:
            client = aioredis.Redis(host=host, port=redis_port)
            try:
                value = os.urandom(10_000)
                print("PING ->", await client.ping())
                await client.set("simsock:example", value)
                back = await client.get("simsock:example")
                print("SET/GET 10000 random bytes, identical:", back == value)
                print("INCR ->", await client.incr("simsock:counter"))
            finally:
                await client.aclose()
        print("went through the module:", interposer.redirected)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", help="serial port URL of the modem (default: a virtual one)")
    parser.add_argument("--redis", help="HOST:PORT of a redis server (default: start one)")
    args = parser.parse_args()
    async with modem_url(args.port) as port:
        if args.redis:
            host, _, number = args.redis.rpartition(":")
            await round_trip(port, host, int(number))
        else:
            with local_redis() as (host, number):
                await round_trip(port, host, number)


if __name__ == "__main__":
    asyncio.run(main())
