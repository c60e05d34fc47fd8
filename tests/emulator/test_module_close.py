"""Close reasons injected: the module closes a link itself, ``+IPCLOSE: <link>,<reason>`` (4.2)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from simsock.emulator import Close, Interpreter, ModuleConfig, Send, VirtualModem
from simsock.emulator.links import LinkState

from .script import open_tcp, say

if TYPE_CHECKING:
    from conftest import HostOpener, PeerStarter

pytestmark = pytest.mark.timeout(30)


def module() -> Interpreter:
    return Interpreter(ModuleConfig(echo=False, seed=5))


@pytest.mark.parametrize("reason", [0, 1, 2])
def test_each_reason_is_reported_and_the_link_is_freed(reason: int) -> None:
    m = module()
    open_tcp(m, 1, buffered=False)
    assert m.module_close(1, reason) is True
    assert m.data_to_send() == f"\r\n+IPCLOSE: 1,{reason}\r\n".encode()
    assert m.actions() == [Close(1)]
    assert m.links[1].state is LinkState.FREE
    assert say(m, "AT+CIPOPEN?") == b"\r\n+CIPOPEN: 0\r\n\r\n+CIPOPEN: 1\r\n\r\nOK\r\n"
    assert say(m, "AT+CIPSEND=1,3") == b"\r\n+CIPERROR: 4\r\n\r\nERROR\r\n"
    m.received(1, b"late")  # the socket is gone: nothing more arrives
    assert m.data_to_send() == b""


@pytest.mark.parametrize("reason", [0, 1, 2])
def test_data_that_came_before_the_close_stays_readable(reason: int) -> None:
    m = module()
    open_tcp(m, 0, buffered=True)
    m.received(0, b"before the close")
    assert m.data_to_send() == b"\r\n+CIPRXGET: 1,0\r\n"
    assert m.module_close(0, reason) is True
    assert m.data_to_send() == f"\r\n+IPCLOSE: 0,{reason}\r\n".encode()
    assert say(m, "AT+CIPRXGET=4,0") == b"\r\n+CIPRXGET: 4,0,16\r\n\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=2,0,6") == b"\r\n+CIPRXGET: 2,0,6,10\r\nbefore\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=2,0") == b"\r\n+CIPRXGET: 2,0,10,0\r\n the close\r\nOK\r\n"
    assert say(m, "AT+CIPRXGET=2,0") == b"\r\n+IP ERROR: No data\r\n\r\nERROR\r\n"


def test_sends_not_yet_reported_fail_before_the_close() -> None:
    m = module()
    open_tcp(m, 0, buffered=False)
    assert say(m, "AT+CIPSEND=0,3") == b"\r\n> "
    m.receive_data(b"abc", 0.0)
    assert m.data_to_send() == b"\r\nOK\r\n"
    assert m.actions() == [Send(0, b"abc")]
    assert m.module_close(0, 2) is True  # a send timeout (4.2)
    assert m.data_to_send() == b"\r\n+CIPSEND: 0,3,-1\r\n\r\n+IPCLOSE: 0,2\r\n"
    m.sent(0, 3, 3)  # the shell's late report finds nothing to confirm
    assert m.data_to_send() == b""


def test_a_udp_link_can_be_closed_too() -> None:
    m = module()
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    say(m, 'AT+CIPOPEN=1,"UDP",,,5000')
    m.connected(1, 5000)
    assert m.data_to_send() == b"\r\n+CIPOPEN: 1,0\r\n\r\nOK\r\n"
    m.actions()
    assert m.module_close(1, 0) is True
    assert m.data_to_send() == b"\r\n+IPCLOSE: 1,0\r\n"
    assert m.actions() == [Close(1)]


def test_only_an_open_link_is_closed() -> None:
    m = module()
    assert m.module_close(0, 1) is False  # free
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    assert say(m, 'AT+CIPOPEN=0,"TCP","127.0.0.1",80') == b"\r\nOK\r\n"
    m.actions()
    assert m.module_close(0, 1) is False  # still connecting
    assert m.data_to_send() == b""
    assert m.actions() == []


@pytest.mark.parametrize("reason", [-1, 3, 10])
def test_a_reason_outside_the_note_is_refused(reason: int) -> None:
    m = module()
    open_tcp(m, 0, buffered=False)
    with pytest.raises(ValueError, match="close reason"):
        m.module_close(0, reason)
    assert m.links[0].is_open
    assert m.data_to_send() == b""


def test_a_transparent_link_ends_with_closed() -> None:
    m = module()
    assert say(m, "AT+CIPMODE=1") == b"\r\nOK\r\n"
    assert say(m, "AT+NETOPEN") == b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n"
    assert say(m, 'AT+CIPOPEN=0,"TCP","127.0.0.1",80') == b""
    m.connected(0, 40000)
    assert m.data_to_send() == b"\r\nCONNECT 115200\r\n"
    m.actions()
    assert m.module_close(0, 2) is True
    assert m.data_to_send() == b"\r\nCLOSED\r\n"  # back in command mode (4.2)
    assert m.actions() == [Close(0)]
    assert say(m, "AT") == b"\r\nOK\r\n"


async def test_virtual_modem_close_link_closes_the_real_socket(
    open_host: HostOpener, peer: PeerStarter
) -> None:
    ended: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        ended.set_result(await reader.read())  # b"": the module closed its side
        writer.close()

    server, port = await peer(handle)
    async with VirtualModem() as vm:
        host = await open_host(vm.url)
        await host.command("ATE0")
        assert await host.command("AT+NETOPEN") == ["OK"]
        await host.wait_line(r"\+NETOPEN: 0$")
        assert await host.command("AT+CIPRXGET=1") == ["OK"]
        assert await host.command(f'AT+CIPOPEN=1,"TCP","127.0.0.1",{port}') == ["OK"]
        await host.wait_line(r"\+CIPOPEN: 1,0$")
        await host.expect(b"\r\n+CIPRXGET: 1,1\r\n")
        assert vm.close_link(1) is True  # reason 2 by default
        await host.expect(b"\r\n+IPCLOSE: 1,2\r\n")
        assert await asyncio.wait_for(ended, 5) == b""
        assert await host.rxget(1) == (b"hello", 0)  # what came first is still there
        assert vm.close_link(1, 0) is False
        assert vm.faults_applied["close_link"] == 1
        await host.expect_silence()
    server.close()
