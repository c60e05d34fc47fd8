"""The module's servers (reference 3.14, 3.15): starting, stopping, and ``+CLIENT``.

The session knows which server indexes it started; a ``+CLIENT`` for one of
them becomes an open link whose reading waits until the server's transport
takes it, and one for any other index is closed at once. The module refuses
``AT+SERVERSTOP`` while the server's accepted links are open, so the stop
waits for them (each close is bounded).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import commands as at
from .errors import ProtocolError
from .events import ClientAccepted
from .fields import int_fields
from .link import Link, LinkState
from .opening import take_number_for_client
from .outcomes import ClientConnected
from .procedures import Cmd, Procedure, Sleep, WaitUp
from .response import Response

if TYPE_CHECKING:
    from .session import Session

__all__ = ["client_accepted", "listening_ports", "start_server", "stop_server"]

logger = logging.getLogger("simsock.at.session")

#: How often a stopping server looks whether its clients' links are closed (s).
SERVER_STOP_POLL_S = 0.05


def start_server(s: Session, port: int, index: int, backlog: int) -> Procedure:
    """``AT+SERVERSTART`` (3.14) once the module is up; ``+CLIENT`` for ``index`` is served.

    The value is the port it listens on: with ``port`` 0 the module picks one,
    read back with ``AT+SERVERSTART?``.
    """
    command = at.serverstart(port, index, backlog)
    yield WaitUp(s.timeout_for(at.cipopen_udp(0, 0)))
    s.servers[index] = port  # a +CLIENT right behind the OK is ours
    response: Response = yield Cmd(command)
    if not response.ok:
        s.servers.pop(index, None)
        raise response.error("SERVERSTART")
    if port == 0:
        listening: Response = yield Cmd(at.query("+SERVERSTART"))
        bound = listening_ports(listening).get(index)
        if bound is None:
            raise ProtocolError(f"AT+SERVERSTART? does not list server {index}")
        port = s.servers[index] = bound
    return port


def listening_ports(response: Response) -> dict[int, int]:
    """``AT+SERVERSTART?`` (3.14): the listening servers' ports, by index."""
    response.raise_for_error()
    out = {}
    for fields in response.info("+SERVERSTART"):
        index, port = int_fields(fields, 2, "+SERVERSTART? line")
        out[index] = port
    return out


def stop_server(s: Session, index: int) -> Procedure:
    """``AT+SERVERSTOP`` (3.15) once the server's accepted links are closed, as it requires."""
    s.servers.pop(index, None)  # a client accepted from now on is closed at once
    waited = 0.0
    while any(link.server == index for link in s.links.values()):
        if waited > s.timeout_for(at.cipclose(0)):
            break  # their closes are bounded: this only guards against a bug
        yield Sleep(SERVER_STOP_POLL_S)
        waited += SERVER_STOP_POLL_S
    response: Response = yield Cmd(at.serverstop(index), late=("+SERVERSTOP", index))
    if not response.ok:
        logger.warning("server %d: %s", index, response.error("SERVERSTOP"))
    return None


def client_accepted(s: Session, event: ClientAccepted) -> None:
    """``+CLIENT`` (3.14): the module gave a link number to an accepted client."""
    take_number_for_client(s, event.link)
    client = Link(event.link, (event.host, event.port), server=event.server, state=LinkState.OPEN)
    s.links[event.link] = client
    if event.server not in s.servers:
        logger.warning("+CLIENT for server %d, which we did not start: closed", event.server)
        client.lost_reported = True
        s.linkwork.request_close(client, abort=True)
    else:
        client.reading = False  # until the server's transport takes it
        if s.datamode.enabled and event.server == 0 and s.datamode.link is None:
            s.datamode.accept(client)  # server 0's client is the raw link (3.4.1)
        s.emit(ClientConnected(client.number, client.serial, event.server, client.peer))
    s.kick()
