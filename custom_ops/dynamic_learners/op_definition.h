// DynamicLearners (domain ai.acmtool, version 1): the op definition that every kernel of it shares.
//
//   Y[t] = B2 + sum_{i < K[t]} act(X[t] W1[i] + B1[i]) W2[i]
//
// inputs  X [..., Din], K [...] int64 in [0, N], W1 [N, Din, h], B1 [N, h] (optional),
//         W2 [N, h, Dout], B2 [Dout] (optional), all float inputs of one type; attribute
//         activation: gelu | gelu_tanh | relu | silu | identity; output Y [..., Dout], X's type.
// The contract is shared/DESIGN.md, "The ONNX operator"; the specification is
// acmtool/ops/dynamic_learners.py: dynamic_learners_reference (check_inputs has the same messages).
//
// Here: the schema ONNX Runtime sees, the attribute, the input views and the input checks. A kernel
// (CPU: dynamic_learners.h; CUDA: cuda/dynamic_learners_cuda.h) adds only its compute and a
// KernelSpec (the X types it computes, its token limit), so a bad model fails with the same words
// on every execution provider.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/sgemm.h"  // cpu::Activation
#include "ort_api.h"

namespace acmtool {
namespace dynamic_learners {

constexpr const char* kOpName = "DynamicLearners";
constexpr size_t kX = 0, kK = 1, kW1 = 2, kB1 = 3, kW2 = 4, kB2 = 5, kInputCount = 6;

// ---- schema

// K is int64 and W1, B1, W2, B2 are declared `float_type`, so that ONNX Runtime refuses a wrong one
// when it loads the model, naming the input. X is the one dynamically typed input (ONNX Runtime
// allows exactly one, and types Y like it), so that the kernel itself answers a wrong X clearly.
ONNXTensorElementDataType InputType(size_t index, ONNXTensorElementDataType float_type);
OrtCustomOpInputOutputCharacteristic InputCharacteristic(size_t index);  // B1, B2 optional

// The op as registered for one kernel: Kernel(const OrtKernelInfo*) may throw OpError;
// Kernel::kProvider is its execution provider. One instance per float type of the weights.
template <class Kernel>
struct Op : Ort::CustomOpBase<Op<Kernel>, Kernel, /*WithStatus=*/true> {
  explicit Op(ONNXTensorElementDataType float_type) : float_type_(float_type) {}

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** op_kernel) const {
    *op_kernel = nullptr;
    return StatusOf([&] { *op_kernel = new Kernel(info); });
  }
  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return Kernel::kProvider; }
  size_t GetInputTypeCount() const { return kInputCount; }
  ONNXTensorElementDataType GetInputType(size_t index) const { return InputType(index, float_type_); }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const { return InputCharacteristic(index); }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }

 private:
  ONNXTensorElementDataType float_type_;
};

// ---- attribute

// The required string attribute `activation`; OpError (INVALID_ARGUMENT) naming the choices.
cpu::Activation ReadActivation(const OrtKernelInfo* info);

// ---- inputs and their checks

// One input as a kernel sees it: present or not, its element type, its shape.
struct InputView {
  Ort::ConstValue value{nullptr};
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;

  bool present() const { return static_cast<const OrtValue*>(value) != nullptr; }
};

struct Inputs {
  InputView x, k, w1, b1, w2, b2;
};

// An absent optional input (given as "" or left off the end) is a view with present() false.
Inputs ViewInputs(const Ort::KernelContext& ctx);

// What a kernel can compute, as far as the checks are concerned.
struct KernelSpec {
  const char* name;                                    // "CPU": "the CPU kernel computes ..."
  std::vector<ONNXTensorElementDataType> float_types;  // of X (and so of W1, B1, W2, B2)
  const char* float_types_text;                        // "float32 (...)", after "computes "
  int64_t max_tokens;                                  // tokens per Run
};

// The sizes of a Run whose inputs passed CheckInputs.
struct Sizes {
  int64_t tokens = 0, n = 0, din = 0, h = 0, dout = 0;
  std::vector<int64_t> y_shape;  // X's shape with Dout for Din
};

// Every check but K's values: required inputs, dtypes, ranks and shapes, the kernel's limits.
// Throws OpError (INVALID_ARGUMENT) with "DynamicLearners: " and what is wrong.
Sizes CheckInputs(const Inputs& in, const KernelSpec& kernel);

// K's values, once the kernel has found their min and max (on the host or the device): throws
// when they leave [0, n]. Nothing may be computed from a K that has not passed this.
void CheckKRange(int64_t k_min, int64_t k_max, int64_t n);

[[noreturn]] void Invalid(const std::string& message);  // OpError "DynamicLearners: " + message

}  // namespace dynamic_learners
}  // namespace acmtool
