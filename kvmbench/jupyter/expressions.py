"""gdb-style expressions for ``p`` and ``x``: ``$rip``, symbols, numbers and
integer arithmetic, ``*ADDR`` (a 64-bit load), evaluated without ``eval``."""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable

from kvmbench.errors import UsageError

_BINARY: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Div: operator.floordiv, ast.Mod: operator.mod,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}
_UNARY: dict[type, Callable[[int], int]] = {
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert,
}
_REGISTER = re.compile(r"\$([A-Za-z_]\w*)")
_OPERAND = re.compile(r"\s*([\w.]+)")


def _unary_stars(source: str) -> str:
    """gdb's unary ``*`` (a load) as a ``__deref__(...)`` call: a ``*`` is
    unary where no operand precedes it."""
    out: list[str] = []
    i = 0
    while i < len(source):
        ch = source[i]
        before = "".join(out).rstrip()
        if ch == "*" and (not before or before[-1] in "+-*/%&|^~(,<>"):
            rest = source[i + 1:].lstrip()
            if rest.startswith("("):
                out.append("__deref__")
                i = len(source) - len(rest)
                continue
            match = _OPERAND.match(rest)
            if match is None:
                raise UsageError(f"nothing to dereference in {source!r}")
            out.append(f"__deref__({match.group(1)})")
            i = len(source) - len(rest) + match.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def evaluate(text: str, register: Callable[[str], int], symbol: Callable[[str], int],
             load: Callable[[int], int]) -> int:
    """The value of ``text``; ``register('rip')``, ``symbol('fib')`` and
    ``load(address)`` supply the guest's values."""
    source = text.strip()
    if not source:
        raise UsageError("an expression is required")
    source = _REGISTER.sub(r"__reg__\1", source)
    source = _unary_stars(source)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise UsageError(f"cannot parse expression {text.strip()!r}") from None

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        if isinstance(node, ast.Name):
            if node.id.startswith("__reg__"):
                return register(node.id[len("__reg__"):])
            return symbol(node.id)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "__deref__" and len(node.args) == 1):
            return load(walk(node.args[0]))
        raise UsageError(f"unsupported expression {text.strip()!r}")

    try:
        return walk(tree)
    except ZeroDivisionError:
        raise UsageError("division by zero") from None
