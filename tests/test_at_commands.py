"""Command builders: exact wire forms, and no input can smuggle a second command."""

from __future__ import annotations

import errno
import socket

import pytest
from hypothesis import given
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
