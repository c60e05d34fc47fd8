"""The ``simsock`` command line (also ``python -m simsock``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simsock",
        description="asyncio networking over a SIMCom SIM7028's AT TCP/IP stack, "
        "with a virtual SIM7028 for when there is no hardware.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: AT trace)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="fetch a page through the modem (a virtual SIM7028 unless --port is given)",
        description="Fetch a web page through the modem with the asyncio streams API and show "
        "what crossed the serial line. With no --port, a virtual SIM7028 and a local HTTP "
        "server start on 127.0.0.1.",
    )
    demo.add_argument("--port", metavar="URL", help="a real module: a pyserial URL or device path")
    demo.add_argument("--baud", type=int, default=921600, help="line rate (default 921600)")
    demo.add_argument("--host", default="example.com", help="with --port: the web server")
    demo.add_argument("--http-port", type=int, default=80, help="with --port: its port")
    demo.add_argument("--path", default="/", help="with --port: the path to GET")

    emulate = sub.add_parser(
        "emulate",
        help="run a virtual SIM7028 on a pty or TCP port",
        description="Serve a virtual SIM7028 on a pty (default) or a TCP port, bridging its "
        "sockets to this machine's network (127.0.0.1 and ::1 unless --allow says more). "
        "Prints the URL to open, then runs until interrupted.",
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
    return parser


async def _emulate(args: argparse.Namespace) -> None:
    from .emulator import VirtualModem

    dns = {"localhost": "127.0.0.1"}
    for entry in args.dns:
        name, sep, ip = entry.partition("=")
        if not sep:
            raise SystemExit(f"--dns takes NAME=IP, not {entry!r}")
        dns[name] = ip
    allow = ("127.0.0.1", "::1", "localhost", *args.allow)
    async with VirtualModem(
        transport="tcp" if args.tcp else "pty",
        host=args.listen,
        port=args.tcp_port,
        baudrate=args.baud,
        latency_s=args.latency,
        allow_hosts=allow,
        dns=dns,
        seed=args.seed,
    ) as vm:
        print(vm.url, flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _build_parser().parse_args(argv)
    level = (
        logging.WARNING
        if args.verbose == 0
        else logging.INFO
        if args.verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "demo":
        from .demo import run_demo

        asyncio.run(
            run_demo(
                args.port,
                host=args.host,
                http_port=args.http_port,
                path=args.path,
                baudrate=args.baud,
            )
        )
        return 0
    if args.command == "emulate":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_emulate(args))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
