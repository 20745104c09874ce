"""gdb's ``info address`` and ``info scope``: where symbols live, in gdb's words.

A DWARF location is described as gdb 13 describes it (dwarf2/loc.c,
locexpr_describe_location_1 and loclist_describe_location): ``a variable
in $rdi``, ``a variable at frame base reg $rbp offset 16+-20``, ``the
constant 0``, pieces as ``... [8-byte piece], and ...``, location lists as
``multi-location:`` with one ``Range LOW-HIGH: ...`` line per entry, and
anything else as ``a complex DWARF expression:`` followed by gdb's
disassembly of it (``     0: DW_OP_fbreg -40``).
"""

from __future__ import annotations

from collections.abc import Sequence

from elftools.dwarf.dwarf_expr import DWARFExprOp

from kvmbench.errors import SymbolError
from kvmbench.symbols.locations import LocationRange, expression_at, location_ranges
from kvmbench.symbols.registers import register_name
from kvmbench.symbols.symbol_order import block_variables
from kvmbench.symbols.types import sizeof, type_to_string
from kvmbench.symbols.units import Scope, ScopeKind, Unit, Variable

_PIECES = ("DW_OP_piece", "DW_OP_bit_piece")


def info_scope(program: object, location_text: str) -> str:
    """gdb's ``info scope LOCATION``: every symbol of the block at LOCATION, out to its function."""
    pc = program.breakpoint_locations(location_text)[0]  # type: ignore[attr-defined]
    units = program.units  # type: ignore[attr-defined]
    scope = units.scope_at(pc) if units is not None else None
    lines: list[str] = []
    block = scope
    while block is not None:
        entries = []
        if block.kind is ScopeKind.INLINED_FUNCTION and block.name is not None:
            # gdb files an inlined function's own symbol in its block.
            entries.append(f"Symbol {block.name} is a function at address {block.gdb_entry_pc:#x}, length 1.")
        for variable in block_variables(block):
            entries.append(f"Symbol {variable.name} is {_scope_description(variable, block)}")
        lines += entries
        if block.is_function:
            break
        block = block.parent
    if not lines:
        return f"Scope for {location_text} contains no locals or arguments."
    return f"Scope for {location_text}:\n" + "\n".join(lines)


def _scope_description(variable: Variable, block: Scope) -> str:
    length = sizeof(variable.type) or 0
    if variable.const_value is not None and variable.location is None:
        value = variable.const_value.value
        if isinstance(value, int):
            return f"a constant with value {value} ({value & ((1 << 64) - 1):#x}), length {length}."
        data = bytes(value) if isinstance(value, (bytes, list)) else b""
        return "constant bytes: " + "".join(f" {b:02x}" for b in data) + f", length {length}."
    if variable.location is None:
        return "optimized out."
    static = _static_address(variable)
    if static is not None:
        return f"in static storage at address {static:#x}, length {length}."
    return describe_location(variable, block.gdb_entry_pc) + f", length {length}."


def info_address(program: object, name: str, frame: object | None = None) -> str:
    """gdb's ``info address NAME`` (locals need ``frame``, a SourceFrame)."""
    variable = program.find_variable(name, frame)  # type: ignore[attr-defined]
    if variable is not None:
        if variable.const_value is not None and variable.location is None:
            return f'Symbol "{name}" is constant.'
        if variable.location is None:
            return f'Symbol "{name}" is optimized out.'
        static = _static_address(variable)
        if static is not None:
            return f'Symbol "{name}" is static storage at address {static:#x}.'
        pc = frame.lookup_pc if frame is not None else 0  # type: ignore[attr-defined]
        return f'Symbol "{name}" is ' + describe_location(variable, pc) + "."
    function = program.find_function(name, frame)  # type: ignore[attr-defined]
    if function is not None:
        return f'Symbol "{name}" is a function at address {function.low:#x}.'
    if program.find_enumerator(name, frame) is not None:  # type: ignore[attr-defined]
        return f'Symbol "{name}" is constant.'
    symbol = program.symbols.get_by_name(name)  # type: ignore[attr-defined]
    if symbol is not None:
        return f'Symbol "{name}" is at {symbol.address:#x} in a file compiled without debugging.'
    return f'No symbol "{name}" in current context.'


def _static_address(variable: Variable) -> int | None:
    """The address of a variable gdb files as LOC_STATIC (a lone DW_OP_addr)."""
    if variable.location is None:
        return None
    ops = location_ranges(variable.unit, variable.location, variable.location_die)
    if not isinstance(ops, tuple) or len(ops) != 1:
        return None
    op = ops[0]
    if op.op_name == "DW_OP_addr":
        return op.args[0]
    if op.op_name == "DW_OP_addrx":
        return variable.unit.dwarf.get_addr(variable.unit.cu, op.args[0])
    return None


def describe_location(variable: Variable, pc: int) -> str:
    """A variable's DW_AT_location as gdb describes it (without the trailing period)."""
    unit = variable.unit
    ranges = location_ranges(unit, variable.location, variable.location_die)
    if isinstance(ranges, tuple):
        return describe_expression(unit, ranges, pc)
    return _describe_list(unit, ranges)


def _describe_list(unit: Unit, ranges: Sequence[LocationRange]) -> str:
    text = "multi-location:\n"
    for entry in ranges:
        if entry.base_address is not None:
            text += f"  Base address {entry.base_address:#x}"
        text += f"  Range {entry.low:#x}-{entry.high:#x}: "
        text += describe_expression(unit, entry.expression, entry.low)
        text += "\n"
    return text


def describe_expression(unit: Unit, ops: Sequence[DWARFExprOp], pc: int) -> str:
    """One location expression in gdb's words, piece by piece."""
    parts: list[str] = []
    i = 0
    ops = list(ops)
    while i < len(ops):
        j = i
        while j < len(ops) and ops[j].op_name not in _PIECES:
            j += 1
        segment = ops[i:j]
        text = _describe_piece(unit, segment, pc)
        disassembled = text is None
        if text is None:
            text = "a complex DWARF expression:\n" + disassemble(unit, segment)
        if j < len(ops):
            piece = ops[j]
            prefix = "   " if disassembled else ""
            empty = not segment
            if piece.op_name == "DW_OP_piece":
                text = (f"an empty {piece.args[0]}-byte piece" if empty
                        else text + f"{prefix} [{piece.args[0]}-byte piece]")
            else:
                size, offset = piece.args
                text = (f"an empty {size}-bit piece" if empty
                        else text + f"{prefix} [{size}-bit piece, offset {offset} bits]")
            j += 1
        parts.append(text)
        i = j
    return ", and ".join(parts)


def _describe_piece(unit: Unit, ops: Sequence[DWARFExprOp], pc: int) -> str | None:
    """gdb's locexpr_describe_location_piece; None where gdb disassembles instead."""
    if not ops:
        return ""
    op = ops[0]
    name = op.op_name
    if len(ops) == 1 and (name.startswith("DW_OP_reg") and name[9:].isdigit() or name == "DW_OP_regx"):
        number = op.args[0] if name == "DW_OP_regx" else int(name[9:])
        return f"a variable in ${register_name(number)}"
    if len(ops) == 1 and name == "DW_OP_fbreg":
        base = _frame_base_register(unit, pc)
        if base is None:
            return None
        register, offset = base
        return f"a variable at frame base reg ${register} offset {offset}+{op.args[0]}"
    if len(ops) == 2 and name.startswith("DW_OP_lit") and ops[1].op_name == "DW_OP_stack_value":
        return f"the constant {int(name[9:])}"
    return None


def _frame_base_register(unit: Unit, pc: int) -> tuple[str, int] | None:
    """(register, offset) when the function's frame base at ``pc`` is DW_OP_bregN/DW_OP_regN."""
    function = unit.function_at(pc)
    if function is None:
        raise SymbolError(f"No function found for block at address {pc:#x}.")
    if function.frame_base is None:
        return None
    ops = expression_at(unit, function.frame_base, function.frame_base_die, pc)
    if not ops or len(ops) != 1:
        return None
    name = ops[0].op_name
    if name.startswith("DW_OP_breg") and name[10:].isdigit():
        return register_name(int(name[10:])), ops[0].args[0]
    if name.startswith("DW_OP_reg") and name[9:].isdigit():
        return register_name(int(name[9:])), 0
    return None


def disassemble(unit: Unit, ops: Sequence[DWARFExprOp], indent: int = 0, base: int = 0) -> str:
    """gdb's disassemble_dwarf_expression: ``  %*d: NAME OPERANDS`` per operation."""
    lines = []
    for op in ops:
        offset = base + op.offset
        line = f"  {offset:>{indent + 4}}: {op.op_name}"
        if op.op_name in ("DW_OP_entry_value", "DW_OP_GNU_entry_value"):
            nested = op.args[0]
            size = _encoded_size(nested)
            nested_base = offset + 1 + _uleb_length(size)
            lines.append(line + "\n" + disassemble(unit, nested, indent + 2, nested_base).rstrip("\n"))
            continue
        lines.append(line + _operands(unit, op))
    return "".join(line + "\n" for line in lines)


def _operands(unit: Unit, op: DWARFExprOp) -> str:
    name, args = op.op_name, op.args
    if name == "DW_OP_addr":
        return f" {args[0]:#x}"
    if name in ("DW_OP_addrx", "DW_OP_GNU_addr_index"):
        return f" {unit.dwarf.get_addr(unit.cu, args[0]):#x}"
    if name.startswith("DW_OP_const") and name[-1] in "us" and name[-2].isdigit() or name in (
            "DW_OP_constu", "DW_OP_consts"):
        return f" {args[0]}"
    if name.startswith("DW_OP_reg") and name[9:].isdigit():
        return f" [${register_name(int(name[9:]))}]"
    if name == "DW_OP_regx":
        return f" {args[0]} [${register_name(args[0])}]"
    if name.startswith("DW_OP_breg") and name[10:].isdigit():
        return f" {args[0]} [${register_name(int(name[10:]))}]"
    if name == "DW_OP_bregx":
        return f" register {args[0]} [${register_name(args[0])}] offset {args[1]}"
    if name in ("DW_OP_fbreg", "DW_OP_plus_uconst", "DW_OP_deref_size", "DW_OP_xderef_size", "DW_OP_pick"):
        return f" {args[0]}"
    if name in ("DW_OP_skip", "DW_OP_bra"):
        # gdb words the two differently: "DW_OP_skip to 19", "DW_OP_bra 19".
        target = op.offset + 3 + args[0]
        return f" to {target}" if name == "DW_OP_skip" else f" {target}"
    if name == "DW_OP_implicit_value":
        return f" {len(args[0])}"
    if name == "DW_OP_piece":
        return f" {args[0]} (bytes)"
    if name == "DW_OP_bit_piece":
        return f" size {args[0]} offset {args[1]} (bits)"
    if name in ("DW_OP_call2", "DW_OP_call4", "DW_OP_call_ref", "DW_OP_GNU_parameter_ref"):
        return f" offset {args[0]:x}"
    if name in ("DW_OP_implicit_pointer", "DW_OP_GNU_implicit_pointer"):
        return f" DIE <{args[0]:#x}> offset {args[1]}"
    if name in ("DW_OP_deref_type", "DW_OP_GNU_deref_type"):
        return f"<{_type_name(unit, args[1])} [{args[1]:#x}]> {args[0]}"
    if name in ("DW_OP_const_type", "DW_OP_GNU_const_type"):
        return f"<{_type_name(unit, args[0])} [{args[0]:#x}]>"
    if name in ("DW_OP_regval_type", "DW_OP_GNU_regval_type"):
        return f"<{_type_name(unit, args[1])} [{args[1]:#x}]> [${register_name(args[0])}]"
    if name in ("DW_OP_convert", "DW_OP_GNU_convert", "DW_OP_reinterpret", "DW_OP_GNU_reinterpret"):
        return "<0>" if not args[0] else f"<{_type_name(unit, args[0])} [{args[0]:#x}]>"
    return ""


def _type_name(unit: Unit, cu_offset: int) -> str:
    return type_to_string(unit.type_at(unit.cu.cu_offset + cu_offset), show=-1)


def _uleb_length(value: int) -> int:
    length = 1
    while value >= 0x80:
        value >>= 7
        length += 1
    return length


def _encoded_size(ops: Sequence[DWARFExprOp]) -> int:
    """The size of a nested expression: pyelftools keeps offsets, so the end is
    the last operation's start plus its encoding, approximated by its kind."""
    if not ops:
        return 0
    last = ops[-1]
    # The nested expressions of entry values are a register (1 byte for
    # DW_OP_reg0-31) or short sequences; what matters here is the length of
    # the uleb128 size before them, 1 byte below 128.
    return last.offset + 1
