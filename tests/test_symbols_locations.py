"""DWARF locations, scopes and frames against gdb, live, on -O2 code.

The frames fixture is built at -O2 -fomit-frame-pointer as a hosted
program and run under gdb, which records the machine state at every
instruction of its functions together with its own answers (gdb_record.py):
``bt`` (inlined and tail-call frames, entry values ``n=n@entry=3``),
``info args`` and ``info locals`` in every frame. kvmbench answers from
the same state and ELF: location lists, register and stack values,
DW_OP_entry_value through call sites, DW_OP_piece, variable-length arrays
and ``<optimized out>`` must all come out as gdb prints them. Once with
DWARF 5 and .eh_frame, once with DWARF 4 (.debug_loc) and .debug_frame.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.expressions.frames import backtrace_text, info_args, info_locals
from kvmbench.symbols.symbol_order import gdb_hashed_order, gdb_symbol_hash
from kvmbench.symbols.dwarf_eval import CompositeLocation, OptimizedOutLocation, RegisterLocation
from kvmbench.symbols.frame import StaticFrame
from kvmbench.symbols.program import Program
from kvmbench.symbols.units import ScopeKind, VariableKind

FUNCTIONS = ["saver", "with_vla", "recurse", "via_pointer", "by_value", "many_args", "mixer", "by_pair"]


@pytest.fixture(scope="module", params=[(5, "eh_frame"), (4, "debug_frame")], ids=["dwarf5", "dwarf4"])
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, list[dict]]:
    version, unwind = request.param
    workdir = tmp_path_factory.mktemp(f"locations-{version}")
    elf = build.build_program(workdir, ["frames.c"], "frames", optimise=True, hosted=True,
                              dwarf_version=version, unwind=unwind)
    return Program.from_path(elf), build.record_with_gdb(elf, FUNCTIONS, with_locals=True)


def state(program: Program, record: dict) -> StaticFrame:
    """The recorded machine: registers, the stack and the program's data over the ELF."""
    memory = program.image_memory()
    low, stack = record["stack"]
    memory.add_region(low, bytes.fromhex(stack))
    start, data = record["data"]
    memory.write_memory(start, bytes.fromhex(data))
    return StaticFrame(memory, record["registers"])


def frames_of(program: Program, record: dict) -> list:
    return list(program.frames(state(program, record), limit=len(record["frames"])).frames)


def test_frames_match_gdb_including_inlined_and_tail_calls(recorded: tuple[Program, list[dict]]) -> None:
    program, records = recorded
    kinds = set()
    for record in records:
        ours = [(f.name, "INLINE" if f.is_inlined else "TAILCALL" if f.is_tail_call else "NORMAL", f.pc)
                for f in frames_of(program, record)]
        theirs = [(f["name"], {"3": "TAILCALL"}.get(f["type"], f["type"]), f["pc"]) for f in record["frames"]]
        assert ours == theirs, hex(record["registers"]["rip"])
        kinds |= {kind for _, kind, _ in theirs}
    assert kinds == {"NORMAL", "INLINE", "TAILCALL"}


def test_backtrace_lines_match_gdb_at_every_instruction(recorded: tuple[Program, list[dict]]) -> None:
    program, records = recorded
    entry_values = 0
    for record in records:
        ours = backtrace_text(program, frames_of(program, record)) + "\n"
        assert ours == record["backtrace"], hex(record["registers"]["rip"])
        entry_values += "@entry=" in ours
    assert entry_values > 100


def test_info_args_and_locals_match_gdb_in_every_frame(recorded: tuple[Program, list[dict]]) -> None:
    program, records = recorded
    optimized = 0
    for record in records:
        for theirs, frame in zip(record["frames"], frames_of(program, record), strict=True):
            where = (hex(record["registers"]["rip"]), frame.level, frame.name)
            assert info_args(program, frame) + "\n" == theirs["args"], where
            assert info_locals(program, frame) + "\n" == theirs["locals"], where
            optimized += "<optimized out>" in theirs["locals"]
    assert optimized > 50


def test_a_struct_argument_split_over_two_registers_is_a_composite(recorded: tuple[Program, list[dict]]) -> None:
    program, records = recorded
    record = next(r for r in records if r["frames"][0]["name"] == "by_pair")  # at its first instruction
    frame = frames_of(program, record)[0]
    pair = program.find_variable("p", frame)
    location = program.locate(pair, frame)
    assert isinstance(location, CompositeLocation)
    assert [piece.location for piece in location.pieces] == [RegisterLocation("rdi"), RegisterLocation("rsi")]
    assert info_args(program, frame) == "p = {first = 11, second = 12}\nk = 0"


def test_a_variable_outside_its_location_list_is_optimized_out(recorded: tuple[Program, list[dict]]) -> None:
    program, records = recorded
    record = next(r for r in records if r["frames"][0]["name"] == "saver")
    frame = frames_of(program, record)[0]
    w = program.find_variable("w", frame)
    assert w.kind is VariableKind.LOCAL
    assert isinstance(program.locate(w, frame), OptimizedOutLocation)


def test_a_variable_length_array_takes_its_length_from_the_frame(recorded: tuple[Program, list[dict]]) -> None:
    program, records = recorded
    record = next(r for r in records if r["frames"][0]["name"] == "with_vla" and "buf = {1, 4" in r["frames"][0]["locals"])
    frame = frames_of(program, record)[0]
    buf = program.find_variable("buf", frame)
    assert buf.type.variable_length and buf.type.count is None
    assert program.variable_type(buf, frame).count == 3


def test_an_inlined_call_is_a_frame_whose_caller_shows_the_call_line(recorded: tuple[Program, list[dict]]) -> None:
    program, records = recorded
    record = next(r for r in records if r["frames"][0]["name"] == "blend")
    inlined, caller = frames_of(program, record)[:2]
    assert inlined.is_inlined and inlined.function.kind is ScopeKind.INLINED_FUNCTION
    assert caller.name == "mixer" and caller.inlined_callee and caller.pc == inlined.pc
    assert caller.location == inlined.function.call_site
    assert caller.location.line == build.line_of("frames.c", "long mixed = blend(first, seed);")


# -- gdb's symbol order ---------------------------------------------------------------


def test_nested_blocks_list_their_locals_in_gdb_hash_order(tmp_path: Path) -> None:
    # A block of five: gdb (dictionary.c, n/5+1 = 2 buckets) lists them a1 c1 e1 b1 d1.
    source = tmp_path / "order.c"
    source.write_text(
        "int g;\nint main(void) {\n  for (int i = 0; i < 2; i++) {\n"
        "    volatile int b1 = i, a1 = 2, c1 = 3, d1 = 4, e1 = 5;\n    g += b1 + a1 + c1 + d1 + e1;\n  }\n"
        "  return 0;\n}\n"
    )
    build.run_tool("gcc", "-g", "-O0", "-o", tmp_path / "order", source)
    gdb = build.require_tool("gdb")
    import subprocess

    output = subprocess.run(
        [gdb, "-nx", "-batch", "-ex", "break order.c:5", "-ex", "run", "-ex", "info locals", str(tmp_path / "order")],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout
    gdb_order = [line.split(" = ")[0] for line in output.splitlines() if " = " in line]
    program = Program.from_path(tmp_path / "order")
    main = program.find_function("main")
    blocks = [main]
    while not any(v.name == "b1" for v in blocks[-1].variables):
        blocks.append(blocks[-1].children[0])
    block = blocks[-1]
    assert block.kind is ScopeKind.BLOCK
    ours = [v.name for v in gdb_hashed_order(block.variables)]
    assert ours == [name for name in gdb_order if name in ours] == ["a1", "c1", "e1", "b1", "d1"]


def test_gdb_symbol_hash_stops_at_ada_style_separators() -> None:
    assert gdb_symbol_hash("abc") == (((ord("a") - 113) * 67 + ord("b") - 113) * 67 + ord("c") - 113) & 0xFFFFFFFF
    assert gdb_symbol_hash("ABC") == gdb_symbol_hash("abc")  # hashed lower-cased
    assert gdb_symbol_hash("fooXbar") == gdb_symbol_hash("foo")
