"""DebugInfo against the reference tools: addr2line for addresses, gdb for lines
and breakpoints, nm for globals.

The freestanding fixture is compiled as ``src/prog.c`` and ``src/util.c``
with the build directory mapped away (-fdebug-prefix-map), as the bundled
guests are, so finding sources needs the search path.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.errors import SymbolError
from kvmbench.symbols import (
    ElfImage,
    GlobalVariable,
    SourceLocation,
    SymbolTable,
    load_symbols,
)

# One past the last line of prog.c, to also cover "no line N" answers.
PROG_LINES = len((build.FIXTURES / "prog.c").read_text().splitlines()) + 1


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_freestanding(tmp_path_factory.mktemp("prog"))


@pytest.fixture(scope="module")
def table(prog: Path) -> SymbolTable:
    return load_symbols(prog)


def gdb_batch(program: Path, commands: list[str]) -> list[str]:
    """Run gdb on ``program`` with ``commands``; its output lines (stdout and stderr)."""
    gdb = build.require_tool("gdb")
    argv = [gdb, "-nx", "-batch"]
    for command in commands:
        argv += ["-ex", command]
    # Not run_tool: gdb exits non-zero when one command fails ("No line 40").
    result = subprocess.run([*argv, str(program)], capture_output=True, text=True, timeout=60, check=False)
    return (result.stdout + result.stderr).splitlines()


def text_range(table: SymbolTable) -> range:
    functions = table.functions()
    return range(functions[0].address, max(f.end for f in functions))


def test_source_locations_match_addr2line_at_every_text_address(prog: Path, table: SymbolTable) -> None:
    build.require_tool("addr2line")
    addresses = list(text_range(table))
    # A few past the end of the code: no line there.
    addresses += [addresses[-1] + 1, addresses[-1] + 0x100]
    output = build.run_tool("addr2line", "-e", prog, *(hex(a) for a in addresses)).splitlines()
    for address, line in zip(addresses, output, strict=True):
        path, _, number = line.split(" (discriminator")[0].rpartition(":")
        ours = table.get_source_location(address)
        if path == "??":
            assert ours is None, hex(address)
        else:
            assert ours is not None, hex(address)
            # addr2line joins the compilation directory; we keep the compiled name.
            assert (path, int(number)) == (f"{build.MAPPED_COMP_DIR}/{ours.file}", ours.line), hex(address)


def test_line_addresses_match_gdb_info_line_for_every_line(prog: Path, table: SymbolTable) -> None:
    lines = range(1, PROG_LINES + 1)
    output = gdb_batch(prog, [f"info line src/prog.c:{n}" for n in lines])
    pattern = re.compile(r'Line (\d+) of "src/prog.c" (?:starts at|is at) address (0x[0-9a-f]+)')
    expected: dict[int, list[int]] = {n: [] for n in lines}  # "out of range": no address
    for text in output:
        match = pattern.match(text)
        if match:
            expected[int(match[1])] = [int(match[2], 16)]
    assert any(expected.values())
    for n in lines:
        # gdb reports the first place; the lowest of ours is that one.
        assert table.debug.get_addresses("src/prog.c", n)[:1] == expected[n], n


def test_break_on_a_line_matches_gdb_break_for_every_line(prog: Path, table: SymbolTable) -> None:
    lines = range(1, PROG_LINES + 1)
    output = gdb_batch(prog, [f"break src/prog.c:{n}" for n in lines])
    addresses = [int(m[1], 16) for m in (re.match(r"Breakpoint \d+ at (0x[0-9a-f]+): file", t) for t in output) if m]
    refused = [t for t in output if t.startswith("No line ")]
    assert len(addresses) + len(refused) == len(lines)
    for n, address in zip(lines[:len(addresses)], addresses, strict=True):
        assert table.resolve(f"src/prog.c:{n}", skip_prologue=True) == address, n
    for n in lines[len(addresses):]:
        with pytest.raises(SymbolError, match="no code"):
            table.resolve(f"src/prog.c:{n}", skip_prologue=True)


def test_break_on_a_function_stops_after_the_prologue_where_gdb_does(prog: Path, table: SymbolTable) -> None:
    names = ["fib", "_start", "util_sum"]
    output = gdb_batch(prog, [f"break {name}" for name in names])
    expected = [int(m[1], 16) for m in (re.match(r"Breakpoint \d+ at (0x[0-9a-f]+)", t) for t in output) if m]
    assert [table.get_breakpoint_address(table.get_by_name(name)) for name in names] == expected
    assert [table.resolve(name, skip_prologue=True) for name in names] == expected


def test_break_on_static_namesakes_matches_gdb_file_qualified_break(prog: Path, table: SymbolTable) -> None:
    files = ["src/prog.c", "src/util.c"]
    output = gdb_batch(prog, [f"break {file}:helper" for file in files])
    expected = [int(m[1], 16) for m in (re.match(r"Breakpoint \d+ at (0x[0-9a-f]+)", t) for t in output) if m]
    by_file = {h.source.file: h for h in table.get_all_by_name("helper")}
    assert [table.get_breakpoint_address(by_file[file]) for file in files] == expected


def test_breakpoint_address_is_inside_the_function_and_past_its_entry(table: SymbolTable) -> None:
    for function in table.functions():
        address = table.get_breakpoint_address(function)
        assert function.address < address < function.end, function.name


def test_exact_address_form_never_skips_the_prologue(table: SymbolTable) -> None:
    fib = table.get_by_name("fib")
    assert table.resolve("*fib", skip_prologue=True) == fib.address
    assert table.resolve("fib") == fib.address


def test_short_file_name_matches_the_compiled_path(table: SymbolTable) -> None:
    line = build.line_of("prog.c", "if (n < 2)")
    assert table.resolve(f"prog.c:{line}") == table.resolve(f"src/prog.c:{line}")


def test_unknown_source_file_suggests_a_known_one(table: SymbolTable) -> None:
    with pytest.raises(SymbolError) as info:
        table.resolve("src/prgo.c:3")
    assert str(info.value) == "no source file 'src/prgo.c' in the line table; did you mean 'src/prog.c'?"


def test_source_location_names_the_line_with_its_column(table: SymbolTable) -> None:
    line = build.line_of("prog.c", "if (n < 2)")
    address = table.debug.get_addresses("src/prog.c", line)[0]
    assert table.get_source_location(address) == SourceLocation("src/prog.c", line, 8)


def test_function_ranges_match_the_symbol_table(table: SymbolTable) -> None:
    ranges = {(f.name, f.low, f.high) for f in table.debug.iter_functions_with_ranges()}
    assert ranges == {(f.name, f.address, f.end) for f in table.functions()}


def test_globals_have_the_address_and_size_nm_reports(table: SymbolTable) -> None:
    globals_ = table.debug.get_globals()
    for name in ("counter", "greeting", "buffer", "hook", "table", "calls"):
        symbol = table.get_by_name(name)
        assert (globals_[name].address, globals_[name].size) == (symbol.address, symbol.size), name


def test_globals_spell_base_pointer_and_array_types(table: SymbolTable) -> None:
    types = {name: variable.type_name for name, variable in table.debug.get_globals().items()}
    assert types == {
        "counter": "int",
        "table": "long int[8]",
        "greeting": "const char *",
        "buffer": "unsigned char[4][16]",
        "hook": "int (*)(int)",
        "calls": "int",
    }


def test_global_unpacks_as_address_size_type_name(table: SymbolTable) -> None:
    address, size, type_name = table.debug.get_globals()["counter"]
    assert GlobalVariable(address, size, type_name) == table.debug.get_globals()["counter"]
    assert (size, type_name) == (4, "int")


def test_source_line_is_found_through_the_search_path(prog: Path) -> None:
    # prog's directory holds src/prog.c; DWARF names a directory that is not here.
    debug = load_symbols(prog, search_path=[prog.parent]).debug
    line = build.line_of("prog.c", "int fib(int n)")
    assert debug.get_source_line("src/prog.c", line) == "int fib(int n)"


def test_source_line_is_found_beside_the_image_without_a_search_path(prog: Path) -> None:
    # prog and src/prog.c share a directory, as bin/ and src/ share the guests'.
    line = build.line_of("prog.c", "int fib(int n)")
    assert load_symbols(prog).debug.get_source_line("src/prog.c", line) == "int fib(int n)"


def test_source_line_search_path_can_be_given_per_call(prog: Path) -> None:
    debug = ElfImage.from_path(prog).get_debug_info()
    line = build.line_of("util.c", "calls++;")
    assert debug.get_source_line("util.c", line) is None
    assert debug.get_source_line("util.c", line, search_path=[prog.parent]).strip() == "calls++;"


def test_source_line_is_none_when_the_source_is_nowhere(prog: Path) -> None:
    debug = ElfImage.from_path(prog).get_debug_info()  # no search path at all
    assert debug.get_source_line("src/prog.c", 3) is None


def test_source_line_is_found_relative_to_the_compilation_directory(tmp_path: Path) -> None:
    hello = build.build_hosted(tmp_path)  # compiled in tmp_path, nothing mapped
    debug = load_symbols(hello).debug
    line = build.line_of("hello.c", "int main(void)")
    assert debug.get_source_line("hello.c", line) == "int main(void)"


def test_source_line_out_of_range_is_none(prog: Path) -> None:
    debug = load_symbols(prog, search_path=[prog.parent]).debug
    assert debug.get_source_line("src/prog.c", PROG_LINES + 100) is None


def test_relocated_table_keeps_source_lookups(table: SymbolTable) -> None:
    fib = table.get_by_name("fib")
    moved = table.relocated(0x4000_0000)
    moved_fib = moved.get_by_name("fib")
    assert moved_fib.address == fib.address + 0x4000_0000
    assert moved.get_source_location(moved_fib.address + 12) == table.get_source_location(fib.address + 12)
    assert moved.get_breakpoint_address(moved_fib) == table.get_breakpoint_address(fib) + 0x4000_0000
    line = build.line_of("prog.c", "if (n < 2)")
    assert moved.resolve(f"prog.c:{line}") == table.resolve(f"prog.c:{line}") + 0x4000_0000
