"""Faults injected in the virtual SIM7028 and what the library does about them."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Callable

import pytest

import simsock
from simsock.emulator import VirtualModem
from simsock.modem.supervisor import ModemState, StateChange

FAST_BACKOFF = (0.05, 0.1, 0.2)


@pytest.fixture
async def fast_modem(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    async with simsock.open_modem(vm.url, recovery_backoff_s=FAST_BACKOFF) as opened:
        yield opened


def no_simsock_tasks() -> list[asyncio.Task[object]]:
    """Tasks other than the engine's two that are still running."""
    return [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and not t.done()
        and t.get_name() not in ("simsock-reader", "simsock-scheduler")
        and "simsock" in repr(t.get_coro())
        and "emulator" not in repr(t.get_coro())
    ]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (state the library keeps) until true, bounded in time."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_network_loss_fails_links_then_recovers(
    fast_modem: simsock.Modem, vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    changes: list[StateChange] = []
    fast_modem.add_state_listener(changes.append)
    reader, writer = await fast_modem.open_connection(*echo_server)
    writer.write(b"before")
    assert await reader.readexactly(6) == b"before"

    started = time.monotonic()
    vm.drop_network()
    with pytest.raises(OSError, match="network") as info:
        await asyncio.wait_for(reader.read(), 5)
    assert info.value.errno == errno.ENETDOWN
    assert time.monotonic() - started < 2.0  # promptly, not after a timeout
    assert fast_modem.engine.links == {}  # both link numbers are free again

    await wait_until(lambda: fast_modem.state is ModemState.UP)
    assert [c.state for c in changes] == [ModemState.NETWORK_DOWN, ModemState.UP]
    reader, writer = await fast_modem.open_connection(*echo_server)
    writer.write(b"after")
    assert await reader.readexactly(5) == b"after"
    writer.close()
    await writer.wait_closed()


async def test_opening_while_the_network_is_down_fails_fast(
    vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    async with simsock.open_modem(vm.url) as modem:
        attempts: list[asyncio.Task[object]] = []

        def on_change(change: StateChange) -> None:
            if change.state is ModemState.NETWORK_DOWN:
                # runs before the recovery task takes its first step
                attempts.append(asyncio.ensure_future(modem.open_connection(*echo_server)))

        modem.add_state_listener(on_change)
        vm.drop_network()

        await wait_until(lambda: bool(attempts) and modem.state is ModemState.UP)
        with pytest.raises(OSError, match="network") as info:
            await attempts[0]
        assert info.value.errno == errno.ENETDOWN


async def test_cancelled_calls_leave_the_stream_in_step(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    for delay in (0, 0.0005, 0.001, 0.002, 0.005, 0.01):
        # a cancelled open closes the link the module opened anyway, by itself
        await wait_until(lambda: not modem.engine.links)
        task = asyncio.create_task(modem.open_connection(*echo_server))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            _, writer = await task
        except asyncio.CancelledError:
            pass
        else:
            writer.close()
            await writer.wait_closed()
        command = asyncio.create_task(modem.command("AT+CSQ"))
        await asyncio.sleep(delay)
        command.cancel()
        await asyncio.gather(command, return_exceptions=True)
    # the command stream is still in step: every answer matches its command
    for _ in range(5):
        assert any(line.startswith("+CSQ") for line in await modem.command("AT+CSQ"))
        assert await modem.ip_address()
    await wait_until(lambda: not modem.engine.links)
    reader, writer = await modem.open_connection(*echo_server)
    writer.write(b"ok")
    assert await reader.readexactly(2) == b"ok"
    writer.close()
    await writer.wait_closed()
    assert no_simsock_tasks() == []


async def test_closing_the_modem_fails_open_streams_and_stops_tasks(
    vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    modem = await simsock.open_modem(vm.url)
    reader, _ = await modem.open_connection(*echo_server)
    await modem.close()
    with pytest.raises(simsock.EngineClosedError):
        await asyncio.wait_for(reader.read(), 5)
    assert modem.state is ModemState.CLOSED
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("simsock-")]
