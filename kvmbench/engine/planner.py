"""The planner: which mechanism serves each request on this host.

Rules (DESIGN.md, "The engine"): ``auto`` code breakpoints prefer a software
trap and keep hardware slots for what only hardware can do; ``auto``
watchpoints prefer hardware data slots, then page traps (writes only), then
single-step compare. ``auto`` never fails for lack of slots while a software
mechanism can serve; ``hw``/``sw`` are honoured or fail with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmbench.backends.capabilities import Feature, HostCapabilities
from kvmbench.engine.model import Access, Kind, Mechanism
from kvmbench.errors import MechanismUnavailable, UsageError


@dataclass(frozen=True)
class Plan:
    """Mechanisms to try in order, each with the reason it is a candidate."""

    choices: tuple[tuple[Mechanism, str], ...]


def software_trap(caps: HostCapabilities) -> Mechanism | None:
    """The software trap this host delivers: int3 where USE_SW_BP works, else hlt."""
    if caps.works(Feature.INT3):
        return Mechanism.INT3
    if caps.works(Feature.HLT_TRAP):
        return Mechanism.HLT_TRAP
    return None


#: What each mechanism needs from the host, for requests that name one.
_NEEDS: dict[Mechanism, Feature] = {
    Mechanism.HW_EXECUTE: Feature.HW_EXECUTE,
    Mechanism.INT3: Feature.INT3,
    Mechanism.HLT_TRAP: Feature.HLT_TRAP,
    Mechanism.PAGE_TRAP: Feature.READONLY_MEMSLOT,
    Mechanism.STEP_COMPARE: Feature.SINGLE_STEP,
}
_BREAKPOINT_MECHANISMS = (Mechanism.HW_EXECUTE, Mechanism.INT3, Mechanism.HLT_TRAP)
_WATCH_MECHANISMS = (Mechanism.HW_DATA, Mechanism.PAGE_TRAP, Mechanism.STEP_COMPARE)


def parse_mechanism(mechanism: Mechanism | str) -> Mechanism:
    """A Mechanism from itself, its value ("page trap") or its name ("PAGE_TRAP")."""
    if isinstance(mechanism, Mechanism):
        return mechanism
    text = str(mechanism).strip()
    for m in Mechanism:
        if text.lower() in (m.value, m.name.lower()):
            return m
    names = ", ".join(repr(m.value) for m in Mechanism)
    raise UsageError(f"unknown mechanism {mechanism!r}: one of {names}")


def _requested(mechanism: Mechanism, feature: Feature, caps: HostCapabilities) -> Plan:
    if not caps.works(feature):
        raise MechanismUnavailable(caps.why_not(feature))
    return Plan(((mechanism, f"{mechanism.value} requested"),))


def plan_breakpoint(
    kind: Kind, caps: HostCapabilities, mechanism: Mechanism | None = None
) -> Plan:
    """Candidate mechanisms for an execution breakpoint, best first; only
    ``mechanism`` if the request names one."""
    if mechanism is not None:
        if mechanism not in _BREAKPOINT_MECHANISMS:
            raise UsageError(f"a breakpoint cannot be served by a {mechanism.value}")
        return _requested(mechanism, _NEEDS[mechanism], caps)
    sw = software_trap(caps)
    hw_ok = caps.works(Feature.HW_EXECUTE)
    if kind is Kind.SW:
        if sw is None:
            raise MechanismUnavailable(
                "no software trap on this host: " + caps.why_not(Feature.INT3)
            )
        return Plan(((sw, "software trap requested"),))
    if kind is Kind.HW:
        if not hw_ok:
            raise MechanismUnavailable(caps.why_not(Feature.HW_EXECUTE))
        return Plan(((Mechanism.HW_EXECUTE, "hardware slot requested"),))
    choices: list[tuple[Mechanism, str]] = []
    if sw is not None:
        why = "int3 works here" if sw is Mechanism.INT3 else "int3 unavailable here, hlt traps"
        choices.append((sw, f"auto: software trap keeps the hardware slots free ({why})"))
    if hw_ok:
        choices.append((Mechanism.HW_EXECUTE, "auto: code cannot be patched, so a hardware slot"))
    if not choices:
        raise MechanismUnavailable("this host delivers neither software traps nor hardware breakpoints")
    return Plan(tuple(choices))


def plan_watchpoint(
    kind: Kind, access: Access, caps: HostCapabilities, mechanism: Mechanism | None = None
) -> Plan:
    """Candidate mechanisms for a watchpoint, best first; only ``mechanism``
    if the request names one."""
    hw_feature = Feature.HW_WRITE_WATCH if access is Access.WRITE else Feature.HW_ACCESS_WATCH
    if mechanism is not None:
        if mechanism not in _WATCH_MECHANISMS:
            raise UsageError(f"a watchpoint cannot be served by a {mechanism.value}")
        if mechanism is Mechanism.PAGE_TRAP and access is not Access.WRITE:
            raise MechanismUnavailable(
                f"a page trap sees only stores, not {access.value}s (reads never exit)")
        return _requested(mechanism, hw_feature if mechanism is Mechanism.HW_DATA
                          else _NEEDS[mechanism], caps)
    hw_ok = caps.works(hw_feature)
    page_ok = access is Access.WRITE and caps.works(Feature.READONLY_MEMSLOT)
    step_ok = caps.works(Feature.SINGLE_STEP)
    if kind is Kind.HW:
        if not hw_ok:
            raise MechanismUnavailable(caps.why_not(hw_feature))
        return Plan(((Mechanism.HW_DATA, "hardware slot requested"),))
    choices: list[tuple[Mechanism, str]] = []
    if hw_ok and kind is Kind.AUTO:
        choices.append((Mechanism.HW_DATA, "auto: hardware data slot, free of cost"))
    if page_ok:
        why = "hardware data slots unavailable here" if not hw_ok else "no hardware slot free"
        choices.append((Mechanism.PAGE_TRAP, f"page trap: {why}; stores exit as MMIO"))
    if step_ok:
        why = (
            "reads need a hardware slot or stepping"
            if access is not Access.WRITE
            else "no cheaper mechanism here"
        )
        choices.append((Mechanism.STEP_COMPARE, f"single-step compare ({why}; slow)"))
    if not choices:
        raise MechanismUnavailable(f"no mechanism on this host can watch {access.value}s")
    return Plan(tuple(choices))
