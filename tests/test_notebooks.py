"""Both notebooks run headless with nbclient on the kvmbench kernel; every
cell succeeds (bar the one tagged raises-exception) and the values they
check hold."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kvmbench.jupyter.testing import kernelspec_in

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

pytestmark = pytest.mark.timeout(120)


def _execute(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    with kernelspec_in(tmp_path / "prefix") as kernel:
        NotebookClient(book, kernel_name=kernel, timeout=60,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    return book


def _outputs(book: nbformat.NotebookNode, source: str) -> str:
    """The text of every output of the first cell whose source is ``source``."""
    cell = next(c for c in book.cells if c.cell_type == "code" and c.source == source)
    parts = []
    for out in cell.outputs:
        if "text" in out:
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "\n".join(parts)


def test_tour_runs_and_counts_fib_15_calls(tmp_path: Path) -> None:
    book = _execute("tour.ipynb", tmp_path)
    set_up = _outputs(book, "break fib\nhbreak main")
    assert "Breakpoint 1 at 0x101eda: file src/fib.c, line 12." in set_up
    assert "Hardware assisted breakpoint 2 at" in set_up and "DR0" in set_up
    first = _outputs(book, "continue")
    assert first.startswith("Breakpoint 2, main (argc=2, argv=0x8000) at src/fib.c:17") and "via DR0" in first
    assert "Breakpoint 1, fib (n=15) at src/fib.c:12" in _outputs(book, "%c")
    assert "$1 = 15\n$2 = 31\n$3 = 0xf\ntype = long (long)" == _outputs(book, "p n\np n * 2 + 1\np/x n\nwhatis fib")
    assert "Value returned is" in _outputs(book, "delete\nfinish")
    assert "1973 calls of fib" in _outputs(book, next(c.source for c in book.cells if c.source.startswith("bp = ")))
    plot = next(c for c in book.cells if "plt.subplots" in c.source)
    assert any("image/png" in out.get("data", {}) for out in plot.outputs)
    watch = next(c for c in book.cells if c.source.startswith("wp = "))
    assert "page trap 12" in "".join(o.get("text", "") for o in watch.outputs)


def test_teaching_notebook_shows_trap_byte_and_slot_exhaustion(tmp_path: Path) -> None:
    book = _execute("teaching-breakpoints.ipynb", tmp_path)
    raw = next(c for c in book.cells if c.source.startswith("addr = "))
    text = "".join(o.get("text", "") for o in raw.outputs)
    assert "raw   f4" in text or "raw   cc" in text
    assert "shown 55" in text
    fifth = _outputs(book, "hbreak puts")
    assert "SlotsExhausted" in fifth and "DR3" in fifth
    assert "hlt trap" in _outputs(book, "break puts\ninfo mechanisms")
