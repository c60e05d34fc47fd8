"""Typed configuration and state commands, capabilities and IPv6, against the virtual SIM7028."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest

import simsock
from simsock.driver import ModemState
from simsock.driver.control import parse_ranges
from simsock.emulator import VirtualModem


def test_parse_ranges() -> None:
    assert parse_ranges('+CIPOPEN: (0-1),("TCP","UDP")') == [(0, 1)]
    assert parse_ranges("+CIPSEND: (0-1),(1-1500)") == [(0, 1), (1, 1500)]
    assert parse_ranges("+SERVERSTART: (0-65535),(0-1)") == [(0, 65535), (0, 1)]


async def test_capabilities_come_from_the_module(modem: simsock.Modem) -> None:
    caps = await modem.capabilities()
    assert caps.links == (0, 1)
    assert caps.servers == (0, 1)
    assert caps.max_send == 1500
    assert "TCP" in caps.protocols
    assert modem.capabilities_found == caps


async def test_state_queries(modem: simsock.Modem, echo_server: tuple[str, int]) -> None:
    assert await modem.network_open()
    table = await modem.link_table()
    assert [info.link for info in table] == [0, 1]
    assert all(info.kind is None for info in table)
    reader, writer = await modem.open_connection(*echo_server)
    writer.write(b"counted")
    assert await reader.readexactly(7) == b"counted"
    table = await modem.link_table()
    link = writer.get_extra_info("link")
    assert table[link].kind == "TCP"
    assert table[link].port == echo_server[1]
    counters = await modem.link_counters(link)
    assert counters.sent == 7
    assert counters.received == 7
    writer.close()
    await writer.wait_closed()


async def test_configuration_commands_round_trip(modem: simsock.Modem) -> None:
    await modem.set_timeouts(netopen_s=30, cipopen_s=10, cipsend_s=20)
    assert await modem.timeouts() == simsock.driver.control.Timeouts(30.0, 10.0, 20.0)
    config = await modem.set_socket_config(nm_retry=5, timeout_ms=1000)
    assert (config.nm_retry, config.timeout_ms) == (5, 1000)
    with pytest.raises(ValueError, match="managed by simsock"):
        await modem.set_socket_config(header_type=0)
    await modem.set_send_mode(True)
    assert await modem.send_mode()
    await modem.set_send_mode(False)
    await modem.set_keepalive(True, idle_min=2, count=3, interval_min=1)
    await modem.set_dns_servers("9.9.9.9", "1.1.1.1")
    assert {"9.9.9.9", "1.1.1.1"} <= set(await modem.dns_servers())
    assert await modem.header_settings() in ((True, True), (False, False))


@pytest.fixture
async def echo6() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(echo, "::1", 0, family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_ipv6_echo(echo6: int) -> None:
    payload = os.urandom(64 * 1024)
    async with VirtualModem() as vm, simsock.open_modem(vm.url, ip_family=6) as modem:
        reader, writer = await modem.open_connection("::1", echo6)
        assert writer.get_extra_info("peername")[:2] == ("::1", echo6)
        writer.write(payload)
        received = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        writer.close()
        await writer.wait_closed()


async def test_network_close_and_reopen(modem: simsock.Modem, echo_server: tuple[str, int]) -> None:
    # "OK" and "+NETCLOSE: 0" come in one write from the module: the late
    # result ends the procedure, and the network stays closed (no recovery).
    await modem.network_close()
    await asyncio.sleep(0.2)
    assert not await modem.network_open()
    assert modem.state is ModemState.NETWORK_DOWN
    await modem.network_reopen()
    assert await modem.network_open()
    assert modem.state is ModemState.UP
    reader, writer = await modem.open_connection(*echo_server)
    writer.write(b"reopened")
    assert await asyncio.wait_for(reader.readexactly(8), 10) == b"reopened"
    writer.close()
    await writer.wait_closed()
