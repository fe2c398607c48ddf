// See cublaslt_loader.h.
#include "cuda/cublaslt_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

namespace acmtool {
namespace cuda {
namespace {

struct LoadResult {
  std::unique_ptr<CublasLt> api;
  std::string error;
};

template <class F>
bool Resolve(void* handle, const char* name, F* out, std::string* missing) {
  *out = reinterpret_cast<F>(dlsym(handle, name));
  if (*out == nullptr) {
    *missing += (missing->empty() ? "" : ", ") + std::string(name);
    return false;
  }
  return true;
}

LoadResult Load() {
  const std::string soname = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
  std::vector<std::string> candidates;
  const char* env = std::getenv("ACMTOOL_CUBLASLT_LIBRARY");
  if (env != nullptr && *env != '\0') candidates.emplace_back(env);
  candidates.push_back(soname);
#if defined(ACMTOOL_CUBLASLT_DIR)
  candidates.push_back(std::string(ACMTOOL_CUBLASLT_DIR) + "/" + soname);
#endif

  LoadResult result;
  std::string tried;
  for (const std::string& path : candidates) {
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      tried += "\n  " + path + ": " + (why ? why : "not found");
      continue;
    }
    auto api = std::make_unique<CublasLt>();
    std::string missing;
    bool ok = true;
    ok &= Resolve(handle, "cublasLtCreate", &api->Create, &missing);
    ok &= Resolve(handle, "cublasLtGetVersion", &api->GetVersion, &missing);
    ok &= Resolve(handle, "cublasLtGetStatusString", &api->GetStatusString, &missing);
    ok &= Resolve(handle, "cublasLtMatmulDescCreate", &api->MatmulDescCreate, &missing);
    ok &= Resolve(handle, "cublasLtMatmulDescDestroy", &api->MatmulDescDestroy, &missing);
    ok &= Resolve(handle, "cublasLtMatmulDescSetAttribute", &api->MatmulDescSetAttribute, &missing);
    ok &= Resolve(handle, "cublasLtMatrixLayoutCreate", &api->MatrixLayoutCreate, &missing);
    ok &= Resolve(handle, "cublasLtMatrixLayoutDestroy", &api->MatrixLayoutDestroy, &missing);
    ok &= Resolve(handle, "cublasLtMatmulPreferenceCreate", &api->MatmulPreferenceCreate, &missing);
    ok &= Resolve(handle, "cublasLtMatmulPreferenceDestroy", &api->MatmulPreferenceDestroy, &missing);
    ok &= Resolve(handle, "cublasLtMatmulPreferenceSetAttribute", &api->MatmulPreferenceSetAttribute, &missing);
    ok &= Resolve(handle, "cublasLtMatmulAlgoGetHeuristic", &api->MatmulAlgoGetHeuristic, &missing);
    ok &= Resolve(handle, "cublasLtMatmul", &api->Matmul, &missing);
    if (!ok) {
      tried += "\n  " + path + ": lacks " + missing;
      dlclose(handle);
      continue;
    }
    const size_t version = api->GetVersion();
    if (version / 10000 != CUBLAS_VER_MAJOR) {
      tried += "\n  " + path + ": cuBLASLt version " + std::to_string(version) + ", this library needs major version " +
               std::to_string(CUBLAS_VER_MAJOR);
      dlclose(handle);
      continue;
    }
    api->path = path;
    result.api = std::move(api);  // the handle stays open for the life of the process
    return result;
  }
  result.error = "cannot load " + soname +
                 " (cuBLASLt, which the CUDA kernel of DynamicLearners runs its GEMMs with); tried:" + tried +
                 "\nInstall the nvidia-cublas wheel of CUDA " + std::to_string(CUBLAS_VER_MAJOR) +
                 " or a CUDA toolkit, or set ACMTOOL_CUBLASLT_LIBRARY to the library's path.";
  return result;
}

}  // namespace

const CublasLt* LoadCublasLt(std::string* error) {
  static std::once_flag once;
  static LoadResult* loaded = nullptr;  // never freed: kernels may use it until the process ends
  std::call_once(once, [] { loaded = new LoadResult(Load()); });
  if (!loaded->api && error) *error = loaded->error;
  return loaded->api.get();
}

}  // namespace cuda
}  // namespace acmtool
