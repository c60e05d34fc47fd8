"""Command builders: the only way an argument reaches the wire (reference section 3).

Every builder validates and quotes its arguments and refuses, with
``ValueError``, anything the module could misread: a ``"`` or a control byte
inside a string, a number out of range, a host name outside the rules of 3.17.
A :class:`Command` carries its line and its maximum response time.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .note import (
    BACKLOG_DEFAULT,
    BACKLOG_RANGE,
    CDNSGIP_TIMEOUT_S,
    CIPCCFG_DEFAULTS,
    CIPCCFG_RANGES,
    CIPRXGET_TIMEOUT_S,
    CIPTIMEOUT_DEFAULT_S,
    CIPTIMEOUT_RANGE_MS,
    CSOCKETPN_IPV4,
    CSOCKETPN_IPV6,
    CTCPKA_RANGES,
    CTRL_Z,
    DEFAULT_TIMEOUT_S,
    ESC,
    ETX,
    MAX_DOMAIN_CHARS,
    MAX_HEX_READ_BYTES,
    MAX_LABEL_CHARS,
    MAX_LINK,
    MAX_READ_BYTES,
    MAX_SEND_BYTES,
    MAX_SERVER,
)

__all__ = [
    "MAX_SEND_BYTES",  # the note's (.note), for the socket layer's at.MAX_SEND_BYTES
    "Command",
    "check_host",
    "check_link",
    "check_port",
    "escape_variable_payload",
    "quote",
    "raw",
]

#: Longest command line the module accepts (a common SIMCom limit).
MAX_COMMAND_CHARS = 556

_NAME = re.compile(r"\+?[A-Za-z&]+[0-9]?")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_PRINTABLE = re.compile(r"[\x20-\x7e]*\Z")
#: Commands whose timeout is AT+CIPTIMEOUT's (3.12).
_CIPTIMEOUT_COMMANDS = frozenset({"+NETOPEN", "+NETCLOSE", "+CIPOPEN", "+CIPSEND", "+CIPCLOSE"})


@dataclass(frozen=True, slots=True)
class Command:
    """One validated command line (without its CR) and the longest the module may take."""

    line: str
    timeout_s: float
    #: ``"+CIPOPEN"`` for ``AT+CIPOPEN=...``, ``"E0"`` for ``ATE0`` (derived).
    name: str = field(init=False, compare=False)
    #: The bytes to write: the line and its CR (1) (derived).
    wire: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Computed once: the engine asks for both on every exchange.
        body = self.line[2:]
        match = _NAME.match(body)
        object.__setattr__(self, "name", match.group(0).upper() if match else body)
        object.__setattr__(self, "wire", self.line.encode("ascii") + b"\r")


def _command(body: str, timeout_s: float | None = None) -> Command:
    line = "AT" + body
    if timeout_s is None:
        name = Command(line, 0.0).name
        if name in _CIPTIMEOUT_COMMANDS:
            timeout_s = CIPTIMEOUT_DEFAULT_S
        elif name == "+CIPRXGET":
            timeout_s = CIPRXGET_TIMEOUT_S
        elif name == "+CDNSGIP":
            timeout_s = CDNSGIP_TIMEOUT_S
        else:
            timeout_s = DEFAULT_TIMEOUT_S
    return Command(line, timeout_s)


# --- argument checks --------------------------------------------------------------


def _int(value: object, low: int, high: int, what: str) -> int:
    if type(value) is not int:  # bool and float are refused, not coerced
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} outside {low}..{high}")
    return value


def check_link(link: int, max_link: int = MAX_LINK) -> int:
    """A link number 0..max_link."""
    return _int(link, 0, max_link, "link")


def check_port(port: int, *, allow_zero: bool = False) -> int:
    """A TCP/UDP port 1..65535 (0 too with ``allow_zero``)."""
    return _int(port, 0 if allow_zero else 1, 65535, "port")


def quote(text: str, what: str = "string") -> str:
    """``text`` in double quotes, refused when it holds ``"``, a control byte or non-ASCII."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    if '"' in text or not _PRINTABLE.match(text):
        raise ValueError(f"{what} {text!r} has a quote, a control byte or a non-ASCII character")
    return f'"{text}"'


def check_domain(name: str) -> str:
    """A domain name by the rules of AT+CDNSGIP (3.17); ``ValueError`` otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"host must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_DOMAIN_CHARS:
        raise ValueError(f"host name must be 1..{MAX_DOMAIN_CHARS} characters: {name!r}")
    for label in name.split("."):
        if len(label) > MAX_LABEL_CHARS or not _LABEL.match(label):
            raise ValueError(
                f"invalid host name {name!r}: labels are 1..{MAX_LABEL_CHARS} of a-z A-Z 0-9 -,"
                " starting with a letter or digit (3.17)"
            )
    return name


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when ``host`` is an IPv4/IPv6 literal (brackets allowed), else ``None``."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def check_host(host: str) -> str:
    """An IP literal (normalised) or a domain name by 3.17; ``ValueError`` otherwise."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    address = ip_literal(host)
    if address is not None:
        return str(address)
    return check_domain(host)


# --- general commands (3.21) --------------------------------------------------------


def at() -> Command:
    """``AT``: is anybody there (used to synchronise)."""
    return _command("")


def echo(on: bool) -> Command:
    """``ATE1`` / ``ATE0``."""
    return _command("E1" if on else "E0")


def query(name: str) -> Command:
    """``AT<name>?`` for a known command name such as ``+NETOPEN``."""
    return _command(_name(name) + "?")


def test(name: str) -> Command:
    """``AT<name>=?``: the module's supported ranges."""
    return _command(_name(name) + "=?")


def _name(name: str) -> str:
    if not re.fullmatch(r"\+[A-Z]+", name):
        raise ValueError(f"not a command name: {name!r}")
    return name


def cgdcont(apn: str, pdp_type: str = "IP", cid: int = 1) -> Command:
    """``AT+CGDCONT=<cid>,"<type>","<apn>"``."""
    if pdp_type not in ("IP", "IPV6", "IPV4V6"):
        raise ValueError(f"PDP type must be IP, IPV6 or IPV4V6: {pdp_type!r}")
    _int(cid, 1, 15, "cid")
    if len(apn) > 99:
        raise ValueError("APN longer than 99 characters")
    return _command(f"+CGDCONT={cid},{quote(pdp_type)},{quote(apn, 'APN')}")


def raw(line: str) -> Command:
    """A user's own command for ``modem.command()``, checked (:mod:`.userline`) so it
    cannot break the stack; ``ValueError`` names the line and the reason."""
    from .userline import check_user_line

    return _command(check_user_line(line))


def netopen() -> Command:
    """``AT+NETOPEN`` (3.1): ``OK`` then ``+NETOPEN: <err>``."""
    return _command("+NETOPEN")


def netclose() -> Command:
    """``AT+NETCLOSE`` (3.2): ``OK`` then ``+NETCLOSE: <err>``."""
    return _command("+NETCLOSE")


def cipopen_tcp(link: int, host: str, port: int, local_port: int | None = None) -> Command:
    """``AT+CIPOPEN=<link>,"TCP","<host>",<port>[,<local_port>]`` (3.3)."""
    body = f'+CIPOPEN={check_link(link)},"TCP",{quote(check_host(host), "host")},{check_port(port)}'
    if local_port is not None:
        body += f",{check_port(local_port)}"
    return _command(body)


def cipopen_udp(
    link: int, local_port: int, host: str | None = None, port: int | None = None
) -> Command:
    """``AT+CIPOPEN=<link>,"UDP",,,<local_port>`` (3.3), or with the remote in transparent mode."""
    check_link(link)
    check_port(local_port, allow_zero=True)
    if host is None:
        return _command(f'+CIPOPEN={link},"UDP",,,{local_port}')
    if port is None:
        raise ValueError("a remote host needs a remote port")
    remote = f"{quote(check_host(host), 'host')},{check_port(port)}"
    return _command(f'+CIPOPEN={link},"UDP",{remote},{local_port}')


def cipsend(
    link: int, length: int | None, host: str | None = None, port: int | None = None
) -> Command:
    """``AT+CIPSEND=<link>[,<length>][,"<ip>",<port>]`` (3.4); ``length=None`` for Ctrl+Z mode."""
    body = f"+CIPSEND={check_link(link)}"
    length_text = "" if length is None else str(_int(length, 1, MAX_SEND_BYTES, "length"))
    if host is not None:
        if port is None:
            raise ValueError("a UDP destination needs a port")
        address = ip_literal(host)
        if address is None:
            raise ValueError(f"a UDP destination must be an IP address, not {host!r}")
        body += f",{length_text},{quote(str(address))},{check_port(port)}"
    elif length is not None:
        body += f",{length_text}"
    return _command(body)


def escape_variable_payload(data: bytes) -> bytes:
    """``data`` escaped for a Ctrl+Z-terminated CIPSEND, terminator included (3.4)."""
    out = bytearray()
    for byte in data:
        if byte in (CTRL_Z, ESC, ETX):
            out.append(ETX)
        out.append(byte)
    out.append(CTRL_Z)
    return bytes(out)


def ciprxget_mode(mode: int) -> Command:
    """``AT+CIPRXGET=0|1`` (3.5): direct push or buffer access."""
    return _command(f"+CIPRXGET={_int(mode, 0, 1, 'mode')}")


def ciprxget_read(link: int, length: int = MAX_READ_BYTES, *, hex: bool = False) -> Command:
    """``AT+CIPRXGET=2|3,<link>,<len>`` (3.5): read buffered data, raw or as hex."""
    limit = MAX_HEX_READ_BYTES if hex else MAX_READ_BYTES
    return _command(
        f"+CIPRXGET={3 if hex else 2},{check_link(link)},{_int(length, 1, limit, 'length')}"
    )


def ciprxget_pending(link: int) -> Command:
    """``AT+CIPRXGET=4,<link>`` (3.5): how much data waits."""
    return _command(f"+CIPRXGET=4,{check_link(link)}")


def cipclose(link: int) -> Command:
    """``AT+CIPCLOSE=<link>`` (3.6)."""
    return _command(f"+CIPCLOSE={check_link(link)}")


def ipaddr() -> Command:
    """``AT+IPADDR`` (3.7)."""
    return _command("+IPADDR")


def _switch(name: str, mode: int) -> Command:
    return _command(f"{name}={_int(mode, 0, 1, 'mode')}")


def ciphead(mode: int) -> Command:
    """``AT+CIPHEAD=0|1`` (3.8): ``+IPD<len>`` before pushed data."""
    return _switch("+CIPHEAD", mode)


def cipsrip(mode: int) -> Command:
    """``AT+CIPSRIP=0|1`` (3.9): ``RECV FROM:`` before pushed data."""
    return _switch("+CIPSRIP", mode)


def cipmode(mode: int) -> Command:
    """``AT+CIPMODE=0|1`` (3.10): command or transparent mode."""
    return _switch("+CIPMODE", mode)


def cipsendmode(mode: int) -> Command:
    """``AT+CIPSENDMODE=0|1`` (3.11): report sends once the peer has acknowledged them."""
    return _switch("+CIPSENDMODE", mode)


def ciptimeout(netopen_ms: int | None, cipopen_ms: int | None, cipsend_ms: int | None) -> Command:
    """``AT+CIPTIMEOUT=[<netopen>][,[<cipopen>][,<cipsend>]]`` (3.12), each 3000-120000 ms."""
    parts = [
        "" if v is None else str(_int(v, *CIPTIMEOUT_RANGE_MS, "timeout (ms)"))
        for v in (netopen_ms, cipopen_ms, cipsend_ms)
    ]
    return _command("+CIPTIMEOUT=" + ",".join(parts).rstrip(","))


_CIPCCFG_NAMES = ("NmRetry", "DelayTm", "Ack", "errMode", "HeaderType", "AsyncMode", "TimeoutVal")


def cipccfg(
    nm_retry: int = CIPCCFG_DEFAULTS[0],
    delay_ms: int = CIPCCFG_DEFAULTS[1],
    ack: int = CIPCCFG_DEFAULTS[2],
    err_mode: int = CIPCCFG_DEFAULTS[3],
    header_type: int = CIPCCFG_DEFAULTS[4],
    async_mode: int = CIPCCFG_DEFAULTS[5],
    timeout_ms: int = CIPCCFG_DEFAULTS[6],
) -> Command:
    """``AT+CIPCCFG=...`` (3.13) with the reference's ranges; defaults are the module's."""
    given = (nm_retry, delay_ms, ack, err_mode, header_type, async_mode, timeout_ms)
    values = [
        _int(value, low, high, what)
        for value, (low, high), what in zip(given, CIPCCFG_RANGES, _CIPCCFG_NAMES, strict=True)
    ]
    return _command("+CIPCCFG=" + ",".join(map(str, values)))


def serverstart(port: int, server: int, backlog: int = BACKLOG_DEFAULT) -> Command:
    """``AT+SERVERSTART=<port>,<server>,<backlog>`` (3.14); port 0: the module picks one."""
    return _command(
        f"+SERVERSTART={check_port(port, allow_zero=True)},{_int(server, 0, MAX_SERVER, 'server')},"
        f"{_int(backlog, *BACKLOG_RANGE, 'backlog')}"
    )


def serverstop(server: int) -> Command:
    """``AT+SERVERSTOP=<server>`` (3.15)."""
    return _command(f"+SERVERSTOP={_int(server, 0, MAX_SERVER, 'server')}")


def cipack(link: int) -> Command:
    """``AT+CIPACK=<link>`` (3.16): sent, acknowledged and received byte counts."""
    return _command(f"+CIPACK={check_link(link)}")


def cdnsgip(domain: str) -> Command:
    """``AT+CDNSGIP="<domain>"`` (3.17), the domain checked by its rules."""
    return _command(f"+CDNSGIP={quote(check_domain(domain), 'domain')}")


def csocketpn(ip_family: int) -> Command:
    """``AT+CSOCKETPN=1,<4|6>`` (3.18): 1 for IPv4 (wire value 1), 6 for IPv6."""
    if ip_family not in (CSOCKETPN_IPV4, 4, 6):
        raise ValueError("IP family must be 4 or 6")
    return _command(f"+CSOCKETPN=1,{CSOCKETPN_IPV6 if ip_family == 6 else CSOCKETPN_IPV4}")


def ctcpka(keepalive: bool, idle_min: int = 1, count: int = 9, interval_min: int = 1) -> Command:
    """``AT+CTCPKA=<on>,<idle>,<count>,<interval>`` (3.19)."""
    _, idle, probes, interval = CTCPKA_RANGES
    return _command(
        f"+CTCPKA={int(bool(keepalive))},{_int(idle_min, *idle, 'keepidle')},"
        f"{_int(count, *probes, 'keepcount')},{_int(interval_min, *interval, 'keepinterval')}"
    )


def cdnscfg(primary: str, secondary: str | None = None, ipv6: bool = False) -> Command:
    """``AT+CDNSCFG="<pri>"[,"<sec>"],<type>`` (3.20); the servers must be IP literals."""
    servers = [primary] if secondary is None else [primary, secondary]
    quoted = []
    for server in servers:
        address = ip_literal(server)
        if address is None or (address.version == 6) != ipv6:
            raise ValueError(f"DNS server must be an IPv{6 if ipv6 else 4} address: {server!r}")
        quoted.append(quote(str(address)))
    return _command(f"+CDNSCFG={','.join(quoted)},{int(ipv6)}")
