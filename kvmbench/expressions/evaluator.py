"""C expressions evaluated with gdb's semantics over a program's DWARF.

:class:`Evaluator` parses an expression with pycparser (through
:mod:`kvmbench.expressions.syntax`, which maps gdb's own forms to C) and
evaluates the tree over typed :class:`~kvmbench.expressions.values.Value` s:
names are the selected frame's locals, then the file's and the program's
globals, functions, enumerators and ELF symbols; arithmetic follows C's
usual conversions as gdb applies them (``binop_promote``: operands
narrower than int become int, the wider operand's signedness wins, equal
widths make an unsigned result if either is unsigned); pointers scale by
their target's size; assignment writes through the frame. Errors are one
line, worded as gdb words them.

Evaluation never recurses deeper than the parse tree, whose depth is
bounded before parsing, and walks chains of binary operators iteratively,
so any input costs time linear in its length.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from dataclasses import dataclass, field
from typing import NoReturn

from pycparser import c_ast
from pycparser.c_parser import CParser, ParseError

from kvmbench.errors import (
    ExpressionError,
    GuestMemoryError,
    KvmbenchError,
    OptimizedOut,
    RegisterUnavailable,
    SymbolError,
)
from kvmbench.expressions import syntax
from kvmbench.expressions.format import PRINT_FORMATS, PrintOptions, format_value
from kvmbench.expressions.values import (
    BUILTIN_TYPES,
    CHAR,
    FlagsType,
    DOUBLE,
    FLOAT,
    INT,
    LONG,
    UNSIGNED_INT,
    UNSIGNED_LONG,
    UNSIGNED_LONG_LONG,
    LONG_LONG,
    VOID,
    Value,
    array_of,
    member_value,
    optimized_out,
    pointer_to,
    value_at,
    value_from_bytes,
    value_from_float,
    value_from_fraction,
    value_from_int,
)
from kvmbench.symbols.dwarf_eval import (
    CompositeLocation,
    ImplicitPointerLocation,
    MemoryLocation,
    OptimizedOutLocation,
    Piece,
    RegisterLocation,
)
from kvmbench.symbols.frame import FrameContext
from kvmbench.symbols.locations import is_lvalue, write_location
from kvmbench.symbols.model import SymbolKind
from kvmbench.symbols.types import (
    ArrayType,
    CType,
    EnumType,
    FloatType,
    FunctionType,
    IntegerKind,
    IntegerType,
    PointerType,
    QualifiedType,
    StructType,
    TypeCode,
    TypedefType,
    VoidType,
    canonical_base_name,
    find_member,
    ptype,
    sizeof,
    strip_typedefs,
    whatis,
)

#: Deepest nesting accepted (brackets, prefix operators, right-associative chains).
MAX_NESTING = 200

#: Longest expression accepted, in characters.
MAX_LENGTH = 200_000

_MASK64 = (1 << 64) - 1
_WRAPPER = "void __kvb_expression(void) {{ ({0}); }}"


# gdb's register types on amd64 (features/i386/64bit-core.xml).
# gdb's fixed-size register types are plain integers named int64_t...int8_t
# (an int8_t register prints as a number, not a character).
_INT64 = IntegerType("int64_t", 8)
_INT32 = IntegerType("int32_t", 4)
_INT16 = IntegerType("int16_t", 2)
_INT8 = IntegerType("int8_t", 1)
_CODE_POINTER = PointerType(target=FunctionType(return_type=VOID, prototyped=False))
_DATA_POINTER = PointerType(target=VOID)


EFLAGS_TYPE = FlagsType("i386_eflags", 4, signed=False, flags=(
    ("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9), ("DF", 10),
    ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19), ("VIP", 20), ("ID", 21),
))

_GENERAL = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{n}" for n in range(8, 16))]
#: Register name -> (full register, byte offset, type), as gdb names them on amd64.
REGISTERS: dict[str, tuple[str, int, CType]] = {
    **{name: (name, 0, _INT64) for name in _GENERAL},
    "rip": ("rip", 0, _CODE_POINTER),
    "rsp": ("rsp", 0, _DATA_POINTER),
    "rbp": ("rbp", 0, _DATA_POINTER),
    "eflags": ("eflags", 0, EFLAGS_TYPE),
    **{seg: (seg, 0, _INT32) for seg in ("cs", "ss", "ds", "es", "fs", "gs")},
    "fs_base": ("fs_base", 0, LONG),
    "gs_base": ("gs_base", 0, LONG),
    # gdb's aliases ("Registers" in the GDB manual).
    "pc": ("rip", 0, _CODE_POINTER),
    "sp": ("rsp", 0, _DATA_POINTER),
    "fp": ("rbp", 0, _DATA_POINTER),
    "ps": ("eflags", 0, EFLAGS_TYPE),
}
for _full, _dword, _word, _low, _high in (
    ("rax", "eax", "ax", "al", "ah"), ("rbx", "ebx", "bx", "bl", "bh"),
    ("rcx", "ecx", "cx", "cl", "ch"), ("rdx", "edx", "dx", "dl", "dh"),
):
    REGISTERS[_dword] = (_full, 0, _INT32)
    REGISTERS[_word] = (_full, 0, _INT16)
    REGISTERS[_low] = (_full, 0, _INT8)
    REGISTERS[_high] = (_full, 1, _INT8)
for _full, _dword, _word, _low in (("rsi", "esi", "si", "sil"), ("rdi", "edi", "di", "dil"),
                                   ("rbp", "ebp", "bp", "bpl"), ("rsp", "esp", "sp_", "spl")):
    REGISTERS[_dword] = (_full, 0, _INT32)
    if _word != "sp_":
        REGISTERS[_word] = (_full, 0, _INT16)
    REGISTERS[_low] = (_full, 0, _INT8)
for _n in range(8, 16):
    REGISTERS[f"r{_n}d"] = (f"r{_n}", 0, _INT32)
    REGISTERS[f"r{_n}w"] = (f"r{_n}", 0, _INT16)
    REGISTERS[f"r{_n}l"] = (f"r{_n}", 0, _INT8)
REGISTER_NAMES = frozenset(REGISTERS)


class _ExpressionParser(CParser):
    """pycparser's parser, telling where it stopped when its message does not.

    "Invalid expression" comes without a position; gdb quotes the rest of
    the input from the token it could not use, so that token's position is
    added (from the parser's look-ahead; without it the message stays).
    """

    def _parse_error(self, msg: str, coord: object) -> NoReturn:  # type: ignore[override]
        if isinstance(coord, str) or coord is None:
            try:
                token = self._peek()
            except Exception:  # the look-ahead is pycparser's own; never let it mask the error
                token = None
            if token is not None:
                coord = f"{token.filename}:{token.lineno}:{token.column}"
        super()._parse_error(msg, coord)  # type: ignore[arg-type]


class ValueHistory:
    """gdb's value history: ``$1``, ``$2``... (``$`` the last, ``$$n`` n back)."""

    def __init__(self) -> None:
        """An empty history."""
        self._values: list[Value] = []

    def __len__(self) -> int:
        return len(self._values)

    def record(self, value: Value) -> int:
        """Add ``value`` (its bytes are fetched now, as gdb fetches them); its number."""
        _ = value.data if value.note is None and not isinstance(strip_typedefs(value.type), FunctionType) else None
        self._values.append(value)
        value.history_index = len(self._values)
        return len(self._values)

    def absolute(self, number: int) -> Value:
        """``$number`` (``$0`` is ``$``)."""
        if number == 0:
            return self.relative(0)
        if number > len(self._values):
            raise ExpressionError(f"History has not yet reached ${number}.")
        return self._values[number - 1]

    def relative(self, back: int) -> Value:
        """``$`` (back 0), ``$$`` (1), ``$$n``."""
        if not self._values and back == 0:
            raise ExpressionError("The history is empty.")
        index = len(self._values) - back
        if index <= 0:
            raise ExpressionError(f"History does not go back to $${back}.")
        return self._values[index - 1]


@dataclass
class Evaluation:
    """An evaluated expression: its value and gdb's warnings on the way (``warning: ...``)."""

    value: Value
    warnings: list[str] = field(default_factory=list)


class Evaluator:
    """Evaluates C expressions in one frame of a program, as gdb's ``print`` does.

    ``program`` supplies symbols and types (a
    :class:`~kvmbench.symbols.program.Program`); ``frame`` is the selected
    :class:`~kvmbench.symbols.frames.SourceFrame` (None: no process, only
    statics); ``context`` reads and writes registers and memory (the
    frame's own context when None, else the program's image, as ``gdb
    ELF`` reads an unstarted program). ``history`` and ``convenience``
    variables persist across evaluations when the caller keeps them.
    """

    def __init__(
        self,
        program: object,
        frame: object | None = None,
        context: FrameContext | None = None,
        *,
        history: ValueHistory | None = None,
        convenience: dict[str, Value] | None = None,
        live: bool | None = None,
    ) -> None:
        """Evaluate in ``frame`` of ``program`` (see the class docstring)."""
        self.program = program
        self.frame = frame
        if context is None:
            context = frame.physical.context if frame is not None else program.static_frame()  # type: ignore[attr-defined]
        self.context = context
        self.history = history if history is not None else ValueHistory()
        self.convenience = convenience if convenience is not None else {}
        self.live = live if live is not None else frame is not None
        self.warnings: list[str] = []
        self._avoid_side_effects = False
        self._at_flags: list[bool] = []
        self._at_nodes: set[int] = set()
        self._at_tree: c_ast.Node | None = None

    # -- public API -------------------------------------------------------------------

    def evaluate(self, text: str) -> Value:
        """The value of expression ``text``; ExpressionError (gdb's words) if it has none."""
        return self.evaluate_full(text).value

    def evaluate_full(self, text: str) -> Evaluation:
        """The value and the warnings gdb would print first."""
        self.warnings = []
        node = self._parse(text)
        value = self._guarded(lambda: self._eval(node))
        return Evaluation(value, list(self.warnings))

    def print_options(self, format: str | None = None) -> PrintOptions:
        """Options that print with this evaluator's symbols and memory."""
        return PrintOptions(format=format, symbolize=self.program.symbolize, context=self.context)  # type: ignore[attr-defined]

    def format(self, value: Value, format: str | None = None, *, top_level: bool = True) -> str:
        """``value`` as ``print`` shows it after ``$N = `` (``top_level=False``: as a
        frame argument or ``info locals`` shows it, without the pointer's type)."""
        return self._guarded(lambda: format_value(value, self.print_options(format), top_level=top_level))

    def print(self, text: str, format: str | None = None, *, record: bool = True) -> str:
        """gdb's ``print[/FMT] EXPR`` output: ``$1 = 42`` (warnings first, one per line)."""
        evaluation = self.evaluate_full(text)
        value = evaluation.value
        lines = [f"warning: {w}" for w in evaluation.warnings]
        if format is not None and format not in PRINT_FORMATS:
            # gdb records the value and fails while printing it, after "$N = ".
            number = self.history.record(value) if record else None
            prefix = f"${number} = " if number is not None else ""
            raise ExpressionError(f'{prefix}Undefined output format "{format}".')
        body = self.format(value, format)
        lines.append(f"${self.history.record(value)} = {body}" if record else body)
        return "\n".join(lines)

    def whatis(self, text: str) -> str:
        """gdb's ``whatis`` answer: ``type = ...`` for an expression or a type name."""
        ctype = self._type_name(text)
        if ctype is not None:
            # A typedef name unrolls one level (GDB manual, "whatis").
            core = ctype
            if isinstance(core, TypedefType):
                core = core.target
            return "type = " + whatis(core)
        return "type = " + whatis(self._static_value(text).type)

    def ptype(self, text: str) -> str:
        """gdb's ``ptype`` answer: the type with bodies expanded."""
        ctype = self._type_name(text)
        if ctype is None:
            ctype = self._static_value(text).type
        return "type = " + ptype(ctype)

    def resolve_type(self, text: str) -> CType | None:
        """The type ``text`` names (``struct point *``, ``unsigned long``), or None if it is no type."""
        return self._type_name(text)

    # -- parsing --------------------------------------------------------------------------

    def _parse(self, text: str, *, as_type: bool = False) -> c_ast.Node:
        if not text.strip():
            raise ExpressionError("Argument required (expression to compute).")
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"Expression too long ({len(text)} characters).")
        tokens = syntax.tokenize(text)
        if syntax.nesting_depth(tokens) > MAX_NESTING:
            raise ExpressionError("Expression too complex: nested too deeply.")
        rewritten = syntax.rewrite(text, REGISTER_NAMES)
        self._at_flags = rewritten.at_operators
        typedefs = sorted(rewritten.identifiers & set(self.program.typedef_names()) - self._shadowing_names(rewritten))  # type: ignore[attr-defined]
        prelude = "".join(f"typedef int {name};" for name in typedefs)
        body = f"sizeof({rewritten.text})" if as_type else rewritten.text
        source = prelude + "\n" + _WRAPPER.format(body)
        offset_base = _WRAPPER.format("\0").index("\0") + (len("sizeof(") if as_type else 0)
        try:
            tree = _ExpressionParser().parse(source, "<expression>")
        except ParseError as exc:
            raise ExpressionError(self._syntax_error(str(exc), rewritten, offset_base)) from None
        except RecursionError:
            raise ExpressionError("Expression too complex: nested too deeply.") from None
        function = tree.ext[-1]
        statement = function.body.block_items[0]
        self._number_shifts(statement)
        return statement

    def _shadowing_names(self, rewritten: syntax.Rewritten) -> set[str]:
        """Typedef names that the frame also has as variables (the variable wins, as in C)."""
        names = set()
        for name in rewritten.identifiers:
            try:
                if self.program.find_variable(name, self.frame) is not None:  # type: ignore[attr-defined]
                    names.add(name)
            except KvmbenchError:
                continue
        return names

    def _syntax_error(self, message: str, rewritten: syntax.Rewritten, offset_base: int) -> str:
        match = re.search(r":2:(\d+):", message)
        if match is None:
            return "A syntax error in expression, near `'."
        column = int(match.group(1)) - 1 - offset_base
        return f"A syntax error in expression, near `{rewritten.remainder(max(column, 0))}'."

    def _number_shifts(self, root: c_ast.Node) -> None:
        """Mark every ``<<`` node with whether it was gdb's ``@``, in source order."""
        # An in-order walk of binary operators visits them in source order.
        order: list[c_ast.BinaryOp] = []
        stack: list[tuple[c_ast.Node, bool]] = [(root, False)]
        while stack:
            node, visited = stack.pop()
            if isinstance(node, c_ast.BinaryOp):
                if visited:
                    if node.op == "<<":
                        order.append(node)
                    continue
                stack.append((node.right, False))
                stack.append((node, True))
                stack.append((node.left, False))
                continue
            for _, child in reversed(list(node.children())):
                stack.append((child, False))
        # pycparser's nodes have __slots__: remember the @ operators by identity.
        self._at_nodes = {id(node) for index, node in enumerate(order)
                          if index < len(self._at_flags) and self._at_flags[index]}
        self._at_tree = root  # keeps the nodes (and so their ids) alive

    # -- errors ----------------------------------------------------------------------------

    def _guarded(self, compute: Callable[[], Value | str]) -> Value | str:  # type: ignore[return]
        try:
            return compute()
        except ExpressionError:
            raise
        except OptimizedOut as exc:
            raise ExpressionError(str(exc)) from None
        except GuestMemoryError as exc:
            text = str(exc)
            if not text.startswith("Cannot access memory"):
                text = f"Cannot access memory: {text}"
            raise ExpressionError(text) from None
        except RegisterUnavailable as exc:
            raise ExpressionError(str(exc)) from None
        except (SymbolError, KvmbenchError) as exc:
            raise ExpressionError(str(exc)) from None
        except RecursionError:
            raise ExpressionError("Expression too complex: nested too deeply.") from None

    # -- evaluation -------------------------------------------------------------------------

    def _static_value(self, text: str) -> Value:
        node = self._parse(text)
        self._avoid_side_effects = True
        try:
            return self._guarded(lambda: self._eval(node))  # type: ignore[return-value]
        finally:
            self._avoid_side_effects = False

    def _type_name(self, text: str) -> CType | None:
        """The type ``text`` spells, or None when it is an expression."""
        try:
            node = self._parse(text, as_type=True)
        except ExpressionError:
            return None
        if isinstance(node, c_ast.UnaryOp) and node.op == "sizeof" and isinstance(node.expr, c_ast.Typename):
            return self._guarded(lambda: self._typename(node.expr))  # type: ignore[return-value]
        return None

    def _eval(self, node: c_ast.Node) -> Value:
        method = getattr(self, f"_eval_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(f"A syntax error in expression, near `{_node_text(node)}'.")
        return method(node)

    def _eval_Constant(self, node: c_ast.Constant) -> Value:
        kind = node.type
        if kind == "string":
            data = _unescape(node.value[1:-1]) + b"\0"
            return value_from_bytes(array_of(CHAR, len(data)), data)
        if kind == "char":
            data = _unescape(node.value[1:-1])
            if len(data) != 1:
                raise ExpressionError(f"A syntax error in expression, near `{node.value}'.")
            return value_from_int(CHAR, data[0])
        if kind in ("float", "double", "long double"):
            return self._float_literal(node.value)
        return self._integer_literal(node.value)

    def _integer_literal(self, text: str) -> Value:
        match = re.fullmatch(r"(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)([uUlL]*)", text)
        if match is None:
            raise ExpressionError("Invalid number \"" + text + "\".")
        digits, suffix = match.groups()
        base = 16 if digits[:2].lower() == "0x" else 2 if digits[:2].lower() == "0b" else 8 if digits.startswith("0") and len(digits) > 1 else 10
        significant = digits[2:] if base in (16, 2) else digits
        significant = significant.lstrip("0") or "0"
        limit = {16: 16, 2: 64, 8: 22, 10: 20}[base]
        if len(significant) > limit:
            raise ExpressionError("Numeric constant too large.")
        number = int(significant, base)
        if number > _MASK64:
            raise ExpressionError("Numeric constant too large.")
        suffix = suffix.lower()
        unsigned = "u" in suffix
        longs = suffix.count("l")
        # C's literal typing as gdb's c-exp.y applies it: int, then long,
        # then unsigned long; hex and octal may be unsigned at each width.
        candidates: list[CType]
        if longs == 0:
            candidates = [INT, UNSIGNED_INT, LONG, UNSIGNED_LONG] if base != 10 else [INT, LONG, UNSIGNED_LONG]
        else:
            candidates = [LONG, UNSIGNED_LONG] if longs == 1 else [LONG_LONG, UNSIGNED_LONG_LONG]
        if unsigned:
            candidates = [t for t in candidates if not t.signed] or [UNSIGNED_LONG]  # type: ignore[attr-defined]
            if longs == 0:
                candidates = [UNSIGNED_INT, UNSIGNED_LONG]
        for ctype in candidates:
            bits = ctype.size * 8  # type: ignore[operator]
            limit_value = (1 << (bits - 1)) - 1 if ctype.signed else (1 << bits) - 1  # type: ignore[attr-defined]
            if number <= limit_value:
                return value_from_int(ctype, number)
        return value_from_int(UNSIGNED_LONG, number)

    def _float_literal(self, text: str) -> Value:
        lowered = text.lower()
        ctype = DOUBLE
        if lowered.endswith("f") and not lowered.startswith("0x"):
            ctype, text = FLOAT, text[:-1]
        elif lowered.endswith("l"):
            ctype, text = BUILTIN_TYPES["long double"], text[:-1]
        try:
            number = float.fromhex(text) if lowered.startswith("0x") else float(text)
        except ValueError:
            raise ExpressionError(f'Invalid number "{text}".') from None
        return value_from_float(ctype, number)

    def _eval_ID(self, node: c_ast.ID) -> Value:
        return self._identifier(node.name)

    def _identifier(self, name: str) -> Value:
        if name.startswith(syntax.RESERVED):
            return self._reserved(name)
        program = self.program
        variable = program.find_variable(name, self.frame)  # type: ignore[attr-defined]
        if variable is not None:
            return self._variable_value(variable)
        function = program.find_function(name, self.frame)  # type: ignore[attr-defined]
        if function is not None:
            ctype = function.function_type or FunctionType()
            return Value(ctype, b"", b"", location=MemoryLocation(min(lo for lo, _ in function.ranges)),
                         context=self.context, name=name)
        enumerator = program.find_enumerator(name, self.frame)  # type: ignore[attr-defined]
        if enumerator is not None:
            enum_type, number = enumerator
            return value_from_int(enum_type, number)
        symbol = program.symbols.get_by_name(name)  # type: ignore[attr-defined]
        if symbol is not None:
            # An ELF symbol without DWARF (gdb's minimal symbols).
            if symbol.kind is SymbolKind.FUNCTION:
                return Value(_NODEBUG_TEXT, b"", b"", location=MemoryLocation(symbol.address),
                             context=self.context, name=name)
            return Value(_NODEBUG_DATA, b"", b"", location=MemoryLocation(symbol.address),
                         context=self.context, name=name)
        raise ExpressionError(f'No symbol "{name}" in current context.')

    def _variable_value(self, variable: object) -> Value:
        ctype = self.program.variable_type(variable, self.frame)  # type: ignore[attr-defined]
        name = variable.name  # type: ignore[attr-defined]
        size = sizeof(ctype) or 0
        from kvmbench.symbols.locations import const_value_bytes

        constant = const_value_bytes(variable, size)  # type: ignore[arg-type]
        if constant is not None:
            return value_from_bytes(ctype, constant[:size].ljust(size, b"\0"))
        location = self.program.locate(variable, self.frame)  # type: ignore[attr-defined]
        if isinstance(location, OptimizedOutLocation):
            return optimized_out(ctype, name)
        if isinstance(location, ImplicitPointerLocation):
            return Value(ctype, bytes(size), bytes(size), name=name, note="<synthetic pointer>")
        return value_at(ctype, location, self.context, name)

    def _reserved(self, name: str) -> Value:
        if name.startswith(syntax.REGISTER_PREFIX):
            return self._register(name[len(syntax.REGISTER_PREFIX):])
        if name.startswith(syntax.HISTORY_ABSOLUTE_PREFIX):
            return self.history.absolute(int(name[len(syntax.HISTORY_ABSOLUTE_PREFIX):]))
        if name.startswith(syntax.HISTORY_RELATIVE_PREFIX):
            return self.history.relative(int(name[len(syntax.HISTORY_RELATIVE_PREFIX):]))
        if name.startswith(syntax.CONVENIENCE_PREFIX):
            variable = name[len(syntax.CONVENIENCE_PREFIX):]
            value = self.convenience.get(variable)
            if value is None:
                return Value(VOID, b"", b"", name="$" + variable)
            return value
        if name.startswith(syntax.ENTRY_PREFIX):
            return self._entry_value(name[len(syntax.ENTRY_PREFIX):])
        raise ExpressionError(f'No symbol "{name}" in current context.')

    def _register(self, name: str) -> Value:
        full, offset, ctype = REGISTERS[name]
        if self.frame is None and not self.live:
            raise ExpressionError("No registers.")
        if name == "fp" and self.frame is not None:
            # gdb's $fp is the frame's base address (get_frame_base_address),
            # on amd64 its prologue analyser's base. A value, not a register.
            base = self.program.amd64_frame_base(self.frame.physical)  # type: ignore[attr-defined]
            return value_from_int(_DATA_POINTER, base & _MASK64)
        size = sizeof(ctype) or 8
        location = RegisterLocation(full) if offset == 0 else CompositeLocation(
            (Piece(RegisterLocation(full), size * 8, offset * 8),))
        value = value_at(ctype, location, self.context, "$" + name)
        _ = value.data  # registers are read now: "No registers." belongs to this expression
        return value

    def _entry_value(self, name: str) -> Value:
        if self.frame is None:
            raise ExpressionError("No frame selected.")
        variable = self.program.find_variable(name, self.frame)  # type: ignore[attr-defined]
        if variable is None or not variable.is_argument:
            # c-exp.y's words, for an unknown name too.
            raise ExpressionError(f'@entry can be used only for function parameters, not for "{name}"')
        number = self.program.entry_value(variable, self.frame)  # type: ignore[attr-defined]
        if number is None:
            return optimized_out(variable.type, name)
        return value_from_int(variable.type, number)

    # -- operators ----------------------------------------------------------------------------

    def _eval_UnaryOp(self, node: c_ast.UnaryOp) -> Value:
        op = node.op
        if op == "sizeof":
            ctype = self._typename(node.expr) if isinstance(node.expr, c_ast.Typename) else self._type_of(node.expr)
            size = sizeof(ctype)
            if size is None:
                raise ExpressionError("Attempt to take sizeof of an incomplete or variable-length type.")
            if isinstance(strip_typedefs(ctype), VoidType) and ctype.name is None:
                size = 1
            return value_from_int(INT, size)
        if op == "_Alignof":
            ctype = self._typename(node.expr) if isinstance(node.expr, c_ast.Typename) else self._type_of(node.expr)
            return value_from_int(INT, _alignment(ctype))
        operand = self._eval(node.expr)
        if op == "&":
            return self.address_of(operand)
        if op == "*":
            return self.dereference(operand)
        if op in ("++", "--", "p++", "p--"):
            one = value_from_int(INT, 1)
            updated = self._arithmetic("+" if "+" in op else "-", operand, one)
            old = Value(operand.type, operand.data, operand.optimized)
            self._assign(operand, updated)
            return old if op.startswith("p") else self._reread(operand)
        if op == "!":
            return value_from_int(INT, 0 if self._truth(operand) else 1)
        operand = self._rvalue(operand)
        real = strip_typedefs(operand.type)
        if op == "-":
            if real.code is TypeCode.FLOAT:
                # gdb negates a float as 0 - x (value_neg): -0.0 prints 0, a NaN keeps its sign.
                if (operand.size or 0) >= 10:
                    exact = operand.as_fraction()
                    if isinstance(exact, Fraction):
                        return value_from_fraction(operand.type, 0 - exact)
                return value_from_float(operand.type, 0.0 - operand.as_float())
            if real.code not in (TypeCode.INTEGER, TypeCode.ENUM):
                raise ExpressionError("Argument to negate operation not a number.")
            ctype = _promote(operand.type)
            return value_from_int(ctype, -operand.as_int())
        if op == "+":
            if real.code is TypeCode.FLOAT:
                return operand
            if real.code not in (TypeCode.INTEGER, TypeCode.ENUM):
                raise ExpressionError("Argument to positive operation not a number.")
            return value_from_int(_promote(operand.type), operand.as_int())
        if op == "~":
            if real.code not in (TypeCode.INTEGER, TypeCode.ENUM):
                raise ExpressionError("Argument to complement operation not an integer, boolean.")
            return value_from_int(_promote(operand.type), ~operand.as_int())
        raise ExpressionError(f"A syntax error in expression, near `{op}'.")

    def _eval_BinaryOp(self, node: c_ast.BinaryOp) -> Value:
        # Walk the left spine iteratively: `1+1+...+1` is a left-deep tree.
        spine: list[c_ast.BinaryOp] = []
        current: c_ast.Node = node
        while isinstance(current, c_ast.BinaryOp):
            spine.append(current)
            current = current.left
        left = self._eval(current)
        for binary in reversed(spine):
            if id(binary) in self._at_nodes:
                left = self._artificial_array(left, self._eval(binary.right))
            elif binary.op == "&&":
                left = value_from_int(INT, 1 if self._truth(left) and self._truth(self._eval(binary.right)) else 0)
            elif binary.op == "||":
                left = value_from_int(INT, 1 if self._truth(left) or self._truth(self._eval(binary.right)) else 0)
            else:
                left = self._arithmetic(binary.op, left, self._eval(binary.right))
        return left

    def _eval_TernaryOp(self, node: c_ast.TernaryOp) -> Value:
        return self._eval(node.iftrue if self._truth(self._eval(node.cond)) else node.iffalse)

    def _eval_ExprList(self, node: c_ast.ExprList) -> Value:
        value = VOID_VALUE
        for expression in node.exprs:
            value = self._eval(expression)
        return value

    def _eval_Assignment(self, node: c_ast.Assignment) -> Value:
        target = self._eval(node.lvalue)
        source = self._eval(node.rvalue)
        if node.op != "=":
            source = self._arithmetic(node.op[:-1], target, source)
        if target.name is not None and target.name.startswith("$") and target.location is None \
                and target.name[1:] not in REGISTERS:
            # Convenience variables take any value, with its type (GDB manual, "Convenience Vars").
            stored = Value(source.type, source.data, source.optimized, name=target.name)
            if not self._avoid_side_effects:
                self.convenience[target.name[1:]] = stored
            return stored
        return self._assign(target, source)

    def _eval_Cast(self, node: c_ast.Cast) -> Value:
        ctype = self._typename(node.to_type)
        return self.cast(self._eval(node.expr), ctype)

    def _eval_ArrayRef(self, node: c_ast.ArrayRef) -> Value:
        # gdb does not take C's i[a] for a[i]: "cannot subscript something of type `int'".
        return self.subscript(self._eval(node.name), self._eval(node.subscript))

    def _eval_StructRef(self, node: c_ast.StructRef) -> Value:
        base = self._eval(node.name)
        return self.member(base, node.field.name, arrow=node.type == "->")

    def _eval_FuncCall(self, node: c_ast.FuncCall) -> Value:
        if not self.live:
            raise ExpressionError("You can't do that without a process to debug.")
        raise ExpressionError("Calling functions of the guest is not supported.")

    def _eval_Typename(self, node: c_ast.Typename) -> Value:
        raise ExpressionError("Attempt to use a type name as an expression")

    def _eval_CompoundLiteral(self, node: c_ast.CompoundLiteral) -> Value:
        raise ExpressionError("A syntax error in expression, near `{'.")

    _eval_InitList = _eval_CompoundLiteral

    # -- operations as methods (the command layer uses some directly) -----------------------

    def address_of(self, value: Value) -> Value:
        """``&value``."""
        if value.type is _NODEBUG_DATA or value.type is _NODEBUG_TEXT:
            assert isinstance(value.location, MemoryLocation)
            return value_from_int(pointer_to(value.type), value.location.address)
        if isinstance(value.location, MemoryLocation):
            return value_from_int(pointer_to(value.type), value.location.address)
        if isinstance(value.location, RegisterLocation) and value.name and not value.name.startswith("$"):
            raise ExpressionError(
                f'Address requested for identifier "{value.name}" which is in register ${value.location.register}'
            )
        if value.note == "<optimized out>":
            raise ExpressionError("Can't take address of \"{}\" which isn't an lvalue.".format(value.name or ""))
        raise ExpressionError("Attempt to take address of value not located in memory.")

    def dereference(self, value: Value) -> Value:
        """``*value``."""
        real = strip_typedefs(value.type)
        if isinstance(real, ArrayType):
            return self._element(value, 0)
        if isinstance(real, FunctionType) or value.type is _NODEBUG_TEXT:
            return value
        if isinstance(real, PointerType):
            address = self._rvalue(value).as_int() & _MASK64
            target = real.target
            if isinstance(strip_typedefs(target), VoidType):
                raise ExpressionError("Attempt to dereference a generic pointer.")
            return value_at(target, MemoryLocation(address), self.context)
        if real.code is TypeCode.INTEGER:
            # gdb's value_ind: `*ADDR` of an integer is the int at ADDR.
            return value_at(INT, MemoryLocation(value.as_int() & _MASK64), self.context)
        raise ExpressionError("Attempt to take contents of a non-pointer value.")

    def member(self, value: Value, name: str, *, arrow: bool = False) -> Value:
        """``value.name`` or ``value->name`` (gdb accepts either on structs and their pointers)."""
        real = strip_typedefs(value.type)
        while isinstance(real, PointerType):
            value = self.dereference(value)
            real = strip_typedefs(value.type)
        if not isinstance(real, StructType):
            if arrow:
                raise ExpressionError("Attempt to extract a component of a value that is not a structure pointer.")
            raise ExpressionError("Attempt to extract a component of a value that is not a structure.")
        found = find_member(real, name)
        if found is None:
            raise ExpressionError(f"There is no member named {name}.")
        if value.note is not None:
            return optimized_out(found.type, value.name)
        return member_value(value, found)

    def subscript(self, base: Value, index: Value) -> Value:
        """``base[index]``."""
        real = strip_typedefs(base.type)
        index_real = strip_typedefs(index.type)
        if not isinstance(real, (ArrayType, PointerType)):
            raise ExpressionError(f"cannot subscript something of type `{whatis(base.type)}'")
        if index_real.code not in (TypeCode.INTEGER, TypeCode.ENUM):
            raise ExpressionError("Argument to arithmetic operation not a number or boolean.")
        position = index.as_int()
        if isinstance(real, ArrayType):
            return self._element(base, position)
        if isinstance(real, PointerType):
            return self.dereference(self._arithmetic("+", base, index))
        raise ExpressionError(f"cannot subscript something of type `{whatis(base.type)}'")

    def cast(self, value: Value, ctype: CType) -> Value:
        """``(ctype) value`` with C's conversions (gdb's value_cast)."""
        target = strip_typedefs(ctype)
        if value.type is _NODEBUG_DATA or value.type is _NODEBUG_TEXT:
            # A symbol without debug info: reinterpret the object at its address.
            assert isinstance(value.location, MemoryLocation)
            return value_at(ctype, value.location, self.context, value.name)
        source = strip_typedefs(value.type)
        if isinstance(target, VoidType):
            return Value(ctype, b"", b"")
        if isinstance(target, StructType):
            if source is target or (isinstance(source, StructType) and source.name == target.name
                                    and source.size == target.size and source.union == target.union):
                return Value(ctype, value.data, value.optimized, location=value.location, context=value.context)
            raise ExpressionError("Invalid cast.")
        if isinstance(target, ArrayType):
            if value.size == sizeof(ctype):
                return Value(ctype, value.data, value.optimized, location=value.location, context=value.context)
            raise ExpressionError("Invalid cast.")
        value = self._rvalue(value)
        source = strip_typedefs(value.type)
        if source.code in (TypeCode.STRUCT, TypeCode.UNION, TypeCode.VOID):
            raise ExpressionError("Invalid cast.")
        if isinstance(target, FloatType):
            if source.code not in (TypeCode.INTEGER, TypeCode.ENUM, TypeCode.FLOAT):
                raise ExpressionError("Invalid cast.")
            if (target.size or 0) >= 10:
                exact = value.as_fraction() if source.code is TypeCode.FLOAT else Fraction(value.as_int())
                return value_from_fraction(ctype, exact)
            return value_from_float(ctype, value.as_float() if source.code is TypeCode.FLOAT else float(value.as_int()))
        if isinstance(target, (IntegerType, EnumType, PointerType)):
            if source.code is TypeCode.FLOAT:
                number = value.as_float()
                if math.isnan(number) or math.isinf(number):
                    number_int = 0
                else:
                    number_int = int(number)
            else:
                number_int = value.as_int()
            if isinstance(target, IntegerType) and target.kind is IntegerKind.BOOL:
                number_int = 1 if number_int != 0 else 0
            return value_from_int(ctype, number_int)
        if isinstance(target, FunctionType):
            raise ExpressionError("Invalid cast.")
        raise ExpressionError("Invalid cast.")

    # -- helpers --------------------------------------------------------------------------------

    def _rvalue(self, value: Value) -> Value:
        """Arrays and functions decay to pointers (C11 6.3.2.1); nodebug symbols need casts."""
        if value.type is _NODEBUG_DATA:
            raise ExpressionError(f"'{value.name}' has unknown type; cast it to its declared type")
        if value.type is _NODEBUG_TEXT:
            raise ExpressionError(f"'{value.name}' has unknown return type; cast the call to its declared return type")
        real = strip_typedefs(value.type)
        if isinstance(real, ArrayType):
            if isinstance(value.location, MemoryLocation):
                return value_from_int(pointer_to(real.element), value.location.address)
            raise ExpressionError("Attempt to take address of value not located in memory.")
        if isinstance(real, FunctionType):
            address = value.location.address if isinstance(value.location, MemoryLocation) else 0
            return value_from_int(pointer_to(value.type), address)
        if isinstance(strip_typedefs(value.type), VoidType) and value.name and value.name.startswith("$"):
            return value
        return value

    def _truth(self, value: Value) -> bool:
        value = self._rvalue(value)
        real = strip_typedefs(value.type)
        if real.code is TypeCode.FLOAT:
            return value.as_float() != 0.0
        if real.code in (TypeCode.INTEGER, TypeCode.ENUM, TypeCode.POINTER):
            return value.as_int() != 0
        raise ExpressionError("Argument to arithmetic operation not a number or boolean.")

    def _element(self, array: Value, index: int) -> Value:
        real = strip_typedefs(array.type)
        assert isinstance(real, ArrayType)
        element_size = sizeof(real.element) or 0
        if isinstance(array.location, MemoryLocation):
            return value_at(real.element, MemoryLocation(array.location.address + index * element_size),
                            self.context)
        count = real.count or 0
        if not 0 <= index < count:
            raise ExpressionError(f"no such vector element")
        start = index * element_size
        return Value(real.element, array.data[start:start + element_size],
                     array.optimized[start:start + element_size])

    def _artificial_array(self, left: Value, right: Value) -> Value:
        """gdb's ``LEFT@COUNT``: COUNT objects like LEFT, starting where it is."""
        if strip_typedefs(right.type).code not in (TypeCode.INTEGER, TypeCode.ENUM):
            raise ExpressionError("Non-integral right operand for \"@\" operator.")
        count = right.as_int()
        if not isinstance(left.location, MemoryLocation) or left.bitfield is not None:
            raise ExpressionError("Only values in memory can be extended with '@'.")
        if count <= 0:
            raise ExpressionError(f"Invalid number {count} of repetitions.")
        ctype = array_of(left.type, count)
        return value_at(ctype, left.location, self.context)

    def _type_of(self, node: c_ast.Node) -> CType:
        saved = self._avoid_side_effects
        self._avoid_side_effects = True
        try:
            return self._eval(node).type
        finally:
            self._avoid_side_effects = saved

    def _assign(self, target: Value, source: Value) -> Value:
        if target.location is None or not is_lvalue(target.location):
            if target.note == "<optimized out>":
                raise ExpressionError("value has been optimized out")
            raise ExpressionError("Left operand of assignment is not an lvalue.")
        converted = self.cast(source, target.type) if not isinstance(strip_typedefs(target.type), StructType) \
            else source
        if isinstance(strip_typedefs(target.type), StructType) and \
                sizeof(source.type) != sizeof(target.type):
            raise ExpressionError("Invalid cast.")
        if self._avoid_side_effects:
            return Value(target.type, converted.data, converted.optimized, location=target.location,
                         context=target.context)
        data = converted.data
        if target.bitfield is not None:
            bit_offset, bit_size = target.bitfield
            container = int.from_bytes(target.data, "little")
            mask = ((1 << bit_size) - 1) << bit_offset
            container = (container & ~mask) | ((converted.as_int() << bit_offset) & mask)
            data = container.to_bytes(len(target.data), "little")
        write_location(target.location, data, self.context)
        return self._reread(target)

    def _reread(self, target: Value) -> Value:
        fresh = value_at(target.type, target.location, self.context, target.name)  # type: ignore[arg-type]
        if target.bitfield is not None:
            fresh.bitfield = target.bitfield
            size = len(target.data)
            location = target.location

            def fetch():  # type: ignore[no-untyped-def]
                from kvmbench.symbols.locations import read_location

                return read_location(location, size, self.context)  # type: ignore[arg-type]

            fresh._fetch = fetch
        return fresh

    def _arithmetic(self, op: str, left: Value, right: Value) -> Value:
        left, right = self._rvalue(left), self._rvalue(right)
        lreal, rreal = strip_typedefs(left.type), strip_typedefs(right.type)
        if isinstance(lreal, VoidType) or isinstance(rreal, VoidType):
            raise ExpressionError("Argument to arithmetic operation not a number or boolean.")
        if lreal.code is TypeCode.POINTER or rreal.code is TypeCode.POINTER:
            return self._pointer_arithmetic(op, left, right, lreal, rreal)
        numeric = (TypeCode.INTEGER, TypeCode.ENUM, TypeCode.FLOAT)
        if lreal.code not in numeric or rreal.code not in numeric:
            raise ExpressionError("Argument to arithmetic operation not a number or boolean.")
        if op in ("<<", ">>"):
            return self._shift(op, left, right)
        comparison = op in ("==", "!=", "<", ">", "<=", ">=")
        if lreal.code is TypeCode.FLOAT or rreal.code is TypeCode.FLOAT:
            ctype = _float_promote(left.type, right.type)
            if (ctype.size or 0) >= 10:
                extended = self._extended_arithmetic(op, left, right, ctype)
                if extended is not None:
                    return extended
            a, b = left.as_float(), right.as_float()
            if comparison:
                return value_from_int(INT, int(_compare(op, a, b)))
            if op == "+":
                result = a + b
            elif op == "-":
                result = a - b
            elif op == "*":
                result = a * b
            elif op == "/":
                result = _ieee_divide(a, b)
            else:
                raise ExpressionError("Integer only operation %s." % op if op != "%" else
                                      "Integer only operation MOD.")
            if ctype.size == 4:
                result = value_from_float(FLOAT, result).as_float()
            return value_from_float(ctype, result)
        ctype = _binop_promote(left.type, right.type)
        signed = ctype.signed  # type: ignore[attr-defined]
        bits = ctype.size * 8  # type: ignore[operator]
        a, b = _wrap(left.as_int(), bits, signed), _wrap(right.as_int(), bits, signed)
        if comparison:
            return value_from_int(INT, int(_compare(op, a, b)))
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op == "*":
            result = a * b
        elif op in ("/", "%"):
            if b == 0:
                raise ExpressionError("Division by zero")
            quotient = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
            result = quotient if op == "/" else a - quotient * b
        elif op == "&":
            result = a & b
        elif op == "|":
            result = a | b
        elif op == "^":
            result = a ^ b
        else:
            raise ExpressionError(f"A syntax error in expression, near `{op}'.")
        return value_from_int(ctype, result)

    def _extended_arithmetic(self, op: str, left: Value, right: Value, ctype: CType) -> Value | None:
        """long double arithmetic, exact then rounded to the x87 format (None: inf or nan involved)."""
        a = left.as_fraction() if strip_typedefs(left.type).code is TypeCode.FLOAT else Fraction(left.as_int())
        b = right.as_fraction() if strip_typedefs(right.type).code is TypeCode.FLOAT else Fraction(right.as_int())
        if not isinstance(a, Fraction) or not isinstance(b, Fraction):
            return None
        if op in ("==", "!=", "<", ">", "<=", ">="):
            return value_from_int(INT, int(_compare(op, a, b)))
        if op == "+":
            return value_from_fraction(ctype, a + b)
        if op == "-":
            return value_from_fraction(ctype, a - b)
        if op == "*":
            return value_from_fraction(ctype, a * b)
        if op == "/" and b != 0:
            return value_from_fraction(ctype, a / b)
        return None

    def _shift(self, op: str, left: Value, right: Value) -> Value:
        if strip_typedefs(left.type).code is TypeCode.FLOAT or strip_typedefs(right.type).code is TypeCode.FLOAT:
            raise ExpressionError("Integer only operation %s." % ("LSH" if op == "<<" else "RSH"))
        ctype = _promote(left.type)
        bits = ctype.size * 8  # type: ignore[operator]
        count = right.as_int()
        direction = "left" if op == "<<" else "right"
        if count < 0:
            self.warnings.append(f"{direction} shift count is negative")
            return value_from_int(ctype, 0)
        if count >= bits:
            self.warnings.append(f"{direction} shift count >= width of type")
            return value_from_int(ctype, 0)
        number = _wrap(left.as_int(), bits, ctype.signed)  # type: ignore[attr-defined]
        return value_from_int(ctype, number << count if op == "<<" else number >> count)

    def _pointer_arithmetic(self, op: str, left: Value, right: Value, lreal: CType, rreal: CType) -> Value:
        comparison = op in ("==", "!=", "<", ">", "<=", ">=")
        integral = (TypeCode.INTEGER, TypeCode.ENUM)
        if comparison:
            if lreal.code in integral or rreal.code in integral or \
                    (lreal.code is TypeCode.POINTER and rreal.code is TypeCode.POINTER):
                a, b = left.as_int() & _MASK64, right.as_int() & _MASK64
                return value_from_int(INT, int(_compare(op, a, b)))
            raise ExpressionError("Argument to comparison operation not a number or pointer.")
        if op == "+" and rreal.code is TypeCode.POINTER and lreal.code in integral:
            left, right, lreal, rreal = right, left, rreal, lreal
        if op in ("+", "-") and lreal.code is TypeCode.POINTER and rreal.code in integral:
            assert isinstance(lreal, PointerType)
            step = _pointer_step(lreal)
            delta = right.as_int() * step
            address = left.as_int() + (delta if op == "+" else -delta)
            return value_from_int(left.type, address)
        if op == "-" and lreal.code is TypeCode.POINTER and rreal.code is TypeCode.POINTER:
            assert isinstance(lreal, PointerType) and isinstance(rreal, PointerType)
            step_left, step_right = _pointer_step(lreal), _pointer_step(rreal)
            if step_left != step_right:
                raise ExpressionError("First argument of `-' is a pointer and second argument is neither\n"
                                      "an integer nor a pointer of the same type.")
            difference = _wrap((left.as_int() - right.as_int()) & _MASK64, 64, True)
            return value_from_int(LONG, int(difference / step_left) if step_left else difference)
        if op in ("&", "|", "^") and (lreal.code in integral or rreal.code in integral):
            ctype = UNSIGNED_LONG
            a, b = left.as_int() & _MASK64, right.as_int() & _MASK64
            return value_from_int(ctype, a & b if op == "&" else a | b if op == "|" else a ^ b)
        raise ExpressionError("Argument to arithmetic operation not a number or boolean.")

    # -- types ---------------------------------------------------------------------------------

    def _typename(self, node: c_ast.Typename) -> CType:
        return self._declarator_type(node.type)

    def _declarator_type(self, node: c_ast.Node) -> CType:
        if isinstance(node, c_ast.TypeDecl):
            return _qualify(self._base_type(node.type), node.quals)
        if isinstance(node, c_ast.PtrDecl):
            return _qualify(pointer_to(self._declarator_type(node.type)), node.quals)
        if isinstance(node, c_ast.ArrayDecl):
            element = self._declarator_type(node.type)
            count = None
            if node.dim is not None:
                count = self._eval(node.dim).as_int()
            if count is None:
                return ArrayType(element=element, count=None)
            return array_of(element, count)
        if isinstance(node, c_ast.FuncDecl):
            params = []
            varargs = False
            if node.args is not None:
                for param in node.args.params:
                    if isinstance(param, c_ast.EllipsisParam):
                        varargs = True
                        continue
                    param_type = self._declarator_type(param.type)
                    if isinstance(param_type, VoidType) and not params:
                        continue
                    params.append(param_type)
            return FunctionType(return_type=self._declarator_type(node.type), params=params, varargs=varargs,
                                prototyped=node.args is not None)
        raise ExpressionError("A syntax error in expression, near `'.")

    def _base_type(self, node: c_ast.Node) -> CType:
        if isinstance(node, c_ast.IdentifierType):
            name = " ".join(node.names)
            canonical = canonical_base_name(name)
            if len(node.names) == 1 and canonical not in BUILTIN_TYPES:
                found = self.program.find_type(canonical, self.frame)  # type: ignore[attr-defined]
                if found is not None:
                    return found
                raise ExpressionError(f'No symbol "{canonical}" in current context.')
            found = self.program.find_type(canonical, self.frame)  # type: ignore[attr-defined]
            if found is not None and not isinstance(found, TypedefType):
                return found
            if canonical in BUILTIN_TYPES:
                return BUILTIN_TYPES[canonical]
            raise ExpressionError(f"A syntax error in expression, near `{name}'.")
        if isinstance(node, (c_ast.Struct, c_ast.Union, c_ast.Enum)):
            keyword = {c_ast.Struct: "struct", c_ast.Union: "union", c_ast.Enum: "enum"}[type(node)]
            if node.name is None:
                raise ExpressionError("A syntax error in expression, near `{'.")
            found = self.program.find_type(f"{keyword} {node.name}", self.frame)  # type: ignore[attr-defined]
            if found is None:
                raise ExpressionError(f"No {keyword} type named {node.name}.")
            return found
        raise ExpressionError("A syntax error in expression, near `'.")


VOID_VALUE = Value(VOID, b"", b"")
_NODEBUG_DATA = IntegerType("<data variable, no debug info>", None)
_NODEBUG_TEXT = FunctionType(name="<text variable, no debug info>", return_type=INT, prototyped=False)


def _qualify(ctype: CType, quals: list[str]) -> CType:
    if not quals:
        return ctype
    return QualifiedType(target=ctype, const="const" in quals, volatile="volatile" in quals,
                         restrict="restrict" in quals, atomic="_Atomic" in quals, size=ctype.size)


def _promote(ctype: CType) -> CType:
    """C's integer promotion (gdb's unop_promote): narrower than int becomes int."""
    real = strip_typedefs(ctype)
    if real.code is TypeCode.FLOAT:
        return ctype
    size = real.size or 4
    signed = getattr(real, "signed", True)
    if size < 4:
        return INT
    if size == 4:
        return INT if signed else UNSIGNED_INT
    return LONG if signed else UNSIGNED_LONG


def _binop_promote(left: CType, right: CType) -> CType:
    """gdb's binop_promote for C integers: wider wins, equal width unsigned if either is."""
    lreal, rreal = strip_typedefs(left), strip_typedefs(right)
    lsize, rsize = lreal.size or 4, rreal.size or 4
    lunsigned = not getattr(lreal, "signed", True)
    runsigned = not getattr(rreal, "signed", True)
    if lsize < 4:
        lunsigned, lsize = False, 4
    if rsize < 4:
        runsigned, rsize = False, 4
    if lsize > rsize:
        unsigned, size = lunsigned, lsize
    elif rsize > lsize:
        unsigned, size = runsigned, rsize
    else:
        unsigned, size = lunsigned or runsigned, lsize
    if size <= 4:
        return UNSIGNED_INT if unsigned else INT
    if size <= 8:
        return UNSIGNED_LONG if unsigned else LONG
    return BUILTIN_TYPES["unsigned __int128"] if unsigned else BUILTIN_TYPES["__int128"]


def _float_promote(left: CType, right: CType) -> CType:
    lreal, rreal = strip_typedefs(left), strip_typedefs(right)
    if lreal.code is not TypeCode.FLOAT:
        return rreal
    if rreal.code is not TypeCode.FLOAT:
        return lreal
    return lreal if (lreal.size or 0) >= (rreal.size or 0) else rreal


# x86's "default NaN" (Intel SDM vol. 1, 4.8.3.7): the quiet NaN with the sign set.
_DEFAULT_NAN = -math.nan if math.copysign(1.0, -math.nan) < 0 else math.nan


def _ieee_divide(a: float, b: float) -> float:
    """a / b as the FPU computes it: +-inf for x/0, the default NaN for 0/0."""
    if b != 0 or math.isnan(b):
        return a / b
    if a == 0 or math.isnan(a):
        return a if math.isnan(a) else _DEFAULT_NAN
    negative = (math.copysign(1.0, a) < 0) != (math.copysign(1.0, b) < 0)
    return -math.inf if negative else math.inf


def _wrap(number: int, bits: int, signed: bool) -> int:
    number &= (1 << bits) - 1
    if signed and number >> (bits - 1):
        number -= 1 << bits
    return number


def _compare(op: str, a: float | int, b: float | int) -> bool:
    return {"==": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


def _pointer_step(pointer: PointerType) -> int:
    target = strip_typedefs(pointer.target)
    if isinstance(target, (VoidType, FunctionType)):
        return 1  # GNU C: arithmetic on void * and function pointers counts bytes
    size = sizeof(pointer.target)
    if size is None:
        raise ExpressionError(f"Cannot perform pointer math on incomplete type \"{whatis(pointer.target)}\", "
                              "try casting to a known type, or void *.")
    return size


def _alignment(ctype: CType) -> int:
    real = strip_typedefs(ctype)
    if isinstance(real, ArrayType):
        return _alignment(real.element)
    if isinstance(real, StructType):
        return max((_alignment(m.type) for m in real.members), default=1)
    return min(real.size or 1, 16)


_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "e": 27,
                   "\\": 92, "'": 39, '"': 34, "?": 63}


def _unescape(text: str) -> bytes:
    """The bytes of a C string or character literal's body."""
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
            continue
        i += 1
        if i >= len(text):
            break
        char = text[i]
        if char in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[char])
            i += 1
        elif char in "01234567":
            digits = re.match(r"[0-7]{1,3}", text[i:]).group()  # type: ignore[union-attr]
            out.append(int(digits, 8) & 0xFF)
            i += len(digits)
        elif char == "x":
            match = re.match(r"[0-9a-fA-F]+", text[i + 1:])
            if match is None:
                raise ExpressionError("\\x escape without a following hex digit")
            out.append(int(match.group()[-2:], 16))
            i += 1 + len(match.group())
        else:
            out += char.encode("utf-8")
            i += 1
    return bytes(out)


def _node_text(node: c_ast.Node) -> str:
    return type(node).__name__
