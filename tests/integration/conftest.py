"""Fixtures for end-to-end tests: a virtual SIM7028 on a real pty and the library on top."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import simsock
from simsock.emulator import VirtualModem


@pytest.fixture
async def vm() -> AsyncIterator[VirtualModem]:
    """A virtual SIM7028 on a pty, unpaced."""
    async with VirtualModem() as modem:
        yield modem


@pytest.fixture
async def modem(vm: VirtualModem) -> AsyncIterator[simsock.Modem]:
    """The library, brought up on ``vm`` through pyserial-asyncio."""
    async with simsock.open_modem(vm.url) as opened:
        yield opened
