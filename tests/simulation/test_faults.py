"""Regression tests, in the simulation, for the faults a hostile module or a careless caller caused.

Each test plays one fault at one chosen moment (:class:`Scenario`) and checks
the outcome the way asyncio users expect it: a bounded wait, an ``OSError``
with ``errno`` set, nothing lost and nothing leaked. The numbers refer to the
list in the protocol-session issue.
"""

from __future__ import annotations

import errno

import pytest

from simsock.at import commands as at
from simsock.at.commands import Command
from simsock.at.link import LinkState
from simsock.at.outcomes import ModemState, StateChanged
from simsock.at.response import Response
from simsock.emulator.interpreter import Interpreter
from simsock.emulator.settings import ModuleConfig

from .scenario import ECHO, Scenario


def _free_again(sc: Scenario) -> None:
    """Both link numbers are usable: two opens and an echo each."""
    links = [sc.open_tcp(), sc.open_tcp()]
    assert sorted(link.number for link in links) == [0, 1]
    for link in links:
        assert sc.echo(link, b"in step") == b"in step"
        sc.s.close_link(link)
    sc.run_until(lambda: not sc.s.links and not sc.module_links(), 30)


def test_1_abort_of_a_udp_send_in_flight_keeps_the_session() -> None:
    sc = Scenario(rx_mode="push")
    link = sc.request(sc.s.open_udp(0, ECHO))
    sc.s.send_datagram(link, b"x" * 1000, ECHO)
    sc.s.handle_timer(sc.now)
    assert sc.s.inflight is not None
    assert sc.s.inflight.command.name == "+CIPSEND"
    sc.s.close_link(link, abort=True)
    sc.run_until(lambda: link.serial in sc.lost and not sc.s.links, 10)
    assert sc.s.state is ModemState.UP
    assert not sc.s.closed
    _free_again(sc)


def test_1_network_drop_during_a_udp_send_keeps_the_session() -> None:
    sc = Scenario(rx_mode="push")
    link = sc.request(sc.s.open_udp(0, ECHO))
    sc.s.send_datagram(link, b"y" * 1000, ECHO)
    sc.s.handle_timer(sc.now)
    sc.it.drop_network()
    sc.run_until(lambda: sc.s.state is ModemState.UP and link.serial in sc.lost, 30)
    error = sc.lost[link.serial]
    assert isinstance(error, OSError)
    assert error.errno == errno.ENETDOWN
    _free_again(sc)


def test_2_a_full_send_buffer_with_a_second_send_queued_frees_the_link() -> None:
    sc = Scenario()
    link = sc.open_tcp()
    sc.it.faults.arm_send_buffer_full(link.number)
    sc.s.send(link, b"z" * 4000)  # three CIPSENDs: the first is refused with cnf 0
    sc.run_until(lambda: link.serial in sc.lost and not sc.s.links, 20)
    error = sc.lost[link.serial]
    assert isinstance(error, ConnectionResetError)
    assert error.errno == errno.ECONNRESET
    assert sc.module_links() == []
    _free_again(sc)


def test_3_a_close_whose_result_never_comes_is_bounded() -> None:
    sc = Scenario()
    link = sc.open_tcp()
    sc.it.faults.arm_spoil_line(1, prefix="+CIPCLOSE")  # the late result is garbled
    sc.s.close_link(link)
    took = sc.run_until(lambda: link.serial in sc.lost, 200)
    assert took < 130  # AT+CIPTIMEOUT (120 s) and its margin, not forever
    assert sc.lost[link.serial] is None
    sc.run_until(lambda: not sc.s.links, 200)
    _free_again(sc)


def test_4_a_query_never_swallows_a_late_open_result() -> None:
    sc = Scenario()
    opening = sc.s.open_tcp(*ECHO)
    table = sc.s.command(at.query("+CIPOPEN"))
    link = sc.request(opening, 5)  # not the 125 s of a swallowed +CIPOPEN: 0,0
    response = sc.request(table, 5)
    assert isinstance(response, Response)
    assert len(response.info("+CIPOPEN")) == 2  # one line per link, no third entry
    assert link.state is LinkState.OPEN


def test_4_a_netopen_query_during_recovery_does_not_stall_it() -> None:
    sc = Scenario()
    queries: list[int] = []

    def query_when_down(outcome: object) -> None:
        if isinstance(outcome, StateChanged) and outcome.state is ModemState.NETWORK_DOWN:
            queries.extend(sc.s.command(at.query("+NETOPEN")) for _ in range(3))

    sc.on_outcome = query_when_down
    sc.outcomes.clear()
    sc.it.drop_network()
    took = sc.run_until(lambda: sc.saw(StateChanged, state=ModemState.UP), 30)
    assert took < 10  # not the fixed 120 s of a swallowed +NETOPEN: 0
    assert len(queries) == 3
    for query in queries:
        assert len(sc.request(query, 5).info("+NETOPEN")) == 1


def test_5_resync_never_takes_a_stale_ok() -> None:
    sc = Scenario()
    link = sc.open_tcp()
    request = sc.s.command(Command("AT+CSQ", 1.0))
    sc.s.handle_timer(sc.now)
    sc.stall_module(3.0)  # its answer comes after the command timed out
    sc.s.send(link, b"payload after the stall")
    with pytest.raises(TimeoutError) as info:
        sc.request(request, 10)
    assert info.value.errno == errno.ETIMEDOUT
    sc.run_until(lambda: len(sc.data.get(link.serial, b"")) >= 23, 30)
    assert bytes(sc.data[link.serial]) == b"payload after the stall"  # never "AT+CI..."
    conn = sc.net.connection_for_link(link.number)
    assert conn is not None
    assert bytes(conn.peer_received) == b"payload after the stall"


def test_6_recovery_survives_a_garbled_netopen() -> None:
    sc = Scenario()
    sc.it.faults.arm_spoil_line(1, prefix="+NETOPEN")
    sc.it.drop_network()
    took = sc.run_until(lambda: sc.s.state is ModemState.UP and sc.now > 1, 300)
    assert took < 200
    _free_again(sc)


def test_7_bytes_left_unsent_when_the_peer_closes_fail_the_link() -> None:
    sc = Scenario()
    link = sc.open_tcp()
    sc.s.send(link, b"w" * 30_000)  # twenty CIPSENDs: most are still queued
    sc.s.handle_timer(sc.now)
    sc.net.reset_peer(link.number, sc.now)
    sc.run_until(lambda: link.serial in sc.lost, 10)
    error = sc.lost[link.serial]  # never a clean end: what was written did not all leave
    assert isinstance(error, BrokenPipeError | ConnectionResetError)
    assert error.errno in (errno.EPIPE, errno.ECONNRESET)
    sc.s.send(link, b"more")  # after the loss: nothing happens, nothing is reported again
    sc.run_until(lambda: not sc.s.links, 10)
    _free_again(sc)


def test_10_a_cancelled_udp_open_closes_the_link_it_made() -> None:
    sc = Scenario(rx_mode="push")
    request = sc.s.open_udp(0, ECHO)
    sc.s.handle_timer(sc.now)
    assert sc.s.inflight is not None
    assert sc.s.inflight.command.name == "+CIPOPEN"
    sc.s.cancel(request)
    sc.run_until(lambda: not sc.s.links and not sc.module_links(), 10)
    assert request not in sc.results  # nobody waits for it any more
    _free_again(sc)


def test_11_a_late_prompt_fails_the_link_and_the_session_goes_on() -> None:
    sc = Scenario()
    link = sc.open_tcp()
    sc.s.send(link, b"q" * 100)
    sc.s.handle_timer(sc.now)
    sc.stall_module(6.0)  # the '>' comes 6 s late: the module reads the payload meanwhile
    took = sc.run_until(lambda: link.serial in sc.lost, 10)
    assert 5 <= took < 7
    error = sc.lost[link.serial]
    assert isinstance(error, TimeoutError)
    assert error.errno == errno.ETIMEDOUT
    took = sc.run_until(lambda: not sc.s.links and sc.s.inflight is None, 30)
    assert took < 20  # not the 125 s of a CIPSEND waiting for the rest of its payload
    _free_again(sc)


class _NoLinkHeaders(Interpreter):
    """A module that refuses CIPCCFG HeaderType 1: pushed data does not name its link."""

    def _execute(self, text: str) -> None:
        if text.upper().startswith("AT+CIPCCFG=") and text.split(",")[4:5] == ["1"]:
            self.reply("ERROR")
            return
        super()._execute(text)


def test_12_push_without_link_headers_never_opens_two_links_one_sender_feeds() -> None:
    sc = Scenario(rx_mode="push", interpreter=_NoLinkHeaders(ModuleConfig(seed=3)))
    assert not sc.s.info.link_headers
    first = sc.open_tcp()
    with pytest.raises(OSError, match="already receives from that sender") as info:
        sc.open_tcp()
    assert info.value.errno == errno.EADDRINUSE
    assert sc.echo(first, b"one stream, whole") == b"one stream, whole"


def test_13_an_open_racing_a_client_takes_the_other_link() -> None:
    sc = Scenario()
    sc.request(sc.s.run(sc.s.start_server(8080, 0, 3)))
    busy = sc.s.command(Command("AT+CSQ", 9.0))  # the open waits behind it
    opening = sc.s.open_tcp(*ECHO)
    sc.s.handle_timer(sc.now)
    assert sc.net.connect_client(8080, "192.0.2.9", 5000, sc.now) == 0
    sc.request(busy)
    link = sc.request(opening, 10)
    assert link.number == 1
    sc.run_until(lambda: bool(sc.clients), 5)
    assert sc.clients[0].link == 0
    assert sc.clients[0].server == 0


def test_13_a_client_on_a_link_the_peer_closed_is_served() -> None:
    sc = Scenario()
    sc.request(sc.s.run(sc.s.start_server(8080, 0, 3)))
    assert sc.net.connect_client(8080, "192.0.2.9", 5000, sc.now) == 0
    sc.run_until(lambda: bool(sc.clients), 5)
    first = sc.s.links[0]
    sc.s.resume_reading(first)  # as the server's transport does when it takes the link
    sc.net.reset_peer(0, sc.now)  # nobody closes the first client's transport
    sc.run_until(lambda: first.serial in sc.eof and first.serial in sc.lost, 10)
    assert sc.net.connect_client(8080, "192.0.2.9", 5001, sc.now) == 0
    sc.run_until(lambda: len(sc.clients) == 2, 5)
    second = sc.s.links[0]
    assert second.serial != first.serial
    assert second.state is LinkState.OPEN
    sc.s.resume_reading(second)
    assert sc.echo(second, b"served") == b"served"


def test_14_an_open_during_recovery_waits_for_the_network() -> None:
    sc = Scenario()
    opens: list[int] = []

    def open_when_down(outcome: object) -> None:
        if isinstance(outcome, StateChanged) and outcome.state is ModemState.NETWORK_DOWN:
            opens.append(sc.s.open_tcp(*ECHO))

    sc.on_outcome = open_when_down
    sc.it.drop_network()
    sc.run_until(lambda: bool(opens), 5)
    link = sc.request(opens[0], 30)
    assert sc.echo(link, b"after recovery") == b"after recovery"


def test_14_an_open_gives_enetdown_once_its_bound_passes() -> None:
    sc = Scenario()
    sc.s.config.recovery_backoff_s = (60.0,)
    sc.it.faults.arm_spoil_line(50, prefix="+NETOPEN")  # recovery keeps failing
    sc.it.drop_network()
    sc.run_until(lambda: sc.s.state is ModemState.NETWORK_DOWN, 5)
    request = sc.s.open_tcp(*ECHO)  # recovery waits 60 s between tries
    with pytest.raises(OSError, match="network is down") as info:
        sc.request(request, 200)
    assert info.value.errno == errno.ENETDOWN
