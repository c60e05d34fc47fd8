"""``simsock proxy``: a local SOCKS5 server whose every connection goes over the module.

``await serve_socks5(modem)`` (:mod:`.server`) for programs, ``simsock proxy``
(:mod:`.cli`) for the command line; the wire format is in :mod:`.socks5`.
"""

from __future__ import annotations

from .server import ConnectionRecord, Socks5Proxy, check_listen_address, serve_socks5

__all__ = ["ConnectionRecord", "Socks5Proxy", "check_listen_address", "serve_socks5"]
