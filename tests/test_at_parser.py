"""The sans-I/O parser: events for every line shape, split-invariance, garbage resilience."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simsock.at.errors import ProtocolError
from simsock.at.events import (
    ClientAccepted,
    CmeError,
    Connect,
    ConnectFail,
    DataWaiting,
    Echo,
    Error,
    Event,
    IpError,
    Line,
    LinkClosed,
    ModuleReady,
    NetworkClosed,
    Notice,
    Ok,
    Prompt,
    PushedData,
    RawData,
    ReceivedData,
    TransparentClosed,
)
from simsock.at.parser import MAX_LINE_BYTES, Parser

NASTY = b"\r\nOK\r\n+CIPRXGET: 1,0\r\n> \r\nERROR\r\n+IPCLOSE: 0,1\r\n"

#: The reference's section 6 TCP client flow as the module sends it (echo on), plus
#: every URC of section 4 and payloads that look like framing.
STREAM = (
    b"AT+NETOPEN\r\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    b"AT+CIPRXGET=1\r\r\nOK\r\n"
    b'AT+CIPOPEN=1,"TCP","117.131.85.139",5253\r\r\nOK\r\n\r\n+CIPOPEN: 1,0\r\n'
    b"AT+CIPSEND=1,5\r\r\n> HELLO\r\nOK\r\n\r\n+CIPSEND: 1,5,5\r\n"
    b"\r\n+CIPRXGET: 1,1\r\n"
    b"\r\n+CIPRXGET: 4,1,16\r\n\r\nOK\r\n"
    b"\r\n+CIPRXGET: 2,1,5,11\r\ndata \r\nOK\r\n"
    b"\r\n+CIPRXGET: 3,1,5,6\r\n66726F6D20\r\nOK\r\n"
    b"\r\n+CIPRXGET: 2,1,6,0\r\nserver\r\nOK\r\n"
    b"\r\n+CIPRXGET: 2,0,%d,0\r\n%s\r\nOK\r\n"
    % (len(NASTY), NASTY)
    + b"\r\n+IP ERROR: No data\r\n\r\nERROR\r\n"
    b"\r\n+CME ERROR: 10\r\n"
    b"\r\nRECV FROM:117.131.85.139:5254\r\n+IPD14\r\nHELLO CLIENT..\r\n"
    b"\r\n+RECEIVE,1,%d\r\n%s" % (len(NASTY), NASTY) + b"\r\n+CLIENT: 0,0,192.168.108.5:57202\r\n"
    b"\r\n+IPCLOSE: 1,1\r\n"
    b"\r\n+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY\r\n"
    b"\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nCONNECT 115200\r\n\r\nCLOSED\r\n\r\nCONNECT FAIL\r\n"
    b"\r\n+CIPCLOSE: 1,0\r\n"
)

EXPECTED: list[Event] = [
    Echo("AT+NETOPEN"),
    Ok(),
    Line("+NETOPEN: 0"),
    Echo("AT+CIPRXGET=1"),
    Ok(),
    Echo('AT+CIPOPEN=1,"TCP","117.131.85.139",5253'),
    Ok(),
    Line("+CIPOPEN: 1,0"),
    Echo("AT+CIPSEND=1,5"),
    Prompt(),
    Line("HELLO"),  # our own payload echoed (echo on): an ordinary line
    Ok(),
    Line("+CIPSEND: 1,5,5"),
    DataWaiting(1),
    Line("+CIPRXGET: 4,1,16"),
    Ok(),
    ReceivedData(1, b"data ", 11),
    Ok(),
    ReceivedData(1, b"from ", 6),
    Ok(),
    ReceivedData(1, b"server", 0),
    Ok(),
    ReceivedData(0, NASTY, 0),
    Ok(),
    IpError("No data"),
    Error(),
    CmeError(10),
    PushedData(None, b"HELLO CLIENT..", ("117.131.85.139", 5254)),
    PushedData(1, NASTY, None),
    ClientAccepted(0, 0, "192.168.108.5", 57202),
    LinkClosed(1, 1),
    NetworkClosed(),
    ModuleReady(),
    Line("+CPIN: READY"),
    Connect(115200),
    TransparentClosed(),
    ConnectFail(),
    Line("+CIPCLOSE: 1,0"),
]


def parse(chunks: list[bytes]) -> list[Event]:
    parser = Parser()
    out: list[Event] = []
    for chunk in chunks:
        parser.feed(chunk)
        out.extend(parser.events())
    return out


def test_whole_stream_gives_every_event() -> None:
    assert parse([STREAM]) == EXPECTED


def test_byte_by_byte_gives_the_same_events() -> None:
    assert parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_every_two_way_split_gives_the_same_events() -> None:
    for cut in range(len(STREAM) + 1):
        assert parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert parse(chunks) == EXPECTED


#: Shapes real SIMCom firmware prints that the note does not show (A76xx and
#: SIM7xxx driver logs): each must still become the right event.
VARIANTS = (
    b"\r\n*ATREADY: 1\r\n\r\nSMS DONE\r\n\r\nPB DONE\r\n\r\nSMS Ready\r\n\r\nCall Ready\r\n"
    b"\r\n+CIPRXGET: 2,1,%d\r\n%s\r\nOK\r\n"
    % (len(NASTY), NASTY)
    + b"\r\n+CIPRXGET: 3,0,2\r\n4F4B\r\nOK\r\n"
    b"\r\n+CIPSEND: 1,5\r\n"
    b"\r\n+CIPRXGET: 1\r\n"
    b"\r\nRCV FROM:10.0.0.9:7\r\n+IPD2\r\nhi"
    b"\r\n+RECV FROM:10.0.0.8:8\r\n+RECEIVE,0,%d\r\n%s"
    % (len(NASTY), NASTY)
    + b"\r\n+CME ERROR: SIM not inserted\r\n"
)

VARIANT_EVENTS: list[Event] = [
    ModuleReady("*ATREADY: 1"),
    Notice("SMS DONE"),
    Notice("PB DONE"),
    Notice("SMS Ready"),
    Notice("Call Ready"),
    ReceivedData(1, NASTY, None),
    Ok(),
    ReceivedData(0, b"OK", None),
    Ok(),
    Line("+CIPSEND: 1,5"),  # the session reads it as a confirmation (response.late_values)
    DataWaiting(None),
    PushedData(None, b"hi", ("10.0.0.9", 7)),
    PushedData(0, NASTY, ("10.0.0.8", 8)),
    CmeError("SIM not inserted"),
]


def test_firmware_variants_give_the_right_events() -> None:
    assert parse([VARIANTS]) == VARIANT_EVENTS
    assert parse([VARIANTS[i : i + 1] for i in range(len(VARIANTS))]) == VARIANT_EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(VARIANTS)), max_size=40))
def test_firmware_variants_any_split(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [VARIANTS[a:b] for a, b in zip([0, *points], [*points, len(VARIANTS)], strict=True)]
    assert parse(chunks) == VARIANT_EVENTS


def test_a_two_field_cipsend_is_a_whole_confirmation() -> None:
    from simsock.at.response import late_values

    assert late_values(Line("+CIPSEND: 1,5")) == [1, 5, 5]
    assert late_values(Line("+CIPSEND: 1,5,5")) == [1, 5, 5]
    assert late_values(Line("+CIPSEND: (0-1),(1-1500)")) is None


@given(st.binary(min_size=0, max_size=1500))
def test_any_payload_is_delivered_intact(payload: bytes) -> None:
    stream = b"\r\n+CIPRXGET: 2,0,%d,0\r\n%s\r\nOK\r\n" % (len(payload), payload)
    assert parse([stream]) == [ReceivedData(0, payload, 0), Ok()]


def test_hex_read_decodes() -> None:
    assert parse([b"\r\n+CIPRXGET: 3,0,2,0\r\n0D0A\r\nOK\r\n"]) == [
        ReceivedData(0, b"\r\n", 0),
        Ok(),
    ]


def test_prompt_space_arriving_late_is_ignored() -> None:
    assert parse([b"\r\n>", b" ", b"\r\nOK\r\n"]) == [Prompt(), Ok()]


def test_info_lines_expose_name_and_fields() -> None:
    (line,) = parse([b'\r\n+CIPOPEN: 0,"TCP","1.2.3.4",80,-1\r\n'])
    assert isinstance(line, Line)
    assert line.name == "+CIPOPEN"
    assert line.fields[0] == 0
    assert str(line.fields[2]) == "1.2.3.4"
    assert line.fields[4] == -1


@pytest.mark.parametrize(
    "garbage",
    [
        b"+CIPRXGET: 2,0,9999,0\r\n",  # a corrupted length is refused before it is trusted
        b"+IPD12x\r\n",
        b"+IPCLOSE: a,b\r\n",
        b"+CLIENT: 0,0,nowhere\r\n",
        b"+CIPRXGET: 3,0,1,0\r\nZZ\r\n",
        b"\xff\xfe\x80 noise\r\n",
        b'+RECEIVE,"x\r\n',
    ],
)
def test_malformed_lines_raise_then_parsing_resumes(garbage: bytes) -> None:
    parser = Parser()
    parser.feed(garbage + b"\r\nOK\r\n")
    events: list[Event] = []
    errors = 0
    for _ in range(10):
        try:
            event = parser.next_event()
        except ProtocolError:
            errors += 1
            continue
        if event is None:
            break
        events.append(event)
    assert errors >= 1
    assert events[-1] == Ok()


def test_garbage_without_line_end_is_bounded() -> None:
    parser = Parser()
    raised = 0
    for _ in range(1000):
        parser.feed(b"x" * 1000)
        try:
            parser.next_event()
        except ProtocolError:
            raised += 1
    assert raised == 1  # one report per over-long line, not one per chunk
    assert parser.buffered <= MAX_LINE_BYTES + 1000
    # the rest of the over-long line is dropped, then parsing resumes
    parser.feed(b"yyyy\r\nOK\r\n")
    assert list(parser.events()) == [Ok()]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=30))
def test_any_input_gives_events_or_protocol_error(chunks: list[bytes]) -> None:
    parser = Parser()
    for chunk in chunks:
        parser.feed(chunk)
        for _ in range(10_000):
            try:
                event = parser.next_event()
            except ProtocolError:
                continue
            if event is None:
                break
        assert parser.buffered <= MAX_LINE_BYTES + 2 * 1500 + len(chunk) + 64


def test_the_core_imports_no_io() -> None:
    """simsock/at imports no asyncio or serial code (socket only for gaierror), and no clock."""
    forbidden = {"asyncio", "serial", "serial_asyncio", "selectors", "threading", "time"}
    root = pathlib.Path(__file__).parent.parent / "simsock" / "at"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level >= 2:
                pytest.fail(f"{path.name} imports from outside simsock.at")
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
    code = (
        "import sys, simsock.at.parser, simsock.at.commands, simsock.at.errors,"
        " simsock.at.session;"
        "bad = [m for m in ('asyncio', 'serial', 'serial_asyncio') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@given(
    st.binary(max_size=3000).filter(lambda b: not b.endswith(b"\r\nCLOSED\r\n")),
    st.lists(st.integers(min_value=0, max_value=3100), max_size=20),
)
def test_transparent_data_mode_any_split(payload: bytes, cuts: list[int]) -> None:
    """After CONNECT every byte is the link's until CLOSED ends the stream, however split."""
    stream = b"\r\nCONNECT 115200\r\n" + payload + b"\r\nCLOSED\r\n\r\nOK\r\n"
    points = sorted({c for c in cuts if c <= len(stream)})
    parser = Parser()
    data = bytearray()
    tail: list[Event] = []
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        parser.feed(stream[a:b])
        for event in parser.events():
            if isinstance(event, Connect):
                parser.enter_raw()
            elif isinstance(event, RawData):
                assert not tail
                data += event.data
            else:
                tail.append(event)
    assert bytes(data) == payload
    assert tail == [TransparentClosed(), Ok()]
    assert not parser.raw
