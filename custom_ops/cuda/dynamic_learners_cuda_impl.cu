// The kernels and launchers of DynamicLearners on CUDA, and RunDynamicLearners. See
// dynamic_learners_cuda_impl.cuh for the plan.
#include "cuda/dynamic_learners_cuda_impl.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

namespace acmtool {
namespace cuda {

size_t ElementSize(DType type) { return type == DType::kFloat32 ? 4 : 2; }

const char* DTypeName(DType type) {
  switch (type) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "?";
}

namespace {

// ------------------------------------------------------------------------------------------------
// Element types, vectors, activations

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// V elements moved as one load or store (16 bytes at most).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <Activation A>
__device__ __forceinline__ float Activate(float x) {
  if constexpr (A == Activation::kGelu) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
  } else if constexpr (A == Activation::kGeluTanh) {
    const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
  } else if constexpr (A == Activation::kRelu) {
    return x > 0.0f ? x : (x != x ? x : 0.0f);  // NaN stays NaN, as in torch
  } else if constexpr (A == Activation::kSilu) {
    return x / (1.0f + expf(-x));
  } else {
    return x;
  }
}

bool Aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Elements per vector for rows of `width` elements at `ld` apart, starting at the given pointers.
int VectorWidth(DType type, int64_t width, int64_t ld, std::initializer_list<const void*> pointers) {
  const int v = type == DType::kFloat32 ? 4 : 8;  // 16 bytes
  if (width % v != 0 || ld % v != 0) return 1;
  for (const void* p : pointers) {
    if (p != nullptr && !Aligned(p, 16)) return 1;
  }
  return v;
}

// Rows per block of the row kernels (a warp per row, 8 warps a block) and the grid limit.
constexpr int kRowsPerBlock = 8;
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridY = 65535;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ------------------------------------------------------------------------------------------------
// Step 1: bucket by K. Bucket b holds the tokens with K = n - b, so bucket order is K descending.

constexpr int kThreads = 256;
constexpr int64_t kSharedBuckets = 2048;  // n + 1 up to this: counting in shared memory per block
constexpr int kItemsPerThread = 4;        // the scatter's tile: kThreads * kItemsPerThread tokens

__global__ void InitBucketsKernel(int64_t buckets, unsigned* counts, long long* kminmax, int32_t* active) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < buckets;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    counts[b] = 0;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    kminmax[0] = LLONG_MAX;
    kminmax[1] = LLONG_MIN;
    active[0] = 0;  // n = 0 has no learner; the gather reads active[0] as its row count
  }
}

__global__ void HistogramKernel(const int64_t* __restrict__ k, int64_t tokens, int64_t n, unsigned* counts,
                                long long* kminmax) {
  extern __shared__ unsigned local[];  // n + 1 counters when n + 1 <= kSharedBuckets
  const int64_t buckets = n + 1;
  const bool shared = buckets <= kSharedBuckets;
  if (shared) {
    for (int64_t b = threadIdx.x; b < buckets; b += blockDim.x) local[b] = 0;
    __syncthreads();
  }
  long long lo = LLONG_MAX, hi = LLONG_MIN;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < tokens;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const long long v = k[t];
    lo = min(lo, v);
    hi = max(hi, v);
    if (v >= 0 && v <= n) {
      const int64_t b = n - v;
      if (shared) {
        atomicAdd(&local[b], 1u);
      } else {
        atomicAdd(&counts[b], 1u);
      }
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    lo = min(lo, __shfl_down_sync(0xffffffffu, lo, offset));
    hi = max(hi, __shfl_down_sync(0xffffffffu, hi, offset));
  }
  if ((threadIdx.x & 31) == 0 && lo <= hi) {
    atomicMin(&kminmax[0], lo);
    atomicMax(&kminmax[1], hi);
  }
  if (shared) {
    __syncthreads();
    for (int64_t b = threadIdx.x; b < buckets; b += blockDim.x) {
      if (local[b] != 0) atomicAdd(&counts[b], local[b]);
    }
  }
}

// One block: exclusive scan of the bucket sizes -> starts, in chunks of blockDim.x (a multiple of
// 32). Writes the scatter's cursors, active[i] = #{K > i} = start of bucket n - i, the summary that
// goes to the host, and whether one bucket holds every token.
__global__ void ScanBucketsKernel(const unsigned* counts, int64_t n, int64_t tokens, const long long* kminmax,
                                  unsigned* cursor, int32_t* active, int32_t* uniform, int64_t* summary) {
  __shared__ unsigned warp_sums[32];
  __shared__ unsigned carry;
  __shared__ int one_bucket;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (threadIdx.x == 0) {
    carry = 0;
    one_bucket = 0;
  }
  __syncthreads();
  const int64_t buckets = n + 1;
  for (int64_t base = 0; base < buckets; base += blockDim.x) {
    const int64_t b = base + threadIdx.x;
    const unsigned c = b < buckets ? counts[b] : 0u;
    if (b < buckets && static_cast<int64_t>(c) == tokens) one_bucket = 1;
    unsigned v = c;  // inclusive scan within the warp
    for (int offset = 1; offset < 32; offset <<= 1) {
      const unsigned u = __shfl_up_sync(0xffffffffu, v, offset);
      if (lane >= offset) v += u;
    }
    if (lane == 31) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
      unsigned w = lane < warps ? warp_sums[lane] : 0u;
      for (int offset = 1; offset < 32; offset <<= 1) {
        const unsigned u = __shfl_up_sync(0xffffffffu, w, offset);
        if (lane >= offset) w += u;
      }
      if (lane < warps) warp_sums[lane] = w;
    }
    __syncthreads();
    const unsigned start = carry + (warp > 0 ? warp_sums[warp - 1] : 0u) + v - c;
    if (b < buckets) {
      cursor[b] = start;
      summary[b] = start;
      if (b >= 1) active[n - b] = static_cast<int32_t>(start);
    }
    __syncthreads();
    if (threadIdx.x == blockDim.x - 1) carry = start + c;
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *uniform = one_bucket;
    summary[n + 1] = kminmax[0];
    summary[n + 2] = kminmax[1];
  }
}

// Token indices into sorted order. Each block takes a tile of tokens, ranks them within their
// bucket in shared memory, reserves its range of every bucket with one atomic, then writes.
// (The order within a bucket depends on which block reserves first; every row's result is the
// same wherever it sits.) Skipped when one bucket holds every token: the order is not used.
__global__ void ScatterTokensKernel(const int64_t* __restrict__ k, int64_t tokens, int64_t n, unsigned* cursor,
                                    int32_t* order, const int32_t* uniform) {
  if (*uniform) return;
  extern __shared__ unsigned tile[];  // local counts, then bases: 2 (n + 1) when n + 1 <= kSharedBuckets
  const int64_t buckets = n + 1;
  const bool shared = buckets <= kSharedBuckets;
  const int64_t tile_tokens = static_cast<int64_t>(blockDim.x) * kItemsPerThread;
  for (int64_t t0 = blockIdx.x * tile_tokens; t0 < tokens; t0 += static_cast<int64_t>(gridDim.x) * tile_tokens) {
    if (!shared) {
      for (int j = 0; j < kItemsPerThread; ++j) {
        const int64_t t = t0 + j * static_cast<int64_t>(blockDim.x) + threadIdx.x;
        if (t >= tokens) break;
        const int64_t v = k[t];
        if (v < 0 || v > n) continue;
        order[atomicAdd(&cursor[n - v], 1u)] = static_cast<int32_t>(t);
      }
      continue;
    }
    unsigned* count = tile;
    unsigned* base = tile + buckets;
    for (int64_t b = threadIdx.x; b < buckets; b += blockDim.x) count[b] = 0;
    __syncthreads();
    int64_t bucket[kItemsPerThread];
    unsigned rank[kItemsPerThread];
    for (int j = 0; j < kItemsPerThread; ++j) {
      const int64_t t = t0 + j * static_cast<int64_t>(blockDim.x) + threadIdx.x;
      bucket[j] = -1;
      if (t < tokens) {
        const int64_t v = k[t];
        if (v >= 0 && v <= n) {
          bucket[j] = n - v;
          rank[j] = atomicAdd(&count[bucket[j]], 1u);
        }
      }
    }
    __syncthreads();
    for (int64_t b = threadIdx.x; b < buckets; b += blockDim.x) {
      if (count[b] != 0) base[b] = atomicAdd(&cursor[b], count[b]);
    }
    __syncthreads();
    for (int j = 0; j < kItemsPerThread; ++j) {
      if (bucket[j] < 0) continue;
      const int64_t t = t0 + j * static_cast<int64_t>(blockDim.x) + threadIdx.x;
      order[base[bucket[j]] + rank[j]] = static_cast<int32_t>(t);
    }
    __syncthreads();  // the tile's counters are reused by the next tile
  }
}

// Sorted rows of X: dst[r] = src[order[r]] for r < *rows (the tokens with K >= 1), in units of U.
// Skipped when one bucket holds every token (the GEMMs then read X itself).
template <typename U>
__global__ void GatherRowsKernel(const U* __restrict__ src, int64_t row_units, const int32_t* __restrict__ order,
                                 const int32_t* rows, const int32_t* uniform, U* __restrict__ dst) {
  if (*uniform) return;
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (r >= *rows) return;
  const U* s = src + static_cast<int64_t>(order[r]) * row_units;
  U* d = dst + r * row_units;
  for (int64_t c = threadIdx.x; c < row_units; c += blockDim.x) d[c] = s[c];
}

// ------------------------------------------------------------------------------------------------
// Bias + activation, in place

template <typename T, Activation A, int V>
__global__ void BiasActivationKernel(T* matrix, int64_t ld, int64_t learner0, int64_t width, const T* bias,
                                     int64_t rows, const int32_t* active, int64_t row0) {
  const int64_t i = learner0 + blockIdx.y;
  int64_t m = rows;
  if (active != nullptr) m = min(max(static_cast<int64_t>(active[i]) - row0, int64_t{0}), rows);
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (r >= m) return;
  using P = Pack<T, V>;
  P* row = reinterpret_cast<P*>(matrix + r * ld + i * width);
  const P* b = bias != nullptr ? reinterpret_cast<const P*>(bias + i * width) : nullptr;
  const int64_t vectors = width / V;
  for (int64_t c = threadIdx.x; c < vectors; c += blockDim.x) {
    P x = row[c];
    if (b != nullptr) {
      const P bb = b[c];
#pragma unroll
      for (int j = 0; j < V; ++j) x.v[j] = FromFloat<T>(Activate<A>(ToFloat(x.v[j]) + ToFloat(bb.v[j])));
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) x.v[j] = FromFloat<T>(Activate<A>(ToFloat(x.v[j])));
    }
    row[c] = x;
  }
}

// ------------------------------------------------------------------------------------------------
// Step 4: back to the tokens

template <typename T, int V>
__global__ void ScatterRowsKernel(const T* __restrict__ sorted, int64_t sorted_rows, const int32_t* __restrict__ order,
                                  int64_t tokens, int64_t dout, const T* __restrict__ b2, T* __restrict__ y) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (r >= tokens) return;
  const int64_t t = order != nullptr ? order[r] : r;
  using P = Pack<T, V>;
  P* out = reinterpret_cast<P*>(y + t * dout);
  const int64_t vectors = dout / V;
  if (r < sorted_rows) {
    const P* in = reinterpret_cast<const P*>(sorted + r * dout);
    for (int64_t c = threadIdx.x; c < vectors; c += blockDim.x) out[c] = in[c];
  } else if (b2 != nullptr) {
    const P* in = reinterpret_cast<const P*>(b2);
    for (int64_t c = threadIdx.x; c < vectors; c += blockDim.x) out[c] = in[c];
  } else {
    P zero;
#pragma unroll
    for (int j = 0; j < V; ++j) zero.v[j] = FromFloat<T>(0.0f);
    for (int64_t c = threadIdx.x; c < vectors; c += blockDim.x) out[c] = zero;
  }
}

// ------------------------------------------------------------------------------------------------
// The fallback GEMM: row-major D[m, n] = A[m, k] B[k, n] (+ bias[n]), 16 x 16 tiles through shared
// memory, fp32 accumulation. Any sizes, strides and alignment; used only where cuBLASLt has no
// algorithm for a problem (and by the tests, to cover it).

constexpr int kTile = 16;

template <typename T>
__global__ void SimpleGemmKernel(int64_t row0, int64_t m, int64_t n, int64_t k, const T* __restrict__ a, int64_t lda,
                                 const T* __restrict__ b, int64_t ldb, T* __restrict__ d, int64_t ldd,
                                 const T* __restrict__ bias) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = row0 + static_cast<int64_t>(blockIdx.y) * kTile + ty;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTile + tx;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    as[ty][tx] = row < m && k0 + tx < k ? ToFloat(a[row * lda + k0 + tx]) : 0.0f;
    bs[ty][tx] = k0 + ty < k && col < n ? ToFloat(b[(k0 + ty) * ldb + col]) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kTile; ++q) acc += as[ty][q] * bs[q][tx];
    __syncthreads();
  }
  if (row < m && col < n) d[row * ldd + col] = FromFloat<T>(acc + (bias != nullptr ? ToFloat(bias[col]) : 0.0f));
}

// ------------------------------------------------------------------------------------------------
// Dispatch helpers

template <typename F>
void WithType(DType type, F&& f) {
  switch (type) {
    case DType::kFloat32: f(float{}); break;
    case DType::kFloat16: f(__half{}); break;
    case DType::kBFloat16: f(__nv_bfloat16{}); break;
  }
}

template <typename T, int V>
void LaunchBiasActivationTyped(Activation act, dim3 grid, dim3 block, cudaStream_t stream, T* m, int64_t ld,
                               int64_t learner0, int64_t width, const T* bias, int64_t rows, const int32_t* active,
                               int64_t row0) {
  switch (act) {
    case Activation::kGelu:
      BiasActivationKernel<T, Activation::kGelu, V><<<grid, block, 0, stream>>>(m, ld, learner0, width, bias, rows,
                                                                                active, row0);
      break;
    case Activation::kGeluTanh:
      BiasActivationKernel<T, Activation::kGeluTanh, V><<<grid, block, 0, stream>>>(m, ld, learner0, width, bias,
                                                                                    rows, active, row0);
      break;
    case Activation::kRelu:
      BiasActivationKernel<T, Activation::kRelu, V><<<grid, block, 0, stream>>>(m, ld, learner0, width, bias, rows,
                                                                                active, row0);
      break;
    case Activation::kSilu:
      BiasActivationKernel<T, Activation::kSilu, V><<<grid, block, 0, stream>>>(m, ld, learner0, width, bias, rows,
                                                                                active, row0);
      break;
    case Activation::kIdentity:
      BiasActivationKernel<T, Activation::kIdentity, V><<<grid, block, 0, stream>>>(m, ld, learner0, width, bias,
                                                                                    rows, active, row0);
      break;
  }
}

// Byte offsets of step 1's buffers in its scratch, each 256-byte aligned.
struct BucketLayout {
  size_t counts, cursor, kminmax, active, uniform, summary, order, sorted_x, total;
};

size_t Align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

BucketLayout MakeBucketLayout(int64_t tokens, int64_t n, int64_t din, DType type) {
  BucketLayout l{};
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t here = at;
    at += Align256(bytes);
    return here;
  };
  const size_t buckets = static_cast<size_t>(n) + 1;
  l.counts = take(buckets * sizeof(unsigned));
  l.cursor = take(buckets * sizeof(unsigned));
  l.kminmax = take(2 * sizeof(long long));
  l.active = take(std::max<size_t>(static_cast<size_t>(n), 1) * sizeof(int32_t));
  l.uniform = take(sizeof(int32_t));
  l.summary = take(SummaryLength(n) * sizeof(int64_t));
  l.order = take(static_cast<size_t>(tokens) * sizeof(int32_t));
  l.sorted_x = take(static_cast<size_t>(tokens) * static_cast<size_t>(din) * ElementSize(type));
  l.total = at;
  return l;
}

template <typename P>
P* At(void* base, size_t offset) {
  return reinterpret_cast<P*>(static_cast<char*>(base) + offset);
}

const void* Offset(const void* p, int64_t elements, DType type) {
  return static_cast<const char*>(p) + elements * static_cast<int64_t>(ElementSize(type));
}
void* Offset(void* p, int64_t elements, DType type) {
  return static_cast<char*>(p) + elements * static_cast<int64_t>(ElementSize(type));
}

uint32_t AlignmentOf(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

cudaDataType_t CudaType(DType type) {
  switch (type) {
    case DType::kFloat32: return CUDA_R_32F;
    case DType::kFloat16: return CUDA_R_16F;
    case DType::kBFloat16: return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Launchers

size_t BucketScratchBytes(int64_t tokens, int64_t n, int64_t din, DType type) {
  return MakeBucketLayout(tokens, n, din, type).total;
}

cudaError_t LaunchBucketByK(const Problem& p, void* scratch, int64_t* summary_host, cudaEvent_t summary_copied,
                            cudaStream_t stream) {
  const BucketLayout l = MakeBucketLayout(p.tokens, p.n, p.din, p.dtype);
  unsigned* counts = At<unsigned>(scratch, l.counts);
  unsigned* cursor = At<unsigned>(scratch, l.cursor);
  long long* kminmax = At<long long>(scratch, l.kminmax);
  int32_t* active = At<int32_t>(scratch, l.active);
  int32_t* uniform = At<int32_t>(scratch, l.uniform);
  int64_t* summary = At<int64_t>(scratch, l.summary);
  int32_t* order = At<int32_t>(scratch, l.order);
  const int64_t buckets = p.n + 1;
  cudaError_t e;

  InitBucketsKernel<<<static_cast<unsigned>(std::min<int64_t>(CeilDiv(buckets, kThreads), 1024)), kThreads, 0,
                      stream>>>(buckets, counts, kminmax, active);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  const size_t hist_shared = buckets <= kSharedBuckets ? static_cast<size_t>(buckets) * sizeof(unsigned) : 0;
  const int64_t hist_blocks = std::max<int64_t>(1, std::min<int64_t>(CeilDiv(p.tokens, kThreads), 1024));
  HistogramKernel<<<static_cast<unsigned>(hist_blocks), kThreads, hist_shared, stream>>>(p.k, p.tokens, p.n, counts,
                                                                                         kminmax);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  ScanBucketsKernel<<<1, 1024, 0, stream>>>(counts, p.n, p.tokens, kminmax, cursor, active, uniform, summary);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  // The one device-to-host copy; the host waits for this event only.
  e = cudaMemcpyAsync(summary_host, summary, SummaryLength(p.n) * sizeof(int64_t), cudaMemcpyDeviceToHost, stream);
  if (e != cudaSuccess) return e;
  if (summary_copied != nullptr && (e = cudaEventRecord(summary_copied, stream)) != cudaSuccess) return e;

  const size_t scatter_shared = buckets <= kSharedBuckets ? 2 * static_cast<size_t>(buckets) * sizeof(unsigned) : 0;
  const int64_t tile = static_cast<int64_t>(kThreads) * kItemsPerThread;
  const int64_t scatter_blocks = std::max<int64_t>(1, std::min<int64_t>(CeilDiv(p.tokens, tile), 4096));
  ScatterTokensKernel<<<static_cast<unsigned>(scatter_blocks), kThreads, scatter_shared, stream>>>(
      p.k, p.tokens, p.n, cursor, order, uniform);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  // The gather, in the widest unit that the row length and both buffers allow.
  const size_t row_bytes = static_cast<size_t>(p.din) * ElementSize(p.dtype);
  if (row_bytes == 0 || p.tokens == 0) return cudaSuccess;
  void* sorted_x = At<char>(scratch, l.sorted_x);
  const dim3 block(32, kRowsPerBlock);
  const int64_t grid = CeilDiv(p.tokens, kRowsPerBlock);
  if (grid > kMaxGridX) return cudaErrorInvalidConfiguration;
  auto gather = [&](auto unit) {
    using U = decltype(unit);
    GatherRowsKernel<U><<<static_cast<unsigned>(grid), block, 0, stream>>>(
        static_cast<const U*>(p.x), static_cast<int64_t>(row_bytes / sizeof(U)), order, active, uniform,
        static_cast<U*>(sorted_x));
  };
  if (row_bytes % 16 == 0 && Aligned(p.x, 16)) {
    gather(uint4{});
  } else if (row_bytes % 8 == 0 && Aligned(p.x, 8)) {
    gather(uint2{});
  } else if (row_bytes % 4 == 0 && Aligned(p.x, 4)) {
    gather(unsigned{});
  } else {
    gather(static_cast<unsigned short>(0));
  }
  return cudaGetLastError();
}

cudaError_t LaunchBiasActivation(DType type, Activation act, void* matrix, int64_t ld, int64_t learners,
                                 int64_t width, const void* bias, int64_t rows, const int32_t* active, int64_t row0,
                                 cudaStream_t stream) {
  if (learners <= 0 || width <= 0 || rows <= 0) return cudaSuccess;
  const int v = VectorWidth(type, width, ld, {matrix, bias});
  const dim3 block(32, kRowsPerBlock);
  const int64_t grid_x = CeilDiv(rows, kRowsPerBlock);
  if (grid_x > kMaxGridX) return cudaErrorInvalidConfiguration;
  for (int64_t l0 = 0; l0 < learners; l0 += kMaxGridY) {
    const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(std::min(learners - l0, kMaxGridY)));
    WithType(type, [&](auto zero) {
      using T = decltype(zero);
      T* m = static_cast<T*>(matrix);
      const T* b = static_cast<const T*>(bias);
      if (v == 8) {
        if constexpr (sizeof(T) == 2) LaunchBiasActivationTyped<T, 8>(act, grid, block, stream, m, ld, l0, width, b, rows, active, row0);
      } else if (v == 4) {
        if constexpr (sizeof(T) == 4) LaunchBiasActivationTyped<T, 4>(act, grid, block, stream, m, ld, l0, width, b, rows, active, row0);
      } else {
        LaunchBiasActivationTyped<T, 1>(act, grid, block, stream, m, ld, l0, width, b, rows, active, row0);
      }
    });
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t LaunchScatterRows(DType type, const void* sorted, int64_t sorted_rows, const int32_t* order,
                              int64_t tokens, int64_t dout, const void* b2, void* y, cudaStream_t stream) {
  if (tokens <= 0 || dout <= 0) return cudaSuccess;
  const int v = VectorWidth(type, dout, dout, {sorted, b2, y});
  const dim3 block(32, kRowsPerBlock);
  const int64_t grid = CeilDiv(tokens, kRowsPerBlock);
  if (grid > kMaxGridX) return cudaErrorInvalidConfiguration;
  WithType(type, [&](auto zero) {
    using T = decltype(zero);
    const T* s = static_cast<const T*>(sorted);
    const T* b = static_cast<const T*>(b2);
    T* out = static_cast<T*>(y);
    if (v == 8) {
      if constexpr (sizeof(T) == 2) ScatterRowsKernel<T, 8><<<static_cast<unsigned>(grid), block, 0, stream>>>(s, sorted_rows, order, tokens, dout, b, out);
    } else if (v == 4) {
      if constexpr (sizeof(T) == 4) ScatterRowsKernel<T, 4><<<static_cast<unsigned>(grid), block, 0, stream>>>(s, sorted_rows, order, tokens, dout, b, out);
    } else {
      ScatterRowsKernel<T, 1><<<static_cast<unsigned>(grid), block, 0, stream>>>(s, sorted_rows, order, tokens, dout, b, out);
    }
  });
  return cudaGetLastError();
}

cudaError_t LaunchSimpleGemm(DType type, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda, const void* b,
                             int64_t ldb, void* d, int64_t ldd, const void* bias, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  const dim3 block(kTile, kTile);
  const int64_t grid_x = CeilDiv(n, kTile);
  if (grid_x > kMaxGridX) return cudaErrorInvalidConfiguration;
  for (int64_t row0 = 0; row0 < m; row0 += kMaxGridY * kTile) {
    const dim3 grid(static_cast<unsigned>(grid_x),
                    static_cast<unsigned>(std::min(CeilDiv(m - row0, kTile), kMaxGridY)));
    WithType(type, [&](auto zero) {
      using T = decltype(zero);
      SimpleGemmKernel<T><<<grid, block, 0, stream>>>(row0, m, n, k, static_cast<const T*>(a), lda,
                                                     static_cast<const T*>(b), ldb, static_cast<T*>(d), ldd,
                                                     static_cast<const T*>(bias));
    });
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cublasStatus_t GemmRowMajor(const CublasLt& lt, cublasLtHandle_t handle, DType type, int64_t m, int64_t n, int64_t k,
                            const void* a, int64_t lda, const void* b, int64_t ldb, void* d, int64_t ldd,
                            const void* bias, bool* bias_applied, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream, bool allow_cublas) {
  // The fallback kernel: when asked to, or when cuBLASLt has no algorithm for the problem.
  auto simple = [&]() {
    *bias_applied = bias != nullptr;
    return LaunchSimpleGemm(type, m, n, k, a, lda, b, ldb, d, ldd, bias, stream) == cudaSuccess
               ? CUBLAS_STATUS_SUCCESS
               : CUBLAS_STATUS_EXECUTION_FAILED;
  };
  if (!allow_cublas) return simple();
  // cuBLASLt is column-major: row-major D[m, n] = A B is column-major D^T[n, m] = B^T[n, k] A^T[k, m],
  // so cuBLASLt's "A" is our B (n x k, ld ldb) and its "B" is our A (k x m, ld lda).
  const cudaDataType_t dt = CudaType(type);
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld_ = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  struct Cleanup {
    const CublasLt& lt;
    cublasLtMatmulDesc_t& op;
    cublasLtMatrixLayout_t &la, &lb, &ld_;
    cublasLtMatmulPreference_t& pref;
    ~Cleanup() {
      if (pref) lt.MatmulPreferenceDestroy(pref);
      if (ld_) lt.MatrixLayoutDestroy(ld_);
      if (lb) lt.MatrixLayoutDestroy(lb);
      if (la) lt.MatrixLayoutDestroy(la);
      if (op) lt.MatmulDescDestroy(op);
    }
  } cleanup{lt, op, la, lb, ld_, pref};

  cublasStatus_t s;
  if ((s = lt.MatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F)) != CUBLAS_STATUS_SUCCESS) return s;
  if ((s = lt.MatrixLayoutCreate(&la, dt, static_cast<uint64_t>(n), static_cast<uint64_t>(k), ldb)) != CUBLAS_STATUS_SUCCESS) return s;
  if ((s = lt.MatrixLayoutCreate(&lb, dt, static_cast<uint64_t>(k), static_cast<uint64_t>(m), lda)) != CUBLAS_STATUS_SUCCESS) return s;
  if ((s = lt.MatrixLayoutCreate(&ld_, dt, static_cast<uint64_t>(n), static_cast<uint64_t>(m), ldd)) != CUBLAS_STATUS_SUCCESS) return s;
  if ((s = lt.MatmulPreferenceCreate(&pref)) != CUBLAS_STATUS_SUCCESS) return s;
  const uint64_t ws = workspace != nullptr ? workspace_bytes : 0;
  lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  // The heuristic cannot see the pointers: tell it how aligned they are (it assumes 256 bytes).
  const uint32_t align_a = AlignmentOf(b), align_b = AlignmentOf(a), align_d = AlignmentOf(d);
  lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a));
  lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b));
  lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d));
  lt.MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d));

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  *bias_applied = false;
  if (bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    lt.MatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
    lt.MatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias));
    s = lt.MatmulAlgoGetHeuristic(handle, op, la, lb, ld_, ld_, pref, 1, &result, &found);
    if (s == CUBLAS_STATUS_SUCCESS && found > 0) {
      *bias_applied = true;
    } else {  // no algorithm with the bias epilogue: plain GEMM, the caller adds the bias
      const cublasLtEpilogue_t plain = CUBLASLT_EPILOGUE_DEFAULT;
      lt.MatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &plain, sizeof(plain));
      found = 0;
    }
  }
  if (found == 0) {
    s = lt.MatmulAlgoGetHeuristic(handle, op, la, lb, ld_, ld_, pref, 1, &result, &found);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS && found == 0)) return simple();
    if (s != CUBLAS_STATUS_SUCCESS) return s;
  }
  const float alpha = 1.0f, beta = 0.0f;
  s = lt.Matmul(handle, op, &alpha, b, la, a, lb, &beta, d, ld_, d, ld_, &result.algo, workspace,
                workspace != nullptr ? workspace_bytes : 0, stream);
  return s == CUBLAS_STATUS_NOT_SUPPORTED ? simple() : s;
}

// ------------------------------------------------------------------------------------------------
// The whole op

namespace {

RunStatus Fail(RunStatus::Code code, const std::string& message) {
  RunStatus s;
  s.code = code;
  s.message = message;
  return s;
}

RunStatus CudaFail(const char* step, cudaError_t e) {
  return Fail(RunStatus::Code::kCuda, std::string(step) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

RunStatus CublasFail(const CublasLt& lt, const char* step, cublasStatus_t s, int64_t m, int64_t n, int64_t k) {
  return Fail(RunStatus::Code::kCublas, std::string(step) + " [" + std::to_string(m) + " x " + std::to_string(k) +
                                            "] x [" + std::to_string(k) + " x " + std::to_string(n) +
                                            "]: cuBLASLt " + lt.GetStatusString(s));
}

}  // namespace

RunStatus RunDynamicLearners(const Problem& p, const Resources& res, ScratchAllocator& scratch, cudaStream_t stream) {
  if (p.tokens == 0) return RunStatus{};
  if (p.tokens > kMaxTokens) {
    return Fail(RunStatus::Code::kUnsupported, "the CUDA kernel takes at most " + std::to_string(kMaxTokens) +
                                                   " tokens; got " + std::to_string(p.tokens));
  }
  const DType type = p.dtype;
  const int64_t n = p.n, din = p.din, h = p.h, dout = p.dout, tokens = p.tokens;

  // ---- 1. bucket by K; wait for the summary
  const BucketLayout layout = MakeBucketLayout(tokens, n, din, type);
  void* bucket_scratch = scratch.Allocate(layout.total);
  if (bucket_scratch == nullptr) {
    return Fail(RunStatus::Code::kOutOfMemory, "cannot allocate " + std::to_string(layout.total) + " bytes of scratch");
  }
  cudaError_t e = LaunchBucketByK(p, bucket_scratch, res.summary_host, res.summary_copied, stream);
  if (e != cudaSuccess) return CudaFail("bucketing the tokens by K", e);
  e = res.summary_copied != nullptr ? cudaEventSynchronize(res.summary_copied) : cudaStreamSynchronize(stream);
  if (e != cudaSuccess) return CudaFail("waiting for the bucket sizes", e);

  const int64_t* summary = res.summary_host;
  const int64_t k_min = summary[n + 1], k_max = summary[n + 2];
  if (k_min < 0 || k_max > n) {
    RunStatus s;
    s.code = RunStatus::Code::kKOutOfRange;
    s.k_min = k_min;
    s.k_max = k_max;
    return s;
  }
  if (dout == 0) return RunStatus{};

  // active[i] = number of tokens with K > i = start of the bucket of K = i (bucket n - i).
  std::vector<int64_t> active(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) active[static_cast<size_t>(i)] = summary[n - i];
  const int64_t rows = n > 0 ? active[0] : 0;  // sorted rows that run a learner (K >= 1)
  const int32_t* order = At<int32_t>(bucket_scratch, layout.order);
  const int32_t* active_dev = At<int32_t>(bucket_scratch, layout.active);

  if (rows == 0 || h == 0) {  // no learner contributes anything: Y = B2 (or 0) everywhere
    e = LaunchScatterRows(type, nullptr, 0, nullptr, tokens, dout, p.b2, p.y, stream);
    return e == cudaSuccess ? RunStatus{} : CudaFail("writing B2", e);
  }
  // One bucket holds every token when K's min and max agree: no sort, no scatter.
  const bool uniform = k_min == k_max;
  const int64_t k_top = k_max;  // the most learners a token runs
  const void* src = uniform ? p.x : At<char>(bucket_scratch, layout.sorted_x);

  // ---- 2-3. the learners, in chunks of sorted rows whose H fits max_hidden_bytes
  const int64_t ldh = k_top * h;
  const size_t es = ElementSize(type);
  const size_t hidden_budget = p.max_hidden_bytes ? p.max_hidden_bytes : kDefaultHiddenBytes;
  int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(hidden_budget / (static_cast<size_t>(ldh) * es)));
  if (chunk >= 256) chunk = chunk / 256 * 256;
  chunk = std::min(chunk, rows);
  const size_t hidden_bytes = Align256(static_cast<size_t>(chunk) * static_cast<size_t>(ldh) * es);
  const size_t sorted_y_bytes = uniform ? 0 : Align256(static_cast<size_t>(rows) * static_cast<size_t>(dout) * es);
  void* work = scratch.Allocate(hidden_bytes + sorted_y_bytes + kGemmWorkspaceBytes);
  if (work == nullptr) {
    return Fail(RunStatus::Code::kOutOfMemory,
                "cannot allocate " + std::to_string(hidden_bytes + sorted_y_bytes + kGemmWorkspaceBytes) +
                    " bytes of scratch");
  }
  void* hidden = work;
  void* dst = uniform ? p.y : At<char>(work, hidden_bytes);
  void* workspace = At<char>(work, hidden_bytes + sorted_y_bytes);

  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    if (din == 0) {  // X W1 is an empty sum
      e = cudaMemsetAsync(hidden, 0, static_cast<size_t>(r1 - r0) * static_cast<size_t>(ldh) * es, stream);
      if (e != cudaSuccess) return CudaFail("clearing H", e);
    }
    // H[:, i h : (i + 1) h] = X_sorted[rows with K > i] W1[i]
    for (int64_t i = 0; i < k_top && din > 0; ++i) {
      const int64_t m = std::min(active[static_cast<size_t>(i)], r1) - r0;
      if (m <= 0) break;
      bool unused = false;
      const cublasStatus_t s = GemmRowMajor(*res.lt, res.handle, type, m, h, din, Offset(src, r0 * din, type), din,
                                            Offset(p.w1, i * din * h, type), h, Offset(hidden, i * h, type), ldh,
                                            nullptr, &unused, workspace, kGemmWorkspaceBytes, stream,
                                            !res.simple_gemm);
      if (s != CUBLAS_STATUS_SUCCESS) return CublasFail(*res.lt, "GEMM X W1", s, m, h, din);
    }
    e = LaunchBiasActivation(type, p.activation, hidden, ldh, k_top, h, p.b1, r1 - r0, active_dev, r0, stream);
    if (e != cudaSuccess) return CudaFail("bias and activation", e);
    // Rows with K = k: [active[k] (0 for k = n), active[k - 1]); Y rows = H[rows, :k h] W2[:k] + B2.
    for (int64_t kk = 1; kk <= k_top; ++kk) {
      const int64_t lo = std::max(kk < n ? active[static_cast<size_t>(kk)] : 0, r0);
      const int64_t hi = std::min(active[static_cast<size_t>(kk - 1)], r1);
      if (hi <= lo) continue;
      bool b2_applied = false;
      const cublasStatus_t s =
          GemmRowMajor(*res.lt, res.handle, type, hi - lo, dout, kk * h, Offset(hidden, (lo - r0) * ldh, type), ldh,
                       p.w2, dout, Offset(dst, lo * dout, type), dout, p.b2, &b2_applied, workspace,
                       kGemmWorkspaceBytes, stream, !res.simple_gemm);
      if (s != CUBLAS_STATUS_SUCCESS) return CublasFail(*res.lt, "GEMM H W2", s, hi - lo, dout, kk * h);
      if (p.b2 != nullptr && !b2_applied) {
        e = LaunchBiasActivation(type, Activation::kIdentity, Offset(dst, lo * dout, type), dout, 1, dout, p.b2,
                                 hi - lo, nullptr, 0, stream);
        if (e != cudaSuccess) return CudaFail("adding B2", e);
      }
    }
  }

  // ---- 4. back to the tokens
  if (!uniform) {
    e = LaunchScatterRows(type, dst, rows, order, tokens, dout, p.b2, p.y, stream);
    if (e != cudaSuccess) return CudaFail("scattering the rows back", e);
  }
  return RunStatus{};
}

}  // namespace cuda
}  // namespace acmtool
