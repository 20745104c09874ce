"""Hex helpers: the protocol's numbers and byte strings are sent in hex.

Numbers (addresses, lengths, register numbers, thread ids) are big-endian
hex digits with no fixed width; memory and register contents are two hex
digits per byte in target byte order (GDB manual, "Packets"). Every
function raises :class:`~kvmbench.errors.RspError` on malformed input.
"""

from __future__ import annotations

import binascii

from kvmbench.errors import RspError

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def is_hex(text: bytes) -> bool:
    """True if ``text`` is one or more hex digits."""
    return bool(text) and all(c in _HEX_DIGITS for c in text)


def to_hex(data: bytes) -> bytes:
    """Two lowercase hex digits per byte."""
    return binascii.hexlify(data)


def from_hex(text: bytes) -> bytes:
    """The bytes two hex digits each stand for."""
    if len(text) % 2:
        raise RspError(f"odd number of hex digits ({len(text)}) in {show(text)}")
    if not all(c in _HEX_DIGITS for c in text):
        raise RspError(f"not hex: {show(text)}")
    return binascii.unhexlify(text)


def parse_hex_int(text: bytes, what: str = "number") -> int:
    """A non-negative number in hex digits (``what`` names it in errors)."""
    if not is_hex(text):
        raise RspError(f"{what} is not a hex number: {show(text)}")
    return int(text, 16)


def format_hex_int(value: int) -> bytes:
    """``value`` (>= 0) as lowercase hex digits without leading zeros."""
    if value < 0:
        raise RspError(f"cannot send a negative number ({value}) as hex")
    return b"%x" % value


def le_bytes(value: int, size: int) -> bytes:
    """``value`` as ``size`` little-endian bytes (x86 target byte order)."""
    try:
        return value.to_bytes(size, "little")
    except OverflowError:
        raise RspError(f"{value:#x} does not fit in {size} bytes") from None


def le_int(data: bytes) -> int:
    """The little-endian unsigned number in ``data``."""
    return int.from_bytes(data, "little")


def show(text: bytes, limit: int = 40) -> str:
    """``text`` quoted for a one-line error message (shortened, escaped)."""
    shown = repr(bytes(text[:limit]))[2:-1]
    return f"'{shown}...'" if len(text) > limit else f"'{shown}'"
