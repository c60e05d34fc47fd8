"""The note's commands that have a public call: reads of CIPCLOSE, CTCPKA, SERVERSTART; port 0."""

from __future__ import annotations

import asyncio
import hashlib
import re

import simsock
from simsock.driver.control import Keepalive
from simsock.emulator import VirtualModem

from .test_tcp_streams import echo_through, nasty_payload


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_a_server_on_port_0_reports_the_port_the_module_picked(
    modem: simsock.Modem,
) -> None:
    server = await modem.start_server(_echo, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        assert port != 0
        assert await modem.listening() == {server.index: port}
        # the port really is the module's listener: a host client reaches it
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    assert await modem.listening() == {}


async def test_keepalive_reads_back_what_was_set(modem: simsock.Modem) -> None:
    await modem.set_keepalive(True, idle_min=2, count=5, interval_min=1)
    assert await modem.keepalive() == Keepalive(True, 2, 5, 1)


async def test_link_states_follow_the_links(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    assert await modem.link_states() == (False, False)
    _, writer = await modem.open_connection(*echo_server)
    link = writer.get_extra_info("link")
    states = await modem.link_states()
    assert states[link]
    assert not states[1 - link]
    writer.close()
    await writer.wait_closed()
    assert await modem.link_states() == (False, False)


async def test_ctrl_z_sends_and_hex_reads_carry_every_byte(
    vm: VirtualModem, echo_server: tuple[str, int]
) -> None:
    """3.4's variable-length send and 3.5's hex read, with 0x1A, 0x1B and 0x03 in the data."""
    written: list[bytes] = []

    def tap(direction: str, data: bytes) -> None:
        if direction == "->":
            written.append(data)

    payload = nasty_payload(64 * 1024, seed=31) + bytes([0x1A, 0x1B, 0x03]) * 100
    async with simsock.open_modem(vm.url, send_ctrl_z=True, hex_reads=True, wire_tap=tap) as modem:
        received = await asyncio.wait_for(echo_through(modem, echo_server, payload), 60)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    wire = b"".join(written)
    assert re.search(rb"AT\+CIPSEND=\d\r", wire)  # no length: Ctrl+Z ends each payload
    assert not re.search(rb"AT\+CIPSEND=\d,\d", wire)
    assert b"AT+CIPRXGET=3," in wire
    assert b"AT+CIPRXGET=2," not in wire
