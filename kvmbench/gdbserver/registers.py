"""The guest's registers in gdb's ``i386:x86-64`` layout, read and written
through the session.

The layout is :data:`kvmbench.rsp.layout.X86_64` (core, sse and segments
features). The ``g`` reply carries the general registers, rip, eflags and
the selectors (numbers 0-23), the registers every stop needs; gdb and lldb
fetch the x87, SSE and segment-base registers that follow with ``p`` when
they want them (GDB manual, "Packets" > ``g``: a shorter reply leaves the
rest to be fetched one by one). So a stop costs one KVM_GET_FPU only when
the user looks at a floating-point register.

General registers and eflags are writable (``P``, ``G``); the selectors,
segment bases and the x87/SSE state are read-only here: a write is refused
unless it stores the value already there (gdb's ``G`` sends every register).
"""

from __future__ import annotations

from collections.abc import Mapping

from kvmbench.arch.x86_64 import KVM_REGS_FIELDS
from kvmbench.engine.session import Session
from kvmbench.errors import RspError, UsageError
from kvmbench.rsp.layout import X86_64, Register, RegisterLayout

LAYOUT: RegisterLayout = X86_64
#: Registers the ``g`` reply carries: numbers 0..23, rax through gs.
G_REGISTERS: tuple[Register, ...] = tuple(r for r in LAYOUT.registers if r.regnum <= LAYOUT.get("gs").regnum)
#: Registers in the session's own view (``session.regs``).
_SESSION_NAMES = frozenset(KVM_REGS_FIELDS) | {"eflags", "cs", "ss", "ds", "es", "fs", "gs",
                                               "fs_base", "gs_base"}
_WRITABLE = frozenset(KVM_REGS_FIELDS) | {"eflags"}
#: Registers expedited in every stop reply: rbp, rsp, rip (what a stop's
#: first frame needs, so the client does not have to ask).
EXPEDITED: tuple[Register, ...] = tuple(LAYOUT.get(n) for n in ("rbp", "rsp", "rip"))


class GuestRegisters:
    """Reads and writes registers by their layout entry; the session must be
    inspectable (stopped, exited or crashed), else SessionStateError."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def read(self, reg: Register) -> int | None:
        """The register's value; None where this target cannot read it."""
        if reg.name in _SESSION_NAMES:
            return self.session.regs[reg.name]
        self.session.regs.snapshot()  # the state check (refused while running)
        try:
            return self.session.target.read_register(reg.name)
        except (UsageError, KeyError):
            return None

    def read_g(self) -> dict[str, int]:
        """The ``g`` registers."""
        values = dict(self.session.regs.snapshot())
        values["eflags"] = values.pop("rflags")
        for name in ("cs", "ss", "ds", "es", "fs", "gs"):
            values[name] = self.session.regs[name]
        return values

    def write(self, reg: Register, value: int) -> None:
        """Write ``value``; refuses read-only registers unless unchanged."""
        if reg.name in _WRITABLE:
            self.session.regs[reg.name] = value
            return
        if self.read(reg) == value:
            return
        raise UsageError(f"register {reg.name} is read-only through kvmbench's server")

    def write_many(self, values: Mapping[str, int | None]) -> None:
        """A ``G`` packet's registers: every writable one given, the others
        checked unchanged (``None``, "unavailable", is left alone)."""
        for name, value in values.items():
            if value is None:
                continue
            reg = LAYOUT.get(name)
            if reg.name not in _WRITABLE and self.read(reg) != value:
                raise UsageError(f"register {reg.name} is read-only through kvmbench's server")
        for name, value in values.items():
            if value is not None and name in _WRITABLE:
                self.session.regs[name] = value


def register_by_number(regnum: int) -> Register:
    reg = LAYOUT.by_number(regnum)
    if reg is None:
        raise RspError(f"no register number {regnum:#x}")
    return reg


__all__ = ["EXPEDITED", "G_REGISTERS", "GuestRegisters", "LAYOUT", "register_by_number"]
