"""The type model read from DWARF, spelled as gdb spells it.

gdb prints base types canonicalised (gcc's "long int" is ``long``), struct
and union bodies, bit fields, arrays per dimension, enums with ``= N``
only where a value breaks the sequence, and function types with ``void``
for empty prototypes. The comparisons run gdb on the types fixture built
with every DWARF version gcc writes (bit fields are described differently
before DWARF 4).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.expressions import Evaluator
from kvmbench.symbols.program import Program
from kvmbench.symbols.types import (
    ArrayType,
    EnumType,
    FunctionType,
    IntegerType,
    PointerType,
    StructType,
    TypedefType,
    canonical_base_name,
    ptype,
    sizeof,
    strip_typedefs,
    whatis,
)

TYPE_NAMES = [
    "struct point", "point_t", "point_ptr", "union number", "struct bits", "struct node", "struct packet",
    "struct nested", "struct with_fn", "enum color", "enum sign", "enum perm", "binop_fn", "u64",
    "unsigned long", "long double", "_Bool", "signed char", "char", "short", "unsigned short",
]
BITS_AND_LAYOUT = ["p flags_var", "p/x flags_var", "p nest_var.b", "p nest_var", "p sizeof(struct bits)",
                   "p &flags_var.tail", "p &nest_var.anon", "p sizeof(struct nested)", "p ld_var", "p pts[2].y"]


@pytest.mark.parametrize(("gcc_name", "gdb_name"), [
    ("long int", "long"), ("long unsigned int", "unsigned long"), ("short int", "short"),
    ("short unsigned int", "unsigned short"), ("long long int", "long long"),
    ("long long unsigned int", "unsigned long long"), ("unsigned int", "unsigned int"), ("int", "int"),
    ("char", "char"), ("signed char", "signed char"), ("unsigned char", "unsigned char"),
    ("_Bool", "_Bool"), ("long double", "long double"), ("__int128 unsigned", "unsigned __int128"),
    ("unsigned", "unsigned int"), ("signed", "int"),
])
def test_base_type_names_are_canonicalised_as_gdb_prints_them(gcc_name: str, gdb_name: str) -> None:
    assert canonical_base_name(gcc_name) == gdb_name


@pytest.fixture(scope="module")
def types_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("types")


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_types_and_bit_fields_match_gdb_for_every_dwarf_version(types_dir: Path, version: int) -> None:
    elf = build.build_program(types_dir, ["types.c"], f"types-dwarf{version}", dwarf_version=version)
    commands = [f"{verb} {name}" for name in TYPE_NAMES for verb in ("whatis", "ptype")] + BITS_AND_LAYOUT
    expected = build.gdb_answers(elf, commands)
    evaluator = Evaluator(Program.from_path(elf))
    ours = []
    for command in commands:
        verb, _, text = command.partition(" ")
        ours.append(getattr(evaluator, {"p": "print", "p/x": "print"}.get(verb, verb))(
            text, *(("x",) if verb == "p/x" else ())))
    assert ours == expected


def test_the_model_holds_what_dwarf_says(types_dir: Path) -> None:
    program = Program.from_path(build.build_program(types_dir, ["types.c"], "types"))
    bits = strip_typedefs(program.find_type("struct bits"))
    assert isinstance(bits, StructType) and not bits.union
    assert [(m.name, m.offset, m.bit_offset, m.bit_size) for m in bits.members] == [
        ("ready", 0, 0, 1), ("mode", 0, 1, 3), ("delta", 0, 4, 4), ("tail", 1, 0, None)]
    matrix = program.find_variable("matrix").type
    assert isinstance(matrix, ArrayType) and matrix.count == 2
    assert isinstance(matrix.element, ArrayType) and matrix.element.count == 3 and sizeof(matrix) == 48
    packet = program.find_type("struct packet")
    assert isinstance(packet, StructType)
    flexible = packet.members[1].type
    assert isinstance(flexible, ArrayType) and flexible.count is None and whatis(flexible) == "unsigned char []"
    perm = program.find_type("enum perm")
    assert isinstance(perm, EnumType) and perm.flag and not perm.signed
    sign = program.find_type("enum sign")
    assert isinstance(sign, EnumType) and sign.signed and not sign.flag
    binop = program.find_type("binop_fn")
    assert isinstance(binop, TypedefType)
    target = binop.target
    assert isinstance(target, PointerType) and isinstance(target.target, FunctionType)
    assert [whatis(p) for p in target.target.params] == ["int", "int"]
    node = strip_typedefs(program.find_type("struct node"))
    assert strip_typedefs(node.members[1].type.target) is node  # the recursive pointer is the same type
    assert ptype(program.find_variable("cv_var").type) == "const volatile unsigned int"
    assert isinstance(strip_typedefs(program.find_variable("b_var").type), IntegerType)
