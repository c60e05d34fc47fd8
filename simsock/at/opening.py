"""Opening links (reference 3.3), and the numbers that ``+CLIENT`` takes (3.14).

An open is a procedure: it waits for the module to be up, picks a free link
number when its command is about to be written (so a ``+CLIENT`` that took a
number meanwhile leaves the other one), writes ``AT+CIPOPEN`` with its late
result registered, and retries on the other number if a client took this one
while the command was on its way. An open with no clear answer is closed
again in the module before its number is reused.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from . import commands as at
from .errors import module_error
from .link import Link, LinkState
from .procedures import Cmd, Procedure, WaitUp
from .response import Response

if TYPE_CHECKING:
    from .session import Session

__all__ = ["abandon", "free_number", "open_link", "take_number_for_client"]

logger = logging.getLogger("simsock.at.links")


def free_number(s: Session) -> int:
    """A free link number, or ``OSError(EMFILE)``."""
    first, last = s.info.capabilities.links
    for number in range(first, min(last, s.max_link) + 1):
        if number not in s.links:
            return number
    raise OSError(errno.EMFILE, f"all {last - first + 1} links of the module are in use")


def open_link(
    s: Session,
    host: str | None,
    port: int,
    local_port: int | None,
    *,
    paused: bool = False,
    udp_remote: tuple[str, int] | None = None,
) -> Procedure:
    """The procedure of one open: wait for the network, pick a number, ``AT+CIPOPEN``."""
    datamode = s.datamode
    udp = host is None
    yield WaitUp(s.timeout_for(at.cipopen_udp(0, 0)))
    for _ in range(2):
        # In transparent mode link 0 is the raw pipe: TCP, or UDP to one peer (3.3.3).
        transparent = (not udp or udp_remote is not None) and datamode.wants_link()
        number = 0 if transparent else free_number(s)
        if transparent and number in s.links:
            raise OSError(errno.EMFILE, "link 0 is in use (transparent mode)")
        _check_routable(s, udp, host, port)
        if udp:
            link = Link(number, udp_remote or ("0.0.0.0", 0), udp=True)
            if transparent:
                assert udp_remote is not None
                command = at.cipopen_udp(number, local_port or 0, *udp_remote)
            else:
                command = at.cipopen_udp(number, local_port or 0)
        else:
            assert host is not None
            link = Link(number, (host, port))
            command = at.cipopen_tcp(number, host, port, local_port)
        link.reading = not paused
        s.links[number] = link
        if transparent:
            datamode.opening(link)
        try:
            response: Response = yield Cmd(
                command,
                late=None if transparent else ("+CIPOPEN", number),
                until_connect=transparent,
                late_after_ok=not udp and not transparent,
            )
        except TimeoutError:
            # No answer in time: whether the module opened it is unknown.
            # Close it there before the number is used again.
            _reclaim(s, link)
            raise
        except BaseException:
            s.linkwork.release(link, None)
            raise
        if s.links.get(number) is not link:
            # A +CLIENT took the number meanwhile: try the other one.
            logger.info("link %d was given to a client while opening: retrying", number)
            continue
        if response.ok and (transparent or (response.late or [0, 0])[1] == 0):
            link.state = LinkState.OPEN
            return link
        s.linkwork.release(link, None)
        raise response.error("CIPOPEN")
    raise OSError(errno.EMFILE, "every link was taken by clients while opening")


def _check_routable(s: Session, udp: bool, host: str | None, port: int) -> None:
    """Pushed data without the link's number is routed by its sender (4.1): a second
    link that the same sender could feed would get, or lose, the other's data."""
    if not s.push_mode or s.info.link_headers:
        return
    for other in s.links.values():
        if other.state is LinkState.OPEN and (udp or other.udp or other.peer == (host, port)):
            raise OSError(
                errno.EADDRINUSE,
                f"link {other.number} already receives from that sender, and this module"
                " does not name the link of pushed data (CIPCCFG HeaderType 1 refused)",
            )


def abandon(s: Session, link: Link) -> None:
    """An open whose caller gave up: close the link it made."""
    if s.links.get(link.number) is link:
        link.lost_reported = True
        s.linkwork.request_close(link, abort=True)


def _reclaim(s: Session, link: Link) -> None:
    """``AT+CIPCLOSE`` a link whose open had no clear answer, then free its number."""
    link.lost_reported = True
    link.state = LinkState.OPEN
    s.linkwork.request_close(link, abort=True)


def take_number_for_client(s: Session, number: int) -> None:
    """A ``+CLIENT`` names ``number``: the module freed it, so any old life of it ends."""
    old = s.links.get(number)
    if old is not None:
        if old.state is LinkState.OPENING:
            del s.links[number]  # our open on it will fail; it retries elsewhere
        elif old.state is LinkState.PEER_CLOSED:
            s.linkwork.deliver_eof(old)
            s.linkwork.release(old, None)
        else:
            s.stats.protocol_errors += 1
            logger.warning("+CLIENT on link %d, which is %s: it is gone", number, old.state)
            s.linkwork.release(
                old,
                module_error(errno.ECONNRESET, "the module reused the link", None, None),
            )
