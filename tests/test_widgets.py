"""The debugger panel in process: real sessions on real guests, widgets
driven as a browser would (Button.click(), setting values), run control on
an asyncio loop the test drives, as the kernel's loop would."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kvmbench.engine.model import StopReason
from kvmbench.engine.session import RunState
from kvmbench.jupyter.commands import Workbench
from kvmbench.jupyter.widgets import Panel, PlotRenderer
from kvmbench.jupyter.widgets.updater import Updater

from conftest import fib_calls

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


@pytest.fixture(scope="module")
def renderer() -> Iterator[PlotRenderer]:
    r = PlotRenderer()  # the real drawing child, shared by the module's panels
    yield r
    r.close()


@pytest.fixture
def make_panel(loop, renderer, caps) -> Iterator[Callable[..., Panel]]:
    panels: list[Panel] = []

    def make(guest: str, *args: object) -> Panel:
        wb = Workbench()
        wb.execute("guest " + " ".join([guest, *map(str, args)]))
        panel = Panel(wb, loop=loop, renderer=renderer)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        if panel.workbench.pause():
            loop.run_until_complete(asyncio.wait_for(panel.run_task, 5))
        panel.close()
        panel.workbench.close()


def run(loop: asyncio.AbstractEventLoop, coro, timeout: float = 30):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def text_of(panel: Panel) -> str:
    """The panel's status line as a user reads it."""
    return re.sub(r"<[^>]+>", "", panel.status.value).replace("&lt;", "<").replace("&gt;", ">")


def row_cells(table) -> list[list[object]]:
    """The table's rows as the values of their cells (header row dropped)."""
    width = len(table.COLUMNS)
    cells = [getattr(c, "value", None) for c in table.grid.children]
    return [cells[i:i + width] for i in range(width, len(cells), width)]


def enabled(panel: Panel) -> set[str]:
    return {label for label, b in panel.buttons.items() if not b.disabled}


def test_breakpoint_added_in_the_table_stops_the_guest(make_panel, loop):
    panel = make_panel("fib", 10)
    session = panel.session
    assert enabled(panel) == {"Continue", "Step into", "Step over", "Step out", "Step instruction",
                              "Next instruction", "Restart guest"}
    panel.breakpoints.location.value = "fib"
    panel.breakpoints.add_button.click()
    assert panel.error.value == ""
    assert [bp.location for bp in session.breakpoints] == ["fib"]

    async def go():
        panel.buttons["Continue"].click()
        assert enabled(panel) == {"Pause"}  # at once, before the guest stops
        return await panel.run_task

    view = run(loop, go())
    assert view.stop.reason is StopReason.BREAKPOINT and view.stop.breakpoint == 1
    panel.updater.refresh_now()
    assert "Breakpoint 1, fib (n=20)" in text_of(panel) and "stopped" in text_of(panel)
    rows = row_cells(panel.breakpoints)
    assert rows[0][:3] == ["1", "fib", f"{session.breakpoints[1].address:#x}"]
    assert rows[0][6] == "1" == str(session.breakpoints[1].hit_count)
    assert rows[0][7] == session.breakpoints[1].served_by
    # The context shows where it stopped: pc marked in the disassembly.
    current = [b.description for b in panel.context.disassembly.children if b.description.startswith("▶")]
    assert current and "<fib>" in current[0]
    assert "#0" in panel.context.backtrace.value and "fib" in panel.context.backtrace.value


def test_pause_stops_a_running_guest(make_panel, loop):
    panel = make_panel("spin")

    async def go():
        panel.buttons["Continue"].click()
        await asyncio.sleep(0.5)  # the loop stays free while the guest runs
        assert panel.session.state is RunState.RUNNING
        panel.updater.refresh_now()
        assert "running" in text_of(panel)
        clicked = time.monotonic()
        panel.buttons["Pause"].click()
        view = await asyncio.wait_for(panel.run_task, 2)
        return view, time.monotonic() - clicked

    view, latency = run(loop, go())
    assert view.stop.reason is StopReason.PAUSED
    assert latency < 1.0
    panel.updater.refresh_now()
    assert "Program received signal SIGINT" in text_of(panel)
    assert enabled(panel) == {"Continue", "Step into", "Step over", "Step out", "Step instruction",
                              "Next instruction", "Restart guest"}
    assert "spin" in panel.context.disassembly.children[0].description or any(
        "spin" in b.description for b in panel.context.disassembly.children)


def test_hit_counts_shown_equal_the_engines_and_plots_appear(make_panel, loop):
    panel = make_panel("fib", 15)
    table = panel.breakpoints
    table.location.value = "fib"
    table.trace.value = True
    table.add_button.click()
    table.location.value = "main"
    table.kind.value = "hw"
    table.trace.value = True
    table.add_button.click()
    assert panel.error.value == ""
    view = run(loop, _continue(panel))
    assert view.stop.reason is StopReason.EXITED
    session = panel.session
    panel.updater.refresh_now()
    rows = row_cells(table)
    assert [(r[1], r[6]) for r in rows] == [("fib", str(fib_calls(15))), ("main", "1")]
    assert [r[6] for r in rows] == [str(bp.hit_count) for bp in session.breakpoints]
    assert rows[1][7] == session.breakpoints[2].served_by and rows[1][7].startswith("DR")
    assert "1 of 4" in table.slots.value
    assert enabled(panel) == {"Restart guest"}
    assert "exited" in text_of(panel)

    for kind in ("per-request", "over-time", "callers"):
        panel.plot_kind.value = kind
        run(loop, _plot_drawn(panel))
        assert bytes(panel.plot_image.value).startswith(b"\x89PNG")
    assert panel.plot_request.options == (("#1 fib", 1), ("#2 main", 2))


async def _continue(panel: Panel):
    panel.buttons["Continue"].click()
    return await panel.run_task


async def _plot_drawn(panel: Panel) -> None:
    panel.updater.refresh_now()
    while panel._plot_job is not None and not panel._plot_job.done():
        await asyncio.sleep(0.02)


def test_live_refresh_while_running_counts_up(make_panel, loop):
    """While the guest runs, the updater refreshes hit counts and the plot
    on the loop's thread, at its own rate."""
    panel = make_panel("fib", 20)
    panel.breakpoints.location.value = "fib"
    panel.breakpoints.trace.value = True
    panel.breakpoints.add_button.click()
    seen: list[int] = []

    async def go():
        panel.buttons["Continue"].click()
        for _ in range(8):
            await asyncio.sleep(0.25)
            seen.append(int(row_cells(panel.breakpoints)[0][6]))
        images = panel.plot_image.value
        panel.buttons["Pause"].click()
        await asyncio.wait_for(panel.run_task, 2)
        return images

    image = run(loop, go())
    assert seen[-1] > seen[0] > 0 or seen[-1] > 0, seen
    assert sorted(seen) == seen
    assert bytes(image).startswith(b"\x89PNG")
    assert panel.updater.refreshes >= 5


def test_bad_input_shows_an_inline_error_and_changes_nothing(make_panel, loop):
    panel = make_panel("counter", 5)
    session = panel.session
    before = (len(session.breakpoints), len(session.watchpoints), session._numbers.next_number)
    attempts = [
        (panel.breakpoints, "", None, "symbol or an address"),
        (panel.breakpoints, "   ", None, "symbol or an address"),
        (panel.breakpoints, "no_such_symbol", None, "no_such_symbol"),
        (panel.breakpoints, "0xzz12", None, ""),
        (panel.watchpoints, "", "4", "symbol or an address"),
        (panel.watchpoints, "counter", "-8", "positive"),
        (panel.watchpoints, "counter", "0", "positive"),
        (panel.watchpoints, "counter", "four", "number"),
        (panel.watchpoints, "0xffffffffff000", "8", "cannot watch"),
    ]
    for table, location, length, message in attempts:
        table.location.value = location
        if length is not None:
            table.length.value = length
        table.add_button.click()
        assert "kvmbench-error" in panel.error.value, (location, length)
        assert message in panel.error.value, (location, length, panel.error.value)
        assert (len(session.breakpoints), len(session.watchpoints), session._numbers.next_number) == before
    # a bad condition typed into an existing row is refused and reverted
    panel.breakpoints.location.value = "increment"
    panel.breakpoints.add_button.click()
    assert panel.error.value == ""
    panel.updater.refresh_now()
    row = panel.breakpoints._rows[1]
    row.condition.value = "$rdi ==="
    assert "kvmbench-error" in panel.error.value
    assert row.condition.value == "" and session.breakpoints[1].condition is None
    # a good input clears the error
    panel.watchpoints.location.value = "counter"
    panel.watchpoints.length.value = ""
    panel.watchpoints.add_button.click()
    assert panel.error.value == ""
    # requests are refused while the guest runs, and the checkbox flips back
    panel.updater.refresh_now()


def test_enable_toggle_condition_and_delete_drive_the_engine(make_panel, loop):
    panel = make_panel("fib", 10)
    session = panel.session
    panel.breakpoints.location.value = "fib"
    panel.breakpoints.add_button.click()
    panel.updater.refresh_now()
    row = panel.breakpoints._rows[1]
    row.enabled.value = False
    assert session.breakpoints[1].enabled is False
    row.enabled.value = True
    row.condition.value = "$rdi == 3"
    assert session.breakpoints[1].condition == "$rdi == 3"
    view = run(loop, _continue(panel))
    assert view.stop.breakpoint == 1 and session.regs.rdi == 3
    row.delete.click()
    assert len(session.breakpoints) == 0
    panel.updater.refresh_now()
    assert row_cells(panel.breakpoints) == []


def test_clicking_a_disassembly_line_toggles_a_breakpoint(make_panel, loop):
    panel = make_panel("fib", 10)
    session = panel.session
    panel.breakpoints.location.value = "fib"
    panel.breakpoints.add_button.click()
    run(loop, _continue(panel))
    panel.updater.refresh_now()
    lines = panel.context.disassembly.children
    target = lines[2]
    address = int(target.description.split()[0] if not target.description.startswith(("▶", "●"))
                  else target.description.split()[1], 16)
    target.click()
    assert [bp.address for bp in session.breakpoints][-1] == address
    panel.updater.refresh_now()
    assert panel.context.disassembly.children[2].description.startswith("●")
    panel.context.disassembly.children[2].click()
    assert address not in [bp.address for bp in session.breakpoints]


def test_watch_table_shows_old_new_and_writer(make_panel, loop):
    panel = make_panel("counter", 30)
    session = panel.session
    panel.watchpoints.location.value = "counter"
    panel.watchpoints.add_button.click()
    assert panel.error.value == ""
    for _ in range(2):
        view = run(loop, _continue(panel))
    assert view.stop.reason is StopReason.WATCHPOINT
    panel.updater.refresh_now()
    (row,) = row_cells(panel.watchpoints)
    wp = session.watchpoints[1]
    assert row[1] == "counter" and row[5] == "page trap" and row[6] == str(wp.hit_count)
    assert row[7] == f"{view.stop.old_value} → {view.stop.new_value}"
    assert row[8] == session.symbols.format_address(wp.last_writer)
    assert "kvmbench-changed" in panel.context.registers.value  # something changed since the last stop
    panel.plot_kind.value = "writers"
    run(loop, _plot_drawn(panel))
    assert panel.plot_request.options == (("#1 counter", 1),)
    assert bytes(panel.plot_image.value).startswith(b"\x89PNG")


def test_memory_view_highlights_bytes_changed_since_the_last_stop(make_panel, loop):
    panel = make_panel("counter", 30)
    panel.context.memory_address.value = "counter"  # a data symbol: where it is
    assert "kvmbench-error" not in panel.error.value, panel.error.value
    panel.watchpoints.location.value = "counter"
    panel.watchpoints.add_button.click()
    run(loop, _continue(panel))
    panel.updater.refresh_now()
    run(loop, _continue(panel))
    panel.updater.refresh_now()
    assert "kvmbench-changed" in panel.context.memory.value
    panel.context.memory_address.value = "garbage!!"
    assert "kvmbench-error" in panel.error.value


def test_step_buttons_and_restart_keep_breakpoints(make_panel, loop):
    panel = make_panel("fib", 10)
    panel.breakpoints.location.value = "fib"
    panel.breakpoints.add_button.click()
    run(loop, _continue(panel))
    pc = panel.session.pc
    panel.buttons["Step into"].click()
    view = run(loop, panel.run_task)
    assert view.stop.reason is StopReason.STEP and panel.session.pc != pc
    panel.buttons["Step out"].click()
    view = run(loop, panel.run_task)
    assert view.stop.reason in (StopReason.FINISH, StopReason.BREAKPOINT)
    old = panel.session
    panel.buttons["Restart guest"].click()
    assert panel.error.value == ""
    assert panel.session is not old and panel.session.state is RunState.STOPPED
    assert [bp.location for bp in panel.session.breakpoints] == ["fib"]
    view = run(loop, _continue(panel))
    assert view.stop.breakpoint == 1 and panel.session.regs.rdi == 10


def test_the_context_shows_the_source_line_and_the_frames_locals(make_panel, loop):
    panel = make_panel("fib", 10)
    panel.workbench.execute("break fib")  # gdb's placement: the body's line
    view = run(loop, _continue(panel))
    assert view.stop.reason is StopReason.BREAKPOINT
    panel.updater.refresh_now()
    source = panel.context.source.value
    assert "src/fib.c" in source and "kvmbench-current-line" in source
    current = source.split("kvmbench-current-line", 1)[1].split("</div>", 1)[0]
    assert "12" in current and "return n &lt; 2" in current
    assert "n = 10" in panel.context.locals.value


def test_registers_are_marked_stale_while_the_guest_runs(make_panel, loop):
    panel = make_panel("spin")

    async def running():
        panel.buttons["Continue"].click()
        await asyncio.sleep(0.3)
        panel.updater.refresh_now()
        stale = (panel.context.registers_note.value, list(panel.context.registers._dom_classes))
        panel.buttons["Pause"].click()
        await asyncio.wait_for(panel.run_task, 5)
        panel.updater.refresh_now()
        return stale, (panel.context.registers_note.value, list(panel.context.registers._dom_classes))

    (note, classes), (after_note, after_classes) = run(loop, running())
    assert "stale" in note and "kvmbench-stale" in classes
    assert after_note == "" and "kvmbench-stale" not in after_classes


def test_updater_refreshes_on_the_loop_thread_only(loop):
    threads: list[int] = []
    updater = Updater(loop, lambda: threads.append(threading.get_ident()), lambda: False,
                      interval=0.05, idle_interval=10)

    async def go():
        updater.start()
        await asyncio.sleep(0.01)
        workers = [threading.Thread(target=updater.request) for _ in range(20)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        await asyncio.sleep(0.3)
        updater.close()
        await asyncio.sleep(0)

    run(loop, go())
    assert threads and set(threads) == {threading.get_ident()}
    assert len(threads) <= 3  # twenty requests, throttled into one or two refreshes
