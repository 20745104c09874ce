"""``print``, ``whatis`` and ``ptype`` of C expressions, answer for answer as gdb.

Every case runs in Debian's gdb (``gdb -batch -ex ... ELF``, no process:
values come from the ELF's data) and in kvmbench's evaluator on the same
ELF, the types fixture (tests/fixtures/symbols/types.c): one global of
every kind of C type with known values. The answers must be equal text,
errors included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.errors import KvmbenchError
from kvmbench.expressions import Evaluator
from kvmbench.expressions.format import parse_format
from kvmbench.symbols.program import Program

GLOBALS = [
    "c_var", "sc_var", "uc_var", "s_var", "us_var", "i_var", "u_var", "l_var", "ul_var", "ll_var", "ull_var",
    "b_var", "f_var", "d_var", "tiny_var", "ld_var", "ld_third", "ci_var", "vi_var", "cv_var", "big_var", "ip_var", "ipp_var", "vp_var",
    "null_str", "str_var", "esc_var", "arr_str", "full_str", "zeros", "mostly", "few", "matrix", "origin", "pts",
    "corner_ptr", "flags_var", "num_var", "list_b", "list_a", "color_var", "odd_color", "sign_var", "perm_var",
    "no_perm", "odd_perm", "nest_var", "op_var", "row_data", "fn_var", "pkt_ptr", "file_static",
    "add", "scoped", "_start",
]

INTEGERS = [
    "p 4294967296", "p 2147483648", "p -2147483648", "p 0xffffffffffffffff", "p 18446744073709551616",
    "whatis 2147483648", "whatis 4294967296", "whatis 1u", "whatis 1ul", "whatis 0x80000000", "whatis 'a'",
    "whatis 1==1", "whatis c_var+1", "whatis uc_var+us_var", "whatis u_var+i_var", "whatis l_var+u_var",
    "p 1 << 70", "p 1 << -1", "p 7 >> 40", "p -1 >> 1", "p 1u << 31", "p 5 / 0", "p 5 % 0", "p -5 / 2",
    "p -5 % 2", "p -7 / 2", "p 10 % 3", "p 1 ? 2 : 3", "p !5", "p ~0", "p 3 > 2 && 0", "whatis 3 > 2",
    "p 2147483647 + 1", "p -2147483647 - 2", "p 1000000 * 1000000", "p 1000000L * 1000000", "p u_var * 2",
    "p l_var * l_var", "p ul_var + 1", "p b_var + 1", "p !b_var", "p 'A' + 1", "p c_var == 'A'", "p -c_var",
    "whatis -c_var", "whatis ~uc_var", "p 10 > 5 > 1", "p (1, 2)", "p i_var, u_var", "p 0b101", "p 10ul",
    "p 10lu", "p 10llu", "p 09.5", "p 08", "p 0x", "p 0b102", "p 1e5x", "p 12abc", "p 1.2.3",
]

FLOATS = [
    "p 0.1", "p 1.0/3", "p (float)1/3", "p 1e300*1e300", "p -(0.0/0)", "p 0.0/0.0", "p 100.0", "p 1e16",
    "p 123456789012345678.0", "p f_var * 2", "whatis f_var * 2", "whatis f_var + d_var", "whatis 1.5f + 1",
    "p 5.0 / 0", "p 10 / 3.0f", "p 3.0 == 3", "p d_var > 3", "p tiny_var * tiny_var", "p 1.0e308 * 10",
    "p -1.0e308 * 10", "p f_var / 0", "p -0.0", "p -(1.5)", "p .5", "p 5.", "p 1e3", "p 1.5e", "p 1.5e+",
    "p 0x1.8p1", "p 1e-400", "p 1.5f", "p 1.5F", "p (int)3.9", "p (int)-3.9", "p (float)d_var",
    "p (double)f_var", "p (long)d_var", "p (_Bool)0.5", "p ld_var * 2", "p ld_var + d_var", "p -ld_var",
    "p (long double)1/3", "p/x ld_var", "p ld_var > 1", "whatis ld_var + 1", "p (int)ld_third",
]

FORMATS = [
    "p/x d_var", "p/x f_var", "p/d f_var", "p/c i_var", "p/x i_var", "p/o i_var", "p/t i_var", "p/u i_var",
    "p/a ip_var", "p/a 0x401005", "p/s str_var", "p/z i_var", "p/x pts", "p/x flags_var", "p/d c_var",
    "p/x arr_str", "p/c mostly", "p/s arr_str", "p/x color_var", "p/d perm_var", "p/x b_var", "p/t 0", "p/o 0",
    "p/x -1", "p/z 5", "p/s i_var", "p/f i_var", "p/f 3", "p/x 1.5", "p/c 300", "p/u -1",
    "p/d 0xffffffffffffffff", "p/x (short)-1", "p/t 5", "p/o 8", "p/c 65", "p/x 'a'", "p/d 'a'",
    "p/u (char)-1", "p/z 0", "p/x -1L", "p/z (char)5", "p/x ip_var", "p/d ip_var", "p/a &pts[1]", "p/a 0",
    "p/s 5", "p/x str_var", "p/c arr_str", "p/x nest_var", "p/d color_var", "p/x zeros", "p/f 1", "p/f 1L",
    "p/f (char)1", "p/f d_var", "p/f f_var", "p/c f_var", "p/a f_var", "p/t -1", "p/o -1", "p/u l_var",
    "p/d ul_var", "p/c b_var", "p/x num_var.f", "p/x num_var", "p/w i_var", "p/2x i_var", "p/i i_var",
    "p/q i_var",
]

POINTERS_AND_AGGREGATES = [
    "p ip_var + 1", "p &pts[2] - &pts[0]", "whatis &pts[2] - &pts[0]", "p *ip_var", "p &i_var", "p &add",
    "p *add", "p add + 1", "p &nest_var.b", "p &flags_var.mode", "p nest_var.b.mode", "p list_a.next->name",
    "p list_a->value", "p list_a.next.value", "p pts[1]", "p matrix[1]", "p matrix[1][2]", "p (long)&pts",
    "p i_var@3", "p *&pts[0]@2", "whatis &matrix[0]", "whatis matrix[0]", "whatis *matrix", "whatis &matrix",
    "p *matrix", "p &matrix", "p &matrix[1]", "p *pts", "p pts + 1", "p *(pts + 1)", "p &*ip_var",
    "p (int*)vp_var", "p *(int*)vp_var", "p {int}0x403048", "p {struct point}&pts[2]", "p !ip_var",
    "p ip_var && 1", "p ip_var == 0", "p null_str == 0", "p (long)ip_var - (long)&i_var", "p ip_var - ip_var",
    "p list_a.name", "p *list_a.next", "p list_a.next->next", "p fn_var.op", "p *fn_var.rows",
    "p fn_var.rows[1]", "p fn_var.rows[1][2]", "p *fn_var.cv", "p fn_var.cv", "p nest_var.n",
    "p nest_var.n.bytes", "p nest_var.n.bytes[0]", "p num_var.f", "p num_var.bytes", "p color_var == GREEN",
    "p (int)color_var", "p color_var + 1", "p perm_var & PERM_READ", "p PERM_READ | PERM_WRITE",
    "p (enum perm)3", "p (enum perm)8", "p (char)65", "p (char)300", "p (unsigned char)-1", "p (_Bool)5",
    "p (enum color)5", "p RED", "p BLUE + 1", "whatis BLUE", "p sizeof(int)", "p sizeof i_var",
    "p sizeof(pts)/sizeof(pts[0])", "p sizeof(struct point)", "p sizeof(void)", "p sizeof(add)",
    "p sizeof(int[10])", "p ip_var[0]", "p ip_var[1]", "p arr_str[1]", "p arr_str + 1", "p *arr_str@3",
    "p str_var[0]", "p *str_var@5", "p str_var + 7", "p &str_var[7]", "p esc_var", "p \"abc\"",
    "p sizeof(\"abc\")", "p \"x\" \"y\"", "p '\\033'", "p '\\\\'", "p '\\''", "p \"a\\\"b\"", "p (char)i_var",
    "p *4", "p 3 +* 4",
]

ERRORS = [
    "p nosuch", "p 1 +", "p (1", "p 1)", "p )", "p 1 2", "p 1]", "p [1]", "p i_var +", "p i_var = ", "p #",
    "p `", "p 'ab'", "p ''", "p 'ab", "p \"abc", "p i_var.x", "p origin.z", "p ip_var->x", "p c_var[0]",
    "p -matrix", "p (struct point)1", "p *vp_var", "p 0[ip_var]", "p ip_var + ip_var", "p ip_var * 2",
    "p 5@2", "p pts[0]@0", "p add(1,2)", "p $rax = 5", "p $rsp", "p $pc", "p main", "ptype struct nosuch",
]

HISTORY_AND_TYPES = [
    "p $", "p $1", "p 5", "p $", "p $$", "p $1 + 1", "p $$2", "p $99", "p $foo", "p $_",
    "whatis point_t", "ptype point_t", "whatis struct point", "ptype struct point", "whatis binop_fn",
    "ptype binop_fn", "ptype int", "whatis unsigned", "whatis unsigned long", "ptype union number",
    "ptype enum perm", "whatis enum color", "ptype struct nested", "whatis struct nested", "ptype u64",
    "whatis (u64)1", "p (u64)-1", "p (point_ptr)0", "p *(point_ptr)&pts[2]", "whatis (char*)0",
    "p (struct point *)pts", "p *(struct point *)pts", "whatis nest_var.anon", "ptype nest_var.anon",
]


@pytest.fixture(scope="module")
def types_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_program(tmp_path_factory.mktemp("types"), ["types.c"], "types")


def our_answers(elf: Path, commands: list[str]) -> list[str]:
    """kvmbench's answers, one evaluator for all commands (one value history, as in one gdb)."""
    evaluator = Evaluator(Program.from_path(elf))
    answers = []
    for command in commands:
        verb, _, expression = command.partition(" ")
        verb, _, spec = verb.partition("/")
        try:
            if verb == "p":
                answers.append(evaluator.print(expression, parse_format(spec) if spec else None))
            elif verb == "whatis":
                answers.append(evaluator.whatis(expression))
            elif verb == "ptype":
                answers.append(evaluator.ptype(expression))
            else:
                raise AssertionError(command)
        except KvmbenchError as exc:
            answers.append(str(exc))
    return answers


def assert_like_gdb(elf: Path, commands: list[str]) -> None:
    expected = build.gdb_answers(elf, commands)
    ours = our_answers(elf, commands)
    mismatches = [(c, e, o) for c, e, o in zip(commands, expected, ours, strict=True) if e != o]
    assert not mismatches, "\n".join(f"{c!r}: gdb {e!r}, ours {o!r}" for c, e, o in mismatches)


def test_print_whatis_ptype_of_every_kind_of_global(types_elf: Path) -> None:
    assert_like_gdb(types_elf, [f"{verb} {name}" for name in GLOBALS for verb in ("p", "whatis", "ptype")])


def test_integer_literals_and_arithmetic_follow_gdbs_c_rules(types_elf: Path) -> None:
    assert_like_gdb(types_elf, INTEGERS)


def test_floating_point_prints_with_gdbs_precision(types_elf: Path) -> None:
    assert_like_gdb(types_elf, FLOATS)


def test_print_formats_apply_to_every_scalar(types_elf: Path) -> None:
    assert_like_gdb(types_elf, FORMATS)


def test_pointers_arrays_structs_and_casts(types_elf: Path) -> None:
    assert_like_gdb(types_elf, POINTERS_AND_AGGREGATES)


def test_errors_are_worded_as_gdb_words_them(types_elf: Path) -> None:
    assert_like_gdb(types_elf, ERRORS)


def test_value_history_convenience_variables_and_type_names(types_elf: Path) -> None:
    assert_like_gdb(types_elf, HISTORY_AND_TYPES)


def test_the_same_answers_at_o2(tmp_path: Path) -> None:
    elf = build.build_program(tmp_path, ["types.c"], "types-o2", optimise=True)
    assert_like_gdb(elf, [f"{verb} {name}" for name in GLOBALS for verb in ("p", "whatis")])
