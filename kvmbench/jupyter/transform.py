"""The input transformer that routes each line of a cell: a gdb command or Python.

IPython magics are synchronous, so a ``%continue`` magic would hold the
kernel's event loop for as long as the guest runs: no widget comm message,
no output. Run-control lines therefore become a top-level
``await _kvmbench_run(NAME, ARGS)`` (ipykernel runs top-level await on its
loop; the engine call goes to a worker thread). Other command lines become
``_kvmbench_command(NAME, ARGS)`` calls, which need no magic escaping, so
``$rsp`` is never variable-expanded by IPython.

How a line is read (each top-level line on its own; comments and blank
lines never change how the next line is read):

- ``%name ...`` for a known command, and every line of a ``%%gdb`` cell,
  are commands;
- ``python STATEMENT`` (gdb's own command for Python, also ``py``) is Python;
- a line that starts with a command word (``c``, ``n``, ``p x``, ``list``,
  ``x/4gx $sp``, ``info frame``; a word or a unique prefix of 3 letters or
  more) is that command, whatever Python names exist: after ``c = 5``,
  ``c`` continues. Python stays reachable: a line that *uses* the name as
  Python (``c = 5``, ``c += 1``, ``c.attr``, ``c[0]``, ``print(c)``,
  ``list(range(3))``, ``n, m = 1, 2``) is Python, and so is anything after
  ``python``;
- other lines are Python; a line that is neither Python nor a command gets
  gdb's ``Undefined command: "foo".  Try "help".``;
- lines inside a Python block (indented) or inside open brackets, strings
  or backslash continuations belong to the Python statement they continue;
- ``commands N`` collects the lines up to ``end`` as breakpoint N's
  command list.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
from collections.abc import Callable, Mapping

from kvmbench.jupyter.commands import COMMANDS, find

_MAGIC_LINE = re.compile(r"^(\s*)%([A-Za-z_][\w-]*)(.*)$")
_BARE_LINE = re.compile(r"^([A-Za-z_][\w-]*)(.*)$")
_DEFINES_FUNCTION = re.compile(r"^\s*(async\s+)?(def|class|lambda)\b", re.M)
#: What after a command word makes the line Python: a call, attribute,
#: subscript, assignment (not ==), augmented assignment, annotation, tuple.
_PYTHON_USE = re.compile(r"^(\(|\.|\[|=(?!=)|[-+*/%&|^@<>]{1,2}=|//=|\*\*=|>>=|<<=|:(?!:)|,)")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_IPYTHON_SYNTAX = re.compile(r"^(\s*[!?]|.*\?\??\s*$)")
_PYTHON_ESCAPE = re.compile(r"^(python|py)(\s+|$)(.*)$", re.S)


def _command_word(word: str) -> str | None:
    """The command a line's first word names, for routing bare lines:
    a spelling, or a unique prefix of at least three letters."""
    if word in COMMANDS:
        return word
    if len(word) >= 3:
        entry = find(word)
        if entry is not None:
            return word
    return None


def _call(indent: str, name: str, args: str, can_await: bool) -> str:
    entry = COMMANDS.get(name) or find(name)
    rest = args if args.startswith("/") else args.strip()
    if entry is not None and entry.runs_guest and can_await:
        return f"{indent}await _kvmbench_run({entry.name!r}, {rest!r})\n"
    return f"{indent}_kvmbench_command({name!r}, {rest!r})\n"


def _compiles(source: str) -> bool:
    """Whether ``source`` is Python (compiled, not just parsed: a lone
    ``continue`` parses, yet is no statement outside a loop)."""
    try:
        compile(source, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def _opens(line: str, state: list[str]) -> None:
    """Track open brackets and strings across lines (``state`` is the stack)."""
    i = 0
    while i < len(line):
        top = state[-1] if state else ""
        ch = line[i]
        if top in ('"""', "'''"):
            if line.startswith(top, i):
                state.pop()
                i += 3
                continue
            i += 2 if ch == "\\" else 1
            continue
        if top in ('"', "'"):
            if ch == "\\":
                i += 2
                continue
            if ch == top:
                state.pop()
            i += 1
            continue
        if ch == "#":
            return
        if line.startswith(('"""', "'''"), i):
            state.append(line[i:i + 3])
            i += 3
            continue
        if ch in "\"'":
            state.append(ch)
        elif ch in "([{":
            state.append(ch)
        elif ch in ")]}" and state:
            state.pop()
        i += 1
    # An unterminated one-quote string ends at the line's end (a syntax error Python reports).
    while state and state[-1] in ('"', "'"):
        state.pop()


def _is_python_use(word: str, rest: str) -> bool:
    """Whether the text after a command word uses the word as a Python name:
    called, indexed or an attribute taken right after it (``print(x)``,
    ``c.attr``), assigned, or unpacked (``c = 5``, ``n += 1``, ``n, m = f()``)."""
    if rest[:1] in ("(", ".", "["):
        return True
    return bool(_PYTHON_USE.match(rest.lstrip())) and not rest.lstrip().startswith(("(", ".", "["))


def route_line(line: str, *, can_await: bool, continuing: bool,
               defined: Callable[[str], bool] = lambda name: True) -> str | None:
    """The Python for one top-level line (None: leave the line as it is)."""
    stripped = line.rstrip("\n")
    if continuing or not stripped.strip() or stripped.lstrip().startswith("#"):
        return None
    magic = _MAGIC_LINE.match(stripped)
    if magic is not None:
        indent, name, args = magic.groups()
        if (name in COMMANDS or find(name) is not None) and (not args or args[0].isspace() or args[0] == "/"):
            return _call(indent, name, args, can_await)
        return None
    if stripped[:1].isspace():
        return None  # inside a Python block: a loop's `continue` is Python's
    if _IPYTHON_SYNTAX.match(stripped):
        return None  # IPython's own: `name?`, `?name`, `!shell`
    escape = _PYTHON_ESCAPE.match(stripped)
    if escape is not None and escape.group(3).strip():
        return escape.group(3) + "\n"
    bare = _BARE_LINE.match(stripped)
    if bare is None:
        return None
    word, rest = bare.groups()
    if keyword.iskeyword(word) or keyword.issoftkeyword(word):
        # `break fib`, `continue`, `del 2` are gdb's at the top level, where
        # Python's break/continue cannot be; `del x` stays Python's.
        if word in COMMANDS and not _compiles(stripped.strip()):
            return _call("", word, rest, can_await)
        return None
    name = _command_word(word)
    if name is not None and (rest == "" or rest[0].isspace() or rest[0] == "/"):
        if not _is_python_use(word, rest):
            return _call("", name, rest, can_await)
        return None
    if name is not None and _is_python_use(word, rest):
        return None
    if not rest.strip() and not defined(word):
        # A lone word that names nothing: a misspelt command, not a NameError.
        return f"_kvmbench_command(None, {stripped.strip()!r})\n"
    if not _compiles(stripped.strip()) and not _incomplete(stripped):
        # Neither Python nor a command: gdb's answer, when the line runs.
        return f"_kvmbench_command(None, {stripped.strip()!r})\n"
    return None


def _incomplete(line: str) -> bool:
    """A line that starts a multi-line Python statement (``def f():``, ``x = (``)."""
    import codeop

    try:
        return codeop.compile_command(line + "\n", "<cell>", "exec") is None
    except (SyntaxError, ValueError, OverflowError):
        return line.rstrip().endswith((":", "\\", "(", "[", "{", ","))


def make_transformer(user_ns: Mapping[str, object]) -> Callable[[list[str]], list[str]]:
    """A cleanup transformer for ``shell.input_transformers_cleanup``."""

    def transform(lines: list[str]) -> list[str]:
        if not lines:
            return lines
        if lines[0].strip().startswith("%%gdb"):
            return _gdb_cell(lines[1:]) or ["pass\n"]
        can_await = _DEFINES_FUNCTION.search("".join(lines)) is None
        out: list[str] = []
        state: list[str] = []
        continuing = False
        seen: set[str] = set()  # names the cell's Python lines so far mention

        def defined(name: str) -> bool:
            return name in user_ns or name in seen or hasattr(builtins, name)

        i = 0
        while i < len(lines):
            line = lines[i]
            routed = route_line(line, can_await=can_await, continuing=continuing or bool(state),
                                defined=defined)
            if routed is not None and _is_commands(line):
                body, i = _command_list(lines, i)
                out.append(_call("", "commands", body, can_await))
                continue
            if routed is not None:
                out.append(routed)
                continuing = False
            else:
                out.append(line if line.endswith("\n") else line + "\n")
                seen.update(_IDENTIFIER.findall(line))
                _opens(line.rstrip("\n"), state)
                continuing = line.rstrip("\n").endswith("\\")
            i += 1
        return out

    return transform


def _is_commands(line: str) -> bool:
    word = line.strip().lstrip("%").split(None, 1)[0] if line.strip() else ""
    entry = find(word) if word else None
    return entry is not None and entry.name == "commands"


def _command_list(lines: list[str], i: int) -> tuple[str, int]:
    """``commands N`` and its lines up to ``end``: one argument, lines joined."""
    head = lines[i].strip().lstrip("%")
    args = head.split(None, 1)[1] if len(head.split(None, 1)) > 1 else ""
    body = [args]
    i += 1
    while i < len(lines):
        text = lines[i].strip()
        i += 1
        body.append(text)
        if text == "end":
            break
    return "\n".join(body), i


def _gdb_cell(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        text = line.strip()
        if not text or text.startswith("#"):
            out.append(line if line.endswith("\n") else line + "\n")
            i += 1
            continue
        if _is_commands(line):
            body, i = _command_list(lines, i)
            out.append(_call("", "commands", body, True))
            continue
        match = _BARE_LINE.match(text.lstrip("%"))
        if match is None:
            out.append(f"_kvmbench_command(None, {text!r})\n")
        else:
            word, rest = match.groups()
            escape = _PYTHON_ESCAPE.match(text)
            if escape is not None and escape.group(3).strip():
                out.append(escape.group(3).strip() + "\n")
            elif find(word) is not None:
                out.append(_call("", word, rest, True))
            else:
                out.append(f"_kvmbench_command(None, {text!r})\n")
        i += 1
    return out
