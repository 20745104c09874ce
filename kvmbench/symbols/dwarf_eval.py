"""Evaluating DWARF expressions: the stack machine of DWARF 5 section 2.5
and the location descriptions of section 2.6.

pyelftools decodes the bytes (``DWARFExprParser``); this module runs the
decoded operations against a :class:`~kvmbench.symbols.frame.FrameContext`.
The same machine serves CFI rules (DW_CFA_expression, DW_CFA_def_cfa_expression),
frame bases and variable locations: what differs is what the
:class:`ExpressionEnvironment` can answer (a frame base, the CFA, entry
values). The result is a :data:`Location`.

Values on the stack are DWARF's "generic type": address-sized and
unsigned, wrapping modulo 2**64 on x86-64 (DWARF 5, 2.5.1). The machine is
bounded: a branch loop stops after :data:`MAX_STEPS` operations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from elftools.dwarf.dwarf_expr import DWARFExprOp

from kvmbench.errors import OptimizedOut, RegisterUnavailable, SymbolError
from kvmbench.symbols.frame import FrameContext
from kvmbench.symbols.registers import register_name, register_width

#: Operations one evaluation may execute (a corrupt DW_OP_bra may loop).
MAX_STEPS = 10_000

#: Values one evaluation may push (DW_OP_dup in a loop).
MAX_STACK = 1_000


# -- location descriptions (DWARF 5, 2.6) ---------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryLocation:
    """The object is in memory at ``address`` (a memory location description)."""

    address: int


@dataclass(frozen=True, slots=True)
class RegisterLocation:
    """The object is in register ``register`` (gdb's name), from its lowest byte."""

    register: str


@dataclass(frozen=True, slots=True)
class ValueLocation:
    """DW_OP_stack_value: the object has no location, this is its value."""

    value: int


@dataclass(frozen=True, slots=True)
class ImplicitLocation:
    """DW_OP_implicit_value: the object's bytes are given in the DWARF."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ImplicitPointerLocation:
    """DW_OP_implicit_pointer: a pointer to an object that has no address.

    ``die_offset`` names the pointed-to variable's DIE (section offset);
    gdb prints such a pointer as ``<synthetic pointer>``.
    """

    die_offset: int
    offset: int


@dataclass(frozen=True, slots=True)
class OptimizedOutLocation:
    """The object does not exist at this pc (an empty location description)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One part of a composite: ``size_bits`` bits from ``location``.

    ``offset_bits`` is DW_OP_bit_piece's offset into that location (0 for
    DW_OP_piece).
    """

    location: SimpleLocation
    size_bits: int
    offset_bits: int = 0


@dataclass(frozen=True, slots=True)
class CompositeLocation:
    """An object split over several places (DW_OP_piece, DW_OP_bit_piece)."""

    pieces: tuple[Piece, ...]

    @property
    def size_bits(self) -> int:
        """The object's size: the sum of its pieces."""
        return sum(piece.size_bits for piece in self.pieces)


SimpleLocation = Union[
    MemoryLocation, RegisterLocation, ValueLocation, ImplicitLocation,
    ImplicitPointerLocation, OptimizedOutLocation,
]
#: What evaluating a location expression gives.
Location = Union[SimpleLocation, CompositeLocation]


@dataclass
class ExpressionEnvironment:
    """What an expression may ask of its surroundings.

    ``frame`` supplies registers and memory; the callables answer the
    operations that need more than one frame: DW_OP_fbreg (the function's
    frame base), DW_OP_call_frame_cfa (the CFA from the CFI),
    DW_OP_entry_value (a value at the function's entry, found through the
    caller's call site), DW_OP_addrx/constx (the CU's address table) and
    typed operations (a base type's size by CU-relative DIE offset). Any of
    them left None makes the operation an error.
    """

    frame: FrameContext | None
    address_size: int = 8
    frame_base: Callable[[], int] | None = None
    call_frame_cfa: Callable[[], int] | None = None
    entry_value: Callable[[Sequence[DWARFExprOp]], int] | None = None
    address_index: Callable[[int], int] | None = None
    base_type_size: Callable[[int], int] | None = None
    object_address: int | None = None
    # Set by evaluate() when the result depends on registers or memory, so
    # callers may cache constant ones (DW_OP_addr globals).
    used_frame: bool = field(default=False, compare=False)


def evaluate_location(
    ops: Sequence[DWARFExprOp],
    env: ExpressionEnvironment,
    initial_stack: Sequence[int] = (),
) -> Location:
    """Run a location expression; the :data:`Location` it describes.

    An empty expression describes an optimized-out object (DWARF 5,
    2.6.1.1.1). Raises :class:`SymbolError` for malformed expressions,
    :class:`OptimizedOut` when an entry value cannot be recovered, and
    lets the frame's :class:`~kvmbench.errors.GuestMemoryError` and
    :class:`~kvmbench.errors.RegisterUnavailable` through.
    """
    return _Machine(env).run(ops, initial_stack)


def evaluate_value(
    ops: Sequence[DWARFExprOp],
    env: ExpressionEnvironment,
    initial_stack: Sequence[int] = (),
) -> int:
    """Run a DWARF expression for the value it leaves (CFI rules, DW_AT_call_value).

    A memory location's value is its address (DWARF 5, 6.4.2: the CFA
    rules "the value of the expression is the address"); a register
    location's value is the register's.
    """
    location = evaluate_location(ops, env, initial_stack)
    if isinstance(location, MemoryLocation):
        return location.address
    if isinstance(location, ValueLocation):
        return location.value
    if isinstance(location, RegisterLocation):
        env.used_frame = True
        return _frame(env).read_register(location.register)
    if isinstance(location, OptimizedOutLocation):
        raise OptimizedOut()
    raise SymbolError(f"DWARF expression gives a {type(location).__name__}, not a value")


def _frame(env: ExpressionEnvironment) -> FrameContext:
    if env.frame is None:
        # gdb's answer when an expression needs registers it does not have.
        raise RegisterUnavailable("No registers.")
    return env.frame


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


_BINARY: dict[str, Callable[[int, int, int], int]] = {
    # (a, b, bits) -> result; a is the second entry, b the top (DWARF 5, 2.5.1.4).
    "DW_OP_and": lambda a, b, bits: a & b,
    "DW_OP_or": lambda a, b, bits: a | b,
    "DW_OP_xor": lambda a, b, bits: a ^ b,
    "DW_OP_plus": lambda a, b, bits: a + b,
    "DW_OP_minus": lambda a, b, bits: a - b,
    "DW_OP_mul": lambda a, b, bits: a * b,
    "DW_OP_shl": lambda a, b, bits: a << b if b < bits else 0,
    "DW_OP_shr": lambda a, b, bits: a >> b if b < bits else 0,
    "DW_OP_shra": lambda a, b, bits: _signed(a, bits) >> min(b, bits),
}

_COMPARISONS: dict[str, Callable[[int, int], bool]] = {
    # Comparisons of the generic type are signed (DWARF 5, 2.5.1.5).
    "DW_OP_eq": lambda a, b: a == b,
    "DW_OP_ne": lambda a, b: a != b,
    "DW_OP_lt": lambda a, b: a < b,
    "DW_OP_le": lambda a, b: a <= b,
    "DW_OP_gt": lambda a, b: a > b,
    "DW_OP_ge": lambda a, b: a >= b,
}

_CONSTANTS = frozenset(
    {f"DW_OP_const{size}{sign}" for size in (1, 2, 4, 8) for sign in "us"} | {"DW_OP_constu", "DW_OP_consts"}
)
_ENTRY_VALUE = ("DW_OP_entry_value", "DW_OP_GNU_entry_value")
_ADDRESS_INDEX = ("DW_OP_addrx", "DW_OP_GNU_addr_index", "DW_OP_constx", "DW_OP_GNU_const_index")
_CONVERSIONS = ("DW_OP_convert", "DW_OP_GNU_convert", "DW_OP_reinterpret", "DW_OP_GNU_reinterpret")


class _Machine:
    def __init__(self, env: ExpressionEnvironment) -> None:
        self.env = env
        self.bits = env.address_size * 8
        self.mask = (1 << self.bits) - 1

    def run(self, ops: Sequence[DWARFExprOp], initial: Sequence[int]) -> Location:
        stack = [value & self.mask for value in initial]
        pieces: list[Piece] = []
        current: SimpleLocation | None = None
        index_of = {op.offset: i for i, op in enumerate(ops)}
        last_offset = ops[-1].offset if ops else 0
        i = 0
        steps = 0
        while i < len(ops):
            steps += 1
            if steps > MAX_STEPS:
                raise SymbolError("DWARF expression runs too long (a branch loop?)")
            if len(stack) > MAX_STACK:
                raise SymbolError("DWARF expression stack overflow")
            op = ops[i]
            name = op.op_name
            args = op.args
            i += 1
            if name in ("DW_OP_piece", "DW_OP_bit_piece"):
                size_bits = args[0] * 8 if name == "DW_OP_piece" else args[0]
                offset_bits = 0 if name == "DW_OP_piece" else args[1]
                if current is None:
                    current = MemoryLocation(stack.pop()) if stack else OptimizedOutLocation()
                pieces.append(Piece(current, size_bits, offset_bits))
                current = None
                stack.clear()
                continue
            if current is not None and name != "DW_OP_nop":
                # DW_OP_regN, stack_value and implicit_value end a (piece
                # of a) location description (DWARF 5, 2.6.1.1.3-4).
                raise SymbolError(f"{name} after a complete location description")
            if name.startswith("DW_OP_lit"):
                stack.append(int(name[len("DW_OP_lit"):]))
            elif name in _CONSTANTS:
                stack.append(args[0] & self.mask)
            elif name == "DW_OP_addr":
                stack.append(args[0])
            elif name in _ADDRESS_INDEX:
                if self.env.address_index is None:
                    raise SymbolError(f"{name} needs the CU's address table")
                stack.append(self.env.address_index(args[0]))
            elif name.startswith("DW_OP_reg") and name[len("DW_OP_reg"):].isdigit():
                current = RegisterLocation(register_name(int(name[len("DW_OP_reg"):])))
            elif name == "DW_OP_regx":
                current = RegisterLocation(register_name(args[0]))
            elif name.startswith("DW_OP_breg") and name[len("DW_OP_breg"):].isdigit():
                stack.append((self._register(int(name[len("DW_OP_breg"):])) + args[0]) & self.mask)
            elif name == "DW_OP_bregx":
                stack.append((self._register(args[0]) + args[1]) & self.mask)
            elif name == "DW_OP_fbreg":
                if self.env.frame_base is None:
                    raise SymbolError("DW_OP_fbreg outside a function with a frame base")
                stack.append((self.env.frame_base() + args[0]) & self.mask)
            elif name == "DW_OP_call_frame_cfa":
                if self.env.call_frame_cfa is None:
                    raise SymbolError("DW_OP_call_frame_cfa without call frame information")
                stack.append(self.env.call_frame_cfa() & self.mask)
            elif name == "DW_OP_dup":
                stack.append(self._peek(stack, 0))
            elif name == "DW_OP_drop":
                self._pop(stack)
            elif name == "DW_OP_over":
                stack.append(self._peek(stack, 1))
            elif name == "DW_OP_pick":
                stack.append(self._peek(stack, args[0]))
            elif name == "DW_OP_swap":
                b, a = self._pop(stack), self._pop(stack)
                stack += [b, a]
            elif name == "DW_OP_rot":
                c, b, a = self._pop(stack), self._pop(stack), self._pop(stack)
                stack += [c, a, b]
            elif name == "DW_OP_deref":
                stack.append(self._load(self._pop(stack), self.env.address_size))
            elif name == "DW_OP_deref_size":
                stack.append(self._load(self._pop(stack), args[0]))
            elif name in ("DW_OP_deref_type", "DW_OP_GNU_deref_type"):
                stack.append(self._load(self._pop(stack), args[0]))
            elif name == "DW_OP_abs":
                stack.append(abs(_signed(self._pop(stack), self.bits)) & self.mask)
            elif name == "DW_OP_neg":
                stack.append(-self._pop(stack) & self.mask)
            elif name == "DW_OP_not":
                stack.append(~self._pop(stack) & self.mask)
            elif name == "DW_OP_plus_uconst":
                stack.append((self._pop(stack) + args[0]) & self.mask)
            elif name in _BINARY:
                b, a = self._pop(stack), self._pop(stack)
                stack.append(_BINARY[name](a, b, self.bits) & self.mask)
            elif name in ("DW_OP_div", "DW_OP_mod"):
                b, a = self._pop(stack), self._pop(stack)
                if b == 0:
                    raise SymbolError(f"{name} by zero in a DWARF expression")
                if name == "DW_OP_div":
                    sa, sb = _signed(a, self.bits), _signed(b, self.bits)
                    quotient = abs(sa) // abs(sb) * (1 if (sa < 0) == (sb < 0) else -1)
                    stack.append(quotient & self.mask)
                else:
                    stack.append(a % b)
            elif name in _COMPARISONS:
                b, a = _signed(self._pop(stack), self.bits), _signed(self._pop(stack), self.bits)
                stack.append(1 if _COMPARISONS[name](a, b) else 0)
            elif name in ("DW_OP_skip", "DW_OP_bra"):
                taken = name == "DW_OP_skip" or self._pop(stack) != 0
                if taken:
                    # The operand counts from the end of this operation,
                    # which is where the next one starts (pyelftools keeps
                    # no lengths; the skip itself is 3 bytes).
                    target = op.offset + 3 + args[0]
                    if target in index_of:
                        i = index_of[target]
                    elif target > last_offset:
                        i = len(ops)  # past the last operation: the end
                    else:
                        raise SymbolError(f"{name} to offset {target} inside an operation")
            elif name == "DW_OP_stack_value":
                current = ValueLocation(self._pop(stack))
            elif name == "DW_OP_implicit_value":
                current = ImplicitLocation(bytes(args[0]))
            elif name in ("DW_OP_implicit_pointer", "DW_OP_GNU_implicit_pointer"):
                current = ImplicitPointerLocation(args[0], args[1])
            elif name in _ENTRY_VALUE:
                if self.env.entry_value is None:
                    raise OptimizedOut()
                stack.append(self.env.entry_value(args[0]) & self.mask)
            elif name in ("DW_OP_regval_type", "DW_OP_GNU_regval_type"):
                value = self._register(args[0])
                size = self._type_size(args[1])
                stack.append(value & ((1 << (size * 8)) - 1) if size else value)
            elif name in ("DW_OP_const_type", "DW_OP_GNU_const_type"):
                stack.append(int.from_bytes(bytes(args[1]), "little") & self.mask)
            elif name in _CONVERSIONS:
                size = self._type_size(args[0]) if args and args[0] else self.env.address_size
                stack.append(self._pop(stack) & ((1 << (size * 8)) - 1) if size else self._pop(stack))
            elif name == "DW_OP_push_object_address":
                if self.env.object_address is None:
                    raise SymbolError("DW_OP_push_object_address without an object")
                stack.append(self.env.object_address)
            elif name == "DW_OP_nop":
                pass
            elif name in ("DW_OP_form_tls_address", "DW_OP_GNU_push_tls_address"):
                raise SymbolError("Cannot access thread-local variables on this target")
            elif name == "DW_OP_GNU_parameter_ref":
                raise OptimizedOut()
            else:
                raise SymbolError(f"Unhandled dwarf expression opcode {op.op:#x} ({name})")
        if pieces:
            if current is not None or stack:
                # A trailing description without its DW_OP_piece: ill-formed.
                raise SymbolError("DWARF expression ends a composite without DW_OP_piece")
            return CompositeLocation(tuple(pieces))
        if current is not None:
            return current
        if stack:
            return MemoryLocation(stack[-1])
        return OptimizedOutLocation()

    def _register(self, number: int) -> int:
        self.env.used_frame = True
        name = register_name(number)
        value = _frame(self.env).read_register(name)
        return value & ((1 << (register_width(name) * 8)) - 1)

    def _load(self, address: int, size: int) -> int:
        if not 1 <= size <= self.env.address_size:
            raise SymbolError(f"DWARF deref of {size} bytes")
        self.env.used_frame = True
        data = _frame(self.env).read_memory(address, size)
        return int.from_bytes(data, "little")

    def _type_size(self, die_offset: int) -> int:
        if self.env.base_type_size is None:
            raise SymbolError("typed DWARF operation without type information")
        return self.env.base_type_size(die_offset)

    @staticmethod
    def _pop(stack: list[int]) -> int:
        if not stack:
            raise SymbolError("DWARF expression stack underflow")
        return stack.pop()

    @staticmethod
    def _peek(stack: list[int], depth: int) -> int:
        if depth >= len(stack):
            raise SymbolError("DWARF expression stack underflow")
        return stack[-1 - depth]

