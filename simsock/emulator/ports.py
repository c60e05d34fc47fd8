"""Where the virtual module's UART is exposed: a pseudo-terminal or a TCP port.

Both give the emulator the same three coroutines (``read``, ``write``,
``close``) and a pyserial URL for the host: the pty's slave path, or
``socket://127.0.0.1:<port>``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import logging
import os
import tty
from typing import Final

__all__ = ["PtyPort", "SerialPort", "TcpPort"]

logger = logging.getLogger("simsock.emulator")

#: How long to wait before reading again when the pty reports a transient error (s).
_PTY_RETRY_S: Final = 0.05


class SerialPort(abc.ABC):
    """The host's side of the virtual module's serial line."""

    url: str = ""

    @abc.abstractmethod
    async def open(self) -> None:
        """Create the port; :attr:`url` is valid afterwards."""

    @abc.abstractmethod
    async def read(self, max_bytes: int) -> bytes:
        """Wait for bytes from the host; never returns ``b""``."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Hand ``data`` to the host (bytes are dropped while no host is attached)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the port."""


class PtyPort(SerialPort):
    """A pseudo-terminal: the host opens :attr:`url` (the slave) like a serial device.

    The emulator keeps its own descriptor of the slave open all its life, so
    the master never sees EIO when a host closes and reopens the device.
    """

    def __init__(self) -> None:
        self._master = -1
        self._slave = -1

    async def open(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass unchanged
        os.set_blocking(self._master, False)
        self.url = os.ttyname(self._slave)

    async def _ready(self, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add, remove = (
            (loop.add_writer, loop.remove_writer)
            if writing
            else (loop.add_reader, loop.remove_reader)
        )
        add(self._master, wake)
        try:
            await ready
        finally:
            remove(self._master)

    async def read(self, max_bytes: int) -> bytes:
        while True:
            try:
                data = os.read(self._master, max_bytes)
            except BlockingIOError:
                await self._ready(writing=False)
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                await asyncio.sleep(_PTY_RETRY_S)
                continue
            if data:
                return data
            await self._ready(writing=False)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                written = 0
            view = view[written:]
            if view:  # the host is not reading: the pty's buffer is full
                await self._ready(writing=True)

    async def close(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1


class TcpPort(SerialPort):
    """A TCP port on ``host`` (127.0.0.1 by default): pyserial's ``socket://`` URL.

    One host at a time: a second connection is closed at once. When the host
    disconnects, the module keeps its state and waits for the next one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._client: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._attached = asyncio.Event()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self._host, self._port)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"socket://{self._host}:{port}"

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._client is not None:
            logger.warning("a second host connected to %s; refusing it", self.url)
            writer.close()
            return
        self._client = (reader, writer)
        self._attached.set()

    def _detach(self) -> None:
        if self._client is not None:
            self._client[1].close()
        self._client = None
        self._attached.clear()

    async def read(self, max_bytes: int) -> bytes:
        while True:
            await self._attached.wait()
            assert self._client is not None
            try:
                data = await self._client[0].read(max_bytes)
            except ConnectionError:
                data = b""
            if data:
                return data
            self._detach()

    async def write(self, data: bytes) -> None:
        if self._client is None:
            return  # like a UART with nothing attached: the bits go nowhere
        writer = self._client[1]
        try:
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            self._detach()

    async def close(self) -> None:
        self._detach()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
