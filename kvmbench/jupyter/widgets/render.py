"""Drawing plots off the kernel's process.

matplotlib needs 30-100 ms of CPU for a small figure. In the kernel's
process that time holds the GIL, which the vCPU thread needs for every hit
it handles, so a panel drawing at 2 Hz would slow a tracing guest by 10% or
more. One child process draws instead: the kernel pickles the plot data (a few
small tuples) down a pipe to :func:`main` and reads PNG bytes back, on a worker thread
that waits with the GIL released. A child started with subprocess, not
multiprocessing: spawn would re-run the parent's ``__main__``, and fork
would copy the vCPU thread's KVM file descriptors.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import subprocess
import sys
import threading
from typing import BinaryIO

from kvmbench import plots

_LENGTH = struct.Struct("<I")


def _send(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return payload


class PlotRenderer:
    """PNGs from :mod:`kvmbench.plots` data, drawn in a child process (or in
    this process with ``in_process=True``, or if the child is gone)."""

    def __init__(self, *, in_process: bool = False) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        if not in_process:
            # Its own session: a Ctrl-C or the kernel's SIGINT is not for it;
            # it exits when its stdin closes (close(), or this process ending).
            self._child = subprocess.Popen(
                [sys.executable, "-c", "from kvmbench.jupyter.widgets.render import main; main()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)

    @property
    def in_process(self) -> bool:
        return self._child is None

    def render_blocking(self, data: plots.PlotData) -> bytes:
        child = self._child
        if child is not None:
            with self._lock:
                try:
                    assert child.stdin is not None and child.stdout is not None
                    _send(child.stdin, pickle.dumps(data))
                    png = _receive(child.stdout)
                except (OSError, ValueError):
                    png = None
            if png is not None:
                return png
            self._child = None  # the child died: draw here from now on
        return plots.png(data)

    async def render(self, data: plots.PlotData) -> bytes:
        if self._child is None:
            return plots.png(data)
        return await asyncio.to_thread(self.render_blocking, data)

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def main() -> int:
    """The child: read pickled plot data, write PNG bytes, until stdin closes."""
    import os

    import matplotlib

    # Drawing is best effort: when cores are scarce the guest's vCPU wins.
    os.nice(10)
    matplotlib.use("Agg")
    plots.png(plots.BarData("", (), ()))  # import and warm up the drawing code now
    # A live bar plot is drawn again with new values many times a second:
    # only its bars are (a fifth of the cost, kvmbench.plots.LiveBars).
    live = plots.LiveBars()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        payload = _receive(stdin)
        if payload is None:
            return 0
        _send(stdout, live.png(pickle.loads(payload)))
