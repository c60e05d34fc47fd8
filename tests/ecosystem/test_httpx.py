"""httpx over the module: plain HTTP and HTTPS (verified), keep-alive reuse, errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl

import httpx
import pytest

import simsock
from simsock.ecosystem import ModemTransport

from .conftest import Certificates, HttpServer, body_for, cipopens, free_port


async def test_https_get_verified_and_kept_alive(
    modem: simsock.Modem, https_server: HttpServer, certs: Certificates
) -> None:
    before = cipopens(modem)
    transport = ModemTransport(modem, verify=certs.client)
    async with httpx.AsyncClient(transport=transport, base_url=https_server.url) as client:
        sizes = [100_000, 1, 5000, 20_000]
        for size in sizes:
            response = await client.get(f"/bytes/{size}")
            assert response.status_code == 200
            assert response.http_version == "HTTP/1.1"
            assert len(response.content) == size
            assert (
                hashlib.sha256(response.content).digest() == hashlib.sha256(body_for(size)).digest()
            )
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    # several requests, one connection: one AT+CIPOPEN, one TCP connection at the server
    assert cipopens(modem) - before == 1
    assert len(https_server.connections) == 1
    assert https_server.requests == [f"/bytes/{size}" for size in sizes]


async def test_plain_http_post_and_get(modem: simsock.Modem, http_server: HttpServer) -> None:
    before = cipopens(modem)
    payload = os.urandom(60_000)
    async with httpx.AsyncClient(
        transport=ModemTransport(modem), base_url=http_server.url
    ) as client:
        response = await client.post("/upload", content=payload)
        assert response.text == hashlib.sha256(payload).hexdigest()
        response = await client.get("/greeting")
        assert response.text == "hello /greeting"
    assert cipopens(modem) - before == 1
    assert len(http_server.connections) == 1


async def test_two_concurrent_requests_use_both_links(
    modem: simsock.Modem, http_server: HttpServer
) -> None:
    transport = ModemTransport(modem)
    async with httpx.AsyncClient(transport=transport, base_url=http_server.url) as client:
        first, second = await asyncio.gather(client.get("/bytes/30000"), client.get("/bytes/30001"))
        assert first.content == body_for(30000)
        assert second.content == body_for(30001)
        assert len(transport.pool.connections) == 2


async def test_wrong_certificate_is_refused(modem: simsock.Modem, https_server: HttpServer) -> None:
    # the default trust store does not know trustme's CA
    async with httpx.AsyncClient(transport=ModemTransport(modem)) as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(https_server.url)
    # httpx.ConnectError from httpcore.ConnectError from the ssl module's verdict
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in chain), chain
    assert not modem.engine.links  # the link was closed


async def test_connection_refused_is_connect_error(modem: simsock.Modem) -> None:
    async with httpx.AsyncClient(transport=ModemTransport(modem)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/")
