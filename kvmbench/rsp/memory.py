"""Memory packets: ``m`` (read), ``M`` (write, hex), ``X`` (write, binary).

GDB manual, "Packets": ``m addr,length`` is answered with the bytes in hex
(possibly fewer than asked, if only part is readable) or ``E NN``;
``M addr,length:XX...`` and ``X addr,length:bytes`` with ``OK`` or ``E NN``.
``X``'s data is binary, escaped by the framing; a stub without ``X``
answers it as unsupported (QEMU 7.2), and ``X addr,0:`` is the probe gdb
sends to find out.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import from_hex, parse_hex_int, show, to_hex


@dataclass(frozen=True, slots=True)
class MemoryRead:
    address: int
    length: int


@dataclass(frozen=True, slots=True)
class MemoryWrite:
    address: int
    data: bytes


def _address_length(text: bytes, what: str) -> tuple[int, int]:
    address, comma, length = text.partition(b",")
    if not comma:
        raise RspError(f"{what} needs addr,length: {show(text)}")
    return parse_hex_int(address, f"{what} address"), parse_hex_int(length, f"{what} length")


def _check(address: int, length: int) -> None:
    if address < 0 or length < 0:
        raise RspError(f"memory address and length must be >= 0, not {address:#x}, {length}")


def build_read_memory(address: int, length: int) -> bytes:
    """``m addr,length``."""
    _check(address, length)
    return b"m%x,%x" % (address, length)


def parse_read_memory(packet: bytes) -> MemoryRead:
    if packet[:1] != b"m":
        raise RspError(f"not an m packet: {show(packet)}")
    return MemoryRead(*_address_length(packet[1:], "m"))


def build_memory_reply(data: bytes) -> bytes:
    return to_hex(data)


def parse_memory_reply(reply: bytes) -> bytes:
    """The bytes of an ``m`` reply (check for ``E NN`` first)."""
    return from_hex(reply)


def build_write_memory(address: int, data: bytes) -> bytes:
    """``M addr,length:XX...``."""
    _check(address, len(data))
    return b"M%x,%x:%s" % (address, len(data), to_hex(data))


def parse_write_memory(packet: bytes) -> MemoryWrite:
    if packet[:1] != b"M":
        raise RspError(f"not an M packet: {show(packet)}")
    head, colon, data = packet[1:].partition(b":")
    if not colon:
        raise RspError(f"M packet without ':' before its data: {show(packet)}")
    address, length = _address_length(head, "M")
    value = from_hex(data)
    if len(value) != length:
        raise RspError(f"M packet says {length} bytes but carries {len(value)}")
    return MemoryWrite(address, value)


def build_write_binary(address: int, data: bytes) -> bytes:
    """``X addr,length:`` and ``data`` as is (the framing escapes it)."""
    _check(address, len(data))
    return b"X%x,%x:" % (address, len(data)) + data


def parse_write_binary(packet: bytes) -> MemoryWrite:
    """An ``X`` packet whose data the framing has already unescaped."""
    if packet[:1] != b"X":
        raise RspError(f"not an X packet: {show(packet)}")
    head, colon, data = packet[1:].partition(b":")
    if not colon:
        raise RspError(f"X packet without ':' before its data: {show(packet)}")
    address, length = _address_length(head, "X")
    if len(data) != length:
        raise RspError(f"X packet says {length} bytes but carries {len(data)}")
    return MemoryWrite(address, data)
