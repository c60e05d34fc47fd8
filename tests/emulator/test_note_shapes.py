"""Response shapes as the note prints them (2.1.3, 2.1.15, 2.1.19-20, 3.2.2, 3.3.3), exactly."""

from __future__ import annotations

import pytest

from simsock.emulator import Interpreter, Listen, ModuleConfig, StopListening

NO_DATA = b"\r\n+IP ERROR: No data\r\n\r\nERROR\r\n"
INVALID = b"\r\n+IP ERROR: Invalid parameter\r\n\r\nERROR\r\n"


def module(**options: object) -> Interpreter:
    return Interpreter(ModuleConfig(echo=False, seed=3, **options))  # type: ignore[arg-type]


def say(m: Interpreter, line: str, now: float = 0.0) -> bytes:
    m.receive_data(line.encode("latin-1") + b"\r", now)
    return m.data_to_send()


def netopen(m: Interpreter) -> None:
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"


# --- 2.1.3 AT+CIPOPEN link numbers ---------------------------------------------------------


@pytest.mark.parametrize("link", range(2, 10))
def test_cipopen_on_links_2_to_9_is_a_wrong_parameter(link: int) -> None:
    m = module()
    netopen(m)
    assert say(m, f'AT+CIPOPEN={link},"TCP","127.0.0.1",80') == (
        f"\r\n+CIPOPEN: {link},3\r\n\r\nERROR\r\n".encode()
    )
    assert say(m, f'AT+CIPOPEN={link},"UDP",,,5000') == (
        f"\r\n+CIPOPEN: {link},3\r\n\r\nERROR\r\n".encode()
    )
    assert m.actions() == []


def test_cipopen_above_link_9_is_an_invalid_parameter() -> None:
    m = module()
    netopen(m)
    assert say(m, 'AT+CIPOPEN=10,"TCP","127.0.0.1",80') == INVALID
    assert say(m, 'AT+CIPOPEN=99,"UDP",,,5000') == INVALID
    assert say(m, "AT+CIPCCFG=,,,0") == b"\r\nOK\r\n"  # errMode 0: the number (5.1)
    assert say(m, 'AT+CIPOPEN=10,"TCP","127.0.0.1",80') == b"\r\n+IP ERROR: 12\r\n\r\nERROR\r\n"


def test_cipopen_link_range_comes_before_the_network_check() -> None:
    m = module()  # network not open
    assert say(m, 'AT+CIPOPEN=5,"TCP","127.0.0.1",80') == b"\r\n+CIPOPEN: 5,3\r\n\r\nERROR\r\n"
    assert say(m, 'AT+CIPOPEN=1,"TCP","127.0.0.1",80') == b"\r\n+CIPOPEN: 1,2\r\n\r\nERROR\r\n"


# --- 3.2.2 AT+CIPRXGET with no data ---------------------------------------------------------


def test_ciprxget_on_an_empty_buffer_is_no_data() -> None:
    m = module()
    netopen(m)
    assert say(m, "AT+CIPRXGET=1") == b"\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=2,1") == NO_DATA  # link 1 was never opened
    assert say(m, "AT+CIPRXGET=3,0,10") == NO_DATA


@pytest.mark.parametrize("link", range(2, 10))
def test_ciprxget_on_links_2_to_9_is_no_data(link: int) -> None:
    # 3.2.2: "AT+CIPRXGET=2,2 // the connection of link_num=2 is not established"
    # answered "+IP ERROR: No data".
    m = module()
    netopen(m)
    assert say(m, "AT+CIPRXGET=1") == b"\r\nOK\r\n"
    assert say(m, f"AT+CIPRXGET=2,{link}") == NO_DATA
    assert say(m, f"AT+CIPRXGET=3,{link},5") == NO_DATA
    assert say(m, f"AT+CIPRXGET=4,{link}") == f"\r\n+CIPRXGET: 4,{link},0\r\n\r\nOK\r\n".encode()


def test_ciprxget_above_link_9_and_bad_lengths_are_invalid() -> None:
    m = module()
    netopen(m)
    assert say(m, "AT+CIPRXGET=1") == b"\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=2,10") == INVALID
    assert say(m, "AT+CIPRXGET=2,2,1501") == INVALID
    assert say(m, "AT+CIPRXGET=3,2,751") == INVALID


def test_ciprxget_reads_on_links_2_to_9_outside_buffer_mode_are_not_supported() -> None:
    m = module()
    netopen(m)
    assert say(m, "AT+CIPRXGET=2,2") == (b"\r\n+IP ERROR: Operation not supported\r\n\r\nERROR\r\n")


# --- 2.1.19 AT+CTCPKA, 2.1.20 AT+CDNSCFG ------------------------------------------------------


def test_ctcpka_test_command_is_only_ok() -> None:
    m = module()
    assert say(m, "AT+CTCPKA=?") == b"\r\nOK\r\n"
    assert say(m, "AT+CTCPKA=1,2,5,1") == b"\r\nOK\r\n"
    assert say(m, "AT+CTCPKA?") == b"\r\n+CTCPKA: 1,2,5,1\r\n\r\nOK\r\n"


def test_cdnscfg_test_command() -> None:
    m = module()
    assert say(m, "AT+CDNSCFG=?") == (
        b'\r\n+CDNSCFG: ("Primary DNS"),("Secondary DNS"),type\r\n\r\nOK\r\n'
    )


def test_cdnscfg_read_names_each_family() -> None:
    m = module()
    assert say(m, "AT+CDNSCFG?") == (
        b"\r\nPrimary IPv4 DNS:8.8.8.8,Secondary IPv4 DNS:8.8.4.4\r\n"
        b"\r\nPrimary IPv6 DNS:2001:4860:4860::8888,Secondary IPv6 DNS:2001:4860:4860::8844\r\n"
        b"\r\nOK\r\n"
    )
    assert say(m, 'AT+CDNSCFG="183.230.126.224","183.230.126.225",0') == b"\r\nOK\r\n"
    assert say(m, 'AT+CDNSCFG="2409:8060:20EA:101::1","2409:8060:20EA:201::1",1') == (b"\r\nOK\r\n")
    assert say(m, "AT+CDNSCFG?") == (  # the note's example (2.1.20)
        b"\r\nPrimary IPv4 DNS:183.230.126.224,Secondary IPv4 DNS:183.230.126.225\r\n"
        b"\r\nPrimary IPv6 DNS:2409:8060:20EA:101::1,Secondary IPv6 DNS:2409:8060:20EA:201::1\r\n"
        b"\r\nOK\r\n"
    )


# --- 3.3.3 AT+CIPOPEN? for UDP links -----------------------------------------------------------


def test_cipopen_status_of_a_transparent_udp_link_shows_its_remote() -> None:
    m = module()
    assert say(m, "AT+CIPMODE=1") == b"\r\nOK\r\n"
    netopen(m)
    assert say(m, 'AT+CIPOPEN=0,"UDP","117.131.85.139",5254,5000') == b""
    m.connected(0, 5000)
    assert m.data_to_send() == b"\r\nCONNECT 115200\r\n"
    m.receive_data(b"+++", 2.0)  # a second of silence each side: command mode (section 2)
    m.handle_timer(3.0)
    assert m.data_to_send() == b"\r\nOK\r\n"
    assert say(m, "AT+CIPOPEN?", 3.0) == (
        b'\r\n+CIPOPEN: 0,"UDP","117.131.85.139",5254,-1\r\n\r\n+CIPOPEN: 1\r\n\r\nOK\r\n'
    )


def test_cipopen_status_of_a_udp_link_without_a_remote() -> None:
    # Opened ",,,<local_port>": no remote, so an empty address and port 0; the
    # local port is no field of this line (see _cipopen_status).
    m = module()
    netopen(m)
    assert say(m, 'AT+CIPOPEN=1,"UDP",,,5000') == b""
    m.connected(1, 5000)
    assert m.data_to_send() == b"\r\n+CIPOPEN: 1,0\r\n\r\nOK\r\n"
    assert say(m, "AT+CIPOPEN?") == (
        b'\r\n+CIPOPEN: 0\r\n\r\n+CIPOPEN: 1,"UDP","",0,-1\r\n\r\nOK\r\n'
    )


def test_cipopen_status_of_a_tcp_link_is_unchanged() -> None:
    m = module()
    netopen(m)
    assert say(m, 'AT+CIPOPEN=1,"TCP","183.230.174.137",6031') == b"\r\nOK\r\n"
    m.connected(1, 40000)
    assert m.data_to_send() == b"\r\n+CIPOPEN: 1,0\r\n"
    assert say(m, "AT+CIPOPEN?") == (  # the note's example (2.1.3)
        b'\r\n+CIPOPEN: 0\r\n\r\n+CIPOPEN: 1,"TCP","183.230.174.137",6031,-1\r\n\r\nOK\r\n'
    )


# --- 2.1.15 AT+SERVERSTOP: result then OK, or OK then result -------------------------------------


def start_server(m: Interpreter, now: float) -> None:
    m.receive_data(b"AT+SERVERSTART=8080,0\r", now)
    if m.get_timer() is not None:
        m.handle_timer(m.get_timer() or now)
    assert m.actions() == [Listen(0, 8080, 3, 4)]
    m.listening(0, 8080)
    m.handle_timer(m.get_timer() or now)  # the module looks at input again
    assert m.data_to_send() == b"\r\nOK\r\n"


def test_serverstop_that_closes_at_once_reports_before_ok() -> None:
    m = module()
    netopen(m)
    start_server(m, 0.0)
    assert say(m, "AT+SERVERSTOP=0") == b"\r\n+SERVERSTOP: 0,0\r\n\r\nOK\r\n"
    assert m.actions() == [StopListening(0)]
    assert m.get_timer() is None


def test_serverstop_that_takes_time_says_ok_first() -> None:
    m = module(latency_s=0.25)
    m.receive_data(b"AT+NETOPEN\r", 0.0)
    m.handle_timer(0.25)
    assert m.data_to_send() == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    start_server(m, 1.0)
    m.receive_data(b"AT+SERVERSTOP=0\r", 2.0)
    assert m.get_timer() == 2.25
    m.handle_timer(2.25)
    assert m.data_to_send() == b"\r\nOK\r\n"
    assert m.actions() == [StopListening(0)]
    assert m.get_timer() == 2.5  # closing takes the module's latency again
    m.handle_timer(2.4)
    assert m.data_to_send() == b""
    m.handle_timer(2.5)
    assert m.data_to_send() == b"\r\n+SERVERSTOP: 0,0\r\n"
    assert m.get_timer() is None


def test_the_late_serverstop_goes_before_the_next_commands_answer() -> None:
    m = module(latency_s=0.25)
    m.receive_data(b"AT+NETOPEN\r", 0.0)
    m.handle_timer(0.25)
    m.data_to_send()
    start_server(m, 1.0)
    m.receive_data(b"AT+SERVERSTOP=0\rAT+SERVERSTART?\r", 2.0)  # written back to back
    m.handle_timer(2.25)
    assert m.data_to_send() == b"\r\nOK\r\n"
    m.handle_timer(2.5)
    assert m.data_to_send() == b"\r\n+SERVERSTOP: 0,0\r\n\r\nOK\r\n"  # nothing listens


def test_a_restart_forgets_a_pending_serverstop_result() -> None:
    m = module(latency_s=0.25)
    m.receive_data(b"AT+NETOPEN\r", 0.0)
    m.handle_timer(0.25)
    m.data_to_send()
    start_server(m, 1.0)
    m.receive_data(b"AT+SERVERSTOP=0\r", 2.0)
    m.handle_timer(2.25)
    assert m.data_to_send() == b"\r\nOK\r\n"
    m.restart(2.3)
    m.handle_timer(3.0)
    assert b"SERVERSTOP" not in m.data_to_send()
    assert m.get_timer() is None
