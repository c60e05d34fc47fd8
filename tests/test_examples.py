"""Every ``examples/*.py`` runs with no arguments (its own virtual SIM7028) and exits 0.

An example whose third-party needs are missing here is skipped, naming them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT_S = 60

#: What an example needs beyond simsock: importable modules and programs on PATH.
NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "httpx_get.py": (("httpx", "trustme"), ()),
    "redis_roundtrip.py": (("redis",), ("redis-server",)),
    "websockets_echo.py": (("websockets",), ()),
}


def _missing(name: str) -> list[str]:
    modules, programs = NEEDS.get(name, ((), ()))
    return [m for m in modules if importlib.util.find_spec(m) is None] + [
        p for p in programs if shutil.which(p) is None
    ]


def test_there_are_examples() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"tcp_server.py", "udp_client.py"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_runs_with_no_arguments(example: Path) -> None:
    missing = _missing(example.name)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, f"{example.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{example.name} printed nothing"
