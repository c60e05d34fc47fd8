"""Socket commands: NETOPEN, NETCLOSE, IPADDR, CIPOPEN, CIPSEND, CIPRXGET,
CIPCLOSE, CIPACK, CDNSGIP (reference 3.1-3.7, 3.16, 3.17).

Handlers check everything the module checks before anything is sent, answer
at once, and leave the network part to the bridge through actions; its
outcome comes back as a late result (``+CIPOPEN: <link>,<err>``,
``+CIPSEND: ...``).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Final

from ..at.commands import check_domain
from ..at.errors import (
    DNS_GENERAL_ERROR,
    ERR_DNS,
    ERR_NET_NOT_OPEN,
    ERR_NETWORK,
    ERR_NOT_SUPPORTED,
    ERR_PARAM,
    IPE_ALREADY_OPENED,
    IPE_INVALID,
    IPE_NO_DATA,
    IPE_NOT_CREATED,
    IPE_NOT_OPENED,
    IPE_NOT_SUPPORTED,
)
from ..at.fields import Field
from ..at.note import (
    CLOSED,
    MAX_HEX_READ_BYTES,
    MAX_LINK,
    MAX_LINK_SLOT,
    MAX_READ_BYTES,
    MAX_SEND_BYTES,
)
from .actions import OpenTcp, OpenUdp
from .command import Command, Handler, Kind, ParamError, field_at, int_param, str_param
from .commands_config import CONFIG_HANDLERS
from .links import LinkState

if TYPE_CHECKING:
    from .interpreter import Interpreter

__all__ = ["SOCKET_HANDLERS", "resolve"]


def resolve(m: Interpreter, name: str) -> str | None:
    """The address ``name`` means: itself, or from the DNS table; ``None`` if unknown."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    table = {key.lower(): value for key, value in m.config.dns.items()}
    return table.get(name.lower())


def _family(address: str) -> int:
    return ipaddress.ip_address(address).version


def _link_number(value: Field) -> int:
    """A link number as a number: a malformed one is a plain ``ERROR``."""
    if not isinstance(value, int):
        raise ParamError(f"{value!r} is not a link number")
    return value


# --- 3.1 / 3.2 / 3.7 -------------------------------------------------------------


def _netopen(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.READ:
        m.reply(f"+NETOPEN: {int(m.network_open)}", "OK")
    elif command.kind is Kind.TEST:
        m.reply("OK")
    elif command.kind is Kind.EXEC:
        if m.network_open:
            m.ip_error(IPE_ALREADY_OPENED)
            return
        m.network_open = True
        m.reply("OK")
        m.late("+NETOPEN: 0")
    else:
        raise ParamError(command.line)


def _netclose(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply("OK")
    elif command.kind is Kind.EXEC:
        if not m.network_open:
            m.reply(f"+NETCLOSE: {ERR_NET_NOT_OPEN}", "ERROR")
            return
        m.reply("OK")
        m.close_everything(report=True)
        m.network_open = m.network_lost = False
        m.late("+NETCLOSE: 0")
    else:
        raise ParamError(command.line)


def _ipaddr(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply("OK")
    elif command.kind is Kind.EXEC:
        if not m.network_open:
            m.ip_error(IPE_NOT_OPENED)
            return
        family = m.settings.pdp_family
        address = m.config.ipv6_address if family == 6 else m.config.ip_address
        m.reply(f"+IPADDR: {address}", "OK")
    else:
        raise ParamError(command.line)


# --- 3.3 CIPOPEN -------------------------------------------------------------------


def _cipopen_status(m: Interpreter) -> None:
    lines: list[str] = []
    for lk in m.links:
        if lk.is_open:
            # The fields are the server's address and port (2.1.3); a UDP link
            # shows its remote as a TCP link does (3.3.3, transparent UDP). A UDP
            # link opened with ",,,<local_port>" has no remote: the note never
            # shows one, so its fields are the empty string and port 0, what the
            # field types (a string, an integer 0-65535) give for "none"; the
            # local port is no field of this line.
            host, port = lk.remote_host, lk.remote_port
            lines.append(f'+CIPOPEN: {lk.number},"{lk.kind}","{host}",{port},{lk.server}')
        else:
            lines.append(f"+CIPOPEN: {lk.number}")
    m.reply(*lines, "OK")


def _cipopen(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply(f'+CIPOPEN: (0-{MAX_LINK}),("TCP","UDP")', "OK")
        return
    if command.kind is Kind.READ:
        _cipopen_status(m)
        return
    if command.kind is not Kind.SET:
        raise ParamError(command.line)
    fields = command.fields()
    link = _link_number(field_at(fields, 0))
    if link > MAX_LINK_SLOT:  # "when <link_num> is greater than 9" (2.1.3)
        m.ip_error(IPE_INVALID)
        return
    if not 0 <= link <= MAX_LINK:  # a wrong parameter: "+CIPOPEN: <link>,<err>" (2.1.3)
        m.reply(f"+CIPOPEN: {link},{ERR_PARAM}", "ERROR")
        return
    lk = m.links[link]
    if not m.network_open:
        m.reply(f"+CIPOPEN: {link},{ERR_NET_NOT_OPEN}", "ERROR")
        return
    transparent = m.settings.cipmode == 1
    if lk.state is not LinkState.FREE or (transparent and link != 0):
        # In use; or transparent mode, where only link 0 exists (3.3).
        m.reply(f"+CIPOPEN: {link},{ERR_NOT_SUPPORTED}", "ERROR")
        return
    remote: tuple[str, int] | None = None
    local_port: int | None = None
    try:
        kind = str_param(field_at(fields, 1)).upper()
        if len(fields) > 5 or kind not in ("TCP", "UDP"):
            raise ParamError(command.line)
        if kind == "TCP":
            name = str_param(field_at(fields, 2))
            port = int_param(field_at(fields, 3), 1, 65535)
            local = field_at(fields, 4)
            local_port = None if local is None else int_param(local, 0, 65535)
        else:
            if transparent:  # the remote address is given (3.3)
                remote = (str_param(field_at(fields, 2)), int_param(field_at(fields, 3), 1, 65535))
            elif field_at(fields, 2) is not None or field_at(fields, 3) is not None:
                raise ParamError("a remote address is only for transparent mode")
            local_port = int_param(field_at(fields, 4), 0, 65535)
    except ParamError:
        m.reply(f"+CIPOPEN: {link},{ERR_PARAM}", "ERROR")
        return
    lk.reset()  # reopening discards what the previous connection left unread (4.2)
    lk.state, lk.kind = LinkState.CONNECTING, kind
    if kind == "UDP" or transparent:
        # Result first (UDP), or CONNECT / CONNECT FAIL (transparent): no OK yet.
        m.wait_for("open", link)
    else:
        m.reply("OK")
    if kind == "UDP":
        lk.local_port = local_port or 0
        if remote is not None:
            address = resolve(m, remote[0])
            if address is None:
                m.connect_failed(link, ERR_DNS)
                return
            lk.remote_host, lk.remote_port = address, remote[1]
        m.request(OpenUdp(link, local_port or 0, m.settings.pdp_family))
        return
    address = resolve(m, name)
    if address is None:
        m.connect_failed(link, ERR_DNS)
    elif m.network_lost or (_family(address) == 6 and m.settings.pdp_family != 6):
        # An IPv4 PDP context cannot reach an IPv6 peer (AT+CSOCKETPN=1,6 first).
        m.connect_failed(link, ERR_NETWORK)
    else:
        lk.remote_host, lk.remote_port = address, port
        if m.faults.connect_times_out(name, address):
            m.time_out_connect(link)  # a black hole: no SYN-ACK ever comes
            return
        timeout_s = m.settings.timeouts_ms[1] / 1000
        m.request(OpenTcp(link, address, port, name, local_port, timeout_s))


# --- 3.4 CIPSEND -------------------------------------------------------------------


def _cipsend(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply(f"+CIPSEND: (0-{MAX_LINK}),(1-{MAX_SEND_BYTES})", "OK")
        return
    if command.kind is not Kind.SET:
        raise ParamError(command.line)
    try:
        fields = command.fields()
        link = int_param(field_at(fields, 0), 0, MAX_LINK)
        size = field_at(fields, 1)
        length = None if size is None else int_param(size, 1, MAX_SEND_BYTES)
        if len(fields) > 4:
            raise ParamError(command.line)
    except ParamError:
        m.reply(f"+CIPERROR: {ERR_PARAM}", "ERROR")
        return
    lk = m.links[link]
    if not m.network_open:
        m.reply(f"+CIPERROR: {ERR_NET_NOT_OPEN}", "ERROR")
        return
    if not lk.is_open or link == m.data_link:  # a transparent link is written in data mode
        m.reply(f"+CIPERROR: {ERR_NOT_SUPPORTED}", "ERROR")
        return
    destination: tuple[str, int] | None = None
    if lk.kind == "UDP":
        try:
            name = str_param(field_at(fields, 2))
            port = int_param(field_at(fields, 3), 1, 65535)
        except ParamError:
            m.reply(f"+CIPERROR: {ERR_PARAM}", "ERROR")
            return
        address = resolve(m, name)
        if address is None:
            m.reply(f"+CIPERROR: {ERR_PARAM}", "ERROR")
            return
        destination = (address, port)
    m.begin_payload(link, length, destination)


# --- 3.5 CIPRXGET ------------------------------------------------------------------


def _ciprxget(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply(f"+CIPRXGET: (0-4),(0-{MAX_LINK}),(1-{MAX_READ_BYTES})", "OK")
        return
    if command.kind is Kind.READ:
        m.reply(f"+CIPRXGET: {m.settings.rx_mode}", "OK")
        return
    if command.kind is not Kind.SET:
        raise ParamError(command.line)
    fields = command.fields()
    mode = field_at(fields, 0)
    if isinstance(mode, int) and mode in (0, 1) and len(fields) == 1:
        m.settings.rx_mode = mode
        if mode == 0:
            m.flush_buffers_as_push()
        m.reply("OK")
        return
    try:
        if mode not in (2, 3, 4):
            raise ParamError(command.line)
        link = int_param(field_at(fields, 1), 0, MAX_LINK_SLOT)
        limit = MAX_READ_BYTES if mode == 2 else MAX_HEX_READ_BYTES
        length = int_param(field_at(fields, 2), 1, limit, default=limit)
        if len(fields) > (2 if mode == 4 else 3):
            raise ParamError(command.line)
    except ParamError:
        m.ip_error(IPE_INVALID)
        return
    if m.settings.rx_mode != 1:
        m.ip_error(IPE_NOT_SUPPORTED)
        return
    if link > MAX_LINK:
        # Links 2-9 are never established: nothing waits there. The note reads
        # link 2 and gets "+IP ERROR: No data" (3.2.2, 3.3.2).
        if mode == 4:
            m.reply(f"+CIPRXGET: 4,{link},0", "OK")
        else:
            m.ip_error(IPE_NO_DATA)
        return
    lk = m.links[link]
    if mode == 4:
        m.reply(f"+CIPRXGET: 4,{link},{len(lk.rx)}", "OK")
        return
    if not lk.rx:
        m.ip_error(IPE_NO_DATA)
        return
    data = lk.take(length)  # one datagram at most, on a UDP link
    body = data if mode == 2 else data.hex().upper().encode("ascii")
    m.stats.payload_to_host += len(data)
    header = m.config.firmware.rxget_header(mode, link, len(data), len(lk.rx))
    m.reply(f"\r\n{header}\r\n".encode("ascii") + body, "OK")
    m.after_read(lk)


# --- 3.6 CIPCLOSE, 3.16 CIPACK --------------------------------------------------------


def _cipclose(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply(f"+CIPCLOSE: (0-{MAX_LINK})", "OK")
        return
    if command.kind is Kind.READ:
        m.reply("+CIPCLOSE: " + ",".join(str(int(lk.is_open)) for lk in m.links), "OK")
        return
    if command.kind is not Kind.SET:
        raise ParamError(command.line)
    fields = command.fields()
    link = _link_number(field_at(fields, 0))
    if not 0 <= link <= MAX_LINK or len(fields) != 1:
        m.reply(f"+CIPCLOSE: {link},{ERR_PARAM}", "ERROR")
        return
    lk = m.links[link]
    if lk.state is LinkState.FREE:
        m.reply(f"+CIPCLOSE: {link},{ERR_NOT_SUPPORTED}", "ERROR")
        return
    udp = lk.kind == "UDP"
    m.close_link(lk)
    if link == m.data_link:  # a transparent link: OK, CLOSED, +CIPCLOSE (3.6)
        m.data_link = None
        m.reply("OK")
        m.late(CLOSED)
        m.late(f"+CIPCLOSE: {link},0")
    elif udp:  # UDP: the result comes before OK (3.6)
        m.reply(f"+CIPCLOSE: {link},0", "OK")
    else:
        m.reply("OK")
        m.late(f"+CIPCLOSE: {link},0")


def _cipack(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply(f"+CIPACK: (0-{MAX_LINK})", "OK")
        return
    if command.kind is not Kind.SET:
        raise ParamError(command.line)
    fields = command.fields()
    try:
        link = int_param(field_at(fields, 0), 0, MAX_LINK)
        if len(fields) != 1:
            raise ParamError(command.line)
    except ParamError:
        m.ip_error(IPE_INVALID)
        return
    lk = m.links[link]
    if not lk.is_open:
        m.ip_error(IPE_NOT_CREATED)
        return
    m.reply(f"+CIPACK: {lk.bytes_sent},{lk.bytes_acked},{lk.bytes_received}", "OK")


# --- 3.17 CDNSGIP ------------------------------------------------------------------


def _cdnsgip(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply("OK")
        return
    if command.kind is not Kind.SET:
        raise ParamError(command.line)
    fields = command.fields()
    if len(fields) != 1:
        raise ParamError(command.line)
    name = str_param(fields[0])
    try:
        check_domain(name)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
    address = resolve(m, name) if m.network_open else None
    if address is None:
        m.reply(f"+CDNSGIP: 0,{DNS_GENERAL_ERROR}", "ERROR")
        return
    m.reply(f'+CDNSGIP: 1,"{name}","{address}"', "OK")


SOCKET_HANDLERS: Final[dict[str, Handler]] = {
    **CONFIG_HANDLERS,
    "+NETOPEN": _netopen,
    "+NETCLOSE": _netclose,
    "+IPADDR": _ipaddr,
    "+CIPOPEN": _cipopen,
    "+CIPSEND": _cipsend,
    "+CIPRXGET": _ciprxget,
    "+CIPCLOSE": _cipclose,
    "+CIPACK": _cipack,
    "+CDNSGIP": _cdnsgip,
}
