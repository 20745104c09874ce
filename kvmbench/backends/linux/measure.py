"""Measurements of Linux sessions: boot times, guest memory reads, and the
counting plugin's rate and cost. ``python -m kvmbench.backends.linux.measure``
prints them; ``kvmbench bench --linux`` can call :func:`measure_all`.

Every number is wall-clock on this host, so noisy: each is the median of a
few runs, and the runs of one comparison alternate.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kvmbench.backends.linux.machine import LinuxMachine, LinuxOptions

#: The test program that makes N personality(2) calls (tests/fixtures/linux).
SYSCALLS_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
	for (long i = 0; i < n; i++)
		syscall(SYS_personality, 0xffffffffUL);
	printf("made %ld personality calls\n", n);
	return 0;
}
"""



@dataclass
class Measurements:
    """Seconds, rates per second and ratios, by name, with their details."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: float, note: str = "") -> None:
        self.values[name] = value
        if note:
            self.notes[name] = note

    def lines(self) -> list[str]:
        return [f"{name:48s} {value:14.4g}  {self.notes.get(name, '')}" for name, value in self.values.items()]


def _median(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def build_syscalls(directory: Path) -> Path:
    source, binary = directory / "syscalls.c", directory / "syscalls"
    source.write_text(SYSCALLS_SOURCE)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def measure_boot(options: LinuxOptions, result: Measurements, runs: int = 3) -> None:
    """Cold boot to the ready init (no snapshot used or made) and a
    session from the cached snapshot."""
    cold = []
    for _ in range(max(1, runs - 1)):
        with LinuxMachine.boot(options, snapshot=False) as machine:
            cold.append(machine.times.total)
    result.add("boot: cold to ready init (s)", statistics.median(cold), f"runs {[round(t, 2) for t in cold]}")
    LinuxMachine.boot(options).close()  # make sure the snapshot exists
    warm = []
    for _ in range(runs + 2):
        with LinuxMachine.boot(options) as machine:
            assert machine.from_snapshot
            warm.append(machine.times.total)
            first_command = time.monotonic()
            machine.shell("true")
            command = time.monotonic() - first_command
    result.add("boot: session from snapshot (s)", statistics.median(warm), f"runs {[round(t, 3) for t in warm]}")
    result.add("shell: one trivial command (s)", command)


def measure_memory(machine: LinuxMachine, result: Measurements) -> None:
    """4 KiB physical reads three ways, and the VMCOREINFO scan."""
    qemu = machine.qemu
    address = machine.vmcoreinfo().physical_address
    n = 200

    def rate(read: Callable[[], object], count: int) -> float:
        started = time.monotonic()
        for _ in range(count):
            read()
        return (time.monotonic() - started) / count

    result.add("memory: 4 KiB read, /proc/PID/mem (us)", rate(lambda: qemu.read_physical(address, 4096), 5000) * 1e6)
    result.add("memory: 4 KiB read, QMP pmemsave (us)", rate(lambda: qemu.pmemsave(address, 4096), n) * 1e6)
    hmp = {"command-line": f"xp /512xg {address:#x}"}
    result.add(
        "memory: 4 KiB read, HMP xp (us)",
        rate(lambda: qemu.qmp("human-monitor-command", **hmp), n) * 1e6,
    )
    machine._vmcoreinfo = None
    hint = machine._snapshot_dir / "vmcoreinfo.address"
    hint.unlink(missing_ok=True)
    started = time.monotonic()
    machine.vmcoreinfo()
    result.add("vmcoreinfo: scan of guest RAM (s)", time.monotonic() - started)
    machine._program = None
    started = time.monotonic()
    program = machine.program()
    program.symbol("do_sys_openat2")
    result.add("drgn: Program + kernel kallsyms from memory (s)", time.monotonic() - started)


#: Workloads for the plugin's cost: one syscall in a loop, and a kernel-heavy
#: walk of sysfs that runs thousands of different kernel functions.
WORKLOADS = {
    "syscalls": "/bin/syscalls 1000000 > /dev/null",
    "sysfs walk": "ls -lR /sys/devices > /dev/null",
}


def _qemu_cpu_seconds(machine: LinuxMachine) -> float:
    """CPU time QEMU has used (all its threads): steadier than wall-clock
    on a host shared with other work (proc(5): utime, stime in ticks)."""
    with open(f"/proc/{machine.qemu.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(machine: LinuxMachine, command: str) -> float:
    """QEMU's CPU seconds for one run of ``command`` in the guest."""
    started = _qemu_cpu_seconds(machine)
    result = machine.shell(command, timeout=600)
    elapsed = _qemu_cpu_seconds(machine) - started
    if not result.ok:
        raise RuntimeError(f"{command!r} failed: {result.output[-200:]!r}")
    return elapsed


def measure_plugin(options: LinuxOptions, result: Measurements, runs: int = 3) -> None:
    """The plugin's exact counts and rate, and what counting costs the
    guest: no plugin, the plugin counting nothing, the 1000 functions the
    workload hits most, and every kernel function; runs alternate."""
    plain = LinuxMachine.boot(options)
    counting = LinuxMachine.boot(options, counting=True)
    try:
        counter = counting.counter
        assert counter is not None
        table = counting.symbols()
        functions = sorted({s.address for s in table.functions() if s.address >= 1 << 63})
        entry = table.get_by_name("__x64_sys_personality")
        assert entry is not None
        # Exactness and the rate on one function.
        counter.add(entry.address)
        started = time.monotonic()
        counting.shell("/bin/syscalls 1000000")
        one_elapsed = time.monotonic() - started
        result.add("plugin: exact count, 1000000 personality calls", counter.count(entry.address))
        result.add("plugin: syscall entries counted per second", counter.count(entry.address) / one_elapsed)
        counter.remove(entry.address)
        for name, command in WORKLOADS.items():
            # Which functions does this workload hit most? Count them all once.
            counter.add(*functions)
            counter.reset_counts()
            _timed(counting, command)
            hits = counter.counts()
            counter.remove(*functions)
            top = [address for address, n in sorted(hits.items(), key=lambda item: -item[1])[:1000]]
            times: dict[str, list[float]] = {"none": [], "empty": [], "top 1000": [], "all": []}
            total_hits = {"top 1000": 0, "all": 0}
            # A table change drops every translation, so each configuration
            # runs once to translate again and is timed on its second run;
            # the plugin-less machine is as warm.
            for _ in range(runs):
                _timed(plain, command)
                times["none"].append(_timed(plain, command))
                _timed(counting, command)
                times["empty"].append(_timed(counting, command))
                for label, addresses in (("top 1000", top), ("all", functions)):
                    counter.add(*addresses)
                    _timed(counting, command)
                    counter.reset_counts()
                    times[label].append(_timed(counting, command))
                    total_hits[label] += sum(counter.counts().values())
                    counter.remove(*addresses)
            base = statistics.median(times["none"])
            result.add(f"{name}: without the plugin (QEMU CPU s)", base, f"{command}; runs {[round(t, 2) for t in times['none']]}")
            for label in ("empty", "top 1000", "all"):
                median = statistics.median(times[label])
                note = f"runs {[round(t, 2) for t in times[label]]}"
                if label == "all":
                    note += f"; {len(functions)} functions"
                result.add(f"{name}: plugin, {label} counted, slowdown", median / base - 1, note)
            for label in ("top 1000", "all"):
                rate = total_hits[label] / sum(times[label])
                result.add(f"{name}: plugin, {label}: counted hits per QEMU CPU s", rate, f"{total_hits[label]} hits")
    finally:
        plain.close()
        counting.close()


def measure_all(runs: int = 3) -> Measurements:
    result = Measurements()
    with tempfile.TemporaryDirectory(prefix="kvmbench-measure-") as tmp:
        options = LinuxOptions.make(files={"/bin/syscalls": build_syscalls(Path(tmp))})
        measure_boot(options, result, runs)
        with LinuxMachine.boot(options) as machine:
            measure_memory(machine, result)
        measure_plugin(options, result, runs=runs)
    return result


def main() -> int:
    result = measure_all(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    print("\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
