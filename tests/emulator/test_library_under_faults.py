"""The library under single faults of the virtual SIM7028: minimal reproductions of its gaps.

The one file in tests/emulator that drives ``simsock`` itself: each test is
the smallest run in which the library misses the outcome documented for a
fault (found by the soak, ``benchmarks/soak.py``). They were strict xfails
until the library was fixed; now they guard those fixes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

import simsock
from simsock.emulator import VirtualModem

pytestmark = pytest.mark.timeout(60)

#: AT+CIPTIMEOUT's minimum (3.12): the library's CIPOPEN/CIPSEND waits follow it.
CIPTIMEOUT_S = 3.0


@pytest.fixture
async def vm() -> AsyncIterator[VirtualModem]:
    async with VirtualModem(seed=1) as modem:
        yield modem


@pytest.fixture
async def modem(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    async with simsock.open_modem(vm.url, poll_interval_s=0.05) as opened:
        await opened.set_timeouts(cipopen_s=CIPTIMEOUT_S, cipsend_s=CIPTIMEOUT_S)
        yield opened


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def round_trip(modem: simsock.Modem, peer: tuple[str, int], data: bytes) -> None:
    reader, writer = await asyncio.wait_for(modem.open_connection(*peer), 10)
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), 10) == data
    writer.close()
    await writer.wait_closed()


async def test_an_unanswered_cipopen_leaves_the_link_usable(
    vm: VirtualModem, modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    vm.mute(0.5)
    with pytest.raises(TimeoutError):
        await modem.open_connection(*echo_server)
    for _ in range(3):
        await round_trip(modem, echo_server, b"again")


async def test_a_cipopen_whose_ok_is_lost_still_opens(
    vm: VirtualModem, modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    # "+CIPOPEN: 0,0" only ever follows the OK (3.3): it proves the lost OK was sent.
    vm.corrupt_next_line()  # the OK of the next CIPOPEN
    reader, writer = await asyncio.wait_for(modem.open_connection(*echo_server), 10)
    writer.write(b"opened")
    assert await asyncio.wait_for(reader.readexactly(6), 10) == b"opened"
    writer.close()
    await writer.wait_closed()
    for _ in range(3):
        await round_trip(modem, echo_server, b"again")


async def test_a_withheld_prompt_fails_the_link_and_frees_it(
    vm: VirtualModem, modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    reader, writer = await modem.open_connection(*echo_server)
    vm.withhold_prompt()
    writer.write(b"hello")
    with pytest.raises(TimeoutError, match="prompt"):
        await asyncio.wait_for(reader.readexactly(5), 20)
    writer.transport.abort()
    await wait_until(lambda: not modem.engine.links and not any(vm.interpreter.open_links()))
    await round_trip(modem, echo_server, b"again")


async def test_a_lost_send_confirmation_fails_the_link_and_frees_it(
    vm: VirtualModem, modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    reader, writer = await modem.open_connection(*echo_server)
    vm.corrupt_next_line(prefix="+CIPSEND:")
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
    with pytest.raises(TimeoutError, match="never confirmed"):
        await asyncio.wait_for(reader.read(), 20)
    writer.transport.abort()
    await wait_until(lambda: not modem.engine.links and not any(vm.interpreter.open_links()))
    for _ in range(2):
        await round_trip(modem, echo_server, b"again")


async def test_a_reset_during_a_send_is_a_connection_reset(
    echo_server: tuple[str, int],
) -> None:
    # 115200 baud: a 1500-byte payload takes 130 ms on the line, time to reset inside it
    async with VirtualModem(baudrate=115200, seed=1) as vm, simsock.open_modem(vm.url) as modem:
        reader, writer = await modem.open_connection(*echo_server)
        link = writer.get_extra_info("link")
        writer.write(bytes(64 * 1024))
        deadline = time.monotonic() + 10
        while vm.interpreter.reading_payload != link:
            assert time.monotonic() < deadline, "no CIPSEND payload in progress"
            await asyncio.sleep(0.001)
        assert vm.reset_peer(link)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(64 * 1024), 20)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(writer.drain(), 20)
