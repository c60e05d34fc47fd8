"""TCP client streams end to end: library, real pty, virtual SIM7028, real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import socket

import pytest

import simsock
from simsock.emulator import VirtualModem

#: Payload pieces that look like framing to a parser that searched payloads.
FRAMING_LOOKALIKES = [b"\r\nOK\r\n", b"+CIPRXGET: 1,0\r\n", b">", b"\r\nERROR\r\n", b"+IPD5\r\n"]


def nasty_payload(size: int, seed: int) -> bytes:
    """``size`` random bytes with framing look-alikes sprinkled through them."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(rng.randrange(1, 3000))
        out += rng.choice(FRAMING_LOOKALIKES)
    return bytes(out[:size])


async def echo_through(modem: simsock.Modem, address: tuple[str, int], payload: bytes) -> bytes:
    """Send ``payload`` to an echo server through ``modem``; return what came back."""
    reader, writer = await modem.open_connection(*address)

    async def send() -> None:
        view = memoryview(payload)
        for offset in range(0, len(view), 8192):
            writer.write(view[offset : offset + 8192])
            await writer.drain()

    sender = asyncio.create_task(send())
    received = await reader.readexactly(len(payload))
    await sender
    writer.close()
    await writer.wait_closed()
    return received


async def test_one_mebibyte_echo_with_framing_lookalikes(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    payload = nasty_payload(1024 * 1024, seed=1)
    assert all(piece in payload for piece in FRAMING_LOOKALIKES)
    received = await echo_through(modem, echo_server, payload)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()


async def test_both_links_at_once(modem: simsock.Modem, echo_server: tuple[str, int]) -> None:
    payloads = [nasty_payload(200_000, seed=2), nasty_payload(150_000, seed=3)]
    results = await asyncio.gather(*(echo_through(modem, echo_server, p) for p in payloads))
    for sent, got in zip(payloads, results, strict=True):
        assert hashlib.sha256(got).digest() == hashlib.sha256(sent).digest()


async def test_third_connection_fails_with_emfile(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    first = await modem.open_connection(*echo_server)
    second = await modem.open_connection(*echo_server)
    assert {w.get_extra_info("link") for _, w in (first, second)} == {0, 1}
    with pytest.raises(OSError, match="links") as info:
        await modem.open_connection(*echo_server)
    assert info.value.errno == errno.EMFILE
    # closing one frees its link for a new connection
    first[1].close()
    await first[1].wait_closed()
    reader, writer = await modem.open_connection(*echo_server)
    writer.write(b"again")
    assert await reader.readexactly(5) == b"again"
    for w in (second[1], writer):
        w.close()
        await w.wait_closed()


async def test_peer_close_delivers_all_data_then_eof(modem: simsock.Modem) -> None:
    payload = os.urandom(100_000)

    async def blurt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(blurt, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await modem.open_connection("127.0.0.1", port)
        received = await reader.read()  # until EOF
        assert len(received) == len(payload)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()


async def test_a_paused_reader_leaves_data_in_the_module(modem: simsock.Modem) -> None:
    payload = os.urandom(48_000)
    sent = asyncio.Event()

    async def blurt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        sent.set()
        await reader.read()  # hold the connection open
        writer.close()

    server = await asyncio.start_server(blurt, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        # StreamReader pauses the transport once it holds 2 * limit bytes.
        reader, writer = await modem.open_connection("127.0.0.1", port, limit=1024)
        await asyncio.wait_for(sent.wait(), 10)
        await asyncio.sleep(0.5)  # time for any (wrong) reads to happen
        link = writer.get_extra_info("link")
        (line,) = [x for x in await modem.command(f"AT+CIPRXGET=4,{link}") if "+CIPRXGET" in x]
        waiting_in_module = int(line.rsplit(",", 1)[1])
        buffered_on_host = len(reader._buffer)
        # the host took at most 2 * limit plus one 1500-byte read, the rest waits in the module
        assert buffered_on_host <= 2 * 1024 + 1500
        assert waiting_in_module >= len(payload) - buffered_on_host - 1500
        received = await reader.readexactly(len(payload))
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        writer.close()
        await writer.wait_closed()


async def test_drain_waits_while_the_send_queue_is_full(
    modem: simsock.Modem, echo_server: tuple[str, int]
) -> None:
    reader, writer = await modem.open_connection(*echo_server)
    transport = writer.transport
    transport.set_write_buffer_limits(high=4096)
    writer.write(os.urandom(20_000))
    assert transport.get_write_buffer_size() > 4096
    await writer.drain()  # returns only once the queue fell below the low-water mark
    assert transport.get_write_buffer_size() <= 1024
    await reader.readexactly(20_000)
    writer.close()
    await writer.wait_closed()


async def test_connection_refused(modem: simsock.Modem) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(ConnectionRefusedError) as info:
        await modem.open_connection("127.0.0.1", port)
    assert isinstance(info.value, simsock.ModuleError)
    assert info.value.module_code == 1


async def test_bad_host_is_refused_before_the_wire(modem: simsock.Modem) -> None:
    # As loop.create_connection: a name that cannot be resolved is a gaierror.
    before = modem.engine.stats.bytes_written
    with pytest.raises(socket.gaierror, match="host"):
        await modem.open_connection('x"\r\nAT+NETCLOSE', 80)
    assert modem.engine.stats.bytes_written == before


async def test_dns_through_the_module(modem: simsock.Modem, echo_server: tuple[str, int]) -> None:
    infos = await modem.getaddrinfo("localhost", 80)
    assert infos[0][4] == ("127.0.0.1", 80)
    reader, writer = await modem.open_connection("localhost", echo_server[1])
    writer.write(b"named")
    assert await reader.readexactly(5) == b"named"
    assert writer.get_extra_info("peername") == ("127.0.0.1", echo_server[1])
    writer.close()
    await writer.wait_closed()


async def test_echo_left_on(echo_server: tuple[str, int]) -> None:
    async with VirtualModem(sticky_echo=True) as vm, simsock.open_modem(vm.url) as modem:
        received = await echo_through(modem, echo_server, nasty_payload(50_000, seed=4))
        assert (
            hashlib.sha256(received).digest() == hashlib.sha256(nasty_payload(50_000, 4)).digest()
        )


async def test_urcs_between_response_lines(echo_server: tuple[str, int]) -> None:
    noise = ("+CEREG: 1", "+CTZV: 26/11/24,12:00:00,+32", "SMS Ready")
    async with VirtualModem(urc_noise=noise) as vm, simsock.open_modem(vm.url) as modem:
        payload = nasty_payload(100_000, seed=5)
        received = await echo_through(modem, echo_server, payload)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert modem.engine.stats.unsolicited > 0  # the noise arrived and was set aside
        assert await modem.ip_address()


async def test_raw_command(modem: simsock.Modem) -> None:
    lines = await modem.command("AT+CSQ")
    assert any(line.startswith("+CSQ:") for line in lines)
    with pytest.raises(ValueError, match="simsock itself"):
        await modem.command("AT+CIPSEND=0,5")
