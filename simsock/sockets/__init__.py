"""The socket surface: asyncio transports, streams and the ``Modem`` handle."""

from .modem import Modem
from .opener import open_modem
from .transport import LinkTransport

__all__ = ["LinkTransport", "Modem", "open_modem"]
