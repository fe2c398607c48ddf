// DynamicLearners (domain ai.acmtool, version 1): the CPU kernel. The op definition (schema,
// attribute, input checks) is op_definition.h, shared with the CUDA kernel (cuda/).
#pragma once

#include <memory>

#include "cpu/sgemm.h"
#include "dynamic_learners/op_definition.h"
#include "ort_api.h"

namespace acmtool {

struct PackedLearners;

class DynamicLearnersKernel {
 public:
  static constexpr const char* kProvider = "CPUExecutionProvider";

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

// Registered with W1, B1, W2, B2 declared float32 (the only type this kernel computes).
using DynamicLearnersOp = dynamic_learners::Op<DynamicLearnersKernel>;

}  // namespace acmtool
