"""DWARF compilation units read lazily into scopes, variables, types and call sites.

:class:`DebugUnits` knows every compilation unit of an image by its code
ranges (the CU's top DIE only) and, from the first lookup by name on, by the
names its top-level DIEs define. A :class:`Unit` reads its whole DIE tree
the first time a pc or a name in it is asked about, and never again:

- functions as trees of :class:`Scope` (DW_TAG_subprogram, its
  DW_TAG_lexical_block and DW_TAG_inlined_subroutine children; DWARF 5,
  3.3-3.5), each holding its :class:`Variable` s in DIE order;
- file-scope variables (globals and file statics);
- types by DIE offset (:mod:`kvmbench.symbols.types`), made on demand;
- call sites by return address (DW_TAG_call_site, DWARF 5 3.4.1), which
  entry values (DW_OP_entry_value) are recovered through.

Abstract instances are merged as gdb merges them (``inherit_abstract_dies``):
an inlined or out-of-line instance takes names, types and declarations from
its DW_AT_abstract_origin, and an abstract parameter or local the instance
does not mention is listed as optimized out.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from elftools.dwarf.dwarf_expr import DWARFExprOp, DWARFExprParser
from elftools.dwarf.ranges import BaseAddressEntry

from kvmbench.symbols._translate import elftools_errors
from kvmbench.symbols.dwarf import _file_table, _SourceFile, _text
from kvmbench.symbols.model import SourceLocation
from kvmbench.symbols.registers import register_name
from kvmbench.symbols.types import (
    ArrayType,
    CType,
    EnumType,
    FloatType,
    FunctionType,
    IntegerKind,
    IntegerType,
    Member,
    PointerType,
    QualifiedType,
    StructType,
    TypedefType,
    VoidType,
    canonical_base_name,
)

if TYPE_CHECKING:
    from elftools.dwarf.compileunit import CompileUnit
    from elftools.dwarf.die import DIE, AttributeValue
    from elftools.dwarf.dwarfinfo import DWARFInfo

_ADDRESS_FORMS = frozenset(
    {"DW_FORM_addr", "DW_FORM_addrx", "DW_FORM_addrx1", "DW_FORM_addrx2",
     "DW_FORM_addrx3", "DW_FORM_addrx4"}
)
_UNSIGNED_DATA_FORMS = frozenset({"DW_FORM_data1", "DW_FORM_data2", "DW_FORM_data4", "DW_FORM_data8"})
_MAX_DEPTH = 64

# DW_ATE_* encodings (DWARF 5, table 5.2).
_DW_ATE_BOOLEAN = 0x02
_DW_ATE_COMPLEX_FLOAT = 0x03
_DW_ATE_FLOAT = 0x04
_DW_ATE_SIGNED = 0x05
_DW_ATE_SIGNED_CHAR = 0x06
_DW_ATE_UNSIGNED = 0x07
_DW_ATE_UNSIGNED_CHAR = 0x08
_DW_ATE_UTF = 0x10

_CALL_SITE_TAGS = frozenset({"DW_TAG_call_site", "DW_TAG_GNU_call_site"})
_CALL_PARAMETER_TAGS = frozenset({"DW_TAG_call_site_parameter", "DW_TAG_GNU_call_site_parameter"})


class VariableKind(enum.Enum):
    """Where a variable lives, as gdb distinguishes them."""

    PARAMETER = "parameter"
    LOCAL = "local"
    STATIC_LOCAL = "static local"  # a function's `static` variable
    FILE_STATIC = "file static"  # `static` at file scope
    GLOBAL = "global"  # external linkage


class ScopeKind(enum.Enum):
    """The kind of a :class:`Scope` (a gdb block)."""

    FUNCTION = "function"
    INLINED_FUNCTION = "inlined function"
    BLOCK = "block"


@dataclass(eq=False)
class Variable:
    """A named object of the program: parameter, local, static or global.

    ``location`` and ``const_value`` are the DIE's raw attributes
    (evaluated by :mod:`kvmbench.symbols.locations`); a variable with
    neither has been optimized out everywhere.
    """

    name: str
    kind: VariableKind
    unit: Unit
    die_offset: int
    type_offset: int | None
    location: AttributeValue | None
    const_value: AttributeValue | None
    decl: SourceLocation | None
    location_die: DIE | None = field(default=None, repr=False)
    scope: Scope | None = field(default=None, repr=False)

    @property
    def type(self) -> CType:
        """The variable's type (``int`` when DWARF gives none, as gdb assumes)."""
        if self.type_offset is None:
            return IntegerType("int", 4)
        return self.unit.type_at(self.type_offset)

    @property
    def is_argument(self) -> bool:
        """A function parameter (``info args``)."""
        return self.kind is VariableKind.PARAMETER

    def __repr__(self) -> str:
        return f"<Variable {self.kind.value} {self.name}>"


@dataclass(eq=False)
class Scope:
    """A function, an inlined call or a lexical block, with its code ranges.

    ``variables`` are in DIE order (parameters first, as compilers emit
    them). A FUNCTION or INLINED_FUNCTION scope has a ``name``,
    ``function_type`` and ``decl``; an inlined one the ``call_site`` it
    was inlined at; a FUNCTION the DW_AT_frame_base attribute.
    """

    kind: ScopeKind
    unit: Unit
    die_offset: int
    ranges: tuple[tuple[int, int], ...]
    parent: Scope | None = field(default=None, repr=False)
    children: list[Scope] = field(default_factory=list, repr=False)
    variables: list[Variable] = field(default_factory=list, repr=False)
    name: str | None = None
    decl: SourceLocation | None = None
    call_site: SourceLocation | None = None
    entry_pc: int | None = None
    frame_base: AttributeValue | None = field(default=None, repr=False)
    frame_base_die: DIE | None = field(default=None, repr=False)
    function_type: FunctionType | None = field(default=None, repr=False)
    origin_offset: int | None = None  # DW_AT_abstract_origin: the abstract instance
    external: bool = False

    @property
    def low(self) -> int:
        """The scope's entry address (DW_AT_entry_pc, else its lowest address)."""
        if self.entry_pc is not None:
            return self.entry_pc
        return min(low for low, _ in self.ranges) if self.ranges else 0

    @property
    def gdb_entry_pc(self) -> int:
        """The entry gdb 13 shows for a block: its first range's start (it ignores DW_AT_entry_pc)."""
        return self.ranges[0][0] if self.ranges else 0

    @property
    def high(self) -> int:
        """The end of the scope's highest range."""
        return max(high for _, high in self.ranges) if self.ranges else 0

    def contains(self, pc: int) -> bool:
        """Whether ``pc`` is in one of the scope's ranges."""
        return any(low <= pc < high for low, high in self.ranges)

    def innermost(self, pc: int) -> Scope:
        """The deepest scope at ``pc`` below this one (this one if none)."""
        scope = self
        for _ in range(_MAX_DEPTH):
            for child in scope.children:
                if child.contains(pc):
                    scope = child
                    break
            else:
                return scope
        return scope

    @property
    def is_function(self) -> bool:
        """A function or an inlined function (gdb: a block with a function symbol)."""
        return self.kind is not ScopeKind.BLOCK

    def function(self) -> Scope:
        """The nearest function or inlined function enclosing (or being) this scope."""
        scope: Scope | None = self
        while scope is not None and not scope.is_function:
            scope = scope.parent
        assert scope is not None, "a block outside any function"
        return scope

    def physical_function(self) -> Scope:
        """The out-of-line function whose code this is (never an inlined one)."""
        scope: Scope | None = self
        while scope is not None and scope.kind is not ScopeKind.FUNCTION:
            scope = scope.parent
        assert scope is not None, "a block outside any function"
        return scope

    def __repr__(self) -> str:
        return f"<Scope {self.kind.value} {self.name or ''} {[(hex(a), hex(b)) for a, b in self.ranges]}>"


@dataclass(frozen=True)
class CallSiteParameter:
    """A DW_TAG_call_site_parameter: the register the callee receives it in,
    and the expression for its value in the caller's frame."""

    register: str | None
    value: tuple[DWARFExprOp, ...] | None


@dataclass(frozen=True)
class CallSite:
    """A call instruction's debug record, keyed by its return address."""

    return_pc: int
    origin_offset: int | None  # the callee's DIE, if known
    tail_call: bool
    parameters: tuple[CallSiteParameter, ...]
    caller: Scope
    origin_name: str | None = None  # the callee's name, if known


@dataclass(frozen=True, eq=False)
class DynamicBound:
    """A VLA's bound: an artificial variable's DIE, or an expression (DWARF 5, 5.13)."""

    unit: Unit
    is_count: bool  # DW_AT_count rather than DW_AT_upper_bound
    die: DIE | None
    expression: tuple[DWARFExprOp, ...] | None


class Unit:
    """One compilation unit, parsed on first use."""

    def __init__(self, units: DebugUnits, cu: CompileUnit) -> None:
        """Wrap ``cu``; only its top DIE is read here."""
        self._units = units
        self.cu = cu
        self.dwarf: DWARFInfo = units.dwarf
        self.version: int = cu["version"]
        self.address_size: int = cu["address_size"]
        top = cu.get_top_DIE()
        self.top = top
        attrs = top.attributes
        self.name = _text(attrs["DW_AT_name"].value) if "DW_AT_name" in attrs else "<unknown>"
        self.comp_dir = _text(attrs["DW_AT_comp_dir"].value) if "DW_AT_comp_dir" in attrs else ""
        self.producer = _text(attrs["DW_AT_producer"].value) if "DW_AT_producer" in attrs else ""
        self.base_address = attrs["DW_AT_low_pc"].value if "DW_AT_low_pc" in attrs else 0
        self.ranges = tuple(self._die_ranges(top))
        self._parsed = False
        self._files: dict[int, _SourceFile] | None = None
        self._types: dict[int, CType] = {}
        self.functions: list[Scope] = []
        self._function_starts: list[int] = []
        self.variables: dict[str, list[Variable]] = {}
        self.type_names: dict[str, int] = {}
        self.typedef_names: set[str] = set()
        self.enumerators: dict[str, tuple[int, int]] = {}  # name -> (enum type DIE offset, value)
        self.call_sites: dict[int, CallSite] = {}
        self.tail_calls: dict[str, list[CallSite]] = {}
        self.scopes_by_offset: dict[int, Scope] = {}

    def __repr__(self) -> str:
        return f"<Unit {self.name}>"

    @property
    def units(self) -> DebugUnits:
        """The image's whole set of units (for lookups across CUs)."""
        return self._units

    @property
    def image_name(self) -> str:
        """The image's name, for error messages."""
        return self._units.name

    # -- public lookups ------------------------------------------------------------

    def contains(self, pc: int) -> bool:
        """Whether the CU's code ranges hold ``pc``."""
        return any(low <= pc < high for low, high in self.ranges)

    def function_at(self, pc: int) -> Scope | None:
        """The out-of-line function whose code holds ``pc``."""
        self.parse()
        i = bisect.bisect_right(self._function_starts, pc) - 1
        # Functions split into ranges (hot/cold) may start far below pc.
        for function in [self.functions[i]] if i >= 0 else []:
            if function.contains(pc):
                return function
        for function in self.functions:
            if function.contains(pc):
                return function
        return None

    def scope_at(self, pc: int) -> Scope | None:
        """The innermost scope (block, inlined call or function) holding ``pc``."""
        function = self.function_at(pc)
        return function.innermost(pc) if function is not None else None

    def iter_variables(self) -> Iterator[Variable]:
        """File-scope variables (globals and file statics) in DIE order."""
        self.parse()
        for variables in self.variables.values():
            yield from variables

    def type_at(self, offset: int) -> CType:
        """The type whose DIE is at section offset ``offset``."""
        cached = self._types.get(offset)
        if cached is not None:
            return cached
        with elftools_errors(self._units.name, "DWARF types"):
            die = self.dwarf.get_DIE_from_refaddr(offset, self.cu)
            return self._read_type(die, 0)

    def named_type(self, name: str) -> CType | None:
        """A type this CU names: ``point_t``, ``struct point``, ``enum color``, ``unsigned long``."""
        self.parse()
        offset = self.type_names.get(name)
        return self.type_at(offset) if offset is not None else None

    def source_location(self, file_index: int, line: int, column: int | None = None) -> SourceLocation | None:
        """A SourceLocation from a DW_AT_decl_file/call_file index."""
        source = self.files.get(file_index)
        if source is None:
            return None
        return SourceLocation(source.display, line, column or None)

    @property
    def files(self) -> dict[int, _SourceFile]:
        """The line table's files by index."""
        if self._files is None:
            program = self.dwarf.line_program_for_CU(self.cu)
            self._files = _file_table(program.header, self.comp_dir) if program is not None else {}
        return self._files

    def parse_expression(self, data: Any) -> tuple[DWARFExprOp, ...]:
        """Decode DWARF expression bytes with this CU's encodings."""
        return tuple(self._units.parser.parse_expr(bytes(data)))

    # -- parsing ------------------------------------------------------------------------

    def parse(self) -> None:
        """Read the whole DIE tree (once)."""
        if self._parsed:
            return
        self._parsed = True
        with elftools_errors(self._units.name, "DWARF"):
            for child in self.top.iter_children():
                self._read_top_level(child)
        self.functions.sort(key=lambda f: f.low if not f.ranges else min(lo for lo, _ in f.ranges))
        self._function_starts = [min(lo for lo, _ in f.ranges) for f in self.functions]

    def _read_top_level(self, die: DIE) -> None:
        tag = die.tag
        if tag == "DW_TAG_subprogram":
            ranges = self._die_ranges(die)
            if ranges and "DW_AT_declaration" not in die.attributes:
                self.functions.append(self._read_function(die, ranges))
        elif tag == "DW_TAG_variable":
            variable = self._read_variable(die, None)
            if variable is not None:
                self.variables.setdefault(variable.name, []).append(variable)
        elif tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_enumeration_type"):
            name = _die_name(die)
            if name is not None:
                keyword = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
                           "DW_TAG_enumeration_type": "enum"}[tag]
                key = f"{keyword} {name}"
                # A full definition wins over a forward declaration.
                if key not in self.type_names or "DW_AT_declaration" not in die.attributes:
                    self.type_names[key] = die.offset
            if tag == "DW_TAG_enumeration_type":
                enum_type = self.type_at(die.offset)
                if isinstance(enum_type, EnumType):
                    for enumerator, value in enum_type.enumerators:
                        self.enumerators.setdefault(enumerator, (die.offset, value))
        elif tag in ("DW_TAG_typedef", "DW_TAG_base_type"):
            name = _die_name(die)
            if name is not None:
                key = canonical_base_name(name) if tag == "DW_TAG_base_type" else name
                self.type_names.setdefault(key, die.offset)
                if tag == "DW_TAG_typedef":
                    self.typedef_names.add(name)

    def _read_function(self, die: DIE, ranges: list[tuple[int, int]]) -> Scope:
        origin = _origin(die)
        named = origin if origin is not None else die
        scope = Scope(
            ScopeKind.FUNCTION, self, die.offset, tuple(ranges),
            name=_die_name(die),
            decl=self._decl(named),
            entry_pc=_address_attr(die, "DW_AT_entry_pc"),
            frame_base=die.attributes.get("DW_AT_frame_base"),
            frame_base_die=die,
            origin_offset=origin.offset if origin is not None else None,
            external=_inherited_flag(die, "DW_AT_external"),
        )
        scope.function_type = self._function_type(die)
        self.scopes_by_offset[die.offset] = scope
        self._read_children(die, scope)
        return scope

    def _read_children(self, die: DIE, scope: Scope) -> None:
        referenced: set[int] = set()
        for child in die.iter_children():
            origin = child.attributes.get("DW_AT_abstract_origin")
            if origin is not None:
                referenced.add(child.get_DIE_from_attribute("DW_AT_abstract_origin").offset)
            self._read_child(child, scope)
        abstract = _origin(die)
        if abstract is not None:
            self._inherit_abstract(abstract, scope, referenced)

    def _read_child(self, child: DIE, scope: Scope) -> None:
        tag = child.tag
        if tag in ("DW_TAG_formal_parameter", "DW_TAG_variable"):
            variable = self._read_variable(child, scope)
            if variable is not None:
                scope.variables.append(variable)
        elif tag in ("DW_TAG_lexical_block", "DW_TAG_inlined_subroutine"):
            ranges = self._die_ranges(child)
            if not ranges:
                # gdb keeps the contents of a block without code in the
                # enclosing scope (read_lexical_block_scope).
                self._read_children(child, scope)
                return
            origin = _origin(child)
            inlined = tag == "DW_TAG_inlined_subroutine"
            block = Scope(
                ScopeKind.INLINED_FUNCTION if inlined else ScopeKind.BLOCK, self, child.offset, tuple(ranges),
                parent=scope,
                name=_die_name(child) if inlined else None,
                decl=self._decl(origin) if inlined and origin is not None else None,
                call_site=self._call_location(child) if inlined else None,
                entry_pc=_address_attr(child, "DW_AT_entry_pc") if inlined else None,
                origin_offset=origin.offset if origin is not None else None,
            )
            if inlined and origin is not None:
                block.function_type = self._function_type(origin)
            scope.children.append(block)
            self.scopes_by_offset[child.offset] = block
            self._read_children(child, block)
        elif tag in _CALL_SITE_TAGS:
            self._read_call_site(child, scope)

    def _inherit_abstract(self, abstract: DIE, scope: Scope, referenced: set[int]) -> None:
        """Add the abstract instance's parameters and locals the concrete one left out."""
        for child in abstract.iter_children():
            if child.offset in referenced:
                continue
            if child.tag in ("DW_TAG_formal_parameter", "DW_TAG_variable"):
                variable = self._read_variable(child, scope)
                if variable is not None:
                    scope.variables.append(variable)
            elif child.tag == "DW_TAG_lexical_block":
                # An abstract block no concrete block stands for: its
                # variables exist nowhere in this instance.
                self._inherit_abstract(child, scope, referenced)

    def _read_variable(self, die: DIE, scope: Scope | None) -> Variable | None:
        attrs = die.attributes
        if "DW_AT_declaration" in attrs and "DW_AT_location" not in attrs:
            return None  # `extern int x;`: the definition is elsewhere
        name = _die_name(die)
        if name is None:
            return None
        origin = _origin(die)
        named = origin if origin is not None else die
        location = attrs.get("DW_AT_location")
        const_value = attrs.get("DW_AT_const_value")
        if const_value is None and origin is not None and location is None:
            const_value = origin.attributes.get("DW_AT_const_value")
        type_die = _type_die(die)
        if die.tag == "DW_TAG_formal_parameter":
            kind = VariableKind.PARAMETER
        elif scope is None:
            kind = VariableKind.GLOBAL if _inherited_flag(die, "DW_AT_external") else VariableKind.FILE_STATIC
        elif location is not None and self._is_static_location(location):
            kind = VariableKind.STATIC_LOCAL
        else:
            kind = VariableKind.LOCAL
        return Variable(
            name=name,
            kind=kind,
            unit=self,
            die_offset=die.offset,
            type_offset=type_die.offset if type_die is not None else None,
            location=location,
            const_value=const_value,
            decl=self._decl(named),
            location_die=die,
            scope=scope,
        )

    def _is_static_location(self, location: AttributeValue) -> bool:
        if location.form != "DW_FORM_exprloc" and not location.form.startswith("DW_FORM_block"):
            return False
        ops = self.parse_expression(location.value)
        return len(ops) == 1 and ops[0].op_name in ("DW_OP_addr", "DW_OP_addrx")

    def _read_call_site(self, die: DIE, scope: Scope) -> None:
        attrs = die.attributes
        return_pc = _address_attr(die, "DW_AT_call_return_pc")
        if return_pc is None:
            return_pc = _address_attr(die, "DW_AT_low_pc")  # DW_TAG_GNU_call_site
        if return_pc is None:
            return
        origin_offset = None
        for name in ("DW_AT_call_origin", "DW_AT_abstract_origin"):
            if name in attrs and attrs[name].form.startswith("DW_FORM_ref"):
                origin_offset = die.get_DIE_from_attribute(name).offset
                break
        parameters = []
        for child in die.iter_children():
            if child.tag not in _CALL_PARAMETER_TAGS:
                continue
            register = None
            location = child.attributes.get("DW_AT_location")
            if location is not None:
                ops = self.parse_expression(location.value)
                if len(ops) == 1 and ops[0].op_name.startswith("DW_OP_reg"):
                    op = ops[0]
                    number = op.args[0] if op.op_name == "DW_OP_regx" else int(op.op_name[len("DW_OP_reg"):])
                    register = register_name(number)
            value_attr = child.attributes.get("DW_AT_call_value") or child.attributes.get("DW_AT_GNU_call_site_value")
            value = self.parse_expression(value_attr.value) if value_attr is not None else None
            parameters.append(CallSiteParameter(register, value))
        tail = "DW_AT_call_tail_call" in attrs or "DW_AT_GNU_tail_call" in attrs
        origin_name = None
        if origin_offset is not None:
            origin_name = _die_name(self.dwarf.get_DIE_from_refaddr(origin_offset, self.cu))
        site = CallSite(return_pc, origin_offset, tail, tuple(parameters), scope, origin_name)
        self.call_sites[return_pc] = site
        caller = scope.physical_function().name
        if tail and caller is not None:
            self.tail_calls.setdefault(caller, []).append(site)

    # -- helpers --------------------------------------------------------------------------

    def _decl(self, die: DIE | None) -> SourceLocation | None:
        if die is None:
            return None
        attrs = die.attributes
        if "DW_AT_decl_file" not in attrs or "DW_AT_decl_line" not in attrs:
            origin = _origin(die)
            return self._decl(origin) if origin is not None and origin is not die else None
        column = attrs["DW_AT_decl_column"].value if "DW_AT_decl_column" in attrs else None
        return self.source_location(attrs["DW_AT_decl_file"].value, attrs["DW_AT_decl_line"].value, column)

    def _call_location(self, die: DIE) -> SourceLocation | None:
        attrs = die.attributes
        if "DW_AT_call_file" not in attrs or "DW_AT_call_line" not in attrs:
            return None
        column = attrs["DW_AT_call_column"].value if "DW_AT_call_column" in attrs else None
        return self.source_location(attrs["DW_AT_call_file"].value, attrs["DW_AT_call_line"].value, column)

    def _die_ranges(self, die: DIE) -> list[tuple[int, int]]:
        attrs = die.attributes
        if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
            low = _address_attr(die, "DW_AT_low_pc") or 0
            high_attr = attrs["DW_AT_high_pc"]
            high = high_attr.value if high_attr.form in _ADDRESS_FORMS else low + high_attr.value
            return [(low, high)] if high > low else []
        if "DW_AT_ranges" in attrs:
            range_lists = self.dwarf.range_lists()
            if range_lists is None:
                return []
            base = self.top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in self.top.attributes else 0
            result = []
            with elftools_errors(self._units.name, "DWARF ranges"):
                entries = range_lists.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=self.cu)
            for entry in entries:
                if isinstance(entry, BaseAddressEntry):
                    base = entry.base_address
                elif entry.is_absolute:
                    result.append((entry.begin_offset, entry.end_offset))
                else:
                    result.append((base + entry.begin_offset, base + entry.end_offset))
            return [(lo, hi) for lo, hi in result if hi > lo]
        return []

    def _function_type(self, die: DIE) -> FunctionType:
        """The type of a subprogram or subroutine type DIE (params, ..., prototyped)."""
        return_die = _type_die(die)
        params = []
        varargs = False
        owner = die
        origin = _origin(die)
        if origin is not None and not any(c.tag == "DW_TAG_formal_parameter" for c in die.iter_children()):
            owner = origin
        for child in owner.iter_children():
            if child.tag == "DW_TAG_formal_parameter":
                param_die = _type_die(child)
                params.append(self._read_type(param_die, 1) if param_die is not None else IntegerType("int", 4))
            elif child.tag == "DW_TAG_unspecified_parameters":
                varargs = True
        prototyped = _inherited_flag(die, "DW_AT_prototyped")
        return FunctionType(
            return_type=self._read_type(return_die, 1) if return_die is not None else VoidType(),
            params=params, varargs=varargs, prototyped=prototyped,
        )

    def _read_type(self, die: DIE | None, depth: int) -> CType:
        if die is None:
            return VoidType()
        cached = self._types.get(die.offset)
        if cached is not None:
            return cached
        if depth > _MAX_DEPTH:
            return VoidType("<type too deep>", None)
        tag = die.tag
        attrs = die.attributes
        name = _die_name(die)
        size = attrs["DW_AT_byte_size"].value if "DW_AT_byte_size" in attrs and isinstance(
            attrs["DW_AT_byte_size"].value, int) else None
        ctype: CType
        if tag == "DW_TAG_base_type":
            ctype = _base_type(name or "?", size, attrs["DW_AT_encoding"].value if "DW_AT_encoding" in attrs else 0)
            self._types[die.offset] = ctype
            return ctype
        if tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type", "DW_TAG_rvalue_reference_type"):
            pointer = PointerType(size=size or self.address_size)
            self._types[die.offset] = pointer
            pointer.target = self._read_type(_type_die(die), depth + 1)
            return pointer
        if tag in ("DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_restrict_type", "DW_TAG_atomic_type"):
            qualified = QualifiedType(
                const=tag == "DW_TAG_const_type", volatile=tag == "DW_TAG_volatile_type",
                restrict=tag == "DW_TAG_restrict_type", atomic=tag == "DW_TAG_atomic_type",
            )
            self._types[die.offset] = qualified
            qualified.target = self._read_type(_type_die(die), depth + 1)
            qualified.size = qualified.target.size
            return qualified
        if tag == "DW_TAG_typedef":
            typedef = TypedefType(name or "?", None)
            self._types[die.offset] = typedef
            typedef.target = self._read_type(_type_die(die), depth + 1)
            typedef.size = typedef.target.size
            return typedef
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type"):
            struct = StructType(name, size, union=tag == "DW_TAG_union_type",
                                declaration="DW_AT_declaration" in attrs)
            self._types[die.offset] = struct
            if struct.declaration:
                resolved = self._units.complete_type(struct)
                if resolved is not None:
                    self._types[die.offset] = resolved
                    return resolved
            for child in die.iter_children():
                if child.tag == "DW_TAG_member":
                    struct.members.append(self._read_member(child, depth))
            return struct
        if tag == "DW_TAG_enumeration_type":
            ctype = self._read_enum(die, name, size, depth)
            self._types[die.offset] = ctype
            return ctype
        if tag == "DW_TAG_array_type":
            ctype = self._read_array(die, depth)
            self._types[die.offset] = ctype
            return ctype
        if tag in ("DW_TAG_subroutine_type", "DW_TAG_subprogram"):
            ctype = self._function_type(die)
            self._types[die.offset] = ctype
            return ctype
        if tag == "DW_TAG_unspecified_type":
            ctype = VoidType(name or "void", None)
            self._types[die.offset] = ctype
            return ctype
        ctype = VoidType(f"<unknown type {tag}>", size)
        self._types[die.offset] = ctype
        return ctype

    def _read_member(self, die: DIE, depth: int) -> Member:
        attrs = die.attributes
        member_type = self._read_type(_type_die(die), depth + 1)
        offset = 0
        location = attrs.get("DW_AT_data_member_location")
        if location is not None:
            if isinstance(location.value, int):
                offset = location.value
            else:
                ops = self.parse_expression(location.value)
                if len(ops) == 1 and ops[0].op_name == "DW_OP_plus_uconst":
                    offset = ops[0].args[0]
        bit_size = attrs["DW_AT_bit_size"].value if "DW_AT_bit_size" in attrs else None
        bit_offset = 0
        if bit_size is not None:
            if "DW_AT_data_bit_offset" in attrs:
                # DWARF 4+: bits from the start of the containing struct.
                position = attrs["DW_AT_data_bit_offset"].value + offset * 8
            elif "DW_AT_bit_offset" in attrs:
                # DWARF 2/3: bits from the most significant bit of a storage
                # unit of DW_AT_byte_size bytes (little-endian here).
                storage = attrs["DW_AT_byte_size"].value if "DW_AT_byte_size" in attrs else (member_type.size or 4)
                position = offset * 8 + storage * 8 - attrs["DW_AT_bit_offset"].value - bit_size
            else:
                position = offset * 8
            offset, bit_offset = divmod(position, 8)
        return Member(_die_name(die), member_type, offset, bit_size, bit_offset)

    def _read_enum(self, die: DIE, name: str | None, size: int | None, depth: int) -> EnumType:
        underlying = _type_die(die)
        underlying_type = self._read_type(underlying, depth + 1) if underlying is not None else None
        values: list[tuple[str, int]] = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_enumerator":
                continue
            attr = child.attributes.get("DW_AT_const_value")
            if attr is None:
                continue
            value = attr.value
            if (attr.form in _UNSIGNED_DATA_FORMS and isinstance(underlying_type, IntegerType)
                    and underlying_type.signed and underlying_type.size):
                bits = underlying_type.size * 8
                value &= (1 << bits) - 1
                if value >> (bits - 1):
                    value -= 1 << bits
            values.append((_die_name(child) or "?", value))
        signed = any(value < 0 for _, value in values)
        # gdb's flag enums (dwarf2/read.c): every value non-negative, at most
        # one bit set, no bit shared with another value.
        flag = not signed
        mask = 0
        for _, value in values:
            if value < 0 or bin(value).count("1") >= 2 or mask & value:
                flag = False
                break
            mask |= value
        return EnumType(name, size or 4, enumerators=values, signed=signed, flag=flag,
                        declaration="DW_AT_declaration" in die.attributes)

    def _read_array(self, die: DIE, depth: int) -> CType:
        element = self._read_type(_type_die(die), depth + 1)
        dimensions: list[tuple[int | None, bool, object | None, int]] = []
        for child in die.iter_children():
            if child.tag not in ("DW_TAG_subrange_type", "DW_TAG_enumeration_type"):
                continue
            attrs = child.attributes
            count: int | None = None
            variable = False
            dynamic: object | None = None
            lower = attrs["DW_AT_lower_bound"].value if "DW_AT_lower_bound" in attrs and isinstance(
                attrs["DW_AT_lower_bound"].value, int) else 0
            for bound in ("DW_AT_count", "DW_AT_upper_bound"):
                if bound not in attrs:
                    continue
                attr = attrs[bound]
                if attr.form.startswith("DW_FORM_ref"):
                    variable = True  # a VLA: the bound is held by another DIE (an artificial variable)
                    dynamic = DynamicBound(self, bound == "DW_AT_count",
                                           child.get_DIE_from_attribute(bound), None)
                elif attr.form in ("DW_FORM_exprloc", "DW_FORM_block1"):
                    variable = True  # a VLA: the bound is a DWARF expression
                    dynamic = DynamicBound(self, bound == "DW_AT_count", None, self.parse_expression(attr.value))
                elif isinstance(attr.value, int):
                    value = attr.value
                    if attr.form == "DW_FORM_data8" and value >= 1 << 63:
                        value -= 1 << 64  # an upper bound of -1: a zero-length array
                    count = value if bound == "DW_AT_count" else value - lower + 1
                    count = max(count, 0)
                break
            dimensions.append((count, variable, dynamic, lower))
        if not dimensions:
            dimensions.append((None, False, None, 0))
        ctype: CType = element
        for count, variable, dynamic, lower in reversed(dimensions):
            element_size = ctype.size if not isinstance(ctype, (TypedefType, QualifiedType)) else _size_of(ctype)
            size = count * element_size if count is not None and element_size is not None else None
            ctype = ArrayType(element=ctype, count=count, variable_length=variable, size=size,
                              bound=dynamic, lower_bound=lower)
        return ctype


class DebugUnits:
    """Every compilation unit of an image: by pc at once, by name once indexed."""

    def __init__(self, dwarf: DWARFInfo, *, name: str = "<elf>") -> None:
        """Index the CUs of ``dwarf`` by their code ranges (top DIEs only)."""
        self.dwarf = dwarf
        self.name = name
        self.parser = DWARFExprParser(dwarf.structs)
        with elftools_errors(name, "DWARF"):
            self.units = [Unit(self, cu) for cu in dwarf.iter_CUs()]
        self._names: dict[str, list[tuple[Unit, str]]] | None = None
        self._completing: set[str] = set()

    def unit_at(self, pc: int) -> Unit | None:
        """The CU whose code holds ``pc``."""
        for unit in self.units:
            if unit.contains(pc):
                return unit
        return None

    def scope_at(self, pc: int) -> Scope | None:
        """The innermost scope at ``pc`` in any CU."""
        unit = self.unit_at(pc)
        return unit.scope_at(pc) if unit is not None else None

    def function_at(self, pc: int) -> Scope | None:
        """The out-of-line function holding ``pc``."""
        unit = self.unit_at(pc)
        return unit.function_at(pc) if unit is not None else None

    def global_variables(self, name: str) -> list[Variable]:
        """File-scope variables called ``name``, external ones first."""
        found = [v for unit in self._units_defining(name) for v in unit.variables.get(name, [])]
        found.sort(key=lambda v: v.kind is not VariableKind.GLOBAL)
        return found

    def functions_named(self, name: str) -> list[Scope]:
        """Out-of-line functions called ``name``, external ones first."""
        found = [f for unit in self._units_defining(name) for f in unit.functions if f.name == name]
        found.sort(key=lambda f: not f.external)
        return found

    def named_type(self, name: str, prefer: Unit | None = None) -> CType | None:
        """The type called ``name`` (``point_t``, ``struct point``), from ``prefer`` first."""
        if prefer is not None:
            found = prefer.named_type(name)
            if found is not None and not _incomplete(found):
                return found
        fallback = None
        for unit in self._units_defining(name):
            found = unit.named_type(name)
            if found is not None:
                if not _incomplete(found):
                    return found
                fallback = fallback or found
        return fallback

    def complete_type(self, declaration: StructType) -> CType | None:
        """The full definition of a struct only declared in one CU (gdb's opaque type resolution)."""
        if declaration.name is None:
            return None
        key = f"{declaration.keyword} {declaration.name}"
        if key in self._completing:
            return None
        self._completing.add(key)
        try:
            found = self.named_type(key)
        finally:
            self._completing.discard(key)
        return found if found is not None and not _incomplete(found) else None

    def enumerator(self, name: str, prefer: Unit | None = None) -> tuple[EnumType, int] | None:
        """The enumeration constant ``name``: its enum type and value."""
        candidates = ([prefer] if prefer is not None else []) + self._units_defining(name)
        for unit in candidates:
            unit.parse()
            found = unit.enumerators.get(name)
            if found is not None:
                enum_type = unit.type_at(found[0])
                assert isinstance(enum_type, EnumType)
                return enum_type, found[1]
        return None

    def typedef_names(self) -> frozenset[str]:
        """Every typedef name of the program (declared to the C parser so casts parse)."""
        names: set[str] = set()
        for unit in self.units:
            unit.parse()
            names |= unit.typedef_names
        return frozenset(names)

    def call_site(self, return_pc: int) -> CallSite | None:
        """The call site whose return address is ``return_pc``."""
        unit = self.unit_at(return_pc - 1)
        if unit is None:
            return None
        unit.parse()
        return unit.call_sites.get(return_pc)

    def tail_calls_from(self, function_name: str) -> list[CallSite]:
        """The tail calls (DW_AT_call_tail_call) made by functions called ``function_name``."""
        sites = []
        for unit in self._units_defining(function_name):
            unit.parse()
            sites += unit.tail_calls.get(function_name, [])
        return sites

    def iter_units(self) -> Iterator[Unit]:
        """Every CU, in section order."""
        return iter(self.units)

    def _units_defining(self, name: str) -> list[Unit]:
        if self._names is None:
            self._names = {}
            for unit in self.units:
                unit.parse()
                names = (set(unit.variables) | {f.name for f in unit.functions if f.name}
                         | set(unit.type_names) | set(unit.enumerators))
                for defined in names:
                    self._names.setdefault(defined, []).append((unit, defined))
        return [unit for unit, _ in self._names.get(name, [])]


# -- DIE helpers ----------------------------------------------------------------------------


def _origin(die: DIE) -> DIE | None:
    """The DIE this one completes (DW_AT_abstract_origin or DW_AT_specification)."""
    for name in ("DW_AT_abstract_origin", "DW_AT_specification"):
        attr = die.attributes.get(name)
        if attr is not None and attr.form.startswith("DW_FORM_ref"):
            return die.get_DIE_from_attribute(name)
    return None


def _die_name(die: DIE) -> str | None:
    for _ in range(_MAX_DEPTH):
        attr = die.attributes.get("DW_AT_name")
        if attr is not None:
            return _text(attr.value)
        origin = _origin(die)
        if origin is None:
            return None
        die = origin
    return None


def _type_die(die: DIE) -> DIE | None:
    for _ in range(_MAX_DEPTH):
        if "DW_AT_type" in die.attributes:
            return die.get_DIE_from_attribute("DW_AT_type")
        origin = _origin(die)
        if origin is None:
            return None
        die = origin
    return None


def _inherited_flag(die: DIE, name: str) -> bool:
    for _ in range(_MAX_DEPTH):
        if name in die.attributes:
            return bool(die.attributes[name].value)
        origin = _origin(die)
        if origin is None:
            return False
        die = origin
    return False


def _address_attr(die: DIE, name: str) -> int | None:
    attr = die.attributes.get(name)
    if attr is None:
        return None
    if attr.form in ("DW_FORM_addrx", "DW_FORM_addrx1", "DW_FORM_addrx2", "DW_FORM_addrx3", "DW_FORM_addrx4"):
        return die.dwarfinfo.get_addr(die.cu, attr.value)
    return attr.value if isinstance(attr.value, int) else None


def _form_bytes(form: str) -> int:
    return {"DW_FORM_data1": 1, "DW_FORM_data2": 2, "DW_FORM_data4": 4, "DW_FORM_data8": 8}[form]


def _size_of(ctype: CType) -> int | None:
    for _ in range(_MAX_DEPTH):
        if isinstance(ctype, (TypedefType, QualifiedType)):
            ctype = ctype.target
        else:
            return ctype.size
    return None


def _incomplete(ctype: CType) -> bool:
    return isinstance(ctype, StructType) and ctype.declaration


def _base_type(name: str, size: int | None, encoding: int) -> CType:
    canonical = canonical_base_name(name)
    if encoding == _DW_ATE_BOOLEAN:
        return IntegerType(canonical, size, signed=False, kind=IntegerKind.BOOL)
    if encoding in (_DW_ATE_FLOAT, _DW_ATE_COMPLEX_FLOAT):
        return FloatType(canonical, size)
    if encoding == _DW_ATE_SIGNED_CHAR:
        return IntegerType(canonical, size, signed=True, kind=IntegerKind.CHAR)
    if encoding in (_DW_ATE_UNSIGNED_CHAR, _DW_ATE_UTF):
        return IntegerType(canonical, size, signed=False, kind=IntegerKind.CHAR)
    return IntegerType(canonical, size, signed=encoding != _DW_ATE_UNSIGNED)
