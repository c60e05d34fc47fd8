"""The baseline: a bare AT client with none of simsock's layers, on the same line.

What a careful engineer writes in an afternoon with pyserial-asyncio: one
coroutine, one byte buffer, each command written after the previous one's
``OK`` (the ``>`` prompt for ``AT+CIPSEND``), URCs handled where they turn
up. No session, no driver, no StreamReader, no timers. It uses the same
framing options as simsock (``+RECEIVE,<link>,<len>`` after ``RECV FROM:``
in push mode; 1500-byte reads and sends) so that the two differ only in
their layers. The benchmark runs it beside simsock for every case; the points
simsock loses against it are what simsock's layers cost.

It is a measuring instrument, not a library: it trusts the module, has no
recovery, and raises :class:`BaselineError` on anything unexpected.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from types import TracebackType

import serial_asyncio

from .cases import PEER_HOST, Exchanges, Run
from .peer import payload

__all__ = [
    "BaselineClient",
    "BaselineError",
    "baseline_download",
    "baseline_exchanges",
    "baseline_upload",
]

#: What one ``AT+CIPRXGET=2`` asks for and one ``AT+CIPSEND`` carries (bytes): the
#: module's maxima (3.2, 3.3), as simsock uses.
BLOCK_BYTES = 1500
#: Longest wait for any one answer (s).
ANSWER_TIMEOUT_S = 30.0

_READ_HEAD = re.compile(rb"\+CIPRXGET: 2,(\d+),(\d+),(\d+)")
_PUSH_HEAD = re.compile(rb"\+RECEIVE,(\d+),(\d+)")


class BaselineError(RuntimeError):
    """The module answered something the baseline does not expect."""


class BaselineClient:
    """One serial line, one link (0), spoken to directly."""

    def __init__(self, url: str, baudrate: int | None, rx_mode: str) -> None:
        self.url = url
        self.baudrate = baudrate
        self.rx_mode = rx_mode
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        #: Payload pushed by the module (push mode), not yet taken.
        self.pushed = bytearray()
        #: The module said link 0 has data to read (buffer mode).
        self.notified = False
        #: Bytes written and read on the line, and commands written.
        self.bytes_up = self.bytes_down = self.commands = 0

    async def __aenter__(self) -> BaselineClient:
        self._reader, self._writer = await serial_asyncio.open_serial_connection(
            url=self.url, baudrate=self.baudrate or 115200
        )
        await self.command(b"ATE0")
        if b"+NETOPEN: 1" not in b"".join(await self.command(b"AT+NETOPEN?")):
            await self.command(b"AT+NETOPEN")
            await self.until(lambda line: line.startswith(b"+NETOPEN:"))
        if self.rx_mode == "push":
            for line in (b"AT+CIPRXGET=0", b"AT+CIPHEAD=1", b"AT+CIPSRIP=1"):
                await self.command(line)
            await self.command(b"AT+CIPCCFG=10,0,0,1,1,0,500")
        else:
            await self.command(b"AT+CIPRXGET=1")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    # -- the line ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write bytes to the module."""
        assert self._writer is not None
        self.bytes_up += len(data)
        self._writer.write(data)

    async def _fill(self) -> None:
        assert self._reader is not None
        data = await asyncio.wait_for(self._reader.read(65536), ANSWER_TIMEOUT_S)
        if not data:
            raise BaselineError("the line closed")
        self.bytes_down += len(data)
        self._buffer += data

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def line(self) -> bytes:
        """The next line (a ``>`` prompt counts as one); payload after headers is taken here."""
        while True:
            while self._buffer.startswith(b"\r\n"):
                del self._buffer[:2]
            if self._buffer.startswith(b"> "):
                del self._buffer[:2]
                return b">"
            end = self._buffer.find(b"\r\n")
            if end < 0:
                await self._fill()
                continue
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            if push := _PUSH_HEAD.fullmatch(line):
                self.pushed += await self._exactly(int(push.group(2)))
            elif line.startswith(b"+CIPRXGET: 1,"):
                self.notified = True
            return line

    async def until(self, done: object) -> bytes:
        """Lines until ``done(line)`` is true; that line."""
        assert callable(done)
        while True:
            line = await self.line()
            if line == b"ERROR" or line.startswith(b"+CME ERROR"):
                raise BaselineError(f"the module answered {line!r}")
            if done(line):
                return line

    async def command(self, line: bytes) -> list[bytes]:
        """Write ``line``, read up to its ``OK``; the lines before it."""
        self.write(line + b"\r")
        self.commands += 1
        lines: list[bytes] = []
        while (answer := await self.until(lambda _: True)) != b"OK":
            lines.append(answer)
        return lines

    # -- link 0 -----------------------------------------------------------------------------

    async def open(self, port: int) -> None:
        """``AT+CIPOPEN`` link 0 to the peer's ``port``."""
        await self.command(b'AT+CIPOPEN=0,"TCP","%s",%d' % (PEER_HOST.encode(), port))
        answer = await self.until(lambda line: line.startswith(b"+CIPOPEN: 0,"))
        if answer != b"+CIPOPEN: 0,0":
            raise BaselineError(f"open failed: {answer!r}")

    async def close(self) -> None:
        """``AT+CIPCLOSE`` link 0."""
        await self.command(b"AT+CIPCLOSE=0")
        await self.until(lambda line: line.startswith(b"+CIPCLOSE: 0,"))

    async def send(self, data: bytes) -> None:
        """``AT+CIPSEND`` in blocks: the payload after ``>``, the next command after ``OK``."""
        for start in range(0, len(data), BLOCK_BYTES):
            block = data[start : start + BLOCK_BYTES]
            self.write(b"AT+CIPSEND=0,%d\r" % len(block))
            self.commands += 1
            await self.until(lambda line: line == b">")
            self.write(block)
            await self.until(lambda line: line == b"OK")

    async def receive(self, size: int) -> bytes:
        """``size`` bytes of link 0: pushed, or read with ``AT+CIPRXGET=2`` after each ``OK``."""
        if self.rx_mode == "push":
            while len(self.pushed) < size:
                await self.line()
            data = bytes(self.pushed[:size])
            del self.pushed[:size]
            return data
        got = bytearray()
        while len(got) < size:
            if not self.notified:
                await self.until(lambda _: self.notified)
            self.write(b"AT+CIPRXGET=2,0,%d\r" % BLOCK_BYTES)
            self.commands += 1
            head = await self.until(lambda line: line.startswith(b"+CIPRXGET: 2,"))
            match = _READ_HEAD.fullmatch(head)
            if match is None:
                raise BaselineError(f"bad read header {head!r}")
            length, rest = int(match.group(2)), int(match.group(3))
            got += await self._exactly(length)
            await self.until(lambda line: line == b"OK")
            if rest == 0:
                self.notified = False  # the module says so again when more comes
        return bytes(got)


def _run(client: BaselineClient, started: float, cpu: float, size: int, exact: bool) -> Run:
    return Run(
        elapsed_s=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu,
        payload_bytes=size,
        up_bytes=client.bytes_up,
        down_bytes=client.bytes_down,
        commands=client.commands,
        exact=exact,
    )


async def baseline_download(url: str, baud: int | None, rx_mode: str, port: int, size: int) -> Run:
    """Fetch ``size`` bytes from the source server, metered as simsock's download is."""
    async with BaselineClient(url, baud, rx_mode) as client:
        await client.open(port)
        client.bytes_up = client.bytes_down = client.commands = 0
        started, cpu = time.perf_counter(), time.process_time()
        await client.send(f"{size} 7\n".encode())
        data = await client.receive(size)
        run = _run(client, started, cpu, size, data == payload(size, 7))
        await client.close()
    return run


async def baseline_upload(url: str, baud: int | None, rx_mode: str, port: int, size: int) -> Run:
    """Send ``size`` bytes to the sink server, metered to its digest as simsock's upload is."""
    data = payload(size, 7)
    async with BaselineClient(url, baud, rx_mode) as client:
        await client.open(port)
        client.bytes_up = client.bytes_down = client.commands = 0
        started, cpu = time.perf_counter(), time.process_time()
        await client.send(f"{size}\n".encode() + data)
        answer = await client.receive(65)
        exact = answer.strip() == hashlib.sha256(data).hexdigest().encode()
        run = _run(client, started, cpu, size, exact)
        await client.close()
    return run


async def baseline_exchanges(
    url: str, baud: int | None, rx_mode: str, port: int, out_bytes: int, in_bytes: int, count: int
) -> Exchanges:
    """:func:`simsock.bench.cases.exchanges` the bare way: send, then receive the answer."""
    async with BaselineClient(url, baud or 115200, rx_mode) as client:
        await client.open(port)
        exact = True
        times: list[float] = []

        async def one(index: int) -> bool:
            message = payload(out_bytes, index)
            await client.send(message)
            answer = await client.receive(in_bytes)
            return answer == (message if in_bytes == out_bytes else b"\x40\x02" + message[2:4])

        for index in range(3):
            await one(index)
        client.bytes_up = client.bytes_down = client.commands = 0
        for index in range(count):
            start = time.perf_counter()
            exact = await one(index) and exact
            times.append(time.perf_counter() - start)
        result = Exchanges(
            exact,
            times,
            client.bytes_up / count,
            client.bytes_down / count,
            client.commands / count,
        )
        await client.close()
    return result
