"""Call frame information: how to find a caller's registers at any pc.

Read from ``.debug_frame`` and ``.eh_frame`` (DWARF 5, 6.4 "Call Frame
Information"; the LSB's ``.eh_frame`` encoding) by pyelftools'
``CallFrameInfo``, whose ``get_decoded()`` tables this module only
indexes and renames: rows become :class:`FrameRules` with gdb's register
names. Nothing is decoded until the first lookup; each FDE's table is
decoded the first time a pc in it is asked about.

Where both sections describe a pc, ``.debug_frame`` wins: it is the one
written for debuggers (gcc emits both from the same directives, so they
agree).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from elftools.dwarf.callframe import FDE
from elftools.dwarf.callframe import RegisterRule as _ElfRegisterRule
from elftools.dwarf.dwarf_expr import DWARFExprOp, DWARFExprParser

from kvmbench.symbols._translate import elftools_errors
from kvmbench.symbols.registers import RETURN_ADDRESS_COLUMN, register_name

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile


class CfiSection(enum.Enum):
    """Which section a rule came from."""

    DEBUG_FRAME = ".debug_frame"
    EH_FRAME = ".eh_frame"


class RuleKind(enum.Enum):
    """The register rules of DWARF 5, 6.4.1 (and "not mentioned": no rule)."""

    UNDEFINED = "undefined"
    SAME_VALUE = "same value"
    OFFSET = "offset"  # saved at CFA + offset
    VAL_OFFSET = "val_offset"  # the value is CFA + offset
    REGISTER = "register"  # saved in another register
    EXPRESSION = "expression"  # saved at the address the expression gives
    VAL_EXPRESSION = "val_expression"  # the value is what the expression gives
    ARCHITECTURAL = "architectural"


_KINDS = {
    _ElfRegisterRule.UNDEFINED: RuleKind.UNDEFINED,
    _ElfRegisterRule.SAME_VALUE: RuleKind.SAME_VALUE,
    _ElfRegisterRule.OFFSET: RuleKind.OFFSET,
    _ElfRegisterRule.VAL_OFFSET: RuleKind.VAL_OFFSET,
    _ElfRegisterRule.REGISTER: RuleKind.REGISTER,
    _ElfRegisterRule.EXPRESSION: RuleKind.EXPRESSION,
    _ElfRegisterRule.VAL_EXPRESSION: RuleKind.VAL_EXPRESSION,
    _ElfRegisterRule.ARCHITECTURAL: RuleKind.ARCHITECTURAL,
}


@dataclass(frozen=True, slots=True)
class RegisterRule:
    """How to recover one register of the caller.

    ``offset`` is from the CFA (OFFSET, VAL_OFFSET); ``register`` names the
    register holding the value (REGISTER); ``expression`` is the decoded
    DWARF expression (EXPRESSION, VAL_EXPRESSION), run with the CFA pushed.
    """

    kind: RuleKind
    offset: int = 0
    register: str | None = None
    expression: tuple[DWARFExprOp, ...] = ()

    def __str__(self) -> str:
        """readelf's ``frames-interp`` spelling: ``c-16``, ``u``, ``s``, ``v+8``, ``rbx``, ``exp``."""
        match self.kind:
            case RuleKind.UNDEFINED:
                return "u"
            case RuleKind.SAME_VALUE:
                return "s"
            case RuleKind.OFFSET:
                return f"c{self.offset:+d}"
            case RuleKind.VAL_OFFSET:
                return f"v{self.offset:+d}"
            case RuleKind.REGISTER:
                return str(self.register)
            case RuleKind.EXPRESSION:
                return "exp"
            case RuleKind.VAL_EXPRESSION:
                return "vexp"
        return "a"


@dataclass(frozen=True, slots=True)
class CfaRule:
    """How to compute the CFA: ``register + offset``, or an expression."""

    register: str | None
    offset: int = 0
    expression: tuple[DWARFExprOp, ...] | None = None

    def __str__(self) -> str:
        """readelf's spelling: ``rsp+8``, ``rbp+16``, ``exp``."""
        if self.expression is not None:
            return "exp"
        return f"{self.register}{self.offset:+d}"


@dataclass(frozen=True, slots=True)
class FrameRules:
    """One row of a CFI table: the rules for pcs in [start, end).

    ``registers`` maps gdb register names to rules; a register that is not
    there has no rule (its value is unchanged across the call, as gdb
    assumes). The return address is the rule of ``return_address``
    (``rip`` on x86-64). ``function_start``/``function_end`` bound the FDE
    (normally the function). ``section`` is None for rules made up by the
    frame-pointer fallback.
    """

    start: int
    end: int
    cfa: CfaRule
    registers: Mapping[str, RegisterRule]
    function_start: int
    function_end: int
    section: CfiSection | None
    return_address: str = "rip"

    def describe(self) -> str:
        """``CFA=rsp+16 rbx=c-16 rip=c-8``: the row as one line."""
        parts = [f"CFA={self.cfa}"]
        parts += [f"{name}={rule}" for name, rule in self.registers.items()]
        return " ".join(parts)


@dataclass(slots=True)
class _FdeEntry:
    start: int
    end: int
    fde: FDE
    section: CfiSection
    # Filled on first use from the FDE's decoded table.
    rows: list[FrameRules] | None = None
    row_starts: list[int] = field(default_factory=list)


class CallFrameInfo:
    """The CFI of one image (``.debug_frame`` and ``.eh_frame``), by pc.

    Build it from an open pyelftools ``ELFFile``; malformed CFI raises
    :class:`~kvmbench.errors.SymbolError` at the first lookup that needs
    it.
    """

    def __init__(self, elffile: ELFFile, *, name: str = "<elf>") -> None:
        """Index ``elffile``'s CFI lazily (nothing is read here)."""
        self.name = name
        self._elffile = elffile
        self._entries: list[_FdeEntry] | None = None
        self._starts: list[int] = []
        self._parser: DWARFExprParser | None = None

    def has_cfi(self) -> bool:
        """Whether the image has any FDE."""
        return bool(self._index())

    def iter_ranges(self) -> Iterator[tuple[int, int, CfiSection]]:
        """``(start, end, section)`` of every FDE, by address (for tests and ``info frame``)."""
        for entry in self._index():
            yield entry.start, entry.end, entry.section

    def find_rules(self, pc: int) -> FrameRules | None:
        """The rules in force at ``pc``, or None where no FDE covers it."""
        entries = self._index()
        i = bisect.bisect_right(self._starts, pc) - 1
        # FDEs of one section do not overlap, so at most one per section
        # covers pc; sorted by start, .debug_frame before .eh_frame at equal
        # starts. Look back a few entries for the other section's copy.
        candidates = [
            entries[j] for j in range(i, max(i - 4, -1), -1) if entries[j].start <= pc < entries[j].end
        ]
        for entry in sorted(candidates, key=lambda e: e.section is not CfiSection.DEBUG_FRAME):
            rows = self._rows(entry)
            k = bisect.bisect_right(entry.row_starts, pc) - 1
            if k >= 0:
                return rows[k]
        return None

    # -- internals -------------------------------------------------------------

    def _index(self) -> list[_FdeEntry]:
        if self._entries is not None:
            return self._entries
        entries: list[_FdeEntry] = []
        with elftools_errors(self.name, "call frame information"):
            if self._elffile.has_dwarf_info():
                dwarf = self._elffile.get_dwarf_info()
                self._parser = DWARFExprParser(dwarf.structs)
                if dwarf.has_CFI():
                    entries += _fdes(dwarf.CFI_entries(), CfiSection.DEBUG_FRAME)
                if dwarf.has_EH_CFI():
                    entries += _fdes(dwarf.EH_CFI_entries(), CfiSection.EH_FRAME)
        order = {CfiSection.DEBUG_FRAME: 0, CfiSection.EH_FRAME: 1}
        entries.sort(key=lambda e: (e.start, order[e.section]))
        # Zero-length FDEs and the linker's leftovers of discarded code
        # (address 0 in a non-relocatable image) describe nothing.
        entries = [e for e in entries if e.end > e.start]
        self._entries = entries
        self._starts = [e.start for e in entries]
        return entries

    def _rows(self, entry: _FdeEntry) -> list[FrameRules]:
        if entry.rows is not None:
            return entry.rows
        with elftools_errors(self.name, "call frame information"):
            decoded = entry.fde.get_decoded()
            return_column = entry.fde.cie["return_address_register"]
            lines = decoded.table
            rows: list[FrameRules] = []
            for index, line in enumerate(lines):
                start = line["pc"]
                end = lines[index + 1]["pc"] if index + 1 < len(lines) else entry.end
                if end <= start:
                    continue
                rows.append(FrameRules(
                    start=start,
                    end=end,
                    cfa=self._cfa_rule(line["cfa"]),
                    registers=MappingProxyType({
                        register_name(number): self._register_rule(line[number])
                        for number in decoded.reg_order
                        if number in line
                    }),
                    function_start=entry.start,
                    function_end=entry.end,
                    section=entry.section,
                    return_address=register_name(return_column),
                ))
        entry.rows = rows
        entry.row_starts = [row.start for row in rows]
        return rows

    def _cfa_rule(self, rule: Any) -> CfaRule:
        if rule.expr is not None:
            return CfaRule(None, 0, self._expression(rule.expr))
        return CfaRule(register_name(rule.reg) if rule.reg is not None else None, rule.offset or 0)

    def _register_rule(self, rule: _ElfRegisterRule) -> RegisterRule:
        kind = _KINDS[rule.type]
        if kind in (RuleKind.OFFSET, RuleKind.VAL_OFFSET):
            return RegisterRule(kind, offset=rule.arg)
        if kind is RuleKind.REGISTER:
            return RegisterRule(kind, register=register_name(rule.arg))
        if kind in (RuleKind.EXPRESSION, RuleKind.VAL_EXPRESSION):
            return RegisterRule(kind, expression=self._expression(rule.arg))
        return RegisterRule(kind)

    def _expression(self, data: Any) -> tuple[DWARFExprOp, ...]:
        assert self._parser is not None
        return tuple(self._parser.parse_expr(bytes(data)))


def _fdes(entries: list[Any], section: CfiSection) -> list[_FdeEntry]:
    result = []
    for entry in entries:
        if isinstance(entry, FDE):
            start = entry["initial_location"]
            result.append(_FdeEntry(start, start + entry["address_range"], entry, section))
    return result


#: The CIE return-address column on x86-64, re-exported for callers that
#: build rules by hand (the frame-pointer fallback).
RETURN_ADDRESS = register_name(RETURN_ADDRESS_COLUMN)
