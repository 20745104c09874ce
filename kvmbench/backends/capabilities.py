"""What a host's debug support really delivers, as found by running guests.

Backend-neutral: the KVM probe fills it in; the engine's planner reads it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class Feature(enum.Enum):
    """One debug facility a probe checks; the value is its table label."""

    INT3 = "int3 trap (USE_SW_BP)"
    HLT_TRAP = "hlt trap (1-byte)"
    HW_EXECUTE = "hw execute breakpoint (DR0-3)"
    RESUME_FLAG = "resume past a DRn hit with RF"
    HW_WRITE_WATCH = "hw write watchpoint (DR7 RW=01)"
    HW_ACCESS_WATCH = "hw access watchpoint (DR7 RW=11)"
    DR7_GD = "DR7.GD (mov to DRn traps)"
    SINGLE_STEP = "single-step"
    BLOCKIRQ = "single-step with BLOCKIRQ"
    READONLY_MEMSLOT = "read-only memslot (MMIO exit)"
    SYNC_REGS = "SYNC_REGS"
    INTERRUPT_INJECTION = "interrupt injection (KVM_INTERRUPT)"
    IN_GUEST_PROBE = "in-guest probe (jump to a VMM trampoline)"


@dataclass(frozen=True)
class ProbeResult:
    """Whether ``feature`` works; ``detail`` is the observed failure when not."""

    feature: Feature
    works: bool
    detail: str = ""
    median_us: float | None = None


@dataclass(frozen=True)
class HostCapabilities:
    """Probe results of one host (kernel release + KVM flavour)."""

    host: str
    results: dict[Feature, ProbeResult] = field(default_factory=dict)

    @classmethod
    def from_results(cls, host: str, results: Iterable[ProbeResult]) -> "HostCapabilities":
        return cls(host, {r.feature: r for r in results})

    @classmethod
    def assume_all(cls, host: str = "an ideal VMX/SVM host") -> "HostCapabilities":
        """Every feature present: for planning what a VMX/SVM host would do."""
        return cls(host, {f: ProbeResult(f, True) for f in Feature})

    def works(self, feature: Feature) -> bool:
        result = self.results.get(feature)
        return result is not None and result.works

    def why_not(self, feature: Feature) -> str:
        """One line saying why ``feature`` is unavailable (for errors and skips)."""
        result = self.results.get(feature)
        if result is None:
            return f"{feature.value}: not probed on {self.host}"
        if result.works:
            return f"{feature.value}: works on {self.host}"
        return f"{feature.value} does not work on {self.host}: {result.detail}"
