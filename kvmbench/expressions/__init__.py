"""C expressions with gdb's semantics, over a program's DWARF types.

:class:`Evaluator` evaluates ``print``-style expressions in a frame of a
:class:`~kvmbench.symbols.program.Program` and prints values as gdb does;
:class:`ValueHistory` is gdb's ``$1``, ``$``, ``$$n``. Parsing uses
pycparser; gdb's own syntax (``$reg``, ``@``, ``{T} addr``, ``x@entry``) is
rewritten first (:mod:`kvmbench.expressions.syntax`).
"""

from __future__ import annotations

from kvmbench.expressions.evaluator import REGISTERS, Evaluation, Evaluator, ValueHistory
from kvmbench.expressions.format import PRINT_FORMATS, PrintOptions, format_value
from kvmbench.expressions.values import BUILTIN_TYPES, Value

__all__ = [
    "BUILTIN_TYPES",
    "PRINT_FORMATS",
    "REGISTERS",
    "Evaluation",
    "Evaluator",
    "PrintOptions",
    "Value",
    "ValueHistory",
    "format_value",
]
