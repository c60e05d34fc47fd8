"""Which commands a user may send through ``modem.command()`` (the raw escape hatch).

The session owns the module's framing and state: the payload commands, the
modes, echo and result-code format, the network, the links and the servers,
and the settings it follows. A command that would change any of them behind
its back is refused here, naming the API that does the job, before anything
is written; see :func:`check_user_line`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .commands import _PRINTABLE, MAX_COMMAND_CHARS
from .note import ESCAPE_SEQUENCE

__all__ = ["check_user_line"]


def check_user_line(line: str) -> str:
    """A user's own command line for ``modem.command()``, checked so it cannot break the stack.

    Returns what follows ``AT``, as it goes on the wire.

    The line must be one printable-ASCII line of at most
    :data:`MAX_COMMAND_CHARS` characters that starts with ``AT`` and holds one
    command: no ``;`` outside quotes, no second command run on (``ATE0V1``,
    ``AT+CSQ+CPIN?``), no ``+++`` or ``A/``. Spaces outside quotes are dropped
    (the module ignores them) so the command's name, and with it its timeout
    and which answer lines are its own, is read right; letters keep their case.

    Which forms pass, by command (``ValueError`` naming the line and the
    reason for anything else, before anything is written):

    * the read (``AT+X?``) and test (``AT+X=?``) forms of every extended
      command, known or not, simsock's own ones included: they only answer;
    * a bare (execute) form only for the information commands of
      :data:`_EXTENDED_RULES` (``AT+CSQ``, ``AT+CGMR``, ``AT+IPADDR``, ...);
    * a setting form only for the harmless settings listed there
      (``AT+CTCPKA=``, ``AT+CDNSCFG=``, ``AT+CIPACK=<n>``, ``AT+CDNSGIP=``,
      ``AT+CPIN=``, ``AT+CMEE=``, ``AT+CEREG=``, ``AT+CIPRXGET=4,<n>``), with
      their arguments' shape checked;
    * basic commands by :data:`_BASIC_RULES`: ``AT``, ``ATE0``, ``ATV1``,
      ``ATQ0``, ``ATI[n]``, ``AT&D[n]``, ``AT&V`` and S-register reads
      (``ATS3?``, ``ATS3=?``).

    Commands the stack owns (payload, modes, framing, the network, links,
    servers, settings simsock follows) are refused as "managed by simsock
    itself" with the API that does the job; any other bare or setting form,
    of a command simsock does not know, is refused as not known to be safe.
    """
    if not isinstance(line, str):
        raise TypeError(f"command must be a str, not {type(line).__name__}")
    if not _PRINTABLE.match(line) or len(line) > MAX_COMMAND_CHARS:
        raise ValueError(
            f"a command is one line of at most {MAX_COMMAND_CHARS} printable ASCII characters"
        )
    special = line.strip().upper()
    if special.startswith((ESCAPE_SEQUENCE, "A/")):
        reason = _ESCAPE_WHY if special.startswith("+") else _REPEAT_WHY
        raise ValueError(f"{line!r} is managed by simsock itself: {reason}")
    if not line[:2].upper() == "AT":
        raise ValueError(f"a command starts with AT: {line!r}")
    if line.count('"') % 2:
        raise ValueError(f"unbalanced quotes in {line!r}")
    outside_quotes = line.split('"')[::2]
    if any(";" in part for part in outside_quotes):
        raise ValueError(f"chained commands (;) are not accepted in {line!r}; send one at a time")
    body = _compact(line[2:])
    refusal = _refusal(_outside_upper(body))
    if refusal is not None:
        owned, reason = refusal
        verdict = "is managed by simsock itself" if owned else "is not accepted"
        raise ValueError(f"{line!r} {verdict}: {reason}")
    return body


def _compact(body: str) -> str:
    """``body`` without the spaces outside its quoted strings."""
    parts = body.split('"')
    parts[::2] = [part.replace(" ", "") for part in parts[::2]]
    return '"'.join(parts)


def _outside_upper(body: str) -> str:
    """``body`` upper-cased outside its quoted strings (names and keywords are case-blind)."""
    parts = body.split('"')
    parts[::2] = [part.upper() for part in parts[::2]]
    return '"'.join(parts)


@dataclass(frozen=True, slots=True)
class _Rule:
    """What :func:`raw` lets through of one command besides its read and test forms.

    ``forms`` must match, in full, what follows the name: ``""`` for the bare
    form, ``"=..."`` for a setting, the digits for a basic command (``"0"``
    of ``ATE0``). ``None`` lets nothing else through. ``why`` is the reason
    given for any other form; ``owned`` says the stack itself manages it.
    """

    forms: re.Pattern[str] | None
    why: str
    owned: bool = True


def _owned(why: str, forms: str | None = None) -> _Rule:
    return _Rule(None if forms is None else re.compile(forms), why)


def _allowed(forms: str, why: str) -> _Rule:
    return _Rule(re.compile(forms), why, owned=False)


def _info(name: str) -> _Rule:
    return _allowed("", f"AT{name} is accepted bare, or in its read (?) and test (=?) forms")


_USE_SOCKETS = "use modem.open_connection() or modem.create_datagram_endpoint()"
_ESCAPE_WHY = "+++ leaves transparent data mode; the session escapes and returns itself"
_REPEAT_WHY = "A/ repeats the previous command, which may be one of simsock's own"
_MORE_THAN_ONE = "it is not one command (a second one runs on, or text follows); send one at a time"

#: Extended commands simsock knows, by name. Their read and test forms always pass.
_EXTENDED_RULES: dict[str, _Rule] = {
    # Information: the bare form answers and changes nothing.
    **{
        name: _info(name)
        for name in (
            "+CSQ",
            "+CGMI",
            "+CGMM",
            "+CGMR",
            "+CGSN",
            "+GMI",
            "+GMM",
            "+GMR",
            "+GSN",
            "+CIMI",
            "+CCID",
            "+CICCID",
            "+ICCID",
            "+CNUM",
            "+CEER",
            "+CLAC",
            "+CGPADDR",
            "+IPADDR",
            "+SIMCOMATI",
        )
    },
    # Harmless settings: nothing the stack assumes depends on them.
    "+CTCPKA": _allowed(
        r"=\d+(,\d+){0,3}", "AT+CTCPKA takes <keepalive>,<keepidle>,<keepcount>,<keepinterval>"
    ),
    "+CDNSCFG": _allowed(
        r'="[^"]*"(,"[^"]*")?(,\d)?', 'AT+CDNSCFG takes "<pri_dns>"[,"<sec_dns>"][,<type>]'
    ),
    "+CIPACK": _allowed(r"=\d+", "AT+CIPACK takes one link number"),
    "+CDNSGIP": _allowed(r'="[^"]*"', 'AT+CDNSGIP takes one "<domain>"'),
    "+CPIN": _allowed(r'="[^"]*"(,"[^"]*")?', 'AT+CPIN takes "<pin>"[,"<new pin>"]'),
    "+CMEE": _allowed(r"(=[0-2])?", "AT+CMEE takes 0, 1 or 2"),
    "+CEREG": _allowed(r"=[0-5]", "AT+CEREG takes 0 to 5"),
    # Receive path and payload.
    "+CIPRXGET": _owned(
        "=0|1 switch the receive mode (open_modem(rx_mode=...) chooses it) and =2|3 read"
        " payload the sockets wait for; only =4,<link> (bytes waiting) is accepted",
        r"=4,\d+",
    ),
    "+CIPSEND": _owned("AT+CIPSEND moves payload; write to a socket's transport instead"),
    "+CIPHEAD": _owned("the +IPD header frames pushed data; simsock sets it at start-up"),
    "+CIPSRIP": _owned("the RECV FROM line routes pushed data; simsock sets it at start-up"),
    "+CIPCCFG": _owned(
        "it sets errMode and HeaderType, which simsock's parser relies on (bare, it restores"
        " their defaults); change the other fields with modem.set_socket_config()"
    ),
    "+CIPMODE": _owned(
        "it switches transparent mode, which is chosen at start-up: open_modem(transparent=...)"
    ),
    # Settings the session follows.
    "+CIPTIMEOUT": _owned(
        "the session follows the module's timeouts only through modem.set_timeouts()"
    ),
    "+CIPSENDMODE": _owned("drain() follows the send mode only through modem.set_send_mode()"),
    "+CSOCKETPN": _owned(
        "the PDP profile is chosen before the network opens: open_modem(ip_family=...)"
    ),
    "+CGDCONT": _owned(
        "it changes the PDP context under the network simsock opened; pass open_modem(apn=...)"
    ),
    # The network, links and servers.
    "+NETOPEN": _owned("the session tracks the network; open_modem() opens it"),
    "+NETCLOSE": _owned(
        "the session tracks the network; closing it under the session loses every link"
    ),
    "+CIPOPEN": _owned(f"links are the session's: {_USE_SOCKETS}"),
    "+CIPCLOSE": _owned("links are the session's: close the socket's transport instead"),
    "+SERVERSTART": _owned("servers are the session's: use modem.start_server()"),
    "+SERVERSTOP": _owned("servers are the session's: close the server instead"),
    # The serial line and the module itself.
    "+IPR": _owned("it changes the baud rate under simsock's open serial port"),
    "+ICF": _owned("it changes the character framing under simsock's open serial port"),
    "+IFC": _owned("it changes the flow control under simsock's open serial port"),
    "+CMUX": _owned("it turns the serial line into a multiplexer simsock does not speak"),
    "+CSCLK": _owned("sleep mode stops the module answering on the serial line"),
    "+CFUN": _owned("it switches the radio or restarts the module under the open network"),
    "+CRESET": _owned("it restarts the module under the open network and links"),
    "+CPOF": _owned("it powers the module off under the open network and links"),
    "+CPOWD": _owned("it powers the module off under the open network and links"),
    "+CGATT": _owned("detaching drops the network under the session"),
    "+CGACT": _owned("deactivating the PDP context drops the network under the session"),
}

#: Basic commands by letter (``&`` ones with theirs); ``forms`` matches their digits.
_BASIC_RULES: dict[str, _Rule] = {
    "": _allowed("", "AT alone takes nothing"),
    "E": _owned(
        "echo is off while simsock runs; ATE1 would echo every command among the answers",
        r"0?",
    ),
    "V": _owned(
        "ATV0 switches to numeric result codes (0 for OK), which simsock's parser does not read",
        r"1",
    ),
    "Q": _owned("ATQ1 silences the result codes, so no command would ever finish", r"0?"),
    "Z": _owned("ATZ restarts the module's settings; simsock owns them"),
    "&F": _owned("AT&F restores the factory settings (echo on among them); simsock owns them"),
    "O": _owned("ATO goes back to transparent data mode; the session does that itself"),
    "A": _owned("ATA answers a call, and the module leaves command mode"),
    "D": _owned("ATD dials a call, and the module leaves command mode"),
    "I": _allowed(r"\d*", "ATI takes only a number"),
    "&D": _allowed(r"[0-2]?", "AT&D takes 0, 1 or 2"),
    "&V": _allowed("", "AT&V takes nothing"),
}

_S_REGISTER_WHY = (
    "S-registers hold the line ending (S3), the line feed (S4) and timings that frame"
    " every line simsock reads"
)
_EXTENDED_NAME = re.compile(r"([+$^*#%][A-Z][A-Z0-9_]*)(.*)\Z")
_BASIC_NAME = re.compile(r"(&?[A-Z])(\d*)(.*)\Z")
#: Another command's start in what follows a name, outside quotes.
_NEXT_COMMAND = re.compile(r"AT|[+$^*#%&][A-Z]")


def _refusal(body: str) -> tuple[bool, str] | None:
    """Why ``body`` (after ``AT``, compacted, upper-case outside quotes) is refused, or ``None``.

    The reason comes with whether the stack itself manages the command.
    """
    extended = _EXTENDED_NAME.match(body)
    if extended is not None:
        name, form = extended.groups()
        if form in ("?", "=?"):
            return None
        if form and (form[0] != "=" or _NEXT_COMMAND.search("".join(form.split('"')[::2]))):
            return False, _MORE_THAN_ONE
        rule = _EXTENDED_RULES.get(name)
        if rule is None:
            return False, (
                f"AT{name} is not a command simsock knows to be harmless; only its read"
                f" (AT{name}?) and test (AT{name}=?) forms are accepted"
            )
    else:
        basic = _BASIC_NAME.match(body) if body else None
        if basic is None:
            if body:
                return False, "it is not an AT command simsock can read"
            name, form, rest = "", "", ""
        else:
            name, form, rest = basic.groups()
        if name == "S" and form:
            if rest in ("?", "=?"):
                return None
            if rest.startswith("="):
                return True, _S_REGISTER_WHY
        if rest and rest not in ("?", "=?"):
            return False, _MORE_THAN_ONE
        form += rest
        rule = _BASIC_RULES.get(name)
        if rule is None:
            return False, f"AT{name} is not a command simsock knows to be harmless"
    if rule.forms is not None and rule.forms.fullmatch(form):
        return None
    return rule.owned, rule.why


# --- socket service (3.1-3.20) ----------------------------------------------------
