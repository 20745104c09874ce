"""The static half of gdb's daily commands, answer for answer as Debian's gdb.

For every bundled guest (kvmbench/guests/bin/*.elf), the same guests built
at -O2 -fomit-frame-pointer, and the symbol fixtures, kvmbench answers
``info line``, ``list``, ``info scope``, ``info address``, ``info symbol``,
``whatis``, ``ptype`` and ``p`` (static values from the ELF's data) for
every function, every global and every source line, and the answers must
be gdb's text exactly (``gdb -batch -ex ... ELF``, run where the sources
are, with no process). Live commands (``bt``, locals at stops) are checked
in test_symbols_locations.py against gdb running a host build.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.symbols import build

from kvmbench.errors import KvmbenchError
from kvmbench.expressions import Evaluator
from kvmbench.expressions.format import parse_format
from kvmbench.symbols.describe import info_address, info_scope
from kvmbench.symbols.listing import SourceLister, info_symbol
from kvmbench.symbols.program import Program
from kvmbench.symbols.units import VariableKind

GUEST_ELFS = sorted((build.GUESTS / "bin").glob("*.elf"))


class Answers:
    """kvmbench's answer to one gdb command line, with gdb's state across commands."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.evaluator = Evaluator(program)
        self.lister = SourceLister(program)

    def __call__(self, command: str) -> str:
        try:
            return self._answer(command)
        except KvmbenchError as exc:
            return str(exc)

    def _answer(self, command: str) -> str:
        for prefix, answer in (
            ("info line", self.lister.info_line),
            ("info scope", lambda arg: info_scope(self.program, arg)),
            ("info address", lambda arg: info_address(self.program, arg)),
            ("info symbol", lambda arg: info_symbol(self.program, self.evaluator.evaluate(arg).as_int(), arg)),
            ("list", self.lister.list),
            ("whatis", self.evaluator.whatis),
            ("ptype", self.evaluator.ptype),
        ):
            if command == prefix or command.startswith(prefix + " "):
                return answer(command[len(prefix):].strip())
        verb, _, expression = command.partition(" ")
        if verb.split("/")[0] in ("p", "print"):
            spec = verb.partition("/")[2]
            return self.evaluator.print(expression, parse_format(spec) if spec else None)
        raise AssertionError(f"no answer for {command!r}")


def unique(names: Iterator[str]) -> list[str]:
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return sorted(name for name, count in seen.items() if count == 1)


def commands_for(program: Program) -> list[str]:
    """Every static command worth asking about this program, in a gdb-like session order."""
    units = program.units
    assert units is not None
    functions = unique(f.name for unit in units.iter_units() for f in unit.functions if f.name)
    globals_ = unique(v.name for unit in units.iter_units() for v in unit.iter_variables()
                      if v.kind in (VariableKind.GLOBAL, VariableKind.FILE_STATIC))
    commands = ["list", "list", "list -", "list -", "info line main", "list 1,5", "list 3,", "list ,4"]
    for name in functions:
        commands += [f"info line {name}", f"info scope {name}", f"info address {name}", f"list {name}",
                     f"whatis {name}", f"ptype {name}", f"p {name}", f"p &{name}", f"info symbol {name}"]
    for name in globals_:
        commands += [f"p {name}", f"p/x {name}", f"whatis {name}", f"ptype {name}", f"info address {name}",
                     f"p &{name}", f"p sizeof({name})", f"info symbol &{name}"]
    debug = program.debug
    assert debug is not None
    for file in debug.iter_source_files():
        lines = debug.get_source_lines(file)
        if lines is None or not file.endswith(".c"):
            continue
        for number in range(1, len(lines) + 2):
            commands.append(f"info line {file}:{number}")
        for number in range(1, len(lines) + 1, 3):
            commands.append(f"info scope {file}:{number}")
        commands += [f"list {file}:1", "list", "list", f"list {file}:{len(lines)}", "list", "list -"]
    return commands


def assert_static_commands_match_gdb(elf: Path, sources: Path) -> int:
    program = Program.from_path(elf, search_path=[sources])
    commands = commands_for(program)
    expected = build.gdb_answers(elf, commands, cwd=sources)
    answers = Answers(program)
    mismatches = []
    for command, theirs in zip(commands, expected, strict=True):
        ours = answers(command)
        if ours != theirs:
            mismatches.append(f"{command!r}:\n  gdb:  {theirs!r}\n  ours: {ours!r}")
    assert not mismatches, f"{len(mismatches)} of {len(commands)} differ:\n" + "\n".join(mismatches[:40])
    return len(commands)


@pytest.mark.parametrize("elf", GUEST_ELFS, ids=lambda p: p.stem)
def test_static_commands_match_gdb_on_the_bundled_guests(elf: Path) -> None:
    assert assert_static_commands_match_gdb(elf, build.GUESTS) > 300


@pytest.fixture(scope="module")
def guests_o2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build_guests_optimised(tmp_path_factory.mktemp("guests-o2"))


@pytest.mark.slow
def test_static_commands_match_gdb_on_the_guests_built_at_o2(guests_o2: Path) -> None:
    for elf in sorted(guests_o2.glob("*.elf")):
        assert_static_commands_match_gdb(elf, build.GUESTS)


@pytest.mark.parametrize(("source", "optimise"), [("types.c", False), ("types.c", True), ("frames.c", True)])
def test_static_commands_match_gdb_on_the_fixtures(tmp_path: Path, source: str, optimise: bool) -> None:
    elf = build.build_program(tmp_path, [source], Path(source).stem, optimise=optimise)
    assert_static_commands_match_gdb(elf, tmp_path)
