"""Response shapes that differ between SIMCom firmware builds.

The note (SIM7028 TCP/IP application note V1.04) shows one shape for each
result; real SIMCom firmware prints a few of them differently. A
:class:`FirmwareShapes` picks the variant of each, so firmware written for
another build can be tested against the virtual module. The default is the
note's shapes; :meth:`FirmwareShapes.a76xx` is the A76xx family's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..at.note import READY, SENDER_PREFIX, SENDER_PREFIX_SHORT, SIM_READY, SMS_READY

__all__ = ["SIM7028_START_UP", "FirmwareShapes"]

#: What a SIM7028 prints after ``+CPIN: READY`` (every variant's first notice
#: after its ready line): the SMS service is up.
SIM7028_START_UP: Final = (SMS_READY,)
#: ``<cnfSendLength>`` shapes: 3 fields always, or 2 for a full send (3.4).
_CIPSEND_FIELDS: Final = (2, 3)


@dataclass(frozen=True, slots=True)
class FirmwareShapes:
    """Which shape of each firmware-dependent result the module prints.

    ``ready_line`` is the first line after power-up or a restart (``RDY``;
    A76xx: ``*ATREADY: 1``); then ``+CPIN: READY``, then ``start_up_lines``
    (A76xx: ``SMS DONE``, ``PB DONE``; empty, the default: the SIM7028's own
    ``SMS Ready``, so the default boots as the emulator always has).
    ``rxget_rest_len`` False drops ``<rest_len>`` from the ``AT+CIPRXGET=2|3``
    header (``+CIPRXGET: 2,<link>,<read_len>``). ``cipsend_fields`` 2 confirms
    a full send as ``+CIPSEND: <link>,<len>``; a send that failed or was cut
    short (``<cnfSendLength>`` 0, -1 or less than asked) keeps the three-field
    form. ``rxget_urc_names_link`` False makes the buffer-mode notice
    ``+CIPRXGET: 1`` without the link. ``sender_prefix`` starts the line that
    names a pushed datagram's sender (4.1): ``RECV FROM:``, ``RCV FROM:``
    (2.1.5) or ``+RECV FROM:`` (1.3).
    """

    ready_line: str = READY
    start_up_lines: tuple[str, ...] = ()
    rxget_rest_len: bool = True
    cipsend_fields: int = 3
    rxget_urc_names_link: bool = True
    sender_prefix: str = SENDER_PREFIX

    def __post_init__(self) -> None:
        if self.cipsend_fields not in _CIPSEND_FIELDS:
            raise ValueError(f"cipsend_fields is 2 or 3, not {self.cipsend_fields!r}")
        for text in (self.ready_line, *self.start_up_lines, self.sender_prefix):
            if not text or "\r" in text or "\n" in text:
                raise ValueError(f"{text!r} is not one non-empty line")

    @classmethod
    def a76xx(cls) -> FirmwareShapes:
        """The SIMCom A76xx family's shapes."""
        return cls(
            ready_line="*ATREADY: 1",
            start_up_lines=("SMS DONE", "PB DONE"),
            rxget_rest_len=False,
            cipsend_fields=2,
            rxget_urc_names_link=False,
            sender_prefix=SENDER_PREFIX_SHORT,
        )

    def boot_lines(self) -> tuple[str, ...]:
        """The URCs after power-up or a restart, in order."""
        return (self.ready_line, SIM_READY, *(self.start_up_lines or SIM7028_START_UP))

    def data_notice(self, link: int) -> str:
        """Buffer mode's "data is waiting" URC (3.5)."""
        return f"+CIPRXGET: 1,{link}" if self.rxget_urc_names_link else "+CIPRXGET: 1"

    def rxget_header(self, mode: int, link: int, read_len: int, rest_len: int) -> str:
        """The header line of an ``AT+CIPRXGET=2|3`` read (3.5)."""
        head = f"+CIPRXGET: {mode},{link},{read_len}"
        return f"{head},{rest_len}" if self.rxget_rest_len else head

    def send_result(self, link: int, requested: int, confirmed: int) -> str:
        """The late result of a CIPSEND (3.4)."""
        if self.cipsend_fields == 2 and confirmed == requested:
            return f"+CIPSEND: {link},{requested}"
        return f"+CIPSEND: {link},{requested},{confirmed}"

    def sender_line(self, host: str, port: int) -> str:
        """The line naming a pushed block's sender (4.1, with ``AT+CIPSRIP=1``)."""
        return f"{self.sender_prefix}{host}:{port}"


#: The firmware presets by name (``simsock emulate --firmware NAME``).
FIRMWARE_PRESETS: Final[dict[str, Callable[[], FirmwareShapes]]] = {
    "sim7028": FirmwareShapes,
    "a76xx": FirmwareShapes.a76xx,
}
