// cuBLASLt, loaded at run time (dlopen) the first time a CUDA kernel needs it.
//
// Why not link it: a library built with ACMTOOL_CUDA must still load, and run its CPU kernel, on a
// machine without the CUDA libraries; and which libcublasLt a process has (the nvidia-cublas wheel
// that torch or onnxruntime-gpu brought, a CUDA toolkit) is only known there. libcublasLt itself
// carries its own static CUDA runtime, so nothing else follows it in.
//
// Where it is looked for, in order:
//   1. ACMTOOL_CUBLASLT_LIBRARY (environment): the full path of libcublasLt.so.<major>;
//   2. "libcublasLt.so.<major>" by its soname: a copy the process already has (torch, ONNX Runtime's
//      CUDA provider), LD_LIBRARY_PATH, the ld.so cache;
//   3. the folder CMake found the cuBLAS headers' library in (ACMTOOL_CUBLASLT_DIR, compiled in).
// <major> is the major version of the headers this library was compiled against (13 with CUDA 13);
// a libcublasLt of another major version is refused with a message that says so.
#pragma once

#include <cublasLt.h>

#include <string>

namespace acmtool {
namespace cuda {

// The entry points of libcublasLt this library calls.
struct CublasLt {
  decltype(&cublasLtCreate) Create;
  decltype(&cublasLtGetVersion) GetVersion;
  decltype(&cublasLtGetStatusString) GetStatusString;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic;
  decltype(&cublasLtMatmul) Matmul;
  std::string path;  // where it was loaded from, for messages
};

// The loaded library, or null with *error saying what was tried. Loads once per process (thread-safe);
// a failure is remembered, not retried.
const CublasLt* LoadCublasLt(std::string* error);

}  // namespace cuda
}  // namespace acmtool
