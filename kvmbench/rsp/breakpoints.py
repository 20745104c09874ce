"""``Z`` and ``z``: insert and remove breakpoints and watchpoints.

GDB manual, "Packets": ``Z type,addr,kind[;cond_list...][;cmds:...]`` and
``z type,addr,kind``; type 0 a software breakpoint, 1 a hardware one, 2 a
write watchpoint, 3 a read watchpoint, 4 an access watchpoint. For
breakpoints ``kind`` is target specific (on x86 the length of the
breakpoint instruction, 1); for watchpoints it is the number of bytes
watched. The reply is ``OK``, ``E NN`` when the stub could not (no slot
left, bad address), or empty when the stub lacks that type.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kvmbench.errors import RspError
from kvmbench.rsp.hexdata import parse_hex_int, show


class BreakpointType(enum.IntEnum):
    SOFTWARE = 0
    HARDWARE = 1
    WRITE_WATCH = 2
    READ_WATCH = 3
    ACCESS_WATCH = 4

    @property
    def is_watchpoint(self) -> bool:
        return self >= BreakpointType.WRITE_WATCH


@dataclass(frozen=True, slots=True)
class BreakpointRequest:
    """An insert (``Z``) or remove (``z``) request. ``extra`` keeps the
    condition and command lists (``;X...``, ``;cmds:...``) unparsed."""

    insert: bool
    type: BreakpointType
    address: int
    kind: int
    extra: bytes = b""


def build_breakpoint(insert: bool, type: BreakpointType, address: int, kind: int) -> bytes:  # noqa: A002
    """``Z``/``z`` ``type,addr,kind``."""
    if address < 0 or kind < 0:
        raise RspError(f"breakpoint address and kind must be >= 0, not {address:#x}, {kind}")
    return b"%s%d,%x,%x" % (b"Z" if insert else b"z", BreakpointType(type), address, kind)


def parse_breakpoint(packet: bytes) -> BreakpointRequest:
    letter = packet[:1]
    if letter not in (b"Z", b"z"):
        raise RspError(f"not a Z/z packet: {show(packet)}")
    head, _, extra = packet[1:].partition(b";")
    fields = head.split(b",")
    if len(fields) != 3:
        raise RspError(f"Z/z packet is not type,addr,kind: {show(packet)}")
    type_number = parse_hex_int(fields[0], "breakpoint type")
    if type_number > BreakpointType.ACCESS_WATCH:
        raise RspError(f"breakpoint type {type_number} is not 0..4")
    return BreakpointRequest(
        letter == b"Z",
        BreakpointType(type_number),
        parse_hex_int(fields[1], "breakpoint address"),
        parse_hex_int(fields[2], "breakpoint kind"),
        extra,
    )
