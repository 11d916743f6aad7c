# The two README commands: `make test` and `make book`.
#
# pip (not uv) installs into .venv: pip resolves torch==2.14.1 / torchvision==0.29.1 from the
# local disk on this project's machines.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON3 ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.upx-installed

# Sample ImageNet images. Unset (e.g. on GitHub Actions) means upx_core fetches them upstream,
# so only default it when the shared folder is actually there.
ifeq ($(origin UPX_DATA_DIR),undefined)
ifneq ($(wildcard ../shared/imagenet-samples/.),)
UPX_DATA_DIR := $(abspath ../shared/imagenet-samples)
endif
endif
ifdef UPX_DATA_DIR
export UPX_DATA_DIR
endif

CHROMIUM := /usr/bin/chromium

# glibc hands every freed block above its mmap threshold back to the OS and page-faults it in
# again at the next Adam step: half of the optimizer's CPU time was system time. Keeping large
# blocks on the heap made a 24-image batch 2.1x faster, masks bit for bit equal
# (benchmarks/allocator.py). Memory placement only; no arithmetic changes.
export MALLOC_MMAP_THRESHOLD_ ?= 17179869184
export MALLOC_TRIM_THRESHOLD_ ?= 17179869184
export MALLOC_TOP_PAD_ ?= 1073741824

# torch's OpenMP workers spin briefly, then sleep, between parallel regions: beside other work on
# the cores, libgomp's long default spin made a chapter several times slower (upx_core/threads.py,
# benchmarks/thread_policy.py). It must be set before torch loads, so here for every kernel.
export GOMP_SPINCOUNT ?= 10000

.PHONY: venv test book wheel paths clean chromium lab

venv: $(STAMP)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON3) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test,book]'
	touch $@

# Debian's chromium drives the headless browser test (playwright never downloads a browser here).
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
		else \
			echo "warning: $(CHROMIUM) missing and cannot apt-get it; browser tests will skip" >&2; \
		fi; \
	fi

test: venv chromium
	$(BIN)/ruff check .
	$(BIN)/pytest

# The package as a wheel beside the book (every page's download menu, book/_ext/upx_wheel.py):
# no public index has upx yet, and a downloaded chapter imports it. Built from a copy of the
# package, because setuptools' build/ folder in the tree would keep modules deleted since and
# pack them too; only upx_core goes in (pyproject's packages), no notebook results or images.
wheel: venv
	rm -rf _build/wheel && mkdir -p _build/wheel
	tmp=$$(mktemp -d) && cp -r pyproject.toml README.md upx_core "$$tmp" && \
	rc=0 && $(BIN)/python -m pip wheel "$$tmp" --no-deps --no-build-isolation -q \
		-w _build/wheel || rc=$$?; rm -rf "$$tmp"; exit $$rc

# UPX_BOOK_STATIC: a folder of html_static_path that a chapter may write files into for its
# page to load on demand (chapter 8's explorer pictures), kept beside the execution cache so
# that both go together.
book: venv wheel
	@mkdir -p _build/book-static
	@start=$$(date +%s); \
	rc=0; UPX_BOOK_STATIC=$(CURDIR)/_build/book-static \
		$(BIN)/jupyter-book build . -W -n --keep-going || rc=$$?; \
	echo "book build wall time: $$(( $$(date +%s) - start )) s (exit $$rc)"; \
	exit $$rc

# The case-study chapters again, at full size, on two floating-point paths unlike the book
# build's (other CPU kernels; one thread): a claim of the book must not depend on one trajectory.
paths: venv
	$(BIN)/python benchmarks/arithmetic_paths.py --chapters 04 05 06 --paths other-simd one-thread

# The chapters in JupyterLab, under the same environment as the book build.
lab: venv
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
