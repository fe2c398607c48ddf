// The CPU kernel of DynamicLearners. The contract and the checks: op_definition.h.
//
// Plan of one Run, as DESIGN.md asks:
//  1. the shared checks (op_definition.h), then K's range (every failure is an
//     ORT_INVALID_ARGUMENT status naming what is wrong; nothing is written before the checks pass);
//  2. counting sort of the tokens by K, descending: learner i then runs on the prefix of
//     active[i] = #{t : K[t] > i} sorted tokens;
//  3. the sorted tokens are cut into row blocks. For a block, X's rows are gathered and packed
//     once; then every learner that reaches its rows runs two GEMMs on them:
//     H = act(X W1[i] + B1[i]) (bias and activation fused into the GEMM's store; H is packed for
//     the next GEMM right away, while still in cache) and Y += H W2[i] (B2 fused into the first learner's). H and
//     the block's Y rows stay in L2-sized buffers; the Y rows go to their tokens once, at the
//     end. Tokens with K = 0 get B2 (or 0);
//  4. W1 and W2 are packed into the GEMM's panel layout once, when the session is created, if
//     they are constant initializers (the usual case); otherwise on every call.
//
// Two ways to share the work among threads: with many rows (row mode), each task is a whole row
// block, cut so that blocks hold equal work; with few (column mode: small batches), the blocks
// run one after the other and each GEMM is split by output columns, so that no thread streams
// weights that another also streams. Column mode runs a block in two rounds of the thread pool
// whatever the number of learners: every learner's H (they all read the same X), then Y, each
// task summing every learner's H W2[i] on its columns (in learner order, as one thread would).
//
// Threads: the tasks go to ONNX Runtime's own intra-op thread pool through
// OrtApi::KernelContext_ParallelFor (API 16 and later), so the op uses exactly the threads the
// session was given (intra_op_num_threads), shares them with the other nodes of the graph, and
// never oversubscribes the machine the way a BLAS with its own thread pool (OpenBLAS, OpenMP)
// would: those threads spin next to ORT's. (ORT's pool is reachable from a custom op: that API
// is part of the C API since 1.16.) The number of threads is not, so the blocking heuristics
// take std::thread::hardware_concurrency() as the pool's size.
//
// GEMM: cpu/sgemm.h, a packed, cache-blocked sgemm with AVX-512F and AVX2 micro-kernels chosen at
// run time (and a portable fallback): no BLAS dependency, and the epilogue fusion above, which a
// BLAS call cannot do.
//
// Thread safety: the kernel object is immutable after creation; per-call and per-task scratch is
// thread_local (grow-only, so a warmed-up thread allocates nothing); several threads may run one
// session at once.
#include "dynamic_learners/dynamic_learners.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace acmtool {

namespace {

using dynamic_learners::kW1;
using dynamic_learners::kW2;

// float32 only; tokens are indexed with int64, so no limit beyond the tensor's own.
const dynamic_learners::KernelSpec kCpuKernel{
    "CPU", {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT}, "float32 (float16 and bfloat16 run on the CUDA execution provider)",
    std::numeric_limits<int64_t>::max()};

// Rows of a row block: its X, H and Y rows stay in L2 next to the B panel being read, and each
// block streams every learner's weights through the cache once (fewer, bigger blocks stream less).
constexpr int64_t kMaxBlockRows = 96;
// Column mode shares one block among all threads (each keeps the block's X rows and its own
// columns in L2); every block costs two pool round trips per learner, so blocks are bigger.
constexpr int64_t kMaxColumnBlockRows = 256;

// A grow-only, 64-byte aligned array of floats. With `huge_pages` (the packed weights: megabytes
// that every block streams through the cache again) it asks Linux for transparent huge pages,
// which saves the TLB misses of walking them 4 KiB at a time.
class FloatBuffer {
 public:
  FloatBuffer() = default;
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  ~FloatBuffer() { std::free(data_); }

  float* Reserve(size_t count, bool huge_pages = false) {
    if (count > capacity_) {
      constexpr size_t kHugePage = size_t{2} << 20;
      const size_t want = std::max<size_t>(count, 16) * sizeof(float);
      const bool huge = huge_pages && want >= kHugePage;
      const size_t align = huge ? kHugePage : 64;
      const size_t bytes = (want + align - 1) / align * align;
      void* p = std::aligned_alloc(align, bytes);
      if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      if (huge) madvise(p, bytes, MADV_HUGEPAGE);  // a hint: failure changes nothing
#endif
      std::free(data_);
      data_ = static_cast<float*>(p);
      capacity_ = bytes / sizeof(float);
    }
    return data_;
  }
  float* data() const { return data_; }

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace

// W1 and W2 of every learner in the GEMM's packed layout.
struct PackedLearners {
  const cpu::Sgemm* sgemm = nullptr;
  int64_t n = 0, din = 0, h = 0, dout = 0;
  size_t w1_stride = 0, w2_stride = 0;  // floats per learner
  FloatBuffer w1, w2;
  // Where they were packed from (prepacked constants only): a Run uses them only when its W1
  // and W2 are these very buffers.
  const float* w1_source = nullptr;
  const float* w2_source = nullptr;
};

namespace {

void SizePacked(PackedLearners& p, const cpu::Sgemm& s, int64_t n, int64_t din, int64_t h, int64_t dout) {
  p.sgemm = &s;
  p.n = n;
  p.din = din;
  p.h = h;
  p.dout = dout;
  p.w1_stride = cpu::PackedBFloats(s, din, h);
  p.w2_stride = cpu::PackedBFloats(s, h, dout);
  p.w1.Reserve(static_cast<size_t>(n) * p.w1_stride, /*huge_pages=*/true);
  p.w2.Reserve(static_cast<size_t>(n) * p.w2_stride, /*huge_pages=*/true);
}

// Packs matrix `index` of 2n: W1[i] for index < n, W2[index - n] otherwise.
void PackOne(PackedLearners& p, const float* w1, const float* w2, size_t index) {
  const int64_t i = static_cast<int64_t>(index);
  float* w1p = p.w1.data();
  float* w2p = p.w2.data();
  if (i < p.n) {
    p.sgemm->pack_b(w1 + i * p.din * p.h, p.h, p.din, p.h, w1p + i * p.w1_stride);
  } else {
    const int64_t j = i - p.n;
    p.sgemm->pack_b(w2 + j * p.h * p.dout, p.dout, p.h, p.dout, w2p + j * p.w2_stride);
  }
}

// Scratch, one set per thread. `CallScratch` belongs to the thread that called Compute, and is
// read by the tasks on the other threads while that thread waits in ParallelFor; `TaskScratch`
// belongs to whichever thread runs a task.
struct CallScratch {
  std::vector<int64_t> order, bucket_starts, active;
  std::vector<int64_t> block_starts;
  PackedLearners weights;  // W1 and W2 packed on this call, when they are not prepacked
  FloatBuffer x_packed, hidden, hidden_packed, y_rows;  // column mode: one row block, shared
};
struct TaskScratch {
  FloatBuffer x_packed, hidden, hidden_packed, y_rows;  // row mode: the task's own row block
};
thread_local CallScratch tls_call;
thread_local TaskScratch tls_task;

// Everything the tasks of one Run need. Row mode: a task computes whole row blocks (all their
// learners, both GEMMs) and writes its own rows of Y. Column mode: the caller walks the row
// blocks and learners, and each GEMM is split over the threads by column panels.
struct RunPlan {
  const cpu::Sgemm* s;
  cpu::Activation activation;
  int64_t n, din, h, dout;
  const float* x;
  const float* b1;  // or null
  const float* b2;  // or null
  float* y;
  const float* w1p;
  const float* w2p;
  size_t w1_stride, w2_stride;
  const int64_t* order;   // sorted position -> token
  const int64_t* active;  // active[i] = number of sorted tokens that learner i runs on
  int64_t tokens;

  // Row mode.
  const int64_t* block_starts;  // compute task b: sorted rows [block_starts[b], block_starts[b + 1])
  int64_t compute_tasks;        // they cover sorted rows [0, active[0])
  int64_t fill_rows;            // rows of a fill task (tokens with K = 0: Y = B2)

  // Column mode: the current row block [r0, r1) and how many learners reach it; learner i's H
  // and packed H at hid + i * hid_stride and hp + i * hp_stride; the panels of a task.
  int64_t r0 = 0, r1 = 0, learners = 0;
  const float* xp = nullptr;
  float* hid = nullptr;
  float* hp = nullptr;
  float* yr = nullptr;
  size_t hid_stride = 0, hp_stride = 0;
  int64_t h_panels_per_task = 1, dout_panels_per_task = 1, h_tasks = 1;

  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string error;
};

// H = act(X W1[i] + B1[i]) on panels [p0, p1) of h, packed for the second GEMM as it goes.
void HiddenColumns(const RunPlan& p, int64_t i, int64_t m, const float* xp, float* hid, float* hp, int64_t p0,
                   int64_t p1) {
  const cpu::Sgemm& s = *p.s;
  cpu::GemmColumns(s, m, p.h, p.din, xp, p.w1p + i * p.w1_stride, hid, p.h, p.b1 ? p.b1 + i * p.h : nullptr,
                   p.activation, /*accumulate=*/false, p0, p1);
  const int64_t c0 = p0 * s.nr, c1 = std::min(p1 * s.nr, p.h);
  if (c1 > c0) cpu::PackAColumns(s, hid + c0, p.h, m, c1 - c0, hp, p.h, c0);
}

// Y rows (+)= H W2[i] (+ B2 with the first learner) on panels [p0, p1) of Dout.
void OutputColumns(const RunPlan& p, int64_t i, int64_t m, const float* hp, float* yr, int64_t p0, int64_t p1) {
  cpu::GemmColumns(*p.s, m, p.dout, p.h, hp, p.w2p + i * p.w2_stride, yr, p.dout, i == 0 ? p.b2 : nullptr,
                   cpu::Activation::kIdentity, /*accumulate=*/i > 0, p0, p1);
}

void ScatterRows(const RunPlan& p, int64_t r0, int64_t m, const float* yr) {
  const size_t row_bytes = static_cast<size_t>(p.dout) * sizeof(float);
  for (int64_t r = 0; r < m; ++r) std::memcpy(p.y + p.order[r0 + r] * p.dout, yr + r * p.dout, row_bytes);
}

void ComputeRows(const RunPlan& p, int64_t r0, int64_t r1) {
  const cpu::Sgemm& s = *p.s;
  const int64_t m = r1 - r0;
  TaskScratch& sc = tls_task;
  float* xp = sc.x_packed.Reserve(cpu::PackedAFloats(s, m, p.din));
  float* hid = sc.hidden.Reserve(static_cast<size_t>(m * p.h));
  float* hp = sc.hidden_packed.Reserve(cpu::PackedAFloats(s, m, p.h));
  float* yr = sc.y_rows.Reserve(static_cast<size_t>(m * p.dout));
  const int64_t h_panels = cpu::CeilDiv(p.h, s.nr), dout_panels = cpu::CeilDiv(p.dout, s.nr);

  s.pack_a(p.x, p.din, p.order + r0, m, p.din, xp, p.din);
  for (int64_t i = 0; i < p.n; ++i) {
    // Rows r0.. of this block that learner i runs on; all of them for i = 0 (r1 <= active[0]).
    const int64_t mi = std::min(r1, p.active[i]) - r0;
    if (mi <= 0) break;
    HiddenColumns(p, i, mi, xp, hid, hp, 0, h_panels);
    OutputColumns(p, i, mi, hp, yr, 0, dout_panels);
  }
  ScatterRows(p, r0, m, yr);
}

void FillRows(const RunPlan& p, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* yt = p.y + p.order[r] * p.dout;
    if (p.b2) {
      std::memcpy(yt, p.b2, static_cast<size_t>(p.dout) * sizeof(float));
    } else {
      std::fill(yt, yt + p.dout, 0.0f);
    }
  }
}

void RecordError(RunPlan& p, const char* what) {
  std::lock_guard<std::mutex> lock(p.error_mutex);
  if (!p.failed.exchange(true)) p.error = what;
}

// Runs one task for a ParallelFor callback: never lets an exception into ONNX Runtime's pool.
template <class F>
void Guarded(void* data, F&& body) noexcept {
  RunPlan& p = *static_cast<RunPlan*>(data);
  if (p.failed.load(std::memory_order_relaxed)) return;
  try {
    body(p);
  } catch (const std::bad_alloc&) {
    RecordError(p, "DynamicLearners: out of memory for scratch buffers");
  } catch (const std::exception& e) {
    RecordError(p, e.what());
  } catch (...) {
    RecordError(p, "DynamicLearners: unknown C++ exception in a task");
  }
}

void RowModeTask(void* data, size_t index) noexcept {
  Guarded(data, [index](RunPlan& p) {
    const int64_t t = static_cast<int64_t>(index);
    if (t < p.compute_tasks) {
      ComputeRows(p, p.block_starts[t], p.block_starts[t + 1]);
    } else {
      const int64_t r0 = p.active[0] + (t - p.compute_tasks) * p.fill_rows;
      FillRows(p, r0, std::min(r0 + p.fill_rows, p.tokens));
    }
  });
}

// Rows of the current column-mode block that learner i runs on (> 0 for i < p.learners).
int64_t LearnerRows(const RunPlan& p, int64_t i) { return std::min(p.r1, p.active[i]) - p.r0; }

// Task (learner i, panel chunk c) = index i * h_tasks + c: that learner's H on those panels.
void HiddenTask(void* data, size_t index) noexcept {
  Guarded(data, [index](RunPlan& p) {
    const int64_t i = static_cast<int64_t>(index) / p.h_tasks, chunk = static_cast<int64_t>(index) % p.h_tasks;
    const int64_t p0 = chunk * p.h_panels_per_task;
    const int64_t p1 = std::min(p0 + p.h_panels_per_task, cpu::CeilDiv(p.h, p.s->nr));
    HiddenColumns(p, i, LearnerRows(p, i), p.xp, p.hid + i * p.hid_stride, p.hp + i * p.hp_stride, p0, p1);
  });
}

// Y's panels of this task, every learner's product added in learner order.
void OutputTask(void* data, size_t index) noexcept {
  Guarded(data, [index](RunPlan& p) {
    const int64_t p0 = static_cast<int64_t>(index) * p.dout_panels_per_task;
    const int64_t p1 = std::min(p0 + p.dout_panels_per_task, cpu::CeilDiv(p.dout, p.s->nr));
    for (int64_t i = 0; i < p.learners; ++i) {
      OutputColumns(p, i, LearnerRows(p, i), p.hp + i * p.hp_stride, p.yr, p0, p1);
    }
  });
}

struct PackPlan {
  PackedLearners* packed;
  const float* w1;
  const float* w2;
};

void RunPackTask(void* data, size_t index) noexcept {
  const PackPlan& p = *static_cast<const PackPlan*>(data);
  PackOne(*p.packed, p.w1, p.w2, index);  // only reads and writes preallocated memory
}

// fn(data, i) for i in [0, total) on ORT's intra-op pool (serially when there is one task).
void ParallelFor(OrtKernelContext* context, void (*fn)(void*, size_t), size_t total, void* data) {
  if (total == 0) return;
  if (total == 1) {
    fn(data, 0);
    return;
  }
  Ort::ThrowOnError(Ort::GetApi().KernelContext_ParallelFor(context, fn, total, 0, data));
}

void ThrowIfFailed(const RunPlan& plan) {
  if (plan.failed.load()) throw OpError(ORT_FAIL, plan.error);
}

size_t ThreadsHint() {
  static const size_t threads = std::max(1u, std::thread::hardware_concurrency());
  return threads;
}

// Row mode: blocks cut so that each holds about the same work (sum of K over its rows; the first
// rows have the largest K, so the first blocks have fewer rows), at micro-tile boundaries; enough
// of them that none exceeds kMaxBlockRows, at least two per thread, a multiple of the threads.
void CutRowBlocks(int64_t rows, int64_t n, const int64_t* active, int64_t mr, int64_t threads,
                  std::vector<int64_t>& starts) {
  const int64_t max_rows = std::max<int64_t>(mr, kMaxBlockRows / mr * mr);
  int64_t tasks = std::max(cpu::CeilDiv(rows, max_rows), std::min(2 * threads, cpu::CeilDiv(rows, 4 * mr)));
  if (tasks > threads) tasks = cpu::CeilDiv(tasks, threads) * threads;  // the same count for every thread
  auto work_before = [&](int64_t r) {  // sum of K over sorted rows [0, r)
    int64_t w = 0;
    for (int64_t i = 0; i < n; ++i) w += std::min(r, active[i]);
    return static_cast<double>(w);
  };
  const double total_work = work_before(rows);
  starts.assign(1, 0);
  while (starts.back() < rows) {
    const int64_t r0 = starts.back();
    const double goal = total_work * static_cast<double>(starts.size()) / static_cast<double>(tasks);
    int64_t r1 = std::min(r0 + mr, rows);
    while (r1 < rows && r1 - r0 < max_rows && work_before(r1) < goal) r1 = std::min(r1 + mr, rows);
    if (rows - r1 < mr) r1 = rows;  // no block of less than one micro-tile at the end
    starts.push_back(r1);
  }
}

}  // namespace

DynamicLearnersKernel::DynamicLearnersKernel(const OrtKernelInfo* info)
    : activation_(dynamic_learners::ReadActivation(info)) {
  // The GEMM implementation: the best this CPU has, unless ACMTOOL_CPU_ISA asks for another
  // (avx512, avx2, generic; the tests use it to cover every micro-kernel on one machine).
  const char* isa = std::getenv("ACMTOOL_CPU_ISA");
  sgemm_ = cpu::FindSgemm(isa ? isa : "");
  if (!sgemm_) {
    dynamic_learners::Invalid(std::string("ACMTOOL_CPU_ISA=") + isa +
                              " is not available on this CPU or in this build (known: auto, avx512, avx2, generic)");
  }

  // How to share the work among threads: by the number of rows (auto), or always row blocks
  // (rows) or column panels (columns): ACMTOOL_CPU_SCHEDULE, for tests and benchmarks.
  const char* schedule = std::getenv("ACMTOOL_CPU_SCHEDULE");
  const std::string sched = schedule ? schedule : "";
  if (sched.empty() || sched == "auto") {
    schedule_ = Schedule::kAuto;
  } else if (sched == "rows") {
    schedule_ = Schedule::kRows;
  } else if (sched == "columns") {
    schedule_ = Schedule::kColumns;
  } else {
    dynamic_learners::Invalid("ACMTOOL_CPU_SCHEDULE=" + sched + " is not one of auto, rows, columns");
  }

  // Prepack W1 and W2 when both are constant initializers; any surprise just skips it (the
  // Run then packs them and reports what is wrong with them).
  try {
    Ort::ConstKernelInfo ki(info);
    if (ki.GetInputCount() < kW2 + 1) return;
    int w1_constant = 0, w2_constant = 0;
    Ort::ConstValue w1 = ki.GetTensorConstantInput(kW1, &w1_constant);
    Ort::ConstValue w2 = ki.GetTensorConstantInput(kW2, &w2_constant);
    if (!w1_constant || !w2_constant || !w1 || !w2) return;
    const auto i1 = w1.GetTensorTypeAndShapeInfo();
    const auto i2 = w2.GetTensorTypeAndShapeInfo();
    if (i1.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
        i2.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      return;
    const std::vector<int64_t> s1 = i1.GetShape(), s2 = i2.GetShape();
    if (s1.size() != 3 || s2.size() != 3 || s2[0] != s1[0] || s2[1] != s1[2]) return;
    auto packed = std::make_unique<PackedLearners>();
    SizePacked(*packed, *sgemm_, s1[0], s1[1], s1[2], s2[2]);
    packed->w1_source = w1.GetTensorData<float>();
    packed->w2_source = w2.GetTensorData<float>();
    for (size_t j = 0; j < static_cast<size_t>(2 * packed->n); ++j) {
      PackOne(*packed, packed->w1_source, packed->w2_source, j);
    }
    prepacked_ = std::move(packed);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception&) {
    prepacked_.reset();
  }
}

DynamicLearnersKernel::~DynamicLearnersKernel() = default;

OrtStatusPtr DynamicLearnersKernel::ComputeV2(OrtKernelContext* context) noexcept {
  return StatusOf([&] { Compute(context); });
}

void DynamicLearnersKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const dynamic_learners::Inputs in = dynamic_learners::ViewInputs(ctx);
  const dynamic_learners::Sizes sizes = dynamic_learners::CheckInputs(in, kCpuKernel);
  const dynamic_learners::InputView &x = in.x, &k = in.k, &w1 = in.w1, &b1 = in.b1, &w2 = in.w2, &b2 = in.b2;
  const int64_t n = sizes.n, din = sizes.din, h = sizes.h, dout = sizes.dout, tokens = sizes.tokens;

  // ---- K: range check and counting sort (descending), one pass to count, one to place
  CallScratch& call = tls_call;
  const int64_t* kv = k.value.GetTensorData<int64_t>();
  if (tokens > 0) {
    int64_t lo = kv[0], hi = kv[0];
    for (int64_t t = 0; t < tokens; ++t) {
      lo = std::min(lo, kv[t]);
      hi = std::max(hi, kv[t]);
    }
    dynamic_learners::CheckKRange(lo, hi, n);
  }

  Ort::UnownedValue y_value = ctx.GetOutput(0, sizes.y_shape);
  if (tokens == 0 || dout == 0) return;
  float* y = y_value.GetTensorMutableData<float>();

  // Bucket b holds the tokens with K = n - b, so bucket order is K descending.
  std::vector<int64_t>& start = call.bucket_starts;  // N + 1 buckets (+ 1)
  start.assign(static_cast<size_t>(n) + 2, 0);
  for (int64_t t = 0; t < tokens; ++t) ++start[static_cast<size_t>(n - kv[t]) + 1];
  for (size_t b = 1; b < start.size(); ++b) start[b] += start[b - 1];
  // active[i] = #{K > i} = start of the bucket of K = i, i.e. of bucket n - i.
  std::vector<int64_t>& active = call.active;
  active.assign(static_cast<size_t>(std::max<int64_t>(n, 1)), 0);
  for (int64_t i = 0; i < n; ++i) active[static_cast<size_t>(i)] = start[static_cast<size_t>(n - i)];
  call.order.resize(static_cast<size_t>(tokens));
  int64_t* order = call.order.data();
  for (int64_t t = 0; t < tokens; ++t) order[start[static_cast<size_t>(n - kv[t])]++] = t;

  // ---- weights in the GEMM's layout
  const float* w1_data = w1.value.GetTensorData<float>();
  const float* w2_data = w2.value.GetTensorData<float>();
  const PackedLearners* packed = prepacked_.get();
  if (n > 0 && !(packed && packed->w1_source == w1_data && packed->w2_source == w2_data && packed->n == n &&
                 packed->din == din && packed->h == h && packed->dout == dout)) {
    PackedLearners& fresh = call.weights;
    SizePacked(fresh, *sgemm_, n, din, h, dout);
    PackPlan pack{&fresh, w1_data, w2_data};
    ParallelFor(context, &RunPackTask, static_cast<size_t>(2 * n), &pack);
    packed = &fresh;
  }

  // ---- the work: row blocks of the sorted tokens that run learners, then the K = 0 tokens
  RunPlan plan;
  plan.s = sgemm_;
  plan.activation = activation_;
  plan.n = n;
  plan.din = din;
  plan.h = h;
  plan.dout = dout;
  plan.x = x.value.GetTensorData<float>();
  plan.b1 = b1.present() ? b1.value.GetTensorData<float>() : nullptr;
  plan.b2 = b2.present() ? b2.value.GetTensorData<float>() : nullptr;
  plan.y = y;
  plan.w1p = packed ? packed->w1.data() : nullptr;
  plan.w2p = packed ? packed->w2.data() : nullptr;
  plan.w1_stride = packed ? packed->w1_stride : 0;
  plan.w2_stride = packed ? packed->w2_stride : 0;
  plan.order = order;
  plan.active = active.data();
  plan.tokens = tokens;

  const cpu::Sgemm& s = *sgemm_;
  const int64_t rows = n > 0 ? active[0] : 0;  // sorted rows with K >= 1
  const int64_t threads = static_cast<int64_t>(ThreadsHint());

  const bool row_mode = schedule_ == Schedule::kAuto ? rows >= threads * kMaxBlockRows
                                                     : schedule_ == Schedule::kRows;
  if (row_mode) {
    // Row mode: enough rows for every thread to get two blocks of 4 micro-tiles or more (about
    // 50 rows: each block streams the weights of its learners, which a few dozen rows amortise);
    // the pool schedules the blocks dynamically; the K = 0 rows go last.
    CutRowBlocks(rows, n, active.data(), s.mr, threads, call.block_starts);
    plan.block_starts = call.block_starts.data();
    plan.compute_tasks = static_cast<int64_t>(call.block_starts.size()) - 1;
    const int64_t rest = tokens - rows;
    plan.fill_rows = std::max<int64_t>(cpu::CeilDiv(rest, threads), 256);
    const int64_t fill_tasks = cpu::CeilDiv(rest, plan.fill_rows);
    ParallelFor(context, &RowModeTask, static_cast<size_t>(plan.compute_tasks + fill_tasks), &plan);
    ThrowIfFailed(plan);
    return;
  }

  // Column mode: too few rows to give every thread blocks of its own without each block
  // streaming all the weights again, so the threads split every GEMM by column panels instead
  // (each streams only its panels). Blocks of up to kMaxColumnBlockRows rows, in turn; each in two
  // pool rounds (all learners' H, then Y), not two per learner: at one image or a short sentence
  // the rounds, not the FLOPs, were the cost.
  const int64_t h_panels = cpu::CeilDiv(h, s.nr), dout_panels = cpu::CeilDiv(dout, s.nr);
  const int64_t split = 2 * threads;
  plan.h_panels_per_task = std::max<int64_t>(1, cpu::CeilDiv(h_panels, split));
  plan.dout_panels_per_task = std::max<int64_t>(1, cpu::CeilDiv(dout_panels, split));
  plan.h_tasks = cpu::CeilDiv(h_panels, plan.h_panels_per_task);
  const size_t dout_tasks = static_cast<size_t>(cpu::CeilDiv(dout_panels, plan.dout_panels_per_task));
  const int64_t blocks = cpu::CeilDiv(rows, kMaxColumnBlockRows);
  const int64_t block_rows = blocks > 0 ? cpu::CeilDiv(cpu::CeilDiv(rows, blocks), s.mr) * s.mr : 0;
  if (rows > 0) {
    const int64_t m = std::min(block_rows, rows);
    plan.hid_stride = static_cast<size_t>(m * h);
    plan.hp_stride = cpu::PackedAFloats(s, m, h);
    plan.xp = call.x_packed.Reserve(cpu::PackedAFloats(s, m, din));
    plan.hid = call.hidden.Reserve(plan.hid_stride * static_cast<size_t>(n));
    plan.hp = call.hidden_packed.Reserve(plan.hp_stride * static_cast<size_t>(n));
    plan.yr = call.y_rows.Reserve(static_cast<size_t>(m * dout));
  }
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t r1 = std::min(r0 + block_rows, rows);
    s.pack_a(plan.x, din, order + r0, r1 - r0, din, call.x_packed.data(), din);
    plan.r0 = r0;
    plan.r1 = r1;
    plan.learners = 0;  // learners with rows in this block: a prefix, as K is sorted descending
    while (plan.learners < n && LearnerRows(plan, plan.learners) > 0) ++plan.learners;
    ParallelFor(context, &HiddenTask, static_cast<size_t>(plan.learners * plan.h_tasks), &plan);
    ThrowIfFailed(plan);
    ParallelFor(context, &OutputTask, dout_tasks, &plan);
    ThrowIfFailed(plan);
    ScatterRows(plan, r0, r1 - r0, plan.yr);
  }
  FillRows(plan, rows, tokens);
}

}  // namespace acmtool
