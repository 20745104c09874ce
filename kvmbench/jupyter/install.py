"""Install the kvmbench kernelspec:
``python -m kvmbench.jupyter.install --user | --sys-prefix | --prefix P``."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

KERNEL_NAME = "kvmbench"


def spec_dir() -> Path:
    """The kernelspec template (kernel.json and logos), in the repository or
    installed as package data."""
    here = Path(__file__).resolve().parent
    candidates = (
        here.parent.parent / "kernelspec" / KERNEL_NAME,  # a source checkout
        Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME,  # the wheel's shared data
    )
    for candidate in candidates:
        if (candidate / "kernel.json").exists():
            return candidate
    raise FileNotFoundError(f"kvmbench kernelspec template not found (looked in {candidates})")


def install(user: bool = False, prefix: str | None = None, python: str = sys.executable) -> str:
    """Install the kernelspec with ``python`` in its argv; returns where it went."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / KERNEL_NAME
        shutil.copytree(spec_dir(), target)
        spec = json.loads((target / "kernel.json").read_text())
        spec["argv"][0] = python
        (target / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
        return KernelSpecManager().install_kernel_spec(
            str(target), KERNEL_NAME, user=user, prefix=prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvmbench.jupyter.install", description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix (a venv)")
    where.add_argument("--prefix", help="install into PREFIX/share/jupyter/kernels")
    args = parser.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = install(user=args.user, prefix=prefix)
    print(f"installed kernelspec {KERNEL_NAME} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
