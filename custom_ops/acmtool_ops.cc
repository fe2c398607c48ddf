// RegisterCustomOps: the library's one entry point (include/acmtool_ops.h).
//
// One domain, "ai.acmtool", created once per process and shared by every session that registers
// the library; ONNX Runtime keeps pointers to it and to the ops, so both live as long as the
// process (they are never released: at exit ONNX Runtime may already be gone).
#include "include/acmtool_ops.h"

#include <mutex>
#include <string>

#include "dynamic_learners/dynamic_learners.h"
#include "ort_api.h"
#if defined(ACMTOOL_WITH_CUDA)
#include "dynamic_learners/cuda/dynamic_learners.h"  // the CUDA kernel (a later task)
#endif

namespace acmtool {
namespace {

constexpr const char* kDomain = "ai.acmtool";

OrtCustomOpDomain* CreateDomain() {
  static DynamicLearnersOp dynamic_learners_cpu;
  const OrtApi& api = Ort::GetApi();
  OrtCustomOpDomain* domain = nullptr;
  Ort::ThrowOnError(api.CreateCustomOpDomain(kDomain, &domain));
  Ort::ThrowOnError(api.CustomOpDomain_Add(domain, &dynamic_learners_cpu));
  // Each execution provider's kernel is registered under the same op name; ONNX Runtime picks
  // the one of the provider the node is assigned to.
#if defined(ACMTOOL_WITH_CUDA)
  static DynamicLearnersCudaOp dynamic_learners_cuda;  // GetExecutionProviderType: "CUDAExecutionProvider"
  Ort::ThrowOnError(api.CustomOpDomain_Add(domain, &dynamic_learners_cuda));
#endif
  return domain;
}

}  // namespace
}  // namespace acmtool

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
