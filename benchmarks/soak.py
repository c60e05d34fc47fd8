"""Soak: bulk transfers on two links through a hostile virtual SIM7028, with faults injected.

Nothing lost, nothing hangs. Two workers each keep a TCP connection to an
echo server on 127.0.0.1 open through the library and, round after round,
write a random payload and read it back. Between rounds, and sometimes a few
milliseconds into one, a fault is injected in the virtual module (network
loss, peer reset, restart, a mute spell, a URC storm, a full send buffer, a
connect timeout, forgotten notices, a withheld prompt, a corrupted result
line). The rules checked:

- a transfer in a round no fault touched arrives byte-exact (SHA-256);
- a transfer a fault touched arrives byte-exact, or fails with the exception
  documented for that fault (:data:`DOCUMENTED`); benign faults (URC storms,
  forgotten notices) must not make it fail at all;
- nothing hangs (:data:`HANG_S`), the modem is ``UP`` again within
  :data:`RECOVERY_S` after a fault, and at the end no link or task is left.

Everything random (fault choice and timing, sizes, payload bytes, the
module's own decisions) comes from one seed: printed at the start, taken
from ``--seed`` or the ``SIMSOCK_SOAK_SEED`` environment variable.

    python benchmarks/soak.py --minutes 10
    python benchmarks/soak.py --mib 20 --seed 1234

``tests/test_soak.py`` runs the same code, bounded, under pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import simsock
from simsock.driver import ModemState
from simsock.emulator import VirtualModem

__all__ = ["CI_KINDS", "DOCUMENTED", "FAULT_KINDS", "SoakSummary", "format_summary", "main", "soak"]

SEED_ENV: Final = "SIMSOCK_SOAK_SEED"
MIB: Final = 1024 * 1024
#: A transfer still running after this long has hung (s). The slowest
#: documented failure is a command timeout (CIPRXGET 8 s) plus the resync probes.
HANG_S: Final = 45.0
#: How long the modem may take to be ``UP`` again after a fault (s).
RECOVERY_S: Final = 30.0
#: Payload of one transfer, each way (bytes).
TRANSFER_MIN_BYTES: Final = 16 * 1024
TRANSFER_MAX_BYTES: Final = 256 * 1024
#: The library's timeouts during the soak: AT+CIPTIMEOUT's minimum (3.12, 3 s)
#: for CIPOPEN and CIPSEND, a short poll for forgotten notices, fast recovery.
CIPTIMEOUT_S: Final = 3.0
POLL_INTERVAL_S: Final = 0.05
RECOVERY_BACKOFF_S: Final = (0.05, 0.1, 0.2, 0.5)
#: A connect that times out in the module takes this long (s).
CONNECT_TIMEOUT_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class FaultKind:
    """One kind of fault: whether a transfer may fail of it, and whether it costs a timeout."""

    name: str
    benign: bool = False
    #: It makes the library wait for a command timeout (seconds each).
    slow: bool = False
    weight: int = 3


FAULT_KINDS: Final = (
    FaultKind("drop_network"),
    FaultKind("reset_peer"),
    FaultKind("restart"),
    FaultKind("send_buffer_full"),
    FaultKind("connect_timeout"),
    FaultKind("urc_storm", benign=True),
    FaultKind("forget_data_urc", benign=True),
    FaultKind("mute", slow=True, weight=1),
    FaultKind("withhold_prompt", slow=True, weight=1),
    FaultKind("corrupt_line", slow=True, weight=1),
)
_BY_NAME: Final = {kind.name: kind for kind in FAULT_KINDS}
#: Faults whose documented outcome the library does not reach yet, each to be
#: shown by a strict xfail in tests/emulator/test_library_under_faults.py; the
#: bounded CI run leaves them out. None now: the five the soak found (stale
#: CIPOPEN waiter, a lost OK's link left open, a lost +CIPSEND: leaking the
#: link, a reset during a send, a builder's AttributeError) are fixed.
KNOWN_LIBRARY_GAPS: Final[tuple[str, ...]] = ()
ALL_KINDS: Final = tuple(k.name for k in FAULT_KINDS)
CI_KINDS: Final = tuple(k.name for k in FAULT_KINDS if k.name not in KNOWN_LIBRARY_GAPS)


def _enetdown(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENETDOWN


def _reset(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionResetError)


def _broken_pipe(exc: BaseException) -> bool:
    # Written bytes that could not leave before the module freed the link (+IPCLOSE).
    return isinstance(exc, BrokenPipeError)


def _timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


def _closed(exc: BaseException) -> bool:
    return isinstance(exc, simsock.EngineClosedError)


def _eof(exc: BaseException) -> bool:
    # The module reports a reset like a close (+IPCLOSE: <link>,1, 4.2): end of stream.
    return isinstance(exc, asyncio.IncompleteReadError)


#: For each fault, the exceptions a transfer it hits may end with.
DOCUMENTED: Final[dict[str, tuple[Callable[[BaseException], bool], ...]]] = {
    "drop_network": (_enetdown,),
    "reset_peer": (_eof, _reset, _broken_pipe),
    # Until RDY arrives the library cannot know: what it sent meanwhile times out.
    "restart": (_reset, _enetdown, _timeout),
    "send_buffer_full": (_reset,),
    "connect_timeout": (_timeout,),
    "mute": (_timeout,),
    "withhold_prompt": (_timeout,),
    "corrupt_line": (_timeout, _reset),
    "urc_storm": (),
    "forget_data_urc": (),
}


@dataclass(slots=True)
class SoakSummary:
    """What a soak run did and found."""

    seed: int
    rounds: int = 0
    transfers: int = 0
    transfers_ok: int = 0
    clean_transfers: int = 0
    bytes_moved: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def mib_moved(self) -> float:
        """Payload that arrived intact, both directions (MiB)."""
        return self.bytes_moved / MIB


@dataclass(slots=True)
class _Outcome:
    ok: bool = False
    exc: BaseException | None = None
    hung: bool = False
    mismatch: bool = False
    moved: int = 0


class _Soak:
    def __init__(
        self,
        seed: int,
        *,
        slow_fault_cap: int | None,
        fault_rate: float,
        during_rate: float,
        kinds: tuple[str, ...],
        log: Callable[[str], None],
        trace: bool,
    ) -> None:
        self.during_rate = during_rate
        self.kinds = [_BY_NAME[name] for name in kinds]
        self.log = log
        self.trace = trace
        self.summary = SoakSummary(seed)
        self.rng = random.Random(seed)
        self.slow_fault_cap = slow_fault_cap
        self.fault_rate = fault_rate
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = [None, None]
        self.schedule = [kind.name for kind in self.kinds]
        self.rng.shuffle(self.schedule)  # every kind once first, in a seeded order
        self.vm: VirtualModem
        self.modem: simsock.Modem
        self.peer: tuple[str, int]

    # --- faults ---------------------------------------------------------------------------

    def _pick_fault(self) -> str | None:
        if self.rng.random() >= self.fault_rate:
            return None
        if self.schedule:
            return self.schedule.pop()
        slow_used = sum(n for name, n in self.summary.faults.items() if _BY_NAME[name].slow)
        kinds = [
            k
            for k in self.kinds
            if not k.slow or self.slow_fault_cap is None or slow_used < self.slow_fault_cap
        ]
        return self.rng.choices([k.name for k in kinds], [k.weight for k in kinds])[0]

    def _link_of(self, worker: int) -> int | None:
        conn = self.conns[worker]
        if conn is None:
            return None
        link = conn[1].get_extra_info("link")
        return link if isinstance(link, int) else None

    async def _inject(self, name: str) -> None:
        vm, rng = self.vm, self.rng
        link = self._link_of(rng.randrange(2))
        if name == "drop_network":
            vm.drop_network()
        elif name == "reset_peer":
            if link is None or not vm.reset_peer(link):
                vm.urc_storm(10)  # nothing to reset: stays a (benign) fault round
        elif name == "restart":
            vm.restart(boot_s=rng.uniform(0.0, 0.3))
        elif name == "send_buffer_full":
            vm.send_buffer_full(link)
        elif name == "connect_timeout":
            vm.connect_timeout()
            await self._close(rng.randrange(2))  # so that a worker has to connect again
        elif name == "urc_storm":
            vm.urc_storm(rng.randint(100, 500))
        elif name == "forget_data_urc":
            vm.forget_data_urc(rng.randint(1, 3))
        elif name == "mute":
            vm.mute(rng.uniform(0.2, 1.5))
        elif name == "withhold_prompt":
            vm.withhold_prompt()
        elif name == "corrupt_line":
            vm.corrupt_next_line()
        else:
            raise ValueError(name)
        self.summary.faults[name] += 1

    # --- transfers ------------------------------------------------------------------------

    async def _close(self, worker: int) -> None:
        conn, self.conns[worker] = self.conns[worker], None
        if conn is not None:
            conn[1].close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn[1].wait_closed(), 5)

    async def _transfer(self, worker: int, payload: bytes) -> _Outcome:
        outcome = _Outcome()
        try:
            if self.conns[worker] is None:
                self.conns[worker] = await self.modem.open_connection(*self.peer)
            conn = self.conns[worker]
            assert conn is not None
            reader, writer = conn

            async def upload() -> None:
                writer.write(payload)
                await writer.drain()

            sender = asyncio.ensure_future(upload())
            try:
                echoed = await reader.readexactly(len(payload))
            finally:
                if not sender.done():
                    sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender
            if hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest():
                outcome.ok = True
                outcome.moved = 2 * len(payload)
            else:
                outcome.mismatch = True
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                outcome.hung = True
            outcome.exc = exc
        if not outcome.ok:
            conn = self.conns[worker]
            self.conns[worker] = None
            if conn is not None:
                conn[1].transport.abort()
        return outcome

    async def _guarded(self, worker: int, payload: bytes) -> _Outcome:
        task = asyncio.ensure_future(self._transfer(worker, payload))
        done, _ = await asyncio.wait({task}, timeout=HANG_S)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            return _Outcome(hung=True)
        return task.result()

    # --- rounds ---------------------------------------------------------------------------

    async def round(self) -> None:
        summary, rng = self.summary, self.rng
        summary.rounds += 1
        fault = self._pick_fault()
        # A connect timeout bites at the next connect: it is set up between rounds.
        during = fault not in (None, "connect_timeout") and rng.random() < self.during_rate
        pending = self.vm.interpreter.faults.pending()
        up_at_start = self.modem.state is ModemState.UP
        if fault is not None and not during:
            await self._inject(fault)
        sizes = [rng.randint(TRANSFER_MIN_BYTES, TRANSFER_MAX_BYTES) for _ in range(2)]
        payloads = [rng.randbytes(size) for size in sizes]
        tasks = [asyncio.ensure_future(self._guarded(w, payloads[w])) for w in range(2)]
        if fault is not None and during:
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            await self._inject(fault)
        outcomes = await asyncio.gather(*tasks)
        hit = fault is not None or pending > 0 or not up_at_start
        for worker, outcome in enumerate(outcomes):
            summary.transfers += 1
            summary.clean_transfers += not hit
            summary.bytes_moved += outcome.moved
            summary.transfers_ok += outcome.ok
            if not outcome.ok:
                summary.failures[_describe(outcome)] += 1
            lingering = pending > 0 or not up_at_start
            problem = self._judge(outcome, None if lingering else fault, hit)
            if problem:
                summary.violations.append(
                    f"round {summary.rounds} worker {worker} fault {fault or '-'}"
                    f" (pending {pending}, up {up_at_start}): {problem}"
                )
        if self.trace:
            links = {
                n: (lk.state.value, lk.remote_closed) for n, lk in self.modem.engine.links.items()
            }
            self.log(
                f"round {summary.rounds}: fault {fault} {'during' if during else 'before'}"
                f" pending {pending} -> {[_describe(o) if not o.ok else 'ok' for o in outcomes]}"
                f" library links {links} applied {dict(self.vm.faults_applied)}"
            )
        if hit or any(not o.ok for o in outcomes):
            await self._recovered()

    def _judge(self, outcome: _Outcome, fault: str | None, hit: bool) -> str | None:
        if outcome.ok:
            return None
        if outcome.hung:
            return f"hung for {HANG_S} s"
        if outcome.mismatch:
            return "bytes differ (SHA-256)"
        exc = outcome.exc
        assert exc is not None
        if not hit:
            return f"failed without a fault: {exc!r}"
        if fault is None:  # an earlier fault was still pending or recovering: any of them
            checks = [check for checks in DOCUMENTED.values() for check in checks]
        else:
            checks = list(DOCUMENTED[fault])
        checks.append(_closed)
        if any(check(exc) for check in checks):
            return None
        return f"undocumented exception {exc!r}"

    async def _recovered(self) -> None:
        """After a fault: the modem is UP again within RECOVERY_S."""
        deadline = time.monotonic() + RECOVERY_S
        while self.modem.state is not ModemState.UP:
            if time.monotonic() > deadline or self.modem.state is ModemState.CLOSED:
                raise _Unusable(f"modem {self.modem.state.value} {RECOVERY_S} s after a fault")
            await asyncio.sleep(0.02)

    async def finish(self) -> None:
        """Close both connections; nothing may be left open in the library or the module."""
        for worker in range(2):
            await self._close(worker)
        deadline = time.monotonic() + 10
        while self.modem.engine.links or any(self.vm.interpreter.open_links()):
            if time.monotonic() > deadline:
                self.summary.violations.append(
                    f"links left open: library {sorted(self.modem.engine.links)},"
                    f" module {[lk.number for lk in self.vm.interpreter.open_links()]}"
                )
                break
            await asyncio.sleep(0.02)


class _Unusable(Exception):
    """The modem did not come back after a fault."""


def _describe(outcome: _Outcome) -> str:
    if outcome.hung:
        return "hang"
    if outcome.mismatch:
        return "bytes differ"
    exc = outcome.exc
    name = type(exc).__name__
    code = getattr(exc, "errno", None)
    return f"{name} ({errno.errorcode.get(code, code)})" if code else name


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def leftover_tasks() -> list[asyncio.Task[object]]:
    """simsock tasks still running (the engine's own two excepted)."""
    return [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task()
        and not t.done()
        and t.get_name() not in ("simsock-reader", "simsock-scheduler")
        and "simsock" in repr(t.get_coro())
        and "emulator" not in repr(t.get_coro())
    ]


async def soak(
    seed: int,
    *,
    total_bytes: int | None = None,
    seconds: float | None = None,
    slow_fault_cap: int | None = None,
    fault_rate: float = 0.5,
    during_rate: float = 0.5,
    kinds: tuple[str, ...] = ALL_KINDS,
    log: Callable[[str], None] = print,
    trace: bool = False,
) -> SoakSummary:
    """Run rounds until ``total_bytes`` moved intact (both directions) or ``seconds`` passed.

    ``fault_rate``: the share of rounds with a fault; ``during_rate``: the
    share of those where it strikes a few ms into the round rather than
    between rounds; ``kinds``: the fault kinds to draw from; at most
    ``slow_fault_cap`` faults that cost a command timeout.
    """
    if total_bytes is None and seconds is None:
        raise ValueError("give total_bytes or seconds")
    log(f"soak seed {seed} (replay: {SEED_ENV}={seed})")
    run = _Soak(
        seed,
        slow_fault_cap=slow_fault_cap,
        fault_rate=fault_rate,
        during_rate=during_rate,
        kinds=kinds,
        log=log,
        trace=trace,
    )
    summary = run.summary
    started = time.monotonic()
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    run.peer = ("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        async with (
            VirtualModem.hostile(seed=seed, connect_timeout_s=CONNECT_TIMEOUT_S) as vm,
            simsock.open_modem(
                vm.url, poll_interval_s=POLL_INTERVAL_S, recovery_backoff_s=RECOVERY_BACKOFF_S
            ) as modem,
        ):
            run.vm, run.modem = vm, modem
            await modem.set_timeouts(cipopen_s=CIPTIMEOUT_S, cipsend_s=CIPTIMEOUT_S)
            try:
                while True:
                    elapsed = time.monotonic() - started
                    # the byte budget ends a run once every fault kind was injected
                    moved = total_bytes is not None and summary.bytes_moved >= total_bytes
                    if moved and not run.schedule:
                        break
                    if seconds is not None and elapsed >= seconds:
                        break
                    await run.round()
                await run.finish()
            except _Unusable as exc:
                summary.violations.append(f"round {summary.rounds}: {exc}")
            leftover = leftover_tasks()
            if leftover:
                summary.violations.append(f"tasks left running: {leftover}")
    finally:
        server.close()
        summary.elapsed_s = time.monotonic() - started
    return summary


def format_summary(summary: SoakSummary) -> str:
    """A table of what the run did: transfers, bytes, faults by kind, failures by exception."""
    rate = summary.mib_moved / summary.elapsed_s if summary.elapsed_s else 0.0
    rows = [
        ("seed", str(summary.seed)),
        ("time", f"{summary.elapsed_s:.1f} s"),
        ("rounds", str(summary.rounds)),
        (
            "transfers",
            f"{summary.transfers} ({summary.transfers_ok} intact,"
            f" {summary.clean_transfers} without a fault)",
        ),
        ("payload moved", f"{summary.mib_moved:.1f} MiB ({rate:.2f} MiB/s, both directions)"),
        ("faults injected", str(sum(summary.faults.values()))),
    ]
    rows += [(f"  {name}", str(n)) for name, n in sorted(summary.faults.items())]
    rows.append(("failed transfers", str(sum(summary.failures.values()))))
    rows += [(f"  {name}", str(n)) for name, n in sorted(summary.failures.items())]
    rows.append(("violations", str(len(summary.violations))))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"  ! {text}" for text in summary.violations]
    return "\n".join(lines)


def seed_from_env() -> int:
    """``SIMSOCK_SOAK_SEED`` if set, else a fresh random seed."""
    text = os.environ.get(SEED_ENV)
    return int(text) if text else random.SystemRandom().randrange(2**32)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--minutes`` or ``--mib``, ``--seed``; prints the summary table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="run this long")
    parser.add_argument("--mib", type=float, help="or until this much payload moved intact")
    parser.add_argument("--seed", type=int, help=f"default: ${SEED_ENV} or random")
    parser.add_argument("--fault-rate", type=float, default=0.5, help="faults per round (0-1)")
    parser.add_argument(
        "--during-rate", type=float, default=0.5, help="share of faults struck mid-transfer"
    )
    parser.add_argument(
        "--kinds", default=",".join(k.name for k in FAULT_KINDS), help="comma-separated fault kinds"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="library warnings too")
    parser.add_argument("--trace", action="store_true", help="one line per round")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL)
    seed = args.seed if args.seed is not None else seed_from_env()
    minutes = args.minutes if args.minutes is not None or args.mib is not None else 1.0
    summary = asyncio.run(
        soak(
            seed,
            total_bytes=None if args.mib is None else int(args.mib * MIB),
            seconds=None if minutes is None else minutes * 60,
            fault_rate=args.fault_rate,
            during_rate=args.during_rate,
            kinds=tuple(args.kinds.split(",")),
            trace=args.trace,
        )
    )
    print(format_summary(summary))
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
