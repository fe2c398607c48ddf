// Run-time choice of the sgemm implementation, and the activation names.
#include "cpu/sgemm.h"

namespace acmtool {
namespace cpu {

const Sgemm* GenericSgemm();
#if defined(ACMTOOL_HAVE_AVX2)
const Sgemm* Avx2Sgemm();
#endif
#if defined(ACMTOOL_HAVE_AVX512)
const Sgemm* Avx512Sgemm();
#endif

namespace {

// __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
bool CpuHasAvx512() {
#if defined(ACMTOOL_HAVE_AVX512)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

bool CpuHasAvx2() {
#if defined(ACMTOOL_HAVE_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

const Sgemm* FindSgemm(const std::string& isa) {
  if (isa.empty() || isa == "auto") return &BestSgemm();
#if defined(ACMTOOL_HAVE_AVX512)
  if (isa == "avx512") return CpuHasAvx512() ? Avx512Sgemm() : nullptr;
#endif
#if defined(ACMTOOL_HAVE_AVX2)
  if (isa == "avx2") return CpuHasAvx2() ? Avx2Sgemm() : nullptr;
#endif
  if (isa == "generic") return GenericSgemm();
  return nullptr;
}

const Sgemm& BestSgemm() {
  static const Sgemm* best = [] {
#if defined(ACMTOOL_HAVE_AVX512)
    if (CpuHasAvx512()) return Avx512Sgemm();
#endif
#if defined(ACMTOOL_HAVE_AVX2)
    if (CpuHasAvx2()) return Avx2Sgemm();
#endif
    return GenericSgemm();
  }();
  return *best;
}

bool ParseActivation(const std::string& name, Activation* out) {
  if (name == "gelu") *out = Activation::kGelu;
  else if (name == "gelu_tanh") *out = Activation::kGeluTanh;
  else if (name == "relu") *out = Activation::kRelu;
  else if (name == "silu") *out = Activation::kSilu;
  else if (name == "identity") *out = Activation::kIdentity;
  else return false;
  return true;
}

const char* ActivationNames() { return "gelu, gelu_tanh, relu, silu, identity"; }

}  // namespace cpu
}  // namespace acmtool
