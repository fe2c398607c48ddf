// RegisterCustomOps: the library's one entry point (include/acmtool_ops.h).
//
// One domain, "ai.acmtool", created once per process and shared by every session that registers
// the library; ONNX Runtime keeps pointers to it and to the ops, so both live as long as the
// process (they are never released: at exit ONNX Runtime may already be gone).
#include "include/acmtool_ops.h"

#include <mutex>
#include <string>

#include "cpu/sgemm.h"
#include "dynamic_learners/dynamic_learners.h"
#include "ort_api.h"
#if defined(ACMTOOL_WITH_CUDA)
#include "cuda/dynamic_learners_cuda.h"
#endif

namespace acmtool {
namespace {

constexpr const char* kDomain = "ai.acmtool";
constexpr int kDynamicLearnersVersion = 1;  // the op version this library implements (export/schema.py)

#if !defined(ACMTOOL_VERSION)
#define ACMTOOL_VERSION "unknown"
#endif

std::string InfoJson() {
  std::string isas = "[";
#if defined(ACMTOOL_HAVE_AVX512)
  isas += "\"avx512\", ";
#endif
#if defined(ACMTOOL_HAVE_AVX2)
  isas += "\"avx2\", ";
#endif
  isas += "\"generic\"]";
#if defined(ACMTOOL_WITH_CUDA)
  const char* cuda = "true";
#else
  const char* cuda = "false";
#endif
  const std::string op_version = std::to_string(kDynamicLearnersVersion);
  return std::string("{\"library\": \"acmtool_ops\", \"acmtool\": \"") + ACMTOOL_VERSION +
         "\", \"ort_api\": " + std::to_string(ORT_API_VERSION) + ", \"onnxruntime_min\": \"1." +
         std::to_string(ORT_API_VERSION) + "\", \"domain\": \"" + kDomain +
         "\", \"ops\": {\"DynamicLearners\": [" + op_version + ", " + op_version + "]}, \"cpu_isas\": " + isas +
         ", \"cpu_isa\": \"" + cpu::BestSgemm().isa + "\", \"cuda\": " + cuda + "}";
}

OrtCustomOpDomain* CreateDomain() {
  static DynamicLearnersOp dynamic_learners_cpu(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  const OrtApi& api = Ort::GetApi();
  OrtCustomOpDomain* domain = nullptr;
  Ort::ThrowOnError(api.CreateCustomOpDomain(kDomain, &domain));
  Ort::ThrowOnError(api.CustomOpDomain_Add(domain, &dynamic_learners_cpu));
  // Each execution provider's kernel is registered under the same op name; ONNX Runtime picks
  // the one of the provider the node is assigned to.
#if defined(ACMTOOL_WITH_CUDA)
  // "CUDAExecutionProvider", once per float type of W1, B1, W2, B2 (cuda/dynamic_learners_cuda.h).
  static DynamicLearnersCudaOp dynamic_learners_cuda_f32(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  static DynamicLearnersCudaOp dynamic_learners_cuda_f16(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
  static DynamicLearnersCudaOp dynamic_learners_cuda_bf16(ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16);
  for (DynamicLearnersCudaOp* op : {&dynamic_learners_cuda_f32, &dynamic_learners_cuda_f16, &dynamic_learners_cuda_bf16}) {
    Ort::ThrowOnError(api.CustomOpDomain_Add(domain, op));
  }
#endif
  return domain;
}

}  // namespace
}  // namespace acmtool

extern "C" ACMTOOL_OPS_EXPORT const char* AcmtoolOpsInfo(void) {
  static const std::string info = acmtool::InfoJson();  // built once, thread-safe
  return info.c_str();
}

extern "C" ACMTOOL_OPS_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                         const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // nothing to report through
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // An older ONNX Runtime: every API version has CreateStatus, so say why in its version 1.
    const OrtApi* api1 = api_base->GetApi(1);
    const std::string message = std::string("libacmtool_ops needs ONNX Runtime API version ") +
                                std::to_string(ORT_API_VERSION) + " (onnxruntime >= 1." +
                                std::to_string(ORT_API_VERSION) + "); this is onnxruntime " +
                                api_base->GetVersionString();
    return api1 ? api1->CreateStatus(ORT_FAIL, message.c_str()) : nullptr;
  }
  Ort::InitApi(api);
  static std::mutex mutex;
  static OrtCustomOpDomain* domain = nullptr;
  return acmtool::StatusOf([&] {
    std::lock_guard<std::mutex> lock(mutex);
    if (domain == nullptr) domain = acmtool::CreateDomain();
    Ort::ThrowOnError(api->AddCustomOpDomain(options, domain));
  });
}
