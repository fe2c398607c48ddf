// DynamicLearners (domain ai.acmtool, version 1) on ONNX Runtime's CUDAExecutionProvider: the op
// definition and its kernel struct. The CPU kernel is dynamic_learners/dynamic_learners.h; the
// kernels and launchers are dynamic_learners_cuda_impl.{cuh,cu}.
//
// Registered three times under the same name (acmtool_ops.cc), once per float type: W1, B1, W2, B2
// declared float32, float16 or bfloat16, so that ONNX Runtime picks the kernel of the model's type.
// X stays dynamically typed (as in the CPU op: ONNX Runtime types Y like it), so a wrong X is the
// kernel's own clear error ("X is float16 but W1 is float32 ...").
//
// One Run: the CPU kernel's checks (same order, same messages), then RunDynamicLearners on ONNX
// Runtime's compute stream (KernelContext_GetGPUComputeStream; never the default stream) with
// scratch from ONNX Runtime's allocator for the device (KernelContext_GetScratchBuffer: its
// stream-aware arena, no cudaMalloc per call). K's range is checked on the device and comes back
// with the bucket sizes, in the one copy the GEMM shapes need. cuBLASLt: one handle per device,
// created on first use under a mutex and kept for the life of the process; the stream goes with
// every call. Per thread and device: the event and the pinned buffer of that copy (grow-only).
#pragma once

#include "cpu/sgemm.h"
#include "ort_api.h"

namespace acmtool {

class DynamicLearnersCudaKernel {
 public:
  // Throws OpError on a bad attribute.
  explicit DynamicLearnersCudaKernel(const OrtKernelInfo* info);

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept;

 private:
  void Compute(OrtKernelContext* context) const;

  cpu::Activation activation_;
};

struct DynamicLearnersCudaOp
    : Ort::CustomOpBase<DynamicLearnersCudaOp, DynamicLearnersCudaKernel, /*WithStatus=*/true> {
  explicit DynamicLearnersCudaOp(ONNXTensorElementDataType type) : type_(type) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const;

  const char* GetName() const { return "DynamicLearners"; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }

  size_t GetInputTypeCount() const { return 6; }
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;

  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }

 private:
  ONNXTensorElementDataType type_;
};

}  // namespace acmtool
