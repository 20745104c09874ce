"""What a live debugger panel costs a running guest.

The same tracing run (``benchloop call N`` with a tracepoint on
``bench_target``, every call a counted hit), run on a worker thread from an
asyncio loop as the kernel runs it, alternately with a panel refreshing at
its normal rate (tables, status, the chosen plot drawn in its child
process) and without one. The slowdown is the median run time with the
panel over the median without, minus one; the goal is under 5%.

``rate_hz`` makes the panel refresh and draw the plot that often (a guest
whose hits in-guest probes count takes 5 Hz: its vCPU thread needs the
GIL only at a drain, not at every hit); ``mechanism`` serves the
tracepoint by that mechanism instead of the planner's choice.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass, field

import kvmbench
from kvmbench.backends.kvm.probe import probe_host
from kvmbench.engine.model import StopReason
from kvmbench.jupyter.commands import Workbench

GUEST = "benchloop"
TARGET = "bench_target"


@dataclass(frozen=True)
class PanelBench:
    calls: int
    plot: str
    without_s: list[float] = field(default_factory=list)
    with_s: list[float] = field(default_factory=list)
    refreshes_per_s: float = 0.0
    refresh_ms: float = 0.0
    mechanism: str = ""
    #: Plots drawn a second while the guest ran (with the panel).
    plots_per_s: float = 0.0

    @property
    def slowdown_pct(self) -> float:
        """Median over rounds of (with / without - 1). Each round runs both
        back to back, so drift in the shared machine's speed cancels within
        a pair instead of landing on whichever side ran slower."""
        pairs = [w / wo for w, wo in zip(self.with_s, self.without_s)]
        return (statistics.median(pairs) - 1) * 100

    def describe(self) -> str:
        per_hit = statistics.median(self.without_s) / self.calls * 1e6
        return (f"panel refresh cost ({self.plot} plot, {self.calls} calls traced by "
                f"{self.mechanism}, {per_hit:.1f} us/hit): "
                f"slowdown {self.slowdown_pct:+.1f}% (target < 5%); panel refreshed "
                f"{self.refreshes_per_s:.1f}/s at {self.refresh_ms:.2f} ms of loop time each, "
                f"plot drawn {self.plots_per_s:.1f}/s; "
                f"runs without {', '.join(f'{t:.2f}' for t in self.without_s)} s, "
                f"with {', '.join(f'{t:.2f}' for t in self.with_s)} s")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "slowdown_pct": self.slowdown_pct}


def run_panel_bench(calls: int = 20_000, rounds: int = 7, plot: str = "per-request",
                    rate_hz: float | None = None, mechanism: str | None = None) -> PanelBench:
    """Alternate ``rounds`` runs with and without a live panel; ``plot`` is
    the plot the panel shows (``per-request``, ``over-time``, ``callers``)."""
    from kvmbench.jupyter.widgets import Panel, PlotRenderer

    caps = probe_host()
    loop = asyncio.new_event_loop()
    renderer = PlotRenderer()
    drawings = [0]
    render = renderer.render

    async def counted_render(data: object) -> bytes:
        drawings[0] += 1
        return await render(data)  # type: ignore[arg-type]

    renderer.render = counted_render  # type: ignore[method-assign]
    period = None if rate_hz is None else 1 / rate_hz
    served = ""
    without: list[float] = []
    with_panel: list[float] = []
    refreshes = 0
    refresh_seconds = 0.0
    drawn = 0
    try:
        # Round -1 warms caches (symbols, the drawing child) and is not counted.
        for round_ in range(-1, rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for live in order:
                workbench = Workbench()
                workbench.session = kvmbench.open(GUEST, ["call", str(calls)], capabilities=caps)
                served = workbench.session.breakpoints.trace(TARGET, mechanism=mechanism).served_by
                panel = None
                if live:
                    panel = Panel(workbench, loop=loop, renderer=renderer, interval=period,
                                  plot_period=period)
                    panel.plot_kind.value = plot
                    if plot == "callers":
                        panel.plot_request.value = 1
                drawings[0] = 0
                seconds = loop.run_until_complete(_timed_run(workbench, panel))
                if panel is not None and round_ >= 0:
                    drawn += drawings[0]
                stop = workbench.session.last_stop
                assert stop is not None and stop.reason is StopReason.EXITED, stop
                assert workbench.session.breakpoints[1].hit_count == calls
                if panel is not None and round_ >= 0:
                    refreshes += panel.updater.refreshes
                    refresh_seconds += panel.updater.refresh_seconds
                if panel is not None:
                    panel.close()
                    loop.run_until_complete(asyncio.sleep(0.05))  # let the updater task end
                if round_ >= 0:
                    (with_panel if live else without).append(seconds)
                workbench.close()
    finally:
        renderer.close()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
    return PanelBench(calls, plot, without, with_panel,
                      refreshes_per_s=refreshes / sum(with_panel),
                      refresh_ms=refresh_seconds / max(refreshes, 1) * 1e3,
                      mechanism=served, plots_per_s=drawn / sum(with_panel))


async def _timed_run(workbench: Workbench, panel: object | None) -> float:
    started = time.perf_counter()
    if panel is not None:
        panel.buttons["Continue"].click()  # type: ignore[attr-defined]
        await panel.run_task  # type: ignore[attr-defined]
    else:
        await asyncio.to_thread(workbench.run, "continue", "")
    return time.perf_counter() - started


def main() -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m kvmbench.bench.panel", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plot", default="per-request", choices=("per-request", "over-time", "callers"))
    parser.add_argument("--rate", type=float, default=None,
                        help="refreshes and plot drawings a second (default: the panel's own)")
    parser.add_argument("--mechanism", default=None,
                        help="serve the tracepoint by this mechanism ('hlt trap', 'in-guest probe')")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run_panel_bench(args.calls, args.rounds, args.plot, args.rate, args.mechanism)
    print(json.dumps(result.as_dict(), indent=1) if args.json else result.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
