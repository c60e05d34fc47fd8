"""The ``simsock`` command line (also ``python -m simsock``).

Every command that talks to a module takes ``--port URL`` (any pyserial URL
or device path); without it a virtual SIM7028 starts in the same process,
so each command also works with no hardware. ``--trace FILE`` records every
byte both ways (:mod:`simsock.trace`); ``-v`` / ``-vv`` turn on logging.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from . import __version__
from .cli_options import global_options, modem_options, modem_session
from .proxy import cli as proxy_cli

__all__ = ["main", "modem_session"]

logger = logging.getLogger("simsock.cli")

EPILOG = """\
examples:
  simsock demo                          fetch a page through a virtual SIM7028
  simsock emulate --tcp                 serve a virtual SIM7028; prints socket://127.0.0.1:PORT
  simsock probe --port /dev/ttyUSB2     what a real module says about itself
  echo AT+CSQ | simsock at              an AT terminal (interactive or scripted)
  simsock get http://127.0.0.1:8000/ -o page.html
  simsock --trace wire.log probe        then: simsock trace-replay wire.log
  simsock bench --quick                 throughput over virtual serial lines

Without --port, commands start their own virtual SIM7028 (on a pty); it
reaches 127.0.0.1 and ::1 only.  Docs: docs/index.md.
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simsock",
        description="asyncio networking over a SIMCom SIM7028's AT TCP/IP stack, "
        "with a virtual SIM7028 for when there is no hardware.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"simsock {__version__}")
    global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        child = sub.add_parser(name, help=help, description=description)
        global_options(child, top=False)
        return child

    demo = command(
        "demo",
        "fetch a page through the modem and show the AT exchange",
        "Fetch a web page through the modem with the asyncio streams API and show what "
        "crossed the serial line. With no --port, a virtual SIM7028 and a local HTTP server "
        "start on 127.0.0.1.",
    )
    demo.add_argument("--port", metavar="URL", help="a real module: a pyserial URL or device path")
    demo.add_argument("--baud", type=int, default=921600, help="line rate (default 921600)")
    demo.add_argument("--host", default="example.com", help="with --port: the web server")
    demo.add_argument("--http-port", type=int, default=80, help="with --port: its port")
    demo.add_argument("--path", default="/", help="with --port: the path to GET")

    emulate = command(
        "emulate",
        "run a virtual SIM7028 on a pty or TCP port",
        "Serve a virtual SIM7028 on a pty (default) or a TCP port, bridging its sockets to "
        "this machine's network (127.0.0.1 and ::1 unless --allow says more). Prints the URL "
        "to open on the first line of standard output, then runs until interrupted.",
    )
    emulate.add_argument("--tcp", action="store_true", help="serve on a TCP port, not a pty")
    emulate.add_argument("--listen", default="127.0.0.1", help="address for --tcp")
    emulate.add_argument("--tcp-port", type=int, default=0, help="port for --tcp (0: any)")
    emulate.add_argument("--baud", type=int, default=None, help="pace the line at this rate")
    emulate.add_argument(
        "--latency", type=float, default=0.0, help="module latency per command (s)"
    )
    emulate.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="HOST",
        help="also let the bridge reach HOST",
    )
    emulate.add_argument(
        "--dns", action="append", default=[], metavar="NAME=IP", help="an AT+CDNSGIP answer"
    )
    emulate.add_argument("--seed", type=int, default=None, help="seed of the random source")
    emulate.add_argument(
        "--firmware",
        choices=("sim7028", "a76xx"),
        default="sim7028",
        help="the result shapes to print: the SIM7028's (default) or the A76xx family's",
    )
    faults = emulate.add_argument_group(
        "faults and quirks",
        "Random faults draw from one source seeded with --seed (the seed is printed on "
        "standard error, so a run can be replayed).",
    )
    faults.add_argument(
        "--preset",
        choices=("calm", "hostile"),
        default=None,
        help="hostile: output in random pieces, jittery latency, unknown URCs, forgotten "
        "+CIPRXGET notices (the options below override single faults)",
    )
    faults.add_argument(
        "--no-echo", action="store_true", help="start with echo off (a real module starts ATE1)"
    )
    faults.add_argument(
        "--sticky-echo", action="store_true", help="keep echoing whatever ATE0 says"
    )
    faults.add_argument(
        "--urc-noise",
        action="append",
        default=[],
        metavar="LINE",
        help="inject this URC line between response lines, results and prompts (repeatable)",
    )
    faults.add_argument(
        "--line-noise", type=float, metavar="P", help="probability a byte on the line is corrupted"
    )
    faults.add_argument(
        "--drop-bytes", type=float, metavar="P", help="probability a byte on the line is lost"
    )
    faults.add_argument(
        "--chunking",
        action="store_true",
        default=None,
        help="deliver output in random small pieces",
    )
    faults.add_argument(
        "--jitter", type=float, metavar="S", help="add 0..S seconds to each command's latency"
    )
    faults.add_argument(
        "--forget-data-urc",
        type=float,
        metavar="P",
        help="probability a +CIPRXGET: 1 notice is not sent (3.5 allows it)",
    )
    faults.add_argument(
        "--send-buffer-full",
        type=float,
        metavar="P",
        help="probability an AT+CIPSEND is answered +CIPSEND: <link>,<n>,0",
    )
    faults.add_argument(
        "--connect-timeout-host",
        action="append",
        default=None,
        metavar="HOST",
        help="TCP connects to HOST never complete (+CIPOPEN: <link>,10); repeatable",
    )
    faults.add_argument(
        "--connect-timeout",
        type=float,
        metavar="S",
        help="when those connects time out (default: AT+CIPTIMEOUT's)",
    )
    faults.add_argument(
        "--rx-buffer",
        type=int,
        default=64 * 1024,
        metavar="BYTES",
        help="each link's receive buffer in the module (default 65536)",
    )
    faults.add_argument(
        "--drop-network-after",
        type=float,
        default=None,
        metavar="S",
        help="after S seconds the network drops (+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY)",
    )
    faults.add_argument(
        "--restart-after",
        type=float,
        default=None,
        metavar="S",
        help="after S seconds the module restarts (RDY; links, servers and settings lost)",
    )

    at_cmd = command(
        "at",
        "an AT terminal: type commands, see answers and URCs",
        "Read AT command lines from standard input (a keyboard or a piped script), send "
        "each through the engine (checked; payload and mode-switching commands are refused) "
        "and print the answer. Unsolicited result codes are printed as they arrive, "
        "decoded by simsock's parser. Lines starting with # are comments. The exit status "
        "is 1 when a command failed.",
    )
    modem_options(at_cmd)
    at_cmd.add_argument(
        "--linger",
        type=float,
        default=0.5,
        metavar="S",
        help="at the end of the input, wait S seconds for late results and URCs (default 0.5)",
    )

    probe = command(
        "probe",
        "show what the module says about itself",
        "Ask the module for its identity and firmware (ATI, AT+CGMR), SIM (AT+CPIN?), "
        "signal (AT+CSQ), registration (AT+CEREG?), system (AT+CPSI?), network state, IP "
        "address, DNS servers, capabilities, timeouts and socket configuration.",
    )
    modem_options(probe)
    probe.add_argument("--json", action="store_true", help="print one JSON object")

    get = command(
        "get",
        "HTTP(S) GET through the module, with a progress bar",
        "Fetch URL through the module; the body goes to standard output or -o FILE, a "
        "progress bar to standard error. Without --port the URL's host must be 127.0.0.1, "
        "::1 or localhost (the virtual SIM7028 reaches nothing else).",
    )
    get.add_argument("url", metavar="URL", help="http:// or https:// URL")
    get.add_argument("-o", "--output", metavar="FILE", help="write the body here, not to stdout")
    get.add_argument(
        "--client",
        choices=("auto", "httpx", "streams"),
        default="auto",
        help="httpx (simsock.ecosystem.ModemTransport) or the built-in HTTP/1.1 client over "
        "asyncio streams (default: httpx when installed)",
    )
    get.add_argument("--cacert", metavar="FILE", help="also trust the CAs in FILE for HTTPS")
    get.add_argument("-k", "--insecure", action="store_true", help="do not verify certificates")
    modem_options(get)

    replay = command(
        "trace-replay",
        "decode a wire trace with simsock's parser",
        "Feed the module-to-host bytes of a trace written with --trace to simsock's parser "
        "and print each event (the host's writes are shown in order too). Exit status 1 "
        "when the parser found a protocol error.",
    )
    from .trace import add_replay_arguments

    add_replay_arguments(replay)
    proxy_cli.add_parser(sub)

    sub.add_parser(
        "bench",
        help="benchmarks over virtual serial lines ('simsock bench --help')",
        add_help=False,
        description="Every argument after 'bench' goes to simsock.bench.",
    )
    return parser


async def _run_at(args: argparse.Namespace) -> int:
    from .terminal import run_terminal

    async with modem_session(args) as modem:
        failures = await run_terminal(modem, linger_s=args.linger)
    return 1 if failures else 0


async def _run_probe(args: argparse.Namespace) -> int:
    from .terminal import print_facts, probe

    async with modem_session(args) as modem:
        facts = await probe(modem)
    print_facts(facts, sys.stdout, as_json=args.json)
    return 0


_LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")


async def _run_get(args: argparse.Namespace) -> int:
    from .fetch import fetch_url, have_httpx, split_url

    _, host, _, _ = split_url(args.url)
    if args.port is None and host not in _LOCAL_HOSTS:
        print(
            f"simsock get: {host} is not on this machine; the virtual SIM7028 only reaches "
            "127.0.0.1, ::1 and localhost. Give --port for a real module.",
            file=sys.stderr,
        )
        return 2
    if args.client == "httpx" and not have_httpx():
        print("simsock get: --client httpx needs 'pip install simsock[httpx]'", file=sys.stderr)
        return 2
    async with modem_session(args) as modem:
        if args.output:
            # A local file opens at once; nothing is waiting on the loop yet.
            with open(args.output, "wb") as sink:  # noqa: ASYNC230
                result = await _fetch(fetch_url, modem, args, sink)
        else:
            result = await _fetch(fetch_url, modem, args, sys.stdout.buffer)
    print(f"HTTP {result.status} {result.reason} ({result.client})", file=sys.stderr)
    return 0 if result.status < 400 else 1


async def _fetch(fetch_url: Any, modem: Any, args: argparse.Namespace, sink: Any) -> Any:
    return await fetch_url(
        modem,
        args.url,
        sink,
        progress_to=sys.stderr,
        client=args.client,
        cafile=args.cacert,
        insecure=args.insecure,
    )


async def _emulate(args: argparse.Namespace) -> None:
    from .emulator import VirtualModem
    from .emulator.firmware import FIRMWARE_PRESETS

    dns = {"localhost": "127.0.0.1"}
    for entry in args.dns:
        name, sep, ip = entry.partition("=")
        if not sep:
            raise SystemExit(f"--dns takes NAME=IP, not {entry!r}")
        dns[name] = ip
    allow = ("127.0.0.1", "::1", "localhost", *args.allow)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with VirtualModem(
        transport="tcp" if args.tcp else "pty",
        host=args.listen,
        port=args.tcp_port,
        baudrate=args.baud,
        latency_s=args.latency,
        allow_hosts=allow,
        dns=dns,
        echo=not args.no_echo,
        sticky_echo=args.sticky_echo,
        urc_noise=args.urc_noise,
        seed=args.seed,
        firmware=FIRMWARE_PRESETS[args.firmware](),
        rx_buffer_bytes=args.rx_buffer,
        preset=args.preset,
        line_noise=args.line_noise,
        drop_bytes=args.drop_bytes,
        chunking=args.chunking,
        jitter_s=args.jitter,
        forget_data_urc=args.forget_data_urc,
        send_buffer_full=args.send_buffer_full,
        connect_timeout_hosts=args.connect_timeout_host,
        connect_timeout_s=args.connect_timeout,
    ) as vm:
        print(vm.url, flush=True)
        print(
            f"virtual SIM7028 on {vm.url}, seed {vm.seed}, firmware {args.firmware}",
            file=sys.stderr,
            flush=True,
        )
        if args.drop_network_after is not None:
            loop.call_later(args.drop_network_after, vm.drop_network)
        if args.restart_after is not None:
            loop.call_later(args.restart_after, vm.restart)
        await stop.wait()


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _run(coro: Coroutine[Any, Any, object]) -> int:
    try:
        status = asyncio.run(coro)
        return status if isinstance(status, int) else 0
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        from .bench import main as bench_main  # lazy: loads nothing unless asked

        return bench_main(extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _configure_logging(args.verbose)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return _run(
                run_demo(
                    args.port,
                    host=args.host,
                    http_port=args.http_port,
                    path=args.path,
                    baudrate=args.baud,
                    trace=args.trace,
                )
            )
        if args.command == "emulate":
            return _run(_emulate(args))
        if args.command == "trace-replay":
            from .trace import run_replay

            return run_replay(args)
        runners = {"at": _run_at, "probe": _run_probe, "get": _run_get, "proxy": proxy_cli.run}
        return _run(runners[args.command](args))
    except BrokenPipeError:
        # The reader of our output went away (| head): not an error of ours.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, ValueError, EOFError) as exc:
        # Failures a user can act on (no such port, module silent, bad URL): one line.
        print(f"simsock {args.command}: {exc or type(exc).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
