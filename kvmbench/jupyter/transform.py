"""The input transformer that turns gdb-style lines into Python.

IPython magics are synchronous, so a ``%continue`` magic would hold the
kernel's event loop for as long as the guest runs: no widget comm message,
no output. Run-control lines therefore become a top-level
``await _kvmbench_run(NAME, ARGS)`` (ipykernel runs top-level await on its
loop; the engine call goes to a worker thread). Other command lines become
``_kvmbench_command(NAME, ARGS)`` calls, which need no magic escaping, so
``$rsp`` is never variable-expanded by IPython.

Which lines are commands:

- ``%name ...`` for a known command, or every line of a ``%%gdb`` cell;
- a bare gdb line (``break fib``, ``x/4gx $rsp``) when the cell is not valid
  Python: every line whose first word is a known command;
- an unindented line that is a single known command word (``bt``, ``c``,
  ``si``) naming nothing in the user namespace (IPython's automagic rule).
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Callable, Mapping

from kvmbench.jupyter.commands import COMMANDS

_MAGIC_LINE = re.compile(r"^(\s*)%([A-Za-z_]\w*)(.*)$")
_BARE_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*)(.*)$")
_DEFINES_FUNCTION = re.compile(r"^\s*(async\s+)?(def|class|lambda)\b", re.M)


def _call(indent: str, name: str, args: str, can_await: bool) -> str:
    entry = COMMANDS[name]
    rest = args if args.startswith("/") else args.strip()
    if entry.runs_guest and can_await:
        return f"{indent}await _kvmbench_run({entry.name!r}, {rest!r})\n"
    return f"{indent}_kvmbench_command({name!r}, {rest!r})\n"


def _rewrite_line(line: str, *, bare: bool, can_await: bool) -> str:
    match = _MAGIC_LINE.match(line) or (_BARE_LINE.match(line) if bare else None)
    if match is None:
        return line
    indent, name, args = match.groups()
    if bare and indent and not line.lstrip().startswith("%"):
        return line  # indented: part of Python (a loop's 'continue'), not a gdb line
    if name not in COMMANDS or (args and not (args[0].isspace() or args[0] == "/")):
        return line
    return _call(indent, name, args.rstrip("\n"), can_await)


def _compiles(source: str) -> bool:
    """Whether ``source`` is Python (compiled, not just parsed: a lone
    ``continue`` parses, yet is no statement outside a loop)."""
    try:
        compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def make_transformer(user_ns: Mapping[str, object]) -> Callable[[list[str]], list[str]]:
    """A cleanup transformer for ``shell.input_transformers_cleanup``."""

    def is_command_word(line: str) -> bool:
        """A line that is one known command word (``bt``, ``c``, ``finish``)
        naming nothing in the user namespace: IPython's automagic rule, per line."""
        word = line.rstrip()
        return (word in COMMANDS and word not in user_ns and not hasattr(builtins, word))

    def transform(lines: list[str]) -> list[str]:
        if not lines:
            return lines
        source = "".join(lines)
        if lines[0].strip().startswith("%%gdb"):
            body = [_rewrite_line(line, bare=True, can_await=True)
                    if line.strip() and not line.strip().startswith("#") else line
                    for line in lines[1:]]
            return body or ["pass\n"]
        can_await = _DEFINES_FUNCTION.search(source) is None
        out = [_rewrite_line(line, bare=False, can_await=can_await)
               if not is_command_word(line) else _call("", line.strip(), "", can_await)
               for line in lines]
        if _compiles("".join(out)):
            return out
        # Not Python: take lines that are not Python on their own as gdb lines.
        return [_rewrite_line(line, bare=True, can_await=can_await)
                if not _compiles(line.strip() or "pass") else line
                for line in out]

    return transform
