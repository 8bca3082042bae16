# ntalab: `make test` (host tests + every scenario in one Debian 6.1 guest) and
# `make labtest` (the full kernel x NIC matrix). Both install what is missing.
PY      := .venv/bin/python
NTALAB  := $(PY) -m lab
# Default: every Debian kernel of the manifest, and the sanitizer kernels once built.
KERNELS ?=
SMOKE_KERNEL ?= debian-6.1
SANITIZER_KERNELS ?= debian-6.1-kasan debian-6.12-kasan

.PHONY: deps constraints images sanitizer-kernels build test unit labtest bench lint checkpatch presubmit clean

deps:
	@./tools/ensure-deps.sh

# Resolve the Python dependencies anew (latest within pyproject.toml's ranges) into
# constraints.txt, which `make deps` installs exactly; commit it after make lint unit test.
constraints:
	./tools/refresh-constraints.sh

images: deps
	$(NTALAB) images fetch

# KASAN + lockdep + kmemleak kernels from Debian's own source (about 6 min each
# here, the first time); once built, `make labtest` runs them too.
sanitizer-kernels: deps
	$(NTALAB) images build $(SANITIZER_KERNELS)

build: images
	$(NTALAB) build $(addprefix -k ,$(KERNELS))

unit: deps
	$(PY) -m pytest tests -m "not lab" -q

# Host tests, then every scenario in one guest (the smoke kernel, all three NICs).
test: unit
	$(NTALAB) run -k $(SMOKE_KERNEL) --boot-profile default

labtest: images
	$(NTALAB) run $(addprefix -k ,$(KERNELS))

# NTA vs AF_PACKET vs tcpdump, one guest, A B A B rounds: table, bench.json, bench.png.
bench: images
	$(NTALAB) bench

lint: deps
	$(PY) -m ruff check lab pysniff tests
	$(PY) -m ruff format --check lab pysniff tests
	$(PY) -m mypy

checkpatch:
	./tools/checkpatch.sh

# The pre-submit check for a kernel patch: style, W=1 builds on every kernel,
# host tests, then the whole lab matrix (sanitizer kernels included once built).
presubmit: lint checkpatch images
	$(NTALAB) build --werror $(addprefix -k ,$(KERNELS))
	$(MAKE) unit labtest

clean:
	rm -rf results
