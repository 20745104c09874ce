"""Hit-frequency plots: the data agrees with the engine's counts and the
hit log's columns, figures are Agg figures made without pyplot, and the
hit-frequencies notebook runs on the kvmbench kernel."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from kvmbench import plots
from kvmbench.errors import UsageError

from conftest import fib_calls

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def traced_fib(open_guest):
    session = open_guest("fib", [12])
    session.breakpoints.trace("fib")
    session.breakpoints.trace("main", kind="hw")
    assert session.cont().reason.value == "exited"
    return session


def test_per_request_counts_are_the_engines(traced_fib):
    data = plots.per_request_data(traced_fib)
    assert data.labels == ("#1 fib", "#2 main")
    assert data.values == (fib_calls(12), 1) == tuple(bp.hit_count for bp in traced_fib.breakpoints)


def test_callers_are_symbolized_return_addresses(traced_fib):
    data = plots.callers_data(traced_fib, 1)
    rows = traced_fib.hits.rows(1)
    expected = Counter(traced_fib.symbols.format_address(c) for c in rows.caller)
    assert dict(zip(data.labels, data.values)) == dict(expected)
    assert {label.split("+")[0] for label in data.labels} == {"fib", "main"}
    assert sum(data.values) == fib_calls(12)


def test_writers_of_a_watched_variable(open_guest):
    session = open_guest("counter", [30])
    wp = session.watchpoints.add("counter", tracepoint=True)
    session.cont()
    data = plots.writers_data(session, wp.number)
    assert sum(data.values) == wp.hit_count
    assert all(not label.startswith("0x") for label in data.labels)


def test_over_time_covers_every_hit(traced_fib):
    data = plots.over_time_data(traced_fib, [1], bins=20)
    ((name, xs, ys),) = data.series
    assert name == "#1 fib" and len(xs) == len(ys) == 20
    width = xs[1] - xs[0]
    assert round(sum(y * width for y in ys)) == fib_calls(12)


def test_figures_are_agg_without_pyplot(traced_fib):
    import sys

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    had_pyplot = "matplotlib.pyplot" in sys.modules
    figures = [plots.hits_per_request(traced_fib), plots.hits_over_time(traced_fib),
               plots.callers(traced_fib, 1), traced_fib.hits.plot("per-request"),
               traced_fib.hits.plot("callers", 1, symbolize=traced_fib.symbols.format_address)]
    for fig in figures:
        assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
    assert plots.png(plots.per_request_data(traced_fib)).startswith(b"\x89PNG")
    # a bare hit log names requests by number and addresses in hex
    assert plots.per_request_data(traced_fib.hits).labels == ("#1", "#2")
    with pytest.raises(UsageError, match="unknown plot kind"):
        traced_fib.hits.plot("pie")


def test_empty_log_draws_a_placeholder(open_guest):
    session = open_guest("fib", [3])
    assert plots.per_request_data(session).values == ()
    assert plots.over_time_data(session).series == ()
    assert plots.png(plots.per_request_data(session)).startswith(b"\x89PNG")


@pytest.mark.timeout(120)
def test_hit_frequencies_notebook_runs(tmp_path: Path, caps) -> None:
    import nbformat
    from nbclient import NotebookClient

    from kvmbench.jupyter.testing import kernelspec_in

    book = nbformat.read(NOTEBOOKS / "hit-frequencies.ipynb", as_version=4)
    with kernelspec_in(tmp_path / "prefix") as kernel:
        NotebookClient(book, kernel_name=kernel, timeout=60,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = sum(1 for c in book.cells if c.cell_type == "code"
                 for o in c.outputs if "image/png" in o.get("data", {}))
    assert images >= 5
    counts = next(c for c in book.cells if c.source.startswith("counts = "))
    text = "".join(o.get("text", "") for o in counts.outputs)
    assert "'compare':" in text and "'swap':" in text
