"""``kvmbench bench``: each mechanism's cost per counted hit next to its floor.

The floor is ``floor.c``, built here with gcc, doing the least KVM work one
hit of the mechanism needs, on the same guest (``benchloop``) and hit count.
Floor and kvmbench run alternately in one invocation, so both see the same
machine load; the ratio is floor time / kvmbench time (1.0 = no overhead;
above 1.0 kvmbench did less work per hit than the textbook floor, e.g. by
emulating the displaced ``push rbp`` instead of single-stepping it).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import kvmbench
from kvmbench.backends.capabilities import Feature, HostCapabilities
from kvmbench.backends.kvm.probe import probe_host
from kvmbench.bench.floor import build_floor, run_floor
from kvmbench.engine.model import StopReason
from kvmbench.engine.session import Session
from kvmbench.errors import KvmbenchError

GUEST = "benchloop"


@dataclass(frozen=True)
class BenchCase:
    """One mechanism: how kvmbench serves it and which floor it is held to.

    ``per_step``: the cost is per single-step (the floor's step count, the
    same on both sides), not per counted hit."""

    name: str
    floor: str
    mode: str
    symbol: str
    needs: Feature
    arm: Callable[[Session], object]
    per_step: bool = False


@dataclass(frozen=True)
class BenchRow:
    name: str
    hits: int
    floor_us: float
    kvmbench_us: float
    ratio: float
    note: str = ""


CASES = (
    BenchCase("hw execute slot", "hw-exec", "call", "bench_target", Feature.HW_EXECUTE,
              lambda s: s.breakpoints.trace("bench_target", kind="hw")),
    BenchCase("software trap", "hlt-trap", "call", "bench_target", Feature.HLT_TRAP,
              lambda s: s.breakpoints.trace("bench_target", kind="sw")),
    BenchCase("hw data slot (write watch)", "hw-watch", "write", "bench_var",
              Feature.HW_WRITE_WATCH,
              lambda s: s.watchpoints.add("bench_var", kind="hw", tracepoint=True)),
    BenchCase("page trap (write watch)", "page-trap", "write", "bench_var", Feature.READONLY_MEMSLOT,
              lambda s: s.watchpoints.add("bench_var", kind="sw", tracepoint=True)),
    BenchCase("single-step", "single-step", "call", "bench_target", Feature.SINGLE_STEP,
              lambda s: None, per_step=True),
    BenchCase("step-compare (read watch)", "single-step", "write", "bench_var",
              Feature.SINGLE_STEP,
              lambda s: s.watchpoints.add("bench_var", access="read", kind="sw", tracepoint=True),
              per_step=True),
)


def _time_kvmbench(case: BenchCase, hits: int, caps: HostCapabilities) -> tuple[float, int, str]:
    """(seconds, counted hits or steps, mechanism) for one kvmbench run of ``case``."""
    with kvmbench.open(GUEST, [case.mode, str(hits)], capabilities=caps) as session:
        request = case.arm(session)
        start = time.perf_counter()
        if request is None:  # single-step every instruction until the guest exits
            stop = session.stepi(1 << 62)
            elapsed = time.perf_counter() - start
            if stop.reason is not StopReason.EXITED:
                raise KvmbenchError(f"bench guest did not exit cleanly: {stop.describe()}")
            return elapsed, int(stop.extra["steps"]), "single-step"
        stop = session.cont()
        elapsed = time.perf_counter() - start
        if stop.reason is not StopReason.EXITED or stop.exit_code != 0:
            raise KvmbenchError(f"bench guest did not exit cleanly: {stop.describe()}")
        return elapsed, request.hit_count, request.served_by  # type: ignore[attr-defined]


def bench_case(case: BenchCase, floor_binary: Path, hits: int, repeat: int,
               caps: HostCapabilities) -> BenchRow:
    probe = kvmbench.open(GUEST, ["call", "1"], capabilities=caps)
    try:
        symbol_address = probe.symbols.resolve(case.symbol)
    finally:
        probe.close()
    floor_times, ours = [], []
    counted = 0
    mechanism = ""
    for _ in range(repeat):
        floor = run_floor(floor_binary, case.floor, hits, symbol_address, mode=case.mode)
        floor_times.append(floor.per_hit_us)
        seconds, counted, mechanism = _time_kvmbench(case, hits, caps)
        if case.per_step:
            if mechanism == "single-step" and counted != floor.hits:
                raise KvmbenchError(f"{case.name}: {counted} steps, the floor took {floor.hits}")
            counted = floor.hits  # the same code, so the same steps
        elif counted != hits:
            raise KvmbenchError(f"{case.name}: counted {counted} hits of {hits}")
        ours.append(seconds / counted * 1e6)
    floor_us, our_us = statistics.median(floor_times), statistics.median(ours)
    return BenchRow(case.name, counted, round(floor_us, 2), round(our_us, 2),
                    round(floor_us / our_us, 2), f"served by {mechanism}")


def run_bench(hits: int = 2000, repeat: int = 3, as_json: bool = False, fib: int = 20) -> int:
    """Measure every mechanism this host delivers; print the table, then the
    in-guest probe against untraced and the exit mechanism."""
    from kvmbench.bench.probes import run_probe_bench

    caps = probe_host()
    rows: list[BenchRow] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kvmbench-bench-") as tmp:
        binary = build_floor(Path(tmp))
        for case in CASES:
            if not caps.works(case.needs):
                skipped.append(f"{case.name}: {caps.why_not(case.needs)}")
                continue
            rows.append(bench_case(case, binary, hits, repeat, caps))
    probe = None
    if caps.works(Feature.IN_GUEST_PROBE):
        probe = run_probe_bench(caps, repeat, n=fib)
    else:
        skipped.append(f"in-guest probe: {caps.why_not(Feature.IN_GUEST_PROBE)}")
    if as_json:
        print(json.dumps({"host": caps.host, "rows": [asdict(r) for r in rows],
                          "probe": probe.as_dict() if probe is not None else None,
                          "skipped": skipped}, indent=1))
        return 0
    print(f"host: {caps.host}; guest {GUEST}, {hits} hits, median of {repeat} alternating runs")
    header = ("mechanism", "floor us/hit", "kvmbench us/hit", "ratio", "")
    # step rows are per step; the floor of step-compare is plain single-step
    table = [(r.name, f"{r.floor_us:.1f}", f"{r.kvmbench_us:.1f}", f"{r.ratio:.2f}", r.note)
             for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
    for line in skipped:
        print(f"skipped {line}")
    if probe is not None:
        print(probe.describe())
    return 0
