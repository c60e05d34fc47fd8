"""The fuzz targets of ``fuzz_parser.py``, a few seconds each under hypothesis (≤ 10 s in all).

For a long run: ``python tests/fuzz/fuzz_parser.py --minutes 60``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: Examples per target: the three together stay well under 10 s.
EXAMPLES = 300


def _load() -> ModuleType:
    path = Path(__file__).resolve().parent / "fuzz_parser.py"
    spec = importlib.util.spec_from_file_location("simsock_fuzz_targets", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FUZZ = _load()
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = pytest.mark.timeout(30)


@BOUNDED
@given(st.binary(max_size=4096))
def test_parser_gives_events_or_protocol_error(data: bytes) -> None:
    FUZZ.fuzz_parser(data)


@BOUNDED
@given(st.lists(st.sampled_from(FUZZ.WIRE_PIECES), max_size=60), st.binary(max_size=16))
def test_parser_on_wire_like_input(pieces: list[bytes], head: bytes) -> None:
    FUZZ.fuzz_parser(head + b"".join(pieces))


@BOUNDED
@given(st.binary(max_size=2048))
def test_builders_never_smuggle_a_second_command(data: bytes) -> None:
    FUZZ.fuzz_builders(data)


@BOUNDED
@given(st.binary(max_size=4096))
def test_interpreter_survives_any_host_input(data: bytes) -> None:
    FUZZ.fuzz_interpreter(data)


@BOUNDED
@given(st.lists(st.sampled_from(FUZZ.WIRE_PIECES), max_size=60), st.binary(max_size=64))
def test_interpreter_on_command_like_input(pieces: list[bytes], head: bytes) -> None:
    FUZZ.fuzz_interpreter(head + b"".join(pieces))


def test_the_checks_catch_a_smuggled_command() -> None:
    from simsock.at.commands import Command

    with pytest.raises(AssertionError):
        FUZZ.check_command(Command('AT+CDNSGIP="a"\rAT+NETCLOSE', 6.0))
    with pytest.raises(AssertionError):
        FUZZ.check_command(Command('AT+CDNSGIP="a";+NETCLOSE', 6.0))


def test_cdnscfg_refuses_a_non_string_with_type_error() -> None:
    from simsock.at import commands as at

    with pytest.raises(TypeError):
        at.cdnscfg(0.0)  # type: ignore[arg-type]
