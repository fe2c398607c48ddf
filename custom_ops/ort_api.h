// The ONNX Runtime C++ API as every source file of this library sees it: ORT_API_MANUAL_INIT is
// defined by CMake for the whole target, so the API comes only from RegisterCustomOps' OrtApiBase
// and the library never links libonnxruntime.
#pragma once

#ifndef ORT_API_MANUAL_INIT
#error "build with -DORT_API_MANUAL_INIT (custom_ops/CMakeLists.txt does)"
#endif
#include <onnxruntime_cxx_api.h>

#include <stdexcept>
#include <string>

namespace acmtool {

// An error with the ORT status code it becomes; thrown inside a kernel, returned as a status at
// the C boundary (never let an exception cross into ONNX Runtime).
class OpError : public std::runtime_error {
 public:
  OpError(OrtErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  OrtErrorCode code() const { return code_; }

 private:
  OrtErrorCode code_;
};

inline OrtStatusPtr MakeStatus(OrtErrorCode code, const std::string& message) {
  return Ort::GetApi().CreateStatus(code, message.c_str());
}

// Runs `body` and turns whatever it throws into an OrtStatus.
template <class F>
OrtStatusPtr StatusOf(F&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const OpError& e) {
    return MakeStatus(e.code(), e.what());
  } catch (const Ort::Exception& e) {
    return MakeStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::bad_alloc&) {
    return MakeStatus(ORT_FAIL, "out of memory");
  } catch (const std::exception& e) {
    return MakeStatus(ORT_FAIL, e.what());
  } catch (...) {
    return MakeStatus(ORT_FAIL, "unknown C++ exception");
  }
}

}  // namespace acmtool
