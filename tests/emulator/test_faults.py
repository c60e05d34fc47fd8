"""Fault injection, byte by byte on a real pty: what each fault puts on (or keeps off) the wire."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import re
import time
from typing import TYPE_CHECKING

import pytest
import serial_asyncio

from simsock.emulator import FaultConfig, Interpreter, ModuleConfig, VirtualModem
from simsock.emulator.faults import HOSTILE, START_UP_URCS, STORM_URCS, LineFaults

if TYPE_CHECKING:
    from conftest import AtHost, HostOpener, PeerStarter

pytestmark = pytest.mark.timeout(30)

START_UP = b"".join(f"\r\n{text}\r\n".encode() for text in START_UP_URCS)


class Peer:
    """A real TCP server on 127.0.0.1 that records what it gets and how its connection ended."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.writers: list[asyncio.StreamWriter] = []
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.greeting = b""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.greeting:
            writer.write(self.greeting)
        try:
            while data := await reader.read(65536):
                self.received += data
            outcome = "eof"
        except ConnectionResetError:
            outcome = "reset"
        if not self.ended.done():
            self.ended.set_result(outcome)
        writer.close()


async def start(peer: PeerStarter, greeting: bytes = b"") -> tuple[Peer, asyncio.Server, int]:
    state = Peer()
    state.greeting = greeting
    server, port = await peer(state.handle)
    return state, server, port


async def bring_up(host: AtHost) -> None:
    """Echo off, network open, buffer access."""
    await host.command("ATE0")
    assert await host.command("AT+NETOPEN") == ["OK"]
    await host.wait_line(r"\+NETOPEN: 0$")
    assert await host.command("AT+CIPRXGET=1") == ["OK"]


async def open_link(host: AtHost, port: int, link: int = 1) -> None:
    assert await host.command(f'AT+CIPOPEN={link},"TCP","127.0.0.1",{port}') == ["OK"]
    await host.wait_line(rf"\+CIPOPEN: {link},0$")


# --- peer reset ----------------------------------------------------------------------------------


async def test_reset_peer_sends_ipclose_and_resets_the_real_peer(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    state, server, port = await start(peer, greeting=b"before reset")
    async with VirtualModem() as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        await host.expect(b"\r\n+CIPRXGET: 1,1\r\n")
        assert vm.reset_peer(1) is True
        await host.expect(b"\r\n+IPCLOSE: 1,1\r\n")
        assert await asyncio.wait_for(state.ended, 5) == "reset"
        # what came before the reset stays readable (4.2)
        assert await host.rxget(1) == (b"before reset", 0)
        assert await host.command("AT+CIPOPEN?") == ["+CIPOPEN: 0", "+CIPOPEN: 1", "OK"]
        assert vm.reset_peer(1) is False  # nothing left to reset
        assert vm.reset_peer(0) is False
        assert vm.faults_applied["reset_peer"] == 1
        await host.expect_silence()
    server.close()


# --- module restart ------------------------------------------------------------------------------


async def test_restart_loses_everything_and_says_rdy(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    state, server, port = await start(peer)
    async with VirtualModem() as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        await host.send("AT+CIPRXGET=4,1")  # half a line: the restart drops it
        await asyncio.sleep(0.05)
        vm.restart()
        await host.expect(START_UP)
        assert await asyncio.wait_for(state.ended, 5) == "eof"  # its socket was closed
        # echo is on again, the network is closed, the settings are the defaults
        await host.send("\rAT+NETOPEN?\r")
        await host.expect(b"\rAT+NETOPEN?\r\r\n+NETOPEN: 0\r\n\r\nOK\r\n")
        await host.send("AT+CIPRXGET?\r")
        await host.expect(b"AT+CIPRXGET?\r\r\n+CIPRXGET: 0\r\n\r\nOK\r\n")
        await host.send("AT+CIPOPEN?\r")
        await host.expect(b"AT+CIPOPEN?\r\r\n+CIPOPEN: 0\r\n\r\n+CIPOPEN: 1\r\n\r\nOK\r\n")
        await host.expect_silence()
    server.close()


async def test_restart_with_a_boot_time_is_deaf_then_says_rdy(open_host: HostOpener) -> None:
    async with VirtualModem(echo=False) as vm:
        host = await open_host(vm.url)
        assert await host.command("AT") == ["OK"]
        started = time.monotonic()
        vm.restart(boot_s=0.3)
        await host.send("AT\r")  # booting: discarded, never answered
        await host.expect_silence(0.2)
        await host.expect(START_UP, wait_s=2)
        assert time.monotonic() - started >= 0.3
        await host.expect_silence(0.1)
        assert await host.command("AT") == ["OK"]


async def test_restart_can_cut_output_mid_line(open_host: HostOpener) -> None:
    async with VirtualModem(echo=False, baudrate=9600) as vm:
        host = await open_host(vm.url)
        await host.send("ATI\r")
        answer = await asyncio.wait_for(_answer_of(vm, "ATI"), 5)
        head = await host.read_exact(12, wait_s=5)
        vm.restart(cut_output=True)
        async with asyncio.timeout(5):
            while not bytes(host.buffer).endswith(START_UP):
                await host._read_more()
        got = head + bytes(host.buffer)
        cut = got[: -len(START_UP)]
        assert answer.startswith(cut)
        assert len(cut) < len(answer)  # the answer was cut short, RDY followed at once


async def _answer_of(vm: VirtualModem, line: str) -> bytes:
    """What a calm module with echo off answers to ``line`` (computed without I/O)."""
    m = Interpreter(ModuleConfig(echo=False, seed=0))
    m.receive_data(line.encode() + b"\r", 0.0)
    return m.data_to_send()


# --- a mute module -------------------------------------------------------------------------------


async def test_mute_discards_commands_then_answers_again(open_host: HostOpener) -> None:
    async with VirtualModem(echo=False) as vm:
        host = await open_host(vm.url)
        vm.mute(0.3)
        await host.send("AT+CSQ\r")
        await host.expect_silence(0.35)  # never answered, not even late
        assert await host.command("AT") == ["OK"]
        vm.mute()  # until unmuted
        await host.send("AT\r")
        await host.expect_silence(0.3)
        vm.unmute()
        await host.expect_silence(0.1)
        assert await host.command("AT+CSQ") == ["+CSQ: 24,99", "OK"]


async def test_notices_that_fall_in_a_mute_spell_are_lost(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    state, server, port = await start(peer)
    async with VirtualModem() as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        vm.mute(0.3)
        state.writers[0].write(b"while mute")
        await host.expect_silence(0.4)
        # the data itself is kept: a host that polls finds it (3.5)
        assert await host.command("AT+CIPRXGET=4,1") == ["+CIPRXGET: 4,1,10", "OK"]
        assert await host.rxget(1) == (b"while mute", 0)
    server.close()


# --- the serial line -----------------------------------------------------------------------------


async def test_corrupt_next_output_changes_exactly_those_bytes(open_host: HostOpener) -> None:
    async with VirtualModem(echo=False, seed=11) as vm:
        host = await open_host(vm.url)
        assert await host.command("AT") == ["OK"]
        vm.corrupt_next_output(3)
        await host.send("AT\r")
        got = await host.read_exact(6)
        assert got[3:] == b"K\r\n"
        assert all(a != b for a, b in zip(got[:3], b"\r\nO", strict=True))
        await host.expect_silence()
        assert await host.command("AT") == ["OK"]  # one-shot: clean again


async def test_corrupt_next_input_spoils_a_command(open_host: HostOpener) -> None:
    async with VirtualModem(echo=False, seed=3) as vm:
        host = await open_host(vm.url)
        vm.corrupt_next_input(3)  # "AT+" of the next command
        await host.send("AT+CSQ\r")
        # no longer a command: ignored (or ERROR, if the damage left it AT-shaped)
        await asyncio.sleep(0.2)
        assert b"+CSQ" not in host.buffer
        host.buffer.clear()
        assert await host.command("AT+CSQ") == ["+CSQ: 24,99", "OK"]
        assert vm.faults_applied["corrupt_input"] == 1


async def test_dropped_bytes_make_the_module_deaf_and_dumb(open_host: HostOpener) -> None:
    async with VirtualModem(echo=True, drop_bytes=1.0) as vm:
        host = await open_host(vm.url)
        await host.send("AT\r")
        await host.expect_silence(0.3)
        assert vm.stats.commands == 0


async def test_line_noise_is_replayed_by_its_seed(open_host: HostOpener) -> None:
    transcripts: list[bytes] = []
    for seed in (5, 5, 6):
        async with VirtualModem(echo=False, line_noise=0.05, seed=seed) as vm:
            host = await open_host(vm.url)
            for _ in range(40):
                await host.send("AT+CSQ\r")
            with contextlib.suppress(AssertionError):
                await host.read_exact(10**6, wait_s=0.5)  # everything that comes
            transcripts.append(bytes(host.transcript))
            assert vm.seed == seed
    assert transcripts[0] == transcripts[1]
    assert transcripts[0] != transcripts[2]
    clean = b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert transcripts[0].count(clean) < 40  # some answers were hit or lost


# --- URC storms ----------------------------------------------------------------------------------


async def test_urc_storm_arrives_at_line_boundaries(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    state, server, port = await start(peer)
    async with VirtualModem(seed=2) as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        await host.send("AT+CIPSEND=1,5\r")
        await host.wait_prompt()
        vm.urc_storm(300)  # the module is reading a payload: the storm waits for its end
        await host.send(b"HEL")
        await asyncio.sleep(0.05)
        await host.send(b"LO")
        await host.expect(b"\r\nOK\r\n")
        lines: list[str] = []
        async with asyncio.timeout(5):
            while len(lines) < 301:
                lines.append(await host.line())
        assert "+CIPSEND: 1,5,5" in lines
        storm = [line for line in lines if line != "+CIPSEND: 1,5,5"]
        assert len(storm) == 300
        assert all(re.fullmatch(r"\+CIPRXGET: 1,[01]", x) or x in STORM_URCS for x in storm)
        assert 100 < sum(x.startswith("+CIPRXGET") for x in storm) < 200
        await host.expect_silence()
        assert bytes(state.received) == b"HELLO"
    server.close()


# --- CIPSEND faults ------------------------------------------------------------------------------


async def test_send_buffer_full_confirms_zero_and_sends_nothing(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    state, server, port = await start(peer)
    async with VirtualModem() as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        vm.send_buffer_full(1)
        await host.send("AT+CIPSEND=1,5\r")
        await host.wait_prompt()
        await host.send(b"LOST!")
        await host.expect(b"\r\nOK\r\n\r\n+CIPSEND: 1,5,0\r\n")
        await host.send_payload(1, b"HELLO")  # one-shot: the next one goes
        await asyncio.sleep(0.05)
        assert bytes(state.received) == b"HELLO"
    server.close()


async def test_send_buffer_full_as_an_option(open_host: HostOpener, peer: PeerStarter) -> None:
    state, server, port = await start(peer)
    async with VirtualModem(send_buffer_full=1.0) as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        for _ in range(2):
            await host.send("AT+CIPSEND=1,3\r")
            await host.wait_prompt()
            await host.send(b"abc")
            await host.expect(b"\r\nOK\r\n\r\n+CIPSEND: 1,3,0\r\n")
        await asyncio.sleep(0.05)
        assert state.received == b""
    server.close()


async def test_withheld_prompt_then_esc_cancels(open_host: HostOpener, peer: PeerStarter) -> None:
    state, server, port = await start(peer)
    async with VirtualModem() as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        vm.withhold_prompt()
        await host.send("AT+CIPSEND=1,5\r")
        await host.expect_silence(0.2)  # no "\r\n> "
        await host.send(b"\x1b")
        await host.expect(b"\r\nOK\r\n")
        await host.expect_silence(0.1)  # and no +CIPSEND: nothing was sent
        assert state.received == b""
        # a withheld prompt is only lost on the line: data sent blind is taken
        vm.withhold_prompt()
        await host.send("AT+CIPSEND=1,5\r")
        await host.expect_silence(0.1)
        await host.send(b"BLIND")
        await host.expect(b"\r\nOK\r\n\r\n+CIPSEND: 1,5,5\r\n")
        await asyncio.sleep(0.05)
        assert bytes(state.received) == b"BLIND"
    server.close()


# --- connects that time out ----------------------------------------------------------------------


async def test_connect_timeout_hosts(open_host: HostOpener) -> None:
    async with VirtualModem(connect_timeout_hosts=["192.0.2.7"], connect_timeout_s=0.3) as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        started = time.monotonic()
        assert await host.command('AT+CIPOPEN=0,"TCP","192.0.2.7",80') == ["OK"]
        await host.expect_silence(0.2)
        await host.expect(b"\r\n+CIPOPEN: 0,10\r\n", wait_s=2)
        assert time.monotonic() - started >= 0.3
        assert await host.command("AT+CIPOPEN?") == ["+CIPOPEN: 0", "+CIPOPEN: 1", "OK"]


async def test_connect_timeout_call_follows_ciptimeout(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    state, server, port = await start(peer)
    async with VirtualModem() as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        assert await host.command("AT+CIPTIMEOUT=,3000") == ["OK"]
        vm.connect_timeout()
        started = time.monotonic()
        assert await host.command(f'AT+CIPOPEN=1,"TCP","127.0.0.1",{port}') == ["OK"]
        await host.expect(b"\r\n+CIPOPEN: 1,10\r\n", wait_s=5)
        assert 3.0 <= time.monotonic() - started < 4.5
        assert state.writers == []  # the peer never saw a connection
        await open_link(host, port)  # one-shot: the next connects
        # a close while the connect hangs cancels its late result
        vm.connect_timeout()
        assert await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}') == ["OK"]
        assert await host.command("AT+CIPCLOSE=0") == ["OK"]
        await host.expect(b"\r\n+CIPCLOSE: 0,0\r\n")
        await host.expect_silence(0.1)
    server.close()


# --- forgotten notices ---------------------------------------------------------------------------


async def test_forgotten_data_notice(open_host: HostOpener, peer: PeerStarter) -> None:
    state, server, port = await start(peer)
    async with VirtualModem() as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        vm.forget_data_urc()
        state.writers[0].write(b"quiet")
        await host.expect_silence(0.2)
        assert await host.command("AT+CIPRXGET=4,1") == ["+CIPRXGET: 4,1,5", "OK"]
        assert await host.rxget(1) == (b"quiet", 0)
        state.writers[0].write(b"loud")  # one-shot: announced again
        await host.expect(b"\r\n+CIPRXGET: 1,1\r\n")
        assert vm.faults_applied["forget_data_urc"] == 1
    server.close()


# --- chunking and jitter -------------------------------------------------------------------------


class _Pieces(asyncio.Protocol):
    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)


async def test_chunking_delivers_output_in_pieces() -> None:
    async with VirtualModem(echo=False, chunking=True, seed=9) as vm:
        loop = asyncio.get_running_loop()
        pieces: list[int] = []
        expected = await _answer_of(vm, "ATI")
        for chunk_max in (4, 256):
            transport, protocol = await serial_asyncio.create_serial_connection(
                loop, _Pieces, vm.url, baudrate=115200
            )
            try:
                # the piece bound is an option: give this round its own
                faults = vm.interpreter.faults
                faults.config = dataclasses.replace(faults.config, chunk_max_bytes=chunk_max)
                before = vm.faults_applied["chunk"]
                transport.write(b"ATI\r")
                async with asyncio.timeout(5):
                    while len(b"".join(protocol.pieces)) < len(expected):
                        await asyncio.sleep(0.01)
                # however the pieces were cut, the host reassembles the same answer
                assert b"".join(protocol.pieces) == expected
                pieces.append(vm.faults_applied["chunk"] - before)
            finally:
                transport.close()
        # Count the pieces the module wrote, not the host's reads: the pty may merge
        # pieces when the machine is busy (CI saw one read for the whole answer).
        assert pieces[0] >= len(expected) // 4
        assert pieces[0] > pieces[1] >= 1


async def test_latency_jitter(open_host: HostOpener) -> None:
    async with VirtualModem(echo=False, jitter_s=0.05, seed=4) as vm:
        host = await open_host(vm.url)
        delays: list[float] = []
        for _ in range(15):
            started = time.monotonic()
            assert await host.command("AT") == ["OK"]
            delays.append(time.monotonic() - started)
        assert max(delays) < 0.05 + 0.05
        assert max(delays) - min(delays) > 0.01


# --- presets and options -------------------------------------------------------------------------


async def test_hostile_preset_is_still_a_correct_module(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    _, server, port = await start(peer, greeting=b"x" * 3000)
    async with VirtualModem.hostile(seed=21) as vm:
        faults = vm.interpreter.faults.config
        assert faults.chunking
        assert faults.jitter_s > 0
        assert faults.forget_data_urc > 0
        assert vm.config.urc_noise
        host = await open_host(vm.url)
        await host.command("ATE0")
        assert (await host.command("AT+NETOPEN"))[-1] == "OK"
        await host.wait_line(r"\+NETOPEN: 0$")
        await host.command("AT+CIPRXGET=1")
        await host.command(f'AT+CIPOPEN=1,"TCP","127.0.0.1",{port}')
        await host.wait_line(r"\+CIPOPEN: 1,0$")
        got = bytearray()
        async with asyncio.timeout(10):
            while len(got) < 3000:
                read = await host.rxget(1)
                if read is None:
                    await asyncio.sleep(0.01)
                else:
                    got += read[0]
        assert got == b"x" * 3000
    server.close()


def test_fault_options_are_checked() -> None:
    with pytest.raises(ValueError, match="probability"):
        VirtualModem(line_noise=1.5)
    with pytest.raises(ValueError, match="unknown fault preset"):
        VirtualModem(preset="nasty")
    with pytest.raises(ValueError, match="not both"):
        VirtualModem(preset="hostile", faults=FaultConfig())
    vm = VirtualModem(preset="hostile", chunking=False, seed=1)
    assert vm.config.faults.chunking is False  # single options override the preset
    assert vm.config.faults.forget_data_urc > 0
    assert vm.seed == 1


def test_line_faults_hit_at_their_rate_whatever_the_pieces() -> None:
    data = bytes(200_000)
    whole = LineFaults(random.Random(1), noise=0.01, drop=0.02)
    out = whole.apply(data)
    assert 1600 < whole.corrupted < 2400
    assert 3400 < whole.dropped < 4600
    assert len(out) == len(data) - whole.dropped
    pieces = LineFaults(random.Random(1), noise=0.01, drop=0.02)
    cuts = sorted(random.Random(2).sample(range(1, len(data)), 500))
    bounds = [0, *cuts, len(data)]
    assert b"".join(pieces.apply(data[a:b]) for a, b in itertools.pairwise(bounds)) == out


def test_the_seed_replays_a_hostile_module_without_io() -> None:
    script = b"ATE0\rAT+NETOPEN\rAT+CIPRXGET=1\rAT+CSQ\rATI\r" * 20

    def run(seed: int) -> bytes:
        m = Interpreter(ModuleConfig(seed=seed, urc_noise=STORM_URCS, faults=HOSTILE))
        out = bytearray()
        for index in range(0, len(script), 7):
            m.receive_data(script[index : index + 7], index / 1000)
            m.handle_timer(index / 1000 + 0.01)
            out += m.data_to_send()
        m.urc_storm(50)
        return bytes(out + m.data_to_send())

    assert run(8) == run(8)
    assert run(8) != run(9)


async def test_corrupt_next_line_spoils_one_result_line_never_a_payload(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    _, server, port = await start(peer, greeting=b"payload!")
    async with VirtualModem(seed=5) as vm:
        host = await open_host(vm.url)
        await bring_up(host)
        await open_link(host, port)
        await host.expect(b"\r\n+CIPRXGET: 1,1\r\n")
        vm.corrupt_next_line(prefix="OK")  # the OK after the payload block, not the block
        await host.send("AT+CIPRXGET=2,1\r")
        await host.expect(b"\r\n+CIPRXGET: 2,1,8,0\r\npayload!")
        spoiled = await host.read_exact(6)
        assert spoiled[:2] == b"\r\n"
        assert spoiled[-2:] == b"\r\n"
        assert spoiled[2:4] != b"OK"
        assert sum(a != b for a, b in zip(spoiled, b"\r\nOK\r\n", strict=True)) == 1
        assert await host.command("AT+CSQ") == ["+CSQ: 24,99", "OK"]  # one line only
        assert vm.faults_applied["corrupt_line"] == 1
    server.close()
