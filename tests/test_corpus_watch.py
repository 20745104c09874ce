"""Watchpoints on the corpus, by every mechanism the host offers.

The rules (issue 9): a write watch counts once per storing instruction
(every store, one that writes the value already there included), however
many pieces or pages the store spans; by default it stops only when the
value changed, with ``stop_on="store"`` at every store; the stop's writer
is the storing instruction and old/new are the whole value before and after
it. Read and access watches count every instruction that reads (or
accesses) the range, implicit operands included, or adding them refuses
with a BreakpointError that says why. The guest never crashes because of a
watch (fxsave, xsave, an emulator limit: executed another way).

Every count is compared with the guest's own stores_/changes_/reads_/
accesses_<object> lines; every run's output with an undisturbed run's.
"""

from __future__ import annotations

import pytest
from corpus import (
    READ_MECHANISMS,
    WRITE_MECHANISMS,
    corpus_dir,  # noqa: F401 - fixture
    elf_symbols,
    finish_run,
    one_line,
    open_case,
    require,
    require_native,
    run_case,
    undisturbed,
)

from kvmbench.engine.model import Access, Mechanism, Stop, StopReason
from kvmbench.errors import BreakpointError

#: Every watched object of the assembly guests: (guest, case, object).
OBJECTS = [
    ("strings", "strings", "src_lo"), ("strings", "strings", "src_cross"),
    ("strings", "strings", "dst_lo"), ("strings", "strings", "dst_cross"),
    ("bitops", "bitops", "bits"), ("bitops", "bitops", "bits_far"),
    ("atomics", "atomics", "atom"), ("atomics", "atomics", "atom_cross"),
    ("stack", "stack", "stack_slot"), ("stack", "stack", "stack_slot2"),
    ("pages", "pages", "code_data_word"), ("pages", "pages", "trap_page_word"),
    ("pages", "pages", "pages_watched"),
    ("sse", "sse", "sse_buf"), ("sse", "sse", "sse_cross"),
    ("sse", "fxsave", "fx_xmm0"), ("sse", "xsave", "xs_xmm0"),
]
OBJECT_IDS = [f"{guest}-{obj}" for guest, _, obj in OBJECTS]
#: Objects whose stores include ones of the value already there.
SAME_VALUE_STORES = [o for o in OBJECTS if o[2] in ("dst_cross", "atom", "stack_slot", "bits",
                                                     "sse_buf", "atom_cross")]


def _value(s, address: int, length: int) -> int:  # type: ignore[no-untyped-def]
    return int.from_bytes(s.mem.read(address, length), "little")


def _site_addresses(guest: str) -> dict[int, str]:
    return {sym.address: name for name, sym in elf_symbols(guest).items()
            if name.startswith("site_")}


def _add_watch(s, obj: str, access: Access, mechanism: Mechanism, **options):  # type: ignore[no-untyped-def]
    """Add the watch; a refusal must be a BreakpointError of one line (the
    rule allows refusing what the engine cannot see exactly), which ends
    the test as passed."""
    try:
        wp = s.watchpoints.add(obj, access=access, mechanism=mechanism, **options)
    except BreakpointError as e:
        assert one_line(e), str(e)
        pytest.skip(f"refused, as the rule allows: {e}")
    assert wp.mechanism is mechanism
    return wp


@pytest.mark.parametrize("mechanism", WRITE_MECHANISMS)
@pytest.mark.parametrize(("guest", "case", "obj"), OBJECTS, ids=OBJECT_IDS)
def test_write_watch_counts_every_store_and_stops_when_the_value_changed(
        open_guest, caps, corpus_dir, guest, case, obj, mechanism) -> None:
    require(caps, mechanism)
    require_native(guest, case)
    s = open_case(open_guest, guest, case)
    wp = s.watchpoints.add(obj, mechanism=mechanism)
    assert wp.mechanism is mechanism
    size = elf_symbols(guest)[obj].size
    site_at = _site_addresses(guest)
    value = _value(s, wp.address, size)

    def on_stop(stop: Stop) -> None:
        nonlocal value
        assert stop.reason is StopReason.WATCHPOINT and stop.watchpoint == wp.number
        assert stop.writer in site_at, f"writer {s.symbols.format_address(stop.writer or 0)}"
        assert stop.old_value == value != stop.new_value
        assert stop.new_value == _value(s, wp.address, size)
        value = stop.new_value

    stops = run_case(s, on_stop)
    hits = wp.hit_count
    counts = finish_run(s)
    assert (hits, len(stops)) == (counts[f"stores_{obj}"], counts[f"changes_{obj}"])
    assert s.console == undisturbed(guest, case)


@pytest.mark.parametrize("mechanism", WRITE_MECHANISMS)
@pytest.mark.parametrize(("guest", "case", "obj"), SAME_VALUE_STORES,
                         ids=[f"{g}-{o}" for g, _, o in SAME_VALUE_STORES])
def test_write_watch_with_stop_on_store_stops_at_every_store(
        open_guest, caps, corpus_dir, guest, case, obj, mechanism) -> None:
    require(caps, mechanism)
    s = open_case(open_guest, guest, case)
    wp = s.watchpoints.add(obj, mechanism=mechanism, stop_on="store")
    size = elf_symbols(guest)[obj].size
    site_at = _site_addresses(guest)
    value = _value(s, wp.address, size)

    def on_stop(stop: Stop) -> None:
        nonlocal value
        assert stop.writer in site_at, f"writer {s.symbols.format_address(stop.writer or 0)}"
        assert stop.old_value == value
        assert stop.new_value == _value(s, wp.address, size)
        value = stop.new_value

    stops = run_case(s, on_stop)
    hits = wp.hit_count
    counts = finish_run(s)
    assert hits == len(stops) == counts[f"stores_{obj}"]
    assert counts[f"stores_{obj}"] > counts[f"changes_{obj}"]
    assert s.console == undisturbed(guest, case)


@pytest.mark.parametrize("mechanism", READ_MECHANISMS)
@pytest.mark.parametrize(("guest", "case", "obj"), OBJECTS, ids=OBJECT_IDS)
def test_read_and_access_watches_count_every_instruction_that_touches_the_range(
        open_guest, caps, corpus_dir, guest, case, obj, mechanism) -> None:
    """Implicit operands included: string instructions, the bt family, push,
    pop, call, ret, pushf, popf, enter, leave, cmps, fxrstor. A read watch
    and an access watch on the same bytes, counting without stopping; each
    hit names a site of the guest as the accessing instruction."""
    require(caps, mechanism, Access.READ)
    require(caps, mechanism, Access.ACCESS)
    require_native(guest, case)
    s = open_case(open_guest, guest, case)
    read = _add_watch(s, obj, Access.READ, mechanism, tracepoint=True)
    access = _add_watch(s, obj, Access.ACCESS, mechanism, tracepoint=True)
    run_case(s)
    site_at = _site_addresses(guest)
    for wp in (read, access):
        strays = [s.symbols.format_address(pc) for pc in s.hits.rows(wp.number).pc
                  if pc not in site_at]
        assert not strays, f"{wp.access.value} hits not at a site: {strays}"
    hits = (read.hit_count, access.hit_count)
    counts = finish_run(s)
    assert hits == (counts[f"reads_{obj}"], counts[f"accesses_{obj}"])
    assert s.console == undisturbed(guest, case)


@pytest.mark.parametrize("mechanism", READ_MECHANISMS)
def test_a_read_watch_stops_at_every_read_naming_the_reader(open_guest, caps, corpus_dir,
                                                           mechanism) -> None:
    """On stack_slot: pop, popf, leave, pop to memory, an explicit load."""
    require(caps, mechanism, Access.READ)
    s = open_case(open_guest, "stack", "stack")
    wp = _add_watch(s, "stack_slot", Access.READ, mechanism)
    site_at = _site_addresses("stack")

    def on_stop(stop: Stop) -> None:
        assert stop.reason is StopReason.WATCHPOINT and stop.watchpoint == wp.number
        assert stop.writer in site_at, f"reader {s.symbols.format_address(stop.writer or 0)}"
        assert stop.new_value == stop.old_value == _value(s, wp.address, 8)

    stops = run_case(s, on_stop)
    hits = wp.hit_count
    counts = finish_run(s)
    assert hits == len(stops) == counts["reads_stack_slot"]
    assert s.console == undisturbed("stack", "stack")


@pytest.mark.parametrize("mechanism", WRITE_MECHANISMS)
def test_watches_sharing_a_page_each_count_their_own_stores(open_guest, caps, corpus_dir,
                                                            mechanism) -> None:
    """dst_lo and dst_cross share a page; rep movsb, movsq and stosq stores
    span both and the page boundary."""
    require(caps, mechanism)
    s = open_case(open_guest, "strings", "strings")
    wps = {obj: s.watchpoints.add(obj, mechanism=mechanism, tracepoint=True)
           for obj in ("dst_lo", "dst_cross")}
    run_case(s)
    hits = {obj: wp.hit_count for obj, wp in wps.items()}
    counts = finish_run(s)
    assert hits == {obj: counts[f"stores_{obj}"] for obj in wps}
    assert s.console == undisturbed("strings", "strings")
