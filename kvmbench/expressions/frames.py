"""gdb's text for frames and their variables: ``bt`` lines, stop headlines,
``info args``, ``info locals``.

- A frame line is ``#1  0x0000000000401052 in main () at src/frames.c:111``:
  the address only where the pc is not at the start of a line-table row
  (gdb's frame_show_address), never for a frame whose callee was inlined
  into it; arguments as ``print frame-arguments scalars`` (gdb's default)
  prints them, structs and arrays as ``...``; with entry values as ``print
  entry-values default`` does: ``n=n@entry=3`` when the value at entry is
  known and unchanged, ``n=4, n@entry=3`` when it changed.
- ``info locals`` lists every block from the innermost out to the
  function, each in gdb's symbol order
  (:mod:`kvmbench.symbols.symbol_order`).
"""

from __future__ import annotations

from collections.abc import Iterator

from kvmbench.errors import ExpressionError, KvmbenchError
from kvmbench.expressions.evaluator import Evaluator
from kvmbench.expressions.values import Value
from kvmbench.symbols.frames import SourceFrame
from kvmbench.symbols.symbol_order import block_variables
from kvmbench.symbols.types import ArrayType, StructType, strip_typedefs
from kvmbench.symbols.units import Variable


def frame_evaluator(program: object, frame: SourceFrame) -> Evaluator:
    """An evaluator for ``frame``'s variables."""
    return Evaluator(program, frame)


def variable_text(evaluator: Evaluator, variable: Variable) -> str:
    """A variable's value as ``info locals`` prints it (``<error: ...>`` when unreadable)."""
    try:
        value = evaluator._guarded(lambda: evaluator._variable_value(variable))  # type: ignore[arg-type]
        return evaluator.format(value, top_level=False)  # type: ignore[arg-type]
    except ExpressionError as exc:
        return f"<error: {exc}>"


def info_args(program: object, frame: SourceFrame) -> str:
    """gdb's ``info args`` for ``frame`` (``No arguments.`` when there are none)."""
    if frame.function is None:
        return "No symbol table info available."
    evaluator = frame_evaluator(program, frame)
    lines = [f"{v.name} = {variable_text(evaluator, v)}" for v in frame.function.variables if v.is_argument]
    return "\n".join(lines) if lines else "No arguments."


def iter_locals(frame: SourceFrame) -> Iterator[Variable]:
    """The frame's local variables in gdb's ``info locals`` order."""
    for block in frame.iter_blocks():
        yield from (v for v in block_variables(block) if not v.is_argument)


def info_locals(program: object, frame: SourceFrame) -> str:
    """gdb's ``info locals`` for ``frame`` (``No locals.`` when there are none)."""
    if frame.function is None:
        return "No symbol table info available."
    evaluator = frame_evaluator(program, frame)
    lines = [f"{v.name} = {variable_text(evaluator, v)}" for v in iter_locals(frame)]
    return "\n".join(lines) if lines else "No locals."


def frame_arguments(program: object, frame: SourceFrame) -> list[str]:
    """The ``name=value`` items of a frame line, entry values included."""
    if frame.function is None:
        return []
    evaluator = frame_evaluator(program, frame)
    items = []
    for variable in frame.function.variables:
        if not variable.is_argument:
            continue
        items += _argument(program, evaluator, frame, variable)
    return items


def _argument(program: object, evaluator: Evaluator, frame: SourceFrame, variable: Variable) -> list[str]:
    name = variable.name
    scalar = not isinstance(strip_typedefs(variable.type), (StructType, ArrayType))
    try:
        value: Value | None = evaluator._guarded(lambda: evaluator._variable_value(variable))  # type: ignore[assignment]
        error = None
    except ExpressionError as exc:
        value, error = None, str(exc)
    entry = None
    if scalar and not frame.is_inlined:
        try:
            entry = program.entry_value(variable, frame)  # type: ignore[attr-defined]
        except KvmbenchError:
            entry = None
    if not scalar:
        return [f"{name}=..."]
    text = _argument_text(evaluator, value, error)
    if entry is None:
        return [f"{name}={text}"]
    entry_value = evaluator._guarded(lambda: _entry_as_value(variable, entry))  # type: ignore[arg-type]
    entry_text = evaluator.format(entry_value, top_level=False)  # type: ignore[arg-type]
    if value is not None and not value.is_optimized_out():
        try:
            equal = value.data == entry_value.data  # type: ignore[union-attr]
        except KvmbenchError:
            equal = False
        if equal:
            return [f"{name}={name}@entry={entry_text}"]
    return [f"{name}={text}", f"{name}@entry={entry_text}"]


def _entry_as_value(variable: Variable, number: int) -> Value:
    from kvmbench.expressions.values import value_from_int

    return value_from_int(variable.type, number)


def _argument_text(evaluator: Evaluator, value: Value | None, error: str | None) -> str:
    if value is None:
        return f"<error reading variable: {error}>"
    try:
        return evaluator.format(value, top_level=False)
    except ExpressionError as exc:
        return f"<error reading variable: {exc}>"


def frame_line(program: object, frame: SourceFrame, *, with_level: bool = True) -> str:
    """gdb's ``bt`` line for ``frame`` (``with_level=False``: the stop headline)."""
    parts = []
    if with_level:
        parts.append(f"#{frame.level:<2} ")
    if _show_address(program, frame):
        parts.append(f"0x{frame.pc:016x} in ")
    parts.append(frame.name or "??")
    parts.append(" (" + ", ".join(frame_arguments(program, frame)) + ")")
    if frame.location is not None:
        parts.append(f" at {frame.location.file}:{frame.location.line}")
    return "".join(parts)


def _show_address(program: object, frame: SourceFrame) -> bool:
    if frame.inlined_callee:
        return False
    debug = program.debug  # type: ignore[attr-defined]
    if debug is None or frame.location is None:
        return True
    entry = debug.get_line_entry(frame.lookup_pc)
    return entry is None or frame.pc != entry.address or not entry.is_stmt


def backtrace_text(program: object, frames: list[SourceFrame], stop_reason: str | None = None) -> str:
    """gdb's ``bt``: one line per frame, then ``Backtrace stopped: ...`` if the walk stopped early."""
    lines = [frame_line(program, frame) for frame in frames]
    if stop_reason is not None:
        lines.append(f"Backtrace stopped: {stop_reason}")
    return "\n".join(lines)

