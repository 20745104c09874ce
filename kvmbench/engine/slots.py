"""The hardware debug slot allocator.

A :class:`SlotTable` has exactly the slots of one
:class:`~kvmbench.arch.profiles.DebugProfile`, no more: on x86-64 four
(DR0-DR3) shared by breakpoints and watchpoints, on PowerPC BookE four
instruction and two data slots, on arm64 what KVM reports. It only records
who holds which slot and checks that a request fits one; the planner decides
whether a request gets a slot at all, and the backend programs the registers
(on x86 from :meth:`SlotTable.debugregs`).

``auto`` breakpoints fall back to a software mechanism when allocation
raises :class:`~kvmbench.errors.SlotsExhausted`; ``hw`` ones show its
message, which names every holder.

Not thread-safe: the engine owns the table and touches it from one thread.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from kvmbench.arch import x86_64
from kvmbench.arch.profiles import X86_64, DebugProfile, SlotKind
from kvmbench.errors import SlotsExhausted, UsageError

__all__ = ["Holder", "Pool", "SlotAssignment", "SlotTable"]


class Pool(enum.Enum):
    """Which set of slots an assignment came from."""

    SHARED = "debug"  # x86: any DRn serves either kind
    EXECUTE = "instruction"
    DATA = "data"


@dataclass(frozen=True)
class SlotAssignment:
    """One slot held by one owner for one address range."""

    slot: str  # the register's name, e.g. "DR2", "DAC1", "WRP0"
    pool: Pool
    index: int  # position inside its pool: DR2 -> 2, DAC1 -> 0
    kind: SlotKind
    address: int
    length: int
    owner: object

    def __str__(self) -> str:
        return f"{self.slot} {self.owner}"


class Holder(NamedTuple):
    """A slot's name and the owner that holds it."""

    slot: str
    owner: object


class SlotTable:
    """The hardware debug slots of one vCPU, bounded by its profile.

    Owners are any objects whose ``str()`` describes them to a user
    ("breakpoint 1 (fib)"); they are compared with ``==``, so give each
    request its own. One owner may hold several slots (a watched range split
    into chunks); :meth:`release` frees them all.
    """

    def __init__(self, profile: DebugProfile) -> None:
        self.profile = profile
        self._slots: list[SlotAssignment | None] = [None] * profile.total

    # --- queries ---------------------------------------------------------------

    @property
    def total(self) -> int:
        """Number of slots in the table."""
        return len(self._slots)

    @property
    def used(self) -> int:
        """Number of slots held."""
        return sum(1 for slot in self._slots if slot is not None)

    def free_count(self, kind: SlotKind) -> int:
        """How many more slots could serve ``kind`` now (0 when the profile
        cannot trigger on it at all, e.g. READ on x86-64)."""
        if not self.profile.supports(kind):
            return 0
        return sum(1 for i in self._positions(kind) if self._slots[i] is None)

    def holders(self) -> list[Holder]:
        """(slot name, owner) of every held slot, in slot order."""
        return [Holder(a.slot, a.owner) for a in self.assignments()]

    def assignments(self) -> tuple[SlotAssignment, ...]:
        """Every held slot, in slot order."""
        return tuple(a for a in self._slots if a is not None)

    def owner_at(self, index: int) -> object | None:
        """The owner of the slot at ``index`` in its pool (DR2 -> 2), if held."""
        for a in self._slots:
            if a is not None and a.index == index:
                return a.owner
        return None

    def assignment_by_slot(self, slot: str) -> SlotAssignment | None:
        """The assignment of the slot named ``slot`` ("DR1"), or None if free."""
        try:
            position = self.profile.slot_names.index(slot)
        except ValueError:
            raise UsageError(f"{self.profile.name} has no debug slot {slot}") from None
        return self._slots[position]

    def assignments_of(self, owner: object) -> tuple[SlotAssignment, ...]:
        """The slots ``owner`` holds, in slot order."""
        return tuple(a for a in self._slots if a is not None and a.owner == owner)

    # --- changes ---------------------------------------------------------------

    def allocate(
        self, owner: object, kind: SlotKind, address: int, length: int = 1
    ) -> SlotAssignment:
        """Give ``owner`` the lowest free slot that can trigger on ``kind`` at
        ``[address, address + length)``.

        An execute slot covers the one instruction at ``address`` (length 1).
        A data slot covers one chunk the profile allows (on x86-64: 1, 2, 4
        or 8 bytes, aligned); see :meth:`allocate_range` for longer ranges.

        Raises UsageError when no slot of this profile could ever serve the
        request, and SlotsExhausted, naming each holder, when all are taken.
        """
        self._check(kind, address, length)
        for position in self._positions(kind):
            if self._slots[position] is None:
                return self._assign(position, owner, kind, address, length)
        raise SlotsExhausted(self._exhausted_message(kind))

    def allocate_range(
        self, owner: object, kind: SlotKind, address: int, length: int
    ) -> tuple[SlotAssignment, ...]:
        """Watch any range with as few data slots as the profile allows, all or
        nothing: when there are not enough free slots none is taken."""
        if not kind.is_data:
            raise UsageError("a range needs data slots; an execute slot covers one instruction")
        self._check_kind(kind)
        chunks = self.profile.split(address, length)
        free = self.free_count(kind)
        if len(chunks) > free:
            raise SlotsExhausted(
                f"watching {length} bytes at {address:#x} needs {len(chunks)} "
                f"hardware {self._pool_of(kind).value} slots and {free} "
                f"{'is' if free == 1 else 'are'} free"
                + self._holders_suffix(kind)
            )
        return tuple(self.allocate(owner, kind, c.address, c.length) for c in chunks)

    def release(self, owner: object) -> tuple[SlotAssignment, ...]:
        """Free every slot ``owner`` holds and return what was freed (empty if
        it held none, so cleanup paths may call it unconditionally)."""
        freed: list[SlotAssignment] = []
        for position, assignment in enumerate(self._slots):
            if assignment is not None and assignment.owner == owner:
                freed.append(assignment)
                self._slots[position] = None
        return tuple(freed)

    def clear(self) -> None:
        """Free every slot (on detach or guest reset)."""
        self._slots = [None] * self.profile.total

    # --- registers -------------------------------------------------------------

    def debugregs(self) -> tuple[int, ...]:
        """The eight ``kvm_guest_debug_arch.debugreg`` values for
        KVM_SET_GUEST_DEBUG: DR0-DR3 addresses and DR7 at [7].

        Only x86-64 tables have one; others raise ValueError.
        """
        if self.profile != X86_64:
            raise ValueError(f"{self.profile.name} has no x86 debug-register image")
        return x86_64.debugregs_for(
            x86_64.DebugSlot(a.index, a.address, a.kind, a.length) for a in self.assignments()
        )

    # --- internals -------------------------------------------------------------

    def _pool_of(self, kind: SlotKind) -> Pool:
        if self.profile.shared:
            return Pool.SHARED
        return Pool.EXECUTE if kind is SlotKind.EXECUTE else Pool.DATA

    def _positions(self, kind: SlotKind) -> range:
        profile = self.profile
        if profile.shared or kind is SlotKind.EXECUTE:
            return range(profile.execute_slots)
        return range(profile.execute_slots, profile.execute_slots + profile.data_slots)

    def _assign(
        self, position: int, owner: object, kind: SlotKind, address: int, length: int
    ) -> SlotAssignment:
        pool = self._pool_of(kind)
        first = 0 if pool is not Pool.DATA else self.profile.execute_slots
        assignment = SlotAssignment(
            slot=self.profile.slot_names[position],
            pool=pool,
            index=position - first,
            kind=kind,
            address=address,
            length=length,
            owner=owner,
        )
        self._slots[position] = assignment
        return assignment

    def _check_kind(self, kind: SlotKind) -> None:
        if kind.is_data and kind not in self.profile.data_kinds:
            raise UsageError(
                self.profile.read_hint
                or f"{self.profile.name} data slots cannot trigger on {kind.value}"
            )

    def _check(self, kind: SlotKind, address: int, length: int) -> None:
        self._check_kind(kind)
        if kind.is_data:
            self.profile.check_data_chunk(address, length)
            return
        if length != 1:
            raise UsageError(
                f"an execute slot covers the instruction at one address; length {length} is not 1"
            )
        if not 0 <= address < 1 << 64:
            raise UsageError(f"{address:#x} is not a 64-bit address")
        alignment = self.profile.instruction_alignment
        if address % alignment:
            raise UsageError(
                f"{self.profile.name} instructions are {alignment}-byte aligned; "
                f"{address:#x} is not"
            )

    def _holders_suffix(self, kind: SlotKind) -> str:
        held = [str(self._slots[i]) for i in self._positions(kind) if self._slots[i] is not None]
        return ": " + ", ".join(held) if held else ""

    def _exhausted_message(self, kind: SlotKind) -> str:
        pool = self._pool_of(kind)
        if not self._positions(kind):
            return f"{self.profile.name} has no hardware {pool.value} slots"
        return f"no free hardware {pool.value} slot" + self._holders_suffix(kind)

    def __repr__(self) -> str:
        return f"<SlotTable {self.profile.name} {self.used}/{self.total} used>"
