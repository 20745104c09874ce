"""The planner: which mechanism serves each request, on an ideal VMX/SVM
host (``assume_all``) and on this host (probed). Planning only: nothing runs."""

from __future__ import annotations

import pytest

from kvmbench.backends.capabilities import Feature, HostCapabilities, ProbeResult
from kvmbench.backends.kvm.target import capabilities_for
from kvmbench.backends.target import TargetCapabilities
from kvmbench.engine.model import Access, Kind, Mechanism
from kvmbench.engine.planner import (
    parse_mechanism,
    plan_breakpoint,
    plan_watchpoint,
    software_trap,
)
from kvmbench.errors import MechanismUnavailable, UsageError

IDEAL = capabilities_for(HostCapabilities.assume_all())


def without(*missing: Feature) -> TargetCapabilities:
    return capabilities_for(HostCapabilities.from_results(
        "test host",
        [ProbeResult(f, f not in missing, "" if f not in missing else "broken here") for f in Feature],
    ))


def mechanisms(plan) -> list[Mechanism]:  # type: ignore[no-untyped-def]
    return [m for m, _ in plan.choices]


def test_auto_code_breakpoint_prefers_int3_on_an_ideal_host() -> None:
    assert mechanisms(plan_breakpoint(Kind.AUTO, IDEAL)) == [Mechanism.INT3, Mechanism.HW_EXECUTE]


def test_auto_code_breakpoint_uses_hlt_when_int3_is_not_delivered() -> None:
    plan = plan_breakpoint(Kind.AUTO, without(Feature.INT3))
    assert mechanisms(plan) == [Mechanism.HLT_TRAP, Mechanism.HW_EXECUTE]
    assert "int3 unavailable" in plan.choices[0][1]


def test_auto_code_breakpoint_falls_back_to_hw_without_any_software_trap() -> None:
    plan = plan_breakpoint(Kind.AUTO, without(Feature.INT3, Feature.HLT_TRAP))
    assert mechanisms(plan) == [Mechanism.HW_EXECUTE]


def test_kind_sw_without_software_trap_says_why() -> None:
    with pytest.raises(MechanismUnavailable, match="broken here"):
        plan_breakpoint(Kind.SW, without(Feature.INT3, Feature.HLT_TRAP))


def test_kind_hw_without_hw_execute_says_why() -> None:
    with pytest.raises(MechanismUnavailable, match="broken here"):
        plan_breakpoint(Kind.HW, without(Feature.HW_EXECUTE))


def test_kind_hw_and_sw_are_honoured_exactly() -> None:
    assert mechanisms(plan_breakpoint(Kind.HW, IDEAL)) == [Mechanism.HW_EXECUTE]
    assert mechanisms(plan_breakpoint(Kind.SW, IDEAL)) == [Mechanism.INT3]


def test_auto_write_watch_prefers_hw_slot_then_page_trap_then_stepping() -> None:
    assert mechanisms(plan_watchpoint(Kind.AUTO, Access.WRITE, IDEAL)) == [
        Mechanism.HW_DATA, Mechanism.PAGE_TRAP, Mechanism.STEP_COMPARE]


def test_read_watch_never_uses_page_traps() -> None:
    plan = plan_watchpoint(Kind.AUTO, Access.READ, without(Feature.HW_ACCESS_WATCH))
    assert mechanisms(plan) == [Mechanism.STEP_COMPARE]
    assert "slow" in plan.choices[0][1]


def test_kind_hw_watch_without_data_slots_says_why() -> None:
    with pytest.raises(MechanismUnavailable, match="broken here"):
        plan_watchpoint(Kind.HW, Access.WRITE, without(Feature.HW_WRITE_WATCH))


def test_nothing_can_watch_reads_without_slots_or_stepping() -> None:
    with pytest.raises(MechanismUnavailable, match="reads"):
        plan_watchpoint(Kind.AUTO, Access.READ, without(Feature.HW_ACCESS_WATCH, Feature.SINGLE_STEP))


# --- this host, as probed ---------------------------------------------------


def test_this_host_auto_breakpoint_is_its_software_trap(caps: HostCapabilities) -> None:
    sw = software_trap(capabilities_for(caps))
    if sw is None:
        pytest.skip(caps.why_not(Feature.HLT_TRAP))
    assert mechanisms(plan_breakpoint(Kind.AUTO, capabilities_for(caps)))[0] is sw
    expected = Mechanism.INT3 if caps.works(Feature.INT3) else Mechanism.HLT_TRAP
    assert sw is expected


def test_this_host_write_watch_plan_matches_its_probe(caps: HostCapabilities) -> None:
    first = mechanisms(plan_watchpoint(Kind.AUTO, Access.WRITE, capabilities_for(caps)))[0]
    if caps.works(Feature.HW_WRITE_WATCH):
        assert first is Mechanism.HW_DATA
    elif caps.works(Feature.READONLY_MEMSLOT):
        assert first is Mechanism.PAGE_TRAP
    else:
        assert first is Mechanism.STEP_COMPARE


# --- slot pressure in a session planned for an ideal host (nothing runs) ----


def test_watchpoints_move_to_a_freed_hw_slot_and_hw_fails_naming_holders(caps) -> None:
    import kvmbench
    from kvmbench.errors import SlotsExhausted

    s = kvmbench.open("counter", ["1"], capabilities=HostCapabilities.assume_all())
    try:
        bps = [s.breakpoints.add(f, kind="hw") for f in ("increment", "add_ten", "reader", "main")]
        wp = s.watchpoints.add("counter")
        assert wp.mechanism is Mechanism.PAGE_TRAP and "no hardware slot free" in wp.reason
        with pytest.raises(SlotsExhausted, match=r"DR\d.*(increment|add_ten|reader|main)"):
            s.watchpoints.add("watch_a", kind="hw")
        s.breakpoints.delete(bps[1].number)
        assert wp.mechanism is Mechanism.HW_DATA and wp.slots == ("DR1",)
        auto = s.breakpoints.add("reset_counter")
        assert auto.mechanism is Mechanism.INT3  # auto keeps slots free
    finally:
        s.close()


def test_a_named_mechanism_is_the_only_choice() -> None:
    plan = plan_breakpoint(Kind.AUTO, IDEAL, Mechanism.HLT_TRAP)
    assert mechanisms(plan) == [Mechanism.HLT_TRAP]
    plan = plan_watchpoint(Kind.AUTO, Access.WRITE, IDEAL, Mechanism.STEP_COMPARE)
    assert mechanisms(plan) == [Mechanism.STEP_COMPARE]


def test_a_named_mechanism_the_host_lacks_fails_with_the_probe_reason() -> None:
    with pytest.raises(MechanismUnavailable, match="broken here"):
        plan_watchpoint(Kind.AUTO, Access.WRITE, without(Feature.READONLY_MEMSLOT),
                        Mechanism.PAGE_TRAP)


def test_a_page_trap_cannot_serve_a_read_watch() -> None:
    with pytest.raises(MechanismUnavailable, match="only stores"):
        plan_watchpoint(Kind.AUTO, Access.READ, IDEAL, Mechanism.PAGE_TRAP)


def test_a_watch_mechanism_cannot_serve_a_breakpoint() -> None:
    with pytest.raises(UsageError, match="cannot be served"):
        plan_breakpoint(Kind.AUTO, IDEAL, Mechanism.PAGE_TRAP)


@pytest.mark.parametrize("spelling", ["page trap", "PAGE_TRAP", "page_trap", Mechanism.PAGE_TRAP])
def test_mechanisms_are_named_by_value_or_name(spelling) -> None:  # type: ignore[no-untyped-def]
    assert parse_mechanism(spelling) is Mechanism.PAGE_TRAP


def test_an_unknown_mechanism_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="'page trap'"):
        parse_mechanism("carrier pigeon")
