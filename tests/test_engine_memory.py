"""Property: whatever breakpoints are inserted, removed and hit, guest memory
is byte-identical to what the guest wrote, session.mem never shows trap
bytes, and close() restores every patched byte."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvmbench
from kvmbench.engine.model import StopReason

FUNCS = [f"f{i}" for i in range(10)] + ["play_round", "next_random", "main"]
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from(FUNCS), st.sampled_from(["auto", "sw", "hw"])),
    st.tuples(st.just("delete"), st.integers(0, 20), st.just("")),
    st.tuples(st.just("cont"), st.just(""), st.just("")),
), max_size=12)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(program=ops)
def test_guest_memory_is_what_the_guest_wrote(caps, program) -> None:  # type: ignore[no-untyped-def]
    s = kvmbench.open("callmix", ["10"], capabilities=caps)
    try:
        main = s.symbols.get_by_name("main")
        text = s.symbols.get_by_name("f0").address
        size = main.address + main.size - text  # f0..main: code the guest never writes
        pristine = s.mem.read(text, size)
        numbers: list[int] = []
        for op, arg, kind in program:
            if op == "add":
                try:
                    numbers.append(s.breakpoints.add(arg, kind=kind).number)
                except kvmbench.errors.KvmbenchError:
                    pass  # slots full, or the host lacks the mechanism
            elif op == "delete" and numbers:
                s.breakpoints.delete(numbers.pop(arg % len(numbers)))
            elif op == "cont" and s.state.value == "stopped":
                stop = s.cont()
                if stop.reason is StopReason.EXITED:
                    break
            if s.state.value == "stopped":
                assert s.mem.read(text, size) == pristine
        seen: list[bytes] = []
        if s.state.value == "stopped":
            physical = s.target.machine.translate(text)
            close = s.target.machine.close

            def look_then_close() -> None:
                seen.append(s.target.machine.memory.read(physical, size))
                close()

            s.target.machine.close = look_then_close  # type: ignore[method-assign]
            s.close()
            assert seen == [pristine]
    finally:
        s.close()
