"""TLS on the host over module links, through asyncio's own TLS machinery (loop.start_tls)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl

import pytest

import simsock

from .conftest import Certificates, HttpServer, body_for, free_port


async def _http_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


async def test_https_request_with_open_connection(
    modem: simsock.Modem, https_server: HttpServer, certs: Certificates
) -> None:
    reader, writer = await modem.open_connection("localhost", https_server.port, ssl=certs.client)
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object is not None
    assert ssl_object.getpeercert()["subjectAltName"][0] == ("DNS", "localhost")
    body = await _http_get(reader, writer, "/bytes/150000")
    assert len(body) == 150_000
    assert hashlib.sha256(body).digest() == hashlib.sha256(body_for(150_000)).digest()
    writer.close()
    await writer.wait_closed()


async def test_verification_failure_frees_the_link(
    modem: simsock.Modem, https_server: HttpServer, certs: Certificates
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await modem.open_connection(
            "127.0.0.1", https_server.port, ssl=certs.client, server_hostname="example.org"
        )
    await asyncio.sleep(0.2)
    assert not modem.engine.links


async def test_writer_start_tls_upgrades_a_plain_link(
    modem: simsock.Modem, tls_echo_server: tuple[str, int], certs: Certificates
) -> None:
    reader, writer = await modem.open_connection(*tls_echo_server)
    await writer.start_tls(certs.client, server_hostname="localhost")
    assert writer.get_extra_info("ssl_object") is not None
    payload = os.urandom(120_000)
    writer.write(payload)
    received = await reader.readexactly(len(payload))
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    writer.close()
    await writer.wait_closed()


async def test_create_connection_with_ssl_gives_the_protocol_plaintext(
    modem: simsock.Modem, tls_echo_server: tuple[str, int], certs: Certificates
) -> None:
    done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    payload = os.urandom(10_000)

    class Collect(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = bytearray()

        def data_received(self, data: bytes) -> None:
            self.data += data
            if len(self.data) >= len(payload):
                done.set_result(bytes(self.data))

    transport, _ = await modem.create_connection(
        Collect, "localhost", tls_echo_server[1], ssl=certs.client
    )
    transport.write(payload)
    assert await asyncio.wait_for(done, 20) == payload
    assert transport.get_extra_info("peername") == ("127.0.0.1", tls_echo_server[1])
    transport.close()


async def test_module_side_tls_server_reached_by_a_host_tls_client(
    modem: simsock.Modem, certs: Certificates
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert writer.get_extra_info("ssl_object") is not None
        data = await reader.readexactly(64_000)
        writer.write(hashlib.sha256(data).digest() + data[::-1])
        await writer.drain()
        writer.close()

    port = free_port()
    server = await modem.start_server(handler, port, ssl=certs.server)
    async with server:
        # a host TLS client, verifying the module's certificate for "localhost"
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=certs.client, server_hostname="localhost"
        )
        payload = os.urandom(64_000)
        writer.write(payload)
        digest = await asyncio.wait_for(reader.readexactly(32), 20)
        reversed_back = await reader.readexactly(len(payload))
        assert digest == hashlib.sha256(payload).digest()
        assert reversed_back == payload[::-1]
        writer.close()
        await writer.wait_closed()
