"""The planner: which mechanism serves each request on this target.

Rules (DESIGN.md, "The engine"): ``auto`` code breakpoints prefer a software
trap and keep hardware slots for what only hardware can do; an ``auto``
tracepoint without a condition is counted by the target itself where it
offers that (the plugin counter: no stop per hit), else by an in-guest probe
where the target offers one (it counts without an exit; whether the patch is
safe is the engine's analysis, :mod:`kvmbench.engine.probes`, which falls
back to the next choice with its reason); ``auto``
watchpoints prefer hardware data slots, then what a stub inserts itself,
then page traps (writes only), then single-step compare. ``auto`` never
fails for lack of slots while a software mechanism can serve; ``hw``/``sw``
are honoured or fail with a reason. The planner reads only the target's
:class:`~kvmbench.backends.target.TargetCapabilities`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmbench.backends.capabilities import Feature
from kvmbench.backends.target import StubAccess, TargetCapabilities
from kvmbench.engine.model import Access, Kind, Mechanism
from kvmbench.errors import MechanismUnavailable, UsageError

_BREAKPOINT_MECHANISMS = (Mechanism.HW_EXECUTE, Mechanism.INT3, Mechanism.HLT_TRAP,
                          Mechanism.STUB_BREAKPOINT, Mechanism.STUB_HW_BREAKPOINT,
                          Mechanism.IN_GUEST_PROBE, Mechanism.PLUGIN_COUNTER)
_WATCH_MECHANISMS = (Mechanism.HW_DATA, Mechanism.PAGE_TRAP, Mechanism.STEP_COMPARE,
                     Mechanism.STUB_WATCH)
_STUB_ACCESS = {Access.WRITE: StubAccess.WRITE, Access.READ: StubAccess.READ,
                Access.ACCESS: StubAccess.ACCESS}


@dataclass(frozen=True)
class Plan:
    """Mechanisms to try in order, each with the reason it is a candidate."""

    choices: tuple[tuple[Mechanism, str], ...]


def parse_mechanism(mechanism: Mechanism | str) -> Mechanism:
    """A Mechanism from itself, its value ("page trap") or its name ("PAGE_TRAP")."""
    if isinstance(mechanism, Mechanism):
        return mechanism
    text = str(mechanism).strip()
    for m in Mechanism:
        if text.lower() in (m.value.lower(), m.name.lower()):
            return m
    names = ", ".join(repr(m.value) for m in Mechanism)
    raise UsageError(f"unknown mechanism {mechanism!r}: one of {names}")


def software_trap(caps: TargetCapabilities) -> Mechanism | None:
    """The trap byte the engine plants on this target (int3 where the host
    delivers it, else hlt), or None where it may plant none."""
    for trap in caps.software_traps:
        return parse_mechanism(trap.name)
    return None


def _why_no_software_trap(caps: TargetCapabilities) -> str:
    if not caps.software_traps and caps.slot_profile is None:
        return f"{caps.name}: the guest owns its trap bytes here"
    return "no software trap on this target: " + caps.why_not(Feature.INT3)


def _breakpoint_offers(caps: TargetCapabilities) -> dict[Mechanism, str]:
    """Every breakpoint mechanism the target offers, with why it cannot if not."""
    offers: dict[Mechanism, str] = {}
    for trap in caps.software_traps:
        offers[parse_mechanism(trap.name)] = ""
    if caps.slot_profile is not None and caps.works(Feature.HW_EXECUTE):
        offers[Mechanism.HW_EXECUTE] = ""
    if "sw" in caps.stub_breakpoints:
        offers[Mechanism.STUB_BREAKPOINT] = ""
    if "hw" in caps.stub_breakpoints:
        offers[Mechanism.STUB_HW_BREAKPOINT] = ""
    if caps.probes is not None:
        offers[Mechanism.IN_GUEST_PROBE] = ""
    if caps.exec_counting is not None:
        offers[Mechanism.PLUGIN_COUNTER] = ""
    return offers


def _reason_unavailable(mechanism: Mechanism, caps: TargetCapabilities) -> str:
    feature = {Mechanism.HW_EXECUTE: Feature.HW_EXECUTE, Mechanism.INT3: Feature.INT3,
               Mechanism.HLT_TRAP: Feature.HLT_TRAP, Mechanism.PAGE_TRAP: Feature.READONLY_MEMSLOT,
               Mechanism.STEP_COMPARE: Feature.SINGLE_STEP}.get(mechanism)
    if feature is not None and feature in caps.features.results:
        return caps.why_not(feature)
    if mechanism is Mechanism.IN_GUEST_PROBE and caps.probes_unavailable:
        return caps.probes_unavailable
    if mechanism is Mechanism.PLUGIN_COUNTER and caps.exec_counting_unavailable:
        return f"the {caps.name} target counts nothing itself: {caps.exec_counting_unavailable}"
    return f"the {caps.name} target offers no {mechanism.value}"


def plan_breakpoint(
    kind: Kind, caps: TargetCapabilities, mechanism: Mechanism | None = None, *,
    counting: bool = False,
) -> Plan:
    """Candidate mechanisms for an execution breakpoint, best first; only
    ``mechanism`` if the request names one. ``counting``: the request only
    counts (a tracepoint without a condition), so a mechanism that never
    stops may serve it."""
    offers = _breakpoint_offers(caps)
    if mechanism is not None:
        if mechanism not in _BREAKPOINT_MECHANISMS:
            raise UsageError(f"a breakpoint cannot be served by a {mechanism.value}")
        if mechanism.counts_only and not counting:
            raise UsageError(f"a {mechanism.value} only counts: it serves tracepoints "
                             "without a condition")
        if mechanism not in offers:
            raise MechanismUnavailable(_reason_unavailable(mechanism, caps))
        return Plan(((mechanism, f"{mechanism.value} requested"),))
    sw = software_trap(caps)
    stub_sw = Mechanism.STUB_BREAKPOINT in offers
    hw = next((m for m in (Mechanism.HW_EXECUTE, Mechanism.STUB_HW_BREAKPOINT) if m in offers), None)
    if kind is Kind.SW:
        if sw is not None:
            return Plan(((sw, "software trap requested"),))
        if stub_sw:
            return Plan(((Mechanism.STUB_BREAKPOINT, "software breakpoint requested"),))
        raise MechanismUnavailable(_why_no_software_trap(caps))
    if kind is Kind.HW:
        if hw is None:
            raise MechanismUnavailable(caps.why_not(Feature.HW_EXECUTE))
        choices = [(hw, "hardware slot requested")]
        if hw is Mechanism.STUB_HW_BREAKPOINT and stub_sw:
            # A stub's hw slots are found by trying; past them Z0 serves.
            choices.append((Mechanism.STUB_BREAKPOINT, "the stub refused another hw breakpoint"))
        return Plan(tuple(choices))
    choices: list[tuple[Mechanism, str]] = []
    if counting and Mechanism.PLUGIN_COUNTER in offers:
        assert caps.exec_counting is not None
        choices.append((Mechanism.PLUGIN_COUNTER,
                        f"auto: an unconditional tracepoint, counted by the target's "
                        f"{caps.exec_counting.name} without a stop per hit"))
    if counting and Mechanism.IN_GUEST_PROBE in offers:
        choices.append((Mechanism.IN_GUEST_PROBE,
                        "auto: an unconditional tracepoint counts in the guest, no exit per hit"))
    if sw is not None:
        why = "int3 works here" if sw is Mechanism.INT3 else "int3 unavailable here, hlt traps"
        choices.append((sw, f"auto: software trap keeps the hardware slots free ({why})"))
    if stub_sw:
        choices.append((Mechanism.STUB_BREAKPOINT,
                        "auto: the stub's own breakpoint (the guest owns trap bytes here)"))
    if hw is not None:
        choices.append((hw, "auto: code cannot be patched, so a hardware slot"))
    if not choices:
        raise MechanismUnavailable(
            "this target delivers neither software traps nor hardware breakpoints")
    return Plan(tuple(choices))


def plan_watchpoint(
    kind: Kind, access: Access, caps: TargetCapabilities, mechanism: Mechanism | None = None
) -> Plan:
    """Candidate mechanisms for a watchpoint, best first; only ``mechanism``
    if the request names one."""
    hw_feature = Feature.HW_WRITE_WATCH if access is Access.WRITE else Feature.HW_ACCESS_WATCH
    hw_ok = caps.slot_profile is not None and caps.works(hw_feature)
    stub_ok = _STUB_ACCESS[access] in caps.stub_watchpoints
    page_ok = access is Access.WRITE and caps.write_traps
    step_ok = caps.works(Feature.SINGLE_STEP)
    if mechanism is not None:
        if mechanism not in _WATCH_MECHANISMS:
            raise UsageError(f"a watchpoint cannot be served by a {mechanism.value}")
        if mechanism is Mechanism.PAGE_TRAP and access is not Access.WRITE:
            raise MechanismUnavailable(
                f"a page trap sees only stores, not {access.value}s (reads never exit)")
        available = {Mechanism.HW_DATA: hw_ok, Mechanism.STUB_WATCH: stub_ok,
                     Mechanism.PAGE_TRAP: page_ok, Mechanism.STEP_COMPARE: step_ok}[mechanism]
        if not available:
            reason = (caps.why_not(hw_feature) if mechanism is Mechanism.HW_DATA
                      and caps.slot_profile is not None else _reason_unavailable(mechanism, caps))
            raise MechanismUnavailable(reason)
        return Plan(((mechanism, f"{mechanism.value} requested"),))
    if kind is Kind.HW:
        if hw_ok:
            return Plan(((Mechanism.HW_DATA, "hardware slot requested"),))
        if stub_ok:
            return Plan(((Mechanism.STUB_WATCH, "hardware watchpoint requested"),))
        raise MechanismUnavailable(caps.why_not(hw_feature))
    choices: list[tuple[Mechanism, str]] = []
    if hw_ok and kind is Kind.AUTO:
        choices.append((Mechanism.HW_DATA, "auto: hardware data slot, free of cost"))
    if stub_ok and kind is Kind.AUTO:
        choices.append((Mechanism.STUB_WATCH, "auto: the stub's own watchpoint"))
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
        raise MechanismUnavailable(f"no mechanism on this target can watch {access.value}s")
    return Plan(tuple(choices))
