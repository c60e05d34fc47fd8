"""Bulk data through the virtual module: integrity (SHA-256) and real TCP backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import TYPE_CHECKING

import pytest

from simsock.emulator import VirtualModem

if TYPE_CHECKING:
    from conftest import AtHost, HostOpener, PeerStarter

pytestmark = pytest.mark.timeout(60)

SIZE = 256 * 1024


async def download(host: AtHost, link: int, size: int) -> bytes:
    """Read ``size`` bytes with AT+CIPRXGET=2 (buffer mode), polling while the buffer is empty."""
    data = bytearray()
    async with asyncio.timeout(30):
        while len(data) < size:
            got = await host.rxget(link)
            if got is None:
                await asyncio.sleep(0.005)
                continue
            data += got[0]
    return bytes(data)


async def test_256_kib_each_way(open_host: HostOpener, peer: PeerStarter) -> None:
    upload = os.urandom(SIZE)
    reply = os.urandom(SIZE)
    uploaded: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uploaded.set_result(hashlib.sha256(await reader.readexactly(SIZE)).hexdigest())
        writer.write(reply)
        await writer.drain()
        await reader.read()

    server, port = await peer(exchange)
    async with VirtualModem(echo=False) as vm:
        host = await open_host(vm.url)
        await host.command("AT+NETOPEN")
        await host.wait_line(r"\+NETOPEN: 0$")
        await host.command("AT+CIPRXGET=1")
        await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}')
        await host.wait_line(r"\+CIPOPEN: 0,0$")
        for start in range(0, SIZE, 1500):
            await host.send_payload(0, upload[start : start + 1500])
        assert await uploaded == hashlib.sha256(upload).hexdigest()
        received = await download(host, 0, SIZE)
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(reply).hexdigest()
        assert vm.stats.payload_from_host == SIZE
        assert vm.stats.payload_to_host == SIZE
        assert vm.stats.bytes_to_host > SIZE
        assert vm.stats.commands > 2 * SIZE // 1500
    server.close()


async def test_full_module_buffer_stops_reading_the_socket(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    capacity = 16 * 1024
    total = 4 * 1024 * 1024  # far more than the module buffer and the kernel's socket buffers
    stalled = asyncio.Event()
    sent = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        chunk = bytes(64 * 1024)
        while sent < total:
            writer.write(chunk)
            sent += len(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 0.2)
            except TimeoutError:
                stalled.set()  # the module stopped reading: TCP flow control reached the peer
                await writer.drain()
        await reader.read()

    server, port = await peer(flood)
    async with VirtualModem(echo=False, rx_buffer_bytes=capacity) as vm:
        host = await open_host(vm.url)
        await host.command("AT+NETOPEN")
        await host.wait_line(r"\+NETOPEN: 0$")
        await host.command("AT+CIPRXGET=1")
        await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}')
        await host.wait_line(r"\+CIPOPEN: 0,0$")
        async with asyncio.timeout(10):
            await stalled.wait()
        link = vm.interpreter.links[0]
        assert link.reading_paused
        assert capacity <= len(link.rx) <= capacity + 256 * 1024  # at most one socket read more
        assert sent < total
        # Reading from the module resumes the socket; everything arrives, nothing is lost.
        received = await download(host, 0, total)
        assert received == bytes(total)
    server.close()
