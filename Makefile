# ntalab: `make test` (host unit tests + a 6.1 guest smoke run) and
# `make labtest` (the full kernel x NIC matrix). Both install what is missing.
PY      := .venv/bin/python
KERNELS ?= debian-6.1 debian-6.12
SMOKE_KERNEL ?= debian-6.1

.PHONY: deps images build test unit labtest bench lint checkpatch presubmit clean

deps:
	@./tools/ensure-deps.sh

images: deps
	$(PY) -m lab images fetch $(KERNELS)

build: images
	$(PY) -m lab build $(addprefix -k ,$(KERNELS))

unit: deps
	$(PY) -m pytest tests -m "not lab" -q

# Host unit tests, then the smoke scenarios on one kernel: guests really boot.
test: deps
	$(PY) -m lab images fetch $(SMOKE_KERNEL)
	$(PY) -m lab build -k $(SMOKE_KERNEL)
	$(PY) -m pytest tests -q --kernel=$(SMOKE_KERNEL) --nic-set=all

labtest: images
	$(PY) -m lab run $(addprefix -k ,$(KERNELS))

# NTA vs AF_PACKET vs tcpdump, one guest, A B A B rounds: table, bench.json, bench.png.
bench: images
	$(PY) -m lab bench

lint: deps
	$(PY) -m ruff check lab pysniff tests
	$(PY) -m ruff format --check lab pysniff tests
	$(PY) -m mypy

checkpatch:
	./tools/checkpatch.sh

# The pre-submit check for a kernel patch: style, W=1 builds on every kernel,
# host tests, then the whole lab matrix.
presubmit: lint checkpatch images
	$(PY) -m lab build --werror $(addprefix -k ,$(KERNELS))
	$(MAKE) unit labtest

clean:
	rm -rf build results
