"""Faults injected in the virtual SIM7028 and what the library does about them."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Callable

import pytest

import simsock
from simsock.driver import ModemState, StateChange
from simsock.emulator import VirtualModem

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


async def test_opening_while_the_network_is_down_waits_for_recovery(
    vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    # Recovery brings the network back within a second: an open made meanwhile
    # waits for it (bounded by the connect timeout) instead of failing at once.
    async with simsock.open_modem(vm.url) as modem:
        attempts: list[asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = []

        def on_change(change: StateChange) -> None:
            if change.state is ModemState.NETWORK_DOWN:
                # runs before the recovery task takes its first step
                attempts.append(asyncio.ensure_future(modem.open_connection(*echo_server)))

        modem.add_state_listener(on_change)
        vm.drop_network()

        await wait_until(lambda: bool(attempts) and modem.state is ModemState.UP)
        reader, writer = await asyncio.wait_for(attempts[0], 10)
        writer.write(b"after the drop")
        assert await reader.readexactly(14) == b"after the drop"
        writer.close()
        await writer.wait_closed()


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


async def test_module_restart_fails_links_and_brings_the_module_up_again(
    fast_modem: simsock.Modem, vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    changes: list[StateChange] = []
    fast_modem.add_state_listener(changes.append)
    reader, writer = await fast_modem.open_connection(*echo_server)
    vm.restart()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    await wait_until(lambda: fast_modem.state is ModemState.UP and len(changes) >= 2)
    assert [c.state for c in changes] == [ModemState.RESTARTING, ModemState.UP]
    assert fast_modem.engine.links == {}
    # echo is off again and the network open: a new connection works
    reader, writer = await fast_modem.open_connection(*echo_server)
    writer.write(b"reborn")
    assert await asyncio.wait_for(reader.readexactly(6), 5) == b"reborn"
    writer.close()
    await writer.wait_closed()


async def test_a_module_that_stops_answering_times_out_then_resynchronises(
    vm: VirtualModem,
) -> None:
    async with simsock.open_modem(vm.url) as modem:
        vm.mute(2.0)  # longer than one AT+CSQ (9 s would be slow): shorten its wait
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await modem.engine.execute(simsock.at.commands.Command("AT+CSQ", 1.0))
        assert time.monotonic() - started < 1.5  # bounded by the command's time
        # the probes outlast the mute: the stream is in step again
        await wait_until(lambda: modem.engine.stats.commands > 3, 10)
        lines = await asyncio.wait_for(modem.command("AT+CSQ"), 10)
        assert any(line.startswith("+CSQ") for line in lines)
        assert modem.state is ModemState.UP


async def test_a_dead_module_closes_the_modem(vm: VirtualModem) -> None:
    async with simsock.open_modem(vm.url) as modem:
        vm.mute()  # for ever
        with pytest.raises(TimeoutError):
            await modem.engine.execute(simsock.at.commands.Command("AT+CSQ", 0.5))
        await wait_until(lambda: modem.state is ModemState.CLOSED, 15)
        with pytest.raises(simsock.EngineClosedError):
            await modem.command("AT")


async def test_forgotten_data_notices_are_found_by_polling(
    vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    async with simsock.open_modem(vm.url, poll_interval_s=0.2) as modem:
        reader, writer = await modem.open_connection(*echo_server)
        vm.forget_data_urc(1)
        writer.write(b"quiet")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"quiet"
        writer.close()
        await writer.wait_closed()


async def test_a_full_send_buffer_fails_the_stream(
    modem: simsock.Modem, vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    reader, writer = await modem.open_connection(*echo_server)
    vm.send_buffer_full()
    writer.write(b"x" * 100)
    with pytest.raises(ConnectionResetError, match="send buffer full"):
        await asyncio.wait_for(reader.read(), 5)
    await wait_until(lambda: not modem.engine.links)


async def test_a_withheld_prompt_fails_the_link_and_the_stream_stays_in_step(
    modem: simsock.Modem, vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    # No '>' in 5 s: the payload's length is filled (ESC first, which this
    # module takes as a cancel), the link fails, and a probe proves sync.
    reader, writer = await modem.open_connection(*echo_server)
    vm.withhold_prompt(1)
    writer.write(b"lost")
    with pytest.raises(TimeoutError, match="no '>' prompt"):
        await asyncio.wait_for(reader.read(), 15)
    # the module never took a command as payload: the stream is in step
    assert any(line.startswith("+CSQ") for line in await modem.command("AT+CSQ"))


async def test_connect_timeout(modem: simsock.Modem, vm: VirtualModem) -> None:
    await modem.set_timeouts(cipopen_s=3)  # the module's connect timeout (3.12)
    vm.connect_timeout(1)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        await asyncio.wait_for(modem.open_connection("127.0.0.1", 9), 20)
    assert time.monotonic() - started < 6
    assert getattr(info.value, "module_code", None) == 10
    assert modem.engine.links == {}
