"""The ``simsock`` command line, run as a user runs it: ``python -m simsock ...`` in a subprocess.

Every command talks to a real virtual SIM7028 (its own, on a pty, or one
started with ``simsock emulate`` and reached by its URL), peers are real
servers on 127.0.0.1, and every subprocess has a bounded timeout.
"""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from simsock.at.events import DataWaiting, Ok
from simsock.trace import escape, read_trace, replay, unescape

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 30


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def simsock(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m simsock args...`` to completion (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "simsock", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=_env(),
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[str, bytes]]:
    """A threaded HTTP/1.1 server on 127.0.0.1 with one 50 kB page; yields (URL, body)."""
    body = os.urandom(50_000)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path != "/blob":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/blob", body
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def greeter() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that says hello to each client; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT_S)

    def serve() -> None:
        try:
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(b"hello from 127.0.0.1\n")
                    conn.recv(1)  # until the module closes the link
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_help_lists_every_command() -> None:
    result = simsock("--help")
    assert result.returncode == 0
    for command in ("demo", "emulate", "at", "probe", "get", "trace-replay", "bench"):
        assert command in result.stdout
    for command in ("at", "probe", "get", "emulate"):
        sub = simsock(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "usage: simsock " + command in sub.stdout


def test_demo_fetches_through_a_virtual_module() -> None:
    result = simsock("demo")
    assert result.returncode == 0, result.stderr
    assert "status:  HTTP/1.1 200 OK" in result.stdout
    assert "AT+CIPOPEN" in result.stdout


def test_at_terminal_runs_a_piped_script_and_refuses_what_simsock_owns(greeter: int) -> None:
    script = "\n".join(
        [
            "# a comment, skipped",
            "AT+CSQ",
            "ATI",
            # links and payload belong to the session (simsock.at.commands.raw): refused
            f'AT+CIPOPEN=0,"TCP","127.0.0.1",{greeter}',
            "AT+CIPSEND=0,5",
            "AT+NOSUCH",  # unknown: only its read and test forms go out
            "AT+NOSUCH?",
        ]
    )
    result = simsock("at", "--linger", "1.0", stdin=script + "\n")
    out = result.stdout
    assert result.returncode == 1  # commands failed
    assert "> AT+CSQ\n+CSQ: 24,99\nOK\n" in out
    assert "Model: SIMCOM_SIM7028" in out
    assert out.count("refused:") == 3
    assert "managed by simsock" in out
    # the module's ERROR for the unknown read form, perhaps after URCs
    after = out.split("> AT+NOSUCH?\n", 1)[1].splitlines()
    assert next(line for line in after if not line.startswith("<urc>")).startswith("ERROR")
    assert "comment" not in out


def test_probe_reports_module_facts() -> None:
    result = simsock("probe", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["firmware"] == "SIM7028_V1.04_EMU"
    assert facts["sim"] == "READY"
    assert facts["signal"].startswith("rssi 24 (-65 dBm)")
    assert facts["registration"] == "1: registered, home network"
    assert facts["network"] == "open"
    assert facts["ip address"] == "10.64.0.2"
    assert facts["capabilities"].startswith("links 0-1, servers 0-1")
    text = simsock("probe")
    assert text.returncode == 0
    assert "registration" in text.stdout
    assert "firmware" in text.stdout


@pytest.mark.parametrize("client", ["httpx", "streams"])
def test_get_writes_the_body_and_draws_progress(
    client: str, http_server: tuple[str, bytes], tmp_path: Path
) -> None:
    url, body = http_server
    target = tmp_path / "body"
    result = simsock("get", "--client", client, url, "-o", str(target))
    assert result.returncode == 0, result.stderr
    data = target.read_bytes()
    assert len(data) == len(body)
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()
    assert f"100% {len(body)}/{len(body)} bytes" in result.stderr
    assert f"HTTP 200 OK ({client})" in result.stderr


def test_get_to_stdout_and_errors(http_server: tuple[str, bytes]) -> None:
    url, body = http_server
    result = subprocess.run(
        [sys.executable, "-m", "simsock", "get", "--client", "streams", url],
        capture_output=True,
        timeout=TIMEOUT_S,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout == body
    missing = simsock("get", url.replace("/blob", "/missing"), "-o", os.devnull)
    assert missing.returncode == 1
    assert "HTTP 404" in missing.stderr
    remote = simsock("get", "http://example.com/")
    assert remote.returncode == 2
    assert "--port" in remote.stderr


def test_trace_then_replay(tmp_path: Path) -> None:
    trace = tmp_path / "wire.log"
    result = simsock("--trace", str(trace), "at", "--linger", "0", stdin="AT+CSQ\n")
    assert result.returncode == 0, result.stderr
    records = list(read_trace(trace.read_text().splitlines()))
    assert any(r.direction == "->" and r.data == b"AT+CSQ\r" for r in records)
    assert all(a.time_s <= b.time_s for a, b in itertools.pairwise(records))
    replayed = simsock("trace-replay", str(trace))
    assert replayed.returncode == 0, replayed.stdout
    assert "-> AT+CSQ\\r" in replayed.stdout
    assert "<- +CSQ: 24,99  [Line]" in replayed.stdout
    events_only = subprocess.run(
        [sys.executable, "-m", "simsock.trace", str(trace), "--events-only"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=_env(),
        check=False,
    )
    assert events_only.returncode == 0
    assert "->" not in events_only.stdout
    assert "OK  [Ok]" in events_only.stdout


def test_trace_format_round_trips_binary_and_replays_split_input() -> None:
    data = bytes(range(256)) + b"\\x41\\"
    assert unescape(escape(data)) == data
    assert "\n" not in escape(data)
    # A payload split across reads, and a URC, replay to the same events as whole.
    wire = b"\r\n+CIPRXGET: 2,0,4,0\r\nAB\r\n\r\nOK\r\n\r\n+CIPRXGET: 1,0\r\n"
    lines = [f"{i * 0.001:.6f} <- {escape(wire[i : i + 7])}" for i in range(0, len(wire), 7)]
    events = [r.event for r in replay(read_trace(["# header", *lines]))]
    assert events[1] == Ok()
    assert events[2] == DataWaiting(0)
    with pytest.raises(ValueError, match="line 1"):
        list(read_trace(["garbage"]))


def test_emulate_serves_a_url_other_commands_use() -> None:
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simsock",
            "emulate",
            "--tcp",
            "--no-echo",
            "--seed",
            "5",
            "--urc-noise",
            "+CTZV: 24/11/26,12:00:00,+32",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:")
        probe = simsock("probe", "--port", url, "--json")
        assert probe.returncode == 0, probe.stderr
        assert json.loads(probe.stdout)["port"] == url
        terminal = simsock("at", "--port", url, "--linger", "0.2", stdin="AT+CEREG?\n")
        assert "+CEREG: 0,1" in terminal.stdout
        # the fault option reached the module: its noise shows as URCs
        assert "<urc> +CTZV: 24/11/26,12:00:00,+32  [Line]" in terminal.stdout
    finally:
        emulator.terminate()
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait(timeout=10)
    assert emulator.returncode == 0  # SIGTERM stops it cleanly
    assert emulator.stderr is not None
    assert "seed 5" in emulator.stderr.read()


def test_bench_is_passed_its_arguments() -> None:
    result = simsock("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: simsock bench" in result.stdout


def test_no_such_port_is_one_line() -> None:
    result = simsock("probe", "--port", "/dev/simsock-no-such-port")
    assert result.returncode == 2
    assert result.stderr.startswith("simsock probe:")
    assert "Traceback" not in result.stderr


def test_probe_without_network_traces_from_the_first_byte(tmp_path: Path) -> None:
    trace = tmp_path / "bare.log"
    result = simsock("--trace", str(trace), "probe", "--no-network", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["network"] == "closed (AT+NETOPEN? 0)"
    assert facts["ip address"].startswith("unavailable")
    assert facts["registration"] == "1: registered, home network"
    first = next(read_trace(trace.read_text().splitlines()))
    # the first byte written is the first synchronisation probe (simsock.at.resync)
    assert (first.direction, first.data) == ("->", b"AT+CIPHEAD?\r")


def _raw_at(sock: socket.socket, line: bytes, until: bytes) -> bytes:
    """Write one AT line (or payload); read until a line matching ``until`` has arrived."""
    sock.sendall(line)
    got = b""
    while not re.search(until + rb"[^\r]*\r\n", got):
        chunk = sock.recv(4096)
        assert chunk, f"closed; got {got!r}"
        got += chunk
    return got


def test_emulate_firmware_option_changes_the_result_shapes() -> None:
    """``--firmware a76xx``: a full send is confirmed as ``+CIPSEND: <link>,<len>``."""
    peer = socket.create_server(("127.0.0.1", 0))
    emulator = subprocess.Popen(
        [sys.executable, "-m", "simsock", "emulate", "--tcp", "--no-echo", "--firmware", "a76xx"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert emulator.stdout is not None
        host, port = emulator.stdout.readline().strip().removeprefix("socket://").split(":")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
            _raw_at(sock, b"AT+NETOPEN\r", rb"\+NETOPEN: 0")
            peer_port = peer.getsockname()[1]
            open_line = f'AT+CIPOPEN=0,"TCP","127.0.0.1",{peer_port}\r'.encode()
            _raw_at(sock, open_line, rb"\+CIPOPEN: 0,0")
            prompt = b""
            sock.sendall(b"AT+CIPSEND=0,5\r")
            while not prompt.endswith(b"> "):
                prompt += sock.recv(16)
            assert prompt == b"\r\n> "
            answer = _raw_at(sock, b"hello", rb"\+CIPSEND: ")
        assert b"\r\n+CIPSEND: 0,5\r\n" in answer
    finally:
        peer.close()
        emulator.terminate()
        emulator.wait(timeout=10)
    assert emulator.stderr is not None
    assert "firmware a76xx" in emulator.stderr.read()
