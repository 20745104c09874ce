"""Where a variable is at a pc, and its bytes: DWARF locations evaluated in a frame.

A variable's DW_AT_location is a single expression or a location list
(DWARF 5, 2.6.2; .debug_loc for DWARF 2-4, .debug_loclists for 5), decoded
by pyelftools' ``LocationParser``; the entry covering the frame's pc is run
by :mod:`kvmbench.symbols.dwarf_eval`, with the function's DW_AT_frame_base
for DW_OP_fbreg, the frame's CFA (from the CFI) for DW_OP_call_frame_cfa,
and entry values (DW_OP_entry_value) recovered from the caller's call site
(DW_TAG_call_site_parameter's DW_AT_call_value, evaluated in the caller's
frame), as gdb recovers them. A pc no entry covers means the variable is
optimized out there.

:func:`read_location` turns a location into the object's bytes, with a
mask of the bytes that are optimized out (a composite may lose only some
pieces); :func:`write_location` stores bytes back where that is possible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from elftools.dwarf.dwarf_expr import DWARFExprOp
from elftools.dwarf.locationlists import BaseAddressEntry, LocationEntry, LocationExpr, LocationParser

from kvmbench.errors import ExpressionError, GuestMemoryError, OptimizedOut, RegisterUnavailable, SymbolError
from kvmbench.symbols._translate import elftools_errors
from kvmbench.symbols.dwarf_eval import (
    CompositeLocation,
    ExpressionEnvironment,
    ImplicitLocation,
    Location,
    MemoryLocation,
    OptimizedOutLocation,
    RegisterLocation,
    SimpleLocation,
    ValueLocation,
    evaluate_location,
    evaluate_value,
)
from kvmbench.symbols.frame import FrameContext
from kvmbench.symbols.registers import register_name, register_width
from kvmbench.symbols.types import ArrayType, CType, QualifiedType, TypedefType, sizeof
from kvmbench.symbols.units import DynamicBound, Scope, Unit, Variable

#: How deep entry values may chain through callers (an entry value whose
#: call-site value is itself an entry value of the caller, and so on).
MAX_ENTRY_VALUE_DEPTH = 8


@dataclass(eq=False)
class FrameView:
    """What evaluating a location in one frame needs.

    ``pc`` is the lookup pc (the return address minus one in callers);
    ``function`` the out-of-line function holding it (for its frame base);
    ``caller`` gives the calling frame's view, for entry values.
    """

    context: FrameContext
    pc: int
    cfa: int | None
    function: Scope | None
    caller: Callable[[], FrameView | None] = field(default=lambda: None)
    return_address: int | None = None  # this frame's own pc when it is a caller (the call site key)


@dataclass(frozen=True)
class LocationRange:
    """One location-list entry: [low, high) and its expression (None: optimized out)."""

    low: int
    high: int
    expression: tuple[DWARFExprOp, ...]
    base_address: int | None = None  # the DW_LLE_base_address just before it, if any


def location_ranges(unit: Unit, attribute: object, die: object) -> list[LocationRange] | tuple[DWARFExprOp, ...]:
    """A DW_AT_location (or frame base): one expression, or the list's entries with absolute ranges."""
    parser = LocationParser(unit.dwarf.location_lists())
    with elftools_errors(unit.image_name, "DWARF locations"):
        parsed = parser.parse_from_attribute(attribute, unit.version, die)
        if isinstance(parsed, LocationExpr):
            return unit.parse_expression(parsed.loc_expr)
        base = unit.base_address
        ranges: list[LocationRange] = []
        announced: int | None = None
        for entry in parsed:
            if isinstance(entry, BaseAddressEntry):
                base = entry.base_address
                announced = base
            elif isinstance(entry, LocationEntry):
                if entry.begin_offset == -1:
                    low, high = 0, 1 << 64  # DW_LLE_default_location
                elif entry.is_absolute:
                    low, high = entry.begin_offset, entry.end_offset
                else:
                    low, high = base + entry.begin_offset, base + entry.end_offset
                ranges.append(LocationRange(low, high, unit.parse_expression(entry.loc_expr), announced))
                announced = None
        return ranges


def expression_at(unit: Unit, attribute: object, die: object, pc: int | None) -> tuple[DWARFExprOp, ...] | None:
    """The expression in force at ``pc`` (None: no entry covers it, optimized out)."""
    ranges = location_ranges(unit, attribute, die)
    if isinstance(ranges, tuple):
        return ranges
    if pc is None:
        return None
    for entry in ranges:
        if entry.low <= pc < entry.high:
            return entry.expression
    return None


def variable_location(variable: Variable, view: FrameView | None) -> Location:
    """Where ``variable`` is in the frame ``view`` (None: no frame, statics only)."""
    if variable.location is None:
        return OptimizedOutLocation()
    ops = expression_at(variable.unit, variable.location, variable.location_die, view.pc if view else None)
    if ops is None:
        return OptimizedOutLocation()
    env = _environment(variable.unit, view, 0)
    try:
        return evaluate_location(ops, env)
    except OptimizedOut:
        return OptimizedOutLocation()


def const_value_bytes(variable: Variable, size: int) -> bytes | None:
    """The bytes of a DW_AT_const_value, or None if the variable has none."""
    attr = variable.const_value
    if attr is None:
        return None
    value = attr.value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, list):
        return bytes(value)
    if isinstance(value, str):
        return value.encode() + b"\0"
    if isinstance(value, int):
        return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    return None


def frame_base(view: FrameView, depth: int = 0) -> int:
    """The value of the frame's function's DW_AT_frame_base (DW_OP_fbreg counts from it)."""
    function = view.function
    if function is None or function.frame_base is None:
        raise SymbolError("Could not find the frame base for the function")
    ops = expression_at(function.unit, function.frame_base, function.frame_base_die, view.pc)
    if ops is None:
        raise OptimizedOut()
    env = _environment(function.unit, view, depth)
    env.frame_base = None  # a frame base cannot refer to itself
    location = evaluate_location(ops, env)
    if isinstance(location, MemoryLocation):
        return location.address
    if isinstance(location, RegisterLocation):
        return view.context.read_register(location.register)
    if isinstance(location, ValueLocation):
        return location.value
    raise SymbolError("Unsupported frame base location")


def entry_value(view: FrameView, register: str, depth: int = 0) -> int:
    """The value register ``register`` had when the frame's function was entered.

    Found as gdb finds it (dwarf2/loc.c, "entry values"): the caller's call
    site at this frame's return address has a DW_TAG_call_site_parameter
    for that register whose DW_AT_call_value, evaluated in the caller,
    is the value. Raises OptimizedOut when there is no such record.
    """
    if depth >= MAX_ENTRY_VALUE_DEPTH:
        raise OptimizedOut()
    caller = view.caller()
    if caller is None or caller.return_address is None:
        raise OptimizedOut()
    function = view.function
    units = function.unit.units if function is not None else None
    if units is None:
        raise OptimizedOut()
    site = units.call_site(caller.return_address)
    if site is None:
        raise OptimizedOut()
    if site.origin_offset is not None and function is not None:
        targets = {function.die_offset, function.origin_offset}
        # A call into another CU names the callee by a declaration in the
        # caller's CU: the same function when the names agree (gdb matches
        # the callee's symbol, not the DIE).
        if site.origin_offset not in targets and (site.origin_name is None or site.origin_name != function.name):
            raise OptimizedOut()  # the call went elsewhere (a different callee)
    for parameter in site.parameters:
        if parameter.register == register and parameter.value is not None:
            env = _environment(site.caller.unit, caller, depth + 1)
            return evaluate_value(parameter.value, env)
    raise OptimizedOut()


def parameter_entry_value(variable: Variable, view: FrameView) -> int | None:
    """A parameter's value at function entry (gdb's ``param@entry``), None if unknown.

    Only a parameter that lived in a register at the function's first
    instruction has one (gdb: a single DW_OP_regN there).
    """
    function = view.function
    if variable.location is None or function is None:
        return None
    entry_pc = min(low for low, _ in function.ranges) if function.ranges else None
    ops = expression_at(variable.unit, variable.location, variable.location_die, entry_pc)
    if ops is None or len(ops) != 1:
        return None
    op = ops[0]
    if op.op_name == "DW_OP_regx":
        number = op.args[0]
    elif op.op_name.startswith("DW_OP_reg") and op.op_name[len("DW_OP_reg"):].isdigit():
        number = int(op.op_name[len("DW_OP_reg"):])
    else:
        return None
    try:
        return entry_value(view, register_name(number))
    except (OptimizedOut, RegisterUnavailable, SymbolError):
        return None


# -- bytes of a location ---------------------------------------------------------------


@dataclass(frozen=True)
class LocatedBytes:
    """An object's bytes; ``optimized`` flags (1 per byte) the bytes that do not exist."""

    data: bytes
    optimized: bytes

    @property
    def fully_optimized_out(self) -> bool:
        """Nothing of the object exists."""
        return bool(self.optimized) and all(self.optimized)

    @property
    def partly_optimized_out(self) -> bool:
        """Some byte of the object does not exist."""
        return any(self.optimized)


def read_location(location: Location, size: int, context: FrameContext | None) -> LocatedBytes:
    """The ``size`` bytes of the object at ``location``.

    Memory and register errors propagate (GuestMemoryError,
    RegisterUnavailable); missing pieces are flagged, not raised.
    """
    if isinstance(location, CompositeLocation):
        bits = bytearray(size * 8)
        missing = bytearray(size * 8)
        position = 0
        for piece in location.pieces:
            data = _read_simple(piece.location, (piece.offset_bits + piece.size_bits + 7) // 8, context)
            for i in range(piece.size_bits):
                if position + i >= size * 8:
                    break
                if data is None:
                    missing[position + i] = 1
                    continue
                source = piece.offset_bits + i
                bits[position + i] = (data[source // 8] >> (source % 8)) & 1
            position += piece.size_bits
        for i in range(position, size * 8):
            missing[i] = 1
        out = bytearray(size)
        optimized = bytearray(size)
        for i in range(size * 8):
            out[i // 8] |= bits[i] << (i % 8)
            if missing[i]:
                optimized[i // 8] = 1
        return LocatedBytes(bytes(out), bytes(optimized))
    data = _read_simple(location, size, context)
    if data is None:
        return LocatedBytes(bytes(size), bytes([1]) * size)
    return LocatedBytes(data[:size].ljust(size, b"\0"), bytes(size))


def _read_simple(location: SimpleLocation, size: int, context: FrameContext | None) -> bytes | None:
    if isinstance(location, MemoryLocation):
        if context is None:
            raise RegisterUnavailable("No registers.")
        return context.read_memory(location.address, size)
    if isinstance(location, RegisterLocation):
        if context is None:
            raise RegisterUnavailable("No registers.")
        width = register_width(location.register)
        value = context.read_register(location.register)
        data = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        return data.ljust(size, b"\0")
    if isinstance(location, ValueLocation):
        width = max(size, 8)
        return (location.value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    if isinstance(location, ImplicitLocation):
        return location.data.ljust(size, b"\0")
    return None  # optimized out, implicit pointer


def write_location(location: Location, data: bytes, context: FrameContext | None) -> None:
    """Store ``data`` as the object at ``location`` (memory, register or their pieces)."""
    if context is None:
        raise RegisterUnavailable("No registers.")
    if isinstance(location, MemoryLocation):
        context.write_memory(location.address, data)
        return
    if isinstance(location, RegisterLocation):
        width = register_width(location.register)
        old = context.read_register(location.register)
        merged = bytearray(old.to_bytes(width, "little"))
        merged[:len(data)] = data[:width]
        context.write_register(location.register, int.from_bytes(merged, "little"))
        return
    if isinstance(location, CompositeLocation):
        position = 0
        for piece in location.pieces:
            if piece.size_bits % 8 or piece.offset_bits % 8 or position % 8:
                raise ExpressionError("Attempt to assign to an unmodifiable value.")
            chunk = data[position // 8:(position + piece.size_bits) // 8]
            if isinstance(piece.location, OptimizedOutLocation):
                raise OptimizedOut()
            target = piece.location
            offset = piece.offset_bits // 8
            if offset and isinstance(target, RegisterLocation):
                # A piece from inside a register ($ah): merge it at its offset.
                width = register_width(target.register)
                merged = bytearray(context.read_register(target.register).to_bytes(width, "little"))
                merged[offset:offset + len(chunk)] = chunk
                context.write_register(target.register, int.from_bytes(merged[:width], "little"))
            elif offset and isinstance(target, MemoryLocation):
                context.write_memory(target.address + offset, chunk)
            elif offset:
                raise ExpressionError("Attempt to assign to an unmodifiable value.")
            else:
                write_location(target, chunk, context)
            position += piece.size_bits
        return
    if isinstance(location, OptimizedOutLocation):
        raise OptimizedOut()
    # DW_OP_stack_value and implicit values are values, not objects (gdb: not_lval).
    raise ExpressionError("Left operand of assignment is not an lvalue.")


def is_lvalue(location: Location) -> bool:
    """Whether the object at ``location`` can be assigned or have its address taken."""
    if isinstance(location, CompositeLocation):
        return all(is_lvalue(piece.location) for piece in location.pieces)
    return isinstance(location, (MemoryLocation, RegisterLocation))


def _environment(unit: Unit, view: FrameView | None, depth: int) -> ExpressionEnvironment:
    env = ExpressionEnvironment(view.context if view is not None else None, address_size=unit.address_size)
    env.address_index = lambda index: unit.dwarf.get_addr(unit.cu, index)
    env.base_type_size = lambda offset: unit.type_at(unit.cu.cu_offset + offset).size or unit.address_size
    if view is not None:
        env.frame_base = lambda: frame_base(view, depth)
        if view.cfa is not None:
            cfa = view.cfa
            env.call_frame_cfa = lambda: cfa
        env.entry_value = lambda ops: _entry_value_of_ops(view, ops, depth)
    return env


def _entry_value_of_ops(view: FrameView, ops: Sequence[DWARFExprOp], depth: int) -> int:
    """DW_OP_entry_value's operand: gdb supports a single DW_OP_regN here."""
    if len(ops) == 1:
        op = ops[0]
        if op.op_name == "DW_OP_regx":
            return entry_value(view, register_name(op.args[0]), depth)
        if op.op_name.startswith("DW_OP_reg") and op.op_name[len("DW_OP_reg"):].isdigit():
            return entry_value(view, register_name(int(op.op_name[len("DW_OP_reg"):])), depth)
    raise OptimizedOut()


def resolve_type(ctype: CType, view: FrameView | None) -> CType:
    """``ctype`` with its variable-length array bounds evaluated in the frame ``view``.

    A VLA's bound lives in an artificial variable or an expression
    (DWARF 5, 5.13 "Subrange Type Entries"); gdb resolves it per frame, so
    ``buf`` in ``long buf[n]`` prints ``n`` elements. Types without VLAs,
    and bounds that cannot be evaluated here, come back unchanged.
    """
    real = ctype
    while isinstance(real, (TypedefType, QualifiedType)):
        real = real.target
    if not isinstance(real, ArrayType) or view is None:
        return ctype
    element = resolve_type(real.element, view)
    count = real.count
    if real.variable_length and isinstance(real.bound, DynamicBound):
        value = _bound_value(real.bound, view)
        if value is not None:
            count = value if real.bound.is_count else value - real.lower_bound + 1
            count = max(count, 0)
    if count == real.count and element is real.element:
        return ctype
    element_size = sizeof(element)
    size = count * element_size if count is not None and element_size is not None else None
    return ArrayType(element=element, count=count, variable_length=count is None, size=size,
                     bound=real.bound, lower_bound=real.lower_bound)


def _bound_value(bound: DynamicBound, view: FrameView) -> int | None:
    unit = bound.unit
    try:
        if bound.expression is not None:
            return evaluate_value(bound.expression, _environment(unit, view, 0))
        die = bound.die
        if die is None:
            return None
        if "DW_AT_const_value" in die.attributes:
            value = die.attributes["DW_AT_const_value"].value
            return value if isinstance(value, int) else None
        attr = die.attributes.get("DW_AT_location")
        if attr is None:
            return None
        ops = expression_at(unit, attr, die, view.pc)
        if ops is None:
            return None
        location = evaluate_location(ops, _environment(unit, view, 0))
        size = 8
        if "DW_AT_type" in die.attributes:
            size = unit.type_at(die.get_DIE_from_attribute("DW_AT_type").offset).size or 8
        data = read_location(location, size, view.context)
        if data.partly_optimized_out:
            return None
        return int.from_bytes(data.data, "little")
    except (OptimizedOut, RegisterUnavailable, SymbolError, GuestMemoryError):
        return None
