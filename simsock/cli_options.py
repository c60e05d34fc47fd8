"""What the ``simsock`` commands share: their common options and the module they open.

Every command that talks to a module takes ``--port URL`` (any pyserial URL
or device path); without it :func:`modem_session` starts a virtual SIM7028 in
the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["global_options", "modem_options", "modem_session"]

logger = logging.getLogger("simsock.cli")


def global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v`` and ``--trace``, accepted before and after the command name."""
    # Below the top level the defaults are SUPPRESSed, so a subcommand that is
    # not given the option does not overwrite what came before its name.
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else default,
        help="log more: -v progress, -vv every AT exchange (logger simsock.modem.wire)",
    )
    parser.add_argument(
        "--trace",
        metavar="FILE",
        default=None if top else default,
        help="write every byte both ways, timestamped, to FILE ('-': stderr); "
        "read it back with 'simsock trace-replay FILE'",
    )


def modem_options(parser: argparse.ArgumentParser) -> None:
    """``--port``, ``--baud``, ``--apn``, ``--ipv6``, ``--no-network``, ``--rx-mode``."""
    group = parser.add_argument_group("the module")
    group.add_argument(
        "--port",
        metavar="URL",
        help="the module's serial port: a device (/dev/ttyUSB2), socket://HOST:PORT, "
        "rfc2217://..., or what 'simsock emulate' printed (default: a fresh virtual SIM7028)",
    )
    group.add_argument(
        "--baud",
        type=int,
        default=None,
        help="line rate (default 115200; a virtual module is paced at this rate only if given)",
    )
    group.add_argument("--apn", help="set the PDP context's APN (AT+CGDCONT) before NETOPEN")
    group.add_argument(
        "--ipv6", action="store_true", help="open an IPv6 PDP context (AT+CSOCKETPN=1,6)"
    )
    group.add_argument(
        "--no-network",
        action="store_true",
        help="only AT and ATE0: do not open the network (for a module whose SIM wants a PIN "
        "or that is not registered; 'at' and 'probe' only)",
    )
    group.add_argument(
        "--rx-mode",
        choices=("buffer", "push"),
        default="buffer",
        help="receive mode: buffer access (AT+CIPRXGET=1, flow-controlled) or direct push",
    )


@contextlib.asynccontextmanager
async def modem_session(args: argparse.Namespace, **options: Any) -> AsyncIterator[Any]:
    """The module ``args.port`` names, or a fresh virtual SIM7028; yields the open ``Modem``.

    ``--trace`` starts the wire trace; ``options`` go to :func:`simsock.open_modem`.
    """
    from .trace import open_traced_modem

    async with contextlib.AsyncExitStack() as stack:
        url = args.port
        baud = args.baud
        if url is None:
            from .emulator import VirtualModem

            vm = await stack.enter_async_context(VirtualModem(baudrate=baud))
            url = vm.url
            logger.info("virtual SIM7028 on %s", url)
        if getattr(args, "no_network", False):
            from .terminal import open_bare
            from .trace import open_trace

            tracer = None
            if args.trace is not None:
                tracer = open_trace(args.trace, url=url)
                stack.callback(tracer.close)
            yield await stack.enter_async_context(
                open_bare(url, baudrate=baud or 115200, wire_tap=tracer)
            )
            return
        modem = await stack.enter_async_context(
            open_traced_modem(
                url,
                args.trace,
                baudrate=baud or 115200,
                rx_mode=args.rx_mode,
                apn=args.apn,
                ip_family=6 if args.ipv6 else 4,
                **options,
            )
        )
        yield modem
