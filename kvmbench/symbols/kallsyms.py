"""Kernel symbol lists: ``System.map``, ``/proc/kallsyms`` and ``nm`` output.

All three print one symbol a line, ``ADDRESS TYPE NAME``, with nm's type
letters (binutils nm(1), "symbol type"): upper case global, lower case
local. ``/proc/kallsyms`` adds ``[module]`` after module symbols, and
``nm -S`` a size column after the address. None of them records sizes
otherwise, so :meth:`SymbolTable.get_containing` treats each symbol as
reaching up to the next one.

A running kernel built with KASLR is loaded at a random offset from the
addresses in its System.map; :func:`kaslr_slide` measures it from one known
symbol and :meth:`SymbolTable.relocated` applies it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kvmbench.errors import SymbolError
from kvmbench.symbols.model import ABSOLUTE_SECTION, Symbol, SymbolKind
from kvmbench.symbols.table import SymbolTable

#: x86-64 KASLR moves the kernel's virtual base in steps of
#: CONFIG_PHYSICAL_ALIGN, 2 MiB unless configured larger (arch/x86/Kconfig;
#: arch/x86/boot/compressed/kaslr.c). A slide off this grid means the
#: runtime address was not the symbol's.
KASLR_ALIGNMENT = 0x200000

_LINE = re.compile(
    r"(?P<address>[0-9a-fA-F]+)"
    r"(?:\s+(?P<size>[0-9a-fA-F]+))?"  # nm -S
    r"\s+(?P<type>[A-Za-z?])"
    r"\s+(?P<name>\S+)"
    r"(?:\s+\[(?P<module>[^\]]+)\])?"  # /proc/kallsyms module symbols
)
# nm prints undefined symbols with blanks where the address would be.
_UNDEFINED = re.compile(r"\s+[Uvw]\s+\S+")

_KINDS = {
    **dict.fromkeys("TtWwi", SymbolKind.FUNCTION),
    **dict.fromkeys("DdBbRrGgSsVvCu", SymbolKind.OBJECT),
}
# Sections as System.map implies them; the rest are unknown.
_SECTIONS = {
    **dict.fromkeys("Tt", ".text"),
    **dict.fromkeys("Dd", ".data"),
    **dict.fromkeys("Bb", ".bss"),
    **dict.fromkeys("Rr", ".rodata"),
    **dict.fromkeys("Aa", ABSOLUTE_SECTION),
}

# How many leading lines sniffing looks at.
_SNIFF_LINES = 8


def looks_like_kallsyms(head: bytes) -> bool:
    """Whether the start of a file reads as System.map / kallsyms / nm text."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return False
    lines = [line for line in text.splitlines()[:_SNIFF_LINES] if line.strip()]
    if len(lines) > 1 and not text.endswith("\n"):
        lines = lines[:-1]  # the last line may be cut off by the sniff window
    return bool(lines) and all(_LINE.fullmatch(line.strip()) or _UNDEFINED.fullmatch(line) for line in lines)


def parse_kallsyms(text: str, *, name: str = "<kallsyms>") -> SymbolTable:
    """Parse System.map, ``/proc/kallsyms`` or ``nm [-S]`` text into a table.

    Undefined symbols are skipped. Raises :class:`SymbolError` for a line
    that is none of these formats, and for a kallsyms read without
    privilege, whose addresses are all 0.
    """
    ranked: list[tuple[int, int, Symbol]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or _UNDEFINED.fullmatch(raw):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise SymbolError(f"{name}:{number}: not a symbol line: {line[:60]!r}")
        letter = match["type"]
        if letter in "Uv" and int(match["address"], 16) == 0:
            continue  # undefined (or undefined weak) with a printed address
        symbol = Symbol(
            match["name"],
            int(match["address"], 16),
            int(match["size"], 16) if match["size"] else 0,
            _KINDS.get(letter, SymbolKind.OTHER),
            _SECTIONS.get(letter),
        )
        # Global (upper case) symbols first: SymbolTable prefers the first
        # of several namesakes, and the kernel has many file-static ones.
        ranked.append((0 if letter.isupper() else 1, number, symbol))
    if len(ranked) > 1 and all(symbol.address == 0 for _, _, symbol in ranked):
        raise SymbolError(
            f"{name}: every address is 0; the kernel hides them from unprivileged"
            " readers (kernel.kptr_restrict): read it as root"
        )
    ranked.sort(key=lambda item: item[:2])
    return SymbolTable((symbol for _, _, symbol in ranked), name=name)


def load_kallsyms(path: str | os.PathLike[str]) -> SymbolTable:
    """Read a System.map or a saved ``/proc/kallsyms`` file."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise SymbolError(f"{path}: {exc.strerror or exc}") from exc
    return parse_kallsyms(text, name=os.fspath(path))


def kaslr_slide(
    table: SymbolTable,
    runtime_address: int,
    *,
    symbol: str = "_text",
    alignment: int = KASLR_ALIGNMENT,
) -> int:
    """The KASLR slide: ``runtime_address`` of ``symbol`` minus its link address.

    ``runtime_address`` is where the running kernel has ``symbol`` (read
    from the guest's ``/proc/kallsyms``, or from a register at a known
    stop). Feed the result to :meth:`SymbolTable.relocated`. Raises
    :class:`SymbolError` if the table lacks the symbol or the slide is not
    a multiple of ``alignment`` (pass 1 to accept any slide).
    """
    known = table.get_by_name(symbol)
    if known is None:
        raise SymbolError(f"cannot compute the KASLR slide: no '{symbol}' in {table.name}")
    slide = runtime_address - known.address
    if alignment > 1 and slide % alignment:
        raise SymbolError(
            f"slide {slide:#x} from {symbol} at {runtime_address:#x} is not a multiple of"
            f" {alignment:#x}: is that really where {symbol} is?"
        )
    return slide
