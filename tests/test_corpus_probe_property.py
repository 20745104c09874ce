"""Property (issue 14, "Must show"): the memory-integrity property over
in-guest probes. Whatever sequence of tracepoints (served by probes where
safe), breakpoints that make probes give way and come back, conditions,
watches, deletes, enables, disables, continues, pauses in mid-run, steps
and finishes a user makes on an -O2 guest: no stop leaves rip in a
trampoline, the session never shows a patched byte in the guest's code,
and once every request is deleted the code is byte for byte what the ELF
holds and the guest prints what an undisturbed run prints. Closing the
session with probes planted puts every original byte back.
"""

from __future__ import annotations

import functools
import threading

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from corpus import (
    close_leaves_code,
    code_bytes,
    cont,
    corpus_dir,  # noqa: F401 - fixture
    delete_every_request,
    elf_symbols,
    guest_path,
    one_line,
    undisturbed,
)
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import kvmbench
from kvmbench.backends.capabilities import Feature
from kvmbench.backends.kvm import layout
from kvmbench.engine.model import Mechanism, StopReason
from kvmbench.errors import KvmbenchError

GUEST = "checksum-O2"
FUNCTIONS = ("mix", "step_a", "step_b", "copy_bytes", "sum_bytes", "spin", "tail")
DATA = ("state_a", "state_b", "buf_in", "buf_out", "result")
AREA = range(layout.PROBE_AREA_ADDR, layout.PROBE_AREA_ADDR + layout.PROBE_AREA_SIZE)
TRACE_MECHANISMS = (None, None, Mechanism.IN_GUEST_PROBE)
BREAK_MECHANISMS = (None, Mechanism.HLT_TRAP, Mechanism.HW_EXECUTE)


@functools.cache
def _locations() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(function entries, every instruction of the functions)."""
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    entries, everywhere = [], []
    for name in FUNCTIONS:
        symbol = elf_symbols(GUEST)[name]
        entries.append(symbol.address)
        everywhere += [i.address for i in cs.disasm(code_bytes(GUEST, symbol.address, symbol.size),
                                                    symbol.address)]
    return tuple(entries), tuple(everywhere)


index = st.integers(0, 10_000)
program = st.lists(st.one_of(
    st.tuples(st.just("trace_entry"), index, st.sampled_from(TRACE_MECHANISMS)),
    st.tuples(st.just("trace"), index, st.sampled_from(TRACE_MECHANISMS)),
    st.tuples(st.just("break"), index, st.sampled_from(BREAK_MECHANISMS)),
    st.tuples(st.just("watch"), st.sampled_from(DATA),
              st.sampled_from([None, Mechanism.PAGE_TRAP, Mechanism.STEP_COMPARE])),
    st.tuples(st.sampled_from(["delete", "enable", "disable", "condition"]), index),
    st.tuples(st.just("cont")),
    st.tuples(st.just("pause"), st.integers(1, 30)),
    st.tuples(st.just("stepi"), st.integers(1, 6)),
    st.tuples(st.just("finish")),
), max_size=14)


def _paused_run(s, milliseconds: int):  # type: ignore[no-untyped-def]
    timer = threading.Timer(milliseconds / 1000, s.pause)
    timer.start()
    try:
        return cont(s)
    finally:
        timer.cancel()


@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=program, close_armed=st.booleans())
# Worth running every time: probes everywhere paused in mid-run, a probe
# stepped through and finished out of, a breakpoint inside a probe deleted
# while the probe's tracepoint is disabled, a compare watch beside probes.
@example(ops=[("trace_entry", 0, None), ("trace_entry", 1, None), ("trace_entry", 5, None),
              ("pause", 3), ("pause", 5), ("cont",)], close_armed=False)
@example(ops=[("trace_entry", 2, None), ("break", 0, None), ("cont",), ("stepi", 6),
              ("finish",), ("cont",)], close_armed=True)
@example(ops=[("trace", 3, None), ("break", 4, None), ("disable", 0), ("delete", 1),
              ("enable", 0), ("cont",)], close_armed=False)
@example(ops=[("watch", "state_a", Mechanism.STEP_COMPARE), ("trace_entry", 1, None),
              ("cont",), ("condition", 1), ("cont",)], close_armed=False)
def test_any_sequence_over_probes_leaves_the_guest_computing_as_undisturbed(
        caps, corpus_dir, ops, close_armed) -> None:
    if not caps.works(Feature.IN_GUEST_PROBE):
        import pytest
        pytest.skip(caps.why_not(Feature.IN_GUEST_PROBE))
    symbols = elf_symbols(GUEST)
    code_start = symbols["_start"].address
    code_length = symbols["corpus_text_end"].address - code_start
    pristine = code_bytes(GUEST, code_start, code_length)
    entries, everywhere = _locations()
    s = kvmbench.open(guest_path(GUEST), ["checksum"], capabilities=caps)
    try:
        s.breakpoints.add("corpus_case_begin", temporary=True)
        assert cont(s).reason is StopReason.BREAKPOINT
        end = s.breakpoints.add("corpus_case_end")
        at_end = False
        numbers: list[int] = []
        for op in ops:
            kind = op[0]
            try:
                if kind in ("trace_entry", "trace", "break"):
                    where = entries if kind == "trace_entry" else everywhere
                    bp = s.breakpoints.add(where[op[1] % len(where)], tracepoint=kind != "break",
                                           mechanism=op[2])
                    numbers.append(bp.number)
                elif kind == "watch":
                    symbol = symbols[op[1]]
                    numbers.append(s.watchpoints.add(symbol.address, min(8, symbol.size),
                                                     mechanism=op[2], tracepoint=True).number)
                elif kind in ("delete", "enable", "disable", "condition") and numbers:
                    number = numbers[op[1] % len(numbers)]
                    requests = s.breakpoints if number in s.breakpoints else s.watchpoints
                    if kind == "condition":
                        if requests is s.breakpoints:
                            s.breakpoints.set_condition(number, "rsp != 0")
                    else:
                        getattr(requests, kind)(number)
                        if kind == "delete":
                            numbers.remove(number)
                elif kind in ("cont", "pause", "stepi", "finish") and not at_end:
                    if kind == "cont":
                        stop = cont(s)
                    elif kind == "pause":
                        stop = _paused_run(s, op[1])
                    elif kind == "stepi":
                        stop = s.stepi(op[1])
                    else:
                        stop = s.finish()
                    assert stop.alive, f"the guest died: {stop.describe()}"
                    assert stop.reason is not StopReason.GUEST_TRAP, stop.describe()
                    assert s.pc not in AREA and stop.pc == s.pc, f"stopped in a trampoline: {stop}"
                    at_end = stop.breakpoint == end.number
            except KvmbenchError as e:
                if kind in ("cont", "pause", "stepi"):
                    raise
                assert one_line(e), repr(str(e))
            assert s.mem.read(code_start, code_length) == pristine, f"a patched byte shows after {op}"

        if close_armed:
            assert close_leaves_code(s, code_start, code_length) == pristine, \
                "close() left a patched byte in the guest's code"
            return
        raw = delete_every_request(s, code_start, code_length)
        assert raw == pristine, "deleting every request left a patched byte in memory"
        stop = cont(s)
        assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
        assert s.console == undisturbed(GUEST, "checksum")
    finally:
        s.close()
