#!/usr/bin/env bash
# The GPU checks of the CUDA kernel of DynamicLearners, in one command, offline, within 5 minutes:
#
#   benchmarks/gpu_check.sh [--no-build] [--quick]
#
#   1. build   custom_ops with -DACMTOOL_CUDA=ON into build/custom_ops_cuda (with --no-build, or when
#              this machine has no nvcc or cmake, the build already there is used: carry it along)
#   2. launcher test   build/custom_ops_cuda/test_dynamic_learners_cuda (the launchers against a CPU
#              reference; needs no ONNX Runtime)
#   3. pytest  tests/test_custom_op_cuda.py against that library (the onnxruntime-gpu tests skip,
#              saying so, when onnxruntime-gpu is not installed)
#   4. benchmark   benchmarks/op_cuda.py: dense MLP vs DynamicLearners at budgets 0.25, 0.5, 1.0,
#              ViT-B MLP, 128 x 197 tokens, fp16 and bf16, pass/fail against the targets
#
# Ends with one JSON summary (also in $OUT/gpu_check.json, or build/gpu_check/ without $OUT); logs of
# every step beside it. Exit 0 only when every step passed.
#
# Offline needs: python ($PYTHON, else .venv/bin/python, else python3) with numpy, torch (CUDA) and
# pytest, plus onnx and onnxruntime(-gpu) for step 3; the ONNX Runtime headers from $ORT_INCLUDE_DIR,
# build/ort-headers/ (copy ~/.cache/acmtool/ort-headers-0.4.9 there and carry it), or the per-user
# cache; cuBLAS from the nvidia-cublas wheel next to torch (found through python) or a CUDA toolkit.
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
DEADLINE=$((START + 290))  # the whole check stays under 5 minutes
OUTDIR=${OUT:-build/gpu_check}
mkdir -p "$OUTDIR"
BUILD=build/custom_ops_cuda
NO_BUILD=0
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --no-build) NO_BUILD=1 ;;
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (--no-build, --quick)" >&2; exit 2 ;;
  esac
done

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi

# remaining SECONDS_WANTED: the time a step may take, cut to what is left before the deadline
remaining() {
  local left=$((DEADLINE - $(date +%s)))
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

declare -A STATUS DETAIL
record() { STATUS[$1]=$2; DETAIL[$1]=$3; echo "== $1: $2 ${3:+($3)}"; }

echo "== machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "no nvidia-smi"; } | tee "$OUTDIR/machine.log"
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' 2>&1 | tee -a "$OUTDIR/machine.log"

# cuBLAS of nvcc's major version from the python environment's nvidia wheels: for the build
# (ACMTOOL_CUBLAS_ROOT) and for the library's loader at run time (ACMTOOL_CUBLASLT_LIBRARY).
NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
CUDA_MAJOR=$([ -n "$NVCC" ] && "$NVCC" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p' | head -1)
if [ -z "${ACMTOOL_CUBLAS_ROOT:-}" ]; then
  ACMTOOL_CUBLAS_ROOT=$("$PY" - "${CUDA_MAJOR:-13}" <<'EOF' 2>/dev/null
import glob, os, re, sys
major = sys.argv[1]
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
for root in roots:
    for inc in sorted(glob.glob(os.path.join(root, "cu*", "include")) + glob.glob(os.path.join(root, "cublas", "include"))):
        api = os.path.join(inc, "cublas_api.h")
        if os.path.isfile(api) and re.search(r"#define CUBLAS_VER_MAJOR %s\b" % major, open(api).read()):
            print(os.path.dirname(inc))
            sys.exit(0)
EOF
)
fi
export ACMTOOL_CUBLAS_ROOT
if [ -z "${ACMTOOL_CUBLASLT_LIBRARY:-}" ] && [ -n "$ACMTOOL_CUBLAS_ROOT" ]; then
  lib=$(ls "$ACMTOOL_CUBLAS_ROOT"/lib/libcublasLt.so.* 2>/dev/null | head -1)
  [ -n "$lib" ] && export ACMTOOL_CUBLASLT_LIBRARY=$lib
fi
if [ -z "${ORT_INCLUDE_DIR:-}" ] && [ -f build/ort-headers/onnxruntime_cxx_api.h ]; then
  export ORT_INCLUDE_DIR=$PWD/build/ort-headers
fi
echo "nvcc: ${NVCC:-none}; cuBLAS: ${ACMTOOL_CUBLAS_ROOT:-not found}; cuBLASLt at run time: ${ACMTOOL_CUBLASLT_LIBRARY:-by soname}; ORT headers: ${ORT_INCLUDE_DIR:-cache}"

# ---- 1. build (a build folder carried from another machine or path keeps its binaries as the
# fallback; CMake will not reconfigure it here, so the build goes to a fresh folder)
PREBUILT=$BUILD
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -qx "CMAKE_CACHEFILE_DIR:INTERNAL=$PWD/$BUILD" "$BUILD/CMakeCache.txt"; then
  BUILD=build/custom_ops_cuda_here
fi
use_prebuilt() {
  if [ -x "$PREBUILT/test_dynamic_learners_cuda" ] && [ -f "$PREBUILT/libacmtool_ops.so" ]; then
    BUILD=$PREBUILT
    record build "$1" "$2: using the build in $PREBUILT"
  else
    record build fail "$2, and no build in $PREBUILT to use"
  fi
}
if [ "$NO_BUILD" = 1 ]; then
  use_prebuilt skipped "--no-build"
elif [ -z "$NVCC" ] || ! command -v cmake >/dev/null; then
  use_prebuilt skipped "no nvcc or cmake here"
else
  t0=$(date +%s)
  if timeout "$(remaining 170)" "$PY" acmtool/runtime/build.py "$BUILD" -DACMTOOL_CUDA=ON \
      ${ACMTOOL_CUBLAS_ROOT:+-DACMTOOL_CUBLAS_ROOT=$ACMTOOL_CUBLAS_ROOT} >"$OUTDIR/build.log" 2>&1; then
    record build pass "$(( $(date +%s) - t0 )) s in $BUILD"
  else
    tail -30 "$OUTDIR/build.log"
    if [ "$BUILD" != "$PREBUILT" ]; then use_prebuilt fail "the build failed (build.log)"
    else record build fail "see build.log"
    fi
  fi
fi
LIBRARY=$PWD/$BUILD/libacmtool_ops.so

# ---- 2. the launcher test
if [ -x "$BUILD/test_dynamic_learners_cuda" ]; then
  timeout "$(remaining 90)" "$BUILD/test_dynamic_learners_cuda" >"$OUTDIR/launcher_test.log" 2>&1
  rc=$?
  tail -5 "$OUTDIR/launcher_test.log"
  case $rc in
    0) record launcher_test pass "$(tail -1 "$OUTDIR/launcher_test.log")" ;;
    77) record launcher_test skipped "$(grep -m1 SKIP "$OUTDIR/launcher_test.log")" ;;
    124) record launcher_test fail "timed out" ;;
    *) grep -m20 FAIL "$OUTDIR/launcher_test.log"; record launcher_test fail "exit $rc, see launcher_test.log" ;;
  esac
else
  record launcher_test fail "not built"
fi

# ---- 3. pytest (the GPU tests through onnxruntime-gpu; they skip with the reason without it)
if "$PY" -c "import pytest" 2>/dev/null && [ -f "$LIBRARY" ]; then
  k_args=()
  [ "$QUICK" = 1 ] && k_args=(-k "not concurrent")
  ACMTOOL_OPS_LIBRARY=$LIBRARY timeout "$(remaining 120)" "$PY" -m pytest tests/test_custom_op_cuda.py -q -rs \
      -p no:cacheprovider --junitxml="$OUTDIR/pytest.xml" "${k_args[@]}" >"$OUTDIR/pytest.log" 2>&1
  rc=$?
  tail -15 "$OUTDIR/pytest.log"
  counts=$("$PY" - "$OUTDIR/pytest.xml" <<'EOF' 2>/dev/null
import sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot()
s = s if s.tag == "testsuite" else s.find("testsuite")
reasons = sorted({(e.get("message") or "")[:120] for e in s.iter("skipped")})
print(f"{s.get('tests')} tests, {s.get('failures')} failed, {s.get('errors')} errors, {s.get('skipped')} skipped"
      + (f"; skipped because: {' | '.join(reasons[:3])}" if reasons else ""))
EOF
)
  case $rc in
    0) record pytest pass "$counts" ;;
    5) record pytest skipped "no tests collected" ;;
    124) record pytest fail "timed out; $counts" ;;
    *) record pytest fail "exit $rc: $counts, see pytest.log" ;;
  esac
else
  record pytest skipped "no pytest in $PY, or no library"
fi

# ---- 4. the benchmark
if [ -x "$BUILD/test_dynamic_learners_cuda" ]; then
  iters=100; warmup=20
  [ "$QUICK" = 1 ] && { iters=30; warmup=5; }
  ACMTOOL_OPS_LIBRARY=$LIBRARY timeout "$(remaining 120)" "$PY" -m benchmarks.op_cuda --binary "$BUILD/test_dynamic_learners_cuda" \
      --library "$LIBRARY" --iters $iters --warmup $warmup --json "$OUTDIR/op_cuda.json" >"$OUTDIR/benchmark.log" 2>&1
  rc=$?
  sed -n '1,12p' "$OUTDIR/benchmark.log"
  case $rc in
    0) record benchmark pass "every target met" ;;
    1) record benchmark fail "a target missed, see op_cuda.json" ;;
    77) record benchmark skipped "no CUDA device" ;;
    124) record benchmark fail "timed out" ;;
    *) tail -20 "$OUTDIR/benchmark.log"; record benchmark fail "exit $rc, see benchmark.log" ;;
  esac
else
  record benchmark fail "not built"
fi

# ---- summary
overall=pass
for step in build launcher_test pytest benchmark; do
  [ "${STATUS[$step]}" = fail ] && overall=fail
done
[ "${STATUS[launcher_test]}" = skipped ] && [ "$overall" = pass ] && overall=incomplete
"$PY" - "$OUTDIR" "$overall" "$(( $(date +%s) - START ))" \
    "${STATUS[build]}" "${DETAIL[build]}" "${STATUS[launcher_test]}" "${DETAIL[launcher_test]}" \
    "${STATUS[pytest]}" "${DETAIL[pytest]}" "${STATUS[benchmark]}" "${DETAIL[benchmark]}" <<'EOF'
import json, os, sys
outdir, overall, elapsed = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = dict(zip(["build", "launcher_test", "pytest", "benchmark"],
                 [{"status": s, "detail": d} for s, d in zip(sys.argv[4::2], sys.argv[5::2])]))
bench = os.path.join(outdir, "op_cuda.json")
if os.path.isfile(bench):
    data = json.load(open(bench))
    steps["benchmark"]["rows"] = [{k: r[k] for k in ("dtype", "budget", "speedup", "target", "pass")}
                                  for r in data.get("rows", [])]
summary = {"status": overall, "elapsed_s": elapsed, "steps": steps}
text = json.dumps(summary, indent=2)
open(os.path.join(outdir, "gpu_check.json"), "w").write(text + "\n")
print(text)
EOF
[ "$overall" = pass ]
