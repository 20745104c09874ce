"""ELF images: what to load where, where to start, and the symbol table.

Built on pyelftools. The whole file is read into memory and parsed once in
the constructor, inside the one error-translation point
(:func:`kvmbench.symbols._translate.elftools_errors`), so no file handle
stays open and no later call can raise a pyelftools exception.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from kvmbench.errors import SymbolError
from kvmbench.symbols._translate import elftools_errors
from kvmbench.symbols.dwarf import DebugInfo
from kvmbench.symbols.model import ABSOLUTE_SECTION, Symbol, SymbolKind
from kvmbench.symbols.table import SymbolTable

#: The four bytes every ELF file starts with (System V gABI, "ELF Header").
ELF_MAGIC = b"\x7fELF"

#: Segment permission bits of ``p_flags`` (gABI, "Program Header").
PF_X = 0x1
PF_W = 0x2
PF_R = 0x4

_KINDS = {
    "STT_FUNC": SymbolKind.FUNCTION,
    "STT_GNU_IFUNC": SymbolKind.FUNCTION,
    "STT_OBJECT": SymbolKind.OBJECT,
    "STT_COMMON": SymbolKind.OBJECT,
    "STT_NOTYPE": SymbolKind.OTHER,
    # A TLS symbol's value is an offset into each thread's block, not an
    # address: it must not take part in address lookups.
    "STT_TLS": SymbolKind.OTHER,
}

# Loaders list global symbols first because SymbolTable breaks name ties by
# input order, and a debugger asked for "foo" means the global one.
_BINDING_ORDER = {"STB_GLOBAL": 0, "STB_WEAK": 1, "STB_GNU_UNIQUE": 1, "STB_LOCAL": 2}


class LoadSegment(NamedTuple):
    """A PT_LOAD program header with its bytes.

    A tuple so that ``paddr, vaddr, data, memsz, flags = segment`` works.
    ``data`` holds ``p_filesz`` bytes; the loader zero-fills the rest up to
    ``memsz`` (the .bss). ``flags`` combines :data:`PF_R`, :data:`PF_W`,
    :data:`PF_X`.
    """

    paddr: int
    vaddr: int
    data: bytes
    memsz: int
    flags: int


class ElfImage:
    """A parsed ELF executable: load segments, entry point, symbols, DWARF."""

    def __init__(self, data: bytes, name: str = "<elf>") -> None:
        """Parse ``data``; raise :class:`SymbolError` if it is not a usable ELF.

        ``name`` is used in error messages (usually the path).
        """
        if not data.startswith(ELF_MAGIC):
            raise SymbolError(f"{name}: not an ELF file")
        self.name = name
        with elftools_errors(name, "ELF"):
            self._elffile = ELFFile(io.BytesIO(data))
            header = self._elffile.header
            self.entry: int = header["e_entry"]
            self.machine: str = header["e_machine"]
            self.elf_type: str = header["e_type"]
            self.elfclass: int = self._elffile.elfclass
            self._segments = tuple(self._read_load_segments())
            self._symbols = tuple(self._read_symbols())

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ElfImage:
        """Read and parse the ELF file at ``path``."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SymbolError(f"{path}: {exc.strerror or exc}") from exc
        return cls(data, os.fspath(path))

    def iter_load_segments(self) -> Iterator[LoadSegment]:
        """The PT_LOAD segments in program-header order."""
        return iter(self._segments)

    def iter_symbols(self) -> Iterator[Symbol]:
        """Defined, named symbols of ``.symtab`` (``.dynsym`` if stripped).

        Section and file symbols are left out; global symbols come first.
        """
        return iter(self._symbols)

    def has_dwarf(self) -> bool:
        """Whether the image carries DWARF (``.debug_info``), not just unwind data."""
        return self._elffile.has_dwarf_info(strict=True)

    def get_debug_info(self, search_path: Sequence[str | os.PathLike[str]] = ()) -> DebugInfo | None:
        """Decode the DWARF (line tables, functions, globals); None without any.

        Costs a full pass over the debug sections: call it once and keep the
        result. ``search_path`` is where sources are looked for when their
        compilation directory is not on this machine.
        """
        return DebugInfo.from_elffile(self._elffile, name=self.name, search_path=search_path)

    def get_symbol_table(
        self,
        search_path: Sequence[str | os.PathLike[str]] = (),
        *,
        dwarf: bool = True,
    ) -> SymbolTable:
        """The image's symbols, with its DWARF unless ``dwarf`` is False.

        With DWARF, functions and globals get their declaration's
        ``source`` (functions without one get the line of their first
        instruction). Skip DWARF for huge images (a vmlinux) when only
        names and addresses are needed: decoding it is the slow part.
        """
        debug = self.get_debug_info(search_path) if dwarf else None
        symbols = list(self._symbols)
        if debug is not None:
            symbols = [_with_source(symbol, debug) for symbol in symbols]
        return SymbolTable(symbols, debug=debug, name=self.name)

    # Parsing, run once from the constructor inside elftools_errors.

    def _read_load_segments(self) -> Iterator[LoadSegment]:
        for segment in self._elffile.iter_segments():
            if segment["p_type"] != "PT_LOAD":
                continue
            data = segment.data()
            if len(data) != segment["p_filesz"]:
                raise SymbolError(f"{self.name}: PT_LOAD segment at {segment['p_vaddr']:#x} is truncated")
            yield LoadSegment(
                segment["p_paddr"], segment["p_vaddr"], bytes(data), segment["p_memsz"], segment["p_flags"]
            )

    def _read_symbols(self) -> Iterator[Symbol]:
        table = self._elffile.get_section_by_name(".symtab") or self._elffile.get_section_by_name(".dynsym")
        if not isinstance(table, SymbolTableSection):
            return
        section_names = [section.name for section in self._elffile.iter_sections()]
        ranked: list[tuple[int, int, Symbol]] = []
        for index, entry in enumerate(table.iter_symbols()):
            kind = _KINDS.get(entry["st_info"]["type"])
            shndx = entry["st_shndx"]
            if kind is None or not entry.name or shndx == "SHN_UNDEF":
                continue
            if shndx == "SHN_ABS":
                section: str | None = ABSOLUTE_SECTION
            elif isinstance(shndx, int) and shndx < len(section_names):
                section = section_names[shndx] or None
            else:
                section = None  # SHN_COMMON and other reserved indexes
            symbol = Symbol(entry.name, entry["st_value"], entry["st_size"], kind, section)
            ranked.append((_BINDING_ORDER.get(entry["st_info"]["bind"], 2), index, symbol))
        ranked.sort(key=lambda item: item[:2])
        yield from (symbol for _, _, symbol in ranked)


def _with_source(symbol: Symbol, debug: DebugInfo) -> Symbol:
    if symbol.kind is SymbolKind.OTHER:
        return symbol
    source = debug.get_decl_location(symbol.address)
    if source is None and symbol.kind is SymbolKind.FUNCTION:
        source = debug.get_source_location(symbol.address)
    return dataclasses.replace(symbol, source=source) if source is not None else symbol
