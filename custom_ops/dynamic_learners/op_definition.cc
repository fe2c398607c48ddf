// The op definition of DynamicLearners that every kernel shares. See op_definition.h.
#include "dynamic_learners/op_definition.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <utility>

namespace acmtool {
namespace dynamic_learners {

namespace {

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

std::string Str(int64_t v) { return std::to_string(v); }

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

void CheckTypes(const Inputs& in, const KernelSpec& kernel) {
  const auto& ok = kernel.float_types;
  if (std::find(ok.begin(), ok.end(), in.x.type) == ok.end()) {
    Invalid("X is " + TypeName(in.x.type) + "; the " + kernel.name + " kernel computes " + kernel.float_types_text);
  }
  if (in.k.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64) Invalid("K must be int64; got " + TypeName(in.k.type));
  for (const auto& [name, view] : {std::make_pair("W1", &in.w1), std::make_pair("B1", &in.b1),
                                   std::make_pair("W2", &in.w2), std::make_pair("B2", &in.b2)}) {
    if (view->present() && view->type != in.x.type) {
      Invalid(std::string(name) + " is " + TypeName(view->type) + " but X is " + TypeName(in.x.type) +
              "; all float inputs must share one dtype");
    }
  }
}

// The product of the leading dims; a shape whose product does not fit int64 is refused (no tensor of
// it can exist unless it has a 0, which makes the product 0).
int64_t TokenCount(const std::vector<int64_t>& lead) {
  if (std::find(lead.begin(), lead.end(), 0) != lead.end()) return 0;
  int64_t tokens = 1;
  for (int64_t d : lead) {
    if (__builtin_mul_overflow(tokens, d, &tokens)) Invalid("X's shape " + ShapeString(lead) + " has too many tokens");
  }
  return tokens;
}

}  // namespace

[[noreturn]] void Invalid(const std::string& message) {
  throw OpError(ORT_INVALID_ARGUMENT, std::string(kOpName) + ": " + message);
}

ONNXTensorElementDataType InputType(size_t index, ONNXTensorElementDataType float_type) {
  if (index == kX) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  if (index == kK) return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  return float_type;
}

OrtCustomOpInputOutputCharacteristic InputCharacteristic(size_t index) {
  return index == kB1 || index == kB2 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
}

cpu::Activation ReadActivation(const OrtKernelInfo* info) {
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  OrtStatus* status = api.KernelInfoGetAttribute_string(info, "activation", nullptr, &size);
  if (status != nullptr) {
    api.ReleaseStatus(status);
    Invalid(std::string("the string attribute 'activation' is required: one of ") + cpu::ActivationNames());
  }
  std::string name(size, '\0');
  Ort::ThrowOnError(api.KernelInfoGetAttribute_string(info, "activation", &name[0], &size));
  name.resize(std::strlen(name.c_str()));  // size counted the terminating NUL
  cpu::Activation activation;
  if (!cpu::ParseActivation(name, &activation)) {
    Invalid("activation '" + name + "' is not one of " + cpu::ActivationNames());
  }
  return activation;
}

Inputs ViewInputs(const Ort::KernelContext& ctx) {
  return Inputs{ViewInput(ctx, kX, "X"),   ViewInput(ctx, kK, "K"),   ViewInput(ctx, kW1, "W1"),
                ViewInput(ctx, kB1, "B1"), ViewInput(ctx, kW2, "W2"), ViewInput(ctx, kB2, "B2")};
}

Sizes CheckInputs(const Inputs& in, const KernelSpec& kernel) {
  if (!in.x.present() || !in.k.present() || !in.w1.present() || !in.w2.present()) {
    Invalid("X, K, W1 and W2 are required inputs");
  }
  CheckTypes(in, kernel);
  const std::vector<int64_t>& x = in.x.shape;
  const std::vector<int64_t>& w1 = in.w1.shape;
  const std::vector<int64_t>& w2 = in.w2.shape;
  if (w1.size() != 3 || w2.size() != 3) {
    Invalid("W1 and W2 must be [N, Din, h] and [N, h, Dout]; got " + ShapeString(w1) + " and " + ShapeString(w2));
  }
  Sizes s;
  s.n = w1[0];
  s.din = w1[1];
  s.h = w1[2];
  if (w2[0] != s.n || w2[1] != s.h) {
    Invalid("W2 " + ShapeString(w2) + " does not match W1 " + ShapeString(w1) + ": expected [" + Str(s.n) + ", " +
            Str(s.h) + ", Dout]");
  }
  s.dout = w2[2];
  if (x.empty() || x.back() != s.din) Invalid("X must be [..., " + Str(s.din) + "]; got " + ShapeString(x));
  const std::vector<int64_t> lead(x.begin(), x.end() - 1);
  if (in.k.shape != lead) {
    Invalid("K must have X's shape without its last axis, " + ShapeString(lead) + "; got " + ShapeString(in.k.shape));
  }
  if (in.b1.present() && in.b1.shape != std::vector<int64_t>{s.n, s.h}) {
    Invalid("B1 must be [" + Str(s.n) + ", " + Str(s.h) + "]; got " + ShapeString(in.b1.shape));
  }
  if (in.b2.present() && in.b2.shape != std::vector<int64_t>{s.dout}) {
    Invalid("B2 must be [" + Str(s.dout) + "]; got " + ShapeString(in.b2.shape));
  }
  s.tokens = TokenCount(lead);
  if (s.tokens > kernel.max_tokens) {
    Invalid("the " + std::string(kernel.name) + " kernel takes at most " + Str(kernel.max_tokens) +
            " tokens per call; got " + Str(s.tokens) + " (run the batch in smaller parts)");
  }
  s.y_shape = lead;
  s.y_shape.push_back(s.dout);
  return s;
}

void CheckKRange(int64_t k_min, int64_t k_max, int64_t n) {
  if (k_min < 0 || k_max > n) {
    Invalid("K must lie in [0, " + Str(n) + "] (N = " + Str(n) + " learners); got values in [" + Str(k_min) + ", " +
            Str(k_max) + "]");
  }
}

}  // namespace dynamic_learners
}  // namespace acmtool
