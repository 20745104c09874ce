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
from collections.abc import Mapping, Sequence
from pathlib import Path

from elftools.elf.elffile import ELFFile

from kvmbench.errors import SymbolError
from kvmbench.symbols._translate import elftools_errors
from kvmbench.symbols.cfi import CallFrameInfo
from kvmbench.symbols.dwarf import DebugInfo
from kvmbench.symbols.elf import ElfImage
from kvmbench.symbols.frame import FrameContext, ImageMemory, StaticFrame
from kvmbench.symbols.model import SymbolKind
from kvmbench.symbols.table import SymbolTable
from kvmbench.symbols.unwind import DEFAULT_LIMIT, Backtrace, Frame, Unwinder


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

    # -- internals --------------------------------------------------------------------

    def _function_bounds(self, pc: int) -> tuple[int, int] | None:
        symbol = self.symbols.get_containing(pc)
        if symbol is None or symbol.kind is not SymbolKind.FUNCTION:
            return None
        return symbol.address, max(symbol.end, symbol.address + 1)
