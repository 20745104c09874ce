"""gdb-style expressions for ``p`` and ``x``: ``$rip``, symbols, numbers and
integer arithmetic, ``*ADDR`` (a 64-bit load), evaluated without ``eval``.

Arithmetic is 64-bit, as the guest's: every result wraps, so ``1 << 1000``
costs nothing. Hostile input (very deep nesting, very long expressions)
is refused with a one-line error in time linear in its length."""

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
_MASK64 = (1 << 64) - 1
#: Longest expression taken: a line a person typed.
MAX_EXPRESSION_LENGTH = 10_000
_MAX_DEPTH = 100


def _unary_stars(source: str) -> str:
    """gdb's unary ``*`` (a load) as a ``__deref__(...)`` call: a ``*`` is
    unary where no operand precedes it."""
    out: list[str] = []
    last = ""  # the last non-blank character written so far
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "*" and (not last or last in "+-*/%&|^~(,<>"):
            rest = source[i + 1:].lstrip()
            if rest.startswith("("):
                out.append("__deref__")
                last = "_"
                i = len(source) - len(rest)
                continue
            match = _OPERAND.match(rest)
            if match is None:
                raise UsageError(f"nothing to dereference in {source!r}")
            out.append(f"__deref__({match.group(1)})")
            last = ")"
            i = len(source) - len(rest) + match.end()
            continue
        out.append(ch)
        if not ch.isspace():
            last = ch
        i += 1
    return "".join(out)


def evaluate(text: str, register: Callable[[str], int], symbol: Callable[[str], int],
             load: Callable[[int], int]) -> int:
    """The value of ``text``; ``register('rip')``, ``symbol('fib')`` and
    ``load(address)`` supply the guest's values."""
    source = text.strip()
    if not source:
        raise UsageError("an expression is required")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise UsageError(f"expression of {len(source)} characters is too long "
                         f"(at most {MAX_EXPRESSION_LENGTH})")
    if source.count("(") > _MAX_DEPTH and _depth(source) > _MAX_DEPTH:
        raise UsageError(f"expression nested more than {_MAX_DEPTH} deep")
    source = _REGISTER.sub(r"__reg__\1", source)
    source = _unary_stars(source)
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError):
        raise UsageError(f"cannot parse expression {_shown(text)}") from None
    except (RecursionError, MemoryError):
        raise UsageError(f"expression nested too deeply: {_shown(text)}") from None

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value & _MASK64
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, (ast.LShift, ast.RShift)) and not 0 <= right < 64:
                return 0  # a 64-bit shift by 64 or more (or a negative count) leaves nothing
            return _BINARY[type(node.op)](left, right) & _MASK64
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand)) & _MASK64
        if isinstance(node, ast.Name):
            if node.id.startswith("__reg__"):
                return register(node.id[len("__reg__"):])
            return symbol(node.id)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "__deref__" and len(node.args) == 1):
            return load(walk(node.args[0]))
        raise UsageError(f"unsupported expression {_shown(text)}")

    try:
        return walk(tree)
    except ZeroDivisionError:
        raise UsageError("division by zero") from None
    except RecursionError:
        raise UsageError(f"expression nested too deeply: {_shown(text)}") from None


def _depth(source: str) -> int:
    depth = deepest = 0
    for ch in source:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def _shown(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 60 else text[:57] + "...")
