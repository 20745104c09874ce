"""``kvmbench linux ... -- CMD``: boots, runs CMD with the requests armed,
prints CMD's output and the hit table, and exits with CMD's exit code;
bad arguments end in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixtures.linux.guest import build_syscalls, shared_options

from kvmbench.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is not installed"),
]


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shared_options(tmp_path_factory.mktemp("cli"))  # skips without a cached kernel
    return build_syscalls(tmp_path_factory.mktemp("cli-programs"))


def test_linux_runs_the_command_and_prints_its_output_and_the_hit_table(program: Path, capsys) -> None:
    status = main(["linux", "--file", f"{program}:/bin/syscalls", "--module", "cpuid",
                   "--trace", "__x64_sys_personality", "--break", "__x64_sys_personality",
                   "--", "/bin/syscalls", "20", ";", "exit", "5"])
    out, err = capsys.readouterr()
    assert status == 5
    assert out == "made 20 personality calls\n"
    assert err.count("[kvmbench] breakpoint 1 ") == 20
    assert "(__x64_sys_personality) on CPU 0" in err
    rows = [line.split() for line in err.splitlines() if line[:1].isdigit()]
    assert [(row[0], row[1], row[-1]) for row in rows] == [("1", "break", "20"), ("2", "trace", "20")]
    assert "plugin counter" in " ".join(rows[1])


@pytest.mark.parametrize(("argv", "message"), [
    (["linux", "--file", "nocolon", "--", "true"], "--file 'nocolon': use HOST:GUEST"),
    (["linux", "--kernel", "/nonexistent/vmlinux", "--", "true"], "kernel /nonexistent/vmlinux: No such file"),
    (["linux"], "usage: kvmbench linux"),
])
def test_bad_arguments_end_in_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
