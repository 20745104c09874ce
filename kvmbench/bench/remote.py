"""``kvmbench bench --target qemu``: counted breakpoint hits per second on a
QEMU TCG guest, through kvmbench's GDB remote client and through Debian's
gdb, on the same guest, breakpoint and QEMU command line, alternately.

kvmbench traces ``bench_target`` on the ``benchloop call N`` guest: the
stub's Z0 stays inserted, and each hit costs the stop, a few register and
memory packets and one continue (the displaced ``push`` is emulated rather
than stepped: a step is a debug stop, and every debug stop makes QEMU 7.2
flush its translation cache). gdb removes, steps over and re-inserts its
breakpoint at every stop; it runs twice, counting with a silent command
list and with ``ignore N``. Start-up is taken out by running every side at
two hit counts: the rate is the difference in hits over the difference in
seconds. The goal (issue 10): at least 1.4 times gdb's rate.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import kvmbench
from kvmbench.bench.gdb import GUEST, SYMBOL, time_qemu
from kvmbench.errors import HostUnsupported, KvmbenchError

#: The rate goal against gdb's.
GOAL = 1.4


@dataclass(frozen=True)
class RemoteBenchResult:
    """Counted hits per second on QEMU TCG (medians of ``repeat`` slopes)."""

    hits: tuple[int, int]
    repeat: int
    kvmbench_hits_per_s: float
    gdb_commands_hits_per_s: float
    gdb_ignore_hits_per_s: float

    @property
    def ratio(self) -> float:
        """kvmbench's rate over gdb's best."""
        return self.kvmbench_hits_per_s / max(self.gdb_commands_hits_per_s, self.gdb_ignore_hits_per_s)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": round(self.ratio, 2), "goal": GOAL}

    def describe(self) -> str:
        low, high = self.hits
        verdict = "meets" if self.ratio >= GOAL else "misses"
        return "\n".join([
            f"counted hits of {SYMBOL} on {GUEST} under QEMU TCG, {low} and {high} hits, "
            f"median of {self.repeat} alternating runs",
            f"  kvmbench (its GDB remote client)     {self.kvmbench_hits_per_s:8.0f} hits/s",
            f"  gdb break + silent continue          {self.gdb_commands_hits_per_s:8.0f} hits/s",
            f"  gdb break + ignore N                 {self.gdb_ignore_hits_per_s:8.0f} hits/s",
            f"  ratio {self.ratio:.2f}x over gdb's best ({verdict} the {GOAL}x goal)",
        ])


def time_kvmbench(hits: int) -> float:
    """Seconds kvmbench takes to boot the guest under QEMU and count ``hits``."""
    start = time.perf_counter()
    with kvmbench.open(GUEST, ["call", str(hits)], target="qemu") as session:
        bp = session.breakpoints.trace(SYMBOL)
        stop = session.cont()
        if stop.exit_code != 0 or bp.hit_count != hits:
            raise KvmbenchError(f"kvmbench on QEMU counted {bp.hit_count} of {hits} hits "
                                f"({stop.describe()})")
    return time.perf_counter() - start


def run_remote_bench(low: int = 200, high: int = 1200, repeat: int = 3) -> RemoteBenchResult:
    """Alternate the three sides at both hit counts ``repeat`` times."""
    if shutil.which("gdb") is None:
        raise HostUnsupported("gdb is needed for bench --target qemu (Debian's gdb: make setup)")
    if not 0 < low < high:
        raise KvmbenchError(f"hit counts must be 0 < low < high, not {low}, {high}")
    rates: dict[str, list[float]] = {"kvmbench": [], "commands": [], "ignore": []}
    with tempfile.TemporaryDirectory(prefix="kvmbench-bench-remote-") as tmp:
        workdir = Path(tmp)
        sides = {
            "kvmbench": time_kvmbench,
            "commands": lambda n: time_qemu(n, workdir),
            "ignore": lambda n: time_qemu(n, workdir, ignore=True),
        }
        for _ in range(repeat):
            for name, timed in sides.items():
                t_low, t_high = timed(low), timed(high)
                rates[name].append((high - low) / (t_high - t_low))
    median = {name: round(statistics.median(values), 1) for name, values in rates.items()}
    return RemoteBenchResult((low, high), repeat, median["kvmbench"], median["commands"],
                             median["ignore"])


def main(repeat: int, as_json: bool) -> int:
    result = run_remote_bench(repeat=repeat)
    print(json.dumps(result.as_dict()) if as_json else result.describe())
    return 0
