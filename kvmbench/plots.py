"""Hit-frequency plots: plain matplotlib figures from a session's hit log.

Two steps, so a live view can do the cheap one often and the costly one
elsewhere: ``*_data`` functions read the hit log into small frozen values
(:class:`BarData`, :class:`SeriesData`) that pickle in microseconds, and
:func:`figure` / :func:`png` draw them. The debugger panel gathers data on
the kernel's loop and draws in a worker process, so drawing never competes
with the vCPU thread for the GIL.

Figures are made with :class:`matplotlib.figure.Figure` on an Agg canvas:
no pyplot, no global figure registry, nothing to close.

>>> s = kvmbench.open("fib", ["12"]); s.breakpoints.trace("fib"); s.cont()
>>> fig = kvmbench.plots.callers(s, 1)      # or s.hits.plot("callers", 1)
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kvmbench.engine.hitlog import HitLog
    from kvmbench.engine.session import Session

KINDS = ("per-request", "over-time", "callers", "writers")

Symbolize = Callable[[int], str]


@dataclass(frozen=True)
class BarData:
    """Horizontal bars: one label and one count each, largest first."""

    title: str
    labels: tuple[str, ...]
    values: tuple[int, ...]
    xlabel: str = "hits"
    empty: str = "no hits yet"


@dataclass(frozen=True)
class SeriesData:
    """Lines over a shared kind of x axis: (name, xs, ys) each."""

    title: str
    series: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...]
    xlabel: str = "seconds since the first hit"
    ylabel: str = "hits per second"
    empty: str = "no hits yet"


PlotData = Union[BarData, SeriesData]


# --- where the data comes from -------------------------------------------------


@dataclass(frozen=True)
class _Source:
    log: "HitLog"
    symbolize: Symbolize
    labels: Mapping[int, str]


def _source(source: "Session | HitLog", symbolize: Symbolize | None = None,
            labels: Mapping[int, str] | None = None) -> _Source:
    """The hit log plus how to name addresses and requests: a session knows
    its symbols and breakpoints; a bare log names them by number."""
    from kvmbench.engine.hitlog import HitLog

    if isinstance(source, HitLog):
        return _Source(source, symbolize or (lambda a: f"{a:#x}"), labels or {})
    if labels is None:
        labels = request_labels(source)
    return _Source(source.hits, symbolize or source.symbols.format_address, labels)


def request_labels(session: "Session") -> dict[int, str]:
    """``{1: "#1 fib", 2: "#2 counter (watch)"}`` for every live request."""
    out = {bp.number: f"#{bp.number} {bp.location}" for bp in session.breakpoints}
    out.update({wp.number: f"#{wp.number} {wp.location} ({wp.access.value})"
                for wp in session.watchpoints})
    return out


def per_request_data(source: "Session | HitLog", *, labels: Mapping[int, str] | None = None,
                     totals: Mapping[int, int] | None = None) -> BarData:
    """Total hits of each breakpoint and watchpoint (exact, not just the ring)."""
    src = _source(source, labels=labels)
    counts = dict(totals) if totals is not None else dict(src.log.totals)  # one C-level copy
    numbers = sorted((n for n in counts if n > 0 and counts[n]), key=lambda n: (-counts[n], n))
    return BarData("hits per breakpoint / watchpoint",
                   tuple(src.labels.get(n, f"#{n}") for n in numbers),
                   tuple(counts[n] for n in numbers))


def over_time_data(source: "Session | HitLog", numbers: Iterable[int] | None = None, *,
                   bins: int = 40, labels: Mapping[int, str] | None = None) -> SeriesData:
    """Hit rate of each request over the time the ring covers, in ``bins`` bins."""
    src = _source(source, labels=labels)
    rows = src.log.rows()
    wanted = set(numbers) if numbers is not None else None
    if not len(rows):
        return SeriesData("hits over time", ())
    # Rows are in the order recorded: an in-guest probe's hits come in at a
    # drain, with the times they happened, after later exits' hits.
    t0, t1 = min(rows.time_ns), max(rows.time_ns)
    width = max((t1 - t0) / bins, 1.0)
    per: dict[int, list[int]] = {}
    for number, when in zip(rows.number, rows.time_ns):
        if number <= 0 or (wanted is not None and number not in wanted):
            continue
        counts = per.setdefault(number, [0] * bins)
        counts[min(int((when - t0) / width), bins - 1)] += 1
    xs = tuple((k + 0.5) * width / 1e9 for k in range(bins))
    series = tuple((src.labels.get(n, f"#{n}"), xs, tuple(c * 1e9 / width for c in per[n]))
                   for n in sorted(per))
    return SeriesData("hits over time", series)


def _by_address(title: str, addresses: Iterable[int], symbolize: Symbolize, top: int,
                xlabel: str, empty: str) -> BarData:
    counts = Counter(addresses)
    named: Counter[str] = Counter()
    for address, n in counts.items():
        named[symbolize(address) if address else "?"] += n
    ranked = named.most_common(top)
    if len(named) > top:
        ranked.append((f"({len(named) - top} others)", sum(named.values()) - sum(n for _, n in ranked)))
    return BarData(title, tuple(k for k, _ in ranked), tuple(v for _, v in ranked), xlabel, empty)


def callers_data(source: "Session | HitLog", number: int, *, top: int = 12,
                 symbolize: Symbolize | None = None,
                 labels: Mapping[int, str] | None = None) -> BarData:
    """Where calls of breakpoint ``number``'s function come from: the return
    addresses the hit log recorded, symbolized (``main+23``)."""
    src = _source(source, symbolize, labels)
    rows = src.log.rows(number)
    return _by_address(f"callers of {src.labels.get(number, f'#{number}')}", rows.caller,
                       src.symbolize, top, "calls", "no calls recorded")


def writers_data(source: "Session | HitLog", number: int, *, top: int = 12,
                 symbolize: Symbolize | None = None,
                 labels: Mapping[int, str] | None = None) -> BarData:
    """Which instructions wrote watchpoint ``number``'s bytes (the writers' pcs)."""
    src = _source(source, symbolize, labels)
    rows = src.log.rows(number)
    return _by_address(f"writers of {src.labels.get(number, f'#{number}')}", rows.pc,
                       src.symbolize, top, "writes", "no writes recorded")


# --- drawing ---------------------------------------------------------------------


def figure(data: PlotData, *, width: float = 5.5, height: float = 2.8, dpi: int = 80) -> "Figure":
    """Draw ``data`` on a new Agg-backed Figure (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Margins by hand: a constrained layout would double the cost of drawing
    # (about 45 ms against 85 ms a figure on a slow host), and the panel
    # draws twice a second while the guest runs.
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    if isinstance(data, BarData):
        widest = max((len(label) for label in data.labels), default=0)
        left = min(0.5, 0.04 + widest * 8 * 0.6 / 72 / width)
    else:
        left = 0.13
    fig.subplots_adjust(left=left, right=0.95, bottom=0.17, top=0.88)
    ax = fig.add_subplot()
    ax.set_title(data.title, fontsize=10)
    if isinstance(data, BarData):
        if data.values:
            positions = range(len(data.values))
            ax.barh(positions, data.values, color="#1565c0")
            ax.set_yticks(list(positions), data.labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(data.xlabel, fontsize=8)
            for y, v in zip(positions, data.values):
                ax.annotate(str(v), (v, y), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=7)
            ax.margins(x=0.15)
        else:
            _empty(ax, data.empty)
    else:
        if data.series:
            for name, xs, ys in data.series:
                ax.plot(xs, ys, label=name, linewidth=1.2)
            ax.set_xlabel(data.xlabel, fontsize=8)
            ax.set_ylabel(data.ylabel, fontsize=8)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=7, loc="best")
        else:
            _empty(ax, data.empty)
    ax.tick_params(labelsize=7)
    return fig


def _empty(ax: object, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888")  # type: ignore[attr-defined]
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]


def _axis_end(largest: int) -> float:
    """An x-axis end with room for ``largest`` and its number: 1, 2 or 5
    times a power of ten, at least 1.15 times it (what margins give)."""
    want = max(largest * 1.15, 1.0)
    power = 10.0 ** math.floor(math.log10(want))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= want)


class LiveBars:
    """PNGs of bar plots whose values change from one drawing to the next
    (the panel's live plot) at about a fifth of :func:`png`'s cost.

    Matplotlib's blitting (its "Faster rendering by using blitting"
    guide): the figure, its axes, ticks and labels are drawn once with the
    bars and their numbers left out (``animated``), and a drawing restores
    that background and draws only the bars and numbers over it, then
    encodes the pixels (PNG at zlib level 1). New labels, or a value that
    outgrows the axis, draw the figure anew. Other plots go to :func:`png`.
    """

    def __init__(self, **size: float) -> None:
        self._size = size
        self._key: tuple[object, ...] | None = None
        self._limit = 0.0
        self._figure: Figure | None = None
        self._bars: list[object] = []
        self._numbers: list[object] = []
        self._background: object = None

    def png(self, data: PlotData) -> bytes:
        if not isinstance(data, BarData) or not data.values:
            return png(data, **self._size)
        key = (data.title, data.labels, data.xlabel)
        if key != self._key or max(data.values) * 1.15 > self._limit:
            self._build(data)
        return self._redraw(data)

    def _build(self, data: BarData) -> None:
        self._limit = _axis_end(max(data.values))
        fig = figure(data, **self._size)
        ax = fig.axes[0]
        ax.set_xlim(0, self._limit)
        self._bars = list(ax.patches)
        self._numbers = list(ax.texts)
        for artist in (*self._bars, *self._numbers):
            artist.set_animated(True)  # left out of the background
        fig.canvas.draw()
        self._background = fig.canvas.copy_from_bbox(fig.bbox)
        self._figure, self._key = fig, (data.title, data.labels, data.xlabel)

    def _redraw(self, data: BarData) -> bytes:
        from PIL import Image

        fig = self._figure
        assert fig is not None
        canvas, ax = fig.canvas, fig.axes[0]
        canvas.restore_region(self._background)
        for y, (bar, number, value) in enumerate(zip(self._bars, self._numbers, data.values)):
            bar.set_width(value)  # type: ignore[attr-defined]
            number.xy = (value, y)  # type: ignore[attr-defined]
            number.set_text(str(value))  # type: ignore[attr-defined]
            ax.draw_artist(bar)
            ax.draw_artist(number)
        buffer = io.BytesIO()
        Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA",
                         0, 1).save(buffer, format="png", compress_level=1)
        return buffer.getvalue()


def png(data: PlotData, **size: float) -> bytes:
    """``data`` drawn as PNG bytes (what the panel's Image widget shows)."""
    buffer = io.BytesIO()
    figure(data, **size).savefig(buffer, format="png")  # type: ignore[arg-type]
    return buffer.getvalue()


# --- one call per plot -------------------------------------------------------------


def hits_per_request(source: "Session | HitLog", **size: float) -> "Figure":
    return figure(per_request_data(source), **size)


def hits_over_time(source: "Session | HitLog", numbers: Iterable[int] | None = None, *,
                   bins: int = 40, **size: float) -> "Figure":
    return figure(over_time_data(source, numbers, bins=bins), **size)


def callers(source: "Session | HitLog", number: int, *, top: int = 12,
            symbolize: Symbolize | None = None, **size: float) -> "Figure":
    return figure(callers_data(source, number, top=top, symbolize=symbolize), **size)


def writers(source: "Session | HitLog", number: int, *, top: int = 12,
            symbolize: Symbolize | None = None, **size: float) -> "Figure":
    return figure(writers_data(source, number, top=top, symbolize=symbolize), **size)


_BY_KIND = {"per-request": hits_per_request, "over-time": hits_over_time,
            "callers": callers, "writers": writers}


def plot(source: "Session | HitLog", kind: str, *args: object, **kwargs: object) -> "Figure":
    """``plot(session, "callers", 1)``: the figure of one of :data:`KINDS`."""
    try:
        make = _BY_KIND[kind.replace("_", "-")]
    except KeyError:
        from kvmbench.errors import UsageError

        raise UsageError(f"unknown plot kind {kind!r}; one of: {', '.join(KINDS)}") from None
    return make(source, *args, **kwargs)  # type: ignore[operator]
