"""Typed KVM exits: one class per KVM_EXIT_* the VMM understands.

Data is copied out of the shared run page by :func:`decode_exit`, so an exit
object stays valid after the next KVM_RUN.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from kvmbench.backends.kvm import abi

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

#: KVM_INTERNAL_ERROR_* suberror names, for messages.
INTERNAL_ERROR_NAMES = {
    1: "emulation",
    2: "simultaneous exceptions",
    3: "delivery of an event",
    4: "unexpected exit reason",
}


@dataclass(frozen=True, slots=True)
class IoOut:
    port: int
    size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class IoIn:
    port: int
    size: int


@dataclass(slots=True)
class Debug:
    """KVM_EXIT_DEBUG: ``exception`` is 1 (#DB) or 3 (#BP); ``pc`` the guest rip."""

    exception: int
    pc: int
    dr6: int
    dr7: int


@dataclass(frozen=True, slots=True)
class Hlt:
    pass


@dataclass(frozen=True, slots=True)
class Mmio:
    address: int
    length: int
    is_write: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class IrqWindowOpen:
    pass


@dataclass(frozen=True, slots=True)
class Interrupted:
    """KVM_EXIT_INTR: a signal (pause or timer kick) ended KVM_RUN."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class FailEntry:
    hardware_reason: int


@dataclass(frozen=True, slots=True)
class InternalError:
    suberror: int
    data: tuple[int, ...]

    @property
    def description(self) -> str:
        return INTERNAL_ERROR_NAMES.get(self.suberror, "unknown")


@dataclass(frozen=True, slots=True)
class Unsupported:
    reason: int


Exit = (
    IoOut | IoIn | Debug | Hlt | Mmio | IrqWindowOpen | Interrupted | Shutdown | FailEntry
    | InternalError | Unsupported
)

_HLT, _IRQ_WINDOW, _INTR, _SHUTDOWN = Hlt(), IrqWindowOpen(), Interrupted(), Shutdown()


def decode_exit(run: abi.kvm_run, run_address: int) -> Exit:
    """The exit the run page describes; ``run_address`` is the page's address."""
    reason = run.exit_reason
    if reason == KVM_EXIT_IO:
        io = run.exit.io
        if io.direction == abi.KVM_EXIT_IO_OUT:
            # SAFETY: data_offset points inside the run page (api.rst, KVM_EXIT_IO).
            data = ctypes.string_at(run_address + io.data_offset, io.size * io.count)
            return IoOut(io.port, io.size, data)
        return IoIn(io.port, io.size)
    if reason == KVM_EXIT_DEBUG:
        d = run.exit.debug
        return Debug(d.exception, d.pc, d.dr6, d.dr7)
    if reason == KVM_EXIT_HLT:
        return _HLT
    if reason == KVM_EXIT_MMIO:
        m = run.exit.mmio
        return Mmio(m.phys_addr, m.len, bool(m.is_write), bytes(m.data)[: m.len])
    if reason == KVM_EXIT_INTR:
        return _INTR
    if reason == KVM_EXIT_IRQ_WINDOW_OPEN:
        return _IRQ_WINDOW
    if reason == KVM_EXIT_SHUTDOWN:
        return _SHUTDOWN
    if reason == KVM_EXIT_FAIL_ENTRY:
        return FailEntry(run.exit.fail_entry.hardware_entry_failure_reason)
    if reason == KVM_EXIT_INTERNAL_ERROR:
        internal = run.exit.internal
        n = min(internal.ndata, 16)
        return InternalError(internal.suberror, tuple(internal.data[:n]))
    return Unsupported(reason)
