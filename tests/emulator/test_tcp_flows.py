"""The reference's TCP client flow (section 6) replayed byte for byte through a real pty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from simsock.emulator import VirtualModem

if TYPE_CHECKING:
    from conftest import AtHost, HostOpener, PeerStarter

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def hello_server(peer: PeerStarter) -> AsyncIterator[int]:
    """Stands in for 117.131.85.139:5253: answers HELLO with ``data from server``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(5) == b"HELLO"
        writer.write(b"data from server")
        await writer.drain()
        await reader.read()  # until the module closes
        writer.close()

    server, port = await peer(handle)
    async with server:
        yield port


async def replay_buffer_flow(host: AtHost, port: int, echo: bool) -> None:
    async def step(command: bytes, answer: bytes) -> None:
        await host.send(command)
        await host.expect((command if echo else b"") + answer)

    await step(b"AT+NETOPEN\r", b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n")
    await step(b"AT+CIPRXGET=1\r", b"\r\nOK\r\n")
    await step(f'AT+CIPOPEN=1,"TCP","127.0.0.1",{port}\r'.encode(), b"\r\nOK\r\n")
    await host.expect(b"\r\n+CIPOPEN: 1,0\r\n")
    await step(b"AT+CIPSEND=1,5\r", b"\r\n> ")
    await host.send(b"HELLO")  # the payload is not echoed
    await host.expect(b"\r\nOK\r\n\r\n+CIPSEND: 1,5,5\r\n")
    await host.expect(b"\r\n+CIPRXGET: 1,1\r\n")
    await step(b"AT+CIPRXGET=4,1\r", b"\r\n+CIPRXGET: 4,1,16\r\n\r\nOK\r\n")
    await step(b"AT+CIPRXGET=2,1,5\r", b"\r\n+CIPRXGET: 2,1,5,11\r\ndata \r\nOK\r\n")
    await step(b"AT+CIPRXGET=3,1,5\r", b"\r\n+CIPRXGET: 3,1,5,6\r\n66726F6D20\r\nOK\r\n")
    await step(b"AT+CIPRXGET=2,1\r", b"\r\n+CIPRXGET: 2,1,6,0\r\nserver\r\nOK\r\n")
    await step(b"AT+CIPCLOSE=1\r", b"\r\nOK\r\n\r\n+CIPCLOSE: 1,0\r\n")
    await host.expect_silence()


async def test_tcp_client_buffer_access_flow_echo_off(host: AtHost, hello_server: int) -> None:
    await host.send(b"ATE0\r")
    await host.expect(b"ATE0\r\r\nOK\r\n")  # echo is still on for ATE0 itself
    await replay_buffer_flow(host, hello_server, echo=False)


async def test_tcp_client_buffer_access_flow_echo_on(host: AtHost, hello_server: int) -> None:
    await replay_buffer_flow(host, hello_server, echo=True)


async def test_tcp_client_flow_over_tcp_port(hello_server: int, open_host: HostOpener) -> None:
    async with VirtualModem(transport="tcp", echo=False) as vm:
        assert vm.url.startswith("socket://127.0.0.1:")
        host = await open_host(vm.url)
        await replay_buffer_flow(host, hello_server, echo=False)


async def test_direct_push_tcp(host: AtHost, hello_server: int) -> None:
    await host.command("ATE0")
    await host.command("AT+NETOPEN")
    await host.wait_line(r"\+NETOPEN: 0")
    await host.command(f'AT+CIPOPEN=0,"TCP","localhost",{hello_server}')
    await host.wait_line(r"\+CIPOPEN: 0,0")
    await host.send_payload(0, b"HELLO")
    pushed = f"\r\nRECV FROM:127.0.0.1:{hello_server}\r\n+IPD16\r\ndata from server"
    await host.expect(pushed.encode())
    # HeaderType 1 names the link; CIPSRIP=0 drops the address line.
    assert await host.command("AT+CIPCCFG=,,,,1") == ["OK"]
    assert await host.command("AT+CIPSRIP=0") == ["OK"]
    assert await host.command("AT+CIPCCFG?") == ["+CIPCCFG: 10,0,0,1,1,0,500", "OK"]
    await host.command("AT+CIPCLOSE=0")
    await host.wait_line(r"\+CIPCLOSE: 0,0")
