"""Command builders: exact wire forms, and no input can smuggle a second command."""

from __future__ import annotations

import errno
import re
import socket

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from simsock.at import commands as at
from simsock.at.errors import (
    CommandError,
    ModuleError,
    err_to_oserror,
    ip_error_code,
    ip_error_to_oserror,
)


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (at.at(), b"AT\r"),
        (at.echo(False), b"ATE0\r"),
        (at.netopen(), b"AT+NETOPEN\r"),
        (at.query("+NETOPEN"), b"AT+NETOPEN?\r"),
        (at.cipopen_tcp(1, "117.131.85.139", 5253), b'AT+CIPOPEN=1,"TCP","117.131.85.139",5253\r'),
        (at.cipopen_tcp(0, "::1", 80, 4000), b'AT+CIPOPEN=0,"TCP","::1",80,4000\r'),
        (at.cipopen_udp(1, 5000), b'AT+CIPOPEN=1,"UDP",,,5000\r'),
        (at.cipsend(1, 5), b"AT+CIPSEND=1,5\r"),
        (at.cipsend(1, None), b"AT+CIPSEND=1\r"),
        (at.cipsend(1, 5, "117.131.85.139", 5254), b'AT+CIPSEND=1,5,"117.131.85.139",5254\r'),
        (at.cipsend(1, None, "117.131.85.139", 5254), b'AT+CIPSEND=1,,"117.131.85.139",5254\r'),
        (at.ciprxget_mode(1), b"AT+CIPRXGET=1\r"),
        (at.ciprxget_read(1, 5), b"AT+CIPRXGET=2,1,5\r"),
        (at.ciprxget_read(1, 5, hex=True), b"AT+CIPRXGET=3,1,5\r"),
        (at.ciprxget_pending(1), b"AT+CIPRXGET=4,1\r"),
        (at.cipclose(1), b"AT+CIPCLOSE=1\r"),
        (at.serverstart(8080, 0), b"AT+SERVERSTART=8080,0,3\r"),
        (at.serverstop(0), b"AT+SERVERSTOP=0\r"),
        (at.cdnsgip("example.com"), b'AT+CDNSGIP="example.com"\r'),
        (at.ciptimeout(10000, None, None), b"AT+CIPTIMEOUT=10000\r"),
        (at.ciptimeout(None, 5000, 3000), b"AT+CIPTIMEOUT=,5000,3000\r"),
        (at.csocketpn(6), b"AT+CSOCKETPN=1,6\r"),
        (at.cdnscfg("8.8.8.8", "1.1.1.1"), b'AT+CDNSCFG="8.8.8.8","1.1.1.1",0\r'),
        (at.cgdcont("iot.example"), b'AT+CGDCONT=1,"IP","iot.example"\r'),
    ],
)
def test_wire_forms(command: at.Command, wire: bytes) -> None:
    assert command.wire == wire


def test_timeouts_follow_the_reference() -> None:
    assert at.cipopen_tcp(0, "1.2.3.4", 1).timeout_s == at.CIPTIMEOUT_DEFAULT_S
    assert at.ciprxget_read(0).timeout_s == at.CIPRXGET_TIMEOUT_S
    assert at.cdnsgip("a.b").timeout_s == at.CDNSGIP_TIMEOUT_S
    assert at.ipaddr().timeout_s == at.DEFAULT_TIMEOUT_S


@pytest.mark.parametrize(
    "host",
    [
        'evil"\rAT+NETCLOSE',
        "a\r\nAT+NETCLOSE",
        "-leading.hyphen",
        "x" * 64 + ".com",
        "a." * 130 + "com",
        "",
        "spa ce",
        "ünicode.de",
    ],
)
def test_bad_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        at.cipopen_tcp(0, host, 80)


@pytest.mark.parametrize(
    ("build", "exc"),
    [
        (lambda: at.cipopen_tcp(2, "1.2.3.4", 80), ValueError),
        (lambda: at.cipopen_tcp(0, "1.2.3.4", 0), ValueError),
        (lambda: at.cipopen_tcp(0, "1.2.3.4", 65536), ValueError),
        (lambda: at.cipopen_tcp(True, "1.2.3.4", 80), TypeError),
        (lambda: at.cipsend(0, 1501), ValueError),
        (lambda: at.cipsend(0, 0), ValueError),
        (lambda: at.cipsend(0, 5, "name.example", 5), ValueError),
        (lambda: at.ciprxget_read(0, 751, hex=True), ValueError),
        (lambda: at.serverstart(80, 2), ValueError),
        (lambda: at.serverstart(80, 0, 4), ValueError),
        (lambda: at.cgdcont('apn"'), ValueError),
        (lambda: at.cdnscfg("dns.example"), ValueError),
        (lambda: at.ciptimeout(100, None, None), ValueError),
    ],
)
def test_out_of_range_arguments_are_refused(build: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    "line",
    [
        "AT+CIPSEND=0,5",
        "at+cipsend=0",
        "ATO",
        "AT+CIPMODE=1",
        "AT+CIPRXGET=2,0,10",
        "AT+CSQ;+CIPSEND=0,1",
        "AT+CSQ\rAT+NETCLOSE",
        "AT\x1b",
        "+CSQ",
        'AT+CDNSGIP="a',
    ],
)
def test_raw_commands_the_engine_owns_or_malformed_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match=r"simsock itself|starts with AT|chained|printable|quotes"):
        at.raw(line)


def test_raw_commands_pass_through() -> None:
    assert at.raw("AT+CSQ").wire == b"AT+CSQ\r"
    assert at.raw("AT+CIPSENDMODE?").wire == b"AT+CIPSENDMODE?\r"
    assert at.raw('AT+CDNSGIP="a;b"').wire == b'AT+CDNSGIP="a;b"\r'


#: Lines that would break a framing or state assumption of the stack (raw() rule set).
_REFUSED = [
    # the module's settings, result codes and serial line
    "ATZ",
    "ATZ0",
    "AT&F",
    "AT&F0",
    "AT+IPR=9600",
    "AT+IPR",
    "AT+ICF=3,3",
    "AT+IFC=2,2",
    "ATV0",
    "ATV",
    "ATQ1",
    "ATE1",
    "ATS3=10",
    "AT+CFUN=0",
    "AT+CFUN=1,1",
    "AT+CRESET",
    "AT+CGATT=0",
    # receive framing and payload
    "AT+CIPHEAD=0",
    "AT+CIPHEAD",
    "AT+CIPSRIP=0",
    "AT+CIPRXGET=1",
    "AT+CIPRXGET=0",
    "AT+CIPRXGET=2,0,10",
    "AT+CIPRXGET=3,1,5",
    "AT+CIPRXGET",
    "AT+CIPCCFG",
    "AT+CIPCCFG=10,0,0,1,1,0,500",
    "AT+CIPMODE=0",
    "AT+CIPSEND=0,5",
    'AT+CIPSEND=1,,"1.2.3.4",5',
    "ATO",
    "ATO0",
    "+++",
    "A/",
    # the network, links, servers and settings the session follows
    "AT+NETOPEN",
    "AT+NETCLOSE",
    'AT+CIPOPEN=0,"TCP","1.2.3.4",80',
    "AT+CIPCLOSE=0",
    "AT+SERVERSTART=8080,0",
    "AT+SERVERSTOP=0",
    "AT+CSOCKETPN=1,6",
    'AT+CGDCONT=1,"IP","iot.example"',
    "AT+CIPTIMEOUT=5000",
    "AT+CIPSENDMODE=1",
    # more than one command
    "AT+CSQ;+CPIN?",
    "ATE0;V1",
    "ATE0V1",
    "AT+CSQ+CPIN?",
    "AT+CSQ?AT+CIPSEND=0,1",
    "AT+CSQ=?+NETCLOSE",
    "AT+CTCPKA=1,1,9,1ATZ",
    'AT+CDNSGIP="a"+NETCLOSE',
    # unknown commands outside their read and test forms, and case or spaces do not hide
    "AT+NOSUCH",
    "AT+COPS=0",
    "ATH",
    "at+cipsend=0",
    "AT + CIPSEND = 0 , 5",
    "at&f",
]


@pytest.mark.parametrize("line", _REFUSED)
def test_raw_refuses_what_would_break_the_stack_naming_the_command(line: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(line))):
        at.raw(line)


@pytest.mark.parametrize(
    ("line", "pointer"),
    [
        ("ATZ", "ATZ restarts the module's settings; simsock owns them"),
        ("AT+IPR=9600", "baud rate"),
        ("ATV0", "numeric result codes"),
        ("AT+CIPRXGET=1", "rx_mode="),
        ("AT+CIPCCFG", "set_socket_config()"),
        ("AT+CIPCCFG=10,0,0,1,1,0,500", "set_socket_config()"),
        ("AT+CIPTIMEOUT=5000", "set_timeouts()"),
        ("AT+CIPSENDMODE=1", "set_send_mode()"),
        ('AT+CGDCONT=1,"IP","x"', "open_modem(apn=...)"),
        ("AT+CSOCKETPN=1,6", "open_modem(ip_family=...)"),
        ("AT+CIPMODE=1", "open_modem(transparent=...)"),
        ('AT+CIPOPEN=0,"TCP","1.2.3.4",80', "open_connection()"),
        ("AT+SERVERSTART=8080,0", "start_server()"),
        ("AT+NETCLOSE", "the session tracks the network"),
    ],
)
def test_raw_says_why_and_what_to_use_instead(line: str, pointer: str) -> None:
    with pytest.raises(ValueError, match="managed by simsock itself") as info:
        at.raw(line)
    assert pointer in str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        "AT",
        "ATI",
        "ATI0",
        "ATE0",
        "ATV1",
        "ATQ0",
        "AT&D1",
        "AT&V",
        "ATS3?",
        "ATS3=?",
        "AT+CSQ",
        "AT+CPIN?",
        'AT+CPIN="1234"',
        "AT+CEREG?",
        "AT+CEREG=2",
        "AT+CMEE=2",
        "AT+CPSI?",
        "AT+CGMI",
        "AT+CGMM",
        "AT+CGMR",
        "AT+CGSN",
        "AT+IPADDR",
        "AT+CTCPKA=1,2,9,1",
        'AT+CDNSCFG="8.8.8.8","1.1.1.1",0',
        'AT+CDNSGIP="example.com"',
        "AT+CIPACK=0",
        "AT+CIPRXGET=4,1",
        # read and test forms of every command, simsock's own and unknown ones included
        "AT+CGDCONT?",
        "AT+CGDCONT=?",
        "AT+IPR?",
        "AT+IPR=?",
        "AT+CFUN?",
        "AT+CIPTIMEOUT?",
        "AT+CIPSENDMODE?",
        "AT+CIPCCFG?",
        "AT+CIPRXGET?",
        "AT+CIPRXGET=?",
        "AT+CIPSEND=?",
        "AT+CIPMODE?",
        "AT+NETOPEN?",
        "AT+NETCLOSE=?",
        "AT+CIPOPEN?",
        "AT+CIPCLOSE?",
        "AT+SERVERSTART?",
        "AT+CSOCKETPN?",
        "AT+CGATT?",
        "AT+COPS?",
        "AT+CCLK?",
        "AT+NOSUCH=?",
    ],
)
def test_raw_builds_harmless_commands(line: str) -> None:
    command = at.raw(line)
    assert command.wire == line.encode("ascii") + b"\r"


def test_raw_drops_spaces_outside_quotes_so_the_name_is_read_right() -> None:
    command = at.raw('AT +CDNSGIP = "a b"')
    assert command.wire == b'AT+CDNSGIP="a b"\r'
    assert command.name == "+CDNSGIP"
    assert command.timeout_s == at.CDNSGIP_TIMEOUT_S


_OWNED_NAMES = [
    "+NETOPEN",
    "+NETCLOSE",
    "+CIPOPEN",
    "+CIPCLOSE",
    "+CIPSEND",
    "+CIPRXGET",
    "+CIPMODE",
    "+CIPHEAD",
    "+CIPSRIP",
    "+CIPCCFG",
    "+CIPTIMEOUT",
    "+CIPSENDMODE",
    "+SERVERSTART",
    "+SERVERSTOP",
    "+CSOCKETPN",
    "+CGDCONT",
    "+IPR",
    "+CFUN",
]


@given(st.sampled_from(_OWNED_NAMES), st.text(max_size=20))
@example("+CIPRXGET", "=4,1")
@example("+CIPRXGET", " = 2 , 0")
@example("+NETOPEN", " ?")
@example("+NETOPEN", "S?")
@example("+CIPSEND", "=?0,1")
def test_an_owned_command_passes_only_as_a_question(name: str, tail: str) -> None:
    """Whatever follows the name of a command simsock owns, only ``?``/``=?`` get through."""
    try:
        command = at.raw("AT" + name + tail)
    except (ValueError, TypeError):
        return
    if command.name != name:  # the tail made it another command's read or test form
        return
    rest = command.line[2 + len(name) :]
    assert rest in ("?", "=?") or (name == "+CIPRXGET" and re.fullmatch(r"=4,\d+", rest))


@given(st.text(max_size=80), st.integers(min_value=-5, max_value=70000))
def test_no_host_or_apn_smuggles_a_second_command(text: str, port: int) -> None:
    """Whatever the input, a builder gives one line with balanced quotes or refuses."""
    for build in (
        lambda: at.cipopen_tcp(0, text, port),
        lambda: at.cdnsgip(text),
        lambda: at.cgdcont(text),
        lambda: at.raw("AT" + text),
    ):
        try:
            wire = build().wire
        except (ValueError, TypeError):
            continue
        body = wire[:-1]
        assert wire.endswith(b"\r")
        assert all(0x20 <= b < 0x7F for b in body), wire
        assert body.count(b'"') % 2 == 0


def test_error_tables_map_to_oserror() -> None:
    refused = err_to_oserror(1, context="CIPOPEN")
    assert isinstance(refused, ConnectionRefusedError)
    assert isinstance(refused, ModuleError)
    assert refused.errno == errno.ECONNREFUSED
    assert refused.module_code == 1
    timeout = err_to_oserror(10, context="CIPOPEN")
    assert isinstance(timeout, TimeoutError)
    assert timeout.module_code == 10
    dns = err_to_oserror(11, context="CIPOPEN")
    assert isinstance(dns, socket.gaierror)
    down = ip_error_to_oserror("Network not opened")
    assert isinstance(down, CommandError)
    assert down.errno == errno.ENETDOWN
    assert down.module_code == 8
    assert ip_error_code("8") == 8
    assert ip_error_code("no data") == 22
    assert isinstance(ip_error_to_oserror("14"), socket.gaierror)
