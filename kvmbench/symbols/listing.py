"""gdb's ``list``, ``info line`` and ``info symbol`` answers, from the line tables.

:class:`SourceLister` keeps what gdb keeps between ``list`` commands (the
current file and the lines last shown), so ``list``, ``list -`` and
``list FIRST,LAST`` go on as in gdb 13 (GDB manual, "Printing Source
Lines"): ten lines centred on a line or a function's first line,
``Line number N out of range; FILE has M lines.`` past the end,
``Already at the start of FILE.`` before the start.

``info line`` follows gdb's find_line_pc_range: the first statement row of
the line (or of the next line with code, which gdb reports as ``... but
contains no code.``), ending where the line table moves to another line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kvmbench.errors import SymbolError
from kvmbench.symbols.model import SymbolKind

#: gdb's ``set listsize``.
LINES_TO_LIST = 10

_NUMBER = re.compile(r"[0-9]+")


class SourceLister:
    """``list`` and ``info line`` for one program, with gdb's memory of the last listing.

    ``program`` is a :class:`~kvmbench.symbols.program.Program`;
    ``address_of(text)`` turns the expression after ``*`` into an address
    (defaults to the symbol table's locations: ``*0x1019d2``, ``*fib+4``).
    """

    def __init__(self, program: object, address_of: Callable[[str], int] | None = None) -> None:
        """A lister with no listing yet (the first ``list`` shows lines around ``main``)."""
        self.program = program
        self._address_of = address_of or program.symbols.resolve  # type: ignore[attr-defined]
        self._file: str | None = None
        self._first: int | None = None
        self._last: int | None = None
        self._missing: set[str] = set()

    # -- list ----------------------------------------------------------------------

    def list(self, argument: str = "") -> str:
        """gdb's ``list ARGUMENT``: the lines, ``N\\ttext`` each, or gdb's message."""
        argument = argument.strip()
        if argument in ("", "+"):
            if self._last is None:
                file, line = self._default_location()
                return self._around(file, line)
            assert self._file is not None
            return self._show(self._file, self._last + 1, self._last + LINES_TO_LIST)
        if argument == "-":
            if self._first is None:
                file, line = self._default_location()
                first = max(line - 5, 1)
                self._file, self._first, self._last = file, first, first + LINES_TO_LIST - 1
            assert self._file is not None and self._first is not None
            if self._first <= 1:
                raise SymbolError(f"Already at the start of {self._file}.")
            first = max(self._first - LINES_TO_LIST, 1)
            return self._show(self._file, first, self._first - 1)
        if "," in argument and not argument.startswith("*"):
            start_text, _, end_text = argument.partition(",")
            start_text, end_text = start_text.strip(), end_text.strip()
            if not start_text:
                file, last = self._linespec(end_text)
                return self._show(file, max(last - LINES_TO_LIST + 1, 1), last)
            file, first = self._linespec(start_text)
            if not end_text:
                return self._show(file, first, first + LINES_TO_LIST - 1)
            end_file, last = self._linespec(end_text, default_file=file)
            if end_file != file:
                raise SymbolError("Specified first and last lines are in different files.")
            return self._show(file, first, last)
        if argument.startswith("*"):
            address = self._address_of(argument[1:].strip())
            entry = self._line_entry(address)
            if entry is None:
                raise SymbolError(f"No line number information available for address {self._address(address)}")
            function = self._function_name(address)
            header = f"{address:#x} is in {function} ({entry.location.file}:{entry.location.line})."
            if function is None:
                header = f"{address:#x} is at {entry.location.file}:{entry.location.line}."
            return header + "\n" + self._around(entry.location.file, entry.location.line)
        file, line = self._linespec(argument)
        return self._around(file, line)

    def _around(self, file: str, line: int) -> str:
        first = max(line - 5, 1)
        return self._show(file, first, first + LINES_TO_LIST - 1)

    def _show(self, file: str, first: int, last: int) -> str:
        debug = self._debug()
        lines = debug.get_source_lines(file)
        if lines is None:
            self._file, self._first, self._last = file, first, last
            if file in self._missing:
                return f"{first}\tin {file}"
            self._missing.add(file)
            return f"{first}\t{file}: No such file or directory."
        if first > len(lines):
            # gdb has moved on all the same: `list -` then shows the lines before.
            self._file, self._first, self._last = file, first, first - 1
            raise SymbolError(f"Line number {first} out of range; {file} has {len(lines)} lines.")
        last = min(last, len(lines))
        self._file, self._first, self._last = file, first, last
        return "\n".join(f"{number}\t{lines[number - 1]}" for number in range(first, last + 1))

    # -- info line -------------------------------------------------------------------

    def info_line(self, argument: str) -> str:
        """gdb's ``info line ARGUMENT`` (a line, FILE:LINE, a function or ``*ADDRESS``)."""
        debug = self._debug()
        argument = argument.strip()
        if argument.startswith("*") or not self._is_line(argument) and self._function(argument) is not None:
            if argument.startswith("*"):
                address = self._address_of(argument[1:].strip())
            else:
                function = self._function(argument)
                assert function is not None
                address = function
            entry = self._line_entry(address)
            if entry is None:
                return f"No line number information available for address {self._address(address)}"
            return self._line_range(entry.location.file, entry.location.line, entry.address)
        file, line = self._file_line(argument)
        found = debug.find_line(file, line)
        if found is None:
            return f'Line number {line} is out of range for "{file}".'
        found_file, address, _exact = found
        return self._line_range(found_file, line, address)

    def _line_range(self, file: str, line: int, start: int) -> str:
        entry = self._line_entry(start)
        if entry is None or entry.location.line != line or entry.location.file != file:
            return f'Line {line} of "{file}" is at address {self._address(start)} but contains no code.'
        end = self._debug().get_line_end(entry.address)
        if end is None:
            end = entry.address
        return (f'Line {line} of "{file}" starts at address {self._address(entry.address)} '
                f"and ends at {self._address(end)}.")

    # -- info symbol -------------------------------------------------------------------

    def info_symbol(self, address: int, text: str | None = None) -> str:
        """gdb's ``info symbol ADDRESS``: ``fib + 11 in section .text``."""
        return info_symbol(self.program, address, text)

    # -- linespecs ----------------------------------------------------------------------

    def _linespec(self, text: str, default_file: str | None = None) -> tuple[str, int]:
        """(file, line) that a ``list`` argument names."""
        if text.startswith("*"):
            address = self._address_of(text[1:].strip())
            entry = self._line_entry(address)
            if entry is None:
                raise SymbolError(f"No line number information available for address {self._address(address)}")
            return entry.location.file, entry.location.line
        if _NUMBER.fullmatch(text):
            file = default_file or self._file or self._default_location()[0]
            return file, int(text)
        file_part, _, rest = text.rpartition(":")
        if file_part and _NUMBER.fullmatch(rest):
            return self._file_line(text)
        if file_part:
            resolved = self._debug().resolve_source_file(file_part)
            if resolved is None:
                raise SymbolError(f"No source file named {file_part}.")
            text = rest
        address = self._function(text)
        if address is None:
            raise SymbolError(f'Function "{text}" not defined.')
        entry = self._line_entry(address)
        if entry is None:
            raise SymbolError(f"No line number information available for address {self._address(address)}")
        return entry.location.file, entry.location.line

    def _file_line(self, text: str) -> tuple[str, int]:
        if _NUMBER.fullmatch(text):
            return self._file or self._default_location()[0], int(text)
        file_part, _, number = text.rpartition(":")
        if not file_part or not _NUMBER.fullmatch(number):
            raise SymbolError(f'Function "{text}" not defined.')
        resolved = self._debug().resolve_source_file(file_part)
        if resolved is None:
            raise SymbolError(f"No source file named {file_part}.")
        return resolved, int(number)

    def _is_line(self, text: str) -> bool:
        return bool(_NUMBER.fullmatch(text)) or bool(re.fullmatch(r".+:[0-9]+", text))

    def _function(self, name: str) -> int | None:
        symbols = self.program.symbols  # type: ignore[attr-defined]
        symbol = symbols.get_by_name(name)
        if symbol is None or symbol.kind is not SymbolKind.FUNCTION:
            return None
        return symbol.address

    def _default_location(self) -> tuple[str, int]:
        """gdb's default source line: ``main``'s body, nine lines back (select_source_symtab)."""
        symbols = self.program.symbols  # type: ignore[attr-defined]
        main = symbols.get_by_name("main")
        if main is None:
            # gdb's select_source_symtab: without main, the last file, from its first line.
            return self._last_source_file(), 1
        entry = self._line_entry(self.program.breakpoint_address(main.address))  # type: ignore[attr-defined]
        if entry is None:
            raise SymbolError("No symbol table is loaded.  Use the \"file\" command.")
        return entry.location.file, max(entry.location.line - (LINES_TO_LIST - 1), 1)

    def _last_source_file(self) -> str:
        units = self.program.units  # type: ignore[attr-defined]
        debug = self._debug()
        if units is not None:
            for unit in reversed(list(units.iter_units())):
                if not unit.name.endswith(".h"):
                    resolved = debug.resolve_source_file(unit.name)
                    if resolved is not None:
                        return resolved
        raise SymbolError("No symbol table is loaded.  Use the \"file\" command.")

    # -- helpers ------------------------------------------------------------------------

    def _debug(self):  # type: ignore[no-untyped-def]
        debug = self.program.debug  # type: ignore[attr-defined]
        if debug is None:
            raise SymbolError("No symbol table is loaded.  Use the \"file\" command.")
        return debug

    def _line_entry(self, address: int):  # type: ignore[no-untyped-def]
        return self._debug().get_line_entry(address)

    def _function_name(self, address: int) -> str | None:
        symbol = self.program.symbols.get_containing(address)  # type: ignore[attr-defined]
        return symbol.name if symbol is not None else None

    def _address(self, address: int) -> str:
        symbol = self.program.symbolize(address)  # type: ignore[attr-defined]
        return f"{address:#x} <{symbol}>" if symbol is not None else f"{address:#x}"


def info_symbol(program: object, address: int, text: str | None = None) -> str:
    """gdb's ``info symbol``: the symbol holding ``address`` and its section.

    ``text`` is the argument as typed, which gdb repeats when nothing matches.
    """
    symbol = program.symbols.get_containing(address)  # type: ignore[attr-defined]
    if symbol is None or symbol.section is None:
        return f"No symbol matches {text if text is not None else hex(address)}."
    offset = address - symbol.address
    name = symbol.name if offset == 0 else f"{symbol.name} + {offset}"
    return f"{name} in section {symbol.section}"
