"""System.map and /proc/kallsyms parsing, KASLR slide and relocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmbench.errors import SymbolError
from kvmbench.symbols import ABSOLUTE_SECTION, SymbolKind, kaslr_slide, load_symbols, parse_kallsyms
from kvmbench.symbols.kallsyms import looks_like_kallsyms

SYSTEM_MAP = """\
0000000000000000 A fixed_percpu_data
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81001000 T do_one_initcall
ffffffff81001200 t run_init_process
ffffffff81001400 W arch_cpu_idle
ffffffff82000000 D jiffies
ffffffff82000040 d static_flag
ffffffff82200000 B __bss_start
ffffffff82200100 b idle_count
ffffffff82400000 R __start_rodata
"""

# The same kernel booted with a KASLR slide of 0x1e00000, as
# /proc/kallsyms prints it (with a module symbol at the end).
SLIDE = 0x1E00000
PROC_KALLSYMS = """\
ffffffff82e00000 T _text
ffffffff82e01000 T do_one_initcall
ffffffffc0a01000 t ext4_fill_super\t[ext4]
"""


@pytest.fixture
def table():
    return parse_kallsyms(SYSTEM_MAP, name="System.map")


def test_system_map_symbols_have_addresses_and_no_size(table) -> None:
    symbol = table.get_by_name("do_one_initcall")
    assert (symbol.address, symbol.size) == (0xFFFFFFFF81001000, 0)


@pytest.mark.parametrize(("name", "kind", "section"), [
    ("do_one_initcall", SymbolKind.FUNCTION, ".text"),
    ("run_init_process", SymbolKind.FUNCTION, ".text"),
    ("arch_cpu_idle", SymbolKind.FUNCTION, None),
    ("jiffies", SymbolKind.OBJECT, ".data"),
    ("idle_count", SymbolKind.OBJECT, ".bss"),
    ("__start_rodata", SymbolKind.OBJECT, ".rodata"),
    ("fixed_percpu_data", SymbolKind.OTHER, ABSOLUTE_SECTION),
])
def test_type_letters_map_to_kinds_and_sections(table, name: str, kind: SymbolKind, section: str | None) -> None:
    symbol = table.get_by_name(name)
    assert (symbol.kind, symbol.section) == (kind, section)


def test_size_zero_symbols_reach_up_to_the_next_one(table) -> None:
    assert table.format_address(0xFFFFFFFF81001010) == "do_one_initcall+16"
    assert table.format_address(0xFFFFFFFF82000044) == "static_flag+4"


def test_aliases_at_one_address_format_as_the_first_listed(table) -> None:
    assert table.format_address(0xFFFFFFFF81000000) == "_text"


def test_module_symbols_of_proc_kallsyms_are_parsed() -> None:
    symbol = parse_kallsyms(PROC_KALLSYMS).get_by_name("ext4_fill_super")
    assert (symbol.address, symbol.kind) == (0xFFFFFFFFC0A01000, SymbolKind.FUNCTION)


def test_nm_size_column_is_read_as_the_size() -> None:
    table = parse_kallsyms("0000000000401000 000000000000000f t square\n")
    assert table.get_by_name("square").size == 0xF


def test_undefined_symbols_are_skipped() -> None:
    table = parse_kallsyms("                 U printf\n                 w __gmon_start__\n0000000000001139 T main\n")
    assert [s.name for s in table.iter_symbols()] == ["main"]


def test_global_symbols_win_over_local_namesakes() -> None:
    table = parse_kallsyms("ffffffff81000100 t init\nffffffff81000200 T init\n")
    assert table.get_by_name("init").address == 0xFFFFFFFF81000200


def test_malformed_line_is_reported_with_its_number() -> None:
    with pytest.raises(SymbolError, match=r"^System.map:2: not a symbol line: 'garbage here'$"):
        parse_kallsyms("ffffffff81000000 T _text\ngarbage here\n", name="System.map")


def test_unprivileged_kallsyms_with_zero_addresses_is_refused() -> None:
    hidden = "0000000000000000 T _text\n0000000000000000 T do_one_initcall\n"
    with pytest.raises(SymbolError, match="kptr_restrict"):
        parse_kallsyms(hidden)


def test_kaslr_slide_is_runtime_minus_link_address(table) -> None:
    runtime = parse_kallsyms(PROC_KALLSYMS).get_by_name("_text").address
    assert kaslr_slide(table, runtime) == SLIDE


def test_kaslr_slide_can_use_another_known_symbol(table) -> None:
    assert kaslr_slide(table, 0xFFFFFFFF81001000 + SLIDE, symbol="do_one_initcall") == SLIDE


def test_kaslr_slide_off_the_alignment_grid_is_refused(table) -> None:
    with pytest.raises(SymbolError, match="not a multiple of 0x200000"):
        kaslr_slide(table, 0xFFFFFFFF81000000 + 0x1234)


def test_kaslr_slide_without_the_symbol_is_an_error(table) -> None:
    with pytest.raises(SymbolError, match="no 'nonexistent'"):
        kaslr_slide(table, 0xFFFFFFFF82E00000, symbol="nonexistent")


def test_relocated_by_the_slide_matches_the_running_kernel(table) -> None:
    running = parse_kallsyms(PROC_KALLSYMS)
    moved = table.relocated(kaslr_slide(table, running.get_by_name("_text").address))
    assert moved.get_by_name("do_one_initcall").address == running.get_by_name("do_one_initcall").address
    assert moved.format_address(0xFFFFFFFF82E01004) == "do_one_initcall+4"
    assert moved.get_by_name("fixed_percpu_data").address == 0  # absolute: not moved


def test_looks_like_kallsyms_recognises_symbol_listings() -> None:
    assert looks_like_kallsyms(SYSTEM_MAP.encode())
    assert looks_like_kallsyms(PROC_KALLSYMS.encode())


def test_looks_like_kallsyms_rejects_other_text_and_binary() -> None:
    assert not looks_like_kallsyms(b"# a README\nhello world\n")
    assert not looks_like_kallsyms(b"\x7fELF\x02\x01\x01")
    assert not looks_like_kallsyms(b"")


def test_load_symbols_sniffs_a_system_map_by_content(tmp_path: Path) -> None:
    path = tmp_path / "map-6.1"  # no telling name
    path.write_text(SYSTEM_MAP)
    table = load_symbols(path)
    assert table.get_by_name("jiffies").address == 0xFFFFFFFF82000000
    assert not table.has_debug_info()
