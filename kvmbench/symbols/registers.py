"""DWARF register numbers of x86-64 and the names gdb gives those registers.

DWARF names registers by number (DW_OP_reg3, DW_CFA_offset r3, ...); the
mapping is the psABI's: System V AMD64 ABI, figure 3.36 "DWARF Register
Number Mapping". Everything above this module speaks gdb's register names
(``rax``, ``rip``, ``eflags``, ``fs_base``), as :class:`FrameContext`
does.
"""

from __future__ import annotations

from types import MappingProxyType

# psABI figure 3.36. Column 16 is the return address ("RA"), which gdb
# shows as the caller's rip.
_NAMES: dict[int, str] = {
    0: "rax", 1: "rdx", 2: "rcx", 3: "rbx", 4: "rsi", 5: "rdi", 6: "rbp", 7: "rsp",
    **{n: f"r{n}" for n in range(8, 16)},
    16: "rip",
    **{17 + n: f"xmm{n}" for n in range(16)},
    **{33 + n: f"st{n}" for n in range(8)},
    **{41 + n: f"mm{n}" for n in range(8)},
    49: "eflags",
    50: "es", 51: "cs", 52: "ss", 53: "ds", 54: "fs", 55: "gs",
    58: "fs_base", 59: "gs_base",
    62: "tr", 63: "ldtr", 64: "mxcsr", 65: "fctrl", 66: "fstat",
}

#: DWARF register number -> gdb's name, for x86-64.
DWARF_REGISTER_NAMES = MappingProxyType(_NAMES)

#: gdb's name -> DWARF register number.
DWARF_REGISTER_NUMBERS = MappingProxyType({name: number for number, name in _NAMES.items()})

#: The CFI column that holds the return address (psABI figure 3.36).
RETURN_ADDRESS_COLUMN = 16

#: Registers a callee must preserve (psABI 3.2.1, "Registers"): an unwinder
#: may trust their values in callers, the others hold whatever the callee
#: left.
CALLEE_SAVED = frozenset({"rbx", "rbp", "rsp", "r12", "r13", "r14", "r15"})

#: Bytes of the registers DWARF locations may name: general registers are
#: 8, vector registers 16, x87 registers 10 (gdb's ``i387_ext``).
_WIDTHS = {"xmm": 16, "st": 10, "mm": 8}


def register_name(number: int) -> str:
    """gdb's name of DWARF register ``number``; ``dwarf-reg-N`` if the ABI has none."""
    return _NAMES.get(number, f"dwarf-reg-{number}")


def register_width(name: str) -> int:
    """The size in bytes of register ``name`` as a DWARF location holds it."""
    for prefix, width in _WIDTHS.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return width
    return 8
