// The CUDA kernel of DynamicLearners without ONNX Runtime: the launchers (each enqueues kernels on
// the stream it is given and returns the launch's cudaError_t) and RunDynamicLearners, which runs
// the whole op with them and cuBLASLt. dynamic_learners_cuda.cc calls it from ONNX Runtime;
// tests/test_dynamic_learners_cuda.cc calls the same functions directly.
//
//   Y[t] = B2 + sum_{i < K[t]} act(X[t] W1[i] + B1[i]) W2[i]
//
// Plan of one run (DESIGN.md, "Performance plan"), every step on the caller's stream:
//  1. bucket the tokens by K, descending, on the device: histogram of K (and its min and max),
//     exclusive scan of the N + 1 bucket sizes, scatter of the token indices into sorted order,
//     gather of X's rows into that order. The bucket starts and K's min and max are the one
//     device-to-host copy; the host waits for that copy alone (an event recorded right after it),
//     while the scatter and the gather, enqueued behind it, keep the device busy;
//  2. learner i runs on the prefix of the sorted tokens with K > i: GEMM1 writes its hidden
//     activations into columns [i h, (i + 1) h) of one hidden matrix H [rows, K_max h], so a row
//     with K = k holds its k learners side by side; one elementwise kernel adds B1 and applies
//     the activation to all of them;
//  3. the tokens with K = k form one segment of the sorted rows: GEMM2 maps H[segment, :k h] to
//     the segment's output rows against W2 seen as [(N h), Dout], so every output row is written
//     once, the learners summed inside the GEMM in fp32, B2 added in its epilogue;
//  4. one kernel scatters the sorted output rows back to their tokens (B2, or 0, for K = 0).
// When every token has the same K (budget 1.0 among others) steps 1's scatter and gather and
// step 4 are skipped: the GEMMs read X and write Y directly.
//
// fp32, fp16 and bf16: GEMMs accumulate in fp32 (CUBLAS_COMPUTE_32F; no TF32 for fp32), the
// elementwise kernels compute in fp32; H and the sorted output rows are stored in the op's type.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "cpu/sgemm.h"  // cpu::Activation: the op's activations, shared with the CPU kernel
#include "cuda/cublaslt_loader.h"

namespace acmtool {
namespace cuda {

using Activation = cpu::Activation;

enum class DType : int { kFloat32 = 0, kFloat16, kBFloat16 };
size_t ElementSize(DType type);
const char* DTypeName(DType type);  // "float32", "float16", "bfloat16"

// One call: device pointers and sizes. X [tokens, din], K [tokens] int64, W1 [n, din, h],
// B1 [n, h] or null, W2 [n, h, dout], B2 [dout] or null, Y [tokens, dout]; all of `dtype` but K.
struct Problem {
  DType dtype = DType::kFloat32;
  Activation activation = Activation::kGelu;
  int64_t tokens = 0, n = 0, din = 0, h = 0, dout = 0;
  const void* x = nullptr;
  const int64_t* k = nullptr;
  const void* w1 = nullptr;
  const void* b1 = nullptr;
  const void* w2 = nullptr;
  const void* b2 = nullptr;
  void* y = nullptr;
  // The most bytes the hidden matrix H may take; more sorted rows than fit run in chunks.
  // 0: kDefaultHiddenBytes. (The tests make it small to cover the chunked path.)
  size_t max_hidden_bytes = 0;
};

constexpr size_t kDefaultHiddenBytes = size_t{512} << 20;
constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's recommendation for Hopper
constexpr int64_t kMaxTokens = 2147483647;               // token indices are int32 on the device

// ------------------------------------------------------------------------------------------------
// Launchers

// Step 1. `scratch`: BucketScratchBytes(...) bytes of device memory, 256-byte aligned.
// `summary_host`: pinned host memory for SummaryLength(n) int64 values, filled by one async copy:
// the starts of the N + 1 buckets (bucket b holds the tokens with K = n - b), then K's min and max
// (over every token, valid or not). `summary_copied` is recorded right after that copy.
size_t BucketScratchBytes(int64_t tokens, int64_t n, int64_t din, DType type);
inline size_t SummaryLength(int64_t n) { return static_cast<size_t>(n) + 3; }
cudaError_t LaunchBucketByK(const Problem& p, void* scratch, int64_t* summary_host, cudaEvent_t summary_copied,
                            cudaStream_t stream);

// In place on a [rows, ld] matrix: columns [i width, (i + 1) width) of row r, for learners
// i < learners and rows r < rows_i, become act(value + bias[i width + c]) (bias may be null).
// rows_i = clamp(active[i] - row0, 0, rows) when `active` (device, int32) is given, else rows.
cudaError_t LaunchBiasActivation(DType type, Activation act, void* matrix, int64_t ld, int64_t learners,
                                 int64_t width, const void* bias, int64_t rows, const int32_t* active, int64_t row0,
                                 cudaStream_t stream);

// Step 4. Y[order[r]] = sorted[r] for r < sorted_rows, and B2 (or 0 without it) for
// sorted_rows <= r < tokens; order null means the identity.
cudaError_t LaunchScatterRows(DType type, const void* sorted, int64_t sorted_rows, const int32_t* order,
                              int64_t tokens, int64_t dout, const void* b2, void* y, cudaStream_t stream);

// Row-major D[m, n] = A[m, k] B[k, n] (+ bias[n]) with cuBLASLt, fp32 accumulation, on `stream`.
// m, n, k >= 1. *bias_applied tells whether the bias went into the epilogue (cuBLASLt may have no
// algorithm for it: the caller then adds it itself). Where cuBLASLt has no algorithm for the problem
// at all (odd sizes and alignments), or allow_cublas is false, LaunchSimpleGemm does it.
cublasStatus_t GemmRowMajor(const CublasLt& lt, cublasLtHandle_t handle, DType type, int64_t m, int64_t n, int64_t k,
                            const void* a, int64_t lda, const void* b, int64_t ldb, void* d, int64_t ldd,
                            const void* bias, bool* bias_applied, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream, bool allow_cublas = true);

// The fallback GEMM (same contract; a plain tiled kernel, slow but for any sizes and strides).
cudaError_t LaunchSimpleGemm(DType type, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda, const void* b,
                             int64_t ldb, void* d, int64_t ldd, const void* bias, cudaStream_t stream);

// ------------------------------------------------------------------------------------------------
// The whole op

// Device scratch for one run: ONNX Runtime's allocator in the op, cudaMalloc in the tests. Returns
// null when it cannot; what it hands out stays valid until the run's work on the stream is done
// (the owner frees it; ORT's stream-aware arena orders the reuse on the stream).
class ScratchAllocator {
 public:
  virtual ~ScratchAllocator() = default;
  virtual void* Allocate(size_t bytes) = 0;
};

struct Resources {
  const CublasLt* lt = nullptr;
  cublasLtHandle_t handle = nullptr;     // created on the stream's device
  cudaEvent_t summary_copied = nullptr;  // of the stream's device; cudaEventDisableTiming is best
  int64_t* summary_host = nullptr;       // pinned, at least SummaryLength(n) values
  bool simple_gemm = false;              // every GEMM through LaunchSimpleGemm (the tests' switch)
};

struct RunStatus {
  enum class Code { kOk, kKOutOfRange, kCuda, kCublas, kOutOfMemory, kUnsupported };
  Code code = Code::kOk;
  std::string message;         // what failed, for kCuda, kCublas, kOutOfMemory, kUnsupported
  int64_t k_min = 0, k_max = 0;  // for kKOutOfRange
  bool ok() const { return code == Code::kOk; }
};

// Runs the op; shapes must already be checked (the ORT kernel does that, with the CPU kernel's
// messages). K is checked here: kKOutOfRange, with K's min and max, when a value lies outside
// [0, n]; Y is then left unwritten. The host blocks once, on the copy of the bucket summary.
RunStatus RunDynamicLearners(const Problem& p, const Resources& resources, ScratchAllocator& scratch,
                             cudaStream_t stream);

}  // namespace cuda
}  // namespace acmtool
