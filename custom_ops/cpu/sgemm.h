// Single-threaded float32 GEMM with a packed right-hand side and a fused epilogue, one
// implementation per instruction set (AVX-512F, AVX2+FMA, portable C++), chosen at run time.
//
//   C[m, n] = act(      A[m, k] B[k, n] + bias[n])   accumulate == false
//   C[m, n] = act(C + A[m, k] B[k, n] + bias[n])     accumulate == true
//
// A and B are packed first (BLIS layout): A into tiles of `mr` rows, [k][mr] each, gathering its
// rows through an optional index; B into panels of `nr` columns, [k][nr] each, zero padded. A
// column slice of B is a range of whole panels (see GemmColumns), which is how callers split
// one product over threads. Threading is the caller's job: these functions never start threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace acmtool {
namespace cpu {

enum class Activation : int { kIdentity = 0, kRelu, kGelu, kGeluTanh, kSilu };

// "gelu" (erf), "gelu_tanh", "relu", "silu", "identity"; false for anything else.
bool ParseActivation(const std::string& name, Activation* out);
const char* ActivationNames();  // "gelu, gelu_tanh, relu, silu, identity"

struct Sgemm {
  const char* isa;  // "avx512", "avx2", "generic"
  int mr;           // rows of a packed A tile
  int nr;           // columns of a packed B panel
  // B [k, n] (row stride ldb) -> PackedBFloats(k, n) floats.
  void (*pack_b)(const float* b, int64_t ldb, int64_t k, int64_t n, float* packed);
  // Rows of A: row i is a + row_index[i] * lda, or a + i * lda when row_index is null
  // -> PackedAFloats(m, k) floats. packed_k: the packed A's column count, normally k; to fill
  // columns [c, c + k) of a packed A with more columns, see PackAColumns.
  void (*pack_a)(const float* a, int64_t lda, const int64_t* row_index, int64_t m, int64_t k, float* packed,
                 int64_t packed_k);
  // C [m, n] (row stride ldc) from packed A (m rows, k columns) and packed B (k rows, n columns).
  // bias: n floats or null. The first tiles of a packed A of more rows are a valid packed A of
  // fewer rows, so one packing serves every prefix of its rows.
  void (*gemm)(int64_t m, int64_t n, int64_t k, const float* packed_a, const float* packed_b, float* c,
               int64_t ldc, const float* bias, Activation act, bool accumulate);
};

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline size_t PackedAFloats(const Sgemm& s, int64_t m, int64_t k) {
  return static_cast<size_t>(CeilDiv(m, s.mr) * s.mr * k);
}
inline size_t PackedBFloats(const Sgemm& s, int64_t k, int64_t n) {
  return static_cast<size_t>(CeilDiv(n, s.nr) * s.nr * k);
}

// Columns [panel_begin * nr, min(n, panel_end * nr)) of the product: the same call as gemm on a
// slice of whole B panels (and of C and bias).
inline void GemmColumns(const Sgemm& s, int64_t m, int64_t n, int64_t k, const float* packed_a,
                        const float* packed_b, float* c, int64_t ldc, const float* bias, Activation act,
                        bool accumulate, int64_t panel_begin, int64_t panel_end) {
  const int64_t col0 = panel_begin * s.nr;
  const int64_t col1 = panel_end * s.nr < n ? panel_end * s.nr : n;
  if (col1 <= col0) return;
  s.gemm(m, col1 - col0, k, packed_a, packed_b + col0 * k, c + col0, ldc, bias ? bias + col0 : nullptr, act,
         accumulate);
}

// Packs A's columns [0, k) as columns [col0, col0 + k) of a packed A of packed_k columns: threads
// that each computed some columns of a matrix can pack them into one shared packed A.
inline void PackAColumns(const Sgemm& s, const float* a, int64_t lda, int64_t m, int64_t k, float* packed,
                         int64_t packed_k, int64_t col0) {
  s.pack_a(a, lda, nullptr, m, k, packed + col0 * s.mr, packed_k);
}

// The fastest implementation this CPU supports.
const Sgemm& BestSgemm();
// `isa` is "avx512", "avx2", "generic", or empty / "auto" for BestSgemm(). Null when the name is
// unknown or this CPU (or this build) lacks the instruction set.
const Sgemm* FindSgemm(const std::string& isa);

}  // namespace cpu
}  // namespace acmtool
