"""aiohttp over the module: ``ClientSession(connector=ModemConnector(modem))``, and a server.

Every test counts what went through the module (``AT+CIPOPEN``, ``AT+CDNSGIP``)
against what the real server on 127.0.0.1 saw.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import ssl

import aiohttp
import pytest
from aiohttp import web

import simsock
from simsock.ecosystem.aiohttp_connector import MODULE_LINKS, ModemConnector, ModemResolver

from .conftest import Certificates, HttpServer, body_for, cipopens, free_port


def sent(modem: simsock.Modem, prefix: str) -> int:
    """How many commands starting with ``prefix`` the library sent."""
    trace = modem.engine.stats.trace
    assert trace is not None
    return sum(1 for way, line in trace if way == "->" and line.startswith(prefix))


def opened_links(modem: simsock.Modem) -> list[int]:
    """The link numbers of the library's AT+CIPOPENs, in order."""
    trace = modem.engine.stats.trace
    assert trace is not None
    return [
        int(line.split("=", 1)[1].split(",", 1)[0])
        for way, line in trace
        if way == "->" and re.match(r"AT\+CIPOPEN=\d", line)
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def links_closed(modem: simsock.Modem) -> None:
    """Wait (bounded) until the module has no link open."""
    async with asyncio.timeout(5):
        while modem.driver.links:
            await asyncio.sleep(0.02)


async def test_get_bodies_over_one_kept_alive_link(
    modem: simsock.Modem, http_server: HttpServer
) -> None:
    before, dns_before = cipopens(modem), sent(modem, "AT+CDNSGIP")
    sizes = [1, 5000, 100_000, 20_000, 0]
    async with aiohttp.ClientSession(
        connector=ModemConnector(modem), base_url=http_server.url
    ) as session:
        for size in sizes:
            async with session.get(f"/bytes/{size}") as response:
                assert response.status == 200
                body = await response.read()
            assert len(body) == size
            assert sha(body) == sha(body_for(size))
    # five requests, one AT+CIPOPEN, one TCP connection at the server; the
    # name "localhost" was resolved by the module, once (aiohttp's DNS cache)
    assert cipopens(modem) - before == 1
    assert len(http_server.connections) == 1
    assert http_server.requests == [f"/bytes/{size}" for size in sizes]
    assert sent(modem, "AT+CDNSGIP") - dns_before == 1
    await links_closed(modem)


async def test_https_verified_on_the_host_and_kept_alive(
    modem: simsock.Modem, https_server: HttpServer, certs: Certificates
) -> None:
    before = cipopens(modem)
    sizes = [100_000, 1, 30_000]
    async with aiohttp.ClientSession(
        connector=ModemConnector(modem, ssl=certs.client), base_url=https_server.url
    ) as session:
        for size in sizes:
            async with session.get(f"/bytes/{size}") as response:
                if size == 100_000:  # a small body is read whole, and the connection released
                    assert response.connection is not None
                    transport = response.connection.transport
                    assert transport is not None
                    ssl_object = transport.get_extra_info("ssl_object")
                    assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
                    peer = ssl_object.getpeercert()
                    assert ("DNS", "localhost") in peer["subjectAltName"]
                body = await response.read()
            assert len(body) == size
            assert sha(body) == sha(body_for(size))
    assert cipopens(modem) - before == 1
    assert len(https_server.connections) == 1


async def test_wrong_ca_is_refused(modem: simsock.Modem, https_server: HttpServer) -> None:
    # the default trust store does not know trustme's CA
    async with aiohttp.ClientSession(connector=ModemConnector(modem)) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await session.get(https_server.url)
    assert isinstance(info.value.certificate_error, ssl.SSLCertVerificationError)
    assert cipopens(modem) == 1  # the handshake ran over a module link
    await links_closed(modem)


async def test_ssl_false_skips_verification_only_when_asked(
    modem: simsock.Modem, https_server: HttpServer
) -> None:
    connector = ModemConnector(modem, ssl=False)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{https_server.url}/bytes/2000") as response,
    ):
        assert await response.read() == body_for(2000)
    assert cipopens(modem) == 1


async def test_certificate_fingerprint_is_checked(
    modem: simsock.Modem, https_server: HttpServer
) -> None:
    # the server's certificate, fetched from the host side
    pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", https_server.port))
    der = ssl.PEM_cert_to_DER_cert(pem)
    right = aiohttp.Fingerprint(hashlib.sha256(der).digest())
    wrong = aiohttp.Fingerprint(hashlib.sha256(der + b"x").digest())
    async with aiohttp.ClientSession(connector=ModemConnector(modem, ssl=right)) as session:
        async with session.get(f"{https_server.url}/bytes/10") as response:
            assert await response.read() == body_for(10)
        with pytest.raises(aiohttp.ServerFingerprintMismatch):
            await session.get(https_server.url, ssl=wrong)
    await links_closed(modem)


async def test_post_upload_checked_at_the_server(
    modem: simsock.Modem, http_server: HttpServer, https_server: HttpServer, certs: Certificates
) -> None:
    payload = os.urandom(200_000)
    before = cipopens(modem)
    async with aiohttp.ClientSession(connector=ModemConnector(modem, ssl=certs.client)) as session:
        for server in (http_server, https_server):
            async with session.post(f"{server.url}/upload", data=payload) as response:
                assert response.status == 200
                # the server answers with the SHA-256 of the body it read
                assert await response.text() == sha(payload)
            assert server.requests == ["/upload"]
            assert len(server.connections) == 1
    assert cipopens(modem) - before == 2


async def test_two_hosts_in_parallel_within_the_limit(
    modem: simsock.Modem, http_server: HttpServer, https_server: HttpServer, certs: Certificates
) -> None:
    """Two hosts at once take both links; a third host then fits by closing an idle
    link (aiohttp's limit counts only connections in use, not idle ones)."""
    connector = ModemConnector(modem, ssl=certs.client)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> None:
            async with session.get(url) as response:
                body = await response.read()
            size = int(url.rsplit("/", 1)[1])
            assert len(body) == size
            assert sha(body) == sha(body_for(size))

        await asyncio.gather(
            fetch(f"{http_server.url}/bytes/40000"), fetch(f"{https_server.url}/bytes/40001")
        )
        assert cipopens(modem) == 2
        assert len(modem.driver.links) == MODULE_LINKS  # both kept alive, idle in the pool
        # a third host (the same server under another name: another pool key)
        third = http_server.url.replace("localhost", "127.0.0.1")
        async with asyncio.timeout(5):  # not after the idle links' keep-alive expiry (15 s)
            await fetch(f"{third}/bytes/777")
        assert cipopens(modem) == 3
        # more requests than links, to both hosts: they wait for a link, none fails
        await asyncio.gather(
            *(
                fetch(f"{server.url}/bytes/{20_000 + i}")
                for i in range(3)
                for server in (http_server, https_server)
            )
        )
        assert len(modem.driver.links) <= MODULE_LINKS
    # every connection the servers saw was a module link
    assert len(http_server.connections) + len(https_server.connections) == cipopens(modem)


async def test_limit_one_keeps_one_link(modem: simsock.Modem, http_server: HttpServer) -> None:
    async with aiohttp.ClientSession(connector=ModemConnector(modem, limit=1)) as session:
        first = session.get(f"{http_server.url}/bytes/30000")
        second = session.get(f"{http_server.url.replace('localhost', '127.0.0.1')}/bytes/30001")
        async with asyncio.timeout(5):  # not after the idle link's keep-alive expiry (15 s)
            responses = await asyncio.gather(first, second)
        for response in responses:
            size = int(response.url.path.rsplit("/", 1)[1])
            assert await response.read() == body_for(size)
            response.release()
    # the second host took the link over after the first was done with it: the
    # module never had the other link open (it would have been link 1)
    assert opened_links(modem) == [0, 0]
    assert len(http_server.connections) == 2


async def test_limits_above_the_module_links_are_refused(modem: simsock.Modem) -> None:
    with pytest.raises(ValueError, match=f"has {MODULE_LINKS} links"):
        ModemConnector(modem, limit=3)
    with pytest.raises(ValueError, match=f"has {MODULE_LINKS} links"):
        ModemConnector(modem, limit=0)  # aiohttp's "no limit"
    with pytest.raises(ValueError, match="limit_per_host"):
        ModemConnector(modem, limit=1, limit_per_host=2)
    assert ModemConnector(modem).limit == MODULE_LINKS


async def test_connection_refused_is_a_connector_error(modem: simsock.Modem) -> None:
    async with aiohttp.ClientSession(connector=ModemConnector(modem)) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(f"http://127.0.0.1:{free_port()}/")
    assert isinstance(info.value.os_error, ConnectionRefusedError)
    assert cipopens(modem) == 1


async def test_resolver_asks_the_module(modem: simsock.Modem) -> None:
    before = sent(modem, "AT+CDNSGIP")
    resolver = ModemResolver(modem)
    results = await resolver.resolve("localhost", 8080)
    assert results[0]["host"] == "127.0.0.1"
    assert results[0]["port"] == 8080
    assert results[0]["hostname"] == "localhost"
    assert sent(modem, "AT+CDNSGIP") - before == 1
    await resolver.close()


async def test_aiohttp_server_on_the_module(modem: simsock.Modem) -> None:
    """aiohttp's web server listening on the module (AT+SERVERSTART); a host client calls it."""
    seen_links: list[int] = []

    async def digest(request: web.Request) -> web.Response:
        seen_links.append(request.transport.get_extra_info("link") if request.transport else -1)
        return web.Response(text=sha(await request.read()))

    app = web.Application()
    app.router.add_post("/digest", digest)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    assert runner.server is not None  # set up
    server = await modem.create_server(runner.server, port)
    try:
        payload = os.urandom(50_000)
        # the client is on the host: the emulator bridges its connection to the module server
        async with aiohttp.ClientSession() as client:
            for _ in range(2):
                async with client.post(f"http://127.0.0.1:{port}/digest", data=payload) as response:
                    assert response.status == 200
                    assert await response.text() == sha(payload)
        assert len(seen_links) == 2
        assert seen_links[0] == seen_links[1] >= 0  # one kept-alive link
    finally:
        server.close()
        await server.wait_closed()
        await runner.cleanup()


async def test_sessions_one_after_another_get_both_links(
    modem: simsock.Modem, https_server: HttpServer, certs: Certificates
) -> None:
    """A session's close aborts its TLS links (aiohttp's default): the next session
    still finds both links free."""
    other_name = https_server.url.replace("localhost", "127.0.0.1")
    for _ in range(2):
        async with aiohttp.ClientSession(
            connector=ModemConnector(modem, ssl=certs.client)
        ) as session:

            async def fetch(url: str) -> bytes:
                async with session.get(url) as response:
                    return await response.read()

            async with asyncio.timeout(10):
                bodies = await asyncio.gather(
                    fetch(f"{https_server.url}/bytes/3000"), fetch(f"{other_name}/bytes/3001")
                )
            assert list(bodies) == [body_for(3000), body_for(3001)]
    assert cipopens(modem) == 4
    assert len(https_server.connections) == 4


async def test_an_idle_link_makes_room_when_others_hold_the_module(
    modem: simsock.Modem, http_server: HttpServer, echo_server: tuple[str, int]
) -> None:
    """One link is the application's own; the connector has the other. A second host
    takes that link over once the connector's idle connection on it is closed."""
    reader, writer = await modem.open_connection(*echo_server)  # link 0, not the connector's
    try:
        async with aiohttp.ClientSession(connector=ModemConnector(modem)) as session:
            for url in (http_server.url, http_server.url.replace("localhost", "127.0.0.1")):
                async with asyncio.timeout(5):
                    async with session.get(f"{url}/bytes/9000") as response:
                        assert await response.read() == body_for(9000)
        assert opened_links(modem) == [0, 1, 1]
        assert len(http_server.connections) == 2
        # the application's link was left alone
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_module_full_of_other_links_is_emfile(
    modem: simsock.Modem, http_server: HttpServer, echo_server: tuple[str, int]
) -> None:
    streams = [await modem.open_connection(*echo_server) for _ in range(MODULE_LINKS)]
    try:
        async with aiohttp.ClientSession(connector=ModemConnector(modem)) as session:
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                await session.get(http_server.url)
        assert info.value.os_error.errno == errno.EMFILE
        assert http_server.connections == []
    finally:
        for _, writer in streams:
            writer.close()
            await writer.wait_closed()
