"""Breakpoint conditions: C expressions with gdb's semantics, or Python callables.

A string condition is what gdb's ``condition N EXPR`` takes: a C
expression over the program's variables in the frame that hit (locals and
arguments of the function, globals, ``$rdi`` and the other registers,
casts to the program's types), evaluated by
:class:`kvmbench.expressions.Evaluator` at each hit and true when its value
is non-zero. ``n == 3``, ``$rdi == 5 && counter > 10``, ``p->next != 0``.
An error while evaluating it (memory that cannot be read, a variable not
in scope) stops the guest with gdb's message, as gdb stops at a condition
it cannot evaluate.

A callable is called with the session at each hit and stops the guest when
it returns something true (Python: ``lambda s: s.regs.rdi == 5``).

Parsing costs more than a hit: a condition's parse is kept per frame shape
(the typedef names it uses and the variables that shadow them), so a hit
costs one frame lookup and one evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pycparser import c_ast

from kvmbench.engine.model import Condition
from kvmbench.errors import ConditionError, ExpressionError, KvmbenchError
from kvmbench.expressions import Evaluator
from kvmbench.symbols.frame import ImageMemory, StaticFrame
from kvmbench.symbols.frames import blocks_to_function

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

#: Parses of one condition remembered (one per frame shape; a few in practice).
_PARSES_KEPT = 16


class _Parses:
    """A condition's parse trees by everything a parse depends on."""

    def __init__(self) -> None:
        self.trees: dict[tuple[object, ...], tuple[c_ast.Node, object, object, object]] = {}


class _ConditionEvaluator(Evaluator):
    """An evaluator that parses each condition once per frame shape."""

    def __init__(self, *args: Any, parses: _Parses, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parses = parses

    def _parse(self, text: str, *, as_type: bool = False) -> c_ast.Node:
        from kvmbench.expressions import syntax
        from kvmbench.expressions.evaluator import REGISTER_NAMES

        rewritten = syntax.rewrite(text, REGISTER_NAMES) if text.strip() else None
        key: tuple[object, ...] = (text, as_type)
        if rewritten is not None:
            typedefs = rewritten.identifiers & set(self.program.typedef_names())  # type: ignore[attr-defined]
            key += (frozenset(typedefs), frozenset(self._shadowing_names(rewritten)) if typedefs else None)
        kept = self._parses.trees.get(key)
        if kept is not None:
            node, self._at_flags, self._at_nodes, self._at_tree = kept  # type: ignore[assignment]
            return node
        node = super()._parse(text, as_type=as_type)
        if len(self._parses.trees) < _PARSES_KEPT:
            self._parses.trees[key] = (node, self._at_flags, self._at_nodes, self._at_tree)
        return node


class _Untyped:
    """A program without symbols, for checking a condition's syntax before
    any frame exists. C needs to know which names are types: names in
    parentheses alone (``(point_t) x``, ``(point_t *) p``, ``sizeof (point_t)``)
    may be typedefs of the program."""

    def __init__(self, typedefs: frozenset[str] = frozenset()) -> None:
        self._typedefs = typedefs

    def typedef_names(self) -> frozenset[str]:
        return self._typedefs

    def find_variable(self, name: str, frame: object = None) -> None:
        return None


_NO_FRAME = StaticFrame(ImageMemory(), None)


class _ScopeAt:
    """The blocks at an address, without a frame: where gdb looks a
    condition's names up when the breakpoint is set."""

    def __init__(self, block: Any) -> None:
        self.block = block

    def iter_blocks(self) -> Any:
        return blocks_to_function(self.block)


def _names_used(tree: c_ast.Node) -> set[str]:
    """The program names an expression's tree refers to (not member names
    after ``.``/``->``, nor kvmbench's reserved names for registers,
    history and convenience variables)."""
    from kvmbench.expressions import syntax

    names: set[str] = set()

    class Visitor(c_ast.NodeVisitor):
        def visit_StructRef(self, node: c_ast.StructRef) -> None:
            self.visit(node.name)

        def visit_ID(self, node: c_ast.ID) -> None:
            if not node.name.startswith(syntax.RESERVED):
                names.add(node.name)

    Visitor().visit(tree)
    return names


def _check_syntax(text: str) -> None:
    """Refuse a string that is no C expression, with gdb's words."""
    try:
        Evaluator(_Untyped(), context=_NO_FRAME)._parse(text)
        return
    except ExpressionError as e:
        error = e
    cast_names = frozenset(re.findall(r"\(\s*([A-Za-z_]\w*)\s*(?=[*)])", text))
    if cast_names:
        try:
            Evaluator(_Untyped(cast_names), context=_NO_FRAME)._parse(text)
            return
        except ExpressionError:
            pass
    raise ConditionError(str(error)) from None


class CompiledCondition:
    """A condition ready to evaluate; ``source`` is what the user typed."""

    def __init__(self, condition: Condition) -> None:
        self.source = condition if isinstance(condition, str) else getattr(
            condition, "__name__", repr(condition)
        )
        self._callable = None
        self._text: str | None = None
        self._parses = _Parses()
        if callable(condition):
            self._callable = condition
        elif isinstance(condition, str):
            text = condition.strip()
            if not text:
                raise ConditionError("Argument required (boolean expression).")
            _check_syntax(text)
            self._text = text
        else:
            raise ConditionError(f"a condition is a C expression string or a callable, not {condition!r}")

    @property
    def expression(self) -> str | None:
        """The C expression, None for a callable."""
        return self._text

    def check_names(self, program: Any, address: int) -> None:
        """Refuse a condition naming something nothing defines at ``address``
        (a local or argument in scope there, a global, a function, an
        enumerator, an ELF symbol), as gdb refuses ``break fib if nn == 3``
        when it is set: ``No symbol "nn" in current context.``. Values are
        still read at each hit, in the frame that hits."""
        if self._text is None:
            return
        try:
            tree = _ConditionEvaluator(program, parses=self._parses)._parse(self._text)
        except ExpressionError as e:
            raise ConditionError(str(e)) from None
        units = getattr(program, "units", None)
        scope = _ScopeAt(units.scope_at(address) if units is not None else None)
        for name in sorted(_names_used(tree)):
            if (program.find_variable(name, scope) is None and program.find_function(name, scope) is None
                    and program.find_enumerator(name, scope) is None
                    and program.symbols.get_by_name(name) is None):
                raise ConditionError(f'No symbol "{name}" in current context.')

    def evaluate(self, session: "Session", names: Mapping[str, object] | None = None) -> bool:
        """Truth of the condition at a hit; errors become one-line ConditionErrors."""
        if self._callable is not None:
            try:
                return bool(self._callable(session))
            except ConditionError:
                raise
            except Exception as e:  # the user's code may raise anything
                raise ConditionError(
                    f"condition {self.source!r} raised {type(e).__name__}: {e}") from None
        assert self._text is not None
        try:
            frames = session.frames
            listed = frames.source_frames(1, past_main=True)
            frame = listed[0] if len(listed) else None
            evaluator = _ConditionEvaluator(frames.program, frame, frames.context, live=True,
                                            parses=self._parses)
            value = evaluator.evaluate(self._text)
            return evaluator._truth(value)  # C's truth of a scalar, as gdb's value_true
        except KvmbenchError as e:  # gdb's own message (ExpressionError is one)
            raise ConditionError(str(e)) from None


class ConditionNames(dict[str, object]):
    """Kept for callers that pass names to :meth:`CompiledCondition.evaluate`
    (a C condition reads the frame itself)."""

    def __init__(self, session: "Session") -> None:
        super().__init__()
        self._session = session
