"""One guest image for source-level debugging: symbols, CFI, DWARF scopes and types.

:class:`Program` is what the engine and the commands hold per image. It
knows nothing of sessions or targets: every question about a running
guest takes a :class:`~kvmbench.symbols.frame.FrameContext`. Everything is
read lazily: the symbol table and line tables when the program is
loaded (as :func:`kvmbench.symbols.load_symbols` does), CFI on the first
unwind, each compilation unit's DIEs the first time a pc or name in it is
looked up.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from elftools.elf.elffile import ELFFile

from kvmbench.errors import GuestMemoryError, SymbolError
from kvmbench.symbols._translate import elftools_errors
from kvmbench.symbols.cfi import CallFrameInfo
from kvmbench.symbols.dwarf import DebugInfo
from kvmbench.symbols.elf import ElfImage
from kvmbench.symbols.frame import FrameContext, ImageMemory, StaticFrame
from kvmbench.symbols.model import SourceLocation, Symbol, SymbolKind
from kvmbench.symbols.table import SymbolTable
from kvmbench.symbols.dwarf_eval import Location
from kvmbench.symbols.frames import FrameList, SourceFrame, source_frames
from kvmbench.symbols.locations import parameter_entry_value, resolve_type, variable_location
from kvmbench.symbols.types import CType, EnumType
from kvmbench.symbols.unwind import DEFAULT_LIMIT, Backtrace, Frame, Unwinder
from kvmbench.symbols.units import DebugUnits, Scope, Variable


# amd64 prologue instructions gdb recognises (amd64-tdep.c).
_ENDBR64 = b"\xf3\x0f\x1e\xfa"
_MOV_RSP_RBP = (b"\x48\x89\xe5", b"\x48\x8b\xec")


class Program:
    """An ELF image with everything a source-level debugger reads from it.

    Build it with :meth:`from_path` (or :meth:`from_bytes`). ``symbols`` is
    the image's :class:`SymbolTable` (with its DWARF line tables, if any);
    pass one already loaded to share it.
    """

    def __init__(
        self,
        data: bytes,
        *,
        name: str = "<elf>",
        search_path: Sequence[str | os.PathLike[str]] = (),
        symbols: SymbolTable | None = None,
    ) -> None:
        """Parse the ELF in ``data`` (see :meth:`from_path`)."""
        self.name = name
        self.image = ElfImage(data, name)
        with elftools_errors(name, "ELF"):
            self._elffile = ELFFile(io.BytesIO(data))
        self.symbols = symbols if symbols is not None else self.image.get_symbol_table(search_path)
        self.cfi = CallFrameInfo(self._elffile, name=name)
        self.unwinder = Unwinder(self.cfi, self._function_bounds)
        self._units: DebugUnits | None = None
        self._units_loaded = False

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        search_path: Sequence[str | os.PathLike[str]] = (),
        symbols: SymbolTable | None = None,
    ) -> Program:
        """Load the ELF at ``path``; sources are looked for as :func:`load_symbols` does."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SymbolError(f"{path}: {exc.strerror or exc}") from exc
        image_dir = Path(path).resolve().parent
        sources = [*search_path, image_dir, image_dir.parent]
        return cls(data, name=os.fspath(path), search_path=sources, symbols=symbols)

    @property
    def debug(self) -> DebugInfo | None:
        """The line tables and function ranges (None without DWARF)."""
        return self.symbols.debug

    @property
    def units(self) -> DebugUnits | None:
        """The compilation units (scopes, variables, types); None without DWARF."""
        if not self._units_loaded:
            self._units_loaded = True
            with elftools_errors(self.name, "DWARF"):
                if self._elffile.has_dwarf_info(strict=True):
                    self._units = DebugUnits(self._elffile.get_dwarf_info(), name=self.name)
        return self._units

    # -- memory -------------------------------------------------------------------

    def image_memory(self) -> ImageMemory:
        """A fresh copy of the image's memory as loaded (data, zeroed .bss)."""
        return ImageMemory.from_segments(self.image.iter_load_segments())

    def static_frame(self, registers: Mapping[str, int] | None = None) -> StaticFrame:
        """A frame over the image's memory: gdb on an ELF with no process (``registers=None``)."""
        return StaticFrame(self.image_memory(), registers)

    # -- frames -----------------------------------------------------------------------

    def innermost_frame(self, context: FrameContext) -> Frame:
        """Frame 0 of a target stopped with these registers and memory."""
        return self.unwinder.innermost(context)

    def backtrace(self, context: FrameContext, limit: int = DEFAULT_LIMIT) -> Backtrace:
        """The physical frames of the stopped target, innermost first (see :class:`Unwinder`)."""
        return self.unwinder.backtrace(context, limit)

    def frames(self, context: FrameContext, limit: int = DEFAULT_LIMIT, *, past_main: bool = False) -> FrameList:
        """gdb's frames of the stopped target (inlined calls expanded), innermost first.

        Like gdb (``set backtrace past-main off``), the list ends at
        ``main`` unless ``past_main``; ``limit`` bounds the physical frames.
        """
        frames = source_frames(
            self.backtrace(context, limit), self.units,
            line_at=self.line_at, symbol_at=self._function_symbol,
        )
        if past_main:
            return frames
        for index, frame in enumerate(frames.frames):
            if frame.name == "main" and not frame.is_inlined:
                return FrameList(frames.frames[:index + 1], None)
        return frames

    def line_at(self, pc: int) -> SourceLocation | None:
        """The source line gdb reports for ``pc`` (see :meth:`DebugInfo.get_line_entry`)."""
        if self.debug is None:
            return None
        entry = self.debug.get_line_entry(pc)
        return entry.location if entry is not None else None

    # -- symbols by name, as gdb looks them up ----------------------------------------

    def find_variable(self, name: str, frame: SourceFrame | None = None) -> Variable | None:
        """The variable ``name`` as gdb's lookup_symbol finds it from ``frame``.

        The frame's blocks from the innermost out to its function (not past
        an inlined function's boundary), then the file-scope variables of
        the frame's compilation unit, then globals, then other files'
        statics.
        """
        units = self.units
        if units is None:
            return None
        unit = None
        if frame is not None and frame.block is not None:
            for block in frame.iter_blocks():
                for variable in block.variables:
                    if variable.name == name:
                        return variable
            unit = frame.block.unit
        if unit is not None:
            for variable in unit.variables.get(name, []):
                return variable
        found = units.global_variables(name)
        return found[0] if found else None

    def find_function(self, name: str, frame: SourceFrame | None = None) -> Scope | None:
        """The function ``name`` (the frame's file's own first, then external ones)."""
        units = self.units
        if units is None:
            return None
        if frame is not None and frame.block is not None:
            for function in frame.block.unit.functions:
                if function.name == name:
                    return function
        found = units.functions_named(name)
        return found[0] if found else None

    def find_enumerator(self, name: str, frame: SourceFrame | None = None) -> tuple[EnumType, int] | None:
        """The enumeration constant ``name``: its type and value."""
        units = self.units
        if units is None:
            return None
        prefer = frame.block.unit if frame is not None and frame.block is not None else None
        return units.enumerator(name, prefer)

    def find_type(self, name: str, frame: SourceFrame | None = None) -> CType | None:
        """The program's type ``name`` (``point_t``, ``struct point``, ``unsigned long``)."""
        units = self.units
        if units is None:
            return None
        prefer = frame.block.unit if frame is not None and frame.block is not None else None
        return units.named_type(name, prefer)

    def typedef_names(self) -> frozenset[str]:
        """The program's typedef names."""
        units = self.units
        return units.typedef_names() if units is not None else frozenset()

    def locate(self, variable: Variable, frame: SourceFrame | None = None) -> Location:
        """Where ``variable`` is in ``frame`` (None: statics only, as without a process)."""
        return variable_location(variable, frame.view if frame is not None else None)

    def variable_type(self, variable: Variable, frame: SourceFrame | None = None) -> CType:
        """The variable's type in ``frame``: variable-length array bounds evaluated there."""
        return resolve_type(variable.type, frame.view if frame is not None else None)

    def entry_value(self, variable: Variable, frame: SourceFrame) -> int | None:
        """A parameter's value at its function's entry (gdb's ``x@entry``), None if unknown."""
        return parameter_entry_value(variable, frame.view)

    def symbolize(self, address: int) -> str | None:
        """``sym+off`` for an address a function or object holds, as gdb's ``<...>`` shows it."""
        return self.symbols.symbolize(address)

    # -- breakpoint locations, as gdb places them ---------------------------------

    def breakpoint_address(self, address: int) -> int:
        """Where gdb's ``break FUNCTION`` stops for the function starting at ``address``.

        gdb 13 on amd64 (amd64_skip_prologue, then symtab.c's
        skip_prologue_sal): a DW_LNS_set_prologue_end row wins; otherwise a
        function that opens with ``push %rbp; mov %rsp,%rbp`` (after an
        optional ``endbr64``) has its frame set up there, and the stop moves
        on to the next line-table row if that leaves it mid-line; a function
        without that frame setup (frameless, as at -O2) stops at its first
        instruction. Unlike SymbolTable.get_breakpoint_address (always the
        second row), this matches gdb on optimised code too.
        """
        debug = self.debug
        bounds = self._function_bounds(address)
        if debug is None or bounds is None:
            return address
        low, high = bounds
        marked = debug.get_prologue_end(low, high)
        if marked is not None:
            return marked
        try:
            code = self.image_memory().read_memory(low, 12)
        except GuestMemoryError:
            return address
        pc = low
        if code[:4] == _ENDBR64:
            pc += 4
        at = pc - low
        if code[at:at + 1] != b"\x55" or code[at + 1:at + 4] not in _MOV_RSP_RBP:
            return address  # frameless: gdb keeps the first instruction
        pc += 4
        entry = debug.get_line_entry(pc)
        if entry is not None and entry.address != pc:
            end = debug.get_line_end(pc)
            if end is not None and low <= end < high:
                pc = end
        return pc

    def amd64_frame_base(self, frame: Frame) -> int:
        """gdb's frame base address on amd64 (``$fp``; amd64_frame_cache's ``base``).

        With ``push %rbp; mov %rsp,%rbp`` executed, rbp; just after the
        push, rsp; otherwise (at the entry, or a frameless function) rsp - 8.
        """
        context = frame.context
        rsp = context.read_register("rsp")
        bounds = self._function_bounds(frame.lookup_pc)
        if bounds is None:
            return rsp - 8
        low = bounds[0]
        pc = frame.pc
        try:
            code = self.image_memory().read_memory(low, 12)
        except GuestMemoryError:
            return rsp - 8
        start = low + 4 if code[:4] == _ENDBR64 else low
        at = start - low
        if pc <= start or code[at:at + 1] != b"\x55":
            return rsp - 8
        if pc == start + 1 or code[at + 1:at + 4] not in _MOV_RSP_RBP:
            return rsp  # rbp pushed, no frame pointer yet
        return context.read_register("rbp")

    def breakpoint_locations(self, location: str) -> list[int]:
        """gdb's ``break LOCATION`` addresses, with gdb's words when there are none.

        ``FUNCTION`` and ``FILE:LINE`` (a line starting a function included)
        skip the prologue as :meth:`breakpoint_address` does; ``*ADDRESS``
        does not; ``LINE`` is in the file of ``main``.
        """
        text = location.strip()
        symbols = self.symbols
        if text.startswith("*"):
            return [symbols.resolve(text)]
        file_line = re.fullmatch(r"(?:(?P<file>.+):)?(?P<line>[0-9]+)", text)
        if file_line is not None:
            debug = self.debug
            if debug is None:
                raise SymbolError("No symbol table is loaded.  Use the \"file\" command.")
            file = file_line["file"] or self._main_file()
            line = int(file_line["line"])
            if debug.resolve_source_file(file) is None:
                raise SymbolError(f"No source file named {file}.")
            addresses = debug.get_line_addresses(file, line)
            if not addresses:
                raise SymbolError(f'No line {line} in file "{file}".')
            result = []
            for address in addresses:
                bounds = self._function_bounds(address)
                result.append(self.breakpoint_address(address) if bounds is not None and bounds[0] == address
                              else address)
            return result
        symbol = symbols.get_by_name(text)
        if symbol is None or symbol.kind is not SymbolKind.FUNCTION:
            raise SymbolError(f'Function "{text}" not defined.')
        return [self.breakpoint_address(symbol.address)]

    def _main_file(self) -> str:
        main = self.symbols.get_by_name("main")
        location = self.line_at(main.address) if main is not None else None
        if location is None:
            raise SymbolError("No symbol table is loaded.  Use the \"file\" command.")
        return location.file

    # -- internals --------------------------------------------------------------------

    def _function_symbol(self, pc: int) -> Symbol | None:
        symbol = self.symbols.get_containing(pc)
        return symbol if symbol is not None and symbol.kind is SymbolKind.FUNCTION else None

    def _function_bounds(self, pc: int) -> tuple[int, int] | None:
        symbol = self.symbols.get_containing(pc)
        if symbol is None or symbol.kind is not SymbolKind.FUNCTION:
            return None
        return symbol.address, max(symbol.end, symbol.address + 1)
