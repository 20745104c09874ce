"""The packets lldb asks beyond gdb's (lldb's docs/lldb-gdb-remote.txt).

lldb reads target.xml when ``qXfer:features:read`` is announced and then
never needs ``qRegisterInfo``; it still asks the host's and the process's
description (``qHostInfo``, ``qProcessInfo``: ``triple`` is the hex of the
target triple, ``ptrsize`` and ``endian`` describe the guest).
``qRegisterInfo N`` is answered from the same layout for an lldb that asks
it first. ``qMemoryRegionInfo`` is left unsupported: lldb asks it page by
page from address 0 when the answer is one page, and does without it.
"""

from __future__ import annotations

from kvmbench.gdbserver.registers import G_REGISTERS, LAYOUT
from kvmbench.rsp.hexdata import to_hex

#: A kvmbench guest: x86-64, no operating system lldb knows.
TRIPLE = "x86_64-unknown-unknown"
_GENERIC = {"rip": "pc", "rsp": "sp", "rbp": "fp", "eflags": "flags"}
# DWARF register numbers of the System V x86-64 psABI (figure 3.36).
_DWARF = {name: i for i, name in enumerate(
    ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip"))}
_DWARF.update({f"xmm{i}": 17 + i for i in range(16)})
_DWARF.update({f"st{i}": 33 + i for i in range(8)})


def _pairs(values: dict[str, object]) -> bytes:
    return "".join(f"{k}:{v};" for k, v in values.items()).encode()


def host_info() -> bytes:
    return _pairs({"triple": to_hex(TRIPLE.encode()).decode(), "ptrsize": 8, "endian": "little",
                   "hostname": to_hex(b"kvmbench").decode()})


def process_info() -> bytes:
    return _pairs({"pid": 1, "parent-pid": 1, "triple": to_hex(TRIPLE.encode()).decode(),
                   "ostype": "unknown", "endian": "little", "ptrsize": 8})


def register_info(regnum: int) -> bytes:
    """``qRegisterInfo N``; ``E45`` past the last register ends lldb's loop."""
    reg = LAYOUT.by_number(regnum)
    if reg is None:
        return b"E45"
    offset = 0
    for r in LAYOUT.registers:
        if r.regnum == regnum:
            break
        offset += r.size
    if reg.name.startswith("xmm"):
        encoding, fmt, group = "vector", "vector-uint8", "SSE Registers"
    elif reg.name.startswith("st"):
        encoding, fmt, group = "float", "float", "x87 Registers"
    else:
        encoding, fmt = "uint", "hex"
        group = "General Purpose Registers" if reg in G_REGISTERS else "Other Registers"
    values: dict[str, object] = {"name": reg.name, "bitsize": reg.bitsize, "offset": offset,
                                 "encoding": encoding, "format": fmt, "set": group}
    if reg.name in _DWARF:
        values["dwarf"] = _DWARF[reg.name]
    if reg.name in _GENERIC:
        values["generic"] = _GENERIC[reg.name]
    return _pairs(values)
