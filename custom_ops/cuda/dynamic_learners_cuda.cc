// The ONNX Runtime side of the CUDA kernel of DynamicLearners: checks, stream, scratch, cuBLASLt
// handles. See dynamic_learners_cuda.h.
#include "cuda/dynamic_learners_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cuda/dynamic_learners_cuda_impl.cuh"

namespace acmtool {
namespace {

constexpr size_t kX = 0, kK = 1, kW1 = 2, kB1 = 3, kW2 = 4, kB2 = 5;

// The messages below follow the CPU kernel's (dynamic_learners/dynamic_learners.cc) word for word,
// so that a model fails the same way on either provider.
std::string TypeName(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return "uint32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return "uint64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    default: return "element type " + std::to_string(static_cast<int>(t));
  }
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

[[noreturn]] void Invalid(const std::string& message) {
  throw OpError(ORT_INVALID_ARGUMENT, "DynamicLearners: " + message);
}

[[noreturn]] void Failed(const std::string& message) {
  throw OpError(ORT_FAIL, "DynamicLearners (CUDA): " + message);
}

void CheckCuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) Failed(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

struct InputView {
  Ort::ConstValue value{nullptr};
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;

  bool present() const { return static_cast<const OrtValue*>(value) != nullptr; }
};

InputView ViewInput(const Ort::KernelContext& ctx, size_t index, const char* name) {
  InputView v;
  if (index < ctx.GetInputCount()) v.value = ctx.GetInput(index);
  if (!v.present()) return v;
  if (!v.value.IsTensor()) Invalid(std::string(name) + " must be a tensor");
  const auto info = v.value.GetTensorTypeAndShapeInfo();
  v.type = info.GetElementType();
  v.shape = info.GetShape();
  return v;
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

DynamicLearnersCudaKernel::DynamicLearnersCudaKernel(const OrtKernelInfo* info) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  OrtStatus* status = api.KernelInfoGetAttribute_string(info, "activation", nullptr, &size);
  if (status != nullptr) {
    api.ReleaseStatus(status);
    throw OpError(ORT_INVALID_ARGUMENT, std::string("DynamicLearners: the string attribute 'activation' is required: one of ") +
                                            cpu::ActivationNames());
  }
  std::string name(size, '\0');
  Ort::ThrowOnError(api.KernelInfoGetAttribute_string(info, "activation", &name[0], &size));
  name.resize(std::strlen(name.c_str()));
  if (!cpu::ParseActivation(name, &activation_)) {
    throw OpError(ORT_INVALID_ARGUMENT, "DynamicLearners: activation '" + name + "' is not one of " +
                                            cpu::ActivationNames());
  }
}

OrtStatusPtr DynamicLearnersCudaKernel::ComputeV2(OrtKernelContext* context) noexcept {
  return StatusOf([&] { Compute(context); });
}

void DynamicLearnersCudaKernel::Compute(OrtKernelContext* context) const {
  Ort::KernelContext ctx(context);
  const InputView x = ViewInput(ctx, kX, "X");
  const InputView k = ViewInput(ctx, kK, "K");
  const InputView w1 = ViewInput(ctx, kW1, "W1");
  const InputView b1 = ViewInput(ctx, kB1, "B1");
  const InputView w2 = ViewInput(ctx, kW2, "W2");
  const InputView b2 = ViewInput(ctx, kB2, "B2");

  // ---- checks: the CPU kernel's, in its order and words (only the supported types differ)
  if (!x.present() || !k.present() || !w1.present() || !w2.present()) {
    Invalid("X, K, W1 and W2 are required inputs");
  }
  if (x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 &&
      x.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16) {
    Invalid("X is " + TypeName(x.type) + "; the CUDA kernel computes float32, float16 and bfloat16");
  }
  if (k.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64) Invalid("K must be int64; got " + TypeName(k.type));
  for (const auto& [name, in] : {std::make_pair("W1", &w1), std::make_pair("B1", &b1), std::make_pair("W2", &w2),
                                 std::make_pair("B2", &b2)}) {
    if (in->present() && in->type != x.type) {
      Invalid(std::string(name) + " is " + TypeName(in->type) + " but X is " + TypeName(x.type) +
              "; all float inputs must share one dtype");
    }
  }
  if (w1.shape.size() != 3 || w2.shape.size() != 3) {
    Invalid("W1 and W2 must be [N, Din, h] and [N, h, Dout]; got " + ShapeString(w1.shape) + " and " +
            ShapeString(w2.shape));
  }
  const int64_t n = w1.shape[0], din = w1.shape[1], h = w1.shape[2];
  if (w2.shape[0] != n || w2.shape[1] != h) {
    Invalid("W2 " + ShapeString(w2.shape) + " does not match W1 " + ShapeString(w1.shape) + ": expected [" +
            std::to_string(n) + ", " + std::to_string(h) + ", Dout]");
  }
  const int64_t dout = w2.shape[2];
  if (x.shape.empty() || x.shape.back() != din) {
    Invalid("X must be [..., " + std::to_string(din) + "]; got " + ShapeString(x.shape));
  }
  std::vector<int64_t> lead(x.shape.begin(), x.shape.end() - 1);
  if (k.shape != lead) {
    Invalid("K must have X's shape without its last axis, " + ShapeString(lead) + "; got " + ShapeString(k.shape));
  }
  if (b1.present() && b1.shape != std::vector<int64_t>{n, h}) {
    Invalid("B1 must be [" + std::to_string(n) + ", " + std::to_string(h) + "]; got " + ShapeString(b1.shape));
  }
  if (b2.present() && b2.shape != std::vector<int64_t>{dout}) {
    Invalid("B2 must be [" + std::to_string(dout) + "]; got " + ShapeString(b2.shape));
  }
  int64_t tokens = 1;
  for (int64_t d : lead) tokens *= d;
  if (tokens > cuda::kMaxTokens) {
    Invalid("the CUDA kernel takes at most " + std::to_string(cuda::kMaxTokens) + " tokens; got " +
            std::to_string(tokens));
  }

  std::vector<int64_t> y_shape = lead;
  y_shape.push_back(dout);
  Ort::UnownedValue y_value = ctx.GetOutput(0, y_shape);
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
      Invalid("K must lie in [0, " + std::to_string(n) + "] (N = " + std::to_string(n) +
              " learners); got values in [" + std::to_string(status.k_min) + ", " + std::to_string(status.k_max) +
              "]");
    case cuda::RunStatus::Code::kOutOfMemory:
      throw OpError(ORT_FAIL, "DynamicLearners (CUDA): " + status.message +
                                  (scratch.error().empty() ? "" : " (" + scratch.error() + ")"));
    default:
      Failed(status.message);
  }
}

OrtStatusPtr DynamicLearnersCudaOp::CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** op_kernel) const {
  *op_kernel = nullptr;
  return StatusOf([&] { *op_kernel = new DynamicLearnersCudaKernel(info); });
}

ONNXTensorElementDataType DynamicLearnersCudaOp::GetInputType(size_t index) const {
  if (index == kX) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  if (index == kK) return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  return type_;
}

OrtCustomOpInputOutputCharacteristic DynamicLearnersCudaOp::GetInputCharacteristic(size_t index) const {
  return index == kB1 || index == kB2 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
}

}  // namespace acmtool
