"""Debug-slot profiles: how many hardware debug slots an architecture has and
what each can watch.

A profile is plain data that the slot allocator (``kvmbench.engine.slots``)
turns into a bounded table. Three shapes exist under KVM_SET_GUEST_DEBUG
(Documentation/virt/kvm/api.rst, "KVM_SET_GUEST_DEBUG"):

- x86-64: four address registers DR0-DR3, each usable for an instruction or
  a data breakpoint (one shared pool; Intel SDM vol. 3, 18.2);
- PowerPC BookE: four instruction address compare registers IAC1-IAC4 and
  two data address compare registers DAC1-DAC2 (separate pools);
- arm64: as many breakpoint and watchpoint register pairs as KVM reports
  through KVM_CAP_GUEST_DEBUG_HW_BPS and KVM_CAP_GUEST_DEBUG_HW_WPS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from kvmbench.errors import UsageError

__all__ = [
    "Chunk",
    "DataAlignment",
    "DebugProfile",
    "PPC_BOOKE",
    "SlotKind",
    "X86_64",
    "arm64",
    "split_aligned",
]


class SlotKind(enum.Enum):
    """What a hardware debug slot triggers on."""

    EXECUTE = "execute"
    READ = "read"
    WRITE = "write"
    ACCESS = "access"  # read or write

    @property
    def is_data(self) -> bool:
        """True for the data (watchpoint) kinds."""
        return self is not SlotKind.EXECUTE


class DataAlignment(enum.Enum):
    """Where a data slot's watched bytes may lie."""

    # x86: the address is a multiple of the length (Intel SDM vol. 3, 18.2.5).
    NATURAL = "natural"
    # arm64: a byte-address-select mask inside one aligned doubleword, so any
    # run of 1..8 bytes that does not cross an 8-byte boundary (Arm ARM D2,
    # "Watchpoint exceptions", DBGWCR<n>_EL1.BAS).
    WITHIN_DOUBLEWORD = "within doubleword"


class Chunk(NamedTuple):
    """One piece of a watched range that a single data slot can cover."""

    address: int
    length: int


@dataclass(frozen=True)
class DebugProfile:
    """The hardware debug slots of one architecture (or one host's CPU).

    With ``shared`` the architecture has one pool of ``execute_slots`` slots
    that serve both kinds (``data_slots`` then equals ``execute_slots``);
    otherwise an execute pool and a data pool of their own sizes.
    """

    name: str
    execute_slots: int
    data_slots: int
    shared: bool
    data_lengths: tuple[int, ...]
    data_kinds: frozenset[SlotKind]
    data_alignment: DataAlignment = DataAlignment.NATURAL
    # Instructions are 1-byte aligned on x86, 4-byte on arm64 and PowerPC.
    instruction_alignment: int = 1
    # Names the user sees, in allocation order: the shared pool, or the
    # execute pool followed by the data pool.
    slot_names: tuple[str, ...] = ()
    # What to suggest when a read-only watch is asked of an architecture
    # without one; empty when the profile has READ.
    read_hint: str = ""

    def __post_init__(self) -> None:
        if self.execute_slots < 0 or self.data_slots < 0:
            raise ValueError(f"{self.name}: slot counts must not be negative")
        if self.shared and self.execute_slots != self.data_slots:
            raise ValueError(f"{self.name}: a shared pool has one size")
        if len(self.slot_names) != self.total:
            raise ValueError(f"{self.name}: {len(self.slot_names)} names for {self.total} slots")
        if SlotKind.EXECUTE in self.data_kinds:
            raise ValueError(f"{self.name}: EXECUTE is not a data kind")

    @property
    def total(self) -> int:
        """Number of physical slots (a shared pool counts once)."""
        return self.execute_slots if self.shared else self.execute_slots + self.data_slots

    @property
    def execute_slot_names(self) -> tuple[str, ...]:
        """Names of the slots that can hold an execute breakpoint."""
        return self.slot_names[: self.execute_slots]

    @property
    def data_slot_names(self) -> tuple[str, ...]:
        """Names of the slots that can hold a watchpoint."""
        if self.shared:
            return self.slot_names
        return self.slot_names[self.execute_slots :]

    def supports(self, kind: SlotKind) -> bool:
        """True when some slot of this profile can trigger on ``kind``."""
        if kind is SlotKind.EXECUTE:
            return self.execute_slots > 0
        return kind in self.data_kinds and self.data_slots > 0

    def check_data_chunk(self, address: int, length: int) -> None:
        """Raise :class:`UsageError` unless one data slot can watch these bytes."""
        if length not in self.data_lengths:
            allowed = ", ".join(str(n) for n in self.data_lengths)
            raise UsageError(
                f"{self.name} data slots watch {allowed} bytes, not {length}; "
                "split longer ranges into chunks"
            )
        if address < 0 or address + length > 1 << 64:
            raise UsageError(f"watch range {address:#x}+{length} is outside the address space")
        if self.data_alignment is DataAlignment.NATURAL and address % length:
            raise UsageError(
                f"{self.name} cannot watch {length} bytes at {address:#x}: "
                f"the address must be a multiple of {length}"
            )
        if self.data_alignment is DataAlignment.WITHIN_DOUBLEWORD and address % 8 + length > 8:
            raise UsageError(
                f"{self.name} cannot watch {length} bytes at {address:#x}: "
                "they cross an 8-byte boundary"
            )

    def split(self, address: int, length: int) -> list[Chunk]:
        """Split ``[address, address + length)`` into the fewest chunks one
        data slot each can watch, in address order."""
        if self.data_alignment is DataAlignment.WITHIN_DOUBLEWORD:
            return _split_at_doublewords(address, length)
        return split_aligned(address, length, self.data_lengths)


def split_aligned(address: int, length: int, sizes: tuple[int, ...] = (1, 2, 4, 8)) -> list[Chunk]:
    """Split a range into the fewest naturally aligned chunks of the given
    power-of-two ``sizes`` (which must include 1).

    Greedy from the low end is optimal: at each address the largest size
    that is aligned there and still fits cannot make a later step worse,
    because every aligned block of a smaller size starting at the same
    address lies inside it.
    """
    if length < 1:
        raise UsageError(f"a watch range needs at least one byte, not {length}")
    if address < 0 or address + length > 1 << 64:
        raise UsageError(f"range {address:#x}+{length} is outside the address space")
    descending = sorted(sizes, reverse=True)
    if descending[-1] != 1 or any(s & (s - 1) for s in descending):
        raise ValueError(f"chunk sizes must be powers of two including 1, not {sizes}")
    chunks: list[Chunk] = []
    end = address + length
    while address < end:
        size = next(s for s in descending if address % s == 0 and address + s <= end)
        chunks.append(Chunk(address, size))
        address += size
    return chunks


def _split_at_doublewords(address: int, length: int) -> list[Chunk]:
    """Cut a range at 8-byte boundaries: arm64's byte-select mask covers any
    run of bytes inside one doubleword."""
    if length < 1:
        raise UsageError(f"a watch range needs at least one byte, not {length}")
    if address < 0 or address + length > 1 << 64:
        raise UsageError(f"range {address:#x}+{length} is outside the address space")
    chunks: list[Chunk] = []
    end = address + length
    while address < end:
        stop = min(end, (address // 8 + 1) * 8)
        chunks.append(Chunk(address, stop - address))
        address = stop
    return chunks


X86_64 = DebugProfile(
    name="x86-64",
    # DR0-DR3 each hold an instruction or a data address; DR7 says which
    # (Intel SDM vol. 3, 18.2.4).
    execute_slots=4,
    data_slots=4,
    shared=True,
    # LEN encodes 1, 2, 4 or 8 bytes and the address must be aligned to it
    # (SDM vol. 3, 18.2.5).
    data_lengths=(1, 2, 4, 8),
    # R/W: 01 break on writes, 11 on reads or writes; there is no
    # read-only encoding (10 is I/O, with CR4.DE).
    data_kinds=frozenset({SlotKind.WRITE, SlotKind.ACCESS}),
    data_alignment=DataAlignment.NATURAL,
    instruction_alignment=1,
    slot_names=("DR0", "DR1", "DR2", "DR3"),
    read_hint=(
        "x86-64 has no read-only data breakpoints; use an access watchpoint "
        "(gdb's rwatch filters one by value)"
    ),
)

PPC_BOOKE = DebugProfile(
    name="PowerPC BookE",
    # KVMPPC_BOOKE_IAC_NUM / KVMPPC_BOOKE_DAC_NUM in
    # arch/powerpc/include/asm/kvm_host.h; the kvm-devel thread that led to
    # KVM_SET_GUEST_DEBUG named these counts.
    execute_slots=4,
    data_slots=2,
    shared=False,
    # A DAC compares one address; kvmbench watches naturally aligned 1/2/4/8
    # byte chunks with it, as on x86.
    data_lengths=(1, 2, 4, 8),
    # DBCR0 DAC1R / DAC1W select reads, writes or both.
    data_kinds=frozenset({SlotKind.READ, SlotKind.WRITE, SlotKind.ACCESS}),
    data_alignment=DataAlignment.NATURAL,
    instruction_alignment=4,
    slot_names=("IAC1", "IAC2", "IAC3", "IAC4", "DAC1", "DAC2"),
)

# The architecture allows 2 to 16 of each (ID_AA64DFR0_EL1.BRPs/WRPs + 1);
# KVM reports 0 when it cannot expose them.
_ARM64_MAX_PAIRS = 16


def arm64(brps: int, wrps: int) -> DebugProfile:
    """The arm64 profile for a host whose KVM reports ``brps`` breakpoint and
    ``wrps`` watchpoint register pairs (KVM_CHECK_EXTENSION of
    KVM_CAP_GUEST_DEBUG_HW_BPS and KVM_CAP_GUEST_DEBUG_HW_WPS)."""
    for what, count in (("breakpoint", brps), ("watchpoint", wrps)):
        if not 0 <= count <= _ARM64_MAX_PAIRS:
            raise ValueError(f"arm64 has 0..{_ARM64_MAX_PAIRS} {what} registers, not {count}")
    return DebugProfile(
        name="arm64",
        execute_slots=brps,
        data_slots=wrps,
        shared=False,
        # DBGWCR<n>_EL1.BAS selects any contiguous bytes of a doubleword.
        data_lengths=(1, 2, 3, 4, 5, 6, 7, 8),
        # DBGWCR<n>_EL1.LSC: 01 load, 10 store, 11 either.
        data_kinds=frozenset({SlotKind.READ, SlotKind.WRITE, SlotKind.ACCESS}),
        data_alignment=DataAlignment.WITHIN_DOUBLEWORD,
        instruction_alignment=4,
        slot_names=tuple(f"BRP{i}" for i in range(brps)) + tuple(f"WRP{i}" for i in range(wrps)),
    )
