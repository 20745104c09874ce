"""In-guest probes on the correctness corpus (-O2 and -Os C, hand-written
assembly): tracepoints counted in the guest count exactly what the guests
count themselves and what the exit mechanism counts, many at once, in hot
loops and at every entry shape, over self-modifying code; the hit log
holds the same callers; and the guest computes what it computes undisturbed.
Where a probe is not safe, the exit mechanism serves with the reason."""

from __future__ import annotations

from collections import Counter

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from corpus import (
    code_bytes,
    corpus_dir,  # noqa: F401 - fixture
    elf_symbols,
    finish_run,
    open_case,
    parse_counts,
    require_native,
    run_case,
    sites,
    undisturbed,
)

from kvmbench.backends.capabilities import Feature
from kvmbench.engine.model import Mechanism

PROBE = Mechanism.IN_GUEST_PROBE
ENTRIES = ["entries-O2", "entries-Os"]
ENTRIES_N = 8
SITE_CASES = [("strings", "strings"), ("bitops", "bitops"), ("atomics", "atomics"),
              ("stack", "stack"), ("pages", "pages"), ("smc", "smc"), ("sse", "sse"),
              ("sse", "fxsave")]
_CS = Cs(CS_ARCH_X86, CS_MODE_64)


@pytest.fixture(autouse=True)
def _needs_probes(skip_unless) -> None:
    skip_unless(Feature.IN_GUEST_PROBE)


def _called(guest: str) -> list[str]:
    counts = parse_counts(undisturbed(guest, "entries", ENTRIES_N))
    return [n[len("calls_"):] for n, v in counts.items() if n.startswith("calls_") and v > 0]


def _entries_run(open_guest, guest: str, mechanism: Mechanism | None):  # type: ignore[no-untyped-def]
    """Trace every function the entries case calls; (hits, callers, bps, truth)."""
    s = open_case(open_guest, guest, "entries", ENTRIES_N)
    bps = {f: s.breakpoints.trace(f, mechanism=mechanism) for f in _called(guest)}
    run_case(s)
    hits = {f: bp.hit_count for f, bp in bps.items()}
    callers = {f: Counter(s.hits.rows(bp.number).caller) for f, bp in bps.items()}
    served = {f: (bp.mechanism, bp.reason) for f, bp in bps.items()}
    truth = finish_run(s)
    assert s.console == undisturbed(guest, "entries", ENTRIES_N)
    return hits, callers, served, truth


@pytest.mark.parametrize("guest", ENTRIES)
def test_probes_at_every_entry_shape_count_as_the_guest_and_the_exit_mechanism(
        open_guest, corpus_dir, guest) -> None:
    hits, callers, served, truth = _entries_run(open_guest, guest, None)
    assert hits == {f: truth[f"calls_{f}"] for f in hits}
    probes = [f for f, (mechanism, _) in served.items() if mechanism is PROBE]
    assert len(probes) >= 10, served
    for f, (mechanism, reason) in served.items():
        assert mechanism is PROBE or "no in-guest probe: " in reason, (f, reason)
    trap_hits, trap_callers, _, _ = _entries_run(open_guest, guest, Mechanism.HLT_TRAP)
    assert hits == trap_hits
    assert callers == trap_callers  # the hit log's return addresses, hit for hit


@pytest.mark.parametrize("guest", ENTRIES)
def test_a_probe_on_the_call_in_a_hot_loop_counts_every_iteration(open_guest, corpus_dir,
                                                                 guest) -> None:
    loop = elf_symbols(guest)["hot_loop"]
    insns = _CS.disasm(code_bytes(guest, loop.address, loop.size), loop.address)
    call = next(i for i in insns if i.mnemonic == "call")  # displaced: push, jmp
    s = open_case(open_guest, guest, "entries", ENTRIES_N)
    bp = s.breakpoints.trace(call.address, mechanism=PROBE)
    leaf = s.breakpoints.trace("hot_leaf")  # the callee, probed too
    run_case(s)
    counts = finish_run(s)
    assert bp.hit_count == counts["hot_iterations"] == 4 * ENTRIES_N
    assert leaf.hit_count == counts["calls_hot_leaf"]
    # The callee saw the original return address, not the trampoline's.
    assert set(s.hits.rows(leaf.number).caller) >= {call.address + call.size}


@pytest.mark.parametrize(("guest", "case"), SITE_CASES)
def test_probes_on_every_assembly_site_count_executions(open_guest, corpus_dir, guest,
                                                        case) -> None:
    """rep strings, bit tests, atomics, stack operations, SSE moves and
    fxsave displaced into trampolines, sites across page boundaries and on
    code the guest rewrites; where a probe cannot go, the exit mechanism."""
    require_native(guest, case)
    reference = parse_counts(undisturbed(guest, case))
    names = [site for site in sites(guest) if reference[f"count_{site}"] > 0]
    s = open_case(open_guest, guest, case)
    bps = {site: s.breakpoints.trace(f"site_{site}") for site in names}
    run_case(s)
    probes = sum(bp.mechanism is PROBE for bp in bps.values())
    hits = {site: bp.hit_count for site, bp in bps.items()}
    counts = finish_run(s)
    assert hits == {site: counts[f"count_{site}"] for site in names}
    assert s.console == undisturbed(guest, case)
    assert probes >= len(names) // 2, f"{probes} of {len(names)} sites probed"


def test_probes_over_self_modifying_code(open_guest, corpus_dir) -> None:
    """The smc guest rewrites the first byte of two functions (plain stores
    and read-modify-writes) and calls them: each write becomes the new
    original under the probe, which is rebuilt over it."""
    targets = {"smc_target": "smc_target_byte", "smc_inc_target": "smc_inc_target_byte"}
    symbols = elf_symbols("smc")
    s = open_case(open_guest, "smc", "smc")
    bps = {f: s.breakpoints.trace(f, mechanism=PROBE) for f in targets}
    run_case(s)
    for f, record in targets.items():
        assert s.mem.read(symbols[f].address, 1)[0] == s.mem.read_u64(symbols[record].address)
    assert all(bp.mechanism is PROBE and "the code under the probe changed" in bp.reason
               for bp in bps.values()), [b.reason for b in bps.values()]
    hits = {f: bp.hit_count for f, bp in bps.items()}
    counts = finish_run(s)
    assert hits == {"smc_target": counts["count_smc_target"],
                    "smc_inc_target": counts["count_smc_inc_target"]}
    assert s.console == undisturbed("smc", "smc")
