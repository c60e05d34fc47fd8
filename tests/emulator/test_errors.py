"""Refusals and failures, each answered as the reference says (sections 3 and 5)."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import pytest

from simsock.emulator import VirtualModem

if TYPE_CHECKING:
    from conftest import AtHost, HostOpener, PeerStarter

pytestmark = pytest.mark.timeout(30)


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def netopen(host: AtHost) -> None:
    await host.command("ATE0")
    assert await host.command("AT+NETOPEN") == ["OK"]
    await host.wait_line(r"\+NETOPEN: 0$")


async def test_network_not_open(host: AtHost) -> None:
    await host.command("ATE0")
    assert await host.command("AT+NETOPEN?") == ["+NETOPEN: 0", "OK"]
    assert await host.command('AT+CIPOPEN=0,"TCP","127.0.0.1",80') == ["+CIPOPEN: 0,2", "ERROR"]
    assert await host.command("AT+CIPSEND=0,5") == ["+CIPERROR: 2", "ERROR"]
    assert await host.command("AT+NETCLOSE") == ["+NETCLOSE: 2", "ERROR"]
    assert await host.command("AT+IPADDR") == ["+IP ERROR: Network not opened", "ERROR"]
    assert await host.command("AT+SERVERSTART=8080,0") == ["+CIPERROR: 2", "ERROR"]
    await netopen(host)
    assert await host.command("AT+NETOPEN") == ["+IP ERROR: Network is already opened", "ERROR"]
    assert await host.command("AT+IPADDR") == ["+IPADDR: 10.64.0.2", "OK"]


async def test_link_in_use_and_invalid_link(host: AtHost, peer: PeerStarter) -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, port = await peer(idle)
    await netopen(host)
    assert await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}') == ["OK"]
    await host.wait_line(r"\+CIPOPEN: 0,0$")
    assert await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}') == [
        "+CIPOPEN: 0,4",
        "ERROR",
    ]
    assert await host.command(f'AT+CIPOPEN=2,"TCP","127.0.0.1",{port}') == [
        "+CIPOPEN: 2,3",  # links 2-9: a wrong parameter (2.1.3)
        "ERROR",
    ]
    assert await host.command(f'AT+CIPOPEN=10,"TCP","127.0.0.1",{port}') == [
        "+IP ERROR: Invalid parameter",  # above 9 (2.1.3)
        "ERROR",
    ]
    assert await host.command(f'AT+CIPOPEN=1,"SCTP","127.0.0.1",{port}') == [
        "+CIPOPEN: 1,3",
        "ERROR",
    ]
    assert await host.command("AT+CIPOPEN=1,TCP,127.0.0.1,80") == ["+CIPOPEN: 1,3", "ERROR"]
    assert await host.command("AT+CIPSEND=2,5") == ["+CIPERROR: 3", "ERROR"]
    assert await host.command("AT+CIPSEND=0,1501") == ["+CIPERROR: 3", "ERROR"]
    assert await host.command("AT+CIPSEND=1,5") == ["+CIPERROR: 4", "ERROR"]
    assert await host.command("AT+CIPCLOSE=1") == ["+CIPCLOSE: 1,4", "ERROR"]
    assert await host.command("AT+CIPCLOSE=3") == ["+CIPCLOSE: 3,3", "ERROR"]
    assert await host.command("AT+CIPACK=1") == ["+IP ERROR: Connection is not created", "ERROR"]
    assert await host.command("AT+CIPACK=0") == ["+CIPACK: 0,0,0", "OK"]
    server.close()


async def test_no_data_and_err_mode_numbers(host: AtHost, peer: PeerStarter) -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, port = await peer(idle)
    await netopen(host)
    assert await host.command("AT+CIPRXGET=2,0") == ["+IP ERROR: Operation not supported", "ERROR"]
    await host.command("AT+CIPRXGET=1")
    await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}')
    await host.wait_line(r"\+CIPOPEN: 0,0$")
    assert await host.command("AT+CIPRXGET=4,0") == ["+CIPRXGET: 4,0,0", "OK"]
    assert await host.command("AT+CIPRXGET=2,0") == ["+IP ERROR: No data", "ERROR"]
    assert await host.command("AT+CIPRXGET=2,5") == ["+IP ERROR: No data", "ERROR"]  # 3.2.2
    assert await host.command("AT+CIPRXGET=2,10") == ["+IP ERROR: Invalid parameter", "ERROR"]
    assert await host.command("AT+CIPRXGET=2,0,0") == ["+IP ERROR: Invalid parameter", "ERROR"]
    assert await host.command("AT+CIPCCFG=,,,0") == ["OK"]  # errMode 0: numbers (5.1)
    assert await host.command("AT+CIPRXGET=2,0") == ["+IP ERROR: 22", "ERROR"]
    assert await host.command("AT+CIPCCFG") == ["OK"]  # bare: the defaults again
    assert await host.command("AT+CIPCCFG?") == ["+CIPCCFG: 10,0,0,1,0,0,500", "OK"]
    server.close()


async def test_connect_failures(host: AtHost) -> None:
    await netopen(host)
    port = closed_port()
    assert await host.command(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{port}') == ["OK"]
    assert await host.line() == "+CIPOPEN: 0,1"  # refused
    assert await host.command('AT+CIPOPEN=0,"TCP","192.0.2.1",80') == ["OK"]
    assert await host.line() == "+CIPOPEN: 0,1"  # not an allowed host: never leaves the machine
    assert await host.command('AT+CIPOPEN=0,"TCP","no.such.name",80') == ["OK"]
    assert await host.line() == "+CIPOPEN: 0,11"  # DNS
    assert await host.command('AT+CIPOPEN=0,"TCP","::1",80') == ["OK"]
    assert await host.line() == "+CIPOPEN: 0,1"  # IPv6 peer on an IPv4 PDP context
    assert await host.command("AT+CIPOPEN?") == ["+CIPOPEN: 0", "+CIPOPEN: 1", "OK"]


async def test_dns(open_host: HostOpener) -> None:
    async with VirtualModem(dns={"example.com": "127.0.0.1", "LocalHost": "127.0.0.1"}) as vm:
        host = await open_host(vm.url)
        await host.command("ATE0")
        assert await host.command('AT+CDNSGIP="example.com"') == ["+CDNSGIP: 0,10", "ERROR"]
        await netopen(host)
        assert await host.command('AT+CDNSGIP="example.com"') == [
            '+CDNSGIP: 1,"example.com","127.0.0.1"',
            "OK",
        ]
        assert await host.command('AT+CDNSGIP="localhost"') == [
            '+CDNSGIP: 1,"localhost","127.0.0.1"',
            "OK",
        ]
        assert await host.command('AT+CDNSGIP="unknown.example"') == ["+CDNSGIP: 0,10", "ERROR"]
        # 3.17's rules: labels start with a letter or digit, at most 63 characters, no '_'.
        for bad in ("-bad.example", "a..b", "under_score.example", "x" * 64 + ".example"):
            assert await host.command(f'AT+CDNSGIP="{bad}"') == ["ERROR"], bad
        assert await host.command("AT+CDNSGIP=example.com") == ["ERROR"]


async def test_unknown_and_malformed_commands(host: AtHost) -> None:
    await host.command("ATE0")
    assert await host.command("AT+NOSUCH") == ["ERROR"]
    assert await host.command("AT+CSQ;+CEREG?") == ["ERROR"]
    assert await host.command('AT+CIPOPEN=0,"TCP') == ["ERROR"]
    assert await host.command("ATO") == ["ERROR"]
    assert await host.command("AT+CIPMODE=2") == ["ERROR"]
    assert await host.command("AT+CIPMODE?") == ["+CIPMODE: 0", "OK"]
    assert await host.command("AT" + "X" * 2000) == ["ERROR"]  # over-long line
    assert await host.command("at+csq") == ["+CSQ: 24,99", "OK"]


async def test_general_commands(host: AtHost) -> None:
    await host.send(b"AT\r\n")  # <CR><LF> is accepted too, and echoed as received
    await host.expect(b"AT\r\n\r\nOK\r\n")
    await host.command("ATE0")
    assert await host.command("ATI") == [
        "Manufacturer: SIMCOM INCORPORATED",
        "Model: SIMCOM_SIM7028",
        "Revision: SIM7028_V1.04_EMU",
        "IMEI: 864000000000001",
        "OK",
    ]
    assert await host.command("AT+CPIN?") == ["+CPIN: READY", "OK"]
    assert await host.command("AT+CEREG?") == ["+CEREG: 0,1", "OK"]
    assert await host.command('AT+CGDCONT=1,"IP","iot.example"') == ["OK"]
    assert (await host.command("AT+CGDCONT?"))[0].startswith('+CGDCONT: 1,"IP","iot.example"')
    assert (await host.command("AT+CPSI?"))[0].startswith("+CPSI: NB-IOT,Online")
    assert await host.command("AT&D1") == ["OK"]
    assert await host.command("AT+CIPTIMEOUT=5000,,8000") == ["OK"]
    assert await host.command("AT+CIPTIMEOUT?") == ["+CIPTIMEOUT: 5000,120000,8000", "OK"]
    assert await host.command("AT+CIPTIMEOUT=100") == ["ERROR"]
    assert await host.command("AT+CIPHEAD=0") == ["OK"]
    assert await host.command("AT+CIPHEAD?") == ["+CIPHEAD: 0", "OK"]
    assert await host.command("AT+CIPHEAD") == ["OK"]
    assert await host.command("AT+CIPHEAD?") == ["+CIPHEAD: 1", "OK"]
    assert await host.command("AT+CIPSRIP=?") == ["+CIPSRIP: (0-1)", "OK"]
    assert await host.command("AT+CIPSENDMODE=1") == ["OK"]
    assert await host.command("AT+CTCPKA=1,5,3,1") == ["OK"]
    assert await host.command("AT+CTCPKA?") == ["+CTCPKA: 1,5,3,1", "OK"]
    assert await host.command("AT+CTCPKA=1,121,3,1") == ["ERROR"]
    assert await host.command('AT+CDNSCFG="1.1.1.1","9.9.9.9"') == ["OK"]
    assert (await host.command("AT+CDNSCFG?"))[0] == (
        "Primary IPv4 DNS:1.1.1.1,Secondary IPv4 DNS:9.9.9.9"
    )
    assert await host.command('AT+CDNSCFG="1.1.1.1",1') == ["ERROR"]  # not an IPv6 address
    assert await host.command("AT+CSOCKETPN?") == ["+CSOCKETPN: 1,1", "OK"]
    assert await host.command("AT+CIPOPEN=?") == ['+CIPOPEN: (0-1),("TCP","UDP")', "OK"]
    assert await host.command("AT+CIPSEND=?") == ["+CIPSEND: (0-1),(1-1500)", "OK"]
    assert await host.command("AT+CIPRXGET=?") == ["+CIPRXGET: (0-4),(0-1),(1-1500)", "OK"]
    assert await host.command("AT+CIPCLOSE=?") == ["+CIPCLOSE: (0-1)", "OK"]
