// sgemm in portable C++ (any CPU; the compiler vectorises what it can): 4 x 16 micro-tiles over
// an 8-float vector type. The fallback where neither AVX-512F nor AVX2 is available.
#include <array>
#include <cmath>
#include <cstring>
#include <utility>

#include "cpu/sgemm.h"

namespace acmtool {
namespace cpu {
namespace generic {
namespace {

struct V {
  struct T {
    float v[8];
  };
  static constexpr int kWidth = 8;
  template <class F>
  static T Map(F f) {
    T r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = f(i);
    return r;
  }
  static T Zero() { return Set1(0.0f); }
  static T Set1(float x) { return Map([&](int) { return x; }); }
  static T Load(const float* p) { return Map([&](int i) { return p[i]; }); }
  static void Prefetch(const float*) {}
  static void Store(float* p, T x) { std::memcpy(p, x.v, sizeof(x.v)); }
  static T Add(T a, T b) { return Map([&](int i) { return a.v[i] + b.v[i]; }); }
  static T Sub(T a, T b) { return Map([&](int i) { return a.v[i] - b.v[i]; }); }
  static T Mul(T a, T b) { return Map([&](int i) { return a.v[i] * b.v[i]; }); }
  static T Div(T a, T b) { return Map([&](int i) { return a.v[i] / b.v[i]; }); }
  static T Min(T a, T b) { return Map([&](int i) { return a.v[i] < b.v[i] ? a.v[i] : b.v[i]; }); }
  static T Max(T a, T b) { return Map([&](int i) { return a.v[i] > b.v[i] ? a.v[i] : b.v[i]; }); }
  static T Fmadd(T a, T b, T c) { return Map([&](int i) { return a.v[i] * b.v[i] + c.v[i]; }); }
  static T Abs(T a) { return Map([&](int i) { return std::fabs(a.v[i]); }); }
  static T CopySign(T mag, T sign) { return Map([&](int i) { return std::copysign(mag.v[i], sign.v[i]); }); }
  static T Round(T a) { return Map([&](int i) { return std::nearbyint(a.v[i]); }); }
  static T Pow2(T n) { return Map([&](int i) { return std::ldexp(1.0f, static_cast<int>(n.v[i])); }); }
  static T SelectGt(T a, T b, T x, T y) { return Map([&](int i) { return a.v[i] > b.v[i] ? x.v[i] : y.v[i]; }); }
};
constexpr int kMR = 4;
constexpr int kNV = 2;

#include "cpu/sgemm_kernel.inc"

}  // namespace
}  // namespace generic

const Sgemm* GenericSgemm() {
  static const Sgemm s{"generic", generic::kMR, generic::kNR, &generic::PackB, &generic::PackA, &generic::Gemm};
  return &s;
}

}  // namespace cpu
}  // namespace acmtool
