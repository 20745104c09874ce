"""Set-up a newcomer runs into: `make lab`/`kvmbench lab` hand JupyterLab its
own options, the project builds without deprecation warnings, and
JupyterLab's checkpoints stay out of git."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmbench import cli

REPO = Path(__file__).resolve().parent.parent


def test_kvmbench_lab_passes_jupyterlabs_options_through(monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[list[str]] = []

    def execv(path: str, argv: list[str]) -> None:  # the process image JupyterLab would replace
        launched.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execv", execv)
    monkeypatch.setattr(cli.subprocess, "run", lambda *a, **k: None)  # the kernelspec install
    with pytest.raises(SystemExit):
        cli.main(["lab", "--port=8899", "--no-browser", "--ServerApp.token=abc"])
    [argv] = launched
    assert argv[:4] == [sys.executable, "-m", "jupyter", "lab"]
    assert argv[-3:] == ["--port=8899", "--no-browser", "--ServerApp.token=abc"] or \
        argv[-4:-1] == ["--port=8899", "--no-browser", "--ServerApp.token=abc"]


def test_other_commands_still_refuse_unknown_options() -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", "--frobnicate"])
    assert exit_.value.code == 2


def test_make_lab_hands_lab_args_to_kvmbench_lab() -> None:
    out = subprocess.run(["make", "-n", "-C", str(REPO), "lab", "LAB_ARGS=--port=8899 --no-browser"],
                         capture_output=True, text=True, check=False).stdout
    assert "kvmbench lab --port=8899 --no-browser" in out


def test_notebook_checkpoints_are_ignored_by_git() -> None:
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q",
                              "notebooks/.ipynb_checkpoints/tour-checkpoint.ipynb"], check=False)
    assert ignored.returncode == 0


@pytest.mark.slow
def test_building_the_package_prints_no_deprecation_warning(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "deprecat" not in (done.stdout + done.stderr).lower(), done.stderr[-2000:]
