"""Values printed as gdb 13 prints them (``print``, ``output``, ``info locals``).

The rules are gdb's (valprint.c, c-valprint.c, printcmd.c), checked by the
tests against gdb itself:

- integers in decimal, characters as ``65 'A'``, ``_Bool`` as ``true``,
  enums by name (a flag enum as ``(A | B)``, an unknown value as a
  number), floats with 9 (float) or 17 (double) significant digits;
- pointers in hex with ``<symbol+offset>`` where a symbol holds the
  address, ``char *`` followed by the string it points to, and at the top
  level a ``(type) `` prefix except for ``char *``;
- structs as ``{a = 1, b = {2, 3}}``, arrays as ``{1, 2, 3}`` with runs of
  more than 10 equal elements as ``0 <repeats 15 times>`` and at most 200
  elements, char arrays as strings (``"abc", '\\000' <repeats 12 times>``);
- print formats ``/x /d /u /o /t /c /a /s /z /f`` applied to every scalar.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from kvmbench.errors import ExpressionError, GuestMemoryError, KvmbenchError, RegisterUnavailable
from kvmbench.expressions.values import (
    FlagsType,
    Value,
    decode_float,
    decode_x87_exact,
    is_char_like,
    member_value,
    value_from_bytes,
)
from kvmbench.symbols.dwarf_eval import MemoryLocation
from kvmbench.symbols.frame import FrameContext
from kvmbench.symbols.types import (
    ArrayType,
    CType,
    EnumType,
    FloatType,
    FunctionType,
    IntegerKind,
    IntegerType,
    PointerType,
    StructType,
    TypedefType,
    VoidType,
    sizeof,
    strip_typedefs,
    type_to_string,
    unqualified,
)

#: Print formats ``print`` accepts (GDB manual, "Output Formats").
PRINT_FORMATS = frozenset("xduotacfsz")

_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


@dataclass(frozen=True)
class PrintOptions:
    """How to print: a format letter, gdb's limits, and the helpers it needs.

    ``symbolize(address)`` gives ``sym+off`` (or ``sym``) for an address a
    symbol holds, None otherwise; ``context`` reads memory for the strings
    ``char *`` values point to.
    """

    format: str | None = None
    repeat_threshold: int = 10  # gdb's `set print repeats`
    elements: int = 200  # gdb's `set print elements`
    symbolize: Callable[[int], str | None] | None = None
    context: FrameContext | None = None


def parse_format(spec: str, command: str = "print") -> str | None:
    """The format letter of ``/SPEC`` (``x``, ``2x``...) for ``print``-like commands.

    gdb's decode_format: a count, a format letter and a size letter may be
    given; ``print`` takes only a format letter and says so in gdb's words.
    Returns None for an empty spec. An unknown letter is returned as is:
    gdb reports it when printing (:func:`format_value`).
    """
    count = ""
    letters = ""
    for char in spec:
        if char.isdigit() and not letters:
            count += char
        else:
            letters += char
    size_letters = [c for c in letters if c in "bhwg"]
    format_letters = [c for c in letters if c not in "bhwg"]
    if count and int(count) != 1:
        raise ExpressionError(f'Item count other than 1 is meaningless in "{command}" command.')
    if size_letters:
        raise ExpressionError(f'Size letters are meaningless in "{command}" command.')
    if not format_letters:
        return None
    letter = format_letters[-1]
    if letter == "i":
        raise ExpressionError(f'Format letter "i" is meaningless in "{command}" command.')
    return letter


def format_value(value: Value, options: PrintOptions = PrintOptions(), *, top_level: bool = True) -> str:
    """``value`` as ``print`` shows it after ``$1 = ``."""
    if options.format is not None and options.format not in PRINT_FORMATS:
        raise ExpressionError(f'Undefined output format "{options.format}".')
    prefix = ""
    if top_level and options.format is None and value.note is None:
        prefix = _pointer_prefix(value.type)
    try:
        return prefix + _format(value, options, 0)
    except (GuestMemoryError, RegisterUnavailable) as exc:
        if isinstance(exc, RegisterUnavailable) and "not saved" in str(exc):
            return prefix + "<not saved>"
        raise


def _pointer_prefix(ctype: CType) -> str:
    """``(int *) `` before a pointer at the top level (c_value_print), not for ``char *``."""
    core, _ = unqualified(ctype)
    if not isinstance(strip_typedefs(core), PointerType):
        return ""
    if isinstance(core, PointerType):
        target_core, _ = unqualified(core.target)
        if target_core.name == "char" and not isinstance(target_core, TypedefType):
            return ""
    return f"({type_to_string(ctype, show=-1)}) "


def _format(value: Value, options: PrintOptions, depth: int) -> str:
    if value.note is not None:
        return value.note
    real = strip_typedefs(value.type)
    if isinstance(real, StructType):
        return _format_struct(value, real, options, depth)
    if isinstance(real, ArrayType):
        return _format_array(value, real, options, depth)
    if isinstance(real, FunctionType):
        address = value.address if value.address is not None else 0
        return "{" + type_to_string(value.type, show=-1) + "} " + _address_with_symbol(address, options)
    if isinstance(real, VoidType):
        return "void"
    if value.size and all(value.optimized):
        return "<optimized out>"
    if any(value.optimized):
        return "<optimized out>"
    return _format_scalar(value, real, options)


def _format_struct(value: Value, struct: StructType, options: PrintOptions, depth: int) -> str:
    parts = []
    for member in struct.members:
        text = _format(member_value(value, member), options, depth + 1)
        parts.append(text if member.name is None else f"{member.name} = {text}")
    return "{" + ", ".join(parts) + "}"


def _format_array(value: Value, array: ArrayType, options: PrintOptions, depth: int) -> str:
    element_type = array.element
    element_size = sizeof(element_type) or 0
    count = array.count if array.count is not None else 0
    if count == 0 or element_size == 0:
        if is_char_like(element_type) and options.format in (None, "s"):
            return '""'
        return "{}"
    data = value.data
    optimized = value.optimized
    if is_char_like(element_type) and options.format in (None, "s") and not any(optimized) and element_size == 1:
        return _format_char_array(data[:count], options)
    parts: list[str] = []
    printed = 0
    i = 0
    while i < count and printed < options.elements:
        start = i * element_size
        chunk = data[start:start + element_size]
        chunk_optimized = optimized[start:start + element_size]
        reps = 1
        while i + reps < count:
            other = (i + reps) * element_size
            if data[other:other + element_size] != chunk or optimized[other:other + element_size] != chunk_optimized:
                break
            reps += 1
        element = _element(value, element_type, start)
        text = _format(element, options, depth + 1)
        if reps > options.repeat_threshold:
            parts.append(f"{text} <repeats {reps} times>")
            i += reps
            printed += options.repeat_threshold
        else:
            parts.append(text)
            i += 1
            printed += 1
    return "{" + ", ".join(parts) + ("..." if i < count else "") + "}"


def _element(array: Value, element_type: CType, offset: int) -> Value:
    size = sizeof(element_type) or 0
    location = None
    if isinstance(array.location, MemoryLocation):
        location = MemoryLocation(array.location.address + offset)
    element = Value(element_type, array.data[offset:offset + size], array.optimized[offset:offset + size],
                    location=location, context=array.context)
    return element


def _format_char_array(data: bytes, options: PrintOptions) -> str:
    """A char array as gdb's generic_printstr prints it (the last NUL dropped)."""
    length = len(data)
    if length > 0 and data[length - 1] == 0:
        length -= 1
    return format_string(data[:length], options)


def format_string(data: bytes, options: PrintOptions, *, force_ellipses: bool = False) -> str:
    """Bytes as a C string literal with gdb's repeat groups: ``"ab", 'c' <repeats 20 times>``."""
    if not data:
        return '""'
    groups: list[tuple[int, int]] = []  # (byte, repeat count)
    total = 0
    i = 0
    while i < len(data) and total < options.elements:
        byte = data[i]
        run = 1
        while i + run < len(data) and data[i + run] == byte:
            run += 1
        groups.append((byte, run))
        total += run
        i += run
    finished = i >= len(data)
    out: list[str] = []
    state = "start"
    for byte, run in groups:
        if run > options.repeat_threshold:
            if state == "single":
                out.append('"')
            if state != "start":
                out.append(", ")
            out.append("'" + _escape(byte, "'") + f"' <repeats {run} times>")
            state = "repeat"
        else:
            if state != "single":
                if state != "start":
                    out.append(", ")
                out.append('"')
            out.append(_escape(byte, '"') * run)
            state = "single"
    if state == "single":
        out.append('"')
    if force_ellipses or not finished:
        out.append("...")
    return "".join(out)


def _escape(byte: int, quote: str) -> str:
    char = chr(byte)
    if char == "\\":
        return "\\\\"
    if char == quote:
        return "\\" + quote
    if 0x20 <= byte < 0x7F:
        return char
    if byte in _ESCAPES:
        return _ESCAPES[byte]
    return f"\\{byte:03o}"


def format_char(value: int) -> str:
    """A character constant: ``'A'``, ``'\\n'``, ``'\\310'``."""
    return "'" + _escape(value & 0xFF, "'") + "'"


def _format_scalar(value: Value, real: CType, options: PrintOptions) -> str:
    fmt = options.format
    if fmt in ("s",):
        fmt = None
    if isinstance(real, PointerType):
        return _format_pointer(value, real, options, fmt)
    if isinstance(real, FloatType):
        if fmt in (None, "f"):
            return format_float(value)
        if fmt in ("c", "a"):
            # gdb converts the value to an integer for these (value_as_long).
            number = int(value.as_float()) if math.isfinite(value.as_float()) else 0
            return _format_integer(number, value.size, True, fmt, options)
        raw = int.from_bytes(value.data[:value.size], "little")
        return _format_integer(raw, value.size, True, fmt, options) if fmt != "c" else format_float(value)
    number = value.as_int()
    size = value.size or 1
    signed = isinstance(real, (IntegerType, EnumType)) and getattr(real, "signed", False)
    if fmt is None:
        if isinstance(real, FlagsType):
            # gdb's val_print_type_code_flags: the set bits' names, in field order.
            return "[ " + "".join(f"{name} " for name, bit in real.flags if number >> bit & 1) + "]"
        if isinstance(real, EnumType):
            return format_enum(real, number)
        if isinstance(real, IntegerType):
            if real.kind is IntegerKind.BOOL:
                return "true" if number == 1 else "false" if number == 0 else str(number)
            if real.kind is IntegerKind.CHAR:
                return f"{number} {format_char(number)}"
        return str(number)
    if fmt == "f":
        float_size = {4: 4, 8: 8, 16: 16}.get(size)
        if float_size is None:
            return str(number)
        return format_float(value_from_bytes(FloatType("float", size), value.data[:size]))
    return _format_integer(number, size, signed, fmt, options)


def _format_integer(number: int, size: int, signed: bool, fmt: str, options: PrintOptions) -> str:
    bits = size * 8
    unsigned = number & ((1 << bits) - 1)
    if fmt == "x":
        return f"{unsigned:#x}"
    if fmt == "z":
        return "0x" + f"{unsigned:x}".rjust(size * 2, "0")
    if fmt == "o":
        return f"0{unsigned:o}" if unsigned else "0"
    if fmt == "t":
        return f"{unsigned:b}"
    if fmt == "d":
        signed_value = unsigned - (1 << bits) if unsigned >> (bits - 1) else unsigned
        return str(signed_value)
    if fmt == "u":
        return str(unsigned)
    if fmt == "c":
        byte = number & 0xFF
        char_value = byte - 256 if signed and byte >= 0x80 else byte
        return f"{char_value} {format_char(byte)}"
    if fmt == "a":
        return _address_with_symbol(unsigned, options)
    raise ExpressionError(f'Undefined output format "{fmt}".')


def _address_with_symbol(address: int, options: PrintOptions) -> str:
    text = f"{address:#x}"
    if options.symbolize is not None:
        symbol = options.symbolize(address)
        if symbol is not None:
            text += f" <{symbol}>"
    return text


def _format_pointer(value: Value, pointer: PointerType, options: PrintOptions, fmt: str | None) -> str:
    address = value.as_int() & ((1 << (8 * (value.size or 8))) - 1)
    if fmt is not None and fmt != "a":
        return _format_integer(address, value.size or 8, False, fmt, options)
    target = strip_typedefs(pointer.target)
    if isinstance(target, FunctionType):
        return _address_with_symbol(address, options) if address else "0x0"
    text = _address_with_symbol(address, options) if address else "0x0"
    if fmt is None and is_char_like(pointer.target) and address != 0 and (sizeof(pointer.target) or 1) == 1:
        text += " " + read_c_string(address, options)
    return text


def read_c_string(address: int, options: PrintOptions) -> str:
    """The NUL-terminated string at ``address`` as gdb's val_print_string shows it."""
    context = options.context
    if context is None:
        return ""
    data = bytearray()
    limit = options.elements
    try:
        while len(data) < limit:
            chunk_size = min(64, limit - len(data))
            chunk = _read_some(context, address + len(data), chunk_size)
            if not chunk:
                if not data:
                    return f"<error: Cannot access memory at address {address:#x}>"
                break
            end = chunk.find(0)
            if end >= 0:
                data += chunk[:end]
                return format_string(bytes(data), options)
            data += chunk
    except KvmbenchError as exc:
        return f"<error: {exc}>"
    more = True
    try:
        more = _read_some(context, address + len(data), 1) not in (b"", b"\0")
    except KvmbenchError:
        more = False
    return format_string(bytes(data), options, force_ellipses=more)


def _read_some(context: FrameContext, address: int, length: int) -> bytes:
    """Up to ``length`` readable bytes at ``address`` (fewer at the end of readable memory)."""
    try:
        return context.read_memory(address, length)
    except GuestMemoryError:
        if length == 1:
            return b""
        # Find how much is readable, byte by byte from the start of the chunk.
        out = bytearray()
        for i in range(length):
            try:
                out += context.read_memory(address + i, 1)
            except GuestMemoryError:
                break
        return bytes(out)


def format_enum(enum_type: EnumType, number: int) -> str:
    """An enum value: its name, ``(A | B | unknown: 0x10)`` for flag enums, else the number."""
    name = enum_type.name_of(number)
    if name is not None:
        return name
    if not enum_type.flag:
        return str(number)
    remaining = number
    parts = []
    for enumerator, bit in enum_type.enumerators:
        if bit and remaining & bit:
            parts.append(enumerator)
            remaining &= ~bit
    if remaining:
        parts.append(f"unknown: {remaining:#x}")
    if not parts:
        return "0"
    return "(" + " | ".join(parts) + ")"


def format_float(value: Value) -> str:
    """A floating value with gdb's %g precision: 9 digits for float, 17 for double, 21 for x87."""
    size = value.size
    data = value.data[:size]
    if size in (10, 16):
        return _format_x87(data[:10])
    number = decode_float(data)
    bits = 23 if size == 4 else 52
    if math.isnan(number):
        raw = int.from_bytes(data, "little")
        sign = "-" if raw >> (size * 8 - 1) else ""
        return f"{sign}nan({raw & ((1 << bits) - 1):#x})"
    if math.isinf(number):
        return "-inf" if number < 0 else "inf"
    digits = 9 if size == 4 else 17
    return _strip_g(f"{number:.{digits}g}")


def _format_x87(data: bytes) -> str:
    mantissa = int.from_bytes(data[:8], "little")
    top = int.from_bytes(data[8:10], "little")
    sign = "-" if top >> 15 else ""
    if top & 0x7FFF == 0x7FFF:
        if mantissa & ((1 << 63) - 1) == 0:
            return f"{sign}inf"
        return f"{sign}nan({mantissa & ((1 << 62) - 1):#x})"
    exact = decode_x87_exact(data)
    assert isinstance(exact, Fraction)
    # %.21Lg: gdb's digits for a 64-bit mantissa (floatformat_printf_format).
    return _fraction_g(exact, 21)


def _fraction_g(number: Fraction, digits: int) -> str:
    """%.{digits}g of an exact fraction, without binary rounding."""
    from decimal import Context, Decimal

    context = Context(prec=digits)
    decimal = context.divide(Decimal(number.numerator), Decimal(number.denominator))
    return _strip_g(f"{decimal:.{digits}g}")


def _strip_g(text: str) -> str:
    """Python's %g already strips trailing zeros; normalise the exponent as C prints it."""
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = exponent[0]
        digits = exponent[1:].lstrip("0").rjust(2, "0")
        return f"{mantissa}e{sign}{digits}"
    return text



