// acmtool_run: run an exported acmtool model (or any ONNX model) with ONNX Runtime, from C++ and
// without Python. Inputs come from .npy files, each output goes to OUTDIR/NAME.npy.
//
//   acmtool_run --model model.onnx --ops-lib libacmtool_ops.so --ort-lib libonnxruntime.so.1.32.0
//               --out-dir out input=x.npy
//
// libonnxruntime is opened at run time (dlopen) and the API taken from its OrtGetApiBase, so the
// program does not link it and runs with any ONNX Runtime >= 1.29 (API version 29). The custom-op
// library is handed to ONNX Runtime, which loads it and calls its RegisterCustomOps.
//
// Any error (a bad argument, a missing or malformed file, an ONNX Runtime error such as a K out
// of range) is one line on stderr and exit status 2.
#ifndef ORT_API_MANUAL_INIT
#error "build with -DORT_API_MANUAL_INIT (CMakeLists.txt does): the API comes from dlopen, not the linker"
#endif
#include <onnxruntime_cxx_api.h>

#include <dlfcn.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "npy.h"

namespace fs = std::filesystem;

namespace {

const char kUsage[] =
    "usage: acmtool_run --model MODEL.onnx [--ops-lib LIBACMTOOL_OPS] [--ort-lib LIBONNXRUNTIME]\n"
    "                   [--threads N] [--out-dir DIR] [--verbose] NAME=FILE.npy ...\n"
    "\n"
    "  --model      the ONNX model to run\n"
    "  --ops-lib    libacmtool_ops.so (`acmtool library-path`); needed when the model has DynamicLearners\n"
    "  --ort-lib    libonnxruntime (>= 1.29); default $ORT_LIB, else libonnxruntime.so on the loader's path\n"
    "  --threads    intra-op threads (default 0: ONNX Runtime's choice)\n"
    "  --out-dir    where OUTPUT_NAME.npy files go (default: .)\n"
    "  --verbose    let ONNX Runtime log warnings to stderr\n"
    "  NAME=FILE    one per model input: a C-order little-endian .npy of the input's type; inputs with a\n"
    "               default (an acmtool model's budget, a float32 scalar) may be left out\n"
    "\n"
    "Exit status: 0 on success, 2 on any error (one line on stderr).\n";

struct Options {
  std::string model, ops_lib, ort_lib, out_dir = ".";
  int threads = 0;
  bool verbose = false;
  std::vector<std::pair<std::string, std::string>> inputs;  // NAME, FILE
};

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--verbose") {
      o.verbose = true;
      continue;
    }
    if (arg.rfind("--", 0) == 0) {  // --flag VALUE or --flag=VALUE
      std::string flag = arg, value;
      size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        flag = arg.substr(0, eq);
        value = arg.substr(eq + 1);
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        throw Error(flag + " needs a value (see --help)");
      }
      if (flag == "--model") o.model = value;
      else if (flag == "--ops-lib") o.ops_lib = value;
      else if (flag == "--ort-lib") o.ort_lib = value;
      else if (flag == "--out-dir") o.out_dir = value;
      else if (flag == "--threads") {
        size_t used = 0;
        try {
          o.threads = std::stoi(value, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != value.size() || o.threads < 0)
          throw Error("--threads takes a whole number >= 0; got '" + value + "'");
      } else {
        throw Error("unknown option " + flag + " (see --help)");
      }
      continue;
    }
    size_t eq = arg.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
      throw Error("inputs are given as NAME=FILE.npy; got '" + arg + "'");
    o.inputs.emplace_back(arg.substr(0, eq), arg.substr(eq + 1));
  }
  if (o.model.empty()) throw Error("--model is required (see --help)");
  if (o.ort_lib.empty()) {
    const char* env = std::getenv("ORT_LIB");
    o.ort_lib = env && *env ? env : "libonnxruntime.so";
  }
  return o;
}

// Opens libonnxruntime and returns its API, version ORT_API_VERSION (what the headers declare).
// The library stays loaded until the process ends.
const OrtApi* LoadOnnxRuntime(const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    throw Error("cannot load ONNX Runtime (" + std::string(why ? why : path) +
                "); give its path with --ort-lib or ORT_LIB");
  }
  using GetApiBase = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBase>(dlsym(handle, "OrtGetApiBase"));
  if (!get_api_base) throw Error(path + " has no OrtGetApiBase: it is not libonnxruntime");
  const OrtApiBase* base = get_api_base();
  const OrtApi* api = base->GetApi(ORT_API_VERSION);
  if (!api) {
    throw Error("ONNX Runtime " + std::string(base->GetVersionString()) + " (" + path + ") lacks API version " +
                std::to_string(ORT_API_VERSION) + "; onnxruntime >= 1." + std::to_string(ORT_API_VERSION) +
                " is needed");
  }
  return api;
}

// .npy dtypes and ONNX element types, both ways.
struct TypePair {
  npy::DType dtype;
  ONNXTensorElementDataType onnx;
};
const TypePair kTypes[] = {
    {{'b', 1}, ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL},    {{'i', 1}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8},
    {{'i', 2}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16},   {{'i', 4}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32},
    {{'i', 8}, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64},   {{'u', 1}, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8},
    {{'u', 2}, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16},  {{'u', 4}, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32},
    {{'u', 8}, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64},  {{'f', 2}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16},
    {{'f', 4}, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},   {{'f', 8}, ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE},
};

ONNXTensorElementDataType OnnxType(const npy::DType& t) {
  for (const TypePair& p : kTypes)
    if (p.dtype == t) return p.onnx;
  throw Error("no ONNX type for " + t.Name());  // npy::Read admits only the types above
}

const npy::DType* NpyType(ONNXTensorElementDataType t) {
  for (const TypePair& p : kTypes)
    if (p.onnx == t) return &p.dtype;
  return nullptr;
}

std::string TypeName(ONNXTensorElementDataType t) {
  if (const npy::DType* d = NpyType(t)) return d->Name();
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    default: return "ONNX element type " + std::to_string(static_cast<int>(t));
  }
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string Join(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// Output names become file names: anything but letters, digits, '.', '-' and '_' becomes '_'.
std::string FileNameFor(const std::string& name) {
  std::string s = name;
  for (char& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) c = '_';
  if (s.empty() || s == "." || s == "..") s = "_" + s;
  return s;
}

int Run(const Options& o) {
  if (!fs::is_regular_file(o.model)) throw Error(o.model + ": no such model file");
  if (!o.ops_lib.empty() && !fs::is_regular_file(o.ops_lib)) throw Error(o.ops_lib + ": no such custom-op library");
  // Read every input before ONNX Runtime starts, so that a bad file fails fast.
  std::vector<npy::Array> arrays;
  for (const auto& [name, file] : o.inputs) arrays.push_back(npy::Read(file));

  Ort::InitApi(LoadOnnxRuntime(o.ort_lib));
  Ort::Env env(o.verbose ? ORT_LOGGING_LEVEL_WARNING : ORT_LOGGING_LEVEL_FATAL, "acmtool_run");
  Ort::SessionOptions options;
  options.SetIntraOpNumThreads(o.threads);
  if (!o.ops_lib.empty()) options.RegisterCustomOpsLibrary(o.ops_lib.c_str());
  Ort::Session session(env, o.model.c_str(), options);

  // Match the NAME=FILE pairs with the model's inputs: every input once, of its own type. Inputs
  // with a default (an initializer of the same name, e.g. an acmtool model's `budget`) are optional.
  const std::vector<std::string> input_names = session.GetInputNames();
  const std::vector<std::string> optional_names = session.GetOverridableInitializerNames();
  const std::vector<std::string> output_names = session.GetOutputNames();
  std::vector<int> given(input_names.size() + optional_names.size(), -1);
  for (size_t a = 0; a < o.inputs.size(); ++a) {
    const std::string& name = o.inputs[a].first;
    size_t i = 0;
    while (i < input_names.size() && input_names[i] != name) ++i;
    if (i == input_names.size()) {
      size_t j = 0;
      while (j < optional_names.size() && optional_names[j] != name) ++j;
      if (j == optional_names.size()) {
        throw Error("the model has no input '" + name + "' (its inputs: " + Join(input_names) +
                    (optional_names.empty() ? "" : "; optional: " + Join(optional_names)) + ")");
      }
      i = input_names.size() + j;
    }
    if (given[i] >= 0) throw Error("input '" + name + "' is given twice");
    given[i] = static_cast<int>(a);
  }
  Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  static char empty_tensor_data;  // a valid address for tensors with no elements
  std::vector<Ort::Value> values;
  std::vector<const char*> in_names, out_names;
  for (size_t i = 0; i < given.size(); ++i) {
    const bool optional = i >= input_names.size();
    const std::string& name = optional ? optional_names[i - input_names.size()] : input_names[i];
    if (given[i] < 0) {
      if (optional) continue;  // its default
      throw Error("input '" + name + "' is not given (" + name + "=FILE.npy)");
    }
    const std::string& file = o.inputs[static_cast<size_t>(given[i])].second;
    npy::Array& a = arrays[static_cast<size_t>(given[i])];
    Ort::TypeInfo info = optional ? session.GetOverridableInitializerTypeInfo(i - input_names.size())
                                  : session.GetInputTypeInfo(i);
    if (info.GetONNXType() != ONNX_TYPE_TENSOR) throw Error("input '" + name + "' is not a tensor");
    const ONNXTensorElementDataType want = info.GetTensorTypeAndShapeInfo().GetElementType();
    if (want != OnnxType(a.dtype)) {
      throw Error("input '" + name + "' is " + TypeName(want) + " but " + file + " holds " + a.dtype.Name());
    }
    void* data = a.data.empty() ? &empty_tensor_data : a.data.data();
    values.push_back(Ort::Value::CreateTensor(cpu, data, a.data.size(), a.shape.data(), a.shape.size(), want));
    in_names.push_back(name.c_str());
  }
  for (const std::string& n : output_names) out_names.push_back(n.c_str());
  std::vector<Ort::Value> outputs = session.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(),
                                                values.size(), out_names.data(), out_names.size());

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) throw Error(o.out_dir + ": cannot create the output folder: " + ec.message());
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].IsTensor()) throw Error("output '" + output_names[i] + "' is not a tensor; cannot save it as .npy");
    Ort::TensorTypeAndShapeInfo info = outputs[i].GetTensorTypeAndShapeInfo();
    const npy::DType* dtype = NpyType(info.GetElementType());
    if (!dtype) {
      throw Error("output '" + output_names[i] + "' is " + TypeName(info.GetElementType()) +
                  ", which .npy cannot hold");
    }
    const std::vector<int64_t> shape = info.GetShape();
    const size_t bytes = info.GetElementCount() * dtype->size;
    const std::string path = (fs::path(o.out_dir) / (FileNameFor(output_names[i]) + ".npy")).string();
    npy::Write(path, *dtype, shape, bytes ? outputs[i].GetTensorRawData() : nullptr, bytes);
    std::printf("%s: %s %s -> %s\n", output_names[i].c_str(), dtype->Name().c_str(), ShapeString(shape).c_str(),
                path.c_str());
  }
  return 0;
}

// Messages go out as one line: ONNX Runtime's may span several.
std::string OneLine(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "acmtool_run: error: %s\n", OneLine(message).c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = ParseArgs(argc, argv);
    return Run(options);
  } catch (const Ort::Exception& e) {
    std::string message = std::string("ONNX Runtime: ") + e.what();
    if (options.ops_lib.empty() && message.find("ai.acmtool") != std::string::npos)
      message += " (the model needs the custom-op library: give --ops-lib)";
    return Fail(message);
  } catch (const std::bad_alloc&) {
    return Fail("out of memory");
  } catch (const std::exception& e) {
    return Fail(e.what());
  } catch (...) {
    return Fail("unknown error");
  }
}
