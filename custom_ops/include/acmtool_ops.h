// The one entry point of libacmtool_ops: ONNX Runtime calls it when an application registers the
// library (SessionOptions.register_custom_ops_library in Python, RegisterCustomOpsLibrary in C++).
// It adds the custom-op domain "ai.acmtool" (DynamicLearners, version 1) to `options`, for the
// CPU execution provider (and the CUDA one in builds that have it).
//
// The library never links libonnxruntime: it uses only the OrtApi that `api_base` hands it, and
// needs ONNX Runtime API version 29 or newer (onnxruntime >= 1.29).
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

#ifdef __cplusplus
}
#endif
