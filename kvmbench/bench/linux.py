"""``kvmbench bench --linux``: a Linux kernel session measured, in one run.

- Boot to the ready shell: cold (no snapshot used or saved) and from the
  cached snapshot, ``kvmbench.linux()`` to its return.
- Counted hits per second of one kernel function, ``__x64_sys_personality``,
  entered by a static test program that makes N personality(2) calls (the
  only caller in the guest, so the count must be N exactly), three ways on
  the same QEMU command line: the plugin counter (kvmbench's TCG plugin, no
  stop per hit), a tracepoint served by QEMU's own breakpoint (Z0: a stop,
  a register read and a step off per hit, through kvmbench's client), and
  Debian's gdb with ``break`` and a ``silent``/``continue`` command list on
  QEMU's gdbstub. Each side runs at two values of N and the rate is the
  difference in hits over the difference in seconds, so start-up cancels.
- What tracing costs the guest: a file-system walk timed in QEMU's CPU
  seconds (steadier than wall time on a shared host) without the plugin,
  with it loaded and counting nothing, and with the 1000 kernel functions
  that walk calls most traced through the plugin counter. The timed run is
  the second of two in one command, between console markers: its code is
  translated already (any stop, and any change of what is counted, drops
  QEMU's translations).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import kvmbench
from kvmbench.backends.linux.machine import LinuxMachine, LinuxOptions
from kvmbench.backends.linux.measure import build_syscalls
from kvmbench.backends.linux.target import LinuxTarget
from kvmbench.errors import HostUnsupported, KvmbenchError
from kvmbench.linux_session import LinuxSession

FUNCTION = "__x64_sys_personality"
#: The walk whose kernel functions are traced for the slowdown.
WORKLOAD = "for i in 1 2 3 4; do find /bin /etc /sys/kernel /proc/sys > /dev/null; done"
TRACED = 1000
GDB_TIMEOUT = 600.0
#: Goals (issue 12).
PLUGIN_GOAL_HITS_PER_S = 1_000_000
SLOWDOWN_GOAL = 0.20
COLD_GOAL_S, SNAPSHOT_GOAL_S = 6.0, 0.5


@dataclass
class LinuxBenchResult:
    """Seconds, hits per second and slowdowns of one ``bench --linux`` run."""

    release: str = ""
    accel: str = ""
    cold_boot_s: list[float] = field(default_factory=list)
    snapshot_boot_s: list[float] = field(default_factory=list)
    #: Rates: (low N, high N) and hits per second by side.
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    hits_per_s: dict[str, float] = field(default_factory=dict)
    exact: dict[str, bool] = field(default_factory=dict)
    #: The workload's QEMU CPU seconds by configuration (measured runs).
    workload_cpu_s: dict[str, list[float]] = field(default_factory=dict)
    traced_functions: int = 0
    traced_hits: int = 0

    def slowdown(self, configuration: str, base: str = "no plugin") -> float:
        """The median over rounds of (configuration / base - 1): each round
        runs both back to back, so the shared host's drift cancels in a pair."""
        return statistics.median(c / b for c, b in zip(self.workload_cpu_s[configuration],
                                                       self.workload_cpu_s[base])) - 1

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["slowdown_1000_traced"] = self.slowdown("1000 traced")
        out["slowdown_plugin_loaded"] = self.slowdown("plugin, nothing traced")
        return out

    def describe(self) -> str:
        cold, warm = statistics.median(self.cold_boot_s), statistics.median(self.snapshot_boot_s)
        plugin = self.hits_per_s["plugin counter"]
        lines = [
            f"Linux {self.release} under QEMU {self.accel}",
            f"boot to the ready shell: cold {cold:.2f} s (goal < {COLD_GOAL_S:g} s), from the snapshot "
            f"{warm:.2f} s (goal < {SNAPSHOT_GOAL_S:g} s); runs cold "
            f"{', '.join(f'{t:.2f}' for t in self.cold_boot_s)}, snapshot "
            f"{', '.join(f'{t:.2f}' for t in self.snapshot_boot_s)}",
            f"counted hits of {FUNCTION} per second (slope between two call counts, exact counts checked):",
        ]
        for side, rate in self.hits_per_s.items():
            low, high = self.counts[side]
            exact = "exact" if self.exact[side] else "NOT EXACT"
            lines.append(f"  {side:34s} {rate:12.0f} hits/s  ({low} and {high} calls, {exact})")
        ceiling = self.hits_per_s["untraced program (its call rate)"]
        lines.append(f"  plugin / gdb {plugin / self.hits_per_s['gdb break + continue']:.0f}x; the plugin "
                     f"counts at {plugin / ceiling:.0%} of the program's untraced call rate; goal >= "
                     f"{PLUGIN_GOAL_HITS_PER_S:,} hits/s through the plugin: "
                     f"{_verdict(plugin, ceiling)}")
        slow = self.slowdown("1000 traced")
        lines.append(f"guest slowdown, {WORKLOAD!r} run warm, in QEMU CPU seconds (medians):")
        for configuration, runs in self.workload_cpu_s.items():
            lines.append(f"  {configuration:34s} {statistics.median(runs):8.2f} s  "
                         f"(runs {', '.join(f'{t:.2f}' for t in runs)})")
        cpu = statistics.median(self.workload_cpu_s["1000 traced"])
        lines.append(f"  counted through the plugin: {self.traced_hits / cpu:,.0f} hits per QEMU CPU second")
        lines.append(f"  {self.traced_functions} functions traced ({self.traced_hits} hits counted per run): "
                     f"{slow * 100:+.1f}% against no plugin, "
                     f"{self.slowdown('1000 traced', 'plugin, nothing traced') * 100:+.1f}% against the "
                     f"plugin loaded, the plugin loaded {self.slowdown('plugin, nothing traced') * 100:+.1f}% "
                     f"(medians of paired rounds; goal < {SLOWDOWN_GOAL:.0%}: "
                     f"{'met' if slow < SLOWDOWN_GOAL else 'missed'})")
        return "\n".join(lines)


def _verdict(plugin: float, ceiling: float) -> str:
    if plugin >= PLUGIN_GOAL_HITS_PER_S:
        return "met"
    if ceiling < PLUGIN_GOAL_HITS_PER_S:
        return "missed: the program itself makes no more calls a second untraced"
    return "missed"


def _qemu_cpu_seconds(pid: int) -> float:
    """CPU time QEMU used, all its threads (proc(5): utime + stime, in ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _slope(counts: tuple[int, int], timed: Callable[[int], float]) -> float:
    low, high = counts
    return (high - low) / (timed(high) - timed(low))


def measure_boot(files: dict[str, Path], result: LinuxBenchResult, runs: int) -> None:
    kvmbench.linux(files=files).close()  # the snapshot exists from here on
    for _ in range(max(1, runs - 1)):
        started = time.monotonic()
        with kvmbench.linux(files=files, snapshot=False):
            result.cold_boot_s.append(round(time.monotonic() - started, 3))
    for _ in range(runs + 2):
        started = time.monotonic()
        with kvmbench.linux(files=files) as session:
            result.snapshot_boot_s.append(round(time.monotonic() - started, 3))
            result.release, result.accel = session.release, session.machine.options.accel


def _shell_seconds(session: "kvmbench.linux_session.LinuxSession", calls: int) -> float:
    started = time.perf_counter()
    done = session.shell(f"/bin/syscalls {calls}", timeout=GDB_TIMEOUT)
    elapsed = time.perf_counter() - started
    if not done.ok:
        raise KvmbenchError(f"/bin/syscalls {calls} failed in the guest: {done.describe()}")
    return elapsed


def measure_plugin_rate(files: dict[str, Path], result: LinuxBenchResult) -> None:
    """The program's own call rate with nothing traced (the ceiling any
    counter can reach on this one function), then through the plugin counter."""
    counts = (200_000, 1_000_000)
    with kvmbench.linux(files=files) as session:
        session.shell("/bin/syscalls 1000")  # translate the loop once
        result.counts["untraced program (its call rate)"] = counts
        result.hits_per_s["untraced program (its call rate)"] = round(
            _slope(counts, lambda n: _shell_seconds(session, n)), 1)
        result.exact["untraced program (its call rate)"] = True
        bp = session.breakpoints.trace(FUNCTION)
        if bp.served_by != "plugin counter":
            raise KvmbenchError(f"{FUNCTION} is served by {bp.served_by}, not the plugin counter: {bp.reason}")
        exact = True

        def timed(calls: int) -> float:
            nonlocal exact
            before = bp.hit_count
            elapsed = _shell_seconds(session, calls)
            exact = exact and bp.hit_count - before == calls
            return elapsed

        result.counts["plugin counter"] = counts
        result.hits_per_s["plugin counter"] = round(_slope(counts, timed), 1)
        result.exact["plugin counter"] = exact


def _gdb_script(workdir: Path, socket: Path, address: int, calls: int) -> Path:
    """gdb counting ``calls`` hits of ``*address`` with a silent command
    list that continues, and stopping at the last one."""
    path = workdir / "count.gdb"
    path.write_text("\n".join([
        "set pagination off", "set confirm off", f"target remote {socket}",
        "set $hits = 0", f"break *{address:#x}", "commands", "silent", "set $hits = $hits + 1",
        f"if $hits < {calls}", "continue", "end", "end", "continue", 'printf "hits %d\\n", $hits', "",
    ]))
    return path


def measure_breakpoint_rates(files: dict[str, Path], options: LinuxOptions, result: LinuxBenchResult,
                             workdir: Path, runs: int) -> None:
    """A tracepoint on QEMU's own breakpoint (Z0) through kvmbench, and
    Debian's gdb's break + silent continue on QEMU's gdbstub, alternately
    (each on a fresh QEMU from the same snapshot), ``runs`` rounds."""
    counts = (100, 500)
    ours, theirs = "kvmbench, QEMU breakpoint (Z0)", "gdb break + continue"
    exact = {ours: True, theirs: True}

    def kvmbench_seconds(calls: int) -> float:
        with kvmbench.linux(files=files) as session:
            bp = session.breakpoints.trace(FUNCTION, kind="sw")
            elapsed = _shell_seconds(session, calls)
            exact[ours] = exact[ours] and bp.hit_count == calls
        return elapsed

    def gdb_seconds(calls: int) -> float:
        with kvmbench.linux(files=files) as session:
            address = session.symbols.resolve(FUNCTION)
        with LinuxMachine.boot(options, counting=True) as machine:
            machine.start_shell(f"/bin/syscalls {calls}")  # runs once gdb continues the guest
            script = _gdb_script(workdir, Path(machine.gdb_address.removeprefix("unix:")), address, calls)
            started = time.perf_counter()
            done = subprocess.run(["gdb", "-batch", "-nx", "-x", str(script)], capture_output=True,
                                  text=True, timeout=GDB_TIMEOUT, check=False)
            elapsed = time.perf_counter() - started
        if f"hits {calls}" not in done.stdout:
            last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            raise KvmbenchError(f"gdb did not count {calls} hits: {last[0]}")
        return elapsed

    rates: dict[str, list[float]] = {ours: [], theirs: []}
    for _ in range(runs):
        rates[ours].append(_slope(counts, kvmbench_seconds))
        rates[theirs].append(_slope(counts, gdb_seconds))
    for side, values in rates.items():
        result.counts[side] = counts
        result.hits_per_s[side] = round(statistics.median(values), 1)
        result.exact[side] = exact[side]


class _ConsoleMarks:
    """QEMU's CPU time when marker lines appear on the guest's console: the
    guest writes one between two runs of a workload and one after, so the
    second, warm run is timed with no stop (and no dropped translations)
    in it."""

    FIRST, SECOND = "kvmbench-mark-1", "kvmbench-mark-2"

    def __init__(self) -> None:
        self.pid: int | None = None
        self._seen = ""
        self.cpu: dict[str, float] = {}

    def __call__(self, text: str) -> None:  # the console reader's thread
        self._seen = (self._seen + text)[-200:]
        for mark in (self.FIRST, self.SECOND):
            if mark in self._seen and mark not in self.cpu and self.pid is not None:
                self.cpu[mark] = _qemu_cpu_seconds(self.pid)

    def measure(self, session: LinuxSession) -> float:
        self.pid, self._seen, self.cpu = session.machine.qemu.pid, "", {}
        session.shell(f"{WORKLOAD}; echo {self.FIRST} > /dev/console; {WORKLOAD}; "
                      f"echo {self.SECOND} > /dev/console", timeout=GDB_TIMEOUT)
        deadline = time.monotonic() + 5
        while self.SECOND not in self.cpu and time.monotonic() < deadline:
            time.sleep(0.01)  # the console reader may lag the command's end a little
        if self.SECOND not in self.cpu or self.FIRST not in self.cpu:
            raise KvmbenchError("the guest's console markers did not arrive")
        return round(self.cpu[self.SECOND] - self.cpu[self.FIRST], 3)


def measure_slowdown(files: dict[str, Path], options: LinuxOptions, result: LinuxBenchResult,
                     runs: int) -> None:
    """The workload in a kernel session without the plugin, in one with it
    counting nothing, and in that one with the TRACED functions the walk
    calls most counted; ``runs`` rounds, alternating. Each measured run is
    the second of two in one command (its code translated by the first),
    timed in QEMU's CPU seconds between console markers."""
    marks = _ConsoleMarks()
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(kvmbench.linux(files=files, on_console=marks))
        plain_machine = stack.enter_context(LinuxMachine.boot(options, on_console=marks))  # no plugin
        plain = stack.enter_context(LinuxSession(LinuxTarget.attach(plain_machine)))
        # Which functions does the walk call most? Count every one once.
        functions = sorted({s.address for s in session.symbols.functions() if s.address >= 1 << 63})
        session.target.count_executions(functions)
        session.shell(WORKLOAD, timeout=GDB_TIMEOUT)
        hits = session.target.execution_counts()
        session.target.stop_counting(functions)
        top = sorted(hits, key=lambda a: -hits[a])[:TRACED]
        names = [session.symbols.get_containing(a).name for a in top]  # type: ignore[union-attr]

        result.workload_cpu_s = {"no plugin": [], "plugin, nothing traced": [], "1000 traced": []}
        for _ in range(runs):
            result.workload_cpu_s["no plugin"].append(marks.measure(plain))
            result.workload_cpu_s["plugin, nothing traced"].append(marks.measure(session))
            traced = [session.breakpoints.trace(name) for name in dict.fromkeys(names)]
            before = sum(bp.hit_count for bp in traced)
            result.workload_cpu_s["1000 traced"].append(marks.measure(session))
            result.traced_functions = len(traced)
            result.traced_hits = (sum(bp.hit_count for bp in traced) - before) // 2
            for bp in traced:
                session.breakpoints.delete(bp.number)


def run_linux_bench(runs: int = 3) -> LinuxBenchResult:
    if shutil.which("gdb") is None:
        raise HostUnsupported("gdb is needed for bench --linux (Debian's gdb: make debian)")
    result = LinuxBenchResult()
    with tempfile.TemporaryDirectory(prefix="kvmbench-bench-linux-") as tmp:
        workdir = Path(tmp)
        files = {"/bin/syscalls": build_syscalls(workdir)}
        options = LinuxOptions.make(files=files)
        measure_boot(files, result, runs)
        measure_plugin_rate(files, result)
        measure_breakpoint_rates(files, options, result, workdir, runs)
        measure_slowdown(files, options, result, runs)
    return result


def main(repeat: int, as_json: bool) -> int:
    result = run_linux_bench(runs=repeat)
    print(json.dumps(result.as_dict()) if as_json else result.describe())
    return 0
