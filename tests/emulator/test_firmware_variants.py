"""Firmware variants: each shape of FirmwareShapes, byte for byte, on the sans-I/O module."""

from __future__ import annotations

import dataclasses

import pytest

from simsock.emulator import FirmwareShapes, Interpreter, ModuleConfig, VirtualModem

from .script import open_tcp, say, send

A76XX = FirmwareShapes.a76xx()


def module(firmware: FirmwareShapes | None = None, **options: object) -> Interpreter:
    """A module with echo off, on the note's shapes unless ``firmware`` says otherwise."""
    shapes = firmware if firmware is not None else FirmwareShapes()
    return Interpreter(ModuleConfig(echo=False, seed=7, firmware=shapes, **options))  # type: ignore[arg-type]


# --- the ready line and the start-up lines ---------------------------------------------


def test_the_default_boots_as_the_sim7028() -> None:
    m = module()
    m.restart(0.0)
    assert m.data_to_send() == b"\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS Ready\r\n"


def test_an_a76xx_boots_with_atready_and_its_start_up_lines() -> None:
    m = module(A76XX)
    m.restart(0.0, boot_s=2.0)
    assert m.data_to_send() == b""  # booting: silent
    m.handle_timer(2.0)
    assert m.data_to_send() == (
        b"\r\n*ATREADY: 1\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n\r\nPB DONE\r\n"
    )


def test_ready_line_and_start_up_lines_are_chosen_apart() -> None:
    m = module(FirmwareShapes(ready_line="READY", start_up_lines=("Call Ready",)))
    m.restart(0.0)
    assert m.data_to_send() == b"\r\nREADY\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n"


# --- AT+CIPRXGET=2|3 with and without <rest_len> -----------------------------------------


def test_rxget_header_has_rest_len_by_default() -> None:
    m = module()
    open_tcp(m, buffered=True)
    m.received(0, b"0123456789")
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,0\r\n"
    assert say(m, "AT+CIPRXGET=2,0,4") == b"\r\n+CIPRXGET: 2,0,4,6\r\n0123\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=3,0,2") == b"\r\n+CIPRXGET: 3,0,2,4\r\n3435\r\nOK\r\n"


def test_rxget_header_without_rest_len() -> None:
    m = module(FirmwareShapes(rxget_rest_len=False))
    open_tcp(m, buffered=True)
    m.received(0, b"0123456789")
    m.data_to_send()
    assert say(m, "AT+CIPRXGET=2,0,4") == b"\r\n+CIPRXGET: 2,0,4\r\n0123\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=3,0,2") == b"\r\n+CIPRXGET: 3,0,2\r\n3435\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=4,0") == b"\r\n+CIPRXGET: 4,0,4\r\n\r\nOK\r\n"  # unchanged
    assert say(m, "AT+CIPRXGET=2,0") == b"\r\n+CIPRXGET: 2,0,4\r\n6789\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=2,0") == b"\r\n+IP ERROR: No data\r\n\r\nERROR\r\n"


# --- +CIPSEND: two or three fields -------------------------------------------------------


def test_three_field_send_results_by_default() -> None:
    m = module()
    open_tcp(m)
    send(m, 0, b"abc")
    m.sent(0, 3, 3)
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,3,3\r\n"


def test_two_field_send_result_only_for_a_full_send() -> None:
    m = module(FirmwareShapes(cipsend_fields=2))
    open_tcp(m)
    send(m, 0, b"abc")
    m.sent(0, 3, 3)
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,3\r\n"
    send(m, 0, b"abcd")
    m.sent(0, 4, 2)  # cut short: the three-field form
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,4,2\r\n"
    m.faults.arm_send_buffer_full(0)
    assert say(m, "AT+CIPSEND=0,2") == b"\r\n> "
    m.receive_data(b"xy", 0.0)
    assert m.data_to_send() == b"\r\nOK\r\n\r\n+CIPSEND: 0,2,0\r\n"  # buffer full: failed
    send(m, 0, b"zz")
    m.peer_closed(0)  # never left: failed
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,2,-1\r\n\r\n+IPCLOSE: 0,1\r\n"


def test_two_field_send_result_when_a_close_flushes_the_send() -> None:
    m = module(FirmwareShapes(cipsend_fields=2))
    open_tcp(m)
    send(m, 0, b"abc")
    # Closing flushes what was written: the send is reported first, as sent.
    assert say(m, "AT+CIPCLOSE=0") == b"\r\n+CIPSEND: 0,3\r\n\r\nOK\r\n\r\n+CIPCLOSE: 0,0\r\n"


# --- +CIPRXGET: 1 with or without the link ----------------------------------------------


def test_data_notice_names_the_link_by_default() -> None:
    m = module()
    open_tcp(m, 1, buffered=True)
    m.received(1, b"x")
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,1\r\n"


def test_data_notice_without_the_link() -> None:
    m = module(FirmwareShapes(rxget_urc_names_link=False))
    open_tcp(m, 1, buffered=True)
    m.received(1, b"x")
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1\r\n"
    m.received(1, b"y")  # not empty before: no notice
    assert m.data_to_send() == b""


def test_a_urc_storm_uses_the_firmwares_data_notice() -> None:
    m = module(FirmwareShapes(rxget_urc_names_link=False))
    m.urc_storm(200)
    lines = [line for line in m.data_to_send().split(b"\r\n") if line.startswith(b"+CIPRXGET")]
    assert lines
    assert set(lines) == {b"+CIPRXGET: 1"}


# --- the sender line of pushed data -------------------------------------------------------


@pytest.mark.parametrize("prefix", ["RECV FROM:", "RCV FROM:", "+RECV FROM:"])
def test_sender_line_prefix(prefix: str) -> None:
    m = module(FirmwareShapes(sender_prefix=prefix))
    open_tcp(m)
    m.received(0, b"hello")
    assert m.data_to_send() == f"\r\n{prefix}127.0.0.1:80\r\n+IPD5\r\nhello".encode()


def test_sender_line_of_a_udp_datagram_names_its_sender() -> None:
    m = module(A76XX)
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    assert say(m, 'AT+CIPOPEN=1,"UDP",,,5000') == b""  # the result comes before OK
    m.connected(1, 5000)
    assert m.data_to_send() == b"\r\n+CIPOPEN: 1,0\r\n\r\nOK\r\n"
    m.received(1, b"HELLO CLIENT..", ("10.1.2.3", 5254))
    assert m.data_to_send() == b"\r\nRCV FROM:10.1.2.3:5254\r\n+IPD14\r\nHELLO CLIENT.."


# --- the preset, validation, and the VirtualModem option -----------------------------------


def test_the_a76xx_preset() -> None:
    assert dataclasses.asdict(A76XX) == {
        "ready_line": "*ATREADY: 1",
        "start_up_lines": ("SMS DONE", "PB DONE"),
        "rxget_rest_len": False,
        "cipsend_fields": 2,
        "rxget_urc_names_link": False,
        "sender_prefix": "RCV FROM:",
    }
    assert FirmwareShapes() == ModuleConfig().firmware  # the note's shapes by default


def test_the_a76xx_preset_on_the_wire() -> None:
    m = module(A76XX)
    open_tcp(m, buffered=True)
    m.received(0, b"abcdef")
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1\r\n"
    assert say(m, "AT+CIPRXGET=2,0,4") == b"\r\n+CIPRXGET: 2,0,4\r\nabcd\r\nOK\r\n"
    send(m, 0, b"hi")
    m.sent(0, 2, 2)
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,2\r\n"


@pytest.mark.parametrize(
    "changes",
    [
        {"cipsend_fields": 4},
        {"ready_line": ""},
        {"ready_line": "RDY\r\n"},
        {"start_up_lines": ("SMS DONE\n",)},
        {"sender_prefix": ""},
    ],
)
def test_shapes_that_cannot_be_printed_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        FirmwareShapes(**changes)  # type: ignore[arg-type]


def test_virtual_modem_takes_the_firmware() -> None:
    vm = VirtualModem(firmware=A76XX)
    assert vm.config.firmware is A76XX
    assert vm.interpreter.config.firmware is A76XX
    assert VirtualModem().config.firmware == FirmwareShapes()
