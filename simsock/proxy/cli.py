"""``simsock proxy``: the SOCKS5 server on the command line.

Point any SOCKS5 client at it (``curl --socks5-hostname 127.0.0.1:1080 URL``,
a browser, ``ssh -o ProxyCommand``...) and its connections go over the
module. The first line of standard output says where it listens
(``socks5://127.0.0.1:1080``; with ``--json``, a JSON object with ``"event":
"listening"``), so a script can start it with ``--socks-port 0`` and read the
port. With ``--json`` each finished connection is one JSON line on standard
output (``"event": "connection"``: client, command, destination, reply, bytes
each way, duration, link, error): what a log shipper or ``jq`` expects, with
no signal plumbing. ``kill -USR1`` prints a status line (``"event":
"status"``: connections in progress, totals) at any time. SIGINT and SIGTERM
stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from ..cli_options import global_options, modem_options, modem_session
from .server import DEFAULT_PORT, LINK_WAIT_S, ConnectionRecord, Socks5Proxy, check_listen_address

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``proxy`` command to ``simsock``'s subparsers; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "proxy",
        help="a local SOCKS5 server that carries every connection over the module",
        description="Serve SOCKS5 (RFC 1928: CONNECT by IPv4, IPv6 or name, UDP ASSOCIATE; no "
        "authentication) on this machine and carry every connection over the module; names "
        "are resolved by the module. The module has two links: a request waits up to "
        "--link-wait seconds for one, then fails (reply 0x01). Prints where it listens on "
        "the first line of standard output.",
    )
    global_options(parser, top=False)
    modem_options(parser)
    group = parser.add_argument_group("the SOCKS5 server")
    group.add_argument(
        "--listen",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="listen here (default 127.0.0.1; only loopback unless --allow-remote)",
    )
    group.add_argument(
        "--socks-port",
        type=int,
        default=DEFAULT_PORT,
        metavar="PORT",
        help=f"listen on this port (default {DEFAULT_PORT}; 0: any free port)",
    )
    group.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --listen address other hosts can reach (there is no password: anyone "
        "who reaches the proxy uses the module)",
    )
    group.add_argument(
        "--link-wait",
        type=float,
        default=LINK_WAIT_S,
        metavar="S",
        help=f"wait up to S seconds for a free module link (default {LINK_WAIT_S:g})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        help="print JSON lines: where it listens, then one per finished connection",
    )
    return parser


def _emit(event: str, values: dict[str, Any]) -> None:
    print(json.dumps({"event": event, **values}), flush=True)


async def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; the exit status."""
    if args.no_network:
        print("simsock proxy: --no-network leaves nothing to carry connections", file=sys.stderr)
        return 2
    check_listen_address(args.listen, args.allow_remote)  # before the module starts

    def record(done: ConnectionRecord) -> None:
        _emit("connection", done.as_dict())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with modem_session(args) as modem:
        proxy = Socks5Proxy(
            modem, link_wait_s=args.link_wait, on_record=record if args.json else None
        )
        server = await proxy.serve(args.listen, args.socks_port, allow_remote=args.allow_remote)
        host, port = server.sockets[0].getsockname()[:2]
        for signum, action in (
            (signal.SIGTERM, stop.set),
            (signal.SIGINT, stop.set),
            (signal.SIGUSR1, lambda: _emit("status", proxy.status())),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, action)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if args.json:
            _emit("listening", {"host": host, "port": port, "modem": modem.url})
        else:
            print(f"socks5://{where}", flush=True)
        print(
            f"SOCKS5 proxy on {where} over the module at {modem.url} ({modem.rx_mode} mode); "
            f"try: curl --socks5-hostname {where} http://...",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            server.close()
            await proxy.abort_clients()
            await server.wait_closed()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)
    return 0
