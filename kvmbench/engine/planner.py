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
from kvmbench.errors import MechanismUnavailable


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


def plan_breakpoint(kind: Kind, caps: HostCapabilities) -> Plan:
    """Candidate mechanisms for an execution breakpoint, best first."""
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


def plan_watchpoint(kind: Kind, access: Access, caps: HostCapabilities) -> Plan:
    """Candidate mechanisms for a watchpoint, best first."""
    hw_feature = Feature.HW_WRITE_WATCH if access is Access.WRITE else Feature.HW_ACCESS_WATCH
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
