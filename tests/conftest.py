"""Shared fixtures: real peers on 127.0.0.1 (the virtual SIM7028 fixtures live beside the tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    """A TCP echo server on 127.0.0.1; yields its (host, port)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
