// sgemm for AVX2 + FMA: 6 x 16 micro-tiles (12 ymm accumulators, 2 for B, 1 broadcast).
// Compiled with -mavx2 -mfma (see CMakeLists.txt); only called after a run-time CPU check.
#include "cpu/sgemm.h"

#if defined(ACMTOOL_HAVE_AVX2)
#include <immintrin.h>

#include <array>
#include <utility>

namespace acmtool {
namespace cpu {
namespace avx2 {
namespace {

struct V {
  using T = __m256;
  static constexpr int kWidth = 8;
  static T Zero() { return _mm256_setzero_ps(); }
  static T Set1(float x) { return _mm256_set1_ps(x); }
  static T Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Prefetch(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
  static void Store(float* p, T x) { _mm256_storeu_ps(p, x); }
  static T Add(T a, T b) { return _mm256_add_ps(a, b); }
  static T Sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T Mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T Div(T a, T b) { return _mm256_div_ps(a, b); }
  static T Min(T a, T b) { return _mm256_min_ps(a, b); }
  static T Max(T a, T b) { return _mm256_max_ps(a, b); }
  static T Fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T Abs(T a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static T CopySign(T mag, T sign) {
    const T s = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sign));
  }
  static T Round(T a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static T Pow2(T n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static T SelectGt(T a, T b, T x, T y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
};
constexpr int kMR = 6;
constexpr int kNV = 2;

#include "cpu/sgemm_kernel.inc"

}  // namespace
}  // namespace avx2

const Sgemm* Avx2Sgemm() {
  static const Sgemm s{"avx2", avx2::kMR, avx2::kNR, &avx2::PackB, &avx2::PackA, &avx2::Gemm};
  return &s;
}

}  // namespace cpu
}  // namespace acmtool

#endif  // ACMTOOL_HAVE_AVX2
