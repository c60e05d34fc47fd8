"""General commands a host needs (reference 3.21): identity, SIM, signal, registration.

The answers describe a healthy module registered on an NB-IoT cell; the
values come from :class:`~simsock.emulator.settings.ModuleConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ..at.note import SIM_READY
from .command import Command, Handler, Kind, ParamError, field_at, int_param, str_param

if TYPE_CHECKING:
    from .interpreter import Interpreter

__all__ = ["GENERAL_HANDLERS"]

#: ``+CEREG`` <stat> reported: 1 = registered, home network (3.21).
CEREG_REGISTERED_HOME: Final = 1
#: PDP types ``AT+CGDCONT`` accepts.
PDP_TYPES: Final = ("IP", "IPV6", "IPV4V6", "NON-IP")
#: ``AT+CPSI?`` answer: system mode, state, MCC-MNC, TAC, cell id, PCI, band,
#: EARFCN, DL/UL bandwidth, RSRQ, RSRP, RSSI, RSSNR.
CPSI_INFO: Final = "NB-IOT,Online,460-00,0x1816,25734721,282,EUTRAN-BAND8,3734,0,0,-10,-78,-68,13"


def _only_exec(command: Command) -> None:
    if command.kind is not Kind.EXEC:
        raise ParamError(f"{command.line!r}: only the bare form is supported")


def _at(m: Interpreter, command: Command) -> None:
    m.reply("OK")


def _echo(m: Interpreter, command: Command) -> None:
    # ATE / ATE0 off, ATE1 on; with sticky_echo the setting is kept but ignored.
    if command.args not in ("", "0", "1"):
        raise ParamError(command.line)
    m.settings.echo = command.args == "1"
    m.reply("OK")


def _identity(m: Interpreter, command: Command) -> None:
    if command.args not in ("", "0"):
        raise ParamError(command.line)
    cfg = m.config
    m.reply(
        f"Manufacturer: {cfg.manufacturer}",
        f"Model: {cfg.model}",
        f"Revision: {cfg.revision}",
        f"IMEI: {cfg.imei}",
        "OK",
    )


def _dtr(m: Interpreter, command: Command) -> None:
    # AT&D0/1/2: how DTR is used; the virtual line has no DTR, so it is only remembered.
    if command.args not in ("", "0", "1", "2"):
        raise ParamError(command.line)
    m.reply("OK")


def _verbose(m: Interpreter, command: Command) -> None:
    # Only ATV1 (verbose results, the default) exists here: numeric codes are not emulated.
    if command.args not in ("", "1"):
        raise ParamError(command.line)
    m.reply("OK")


def _online(m: Interpreter, command: Command) -> None:
    # ATO: back to data mode of the transparent link left with "+++" (section 2).
    if command.args not in ("", "0") or m.data_link is None:
        m.reply("ERROR")
        return
    m.enter_data_mode(m.data_link)


def _cpin(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.READ:
        m.reply(SIM_READY, "OK")
    elif command.kind is Kind.TEST:
        m.reply("OK")
    else:
        raise ParamError(command.line)


def _csq(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.TEST:
        m.reply("+CSQ: (0-31,99),(0-7,99)", "OK")
        return
    _only_exec(command)
    m.reply(f"+CSQ: {m.config.rssi},{m.config.ber}", "OK")


def _cereg(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.READ:
        m.reply(f"+CEREG: {m.settings.cereg_n},{CEREG_REGISTERED_HOME}", "OK")
    elif command.kind is Kind.TEST:
        m.reply("+CEREG: (0-5)", "OK")
    elif command.kind is Kind.SET:
        fields = command.fields()
        m.settings.cereg_n = int_param(field_at(fields, 0), 0, 5, default=0)
        m.reply("OK")
    else:
        raise ParamError(command.line)


def _cgdcont(m: Interpreter, command: Command) -> None:
    settings = m.settings
    if command.kind is Kind.READ:
        m.reply(f'+CGDCONT: 1,"IP","{settings.apn}","0.0.0.0",0,0', "OK")
    elif command.kind is Kind.TEST:
        m.reply('+CGDCONT: (1-15),"IP",,,(0-2),(0-4)', "OK")
    elif command.kind is Kind.SET:
        fields = command.fields()
        int_param(field_at(fields, 0), 1, 15)
        if len(fields) > 1:
            if str_param(fields[1]).upper() not in PDP_TYPES:
                raise ParamError(command.line)
            settings.apn = (
                str_param(field_at(fields, 2), allow_empty=True) if len(fields) > 2 else ""
            )
        m.reply("OK")
    else:
        raise ParamError(command.line)


def _cpsi(m: Interpreter, command: Command) -> None:
    if command.kind is Kind.READ:
        m.reply(f"+CPSI: {CPSI_INFO}", "OK")
    elif command.kind is Kind.TEST:
        m.reply("OK")
    else:
        raise ParamError(command.line)


def _fixed_line(text_of: str) -> Handler:
    """A command that answers one line of identity (``AT+CGMI`` and friends)."""

    def handler(m: Interpreter, command: Command) -> None:
        if command.kind is Kind.TEST:
            m.reply("OK")
            return
        _only_exec(command)
        m.reply(str(getattr(m.config, text_of)), "OK")

    return handler


GENERAL_HANDLERS: Final[dict[str, Handler]] = {
    "": _at,
    "E": _echo,
    "I": _identity,
    "&D": _dtr,
    "V": _verbose,
    "O": _online,
    "+CPIN": _cpin,
    "+CSQ": _csq,
    "+CEREG": _cereg,
    "+CGDCONT": _cgdcont,
    "+CPSI": _cpsi,
    "+CGMI": _fixed_line("manufacturer"),
    "+CGMM": _fixed_line("model"),
    "+CGMR": _fixed_line("revision"),
    "+CGSN": _fixed_line("imei"),
}
