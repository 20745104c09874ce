"""The symbol lookups a debugger needs: by name, by address, by location.

A :class:`SymbolTable` is built once from any loader's symbols (ELF,
System.map, kallsyms), optionally with the image's DWARF, and answers
every question with a dict or a bisect over sorted arrays: breakpoints
resolve names, stop cards format ``symbol+offset`` and ``file:line``, the
kernel completes names.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import re
from collections.abc import Iterable, Iterator

from kvmbench.errors import SymbolError
from kvmbench.symbols.dwarf import DebugInfo
from kvmbench.symbols.model import ABSOLUTE_SECTION, SourceLocation, Symbol, SymbolKind

# Location syntax accepted by SymbolTable.resolve, after an optional "*".
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")
_FILE_LINE = re.compile(r"(?P<file>.+):(?P<line>[0-9]+)")
_SYMBOL_OFFSET = re.compile(r"(?P<name>[^\s+\-]+)\s*(?:(?P<sign>[+-])\s*(?P<offset>.*))?")

# Sort rank of kinds where several symbols share an address: a function
# names code better than a data label at the same place.
_KIND_RANK = {SymbolKind.FUNCTION: 0, SymbolKind.OBJECT: 1, SymbolKind.OTHER: 2}

# A suggestion must be at least this similar (difflib ratio) to be offered.
_SUGGESTION_CUTOFF = 0.6
# Above this many names, suggestions come from a narrower scan.
_SUGGESTION_FULL_SCAN = 20_000


class SymbolTable:
    """Symbols of one guest image, indexed for the debugger's lookups.

    ``debug`` adds source-level answers (``file:line`` locations,
    post-prologue breakpoint addresses). ``debug_slide`` is what was added
    to every symbol address since the DWARF was read (a KASLR slide, see
    :meth:`relocated`). When several symbols share a name, the one listed
    first wins :meth:`get_by_name`; the loaders list global symbols first.
    """

    def __init__(
        self,
        symbols: Iterable[Symbol],
        *,
        debug: DebugInfo | None = None,
        debug_slide: int = 0,
        name: str = "<symbols>",
    ) -> None:
        """Index ``symbols`` (any order)."""
        self.name = name
        self._debug = debug
        self._debug_slide = debug_slide
        self._symbols = tuple(symbols)
        self._by_name: dict[str, list[Symbol]] = {}
        for symbol in self._symbols:
            self._by_name.setdefault(symbol.name, []).append(symbol)
        self._names = sorted(self._by_name)

        by_address = sorted(self._symbols, key=lambda s: s.address)
        self._functions = tuple(s for s in by_address if s.kind is SymbolKind.FUNCTION)
        self._objects = tuple(s for s in by_address if s.kind is SymbolKind.OBJECT)

        # Address indexes over functions and objects. At one address the
        # preferred symbol sorts last, so a bisect to the right lands on it:
        # functions before objects, then earlier-listed (global) ones.
        ranked = [
            (symbol.address, -_KIND_RANK[symbol.kind], -index, symbol)
            for index, symbol in enumerate(self._symbols)
            if symbol.kind is not SymbolKind.OTHER
        ]
        ranked.sort(key=lambda item: item[:3])
        located = [item[3] for item in ranked]
        self._sized = [s for s in located if s.size > 0]
        self._sized_starts = [s.address for s in self._sized]
        # Running maximum of ends: a backward walk over sized symbols can
        # stop once no earlier symbol reaches the address.
        self._sized_reach: list[int] = []
        for symbol in self._sized:
            previous = self._sized_reach[-1] if self._sized_reach else 0
            self._sized_reach.append(max(previous, symbol.end))
        self._unsized = [s for s in located if s.size == 0]
        self._unsized_starts = [s.address for s in self._unsized]

    # -- the whole table --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._symbols)

    @property
    def debug(self) -> DebugInfo | None:
        """The image's DWARF, or None (System.map, stripped images)."""
        return self._debug

    def has_debug_info(self) -> bool:
        """Whether source-level lookups (``file:line``) are available."""
        return self._debug is not None

    def iter_symbols(self) -> Iterator[Symbol]:
        """Every symbol, in the order the table was built from."""
        return iter(self._symbols)

    def functions(self) -> tuple[Symbol, ...]:
        """All function symbols, by ascending address."""
        return self._functions

    def objects(self) -> tuple[Symbol, ...]:
        """All data object symbols, by ascending address."""
        return self._objects

    def iter_names(self, prefix: str = "") -> Iterator[str]:
        """Distinct symbol names starting with ``prefix``, sorted (for completion)."""
        for name in self._names[bisect.bisect_left(self._names, prefix):]:
            if not name.startswith(prefix):
                break
            yield name

    # -- by name ------------------------------------------------------------------

    def get_by_name(self, name: str) -> Symbol | None:
        """The symbol called ``name`` (the first listed, if several), or None."""
        symbols = self._by_name.get(name)
        return symbols[0] if symbols else None

    def get_all_by_name(self, name: str) -> tuple[Symbol, ...]:
        """Every symbol called ``name`` (file-static namesakes), first listed first."""
        return tuple(self._by_name.get(name, ()))

    def has_name(self, name: str) -> bool:
        """Whether some symbol is called ``name``."""
        return name in self._by_name

    # -- by address -----------------------------------------------------------------

    def get_containing(self, address: int) -> Symbol | None:
        """The function or object whose [address, address + size) holds ``address``.

        Where none does, a size-0 function or object (an assembly label,
        any System.map entry) is taken to extend up to the next sized
        symbol: the nearest one at or below ``address`` is returned, as gdb
        does with minimal symbols. Otherwise None.
        """
        i = bisect.bisect_right(self._sized_starts, address) - 1
        while i >= 0 and self._sized_reach[i] > address:
            if self._sized[i].contains(address):
                return self._sized[i]
            i -= 1
        j = bisect.bisect_right(self._unsized_starts, address) - 1
        if j < 0:
            return None
        label = self._unsized[j]
        # A sized symbol between the label and the address ends the label's
        # implicit extent (and did not contain the address).
        sized_between = (
            bisect.bisect_right(self._sized_starts, address)
            - bisect.bisect_left(self._sized_starts, label.address)
        )
        return label if sized_between == 0 else None

    def format_address(self, address: int) -> str:
        """``fib+12`` (decimal offset, as gdb prints), ``fib``, or ``0x1234`` if unknown."""
        name = self.symbolize(address)
        return name if name is not None else f"{address:#x}"

    def symbolize(self, address: int) -> str | None:
        """``fib+12`` or ``fib`` for an address a symbol holds, as gdb's ``<...>`` shows it; None if none does."""
        symbol = self.get_containing(address)
        if symbol is None:
            return None
        offset = address - symbol.address
        return symbol.name if offset == 0 else f"{symbol.name}+{offset}"

    def get_source_location(self, address: int) -> SourceLocation | None:
        """The ``file:line`` of the code at ``address`` (needs DWARF)."""
        if self._debug is None:
            return None
        return self._debug.get_source_location(address - self._debug_slide)

    def get_breakpoint_address(self, symbol: Symbol) -> int:
        """Where gdb's ``break NAME`` would stop for ``symbol``.

        For a function with line information this is past the prologue
        (see :meth:`DebugInfo.get_breakpoint_address`); for anything else,
        and without DWARF, it is ``symbol.address`` (gdb's ``break *NAME``).
        """
        if self._debug is None or symbol.kind is not SymbolKind.FUNCTION:
            return symbol.address
        unslid = dataclasses.replace(symbol, address=symbol.address - self._debug_slide)
        return self._debug.get_breakpoint_address(unslid) + self._debug_slide

    # -- locations --------------------------------------------------------------------

    def resolve(self, location: str, *, skip_prologue: bool = False) -> int:
        """Turn a gdb-style location into an address.

        Accepted forms: ``sym``, ``sym+off`` / ``sym-off`` (``off`` decimal or
        ``0x`` hex), ``0xADDR`` or decimal, ``FILE:LINE`` (needs DWARF), and
        any of the first three after ``*``. With ``skip_prologue``, a bare
        function name and a ``FILE:LINE`` that lands on a function's first
        instruction give the post-prologue address, as gdb's ``break``
        does; ``*`` always means the exact address. For a line with code in
        several functions, the lowest address is returned (see
        :meth:`resolve_all`).

        Raises :class:`SymbolError` for unknown names (suggesting a close
        one), malformed offsets and lines without code.
        """
        return self.resolve_all(location, skip_prologue=skip_prologue)[0]

    def resolve_all(self, location: str, *, skip_prologue: bool = False) -> list[int]:
        """Like :meth:`resolve`, with every address of a multi-place ``FILE:LINE``."""
        text = location.strip()
        exact = text.startswith("*")
        if exact:
            text = text[1:].strip()
        if not text:
            raise SymbolError(f"empty location {location.strip()!r}")
        if _NUMBER.fullmatch(text):
            return [_parse_number(text)]
        file_line = _FILE_LINE.fullmatch(text)
        if file_line and not exact:
            return self._resolve_file_line(file_line["file"], int(file_line["line"]), skip_prologue)
        match = _SYMBOL_OFFSET.fullmatch(text)
        if match is None:
            raise SymbolError(
                f"malformed location {location.strip()!r}; expected SYMBOL[+OFFSET], ADDRESS or FILE:LINE"
            )
        symbol = self.get_by_name(match["name"])
        if symbol is None:
            raise SymbolError(self._unknown_symbol_message(match["name"]))
        if match["sign"] is None:
            if skip_prologue and not exact:
                return [self.get_breakpoint_address(symbol)]
            return [symbol.address]
        offset_text = match["offset"].strip()
        if not _NUMBER.fullmatch(offset_text):
            raise SymbolError(
                f"malformed offset {offset_text!r} in {location.strip()!r}; expected decimal or 0x hex"
            )
        offset = _parse_number(offset_text)
        address = symbol.address + offset if match["sign"] == "+" else symbol.address - offset
        if address < 0:
            raise SymbolError(f"{location.strip()!r} is below address 0")
        return [address]

    # -- relocation -------------------------------------------------------------------

    def relocated(self, slide: int) -> SymbolTable:
        """A copy with ``slide`` added to every address (KASLR, PIE load base).

        Absolute symbols (:data:`ABSOLUTE_SECTION`) keep their values.
        DWARF lookups keep working: the copy translates addresses back.
        """
        if slide == 0:
            return self
        moved = []
        for symbol in self._symbols:
            if symbol.section == ABSOLUTE_SECTION:
                moved.append(symbol)
                continue
            address = symbol.address + slide
            if address < 0:
                raise SymbolError(f"slide {slide:#x} moves {symbol.name} below address 0")
            moved.append(dataclasses.replace(symbol, address=address))
        return SymbolTable(moved, debug=self._debug, debug_slide=self._debug_slide + slide, name=self.name)

    # -- internals ----------------------------------------------------------------------

    def _resolve_file_line(self, file: str, line: int, skip_prologue: bool) -> list[int]:
        if self._debug is None:
            raise SymbolError(f"cannot resolve '{file}:{line}': {self.name} has no line information (DWARF)")
        addresses = self._debug.get_addresses(file, line)
        if not addresses:
            if not self._debug.has_source_file(file):
                raise SymbolError(_unknown_file_message(self._debug, file))
            raise SymbolError(f"no code at or after line {line} of '{file}'")
        if skip_prologue:
            result = []
            for address in addresses:
                function = self._debug.get_function_range(address)
                if function is not None and function.low == address:
                    stub = Symbol(function.name, address, function.high - address, SymbolKind.FUNCTION)
                    address = self._debug.get_breakpoint_address(stub)
                result.append(address)
            addresses = result
        return [address + self._debug_slide for address in addresses]

    def _unknown_symbol_message(self, name: str) -> str:
        candidates = self._names
        if len(candidates) > _SUGGESTION_FULL_SCAN and name:
            # difflib costs ~5 us a name: on a kernel-sized table, scan only
            # names with the same first character (typos rarely start there).
            low = bisect.bisect_left(candidates, name[0])
            high = bisect.bisect_left(candidates, chr(ord(name[0]) + 1))
            candidates = candidates[low:high]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=_SUGGESTION_CUTOFF)
        suggestion = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown symbol '{name}'{suggestion}"



def _unknown_file_message(debug: DebugInfo, file: str) -> str:
    files = list(debug.iter_source_files())
    close = difflib.get_close_matches(file, files, n=1, cutoff=_SUGGESTION_CUTOFF)
    suggestion = f"; did you mean '{close[0]}'?" if close else ""
    return f"no source file '{file}' in the line table{suggestion}"


def _parse_number(text: str) -> int:
    """Decimal or 0x hex. A leading 0 stays decimal: octal offsets would
    surprise more people than they help."""
    return int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
