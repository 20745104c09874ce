"""x86-64 facts: register names, the debug registers (DR6, DR7), trap opcodes
and RFLAGS bits.

Plain data and pure functions; nothing here touches /dev/kvm. The ctypes
mirrors of the KVM structs live in ``kvmbench.backends.kvm.abi``; this module
only names their fields.

References: Intel SDM vol. 3, chapter 18 "Debug, Branch Profile, TSC, and
Intel Resource Director Technology Features" (18.2 debug registers, 18.3
debug exceptions), and Documentation/virt/kvm/api.rst (KVM_SET_GUEST_DEBUG,
KVM_EXIT_DEBUG).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from kvmbench.arch.profiles import X86_64, Chunk, SlotKind, split_aligned
from kvmbench.errors import UsageError

__all__ = [
    "DR6_SIGNIFICANT",
    "DR7_FIXED_1",
    "GDB_REGISTERS",
    "GDB_REGISTER_SIZES",
    "GDB_TO_KVM_REGS",
    "GDB_TO_KVM_SREGS",
    "HLT",
    "INT3",
    "KVM_REGS_FIELDS",
    "NAME",
    "NUM_DEBUG_SLOTS",
    "PC_REGISTER",
    "PROFILE",
    "SP_REGISTER",
    "DebugSlot",
    "Dr6",
    "Dr7Slot",
    "Rflags",
    "SlotKind",
    "check_watch_chunk",
    "debugregs_for",
    "decode_dr7",
    "encode_dr7",
    "significant_bits",
    "split_range",
    "triggered_slots",
]

NAME = "x86_64"
PROFILE = X86_64
PC_REGISTER = "rip"
SP_REGISTER = "rsp"

# --- registers -----------------------------------------------------------------

# The order of gdb's amd64 'g' packet (gdb/features/i386/64bit-core.xml): the
# general registers, rip, eflags and the six segment selectors. The x87 and
# SSE registers that follow in the target description are not listed.
GDB_REGISTERS: tuple[str, ...] = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs",
)  # fmt: skip

# Bytes each register takes in the 'g' packet: eflags and the selectors are
# 32-bit in gdb's description even on x86-64.
GDB_REGISTER_SIZES: Mapping[str, int] = MappingProxyType(
    {name: 8 if i < 17 else 4 for i, name in enumerate(GDB_REGISTERS)}
)

# Field order of struct kvm_regs (arch/x86/include/uapi/asm/kvm.h). Note rsp
# comes before rbp there, the reverse of gdb's order.
KVM_REGS_FIELDS: tuple[str, ...] = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "rflags",
)  # fmt: skip

# gdb register name -> struct kvm_regs field. Only eflags is spelt differently.
GDB_TO_KVM_REGS: Mapping[str, str] = MappingProxyType(
    {name: ("rflags" if name == "eflags" else name) for name in GDB_REGISTERS[:18]}
)

# gdb segment register -> struct kvm_sregs member; gdb shows its .selector.
GDB_TO_KVM_SREGS: Mapping[str, str] = MappingProxyType(
    {name: name for name in GDB_REGISTERS[18:]}
)

# --- trap opcodes -------------------------------------------------------------

# int3: the software breakpoint every x86 debugger uses (#BP, vector 3).
INT3 = b"\xcc"
# hlt: with no in-kernel irqchip KVM exits with KVM_EXIT_HLT and rip after it,
# which makes it a 1-byte trap on hosts where int3 + USE_SW_BP fails.
HLT = b"\xf4"


class Rflags(enum.IntFlag):
    """RFLAGS bits that run control sets and clears (SDM vol. 1, 3.4.3)."""

    # Trap flag: a single-step #DB after the next instruction (SDM vol. 3, 18.3.1.4).
    TF = 0x100
    # Interrupt enable: cleared while stepping so the step does not land in
    # an interrupt handler (KVM_GUESTDBG_BLOCKIRQ does it on the kernel side).
    IF = 0x200
    # Resume flag: suppresses instruction-breakpoint faults for one
    # instruction, so a hit DRn breakpoint can be resumed (SDM vol. 3, 18.3.1.1).
    RF = 0x10000


# --- DR7 (SDM vol. 3, 18.2.4 "Debug Control Register (DR7)") ------------------

NUM_DEBUG_SLOTS = 4

# Bit 10 of DR7 is reserved and reads as 1; KVM keeps it set too
# (DR7_FIXED_1 in arch/x86/include/asm/debugreg.h).
DR7_FIXED_1 = 0x400

# R/Wn field values. 10 means I/O breakpoint (with CR4.DE set), which the
# engine never programs.
_RW_CODE: Mapping[SlotKind, int] = MappingProxyType(
    {SlotKind.EXECUTE: 0b00, SlotKind.WRITE: 0b01, SlotKind.ACCESS: 0b11}
)
_RW_KIND: Mapping[int, SlotKind] = MappingProxyType({v: k for k, v in _RW_CODE.items()})
_RW_IO = 0b10

# LENn field values: 00 one byte, 01 two, 11 four, 10 eight (the 8-byte
# encoding came with Intel 64; SDM vol. 3, 18.2.5).
_LEN_CODE: Mapping[int, int] = MappingProxyType({1: 0b00, 2: 0b01, 4: 0b11, 8: 0b10})
_LEN_BYTES: Mapping[int, int] = MappingProxyType({v: k for k, v in _LEN_CODE.items()})


def _local_enable(index: int) -> int:
    return 1 << (2 * index)


def _global_enable(index: int) -> int:
    return 1 << (2 * index + 1)


def _rw_shift(index: int) -> int:
    return 16 + 4 * index


def _len_shift(index: int) -> int:
    return 18 + 4 * index


@dataclass(frozen=True)
class DebugSlot:
    """One programmed debug register: DR``index`` holds ``address``, and
    DR7 says what it triggers on."""

    index: int
    address: int
    kind: SlotKind
    length: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < NUM_DEBUG_SLOTS:
            raise UsageError(f"x86-64 has debug registers DR0-DR3, not DR{self.index}")
        if not 0 <= self.address < 1 << 64:
            raise UsageError(f"{self.address:#x} is not a 64-bit address")
        if self.kind is SlotKind.READ:
            raise UsageError(X86_64.read_hint)
        if self.kind is SlotKind.EXECUTE:
            # An instruction breakpoint must use LEN=00, otherwise the
            # behaviour is undefined (SDM vol. 3, 18.2.5).
            if self.length != 1:
                raise UsageError(
                    f"an x86 execute breakpoint covers one byte (LEN=00), not {self.length}"
                )
        else:
            check_watch_chunk(self.address, self.length)

    @property
    def name(self) -> str:
        """The register's name, ``DR0`` .. ``DR3``."""
        return f"DR{self.index}"


@dataclass(frozen=True)
class Dr7Slot:
    """What DR7 enables for one debug register (the address is in DRn)."""

    index: int
    kind: SlotKind
    length: int


def encode_dr7(slots: Iterable[DebugSlot]) -> int:
    """The DR7 value that enables ``slots`` and nothing else.

    Each slot gets its local-enable bit Ln, its R/Wn and LENn fields; bit 10
    (reserved, reads as 1) is always set. One execute breakpoint in DR0 is
    therefore 0x401.

    Choices, and why:

    - Ln rather than Gn, as gdb's x86 backend does (gdb/nat/x86-dregs.c).
      The two differ only on a hardware task switch, which clears the L bits;
      64-bit mode has no task switches, and under KVM_SET_GUEST_DEBUG KVM
      loads this value for the guest anyway (api.rst), so either works.
      QEMU and the KVM selftest debug_regs.c use Gn; decode_dr7 accepts both.
    - LE/GE (bits 8, 9) clear: "not supported in the P6 family processors,
      later IA-32 processors, and Intel 64 processors" (SDM vol. 3, 18.2.4),
      so they change nothing on any CPU that runs x86-64 guests; the KVM
      selftest leaves them clear as well.
    - Bit 10 set: it is what the CPU and KVM read back (DR7_FIXED_1), so the
      value we program equals the DR7 KVM reports in a debug exit.
    """
    value = DR7_FIXED_1
    seen: set[int] = set()
    for slot in slots:
        if slot.index in seen:
            raise ValueError(f"DR{slot.index} programmed twice")
        seen.add(slot.index)
        value |= _local_enable(slot.index)
        value |= _RW_CODE[slot.kind] << _rw_shift(slot.index)
        value |= _LEN_CODE[slot.length] << _len_shift(slot.index)
    return value


def decode_dr7(value: int) -> list[Dr7Slot]:
    """The slots a DR7 value enables (Ln or Gn set), lowest index first.

    Raises ValueError for an enabled I/O breakpoint (R/W=10), which only a
    guest with CR4.DE set can program and which the engine does not model.
    """
    slots: list[Dr7Slot] = []
    for index in range(NUM_DEBUG_SLOTS):
        if not value & (_local_enable(index) | _global_enable(index)):
            continue
        rw = (value >> _rw_shift(index)) & 0b11
        if rw == _RW_IO:
            raise ValueError(f"DR7 {value:#x} enables an I/O breakpoint in DR{index}")
        length = _LEN_BYTES[(value >> _len_shift(index)) & 0b11]
        slots.append(Dr7Slot(index, _RW_KIND[rw], length))
    return slots


def debugregs_for(slots: Iterable[DebugSlot]) -> tuple[int, ...]:
    """The eight values of ``struct kvm_guest_debug_arch.debugreg`` for
    KVM_SET_GUEST_DEBUG with KVM_GUESTDBG_USE_HW_BP.

    KVM takes DR0-DR3 from [0..3] and DR7 from [7] (kvm_arch_vcpu_ioctl_
    set_guest_debug in arch/x86/kvm/x86.c); [4] and [5] alias DR6/DR7 in the
    architecture and [6] (DR6) is an output, so all three stay zero. Unused
    DRn are zero too.
    """
    slots = list(slots)
    regs = [0] * 8
    for slot in slots:
        regs[slot.index] = slot.address
    regs[7] = encode_dr7(slots)
    return tuple(regs)


# --- DR6 (SDM vol. 3, 18.2.3 "Debug Status Register (DR6)") -------------------


class Dr6(enum.IntFlag):
    """The DR6 bits that say why a #DB happened."""

    B0 = 1 << 0  # DR0's condition was met
    B1 = 1 << 1
    B2 = 1 << 2
    B3 = 1 << 3
    BD = 1 << 13  # the next instruction accesses a debug register (DR7.GD)
    BS = 1 << 14  # single step (RFLAGS.TF)
    BT = 1 << 15  # task switch to a TSS with the T flag


# Every other bit is reserved or model-specific and differs between hosts:
# real CPUs read 0xffff0ff0 for "nothing", KVM adds DR6_RTM (bit 16), and
# this project's kvm_pvm host reports a single step as 0xffff4ff0.
DR6_SIGNIFICANT = Dr6.B0 | Dr6.B1 | Dr6.B2 | Dr6.B3 | Dr6.BD | Dr6.BS | Dr6.BT


def significant_bits(dr6: int) -> Dr6:
    """Keep only B0-B3, BD, BS and BT: the bits that compare equal across hosts."""
    return Dr6(dr6 & DR6_SIGNIFICANT)


def triggered_slots(dr6: int, dr7: int | None = None) -> tuple[int, ...]:
    """Indices of the debug registers whose Bn bit is set in ``dr6``.

    Bn may be set for a register whose condition matched even though DR7 does
    not enable it (SDM vol. 3, 18.2.3), so pass the ``dr7`` that was in force
    to keep only enabled ones.
    """
    mask = dr6 & 0xF if dr7 is None else dr6 & _enabled_mask(dr7)
    return _SLOTS_IN_MASK[mask]


@functools.lru_cache(maxsize=16)
def _enabled_mask(dr7: int) -> int:
    """B0-B3 of the slots ``dr7`` enables (a hit's hot path: DR7 rarely changes)."""
    return sum(1 << s.index for s in decode_dr7(dr7))


_SLOTS_IN_MASK = tuple(tuple(i for i in range(NUM_DEBUG_SLOTS) if m & (1 << i))
                       for m in range(1 << NUM_DEBUG_SLOTS))


# --- data breakpoint alignment (SDM vol. 3, 18.2.5) ---------------------------


def check_watch_chunk(address: int, length: int) -> None:
    """Raise :class:`UsageError` unless one debug register can watch these bytes:
    a length of 1, 2, 4 or 8 and an address that is a multiple of it."""
    X86_64.check_data_chunk(address, length)


def split_range(address: int, length: int) -> list[Chunk]:
    """Split ``[address, address + length)`` (any length >= 1) into the fewest
    aligned chunks of 1, 2, 4 or 8 bytes, in address order."""
    return split_aligned(address, length, X86_64.data_lengths)
