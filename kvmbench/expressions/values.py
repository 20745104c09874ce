"""Typed values: what a C expression evaluates to.

A :class:`Value` is a type and the bytes of an object of that type, fetched
lazily from where the object is (an lvalue's location: memory, a register,
DWARF pieces) or held directly (literals, results). Bytes the compiler did
not keep are flagged (``optimized``), so a struct can print some members
and ``<optimized out>`` for others, as gdb prints it.

:data:`BUILTIN_TYPES` are gdb's C builtin types (LP64, x86-64), used for
literals, arithmetic results and casts to types the program's DWARF does
not define.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from kvmbench.errors import ExpressionError, OptimizedOut
from kvmbench.symbols.dwarf_eval import CompositeLocation, Location, MemoryLocation, RegisterLocation
from kvmbench.symbols.frame import FrameContext
from kvmbench.symbols.locations import LocatedBytes, read_location
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
    StructType,
    TypeCode,
    VoidType,
    sizeof,
    strip_typedefs,
)

#: gdb's max-value-size: larger objects are not fetched whole.
MAX_VALUE_SIZE = 65536


def _int(name: str, size: int, signed: bool, kind: IntegerKind = IntegerKind.INTEGER) -> IntegerType:
    return IntegerType(name, size, signed=signed, kind=kind)


#: gdb's builtin C types on x86-64 (LP64).
BUILTIN_TYPES: dict[str, CType] = {
    "char": _int("char", 1, True, IntegerKind.CHAR),
    "signed char": _int("signed char", 1, True, IntegerKind.CHAR),
    "unsigned char": _int("unsigned char", 1, False, IntegerKind.CHAR),
    "short": _int("short", 2, True),
    "unsigned short": _int("unsigned short", 2, False),
    "int": _int("int", 4, True),
    "unsigned int": _int("unsigned int", 4, False),
    "long": _int("long", 8, True),
    "unsigned long": _int("unsigned long", 8, False),
    "long long": _int("long long", 8, True),
    "unsigned long long": _int("unsigned long long", 8, False),
    "__int128": _int("__int128", 16, True),
    "unsigned __int128": _int("unsigned __int128", 16, False),
    "_Bool": _int("_Bool", 1, False, IntegerKind.BOOL),
    "float": FloatType("float", 4),
    "double": FloatType("double", 8),
    "long double": FloatType("long double", 16),
    "void": VoidType(),
}

@dataclass(eq=False, repr=False)
class FlagsType(IntegerType):
    """A register of named bits (gdb's ``i386_eflags``): prints ``[ PF ZF IF ]``."""

    flags: tuple[tuple[str, int], ...] = ()


INT = BUILTIN_TYPES["int"]
UNSIGNED_INT = BUILTIN_TYPES["unsigned int"]
LONG = BUILTIN_TYPES["long"]
UNSIGNED_LONG = BUILTIN_TYPES["unsigned long"]
LONG_LONG = BUILTIN_TYPES["long long"]
UNSIGNED_LONG_LONG = BUILTIN_TYPES["unsigned long long"]
CHAR = BUILTIN_TYPES["char"]
DOUBLE = BUILTIN_TYPES["double"]
FLOAT = BUILTIN_TYPES["float"]
VOID = BUILTIN_TYPES["void"]


@dataclass(eq=False)
class Value:
    """A typed value, possibly an lvalue (``location`` says where it lives).

    ``bitfield`` is ``(bit_offset, bit_size)`` of a bit-field member within
    ``data``. ``note`` replaces the whole value when printing
    (``<optimized out>``, ``<not saved>``, ``<synthetic pointer>``).
    """

    type: CType
    _data: bytes | None = None
    _optimized: bytes | None = None
    location: Location | None = None
    context: FrameContext | None = field(default=None, repr=False)
    bitfield: tuple[int, int] | None = None
    name: str | None = None  # the variable it came from, for messages
    note: str | None = None
    _fetch: Callable[[], LocatedBytes] | None = field(default=None, repr=False)
    history_index: int | None = None

    # -- bytes ------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The object's size in bytes (0 if unknown)."""
        size = sizeof(self.type)
        return size if size is not None else 0

    def _load(self) -> None:
        if self._data is not None:
            return
        if self._fetch is None:
            self._data = bytes(self.size)
            self._optimized = bytes(self.size)
            return
        if self.size > MAX_VALUE_SIZE:
            raise ExpressionError(
                f"value requires {self.size} bytes, which is more than max-value-size"
            )
        located = self._fetch()
        self._data, self._optimized = located.data, located.optimized

    @property
    def data(self) -> bytes:
        """The object's bytes (fetched on first use)."""
        self._load()
        assert self._data is not None
        return self._data

    @property
    def optimized(self) -> bytes:
        """One flag per byte: 1 where the byte does not exist (optimized out)."""
        self._load()
        return self._optimized or bytes(len(self.data))

    def is_optimized_out(self) -> bool:
        """Whether any of the value's bytes is gone."""
        return self.note == "<optimized out>" or any(self.optimized)

    @property
    def address(self) -> int | None:
        """The address of an object in memory, else None."""
        if isinstance(self.location, MemoryLocation) and self.bitfield is None:
            return self.location.address
        return None

    @property
    def register(self) -> str | None:
        """The register holding the object, if it is a register."""
        return self.location.register if isinstance(self.location, RegisterLocation) else None

    # -- numbers ----------------------------------------------------------------

    def as_int(self) -> int:
        """The value of an integral, enum, bool or pointer value, as a Python int."""
        self._check_available()
        real = strip_typedefs(self.type)
        if real.code is TypeCode.FLOAT:
            return int(self.as_float())
        data = self.data
        if self.bitfield is not None:
            bit_offset, bit_size = self.bitfield
            raw = int.from_bytes(data, "little") >> bit_offset
            raw &= (1 << bit_size) - 1
            if _is_signed(real) and raw >> (bit_size - 1):
                raw -= 1 << bit_size
            return raw
        size = self.size
        raw = int.from_bytes(data[:size], "little")
        if _is_signed(real) and size and raw >> (size * 8 - 1):
            raw -= 1 << (size * 8)
        return raw

    def as_float(self) -> float:
        """The value of a floating (or integral) value, as a Python float."""
        self._check_available()
        real = strip_typedefs(self.type)
        if real.code is not TypeCode.FLOAT:
            return float(self.as_int())
        return decode_float(self.data[:self.size])

    def as_fraction(self) -> Fraction | float:
        """Exact value of a floating value (long double keeps its 64-bit mantissa)."""
        self._check_available()
        if self.size in (10, 16) and strip_typedefs(self.type).code is TypeCode.FLOAT:
            return decode_x87_exact(self.data[:10])
        number = self.as_float()
        return Fraction(number) if math.isfinite(number) else number

    def _check_available(self) -> None:
        if self.note is not None:
            raise OptimizedOut() if self.note == "<optimized out>" else ExpressionError(
                f"value is not available: {self.note}")
        if any(self.optimized):
            raise OptimizedOut()


def _is_signed(real: CType) -> bool:
    if isinstance(real, IntegerType):
        return real.signed
    if isinstance(real, EnumType):
        return real.signed
    return False


# -- constructors -----------------------------------------------------------------------


def value_from_int(ctype: CType, number: int) -> Value:
    """A value of integral or pointer type ``ctype`` holding ``number`` (wrapped to its size)."""
    size = sizeof(ctype) or 8
    data = (number & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    return Value(ctype, data, bytes(size))


def value_from_float(ctype: CType, number: float) -> Value:
    """A value of floating type ``ctype`` holding ``number``."""
    size = sizeof(ctype) or 8
    return Value(ctype, encode_float(number, size), bytes(size))


def value_from_bytes(ctype: CType, data: bytes) -> Value:
    """A value of ``ctype`` with these bytes (not an lvalue)."""
    return Value(ctype, bytes(data), bytes(len(data)))


def value_at(ctype: CType, location: Location, context: FrameContext | None, name: str | None = None) -> Value:
    """The object of ``ctype`` at ``location``, read when first needed."""
    size = sizeof(ctype) or 0
    real = strip_typedefs(ctype)
    if real.code is TypeCode.FUNCTION:
        size = 0

    def fetch() -> LocatedBytes:
        return read_location(location, size, context)

    return Value(ctype, location=location, context=context, name=name, _fetch=fetch)


def optimized_out(ctype: CType, name: str | None = None) -> Value:
    """A value that does not exist at this pc (gdb's ``<optimized out>``)."""
    size = sizeof(ctype) or 0
    return Value(ctype, bytes(size), bytes([1]) * size, name=name, note="<optimized out>")


# -- floating point -------------------------------------------------------------------------


def decode_float(data: bytes) -> float:
    """IEEE binary32/binary64 or x87 extended (10 or 16 bytes) as a float."""
    if len(data) == 4:
        return struct.unpack("<f", data)[0]
    if len(data) == 8:
        return struct.unpack("<d", data)[0]
    if len(data) >= 10:
        exact = decode_x87_exact(data[:10])
        return float(exact) if isinstance(exact, Fraction) else exact
    raise ExpressionError(f"cannot decode a {len(data)}-byte floating value")


def decode_x87_exact(data: bytes) -> Fraction | float:
    """An x87 80-bit extended value (Intel SDM vol. 1, 4.2.2): exact, or inf/nan."""
    mantissa = int.from_bytes(data[:8], "little")
    top = int.from_bytes(data[8:10], "little")
    sign = -1 if top >> 15 else 1
    exponent = top & 0x7FFF
    if exponent == 0x7FFF:
        if mantissa & ((1 << 63) - 1) == 0:
            return sign * math.inf
        return math.nan
    if exponent == 0:
        return sign * Fraction(mantissa, 1 << (16382 + 63))
    return sign * Fraction(mantissa) * Fraction(2) ** (exponent - 16383 - 63)


def encode_float(number: float, size: int) -> bytes:
    """``number`` as IEEE binary32/binary64, or x87 extended padded to ``size``."""
    if size == 4:
        try:
            return struct.pack("<f", number)
        except OverflowError:
            return struct.pack("<f", math.copysign(math.inf, number))
    if size == 8:
        return struct.pack("<d", number)
    return _encode_x87(number).ljust(size, b"\0")


def _encode_x87(number: float | Fraction) -> bytes:
    """An x87 extended value, rounded to its 64-bit mantissa (to nearest, ties to even)."""
    if isinstance(number, float):
        if math.isnan(number):
            return (0xC000000000000000).to_bytes(8, "little") + (0x7FFF).to_bytes(2, "little")
        if math.isinf(number):
            sign = 0x8000 if number < 0 else 0
            return (1 << 63).to_bytes(8, "little") + (sign | 0x7FFF).to_bytes(2, "little")
        negative = math.copysign(1.0, number) < 0
        fraction = Fraction(number)
    else:
        negative = number < 0
        fraction = number
    sign = 0x8000 if negative else 0
    fraction = abs(fraction)
    if fraction == 0:
        return bytes(8) + sign.to_bytes(2, "little")
    # Exponent e with 2**e <= fraction < 2**(e+1).
    exponent = fraction.numerator.bit_length() - fraction.denominator.bit_length()
    if Fraction(2) ** exponent > fraction:
        exponent -= 1
    elif Fraction(2) ** (exponent + 1) <= fraction:
        exponent += 1
    scaled = fraction / Fraction(2) ** (exponent - 63)
    mantissa = scaled.numerator // scaled.denominator
    remainder = scaled - mantissa
    if remainder > Fraction(1, 2) or (remainder == Fraction(1, 2) and mantissa & 1):
        mantissa += 1
        if mantissa >> 64:
            mantissa >>= 1
            exponent += 1
    biased = exponent + 16383
    if biased >= 0x7FFF:
        return (1 << 63).to_bytes(8, "little") + (sign | 0x7FFF).to_bytes(2, "little")
    if biased <= 0:
        # Denormal: the mantissa's top bit clear, exponent field 0.
        mantissa = int(fraction * Fraction(2) ** (16382 + 63))
        biased = 0
    return mantissa.to_bytes(8, "little") + (sign | biased).to_bytes(2, "little")


def value_from_fraction(ctype: CType, number: Fraction | float) -> Value:
    """A long double value holding ``number`` exactly rounded to the x87 format."""
    size = sizeof(ctype) or 16
    return Value(ctype, _encode_x87(number).ljust(size, b"\0"), bytes(size))


# -- type helpers used across the package ------------------------------------------------------


def pointer_to(ctype: CType) -> PointerType:
    """``ctype *``."""
    return PointerType(target=ctype, size=8)


def array_of(ctype: CType, count: int) -> ArrayType:
    """``ctype [count]``."""
    element = sizeof(ctype) or 0
    return ArrayType(element=ctype, count=count, size=element * count)


def is_char_like(ctype: CType) -> bool:
    """A character type (gdb prints its values as 65 'A' and arrays of it as strings)."""
    real = strip_typedefs(ctype)
    return isinstance(real, IntegerType) and real.kind is IntegerKind.CHAR


def element_type(ctype: CType) -> CType | None:
    """The element type of an array or the target of a pointer, else None."""
    real = strip_typedefs(ctype)
    if isinstance(real, ArrayType):
        return real.element
    if isinstance(real, PointerType):
        return real.target
    return None


def is_struct(ctype: CType) -> bool:
    """A struct or union."""
    return isinstance(strip_typedefs(ctype), StructType)


def is_function(ctype: CType) -> bool:
    """A function type."""
    return isinstance(strip_typedefs(ctype), FunctionType)


def member_value(struct_value: Value, member: Member) -> Value:
    """The member ``member`` of a struct or union value (an lvalue if the struct is one)."""
    size = sizeof(member.type) or 0
    if member.bit_size is not None:
        span = (member.bit_offset + member.bit_size + 7) // 8
    else:
        span = size
    start = member.offset
    location: Location | None = None
    if isinstance(struct_value.location, MemoryLocation):
        location = MemoryLocation(struct_value.location.address + start)
    elif struct_value.location is not None and member.bit_size is None:
        location = _sub_location(struct_value.location, start, span)
    if struct_value.note is not None:
        return Value(member.type, bytes(size), bytes([1]) * size, name=struct_value.name, note=struct_value.note)
    data = struct_value.data[start:start + span].ljust(span, b"\0")
    optimized = struct_value.optimized[start:start + span].ljust(span, b"\1")
    bitfield = (member.bit_offset, member.bit_size) if member.bit_size is not None else None
    if bitfield is not None:
        # A bit-field value is the containing bytes; as_int() extracts the bits.
        return Value(member.type, data, optimized, location=location, context=struct_value.context,
                     bitfield=bitfield, name=struct_value.name)
    return Value(member.type, data[:size], optimized[:size], location=location,
                 context=struct_value.context, name=struct_value.name)


def _sub_location(location: Location, offset: int, size: int) -> Location | None:
    """The location of bytes [offset, offset+size) of an object at ``location``."""
    if isinstance(location, RegisterLocation) and offset == 0:
        return location
    if isinstance(location, CompositeLocation):
        pieces = []
        position = 0
        for piece in location.pieces:
            start, end = position, position + piece.size_bits
            want_start, want_end = offset * 8, (offset + size) * 8
            if end > want_start and start < want_end:
                if start < want_start or end > want_end:
                    return None  # a member straddling pieces: not an lvalue here
                pieces.append(piece)
            position = end
        if len(pieces) == 1 and pieces[0].offset_bits == 0:
            return pieces[0].location
        return CompositeLocation(tuple(pieces)) if pieces else None
    return None
