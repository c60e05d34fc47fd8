"""Fixtures of the virtual SIM7028 tests: a real serial client (pyserial-asyncio), real peers.

Deliberately independent of ``simsock.at`` / ``simsock.modem``: the
emulator is checked against the reference's bytes, not against the library.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import serial_asyncio

from simsock.emulator import VirtualModem

#: Every wait in these tests is bounded by this (s).
STEP_TIMEOUT_S = 5.0


class AtHost:
    """A host on the virtual module's serial line: send bytes, expect bytes, read lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        #: Everything received, for tests that look at the whole conversation.
        self.transcript = bytearray()

    @classmethod
    async def open(cls, url: str, baudrate: int = 115200) -> AtHost:
        reader, writer = await serial_asyncio.open_serial_connection(url=url, baudrate=baudrate)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        await asyncio.sleep(0)

    async def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.writer.write(data)
        await self.writer.drain()

    async def _read_more(self) -> None:
        chunk = await self.reader.read(65536)
        if not chunk:
            raise EOFError("serial line closed")
        self.buffer += chunk
        self.transcript += chunk

    async def _fill(self, size: int, wait_s: float = STEP_TIMEOUT_S) -> None:
        async with asyncio.timeout(wait_s):
            while len(self.buffer) < size:
                await self._read_more()

    async def read_exact(self, size: int, wait_s: float = STEP_TIMEOUT_S) -> bytes:
        try:
            await self._fill(size, wait_s)
        except TimeoutError:
            raise AssertionError(f"wanted {size} bytes, got {bytes(self.buffer)!r}") from None
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def expect(self, expected: bytes, wait_s: float = STEP_TIMEOUT_S) -> None:
        """The next bytes from the module are exactly ``expected``."""
        with contextlib.suppress(TimeoutError):
            await self._fill(len(expected), wait_s)
        got = bytes(self.buffer[: len(expected)])
        assert got == expected, f"expected {expected!r}, got {bytes(self.buffer)!r}"
        del self.buffer[: len(expected)]

    async def expect_silence(self, seconds: float = 0.1) -> None:
        """Nothing more arrives for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await self._fill(len(self.buffer) + 1, seconds)
        assert not self.buffer, f"unexpected bytes {bytes(self.buffer)!r}"

    async def line(self, wait_s: float = STEP_TIMEOUT_S) -> str:
        """The next non-empty line (framing ``<CR><LF>text<CR><LF>``)."""
        while True:
            async with asyncio.timeout(wait_s):
                while b"\r\n" not in self.buffer:
                    await self._read_more()
            end = self.buffer.index(b"\r\n")
            text = self.buffer[:end].decode("latin-1")
            del self.buffer[: end + 2]
            if text:
                return text

    async def wait_line(self, pattern: str, wait_s: float = STEP_TIMEOUT_S) -> re.Match[str]:
        """Skip lines until one matches ``pattern`` (a regex matched at the start)."""
        async with asyncio.timeout(wait_s):
            while True:
                match = re.match(pattern, await self.line())
                if match:
                    return match

    async def command(self, line: str, wait_s: float = STEP_TIMEOUT_S) -> list[str]:
        """Send ``line`` + CR and return its lines up to and including the final result."""
        await self.send(line + "\r")
        lines: list[str] = []
        while True:
            text = await self.line(wait_s)
            lines.append(text)
            if text in ("OK", "ERROR") or text.startswith("+CME ERROR"):
                return lines

    async def send_payload(self, link: int, data: bytes) -> None:
        """``AT+CIPSEND=<link>,<n>``, the payload, then ``OK`` and ``+CIPSEND: <link>,n,n``."""
        await self.send(f"AT+CIPSEND={link},{len(data)}\r")
        await self.wait_prompt()
        await self.send(data)
        await self.wait_line(rf"\+CIPSEND: {link},{len(data)},{len(data)}$")

    async def wait_prompt(self) -> None:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while b"\r\n> " not in self.buffer:
                await self._read_more()
        del self.buffer[: self.buffer.index(b"\r\n> ") + 4]

    async def rxget(self, link: int, size: int = 1500) -> tuple[bytes, int] | None:
        """``AT+CIPRXGET=2``: (data, rest), or ``None`` for ``+IP ERROR: No data``."""
        await self.send(f"AT+CIPRXGET=2,{link},{size}\r")
        while True:
            text = await self.line()
            if text == "+IP ERROR: No data":
                assert await self.line() == "ERROR"
                return None
            match = re.fullmatch(rf"\+CIPRXGET: 2,{link},(\d+),(\d+)", text)
            if match:
                break
        data = await self.read_exact(int(match[1]))
        await self.wait_line("OK$")
        return data, int(match[2])


async def start_peer(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Any]],
    host: str = "127.0.0.1",
) -> tuple[asyncio.Server, int]:
    """A real TCP server on ``host``: (server, port)."""
    server = await asyncio.start_server(handler, host, 0)
    return server, server.sockets[0].getsockname()[1]


PeerStarter = Callable[..., Awaitable[tuple[asyncio.Server, int]]]
HostOpener = Callable[..., Awaitable[AtHost]]


@pytest.fixture
def peer() -> PeerStarter:
    """``await peer(handler)`` starts a real TCP server on 127.0.0.1: (server, port)."""
    return start_peer


@pytest.fixture
async def open_host() -> AsyncIterator[HostOpener]:
    """``await open_host(url)`` opens the serial line; closed after the test."""
    hosts: list[AtHost] = []

    async def opener(url: str, baudrate: int = 115200) -> AtHost:
        client = await AtHost.open(url, baudrate)
        hosts.append(client)
        return client

    yield opener
    for client in hosts:
        await client.close()


@pytest.fixture
async def vm() -> AsyncIterator[VirtualModem]:
    async with VirtualModem() as modem:
        yield modem


@pytest.fixture
async def host(vm: VirtualModem, open_host: HostOpener) -> AtHost:
    return await open_host(vm.url)
