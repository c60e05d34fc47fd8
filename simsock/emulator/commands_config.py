"""Socket-service settings: CIPHEAD, CIPSRIP, CIPMODE, CIPSENDMODE, CIPTIMEOUT,
CIPCCFG, CSOCKETPN, CTCPKA, CDNSCFG (reference 3.8-3.13, 3.18-3.20).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Final

from ..at.note import (
    CIPCCFG_DEFAULTS,
    CIPCCFG_RANGES,
    CIPTIMEOUT_DEFAULT_MS,
    CIPTIMEOUT_RANGE_MS,
    CSOCKETPN_IPV4,
    CSOCKETPN_IPV6,
    CTCPKA_RANGES,
)
from .command import Command, Handler, Kind, ParamError, field_at, int_param, only_field, str_param

if TYPE_CHECKING:
    from .interpreter import Interpreter

__all__ = ["CONFIG_HANDLERS"]

logger = logging.getLogger("simsock.emulator")

#: ``AT+CSOCKETPN`` <ip_family> → the family NETOPEN brings up (3.18).
PDP_FAMILY_BY_PARAM: Final = {CSOCKETPN_IPV4: 4, CSOCKETPN_IPV6: 6}
#: ``AT+CDNSCFG=?`` (2.1.20): the original reads "(Primary DNS),(Secondary DNS),type"
#: in translation, without quotes, as it lost them around every string (the
#: reference's table); SIMCom's other modules print ``("Primary DNS"),("Secondary DNS")``.
CDNSCFG_TEST: Final = '+CDNSCFG: ("Primary DNS"),("Secondary DNS"),type'


def _switch(name: str, attribute: str, default: int) -> Handler:
    """A 0/1 setting with the shape of 3.8: ``=?``, ``?``, ``=<n>``, bare = default."""

    def handler(m: Interpreter, command: Command) -> None:
        if command.kind is Kind.TEST:
            m.reply(f"{name}: (0-1)", "OK")
        elif command.kind is Kind.READ:
            m.reply(f"{name}: {getattr(m.settings, attribute)}", "OK")
        else:
            value = default if command.kind is Kind.EXEC else int_param(only_field(command), 0, 1)
            setattr(m.settings, attribute, value)
            m.reply("OK")

    return handler


_cipmode_switch = _switch("+CIPMODE", "cipmode", 0)


def _cipmode(m: Interpreter, command: Command) -> None:
    if command.kind in (Kind.SET, Kind.EXEC) and m.network_open:
        raise ParamError("CIPMODE is set before AT+NETOPEN (3.10)")
    _cipmode_switch(m, command)


def _ciptimeout(m: Interpreter, command: Command) -> None:
    timeouts = m.settings.timeouts_ms
    if command.kind is Kind.READ:
        m.reply("+CIPTIMEOUT: {},{},{}".format(*timeouts), "OK")
    elif command.kind is Kind.TEST:
        span = "({}-{})".format(*CIPTIMEOUT_RANGE_MS)
        m.reply(f"+CIPTIMEOUT: {span},{span},{span}", "OK")
    elif command.kind is Kind.SET:
        fields = command.fields()
        if len(fields) > len(timeouts):
            raise ParamError(command.line)
        chosen = [
            int_param(field_at(fields, i), *CIPTIMEOUT_RANGE_MS, default=timeouts[i])
            for i in range(len(timeouts))
        ]
        m.settings.timeouts_ms = chosen
        m.reply("OK")
    else:
        m.settings.timeouts_ms = [CIPTIMEOUT_DEFAULT_MS] * 3
        m.reply("OK")


def _cipccfg(m: Interpreter, command: Command) -> None:
    current = m.settings.cipccfg
    if command.kind is Kind.TEST:
        spans = ",".join(
            f"({low}-{high})" if low != high else f"({low})" for low, high in CIPCCFG_RANGES
        )
        m.reply(f"+CIPCCFG: {spans}", "OK")
    elif command.kind is Kind.READ:
        m.reply("+CIPCCFG: " + ",".join(map(str, current)), "OK")
    elif command.kind is Kind.EXEC:
        m.settings.cipccfg = list(CIPCCFG_DEFAULTS)
        m.reply("OK")
    else:
        fields = command.fields()
        if len(fields) > len(CIPCCFG_RANGES):
            raise ParamError(command.line)
        m.settings.cipccfg = [
            int_param(field_at(fields, i), low, high, default=current[i])
            for i, (low, high) in enumerate(CIPCCFG_RANGES)
        ]
        m.reply("OK")


def _csocketpn(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply(f"+CSOCKETPN: 1,({CSOCKETPN_IPV4},{CSOCKETPN_IPV6})", "OK")
    elif command.kind is Kind.READ:
        param = CSOCKETPN_IPV6 if m.settings.pdp_family == 6 else CSOCKETPN_IPV4
        m.reply(f"+CSOCKETPN: 1,{param}", "OK")
    elif command.kind is Kind.SET:
        fields = command.fields()
        int_param(field_at(fields, 0), 1, 1)
        family = field_at(fields, 1)
        if len(fields) != 2 or not isinstance(family, int) or family not in PDP_FAMILY_BY_PARAM:
            raise ParamError(command.line)
        if m.network_open:
            raise ParamError("the PDP profile cannot change while the network is open")
        m.settings.pdp_family = PDP_FAMILY_BY_PARAM[family]
        m.reply("OK")
    else:
        raise ParamError(command.line)


def _ctcpka(m: Interpreter, command: Command) -> None:
    current = m.settings.tcp_keepalive
    if command.kind is Kind.TEST:
        m.reply("OK")  # no ranges: the test command answers only OK (2.1.19)
    elif command.kind is Kind.READ:
        m.reply("+CTCPKA: {},{},{},{}".format(*current), "OK")
    elif command.kind is Kind.SET:
        fields = command.fields()
        if not fields or len(fields) > len(CTCPKA_RANGES) or fields[0] is None:
            raise ParamError(command.line)
        values = [
            int_param(field_at(fields, i), low, high, default=current[i])
            for i, (low, high) in enumerate(CTCPKA_RANGES)
        ]
        m.settings.tcp_keepalive = (values[0], values[1], values[2], values[3])
        m.reply("OK")
    else:
        raise ParamError(command.line)


def _address(value: str, version: int) -> str:
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        raise ParamError(f"{value!r} is not an IP address") from None
    if parsed.version != version:
        raise ParamError(f"{value!r} is not an IPv{version} address")
    return value


def _cdnscfg(m: Interpreter, command: Command) -> None:
    settings = m.settings
    if command.kind is Kind.READ:
        # One line per family, each naming it (2.1.20's read command and example).
        m.reply(
            "Primary IPv4 DNS:{},Secondary IPv4 DNS:{}".format(*settings.dns_v4),
            "Primary IPv6 DNS:{},Secondary IPv6 DNS:{}".format(*settings.dns_v6),
            "OK",
        )
    elif command.kind is Kind.TEST:
        m.reply(CDNSCFG_TEST, "OK")
    elif command.kind is Kind.SET:
        fields = command.fields()
        # "<pri>"[,"<sec>"][,<type>]: the type may follow the primary directly.
        kind = fields[-1] if len(fields) > 1 and isinstance(fields[-1], int) else 0
        names = fields[:-1] if len(fields) > 1 and isinstance(fields[-1], int) else fields
        if not 1 <= len(names) <= 2:
            raise ParamError(command.line)
        version = {0: 4, 1: 6}.get(int_param(kind, 0, 1))
        assert version is not None
        old = settings.dns_v4 if version == 4 else settings.dns_v6
        primary = _address(str_param(names[0]), version)
        secondary = _address(str_param(names[1]), version) if len(names) > 1 else old[1]
        if version == 4:
            settings.dns_v4 = (primary, secondary)
        else:
            settings.dns_v6 = (primary, secondary)
        m.reply("OK")
    else:
        raise ParamError(command.line)


CONFIG_HANDLERS: Final[dict[str, Handler]] = {
    "+CIPHEAD": _switch("+CIPHEAD", "ciphead", 1),
    "+CIPSRIP": _switch("+CIPSRIP", "cipsrip", 1),
    "+CIPMODE": _cipmode,
    "+CIPSENDMODE": _switch("+CIPSENDMODE", "cipsendmode", 0),
    "+CIPTIMEOUT": _ciptimeout,
    "+CIPCCFG": _cipccfg,
    "+CSOCKETPN": _csocketpn,
    "+CTCPKA": _ctcpka,
    "+CDNSCFG": _cdnscfg,
}
