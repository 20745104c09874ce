"""The kvmbench command, run as a user runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import HAVE_KVM, NO_KVM_REASON

pytestmark = pytest.mark.skipif(not HAVE_KVM, reason=NO_KVM_REASON)


def kvmbench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvmbench", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_run_hello_prints_the_guest_text_and_exits_zero() -> None:
    result = kvmbench("run", "hello")
    assert result.returncode == 0
    assert result.stdout == "Hello from a kvmbench guest!\n"


def test_run_fib_20_prints_6765() -> None:
    result = kvmbench("run", "fib", "20")
    assert result.returncode == 0
    assert "fib(20) = 6765" in result.stdout


def test_run_exits_with_the_guest_exit_code() -> None:
    assert kvmbench("run", "sort", "300").returncode == 64


def test_run_trace_prints_the_hit_table() -> None:
    result = kvmbench("run", "fib", "15", "--trace", "fib")
    assert result.returncode == 0
    row = next(line for line in result.stderr.splitlines() if line.startswith("1 "))
    assert row.split()[-1] == "1973"  # fib(15) makes 2*fib(16)-1 calls


def test_run_watch_prints_every_writer() -> None:
    result = kvmbench("run", "counter", "5", "--watch", "counter")
    assert result.returncode == 0
    writes = int(next(l for l in result.stdout.splitlines() if l.startswith("counter ")).split("writes=")[1])
    row = next(line for line in result.stderr.splitlines() if line.startswith("1 "))
    assert int(row.split()[-1]) == writes
    assert "increment+" in result.stderr and "add_ten+" in result.stderr


def test_run_break_reports_each_stop_and_goes_on() -> None:
    result = kvmbench("run", "fib", "3", "--break", "fib")
    assert result.returncode == 0
    assert result.stderr.count("[kvmbench] breakpoint 1") == 5  # fib(3): 5 calls


def test_unknown_guest_is_one_clear_line() -> None:
    result = kvmbench("run", "fob")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kvmbench: unknown guest 'fob'; bundled guests: hello, fib, sort, counter, callmix, "
        "selfmod, int3guest, ticks, spin, probe, benchloop"
    ]


def test_unknown_symbol_is_one_clear_line() -> None:
    result = kvmbench("run", "fib", "3", "--trace", "fob")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fob" in lines[0] and "fib" in lines[0]


def test_probe_prints_a_row_per_feature_and_says_why_one_fails() -> None:
    result = kvmbench("probe")
    assert result.returncode == 0
    for label in ("hw execute breakpoint", "int3 trap", "hlt trap", "read-only memslot",
                  "single-step", "hw write watchpoint"):
        assert label in result.stdout
    failing = [l for l in result.stdout.splitlines() if "  NO  " in l]
    assert all(len(l.split("NO", 1)[1].strip()) > 10 for l in failing)  # each says what happened


def test_probe_json_matches_the_table() -> None:
    data = json.loads(kvmbench("probe", "--json").stdout)
    features = {r["feature"] for r in data["results"]}
    assert {"INT3", "HLT_TRAP", "HW_EXECUTE", "HW_WRITE_WATCH", "READONLY_MEMSLOT"} <= features
    assert all(r["works"] or r["detail"] for r in data["results"])


def test_probe_from_scratch_finishes_within_ten_seconds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kvmbench", "probe", "--refresh"],
                            capture_output=True, text=True, timeout=60,
                            env={"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 10, f"probe took {elapsed:.1f} s"
    assert list(tmp_path.glob("kvmbench/probe-*.json"))


def test_bench_prints_a_ratio_for_every_mechanism_the_host_delivers() -> None:
    result = kvmbench("bench", "--hits", "200", "--repeat", "1", "--fib", "12", "--json",
                      timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["rows"]}
    assert {"hw execute slot", "software trap", "page trap (write watch)", "single-step"} <= set(rows)
    for row in rows.values():
        # The ratio is printed to two decimals, the times to two as well.
        assert row["ratio"] == pytest.approx(row["floor_us"] / row["kvmbench_us"], rel=0.02, abs=0.006)
    assert all(": " in line for line in data["skipped"])  # each skip says why
    probe = data["probe"]  # the in-guest probe row, where the host runs probes
    if probe is not None:
        assert probe["calls"] == 465 and probe["exit_mechanism"] and probe["hit_instructions"] > 2
        assert probe["guest_instructions"] > probe["calls"]


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed")
def test_run_on_qemu_counts_as_on_kvm() -> None:
    result = kvmbench("run", "fib", "12", "--target", "qemu", "--trace", "fib")
    assert result.returncode == 0, result.stderr
    assert "fib(12) = 144" in result.stdout
    assert re.search(r"stub breakpoint \(Z0\)\s+465", result.stderr), result.stderr


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed")
def test_attach_runs_for_the_seconds_asked_and_prints_the_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, Qemu, QemuOptions
    from kvmbench.guests import QEMU_EXTRA_ARGS, guest_path, pvh_command_line

    image = guest_path("spin")
    with Qemu.start(QemuOptions(kernel=image, append=pvh_command_line(image), memory="32M",
                                devices=(DEBUG_EXIT_DEVICE,), extra_args=QEMU_EXTRA_ARGS)) as qemu:
        started = time.monotonic()
        result = kvmbench("attach", qemu.gdb_address, "--symbols", str(image),
                          "--trace", "main", "--seconds", "1")
        assert result.returncode == 0, result.stderr
        assert 1 <= time.monotonic() - started < 30
        assert re.search(r"main\s+stub breakpoint \(Z0\)\s+1", result.stderr), result.stderr


def test_attach_to_nothing_is_one_line() -> None:
    result = kvmbench("attach", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot connect" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or shutil.which("gdb") is None,
                    reason="needs qemu-system-x86_64 and gdb")
def test_bench_on_qemu_compares_kvmbench_with_gdb_on_the_same_guest() -> None:
    from kvmbench.bench.remote import run_remote_bench

    result = run_remote_bench(low=50, high=250, repeat=1)
    assert result.kvmbench_hits_per_s > 0 and result.gdb_commands_hits_per_s > 0
    assert result.gdb_ignore_hits_per_s > 0 and "gdb's best" in result.describe()
