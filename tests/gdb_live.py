"""Live gdb answers: Debian's gdb driving a guest through kvmbench's GDB
server, next to kvmbench's own command layer on the same guest.

:func:`gdb_answers` runs ``gdb -batch`` with ``target remote`` to a
:class:`kvmbench.gdbserver.GdbServer` serving a fresh session of the guest
(in this process, on a thread), one ``-ex`` per command with a marker
after each, so every command has its own answer. :func:`our_answer` is
kvmbench's answer to the same line in a :class:`Workbench`. :func:`same`
compares them after taking out what only one side prints by design (the
lines kvmbench adds about how a request is served; gdb's name for the
remote target in the exit line).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

import kvmbench
from kvmbench.errors import KvmbenchError
from kvmbench.gdbserver import GdbServer
from kvmbench.jupyter.commands import Workbench
from kvmbench.jupyter.display import StopView

_MARK = "@@kvmbench-live@@"
GUEST_SOURCES = Path(kvmbench.__file__).resolve().parent / "guests"


@contextmanager
def served(image: Path | str, args: Sequence[str]) -> Iterator[int]:
    """A GDB server over a new session of the guest; yields its port."""
    session = kvmbench.open(image, list(args))
    server = GdbServer(session, "127.0.0.1", 0, kill_ends_session=True)
    thread = threading.Thread(target=server.serve_forever, name="gdbserver", daemon=True)
    thread.start()
    try:
        yield server.address[1]
    finally:
        server.stop()
        thread.join(10)
        if session.state.value == "running":
            session.pause()
        try:
            session.close()
        except KvmbenchError:
            pass


def gdb_answers(image: Path, args: Sequence[str], commands: Sequence[str], *, cwd: Path) -> list[str]:
    """What gdb prints for each command, driving the guest through kvmbench's server."""
    gdb = "gdb"
    with served(image, args) as port:
        argv = [gdb, "-nx", "-batch", "-ex", "set width 0", "-ex", "set height 0",
                "-ex", "set confirm off", "-ex", f"target remote 127.0.0.1:{port}",
                "-ex", f"echo {_MARK}\\n"]
        for command in commands:
            argv += ["-ex", command, "-ex", f"echo {_MARK}\\n"]
        result = subprocess.run([*argv, str(image)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=300, check=False, cwd=cwd,
                                env={**os.environ, "LC_ALL": "C"})
    chunks = result.stdout.split(_MARK + "\n")[1:]
    answers = [chunk[:-1] if chunk.endswith("\n") else chunk for chunk in chunks[:len(commands)]]
    if len(answers) != len(commands):
        pytest.fail(f"gdb answered {len(answers)} of {len(commands)} commands:\n{result.stdout[-3000:]}")
    return answers


def our_answer(wb: Workbench, command: str) -> str:
    """kvmbench's text for one command line (its one-line error when it fails)."""
    try:
        result = wb.execute(command)
    except KvmbenchError as exc:
        return str(exc)
    if result is None:
        return ""
    if isinstance(result, StopView):
        return "\n".join(result.lines)
    return result.text() if hasattr(result, "text") else str(result)


#: What kvmbench prints and batch gdb does not: how a request is served
#: (kvmbench's own), and gdb's lines for a terminal (from_tty) that gdb
#: -batch leaves out: "Run till exit from", "(More stack frames follow...)".
_OURS_ONLY = re.compile(r"^(\(served by .*\)|\tserved by .*|Run till exit from .*|"
                        r"\(\d+ bytes at 0x[0-9a-f]+, served by .*\)|\(More stack frames follow\.\.\.\))$")


def normalise(text: str, *, ours: bool) -> list[str]:
    """Lines to compare: blank lines out (gdb separates stops by one), the
    lines only kvmbench prints by design out, the inferior's name as one."""
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if ours and _OURS_ONLY.match(line):
            continue
        line = re.sub(r"\[Inferior 1 \((Remote target|guest \S+)\)", "[Inferior 1 (guest)", line)
        lines.append(line.rstrip())
    return lines


def compare(commands: Sequence[str], theirs: Sequence[str], ours: Sequence[str]) -> list[str]:
    """The commands whose answers differ, with both answers."""
    differences = []
    for command, gdb_text, our_text in zip(commands, theirs, ours, strict=True):
        a, b = normalise(gdb_text, ours=False), normalise(our_text, ours=True)
        if a != b:
            differences.append(f"{command!r}:\n  gdb:  {a!r}\n  ours: {b!r}")
    return differences
