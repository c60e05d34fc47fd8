"""The simulated network behind a real interpreter, on a virtual clock (no sockets, no asyncio)."""

from __future__ import annotations

import random
import re

import pytest

from simsock.at.errors import CIPOPEN_CONNECT_FAILED
from simsock.emulator.actions import PauseReading, ResumeReading
from simsock.emulator.interpreter import Interpreter
from simsock.emulator.settings import ModuleConfig
from tests.simulation.network import SimNetwork

HOST = "127.0.0.1"
#: A bound on the steps of one run: a loop that never settles is a bug.
MAX_STEPS = 100_000


class Sim:
    """A real interpreter and the simulated network, driven on one virtual clock."""

    def __init__(self, seed: int = 1, config: ModuleConfig | None = None) -> None:
        self.module = Interpreter(config if config is not None else ModuleConfig(seed=seed))
        self.net = SimNetwork(self.module, random.Random(seed))
        self.now = 0.0
        self.transcript = bytearray()
        self._seen = 0

    def pump(self) -> None:
        self.net.execute(self.module.actions(), self.now)
        self.transcript += self.module.data_to_send()

    def send(self, data: bytes) -> None:
        self.module.receive_data(data, self.now)
        self.pump()

    def run(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, delivering every timer on the way."""
        end = self.now + seconds
        for _ in range(MAX_STEPS):
            timers = [t for t in (self.module.get_timer(), self.net.get_timer()) if t is not None]
            if not timers or min(timers) > end:
                break
            self.now = max(self.now, min(timers))
            self.module.handle_timer(self.now)
            self.net.handle_timer(self.now)
            self.pump()
        else:
            raise AssertionError("the simulation never settled")
        self.now = end

    def expect(self, marker: bytes, within: float = 5.0) -> bytes:
        """Run until ``marker`` is in the output not yet looked at; return that output."""
        for _ in range(int(within / 0.01)):
            index = self.transcript.find(marker, self._seen)
            if index >= 0:
                seen, self._seen = self._seen, index + len(marker)
                return bytes(self.transcript[seen : self._seen])
            self.run(0.01)
        raise AssertionError(f"no {marker!r} in {bytes(self.transcript[self._seen :])!r}")

    def take(self) -> bytes:
        """The output not yet looked at."""
        seen, self._seen = self._seen, len(self.transcript)
        return bytes(self.transcript[seen:])

    def command(self, line: str, marker: bytes = b"OK\r\n") -> bytes:
        self.send(line.encode() + b"\r")
        return self.expect(marker)

    def open_tcp(self, port: int = 7, *, link: int = 0, buffered: bool = True) -> None:
        self.command("ATE0")
        self.command("AT+NETOPEN", b"+NETOPEN: 0\r\n")
        if buffered:
            self.command("AT+CIPRXGET=1")
        self.command(f'AT+CIPOPEN={link},"TCP","{HOST}",{port}', f"+CIPOPEN: {link},".encode())

    def cipsend(self, link: int, payload: bytes) -> None:
        self.command(f"AT+CIPSEND={link},{len(payload)}", b"> ")
        self.send(payload)
        self.expect(f"+CIPSEND: {link},{len(payload)},{len(payload)}\r\n".encode())


def read_all(sim: Sim, link: int = 0) -> bytes:
    """Read link ``link``'s buffer with AT+CIPRXGET=2 until it is empty."""
    data = bytearray()
    while True:
        sim.send(f"AT+CIPRXGET=2,{link},1500\r".encode())
        out = sim.take()  # the module answers at once (no latency configured)
        match = re.search(rb"\+CIPRXGET: 2,\d+,(\d+),\d+\r\n", out)
        if match is None:
            assert out.endswith(b"+IP ERROR: No data\r\n\r\nERROR\r\n"), out
            return bytes(data)
        block = out[match.end() :]
        size = int(match[1])
        assert block[size:] == b"\r\nOK\r\n"
        data += block[:size]


def test_tcp_echo_in_buffer_mode() -> None:
    sim = Sim()
    sim.net.add_tcp_peer(HOST, 7)
    sim.open_tcp()
    assert sim.transcript.endswith(b"+CIPOPEN: 0,0\r\n")
    sim.cipsend(0, b"hello")
    sim.expect(b"+CIPRXGET: 1,0\r\n")
    sim.run(1.0)  # let every chunk of the echo arrive
    out = sim.command("AT+CIPRXGET=2,0,1500")
    assert out.endswith(b"\r\n+CIPRXGET: 2,0,5,0\r\nhello\r\nOK\r\n")
    conn = sim.net.connection_for_link(0)
    assert conn is not None
    assert (conn.id, conn.state, conn.remote) == (0, "open", (HOST, 7))
    assert sim.net.received_by_peer(conn.id) == b"hello" == bytes(conn.peer_sent)
    assert bytes(conn.delivered) == b"hello"


@pytest.mark.parametrize("registered", [True, False])
def test_a_refused_connect_reports_an_error(registered: bool) -> None:
    sim = Sim()
    if registered:
        sim.net.add_tcp_peer(HOST, 7, "refuse")
    sim.open_tcp()
    match = re.search(rb"\+CIPOPEN: 0,(\d+)\r\n$", sim.transcript)
    assert match is not None
    assert int(match[1]) == CIPOPEN_CONNECT_FAILED
    assert int(match[1]) != 0
    conn = sim.net.connection_for_link(0)
    assert conn is not None
    assert conn.state == "failed"


def test_a_blackhole_never_answers() -> None:
    sim = Sim()
    sim.net.add_tcp_peer(HOST, 7, "blackhole")
    sim.command("AT+NETOPEN", b"+NETOPEN: 0\r\n")
    sim.command(f'AT+CIPOPEN=0,"TCP","{HOST}",7')
    sim.run(60.0)
    assert b"+CIPOPEN: 0," not in sim.transcript
    assert sim.net.get_timer() is None
    sim.command("AT+CIPCLOSE=0", b"+CIPCLOSE: 0,0\r\n")
    conn = sim.net.connection_for_link(0)
    assert conn is not None
    assert (conn.state, conn.closed_by) == ("closed", "module")


def test_reset_peer_closes_the_link() -> None:
    sim = Sim()
    sim.net.add_tcp_peer(HOST, 7)
    sim.open_tcp()
    sim.net.peer_send(0, b"last words", sim.now)
    sim.net.reset_peer(0, sim.now)
    sim.expect(b"+IPCLOSE: 0,1\r\n")
    # The data sent before the close is still readable (4.2), and came first.
    assert sim.transcript.index(b"+CIPRXGET: 1,0") < sim.transcript.index(b"+IPCLOSE: 0,1")
    assert read_all(sim) == b"last words"
    conn = sim.net.connection_for_link(0)
    assert conn is not None
    assert (conn.state, conn.closed_by) == ("closed", "peer")


def test_a_send_after_the_peer_reset_is_not_received() -> None:
    sim = Sim()
    sim.net.add_tcp_peer(HOST, 7, "sink")
    sim.open_tcp()
    sim.net.reset_peer(0, sim.now)
    sim.command("AT+CIPSEND=0,3", b"> ")
    sim.send(b"abc")
    sim.expect(b"+IPCLOSE: 0,1\r\n")
    assert b"+CIPSEND: 0,3,-1\r\n" in sim.transcript
    assert sim.net.received_by_peer(0) == b""


def scenario(seed: int) -> bytes:
    """Push mode (chunking shows in the +IPD headers), several sends and peer data."""
    sim = Sim(seed)
    sim.net.add_tcp_peer(HOST, 7)
    sim.open_tcp(buffered=False)
    for index in range(5):
        sim.cipsend(0, bytes([65 + index]) * 200)
        sim.net.peer_send(0, b"x" * 300, sim.now)
    sim.run(2.0)
    sim.net.reset_peer(0, sim.now)
    sim.expect(b"+IPCLOSE: 0,1\r\n")
    conn = sim.net.connections[0]
    assert bytes(conn.delivered) == bytes(conn.peer_sent)
    assert len(conn.peer_sent) == 5 * 500
    return bytes(sim.transcript)


def test_the_same_seed_gives_the_same_transcript() -> None:
    assert scenario(7) == scenario(7)
    assert len({scenario(seed) for seed in range(6)}) > 1


def test_pause_reading_holds_data_until_resumed() -> None:
    sim = Sim()
    sim.net.add_tcp_peer(HOST, 7)
    sim.open_tcp()
    sim.net.execute([PauseReading(0)], sim.now)
    sim.net.peer_send(0, b"held back", sim.now)
    sim.run(5.0)
    conn = sim.net.connection_for_link(0)
    assert conn is not None
    assert conn.paused
    assert bytes(conn.delivered) == b""
    assert b"+CIPRXGET: 1,0" not in sim.transcript
    sim.net.execute([ResumeReading(0)], sim.now)
    sim.expect(b"+CIPRXGET: 1,0\r\n")
    sim.run(1.0)
    assert read_all(sim) == b"held back" == bytes(conn.delivered)


def test_a_full_module_buffer_pauses_the_link() -> None:
    sim = Sim(3, ModuleConfig(seed=3, rx_buffer_bytes=64))
    sim.net.add_tcp_peer(HOST, 7)
    sim.open_tcp()
    payload = bytes(range(256)) * 4
    sim.net.peer_send(0, payload, sim.now)
    sim.run(5.0)
    conn = sim.net.connection_for_link(0)
    assert conn is not None
    assert conn.paused
    assert 64 <= len(conn.delivered) < len(payload)
    got = bytearray()
    for _ in range(100):  # each read that drains the buffer resumes the link
        got += read_all(sim)
        sim.run(0.1)
    assert got == payload
    assert not conn.paused
    assert b"+CIPRXGET: 1,0" in sim.transcript


def test_a_close_drops_what_was_queued_and_the_link_number_is_reused() -> None:
    sim = Sim()
    sim.net.add_tcp_peer(HOST, 7)
    sim.net.add_tcp_peer(HOST, 8)
    sim.open_tcp()
    sim.command("AT+CIPSEND=0,4", b"> ")
    sim.send(b"ping")  # not confirmed yet: the close flushes it to the peer
    sim.net.peer_send(0, b"stale", sim.now)
    sim.command("AT+CIPCLOSE=0", b"+CIPCLOSE: 0,0\r\n")
    sim.command(f'AT+CIPOPEN=0,"TCP","{HOST}",8', b"+CIPOPEN: 0,0\r\n")
    sim.run(2.0)
    first, second = sim.net.connections
    assert (first.state, first.closed_by, second.state) == ("closed", "module", "open")
    assert sim.net.received_by_peer(first.id) == b"ping"
    assert bytes(first.delivered) == b""
    assert sim.net.connection_for_link(0) is second
    assert b"+CIPRXGET: 1,0" not in sim.transcript
    sim.cipsend(0, b"new")
    sim.run(1.0)
    assert read_all(sim) == b"new"


def test_udp_datagrams_are_echoed_with_their_source() -> None:
    sim = Sim()
    sim.net.add_udp_peer(HOST, 9000)
    sim.command("AT+NETOPEN", b"+NETOPEN: 0\r\n")
    out = sim.command('AT+CIPOPEN=1,"UDP",,,0')
    assert b"+CIPOPEN: 1,0\r\n" in out
    sim.command(f'AT+CIPSEND=1,4,"{HOST}",9000', b"> ")
    sim.send(b"ping")
    sim.expect(b"+CIPSEND: 1,4,4\r\n")
    sim.expect(f"RECV FROM:{HOST}:9000\r\n+IPD4\r\nping".encode())
    conn = sim.net.connection_for_link(1)
    assert conn is not None
    assert conn.local_port >= 40000
    assert bytes(conn.peer_received) == b"ping" == bytes(conn.delivered)


def test_a_server_accepts_an_echo_client() -> None:
    sim = Sim()
    sim.command("ATE0")
    sim.command("AT+NETOPEN", b"+NETOPEN: 0\r\n")
    assert sim.net.connect_client(8080, "10.0.0.9", 5555, sim.now) is None  # nobody listens
    sim.command("AT+SERVERSTART=8080,0")
    link = sim.net.connect_client(8080, "10.0.0.9", 5555, sim.now)
    sim.pump()
    assert link == 0
    sim.expect(b"+CLIENT: 0,0,10.0.0.9:5555\r\n")
    sim.cipsend(0, b"hi")
    sim.expect(b"+IPD2\r\nhi")
    conn = sim.net.connection_for_link(0)
    assert conn is not None
    assert (conn.server, conn.remote, conn.local_port) == (0, ("10.0.0.9", 5555), 8080)
