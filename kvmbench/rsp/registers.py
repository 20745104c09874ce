"""Register packets: ``g``/``G`` (all registers) and ``p``/``P`` (one).

GDB manual, "Packets": the ``g`` reply is every register in number order,
two hex digits per byte in target byte order; ``xx`` digits mark bytes the
stub cannot read, and a stub may send fewer registers than it describes
(the rest are unavailable). ``G XX...`` writes them all in the same form.
``p n`` reads register ``n`` (hex number), ``P n=r...`` writes it.

Values are ints here (x86 is little-endian); None is "unavailable".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import from_hex, le_bytes, le_int, parse_hex_int, show, to_hex
from kvmbench.rsp.layout import Register, RegisterLayout

READ_REGISTERS = b"g"


def decode_register(text: bytes, reg: Register) -> int | None:
    """The value in ``text`` (hex, target order), None if all ``x``."""
    if len(text) != 2 * reg.size:
        raise RspError(f"{reg.name} needs {2 * reg.size} hex digits, got {len(text)}")
    if text.strip(b"xX") == b"":
        return None
    return le_int(from_hex(text))


def encode_register(value: int | None, reg: Register) -> bytes:
    """``value`` as hex in target order (``xx...`` for None)."""
    if value is None:
        return b"xx" * reg.size
    if value < 0:
        value &= (1 << (8 * reg.size)) - 1
    return to_hex(le_bytes(value, reg.size))


def parse_registers_reply(reply: bytes, layout: RegisterLayout) -> dict[str, int | None]:
    """Every register of ``layout`` from a ``g`` reply (check ``E NN`` first)."""
    if len(reply) % 2:
        raise RspError(f"g reply has an odd number of hex digits ({len(reply)})")
    if len(reply) > 2 * layout.g_size:
        raise RspError(f"g reply has {len(reply) // 2} bytes, the layout only {layout.g_size}")
    values: dict[str, int | None] = {}
    if b"x" not in reply and b"X" not in reply:
        # The common reply, every register known: decode the hex once (a
        # stub's g carries dozens of registers, and a debugger reads one
        # at every stop).
        try:
            data = bytes.fromhex(reply.decode("ascii"))
        except ValueError:
            data = None  # let the per-register path say where it is broken
        if data is not None:
            end = len(data)
            for name, offset, size in layout.spans:
                if offset + size <= end:
                    values[name] = int.from_bytes(data[offset : offset + size], "little")
                elif offset < end:
                    raise RspError(f"g reply ends inside register {name}")
                else:
                    values[name] = None
            return values
    offset = 0
    for reg in layout.registers:
        text = reply[offset : offset + 2 * reg.size]
        offset += 2 * reg.size
        if len(text) < 2 * reg.size:
            if text:
                raise RspError(f"g reply ends inside register {reg.name}")
            values[reg.name] = None
        else:
            values[reg.name] = decode_register(text, reg)
    return values


def build_registers_reply(values: Mapping[str, int | None], layout: RegisterLayout) -> bytes:
    """The ``g`` reply for ``values`` (registers not given: ``xx``)."""
    unknown = set(values) - set(layout.names)
    if unknown:
        raise RspError(f"the layout has no registers {sorted(unknown)}")
    return b"".join(encode_register(values.get(reg.name), reg) for reg in layout.registers)


def build_write_registers(values: Mapping[str, int | None], layout: RegisterLayout) -> bytes:
    """``G`` with every register of ``layout`` (missing ones ``xx``)."""
    return b"G" + build_registers_reply(values, layout)


def parse_write_registers(packet: bytes, layout: RegisterLayout) -> dict[str, int | None]:
    if packet[:1] != b"G":
        raise RspError(f"not a G packet: {show(packet)}")
    return parse_registers_reply(packet[1:], layout)


def build_read_register(regnum: int) -> bytes:
    """``p n``."""
    if regnum < 0:
        raise RspError(f"register number {regnum} is negative")
    return b"p%x" % regnum


def parse_read_register(packet: bytes) -> int:
    if packet[:1] != b"p":
        raise RspError(f"not a p packet: {show(packet)}")
    return parse_hex_int(packet[1:], "register number")


def parse_register_reply(reply: bytes, reg: Register) -> int | None:
    """The value in a ``p`` reply for ``reg`` (check ``E NN`` first)."""
    return decode_register(reply, reg)


def build_register_reply(value: int | None, reg: Register) -> bytes:
    return encode_register(value, reg)


@dataclass(frozen=True, slots=True)
class RegisterWrite:
    regnum: int
    value: bytes


def build_write_register(reg: Register, value: int) -> bytes:
    """``P n=r...``."""
    return b"P%x=%s" % (reg.regnum, encode_register(value, reg))


def parse_write_register(packet: bytes) -> RegisterWrite:
    """``P n=r...``: the number and the raw bytes (size checked by the caller's layout)."""
    if packet[:1] != b"P":
        raise RspError(f"not a P packet: {show(packet)}")
    number, equals, value = packet[1:].partition(b"=")
    if not equals:
        raise RspError(f"P packet without '=': {show(packet)}")
    return RegisterWrite(parse_hex_int(number, "register number"), from_hex(value))
