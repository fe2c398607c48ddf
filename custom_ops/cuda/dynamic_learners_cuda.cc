// The ONNX Runtime side of the CUDA kernel of DynamicLearners: checks, stream, scratch, cuBLASLt
// handles. See dynamic_learners_cuda.h.
#include "cuda/dynamic_learners_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cuda/dynamic_learners_cuda_impl.cuh"

namespace acmtool {
namespace {

// float32, float16, bfloat16; token indices are int32 on the device (cuda::kMaxTokens).
const dynamic_learners::KernelSpec kCudaKernel{
    "CUDA",
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
     ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16},
    "float32, float16 and bfloat16",
    cuda::kMaxTokens};

[[noreturn]] void Failed(const std::string& message) {
  throw OpError(ORT_FAIL, "DynamicLearners (CUDA): " + message);
}

void CheckCuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Failed(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

cuda::DType DTypeOf(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return cuda::DType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return cuda::DType::kBFloat16;
    default: return cuda::DType::kFloat32;
  }
}

// One cuBLASLt handle per device, for the life of the process (never destroyed: at exit the CUDA
// runtime may already be gone). cuBLASLt takes the stream with every call, so one handle serves
// every stream and thread of its device.
cublasLtHandle_t LtHandle(const cuda::CublasLt& lt, int device) {
  static std::mutex mutex;
  static auto* handles = new std::unordered_map<int, cublasLtHandle_t>();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = handles->find(device);
  if (it != handles->end()) return it->second;
  cublasLtHandle_t handle = nullptr;
  const cublasStatus_t s = lt.Create(&handle);
  if (s != CUBLAS_STATUS_SUCCESS) Failed(std::string("cublasLtCreate failed: ") + lt.GetStatusString(s));
  handles->emplace(device, handle);
  return handle;
}

// Per thread and device: the event recorded after the summary copy, and the pinned buffer it lands
// in (grow-only). Freed when the thread ends.
struct ThreadDeviceState {
  int device = -1;
  cudaEvent_t event = nullptr;
  int64_t* pinned = nullptr;
  size_t capacity = 0;  // int64 values
};

struct ThreadStates {
  std::vector<ThreadDeviceState> states;
  ~ThreadStates() {
    for (ThreadDeviceState& s : states) {
      if (cudaSetDevice(s.device) != cudaSuccess) continue;  // the runtime may be shutting down
      if (s.pinned) cudaFreeHost(s.pinned);
      if (s.event) cudaEventDestroy(s.event);
    }
  }
};

ThreadDeviceState& ThreadState(int device, size_t values) {
  thread_local ThreadStates tls;
  ThreadDeviceState* state = nullptr;
  for (ThreadDeviceState& s : tls.states) {
    if (s.device == device) state = &s;
  }
  if (state == nullptr) {
    tls.states.emplace_back();
    state = &tls.states.back();
    state->device = device;
    CheckCuda(cudaEventCreateWithFlags(&state->event, cudaEventDisableTiming), "cudaEventCreate");
  }
  if (state->capacity < values) {
    if (state->pinned) CheckCuda(cudaFreeHost(state->pinned), "cudaFreeHost");
    state->pinned = nullptr;
    state->capacity = 0;
    const size_t want = std::max<size_t>(values, 64);
    void* p = nullptr;
    CheckCuda(cudaHostAlloc(&p, want * sizeof(int64_t), cudaHostAllocDefault), "cudaHostAlloc");
    state->pinned = static_cast<int64_t*>(p);
    state->capacity = want;
  }
  return *state;
}

// Scratch from ONNX Runtime's allocator for the device (its arena; stream-aware, so a buffer freed
// here while the stream still uses it is only reused in stream order). Freed when the Run returns.
class OrtScratch final : public cuda::ScratchAllocator {
 public:
  OrtScratch(OrtKernelContext* context, const OrtMemoryInfo* memory) : context_(context), memory_(memory) {
    Ort::ThrowOnError(Ort::GetApi().KernelContext_GetAllocator(context, memory, &allocator_));
  }
  ~OrtScratch() override {
    const OrtApi& api = Ort::GetApi();
    for (void* p : buffers_) {
      OrtStatus* s = api.AllocatorFree(allocator_, p);
      if (s) api.ReleaseStatus(s);
    }
    api.ReleaseAllocator(allocator_);
  }
  OrtScratch(const OrtScratch&) = delete;
  OrtScratch& operator=(const OrtScratch&) = delete;

  void* Allocate(size_t bytes) override {
    void* p = nullptr;
    OrtStatus* s = Ort::GetApi().KernelContext_GetScratchBuffer(context_, memory_, bytes, &p);
    if (s != nullptr) {
      error_ = Ort::GetApi().GetErrorMessage(s);
      Ort::GetApi().ReleaseStatus(s);
      return nullptr;
    }
    if (p) buffers_.push_back(p);
    return p;
  }
  const std::string& error() const { return error_; }

 private:
  OrtKernelContext* context_;
  const OrtMemoryInfo* memory_;
  OrtAllocator* allocator_ = nullptr;
  std::vector<void*> buffers_;
  std::string error_;
};

}  // namespace

DynamicLearnersCudaKernel::DynamicLearnersCudaKernel(const OrtKernelInfo* info)
    : activation_(dynamic_learners::ReadActivation(info)) {}

OrtStatusPtr DynamicLearnersCudaKernel::ComputeV2(OrtKernelContext* context) noexcept {
  return StatusOf([&] { Compute(context); });
}

void DynamicLearnersCudaKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const dynamic_learners::Inputs in = dynamic_learners::ViewInputs(ctx);
  const dynamic_learners::Sizes sizes = dynamic_learners::CheckInputs(in, kCudaKernel);
  const dynamic_learners::InputView &x = in.x, &k = in.k, &w1 = in.w1, &b1 = in.b1, &w2 = in.w2, &b2 = in.b2;
  const int64_t n = sizes.n, din = sizes.din, h = sizes.h, dout = sizes.dout, tokens = sizes.tokens;

  Ort::UnownedValue y_value = ctx.GetOutput(0, sizes.y_shape);
  if (tokens == 0) return;

  // ---- the device, the stream, cuBLASLt
  const OrtApi& api = Ort::GetApi();
  void* stream_ptr = nullptr;
  Ort::ThrowOnError(api.KernelContext_GetGPUComputeStream(context, &stream_ptr));
  if (stream_ptr == nullptr) {
    Failed("ONNX Runtime gave no GPU compute stream (the kernel runs on the CUDAExecutionProvider only)");
  }
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const OrtMemoryInfo* memory = nullptr;
  Ort::ThrowOnError(api.GetTensorMemoryInfo(x.value, &memory));
  OrtMemoryInfoDeviceType device_type = OrtMemoryInfoDeviceType_CPU;
  api.MemoryInfoGetDeviceType(memory, &device_type);
  if (device_type != OrtMemoryInfoDeviceType_GPU) Failed("X is not in GPU memory");
  int device = 0;
  Ort::ThrowOnError(api.MemoryInfoGetId(memory, &device));
  int current = -1;
  CheckCuda(cudaGetDevice(&current), "cudaGetDevice");
  if (current != device) CheckCuda(cudaSetDevice(device), "cudaSetDevice");

  std::string error;
  const cuda::CublasLt* lt = cuda::LoadCublasLt(&error);
  if (lt == nullptr) Failed(error);
  ThreadDeviceState& state = ThreadState(device, cuda::SummaryLength(n));
  cuda::Resources resources;
  resources.lt = lt;
  resources.handle = LtHandle(*lt, device);
  resources.summary_copied = state.event;
  resources.summary_host = state.pinned;

  cuda::Problem p;
  p.dtype = DTypeOf(x.type);
  p.activation = activation_;
  p.tokens = tokens;
  p.n = n;
  p.din = din;
  p.h = h;
  p.dout = dout;
  p.x = x.value.GetTensorRawData();
  p.k = k.value.GetTensorData<int64_t>();
  p.w1 = w1.value.GetTensorRawData();
  p.b1 = b1.present() ? b1.value.GetTensorRawData() : nullptr;
  p.w2 = w2.value.GetTensorRawData();
  p.b2 = b2.present() ? b2.value.GetTensorRawData() : nullptr;
  p.y = dout > 0 ? y_value.GetTensorMutableRawData() : nullptr;

  OrtScratch scratch(context, memory);
  const cuda::RunStatus status = cuda::RunDynamicLearners(p, resources, scratch, stream);
  switch (status.code) {
    case cuda::RunStatus::Code::kOk:
      return;
    case cuda::RunStatus::Code::kKOutOfRange:
      dynamic_learners::CheckKRange(status.k_min, status.k_max, n);  // throws: the CPU kernel's message
      Failed("K was reported out of range, yet lies in [0, " + std::to_string(n) + "]");
    case cuda::RunStatus::Code::kOutOfMemory:
      throw OpError(ORT_FAIL, "DynamicLearners (CUDA): " + status.message +
                                  (scratch.error().empty() ? "" : " (" + scratch.error() + ")"));
    default:
      Failed(status.message);
  }
}

}  // namespace acmtool
