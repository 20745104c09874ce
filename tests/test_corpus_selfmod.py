"""Self-modifying code over software traps: the smc guest rewrites the first
byte of functions that hold a breakpoint, by plain stores (1 and 4 bytes)
and by read-modify-writes (xor, inc, add), then calls them. The guest must
compute exactly what it computes without the breakpoints, each call must
count once, and the session must show, at every stop, the byte the guest
last wrote (its own record, smc_target_byte), never a trap byte.
"""

from __future__ import annotations

import pytest
from corpus import (
    BREAK_MECHANISMS,
    corpus_dir,  # noqa: F401 - fixture
    elf_symbols,
    finish_run,
    open_case,
    require,
    run_case,
    undisturbed,
)

from kvmbench.engine.model import Stop, StopReason

#: function -> the guest's record of its first byte
TARGETS = {"smc_target": "smc_target_byte", "smc_inc_target": "smc_inc_target_byte"}


@pytest.mark.parametrize("tracepoint", [False, True], ids=["stopping", "tracing"])
@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
def test_guest_writes_over_a_trapped_byte_compute_as_without_the_trap(
        open_guest, caps, corpus_dir, mechanism, tracepoint) -> None:
    require(caps, mechanism)
    symbols = elf_symbols("smc")
    s = open_case(open_guest, "smc", "smc")
    bps = {s.breakpoints.add(f, mechanism=mechanism, tracepoint=tracepoint).number: f
           for f in TARGETS}

    def on_stop(stop: Stop) -> None:
        assert stop.reason is StopReason.BREAKPOINT
        function = bps[stop.breakpoint]  # type: ignore[index]
        assert stop.pc == symbols[function].address
        shown = s.mem.read(symbols[function].address, 1)[0]
        assert shown == s.mem.read_u64(symbols[TARGETS[function]].address), (
            f"the session shows {shown:#x} at {function}")

    stops = run_case(s, on_stop)
    hits = {f: s.breakpoints[n].hit_count for n, f in bps.items()}
    counts = finish_run(s)
    assert hits == {"smc_target": counts["count_smc_target"],
                    "smc_inc_target": counts["count_smc_inc_target"]}
    assert len(stops) == (0 if tracepoint else sum(hits.values()))
    assert s.console == undisturbed("smc", "smc")
