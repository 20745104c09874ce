"""The host capability probe: what this host's KVM really delivers.

CHECK_EXTENSION says yes to things that then fail (on kvm_pvm,
SET_GUEST_DEBUG2 lists USE_SW_BP, but an int3 ends in an emulation error), so
each feature is tried on the bundled ``probe`` guest. Every probe mode ends
in a normal guest exit when the trap is missed, and a watchdog pauses the
vCPU anyway if KVM_RUN does not come back. Results are cached per host
(kernel release and KVM module) because probing costs about a second.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from kvmbench.backends.capabilities import Feature, HostCapabilities, ProbeResult
from kvmbench.backends.kvm import abi
from kvmbench.backends.kvm.exits import Debug, Hlt
from kvmbench.backends.kvm import system
from kvmbench.backends.kvm.machine import (
    DrainDue,
    GuestExited,
    Int3Undelivered,
    Machine,
    Paused,
    ProbeRingFull,
    TrappedStore,
)
from kvmbench.errors import KvmbenchError
from kvmbench.guests import guest_path
from kvmbench.symbols import load_symbols

#: Hits each timed probe collects (the guest's bounded loops run 100 times).
HITS = 100
#: A probe whose KVM_RUN has not returned by then is paused and failed.
WATCHDOG_SECONDS = 3.0

# DR7 fields for slot 0 (SDM vol. 3, 18.2.4): L0 enable, RW0 at 16, LEN0 at 18.
_DR7_L0 = 1 << 0
_DR7_RW_WRITE, _DR7_RW_ACCESS = 0b01 << 16, 0b11 << 16
_DR7_LEN8 = 0b10 << 18
_DR7_GD = 0x400 | 1 << 13  # bit 10 reads as 1 (SDM vol. 3, 18.2.4)
_DR6_B0, _DR6_BD, _DR6_BS = 1 << 0, 1 << 13, 1 << 14
_RFLAGS_RF = 1 << 16
_ENABLE = abi.KVM_GUESTDBG_ENABLE


def host_identity() -> str:
    """Kernel release plus which KVM module serves /dev/kvm."""
    flavour = next(
        (m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if os.path.isdir(f"/sys/module/{m}")),
        "kvm",
    )
    return f"{os.uname().release} ({flavour})"


class ProbeFailed(Exception):
    """One feature did not work; the message is the observed failure."""


@contextmanager
def _probe_guest(mode: str) -> Iterator[Machine]:
    machine = Machine.boot(guest_path("probe"), [mode])
    watchdog = threading.Timer(WATCHDOG_SECONDS, machine.request_pause)
    watchdog.start()
    try:
        yield machine
    finally:
        watchdog.cancel()
        machine.close()


def _run(machine: Machine) -> object:
    event = machine.run()
    if isinstance(event, Paused):
        raise ProbeFailed(f"KVM_RUN did not return within {WATCHDOG_SECONDS:g} s")
    return event


def _missed(event: object, what: str) -> ProbeFailed:
    if isinstance(event, GuestExited):
        return ProbeFailed(f"no {what}: the guest ran to its exit (code {event.code})")
    return ProbeFailed(f"no {what}: got {event}")


def _symbol(name: str) -> int:
    symbol = load_symbols(guest_path("probe")).get_by_name(name)
    if symbol is None:
        raise KvmbenchError(f"probe guest lacks symbol {name}")
    return symbol.address


def _timed_hits(machine: Machine, on_event: Callable[[object], bool]) -> list[float]:
    """Run until the guest exits; ``on_event`` says whether an event was a hit."""
    costs: list[float] = []
    while True:
        start = time.perf_counter_ns()
        event = _run(machine)
        if isinstance(event, GuestExited):
            return costs
        if not on_event(event):
            raise _missed(event, "expected exit")
        costs.append((time.perf_counter_ns() - start) / 1000)


def _run_to(m: Machine, symbol: str) -> None:
    """Run to ``symbol`` with a single-step-free hardware breakpoint."""
    address = _symbol(symbol)
    m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP, (address, 0, 0, 0, 0, 0, 0, _DR7_L0))
    event = _run(m)
    if not (isinstance(event, Debug) and event.pc == address):
        raise _missed(event, f"breakpoint at {symbol}")


def probe_single_step() -> list[float]:
    with _probe_guest("step") as m:
        # Time straight-line code, not the runtime's rep stos over .bss.
        _run_to(m, "probe_step_code")
        m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP)
        costs: list[float] = []
        visited = {m.regs.rip}
        for _ in range(HITS):
            start = time.perf_counter_ns()
            event = _run(m)
            if isinstance(event, GuestExited):
                break
            if not (isinstance(event, Debug) and event.dr6 & _DR6_BS):
                raise _missed(event, "single-step exit")
            costs.append((time.perf_counter_ns() - start) / 1000)
            visited.add(m.regs.rip)
        if len(visited) < 10:
            raise ProbeFailed(f"{len(costs)} single-steps visited only {len(visited)} addresses")
        return costs


def probe_blockirq() -> list[float]:
    # Accepting the flag is what matters: the VMM itself injects no timer
    # interrupt while stepping (DESIGN.md: KVM_INTERRUPT ignores BLOCKIRQ).
    with _probe_guest("step") as m:
        m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP | abi.KVM_GUESTDBG_BLOCKIRQ)
        event = _run(m)
        if not (isinstance(event, Debug) and event.dr6 & _DR6_BS):
            raise _missed(event, "single-step exit")
        return []


def probe_sync_regs() -> list[float]:
    with _probe_guest("step") as m:
        if not m.kvm.check_extension(abi.KVM_CAP_SYNC_REGS):
            raise ProbeFailed("KVM_CAP_SYNC_REGS not reported")
        m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP)
        _run(m)
        if m.regs.rip != m.vcpu.get_regs().rip:
            raise ProbeFailed("run page registers disagree with KVM_GET_REGS")
        # And the way in: a dirty rdi must reach the guest.
        m.regs.r15 = 0x5EED
        m.mark_regs_dirty()
        _run(m)
        if m.vcpu.get_regs().r15 != 0x5EED:
            raise ProbeFailed("kvm_dirty_regs did not write the registers")
        return []


def probe_hw_execute() -> list[float]:
    """DR0 on probe_target; each hit stepped over with the slot disabled, so
    this does not depend on RF (probed on its own)."""
    target = _symbol("probe_target")
    armed = (target, 0, 0, 0, 0, 0, 0, _DR7_L0)
    with _probe_guest("exec") as m:
        m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP, armed)

        def hit(event: object) -> bool:
            if not (isinstance(event, Debug) and event.pc == target and event.dr6 & _DR6_B0):
                return False
            m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP)
            step = _run(m)
            if not (isinstance(step, Debug) and step.dr6 & _DR6_BS):
                raise _missed(step, "single-step off the breakpoint")
            m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP, armed)
            return True

        costs = _timed_hits(m, hit)
    if len(costs) != HITS:
        raise ProbeFailed(f"{len(costs)} hits of {HITS}")
    return costs


def probe_resume_flag() -> list[float]:
    """After a DR0 hit, RF set: the next single-step must leave the breakpoint."""
    target = _symbol("probe_target")
    with _probe_guest("exec") as m:
        m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP, (target, 0, 0, 0, 0, 0, 0, _DR7_L0))
        event = _run(m)
        if not (isinstance(event, Debug) and event.pc == target):
            raise _missed(event, "execute breakpoint exit")
        m.regs.rflags |= _RFLAGS_RF
        m.mark_regs_dirty()
        m.set_guest_debug(
            _ENABLE | abi.KVM_GUESTDBG_USE_HW_BP | abi.KVM_GUESTDBG_SINGLESTEP,
            (target, 0, 0, 0, 0, 0, 0, _DR7_L0),
        )
        event = _run(m)
        if isinstance(event, Debug) and event.dr6 & _DR6_B0 and m.regs.rip == target:
            raise ProbeFailed("RF set, yet DR0 fired again at the same rip (no progress)")
        if not (isinstance(event, Debug) and event.dr6 & _DR6_BS):
            raise _missed(event, "single-step past the breakpoint")
        return []


def _probe_hw_watch(mode: str, rw: int) -> list[float]:
    var = _symbol("probe_var")
    with _probe_guest(mode) as m:
        m.set_guest_debug(
            _ENABLE | abi.KVM_GUESTDBG_USE_HW_BP, (var, 0, 0, 0, 0, 0, 0, _DR7_L0 | rw | _DR7_LEN8)
        )
        costs = _timed_hits(m, lambda e: isinstance(e, Debug) and bool(e.dr6 & _DR6_B0))
    if not costs:
        raise ProbeFailed("the watchpoint never fired: the guest ran to its exit")
    if len(costs) < HITS:
        raise ProbeFailed(f"{len(costs)} hits of {HITS}")
    return costs


def probe_hw_write_watch() -> list[float]:
    return _probe_hw_watch("write", _DR7_RW_WRITE)


def probe_hw_access_watch() -> list[float]:
    return _probe_hw_watch("read", _DR7_RW_ACCESS)


def probe_int3() -> list[float]:
    site = _symbol("probe_int3_site")
    with _probe_guest("int3") as m:
        m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_USE_SW_BP)
        try:
            event = _run(m)
        except KvmbenchError as e:
            raise ProbeFailed(str(e).split(" at rip=")[0]) from None
        if isinstance(event, Int3Undelivered):
            raise ProbeFailed("KVM_EXIT_INTERNAL_ERROR, suberror 1 (emulation): int3 is not delivered")
        if not (isinstance(event, Debug) and event.exception == 3):
            raise _missed(event, "#BP exit")
        if event.pc != site:
            raise ProbeFailed(f"#BP exit at {event.pc:#x}, expected the int3 at {site:#x}")
        return []


def probe_dr7_gd() -> list[float]:
    """General detect: a guest mov to DR0 must exit as #DB with DR6.BD, at the mov."""
    site = _symbol("probe_movdr_site")
    with _probe_guest("movdr") as m:
        m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_USE_HW_BP, (0, 0, 0, 0, 0, 0, 0, _DR7_GD))
        event = _run(m)
        if not (isinstance(event, Debug) and event.dr6 & _DR6_BD):
            raise _missed(event, "#DB for the mov to DR0")
        if event.pc != site:
            raise ProbeFailed(f"#DB at {event.pc:#x}, expected the mov at {site:#x}")
        return []


def probe_hlt_trap() -> list[float]:
    """A 1-byte hlt over probe_target, stepped over per hit as the engine does."""
    target = _symbol("probe_target")
    with _probe_guest("exec") as m:
        original = m.memory.read(target, 1)
        m.memory.write(target, b"\xf4")

        def hit(event: object) -> bool:
            if not (isinstance(event, Hlt) and m.regs.rip == target + 1):
                return False
            m.regs.rip = target
            m.mark_regs_dirty()
            m.memory.write(target, original)
            m.set_guest_debug(_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP | abi.KVM_GUESTDBG_BLOCKIRQ)
            step = _run(m)
            if not isinstance(step, Debug):
                raise _missed(step, "single-step over the original instruction")
            m.memory.write(target, b"\xf4")
            m.set_guest_debug(0)
            return True

        costs = _timed_hits(m, hit)
    if len(costs) != HITS:
        raise ProbeFailed(f"{len(costs)} hits of {HITS}")
    return costs


def probe_readonly_memslot() -> list[float]:
    var = _symbol("probe_var")
    with _probe_guest("write") as m:
        if not m.kvm.check_extension(abi.KVM_CAP_READONLY_MEM):
            raise ProbeFailed("KVM_CAP_READONLY_MEM not reported")
        m.memory.set_readonly_pages([var >> 12])

        def hit(event: object) -> bool:
            if isinstance(event, TrappedStore) and event.pieces[0][0] == var:
                for address, data in event.pieces:
                    m.memory.write(address, data)
                return True
            return False

        costs = _timed_hits(m, hit)
        if m.memory.read_u64(var) != HITS - 1:
            raise ProbeFailed("completed stores did not reach guest memory")
    if len(costs) != HITS:
        raise ProbeFailed(f"{len(costs)} store exits of {HITS}")
    return costs


def probe_in_guest_probe() -> list[float]:
    """A trampoline over probe_target's first instructions counts its 100
    calls in the guest (kvmbench.backends.kvm.trampolines), with no exit
    but the guest's own. No cost is given: a hit costs guest instructions,
    not an exit (``kvmbench bench`` measures it)."""
    from kvmbench.arch.displacement import Undisplaceable, analyse_function, plan_displacement
    from kvmbench.backends.kvm.trampolines import ProbeArea

    symbol = load_symbols(guest_path("probe")).get_by_name("probe_target")
    if symbol is None or not symbol.size:
        raise KvmbenchError("probe guest lacks a sized probe_target")
    with _probe_guest("exec") as m:
        area = ProbeArea(m)
        try:
            code = m.memory.read(symbol.address, symbol.size)
            try:
                displacement = plan_displacement(analyse_function(code, symbol.address),
                                                 symbol.address)
            except Undisplaceable as e:
                raise ProbeFailed(str(e)) from None
            installed = area.install(displacement)
            m.memory.write(symbol.address, installed.patch)
            keys: list[int] = []
            times: list[int] = []
            while True:
                event = _run(m)
                # The area's drain timer, or a full ring: drain and go on.
                if isinstance(event, (DrainDue, ProbeRingFull)):
                    if isinstance(event, ProbeRingFull):
                        area.rewind(m.regs)
                        m.mark_regs_dirty()
                    hits = area.drain(m.regs.rip)
                    keys += hits.keys
                    times += hits.time_ns
                    continue
                break
            if not isinstance(event, GuestExited) or event.code != 0:
                raise _missed(event, "clean exit through the probe")
            hits = area.drain(m.regs.rip)
            keys += hits.keys
            times += hits.time_ns
        finally:
            area.close()
    if len(keys) != HITS or set(keys) != {installed.key}:
        raise ProbeFailed(f"{len(keys)} hits counted in the guest of {HITS}")
    if times != sorted(times):
        raise ProbeFailed("the probe's timestamps are not monotonic")
    return []


def probe_interrupt_injection() -> list[float]:
    with _probe_guest("irq") as m:
        event = _run(m)
        if not isinstance(event, GuestExited) or event.code != 0:
            raise _missed(event, "timer interrupt")
        return []


PROBES: dict[Feature, Callable[[], list[float]]] = {
    Feature.SYNC_REGS: probe_sync_regs,
    Feature.SINGLE_STEP: probe_single_step,
    Feature.BLOCKIRQ: probe_blockirq,
    Feature.HW_EXECUTE: probe_hw_execute,
    Feature.RESUME_FLAG: probe_resume_flag,
    Feature.INT3: probe_int3,
    Feature.HLT_TRAP: probe_hlt_trap,
    Feature.HW_WRITE_WATCH: probe_hw_write_watch,
    Feature.HW_ACCESS_WATCH: probe_hw_access_watch,
    Feature.DR7_GD: probe_dr7_gd,
    Feature.READONLY_MEMSLOT: probe_readonly_memslot,
    Feature.INTERRUPT_INJECTION: probe_interrupt_injection,
    Feature.IN_GUEST_PROBE: probe_in_guest_probe,
}


def run_probe(feature: Feature) -> ProbeResult:
    try:
        costs = PROBES[feature]()
    except (ProbeFailed, KvmbenchError) as e:
        return ProbeResult(feature, False, str(e))
    median = statistics.median(costs) if costs else None
    return ProbeResult(feature, True, "", round(median, 2) if median is not None else None)


def cache_path(host: str) -> Path | None:
    """Where the probe of ``host`` is cached; None when there is no home
    (no HOME and no passwd entry): then it is not cached."""
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvmbench"
    except RuntimeError:
        return None
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in host)
    return base / f"probe-{safe}.json"


def _read_cache(path: Path | None, host: str) -> HostCapabilities | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        cached = HostCapabilities.from_results(
            host,
            (ProbeResult(Feature[r["feature"]], r["works"], r["detail"], r["median_us"])
             for r in data["results"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, unreadable, stale or damaged: probed again
    # A cache from an older kvmbench lacks the probes added since.
    return cached if set(cached.results) == set(PROBES) else None


def _write_cache(path: Path | None, caps: HostCapabilities) -> None:
    if path is None:
        return
    results = [dict(asdict(r), feature=r.feature.name) for r in caps.results.values()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"host": caps.host, "results": results}, indent=1))
        temporary.replace(path)  # readers never see half a file
    except OSError as e:
        warnings.warn(f"kvmbench: the probe is not cached ({path.parent}: {e.strerror})",
                      stacklevel=3)


def probe_host(refresh: bool = False) -> HostCapabilities:
    """The capabilities of this host: from the cache, or probed now and cached.

    A host whose /dev/kvm cannot be opened raises HostUnsupported and is
    never cached: a permission problem says nothing of what KVM delivers.
    """
    host = host_identity()
    path = cache_path(host)
    if not refresh:
        cached = _read_cache(path, host)
        if cached is not None:
            return cached
    # HostUnsupported, with the reason, before any probe runs.
    system.Kvm.open(system.KVM_DEVICE).close()
    caps = HostCapabilities.from_results(host, (run_probe(f) for f in PROBES))
    _write_cache(path, caps)
    return caps
