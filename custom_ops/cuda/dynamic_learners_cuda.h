// DynamicLearners (domain ai.acmtool, version 1) on ONNX Runtime's CUDAExecutionProvider: the kernel
// struct. The op definition (schema, attribute, input checks) is dynamic_learners/op_definition.h,
// shared with the CPU kernel; the kernels and launchers are dynamic_learners_cuda_impl.{cuh,cu}.
//
// Registered three times under the same name (acmtool_ops.cc), once per float type: W1, B1, W2, B2
// declared float32, float16 or bfloat16, so that ONNX Runtime picks the kernel of the model's type.
// X stays dynamically typed (as in the CPU op: ONNX Runtime types Y like it), so a wrong X is the
// kernel's own clear error ("W1 is float32 but X is float16 ...").
//
// One Run: the shared checks (op_definition.h; the CPU kernel's, word for word), then
// RunDynamicLearners on ONNX Runtime's compute stream (KernelContext_GetGPUComputeStream; never the
// default stream) with scratch from ONNX Runtime's allocator for the device (KernelContext_GetScratchBuffer: its
// stream-aware arena, no cudaMalloc per call). K's range is checked on the device and comes back
// with the bucket sizes, in the one copy the GEMM shapes need. cuBLASLt: one handle per device,
// created on first use under a mutex and kept for the life of the process; the stream goes with
// every call. Per thread and device: the event and the pinned buffer of that copy (grow-only).
#pragma once

#include "cpu/sgemm.h"
#include "dynamic_learners/op_definition.h"
#include "ort_api.h"

namespace acmtool {

class DynamicLearnersCudaKernel {
 public:
  static constexpr const char* kProvider = "CUDAExecutionProvider";

  // Throws OpError on a bad attribute.
  explicit DynamicLearnersCudaKernel(const OrtKernelInfo* info);

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept;

 private:
  void Compute(OrtKernelContext* context) const;

  cpu::Activation activation_;
};

// Registered once per float type of W1, B1, W2, B2 (float32, float16, bfloat16).
using DynamicLearnersCudaOp = dynamic_learners::Op<DynamicLearnersCudaKernel>;

}  // namespace acmtool
