"""The serial line itself: URC noise and injection, echo, latency, reopening, baud-rate pacing."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from simsock.emulator import VirtualModem

if TYPE_CHECKING:
    from conftest import AtHost, HostOpener, PeerStarter

pytestmark = pytest.mark.timeout(30)

NOISE = ("+CEREG: 1", "+CTZV: 24/11/26,12:00:00,+32")
NOISE_UNITS = [f"\r\n{line}\r\n".encode() for line in NOISE]


def without_noise(data: bytes) -> bytes:
    for unit in NOISE_UNITS:
        data = data.replace(unit, b"")
    return data


async def test_urc_noise_between_every_pair_of_lines(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        writer.write(b"data from server")
        await reader.read()

    server, port = await peer(hello)
    async with VirtualModem(urc_noise=NOISE, seed=7) as vm:
        host = await open_host(vm.url)
        await host.command("ATE0")
        await host.command("AT+NETOPEN")
        await host.wait_line(r"\+NETOPEN: 0$")
        await host.command("AT+CIPRXGET=1")
        await host.command(f'AT+CIPOPEN=1,"TCP","127.0.0.1",{port}')
        await host.wait_line(r"\+CIPOPEN: 1,0$")
        await host.send(b"AT+CIPSEND=1,5\r")
        await host.wait_prompt()
        await host.send(b"HELLO")
        await host.wait_line(r"\+CIPSEND: 1,5,5$")
        await host.wait_line(r"\+CIPRXGET: 1,1$")
        assert [x for x in await host.command("AT+CIPRXGET=4,1") if x not in NOISE] == [
            "+CIPRXGET: 4,1,16",
            "OK",
        ]
        assert await host.rxget(1) == (b"data from server", 0)
        await host.command("AT+CIPOPEN?")
        await host.command("AT+CIPCLOSE=1")
        await host.wait_line(r"\+CIPCLOSE: 1,0$")
        await host.expect_silence()
    server.close()
    transcript = bytes(host.transcript)
    assert without_noise(transcript) == (
        b"ATE0\r\r\nOK\r\n"
        b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
        b"\r\nOK\r\n"
        b"\r\nOK\r\n\r\n+CIPOPEN: 1,0\r\n"
        b"\r\n> \r\nOK\r\n\r\n+CIPSEND: 1,5,5\r\n"
        b"\r\n+CIPRXGET: 1,1\r\n"
        b"\r\n+CIPRXGET: 4,1,16\r\n\r\nOK\r\n"
        b"\r\n+CIPRXGET: 2,1,16,0\r\ndata from server\r\nOK\r\n"
        + f'\r\n+CIPOPEN: 0\r\n\r\n+CIPOPEN: 1,"TCP","127.0.0.1",{port},-1\r\n\r\nOK\r\n'.encode()
        + b"\r\nOK\r\n\r\n+CIPCLOSE: 1,0\r\n"
    )
    for unit in NOISE_UNITS:
        assert unit in transcript
    # Noise sits between a final result and its late result, before the prompt,
    # between the lines of one response, and after a payload block before its OK.
    for before, after in [
        (b"\r\nOK\r\n", b"\r\n+NETOPEN: 0"),
        (b"\r\nOK\r\n", b"\r\n+CIPOPEN: 1,0"),
        (b"\r\nOK\r\n", b"\r\n+CIPSEND: 1,5,5"),
        (b"", b"\r\n> "),
        (b"\r\n+CIPOPEN: 0\r\n", b'\r\n+CIPOPEN: 1,"TCP"'),
        (b"data from server", b"\r\nOK\r\n"),
    ]:
        assert any(before + unit + after in transcript for unit in NOISE_UNITS), (before, after)


async def test_injected_urc_waits_for_line_and_payload_boundaries(
    host: AtHost, peer: PeerStarter, vm: VirtualModem
) -> None:
    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, port = await peer(sink)
    await host.send(b"AT+CS")  # half a command line: a URC must not split it
    await host.expect(b"AT+CS")
    vm.inject_urc("+CTZV: 24/11/26,12:00:00,+32")
    await host.expect_silence(0.1)
    await host.send(b"Q\r")
    await host.expect(b"Q\r\r\n+CTZV: 24/11/26,12:00:00,+32\r\n\r\n+CSQ: 24,99\r\n\r\nOK\r\n")
    await host.command("ATE0")
    await host.command("AT+NETOPEN")
    await host.wait_line(r"\+NETOPEN: 0$")
    await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}')
    await host.wait_line(r"\+CIPOPEN: 0,0$")
    await host.send(b"AT+CIPSEND=0,4\r")
    await host.expect(b"\r\n> ")
    await host.send(b"AB")
    vm.inject_urc("+CEREG: 1")  # in the middle of a payload: it waits for the payload's end
    await host.expect_silence(0.1)
    await host.send(b"CD")
    await host.expect(b"\r\nOK\r\n\r\n+CEREG: 1\r\n\r\n+CIPSEND: 0,4,4\r\n")
    server.close()


async def test_sticky_echo_ignores_ate0(open_host: HostOpener) -> None:
    async with VirtualModem(sticky_echo=True) as vm:
        host = await open_host(vm.url)
        await host.send(b"ATE0\r")
        await host.expect(b"ATE0\r\r\nOK\r\n")
        await host.send(b"AT\r")
        await host.expect(b"AT\r\r\nOK\r\n")


async def test_latency_delays_every_command(open_host: HostOpener) -> None:
    async with VirtualModem(latency_s=0.2, echo=False) as vm:
        host = await open_host(vm.url)
        started = time.monotonic()
        assert await host.command("AT") == ["OK"]
        assert await host.command("AT+CSQ") == ["+CSQ: 24,99", "OK"]
        assert time.monotonic() - started >= 0.4


async def test_host_can_close_and_reopen_the_pty(vm: VirtualModem, open_host: HostOpener) -> None:
    first = await open_host(vm.url)
    await first.command("ATE0")
    await first.close()
    await asyncio.sleep(0.05)
    second = await open_host(vm.url)
    assert await second.command("AT") == ["OK"]


async def test_output_is_paced_at_the_baud_rate(open_host: HostOpener, peer: PeerStarter) -> None:
    size = 18_000  # > 1.5 s of line time at 115200 baud (11,520 bytes/s)
    start = asyncio.Event()

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await start.wait()
        writer.write(bytes(size))
        await writer.drain()
        await reader.read()

    server, port = await peer(source)
    async with VirtualModem(baudrate=115200, echo=False) as vm:
        host = await open_host(vm.url)
        await host.command("AT+NETOPEN")
        await host.wait_line(r"\+NETOPEN: 0$")
        await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}')
        await host.wait_line(r"\+CIPOPEN: 0,0$")
        start.set()
        stamps: list[tuple[float, int]] = []
        received = 0
        async with asyncio.timeout(5):
            while received < size:  # pushed: 12 blocks of header + 1500 bytes
                chunk = await host.reader.read(65536)
                received += len(chunk)
                stamps.append((time.monotonic(), len(chunk)))
        (t_first, n_first), (t_last, _) = stamps[0], stamps[-1]
        rate = (received - n_first) / (t_last - t_first)
        assert t_last - t_first >= 1.0
        assert rate == pytest.approx(11_520, rel=0.02)
        # The other direction is paced too: 5,760 bytes take half a second.
        payload = bytes(1440)
        started = time.monotonic()
        for _ in range(4):
            await host.send_payload(0, payload)
        assert 0.49 <= time.monotonic() - started <= 0.8
    server.close()


async def test_a_quick_turnaround_gets_no_line_time_back(open_host: HostOpener) -> None:
    """A command sent the moment the previous answer arrived still takes its wire time:
    the line idled in between and gives none of that back. (The pacing once guessed
    idleness from the gap between reads and let such a line start in the past, so
    every command turn of the benchmarks crossed the line faster than it can.)"""
    baud = 921_600
    line = b"AT" + b"Z" * 2997 + b"\r"  # an unknown command: answered ERROR at its CR
    wire_s = len(line) * 10 / baud  # 32.6 ms
    async with VirtualModem(baudrate=baud, echo=False) as vm:
        host = await open_host(vm.url, baudrate=baud)
        for _ in range(3):
            assert await host.command("AT") == ["OK"]
            started = time.monotonic()  # at once after OK: the turnaround of a fast host
            await host.send(line)
            await host.wait_line(r"ERROR$")
            assert time.monotonic() - started >= wire_s
