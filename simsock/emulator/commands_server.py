"""TCP servers: AT+SERVERSTART and AT+SERVERSTOP (reference 3.14, 3.15).

The bridge listens on the host (127.0.0.1 by default); each client it
accepts takes a free link (``+CLIENT: <link>,<server>,<ip>:<port>``) and is
then an ordinary TCP link. While no link is free, clients wait in the
listening socket's backlog, unaccepted.

``AT+SERVERSTOP`` has two shapes (3.15): ``+SERVERSTOP: <idx>,0`` then ``OK``
when the listener closes at once, ``OK`` then ``+SERVERSTOP: <idx>,0`` when
closing takes time. Which one is fixed by the configuration, so a run is
repeatable: a module with a command latency (``ModuleConfig.latency_s`` > 0)
is one whose socket work takes time, and it answers ``OK`` first, the result
following ``latency_s`` later. A module without latency (the default) closes
at once. Jitter alone does not change the shape. Any command the host sends
after that ``OK`` runs at least ``latency_s`` later, and a due result goes out
before a command runs, so no command ever finds the server half stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..at.errors import (
    ERR_LISTENING,
    ERR_NET_NOT_OPEN,
    ERR_NOT_SUPPORTED,
    ERR_PARAM,
    ERR_SOCKETS_OPEN,
)
from ..at.note import BACKLOG_DEFAULT, BACKLOG_RANGE, MAX_SERVER
from .actions import Listen, StopListening
from .command import Command, Handler, Kind, ParamError, field_at, int_param

if TYPE_CHECKING:
    from .interpreter import Interpreter

__all__ = ["SERVER_HANDLERS"]


def _serverstart(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply(f"+SERVERSTART: (0-65535),(0-{MAX_SERVER})", "OK")
        return
    if command.kind not in (Kind.READ, Kind.SET):
        raise ParamError(command.line)
    if not m.network_open:
        m.reply(f"+CIPERROR: {ERR_NET_NOT_OPEN}", "ERROR")
        return
    if command.kind is Kind.READ:
        lines = [
            f"+SERVERSTART: {index},{port}"
            for index, port in enumerate(m.servers)
            if port is not None
        ]
        m.reply(*lines, "OK")
        return
    try:
        fields = command.fields()
        port = int_param(field_at(fields, 0), 0, 65535)
        server = int_param(field_at(fields, 1), 0, MAX_SERVER)
        backlog = int_param(field_at(fields, 2), *BACKLOG_RANGE, default=BACKLOG_DEFAULT)
        if len(fields) > 3:
            raise ParamError(command.line)
    except ParamError:
        m.reply(f"+CIPERROR: {ERR_PARAM}", "ERROR")
        return
    if m.servers[server] is not None:
        m.reply(f"+CIPERROR: {ERR_LISTENING}", "ERROR")
        return
    # OK comes once the host socket listens (or +CIPERROR: 6 if it cannot bind).
    m.request(Listen(server, port, backlog, m.settings.pdp_family))
    m.wait_for("listen", server)


def _serverstop(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply(f"+SERVERSTOP: (0-{MAX_SERVER})", "OK")
        return
    if command.kind is not Kind.SET:
        raise ParamError(command.line)
    fields = command.fields()
    server = int_param(field_at(fields, 0), 0, MAX_SERVER)
    if len(fields) != 1:
        raise ParamError(command.line)
    if m.servers[server] is None:
        m.reply(f"+SERVERSTOP: {server},{ERR_NOT_SUPPORTED}", "ERROR")
        return
    if any(lk.server == server for lk in m.open_links()):
        # Its clients must be closed first (3.15).
        m.reply(f"+SERVERSTOP: {server},{ERR_SOCKETS_OPEN}", "ERROR")
        return
    m.servers[server] = None
    m.request(StopListening(server))
    closing_s = m.config.latency_s
    if closing_s <= 0:  # closed at once (3.15's usual case)
        m.reply(f"+SERVERSTOP: {server},0", "OK")
        return
    m.reply("OK")  # closing takes time: the result follows (3.15)
    m.call_at(m.now + closing_s, lambda: m.late(f"+SERVERSTOP: {server},0"))


SERVER_HANDLERS: Final[dict[str, Handler]] = {
    "+SERVERSTART": _serverstart,
    "+SERVERSTOP": _serverstop,
}
