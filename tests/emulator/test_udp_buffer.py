"""UDP in buffer access mode keeps datagram boundaries (3.5 on a UDP link, 3.3.2)."""

from __future__ import annotations

import random

from simsock.emulator import Interpreter, ModuleConfig

#: 50 distinct sizes in 1..1400, both ends included, in a shuffled order.
SIZES = [1, 1400, *random.Random(50).sample(range(2, 1400), 48)]
random.Random(51).shuffle(SIZES)
NO_DATA = b"\r\n+IP ERROR: No data\r\n\r\nERROR\r\n"


def datagram(index: int, size: int) -> bytes:
    """Content that tells datagrams apart at every byte."""
    return bytes((index * 7 + offset) % 251 for offset in range(size))


def sender(index: int) -> tuple[str, int]:
    return (f"10.0.{index % 3}.{index}", 5000 + index)


def module(**options: object) -> Interpreter:
    return Interpreter(ModuleConfig(echo=False, seed=9, **options))  # type: ignore[arg-type]


def say(m: Interpreter, line: str) -> bytes:
    m.receive_data(line.encode("latin-1") + b"\r", 0.0)
    return m.data_to_send()


def open_udp(m: Interpreter, link: int = 1) -> None:
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    assert say(m, "AT+CIPRXGET=1") == b"\r\nOK\r\n"
    assert say(m, f'AT+CIPOPEN={link},"UDP",,,5000') == b""
    m.connected(link, 5000)
    assert m.data_to_send() == f"\r\n+CIPOPEN: {link},0\r\n\r\nOK\r\n".encode()
    m.actions()


def read(m: Interpreter, link: int, length: int, rest: int, data: bytes, mode: int = 2) -> None:
    """``AT+CIPRXGET=<mode>,<link>,<length>`` answers exactly ``data``, ``rest`` left."""
    body = data if mode == 2 else data.hex().upper().encode()
    expected = f"\r\n+CIPRXGET: {mode},{link},{len(data)},{rest}\r\n".encode() + body
    assert say(m, f"AT+CIPRXGET={mode},{link},{length}") == expected + b"\r\nOK\r\n"


def test_fifty_datagrams_are_read_back_one_each() -> None:
    assert len(set(SIZES)) == 50
    assert (min(SIZES), max(SIZES)) == (1, 1400)
    m = module()
    open_udp(m)
    grams = [datagram(i, size) for i, size in enumerate(SIZES)]
    for index, data in enumerate(grams):
        m.received(1, data, sender(index))
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,1\r\n"  # once: empty to not empty
    assert m.actions() == []  # UDP is never paused
    rest = sum(SIZES)
    assert say(m, "AT+CIPRXGET=4,1") == f"\r\n+CIPRXGET: 4,1,{rest}\r\n\r\nOK\r\n".encode()
    for data in grams:
        rest -= len(data)
        read(m, 1, 1500, rest, data)  # never two datagrams, never part of one
    assert rest == 0
    assert say(m, "AT+CIPRXGET=2,1,1500") == NO_DATA
    assert say(m, "AT+CIPRXGET=4,1") == b"\r\n+CIPRXGET: 4,1,0\r\n\r\nOK\r\n"


def test_reads_and_arrivals_interleaved() -> None:
    m = module()
    open_udp(m)
    grams = [datagram(i, size) for i, size in enumerate(SIZES)]
    waiting: list[bytes] = []
    for index, data in enumerate(grams):
        m.received(1, data, sender(index))
        notice = m.data_to_send()
        assert notice == (b"\r\n+CIPRXGET: 1,1\r\n" if not waiting else b"")
        waiting.append(data)
        if index % 3 == 2:  # read two of every three as they come
            for _ in range(2):
                first = waiting.pop(0)
                read(m, 1, 1500, sum(map(len, waiting)), first)
    while waiting:
        first = waiting.pop(0)
        read(m, 1, 1500, sum(map(len, waiting)), first)
    assert say(m, "AT+CIPRXGET=2,1") == NO_DATA


def test_a_datagram_longer_than_the_read_comes_in_pieces_never_joined() -> None:
    # The note reads one 16-byte datagram as 5, 5 and 6 bytes (3.3.2): the rest
    # of a datagram stays first in line; the next datagram never joins it.
    m = module()
    open_udp(m)
    m.received(1, b"data from server", ("117.131.85.139", 5254))
    m.received(1, b"NEXT", ("117.131.85.139", 5254))
    m.data_to_send()
    assert say(m, "AT+CIPRXGET=4,1") == b"\r\n+CIPRXGET: 4,1,20\r\n\r\nOK\r\n"
    read(m, 1, 5, 15, b"data ")
    read(m, 1, 5, 10, b"from ", mode=3)
    read(m, 1, 1500, 4, b"server")  # the rest of the first: not "serverNEXT"
    read(m, 1, 1500, 0, b"NEXT")
    big = datagram(1, 1400)
    m.received(1, big, ("117.131.85.139", 5254))
    m.received(1, b"z", ("117.131.85.139", 5254))
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,1\r\n"  # it was empty again
    read(m, 1, 750, 651, big[:750], mode=3)  # hex reads: 750 at most
    read(m, 1, 750, 1, big[750:], mode=3)
    read(m, 1, 750, 0, b"z", mode=3)


def test_a_datagram_that_does_not_fit_is_dropped_whole() -> None:
    m = module(rx_buffer_bytes=3000)
    open_udp(m)
    for size in (1400, 1400, 300, 200):  # 300 would overfill the buffer; 200 fits exactly
        m.received(1, datagram(size, size), ("10.0.0.1", 7))
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,1\r\n"
    assert m.actions() == []
    assert say(m, "AT+CIPRXGET=4,1") == b"\r\n+CIPRXGET: 4,1,3000\r\n\r\nOK\r\n"
    read(m, 1, 1500, 1600, datagram(1400, 1400))
    read(m, 1, 1500, 200, datagram(1400, 1400))
    read(m, 1, 1500, 0, datagram(200, 200))


def test_switching_to_push_mode_pushes_each_datagram_with_its_sender() -> None:
    m = module()
    open_udp(m)
    m.received(1, b"first", ("10.0.0.1", 7000))
    m.received(1, b"second", ("10.0.0.2", 7001))
    m.data_to_send()
    read(m, 1, 2, 9, b"fi")
    assert say(m, "AT+CIPRXGET=0") == (
        b"\r\nRECV FROM:10.0.0.1:7000\r\n+IPD3\r\nrst"
        b"\r\nRECV FROM:10.0.0.2:7001\r\n+IPD6\r\nsecond"
        b"\r\nOK\r\n"
    )
