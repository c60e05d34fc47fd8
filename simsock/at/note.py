"""The facts the application note fixes: limits, escape bytes, result texts.

One constant each, with its section of the reference (``SIM7028_TCPIP_AT.md``;
"original" marks a section of the application note itself). The library and
the virtual SIM7028 (:mod:`simsock.emulator`) both take them from here. The
error codes (section 5) are in :mod:`.errors`.
"""

from __future__ import annotations

from typing import Final

# --- limits ------------------------------------------------------------------------

#: Highest ``<link_num>``: links 0-1 (3, 3.3).
MAX_LINK: Final = 1
#: Highest link number the firmware's parameter check knows: above it a link
#: number is ``+IP ERROR: Invalid parameter``; 2-9 are links never established
#: (original 2.1.3, 3.2.2).
MAX_LINK_SLOT: Final = 9
#: Highest ``<server_index>``: servers 0-1 (3, 3.14).
MAX_SERVER: Final = 1
#: Largest payload of one ``AT+CIPSEND`` (3, 3.4).
MAX_SEND_BYTES: Final = 1500
#: Largest ``AT+CIPRXGET=2`` (raw) read, and its default (3.5).
MAX_READ_BYTES: Final = 1500
#: Largest ``AT+CIPRXGET=3`` (hex) read in payload bytes, and its default (3.5).
MAX_HEX_READ_BYTES: Final = 750
#: Most bytes one direct-push block carries (4.1).
MAX_PUSH_BYTES: Final = 1500
#: Range of each ``AT+CIPTIMEOUT`` timeout (NETOPEN, CIPOPEN, CIPSEND), ms (3.12).
CIPTIMEOUT_RANGE_MS: Final = (3000, 120_000)
#: Default of each ``AT+CIPTIMEOUT`` timeout, ms (3.12).
CIPTIMEOUT_DEFAULT_MS: Final = 120_000
#: Maximum response time of NETOPEN, NETCLOSE, CIPOPEN, CIPSEND and CIPCLOSE
#: until ``AT+CIPTIMEOUT`` changes it, s (3).
CIPTIMEOUT_DEFAULT_S: Final = CIPTIMEOUT_DEFAULT_MS / 1000
#: Maximum response time of ``AT+CIPRXGET``, s (3).
CIPRXGET_TIMEOUT_S: Final = 8.0
#: Maximum response time of ``AT+CDNSGIP``, s (3).
CDNSGIP_TIMEOUT_S: Final = 6.0
#: Maximum response time of every other command, s (3).
DEFAULT_TIMEOUT_S: Final = 9.0
#: ``AT+CIPCCFG`` defaults: NmRetry, DelayTm, Ack, errMode, HeaderType,
#: AsyncMode, TimeoutVal (3.13).
CIPCCFG_DEFAULTS: Final = (10, 0, 0, 1, 0, 0, 500)
#: ``AT+CIPCCFG`` range of each parameter, in the order of :data:`CIPCCFG_DEFAULTS` (3.13).
CIPCCFG_RANGES: Final = ((0, 10), (0, 1000), (0, 0), (0, 1), (0, 1), (0, 1), (500, 120_000))
#: ``AT+SERVERSTART`` backlog range (3.14).
BACKLOG_RANGE: Final = (1, 3)
#: ``AT+SERVERSTART`` backlog default (3.14).
BACKLOG_DEFAULT: Final = 3
#: Longest domain name of ``AT+CDNSGIP`` (3.17).
MAX_DOMAIN_CHARS: Final = 254
#: Longest label of such a domain name (3.17).
MAX_LABEL_CHARS: Final = 63
#: ``AT+CSOCKETPN=1,<ip_family>`` value that selects IPv4 (3.18).
CSOCKETPN_IPV4: Final = 1
#: ``AT+CSOCKETPN=1,<ip_family>`` value that selects IPv6 (3.18).
CSOCKETPN_IPV6: Final = 6
#: ``AT+CTCPKA`` ranges: keepalive, keepidle (min), keepcount, keepinterval (min) (3.19).
CTCPKA_RANGES: Final = ((0, 1), (1, 120), (1, 10), (1, 120))

# --- escape bytes ------------------------------------------------------------------

#: Ends a variable-length ``AT+CIPSEND`` payload (Ctrl+Z, 3.4).
CTRL_Z: Final = 0x1A
#: Cancels an ``AT+CIPSEND`` payload (3.4).
ESC: Final = 0x1B
#: Inside a variable-length payload, escapes the next 0x1A, 0x1B or 0x03 (3.4).
ETX: Final = 0x03
#: Leaves transparent data mode: sent as one unit, without a CR (2).
ESCAPE_SEQUENCE: Final = "+++"
#: Silence needed before and after ``+++``, s (2).
ESCAPE_GUARD_S: Final = 1.0
#: Longest pause between the characters of ``+++``, s (2).
ESCAPE_CHAR_GAP_S: Final = 0.9

# --- result texts ------------------------------------------------------------------

#: ``AT+CIPSEND``'s prompt: ``<CR><LF>>`` and a space, no line end (1, 3.4).
PROMPT: Final = b"\r\n> "
#: A transparent link entered data mode, maybe followed by a rate (2, 3.3).
CONNECT: Final = "CONNECT"
#: ``CONNECT`` with the rate the note shows, as the module answers (2, 3.3).
CONNECT_RESULT: Final = f"{CONNECT} 115200"
#: A transparent-mode open failed (3.3).
CONNECT_FAIL: Final = "CONNECT FAIL"
#: A transparent link closed; the module is back in command mode (4.2, 3.6).
CLOSED: Final = "CLOSED"
#: The module (re)started (1).
READY: Final = "RDY"
#: The SIM needs no PIN: a start-up notice and ``AT+CPIN?``'s answer (1, 3.21).
SIM_READY: Final = "+CPIN: READY"
#: The SMS service is up: the SIM7028's last start-up notice (1).
SMS_READY: Final = "SMS Ready"
#: What ``+CIPEVENT:`` says when the network dropped (4.2).
NETWORK_CLOSED: Final = "NETWORK CLOSED UNEXPECTEDLY"
#: The line before pushed data that names its sender (4.1, 3.9).
SENDER_PREFIX: Final = "RECV FROM:"
#: The same, as the original also writes it (original 1.3).
SENDER_PREFIX_PLUS: Final = "+RECV FROM:"
#: The same, as the original writes it in the CIPRXGET section (original 2.1.5).
SENDER_PREFIX_SHORT: Final = "RCV FROM:"
#: Every spelling of the sender line; a host accepts them all (4.1).
SENDER_PREFIXES: Final = (SENDER_PREFIX, SENDER_PREFIX_PLUS, SENDER_PREFIX_SHORT)
