"""Expressions in a stopped frame: registers, parameters, entry values, assignment.

``print`` in frame 0 is compared with gdb running a host -O2 build of the
frames fixture (gdb_record.py evaluates the same commands at every
instruction of a few functions). Assignment (``set var``, ``p $rax = 5``)
is checked on a machine state the test owns: gdb itself refuses to write
without a process, so there the specification is C's and gdb's documented
behaviour (GDB manual, "Assignment to Variables").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.errors import ExpressionError, KvmbenchError
from kvmbench.expressions import Evaluator
from kvmbench.symbols.frame import StaticFrame
from kvmbench.symbols.program import Program

COMMANDS = [
    "p $pc", "p $sp", "p $fp", "p $eflags", "p/x $eflags", "p $ps", "p $eax", "p $rax", "p/x $rax", "p $ax",
    "p $al", "p $ah", "p $r8d", "p $cs", "p $fs_base", "p $gs_base", "p $rip + 1", "p $rsp + 8",
    "p *(long *)$rsp", "p/x $sp", "p $sp[0]", "p *$sp", "p $pc[0]", "whatis $rax", "whatis $pc", "whatis $sp",
    "whatis $eflags", "whatis $eax", "whatis $al", "p x", "p x@entry", "p &x", "p a", "p a@entry", "p p",
    "p p.first", "p k@entry", "p k", "p depth@entry", "p $_",
]


def state(program: Program, record: dict) -> StaticFrame:
    memory = program.image_memory()
    low, stack = record["stack"]
    memory.add_region(low, bytes.fromhex(stack))
    start, data = record["data"]
    memory.write_memory(start, bytes.fromhex(data))
    return StaticFrame(memory, record["registers"])


def test_print_in_a_stopped_frame_matches_gdb(tmp_path: Path) -> None:
    elf = build.build_program(tmp_path, ["frames.c"], "frames", optimise=True, hosted=True, unwind="eh_frame")
    records = build.record_with_gdb(elf, ["saver", "leaf", "recurse", "by_pair"], steps=40, expressions=COMMANDS)
    program = Program.from_path(elf)
    mismatches = []
    for record in records:
        frame = program.frames(state(program, record)).frames[0]
        evaluator = Evaluator(program, frame)
        for command, theirs in record["expressions"].items():
            theirs = re.sub(r"^\$\d+ = ", "", theirs.rstrip("\n"))
            verb, _, expression = command.partition(" ")
            try:
                if verb == "whatis":
                    ours = evaluator.whatis(expression)
                else:
                    ours = evaluator.print(expression, verb.partition("/")[2] or None, record=False)
            except KvmbenchError as exc:
                ours = str(exc)
            if ours != theirs:
                mismatches.append(f"{record['registers']['rip']:#x} {command}: gdb {theirs!r}, ours {ours!r}")
    assert len(records) > 50
    assert not mismatches, "\n".join(mismatches[:30])


# -- assignment -------------------------------------------------------------------------


@pytest.fixture
def stopped(tmp_path: Path) -> tuple[Program, StaticFrame]:
    """The types fixture stopped in _start, with a stack and registers of our own."""
    program = Program.from_path(build.build_program(tmp_path, ["types.c"], "types"))
    memory = program.image_memory()
    memory.add_region(0x7F000, bytes(0x1000))
    start = program.symbols.get_by_name("_start")
    return program, StaticFrame(memory, {"rip": start.address + 8, "rsp": 0x7FF00, "rbp": 0x7FF80, "rax": 1,
                                         "eflags": 0x246})


def evaluator_of(program: Program, context: StaticFrame) -> Evaluator:
    return Evaluator(program, program.frames(context).frames[0])


def test_set_var_writes_a_global_through_the_frame(stopped: tuple[Program, StaticFrame]) -> None:
    program, context = stopped
    evaluator = evaluator_of(program, context)
    assert evaluator.print("i_var = 3", record=False) == "3"
    address = program.symbols.get_by_name("i_var").address
    assert context.read_memory(address, 4) == (3).to_bytes(4, "little")
    assert evaluator.print("i_var += 4", record=False) == "7"
    assert evaluator.print("i_var++", record=False) == "7"
    assert evaluator.print("i_var", record=False) == "8"


def test_assignment_converts_to_the_lvalues_type(stopped: tuple[Program, StaticFrame]) -> None:
    program, context = stopped
    evaluator = evaluator_of(program, context)
    assert evaluator.print("c_var = 321", record=False) == "65 'A'"
    assert evaluator.print("d_var = 1", record=False) == "1"
    assert evaluator.print("b_var = 7", record=False) == "true"
    assert evaluator.print("color_var = 6", record=False) == "BLUE"


def test_assigning_a_bit_field_keeps_its_neighbours(stopped: tuple[Program, StaticFrame]) -> None:
    program, context = stopped
    evaluator = evaluator_of(program, context)
    assert evaluator.print("flags_var.mode = 2", record=False) == "2"
    assert evaluator.print("flags_var", record=False) == "{ready = 1, mode = 2, delta = -3, tail = 9 '\\t'}"
    assert evaluator.print("flags_var.delta = 9", record=False) == "-7"  # 4 bits wrap


def test_assigning_a_register_writes_the_frames_register(stopped: tuple[Program, StaticFrame]) -> None:
    program, context = stopped
    evaluator = evaluator_of(program, context)
    assert evaluator.print("$rax = 5", record=False) == "5"
    assert context.read_register("rax") == 5
    evaluator.print("$al = 0x1ff", record=False)
    assert context.read_register("rax") == 0xFF
    evaluator.print("$ah = 1", record=False)
    assert context.read_register("rax") == 0x1FF
    assert evaluator.print("$eflags", record=False) == "[ PF ZF IF ]"


def test_assigning_through_a_pointer_and_a_struct_member(stopped: tuple[Program, StaticFrame]) -> None:
    program, context = stopped
    evaluator = evaluator_of(program, context)
    evaluator.print("*ip_var = 99", record=False)
    assert evaluator.print("i_var", record=False) == "99"
    evaluator.print("pts[1].y = -4", record=False)
    assert evaluator.print("pts[1]", record=False) == "{x = 3, y = -4}"
    evaluator.print("origin = pts[2]", record=False)
    assert evaluator.print("origin", record=False) == "{x = 5, y = 6}"


def test_values_that_are_not_lvalues_cannot_be_assigned(stopped: tuple[Program, StaticFrame]) -> None:
    program, context = stopped
    evaluator = evaluator_of(program, context)
    for text in ("1 = 2", "i_var + 1 = 2", "RED = 1"):
        with pytest.raises(ExpressionError, match=r"^Left operand of assignment is not an lvalue\.$"):
            evaluator.evaluate(text)


def test_convenience_variables_hold_any_value(stopped: tuple[Program, StaticFrame]) -> None:
    program, context = stopped
    evaluator = evaluator_of(program, context)
    evaluator.print("$n = pts[1]", record=False)
    assert evaluator.print("$n.y * 10", record=False) == "40"
    assert evaluator.whatis("$n") == "type = struct point"


def test_sizeof_and_whatis_do_not_write(stopped: tuple[Program, StaticFrame]) -> None:
    program, context = stopped
    evaluator = evaluator_of(program, context)
    assert evaluator.print("sizeof(i_var = 5)", record=False) == "4"
    assert evaluator.whatis("i_var++") == "type = int"
    assert evaluator.print("i_var", record=False) == "-42"
