"""Faithfulness fixes: interrupted SERVERSTARTs, send reports, full receive buffers, closes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from simsock.emulator import (
    Close,
    Interpreter,
    Listen,
    ModuleConfig,
    PauseReading,
    ResumeReading,
    StopListening,
)
from simsock.emulator.bridge import Bridge

from .script import open_tcp, say, send

pytestmark = pytest.mark.timeout(30)


def module(**options: object) -> Interpreter:
    return Interpreter(ModuleConfig(echo=False, seed=11, **options))  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a SERVERSTART interrupted by the network or a restart ----------------------------------------


def test_a_network_drop_during_serverstart_stops_the_listener() -> None:
    m = module()
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    assert say(m, "AT+SERVERSTART=8080,0") == b""  # OK waits for the bridge
    assert m.actions() == [Listen(0, 8080, 3, 4)]
    m.drop_network()
    assert m.data_to_send() == (
        b"\r\n+CIPERROR: 1\r\n\r\nERROR\r\n\r\n+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY\r\n"
    )
    assert m.actions() == [StopListening(0)]
    m.listening(0, 8080)  # the bridge's report, too late: stop again, say nothing
    assert m.actions() == [StopListening(0)]
    assert m.data_to_send() == b""
    assert m.servers == [None, None]


def test_a_restart_during_serverstart_stops_the_listener() -> None:
    m = module()
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    assert say(m, "AT+SERVERSTART=8080,1") == b""
    assert m.actions() == [Listen(1, 8080, 3, 4)]
    m.restart(0.0)
    assert m.actions() == [StopListening(1)]
    m.listening(1, 8080)
    assert m.actions() == [StopListening(1)]


def test_a_report_for_a_listening_server_changes_nothing() -> None:
    m = module()
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    say(m, "AT+SERVERSTART=8080,0")
    m.actions()
    m.listening(0, 8080)
    assert m.data_to_send() == b"\r\nOK\r\n"
    m.listening(0, 8080)  # a duplicate: the server is listening, leave it
    assert m.actions() == []
    assert m.servers == [8080, None]


async def test_the_bridge_does_not_keep_listening_after_an_interrupted_serverstart() -> None:
    m = module()
    bridge: Bridge | None = None

    def pump() -> None:
        m.data_to_send()
        assert bridge is not None
        for action in m.actions():
            bridge.execute(action)

    bridge = Bridge(m, pump, allow_hosts=["127.0.0.1"])
    port = free_port()
    m.receive_data(f"AT+NETOPEN\rAT+SERVERSTART={port},0\r".encode(), 0.0)
    pump()  # the bridge listens; its report is on its way
    m.drop_network()
    pump()
    await asyncio.sleep(0.05)  # the report arrives
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await bridge.close()


# --- sent() checks what it is told --------------------------------------------------------------


def test_sent_reports_the_oldest_send() -> None:
    m = module()
    open_tcp(m, buffered=False)
    send(m, 0, b"abc")
    send(m, 0, b"defgh")
    with pytest.raises(ValueError, match="oldest unreported send of 3 bytes"):
        m.sent(0, 5, 5)  # out of order
    with pytest.raises(ValueError, match="does not match"):
        m.sent(0, 3, 4)  # more confirmed than asked
    with pytest.raises(ValueError, match="does not match"):
        m.sent(0, 3, -2)
    assert m.data_to_send() == b""  # nothing reported, nothing consumed
    m.sent(0, 3, 3)
    m.sent(0, 5, 0)
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,3,3\r\n\r\n+CIPSEND: 0,5,0\r\n"
    assert say(m, "AT+CIPACK=0") == b"\r\n+CIPACK: 8,3,0\r\n\r\nOK\r\n"
    m.sent(0, 3, 3)  # nothing unreported: a report for a settled link is ignored
    assert m.data_to_send() == b""


# --- a TCP receive buffer never holds more than its size ---------------------------------------


def test_one_big_read_does_not_overfill_the_buffer() -> None:
    m = module(rx_buffer_bytes=1000)
    open_tcp(m, buffered=True)
    stream = bytes(index % 251 for index in range(1500))
    m.received(0, stream[:1200])
    assert m.actions() == [PauseReading(0)]
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,0\r\n"
    m.received(0, stream[1200:])  # already in flight when the bridge paused
    assert say(m, "AT+CIPRXGET=4,0") == b"\r\n+CIPRXGET: 4,0,1000\r\n\r\nOK\r\n"
    assert say(m, "AT+CIPACK=0") == b"\r\n+CIPACK: 0,0,1000\r\n\r\nOK\r\n"
    # The rest moves in as room is made; rest_len counts what is in the buffer.
    answer = say(m, "AT+CIPRXGET=2,0,600")
    assert answer == b"\r\n+CIPRXGET: 2,0,600,900\r\n" + stream[:600] + b"\r\nOK\r\n"
    assert m.actions() == []  # still more than half full
    answer = say(m, "AT+CIPRXGET=2,0,500")
    assert answer == b"\r\n+CIPRXGET: 2,0,500,400\r\n" + stream[600:1100] + b"\r\nOK\r\n"
    assert m.actions() == [ResumeReading(0)]
    answer = say(m, "AT+CIPRXGET=2,0")
    assert answer == b"\r\n+CIPRXGET: 2,0,400,0\r\n" + stream[1100:] + b"\r\nOK\r\n"
    assert say(m, "AT+CIPACK=0") == b"\r\n+CIPACK: 0,0,1500\r\n\r\nOK\r\n"


def test_what_waits_beyond_the_buffer_survives_a_peer_close() -> None:
    m = module(rx_buffer_bytes=100)
    open_tcp(m, buffered=True)
    m.received(0, b"a" * 150)
    m.peer_closed(0)
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,0\r\n\r\n+IPCLOSE: 0,1\r\n"
    assert say(m, "AT+CIPRXGET=2,0,120") == b"\r\n+CIPRXGET: 2,0,100,50\r\n" + b"a" * 100 + (
        b"\r\nOK\r\n"
    )
    assert say(m, "AT+CIPRXGET=2,0") == b"\r\n+CIPRXGET: 2,0,50,0\r\n" + b"a" * 50 + b"\r\nOK\r\n"


def test_switching_to_push_mode_pushes_what_waits_beyond_the_buffer() -> None:
    m = module(rx_buffer_bytes=100)
    open_tcp(m, buffered=True)
    m.received(0, b"b" * 130)
    m.data_to_send()
    m.actions()
    assert say(m, "AT+CIPRXGET=0") == (
        b"\r\nRECV FROM:127.0.0.1:80\r\n+IPD130\r\n" + b"b" * 130 + b"\r\nOK\r\n"
    )
    assert m.actions() == [ResumeReading(0)]


def test_a_transparent_link_gets_what_waits_beyond_the_buffer_at_ato() -> None:
    m = module(rx_buffer_bytes=100)
    assert say(m, "AT+CIPMODE=1") == b"\r\nOK\r\n"
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    say(m, 'AT+CIPOPEN=0,"TCP","127.0.0.1",80')
    m.connected(0, 40000)
    assert m.data_to_send() == b"\r\nCONNECT 115200\r\n"
    m.receive_data(b"+++", 2.0)
    m.handle_timer(3.0)
    assert m.data_to_send() == b"\r\nOK\r\n"
    m.received(0, b"c" * 170)  # waits for ATO
    assert m.data_to_send() == b""
    m.receive_data(b"ATO\r", 3.0)
    assert m.data_to_send() == b"\r\nCONNECT 115200\r\n" + b"c" * 170


# --- closing a link with sends not yet reported --------------------------------------------------


def test_a_local_close_flushes_sends_a_reset_fails_them() -> None:
    # A CIPCLOSE closes the socket gracefully, which sends what was written:
    # the module reports those sends as sent. A reset the module has heard of
    # (peer_closed) fails them first and frees the link, so a later CIPCLOSE
    # finds nothing to flush and cannot report them as sent.
    m = module()
    open_tcp(m, buffered=False)
    send(m, 0, b"abc")
    assert say(m, "AT+CIPCLOSE=0") == b"\r\n+CIPSEND: 0,3,3\r\n\r\nOK\r\n\r\n+CIPCLOSE: 0,0\r\n"
    assert m.actions() == [Close(0)]
    assert say(m, 'AT+CIPOPEN=0,"TCP","127.0.0.1",80') == b"\r\nOK\r\n"
    m.connected(0, 40001)
    assert m.data_to_send() == b"\r\n+CIPOPEN: 0,0\r\n"
    m.actions()
    send(m, 0, b"xyz")
    m.peer_closed(0)
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,3,-1\r\n\r\n+IPCLOSE: 0,1\r\n"
    assert say(m, "AT+CIPCLOSE=0") == b"\r\n+CIPCLOSE: 0,4\r\n\r\nERROR\r\n"
    m.sent(0, 3, 3)
    assert m.data_to_send() == b""
