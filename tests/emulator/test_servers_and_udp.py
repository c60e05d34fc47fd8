"""Phase 2: module servers, UDP links and IPv6 peers, bridged to real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import pytest

from simsock.emulator import VirtualModem

if TYPE_CHECKING:
    from conftest import AtHost, HostOpener

pytestmark = pytest.mark.timeout(30)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def has_ipv6_loopback() -> bool:
    try:
        free_port(host="::1")
    except OSError:
        return False
    return True


async def step(host: AtHost, command: bytes, answer: bytes) -> None:
    await host.send(command)
    await host.expect(answer)


async def netopen(host: AtHost) -> None:
    await step(host, b"ATE0\r", b"ATE0\r\r\nOK\r\n")
    await step(host, b"AT+NETOPEN\r", b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n")


class UdpPeer(asyncio.DatagramProtocol):
    """Stands in for 117.131.85.139:5254: answers the datagram HELLO with ``HELLO CLIENT..``."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append(data)
        if data == b"HELLO":
            assert self.transport is not None
            self.transport.sendto(b"HELLO CLIENT..", addr)


async def test_udp_client_direct_push_flow(host: AtHost) -> None:
    loop = asyncio.get_running_loop()
    transport, udp_peer = await loop.create_datagram_endpoint(UdpPeer, local_addr=("127.0.0.1", 0))
    peer_port = transport.get_extra_info("sockname")[1]
    local_port = free_port(socket.SOCK_DGRAM)
    await netopen(host)
    await step(
        host,
        f'AT+CIPOPEN=1,"UDP",,,{local_port}\r'.encode(),
        b"\r\n+CIPOPEN: 1,0\r\n\r\nOK\r\n",
    )
    await step(host, f'AT+CIPSEND=1,,"127.0.0.1",{peer_port}\r'.encode(), b"\r\n> ")
    await step(host, b"HELLOSERVER\x1a", b"\r\nOK\r\n\r\n+CIPSEND: 1,11,11\r\n")
    await step(host, f'AT+CIPSEND=1,5,"127.0.0.1",{peer_port}\r'.encode(), b"\r\n> ")
    await step(host, b"HELLO", b"\r\nOK\r\n\r\n+CIPSEND: 1,5,5\r\n")
    await host.expect(f"\r\nRECV FROM:127.0.0.1:{peer_port}\r\n+IPD14\r\nHELLO CLIENT..".encode())
    status = '\r\n+CIPOPEN: 0\r\n\r\n+CIPOPEN: 1,"UDP","",0,-1\r\n\r\nOK\r\n'  # no remote
    await step(host, b"AT+CIPOPEN?\r", status.encode())
    await step(host, b"AT+CIPCLOSE=1\r", b"\r\n+CIPCLOSE: 1,0\r\n\r\nOK\r\n")
    await host.expect_silence()
    assert udp_peer.received == [b"HELLOSERVER", b"HELLO"]
    transport.close()


async def test_udp_buffer_mode_and_bind_failure(vm: VirtualModem, host: AtHost) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    taken = transport.get_extra_info("sockname")[1]
    await netopen(host)
    await host.command("AT+CIPRXGET=1")
    # The port is in use: the bind fails, reported before ERROR (3.3).
    assert await host.command(f'AT+CIPOPEN=0,"UDP",,,{taken}') == ["+CIPOPEN: 0,6", "ERROR"]
    assert await host.command('AT+CIPOPEN=0,"UDP","127.0.0.1",5000,0') == ["+CIPOPEN: 0,3", "ERROR"]
    assert await host.command('AT+CIPOPEN=0,"UDP",,,0') == ["+CIPOPEN: 0,0", "OK"]
    assert (await host.command("AT+CIPOPEN?"))[0] == '+CIPOPEN: 0,"UDP","",0,-1'
    local_port = vm.interpreter.links[0].local_port  # the port the bridge bound
    assert local_port > 0
    transport.sendto(b"datagram one", ("127.0.0.1", local_port))
    await host.wait_line(r"\+CIPRXGET: 1,0$")
    assert await host.rxget(0) == (b"datagram one", 0)
    assert await host.command("AT+CIPSEND=0,5") == ["+CIPERROR: 3", "ERROR"]  # no destination
    transport.close()


async def test_tcp_server_flow(host: AtHost) -> None:
    port = free_port()
    await netopen(host)
    await step(host, f"AT+SERVERSTART={port},0\r".encode(), b"\r\nOK\r\n")
    await step(host, b"AT+SERVERSTART?\r", f"\r\n+SERVERSTART: 0,{port}\r\n\r\nOK\r\n".encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client_port = writer.get_extra_info("sockname")[1]
    await host.expect(f"\r\n+CLIENT: 0,0,127.0.0.1:{client_port}\r\n".encode())
    status = f'\r\n+CIPOPEN: 0,"TCP","127.0.0.1",{client_port},0\r\n\r\n+CIPOPEN: 1\r\n\r\nOK\r\n'
    await step(host, b"AT+CIPOPEN?\r", status.encode())
    await step(host, b"AT+CIPSEND=0,5\r", b"\r\n> ")
    await step(host, b"HELLO", b"\r\nOK\r\n\r\n+CIPSEND: 0,5,5\r\n")
    assert await reader.readexactly(5) == b"HELLO"
    await step(host, b"AT+SERVERSTOP=0\r", b"\r\n+SERVERSTOP: 0,9\r\n\r\nERROR\r\n")  # client open
    await step(host, b"AT+CIPCLOSE=0\r", b"\r\nOK\r\n\r\n+CIPCLOSE: 0,0\r\n")
    assert await reader.read() == b""
    await step(host, b"AT+SERVERSTOP=0\r", b"\r\n+SERVERSTOP: 0,0\r\n\r\nOK\r\n")
    await step(host, b"AT+NETCLOSE\r", b"\r\nOK\r\n\r\n+NETCLOSE: 0\r\n")
    await host.expect_silence()
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_server_accepts_only_while_a_link_is_free(host: AtHost) -> None:
    await netopen(host)
    await host.command("AT+CIPRXGET=1")
    assert await host.command("AT+SERVERSTART=0,1") == ["OK"]  # port 0: any free port
    port = int((await host.command("AT+SERVERSTART?"))[0].split(",")[1])
    assert await host.command("AT+SERVERSTART=0,1") == ["+CIPERROR: 7", "ERROR"]
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    ports = [writer.get_extra_info("sockname")[1] for _, writer in clients]
    first = await host.wait_line(r"\+CLIENT: (\d),1,127\.0\.0\.1:(\d+)$")
    second = await host.wait_line(r"\+CLIENT: (\d),1,127\.0\.0\.1:(\d+)$")
    assert {first[1], second[1]} == {"0", "1"}
    assert {int(first[2]), int(second[2])} == set(ports[:2])
    await host.expect_silence(0.2)  # the third client waits: no link is free
    links = {int(first[2]): int(first[1]), int(second[2]): int(second[1])}
    # Data from a client reaches its link; its close is +IPCLOSE.
    clients[0][1].write(b"from client")
    link = links[ports[0]]
    await host.wait_line(rf"\+CIPRXGET: 1,{link}$")
    assert await host.rxget(link) == (b"from client", 0)
    clients[0][1].close()
    await host.wait_line(rf"\+IPCLOSE: {link},1$")
    third = await host.wait_line(r"\+CLIENT: (\d),1,127\.0\.0\.1:(\d+)$")
    assert (int(third[1]), int(third[2])) == (link, ports[2])
    for _, writer in clients[1:]:
        writer.close()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_peers(open_host: HostOpener) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(4))
        await reader.read()

    server = await asyncio.start_server(echo, "::1", 0)
    port = server.sockets[0].getsockname()[1]
    async with VirtualModem(echo=False) as vm:
        host = await open_host(vm.url)
        assert await host.command("AT+CSOCKETPN=1,6") == ["OK"]
        await host.command("AT+NETOPEN")
        await host.wait_line(r"\+NETOPEN: 0$")
        assert await host.command("AT+CSOCKETPN=1,1") == ["ERROR"]  # not while open
        assert await host.command("AT+IPADDR") == ["+IPADDR: 2001:db8:64::2", "OK"]
        await host.command(f'AT+CIPOPEN=0,"TCP","::1",{port}')
        await host.wait_line(r"\+CIPOPEN: 0,0$")
        await host.send_payload(0, b"ping")
        await host.expect(f"\r\nRECV FROM:::1:{port}\r\n+IPD4\r\nping".encode())
        # A server of an IPv6 context listens on ::1.
        assert await host.command("AT+SERVERSTART=0,0") == ["OK"]
        server_port = int((await host.command("AT+SERVERSTART?"))[0].split(",")[1])
        _, writer = await asyncio.open_connection("::1", server_port)
        client_port = writer.get_extra_info("sockname")[1]
        await host.wait_line(rf"\+CLIENT: 1,0,::1:{client_port}$")
        writer.close()
    server.close()
