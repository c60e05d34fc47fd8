"""MQTT clients over the module against a real mosquitto on 127.0.0.1.

aiomqtt and paho-mqtt take their socket from :mod:`simsock.ecosystem.mqtt`
(``attach_modem`` / ``ModemMqttClient``); gmqtt runs unchanged inside
``use_modem`` (it calls ``loop.create_connection``). Every test checks that the
traffic went through the module, not only that it arrived: ``AT+CIPOPEN``
counted, the virtual module's payload counters, and where the client can bind
a local port, the broker's log naming that port (the emulator's host socket
binds what ``AT+CIPOPEN`` asked for). Payloads are random, checked by length
and SHA-256.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import gmqtt  # type: ignore[import-untyped]
import paho.mqtt.client as paho
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import simsock
from simsock.ecosystem.guard import HostNetworkBlockedError
from simsock.ecosystem.interpose import use_modem
from simsock.ecosystem.mqtt import ModemMqttClient, attach_modem
from simsock.ecosystem.socket_relay import RelayedSocket
from simsock.emulator import VirtualModem

from .conftest import cipopens, free_port
from .mosquitto import Mosquitto, mosquitto

__all__ = ["mosquitto"]  # the fixture, imported for pytest

#: Sizes of the random payloads: one byte, a module send's worth, ~20 KB (many
#: AT+CIPSENDs and CIPRXGET reads), an odd size.
SIZES = (1, 1500, 20_480, 4_097)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def random_payloads(sizes: tuple[int, ...] = SIZES) -> list[bytes]:
    return [os.urandom(size) for size in sizes]


def assert_same(received: list[bytes], sent: list[bytes]) -> None:
    assert [len(data) for data in received] == [len(data) for data in sent]
    assert [sha(data) for data in received] == [sha(data) for data in sent]


class Counters:
    """The virtual module's payload counters, and what moved since they were taken."""

    def __init__(self, vm: VirtualModem) -> None:
        self.vm = vm
        self.up = vm.stats.payload_from_host
        self.down = vm.stats.payload_to_host

    def sent(self) -> int:
        """Bytes the host gave the module to send (AT+CIPSEND) since."""
        return self.vm.stats.payload_from_host - self.up

    def received(self) -> int:
        """Bytes the module handed the host from the network since."""
        return self.vm.stats.payload_to_host - self.down


def published_sizes(broker: Mosquitto, client_id: str) -> list[int]:
    """The payload sizes of the PUBLISHes the broker received from ``client_id``."""
    pattern = re.compile(rf"Received PUBLISH from {re.escape(client_id)} \(.*\((\d+) bytes\)\)$")
    return [int(m.group(1)) for line in broker.log().splitlines() if (m := pattern.search(line))]


def connected_lines(broker: Mosquitto, client_id: str) -> list[str]:
    """The broker's "New client connected from <address> as <client_id>" lines."""
    return [
        line
        for line in broker.log().splitlines()
        if "New client connected from" in line and f" as {client_id} " in line
    ]


def connections_on(broker: Mosquitto, port: int) -> int:
    """How many TCP connections the broker accepted on ``port`` (TLS: handshake done)."""
    return sum(
        1
        for line in broker.log().splitlines()
        if "New connection from" in line and line.endswith(f" on port {port}.")
    )


async def links_at_most(modem: simsock.Modem, count: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until the module has at most ``count`` links open."""
    async with asyncio.timeout(timeout):
        while len(modem.engine.links) > count:
            await asyncio.sleep(0.02)


async def log_settles(broker: Mosquitto, text: str, count: int, timeout: float = 5.0) -> None:
    """Wait (bounded) until the broker's log has ``count`` lines with ``text``."""
    async with asyncio.timeout(timeout):
        while broker.count(text) < count:
            await asyncio.sleep(0.02)


async def take(messages: AsyncIterator[aiomqtt.Message], count: int) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async for message in messages:
        got.append(message)
        if len(got) == count:
            break
    return got


def payload_of(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes)
    return message.payload


# -- aiomqtt -----------------------------------------------------------------------------


async def test_aiomqtt_qos1_round_trip_inside_use_modem(
    vm: VirtualModem, modem: simsock.Modem, mosquitto: Mosquitto
) -> None:
    """aiomqtt with ``attach_modem`` inside ``use_modem`` (any host socket would raise):
    subscribe, four QoS 1 publishes (one ~20 KB) acknowledged, all received back over
    one module link, which the broker saw coming from the local port AT+CIPOPEN asked."""
    client_id, topic = unique("aiomqtt"), unique("simsock/aiomqtt")
    payloads = random_payloads()
    bind_port = free_port()
    counters = Counters(vm)
    async with asyncio.timeout(30):
        with use_modem(modem):
            client = aiomqtt.Client(
                "127.0.0.1",
                mosquitto.port,
                identifier=client_id,
                bind_port=bind_port,
                keepalive=30,
                timeout=10,
            )
            paho_client = attach_modem(client, modem)
            async with client:
                assert isinstance(paho_client.socket(), RelayedSocket)
                await client.subscribe(topic, qos=1)
                for payload in payloads:
                    await client.publish(topic, payload, qos=1)  # returns on PUBACK
                received = await take(client.messages, len(payloads))
        await links_at_most(modem, 0)
    assert all(message.topic.matches(topic) and message.qos == 1 for message in received)
    assert_same([payload_of(message) for message in received], payloads)
    assert cipopens(modem) == 1
    assert counters.sent() >= sum(SIZES)
    assert counters.received() >= sum(SIZES)
    # the broker: one connection, from the port the module link was opened with
    (line,) = connected_lines(mosquitto, client_id)
    assert f"from 127.0.0.1:{bind_port} as {client_id} " in line
    assert published_sizes(mosquitto, client_id) == list(SIZES)
    assert mosquitto.count(f"Sending PUBACK to {client_id}") == len(SIZES)
    await log_settles(mosquitto, f"Client {client_id} disconnected", 1)


async def test_aiomqtt_without_the_glue_is_refused(
    modem: simsock.Modem, mosquitto: Mosquitto
) -> None:
    """A plain aiomqtt client (no ``attach_modem``) inside ``use_modem``: paho's
    ``socket.create_connection`` is refused, nothing reaches the broker over the host."""
    client_id = unique("unglued")
    async with asyncio.timeout(15):
        with use_modem(modem):
            client = aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=client_id, timeout=5)
            with pytest.raises((HostNetworkBlockedError, aiomqtt.MqttError)) as raised:
                async with client:
                    pytest.fail("connected over the host's network")
    error = raised.value
    if isinstance(error, aiomqtt.MqttError):  # aiomqtt re-raises OSError "from None"
        error = error.__context__  # type: ignore[assignment]
    assert isinstance(error, HostNetworkBlockedError)
    assert "socket.create_connection()" in str(error)
    await asyncio.sleep(0.3)  # anything that did get through would be logged by now
    assert client_id not in mosquitto.log()
    assert mosquitto.count("New client connected") == 0  # no CONNECT from anyone
    # at most the fixture's own readiness probe (logged whenever the broker gets to it)
    assert mosquitto.count("New connection from") <= 1
    assert cipopens(modem) == 0


# -- paho-mqtt, threaded -----------------------------------------------------------------


class PahoEvents:
    """paho callbacks (its network thread) handed to the test's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connected: asyncio.Future[ReasonCode] = loop.create_future()
        self.subscribed: asyncio.Future[list[ReasonCode]] = loop.create_future()
        self.messages: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
        self.published: list[int] = []  # mids, in order of their PUBACK

    def attach(self, client: paho.Client) -> None:
        client.on_connect = self.on_connect
        client.on_subscribe = self.on_subscribe
        client.on_message = self.on_message
        client.on_publish = self.on_publish

    def _resolve(self, future: asyncio.Future[Any], value: object) -> None:
        def resolve() -> None:
            if not future.done():
                future.set_result(value)

        self.loop.call_soon_threadsafe(resolve)

    def on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._resolve(self.connected, reason_code)

    def on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._resolve(self.subscribed, reason_codes)

    def on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.messages.put_nowait, message)

    def on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        self.published.append(mid)


@contextlib.asynccontextmanager
async def threaded(*clients: paho.Client) -> AsyncIterator[None]:
    """Disconnect the clients and stop their network threads however the block ends; the
    joins run off the loop (a paho thread may be waiting for the loop to open a link) and
    end within paho's 1 s select once it sees the flag."""
    try:
        yield
    finally:
        for client in clients:
            client.disconnect()
        await asyncio.to_thread(lambda: [client.loop_stop() for client in clients])


async def test_paho_loop_start_qos1_acknowledged_inside_use_modem(
    vm: VirtualModem, modem: simsock.Modem, mosquitto: Mosquitto
) -> None:
    """paho's threaded interface inside ``use_modem``: a plain ``paho.Client`` given
    ``attach_modem`` subscribes (``connect_async`` + ``loop_start``: it connects from
    paho's thread), a ``ModemMqttClient`` (``connect`` from a worker thread, then
    ``loop_start``) publishes QoS 1: every message acknowledged (``wait_for_publish``,
    ``on_publish``) and received. One link each; paho's loopback wake-up pipe allowed."""
    loop = asyncio.get_running_loop()
    topic = unique("simsock/paho")
    pub_id, sub_id = unique("paho-pub"), unique("paho-sub")
    payloads = random_payloads()
    counters = Counters(vm)
    sub_events, pub_events = PahoEvents(loop), PahoEvents(loop)
    async with asyncio.timeout(30):
        with use_modem(modem):
            subscriber = paho.Client(CallbackAPIVersion.VERSION2, client_id=sub_id)
            attach_modem(subscriber, modem)
            publisher = ModemMqttClient(modem, CallbackAPIVersion.VERSION2, client_id=pub_id)
            sub_events.attach(subscriber)
            pub_events.attach(publisher)
            async with threaded(subscriber, publisher):
                subscriber.connect_async("127.0.0.1", mosquitto.port, keepalive=30)
                assert subscriber.loop_start() == paho.MQTT_ERR_SUCCESS
                assert (await sub_events.connected).value == 0
                subscriber.subscribe(topic, qos=1)
                assert [code.value for code in await sub_events.subscribed] == [1]
                rc = await asyncio.to_thread(publisher.connect, "127.0.0.1", mosquitto.port, 30)
                assert rc == paho.MQTT_ERR_SUCCESS
                assert publisher.loop_start() == paho.MQTT_ERR_SUCCESS
                assert (await pub_events.connected).value == 0
                infos = [publisher.publish(topic, payload, qos=1) for payload in payloads]
                for info in infos:
                    await asyncio.to_thread(info.wait_for_publish, 10)
                    assert info.is_published()
                    assert info.rc == paho.MQTT_ERR_SUCCESS
                received = [await sub_events.messages.get() for _ in payloads]
                # paho acknowledges after on_message: let the last PUBACK out before DISCONNECT
                await log_settles(mosquitto, f"Received PUBACK from {sub_id}", len(payloads))
        await links_at_most(modem, 0)
    assert sorted(pub_events.published) == sorted(info.mid for info in infos)
    assert len(set(pub_events.published)) == len(payloads)
    assert all(message.topic == topic and message.qos == 1 for message in received)
    assert_same([bytes(message.payload) for message in received], payloads)
    assert cipopens(modem) == 2
    assert counters.sent() >= sum(SIZES)
    assert counters.received() >= sum(SIZES)
    assert len(connected_lines(mosquitto, pub_id)) == 1
    assert len(connected_lines(mosquitto, sub_id)) == 1
    assert published_sizes(mosquitto, pub_id) == list(SIZES)
    assert mosquitto.count(f"Sending PUBACK to {pub_id}") == len(SIZES)
    assert mosquitto.count(f"Received PUBACK from {sub_id}") == len(SIZES)


# -- TLS ---------------------------------------------------------------------------------


def tls_context(cafile: Path) -> ssl.SSLContext:
    """Verifying the broker's certificate and host name against ``cafile``."""
    context = ssl.create_default_context(cafile=str(cafile))
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    return context


async def test_tls_verified_and_wrong_ca_refused(
    vm: VirtualModem, modem: simsock.Modem, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """aiomqtt over TLS to "localhost" (the broker's certificate names it), verified on
    the host against the broker's CA: a QoS 1 round trip. Then a paho client trusting
    another CA (``tls_set``) is refused with a certificate error after a handshake that
    did go through the module; its link is freed and nothing it could send arrives."""
    good_id, bad_id = unique("tls-good"), unique("tls-bad")
    topic = unique("simsock/tls")
    payloads = random_payloads()
    bind_port = free_port()
    wrong_ca = tmp_path / "wrong-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong_ca))
    counters = Counters(vm)
    async with asyncio.timeout(30):
        with use_modem(modem):
            client = aiomqtt.Client(
                "localhost",
                mosquitto.tls_port,
                identifier=good_id,
                bind_port=bind_port,
                tls_context=tls_context(mosquitto.cafile),
                keepalive=30,
                timeout=10,
            )
            paho_client = attach_modem(client, modem)
            async with client:
                tls_socket = paho_client.socket()
                assert isinstance(tls_socket, ssl.SSLSocket)
                assert tls_socket.family == socket.AF_UNIX  # TLS on the relay's socketpair
                assert tls_socket.version() in ("TLSv1.2", "TLSv1.3")
                peer = tls_socket.getpeercert()
                assert peer is not None
                assert ("DNS", "localhost") in peer["subjectAltName"]
                await client.subscribe(topic, qos=1)
                for payload in payloads:
                    await client.publish(topic, payload, qos=1)
                received = await take(client.messages, len(payloads))
                assert_same([payload_of(message) for message in received], payloads)
                assert cipopens(modem) == 1

                # another CA: the handshake runs over a second link and fails on the host
                wrong = ModemMqttClient(modem, CallbackAPIVersion.VERSION2, client_id=bad_id)
                wrong.tls_set(ca_certs=str(wrong_ca))
                with pytest.raises(ssl.SSLCertVerificationError) as refused:
                    await asyncio.to_thread(wrong.connect, "localhost", mosquitto.tls_port, 30)
                # the broker sends its CA along: "self-signed certificate in certificate
                # chain" (19), else "unable to get local issuer certificate" (20)
                assert refused.value.verify_code in (19, 20), refused.value.verify_message
                # paho leaves the failed handshake's socket open; the traceback holds it,
                # and once it is collected the relay sees its pair closed and frees the link
                del refused
                assert cipopens(modem) == 2
                info = wrong.publish(topic, b"must not arrive", qos=1)
                assert info.rc == paho.MQTT_ERR_NO_CONN
                await links_at_most(modem, 1)  # the failed client's link is closed

                # the verified client is still up, and sees only its own marker
                marker = os.urandom(64)
                await client.publish(topic, marker, qos=1)
                (only,) = await take(client.messages, 1)
                assert payload_of(only) == marker
        await links_at_most(modem, 0)
    assert counters.sent() >= sum(SIZES)
    assert counters.received() >= sum(SIZES)
    (line,) = connected_lines(mosquitto, good_id)
    assert f"from 127.0.0.1:{bind_port} as {good_id} " in line
    assert mosquitto.count(f"New connection from 127.0.0.1:{bind_port} on port") == 1
    # both clients reached the TLS port, and the wrong one's client refused the broker's CA
    assert connections_on(mosquitto, mosquitto.tls_port) == 2
    await log_settles(mosquitto, "alert unknown ca", 1)  # paho's alert, through the module
    assert mosquitto.count("alert unknown ca") == 1
    assert published_sizes(mosquitto, good_id) == [*SIZES, 64]
    assert bad_id not in mosquitto.log()


# -- gmqtt, unchanged, through use_modem --------------------------------------------------


class GmqttInbox:
    """A gmqtt client's received messages, and its SUBACKs."""

    def __init__(self, client: Any) -> None:
        self.messages: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue()
        self.subscribed = asyncio.Event()
        client.on_message = self.on_message
        client.on_subscribe = self.on_subscribe

    def on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        self.messages.put_nowait((topic, payload, qos))
        return 0  # PUBACK reason code: success

    def on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        self.subscribed.set()

    async def take(self, count: int) -> list[tuple[str, bytes, int]]:
        return [await self.messages.get() for _ in range(count)]


async def gmqtt_round_trip(
    broker: Mosquitto, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> str:
    """Connect a gmqtt client, subscribe, publish QoS 1, receive back; its client id."""
    client_id, topic = unique("gmqtt"), unique("simsock/gmqtt")
    payloads = random_payloads()
    client = gmqtt.Client(client_id)
    inbox = GmqttInbox(client)
    await client.connect(host, port, ssl=ssl_context or False, keepalive=30)
    try:
        client.subscribe(topic, qos=1)
        await inbox.subscribed.wait()
        for payload in payloads:
            client.publish(topic, payload, qos=1)
        received = await inbox.take(len(payloads))
    finally:
        await client.disconnect()
    assert all(got_topic == topic and qos == 1 for got_topic, _, qos in received)
    assert_same([payload for _, payload, _ in received], payloads)
    await log_settles(broker, f"Sending PUBACK to {client_id}", len(payloads))
    assert published_sizes(broker, client_id) == list(SIZES)
    return client_id


async def test_gmqtt_round_trip_inside_use_modem(
    vm: VirtualModem, modem: simsock.Modem, mosquitto: Mosquitto
) -> None:
    """gmqtt unchanged: its ``loop.create_connection`` goes over the module."""
    counters = Counters(vm)
    async with asyncio.timeout(30):
        with use_modem(modem) as interposer:
            client_id = await gmqtt_round_trip(mosquitto, "127.0.0.1", mosquitto.port, None)
        await links_at_most(modem, 0)
    assert interposer.redirected == [("create_connection", ("127.0.0.1", mosquitto.port))]
    assert cipopens(modem) == 1
    assert counters.sent() >= sum(SIZES)
    assert counters.received() >= sum(SIZES)
    assert len(connected_lines(mosquitto, client_id)) == 1


async def test_gmqtt_tls_verified_inside_use_modem(
    vm: VirtualModem, modem: simsock.Modem, mosquitto: Mosquitto
) -> None:
    """gmqtt with ``ssl=context``: TLS on the host (use_modem's create_connection), the
    broker's certificate verified for "localhost", bytes over the module. With another
    CA the same call fails with a certificate error, and its link is freed."""
    counters = Counters(vm)
    async with asyncio.timeout(30):
        with use_modem(modem) as interposer:
            client_id = await gmqtt_round_trip(
                mosquitto, "localhost", mosquitto.tls_port, tls_context(mosquitto.cafile)
            )
            await links_at_most(modem, 0)
            assert cipopens(modem) == 1
            wrong = ssl.create_default_context()
            trustme.CA().configure_trust(wrong)
            bad_id = unique("gmqtt-bad")
            with pytest.raises(ssl.SSLCertVerificationError):
                await gmqtt.Client(bad_id).connect("localhost", mosquitto.tls_port, ssl=wrong)
            assert cipopens(modem) == 2
            await links_at_most(modem, 0)
    assert interposer.redirected == [
        ("create_connection", ("localhost", mosquitto.tls_port)),
        ("create_connection", ("localhost", mosquitto.tls_port)),
    ]
    assert counters.sent() >= sum(SIZES)
    assert counters.received() >= sum(SIZES)
    assert len(connected_lines(mosquitto, client_id)) == 1
    # both reached the broker's TLS port (asyncio closes a failed handshake without a TLS
    # alert, so the broker only sees the connection end)
    assert connections_on(mosquitto, mosquitto.tls_port) == 2
    assert bad_id not in mosquitto.log()


# -- keepalive -----------------------------------------------------------------------------

KEEPALIVE_S = 10
IDLE_S = 31


async def test_keepalive_over_idle_links(
    vm: VirtualModem, modem: simsock.Modem, mosquitto: Mosquitto
) -> None:
    """aiomqtt and gmqtt, one link each, keepalive 10 s, idle 31 s: the broker counts at
    least two PINGREQs from each, neither reconnected, and a publish each way after the
    idle still round-trips over the same two links."""
    aio_id, aio_topic = unique("ka-aiomqtt"), unique("simsock/ka-aiomqtt")
    g_topic = unique("simsock/ka-gmqtt")
    async with asyncio.timeout(IDLE_S + 25):
        with use_modem(modem):
            client = aiomqtt.Client(
                "127.0.0.1",
                mosquitto.port,
                identifier=aio_id,
                keepalive=KEEPALIVE_S,
                timeout=10,
            )
            attach_modem(client, modem)
            async with client:
                await client.subscribe(aio_topic, qos=1)
                g_id = unique("ka-gmqtt")
                g_client = gmqtt.Client(g_id)
                inbox = GmqttInbox(g_client)
                await g_client.connect("127.0.0.1", mosquitto.port, keepalive=KEEPALIVE_S)
                try:
                    g_client.subscribe(g_topic, qos=1)
                    await inbox.subscribed.wait()
                    assert cipopens(modem) == 2
                    assert mosquitto.count("PINGREQ") == 0
                    await asyncio.sleep(IDLE_S)
                    # both stayed connected: a message each way
                    to_aio, to_g = os.urandom(3000), os.urandom(5000)
                    g_client.publish(aio_topic, to_aio, qos=1)
                    await client.publish(g_topic, to_g, qos=1)
                    (got_aio,) = await take(client.messages, 1)
                    (got_g,) = await inbox.take(1)
                finally:
                    await g_client.disconnect()
        await links_at_most(modem, 0)
    for client_id in (aio_id, g_id):
        assert mosquitto.count(f"Received PINGREQ from {client_id}") >= 2, client_id
        assert mosquitto.count(f"Sending PINGRESP to {client_id}") >= 2, client_id
        assert len(connected_lines(mosquitto, client_id)) == 1, client_id
    assert sha(payload_of(got_aio)) == sha(to_aio)
    assert got_g[0] == g_topic
    assert sha(got_g[1]) == sha(to_g)
    assert cipopens(modem) == 2  # no reconnection: the same two links throughout
