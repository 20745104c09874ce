"""``kvmbench bench``'s in-guest probe row: ``fib 20`` (``--fib N``) with a
tracepoint on ``fib`` (21891 calls) served by an in-guest probe, against the same guest
untraced and against the exit mechanism (a software trap), alternating in
one run so all three see the same machine load.

On a host whose KVM emulates guest code (kvm_pvm, about 1.6 us an
instruction) a probe's cost is the guest instructions it adds to every
hit, which is what carries over to a VMX/SVM host; the row gives that count
(the trampoline's, from its code) and the guest's own instruction count
(by single-stepping the untraced guest once), so the ratio by instruction
count stands beside the measured one. The goal is 1.15x of untraced.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

import kvmbench
from kvmbench.backends.capabilities import Feature, HostCapabilities
from kvmbench.backends.kvm.trampolines import hit_instructions
from kvmbench.engine.model import Mechanism, StopReason
from kvmbench.errors import KvmbenchError

GUEST, TARGET = "fib", "fib"
GOAL = 1.15


@dataclass(frozen=True)
class ProbeBench:
    n: int
    calls: int
    untraced_s: list[float] = field(default_factory=list)
    probe_s: list[float] = field(default_factory=list)
    exit_s: list[float] = field(default_factory=list)
    exit_mechanism: str = ""
    #: Guest instructions a hit adds (counting code, the jump in and back).
    hit_instructions: int = 0
    #: Instructions the untraced guest runs, boot to exit (None: not counted).
    guest_instructions: int | None = None

    def _median(self, runs: list[float]) -> float:
        return statistics.median(runs)

    @property
    def probe_ratio(self) -> float:
        return self._median(self.probe_s) / self._median(self.untraced_s)

    @property
    def exit_ratio(self) -> float:
        return self._median(self.exit_s) / self._median(self.untraced_s)

    def per_hit_us(self, runs: list[float]) -> float:
        return (self._median(runs) - self._median(self.untraced_s)) / self.calls * 1e6

    @property
    def instruction_ratio(self) -> float | None:
        """The probe's cost by instruction count alone."""
        if not self.guest_instructions:
            return None
        return 1 + self.calls * self.hit_instructions / self.guest_instructions

    def describe(self) -> str:
        untraced = self._median(self.untraced_s)
        lines = [
            f"in-guest probe: {GUEST} {self.n}, a tracepoint on {TARGET} "
            f"({self.calls} hits), median of {len(self.untraced_s)} alternating runs",
            f"  untraced        {untraced:6.2f} s  1.00x",
            f"  in-guest probe  {self._median(self.probe_s):6.2f} s  {self.probe_ratio:.2f}x  "
            f"{self.per_hit_us(self.probe_s):6.1f} us/hit   (goal {GOAL:.2f}x)",
            f"  exit: {self.exit_mechanism:9} {self._median(self.exit_s):6.2f} s  "
            f"{self.exit_ratio:.2f}x  {self.per_hit_us(self.exit_s):6.1f} us/hit",
        ]
        per_hit = f"  a hit adds {self.hit_instructions} guest instructions"
        if self.guest_instructions:
            per_insn = untraced / self.guest_instructions * 1e6
            per_hit += (f"; untraced the guest runs {self.guest_instructions} "
                        f"({self.guest_instructions / self.calls:.1f} a call, {per_insn:.2f} us "
                        f"each here): {self.instruction_ratio:.2f}x by instruction count, the "
                        f"probe's measured cost {self.per_hit_us(self.probe_s) / per_insn:.1f} "
                        "instruction times a hit")
        lines.append(per_hit)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "probe_ratio": self.probe_ratio, "exit_ratio": self.exit_ratio,
                "instruction_ratio": self.instruction_ratio,
                "probe_us_per_hit": self.per_hit_us(self.probe_s),
                "exit_us_per_hit": self.per_hit_us(self.exit_s)}


def _timed(caps: HostCapabilities, n: int, how: str) -> tuple[float, int, str]:
    """(seconds from continue to exit, hits, mechanism) of one run."""
    with kvmbench.open(GUEST, [n], capabilities=caps) as s:
        bp = None
        if how == "probe":
            bp = s.breakpoints.trace(TARGET, mechanism=Mechanism.IN_GUEST_PROBE)
        elif how == "exit":
            bp = s.breakpoints.trace(TARGET, kind="sw")
        start = time.perf_counter()
        stop = s.cont()
        elapsed = time.perf_counter() - start
        if stop.reason is not StopReason.EXITED or stop.exit_code != 0:
            raise KvmbenchError(f"the bench guest did not exit cleanly: {stop.describe()}")
        return elapsed, (bp.hit_count if bp else 0), (bp.served_by if bp else "")


def count_instructions(caps: HostCapabilities, n: int) -> int:
    """The untraced guest's instructions, boot to exit, by single-steps."""
    with kvmbench.open(GUEST, [n], capabilities=caps) as s:
        stop = s.stepi(1 << 62)
        if stop.reason is not StopReason.EXITED:
            raise KvmbenchError(f"the bench guest did not exit cleanly: {stop.describe()}")
        return int(stop.extra["steps"])


def run_probe_bench(caps: HostCapabilities, repeat: int = 3, instructions: bool = True,
                    n: int = 20) -> ProbeBench:
    if not caps.works(Feature.IN_GUEST_PROBE):
        raise KvmbenchError(caps.why_not(Feature.IN_GUEST_PROBE))
    runs: dict[str, list[float]] = {"untraced": [], "probe": [], "exit": []}
    calls, mechanism = 0, ""
    orders = (("untraced", "probe", "exit"), ("exit", "probe", "untraced"))
    for round_ in range(repeat):
        for how in orders[round_ % 2]:
            seconds, hits, served = _timed(caps, n, how)
            runs[how].append(seconds)
            if how != "untraced":
                if calls and hits != calls:
                    raise KvmbenchError(f"{how}: counted {hits} hits, another run {calls}")
                calls = hits
            if how == "exit":
                mechanism = served
    return ProbeBench(n, calls, runs["untraced"], runs["probe"], runs["exit"], mechanism,
                      hit_instructions(), count_instructions(caps, n) if instructions else None)
