"""The plugin counter as the planner and the engine see it: a target that
counts executions itself serves unconditional tracepoints, and nothing
else; a target without it falls back to what stops, saying why. Planning
and a scripted fake target only: nothing boots (tests/test_linux_session.py
holds the mechanism to the real kernel's counts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest
from fake_target import FakeTarget, capabilities, exits, fake_symbols

from kvmbench.backends.target import ExecCounting
from kvmbench.engine.model import Kind, Mechanism
from kvmbench.engine.planner import parse_mechanism, plan_breakpoint
from kvmbench.engine.session import Session
from kvmbench.errors import MechanismUnavailable, UsageError

STUB = replace(capabilities(), name="stub", software_traps=(), slot_profile=None,
               stub_breakpoints=frozenset({"sw", "hw"}))
COUNTING = replace(STUB, exec_counting=ExecCounting("TCG plugin", 8))
UNDER_KVM = replace(STUB, exec_counting_unavailable="QEMU loads no TCG plugins under KVM")


def mechanisms(plan) -> list[Mechanism]:  # type: ignore[no-untyped-def]
    return [m for m, _ in plan.choices]


def test_an_unconditional_tracepoint_is_counted_by_the_target_first() -> None:
    plan = plan_breakpoint(Kind.AUTO, COUNTING, counting=True)
    assert mechanisms(plan)[0] is Mechanism.PLUGIN_COUNTER
    assert "TCG plugin" in plan.choices[0][1]
    assert Mechanism.STUB_BREAKPOINT in mechanisms(plan)  # the fallback when the table is full


def test_a_breakpoint_that_stops_is_never_a_counter() -> None:
    assert Mechanism.PLUGIN_COUNTER not in mechanisms(plan_breakpoint(Kind.AUTO, COUNTING))
    with pytest.raises(UsageError, match="only counts"):
        plan_breakpoint(Kind.AUTO, COUNTING, Mechanism.PLUGIN_COUNTER)


def test_hw_and_sw_requests_keep_their_kind() -> None:
    assert mechanisms(plan_breakpoint(Kind.SW, COUNTING, counting=True)) == [Mechanism.STUB_BREAKPOINT]
    assert Mechanism.PLUGIN_COUNTER not in mechanisms(plan_breakpoint(Kind.HW, COUNTING, counting=True))


def test_asking_for_a_counter_the_target_lacks_says_why() -> None:
    with pytest.raises(MechanismUnavailable, match="no TCG plugins under KVM"):
        plan_breakpoint(Kind.AUTO, UNDER_KVM, Mechanism.PLUGIN_COUNTER, counting=True)
    assert parse_mechanism("plugin counter") is Mechanism.PLUGIN_COUNTER
    assert parse_mechanism("Stub Breakpoint (Z0)") is Mechanism.STUB_BREAKPOINT


class CountingTarget(FakeTarget):
    """A fake stub that counts executions itself; the test says how many ran."""

    def __init__(self, caps, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(capabilities_=caps, **kw)
        self.counts: dict[int, int] = {}

    def count_executions(self, addresses: Sequence[int]) -> None:
        for address in addresses:
            self.counts[address] = 0

    def stop_counting(self, addresses: Sequence[int]) -> None:
        for address in addresses:
            self.counts.pop(address, None)

    def execution_counts(self) -> Mapping[int, int]:
        return dict(self.counts)

    def insert_stub_breakpoint(self, address: int, kind: str) -> bool:
        return True  # a stub takes Z0 and Z1 anywhere


def ran(address: int, times: int):  # type: ignore[no-untyped-def]
    """A run in which the instruction at ``address`` executes ``times`` times."""
    def step(t: CountingTarget, how):  # type: ignore[no-untyped-def]
        t.counts[address] += times
        return exits(0)(t, how)
    return step


def test_counted_hits_reach_the_tracepoint_and_the_hit_log_at_the_stop() -> None:
    target = CountingTarget(COUNTING, script=[ran(0x1000, 41)])
    session = Session(target, fake_symbols(f=(0x1000, 16)))
    bp = session.breakpoints.trace("f")
    assert bp.served_by == "plugin counter"
    assert 0x1000 not in session.serving.armed  # nothing of it stops
    session.cont()
    assert bp.hit_count == 41 and session.hits.count(bp.number) == 41


def test_a_condition_moves_a_counted_tracepoint_to_a_mechanism_that_stops() -> None:
    target = CountingTarget(COUNTING)
    session = Session(target, fake_symbols(f=(0x1000, 16)))
    bp = session.breakpoints.trace("f")
    session.breakpoints.set_condition(bp.number, "1")
    assert bp.mechanism is Mechanism.STUB_BREAKPOINT and 0x1000 not in target.counts
    asked = session.breakpoints.trace("f", mechanism="plugin counter")
    with pytest.raises(UsageError, match="only counts"):
        session.breakpoints.set_condition(asked.number, "1")
    assert asked.mechanism is Mechanism.PLUGIN_COUNTER


def test_without_a_counter_a_tracepoint_is_a_breakpoint_and_says_why() -> None:
    session = Session(CountingTarget(UNDER_KVM), fake_symbols(f=(0x1000, 16)))
    bp = session.breakpoints.trace("f")
    assert bp.mechanism is Mechanism.STUB_BREAKPOINT
    assert "no plugin counter: QEMU loads no TCG plugins under KVM" in bp.reason


def test_an_instruction_the_target_counts_is_stepped_off_never_emulated() -> None:
    from fake_target import stepped_to

    from kvmbench.backends.target import ResumeMode, StubBreakpointHit

    def stub_hit(pc: int):  # type: ignore[no-untyped-def]
        def step(t: CountingTarget, how):  # type: ignore[no-untyped-def]
            t.regs["rip"] = pc
            return StubBreakpointHit(pc)
        return step

    target = CountingTarget(COUNTING, script=[stub_hit(0x1000), stepped_to(0x1001), exits(0)])
    target.memory[0x1000] = 0x55  # push rbp: emulated where nothing else must see it run
    target.regs["rip"] = 0x2000
    session = Session(target, fake_symbols(f=(0x1000, 16)))
    stop_here = session.breakpoints.add("f", kind="sw")
    counted = session.breakpoints.trace("f")
    assert counted.mechanism is Mechanism.PLUGIN_COUNTER
    assert session.cont().breakpoint == stop_here.number
    session.cont()
    assert [how.mode for how in target.resumes()] == [ResumeMode.CONTINUE, ResumeMode.STEP, ResumeMode.CONTINUE]
