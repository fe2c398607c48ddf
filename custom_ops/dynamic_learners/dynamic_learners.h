// DynamicLearners (domain ai.acmtool, version 1): the op definition and its CPU kernel.
//
//   Y[t] = B2 + sum_{i < K[t]} act(X[t] W1[i] + B1[i]) W2[i]
//
// inputs  X [..., Din] float, K [...] int64 in [0, N], W1 [N, Din, h], B1 [N, h] (optional),
//         W2 [N, h, Dout], B2 [Dout] (optional); attribute activation: gelu | gelu_tanh | relu |
//         silu | identity; output Y [..., Dout]. The specification is
//         acmtool/ops/dynamic_learners.py: dynamic_learners_reference.
//
// The CUDA kernel will sit beside this one (dynamic_learners/cuda/), registered under the same
// name for the CUDA execution provider.
#pragma once

#include <memory>

#include "cpu/sgemm.h"
#include "ort_api.h"

namespace acmtool {

struct PackedLearners;

class DynamicLearnersKernel {
 public:
  // Reads the attribute and, when W1 and W2 are constant initializers, packs them once.
  // Throws OpError on a bad attribute or an unusable ACMTOOL_CPU_ISA.
  explicit DynamicLearnersKernel(const OrtKernelInfo* info);
  ~DynamicLearnersKernel();

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept;

 private:
  void Compute(OrtKernelContext* context) const;

  enum class Schedule { kAuto, kRows, kColumns };

  cpu::Activation activation_;
  const cpu::Sgemm* sgemm_;
  Schedule schedule_ = Schedule::kAuto;
  // Set at creation and never changed afterwards: concurrent Run calls only read it.
  std::unique_ptr<const PackedLearners> prepacked_;
};

// Types: K is int64 and W1, B1, W2, B2 are float32, declared so ONNX Runtime rejects a wrong one
// when it loads the model, naming the input ("Type (tensor(double)) of input parameter (W1) ...").
// X is the one dynamically typed input (ONNX Runtime allows exactly one, and types Y like it), so
// that the kernel itself can answer a float16 or float64 X with a clear message.
struct DynamicLearnersOp : Ort::CustomOpBase<DynamicLearnersOp, DynamicLearnersKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const;

  const char* GetName() const { return "DynamicLearners"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }

  size_t GetInputTypeCount() const { return 6; }
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;

  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }
};

}  // namespace acmtool
