"""ElfImage and load_symbols against binutils: nm for symbols, readelf for headers.

The fixtures are compiled here with gcc: a freestanding program shaped like
the bundled guests (tests/fixtures/symbols/prog.c, util.c) and an ordinary
hosted one (hello.c), so the comparison covers a real toolchain's symbols.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.errors import SymbolError
from kvmbench.symbols import (
    ElfImage,
    SourceLocation,
    SymbolKind,
    load_symbols,
    parse_kallsyms,
)

GUEST_FIB = Path(__file__).resolve().parent.parent / "kvmbench" / "guests" / "bin" / "fib.elf"


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_freestanding(tmp_path_factory.mktemp("prog"))


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_hosted(tmp_path_factory.mktemp("hello"))


def nm_symbols(path: Path) -> dict[tuple[str, int, int], str]:
    """``nm -S`` output as {(name, address, size): type letter}, defined symbols only."""
    build.require_tool("nm")
    symbols = {}
    for line in build.run_tool("nm", "-S", path).splitlines():
        fields = line.split()
        if len(fields) == 4:
            address, size, letter, name = fields
        elif len(fields) == 3:
            (address, letter, name), size = fields, "0"
        else:
            continue  # undefined: "U name" / "w name" without an address
        symbols[(name, int(address, 16), int(size, 16))] = letter
    return symbols


def ours(path: Path) -> set[tuple[str, int, int]]:
    return {(s.name, s.address, s.size) for s in ElfImage.from_path(path).iter_symbols()}


def readelf_load_segments(path: Path) -> list[tuple[int, int, int, int, int, int]]:
    """(offset, vaddr, paddr, filesz, memsz, flags) of each LOAD header, from readelf."""
    build.require_tool("readelf")
    segments = []
    for line in build.run_tool("readelf", "-lW", path).splitlines():
        fields = line.split()
        if fields[:1] != ["LOAD"]:
            continue
        offset, vaddr, paddr, filesz, memsz = (int(f, 16) for f in fields[1:6])
        letters = "".join(fields[6:-1])  # "R E" is split in two
        flags = (4 if "R" in letters else 0) | (2 if "W" in letters else 0) | (1 if "E" in letters else 0)
        segments.append((offset, vaddr, paddr, filesz, memsz, flags))
    return segments


def test_symbols_match_nm_for_the_freestanding_program(prog: Path) -> None:
    assert ours(prog) == set(nm_symbols(prog))


def test_symbols_match_nm_for_a_hosted_program(hello: Path) -> None:
    assert ours(hello) == set(nm_symbols(hello))


def test_function_and_object_kinds_agree_with_nm_type_letters(prog: Path, hello: Path) -> None:
    for path in (prog, hello):
        letters = nm_symbols(path)
        for symbol in ElfImage.from_path(path).iter_symbols():
            letter = letters[(symbol.name, symbol.address, symbol.size)].upper()
            if symbol.kind is SymbolKind.FUNCTION:
                assert letter in "TWI", symbol
            elif symbol.kind is SymbolKind.OBJECT:
                assert letter in "DBRVGSC", symbol


def test_nm_output_parsed_as_a_symbol_list_gives_the_same_symbols(prog: Path) -> None:
    table = parse_kallsyms(build.run_tool("nm", "-S", prog))
    assert {(s.name, s.address, s.size) for s in table.iter_symbols()} == ours(prog)


def test_load_segments_match_readelf_program_headers(prog: Path, hello: Path) -> None:
    for path in (prog, hello):
        expected = [(vaddr, paddr, filesz, memsz, flags)
                    for _, vaddr, paddr, filesz, memsz, flags in readelf_load_segments(path)]
        got = [(s.vaddr, s.paddr, len(s.data), s.memsz, s.flags)
               for s in ElfImage.from_path(path).iter_load_segments()]
        assert got == expected


def test_load_segment_bytes_are_the_file_bytes_at_the_segment_offset(prog: Path) -> None:
    raw = prog.read_bytes()
    offsets = [offset for offset, *_ in readelf_load_segments(prog)]
    for offset, segment in zip(offsets, ElfImage.from_path(prog).iter_load_segments(), strict=True):
        assert segment.data == raw[offset:offset + len(segment.data)]


def test_load_segment_unpacks_as_paddr_vaddr_data_memsz_flags(prog: Path) -> None:
    segment = next(ElfImage.from_path(prog).iter_load_segments())
    paddr, vaddr, data, memsz, flags = segment
    assert (paddr, vaddr, data, memsz, flags) == (segment.paddr, segment.vaddr, segment.data,
                                                  segment.memsz, segment.flags)


def test_entry_matches_readelf_header(prog: Path) -> None:
    header = build.run_tool("readelf", "-hW", prog)
    entry = int(re.search(r"Entry point address:\s+(0x[0-9a-f]+)", header)[1], 16)
    image = ElfImage.from_path(prog)
    assert image.entry == entry
    assert image.entry == load_symbols(prog).get_by_name("_start").address


def test_function_source_is_its_declaration_line(prog: Path) -> None:
    fib = load_symbols(prog).get_by_name("fib")
    assert fib.source == SourceLocation("src/prog.c", build.line_of("prog.c", "int fib(int n)"), 5)


def test_global_source_is_its_declaration_line(prog: Path) -> None:
    counter = load_symbols(prog).get_by_name("counter")
    assert counter.source is not None
    assert (counter.source.file, counter.source.line) == ("src/prog.c", build.line_of("prog.c", "int counter"))


def test_file_static_namesakes_are_all_kept(prog: Path) -> None:
    helpers = load_symbols(prog).get_all_by_name("helper")
    assert sorted(h.source.file for h in helpers) == ["src/prog.c", "src/util.c"]


def test_without_dwarf_the_table_has_symbols_but_no_lines(prog: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "prog-nodebug"
    build.run_tool(build.require_tool("strip"), "--strip-debug", "-o", stripped, prog)
    table = load_symbols(stripped)
    assert not table.has_debug_info()
    assert table.get_by_name("fib") is not None
    with pytest.raises(SymbolError, match="no line information"):
        table.resolve("prog.c:20")


def test_non_elf_file_raises_a_one_line_symbol_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01binary garbage\xff" * 10)
    for load in (ElfImage.from_path, load_symbols):
        with pytest.raises(SymbolError) as info:
            load(junk)
        assert "\n" not in str(info.value)
        assert str(junk) in str(info.value)


def test_truncated_elf_raises_symbol_error_not_a_pyelftools_error(prog: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated"
    truncated.write_bytes(prog.read_bytes()[:100])
    with pytest.raises(SymbolError) as info:
        load_symbols(truncated)
    assert "\n" not in str(info.value)


def test_corrupt_dwarf_raises_symbol_error_not_a_pyelftools_error(prog: Path, tmp_path: Path) -> None:
    # Overwrite .debug_info with 0xff: the unit length becomes the 64-bit
    # escape followed by an impossible length.
    data = bytearray(prog.read_bytes())
    fields = next(line.split() for line in build.run_tool("readelf", "-SW", prog).splitlines()
                  if " .debug_info " in line)
    index = fields.index(".debug_info")
    offset, size = int(fields[index + 3], 16), int(fields[index + 4], 16)
    data[offset:offset + size] = b"\xff" * size
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(SymbolError, match="DWARF") as info:
        load_symbols(corrupt)
    assert "\n" not in str(info.value)


def test_missing_file_raises_symbol_error(tmp_path: Path) -> None:
    with pytest.raises(SymbolError, match="No such file"):
        load_symbols(tmp_path / "absent.elf")


def test_load_symbols_rejects_text_that_is_not_a_symbol_list(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("just some notes\nnothing to see\n")
    with pytest.raises(SymbolError, match=r"neither an ELF file nor a System\.map"):
        load_symbols(notes)


@pytest.mark.skipif(not GUEST_FIB.exists(), reason="bundled guest fib.elf is not built")
def test_bundled_fib_guest_has_fib_with_a_source_line() -> None:
    table = load_symbols(GUEST_FIB)  # sources found beside bin/, in src/
    fib = table.get_by_name("fib")
    assert fib is not None and fib.kind is SymbolKind.FUNCTION
    location = table.get_source_location(table.get_breakpoint_address(fib))
    assert location is not None and location.file.endswith("fib.c")
    assert table.debug.get_source_line(location.file, location.line) is not None


def test_load_symbols_of_an_elf_decodes_dwarf_unless_told_not_to(prog: Path) -> None:
    assert load_symbols(prog).has_debug_info()
    assert not load_symbols(prog, dwarf=False).has_debug_info()
