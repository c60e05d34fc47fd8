"""``simsock at`` (an AT terminal) and ``simsock probe`` (what a module says about itself).

The terminal reads command lines from standard input, one at a time, so it
works at a keyboard and with a piped script alike. Each line goes through
:meth:`~simsock.Modem.command`, which checks it and refuses the commands
simsock itself must own (payload transfer, mode switches); the answer is
printed as the module gave it. Unsolicited result codes are printed as they
arrive, decoded by the same parser the engine uses (:func:`simsock.at.events.describe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TextIO

from .at import commands as at
from .at.bringup import synchronise
from .at.errors import ProtocolError
from .at.events import (
    CmeError,
    Echo,
    Error,
    Event,
    IpError,
    Line,
    Ok,
    Prompt,
    describe,
)
from .at.parser import Parser
from .driver.control import ModuleControl
from .driver.driver import Driver

__all__ = ["BareModule", "Terminal", "UrcPrinter", "open_bare", "probe", "run_terminal"]

#: Events that belong to a command's answer; everything else the parser makes is
#: unsolicited by nature (4.2). Plain lines are left to ``engine.on_unsolicited``,
#: which knows whether a command claimed them.
_ANSWER_EVENTS = (Ok, Error, CmeError, Prompt, Echo, IpError, Line)

#: ``AT+CEREG?`` <stat> values (3GPP TS 27.007; reference 3.21: 1 or 5 = registered).
CEREG_STATES = {
    0: "not registered, not searching",
    1: "registered, home network",
    2: "not registered, searching",
    3: "registration denied",
    4: "unknown",
    5: "registered, roaming",
}


class Terminal(Protocol):
    """What the terminal and the probe need of a module: a ``Modem`` or a :class:`BareModule`."""

    url: str

    @property
    def engine(self) -> Driver:
        """The driver that owns the port."""
        ...

    async def command(self, line: str) -> list[str]:
        """Send one checked AT command; its information lines."""
        ...


class BareModule(ModuleControl):
    """A module spoken to without bringing its network up: sync and ``ATE0`` only.

    For a module that cannot open its network (SIM locked by a PIN, not
    registered): ``simsock at --no-network`` and ``simsock probe --no-network``.
    """

    def __init__(self, driver: Driver, url: str) -> None:
        self._driver = driver
        self.url = url

    @property
    def engine(self) -> Driver:
        """The driver that owns the port."""
        return self._driver

    async def command(self, line: str) -> list[str]:
        """As :meth:`simsock.Modem.command`: checked, serialised, OSError on ``ERROR``."""
        response = await self._driver.execute(at.raw(line))
        response.raise_for_error()
        return response.lines


@contextlib.asynccontextmanager
async def open_bare(
    url: str, *, baudrate: int, wire_tap: Callable[[str, bytes], None] | None = None
) -> AsyncIterator[BareModule]:
    """Open ``url``, synchronise with ``AT`` and turn echo off; nothing else is sent."""
    import serial_asyncio

    reader, writer = await serial_asyncio.open_serial_connection(url=url, baudrate=baudrate)
    driver = Driver(reader, writer)
    driver.wire_tap = wire_tap
    driver.start()
    try:
        await driver.run(synchronise())
        (await driver.execute(at.echo(False))).raise_for_error()
        yield BareModule(driver, url)
    finally:
        await driver.close()


class UrcPrinter:
    """Prints unsolicited result codes as they arrive on a modem's port.

    Typed URCs (``+CIPRXGET: 1``, ``+IPCLOSE``, ``+CLIENT``, ``RDY``, pushed
    data ...) come from a parser of its own fed through ``engine.wire_tap``;
    plain lines come from ``engine.on_unsolicited``, i.e. only those that no
    command claimed (late results of the user's own commands included).
    Callbacks installed before are still called.
    """

    def __init__(self, modem: Terminal, out: TextIO) -> None:
        self._out = out
        self._parser = Parser()
        engine = modem.engine
        self._engine = engine
        self._tap_before = engine.wire_tap
        self._line_before = engine.on_unsolicited
        engine.wire_tap = self._tap
        engine.on_unsolicited = self._line

    def close(self) -> None:
        """Stop printing; the callbacks found at the start are put back."""
        self._engine.wire_tap = self._tap_before
        self._engine.on_unsolicited = self._line_before

    def _show(self, event: Event) -> None:
        print(f"<urc> {describe(event)}  [{type(event).__name__}]", file=self._out, flush=True)

    def _tap(self, direction: str, data: bytes) -> None:
        if self._tap_before is not None:
            self._tap_before(direction, data)
        if direction != "<-":
            return
        self._parser.feed(data)
        while True:
            try:
                event = self._parser.next_event()
            except ProtocolError:
                continue  # the engine logs it; the terminal shows what it can decode
            if event is None:
                return
            if not isinstance(event, _ANSWER_EVENTS):
                self._show(event)

    def _line(self, line: Line) -> None:
        if self._line_before is not None:
            self._line_before(line)
        self._show(line)


async def _stdin_lines(stream: TextIO) -> Any:
    """Lines of ``stream`` read in a thread, so the loop keeps printing URCs meanwhile."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, stream.readline)
        if not line:
            return
        yield line


async def run_terminal(
    modem: Terminal,
    *,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    linger_s: float = 0.5,
    echo: bool | None = None,
) -> int:
    """Send each line of ``stdin`` with ``modem.command()`` and print the answers.

    Blank lines and lines starting with ``#`` are skipped. At the end of the
    input the terminal waits ``linger_s`` for late results and URCs. With
    ``echo`` (default: when the input is not a terminal) each command is
    printed before its answer, so a script's output reads like a session.
    Returns the number of commands that failed (0: all answered ``OK``).
    """
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    if echo is None:
        echo = not stdin.isatty()
    interactive = stdin.isatty()
    failures = 0
    urcs = UrcPrinter(modem, out)
    try:
        if interactive:
            print(
                f"simsock AT terminal on {modem.url} (Ctrl-D ends; URCs show as <urc>)",
                file=out,
                flush=True,
            )
        async for raw in _stdin_lines(stdin):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if echo:
                print(f"> {line}", file=out, flush=True)
            failures += not await _one_command(modem, line, out)
        if linger_s > 0:
            await asyncio.sleep(linger_s)
    finally:
        urcs.close()
    return failures


async def _one_command(modem: Terminal, line: str, out: TextIO) -> bool:
    try:
        lines = await modem.command(line)
    except ValueError as exc:
        print(f"refused: {exc}", file=out, flush=True)
        return False
    except OSError as exc:
        print(f"ERROR ({exc})", file=out, flush=True)
        return False
    for text in lines:
        print(text, file=out)
    print("OK", file=out, flush=True)
    return True


# -- probe -------------------------------------------------------------------------


def _csq_text(lines: list[str]) -> str:
    for text in lines:
        if text.startswith("+CSQ:"):
            rssi_text, _, ber_text = text[5:].strip().partition(",")
            rssi = int(rssi_text)
            if rssi == 99:
                level = "not known or not detectable"
            elif rssi == 0:
                level = "-113 dBm or less"
            elif rssi >= 31:
                level = "-51 dBm or more"
            else:
                level = f"{-113 + 2 * rssi} dBm"
            return f"rssi {rssi} ({level}), ber {ber_text.strip()}"
    return " ".join(lines)


def _cereg_text(lines: list[str]) -> str:
    for text in lines:
        if text.startswith("+CEREG:"):
            fields = [f.strip() for f in text[7:].split(",")]
            stat = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else -1
            return f"{stat}: {CEREG_STATES.get(stat, 'unknown state')}"
    return " ".join(lines)


def _strip(prefix: str) -> Callable[[list[str]], str]:
    def text(lines: list[str]) -> str:
        return " ".join(x[len(prefix) :].strip() if x.startswith(prefix) else x for x in lines)

    return text


async def _fact(
    facts: dict[str, str], name: str, ask: Callable[[], Awaitable[Any]], shape: Any = str
) -> None:
    try:
        facts[name] = shape(await ask())
    except (OSError, ValueError, ProtocolError) as exc:
        facts[name] = f"unavailable ({exc})"


async def probe(modem: Terminal) -> dict[str, str]:
    """What the module says about itself, one question at a time; a failed one is noted.

    Works on a :class:`BareModule` too (network closed): the socket questions
    then say why they have no answer.
    """
    facts: dict[str, str] = {"port": modem.url}
    control = modem if isinstance(modem, ModuleControl) else None

    def ask(line: str) -> Callable[[], Awaitable[list[str]]]:
        return lambda: modem.command(line)

    await _fact(facts, "identity", ask("ATI"), "; ".join)
    await _fact(facts, "firmware", ask("AT+CGMR"), _strip("+CGMR:"))
    await _fact(facts, "imei", ask("AT+CGSN"), _strip("+CGSN:"))
    await _fact(facts, "sim", ask("AT+CPIN?"), _strip("+CPIN:"))
    await _fact(facts, "signal", ask("AT+CSQ"), _csq_text)
    await _fact(facts, "registration", ask("AT+CEREG?"), _cereg_text)
    await _fact(facts, "system", ask("AT+CPSI?"), _strip("+CPSI:"))
    await _fact(facts, "apn", ask("AT+CGDCONT?"), _strip("+CGDCONT:"))
    await _fact(facts, "network", ask("AT+NETOPEN?"), _netopen_text)
    await _fact(facts, "ip address", ask("AT+IPADDR"), _strip("+IPADDR:"))
    if control is None:
        return facts
    await _fact(facts, "dns servers", control.dns_servers, ", ".join)
    await _fact(
        facts,
        "capabilities",
        control.capabilities,
        lambda c: (
            f"links {c.links[0]}-{c.links[1]}, servers {c.servers[0]}-{c.servers[1]}, "
            f"send up to {c.max_send} bytes, {'/'.join(c.protocols)}"
        ),
    )
    await _fact(
        facts,
        "timeouts",
        control.timeouts,
        lambda t: (
            f"netopen {t.netopen_s:g} s, cipopen {t.cipopen_s:g} s, cipsend {t.cipsend_s:g} s"
        ),
    )
    await _fact(
        facts,
        "socket config",
        control.socket_config,
        lambda c: ", ".join(f"{k}={getattr(c, k)}" for k in c.__dataclass_fields__),
    )
    await _fact(facts, "receive mode", lambda: _rx_mode(modem))
    return facts


def _netopen_text(lines: list[str]) -> str:
    state = _strip("+NETOPEN:")(lines)
    return {"1": "open", "0": "closed (AT+NETOPEN? 0)"}.get(state, state)


async def _rx_mode(modem: Terminal) -> str:
    lines = await modem.command("AT+CIPRXGET?")
    mode = _strip("+CIPRXGET:")(lines)
    return {"0": "0 (direct push)", "1": "1 (buffer access)"}.get(mode, mode)


def print_facts(facts: dict[str, str], out: TextIO, *, as_json: bool = False) -> None:
    """``facts`` as aligned ``name: value`` lines, or as one JSON object."""
    if as_json:
        json.dump(facts, out, indent=2)
        out.write("\n")
        return
    width = max(len(name) for name in facts)
    for name, value in facts.items():
        print(f"{name:<{width}}  {value}", file=out)
    with contextlib.suppress(AttributeError):
        out.flush()
