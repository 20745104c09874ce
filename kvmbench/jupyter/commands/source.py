"""Source and symbols: list, info line, info source, info symbol, info
address, info scope, info functions|variables|types [REGEX].

The answers are gdb's (:mod:`kvmbench.symbols.listing`,
:mod:`kvmbench.symbols.describe`), with a live guest's state: ``list``
after a stop or a ``frame`` shows the lines around that frame's line, and
``*EXPRESSION`` is evaluated in the selected frame.
"""

from __future__ import annotations

import re

from kvmbench.errors import KvmbenchError, SymbolError, UsageError
from kvmbench.jupyter.commands.workbench import Workbench
from kvmbench.symbols.describe import info_address, info_scope
from kvmbench.symbols.listing import LINES_TO_LIST, SourceLister, info_symbol
from kvmbench.symbols.frames import SourceFrame
from kvmbench.symbols.model import SymbolKind
from kvmbench.symbols.units import VariableKind


class LiveLister(SourceLister):
    """gdb's ``list`` state, moved by stops and frame selection as gdb moves it."""

    @property
    def current_file(self) -> str | None:
        """The file ``list`` shows now (None before any listing or stop)."""
        return self._file

    def center_on(self, file: str, line: int) -> None:
        """After a stop at ``file:line``, ``list`` shows the lines around it."""
        first = max(line - LINES_TO_LIST // 2, 1)
        self._file, self._first, self._last = file, first, first - 1

    def center_on_frame(self, frame: SourceFrame) -> None:
        if frame.location is not None:
            self.center_on(frame.location.file, frame.location.line)

    def list(self, argument: str = "") -> str:  # noqa: A003 - gdb's command name
        """gdb's ``list``; ``list`` right after a stop starts where :meth:`center_on` put it."""
        if argument.strip() in ("", "+") and self._last is not None and self._first is not None \
                and self._last == self._first - 1:
            assert self._file is not None
            return self._show(self._file, self._first, self._first + LINES_TO_LIST - 1)
        return super().list(argument)


def list_text(wb: Workbench, args: str) -> str:
    return wb.lister.list(args)


def info_line_text(wb: Workbench, args: str) -> str:
    text = args.strip()
    if not text:
        if not wb.live:
            raise SymbolError("No line number information available.")
        frame = wb.frame()
        text = f"*{frame.pc:#x}"
    if wb.s.symbols.debug is None:
        # No line table at all: gdb answers about the address.
        address = wb.value_of(text[1:]) if text.startswith("*") else wb.s.symbols.resolve(text)
        return f"No line number information available for address {wb.annotate(address)}"
    return wb.lister.info_line(text)


def info_source_text(wb: Workbench) -> str:
    """gdb's ``info source`` for the current source file."""
    file = wb.lister.current_file
    if file is None and wb.live:
        location = wb.frame().location
        file = location.file if location is not None else None
    if file is None:
        return "No current source file."
    program = wb.program
    unit = None
    units = getattr(program, "units", None)
    if units is not None:
        for candidate in units.iter_units():
            if candidate.name == file or candidate.name.endswith("/" + file):
                unit = candidate
                break
    debug = wb.s.symbols.debug
    lines = debug.get_source_lines(file) if debug is not None else None
    out = [f"Current source file is {file}"]
    if unit is not None and unit.comp_dir:
        out.append(f"Compilation directory is {unit.comp_dir}")
    if lines is not None:
        out.append(f"Contains {len(lines)} lines.")
    out.append("Source language is c.")
    if unit is not None and unit.producer:
        out.append(f"Producer is {unit.producer}.")
    out.append("Compiled with DWARF " + str(unit.version if unit is not None else "?") + " debugging format.")
    out.append("Does not include preprocessor macro info.")
    return "\n".join(out)


def info_symbol_text(wb: Workbench, args: str) -> str:
    if not args.strip():
        raise UsageError("Argument required (address).")
    return info_symbol(wb.program, wb.value_of(args), args.strip())


def info_address_text(wb: Workbench, args: str) -> str:
    if not args.strip():
        raise UsageError("Argument required.")
    frame = wb.frame() if wb.live else None
    return info_address(wb.program, args.strip(), frame)


def info_scope_text(wb: Workbench, args: str) -> str:
    if not args.strip():
        raise UsageError("requires an argument (an expression or variable): foo*(a+b)")
    return info_scope(wb.program, args.strip())


# --- info functions / variables / types ----------------------------------------------


def _declaration(type_text: str, name: str) -> str:
    """A C declaration from gdb's type text: ``long (long)`` and ``fib`` give ``long fib(long)``."""
    depth = 0
    for i in range(len(type_text) - 1, -1, -1):
        char = type_text[i]
        if char == ")":
            depth += 1
        elif char == "(":
            depth -= 1
            if depth == 0:
                head = type_text[:i].rstrip()
                joiner = "" if head.endswith("*") else " "
                return f"{head}{joiner}{name}{type_text[i:]}"
    bracket = type_text.find(" [")
    if bracket >= 0:
        return f"{type_text[:bracket]} {name}{type_text[bracket + 1:]}"
    joiner = "" if type_text.endswith("*") else " "
    return f"{type_text}{joiner}{name}"


def _pattern(args: str) -> re.Pattern[str] | None:
    text = args.strip()
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as e:
        raise UsageError(f"Invalid regexp({e})") from None


def info_functions_text(wb: Workbench, args: str) -> str:
    """gdb's ``info functions [REGEX]``: by file, sorted by name, then the ELF symbols without DWARF."""
    pattern = _pattern(args)
    program = wb.program
    units = getattr(program, "units", None)
    evaluator = wb.evaluator(None)
    by_file: dict[str, list[tuple[str, str]]] = {}
    described: set[str] = set()
    if units is not None:
        for unit in units.iter_units():
            for function in unit.functions:
                name = function.name
                if name is None or (pattern is not None and not pattern.search(name)):
                    continue
                described.add(name)
                try:
                    type_text = evaluator.whatis(name)[len("type = "):]
                except KvmbenchError:
                    type_text = "void (void)"
                decl = _declaration(type_text, name)
                if not function.external:
                    decl = "static " + decl
                line = function.decl.line if getattr(function, "decl", None) is not None else None
                prefix = f"{line}:\t" if line else "\t"
                by_file.setdefault(unit.name, []).append((name, f"{prefix}{decl};"))
    header = (f'All functions matching regular expression "{args.strip()}":' if pattern is not None
              else "All defined functions:")
    out = [header]
    for file in sorted(by_file):
        out += ["", f"File {file}:"] + [text for _, text in sorted(set(by_file[file]), key=_by_name)]
    plain = sorted((sym.address, sym.name) for sym in wb.s.symbols.functions
                   if sym.name not in described and (pattern is None or pattern.search(sym.name)))
    if plain:
        out += ["", "Non-debugging symbols:"] + [f"0x{a:016x}  {n}" for a, n in plain]
    return "\n".join(out)


def _by_name(item: tuple[str, str]) -> tuple[str, str]:
    return item[0], item[1]


def info_variables_text(wb: Workbench, args: str) -> str:
    """gdb's ``info variables [REGEX]``."""
    pattern = _pattern(args)
    program = wb.program
    units = getattr(program, "units", None)
    by_file: dict[str, list[tuple[str, str]]] = {}
    described: set[str] = set()
    evaluator = wb.evaluator(None)
    if units is not None:
        for unit in units.iter_units():
            for variable in unit.iter_variables():
                if variable.kind not in (VariableKind.GLOBAL, VariableKind.FILE_STATIC):
                    continue
                name = variable.name
                if name is None or (pattern is not None and not pattern.search(name)):
                    continue
                described.add(name)
                from kvmbench.symbols.types import whatis

                decl = _declaration(whatis(variable.type), name)
                if variable.kind is VariableKind.FILE_STATIC:
                    decl = "static " + decl
                line = variable.decl.line if getattr(variable, "decl", None) is not None else None
                prefix = f"{line}:\t" if line else "\t"
                by_file.setdefault(unit.name, []).append((name, f"{prefix}{decl};"))
    del evaluator
    header = (f'All variables matching regular expression "{args.strip()}":' if pattern is not None
              else "All defined variables:")
    out = [header]
    for file in sorted(by_file):
        out += ["", f"File {file}:"] + [text for _, text in sorted(set(by_file[file]), key=_by_name)]
    plain = sorted((sym.address, sym.name) for sym in wb.s.symbols.iter_symbols()
                   if sym.kind is not SymbolKind.FUNCTION and sym.name not in described
                   and (pattern is None or pattern.search(sym.name)))
    if plain:
        out += ["", "Non-debugging symbols:"] + [f"0x{a:016x}  {n}" for a, n in plain]
    return "\n".join(out)


def info_types_text(wb: Workbench, args: str) -> str:
    """gdb's ``info types [REGEX]``: the program's named types by file."""
    pattern = _pattern(args)
    units = getattr(wb.program, "units", None)
    header = (f'All types matching regular expression "{args.strip()}":' if pattern is not None
              else "All defined types:")
    out = [header]
    if units is None:
        return header
    for unit in sorted(units.iter_units(), key=lambda u: u.name):
        names = sorted(name for name in list(unit.type_names) + sorted(unit.typedef_names)
                       if pattern is None or pattern.search(name))
        if names:
            out += ["", f"File {unit.name}:"] + [f"\t{name}" for name in dict.fromkeys(names)]
    return "\n".join(out)


from kvmbench.jupyter.commands.registry import command  # noqa: E402 - after the helpers it registers
from kvmbench.jupyter.display import Text  # noqa: E402


@command("list", "l", stopped=False, family="files")
def _list(wb: Workbench, args: str) -> object:
    """list [LINE | FUNCTION | FILE:LINE | FIRST,LAST | - | *ADDRESS]: source lines (ten, around the place named; after a stop, around it)."""
    return Text(list_text(wb, args))
