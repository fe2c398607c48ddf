// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0), enough for tensors:
// C order, little-endian, bool / int8..64 / uint8..64 / float16 / float32 / float64.
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
//
// Errors are thrown as std::runtime_error whose message names the file and what is wrong with it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace npy {

// A dtype as .npy spells it: kind ('b' bool, 'i' signed, 'u' unsigned, 'f' float) and item size.
struct DType {
  char kind = 0;
  size_t size = 0;
  bool operator==(const DType& o) const { return kind == o.kind && size == o.size; }
  std::string Name() const;   // "float32", "int64", "bool", ...
  std::string Descr() const;  // "<f4", "<i8", "|b1", ...
};

struct Array {
  DType dtype;
  std::vector<int64_t> shape;  // empty: a 0-d array (one element)
  std::vector<char> data;      // size() == ElementCount() * dtype.size, C order
  size_t ElementCount() const;
};

// Reads `path`. Refuses, with a message: a missing or unreadable file, a bad magic string or
// version, a header that is not the dict numpy writes, Fortran order, big-endian data, a dtype
// outside the list above (structured, complex, strings, objects...), and a data size that does not
// match the shape.
Array Read(const std::string& path);

// Writes a version 1.0 file (2.0 if the header does not fit in 64 KiB), as numpy.save does.
// `data` holds ElementCount(shape) * dtype.size bytes in C order.
void Write(const std::string& path, const DType& dtype, const std::vector<int64_t>& shape,
           const void* data, size_t bytes);

}  // namespace npy
