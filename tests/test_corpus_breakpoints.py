"""Breakpoints and tracepoints on the corpus, by every mechanism the host
offers: a breakpoint counts once per execution of its instruction, whatever
the instruction is (a rep-prefixed one is one execution however many
iterations) and whatever precedes it (a store the VMM completed as MMIO
included); and the guest computes exactly what it computes undisturbed.

Every count is compared with the guest's own (its count_<site> and
calls_<function> lines).
"""

from __future__ import annotations

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from corpus import (
    BREAK_MECHANISMS,
    WRITE_MECHANISMS,
    chunks,
    code_bytes,
    corpus_dir,  # noqa: F401 - fixture
    elf_symbols,
    finish_run,
    open_case,
    require,
    require_native,
    run_case,
    sites,
    software_trap,
    undisturbed,
)

from kvmbench.engine.model import StopReason

_CS = Cs(CS_ARCH_X86, CS_MODE_64)
ENTRIES = ["entries-O2", "entries-Os"]
#: (guest, case) of every assembly case whose sites the tests trace.
SITE_CASES = [("strings", "strings"), ("bitops", "bitops"), ("atomics", "atomics"),
              ("stack", "stack"), ("pages", "pages"), ("smc", "smc"), ("sse", "sse"),
              ("sse", "fxsave"), ("sse", "xsave")]
ENTRIES_N = 8


def _functions_called_in_entries(guest: str) -> list[str]:
    """Functions whose calls the entries case counts (calls_<fn> > 0)."""
    counts = _counts(undisturbed(guest, "entries", ENTRIES_N))
    return [name[len("calls_"):] for name, value in counts.items()
            if name.startswith("calls_") and value > 0]


def _counts(console: str) -> dict[str, int]:
    from corpus import parse_counts
    return parse_counts(console)


@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
@pytest.mark.parametrize("guest", ENTRIES)
def test_tracepoints_count_every_call_whatever_the_entry_shape(open_guest, caps, corpus_dir,
                                                              guest, mechanism) -> None:
    require(caps, mechanism)
    functions = _functions_called_in_entries(guest)
    assert len(functions) >= 14
    for group in chunks(functions, mechanism):
        s = open_case(open_guest, guest, "entries", ENTRIES_N)
        bps = {f: s.breakpoints.trace(f, mechanism=mechanism) for f in group}
        assert all(bp.mechanism is mechanism for bp in bps.values())
        run_case(s)
        hits = {f: bp.hit_count for f, bp in bps.items()}
        counts = finish_run(s)
        assert hits == {f: counts[f"calls_{f}"] for f in group}
        assert s.console == undisturbed(guest, "entries", ENTRIES_N)


@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
@pytest.mark.parametrize("guest", ENTRIES)
def test_a_tracepoint_in_a_hot_loop_counts_every_iteration(open_guest, caps, corpus_dir,
                                                          guest, mechanism) -> None:
    require(caps, mechanism)
    loop = elf_symbols(guest)["hot_loop"]
    insns = _CS.disasm(code_bytes(guest, loop.address, loop.size), loop.address)
    call = next(i for i in insns if i.mnemonic == "call")  # the loop body's one call
    s = open_case(open_guest, guest, "entries", ENTRIES_N)
    bp = s.breakpoints.trace(call.address, mechanism=mechanism)
    run_case(s)
    assert bp.hit_count == finish_run(s)["hot_iterations"] == 4 * ENTRIES_N


@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
@pytest.mark.parametrize("guest", ENTRIES)
def test_a_breakpoint_stops_once_per_execution(open_guest, caps, corpus_dir, guest,
                                               mechanism) -> None:
    require(caps, mechanism)
    s = open_case(open_guest, guest, "entries", ENTRIES_N)
    bp = s.breakpoints.add("hot_leaf", mechanism=mechanism)
    stops = run_case(s)
    assert all(st.reason is StopReason.BREAKPOINT and st.breakpoint == bp.number
               and st.pc == bp.address for st in stops)
    assert len(stops) == bp.hit_count == finish_run(s)["calls_hot_leaf"]


@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
@pytest.mark.parametrize(("guest", "case"), SITE_CASES)
def test_site_tracepoints_count_executions_not_iterations(open_guest, caps, corpus_dir, guest,
                                                         case, mechanism) -> None:
    """Every instruction-level site of the assembly guests: rep string
    instructions with rcx 0, 1 and many, bt family, atomics, stack
    operations, SSE moves, fxsave, page-boundary code, self-modifying code."""
    require(caps, mechanism)
    require_native(guest, case)
    reference = _counts(undisturbed(guest, case))
    names = [site for site in sites(guest) if reference[f"count_{site}"] > 0]
    assert names
    for group in chunks(names, mechanism):
        s = open_case(open_guest, guest, case)
        bps = {site: s.breakpoints.trace(f"site_{site}", mechanism=mechanism) for site in group}
        run_case(s)
        hits = {site: bp.hit_count for site, bp in bps.items()}
        counts = finish_run(s)
        assert hits == {site: counts[f"count_{site}"] for site in group}
        assert s.console == undisturbed(guest, case)


@pytest.mark.parametrize("watch", WRITE_MECHANISMS)
@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
def test_a_breakpoint_right_after_a_store_to_a_watched_page_counts_once(
        open_guest, caps, corpus_dir, mechanism, watch) -> None:
    require(caps, mechanism)
    require(caps, watch)
    s = open_case(open_guest, "pages", "pages")
    wp = s.watchpoints.add("pages_watched", mechanism=watch, tracepoint=True)
    bp = s.breakpoints.trace("site_after_store_watched", mechanism=mechanism)
    run_case(s)
    counts = finish_run(s)
    assert bp.hit_count == counts["count_after_store_watched"]
    assert wp.hit_count == counts["stores_pages_watched"]
    assert s.console == undisturbed("pages", "pages")


@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
def test_a_breakpoint_right_after_a_store_to_a_page_holding_a_software_trap_counts_once(
        open_guest, caps, corpus_dir, mechanism) -> None:
    """The store goes to a page a software trap protects (its own code page,
    and another code page); the breakpoint on the next instruction must
    count each execution, the trap's own too."""
    require(caps, mechanism)
    sw = software_trap(caps)
    require(caps, sw)
    s = open_case(open_guest, "pages", "pages")
    after = [s.breakpoints.trace(f"site_after_store_{p}", mechanism=mechanism)
             for p in ("same_page", "trap_page")]
    # Software traps on both pages stored to, whatever serves the two above.
    traps = [s.breakpoints.trace(loc, mechanism=sw)
             for loc in ("site_trap_page_fn", "site_store_same_page")]
    run_case(s)
    counts = finish_run(s)
    assert [bp.hit_count for bp in after] == [counts["count_after_store_same_page"],
                                             counts["count_after_store_trap_page"]]
    assert [bp.hit_count for bp in traps] == [counts["count_trap_page_fn"],
                                             counts["count_store_same_page"]]
    assert s.console == undisturbed("pages", "pages")


@pytest.mark.parametrize("watch", WRITE_MECHANISMS)
@pytest.mark.parametrize("mechanism", BREAK_MECHANISMS)
def test_a_breakpoint_on_rep_movsb_and_a_watch_on_what_it_writes(open_guest, caps, corpus_dir,
                                                                mechanism, watch) -> None:
    require(caps, mechanism)
    require(caps, watch)
    s = open_case(open_guest, "strings", "strings")
    bp = s.breakpoints.trace("site_movsb_many", mechanism=mechanism)
    wp = s.watchpoints.add("dst_cross", mechanism=watch, tracepoint=True)
    run_case(s)
    counts = finish_run(s)
    assert bp.hit_count == counts["count_movsb_many"]
    assert wp.hit_count == counts["stores_dst_cross"]
    assert s.console == undisturbed("strings", "strings")
