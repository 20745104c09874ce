"""C types as DWARF describes them, spelled as gdb spells them.

The model (:class:`CType` and its subclasses) mirrors DWARF 5 chapter 5
("Type Entries"): base types, pointers, qualifiers (const, volatile,
restrict, _Atomic), typedefs, structures and unions with bit fields,
arrays (one :class:`ArrayType` per dimension, flexible and variable-length
ones included), enumerations and function types. Types read from an image
come from :mod:`kvmbench.symbols.units`; the expression evaluator builds
the few it needs itself (``int`` for literals, pointers for ``&x``).

:func:`type_to_string` is gdb's C type printer (``whatis`` prints with
``show=-1``, ``ptype`` with ``show=1``, struct members with ``show=0``):
the spelling of every answer is gdb 13's, which the tests compare.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


class TypeCode(enum.Enum):
    """What kind of type a :class:`CType` is (gdb's TYPE_CODE_*)."""

    VOID = "void"
    INTEGER = "integer"  # int, char, _Bool and their signed/unsigned forms
    FLOAT = "float"
    POINTER = "pointer"
    ARRAY = "array"
    STRUCT = "struct"
    UNION = "union"
    ENUM = "enum"
    FUNCTION = "function"
    TYPEDEF = "typedef"
    QUALIFIED = "qualified"


class IntegerKind(enum.Enum):
    """How an integer type's values print (DW_AT_encoding)."""

    INTEGER = "integer"
    CHAR = "char"  # printed as 65 'A'
    BOOL = "bool"  # printed as true / false


@dataclass(eq=False)
class CType:
    """A C type. ``name`` is the spelling gdb shows (None for derived types);
    ``size`` is in bytes, None when unknown (incomplete types, void)."""

    name: str | None
    size: int | None

    code = TypeCode.VOID

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {type_to_string(self)!r}>"


@dataclass(eq=False, repr=False)
class VoidType(CType):
    """``void``."""

    name: str | None = "void"
    size: int | None = 1  # gdb's sizeof(void), as GNU C's


@dataclass(eq=False, repr=False)
class IntegerType(CType):
    """An integer, character or boolean base type."""

    signed: bool = True
    kind: IntegerKind = IntegerKind.INTEGER

    code = TypeCode.INTEGER


@dataclass(eq=False, repr=False)
class FloatType(CType):
    """A binary floating-point type (float, double, long double)."""

    code = TypeCode.FLOAT


@dataclass(eq=False, repr=False)
class PointerType(CType):
    """A pointer to ``target``."""

    target: CType = field(default_factory=VoidType)
    name: str | None = None
    size: int | None = 8

    code = TypeCode.POINTER


@dataclass(eq=False, repr=False)
class QualifiedType(CType):
    """``target`` with cv-qualifiers (DW_TAG_const_type and friends)."""

    target: CType = field(default_factory=VoidType)
    const: bool = False
    volatile: bool = False
    restrict: bool = False
    atomic: bool = False
    name: str | None = None
    size: int | None = None

    code = TypeCode.QUALIFIED


@dataclass(eq=False, repr=False)
class TypedefType(CType):
    """A typedef name for ``target``."""

    target: CType = field(default_factory=VoidType)

    code = TypeCode.TYPEDEF


@dataclass(eq=False, repr=False)
class ArrayType(CType):
    """``count`` elements of ``element`` (None: flexible or unknown; see ``variable_length``).

    A multi-dimensional array is an array of arrays, as in C.
    """

    element: CType = field(default_factory=VoidType)
    count: int | None = None
    variable_length: bool = False  # the bound is a DWARF expression (a VLA)
    name: str | None = None
    size: int | None = None
    # For a VLA: the DWARF bound, resolved in a frame by
    # kvmbench.symbols.locations.resolve_type (opaque here).
    bound: object | None = field(default=None, repr=False)
    lower_bound: int = 0

    code = TypeCode.ARRAY


@dataclass(eq=False)
class Member:
    """A struct or union member. ``offset`` is in bytes from the start of
    the object; a bit field has ``bit_size`` bits starting ``bit_offset``
    bits after ``offset`` (DWARF 5 DW_AT_data_bit_offset, little-endian)."""

    name: str | None
    type: CType
    offset: int = 0
    bit_size: int | None = None
    bit_offset: int = 0


@dataclass(eq=False, repr=False)
class StructType(CType):
    """A struct or union; ``name`` is its tag (None if anonymous)."""

    union: bool = False
    members: list[Member] = field(default_factory=list)
    declaration: bool = False  # only declared here (an incomplete type)

    @property
    def code(self) -> TypeCode:  # type: ignore[override]
        return TypeCode.UNION if self.union else TypeCode.STRUCT

    @property
    def keyword(self) -> str:
        """``struct`` or ``union``."""
        return "union" if self.union else "struct"


@dataclass(eq=False, repr=False)
class EnumType(CType):
    """An enumeration; ``name`` is its tag. ``signed`` when some value is
    negative (gdb makes the others unsigned); ``flag`` when every value is
    0 or a distinct single bit, so a mix prints as ``(A | B)``."""

    enumerators: list[tuple[str, int]] = field(default_factory=list)
    signed: bool = False
    flag: bool = False
    declaration: bool = False

    code = TypeCode.ENUM

    def name_of(self, value: int) -> str | None:
        """The first enumerator with ``value``, or None."""
        for name, number in self.enumerators:
            if number == value:
                return name
        return None


@dataclass(eq=False, repr=False)
class FunctionType(CType):
    """A function type: return type, parameter types, ``...``."""

    return_type: CType = field(default_factory=VoidType)
    params: list[CType] = field(default_factory=list)
    varargs: bool = False
    prototyped: bool = True
    name: str | None = None
    size: int | None = 1  # gdb's sizeof of a function, as GNU C's

    code = TypeCode.FUNCTION


# -- helpers -----------------------------------------------------------------------

#: Qualifier flags in the order gdb prints them.
_QUALIFIERS = ("const", "volatile", "restrict", "atomic")
_QUALIFIER_WORDS = {"const": "const", "volatile": "volatile", "restrict": "restrict", "atomic": "_Atomic"}


def unqualified(ctype: CType) -> tuple[CType, frozenset[str]]:
    """``ctype`` without its cv-qualifiers, and the qualifiers (gdb keeps them as flags)."""
    qualifiers: set[str] = set()
    depth = 0
    while isinstance(ctype, QualifiedType) and depth < 64:
        qualifiers |= {q for q in _QUALIFIERS if getattr(ctype, q)}
        ctype = ctype.target
        depth += 1
    return ctype, frozenset(qualifiers)


def strip_typedefs(ctype: CType) -> CType:
    """gdb's check_typedef: follow typedefs and qualifiers to the real type.

    The qualifiers are dropped: use :func:`unqualified` first to keep them.
    """
    for _ in range(64):
        if isinstance(ctype, (QualifiedType, TypedefType)):
            ctype = ctype.target
        else:
            break
    return ctype


def qualifiers_of(ctype: CType) -> frozenset[str]:
    """Every qualifier on ``ctype``, through typedefs (``const u64`` is const)."""
    found: set[str] = set()
    for _ in range(64):
        if isinstance(ctype, QualifiedType):
            found |= {q for q in _QUALIFIERS if getattr(ctype, q)}
        elif not isinstance(ctype, TypedefType):
            break
        ctype = ctype.target  # type: ignore[attr-defined]
    return frozenset(found)


def sizeof(ctype: CType) -> int | None:
    """The size in bytes of ``ctype`` (None for incomplete and variable-length types)."""
    real = strip_typedefs(ctype)
    if isinstance(real, ArrayType) and real.size is None:
        element = sizeof(real.element)
        if real.count is None or element is None:
            return None
        return real.count * element
    return real.size


def is_integral(ctype: CType) -> bool:
    """Integers, characters, booleans and enums."""
    return strip_typedefs(ctype).code in (TypeCode.INTEGER, TypeCode.ENUM)


def is_arithmetic(ctype: CType) -> bool:
    """Integral or floating."""
    return strip_typedefs(ctype).code in (TypeCode.INTEGER, TypeCode.ENUM, TypeCode.FLOAT)


def is_scalar(ctype: CType) -> bool:
    """Arithmetic or pointer (C11 6.2.5p21)."""
    return is_arithmetic(ctype) or strip_typedefs(ctype).code is TypeCode.POINTER


def is_signed(ctype: CType) -> bool:
    """Whether an integral type's values are signed."""
    real = strip_typedefs(ctype)
    if isinstance(real, IntegerType):
        return real.signed
    if isinstance(real, EnumType):
        return real.signed
    return False


def iter_members(struct: StructType) -> Iterator[Member]:
    """Members with a name, looking through anonymous struct/union members (C11 6.7.2.1p13)."""
    for member in struct.members:
        inner = strip_typedefs(member.type)
        if member.name is None and isinstance(inner, StructType):
            for nested in iter_members(inner):
                yield Member(nested.name, nested.type, member.offset + nested.offset,
                             nested.bit_size, nested.bit_offset)
        else:
            yield member


def find_member(struct: StructType, name: str) -> Member | None:
    """The member ``name`` of ``struct``, anonymous members searched, offsets from ``struct``."""
    for member in iter_members(struct):
        if member.name == name:
            return member
    return None


# -- base type names ----------------------------------------------------------------

_INTEGER_WORDS = frozenset({"signed", "unsigned", "short", "long", "int", "char"})


def canonical_base_name(name: str) -> str:
    """gdb's spelling of a C base type name (cp_canonicalize_string).

    gcc names ``long`` "long int" and ``unsigned long`` "long unsigned
    int"; gdb prints both canonicalised: ``long``, ``unsigned long``,
    ``unsigned short``, ``long long``, ``signed char``.
    """
    words = name.split()
    if not words or not set(words) <= _INTEGER_WORDS:
        if sorted(words) == ["__int128", "unsigned"]:
            return "unsigned __int128"
        return " ".join(words)
    unsigned = "unsigned" in words
    if "char" in words:
        return "unsigned char" if unsigned else "signed char" if "signed" in words else "char"
    longs = words.count("long")
    core = "short" if "short" in words else "long long" if longs >= 2 else "long" if longs else "int"
    return f"unsigned {core}" if unsigned else core


# -- gdb's C type printer (c-typeprint.c's algorithm) ---------------------------------


def type_to_string(ctype: CType, varstring: str = "", show: int = -1, level: int = 0) -> str:
    """``ctype`` spelled as gdb prints it, declaring ``varstring`` if given.

    ``show`` is gdb's: -1 for ``whatis`` and value prefixes (names only,
    ``struct {...}`` for anonymous types), 1 for ``ptype`` (one level of
    typedefs resolved, struct, union and enum bodies expanded), 0 inside a
    body (named member types by name). ``level`` is the body's indent.
    """
    if show > 0:
        ctype = _check_typedef(ctype)
    text = _base(ctype, show, level)
    core, _ = unqualified(ctype)
    derived = core.code in (TypeCode.POINTER, TypeCode.FUNCTION, TypeCode.ARRAY)
    if varstring or ((show > 0 or core.name is None) and derived):
        text += " "
    text += _prefix(ctype, show, passed_pointer=False, need_post_space=bool(varstring))
    text += varstring
    text += _suffix(ctype, show, passed_pointer=False)
    return text


def whatis(ctype: CType) -> str:
    """gdb's ``whatis`` answer for an expression of type ``ctype`` (without ``type = ``)."""
    return type_to_string(ctype, show=-1)


def ptype(ctype: CType) -> str:
    """gdb's ``ptype`` answer (without ``type = ``): bodies expanded, may span lines."""
    return type_to_string(ctype, show=1)


def _check_typedef(ctype: CType) -> CType:
    """Resolve typedefs at the top, keeping the qualifiers met on the way."""
    qualifiers: set[str] = set()
    for _ in range(64):
        core, found = unqualified(ctype)
        qualifiers |= found
        if isinstance(core, TypedefType):
            ctype = core.target
            continue
        ctype = core
        break
    if not qualifiers:
        return ctype
    flags = {q: q in qualifiers for q in _QUALIFIERS}
    return QualifiedType(target=ctype, **flags)


def _modifiers(qualifiers: frozenset[str], need_pre_space: bool, need_post_space: bool) -> str:
    words = [_QUALIFIER_WORDS[q] for q in _QUALIFIERS if q in qualifiers]
    if not words:
        return ""
    return (" " if need_pre_space else "") + " ".join(words) + (" " if need_post_space else "")


def _tagged_name(core: CType) -> str:
    assert core.name is not None
    if isinstance(core, StructType):
        return f"{core.keyword} {core.name}"
    if isinstance(core, EnumType):
        return f"enum {core.name}"
    return core.name


def _base(ctype: CType, show: int, level: int) -> str:
    core, qualifiers = unqualified(ctype)
    if show <= 0 and core.name is not None:
        return _modifiers(qualifiers, False, True) + _tagged_name(core)
    ctype = _check_typedef(ctype)
    core, qualifiers = unqualified(ctype)
    if isinstance(core, FunctionType):
        return _base(core.return_type, show, level)
    if isinstance(core, PointerType):
        return _base(core.target, show, level)
    if isinstance(core, ArrayType):
        return _base(core.element, show, level)
    if isinstance(core, StructType):
        text = _modifiers(qualifiers, False, True) + core.keyword + " "
        if core.name is not None:
            text += core.name + (" " if show > 0 else "")
        if show < 0:
            return text + "{...}" if core.name is None else text
        return text + _struct_body(core, show, level)
    if isinstance(core, EnumType):
        text = _modifiers(qualifiers, False, True) + "enum "
        if core.name is not None:
            text += core.name + (" " if show > 0 else "")
        if show < 0:
            return text + "{...}" if core.name is None else text
        return text + _enum_body(core)
    return _modifiers(qualifiers, False, True) + (core.name or "void")


def _struct_body(struct: StructType, show: int, level: int) -> str:
    lines = ["{"]
    indent = " " * (level + 4)
    if not struct.members:
        lines.append(indent + ("<incomplete type>" if struct.declaration else "<no data fields>"))
    for member in struct.members:
        text = indent + type_to_string(member.type, member.name or "", show - 1, level + 4)
        if member.bit_size is not None:
            text += f" : {member.bit_size}"
        lines.append(text + ";")
    lines.append(" " * level + "}")
    return "\n".join(lines)


def _enum_body(enum_type: EnumType) -> str:
    parts = []
    last = 0
    for name, value in enum_type.enumerators:
        # gdb writes "= N" only where the value is not the previous one plus one.
        parts.append(name if value == last else f"{name} = {value}")
        last = value + 1
    return "{" + ", ".join(parts) + "}"


def _prefix(ctype: CType, show: int, passed_pointer: bool, need_post_space: bool) -> str:
    core, qualifiers = unqualified(ctype)
    if core.name is not None and show <= 0:
        return ""
    if isinstance(core, PointerType):
        return (_prefix(core.target, show, True, True) + "*"
                + _modifiers(qualifiers, True, need_post_space))
    if isinstance(core, FunctionType):
        return _prefix(core.return_type, show, False, False) + ("(" if passed_pointer else "")
    if isinstance(core, ArrayType):
        return _prefix(core.element, show, False, need_post_space) + ("(" if passed_pointer else "")
    if isinstance(core, TypedefType):
        return _prefix(core.target, show, passed_pointer, False)
    return ""


def _suffix(ctype: CType, show: int, passed_pointer: bool) -> str:
    core, _ = unqualified(ctype)
    if core.name is not None and show <= 0:
        return ""
    if isinstance(core, ArrayType):
        if core.variable_length:
            bound = "variable length"
        else:
            bound = str(core.count) if core.count is not None else ""
        return (")" if passed_pointer else "") + f"[{bound}]" + _suffix(core.element, show, False)
    if isinstance(core, PointerType):
        return _suffix(core.target, show, True)
    if isinstance(core, FunctionType):
        return ((")" if passed_pointer else "") + _parameters(core)
                + _suffix(core.return_type, show, passed_pointer))
    if isinstance(core, TypedefType):
        return _suffix(core.target, show, passed_pointer)
    return ""


def _parameters(function: FunctionType) -> str:
    params = [type_to_string(param, "", 0) for param in function.params]
    if params and function.varargs:
        params.append("...")
    elif not params and function.prototyped:
        params.append("void")
    return "(" + ", ".join(params) + ")"


def format_type_list(types: Sequence[CType]) -> str:
    """Types joined as a parameter list: ``int, char **``."""
    return ", ".join(type_to_string(t, "", 0) for t in types)
