"""The one path by which the panel's widgets change while a guest runs.

Widget state changes are comm messages, and ipykernel sends them with the
parent header of the code that runs them; they belong on the kernel's
event loop, never on the vCPU's worker thread. So nothing but the loop
touches the widgets: :meth:`Updater.request` may be called from any thread
(it only schedules, with ``call_soon_threadsafe``), and one task on the
loop calls the panel's ``refresh`` at most every ``interval`` seconds while
the guest runs, and on request or every ``idle_interval`` seconds when it
does not (so changes made from cells show up too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Refreshes a second while the guest runs: 4 Hz (the plots are drawn at
#: most every other tick, see kvmbench.jupyter.widgets.panel).
RUNNING_INTERVAL = 0.25
IDLE_INTERVAL = 0.5


class Updater:
    """Throttled, loop-thread-only calls of ``refresh``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, refresh: Callable[[], None],
                 is_running: Callable[[], bool], *, interval: float = RUNNING_INTERVAL,
                 idle_interval: float = IDLE_INTERVAL) -> None:
        self.loop = loop
        self.interval = interval
        self.idle_interval = idle_interval
        self._refresh = refresh
        self._is_running = is_running
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._last = 0.0
        self.refreshes = 0
        self.refresh_seconds = 0.0

    def start(self) -> None:
        """Start ticking (call on the loop's thread, or before the loop runs)."""
        if self._task is None:
            self._task = self.loop.create_task(self._ticks())

    def request(self) -> None:
        """Ask for a refresh soon; safe from any thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self._set_wake)

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def close(self) -> None:
        task, self._task = self._task, None
        if task is None or self.loop.is_closed():
            return
        try:
            here = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            here = False
        if here:
            task.cancel()
        else:
            self.loop.call_soon_threadsafe(task.cancel)

    async def _ticks(self) -> None:
        self._wake = asyncio.Event()
        while True:
            timeout = self.interval if self._is_running() else self.idle_interval
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            # Throttle: requests arriving faster than the interval are merged.
            gap = self._last + self.interval - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
                self._wake.clear()
            self._last = time.monotonic()
            self.refresh_now()

    def refresh_now(self) -> None:
        """Refresh immediately (on the loop's thread)."""
        started = time.perf_counter()
        try:
            self._refresh()
        except Exception:  # noqa: BLE001 - a failed refresh must not end the ticking
            log.exception("kvmbench panel refresh failed")
        self.refreshes += 1
        self.refresh_seconds += time.perf_counter() - started
