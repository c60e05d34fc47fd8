"""aiocoap (CoAP, LwM2M-style) over the module under ``use_modem``, against real aiocoap peers.

aiocoap's ``simple6`` client transport and ``simplesocketserver`` server
transport make their UDP endpoints with ``loop.create_datagram_endpoint``,
which ``use_modem`` sends to the module (its default ``udp6`` makes its own
sockets and cannot be redirected). The peers are aiocoap on the host
(:mod:`.coap_peers`), on their own loop and thread. Every test checks that
the datagrams crossed the module: the ``AT+CIPOPEN`` of a UDP link and the
``AT+CIPSEND`` of each datagram in the command trace.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import re
from collections.abc import AsyncIterator

import aiocoap  # type: ignore[import-untyped]
import pytest
from aiocoap import resource

import simsock
from simsock.ecosystem import use_modem
from simsock.emulator import VirtualModem

from .coap_peers import (
    BlobResource,
    CounterResource,
    HostCoap,
    RegistrationResource,
    blob,
    free_udp_port,
)

#: aiocoap's default block size (SZX 6, RFC 7959): an 8 KiB body is 8 Block2 blocks.
BLOCK_BYTES = 1024
#: A bound on each CoAP exchange: aiocoap would retransmit for ~93 s (RFC 7252 4.8.2).
EXCHANGE_TIMEOUT_S = 10.0


def udp_opens(modem: simsock.Modem) -> list[str]:
    """The ``AT+CIPOPEN=<link>,"UDP",...`` commands the library wrote."""
    trace = modem.engine.stats.trace
    assert trace is not None, "open the modem with trace_lines=..."
    return [line for way, line in trace if way == "->" and re.match(r'AT\+CIPOPEN=\d,"UDP"', line)]


def cipsends(modem: simsock.Modem) -> int:
    """How many ``AT+CIPSEND``s (one per datagram) the library wrote."""
    trace = modem.engine.stats.trace
    assert trace is not None, "open the modem with trace_lines=..."
    return sum(1 for way, line in trace if way == "->" and line.startswith("AT+CIPSEND="))


@pytest.fixture(params=["buffer", "push"])
async def coap_modem(
    request: pytest.FixtureRequest, vm: VirtualModem
) -> AsyncIterator[simsock.Modem]:
    """The library on ``vm`` in each receive mode, tracing commands.

    simple6 endpoints are connected (``remote_addr``), which buffer mode serves.
    """
    async with simsock.open_modem(vm.url, rx_mode=request.param, trace_lines=5000) as opened:
        yield opened


@pytest.fixture
async def traced_push_modem(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    """The library on ``vm`` in push mode (unconnected UDP needs it), tracing commands."""
    async with simsock.open_modem(vm.url, rx_mode="push", trace_lines=5000) as opened:
        yield opened


async def test_blockwise_get_from_a_host_server(coap_modem: simsock.Modem) -> None:
    """A Block2 GET of 8 KiB: eight request/response exchanges over one module UDP link.

    The URI names ``localhost``: the module's DNS (``AT+CDNSGIP``) resolves it.
    """
    body = blob(8 * BLOCK_BYTES)
    site = resource.Site()
    site.add_resource(["blob"], BlobResource(body))
    with HostCoap() as host:
        port, _ = await host.serve(site)
        with use_modem(coap_modem) as interposer:
            client = await aiocoap.Context.create_client_context(transports=["simple6"])
            try:
                request = aiocoap.Message(code=aiocoap.GET, uri=f"coap://localhost:{port}/blob")
                response = await asyncio.wait_for(
                    client.request(request).response, EXCHANGE_TIMEOUT_S
                )
            finally:
                await client.shutdown()
    assert response.code == aiocoap.CONTENT
    assert len(response.payload) == len(body)
    assert hashlib.sha256(response.payload).digest() == hashlib.sha256(body).digest()
    # one module UDP link, connected to the name simple6 was given; a request per block
    assert interposer.redirected.count(("create_datagram_endpoint", ("localhost", port))) == 1
    assert len(udp_opens(coap_modem)) == 1
    assert cipsends(coap_modem) >= len(body) // BLOCK_BYTES
    assert coap_modem.engine.stats.payload_received >= len(body)


async def test_observe_a_host_resource(coap_modem: simsock.Modem) -> None:
    """Observe (RFC 7641): every change of the host's resource arrives as a notification."""
    changes = 10
    counter = CounterResource()
    site = resource.Site()
    site.add_resource(["counter"], counter)
    with HostCoap() as host:
        port, _ = await host.serve(site)
        with use_modem(coap_modem):
            client = await aiocoap.Context.create_client_context(transports=["simple6"])
            try:
                request = client.request(
                    aiocoap.Message(
                        code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/counter", observe=0
                    )
                )
                first = await asyncio.wait_for(request.response, EXCHANGE_TIMEOUT_S)
                notifications = aiter(request.observation)
                seen = []
                for value in range(1, changes + 1):
                    # one change at a time: a server may skip a state it had no time to send
                    host.call(functools.partial(counter.set, value))
                    notification = await asyncio.wait_for(anext(notifications), EXCHANGE_TIMEOUT_S)
                    seen.append(notification.payload)
                request.observation.cancel()
            finally:
                await client.shutdown()
    assert first.payload == b"0"
    assert seen == [str(value).encode() for value in range(1, changes + 1)]
    assert len(udp_opens(coap_modem)) == 1
    assert cipsends(coap_modem) >= 1


async def test_server_on_the_module(traced_push_modem: simsock.Modem) -> None:
    """aiocoap's simplesocketserver listens on a module UDP port; a host client GETs 8 KiB."""
    modem = traced_push_modem
    body = blob(8 * BLOCK_BYTES)
    site = resource.Site()
    site.add_resource(["blob"], BlobResource(body))
    port = free_udp_port()
    with HostCoap() as host:
        with use_modem(modem):
            # simplesocketserver refuses the any-address; the module listens on all of its own
            server = await aiocoap.Context.create_server_context(
                site, bind=("127.0.0.1", port), transports=["simplesocketserver"]
            )
        try:
            client = await host.client()
            request = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/blob")
            response = await host.request(client, request)
        finally:
            await server.shutdown()
    assert response.code == aiocoap.CONTENT
    assert len(response.payload) == len(body)
    assert hashlib.sha256(response.payload).digest() == hashlib.sha256(body).digest()
    opens = udp_opens(modem)
    assert len(opens) == 1
    assert opens[0].endswith(f',"UDP",,,{port}')
    assert cipsends(modem) >= len(body) // BLOCK_BYTES  # every block went out by the module


async def test_server_on_the_module_needs_push_mode(modem: simsock.Modem) -> None:
    """Buffer mode cannot say who sent a datagram: an unconnected server is refused clearly."""
    port = free_udp_port()  # (a host socket: not inside use_modem, which refuses it)
    with use_modem(modem), pytest.raises(OSError, match="rx_mode='push'") as caught:
        await aiocoap.Context.create_server_context(
            resource.Site(),
            bind=("127.0.0.1", port),
            transports=["simplesocketserver"],
        )
    assert caught.value.errno == errno.EOPNOTSUPP


async def test_lwm2m_style_device_registers_and_is_read(coap_modem: simsock.Modem) -> None:
    """The LwM2M pattern simple6 supports: the device (on the module) registers with a
    server, and the server sends its requests back to the address the registration came
    from, over the device's connected UDP link. Here it reads 4 KiB (Block2) from the device.
    """
    body = blob(4 * BLOCK_BYTES)
    registrations = RegistrationResource()
    server_site = resource.Site()
    server_site.add_resource(["rd"], registrations)
    device_site = resource.Site()
    device_site.add_resource(["5", "0", "0"], BlobResource(body))  # an object instance
    with HostCoap() as host:
        port, lwm2m_server = await host.serve(server_site)
        with use_modem(coap_modem):
            device = await aiocoap.Context.create_server_context(
                device_site, transports=["simple6"]
            )
        try:
            register = aiocoap.Message(
                code=aiocoap.POST,
                uri=f"coap://127.0.0.1:{port}/rd?ep=simsock-device&lt=60",
                payload=b"</5/0>",
            )
            # simple6 makes a peer's endpoint at the first request to it: inside the block
            with use_modem(coap_modem):
                created = await asyncio.wait_for(
                    device.request(register).response, EXCHANGE_TIMEOUT_S
                )
            name, remote = await asyncio.wait_for(
                asyncio.wrap_future(registrations.registered), EXCHANGE_TIMEOUT_S
            )
            read = aiocoap.Message(code=aiocoap.GET, uri_path=("5", "0", "0"))
            read.remote = remote
            response = await host.request(lwm2m_server, read)
        finally:
            await device.shutdown()
    assert created.code == aiocoap.CREATED
    assert name == "simsock-device"
    assert response.code == aiocoap.CONTENT
    assert len(response.payload) == len(body)
    assert hashlib.sha256(response.payload).digest() == hashlib.sha256(body).digest()
    assert len(udp_opens(coap_modem)) == 1
    # the registration, then one response per block, all sent by the module
    assert cipsends(coap_modem) >= 1 + len(body) // BLOCK_BYTES
