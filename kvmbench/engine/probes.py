"""In-guest probes: unconditional tracepoints counted inside the guest.

A probe replaces the instructions at a tracepoint with a jump to a
trampoline the target owns (:meth:`Target.install_probe`), which counts the
hit into a ring and runs the displaced instructions. The engine decides
whether that is safe (:mod:`kvmbench.arch.displacement`, over the enclosing
function's extent from the symbols and every other function's branches),
plants the jump through the patch table (one patch per byte, owned by the
probe: reads show the originals, a write over them is seen), and drains
the ring into hit counts and the hit log: at every stop, when the ring
fills and every drain interval while the guest runs (:class:`ProbesDue`).

Rules this module keeps:

- A probe's bytes belong to it alone. A request at any address inside
  them, or a trap at its first byte, makes the probe give way: its
  tracepoints move to an exit mechanism, and back to a probe once the
  other request is gone.
- Stepping through a probe steps the original instructions: the engine
  lifts the probe (originals back in place) when it steps at the probe's
  address, and plants it again only once rip has left its bytes.
- No stop leaves rip inside a trampoline: a stop there (a pause, a watch
  hit by a displaced store) is stepped out of it first, onto the original
  code, and the pcs the engine reports (writers, crashes) are mapped back
  to the original instructions.
- A write over a probe's original bytes (the guest's self-modifying code,
  the debugger's) takes effect at once as the new originals; before the
  guest runs again the probe is built anew over them, or gives way to an
  exit mechanism if they can no longer be displaced.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from kvmbench.arch.displacement import (
    Displacement,
    FunctionFacts,
    Undisplaceable,
    analyse_function,
    plan_displacement,
)
from kvmbench.backends.target import ProbeInstalled
from kvmbench.engine.model import Breakpoint, Mechanism, Stop, StopReason
from kvmbench.errors import GuestError, GuestMemoryError, ProbeRefused
from kvmbench.symbols.model import Symbol, SymbolKind

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

#: The longest displacement: the last covered instruction starts before
#: byte 5 and is at most 15 bytes long (SDM vol. 2, 2.3.11).
_MAX_COVERED = 4 + 15
#: Steps a stop may take to leave a trampoline (its counting code and
#: copies are a few dozen instructions; a rep string copy may take more).
_LEAVE_LIMIT = 4096


@dataclass(eq=False)
class ProbeSite:
    """One planted probe: its jump over ``displacement`` and its users."""

    displacement: Displacement
    installed: ProbeInstalled
    #: Guest-physical address of each patched byte.
    physical: tuple[int, ...]
    users: list[Breakpoint] = field(default_factory=list)
    #: The originals are in place (a step through it is under way).
    lifted: bool = False

    @property
    def address(self) -> int:
        return self.displacement.address

    @property
    def end(self) -> int:
        return self.displacement.end

    def covers(self, address: int) -> bool:
        return self.address <= address < self.end


class Probes:
    """The in-guest probes of one session."""

    def __init__(self, session: "Session") -> None:
        self._s = session
        self.sites: dict[int, ProbeSite] = {}
        #: Every probe ever planted, by the key its hits carry: hits of a
        #: trampoline still running when its probe went are still drained.
        self._by_key: dict[int, ProbeSite] = {}
        #: Probes whose original bytes are in place now (stepped through);
        #: planted again once rip has left them.
        self.lifted: list[ProbeSite] = []
        #: Tracepoints that gave way to another request, to be probes again.
        self._gave_way: list[Breakpoint] = []
        self._retrying = False
        self._facts: dict[tuple[int, bytes], FunctionFacts] = {}
        self._elsewhere: dict[int, frozenset[int]] = {}
        #: Why no probe may be planted any more (the area is unmapped).
        self._broken = ""

    # --- queries ------------------------------------------------------------------

    @property
    def offered(self) -> bool:
        return self._s.target.capabilities.probes is not None

    def eligible(self, bp: Breakpoint) -> bool:
        """A probe only counts: unconditional tracepoints."""
        return bp.tracepoint and bp.condition is None and not bp.internal

    def site_at(self, address: int) -> ProbeSite | None:
        return self.sites.get(address)

    def covering(self, address: int) -> ProbeSite | None:
        """The probe whose patched bytes hold ``address``."""
        if not self.sites:
            return None
        for start in range(address, address - _MAX_COVERED, -1):
            site = self.sites.get(start)
            if site is not None:
                return site if site.covers(address) else None
        return None

    def lifted_around(self, pc: int) -> bool:
        """rip stands past the first byte of a probe whose originals are in
        place: it must leave them before the probe is planted again."""
        return any(site.address < pc < site.end for site in self.lifted)

    def in_area(self, pc: int | None) -> bool:
        probes = self._s.target.capabilities.probes
        return pc is not None and probes is not None and probes.area[0] <= pc < probes.area[1]

    def original_pc(self, pc: int | None) -> int | None:
        """An address in a trampoline as the original instruction it stands
        for: the probed address in the counting code, a displaced
        instruction's own address at its copy, the first byte past the
        displaced ones at the jump back."""
        if pc is None or not self._by_key or not self.in_area(pc):
            return pc  # (no trampoline at all: the store path's common case)
        for site in self._by_key.values():
            installed = site.installed
            start, end = installed.trampoline
            if not start <= pc < end:
                continue
            if pc < installed.counting[1]:
                return site.address
            for original, copy_start, copy_end in installed.copies:
                if copy_start <= pc < copy_end:
                    return original
            return site.end  # the jump back
        return pc

    def guard_pages(self) -> frozenset[int]:
        """Pages whose stores the target must trap while probes are planted."""
        if not self.sites:
            return frozenset()
        return self._s.target.probe_guard_pages()

    # --- planting ---------------------------------------------------------------------

    def arm(self, bp: Breakpoint) -> None:
        """Serve ``bp`` by a probe at its address, or raise ProbeRefused."""
        s = self._s
        caps = s.target.capabilities
        if caps.probes is None:
            raise ProbeRefused(caps.probes_unavailable
                               or f"the {caps.name} target offers no in-guest probes")
        if self._broken:
            raise ProbeRefused(self._broken)
        if not self.eligible(bp):
            raise ProbeRefused("an in-guest probe only counts: it serves tracepoints "
                               "without a condition")
        site = self.sites.get(bp.address)
        if site is not None:
            site.users.append(bp)
            return
        displacement = self._plan(bp.address)
        self._check_room(displacement, bp)
        installed = s.target.install_probe(displacement)
        target = s.target
        physical = tuple(target.translate(displacement.address + i)
                         for i in range(displacement.length))
        site = ProbeSite(displacement, installed, physical, [bp])
        patches = s.serving.patches
        assert patches is not None
        for address, byte in zip(physical, installed.patch):
            patches.insert(address, byte, owner=site)
        self.sites[site.address] = site
        self._by_key[installed.key] = site
        if site.address < target.pc < site.end:
            self.lift(site)  # rip inside: the jump goes in once rip leaves
        s.serving.update_write_traps()

    def _function_of(self, address: int) -> Symbol:
        symbol = self._s.symbols.get_containing(address)
        if symbol is None or symbol.kind is not SymbolKind.FUNCTION or not symbol.size:
            raise ProbeRefused(f"no function with a known size contains {address:#x}: its "
                               "instruction boundaries are not known")
        return symbol

    def _facts_of(self, symbol: Symbol) -> FunctionFacts:
        code = self._s._mem.read(symbol.address, symbol.size)  # originals, traps hidden
        key = (symbol.address, code)
        facts = self._facts.get(key)
        if facts is None:
            facts = self._facts[key] = analyse_function(code, symbol.address)
        return facts

    def _targets_elsewhere(self, symbol: Symbol) -> set[int]:
        """Branch targets of every other sized function of the image (read
        once: code the guest rewrites elsewhere is not looked at again)."""
        targets: set[int] = set()
        for other in self._s.symbols.functions():
            if not other.size or other.address == symbol.address:
                continue
            known = self._elsewhere.get(other.address)
            if known is None:
                try:
                    known = self._facts_of(other).targets
                except GuestMemoryError:
                    known = frozenset()
                self._elsewhere[other.address] = known
            targets |= known
        return targets

    def _plan(self, address: int) -> Displacement:
        symbol = self._function_of(address)
        try:
            return plan_displacement(self._facts_of(symbol), address,
                                     self._targets_elsewhere(symbol))
        except Undisplaceable as e:
            raise ProbeRefused(f"{symbol.name}: {e}") from None
        except GuestMemoryError as e:
            raise ProbeRefused(str(e)) from None

    def _check_room(self, displacement: Displacement, bp: Breakpoint) -> None:
        """No other request may be served inside the bytes the jump covers,
        nor another probe's bytes overlap them."""
        start, end = displacement.address, displacement.end
        for site in self.sites.values():
            if site.address < end and start < site.end:
                raise ProbeRefused(f"the in-guest probe at {site.address:#x} covers "
                                   f"{site.address:#x}..{site.end - 1:#x}")
        for address, holders in self._s.serving.armed.items():
            if not displacement.address <= address < displacement.end:
                continue
            for other in holders:
                if other is not bp and other.mechanism is not None:
                    raise ProbeRefused(f"{_who(other)} at {address:#x} lies in the "
                                       f"{displacement.length} bytes the jump would cover")

    def disarm(self, bp: Breakpoint) -> None:
        """``bp`` is no longer served by its probe; the last user pulls it."""
        site = self.sites.get(bp.address)
        if site is None or bp not in site.users:
            return
        self.drain()  # its hits so far are its own
        site.users.remove(bp)
        if not site.users:
            self._pull(site)

    def _pull(self, site: ProbeSite) -> None:
        s = self._s
        patches = s.serving.patches
        assert patches is not None
        for address in site.physical:
            patches.remove(address)  # the originals, as written last
        del self.sites[site.address]
        if site in self.lifted:
            self.lifted.remove(site)
        site.lifted = False
        s.target.remove_probe(site.installed.key)
        s.serving.update_write_traps()

    # --- giving way ---------------------------------------------------------------------

    def make_room(self, address: int, newcomer: Breakpoint) -> None:
        """``newcomer`` is about to be served by another mechanism at
        ``address``: a probe whose bytes hold it gives way."""
        site = self.covering(address)
        if site is None or newcomer in site.users:
            return
        self._give_way(site, f"{_who(newcomer)} at {address:#x} needs its bytes")

    def _give_way(self, site: ProbeSite, why: str, again: bool = True) -> None:
        serving = self._s.serving
        users = list(site.users)
        for bp in users:
            serving.unserve_breakpoint(bp)
        for bp in users:
            serving.serve_breakpoint(bp, probe=False)
            bp.reason += f" (the in-guest probe gave way: {why})"
            if again and bp not in self._gave_way:
                self._gave_way.append(bp)

    def retry(self) -> None:
        """Tracepoints that gave way become probes again where nothing is
        in the way any more (called after a request is unserved)."""
        if self._retrying or not self._gave_way:
            return
        self._retrying = True
        serving = self._s.serving
        try:
            for bp in list(self._gave_way):
                if (bp.mechanism is None or not bp.enabled or not self.eligible(bp)
                        or bp.mechanism is Mechanism.IN_GUEST_PROBE):
                    self._gave_way.remove(bp)
                    continue
                try:
                    displacement = self._plan(bp.address)
                except ProbeRefused:
                    continue
                sharing = {b for b in serving.breakpoints_at(bp.address) if b in self._gave_way}
                if any(other not in sharing and other.mechanism is not None
                       for address, holders in serving.armed.items()
                       if displacement.address <= address < displacement.end
                       for other in holders):
                    continue
                self._gave_way.remove(bp)
                serving.unserve_breakpoint(bp)
                serving.serve_breakpoint(bp)
        finally:
            self._retrying = False

    # --- stepping through ------------------------------------------------------------------

    def lift(self, site: ProbeSite) -> None:
        """Put the originals back until rip has left the probe's bytes."""
        if site.lifted:
            return
        patches = self._s.serving.patches
        assert patches is not None
        for address in site.physical:
            patches.lift(address)
        site.lifted = True
        self.lifted.append(site)

    def settle(self, pc: int) -> None:
        """Plant again every lifted probe whose bytes rip has left (before a
        resume: the guest must never run the originals while a probe is
        supposed to count, nor a jump's middle)."""
        if not self.lifted:
            return
        patches = self._s.serving.patches
        assert patches is not None
        for site in list(self.lifted):
            if site.covers(pc):
                continue
            for address in site.physical:
                patches.rearm(address)
            site.lifted = False
            self.lifted.remove(site)

    # --- before every resume ------------------------------------------------------------

    def before_resume(self) -> None:
        """Rebuild probes whose originals changed; give every probe up if the
        guest's page tables no longer map the probe area."""
        s = self._s
        patches = s.serving.patches
        if patches is None or not self.sites:
            return
        for site in patches.take_stale():
            if isinstance(site, ProbeSite) and self.sites.get(site.address) is site:
                self._rebuild(site)
        if self.sites and not s.target.probe_area_mapped():
            self._broken = ("the guest's page tables no longer map the probe area where its "
                            "trampolines are")
            for site in list(self.sites.values()):
                self._give_way(site, self._broken, again=False)

    def _rebuild(self, site: ProbeSite) -> None:
        """The code under a probe changed: serve its users again over the new code."""
        serving = self._s.serving
        users = list(site.users)
        for bp in users:
            serving.unserve_breakpoint(bp)
        for bp in users:
            serving.serve_breakpoint(bp)
            bp.reason += " (served again: the code under the probe changed)"

    # --- draining ---------------------------------------------------------------------------

    def drain(self) -> int:
        """Count the hits the probes' ring holds; returns how many."""
        if not self._by_key:
            return 0
        s = self._s
        hits = s.target.drain_probes()
        if not len(hits):
            return 0
        by_key = self._by_key
        for key, count in Counter(hits.keys).items():
            site = by_key.get(key)
            for bp in site.users if site is not None else ():
                bp.hit_count += count
        users = {key: site.users for key, site in by_key.items()}
        if all(len(u) <= 1 for u in users.values()):  # one tracepoint a probe: columns at once
            number = {key: u[0].number for key, u in users.items() if u}
            address = {key: by_key[key].address for key in number}
            keys, times, callers = hits.keys, hits.time_ns, hits.callers
            if not all(key in number for key in set(keys)):  # a probe that went meanwhile
                kept = [k for k, key in enumerate(keys) if key in number]
                keys = [keys[k] for k in kept]
                times, callers = [times[k] for k in kept], [callers[k] for k in kept]
            s.hits.record_many([number[key] for key in keys], [address[key] for key in keys],
                               callers, times)
            return len(hits)
        log = s.hits
        for key, time_ns, caller in zip(hits.keys, hits.time_ns, hits.callers):
            site = by_key.get(key)
            for bp in site.users if site is not None else ():
                log.record(bp.number, site.address, caller, time_ns)
        return len(hits)

    # --- stops --------------------------------------------------------------------------------

    def after_stop(self, stop: Stop) -> Stop:
        """Every stop: out of a trampoline onto the original code, hits drained."""
        if not self._by_key:
            return stop
        s = self._s
        if stop.reason is StopReason.CRASHED and self.in_area(stop.pc):
            stop = replace(stop, pc=self.original_pc(stop.pc),
                           detail=f"{stop.detail} (in the trampoline of an in-guest probe)")
        elif stop.alive and not s.target.closed and self.in_area(s.target.pc):
            try:
                stop = self._leave_area(stop)
            except GuestError as e:
                stop = Stop(StopReason.CRASHED, self.original_pc(e.rip), detail=str(e))
        if not s.target.closed:
            self.drain()
        return stop

    def _leave_area(self, stop: Stop) -> Stop:
        s = self._s
        runcontrol = s.runcontrol
        for _ in range(_LEAVE_LIMIT):
            if not self.in_area(s.target.pc):
                break
            during = runcontrol.step_instruction()
            if during is not None and not during.alive:
                return during
        pc = s.target.pc
        arrived = runcontrol.arrive(pc)
        if arrived is not None:
            return arrived
        return replace(stop, pc=pc, writer=self.original_pc(stop.writer))


def _who(bp: Breakpoint) -> str:
    return "a breakpoint of run control" if bp.internal else str(bp)
