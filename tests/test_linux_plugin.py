"""The TCG counting plugin on the small PVH guest of the QEMU tests: exact
counts at full speed, counts read while the guest runs, and table changes
that take effect exactly at a stop and continue."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from kvmbench.backends.linux.plugin import ExecCounter, PluginError, build_plugin
from kvmbench.backends.qemu import DEBUG_EXIT_DEVICE, Qemu, QemuOptions

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed")

FIXTURE = Path(__file__).parent / "fixtures" / "qemu" / "counter.S"
LIMIT = 100_000_000


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("plugin-guest")
    obj, elf = out / "counter.o", out / "counter.elf"
    subprocess.run(["as", "--32", "-o", str(obj), str(FIXTURE)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-o", str(elf), str(obj)], check=True)
    nm = subprocess.run(["nm", str(elf)], check=True, capture_output=True, text=True).stdout
    return elf, {line.split()[2]: int(line.split()[0], 16) for line in nm.splitlines()}


@pytest.fixture
def counted(guest, tmp_path: Path):
    """``counted(*addresses)``: a counter table and a QEMU with the plugin on it."""
    started: list[tuple[Qemu, ExecCounter]] = []

    def start(*addresses: int) -> tuple[Qemu, ExecCounter]:
        counter = ExecCounter.create(tmp_path, 64)
        counter.add(*addresses)
        qemu = Qemu.start(QemuOptions(kernel=guest[0], devices=(DEBUG_EXIT_DEVICE,), plugins=(counter.plugin_spec(),)))
        started.append((qemu, counter))
        return qemu, counter

    yield start
    for qemu, counter in started:
        qemu.close()
        counter.close()


def test_the_plugin_builds_and_exports_its_api_version() -> None:
    symbols = subprocess.run(["nm", "-D", str(build_plugin())], capture_output=True, text=True, check=True).stdout
    assert " D qemu_plugin_version" in symbols and " T qemu_plugin_install" in symbols


def test_every_execution_of_an_address_is_counted(counted, guest) -> None:
    qemu, counter = counted(guest[1]["loop"], guest[1]["_start"])
    qemu.cont()
    assert qemu.wait_exit(60) == 42
    assert counter.count(guest[1]["loop"]) == LIMIT
    assert counter.count(guest[1]["_start"]) == 1


def test_counts_grow_while_the_guest_runs(counted, guest) -> None:
    qemu, counter = counted(guest[1]["loop"])
    qemu.cont()
    qemu.wait_for_console("K", 30)
    first = counter.count(guest[1]["loop"])
    time.sleep(0.05)
    assert counter.count(guest[1]["loop"]) > first or qemu.exited
    assert qemu.status() in ("running", "shutdown") or qemu.exited


def test_an_address_added_at_a_stop_counts_exactly_from_there(counted, guest) -> None:
    qemu, counter = counted()
    qemu.cont()
    qemu.wait_for_console("K", 30)
    time.sleep(0.02)
    qemu.stop()
    done = struct.unpack("<I", qemu.read_physical(guest[1]["counter"], 4))[0]
    assert 0 < done < LIMIT
    counter.add(guest[1]["loop"])
    qemu.cont()
    assert qemu.wait_exit(60) == 42
    assert counter.count(guest[1]["loop"]) == LIMIT - done


def test_a_full_table_is_a_clear_error(tmp_path: Path) -> None:
    counter = ExecCounter.create(tmp_path, 2)
    counter.add(0x1000, 0x2000)
    with pytest.raises(PluginError, match="full"):
        counter.add(0x3000)
    counter.close()


def test_a_table_file_is_reopened_with_its_slots(tmp_path: Path) -> None:
    counter = ExecCounter.create(tmp_path, 8)
    counter.add(0x1000, 0x2000)
    counter.remove(0x1000)
    again = ExecCounter(counter.path, 8, atomic=False)
    assert again.addresses == [0x2000]
    again.close()
    counter.close()


def test_a_plugin_that_cannot_open_its_table_says_so(guest, tmp_path: Path) -> None:
    from kvmbench.backends.qemu import PluginSpec
    from kvmbench.errors import QemuError

    spec = PluginSpec(build_plugin(), (("table", str(tmp_path / "missing")),))
    with pytest.raises(QemuError, match="cannot open the table file"):
        Qemu.start(QemuOptions(kernel=guest[0], plugins=(spec,)))
