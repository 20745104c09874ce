"""CFI unwinding against the reference tools.

- The rules in force at every pc of the bundled guests, their -O2 builds
  and the -O2 frames fixture are readelf's (``--debug-dump=frames-interp``).
- Unwinding at every instruction of the frames fixture's functions gives
  the callers gdb finds, with the same registers, on a host build of the
  same C source run under gdb (gdb_record.py records the machine state and
  gdb's frames; the unwinder runs on that state): once with .eh_frame,
  once with .debug_frame and DWARF 4, once with no CFI at all (frame
  pointers and prologues).
- The end of the stack and corrupt stacks end a backtrace as gdb ends it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.errors import ExpressionError, RegisterUnavailable
from kvmbench.symbols.cfi import CfiSection, RuleKind
from kvmbench.symbols.frame import ImageMemory, StaticFrame
from kvmbench.symbols.program import Program
from kvmbench.symbols.unwind import UnwindMethod

FRAME_FUNCTIONS = ["saver", "with_vla", "recurse", "via_pointer", "by_value", "many_args", "mixer"]
GUEST_ELFS = sorted((build.GUESTS / "bin").glob("*.elf"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cfi")


@pytest.fixture(scope="module")
def guests_o2(workdir: Path) -> Path:
    return build.build_guests_optimised(workdir / "guests-o2")


# -- readelf's tables ------------------------------------------------------------


def readelf_rows(elf: Path) -> list[tuple[int, int, list[tuple[int, dict[str, str]]]]]:
    """Every FDE as (start, end, rows); a row is (pc, {column: cell}) with CFA and registers.

    An FDE without instructions is shown by readelf without a table: its
    one row is its CIE's.
    """
    text = build.run_tool("readelf", "--debug-dump=frames-interp", "-W", elf)
    fdes: list[tuple[int, int, list[tuple[int, dict[str, str]]]]] = []
    cie_rows: dict[str, list[tuple[int, dict[str, str]]]] = {}
    header: list[str] = []
    current: list[tuple[int, dict[str, str]]] | None = None
    for line in text.splitlines():
        cie = re.match(r"([0-9a-f]+) [0-9a-f]+ [0-9a-f]+ CIE", line)
        fde = re.match(r"[0-9a-f]+ [0-9a-f]+ [0-9a-f]+ FDE cie=([0-9a-f]+) pc=([0-9a-f]+)\.\.([0-9a-f]+)", line)
        if cie:
            current = cie_rows.setdefault(cie[1], [])
        elif fde:
            current = []
            fdes.append((int(fde[2], 16), int(fde[3], 16), current))
            fdes[-1][2].append((-1, {"cie": fde[1]}))
        elif line.strip().startswith("LOC"):
            header = line.split()[1:]
        elif current is not None and re.match(r"[0-9a-f]{8,16} ", line):
            cells = line.split()
            current.append((int(cells[0], 16), dict(zip(header, cells[1:], strict=True))))
    result = []
    for start, end, rows in fdes:
        cie_offset = rows.pop(0)[1]["cie"]
        if not rows:
            rows = [(start, cells) for _, cells in cie_rows.get(cie_offset, [])]
        result.append((start, end, rows))
    return result


def our_cells(program: Program, pc: int, columns: list[str]) -> dict[str, str]:
    rules = program.cfi.find_rules(pc)
    assert rules is not None, hex(pc)
    cells = {}
    for column in columns:
        if column == "CFA":
            cells[column] = str(rules.cfa)
            continue
        name = "rip" if column == "ra" else column
        rule = rules.registers.get(name)
        cells[column] = str(rule) if rule is not None else "u"
    return cells


def assert_rules_match_readelf(elf: Path) -> int:
    program = Program.from_path(elf)
    checked = 0
    fdes = readelf_rows(elf)
    assert fdes, elf
    for start, end, rows in fdes:
        for index, (row_pc, cells) in enumerate(rows):
            row_end = rows[index + 1][0] if index + 1 < len(rows) else end
            for pc in range(max(row_pc, start), row_end):
                assert our_cells(program, pc, list(cells)) == cells, f"{elf.name} {pc:#x}"
                checked += 1
        assert program.cfi.find_rules(end) is None or any(s <= end < e for s, e, _ in fdes), hex(end)
    return checked


@pytest.mark.parametrize("elf", GUEST_ELFS, ids=lambda p: p.stem)
def test_rules_match_readelf_at_every_pc_of_the_bundled_guests(elf: Path) -> None:
    assert assert_rules_match_readelf(elf) > 100


def test_rules_match_readelf_at_every_pc_of_the_guests_built_at_o2(guests_o2: Path) -> None:
    for elf in sorted(guests_o2.glob("*.elf")):
        assert_rules_match_readelf(elf)


def test_rules_match_readelf_in_eh_frame_and_debug_frame(workdir: Path) -> None:
    for unwind in ("eh_frame", "debug_frame"):
        elf = build.build_program(workdir, ["frames.c"], f"frames-{unwind}", optimise=True, unwind=unwind)
        assert assert_rules_match_readelf(elf) > 100
        sections = {section for _, _, section in Program.from_path(elf).cfi.iter_ranges()}
        assert sections == {CfiSection.EH_FRAME if unwind == "eh_frame" else CfiSection.DEBUG_FRAME}


def test_no_rules_outside_every_fde(workdir: Path) -> None:
    program = Program.from_path(GUEST_ELFS[0])
    ranges = list(program.cfi.iter_ranges())
    start = program.symbols.get_by_name("_start")
    assert not any(low <= start.address < high for low, high, _ in ranges)  # crt0.S has no CFI
    assert program.cfi.find_rules(start.address) is None
    assert program.cfi.find_rules(0) is None


# -- unwinding against gdb, live --------------------------------------------------


def frame_of(program: Program, record: dict) -> StaticFrame:
    memory = program.image_memory()
    low, data = record["stack"]
    memory.add_region(low, bytes.fromhex(data))
    return StaticFrame(memory, record["registers"])


def code_byte(program: Program, pc: int) -> int | None:
    try:
        return program.image_memory().read_memory(pc, 1)[0]
    except Exception:
        return None


def assert_unwinding_matches_gdb(program: Program, records: list[dict], methods: set[UnwindMethod]) -> int:
    """Every physical frame gdb found up to main, with its registers; returns frames compared."""
    compared = 0
    memory = program.image_memory()
    for index, record in enumerate(records):
        pc = record["registers"]["rip"]
        physical = [f for f in record["frames"] if f["type"] == "NORMAL"]
        ours = program.backtrace(frame_of(program, record), limit=len(physical)).frames
        if methods == {UnwindMethod.PROLOGUE, UnwindMethod.FRAME_POINTER} and memory.read_memory(pc, 1) == b"\xc3":
            # Without CFI, gdb skips its epilogue check for code from gcc >= 4.5
            # (amd64_stack_frame_destroyed_p trusts CFI that was stripped here)
            # and unwinds a `ret` with rbp, losing the caller. One
            # instruction earlier (the leave or pop) it still had it right.
            before = [f for f in records[index - 1]["frames"] if f["type"] == "NORMAL"]
            assert ours[1].pc == before[1]["pc"], hex(pc)
            continue
        assert [f.pc for f in ours] == [f["pc"] for f in physical], hex(pc)
        for gdb_frame, frame in zip(physical, ours, strict=True):
            for name, value in gdb_frame["registers"].items():
                if value is None:
                    with pytest.raises(RegisterUnavailable):
                        frame.context.read_register(name)
                else:
                    assert frame.context.read_register(name) == value, (hex(pc), frame.level, name)
            if frame.level:
                assert frame.method in methods, (hex(pc), frame.level)
            compared += 1
    return compared


@pytest.mark.parametrize(
    ("unwind", "dwarf_version", "methods"),
    [
        ("eh_frame", 5, {UnwindMethod.EH_FRAME}),
        ("debug_frame", 4, {UnwindMethod.DEBUG_FRAME}),
    ],
)
def test_unwinding_at_every_instruction_matches_gdb_at_o2(
    workdir: Path, unwind: str, dwarf_version: int, methods: set[UnwindMethod]
) -> None:
    elf = build.build_program(
        workdir, ["frames.c"], f"host-{unwind}", optimise=True, hosted=True,
        unwind=unwind, dwarf_version=dwarf_version,
    )
    records = build.record_with_gdb(elf, FRAME_FUNCTIONS)
    program = Program.from_path(elf)
    seen = {f["name"] for record in records for f in record["frames"]}
    assert set(FRAME_FUNCTIONS) | {"leaf", "main"} <= seen
    assert assert_unwinding_matches_gdb(program, records, methods) > 300


def test_unwinding_without_cfi_follows_frame_pointers_as_gdb(workdir: Path) -> None:
    elf = build.build_program(workdir, ["frames.c"], "host-nocfi", hosted=True, unwind="none")
    program = Program.from_path(elf)
    assert program.cfi.find_rules(program.symbols.get_by_name("saver").address) is None
    records = build.record_with_gdb(elf, FRAME_FUNCTIONS)
    methods = {UnwindMethod.PROLOGUE, UnwindMethod.FRAME_POINTER}
    assert assert_unwinding_matches_gdb(program, records, methods) > 300


# -- frames of the bundled guests, from hand-made states -----------------------------


@pytest.fixture(scope="module")
def fib() -> Program:
    return Program.from_path(build.GUESTS / "bin" / "fib.elf")


STACK_TOP = 0x7F000


def stack_frame(program: Program, registers: dict[str, int], words: dict[int, int]) -> StaticFrame:
    """A frame whose stack [STACK_TOP - 0x1000, STACK_TOP) holds ``words`` (address: u64)."""
    memory = program.image_memory()
    stack = bytearray(0x1000)
    for address, value in words.items():
        offset = address - (STACK_TOP - 0x1000)
        stack[offset:offset + 8] = value.to_bytes(8, "little")
    memory.add_region(STACK_TOP - 0x1000, bytes(stack))
    return StaticFrame(memory, registers)


def test_a_stop_at_a_function_entry_finds_its_caller_through_the_cfi(fib: Program) -> None:
    fib_entry = fib.symbols.get_by_name("fib").address
    main = fib.symbols.get_by_name("main")
    return_address = main.address + 0x20
    rsp = STACK_TOP - 0x100
    # main's frame: rbp-based (-O0), its CFA rbp+16 holds _start's return address.
    main_rbp = STACK_TOP - 0x80
    start_return = fib.symbols.get_by_name("_start").address + 0x30
    context = stack_frame(fib, {"rip": fib_entry, "rsp": rsp, "rbp": main_rbp}, {
        rsp: return_address, main_rbp: 0, main_rbp + 8: start_return,
    })
    trace = fib.backtrace(context)
    assert [(f.pc, f.method) for f in trace.frames[:3]] == [
        (fib_entry, UnwindMethod.INNERMOST),
        (return_address, UnwindMethod.DEBUG_FRAME),
        (start_return, UnwindMethod.DEBUG_FRAME),
    ]
    assert trace.frames[0].cfa == rsp + 8
    assert trace.frames[1].context.read_register("rsp") == rsp + 8
    # _start (crt0.S) has no CFI and cleared rbp: the frame-pointer chain ends.
    assert len(trace.frames) == 3 and trace.stop_reason is None


def test_a_return_address_of_zero_ends_the_stack(fib: Program) -> None:
    fib_entry = fib.symbols.get_by_name("fib").address
    rsp = STACK_TOP - 0x100
    trace = fib.backtrace(stack_frame(fib, {"rip": fib_entry, "rsp": rsp, "rbp": 0}, {rsp: 0}))
    assert len(trace.frames) == 1 and trace.stop_reason is None


def test_an_undefined_return_address_ends_the_stack(workdir: Path) -> None:
    # A hosted program's _start (crt1.o) marks its return address undefined.
    elf = build.build_program(workdir, ["frames.c"], "host-ra", optimise=True, hosted=True, unwind="eh_frame")
    program = Program.from_path(elf)
    start = program.symbols.get_by_name("_start").address
    rules = program.cfi.find_rules(start)
    assert rules is not None and rules.registers["rip"].kind is RuleKind.UNDEFINED
    context = program.static_frame({"rip": start, "rsp": 0x1000, "rbp": 0})
    trace = program.backtrace(context)
    assert len(trace.frames) == 1 and trace.stop_reason is None


def test_a_caller_below_its_callee_is_a_corrupt_stack(fib: Program) -> None:
    fib_entry = fib.symbols.get_by_name("fib").address
    main = fib.symbols.get_by_name("main")
    rsp = STACK_TOP - 0x100
    # main's rbp points below fib's frame: its CFA would be inner to fib's.
    bogus_rbp = rsp - 0x40
    trace = fib.backtrace(stack_frame(fib, {"rip": fib_entry, "rsp": rsp, "rbp": bogus_rbp}, {
        rsp: main.address + 0x20,
    }))
    assert len(trace.frames) == 2
    assert trace.stop_reason == "previous frame inner to this frame (corrupt stack?)"


def test_unreadable_stack_stops_the_backtrace_with_gdb_words(fib: Program) -> None:
    fib_entry = fib.symbols.get_by_name("fib").address
    trace = fib.backtrace(fib.static_frame({"rip": fib_entry, "rsp": 0x10_0000_0000, "rbp": 0}))
    assert len(trace.frames) == 1
    assert trace.stop_reason == "Cannot access memory at address 0x1000000000"


def test_writing_a_callers_saved_register_writes_its_stack_slot(fib: Program) -> None:
    # In fib after `push %rbp`, main's rbp lives at CFA-16 = rsp.
    fib_entry = fib.symbols.get_by_name("fib").address
    rsp = STACK_TOP - 0x108
    context = stack_frame(fib, {"rip": fib_entry + 1, "rsp": rsp, "rbp": 0x1234},
                          {rsp: STACK_TOP - 0x80, rsp + 8: fib.symbols.get_by_name("main").address + 0x20})
    caller = fib.backtrace(context, limit=2).frames[1]
    assert caller.context.read_register("rbp") == STACK_TOP - 0x80
    caller.context.write_register("rbp", 0x5555)
    assert int.from_bytes(context.read_memory(rsp, 8), "little") == 0x5555
    assert context.read_register("rbp") == 0x1234
    # rax has no rule: the caller sees the callee's, and writes go there.
    caller.context.write_register("rax", 7)
    assert context.read_register("rax") == 7
    with pytest.raises(ExpressionError, match="unmodifiable"):
        caller.context.write_register("rsp", 0)


def test_frames_above_the_innermost_look_up_the_call_instruction(fib: Program) -> None:
    fib_entry = fib.symbols.get_by_name("fib").address
    rsp = STACK_TOP - 0x100
    return_address = fib.symbols.get_by_name("main").address + 0x20
    trace = fib.backtrace(stack_frame(fib, {"rip": fib_entry, "rsp": rsp, "rbp": 0}, {rsp: return_address}))
    assert trace.frames[0].lookup_pc == fib_entry
    assert trace.frames[1].lookup_pc == return_address - 1


def test_image_memory_reads_data_and_zeroed_bss(fib: Program) -> None:
    memory = fib.image_memory()
    start = fib.symbols.get_by_name("_start")
    assert memory.read_memory(start.address, 4) == fib.image.iter_load_segments().__next__().data[:4]
    bss_end = fib.symbols.get_by_name("__bss_end").address
    assert memory.read_memory(bss_end - 8, 8) == bytes(8)
    assert isinstance(memory, ImageMemory)
