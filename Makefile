# Everything a fresh Debian/Ubuntu machine needs (Python, gcc, make) to run
# kvmbench: `make lab` prepares and opens the workbench, `make test` tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test browser debian linux-image linux-debug guests bench probe clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lab]'
	touch $@

## lab: install everything, register the kernel, open JupyterLab on notebooks/;
## JupyterLab's options go in LAB_ARGS: make lab LAB_ARGS="--port=8899 --no-browser"
LAB_ARGS ?=
lab: $(STAMP) debian linux-image
	$(BIN)/kvmbench lab $(LAB_ARGS)

## test: the whole test suite (installs Debian's chromium for the browser test)
test: $(STAMP) browser debian linux-image
	$(BIN)/python -m pytest

# The real-browser test drives Debian's chromium; Playwright's own browser
# download is not used. Without root the test skips and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# QEMU for the qemu target and Linux sessions, busybox-static for the Linux
# initramfs, gdb and lldb as reference debuggers: Debian's packages, each
# installed only where missing (needs root, as browser does).
DEBIAN_PACKAGES := qemu-system-x86 busybox-static gdb lldb
debian:
	@missing=""; for package in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then echo "kvmbench needs Debian's$$missing (run make as root to install them)"; fi

## linux-image: Debian's current kernel (linux-image-amd64) into the user's
## cache, with the uncompressed vmlinux that boots fastest; never committed
linux-image: $(STAMP) debian
	@if command -v apt-get >/dev/null && [ -z "$$(apt-cache depends linux-image-amd64 2>/dev/null | grep Depends)" ] \
		&& [ "$$(id -u)" = 0 ]; then apt-get update -qq; fi
	$(BIN)/python -m kvmbench.backends.linux.image || echo "kvmbench: no Linux kernel image; the Linux tests will skip"

## linux-debug: also the kernel's vmlinux with DWARF (Debian's -dbg package,
## ~860 MB download), for drgn's types: task lists, dmesg
linux-debug: linux-image
	$(BIN)/python -m kvmbench.backends.linux.image --debug

## guests: rebuild the bundled guest ELFs from kvmbench/guests/src
guests:
	$(MAKE) -C kvmbench/guests

bench: $(STAMP)
	$(BIN)/kvmbench bench

probe: $(STAMP)
	$(BIN)/kvmbench probe

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
