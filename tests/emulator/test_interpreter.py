"""The sans-I/O interpreter alone: bytes and outcomes in, bytes and actions out, no sockets."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from simsock.at.note import ESCAPE_CHAR_GAP_S
from simsock.emulator import (
    Close,
    Interpreter,
    ModuleConfig,
    OpenTcp,
    PauseReading,
    ResumeReading,
    Send,
)
from simsock.emulator.interpreter import URC_HOLD_S
from simsock.emulator.transparent import EscapeDetector

SCRIPT = (
    b"ATE0\rAT+CSQ\rAT+NETOPEN\r\nAT+CIPRXGET=1\r"
    b'AT+CIPOPEN=0,"TCP","127.0.0.1",80\rAT+CIPSEND=0\rab\x03\x1a\x1acd\x1bAT+CIPOPEN?\r'
)


def run(chunks: list[bytes]) -> tuple[bytes, list[object]]:
    m = Interpreter()
    out = bytearray()
    actions: list[object] = []
    for chunk in chunks:
        m.receive_data(chunk, 0.0)
        out += m.data_to_send()
        actions += m.actions()
    return bytes(out), actions


@given(st.lists(st.integers(min_value=0, max_value=len(SCRIPT)), max_size=12))
def test_any_split_of_the_input_gives_the_same_output(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(SCRIPT)]
    chunks = [SCRIPT[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(chunks) == run([SCRIPT])


def test_whole_script() -> None:
    out, actions = run([SCRIPT])
    assert out == (
        b"ATE0\r\r\nOK\r\n"
        b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
        b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
        b"\r\nOK\r\n"
        b"\r\nOK\r\n"
        b"\r\n+CIPERROR: 4\r\n\r\nERROR\r\n"  # CIPSEND: link 0 is still connecting
        # what followed is no "AT" line: ignored, as a module ignores line noise
    )
    assert actions == [OpenTcp(0, "127.0.0.1", 80, "127.0.0.1", None, 120.0)]


PAYLOAD = bytes(range(256)) + b"\x1a\x1b\x03" * 3
ESCAPED = PAYLOAD.replace(b"\x03", b"\x03\x03").replace(b"\x1a", b"\x03\x1a")
ESCAPED = ESCAPED.replace(b"\x1b", b"\x03\x1b")


@given(st.lists(st.integers(min_value=0, max_value=len(ESCAPED) + 20), max_size=12))
def test_variable_length_payload_in_any_pieces(cuts: list[int]) -> None:
    m = Interpreter()
    open_link(m)
    stream = b"AT+CIPSEND=0\r" + ESCAPED + b"\x1aAT\r"
    bounds = [0, *sorted(min(cut, len(stream)) for cut in cuts), len(stream)]
    for a, b in itertools.pairwise(bounds):
        m.receive_data(stream[a:b], 0.0)
    assert m.actions() == [Send(0, PAYLOAD)]
    assert m.data_to_send() == b"\r\n> \r\nOK\r\n\r\nOK\r\n"


def open_link(m: Interpreter) -> None:
    m.receive_data(b'ATE0\rAT+NETOPEN\rAT+CIPRXGET=1\rAT+CIPOPEN=0,"TCP","127.0.0.1",80\r', 0.0)
    m.connected(0, 40000)
    m.data_to_send()
    m.actions()


def test_latency_runs_on_the_callers_clock() -> None:
    m = Interpreter(ModuleConfig(latency_s=0.5, echo=False), now=10.0)
    m.receive_data(b"AT\rAT+CSQ\r", 10.0)
    assert m.data_to_send() == b""
    assert m.get_timer() == 10.5
    m.handle_timer(10.5)
    assert m.data_to_send() == b"\r\nOK\r\n"
    assert m.get_timer() == 11.0
    m.handle_timer(11.0)
    assert m.data_to_send() == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert m.get_timer() is None


def test_half_typed_line_holds_urcs_for_a_while() -> None:
    m = Interpreter(now=0.0)
    m.receive_data(b"AT+C", 0.0)
    m.inject_urc("+CEREG: 1")
    assert m.data_to_send() == b"AT+C"
    assert m.get_timer() == URC_HOLD_S
    m.handle_timer(URC_HOLD_S)
    assert m.data_to_send() == b"\r\n+CEREG: 1\r\n"


def test_full_buffer_pauses_and_reading_resumes() -> None:
    m = Interpreter(ModuleConfig(rx_buffer_bytes=1000))
    open_link(m)
    m.received(0, bytes(600))
    assert m.actions() == []
    m.received(0, bytes(600))
    assert m.actions() == [PauseReading(0)]
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,0\r\n"  # once: when it became non-empty
    m.receive_data(b"AT+CIPRXGET=2,0,600\r", 0.0)
    assert m.actions() == []  # 600 left: more than half full
    m.receive_data(b"AT+CIPRXGET=2,0,200\r", 0.0)
    assert m.actions() == [ResumeReading(0)]


def test_send_confirmation_and_peer_close() -> None:
    m = Interpreter()
    open_link(m)
    m.receive_data(b"AT+CIPSEND=0,3\rabc", 0.0)
    assert m.actions() == [Send(0, b"abc")]
    assert m.data_to_send() == b"\r\n> \r\nOK\r\n"
    m.peer_closed(0)  # before the bytes left: the send failed
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,3,-1\r\n\r\n+IPCLOSE: 0,1\r\n"


def test_network_loss_closes_everything() -> None:
    m = Interpreter()
    open_link(m)
    m.drop_network()
    assert m.actions() == [Close(0)]
    assert m.data_to_send() == b"\r\n+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY\r\n"
    m.receive_data(b"AT+NETOPEN?\rAT+NETCLOSE\r", 0.0)
    assert m.data_to_send() == b"\r\n+NETOPEN: 1\r\n\r\nOK\r\n\r\nOK\r\n\r\n+NETCLOSE: 0\r\n"


def test_escape_needs_silence_around_three_pluses() -> None:
    detector = EscapeDetector(now=0.0, guard_s=1.0)
    assert detector.feed(b"+++", 0.5) == b"+++"  # too soon after entering data mode
    assert detector.feed(b"+", 2.0) == b""  # held: it may start an escape
    assert detector.feed(b"++", 2.1) == b""
    assert detector.deadline() == 3.1
    assert detector.expire(3.0) == (b"", False)
    assert detector.expire(3.1) == (b"", True)
    assert detector.feed(b"+", 5.0) == b""
    assert detector.expire(5.0 + ESCAPE_CHAR_GAP_S) == (b"+", False)  # a lone '+' is data
    assert detector.feed(b"+++", 7.0) == b""
    assert detector.feed(b"x", 7.5) == b"+++x"  # data too soon after: no escape
    assert detector.feed(b"++++", 9.0) == b"++++"  # four pluses are data


def test_a_mute_during_a_payload_does_not_keep_its_held_urcs_for_later() -> None:
    # Found by simulation seed 43957: data pushed while a CIPSEND payload was
    # being read stayed held after a mute abandoned the payload, and came out
    # only after data pushed later, out of order.
    m = Interpreter()
    open_link(m)
    m.receive_data(b"AT+CIPRXGET=0\r", 0.0)
    m.receive_data(b"AT+CIPSEND=0,3\ra", 0.0)
    assert m.data_to_send() == b"\r\nOK\r\n\r\n> "
    m.received(0, b"old")  # held: the module is reading the payload
    m.mute(0.0, 1.0)
    assert m.data_to_send() == b""  # said into the silence, so lost
    m.handle_timer(1.0)
    m.received(0, b"new")
    m.receive_data(b"AT+CIPSEND=0,2\rok", 1.0)
    out = m.data_to_send()
    assert b"old" not in out
    assert out.startswith(b"\r\nRECV FROM:127.0.0.1:80\r\n+IPD3\r\nnew\r\n")
