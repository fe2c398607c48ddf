// The CUDA launchers of DynamicLearners against a CPU reference, without ONNX Runtime.
//
//   test_dynamic_learners_cuda                 every case below; exit 0 (all pass), 1 (a failure),
//                                              77 (no CUDA device or no cuBLASLt: skipped, says why)
//   test_dynamic_learners_cuda --bench [...]   the op benchmark (benchmarks/op_cuda.py runs it):
//                                              dense MLP vs DynamicLearners, JSON on stdout
//
// The reference follows the specification (acmtool/ops/dynamic_learners.py) in double precision,
// rounding where the kernel stores fp16/bf16: the first GEMM's output, the activations, the output.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/dynamic_learners_cuda_impl.cuh"

namespace acmtool {
namespace cuda {
namespace {

constexpr int kSkip = 77;

// ------------------------------------------------------------------------------------------------
// Host fp16 / bf16 (round to nearest even)

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mant = x & 0x7fffffu;
  const int exp = static_cast<int>((x >> 23) & 0xffu);
  if (exp == 255) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u));
  const int e = exp - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) ? 1u : 0u;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400u), exp - 25);
  }
  return sign ? -v : v;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

float RoundTo(DType t, float v) {
  if (t == DType::kFloat16) return HalfToFloat(FloatToHalf(v));
  if (t == DType::kBFloat16) return BFloat16ToFloat(FloatToBFloat16(v));
  return v;
}

// Host values (already representable in `t`) as the device stores them.
std::vector<unsigned char> Encode(DType t, const std::vector<float>& v) {
  std::vector<unsigned char> out(v.size() * ElementSize(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::kFloat32) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else {
      const uint16_t b = t == DType::kFloat16 ? FloatToHalf(v[i]) : FloatToBFloat16(v[i]);
      std::memcpy(&out[i * 2], &b, 2);
    }
  }
  return out;
}

std::vector<float> Decode(DType t, const std::vector<unsigned char>& bytes) {
  const size_t n = bytes.size() / ElementSize(t);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::kFloat32) {
      std::memcpy(&out[i], &bytes[i * 4], 4);
    } else {
      uint16_t b;
      std::memcpy(&b, &bytes[i * 2], 2);
      out[i] = t == DType::kFloat16 ? HalfToFloat(b) : BFloat16ToFloat(b);
    }
  }
  return out;
}

float ActivateHost(Activation a, float x) {
  switch (a) {
    case Activation::kGelu: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case Activation::kGeluTanh: {
      const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + std::tanh(u));
    }
    case Activation::kRelu: return x > 0.0f ? x : (std::isnan(x) ? x : 0.0f);
    case Activation::kSilu: return x / (1.0f + std::exp(-x));
    case Activation::kIdentity: return x;
  }
  return x;
}

const char* ActivationName(Activation a) {
  switch (a) {
    case Activation::kGelu: return "gelu";
    case Activation::kGeluTanh: return "gelu_tanh";
    case Activation::kRelu: return "relu";
    case Activation::kSilu: return "silu";
    case Activation::kIdentity: return "identity";
  }
  return "?";
}

// ------------------------------------------------------------------------------------------------
// Device helpers

#define CHECK_CUDA(expr)                                                                                  \
  do {                                                                                                   \
    const cudaError_t e_ = (expr);                                                                       \
    if (e_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_));       \
      std::exit(1);                                                                                      \
    }                                                                                                    \
  } while (0)

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    if (n) CHECK_CUDA(cudaMalloc(&ptr, n));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

DeviceBuffer Upload(const void* data, size_t bytes) {
  DeviceBuffer b(bytes);
  if (bytes) CHECK_CUDA(cudaMemcpy(b.ptr, data, bytes, cudaMemcpyHostToDevice));
  return b;
}

// cudaMalloc per allocation, freed with the allocator (tests only: the op uses ORT's arena). With
// `reuse`, the i-th allocation of a run is kept for the i-th of the next (the benchmark).
class TestScratch final : public ScratchAllocator {
 public:
  explicit TestScratch(bool reuse = false) : reuse_(reuse) {}
  void* Allocate(size_t bytes) override {
    if (reuse_ && next_ < buffers_.size() && buffers_[next_]->bytes >= bytes) return buffers_[next_++]->ptr;
    auto buffer = std::make_unique<DeviceBuffer>(bytes);
    if (next_ < buffers_.size()) {
      buffers_[next_] = std::move(buffer);
    } else {
      buffers_.push_back(std::move(buffer));
    }
    return buffers_[next_++]->ptr;
  }
  void Reset() { next_ = 0; }

 private:
  bool reuse_;
  size_t next_ = 0;
  std::vector<std::unique_ptr<DeviceBuffer>> buffers_;
};

struct Context {
  const CublasLt* lt = nullptr;
  cublasLtHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t copied = nullptr;
  int64_t* pinned = nullptr;
  size_t pinned_capacity = 0;

  Resources For(int64_t n) {
    if (pinned_capacity < SummaryLength(n)) {
      if (pinned) cudaFreeHost(pinned);
      pinned_capacity = std::max<size_t>(SummaryLength(n), 64);
      CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&pinned), pinned_capacity * sizeof(int64_t), 0));
    }
    Resources r;
    r.lt = lt;
    r.handle = handle;
    r.summary_copied = copied;
    r.summary_host = pinned;
    return r;
  }
};

// ------------------------------------------------------------------------------------------------
// Cases

struct Case {
  std::string name;
  int64_t tokens, n, din, h, dout;
  std::string k_mode = "mixed";  // mixed | zero | full | one (every token K = max(1, n / 2)) | bad_low | bad_high
  bool b1 = true, b2 = true;
  Activation act = Activation::kGelu;
  DType dtype = DType::kFloat32;
  size_t max_hidden_bytes = 0;
  bool simple_gemm = false;  // the fallback GEMM kernel instead of cuBLASLt
};

struct HostData {
  std::vector<float> x, w1, b1, w2, b2;
  std::vector<int64_t> k;
};

HostData MakeData(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& v, size_t count, float scale) {
    v.resize(count);
    for (float& f : v) f = RoundTo(c.dtype, normal(rng) * scale);
  };
  HostData d;
  fill(d.x, static_cast<size_t>(c.tokens * c.din), 1.0f);
  fill(d.w1, static_cast<size_t>(c.n * c.din * c.h), 1.0f / std::sqrt(static_cast<float>(std::max<int64_t>(c.din, 1))));
  if (c.b1) fill(d.b1, static_cast<size_t>(c.n * c.h), 1.0f);
  fill(d.w2, static_cast<size_t>(c.n * c.h * c.dout), 1.0f / std::sqrt(static_cast<float>(std::max<int64_t>(c.h, 1))));
  if (c.b2) fill(d.b2, static_cast<size_t>(c.dout), 1.0f);
  d.k.resize(static_cast<size_t>(c.tokens));
  std::uniform_int_distribution<int64_t> pick(0, c.n);
  for (int64_t& v : d.k) {
    if (c.k_mode == "zero") v = 0;
    else if (c.k_mode == "full") v = c.n;
    else if (c.k_mode == "one") v = c.n > 0 ? std::max<int64_t>(1, c.n / 2) : 0;
    else v = pick(rng);
  }
  if (c.k_mode == "bad_low" && !d.k.empty()) d.k[d.k.size() / 2] = -1;
  if (c.k_mode == "bad_high") std::fill(d.k.begin(), d.k.end(), c.n + 1);
  return d;
}

std::vector<float> Reference(const Case& c, const HostData& d) {
  std::vector<float> y(static_cast<size_t>(c.tokens * c.dout));
  std::vector<float> hid(static_cast<size_t>(c.h));
  std::vector<double> acc(static_cast<size_t>(c.dout));
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t i = 0; i < d.k[static_cast<size_t>(t)]; ++i) {
      for (int64_t j = 0; j < c.h; ++j) {
        double s = 0;
        for (int64_t q = 0; q < c.din; ++q) s += double(d.x[t * c.din + q]) * d.w1[(i * c.din + q) * c.h + j];
        float v = RoundTo(c.dtype, static_cast<float>(s));  // the GEMM stores H in the op's type
        if (c.b1) v += d.b1[i * c.h + j];
        hid[j] = RoundTo(c.dtype, ActivateHost(c.act, v));
      }
      for (int64_t o = 0; o < c.dout; ++o) {
        double s = 0;
        for (int64_t j = 0; j < c.h; ++j) s += double(hid[j]) * d.w2[(i * c.h + j) * c.dout + o];
        acc[o] += s;
      }
    }
    for (int64_t o = 0; o < c.dout; ++o) {
      y[t * c.dout + o] = RoundTo(c.dtype, static_cast<float>(acc[o] + (c.b2 ? d.b2[o] : 0.0f)));
    }
  }
  return y;
}

struct Outcome {
  RunStatus status;
  std::vector<float> y;
};

Outcome RunOnDevice(Context& ctx, const Case& c, const HostData& d, float y_poison = 12345.0f) {
  const DType t = c.dtype;
  DeviceBuffer x = Upload(Encode(t, d.x).data(), d.x.size() * ElementSize(t));
  DeviceBuffer k = Upload(d.k.data(), d.k.size() * sizeof(int64_t));
  DeviceBuffer w1 = Upload(Encode(t, d.w1).data(), d.w1.size() * ElementSize(t));
  DeviceBuffer b1 = Upload(Encode(t, d.b1).data(), d.b1.size() * ElementSize(t));
  DeviceBuffer w2 = Upload(Encode(t, d.w2).data(), d.w2.size() * ElementSize(t));
  DeviceBuffer b2 = Upload(Encode(t, d.b2).data(), d.b2.size() * ElementSize(t));
  const size_t y_count = static_cast<size_t>(c.tokens * c.dout);
  const std::vector<float> poison(y_count, y_poison);  // every element must be written
  DeviceBuffer y = Upload(Encode(t, poison).data(), y_count * ElementSize(t));

  Problem p;
  p.dtype = t;
  p.activation = c.act;
  p.tokens = c.tokens;
  p.n = c.n;
  p.din = c.din;
  p.h = c.h;
  p.dout = c.dout;
  p.x = x.ptr;
  p.k = static_cast<const int64_t*>(k.ptr);
  p.w1 = w1.ptr;
  p.b1 = c.b1 ? b1.ptr : nullptr;
  p.w2 = w2.ptr;
  p.b2 = c.b2 ? b2.ptr : nullptr;
  p.y = y.ptr;
  p.max_hidden_bytes = c.max_hidden_bytes;

  Outcome out;
  {
    TestScratch scratch;
    Resources r = ctx.For(c.n);
    r.simple_gemm = c.simple_gemm;
    out.status = RunDynamicLearners(p, r, scratch, ctx.stream);
    CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  }
  std::vector<unsigned char> bytes(y_count * ElementSize(t));
  if (y_count) CHECK_CUDA(cudaMemcpy(bytes.data(), y.ptr, bytes.size(), cudaMemcpyDeviceToHost));
  out.y = Decode(t, bytes);
  return out;
}

std::string Describe(const Case& c) {
  std::ostringstream s;
  s << c.name << " [" << DTypeName(c.dtype) << ", " << ActivationName(c.act) << ", K " << c.k_mode << ", tokens "
    << c.tokens << ", N " << c.n << ", Din " << c.din << ", h " << c.h << ", Dout " << c.dout
    << (c.b1 ? "" : ", no B1") << (c.b2 ? "" : ", no B2")
    << (c.max_hidden_bytes ? ", H chunk " + std::to_string(c.max_hidden_bytes) + " B" : "")
    << (c.simple_gemm ? ", fallback GEMM" : "") << "]";
  return s.str();
}

// Tolerances: one rounding of the type, relative to the output's scale.
void Tolerances(DType t, float* rtol, float* atol) {
  if (t == DType::kFloat32) {
    *rtol = 1e-4f;
    *atol = 2e-5f;
  } else if (t == DType::kFloat16) {
    *rtol = 4e-3f;
    *atol = 4e-3f;
  } else {
    *rtol = 2e-2f;
    *atol = 3e-2f;
  }
}

int failures = 0, passes = 0;

void Fail(const std::string& what) {
  ++failures;
  std::printf("FAIL %s\n", what.c_str());
}

void CheckCase(Context& ctx, const Case& c, uint64_t seed) {
  const HostData d = MakeData(c, seed);
  const Outcome got = RunOnDevice(ctx, c, d);
  if (!got.status.ok()) return Fail(Describe(c) + ": " + got.status.message);
  const std::vector<float> ref = Reference(c, d);
  float scale = 1.0f;
  for (float v : ref) scale = std::max(scale, std::fabs(v));
  float rtol, atol;
  Tolerances(c.dtype, &rtol, &atol);
  size_t bad = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(double(got.y[i]) - ref[i]);
    const double allowed = atol * scale + rtol * std::fabs(ref[i]);
    if (!(err <= allowed)) {
      ++bad;
      if (err - allowed > worst_excess) {
        worst_excess = err - allowed;
        worst = i;
      }
    }
  }
  if (bad) {
    std::ostringstream s;
    s << Describe(c) << ": " << bad << " of " << ref.size() << " outputs off; worst at token "
      << worst / std::max<int64_t>(c.dout, 1) << ", column " << worst % std::max<int64_t>(c.dout, 1) << ": got "
      << got.y[worst] << ", expected " << ref[worst];
    return Fail(s.str());
  }
  ++passes;
}

void CheckBadK(Context& ctx, DType t, const std::string& mode) {
  Case c{"bad_k", 37, 3, 13, 7, 5};
  c.k_mode = mode;
  c.dtype = t;
  const HostData d = MakeData(c, 7);
  const Outcome got = RunOnDevice(ctx, c, d);
  if (got.status.code != RunStatus::Code::kKOutOfRange) {
    return Fail(Describe(c) + ": expected K out of range, got code " + std::to_string(static_cast<int>(got.status.code)));
  }
  const int64_t lo = *std::min_element(d.k.begin(), d.k.end()), hi = *std::max_element(d.k.begin(), d.k.end());
  if (got.status.k_min != lo || got.status.k_max != hi) {
    return Fail(Describe(c) + ": K's range reported as [" + std::to_string(got.status.k_min) + ", " +
                std::to_string(got.status.k_max) + "], expected [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  ++passes;
  // The next call on the same stream and resources is not disturbed.
  Case good = c;
  good.k_mode = "mixed";
  CheckCase(ctx, good, 8);
}

// The launchers one by one: the bucket summary and order, bias + activation, the row scatter.
void CheckBucketLauncher(Context& ctx, int64_t tokens, int64_t n) {
  std::mt19937_64 rng(tokens * 31 + n);
  std::uniform_int_distribution<int64_t> pick(0, n);
  std::vector<int64_t> k(static_cast<size_t>(tokens));
  for (int64_t& v : k) v = pick(rng);
  std::vector<float> x(static_cast<size_t>(tokens) * 3);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  DeviceBuffer kd = Upload(k.data(), k.size() * sizeof(int64_t));
  DeviceBuffer xd = Upload(x.data(), x.size() * sizeof(float));
  Problem p;
  p.tokens = tokens;
  p.n = n;
  p.din = 3;
  p.k = static_cast<const int64_t*>(kd.ptr);
  p.x = xd.ptr;
  DeviceBuffer scratch(BucketScratchBytes(tokens, n, 3, DType::kFloat32));
  Resources r = ctx.For(n);
  CHECK_CUDA(LaunchBucketByK(p, scratch.ptr, r.summary_host, r.summary_copied, ctx.stream));
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  std::vector<int64_t> count(static_cast<size_t>(n) + 1, 0);
  for (int64_t v : k) ++count[static_cast<size_t>(n - v)];
  int64_t start = 0;
  const std::string what = "LaunchBucketByK tokens " + std::to_string(tokens) + ", N " + std::to_string(n);
  for (int64_t b = 0; b <= n; ++b) {
    if (r.summary_host[b] != start) return Fail(what + ": bucket " + std::to_string(b) + " starts at " +
                                                std::to_string(r.summary_host[b]) + ", expected " + std::to_string(start));
    start += count[static_cast<size_t>(b)];
  }
  const int64_t kmin = *std::min_element(k.begin(), k.end()), kmax = *std::max_element(k.begin(), k.end());
  if (r.summary_host[n + 1] != kmin || r.summary_host[n + 2] != kmax) return Fail(what + ": wrong K range");
  ++passes;
}

void CheckBiasActivationLauncher(Context& ctx, DType t, Activation a, int64_t rows, int64_t learners, int64_t width) {
  const int64_t ld = learners * width;
  std::mt19937_64 rng(rows + learners * 7 + width);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> m(static_cast<size_t>(rows * ld)), bias(static_cast<size_t>(ld));
  for (float& v : m) v = RoundTo(t, normal(rng));
  for (float& v : bias) v = RoundTo(t, normal(rng));
  std::vector<int32_t> active(static_cast<size_t>(learners));
  for (int64_t i = 0; i < learners; ++i) active[static_cast<size_t>(i)] = static_cast<int32_t>(rows - i * rows / (learners + 1));
  DeviceBuffer md = Upload(Encode(t, m).data(), m.size() * ElementSize(t));
  DeviceBuffer bd = Upload(Encode(t, bias).data(), bias.size() * ElementSize(t));
  DeviceBuffer ad = Upload(active.data(), active.size() * sizeof(int32_t));
  CHECK_CUDA(LaunchBiasActivation(t, a, md.ptr, ld, learners, width, bd.ptr, rows, static_cast<int32_t*>(ad.ptr), 0,
                                  ctx.stream));
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  std::vector<unsigned char> bytes(m.size() * ElementSize(t));
  CHECK_CUDA(cudaMemcpy(bytes.data(), md.ptr, bytes.size(), cudaMemcpyDeviceToHost));
  const std::vector<float> got = Decode(t, bytes);
  float rtol, atol;
  Tolerances(t, &rtol, &atol);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ld; ++c) {
      const int64_t i = c / width;
      const float before = m[r * ld + c];
      const float want = r < active[i] ? RoundTo(t, ActivateHost(a, before + bias[c])) : before;
      const float have = got[r * ld + c];
      if (!(std::fabs(have - want) <= atol + rtol * std::fabs(want))) {
        return Fail(std::string("LaunchBiasActivation ") + DTypeName(t) + " " + ActivationName(a) + " rows " +
                    std::to_string(rows) + " width " + std::to_string(width) + ": at [" + std::to_string(r) + ", " +
                    std::to_string(c) + "] got " + std::to_string(have) + ", expected " + std::to_string(want));
      }
    }
  }
  ++passes;
}

void CheckScatterLauncher(Context& ctx, DType t, int64_t tokens, int64_t sorted_rows, int64_t dout, bool with_b2) {
  std::vector<int32_t> order(static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i) order[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<unsigned>(tokens)));
  std::vector<float> sorted(static_cast<size_t>(sorted_rows * dout)), b2(static_cast<size_t>(dout));
  for (size_t i = 0; i < sorted.size(); ++i) sorted[i] = RoundTo(t, 0.25f * static_cast<float>(i % 97));
  for (size_t i = 0; i < b2.size(); ++i) b2[i] = RoundTo(t, -1.5f - static_cast<float>(i % 5));
  DeviceBuffer od = Upload(order.data(), order.size() * sizeof(int32_t));
  DeviceBuffer sd = Upload(Encode(t, sorted).data(), sorted.size() * ElementSize(t));
  DeviceBuffer bd = Upload(Encode(t, b2).data(), b2.size() * ElementSize(t));
  DeviceBuffer yd(static_cast<size_t>(tokens * dout) * ElementSize(t));
  CHECK_CUDA(LaunchScatterRows(t, sd.ptr, sorted_rows, static_cast<int32_t*>(od.ptr), tokens, dout,
                               with_b2 ? bd.ptr : nullptr, yd.ptr, ctx.stream));
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  std::vector<unsigned char> bytes(static_cast<size_t>(tokens * dout) * ElementSize(t));
  CHECK_CUDA(cudaMemcpy(bytes.data(), yd.ptr, bytes.size(), cudaMemcpyDeviceToHost));
  const std::vector<float> y = Decode(t, bytes);
  for (int64_t r = 0; r < tokens; ++r) {
    for (int64_t c = 0; c < dout; ++c) {
      const float want = r < sorted_rows ? sorted[r * dout + c] : (with_b2 ? b2[c] : 0.0f);
      if (y[order[r] * dout + c] != want) {
        return Fail(std::string("LaunchScatterRows ") + DTypeName(t) + " dout " + std::to_string(dout) + ": row " +
                    std::to_string(r) + " column " + std::to_string(c));
      }
    }
  }
  ++passes;
}

int RunTests(Context& ctx) {
  const DType types[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  const Activation acts[] = {Activation::kGelu, Activation::kGeluTanh, Activation::kRelu, Activation::kSilu,
                             Activation::kIdentity};
  // name, tokens, N, Din, h, Dout (the CPU tests' shapes, flattened, and a few of CUDA's own)
  const std::vector<Case> shapes = {
      {"zero_tokens", 0, 3, 13, 7, 5},        {"one_token", 1, 3, 13, 7, 5},
      {"odd", 11, 4, 13, 7, 5},               {"rank3_odd", 21, 4, 13, 7, 5},
      {"one_learner", 9, 1, 13, 7, 5},        {"no_learners", 4, 0, 13, 7, 5},
      {"din_zero", 5, 2, 0, 7, 5},            {"h_zero", 5, 2, 13, 0, 5},
      {"dout_zero", 5, 2, 13, 7, 0},          {"blocks", 201, 4, 300, 45, 37},
      {"wide_hidden", 131, 3, 40, 260, 33},   {"vit_like_small", 100, 4, 96, 96, 96},
      {"aligned", 1000, 4, 64, 64, 64},       {"many_tokens", 9000, 5, 32, 24, 16},
      {"many_learners", 300, 40, 16, 8, 8},
  };
  for (DType t : types) {
    for (const Case& s : shapes) {
      for (const char* k : {"mixed", "zero", "full", "one"}) {
        Case c = s;
        c.dtype = t;
        c.k_mode = k;
        CheckCase(ctx, c, std::hash<std::string>()(c.name) + static_cast<int>(t));
      }
    }
    for (Activation a : acts) {
      for (int biases = 0; biases < 4; ++biases) {
        Case c{"activations_and_biases", 115, 4, 29, 19, 17};
        c.dtype = t;
        c.act = a;
        c.b1 = biases & 1;
        c.b2 = biases & 2;
        CheckCase(ctx, c, 11 + biases);
      }
      Case wide{"activations_aligned", 300, 4, 64, 128, 64};  // the vectorized elementwise path
      wide.dtype = t;
      wide.act = a;
      CheckCase(ctx, wide, 12);
    }
    // More sorted rows than one H chunk holds: the chunked path.
    Case chunked{"chunked", 700, 4, 48, 40, 24};
    chunked.dtype = t;
    chunked.max_hidden_bytes = 64 * 4 * 40 * ElementSize(t);  // 64 rows a chunk
    CheckCase(ctx, chunked, 13);
    chunked.k_mode = "full";
    CheckCase(ctx, chunked, 14);
    // The fallback GEMM kernel (what runs where cuBLASLt has no algorithm).
    for (const Case& s : shapes) {
      Case c = s;
      c.dtype = t;
      c.simple_gemm = true;
      CheckCase(ctx, c, 15);
    }
    CheckBadK(ctx, t, "bad_low");
    CheckBadK(ctx, t, "bad_high");
    for (Activation a : acts) {
      CheckBiasActivationLauncher(ctx, t, a, 37, 3, 24);
      CheckBiasActivationLauncher(ctx, t, a, 50, 2, 7);
    }
    CheckScatterLauncher(ctx, t, 333, 200, 40, true);
    CheckScatterLauncher(ctx, t, 50, 13, 5, false);
  }
  for (auto [tokens, n] : {std::pair<int64_t, int64_t>{1, 1}, {1000, 4}, {5000, 3000}, {70000, 7}}) {
    CheckBucketLauncher(ctx, tokens, n);
  }
  std::printf("%s: %d passed, %d failed\n", failures ? "FAILED" : "OK", passes, failures);
  return failures ? 1 : 0;
}

// ------------------------------------------------------------------------------------------------
// Benchmark: the dense MLP (GEMM, bias + activation, GEMM + bias; the same cuBLASLt and kernels)
// against DynamicLearners with K ~ Binomial(N, budget) per token, shuffled (as benchmarks/op_cpu.py).

struct BenchArgs {
  int64_t tokens = 128 * 197, din = 768, hidden = 3072, n = 4;
  std::vector<DType> dtypes = {DType::kFloat16, DType::kBFloat16};
  std::vector<double> budgets = {0.25, 0.5, 1.0};
  int warmup = 20, iters = 100;
  Activation act = Activation::kGelu;
};

double Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

// Times `body` (which enqueues on ctx.stream) with CUDA events after warm-up; milliseconds.
std::vector<float> Time(Context& ctx, int warmup, int iters, const std::function<void()>& body) {
  for (int i = 0; i < warmup; ++i) body();
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  std::vector<cudaEvent_t> start(static_cast<size_t>(iters)), stop(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    CHECK_CUDA(cudaEventCreate(&start[i]));
    CHECK_CUDA(cudaEventCreate(&stop[i]));
  }
  for (int i = 0; i < iters; ++i) {
    CHECK_CUDA(cudaEventRecord(start[i], ctx.stream));
    body();
    CHECK_CUDA(cudaEventRecord(stop[i], ctx.stream));
  }
  CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
  std::vector<float> ms(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    CHECK_CUDA(cudaEventElapsedTime(&ms[i], start[i], stop[i]));
    cudaEventDestroy(start[i]);
    cudaEventDestroy(stop[i]);
  }
  return ms;
}

int RunBench(Context& ctx, const BenchArgs& a) {
  cudaDeviceProp prop{};
  int device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
  const int64_t h = a.hidden / a.n;
  std::ostringstream out;
  out << "{\"device\": \"" << prop.name << "\", \"tokens\": " << a.tokens << ", \"din\": " << a.din
      << ", \"hidden\": " << a.hidden << ", \"learners\": " << a.n << ", \"activation\": \"" << ActivationName(a.act)
      << "\", \"warmup\": " << a.warmup << ", \"iters\": " << a.iters << ", \"results\": [";
  bool first = true;
  std::mt19937_64 rng(0);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (DType t : a.dtypes) {
    const size_t es = ElementSize(t);
    auto random = [&](size_t count) {
      std::vector<float> v(count);
      for (float& f : v) f = normal(rng);
      return Upload(Encode(t, v).data(), count * es);
    };
    auto randx = [&](size_t count) {
      std::vector<float> v(count);
      std::normal_distribution<float> unit(0.0f, 1.0f);
      for (float& f : v) f = unit(rng);
      return Upload(Encode(t, v).data(), count * es);
    };
    DeviceBuffer x = randx(static_cast<size_t>(a.tokens * a.din));
    // The learners' weights, and the same MLP as one dense layer pair: W1 [N, Din, h] side by side
    // is the dense W1 [Din, N h]; B1 [N, h], W2 [N, h, Dout] already are the dense B1 and W2.
    std::vector<float> w1_learners(static_cast<size_t>(a.n * a.din * h)), w1_dense(w1_learners.size());
    for (float& f : w1_learners) f = RoundTo(t, normal(rng));
    for (int64_t i = 0; i < a.n; ++i) {
      for (int64_t q = 0; q < a.din; ++q) {
        for (int64_t j = 0; j < h; ++j) w1_dense[(q * a.n + i) * h + j] = w1_learners[(i * a.din + q) * h + j];
      }
    }
    DeviceBuffer w1l = Upload(Encode(t, w1_learners).data(), w1_learners.size() * es);
    DeviceBuffer w1 = Upload(Encode(t, w1_dense).data(), w1_dense.size() * es);
    DeviceBuffer b1 = random(static_cast<size_t>(a.hidden));
    DeviceBuffer w2 = random(static_cast<size_t>(a.hidden * a.din)), b2 = random(static_cast<size_t>(a.din));
    DeviceBuffer y(static_cast<size_t>(a.tokens * a.din) * es);
    DeviceBuffer hid(static_cast<size_t>(a.tokens * a.hidden) * es);
    DeviceBuffer ws(kGemmWorkspaceBytes);
    std::string error;
    auto dense = [&] {
      bool applied = false;
      cublasStatus_t s = GemmRowMajor(*ctx.lt, ctx.handle, t, a.tokens, a.hidden, a.din, x.ptr, a.din, w1.ptr,
                                      a.hidden, hid.ptr, a.hidden, nullptr, &applied, ws.ptr, ws.bytes, ctx.stream);
      if (s != CUBLAS_STATUS_SUCCESS) error = std::string("dense GEMM1: ") + ctx.lt->GetStatusString(s);
      CHECK_CUDA(LaunchBiasActivation(t, a.act, hid.ptr, a.hidden, 1, a.hidden, b1.ptr, a.tokens, nullptr, 0,
                                      ctx.stream));
      s = GemmRowMajor(*ctx.lt, ctx.handle, t, a.tokens, a.din, a.hidden, hid.ptr, a.hidden, w2.ptr, a.din, y.ptr,
                       a.din, b2.ptr, &applied, ws.ptr, ws.bytes, ctx.stream);
      if (s != CUBLAS_STATUS_SUCCESS) error = std::string("dense GEMM2: ") + ctx.lt->GetStatusString(s);
      if (!applied) CHECK_CUDA(LaunchBiasActivation(t, Activation::kIdentity, y.ptr, a.din, 1, a.din, b2.ptr, a.tokens, nullptr, 0, ctx.stream));
    };
    const std::vector<float> dense_ms = Time(ctx, a.warmup, a.iters, dense);
    if (!error.empty()) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    out << (first ? "" : ", ") << "{\"dtype\": \"" << DTypeName(t) << "\", \"path\": \"dense_cublaslt\", \"median_ms\": "
        << Median(dense_ms) << "}";
    first = false;

    Problem p;
    p.dtype = t;
    p.activation = a.act;
    p.tokens = a.tokens;
    p.n = a.n;
    p.din = a.din;
    p.h = h;
    p.dout = a.din;
    p.x = x.ptr;
    p.w1 = w1l.ptr;
    p.b1 = b1.ptr;
    p.w2 = w2.ptr;
    p.b2 = b2.ptr;
    DeviceBuffer y_learners(static_cast<size_t>(a.tokens * a.din) * es);
    p.y = y_learners.ptr;

    // Check: at K = N everywhere the op is the dense MLP.
    {
      std::vector<unsigned char> dense_bytes(y.bytes), op_bytes(y.bytes);
      CHECK_CUDA(cudaMemcpy(dense_bytes.data(), y.ptr, y.bytes, cudaMemcpyDeviceToHost));
      std::vector<int64_t> full(static_cast<size_t>(a.tokens), a.n);
      DeviceBuffer kd = Upload(full.data(), full.size() * sizeof(int64_t));
      p.k = static_cast<const int64_t*>(kd.ptr);
      TestScratch scratch;
      const RunStatus status = RunDynamicLearners(p, ctx.For(a.n), scratch, ctx.stream);
      CHECK_CUDA(cudaStreamSynchronize(ctx.stream));
      if (!status.ok()) {
        std::fprintf(stderr, "DynamicLearners at K = N: %s\n", status.message.c_str());
        return 1;
      }
      CHECK_CUDA(cudaMemcpy(op_bytes.data(), y_learners.ptr, y.bytes, cudaMemcpyDeviceToHost));
      const std::vector<float> yd = Decode(t, dense_bytes), yo = Decode(t, op_bytes);
      double diff = 0, scale = 1e-30;
      for (size_t i = 0; i < yd.size(); ++i) {
        diff = std::max(diff, std::fabs(double(yd[i]) - yo[i]));
        scale = std::max(scale, std::fabs(double(yd[i])));
      }
      out << ", {\"dtype\": \"" << DTypeName(t) << "\", \"check\": \"k_equals_n_matches_dense\", \"max_abs_diff\": "
          << diff << ", \"max_abs_dense\": " << scale << "}";
    }
    for (double budget : a.budgets) {
      std::vector<int64_t> k(static_cast<size_t>(a.tokens));
      std::mt19937_64 krng(1234);
      std::binomial_distribution<int64_t> binom(a.n, budget);
      double sum = 0;
      for (int64_t& v : k) {
        v = binom(krng);
        sum += static_cast<double>(v);
      }
      DeviceBuffer kd = Upload(k.data(), k.size() * sizeof(int64_t));
      p.k = static_cast<const int64_t*>(kd.ptr);
      TestScratch scratch(/*reuse=*/true);
      const Resources r = ctx.For(a.n);
      RunStatus status;
      auto run = [&] {
        scratch.Reset();
        status = RunDynamicLearners(p, r, scratch, ctx.stream);
      };
      const std::vector<float> ms = Time(ctx, a.warmup, a.iters, run);
      if (!status.ok()) {
        std::fprintf(stderr, "DynamicLearners at budget %g: %s\n", budget, status.message.c_str());
        return 1;
      }
      out << ", {\"dtype\": \"" << DTypeName(t) << "\", \"path\": \"dynamic_learners\", \"budget\": " << budget
          << ", \"mean_k_over_n\": " << sum / (static_cast<double>(a.tokens) * a.n)
          << ", \"median_ms\": " << Median(ms) << "}";
    }
  }
  out << "]}";
  std::printf("%s\n", out.str().c_str());
  return 0;
}

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> parts;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) parts.push_back(part);
  return parts;
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s                       run the tests\n"
               "       %s --bench [--tokens T] [--din D] [--hidden H] [--learners N] [--dtypes fp16,bf16,fp32]\n"
               "                  [--budgets 0.25,0.5,1.0] [--warmup W] [--iters I]\n",
               argv0, argv0);
  return 2;
}

int Main(int argc, char** argv) {
  bool bench = false;
  BenchArgs args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--bench") {
      bench = true;
    } else if (a == "--tokens") {
      args.tokens = std::stoll(value());
    } else if (a == "--din") {
      args.din = std::stoll(value());
    } else if (a == "--hidden") {
      args.hidden = std::stoll(value());
    } else if (a == "--learners") {
      args.n = std::stoll(value());
    } else if (a == "--warmup") {
      args.warmup = std::stoi(value());
    } else if (a == "--iters") {
      args.iters = std::stoi(value());
    } else if (a == "--dtypes") {
      args.dtypes.clear();
      for (const std::string& d : Split(value())) {
        if (d == "fp16" || d == "float16") args.dtypes.push_back(DType::kFloat16);
        else if (d == "bf16" || d == "bfloat16") args.dtypes.push_back(DType::kBFloat16);
        else if (d == "fp32" || d == "float32") args.dtypes.push_back(DType::kFloat32);
        else return Usage(argv[0]);
      }
    } else if (a == "--budgets") {
      args.budgets.clear();
      for (const std::string& b : Split(value())) args.budgets.push_back(std::stod(b));
    } else {
      return Usage(argv[0]);
    }
  }
  if (bench && (args.n <= 0 || args.hidden % args.n != 0 || args.iters <= 0 || args.warmup < 0)) {
    std::fprintf(stderr, "--hidden must be a multiple of --learners, --iters > 0\n");
    return 2;
  }

  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device: %s\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return kSkip;
  }
  Context ctx;
  std::string error;
  ctx.lt = LoadCublasLt(&error);
  if (ctx.lt == nullptr) {
    std::printf("SKIP: %s\n", error.c_str());
    return kSkip;
  }
  if (ctx.lt->Create(&ctx.handle) != CUBLAS_STATUS_SUCCESS) {
    std::printf("FAIL: cublasLtCreate\n");
    return 1;
  }
  // A stream of its own (never the default stream), as ONNX Runtime's compute stream would be.
  CHECK_CUDA(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  CHECK_CUDA(cudaEventCreateWithFlags(&ctx.copied, cudaEventDisableTiming));
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::fprintf(stderr, "device: %s (sm_%d%d), cuBLASLt %zu from %s\n", prop.name, prop.major, prop.minor,
               ctx.lt->GetVersion(), ctx.lt->path.c_str());
  return bench ? RunBench(ctx, args) : RunTests(ctx);
}

}  // namespace
}  // namespace cuda
}  // namespace acmtool

int main(int argc, char** argv) { return acmtool::cuda::Main(argc, argv); }
