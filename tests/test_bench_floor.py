"""The benchmark floor (kvmbench/bench/floor.c) builds and counts every hit.

Each mechanism runs benchloop for a small N on the real /dev/kvm. The
mechanisms are the ones this project's hosts deliver (DESIGN.md, host
table), so a floor that fails here is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kvmbench.bench.floor import FloorResult, build_floor, run_floor
from kvmbench.errors import HostUnsupported, MechanismUnavailable, UsageError
from kvmbench.guests import guest_path
from kvmbench.symbols import load_symbols

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed"),
    pytest.mark.skipif(
        not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="/dev/kvm is not usable"
    ),
]

#: Hits per run: guest code is slow on kvm_pvm hosts (boot alone ~60 ms).
N = 200
GUEST = guest_path("benchloop")


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_floor(tmp_path_factory.mktemp("floor"))


@pytest.fixture(scope="module")
def symbols() -> dict[str, int]:
    table = load_symbols(GUEST)
    found = {name: table.get_by_name(name) for name in ("bench_target", "bench_var")}
    assert all(found.values()), found
    return {name: symbol.address for name, symbol in found.items()}


def _check_timing(result: FloorResult) -> None:
    assert result.seconds > 0
    assert result.per_hit_us == pytest.approx(result.seconds / result.hits * 1e6, rel=1e-3)


@pytest.mark.parametrize(
    ("mechanism", "symbol"),
    [("hw-exec", "bench_target"), ("hlt-trap", "bench_target"), ("page-trap", "bench_var")],
)
def test_counts_every_hit(
    floor: Path, symbols: dict[str, int], mechanism: str, symbol: str
) -> None:
    result = run_floor(floor, mechanism, N, symbols[symbol])
    assert result.mechanism == mechanism
    assert result.hits == N
    _check_timing(result)
    assert result.first_hit_seconds is not None
    assert 0 < result.first_hit_seconds < result.seconds


def test_hw_exec_says_how_it_resumed(floor: Path, symbols: dict[str, int]) -> None:
    # RF where the host honours it, else slot off + single-step (kvm_pvm).
    assert run_floor(floor, "hw-exec", 3, symbols["bench_target"]).resume in ("rf", "step")


def test_single_step_counts_every_instruction(floor: Path) -> None:
    result = run_floor(floor, "single-step", N, 0)
    # Each loop iteration is several instructions, plus the guest's start-up.
    assert result.hits > N
    assert result.resume is None
    _check_timing(result)


def test_none_runs_the_guest_undisturbed(floor: Path) -> None:
    result = run_floor(floor, "none", N, 0)
    assert result.hits == N
    assert result.first_hit_seconds is None
    _check_timing(result)


def test_a_trap_on_the_wrong_address_is_a_mechanism_failure(
    floor: Path, symbols: dict[str, int]
) -> None:
    # bench_var is data: DR0 on it never fires, so 0 hits of N.
    with pytest.raises(MechanismUnavailable, match=r"floor hw-exec: 0 hits, expected 5"):
        run_floor(floor, "hw-exec", 5, symbols["bench_var"])


def test_a_failing_guest_is_a_mechanism_failure(floor: Path) -> None:
    with pytest.raises(MechanismUnavailable, match="guest exited with code 64"):
        run_floor(floor, "none", 5, 0, mode="bogus")


def test_bad_arguments_are_usage_errors(floor: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown floor mechanism"):
        run_floor(floor, "int3", 5, 0)
    with pytest.raises(UsageError, match="outside the guest image"):
        run_floor(floor, "hlt-trap", 5, 0x10)
    not_elf = tmp_path / "not.elf"
    not_elf.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(UsageError, match="not an x86-64 ELF64 image"):
        run_floor(floor, "none", 5, 0, image=not_elf)


def test_no_gcc_is_host_unsupported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HostUnsupported, match="gcc is needed to build the benchmark floor"):
        build_floor(tmp_path)


def test_hw_watch_counts_every_store_where_the_host_delivers_it(
    floor: Path, symbols: dict[str, int], caps
) -> None:  # type: ignore[no-untyped-def]
    from kvmbench.backends.capabilities import Feature

    if caps.works(Feature.HW_WRITE_WATCH):
        result = run_floor(floor, "hw-watch", N, symbols["bench_var"])
        assert result.hits == N
        _check_timing(result)
    else:
        # Where DR watchpoints never fire the floor must say so, not hang.
        with pytest.raises(MechanismUnavailable, match="0 hits"):
            run_floor(floor, "hw-watch", N, symbols["bench_var"])
