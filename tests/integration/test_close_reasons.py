"""``+IPCLOSE: <link>,<reason>`` (4.2) as the user sees each reason, in buffer and push mode."""

from __future__ import annotations

import asyncio
import errno

import pytest

import simsock
from simsock.emulator import VirtualModem


async def _wait_buffered(vm: VirtualModem, link: int, size: int) -> None:
    """Until the module holds ``size`` unread bytes on ``link`` (buffer mode)."""
    for _ in range(200):
        if len(vm._interpreter.links[link].rx) >= size:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the peer's bytes never reached the module")


@pytest.mark.parametrize("rx_mode", ["buffer", "push"])
async def test_reason_2_is_a_timeout_after_every_byte_that_came_first(
    vm: VirtualModem, rx_mode: str
) -> None:
    got = asyncio.Event()

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"before the close")
        await writer.drain()
        await got.wait()
        writer.close()

    server = await asyncio.start_server(talk, "127.0.0.1", 0)
    async with server, simsock.open_modem(vm.url, rx_mode=rx_mode) as modem:
        reader, writer = await modem.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        link = writer.get_extra_info("link")
        if rx_mode == "buffer":
            writer.transport.pause_reading()  # the bytes wait in the module
            await _wait_buffered(vm, link, 16)
        else:
            assert await asyncio.wait_for(reader.readexactly(16), 10) == b"before the close"
        assert vm.close_link(link, reason=2)
        writer.transport.resume_reading()
        if rx_mode == "buffer":
            assert await asyncio.wait_for(reader.readexactly(16), 10) == b"before the close"
        with pytest.raises(TimeoutError) as info:
            await asyncio.wait_for(reader.read(), 10)
        assert info.value.errno == errno.ETIMEDOUT
        assert getattr(info.value, "module_code", None) == 2
        got.set()
        writer.close()
        with pytest.raises(TimeoutError):  # as asyncio: wait_closed() re-raises the loss
            await writer.wait_closed()
        assert modem.engine.links == {}


@pytest.mark.parametrize("reason", [0, 1])
async def test_reasons_0_and_1_end_the_stream_after_every_byte(
    vm: VirtualModem, reason: int
) -> None:
    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"all of it")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(talk, "127.0.0.1", 0)
    async with server, simsock.open_modem(vm.url) as modem:
        reader, writer = await modem.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        link = writer.get_extra_info("link")
        writer.transport.pause_reading()
        await _wait_buffered(vm, link, 9)
        assert vm.close_link(link, reason=reason)
        writer.transport.resume_reading()
        assert await asyncio.wait_for(reader.read(), 10) == b"all of it"  # then EOF
        writer.close()
        await writer.wait_closed()
        assert modem.engine.links == {}
