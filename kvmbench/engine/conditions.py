"""Breakpoint conditions: Python expressions over registers, memory and
symbols, compiled once when set and evaluated in-process at each hit.

Names in an expression: register names (``rdi``, with or without gdb's
``$``), ``pc``/``sp``/``fp``, global variables by name (their current value,
read at their size), and the readers ``u8(addr)`` … ``u64(addr)``,
``i32(addr)``, ``i64(addr)``. Example: ``rdi == 5 and u64(sp) > 0x100000``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kvmbench.engine.model import Condition
from kvmbench.engine.views import Registers
from kvmbench.errors import ConditionError, UsageError

if TYPE_CHECKING:
    from kvmbench.engine.session import Session

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class CompiledCondition:
    """A condition ready to evaluate; ``source`` is what the user typed."""

    def __init__(self, condition: Condition) -> None:
        self.source = condition if isinstance(condition, str) else getattr(
            condition, "__name__", repr(condition)
        )
        self._callable: Callable[[Any], object] | None = None
        self._code = None
        if callable(condition):
            self._callable = condition
        elif isinstance(condition, str):
            text = _DOLLAR.sub(r"\1", condition.strip())
            if not text:
                raise ConditionError("empty condition")
            try:
                self._code = compile(text, "<condition>", "eval")
            except SyntaxError as e:
                raise ConditionError(f"condition {condition!r} is not an expression: {e.msg}") from None
        else:
            raise ConditionError(f"a condition is an expression string or a callable, not {condition!r}")

    def evaluate(self, session: Any, names: Mapping[str, object]) -> bool:
        """Truth of the condition; errors become one-line ConditionErrors."""
        try:
            if self._callable is not None:
                return bool(self._callable(session))
            return bool(eval(self._code, {"__builtins__": {}}, names))  # noqa: S307 - the user's own expression
        except ConditionError:
            raise
        except Exception as e:  # the user's code may raise anything
            raise ConditionError(
                f"condition {self.source!r} raised {type(e).__name__}: {e}"
            ) from None


class ConditionNames(dict[str, object]):
    """Lazy names for condition expressions: registers, globals, readers."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self._session = session
        mem = session._mem
        self.update(
            u8=lambda a: mem.read_int(a, 1), u16=lambda a: mem.read_int(a, 2),
            u32=lambda a: mem.read_int(a, 4), u64=lambda a: mem.read_int(a, 8),
            i32=lambda a: mem.read_int(a, 4, signed=True),
            i64=lambda a: mem.read_int(a, 8, signed=True),
        )

    def __missing__(self, name: str) -> object:
        session = self._session
        try:
            return session.target.read_register(Registers.canonical(name))
        except UsageError:
            pass
        symbol = session.symbols.get_by_name(name)
        if symbol is None:
            raise NameError(f"name {name!r} is neither a register nor a symbol")
        size = symbol.size if symbol.size in (1, 2, 4, 8) else 8
        return session._mem.read_int(symbol.address, size)
