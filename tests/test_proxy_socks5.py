"""The SOCKS5 wire format (RFC 1928) of ``simsock proxy``: parsing, building, reply codes."""

from __future__ import annotations

import errno
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simsock.proxy import socks5
from simsock.proxy.socks5 import AddressType, Command, Method, Reply, Socks5Error


def test_greeting_waits_for_its_methods_then_parses() -> None:
    data = b"\x05\x02\x00\x02rest"
    for end in range(4):
        assert socks5.parse_greeting(data[:end]) is None
    greeting, used = socks5.parse_greeting(data) or pytest.fail("no greeting")
    assert greeting.methods == (0x00, 0x02)
    assert used == 4
    assert socks5.choose_method(greeting) is Method.NO_AUTHENTICATION


def test_only_no_authentication_is_served() -> None:
    greeting, _ = socks5.parse_greeting(b"\x05\x01\x02") or pytest.fail("no greeting")
    assert socks5.choose_method(greeting) is Method.NO_ACCEPTABLE
    assert socks5.build_method_selection(Method.NO_ACCEPTABLE) == b"\x05\xff"


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"\x04\x01\x00", "not SOCKS version 5"), (b"\x05\x00", "no authentication method")],
)
def test_bad_greetings_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(Socks5Error, match=message):
        socks5.parse_greeting(data)


@pytest.mark.parametrize(
    ("wire", "kind", "host", "port"),
    [
        (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90", AddressType.IPV4, "127.0.0.1", 8080),
        (b"\x05\x01\x00\x03\x09localhost\x00\x50", AddressType.DOMAIN, "localhost", 80),
        (b"\x05\x01\x00\x04" + bytes(15) + b"\x01\x01\xbb", AddressType.IPV6, "::1", 443),
    ],
)
def test_connect_requests_of_each_address_type(
    wire: bytes, kind: AddressType, host: str, port: int
) -> None:
    for end in range(len(wire)):
        assert socks5.parse_request(wire[:end]) is None
    request, used = socks5.parse_request(wire + b"early data") or pytest.fail("no request")
    assert (request.command, request.address_type, request.host, request.port) == (
        Command.CONNECT,
        kind,
        host,
        port,
    )
    assert used == len(wire)


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"\x05\x09\x00\x01", Reply.COMMAND_NOT_SUPPORTED),
        (b"\x05\x01\x00\x05", Reply.ADDRESS_TYPE_NOT_SUPPORTED),
        (b"\x05\x01\x01\x01", Reply.GENERAL_FAILURE),
        (b"\x05\x01\x00\x03\x00\x00\x50", Reply.HOST_UNREACHABLE),
        # a name that would carry an AT command (or a quote) onto the wire
        (b'\x05\x01\x00\x03\x0ba"\r\nAT+CRES\x00\x50', Reply.HOST_UNREACHABLE),
        (b"\x05\x01\x00\x03\x03a b\x00\x50", Reply.HOST_UNREACHABLE),
    ],
)
def test_bad_requests_carry_the_reply_to_send(wire: bytes, reply: Reply) -> None:
    with pytest.raises(Socks5Error) as raised:
        socks5.parse_request(wire)
    assert raised.value.reply is reply


def test_replies_and_udp_headers_are_built_as_the_rfc_shows() -> None:
    assert socks5.build_reply(Reply.SUCCEEDED, "10.0.0.2", 1234) == (
        b"\x05\x00\x00\x01\x0a\x00\x00\x02\x04\xd2"
    )
    assert socks5.build_reply(Reply.GENERAL_FAILURE) == b"\x05\x01\x00\x01" + bytes(6)
    packet = socks5.build_udp_datagram("::1", 53, b"query")
    assert packet == b"\x00\x00\x00\x04" + bytes(15) + b"\x01\x00\x35query"
    parsed = socks5.parse_udp_datagram(packet)
    assert (parsed.fragment, parsed.host, parsed.port, parsed.data) == (0, "::1", 53, b"query")


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"\x00\x00", "no header"), (b"\x01\x00\x00\x01", "RSV"), (b"\x00\x00\x00\x01\x7f", "cut")],
)
def test_bad_udp_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(Socks5Error, match=message):
        socks5.parse_udp_datagram(data)


@pytest.mark.parametrize(
    ("exc", "reply"),
    [
        (socket.gaierror(socket.EAI_NONAME, "no such name"), Reply.HOST_UNREACHABLE),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Reply.CONNECTION_REFUSED),
        (TimeoutError(), Reply.TTL_EXPIRED),
        (OSError(errno.ENETDOWN, "down"), Reply.NETWORK_UNREACHABLE),
        (OSError(errno.EMFILE, "both links in use"), Reply.GENERAL_FAILURE),
        (ValueError("bad name"), Reply.GENERAL_FAILURE),
    ],
)
def test_errors_map_to_reply_codes(exc: BaseException, reply: Reply) -> None:
    assert socks5.reply_for_error(exc) is reply


hosts = st.one_of(
    st.ip_addresses().map(str),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1).filter(
        lambda name: len(name) <= 255 and ":" not in name and not name.replace(".", "").isdigit()
    ),
)


@given(host=hosts, port=st.integers(0, 0xFFFF), split=st.integers(0, 300))
def test_any_request_parses_the_same_however_it_is_split(host: str, port: int, split: int) -> None:
    wire = b"\x05\x01\x00" + socks5.encode_address(host, port)
    head = wire[: min(split, len(wire) - 1)]
    assert socks5.parse_request(head) is None
    request, used = socks5.parse_request(wire) or pytest.fail("no request")
    assert used == len(wire)
    assert request.port == port
    assert socks5.encode_address(request.host, request.port) == wire[3:]
