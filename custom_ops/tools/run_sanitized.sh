#!/usr/bin/env bash
# Runs a command against a sanitized libacmtool_ops (cmake -DACMTOOL_SANITIZE=ON; `make test-asan`).
#
#   custom_ops/tools/run_sanitized.sh LIBRARY COMMAND [ARG...]
#
# The library links libasan and libubsan; a process that was not started with them cannot load it
# (ASan must come first in the initial library list), so they are preloaded here, into the command and
# every process it starts. ACMTOOL_OPS_LIBRARY makes the tests (and acmtool) use LIBRARY. Any finding
# fails the command: ASan stops at the first error, UBSan was compiled not to recover.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 LIBRARY COMMAND [ARG...]" >&2
  exit 2
fi
library=$1
shift
if [ ! -f "$library" ]; then
  echo "$0: $library does not exist; build it with: python -m acmtool.runtime.build build/custom_ops_asan -DACMTOOL_SANITIZE=ON" >&2
  exit 2
fi
# The runtimes the library itself was linked against (ASan's first), as the loader resolves them.
runtimes=$(ldd "$library" | awk '$1 ~ /^libasan\.so/ {print $3}'; ldd "$library" | awk '$1 ~ /^libubsan\.so/ {print $3}')
if ! grep -q libasan <<<"$runtimes"; then
  echo "$0: $library does not link libasan; build it with -DACMTOOL_SANITIZE=ON (make test-asan does)" >&2
  exit 2
fi
export LD_PRELOAD="$(echo $runtimes)${LD_PRELOAD:+ $LD_PRELOAD}"
# detect_leaks=0: CPython and torch keep memory until exit by design, which LeakSanitizer reports.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=66${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=67${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ACMTOOL_OPS_LIBRARY="$library"
export ACMTOOL_SANITIZE=1  # tests/test_example_runner.py then builds the program with the sanitizers too
exec "$@"
