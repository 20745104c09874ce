"""Property (issue 9, "Must show"): whatever sequence of breakpoint,
tracepoint and watchpoint inserts, removes, enables, disables, hits, steps
and finishes a user makes on an -O2 guest, once every request is deleted the
guest runs to its end printing byte for byte what an undisturbed run prints
(its counters, and checksums of its own code and data), and the session
never shows a trap byte in the guest's code. Closing the session with
requests armed puts every original byte back.
"""

from __future__ import annotations

import functools

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
from kvmbench.engine.model import Mechanism, StopReason
from kvmbench.errors import KvmbenchError

GUEST = "checksum-O2"
FUNCTIONS = ("mix", "step_a", "step_b", "copy_bytes", "sum_bytes", "spin", "tail")
DATA = ("state_a", "state_b", "state_b_neighbour", "buf_in", "buf_out", "result")
BREAK_MECHANISMS = (None, Mechanism.HLT_TRAP, Mechanism.INT3, Mechanism.HW_EXECUTE)
WATCH_MECHANISMS = (None, Mechanism.PAGE_TRAP, Mechanism.HW_DATA, Mechanism.STEP_COMPARE)


@functools.cache
def _code_locations() -> tuple[int, ...]:
    """Every instruction of the guest's functions (entries and bodies)."""
    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    addresses = []
    for name in FUNCTIONS:
        symbol = elf_symbols(GUEST)[name]
        addresses += [i.address for i in cs.disasm(code_bytes(GUEST, symbol.address, symbol.size),
                                                   symbol.address)]
    return tuple(addresses)


def _code_range() -> tuple[int, int]:
    symbols = elf_symbols(GUEST)
    start = symbols["_start"].address
    return start, symbols["corpus_text_end"].address - start


location = st.integers(0, 10_000)
program = st.lists(st.one_of(
    st.tuples(st.sampled_from(["break", "trace"]), location, st.sampled_from(BREAK_MECHANISMS)),
    st.tuples(st.just("watch"), st.sampled_from(DATA), st.sampled_from([1, 2, 4, 8]),
              st.sampled_from(["write", "read", "access"]), st.sampled_from(WATCH_MECHANISMS),
              st.sampled_from(["change", "store"]), st.booleans()),
    st.tuples(st.sampled_from(["delete", "enable", "disable"]), location),
    st.tuples(st.just("cont")),
    st.tuples(st.just("stepi"), st.integers(1, 4)),
    st.tuples(st.just("finish")),
), max_size=14)


def _refusal(e: KvmbenchError) -> None:
    """A refused request or command is fine if it says why in one line."""
    assert one_line(e), repr(str(e))


# Shrinking is left out: a failing example under single-step compare may
# take the watchdog's seconds, and hundreds of them would take minutes; the
# failing sequence is printed as found (at most 14 operations).
@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=program, close_armed=st.booleans())
# Sequences worth running every time: a compare watch across a case end,
# finish from the middle of a frameless leaf, a page trap with a tracepoint
# on its writer, a hardware slot stepped over, a read watch, a close.
@example(ops=[("watch", "state_a", 8, "write", Mechanism.STEP_COMPARE, "change", False),
              ("cont",), ("cont",)], close_armed=False)
@example(ops=[("break", 2, None), ("cont",), ("finish",), ("cont",)], close_armed=False)
@example(ops=[("watch", "state_b", 8, "write", Mechanism.PAGE_TRAP, "store", False),
              ("trace", 0, None), ("cont",), ("stepi", 3), ("cont",)], close_armed=False)
@example(ops=[("break", 1, Mechanism.HW_EXECUTE), ("cont",), ("stepi", 2), ("disable", 0),
              ("cont",)], close_armed=False)
@example(ops=[("watch", "buf_out", 8, "read", None, "change", True), ("cont",)],
         close_armed=False)
@example(ops=[("break", 3522, None), ("cont",), ("watch", "buf_in", 1, "write",
                                                   Mechanism.STEP_COMPARE, "change", True),
              ("stepi", 1)], close_armed=False)  # a step from a trap under a compare watch
@example(ops=[("break", 5, None), ("cont",), ("watch", "state_a", 4, "write", None, "change",
                                                False)], close_armed=True)
def test_any_request_sequence_leaves_the_guest_computing_as_undisturbed(
        caps, corpus_dir, ops, close_armed) -> None:
    code_start, code_length = _code_range()
    pristine = code_bytes(GUEST, code_start, code_length)
    locations = _code_locations()
    s = kvmbench.open(guest_path(GUEST), ["checksum"], capabilities=caps)
    try:
        s.breakpoints.add("corpus_case_begin", temporary=True)
        assert cont(s).reason is StopReason.BREAKPOINT
        # Every run stops here at the latest: the report runs undisturbed.
        end = s.breakpoints.add("corpus_case_end")
        at_end = False
        numbers: list[int] = []
        for op in ops:
            kind = op[0]
            try:
                if kind in ("break", "trace"):
                    address = locations[op[1] % len(locations)]
                    bp = s.breakpoints.add(address, tracepoint=kind == "trace", mechanism=op[2])
                    numbers.append(bp.number)
                elif kind == "watch":
                    _, name, length, access, mechanism, stop_on, tracepoint = op
                    symbol = elf_symbols(GUEST)[name]
                    wp = s.watchpoints.add(symbol.address, min(length, symbol.size),
                                           access=access, mechanism=mechanism,
                                           stop_on=stop_on, tracepoint=tracepoint)
                    numbers.append(wp.number)
                elif kind in ("delete", "enable", "disable") and numbers:
                    number = numbers[op[1] % len(numbers)]
                    requests = s.breakpoints if number in s.breakpoints else s.watchpoints
                    getattr(requests, kind)(number)
                    if kind == "delete":
                        numbers.remove(number)
                elif kind in ("cont", "stepi", "finish") and not at_end:
                    if kind == "cont":
                        stop = cont(s)
                    elif kind == "stepi":
                        stop = s.stepi(op[1])
                    else:
                        stop = s.finish()
                    assert stop.alive, f"the guest died: {stop.describe()}"
                    assert stop.reason is not StopReason.GUEST_TRAP, stop.describe()
                    at_end = stop.breakpoint == end.number
            except KvmbenchError as e:
                if kind in ("cont", "stepi"):
                    raise
                _refusal(e)
            assert s.mem.read(code_start, code_length) == pristine, f"a trap byte shows after {op}"

        if close_armed:
            assert close_leaves_code(s, code_start, code_length) == pristine, \
                "close() left a trap byte in the guest's code"
            return
        raw = delete_every_request(s, code_start, code_length)
        assert s.mem.read(code_start, code_length) == pristine
        assert raw == pristine, "deleting every request left a trap byte in memory"
        stop = cont(s)
        assert stop.reason is StopReason.EXITED and stop.exit_code == 0, stop.describe()
        assert s.console == undisturbed(GUEST, "checksum")
    finally:
        s.close()


def test_the_property_can_use_every_mechanism_of_this_host(caps) -> None:
    """The strategies cover what the host offers (a skip-free sanity check)."""
    assert caps.works(Feature.HLT_TRAP) or caps.works(Feature.INT3)
    assert Mechanism.STEP_COMPARE in WATCH_MECHANISMS and Mechanism.HW_EXECUTE in BREAK_MECHANISMS
