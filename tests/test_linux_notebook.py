"""notebooks/linux-kernel.ipynb runs headless under nbclient on the
kvmbench kernel: it boots Debian's kernel, counts a workload's kernel
functions with the plugin counter, plots them and the callers of one, stops
in do_sys_openat2 with the filename in rsi, and lists tasks with drgn."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kvmbench.backends.linux.image import KernelImageError, debian_kernel
from kvmbench.jupyter.testing import kernelspec_in

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "linux-kernel.ipynb"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.outputs:
        if "text" in out:
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_the_linux_notebook_runs_and_finds_what_it_says(tmp_path: Path) -> None:
    try:
        debian_kernel(fetch=False)
    except KernelImageError as exc:
        pytest.skip(str(exc))
    book = nbformat.read(NOTEBOOK, as_version=4)
    with kernelspec_in(tmp_path / "prefix") as kernel:
        NotebookClient(book, kernel_name=kernel, timeout=180,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = {cell.source: cell for cell in book.cells if cell.cell_type == "code"}

    def output(start: str) -> str:
        return _text(next(cell for source, cell in cells.items() if source.startswith(start)))

    assert "ready" in output("%linux --boot")
    assert "served by plugin counter" in output("traced = ")
    assert any("image/png" in out.get("data", {}) for out in cells[next(s for s in cells if s.startswith("top = "))].outputs)
    assert "stub breakpoint (Z0)" in output("alloc = ")
    assert "breakpoint" in output("%linux cat /proc/version") and "do_sys_openat2" in output("%linux cat /proc/version")
    assert "filename: /proc/version on CPU 0" in output("filename = ")
    assert "do_sys_openat2" in output("bt").splitlines()[0] and "do_syscall_64" in output("bt")
    assert "[kthreadd]" in output("%ps")
