"""The corpus itself: it builds, its guests are shaped as promised (optimized,
frameless, entries of every shape, sites on page boundaries, watched bytes on
pages of their own), its labels resolve as breakpoint locations, and its
undisturbed runs are deterministic with a consistent ground truth.

Checked with the reference tools: pyelftools for sections and symbols,
capstone for the instructions gcc emitted.
"""

from __future__ import annotations

import time

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from corpus import (
    ASM_GUESTS,
    C_GUESTS,
    GUESTS,
    PAGE,
    build_corpus,
    corpus_dir,
    build_stamp,
    code_bytes,
    elf_symbols,
    guest_path,
    parse_counts,
    require_native,
    undisturbed_run,
    undisturbed,
    watched_objects,
)
from elftools.elf.elffile import ELFFile

_CS = Cs(CS_ARCH_X86, CS_MODE_64)

#: Every case of every guest, as the sources' headers list them.
CASES = {
    "strings": ("strings",), "bitops": ("bitops",), "atomics": ("atomics",),
    "stack": ("stack",), "pages": ("pages",), "smc": ("smc",),
    "sse": ("sse", "fxsave", "xsave"), "halt": ("halt",),
    **{g: ("entries", "frameless") for g in C_GUESTS if g.startswith("entries")},
    **{g: ("checksum",) for g in C_GUESTS if g.startswith("checksum")},
}
#: Counters that must stay 0 in a correct run (the guest checked itself).
SELF_CHECKS = ("count_mismatches", "count_failures", "count_wrong", "halt_spurious")

#: Functions of the entries guest and the shapes gcc gives their first
#: instruction; at least one function of each level must show each shape.
ENTRY_FUNCTIONS = (
    "leaf_lea", "leaf_test", "leaf_xor", "leaf_count", "store_if", "load_first",
    "hot_leaf", "local_array", "keeps_rbx", "keeps_many", "tail_target", "tail_only",
    "tail_after_add", "loop_first", "hot_loop", "decoy_target", "frameless_walk",
)
FRAMELESS = ("leaf_lea", "leaf_test", "leaf_xor", "leaf_count", "store_if", "load_first",
             "hot_leaf",
             "tail_target", "tail_only", "tail_after_add", "decoy_target", "frameless_walk")
SHAPES = ("sub rsp", "mov", "test", "xor", "push callee-saved", "lea", "jmp")


def _disassemble(guest: str, function: str) -> list:  # type: ignore[type-arg]
    symbol = elf_symbols(guest)[function]
    return list(_CS.disasm(code_bytes(guest, symbol.address, symbol.size), symbol.address))


def _shape(insn) -> str:  # type: ignore[no-untyped-def]
    if insn.mnemonic == "sub" and insn.op_str.startswith("rsp"):
        return "sub rsp"
    if insn.mnemonic == "push" and insn.op_str in ("rbx", "r12", "r13", "r14", "r15"):
        return "push callee-saved"
    return insn.mnemonic


def test_every_guest_is_built_with_dwarf_and_debug_frame(corpus_dir) -> None:
    for name in GUESTS:
        with guest_path(name).open("rb") as f:
            elf = ELFFile(f)
            assert elf.get_machine_arch() == "x64"
            sections = {s.name for s in elf.iter_sections()}
        assert {".debug_info", ".debug_line", ".debug_frame"} <= sections, name
        assert ".eh_frame" not in sections, name


def test_a_current_build_is_not_rebuilt(corpus_dir) -> None:
    stamp = (corpus_dir / ".stamp").read_text()
    assert stamp == build_stamp()
    before = {g: guest_path(g).stat().st_mtime_ns for g in GUESTS}
    build_corpus.cache_clear()
    started = time.monotonic()
    build_corpus()
    assert time.monotonic() - started < 2.0
    assert {g: guest_path(g).stat().st_mtime_ns for g in GUESTS} == before


@pytest.mark.parametrize("level", ["O2", "Os"])
def test_entry_shapes_cover_every_shape_at_each_level(corpus_dir, level) -> None:
    guest = f"entries-{level}"
    shapes = {f: _shape(_disassemble(guest, f)[0]) for f in ENTRY_FUNCTIONS}
    assert set(SHAPES) <= set(shapes.values()), shapes
    assert not any(i.mnemonic == "endbr64" for f in ENTRY_FUNCTIONS for i in _disassemble(guest, f))


@pytest.mark.parametrize("guest", [g for g in C_GUESTS if g.startswith("entries")])
def test_frameless_functions_have_no_frame_and_tail_calls_jump(corpus_dir, guest) -> None:
    for function in FRAMELESS:
        insns = _disassemble(guest, function)
        touching_rsp = [i for i in insns if i.mnemonic in ("push", "pop", "call", "enter", "leave")
                        or i.op_str.startswith("rsp")]
        assert not touching_rsp, (function, [f"{i.mnemonic} {i.op_str}" for i in touching_rsp])
    target = elf_symbols(guest)["tail_target"].address
    for function in ("tail_only", "tail_after_add"):
        last = _disassemble(guest, function)[-1]
        jumps = [i for i in _disassemble(guest, function) if i.mnemonic == "jmp"]
        assert jumps and int(jumps[-1].op_str, 16) == target, function
        assert not any(i.mnemonic in ("call", "ret") for i in _disassemble(guest, function)), last


def test_hot_loop_keeps_data_in_rbp(corpus_dir) -> None:
    """hot_leaf runs with rbp holding a loop variable, not a frame pointer."""
    for guest in ("entries-O2", "entries-Os"):
        insns = _disassemble(guest, "hot_loop")
        assert any(i.mnemonic == "xor" and i.op_str == "ebp, ebp" for i in insns), guest
        assert any(i.mnemonic == "add" and i.op_str == "rbp, rax" for i in insns), guest


def test_pages_guest_puts_its_sites_on_page_boundaries(corpus_dir) -> None:
    s = {n: v.address for n, v in elf_symbols("pages").items()}
    assert s["site_last_byte"] % PAGE == PAGE - 1
    assert s["site_first_byte"] % PAGE == 0
    straddle = next(_CS.disasm(code_bytes("pages", s["site_straddle"], 15), s["site_straddle"]))
    assert s["site_straddle"] // PAGE != (s["site_straddle"] + straddle.size - 1) // PAGE
    assert s["code_data_word"] // PAGE == s["site_store_same_page"] // PAGE
    assert s["trap_page_word"] // PAGE == s["site_trap_page_fn"] // PAGE
    assert s["site_after_store_same_page"] // PAGE == s["site_store_same_page"] // PAGE


@pytest.mark.parametrize("name", ["src_cross", "dst_cross", "atom_cross", "sse_cross"])
def test_cross_objects_straddle_a_page_boundary(corpus_dir, name) -> None:
    guest = next(g for g in ASM_GUESTS if name in elf_symbols(g))
    symbol = elf_symbols(guest)[name]
    assert symbol.address // PAGE != (symbol.address + symbol.size - 1) // PAGE


@pytest.mark.parametrize("guest", ASM_GUESTS)
def test_watched_objects_share_no_page_with_counters_or_code(corpus_dir, guest) -> None:
    symbols = elf_symbols(guest)
    counter_pages = {symbols[n].address // PAGE for n in symbols
                     if n.startswith(("count_", "stores_", "changes_", "reads_", "accesses_"))
                     or n == "corpus_in_case"}
    code_pages = {symbols["corpus_case_begin"].address // PAGE, symbols["main"].address // PAGE}
    for name in watched_objects(guest):
        symbol = symbols[name]
        pages = set(range(symbol.address // PAGE, (symbol.address + symbol.size - 1) // PAGE + 1))
        assert symbol.size in (8, 16), name
        assert not pages & counter_pages, name
        assert not pages & code_pages, name


@pytest.mark.parametrize("guest", GUESTS)
def test_site_labels_resolve_as_breakpoint_locations(open_guest, corpus_dir, guest) -> None:
    s = open_guest(str(guest_path(guest)))
    names = [n for n in elf_symbols(guest) if n.startswith("site_")] + ["corpus_case_begin"]
    for name in names:
        bp = s.breakpoints.add(name)
        assert bp.address == elf_symbols(guest)[name].address, name
        s.breakpoints.delete(bp.number)
    assert len(names) > 1 or guest.startswith(("entries", "checksum"))


@pytest.mark.parametrize(("guest", "case"), [(g, c) for g in GUESTS for c in CASES[g]])
def test_undisturbed_runs_are_deterministic_and_self_consistent(corpus_dir, guest, case) -> None:
    require_native(guest, case)
    console = undisturbed(guest, case)
    counts = parse_counts(console)
    assert "checksum" in counts
    for name in SELF_CHECKS:
        assert counts.get(name, 0) == 0, (name, console)
    for obj in watched_objects(guest):
        assert counts[f"changes_{obj}"] <= counts[f"stores_{obj}"], obj
        assert counts[f"accesses_{obj}"] <= counts[f"stores_{obj}"] + counts[f"reads_{obj}"], obj
    again_stop, again = undisturbed_run.__wrapped__(guest, case)
    assert again == console
