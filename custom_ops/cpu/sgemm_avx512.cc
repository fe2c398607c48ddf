// sgemm for AVX-512F: 12 x 32 micro-tiles (24 zmm accumulators, 2 for B, A broadcast from memory).
// Compiled with -mavx512f -mfma (see CMakeLists.txt); only called after a run-time CPU check.
#include "cpu/sgemm.h"

#if defined(ACMTOOL_HAVE_AVX512)
#include <immintrin.h>

#include <array>
#include <utility>

namespace acmtool {
namespace cpu {
namespace avx512 {
namespace {

struct V {
  using T = __m512;
  static constexpr int kWidth = 16;
  static T Zero() { return _mm512_setzero_ps(); }
  static T Set1(float x) { return _mm512_set1_ps(x); }
  static T Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Prefetch(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }
  static void Store(float* p, T x) { _mm512_storeu_ps(p, x); }
  static T Add(T a, T b) { return _mm512_add_ps(a, b); }
  static T Sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T Mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T Div(T a, T b) { return _mm512_div_ps(a, b); }
  static T Min(T a, T b) { return _mm512_min_ps(a, b); }
  static T Max(T a, T b) { return _mm512_max_ps(a, b); }
  static T Fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T Abs(T a) { return _mm512_castsi512_ps(_mm512_and_epi32(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff))); }
  static T CopySign(T mag, T sign) {
    const __m512i m = _mm512_set1_epi32(0x7fffffff);
    return _mm512_castsi512_ps(_mm512_or_epi32(_mm512_and_epi32(_mm512_castps_si512(mag), m),
                                               _mm512_andnot_epi32(m, _mm512_castps_si512(sign))));
  }
  static T Round(T a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static T Pow2(T n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static T SelectGt(T a, T b, T x, T y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x); }
};
#ifndef ACMTOOL_AVX512_MR  // other tile shapes, for tuning: -DACMTOOL_AVX512_MR=14 -DACMTOOL_AVX512_NV=2
constexpr int kMR = 12;
constexpr int kNV = 2;
#else
constexpr int kMR = ACMTOOL_AVX512_MR;
constexpr int kNV = ACMTOOL_AVX512_NV;
#endif

#include "cpu/sgemm_kernel.inc"

}  // namespace
}  // namespace avx512

const Sgemm* Avx512Sgemm() {
  static const Sgemm s{"avx512", avx512::kMR, avx512::kNR, &avx512::PackB, &avx512::PackA, &avx512::Gemm};
  return &s;
}

}  // namespace cpu
}  // namespace acmtool

#endif  // ACMTOOL_HAVE_AVX512
