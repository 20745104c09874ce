"""The one place where pyelftools' exceptions become kvmbench's.

Every call into pyelftools in this package runs inside
:func:`elftools_errors`, so a truncated or corrupt image surfaces as a
one-line :class:`~kvmbench.errors.SymbolError` naming the file, never as a
pyelftools (or vendored ``construct``) traceback. The original exception
stays attached as ``__cause__`` for whoever debugs kvmbench itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from elftools.common.exceptions import DWARFError, ELFError
from elftools.construct.core import ConstructError

from kvmbench.errors import SymbolError

# pyelftools' own exceptions: their messages describe the input.
_OWN_ERRORS: tuple[type[BaseException], ...] = (ELFError, DWARFError, ConstructError)

# What else pyelftools raises on malformed input: a short read surfaces from
# struct, out-of-range offsets or unknown form codes in corrupt DWARF as
# IndexError/KeyError/ValueError/TypeError from its tables, and some input
# checks are plain asserts. Their messages ("9") need the type beside them.
_PARSER_ERRORS: tuple[type[BaseException], ...] = (
    *_OWN_ERRORS,
    AssertionError,
    TypeError,
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    ValueError,
    UnicodeDecodeError,
)


@contextmanager
def elftools_errors(source: str, what: str = "symbols") -> Iterator[None]:
    """Run a pyelftools call, turning its exceptions into :class:`SymbolError`.

    ``source`` names the file in the message; ``what`` says what was being
    read ("symbols", "DWARF"). Our own :class:`SymbolError` passes through.
    """
    try:
        yield
    except SymbolError:
        raise
    except _PARSER_ERRORS as exc:
        detail = " ".join(str(exc).split())
        if not isinstance(exc, _OWN_ERRORS) or not detail:
            detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise SymbolError(f"{source}: cannot read {what}: {detail}") from exc
