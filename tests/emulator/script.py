"""Driving a bare sans-I/O ``Interpreter`` line by line: shared by the emulator tests."""

from __future__ import annotations

from simsock.emulator import Interpreter, Send


def say(m: Interpreter, line: str, now: float = 0.0) -> bytes:
    """Send one command line; what the module answers at once."""
    m.receive_data(line.encode("latin-1") + b"\r", now)
    return m.data_to_send()


def open_tcp(m: Interpreter, link: int = 0, *, buffered: bool = False) -> None:
    """Network up, optionally buffer mode, and a TCP link connected; output drained."""
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    if buffered:
        assert say(m, "AT+CIPRXGET=1") == b"\r\nOK\r\n"
    assert say(m, f'AT+CIPOPEN={link},"TCP","127.0.0.1",80') == b"\r\nOK\r\n"
    m.connected(link, 40000)
    assert m.data_to_send() == f"\r\n+CIPOPEN: {link},0\r\n".encode()
    m.actions()


def send(m: Interpreter, link: int, data: bytes) -> None:
    """``AT+CIPSEND=<link>,<n>`` and the payload: the prompt and ``OK``, a Send action."""
    assert say(m, f"AT+CIPSEND={link},{len(data)}") == b"\r\n> "
    m.receive_data(data, 0.0)
    assert m.data_to_send() == b"\r\nOK\r\n"
    assert m.actions() == [Send(link, data)]
