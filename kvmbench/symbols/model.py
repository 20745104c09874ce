"""The symbol model: what a name or an address means in a guest image.

Plain frozen values, shared by every loader (ELF, DWARF, System.map,
kallsyms) and by their consumers (breakpoints, stop cards, completion).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: ``Symbol.section`` of absolute symbols (ELF SHN_ABS, nm's ``A``), with
#: objdump's spelling. Their values are constants, not addresses in the
#: image, so relocation leaves them alone.
ABSOLUTE_SECTION = "*ABS*"


class SymbolKind(enum.Enum):
    """What a symbol names, reduced to what a debugger treats differently.

    ELF's STT_FUNC maps to ``FUNCTION``, STT_OBJECT to ``OBJECT``;
    everything else (STT_NOTYPE labels, linker-defined boundaries such as
    ``_end``, STT_TLS offsets) is ``OTHER`` and takes no part in address
    lookups. nm's letters map the same way:
    ``T``/``t``/``W``/``w`` are functions, ``D``/``B``/``R``/``V`` objects.
    """

    FUNCTION = "function"
    OBJECT = "object"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """A place in a source file, as the DWARF line table names it.

    ``file`` is the name the compilation recorded (``src/fib.c`` for a file
    compiled as ``gcc -c src/fib.c``), not a path on this machine:
    :meth:`kvmbench.symbols.dwarf.DebugInfo.get_source_line` finds the file.
    ``column`` is None where DWARF says 0 ("no column information").
    """

    file: str
    line: int
    column: int | None = None

    def __str__(self) -> str:
        # gdb and addr2line print file:line; columns are noise on a stop card.
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Symbol:
    """A named address range of a guest image.

    ``size`` is 0 when the image does not say (assembly labels without
    ``.size``, every System.map entry). ``section`` is the section name,
    :data:`ABSOLUTE_SECTION` for absolute symbols, None where the source
    does not record it. ``source`` is the declaration's location when debug
    information has one.
    """

    name: str
    address: int
    size: int
    kind: SymbolKind
    section: str | None = None
    source: SourceLocation | None = None

    @property
    def end(self) -> int:
        """The first address past the symbol (``address`` when size is 0)."""
        return self.address + self.size

    def contains(self, address: int) -> bool:
        """Whether ``address`` lies in [address, address + size)."""
        return self.address <= address < self.address + self.size
