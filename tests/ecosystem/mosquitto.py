"""A real mosquitto broker on 127.0.0.1 for the MQTT tests: plain and TLS listeners, full log.

Import the fixture into a test module (``from .mosquitto import mosquitto``).
The broker logs everything (``log_type all``) to a file, so a test can count
what it received (``broker.count("Received PINGREQ from <client id>")``). On a
machine without the Debian package the tests are skipped; CI (``CI`` set)
must have it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Certificates, free_port, wait_listening

START_TIMEOUT_S = 10.0


@dataclass
class Mosquitto:
    """Where the broker listens, its CA file, and its log."""

    port: int
    tls_port: int
    cafile: Path
    log_path: Path

    def log(self) -> str:
        """The broker's log so far."""
        return self.log_path.read_text(errors="replace")

    def count(self, text: str) -> int:
        """How many log lines contain ``text``."""
        return sum(1 for line in self.log().splitlines() if text in line)


def _config(directory: Path, certs: Certificates, port: int, tls_port: int) -> Path:
    leaf = certs.ca.issue_cert("localhost", "127.0.0.1")
    cafile, certfile, keyfile = (directory / name for name in ("ca.pem", "cert.pem", "key.pem"))
    certs.ca.cert_pem.write_to_path(str(cafile))
    leaf.cert_chain_pems[0].write_to_path(str(certfile))
    leaf.private_key_pem.write_to_path(str(keyfile))
    config = directory / "mosquitto.conf"
    config.write_text(
        "\n".join(
            [
                "per_listener_settings false",
                "allow_anonymous true",
                "persistence false",
                f"log_dest file {directory / 'mosquitto.log'}",
                "log_type all",
                "log_timestamp true",
                "connection_messages true",
                # as root mosquitto would switch to the 'mosquitto' user, who cannot read tmp
                *(["user root"] if os.geteuid() == 0 else []),
                f"listener {port} 127.0.0.1",
                f"listener {tls_port} 127.0.0.1",
                f"cafile {cafile}",
                f"certfile {certfile}",
                f"keyfile {keyfile}",
                "",
            ]
        )
    )
    return config


@pytest.fixture
def mosquitto(tmp_path: Path, certs: Certificates) -> Iterator[Mosquitto]:
    """A real mosquitto on 127.0.0.1: ``port`` (plain) and ``tls_port`` (certificate for
    localhost from the ``certs`` CA), anonymous, logging everything; stopped afterwards."""
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(executable):
        if os.environ.get("CI"):
            raise RuntimeError("mosquitto is not installed (.ci/run installs it)")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    port, tls_port = free_port(), free_port()
    while tls_port == port:
        tls_port = free_port()
    config = _config(tmp_path, certs, port, tls_port)
    process = subprocess.Popen(
        [executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_listening(process, "mosquitto", port, tls_port, timeout_s=START_TIMEOUT_S)
        yield Mosquitto(port, tls_port, tmp_path / "ca.pem", tmp_path / "mosquitto.log")
    finally:
        process.terminate()
        process.communicate(timeout=10)  # waits, and closes the stderr pipe
