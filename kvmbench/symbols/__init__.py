"""Guest symbols: ELF + DWARF (pyelftools), System.map, kallsyms, KASLR.

:func:`load_symbols` is the entry point: give it a guest ELF (with or
without DWARF) or a kernel's System.map and get a :class:`SymbolTable`
that resolves breakpoint locations, formats ``symbol+offset`` and
``file:line`` for stop cards, and completes names. Every failure is a
one-line :class:`kvmbench.errors.SymbolError`.

For source-level debugging, :class:`Program` holds one image with its CFI
(:mod:`.cfi`, :mod:`.unwind`), DWARF scopes, variables and types
(:mod:`.units`, :mod:`.locations`, :mod:`.types`) and gdb's answers
(:mod:`.frames`, :mod:`.listing`, :mod:`.describe`). It evaluates against a
:class:`FrameContext`: a live frame from the engine, or a
:class:`StaticFrame` over the image's memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from kvmbench.errors import SymbolError
from kvmbench.symbols.dwarf import DebugInfo, FunctionRange, GlobalVariable
from kvmbench.symbols.elf import ELF_MAGIC, ElfImage, LoadSegment
from kvmbench.symbols.kallsyms import kaslr_slide, load_kallsyms, looks_like_kallsyms, parse_kallsyms
from kvmbench.symbols.model import ABSOLUTE_SECTION, SourceLocation, Symbol, SymbolKind
from kvmbench.symbols.cfi import CallFrameInfo, CfiSection, FrameRules
from kvmbench.symbols.describe import info_address, info_scope
from kvmbench.symbols.frame import FrameContext, ImageMemory, StaticFrame
from kvmbench.symbols.frames import FrameList, SourceFrame
from kvmbench.symbols.listing import SourceLister, info_symbol
from kvmbench.symbols.program import Program
from kvmbench.symbols.table import SymbolTable
from kvmbench.symbols.unwind import Backtrace, Frame, Unwinder, UnwindMethod

__all__ = [
    "ABSOLUTE_SECTION",
    "Backtrace",
    "CallFrameInfo",
    "CfiSection",
    "DebugInfo",
    "ElfImage",
    "Frame",
    "FrameContext",
    "FrameList",
    "FrameRules",
    "FunctionRange",
    "GlobalVariable",
    "ImageMemory",
    "LoadSegment",
    "Program",
    "SourceFrame",
    "SourceLister",
    "SourceLocation",
    "StaticFrame",
    "Symbol",
    "SymbolKind",
    "SymbolTable",
    "UnwindMethod",
    "Unwinder",
    "info_address",
    "info_scope",
    "info_symbol",
    "kaslr_slide",
    "load_kallsyms",
    "load_symbols",
    "parse_kallsyms",
]

# Enough of a file's start to tell ELF from a symbol listing.
_SNIFF_BYTES = 4096


def load_symbols(
    path: str | os.PathLike[str],
    *,
    search_path: Sequence[str | os.PathLike[str]] = (),
    dwarf: bool = True,
) -> SymbolTable:
    """Load the symbols of an ELF image or a System.map/kallsyms listing.

    The format is sniffed from the content, not the name. For ELF, DWARF
    is decoded when present (and ``dwarf`` is true); ``search_path`` lists
    directories where source files are looked for (see
    :meth:`DebugInfo.get_source_line`), followed by the image's directory
    and its parent: the layouts ``build/prog`` + ``build/src/prog.c`` and
    ``bin/fib.elf`` + ``src/fib.c`` (the bundled guests) then need none.
    """
    try:
        with Path(path).open("rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError as exc:
        raise SymbolError(f"{path}: {exc.strerror or exc}") from exc
    if head.startswith(ELF_MAGIC):
        image_dir = Path(path).resolve().parent
        sources = [*search_path, image_dir, image_dir.parent]
        return ElfImage.from_path(path).get_symbol_table(sources, dwarf=dwarf)
    if looks_like_kallsyms(head):
        return load_kallsyms(path)
    raise SymbolError(f"{path}: neither an ELF file nor a System.map/kallsyms listing")
