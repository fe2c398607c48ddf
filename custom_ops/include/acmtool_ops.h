// The one entry point of libacmtool_ops: ONNX Runtime calls it when an application registers the
// library (SessionOptions.register_custom_ops_library in Python, RegisterCustomOpsLibrary in C++).
// It adds the custom-op domain "ai.acmtool" (DynamicLearners, version 1) to `options`, for the
// CPU execution provider (and the CUDA one in builds that have it).
//
// The library never links libonnxruntime: it uses only the OrtApi that `api_base` hands it, and
// needs ONNX Runtime API version 29 or newer (onnxruntime >= 1.29); an older one gets a status
// that says so, never a crash.
#pragma once

#if defined(_WIN32)
#define ACMTOOL_OPS_EXPORT __declspec(dllexport)
#else
#define ACMTOOL_OPS_EXPORT __attribute__((visibility("default")))
#endif

struct OrtStatus;
struct OrtSessionOptions;
struct OrtApiBase;

#ifdef __cplusplus
extern "C" {
#endif

ACMTOOL_OPS_EXPORT OrtStatus* RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base);

// What this build holds, as one JSON object (static storage; needs no ONNX Runtime): the acmtool
// version it was built with ("acmtool"), the ORT API version of its headers, the lowest onnxruntime
// it loads into ("ort_api", "onnxruntime_min"), its domain and op versions ("ops": {name: [first,
// last]}), the CPU kernels compiled in and the one this CPU will use, and whether CUDA is in.
// acmtool.runtime.library_info() reads it with ctypes; `acmtool library-path --info` prints it.
ACMTOOL_OPS_EXPORT const char* AcmtoolOpsInfo(void);

#ifdef __cplusplus
}
#endif
