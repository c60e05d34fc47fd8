"""Fault injection for the virtual SIM7028: options, one-shot faults and ONE random source.

:class:`FaultConfig` holds the options a test chooses when it starts a module
(probabilities of line noise, dropped bytes, forgotten ``+CIPRXGET: 1``
notices, full send buffers; randomised output chunking and latency jitter;
hosts whose connections time out). :class:`Faults` is the running state: the
seeded random source every random decision of the module draws from (so a
failing run is replayed by passing the same ``seed``), the one-shot faults a
test arms at any moment (``corrupt_next_output(n)``, ``withhold_prompt()``
...), a mute deadline, and counters of every fault applied.

Pure like the interpreter that holds it: no I/O, time comes in as ``now``.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Final

from ..at.note import SIM_READY
from .firmware import FirmwareShapes

__all__ = [
    "HOSTILE",
    "PRESETS",
    "START_UP_URCS",
    "STORM_URCS",
    "FaultConfig",
    "Faults",
    "LineFaults",
]

logger = logging.getLogger("simsock.emulator.faults")

#: What a SIM7028 prints after power-up or a restart (reference section 1):
#: ``RDY`` first, then the SIM and SMS start-up notices. Other firmware prints
#: other lines (:meth:`.FirmwareShapes.boot_lines`); these are the default's.
START_UP_URCS: Final = FirmwareShapes().boot_lines()
#: URCs a host does not know and must ignore (reference section 1); used for
#: URC storms and the hostile preset's noise. None shares a name with a
#: command the library sends, so none can be mistaken for a response line.
STORM_URCS: Final = (
    "+CTZV: 24/11/26,12:00:00,+32",
    "+CGEV: ME PDN ACT 1",
    "+CEREG: 1",
    "+CNEC_ESM: 36",
    SIM_READY,
)
#: Upper bound on a one-shot request (bytes, notices, URCs): keeps a typo from
#: allocating gigabytes.
MAX_ONE_SHOT: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Fault options of one virtual module (all off by default).

    Probabilities are per event: ``line_noise`` and ``drop_bytes`` per byte on
    the serial line, in both directions (a corrupted byte is XORed with a
    random non-zero value, so it always changes); ``forget_data_urc`` per
    ``+CIPRXGET: 1,<link>`` notice (3.5: a host must not rely on them);
    ``send_buffer_full`` per ``AT+CIPSEND`` (answered ``+CIPSEND: <link>,<n>,0``,
    3.4); ``noise_rate`` per place where a ``urc_noise`` line may go.
    ``chunking`` delivers the module's output in random pieces of
    1..``chunk_max_bytes`` with a yield to the event loop between them;
    ``jitter_s`` adds a uniformly random 0..``jitter_s`` to every command's
    latency. ``connect_timeout_hosts`` are names or addresses whose TCP
    connects never complete: ``OK``, then ``+CIPOPEN: <link>,10`` after
    ``connect_timeout_s`` (``None``: the CIPOPEN timeout of ``AT+CIPTIMEOUT``, 3.12).
    """

    line_noise: float = 0.0
    drop_bytes: float = 0.0
    forget_data_urc: float = 0.0
    send_buffer_full: float = 0.0
    noise_rate: float = 1.0
    chunking: bool = False
    chunk_max_bytes: int = 256
    jitter_s: float = 0.0
    connect_timeout_hosts: frozenset[str] = field(default_factory=frozenset)
    connect_timeout_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("line_noise", "drop_bytes", "forget_data_urc", "send_buffer_full"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability in 0..1, not {value!r}")
        if not 0.0 <= self.noise_rate <= 1.0:
            raise ValueError(f"noise_rate is a probability in 0..1, not {self.noise_rate!r}")
        if self.chunk_max_bytes < 1:
            raise ValueError(f"chunk_max_bytes must be at least 1, not {self.chunk_max_bytes}")
        if self.jitter_s < 0 or (self.connect_timeout_s is not None and self.connect_timeout_s < 0):
            raise ValueError("jitter_s and connect_timeout_s cannot be negative")


#: The hostile preset: output in random pieces, latency jitter, unknown URCs
#: at one place in twenty, one ``+CIPRXGET: 1`` in fifty forgotten. Nothing in
#: it loses data a correct host would not recover.
HOSTILE: Final = FaultConfig(
    forget_data_urc=0.02,
    noise_rate=0.05,
    chunking=True,
    chunk_max_bytes=256,
    jitter_s=0.0005,
)
#: URC lines the hostile preset sprinkles (``urc_noise``).
HOSTILE_URC_NOISE: Final = STORM_URCS[:3]
#: Presets by name (``VirtualModem(preset="hostile")``); ``"calm"`` is no fault at all.
PRESETS: Final = {"calm": FaultConfig(), "hostile": HOSTILE}


def preset(name: str, **changes: object) -> FaultConfig:
    """The preset ``name`` with ``changes`` applied; ``ValueError`` for an unknown name."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown fault preset {name!r}; choose from {sorted(PRESETS)}") from None
    return replace(base, **changes)  # type: ignore[arg-type]


class LineFaults:
    """Noise and loss on one direction of the serial line.

    Instead of a draw per byte, the distance to the next faulty byte is drawn
    from the geometric distribution, so clean stretches cost nothing.
    """

    def __init__(self, rng: random.Random, noise: float, drop: float) -> None:
        # Noise and loss each draw from their own stream (derived from ``rng``),
        # so the bytes hit depend only on their position, not on the pieces.
        self._rng = _substream(rng)
        self._drop_rng = _substream(rng)
        self._noise = noise
        self._drop = drop
        self._to_noise = self._gap(noise, self._rng)
        self._to_drop = self._gap(drop, self._drop_rng)
        #: One-shot: the next ``corrupt`` bytes are all corrupted.
        self.corrupt = 0
        self.corrupted = 0
        self.dropped = 0

    @staticmethod
    def _gap(p: float, rng: random.Random) -> float:
        """Clean bytes before the next faulty one (geometric with success ``p``)."""
        if p <= 0.0:
            return math.inf
        if p >= 1.0:
            return 0
        return math.floor(math.log(1.0 - rng.random()) / math.log(1.0 - p))

    def _flip(self, byte: int) -> int:
        return byte ^ self._rng.randrange(1, 256)

    def apply(self, data: bytes) -> bytes:
        """``data`` as it arrives at the other end."""
        if not data or (
            self.corrupt == 0 and self._to_noise >= len(data) and self._to_drop >= len(data)
        ):
            self._to_noise -= len(data)
            self._to_drop -= len(data)
            return data
        out = bytearray(data)
        if self.corrupt:
            count = min(self.corrupt, len(out))
            for index in range(count):
                out[index] = self._flip(out[index])
            self.corrupt -= count
            self.corrupted += count
        index = int(self._to_noise) if self._to_noise < len(out) else -1
        while 0 <= index < len(out):
            out[index] = self._flip(out[index])
            self.corrupted += 1
            index += 1 + int(self._gap(self._noise, self._rng))
        self._to_noise = (index - len(out)) if index >= 0 else self._to_noise - len(out)
        drops: list[int] = []
        index = int(self._to_drop) if self._to_drop < len(out) else -1
        while 0 <= index < len(out):
            drops.append(index)
            index += 1 + int(self._gap(self._drop, self._drop_rng))
        self._to_drop = (index - len(out)) if index >= 0 else self._to_drop - len(out)
        for position in reversed(drops):
            del out[position]
        self.dropped += len(drops)
        return bytes(out)


class Faults:
    """The running fault state of one module; see the module docstring.

    ``seed`` ``None`` draws a seed from the system and logs it: pass it back
    as ``seed=`` to replay the same decisions.
    """

    def __init__(self, config: FaultConfig | None = None, seed: int | None = None) -> None:
        self.config = config if config is not None else FaultConfig()
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
            logger.info("virtual SIM7028 fault seed %d (replay with seed=%d)", seed, seed)
        self.seed = seed
        #: The one random source of the module: every random decision draws from it.
        self.rng = random.Random(seed)
        cfg = self.config
        # Each direction draws from its own stream, seeded from the one source:
        # where noise hits then depends only on the byte's position in its
        # direction, not on how the two directions' pieces interleave in time.
        self.to_host = LineFaults(self.rng, cfg.line_noise, cfg.drop_bytes)
        self.from_host = LineFaults(self.rng, cfg.line_noise, cfg.drop_bytes)
        #: Faults applied so far, by kind (for tests and the soak summary).
        self.applied: Counter[str] = Counter()
        self.muted_until: float | None = None
        self._forget_urcs = 0
        self._withhold_prompts = 0
        self._connect_timeouts = 0
        self._buffer_full: Counter[int | None] = Counter()
        self._spoil_lines = 0
        self._spoil_prefix = ""

    # --- arming one-shot faults -------------------------------------------------------

    def arm_forget_data_urc(self, count: int = 1) -> None:
        """The next ``count`` ``+CIPRXGET: 1,<link>`` notices are not sent."""
        self._forget_urcs = _bounded(self._forget_urcs + count)

    def arm_withhold_prompt(self, count: int = 1) -> None:
        """The next ``count`` ``AT+CIPSEND`` get no ``>`` (the module still takes the data)."""
        self._withhold_prompts = _bounded(self._withhold_prompts + count)

    def arm_connect_timeout(self, count: int = 1) -> None:
        """The next ``count`` TCP ``AT+CIPOPEN`` time out (``+CIPOPEN: <link>,10``)."""
        self._connect_timeouts = _bounded(self._connect_timeouts + count)

    def arm_send_buffer_full(self, link: int | None = None) -> None:
        """The next ``AT+CIPSEND`` on ``link`` (any link: ``None``) is answered ``<cnf>`` 0."""
        self._buffer_full[link] += 1

    def arm_spoil_line(self, count: int = 1, prefix: str = "") -> None:
        """The next ``count`` response lines or late results get one byte corrupted.

        With ``prefix`` only lines that start with it count (``"+CIPSEND:"``).

        Unlike :attr:`LineFaults.corrupt` this never touches a payload block or
        its header, so no data is damaged: only the host's view of a result.
        """
        self._spoil_lines = _bounded(self._spoil_lines + count)
        self._spoil_prefix = prefix

    def pending(self) -> int:
        """One-shot faults armed and not yet taken effect (a mute counts as one)."""
        return (
            self._forget_urcs
            + self._withhold_prompts
            + self._connect_timeouts
            + sum(self._buffer_full.values())
            + self._spoil_lines
            + self.to_host.corrupt
            + self.from_host.corrupt
            + (self.muted_until is not None)
        )

    def mute(self, now: float, seconds: float | None) -> None:
        """Answer nothing until ``now + seconds`` (``None``: until :meth:`unmute`)."""
        self.muted_until = math.inf if seconds is None else now + max(seconds, 0.0)
        self.applied["mute"] += 1

    def unmute(self) -> None:
        """Answer again."""
        self.muted_until = None

    # --- decisions (each consumes its one-shot, or draws from the random source) ---------

    def muted(self, now: float) -> bool:
        """Whether the module is mute at ``now`` (a passed deadline unmutes it)."""
        if self.muted_until is not None and now >= self.muted_until:
            self.muted_until = None
        return self.muted_until is not None

    def forget_data_urc(self) -> bool:
        """Whether this ``+CIPRXGET: 1`` notice is forgotten."""
        if self._forget_urcs:
            self._forget_urcs -= 1
        elif not self._chance(self.config.forget_data_urc):
            return False
        self.applied["forget_data_urc"] += 1
        return True

    def withhold_prompt(self) -> bool:
        """Whether this ``AT+CIPSEND`` gets no ``>``."""
        if not self._withhold_prompts:
            return False
        self._withhold_prompts -= 1
        self.applied["withhold_prompt"] += 1
        return True

    def connect_times_out(self, *names: str) -> bool:
        """Whether a TCP connect to any of ``names`` (host name, address) times out."""
        hosts = {host.lower() for host in self.config.connect_timeout_hosts}
        if self._connect_timeouts:
            self._connect_timeouts -= 1
        elif not any(name.lower() in hosts for name in names):
            return False
        self.applied["connect_timeout"] += 1
        return True

    def send_buffer_full(self, link: int) -> bool:
        """Whether this ``AT+CIPSEND`` on ``link`` finds the send buffer full."""
        for key in (link, None):
            if self._buffer_full[key]:
                self._buffer_full[key] -= 1
                break
        else:
            if not self._chance(self.config.send_buffer_full):
                return False
        self.applied["send_buffer_full"] += 1
        return True

    def spoil_line(self, text: str) -> str:
        """``text``, or ``text`` with one character changed when a line fault is armed."""
        if not self._spoil_lines or not text or not text.startswith(self._spoil_prefix):
            return text
        self._spoil_lines -= 1
        self.applied["corrupt_line"] += 1
        index = self.rng.randrange(len(text))
        # Any byte but CR and LF: the line stays one line, only its content is wrong.
        byte = self.rng.choice([b for b in range(256) if b not in (0x0A, 0x0D, ord(text[index]))])
        return text[:index] + chr(byte) + text[index + 1 :]

    def noise_here(self) -> bool:
        """Whether a ``urc_noise`` line goes at this place."""
        return self._chance(self.config.noise_rate)

    def latency(self, base_s: float) -> float:
        """A command's latency: ``base_s`` plus the jitter."""
        jitter = self.config.jitter_s
        return base_s + (self.rng.uniform(0.0, jitter) if jitter > 0 else 0.0)

    def chunk_size(self, available: int) -> int:
        """How many of ``available`` output bytes go out in the next piece."""
        if not self.config.chunking:
            return available
        self.applied["chunk"] += 1
        return min(available, self.rng.randint(1, self.config.chunk_max_bytes))

    def _chance(self, p: float) -> bool:
        return p > 0.0 and (p >= 1.0 or self.rng.random() < p)


def _bounded(count: int) -> int:
    if count < 0 or count > MAX_ONE_SHOT:
        raise ValueError(f"a one-shot count must be 0..{MAX_ONE_SHOT}, not {count}")
    return count


def _substream(rng: random.Random) -> random.Random:
    """A random stream derived from ``rng`` (so one seed still replays everything)."""
    return random.Random(rng.getrandbits(64))
