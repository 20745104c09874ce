"""Source-level facts from DWARF: line tables, function ranges, globals.

Built on pyelftools' ``get_dwarf_info()`` and its line programs (DWARF 2-5,
"6.2 Line Number Information" of the DWARF 5 standard). Everything is read
once, when :class:`DebugInfo` is built, into sorted arrays searched with
bisect; lookups afterwards never touch pyelftools, so a malformed image
fails at load time with one :class:`~kvmbench.errors.SymbolError`.

The answers imitate the reference tools, and the tests compare them:
:meth:`DebugInfo.get_source_location` with ``addr2line``,
:meth:`DebugInfo.get_addresses` with gdb's ``info line FILE:LINE`` and
:meth:`DebugInfo.get_breakpoint_address` with gdb's ``break FUNCTION``.
"""

from __future__ import annotations

import bisect
import os
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.ranges import BaseAddressEntry

from kvmbench.symbols._translate import elftools_errors
from kvmbench.symbols.model import SourceLocation, Symbol

if TYPE_CHECKING:
    from elftools.dwarf.compileunit import CompileUnit
    from elftools.dwarf.die import DIE
    from elftools.dwarf.dwarfinfo import DWARFInfo
    from elftools.elf.elffile import ELFFile

# ELF section flag SHF_ALLOC (System V gABI, "Sections"): the section
# occupies memory at run time.
_SHF_ALLOC = 0x2

# Type chains in real DWARF are short; the bound only stops a corrupt,
# cyclic chain from recursing forever.
_MAX_TYPE_DEPTH = 16

_ADDRESS_FORMS = frozenset(
    {"DW_FORM_addr", "DW_FORM_addrx", "DW_FORM_addrx1", "DW_FORM_addrx2",
     "DW_FORM_addrx3", "DW_FORM_addrx4"}
)


@dataclass(frozen=True, slots=True)
class FunctionRange:
    """A function's code range [low, high) from its DW_TAG_subprogram.

    A function split into several ranges (``DW_AT_ranges``, e.g. a hot and
    a ``.cold`` part) is reported once per range.
    """

    name: str
    low: int
    high: int
    source: SourceLocation | None


class GlobalVariable(NamedTuple):
    """A global from DW_TAG_variable with a fixed address (DW_OP_addr).

    A tuple so that ``address, size, type_name = globals_["counter"]``
    works. ``size`` is 0 when the type's size is unknown; ``type_name`` is a
    C spelling (``int``, ``const char *``, ``unsigned char[4][16]``).
    """

    address: int
    size: int
    type_name: str


class LineEntry(NamedTuple):
    """A line-table row: where it starts, its source line, whether it starts a statement."""

    address: int
    location: SourceLocation
    is_stmt: bool


@dataclass(frozen=True, slots=True)
class _SourceFile:
    """A line-table file entry: how to show it and where it was compiled."""

    display: str  # the name as compiled, e.g. "src/fib.c"
    path: str  # that name joined to the compilation directory


@dataclass(frozen=True, slots=True)
class _Row:
    address: int
    file: _SourceFile
    line: int
    column: int
    is_stmt: bool
    prologue_end: bool
    discriminator: int = 0


@dataclass(frozen=True, slots=True)
class _Sequence:
    """A run of rows for contiguous code [start, end) (DW_LNE_end_sequence)."""

    start: int
    end: int
    rows: tuple[_Row, ...]
    unit: int = 0  # which compilation unit's line program


@dataclass(frozen=True, slots=True)
class _GdbEntry:
    """An entry of gdb's own line table for one file of one CU (line 0: an end marker)."""

    address: int
    line: int
    is_stmt: bool
    row: _Row | None


class DebugInfo:
    """Line tables, function ranges and globals of one image's DWARF.

    Build it with :meth:`from_elffile` (or through
    :meth:`kvmbench.symbols.elf.ElfImage.get_debug_info`). ``search_path``
    lists directories where :meth:`get_source_line` looks for sources whose
    compilation directory does not exist here (guests are built with the
    compilation directory mapped away and ``src/NAME.c`` file names).
    """

    def __init__(
        self,
        sequences: Iterable[_Sequence],
        functions: Iterable[FunctionRange],
        globals_: dict[str, GlobalVariable],
        declarations: dict[int, SourceLocation],
        *,
        name: str = "<dwarf>",
        search_path: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        """Index already-decoded DWARF facts; use :meth:`from_elffile`."""
        self.name = name
        self.search_path: tuple[Path, ...] = tuple(Path(p) for p in search_path)
        self._sequences = tuple(sorted(sequences, key=lambda s: (s.start, s.end)))
        self._functions = tuple(sorted(functions, key=lambda f: (f.low, f.high)))
        self._function_lows = [f.low for f in self._functions]
        # Running maximum of range ends: a backward walk from the last range
        # starting at or below an address can stop once no earlier range
        # reaches it (ranges of split functions interleave with others).
        self._function_reach: list[int] = []
        for function in self._functions:
            previous = self._function_reach[-1] if self._function_reach else 0
            self._function_reach.append(max(previous, function.high))
        self._sequence_starts = [s.start for s in self._sequences]
        self._globals = dict(globals_)
        self._declarations = dict(declarations)
        # Address index for addr2line-style lookups. An end_sequence marks a
        # hole up to the next sequence; at equal addresses the hole sorts
        # first so that a sequence starting where another ends wins, and
        # among rows at one address the last one wins, as in addr2line.
        marks: list[tuple[int, int, int, _Row | None]] = []
        for order, seq in enumerate(self._sequences):
            marks.append((seq.end, 0, order, None))
            for row in seq.rows:
                marks.append((row.address, 1, order, row))
        marks.sort(key=lambda m: (m[0], m[1], m[2]))
        self._row_addresses = [m[0] for m in marks]
        self._row_at = [m[3] for m in marks]
        # gdb's own line tables, built on first use (see _build_gdb_tables).
        self._gdb_tables_built = False
        # is_stmt rows per file, for FILE:LINE lookups (gdb, like the DWARF
        # standard, treats only is_stmt rows as line starts).
        self._stmt_rows: dict[_SourceFile, list[_Row]] = {}
        for seq in self._sequences:
            for row in seq.rows:
                if row.is_stmt:
                    self._stmt_rows.setdefault(row.file, []).append(row)
        self._files = tuple(sorted(self._stmt_rows, key=lambda f: f.display))
        # Instance-level cache of source files read from disk (path -> lines).
        self._source_cache: dict[Path, list[str]] = {}

    def _build_gdb_tables(self) -> None:
        """gdb's own line tables: one per (CU, file), as dwarf2/read.c records them.

        lnp_state_machine::record_line keeps fewer rows than the line
        program has: none for line 0; none repeating the previous row's line
        when that line has had a non-zero discriminator (dwarf_record_line_p,
        PR 17276); and when the rows move to another file, an end marker in
        the file left, which deletes that file's rows at the same address
        (buildsym.c record_line), while a non-statement row coming back at
        the same address is dropped. gdb answers "which line is this pc"
        (find_pc_sect_line) from these tables, so get_line_entry,
        get_line_end and find_line do too.
        """
        if self._gdb_tables_built:
            return
        self._gdb_tables_built = True
        tables: dict[tuple[int, _SourceFile], list[_GdbEntry]] = {}

        def record(key: tuple[int, _SourceFile], address: int, line: int, is_stmt: bool, row: _Row | None) -> None:
            table = tables.setdefault(key, [])
            if line == 0:
                last_line = None
                while table and table[-1].address == address:
                    last_line = table.pop().line
                    if table and table[-1].address != address:
                        break
                if table and last_line is None and table[-1].line == 0:
                    return  # an end marker after an end marker: nothing to end
            table.append(_GdbEntry(address, line, is_stmt, row))

        for seq in self._sequences:
            last_file: _SourceFile | None = None
            last_line = 0
            last_address: int | None = None
            discriminated = False
            for row in seq.rows:
                same_line = last_file == row.file and last_line == row.line
                discriminated = row.discriminator != 0 or (same_line and discriminated)
                file_changed = last_file is not None and last_file != row.file
                ignore = (file_changed and last_address == row.address and not row.is_stmt) or row.line == 0
                if not ignore:
                    if file_changed:
                        assert last_file is not None
                        record((seq.unit, last_file), row.address, 0, True, None)
                    if not (same_line and discriminated):
                        record((seq.unit, row.file), row.address, row.line, row.is_stmt, row)
                    last_file, last_line = row.file, row.line
                last_address = row.address
            if last_file is not None:
                record((seq.unit, last_file), seq.end, 0, True, None)
        self._gdb_tables: dict[tuple[int, _SourceFile], list[_GdbEntry]] = {}
        for key, table in tables.items():
            # gdb sorts by address, end markers first among equals (stable otherwise).
            table.sort(key=lambda e: (e.address, e.line != 0))
            self._gdb_tables[key] = table
        self._gdb_table_addresses = {key: [e.address for e in table] for key, table in self._gdb_tables.items()}
        self._unit_tables: dict[int, list[tuple[int, _SourceFile]]] = {}
        for key in self._gdb_tables:
            self._unit_tables.setdefault(key[0], []).append(key)

    def _gdb_lookup(self, address: int) -> tuple[_GdbEntry, int | None] | None:
        """gdb's find_pc_sect_line over the CU holding ``address``: (best entry, end)."""
        self._build_gdb_tables()
        sequence = self._sequence_containing(address)
        if sequence is None:
            return None
        best: _GdbEntry | None = None
        best_end: int | None = None
        for key in self._unit_tables.get(sequence.unit, []):
            table = self._gdb_tables[key]
            addresses = self._gdb_table_addresses[key]
            i = bisect.bisect_right(addresses, address)
            item = table[i] if i < len(table) else None
            if i > 0:
                prev_index = i - 1
                prev = table[prev_index]
                if best is None or prev.address > best.address:
                    if not prev.is_stmt:
                        j = prev_index
                        while j > 0 and table[j - 1].address == table[j].address and table[j - 1].line != 0 \
                                and not table[j].is_stmt:
                            j -= 1
                        if table[j].is_stmt:
                            prev = table[j]
                    best = prev
                    if best_end is not None and best_end <= best.address:
                        best_end = None
            if best is not None and item is not None and item.address > best.address \
                    and (best_end is None or best_end > item.address):
                best_end = item.address
        if best is None:
            return None
        return best, best_end

    # -- construction -------------------------------------------------------

    @classmethod
    def from_elffile(
        cls,
        elffile: ELFFile,
        *,
        name: str = "<elf>",
        search_path: Sequence[str | os.PathLike[str]] = (),
    ) -> DebugInfo | None:
        """Decode the DWARF of an open pyelftools ``ELFFile``; None without any.

        Raises :class:`~kvmbench.errors.SymbolError` when the DWARF is
        malformed.
        """
        with elftools_errors(name, "DWARF"):
            # strict: .eh_frame alone is unwind data, not debug information.
            if not elffile.has_dwarf_info(strict=True):
                return None
            reader = _DwarfReader(elffile)
            return cls(
                reader.sequences,
                reader.functions,
                reader.globals,
                reader.declarations,
                name=name,
                search_path=search_path,
            )

    # -- addresses to source --------------------------------------------------

    def get_source_location(self, address: int) -> SourceLocation | None:
        """The file and line whose code contains ``address`` (like addr2line).

        None when no line-table row covers the address.
        """
        row = self._row_for(address)
        if row is None or row.line == 0:
            # Line 0 is DWARF's "no source line" (compiler-generated code).
            return None
        return _location(row)

    def get_line_entry(self, address: int) -> LineEntry | None:
        """The line-table row gdb takes for ``address`` (find_pc_line's ``sal``).

        From gdb's own line tables (see _build_gdb_tables): the last entry
        at or below ``address`` in any file of its CU, a statement entry at
        the same address preferred. gdb shows a frame's pc in ``bt`` and stop
        lines unless the pc is this entry's address and the entry is a
        statement (frame_show_address). None where gdb has no line.
        """
        found = self._gdb_lookup(address)
        if found is None or found[0].line == 0 or found[0].row is None:
            return None
        entry = found[0]
        assert entry.row is not None
        return LineEntry(entry.address, _location(entry.row), entry.is_stmt)

    def get_line_end(self, address: int) -> int | None:
        """Where the line containing ``address`` ends (gdb's ``sal.end``): the next
        entry of any file of the CU above gdb's row. None if there is none."""
        found = self._gdb_lookup(address)
        return found[1] if found is not None else None

    def get_prologue_end(self, low: int, high: int) -> int | None:
        """The first DW_LNS_set_prologue_end row in (low, high), if the compiler marked one."""
        for row in self._rows_between(low, high):
            if row.is_stmt and row.prologue_end and row.address > low:
                return row.address
        return None

    def find_line(self, file: str, line: int) -> tuple[str, int, bool] | None:
        """gdb's find_line_symtab/find_line_common: ``(file, address, exact)`` for ``file:line``.

        In gdb's tables of the files ``file`` names: the first statement
        entry of the line, by address; failing that, of the nearest later
        line that has one (``exact`` False). None when the file is unknown
        or nothing follows the line.
        """
        self._build_gdb_tables()
        best: tuple[int, int, _SourceFile] | None = None
        for (_unit, source), table in self._gdb_tables.items():
            if not _file_matches(file, source):
                continue
            for entry in table:
                if not entry.is_stmt or entry.line == 0:
                    continue
                if entry.line == line:
                    return source.display, entry.address, True
                if entry.line > line and (best is None or entry.line < best[0]):
                    best = (entry.line, entry.address, source)
        if best is not None:
            return best[2].display, best[1], False
        return None

    def get_line_addresses(self, file: str, line: int) -> list[int]:
        """Like :meth:`get_addresses`, from gdb's own line tables (gdb's linespec for FILE:LINE).

        gdb's tables lack rows the line program has (see _build_gdb_tables),
        so at -O2 with inlined code the two can choose different places.
        """
        self._build_gdb_tables()
        entries = [
            entry
            for (_unit, source), table in self._gdb_tables.items() if _file_matches(file, source)
            for entry in table if entry.is_stmt and entry.line >= max(line, 1)
        ]
        if not entries:
            return []
        best_line = min(entry.line for entry in entries)
        first_per_function: dict[int, int] = {}
        for entry in entries:
            if entry.line != best_line:
                continue
            function = self.get_function_range(entry.address)
            key = function.low if function is not None else self._sequence_start(entry.address)
            if key not in first_per_function or entry.address < first_per_function[key]:
                first_per_function[key] = entry.address
        return sorted(first_per_function.values())

    def resolve_source_file(self, file: str) -> str | None:
        """The compiled name of the source file ``file`` names (``fib.c`` -> ``src/fib.c``)."""
        for source in self._files:
            if _file_matches(file, source):
                return source.display
        return None

    def get_source_lines(
        self, file: str, search_path: Sequence[str | os.PathLike[str]] = ()
    ) -> list[str] | None:
        """Every line of source ``file`` (found as :meth:`get_source_line` finds it), or None."""
        return self._read_source(file, [Path(p) for p in search_path])

    def get_decl_location(self, address: int) -> SourceLocation | None:
        """Where the function or global variable starting at ``address`` is declared."""
        return self._declarations.get(address)

    def iter_functions_with_ranges(self) -> Iterator[FunctionRange]:
        """Every function with code, by ascending address."""
        return iter(self._functions)

    def get_function_range(self, address: int) -> FunctionRange | None:
        """The function whose code range contains ``address``."""
        i = bisect.bisect_right(self._function_lows, address) - 1
        while i >= 0 and self._function_reach[i] > address:
            function = self._functions[i]
            if function.low <= address < function.high:
                return function
            i -= 1
        return None

    def get_globals(self) -> dict[str, GlobalVariable]:
        """Global variables with a fixed address, by name.

        Includes file-scope ``static`` variables; when two compilation units
        define the same name, the external (non-static) one wins.
        """
        return dict(self._globals)

    # -- source to addresses --------------------------------------------------

    def iter_source_files(self) -> Iterator[str]:
        """The names of the source files that have code, sorted (for completion)."""
        seen: set[str] = set()
        for source in self._files:
            if source.display not in seen:
                seen.add(source.display)
                yield source.display

    def has_source_file(self, file: str) -> bool:
        """Whether ``file`` (as in :meth:`get_addresses`) names a file with code."""
        return any(_file_matches(file, source) for source in self._files)

    def get_addresses(self, file: str, line: int) -> list[int]:
        """Where the code for ``file:line`` starts, one address per function.

        Like gdb's ``break FILE:LINE``: ``file`` may be the compiled name,
        the full path or any trailing part of it (``fib.c`` matches
        ``src/fib.c``); only is_stmt rows count; in each function the
        lowest address of the line is kept (a ``for`` line has several
        rows). A line without code moves to the next line that has code,
        as gdb does. Returns an empty list when the file is unknown or has
        no code from ``line`` on.
        """
        files = {f for f in self._files if _file_matches(file, f)}
        if not files:
            return []
        rows = [row for source in files for row in self._stmt_rows[source] if row.line >= line]
        if not rows:
            return []
        best_line = min(row.line for row in rows)
        first_per_function: dict[int, int] = {}
        for row in rows:
            if row.line != best_line:
                continue
            function = self.get_function_range(row.address)
            key = function.low if function is not None else self._sequence_start(row.address)
            if key not in first_per_function or row.address < first_per_function[key]:
                first_per_function[key] = row.address
        return sorted(first_per_function.values())

    def get_breakpoint_address(self, symbol: Symbol) -> int:
        """Where gdb's ``break FUNCTION`` stops: after the function's prologue.

        ``symbol.address`` is the function's first instruction (gdb's
        ``break *FUNCTION``); the prologue (frame setup, argument spills)
        ends where the line table starts the function's second row. A
        DW_LNS_set_prologue_end flag, when the compiler emits one, takes
        precedence (gdb 13 honours it too). Functions without line rows
        (assembly, no DWARF) keep ``symbol.address``.
        """
        function = self.get_function_range(symbol.address)
        if function is not None and function.low == symbol.address:
            end = function.high
        elif symbol.size:
            end = symbol.end
        else:
            sequence = self._sequence_containing(symbol.address)
            if sequence is None:
                return symbol.address
            end = sequence.end
        rows = [
            row
            for row in self._rows_between(symbol.address, end)
            if row.is_stmt
        ]
        for row in rows:
            if row.prologue_end and row.address > symbol.address:
                return row.address
        for row in rows:
            if row.address > symbol.address:
                return row.address
        return symbol.address

    # -- source text ------------------------------------------------------------

    def get_source_line(
        self,
        file: str,
        line: int,
        search_path: Sequence[str | os.PathLike[str]] = (),
    ) -> str | None:
        """The text of ``file:line`` (no newline), or None if the file is not here.

        The file is looked up as compiled (relative to its compilation
        directory, which is relative to the current directory when the
        compiler recorded ``.``), then in ``search_path`` and this object's
        ``search_path``: as the compiled name (``DIR/src/fib.c``) and by
        its last component (``DIR/fib.c``).
        """
        lines = self._read_source(file, [Path(p) for p in search_path])
        if lines is None or not 1 <= line <= len(lines):
            return None
        return lines[line - 1]

    # -- internals --------------------------------------------------------------

    def _row_for(self, address: int) -> _Row | None:
        i = bisect.bisect_right(self._row_addresses, address) - 1
        return self._row_at[i] if i >= 0 else None

    def _sequence_containing(self, address: int) -> _Sequence | None:
        i = bisect.bisect_right(self._sequence_starts, address) - 1
        # Sequences do not overlap in a linked image; look one back in case
        # an empty one shares a start address.
        for sequence in self._sequences[max(i - 1, 0):i + 1][::-1]:
            if sequence.start <= address < sequence.end:
                return sequence
        return None

    def _sequence_start(self, address: int) -> int:
        sequence = self._sequence_containing(address)
        return sequence.start if sequence is not None else address

    def _rows_between(self, low: int, high: int) -> list[_Row]:
        i = bisect.bisect_left(self._row_addresses, low)
        j = bisect.bisect_left(self._row_addresses, high)
        return [row for row in self._row_at[i:j] if row is not None]

    def _read_source(self, file: str, extra_dirs: list[Path]) -> list[str] | None:
        for candidate in self._source_candidates(file, extra_dirs):
            cached = self._source_cache.get(candidate)
            if cached is not None:
                return cached
            try:
                text = candidate.read_bytes().decode("utf-8", errors="replace")
            except OSError:
                continue  # not here; try the next place
            lines = text.splitlines()
            self._source_cache[candidate] = lines
            return lines
        return None

    def _source_candidates(self, file: str, extra_dirs: list[Path]) -> Iterator[Path]:
        known = [f for f in self._files if _file_matches(file, f)]
        for source in known:
            yield Path(source.path)
        if posixpath.isabs(file):
            yield Path(file)
        names = [source.display for source in known] + [file]
        for directory in [*extra_dirs, *self.search_path]:
            for name in names:
                if not posixpath.isabs(name):
                    yield directory / name
            for name in names:
                yield directory / posixpath.basename(name)


def _location(row: _Row) -> SourceLocation:
    return SourceLocation(row.file.display, row.line, row.column or None)


def _file_matches(query: str, source: _SourceFile) -> bool:
    """gdb's rule: the whole name, or a trailing part on a '/' boundary."""
    query = posixpath.normpath(query)
    for name in (source.display, source.path):
        name = posixpath.normpath(name)
        if name == query or name.endswith("/" + query):
            return True
    return False


class _DwarfReader:
    """Walks pyelftools' DWARF once and keeps what :class:`DebugInfo` indexes.

    Callers run it inside :func:`elftools_errors`.
    """

    def __init__(self, elffile: ELFFile) -> None:
        self._elffile = elffile
        self._dwarf: DWARFInfo = elffile.get_dwarf_info()
        self._expr_parser = DWARFExprParser(self._dwarf.structs)
        self._allocated = _allocated_ranges(elffile)
        self.sequences: list[_Sequence] = []
        self.functions: list[FunctionRange] = []
        self.globals: dict[str, GlobalVariable] = {}
        self.declarations: dict[int, SourceLocation] = {}
        self._external: set[str] = set()
        for cu in self._dwarf.iter_CUs():
            self._read_cu(cu)

    _unit_index = 0

    def _read_cu(self, cu: CompileUnit) -> None:
        self._unit_index += 1
        top = cu.get_top_DIE()
        comp_dir = _text(top.attributes["DW_AT_comp_dir"].value) if "DW_AT_comp_dir" in top.attributes else ""
        files = self._read_line_program(cu, comp_dir)
        self._walk(cu, top, files)

    # Line programs (DWARF 5, 6.2).

    def _read_line_program(self, cu: CompileUnit, comp_dir: str) -> dict[int, _SourceFile]:
        program = self._dwarf.line_program_for_CU(cu)
        if program is None:
            return {}
        files = _file_table(program.header, comp_dir)
        rows: list[_Row] = []
        for entry in program.get_entries():
            state = entry.state
            if state is None:
                continue  # an opcode that changed registers without a row
            if state.end_sequence:
                self._add_sequence(rows, state.address)
                rows = []
                continue
            source = files.get(state.file)
            if source is None:
                continue  # file index outside the table: skip, do not guess
            rows.append(_Row(state.address, source, state.line, state.column,
                             bool(state.is_stmt), bool(state.prologue_end), state.discriminator or 0))
        return files

    def _add_sequence(self, rows: list[_Row], end: int) -> None:
        if not rows:
            return
        start = rows[0].address
        # The linker leaves the line rows of discarded code (--gc-sections,
        # duplicate COMDAT) at address 0; gdb and addr2line ignore them
        # where no allocated section is, and so do we.
        if self._allocated and not any(lo <= start < hi for lo, hi in self._allocated):
            return
        self.sequences.append(_Sequence(start, end, tuple(rows), self._unit_index))

    # Debugging information entries (DWARF 5, chapters 2-5).

    def _walk(self, cu: CompileUnit, die: DIE, files: dict[int, _SourceFile]) -> None:
        for child in die.iter_children():
            if child.tag == "DW_TAG_subprogram":
                self._read_subprogram(cu, child, files)
            elif child.tag == "DW_TAG_variable":
                self._read_variable(cu, child, files)
            elif child.tag == "DW_TAG_namespace":
                self._walk(cu, child, files)

    def _read_subprogram(self, cu: CompileUnit, die: DIE, files: dict[int, _SourceFile]) -> None:
        name = _name(die)
        ranges = self._ranges(cu, die)
        if name is None or not ranges:
            return  # a declaration or an abstract (inline-only) instance
        source = _decl_location(die, files)
        for low, high in ranges:
            self.functions.append(FunctionRange(name, low, high, source))
        if source is not None:
            self.declarations.setdefault(min(low for low, _ in ranges), source)

    def _read_variable(self, cu: CompileUnit, die: DIE, files: dict[int, _SourceFile]) -> None:
        name = _name(die)
        location = die.attributes.get("DW_AT_location")
        if name is None or location is None or not isinstance(location.value, list):
            return  # no name, or a location list (sec_offset form), not DW_OP_addr
        ops = self._expr_parser.parse_expr(location.value)
        if len(ops) != 1 or ops[0].op_name not in ("DW_OP_addr", "DW_OP_addrx"):
            return
        address = ops[0].args[0]
        if ops[0].op_name == "DW_OP_addrx":
            address = self._dwarf.get_addr(cu, address)
        type_die = _type_of(die)
        external = _inherited(die, "DW_AT_external") is not None
        if name in self.globals and name in self._external and not external:
            return  # an extern global beats a file-static namesake
        self.globals[name] = GlobalVariable(
            address, _type_size(type_die, cu["address_size"]), _type_name(type_die)
        )
        if external:
            self._external.add(name)
        source = _decl_location(die, files)
        if source is not None:
            self.declarations.setdefault(address, source)

    def _ranges(self, cu: CompileUnit, die: DIE) -> list[tuple[int, int]]:
        attrs = die.attributes
        if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
            low = attrs["DW_AT_low_pc"].value
            high_attr = attrs["DW_AT_high_pc"]
            # DWARF 4+: high_pc of class constant is an offset from low_pc.
            high = high_attr.value if high_attr.form in _ADDRESS_FORMS else low + high_attr.value
            return [(low, high)] if high > low else []
        if "DW_AT_ranges" in attrs:
            range_lists = self._dwarf.range_lists()
            if range_lists is None:
                return []
            top = cu.get_top_DIE()
            base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
            result = []
            for entry in range_lists.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
                if isinstance(entry, BaseAddressEntry):
                    base = entry.base_address
                elif entry.is_absolute:
                    result.append((entry.begin_offset, entry.end_offset))
                else:
                    result.append((base + entry.begin_offset, base + entry.end_offset))
            return [(lo, hi) for lo, hi in result if hi > lo]
        return []


def _allocated_ranges(elffile: ELFFile) -> list[tuple[int, int]]:
    """Address ranges of SHF_ALLOC sections; empty for relocatable objects."""
    if elffile["e_type"] == "ET_REL":
        return []
    return [
        (section["sh_addr"], section["sh_addr"] + section["sh_size"])
        for section in elffile.iter_sections()
        if section["sh_flags"] & _SHF_ALLOC and section["sh_size"]
    ]


def _file_table(header: Any, comp_dir: str) -> dict[int, _SourceFile]:
    """Map line-program file indexes to names, for DWARF 2-4 and 5.

    DWARF 5 numbers files and directories from 0, entry 0 being the
    primary file and directory 0 the compilation directory; DWARF 2-4
    number files from 1 and use directory 0 to mean the compilation
    directory (DWARF 5, 6.2.4 items 20-21; DWARF 4, 6.2.4 items 11-12).
    """
    version = header["version"]
    directories = [_text(d) for d in header["include_directory"]]
    if version < 5:
        directories = [comp_dir, *directories]
    first_index = 0 if version >= 5 else 1
    table: dict[int, _SourceFile] = {}
    for index, entry in enumerate(header["file_entry"], start=first_index):
        name = _text(entry["name"])
        dir_index = entry["dir_index"]
        directory = directories[dir_index] if dir_index < len(directories) else ""
        table[index] = _source_file(name, directory, dir_index == 0, comp_dir)
    return table


def _source_file(name: str, directory: str, is_comp_dir: bool, comp_dir: str) -> _SourceFile:
    """Name a file as gdb does: relative to the compilation directory when it is."""
    if posixpath.isabs(name) or is_comp_dir or not directory or directory == comp_dir:
        display = name
    elif comp_dir and directory.startswith(comp_dir.rstrip("/") + "/"):
        display = posixpath.join(directory[len(comp_dir.rstrip("/")) + 1:], name)
    else:
        display = posixpath.join(directory, name)
    path = display if posixpath.isabs(display) else posixpath.join(comp_dir, display)
    return _SourceFile(posixpath.normpath(display), posixpath.normpath(path))


def _text(value: bytes | str | None) -> str:
    # None: a string offset past the end of its section (corrupt image).
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _inherited_die(die: DIE, attribute: str) -> DIE | None:
    """The DIE that holds ``attribute``: this one or the one it completes.

    A definition may carry only DW_AT_specification (C++ members, extern
    declarations) or DW_AT_abstract_origin (out-of-line inline instances)
    and leave the name, type and declaration line on the other DIE.
    """
    for _ in range(_MAX_TYPE_DEPTH):
        if attribute in die.attributes:
            return die
        for link in ("DW_AT_specification", "DW_AT_abstract_origin"):
            if link in die.attributes:
                die = die.get_DIE_from_attribute(link)
                break
        else:
            return None
    return None


def _inherited(die: DIE, attribute: str) -> object | None:
    owner = _inherited_die(die, attribute)
    return owner.attributes[attribute].value if owner is not None else None


def _name(die: DIE) -> str | None:
    value = _inherited(die, "DW_AT_name")
    return _text(value) if isinstance(value, (bytes, str)) else None


def _decl_location(die: DIE, files: dict[int, _SourceFile]) -> SourceLocation | None:
    owner = _inherited_die(die, "DW_AT_decl_file")
    if owner is None or "DW_AT_decl_line" not in owner.attributes:
        return None
    source = files.get(owner.attributes["DW_AT_decl_file"].value)
    if source is None:
        return None
    column = owner.attributes["DW_AT_decl_column"].value if "DW_AT_decl_column" in owner.attributes else None
    return SourceLocation(source.display, owner.attributes["DW_AT_decl_line"].value, column or None)


def _type_of(die: DIE) -> DIE | None:
    owner = _inherited_die(die, "DW_AT_type")
    return owner.get_DIE_from_attribute("DW_AT_type") if owner is not None else None


_TAG_KEYWORDS = {
    "DW_TAG_structure_type": "struct",
    "DW_TAG_union_type": "union",
    "DW_TAG_enumeration_type": "enum",
    "DW_TAG_class_type": "class",
}


def _type_name(die: DIE | None, depth: int = 0) -> str:
    """A C spelling of a type: enough to show, not to parse back."""
    if die is None:
        return "void"
    if depth > _MAX_TYPE_DEPTH:
        return "?"
    tag = die.tag
    name = _name(die)
    if tag in ("DW_TAG_base_type", "DW_TAG_typedef", "DW_TAG_unspecified_type"):
        return name or "?"
    if tag in _TAG_KEYWORDS:
        return f"{_TAG_KEYWORDS[tag]} {name or '{...}'}"
    if tag in ("DW_TAG_const_type", "DW_TAG_volatile_type"):
        qualifier = "const" if tag == "DW_TAG_const_type" else "volatile"
        inner = _type_name(_type_of(die), depth + 1)
        # "const char *" qualifies the char; a qualified pointer reads
        # "char *const", as C spells it.
        return f"{inner}{qualifier}" if inner.endswith("*") else f"{qualifier} {inner}"
    if tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type"):
        target = _type_of(die)
        sigil = "*" if tag == "DW_TAG_pointer_type" else "&"
        if target is not None and target.tag == "DW_TAG_subroutine_type":
            return _subroutine_name(target, f"({sigil})", depth + 1)
        inner = _type_name(target, depth + 1)
        return f"{inner}{sigil}" if inner.endswith("*") else f"{inner} {sigil}"
    if tag == "DW_TAG_array_type":
        dims = "".join(f"[{n}]" if n is not None else "[]" for n in _array_counts(die))
        return f"{_type_name(_type_of(die), depth + 1)}{dims or '[]'}"
    if tag == "DW_TAG_subroutine_type":
        return _subroutine_name(die, "", depth + 1)
    return name or "?"


def _subroutine_name(die: DIE, declarator: str, depth: int) -> str:
    params = [
        _type_name(_type_of(child), depth + 1)
        for child in die.iter_children()
        if child.tag == "DW_TAG_formal_parameter"
    ]
    if any(child.tag == "DW_TAG_unspecified_parameters" for child in die.iter_children()):
        params.append("...")
    returns = _type_name(_type_of(die), depth + 1)
    return f"{returns} {declarator}({', '.join(params) or 'void'})"


def _array_counts(die: DIE) -> list[int | None]:
    counts: list[int | None] = []
    for child in die.iter_children():
        if child.tag != "DW_TAG_subrange_type":
            continue
        attrs = child.attributes
        count: int | None = None
        # A reference form means a variable-length bound: unknown here.
        if "DW_AT_count" in attrs and not attrs["DW_AT_count"].form.startswith("DW_FORM_ref"):
            count = attrs["DW_AT_count"].value
        elif "DW_AT_upper_bound" in attrs and not attrs["DW_AT_upper_bound"].form.startswith("DW_FORM_ref"):
            lower = attrs["DW_AT_lower_bound"].value if "DW_AT_lower_bound" in attrs else 0
            count = attrs["DW_AT_upper_bound"].value - lower + 1
        counts.append(count if isinstance(count, int) and count >= 0 else None)
    return counts


def _type_size(die: DIE | None, address_size: int, depth: int = 0) -> int:
    """The byte size of a type, 0 when DWARF does not say."""
    if die is None or depth > _MAX_TYPE_DEPTH:
        return 0
    if "DW_AT_byte_size" in die.attributes and isinstance(die.attributes["DW_AT_byte_size"].value, int):
        return die.attributes["DW_AT_byte_size"].value
    if die.tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type"):
        return address_size
    if die.tag == "DW_TAG_array_type":
        size = _type_size(_type_of(die), address_size, depth + 1)
        for count in _array_counts(die):
            if count is None:
                return 0
            size *= count
        return size
    if die.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                   "DW_TAG_atomic_type", "DW_TAG_restrict_type"):
        return _type_size(_type_of(die), address_size, depth + 1)
    return 0
