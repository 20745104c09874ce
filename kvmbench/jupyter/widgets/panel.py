"""The debugger panel: one ipywidgets composite bound to the kernel's live
guest session.

Run control reuses the kernel's machinery: a button schedules a task on the
kernel's event loop that awaits :meth:`Workbench.run` on a worker thread
(``asyncio.to_thread``), exactly as a ``continue`` cell does, so the button
handler returns at once and comm messages (the Pause click) keep flowing.
Every widget change happens on the loop's thread, through one throttled
:class:`~kvmbench.jupyter.widgets.updater.Updater`; plots are drawn in a
worker process (:mod:`~kvmbench.jupyter.widgets.render`).
"""

from __future__ import annotations

import asyncio
import html
import shlex
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ipywidgets as w

from kvmbench import plots
from kvmbench.engine.session import RunState, Session
from kvmbench.errors import KvmbenchError, SessionStateError
from kvmbench.jupyter.commands import Workbench, lookup
from kvmbench.jupyter.display import StopView
from kvmbench.jupyter.widgets.context import ContextView
from kvmbench.jupyter.widgets.render import PlotRenderer
from kvmbench.jupyter.widgets.tables import BreakpointTable, WatchTable
from kvmbench.jupyter.widgets.updater import Updater

#: Toolbar: button label -> (run-control command, icon). Steps are by
#: source line (by instruction where there is no line information);
#: the last two always by instruction.
RUN_BUTTONS = {
    "Continue": ("continue", "play"),
    "Step into": ("step", "arrow-down"),
    "Step over": ("next", "arrow-right"),
    "Step out": ("finish", "arrow-up"),
    "Step instruction": ("stepi", "angle-down"),
    "Next instruction": ("nexti", "angle-right"),
}
#: Minimum seconds between two drawings of a plot while the guest runs; the
#: callers and writers plots scan the hit log's ring, so they are drawn less.
PLOT_PERIOD = {"per-request": 0.5, "over-time": 0.5, "callers": 1.0, "writers": 1.0}
PLOT_KINDS = (("per request", "per-request"), ("over time", "over-time"),
              ("callers", "callers"), ("writers", "writers"))
SAMPLES = 240  # over-time samples kept while running (a minute at 4 Hz)

_STYLE = """<style>
.kvmbench-panel .kvmbench-disasm-line { text-align: left; white-space: pre; justify-content: flex-start; }
.kvmbench-panel .kvmbench-error { color: #c62828; font-weight: bold; }
</style>"""


class Panel:
    """``Panel(workbench)``; show ``panel.widget`` (or the panel itself)."""

    def __init__(self, workbench: Workbench, *, loop: asyncio.AbstractEventLoop | None = None,
                 renderer: PlotRenderer | None = None, interval: float | None = None,
                 plot_period: float | None = None) -> None:
        """``interval``: seconds between refreshes while the guest runs;
        ``plot_period``: at least this long between two drawings of the
        plot then (default PLOT_PERIOD for its kind; a guest whose hits are
        counted by in-guest probes affords 0.2, 5 Hz)."""
        self.workbench = workbench
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.renderer = renderer if renderer is not None else PlotRenderer()
        self._owns_renderer = renderer is None
        self._syncing = 0
        self.closed = False
        self.run_task: asyncio.Task[StopView | None] | None = None
        self.last_view: StopView | None = None

        # toolbar and status
        self.buttons: dict[str, w.Button] = {}
        for label, (name, icon) in RUN_BUTTONS.items():
            button = w.Button(description=label, icon=icon, layout=w.Layout(width="auto"))
            button.on_click(lambda _, name=name: self.attempt(lambda: self.start(name)))
            self.buttons[label] = button
        self.buttons["Pause"] = w.Button(description="Pause", icon="pause", layout=w.Layout(width="auto"))
        self.buttons["Pause"].on_click(lambda _: self.attempt(self.pause))
        self.buttons["Restart guest"] = w.Button(description="Restart guest", icon="refresh",
                                                 layout=w.Layout(width="auto"))
        self.buttons["Restart guest"].on_click(lambda _: self.attempt(self.restart))
        for label in ("Pause", "Restart guest"):
            self.buttons[label].button_style = "warning" if label == "Pause" else ""
        self.buttons["Continue"].button_style = "success"
        self.status = w.HTML()
        self.status.add_class("kvmbench-status")
        self.error = w.HTML()
        self.error.add_class("kvmbench-error")

        self.breakpoints = BreakpointTable(self)
        self.watchpoints = WatchTable(self)
        self.context = ContextView(self)

        # plots
        self.plot_kind = w.ToggleButtons(options=PLOT_KINDS, value="per-request",
                                         style={"button_width": "9em"})
        self.plot_request = w.Dropdown(description="request", options=[], layout=w.Layout(width="18em"))
        self.plot_image = w.Image(format="png", layout=w.Layout(width="440px"))
        self.plot_image.add_class("kvmbench-plot")
        self.plot_kind.observe(lambda _: self.updater.request(), "value")
        self.plot_request.observe(lambda _: self.updater.request(), "value")
        self._plot_job: asyncio.Task[None] | None = None
        self._plot_data: plots.PlotData | None = None
        self._plot_at: dict[str, float] = {}
        self._plot_period = plot_period
        self._samples: deque[tuple[float, dict[int, int]]] = deque(maxlen=SAMPLES)

        self.widget = w.VBox([
            w.HTML(_STYLE),
            w.HBox(list(self.buttons.values())),
            self.status, self.error,
            w.HBox([
                w.VBox([self.breakpoints.widget, self.watchpoints.widget,
                        w.HTML("<b>Hit plots</b>"), self.plot_kind, self.plot_request, self.plot_image],
                       layout=w.Layout(width="58%")),
                w.VBox([self.context.widget], layout=w.Layout(width="42%", padding="0 0 0 12px")),
            ]),
        ])
        self.widget.add_class("kvmbench-panel")

        kwargs = {"interval": interval} if interval is not None else {}
        self.updater = Updater(self.loop, self.refresh, lambda: self.state is RunState.RUNNING, **kwargs)
        self.refresh()
        self.updater.start()

    # --- display -------------------------------------------------------------------

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def close(self) -> None:
        """Stop refreshing, end the drawing process, close the widgets."""
        self.closed = True
        self.updater.close()
        if self._plot_job is not None:
            self._plot_job.cancel()
        if self._owns_renderer:
            self.renderer.close()
        self.widget.close()

    # --- state ------------------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        return self.workbench.session

    @property
    def state(self) -> RunState | None:
        session = self.workbench.session
        return session.state if session is not None else None

    def require_session(self) -> Session:
        if self.workbench.session is None:
            raise SessionStateError("no guest: boot one with %guest NAME [ARGS]")
        return self.workbench.session

    @property
    def is_syncing(self) -> bool:
        """True while the panel itself sets widget values (observers ignore those)."""
        return self._syncing > 0

    @contextmanager
    def syncing(self) -> Iterator[None]:
        self._syncing += 1
        try:
            yield
        finally:
            self._syncing -= 1

    def attempt(self, action: Callable[[], object]) -> bool:
        """Run a user action: a bad input or a refused request shows inline
        (the engine checks before it changes anything); True if it worked."""
        try:
            action()
        except (KvmbenchError, ValueError) as error:
            self.error.value = f"<span class='kvmbench-error'>{html.escape(str(error))}</span>"
            return False
        else:
            self.error.value = ""
            return True
        finally:
            self.updater.request()

    # --- run control ------------------------------------------------------------------

    def start(self, name: str, args: str = "") -> asyncio.Task[StopView | None]:
        """Start a run-control command; returns the task awaiting its stop."""
        session = self.require_session()
        if self.run_task is not None and not self.run_task.done() or session.state is RunState.RUNNING:
            raise SessionStateError("the guest is already running")
        self.workbench.check(lookup(name))  # stopped, alive: refused here, inline
        debug = session.symbols.debug
        if name in ("step", "next") and (debug is None or debug.get_line_entry(session.pc) is None):
            name = {"step": "stepi", "next": "nexti"}[name]  # no source line here: by instruction
        self._set_buttons(RunState.RUNNING)
        self._samples.clear()
        self.run_task = self.loop.create_task(self._run(name, args))
        return self.run_task

    async def _run(self, name: str, args: str) -> StopView | None:
        try:
            view = await asyncio.to_thread(self.workbench.run, name, args)
        except KvmbenchError as error:
            self.error.value = f"<span class='kvmbench-error'>{html.escape(str(error))}</span>"
            return None
        finally:
            self.updater.request()
        self.last_view = view
        return view

    def pause(self) -> None:
        if not self.workbench.pause():
            raise SessionStateError("the guest is not running")

    def restart(self) -> None:
        """Boot the same guest again, with the same breakpoints and watchpoints."""
        session = self.require_session()
        if session.state is RunState.RUNNING:
            raise SessionStateError("pause the guest before restarting it")
        words = self.workbench.guest_command or [str(session.image)]
        # The command layer's own breakpoints come back with the boot (as
        # gdb's run keeps them); the ones set through the API or the tables here.
        kept = set(self.workbench.breakpoint_specs) | set(self.workbench.watch_specs)
        bps = [(bp.location, dict(kind=bp.kind, condition=bp.condition, temporary=bp.temporary,
                                  tracepoint=bp.tracepoint, enabled=bp.enabled))
               for bp in session.breakpoints if bp.number not in kept]
        wps = [(wp.location, wp.length, dict(access=wp.access, kind=wp.kind, condition=wp.condition,
                                             tracepoint=wp.tracepoint))
               for wp in session.watchpoints if wp.number not in kept]
        self.workbench.execute("guest " + shlex.join(words))
        fresh = self.require_session()
        failed = []
        for location, options in bps:
            try:
                fresh.breakpoints.add(location, **options)  # type: ignore[arg-type]
            except KvmbenchError as error:
                failed.append(f"{location}: {error}")
        for location, length, options in wps:
            try:
                fresh.watchpoints.add(location, length, **options)  # type: ignore[arg-type]
            except KvmbenchError as error:
                failed.append(f"{location}: {error}")
        self._samples.clear()
        self.last_view = None
        if failed:
            raise SessionStateError("restarted, but could not re-create " + "; ".join(failed))

    def _set_buttons(self, state: RunState | None) -> None:
        can_restart = self.workbench.session is not None and state is not RunState.RUNNING
        for label, button in self.buttons.items():
            if label == "Pause":
                enabled = state is RunState.RUNNING
            elif label == "Restart guest":
                enabled = can_restart
            else:
                enabled = state is RunState.STOPPED
            button.disabled = not enabled

    # --- refresh (the updater calls this, on the loop's thread) -------------------------

    def refresh(self) -> None:
        session = self.workbench.session
        state = session.state if session is not None else None
        running_here = self.run_task is not None and not self.run_task.done()
        self._set_buttons(RunState.RUNNING if running_here else state)
        self.status.value = self._status_html(session)
        self.breakpoints.refresh(session)
        self.watchpoints.refresh(session)
        self.context.refresh(session)
        if session is not None and state is RunState.RUNNING:
            self._samples.append((time.perf_counter(), dict(session.hits.totals)))
        self._refresh_plot(session)

    def _status_html(self, session: Session | None) -> str:
        if session is None:
            return "<span class='kvmbench-state'>no guest: boot one with <code>%guest NAME</code></span>"
        state = session.state
        total = session.hits.recorded
        guest = session.image.stem
        text = f"<b>{html.escape(guest)}</b>: <span class='kvmbench-state'>{state.value}</span>"
        stop = session.last_stop
        if state is not RunState.RUNNING and stop is not None:
            try:
                headline = self.workbench.headline(stop)  # the stop card's headline
            except KvmbenchError:
                headline = stop.describe()
            where = ""
            if stop.pc is not None and stop.alive and f"{stop.pc:#x}" not in headline:
                where = f" at {stop.pc:#x} &lt;{html.escape(session.symbols.format_address(stop.pc))}&gt;"
            text += f" — <span class='kvmbench-stop-reason'>{html.escape(headline)}</span>{where}"
        text += f" — <span class='kvmbench-total-hits'>{total} hits logged</span>"
        return f"<div style='font-family:monospace;font-size:13px'>{text}</div>"

    def _refresh_plot(self, session: Session | None) -> None:
        kind = self.plot_kind.value
        wanted = ()
        if session is not None and kind == "callers":
            wanted = tuple((f"#{bp.number} {bp.location}", bp.number) for bp in session.breakpoints)
        elif session is not None and kind == "writers":
            wanted = tuple((f"#{wp.number} {wp.location}", wp.number) for wp in session.watchpoints)
        if tuple(self.plot_request.options) != wanted:
            with self.syncing():
                self.plot_request.options = wanted
        self.plot_request.layout.display = "" if wanted else "none"
        if session is None:
            return
        if self._plot_job is not None and not self._plot_job.done():
            return  # one drawing at a time; the next tick picks up what changed
        running = session.state is RunState.RUNNING
        now = time.monotonic()
        period = PLOT_PERIOD[kind] if self._plot_period is None else self._plot_period
        if running and now - self._plot_at.get(kind, 0.0) < period:
            return
        data = self._plot_data_for(session, kind, running)
        if data is None or data == self._plot_data:
            return
        self._plot_at[kind] = now
        self._plot_data = data
        self._plot_job = self.loop.create_task(self._draw(data))

    def _plot_data_for(self, session: Session, kind: str, running: bool) -> plots.PlotData | None:
        labels = plots.request_labels(session)
        if kind == "per-request":
            return plots.per_request_data(session, labels=labels)
        if kind == "over-time":
            if running or not session.hits.recorded:
                return self._sampled_rates(labels)
            return plots.over_time_data(session, labels=labels)
        number = self.plot_request.value
        if number is None:
            return plots.BarData(f"{kind}: add a {'breakpoint' if kind == 'callers' else 'watchpoint'} first",
                                 (), ())
        if kind == "callers":
            return plots.callers_data(session, number, labels=labels)
        return plots.writers_data(session, number, labels=labels)

    def _sampled_rates(self, labels: dict[int, str]) -> plots.SeriesData:
        """Hit rates between the updater's samples: free to gather while the
        guest runs (the log's ring would need a scan per refresh)."""
        samples = list(self._samples)
        if len(samples) < 2:
            return plots.SeriesData("hits over time", ())
        t0 = samples[0][0]
        numbers = sorted({n for _, totals in samples for n in totals if n > 0})
        series = []
        for n in numbers:
            xs, ys = [], []
            for (ta, a), (tb, b) in zip(samples, samples[1:]):
                xs.append(tb - t0)
                ys.append((b.get(n, 0) - a.get(n, 0)) / max(tb - ta, 1e-6))
            series.append((labels.get(n, f"#{n}"), tuple(xs), tuple(ys)))
        return plots.SeriesData("hits over time (live)", tuple(series), xlabel="seconds since sampling began")

    async def _draw(self, data: plots.PlotData) -> None:
        try:
            png = await self.renderer.render(data)
        except Exception as error:  # noqa: BLE001 - a failed drawing shows as an error, not a traceback
            self.error.value = f"<span class='kvmbench-error'>plot failed: {html.escape(str(error))}</span>"
            return
        self.plot_image.value = png
