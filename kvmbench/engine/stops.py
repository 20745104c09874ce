"""Stop classification: what a target event means to the engine.

One pure function, :func:`classify`, from an event and a view of what is
armed to a decision (STYLE.md: "Stops are not exits"). It decides whether a
trap is ours or the guest's; acting on the decision (counting, handing the
trap back, stepping off) is the run loop's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kvmbench.backends.target import (
    Exited,
    GuestDebugTrap,
    Halted,
    Paused,
    SlotHit,
    Stepped,
    StoreStepped,
    StoreTrapped,
    StubBreakpointHit,
    StubWatchHit,
    TargetEvent,
    TrapExecuted,
)
from kvmbench.engine.model import SOFTWARE_TRAPS, Breakpoint, Mechanism, Watchpoint


class ArmedView(Protocol):
    """What :func:`classify` may ask about the armed requests."""

    catch_guest_traps: bool

    def breakpoints_at(self, address: int) -> list[Breakpoint]: ...

    def software_trap_at(self, address: int) -> bool: ...

    def slot_owner(self, index: int) -> object | None: ...

    def watches_at(self, address: int, length: int) -> list[Watchpoint]: ...



# Decisions, like target events, are not frozen (one per hit; see
# kvmbench.backends.target). Treat them as immutable.

@dataclass(slots=True)
class BreakpointHit:
    """Our breakpoint(s) at ``pc`` fired; the guest stands at ``pc``."""

    pc: int
    mechanism: Mechanism
    requests: tuple[Breakpoint, ...]


@dataclass(slots=True)
class WatchTrapped:
    """A watch mechanism that reports after the access (a hardware data
    slot, a stub's watchpoint) triggered for ``watches``."""

    watches: tuple[Watchpoint, ...]
    pc: int
    address: int | None = None


@dataclass(slots=True)
class StoreToTrappedPage:
    """A store the target trapped (page traps, pages holding our traps)."""

    event: StoreTrapped | StoreStepped


@dataclass(slots=True)
class GuestOwned:
    """A trap that is not ours: hand it to the guest, or stop if the user
    catches guest traps."""

    event: TargetEvent
    catch: bool
    detail: str


@dataclass(frozen=True)
class StepFinished:
    event: Stepped


@dataclass(frozen=True)
class RunEnded:
    """The guest paused, exited or halted for good."""

    event: Paused | Exited | Halted


Decision = BreakpointHit | WatchTrapped | StoreToTrappedPage | GuestOwned | StepFinished | RunEnded

_STUB_BREAKPOINTS = (Mechanism.STUB_BREAKPOINT, Mechanism.STUB_HW_BREAKPOINT)


def _armed_with(view: ArmedView, pc: int, wanted: object) -> tuple[Breakpoint, ...]:
    return tuple(b for b in view.breakpoints_at(pc)
                 if b.mechanism is not None and (
                     b.mechanism in wanted if isinstance(wanted, tuple) else wanted(b.mechanism)))


def _hit(view: ArmedView, pc: int, mechanism: Mechanism) -> BreakpointHit:
    """One execution of the instruction at ``pc`` hits every breakpoint
    there, whichever mechanism fired first (a slot fires before a trap)."""
    requests = tuple(b for b in view.breakpoints_at(pc) if b.mechanism is not None)
    return BreakpointHit(pc, mechanism, requests)


def classify(event: TargetEvent, view: ArmedView) -> Decision:
    """What ``event`` means, given what is armed in ``view``."""
    if type(event) is TrapExecuted:
        if view.software_trap_at(event.pc):
            requests = tuple(b for b in view.breakpoints_at(event.pc) if b.mechanism is not None)
            for b in requests:
                if b.mechanism in SOFTWARE_TRAPS:
                    return BreakpointHit(event.pc, b.mechanism, requests)  # type: ignore[arg-type]
        return GuestOwned(event, view.catch_guest_traps, "guest executed its own trap instruction")
    if isinstance(event, SlotHit):
        breakpoints: list[Breakpoint] = []
        watches: list[Watchpoint] = []
        for index in event.slots:
            owner = view.slot_owner(index)
            if isinstance(owner, Breakpoint):
                breakpoints.append(owner)
            elif isinstance(owner, Watchpoint) and owner not in watches:
                watches.append(owner)
        if breakpoints:
            if any(b.address == event.pc for b in breakpoints):
                return _hit(view, event.pc, Mechanism.HW_EXECUTE)
            return BreakpointHit(event.pc, Mechanism.HW_EXECUTE, tuple(breakpoints))
        if watches:
            return WatchTrapped(tuple(watches), event.pc)
        return GuestOwned(GuestDebugTrap(1, event.pc), view.catch_guest_traps,
                          "guest debug exception 1 from a debug register it set itself")
    if isinstance(event, StubBreakpointHit):
        ours = _armed_with(view, event.pc, _STUB_BREAKPOINTS)
        if ours:
            return _hit(view, event.pc, ours[0].mechanism)  # type: ignore[arg-type]
        return GuestOwned(GuestDebugTrap(3, event.pc), True,
                          "the stub stopped at a breakpoint kvmbench did not set")
    if isinstance(event, StubWatchHit):
        watches_hit = tuple(w for w in view.watches_at(event.address, 1)
                            if w.mechanism is Mechanism.STUB_WATCH)
        if watches_hit:
            return WatchTrapped(watches_hit, event.pc, event.address)
        return GuestOwned(GuestDebugTrap(1, event.pc), True,
                          f"the stub reported a watchpoint at {event.address:#x} kvmbench did not set")
    if isinstance(event, (StoreTrapped, StoreStepped)):
        return StoreToTrappedPage(event)
    if isinstance(event, GuestDebugTrap):
        return GuestOwned(event, view.catch_guest_traps, f"guest debug exception {event.vector}")
    if isinstance(event, Stepped):
        return StepFinished(event)
    if isinstance(event, (Paused, Exited, Halted)):
        return RunEnded(event)
    raise AssertionError(f"unclassified target event {event!r}")
