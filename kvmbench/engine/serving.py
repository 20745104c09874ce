"""Serving requests: which mechanism holds each breakpoint and watchpoint,
and keeping the target programmed for exactly what is armed.

The planner proposes mechanisms; :class:`Serving` tries them in order
(a hardware slot may be taken, a stub may refuse, a probe may be unsafe)
and keeps the state they need: the patch table of software traps and
probes, the slot table, the stub's own inserts, and the guest-physical
pages whose stores must exit (page-trap watches, and pages holding
patches, so that a guest store over a patched byte is seen).
:meth:`Serving.program` pushes changes to the target before the next
resume. In-guest probes are :mod:`kvmbench.engine.probes`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvmbench.arch.profiles import SlotKind
from kvmbench.backends.target import SlotProgram, StubAccess, Target
from kvmbench.engine.model import SOFTWARE_TRAPS, Access, Breakpoint, Kind, Mechanism, Watchpoint
from kvmbench.engine.patches import PatchTable
from kvmbench.engine.planner import plan_breakpoint, plan_watchpoint
from kvmbench.engine.slots import SlotTable
from kvmbench.errors import BreakpointError, GuestMemoryError, KvmbenchError, SlotsExhausted

if TYPE_CHECKING:
    from kvmbench.engine.execcounters import ExecCounters
    from kvmbench.engine.probes import Probes

PAGE_SHIFT = 12
_STUB_ACCESS = {Access.WRITE: StubAccess.WRITE, Access.READ: StubAccess.READ,
                Access.ACCESS: StubAccess.ACCESS}


class _TargetPhysical:
    """The target's physical memory as the patch table reads and writes it."""

    def __init__(self, target: Target) -> None:
        self.read = target.read_physical
        self.write = target.write_physical


@dataclass(frozen=True)
class PageWatch:
    """A page-trap watch's piece of guest-physical memory, [start, end)."""

    watch: Watchpoint
    start: int
    end: int


def slot_kind(access: Access) -> SlotKind:
    # x86 has no read-only data breakpoints: a read watch is an access watch
    # filtered by value, as gdb does.
    return SlotKind.WRITE if access is Access.WRITE else SlotKind.ACCESS


class Serving:
    """The mechanisms in force for one target. Touched from one thread at a
    time (the session serialises changes with its runs)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        caps = target.capabilities
        self.capabilities = caps
        self.patches: PatchTable | None = (
            PatchTable(_TargetPhysical(target)) if caps.software_traps or caps.probes else None)
        self.slots: SlotTable | None = (
            SlotTable(caps.slot_profile) if caps.slot_profile is not None else None)
        self._opcodes = {trap.name: trap.opcode for trap in caps.software_traps}
        #: Enabled breakpoints by address, internal ones included.
        self.armed: dict[int, list[Breakpoint]] = {}
        #: Physical address of each software trap's patch, by breakpoint number
        #: (kept: the guest may change its page tables while it is armed).
        self._patch_at: dict[int, int] = {}
        #: Page-trap watch pieces, for the store path.
        self.page_watches: list[PageWatch] = []
        self._watches: dict[int, Watchpoint] = {}
        #: Watches served by single-step compare (read on every resume).
        self.step_compare_watches: list[Watchpoint] = []
        #: Stop at traps the guest raises itself instead of handing them over.
        self.catch_guest_traps = False
        #: Bumped whenever what is armed changes.
        self.generation = 0
        self._programmed = -1
        self._write_trap_pages: frozenset[int] = frozenset()
        self._applied_write_traps: frozenset[int] = frozenset()
        #: In-guest probes (set by the session).
        self.probes: Probes | None = None
        #: Depth of serve_breakpoint calls: a request unserved inside one
        #: (a probe giving way) does not bring probes back meanwhile.
        self._serving = 0
        #: Counts the target keeps itself (set by the session); requests
        #: served so are not in :attr:`armed`: nothing of theirs ever stops.
        self.exec_counters: ExecCounters | None = None

    # --- queries --------------------------------------------------------------------

    def breakpoints_at(self, address: int) -> list[Breakpoint]:
        return self.armed.get(address, [])

    def software_trap_at(self, address: int) -> bool:
        """True if one of our trap bytes is planted at ``address`` and in
        place: while it is lifted to step over it, a trap instruction there
        is the guest's own (a hlt under a breakpoint on that hlt)."""
        if self.patches is None:
            return False
        for user in self.armed.get(address, ()):
            if user.mechanism in SOFTWARE_TRAPS:
                break
        else:
            return False
        physical = self._patch_at.get(user.number)
        patch = self.patches.get(physical) if physical is not None else None
        return patch is not None and patch.armed

    @property
    def write_trap_pages(self) -> frozenset[int]:
        """Guest-physical pages whose stores the target traps in this run."""
        return self._applied_write_traps

    def watches(self) -> Iterator[Watchpoint]:
        return iter(self._watches.values())

    def slot_owner(self, index: int) -> object | None:
        return self.slots.owner_at(index) if self.slots is not None else None

    def watches_at(self, address: int, length: int) -> list[Watchpoint]:
        """Enabled watches overlapping the virtual range [address, address + length)."""
        return [w for w in self._watches.values()
                if w.mechanism is not None and w.address < address + length
                and address < w.address + w.length]

    def opcode_of(self, mechanism: Mechanism) -> int:
        return self._opcodes[mechanism.value]

    # --- breakpoints ------------------------------------------------------------------

    def serve_breakpoint(self, bp: Breakpoint, *, probe: bool = True) -> None:
        """Give ``bp`` a mechanism and arm it; raises if none can serve.
        ``probe``: an in-guest probe may be one (not while it gives way)."""
        self._serving += 1
        try:
            self._serve_breakpoint(bp, probe)
        finally:
            self._serving -= 1

    def _serve_breakpoint(self, bp: Breakpoint, probe: bool) -> None:
        probes = self.probes
        counters = self.exec_counters
        by_probe = probe and probes is not None and probes.eligible(bp)
        counting = by_probe or (counters is not None and counters.eligible(bp))
        requested = bp.requested
        if not probe and requested is Mechanism.IN_GUEST_PROBE:
            requested = None  # it gives way for now, and comes back once it can
        plan = plan_breakpoint(bp.kind, self.capabilities, requested,
                               counting=counting)
        failure: KvmbenchError | None = None
        no_probe = ""
        if by_probe and self.capabilities.probes is None and bp.kind is Kind.AUTO:
            no_probe = self.capabilities.probes_unavailable or (
                f"the {self.capabilities.name} target offers none")
        for mechanism, reason in plan.choices:
            if mechanism is Mechanism.IN_GUEST_PROBE and not by_probe:
                continue  # giving way: a probe may not serve it now
            try:
                if mechanism is not Mechanism.IN_GUEST_PROBE and probes is not None:
                    probes.make_room(bp.address, bp)
                self._arm_breakpoint(bp, mechanism)
            except (SlotsExhausted, GuestMemoryError, BreakpointError) as e:
                failure = e
                if mechanism is Mechanism.IN_GUEST_PROBE:
                    no_probe = str(e)
                continue
            if not mechanism.counts_only:
                if counting and self.capabilities.exec_counting_unavailable:
                    reason = f"{reason}; no plugin counter: {self.capabilities.exec_counting_unavailable}"
                if no_probe:
                    reason = f"{reason}; no in-guest probe: {no_probe}"
            bp.mechanism, bp.reason = mechanism, reason
            if not mechanism.counted_by_target:  # the target counts those even stepped
                self.armed.setdefault(bp.address, []).append(bp)
            self.generation += 1
            return
        assert failure is not None
        raise failure

    def _arm_breakpoint(self, bp: Breakpoint, mechanism: Mechanism) -> None:
        if mechanism is Mechanism.IN_GUEST_PROBE:
            assert self.probes is not None
            self.probes.arm(bp)
            bp.slot = None
        elif mechanism is Mechanism.PLUGIN_COUNTER:
            assert self.exec_counters is not None
            self.exec_counters.arm(bp)
            bp.slot = None
        elif mechanism is Mechanism.HW_EXECUTE:
            assert self.slots is not None
            bp.slot = self.slots.allocate(bp, SlotKind.EXECUTE, bp.address).slot
        elif mechanism.is_software_trap:
            assert self.patches is not None
            physical = self.target.translate(bp.address)
            self.patches.insert(physical, self.opcode_of(mechanism))
            self._patch_at[bp.number] = physical
            bp.slot = None
            self.update_write_traps()
        else:
            kind = "hw" if mechanism is Mechanism.STUB_HW_BREAKPOINT else "sw"
            if not self._stub_users(bp.address, mechanism) and not (
                    self.target.insert_stub_breakpoint(bp.address, kind)):
                raise BreakpointError(f"the stub refused a {mechanism.value} at {bp.address:#x}")
            bp.slot = None

    def _stub_users(self, address: int, mechanism: Mechanism) -> bool:
        return any(b.mechanism is mechanism for b in self.armed.get(address, ()))

    def unserve_breakpoint(self, bp: Breakpoint) -> None:
        mechanism = bp.mechanism
        if mechanism is None:
            return
        users = self.armed.get(bp.address, [])
        if bp in users:
            users.remove(bp)
        if not users:
            self.armed.pop(bp.address, None)
        if mechanism is Mechanism.IN_GUEST_PROBE:
            assert self.probes is not None
            self.probes.disarm(bp)
        elif mechanism is Mechanism.PLUGIN_COUNTER:
            assert self.exec_counters is not None
            self.exec_counters.disarm(bp)
        elif mechanism is Mechanism.HW_EXECUTE:
            assert self.slots is not None
            self.slots.release(bp)
        elif mechanism.is_software_trap:
            assert self.patches is not None
            self.patches.remove(self._patch_at.pop(bp.number))
            self.update_write_traps()
        elif not self._stub_users(bp.address, mechanism):
            kind = "hw" if mechanism is Mechanism.STUB_HW_BREAKPOINT else "sw"
            self.target.remove_stub_breakpoint(bp.address, kind)
        bp.mechanism, bp.slot, bp.reason = None, None, ""
        self.generation += 1
        if self.probes is not None and not self._serving:
            self.probes.retry()

    def patch_address(self, bp: Breakpoint) -> int | None:
        return self._patch_at.get(bp.number)

    # --- watchpoints ----------------------------------------------------------------

    def serve_watch(self, wp: Watchpoint) -> None:
        plan = plan_watchpoint(wp.kind, wp.access, self.capabilities, wp.requested)
        failure: KvmbenchError | None = None
        for mechanism, reason in plan.choices:
            try:
                self._arm_watch(wp, mechanism)
            except (SlotsExhausted, BreakpointError) as e:
                failure = e
                continue
            wp.mechanism, wp.reason = mechanism, reason
            self._watches[wp.number] = wp
            self.generation += 1
            self._refresh_watch_lists()
            return
        assert failure is not None
        raise failure

    def _arm_watch(self, wp: Watchpoint, mechanism: Mechanism) -> None:
        if mechanism is Mechanism.HW_DATA:
            assert self.slots is not None
            taken = self.slots.allocate_range(wp, slot_kind(wp.access), wp.address, wp.length)
            wp.slots = tuple(a.slot for a in taken)
        elif mechanism is Mechanism.STUB_WATCH:
            if not self.target.insert_stub_watchpoint(wp.address, wp.length,
                                                      _STUB_ACCESS[wp.access]):
                raise BreakpointError(f"the stub refused a watchpoint on "
                                      f"{wp.address:#x}+{wp.length}")
        elif mechanism is Mechanism.PAGE_TRAP:
            wp.mechanism = mechanism  # counted by update_write_traps below
            self._watches[wp.number] = wp
            try:
                self.update_write_traps()
            except BaseException:
                wp.mechanism = None
                del self._watches[wp.number]
                raise

    def unserve_watch(self, wp: Watchpoint) -> None:
        mechanism = wp.mechanism
        self._watches.pop(wp.number, None)
        if mechanism is Mechanism.HW_DATA and self.slots is not None:
            self.slots.release(wp)
        elif mechanism is Mechanism.STUB_WATCH:
            self.target.remove_stub_watchpoint(wp.address, wp.length, _STUB_ACCESS[wp.access])
        wp.mechanism, wp.slots, wp.reason = None, (), ""
        if mechanism is Mechanism.PAGE_TRAP:
            self.update_write_traps()
        self.generation += 1
        self._refresh_watch_lists()

    def replan(self, watches: Iterable[Watchpoint]) -> None:
        """Move ``auto`` watches to hardware slots when slots free up."""
        if self.slots is None:
            return
        for wp in watches:
            if (wp.enabled and wp.kind is Kind.AUTO and wp.requested is None
                    and wp.mechanism not in (Mechanism.HW_DATA, None)):
                plan = plan_watchpoint(wp.kind, wp.access, self.capabilities)
                needed = len(self.slots.profile.split(wp.address, wp.length))
                if (plan.choices[0][0] is Mechanism.HW_DATA
                        and self.slots.free_count(slot_kind(wp.access)) >= needed):
                    self.unserve_watch(wp)
                    self.serve_watch(wp)

    def _refresh_watch_lists(self) -> None:
        self.step_compare_watches = [w for w in self._watches.values()
                              if w.mechanism is Mechanism.STEP_COMPARE]

    # --- what the target must be told ---------------------------------------------

    def physical_pieces(self, address: int, length: int) -> list[tuple[int, int]]:
        """[start, end) guest-physical ranges of a virtual range, split at pages."""
        pieces: list[tuple[int, int]] = []
        offset = 0
        while offset < length:
            here = address + offset
            n = min(length - offset, 4096 - (here & 0xFFF))
            start = self.target.translate(here)
            if pieces and pieces[-1][1] == start:
                pieces[-1] = (pieces[-1][0], start + n)
            else:
                pieces.append((start, start + n))
            offset += n
        return pieces

    def update_write_traps(self) -> None:
        """Trap stores to the pages of page-trap watches and of software traps
        (a guest store over a trap byte must become its new original)."""
        if not self.capabilities.write_traps:
            return
        pages: set[int] = set()
        ranges: list[PageWatch] = []
        for wp in self._watches.values():
            if wp.mechanism is not Mechanism.PAGE_TRAP:
                continue
            for start, end in self.physical_pieces(wp.address, wp.length):
                ranges.append(PageWatch(wp, start, end))
                pages.update(range(start >> PAGE_SHIFT, ((end - 1) >> PAGE_SHIFT) + 1))
        if self.patches is not None:
            pages |= self.patches.pages()
        if self.probes is not None:
            pages |= self.probes.guard_pages()
        # Told to the target at the next resume (program): a breakpoint
        # removed and set again between two runs, as gdb does at every
        # stop, then costs no memslot change at all.
        self._write_trap_pages = frozenset(pages)
        self.page_watches = ranges

    def program(self) -> None:
        """Tell the target what is armed now, if that changed since last time."""
        if self.probes is not None and self.probes.sites:
            self.probes.before_resume()
        if self._write_trap_pages != self._applied_write_traps:
            self.target.set_write_traps(self._write_trap_pages)
            self._applied_write_traps = self._write_trap_pages
        if self._programmed == self.generation:
            return
        target = self.target
        if self.slots is not None:
            target.set_debug_slots([SlotProgram(a.index, a.kind, a.address, a.length)
                                    for a in self.slots.assignments()])
        opcodes = frozenset(
            self.opcode_of(b.mechanism) for bps in self.armed.values() for b in bps
            if b.mechanism is not None and b.mechanism.is_software_trap)
        target.set_software_traps(opcodes, self.catch_guest_traps)
        self._programmed = self.generation

    def invalidate(self) -> None:
        """Make the next :meth:`program` push everything again."""
        self.generation += 1

    def remove_all(self) -> None:
        """Detach: every trap byte restored (the target is about to go)."""
        if self.patches is not None:
            self.patches.remove_all()
