// .npy reading and writing; see npy.h.
#include "npy.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <stdexcept>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.cc reads and writes little-endian data in place: build it for a little-endian machine"
#endif

namespace npy {
namespace {

const char kMagic[] = "\x93NUMPY";  // 6 bytes, then major and minor version bytes
constexpr size_t kMagicLen = 6;

[[noreturn]] void Fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

// Header text as it goes into a message: printable ASCII, anything else as \xNN; the padding and
// the final newline dropped.
std::string Printable(const std::string& s) {
  static const char hex[] = "0123456789abcdef";
  size_t end = s.size();
  while (end > 0 && (s[end - 1] == ' ' || s[end - 1] == '\n')) --end;
  std::string out;
  for (unsigned char c : s.substr(0, end)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

bool Supported(const DType& t) {
  switch (t.kind) {
    case 'b': return t.size == 1;
    case 'i':
    case 'u': return t.size == 1 || t.size == 2 || t.size == 4 || t.size == 8;
    case 'f': return t.size == 2 || t.size == 4 || t.size == 8;
    default: return false;
  }
}

// The header is a Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// A value is a string, True/False, or a tuple of integers; anything else (a structured dtype's list,
// say) is refused by the caller with a message that says which key held it.
struct Value {
  enum Kind { kString, kBool, kTuple, kOther } kind = kOther;
  std::string text;
  bool flag = false;
  std::vector<int64_t> ints;
};

class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& s) : path_(path), s_(s) {}

  std::map<std::string, Value> Dict() {
    std::map<std::string, Value> out;
    Expect('{');
    for (;;) {
      SkipSpace();
      if (Peek() == '}') { ++i_; break; }
      std::string key = String();
      Expect(':');
      SkipSpace();
      if (out.count(key)) Bad("key '" + key + "' appears twice");
      out[key] = Val();
      SkipSpace();
      if (Peek() == ',') { ++i_; continue; }
      Expect('}');
      break;
    }
    SkipSpace();
    if (i_ != s_.size()) Bad("text after the closing brace");
    return out;
  }

 private:
  [[noreturn]] void Bad(const std::string& why) { Fail(path_, "bad .npy header (" + why + "): " + Printable(s_)); }
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void SkipSpace() { while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_; }
  void Expect(char c) {
    SkipSpace();
    if (Peek() != c) Bad(std::string("expected '") + c + "'");
    ++i_;
  }
  bool Word(const char* w) {
    size_t n = std::strlen(w);
    if (s_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }
  std::string String() {
    SkipSpace();
    char q = Peek();
    if (q != '\'' && q != '"') Bad("expected a quoted string");
    size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos) Bad("unterminated string");
    std::string out = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return out;
  }
  int64_t Int() {
    SkipSpace();
    size_t start = i_;
    while (std::isdigit(static_cast<unsigned char>(Peek()))) ++i_;
    if (i_ == start || i_ - start > 18) Bad("expected a dimension");
    int64_t v = std::stoll(s_.substr(start, i_ - start));
    if (Peek() == 'L') ++i_;  // written by Python 2
    return v;
  }
  Value Val() {
    Value v;
    char c = Peek();
    if (c == '\'' || c == '"') {
      v.kind = Value::kString;
      v.text = String();
    } else if (Word("True")) {
      v.kind = Value::kBool;
      v.flag = true;
    } else if (Word("False")) {
      v.kind = Value::kBool;
    } else if (c == '(') {
      ++i_;
      v.kind = Value::kTuple;
      for (;;) {
        SkipSpace();
        if (Peek() == ')') { ++i_; break; }
        v.ints.push_back(Int());
        SkipSpace();
        if (Peek() == ',') { ++i_; continue; }
        Expect(')');
        break;
      }
    } else {
      // Something this reader does not take (a structured dtype's list of fields, say): skip it,
      // balanced, so that the caller can say which key it was.
      int depth = 0;
      for (; i_ < s_.size(); ++i_) {
        char d = s_[i_];
        if (d == '[' || d == '(' || d == '{') ++depth;
        if (d == ']' || d == ')' || d == '}') {
          if (depth == 0) break;
          --depth;
        }
        if (d == ',' && depth == 0) break;
      }
    }
    return v;
  }

  const std::string& path_;
  const std::string& s_;
  size_t i_ = 0;
};

DType ParseDescr(const std::string& path, const std::string& descr) {
  // <f4, |b1, =i8 ...: byte order, kind, item size.
  const std::string shown = Printable(descr);
  if (descr.size() < 3 || !std::strchr("<>|=", descr[0])) Fail(path, "unsupported dtype '" + shown + "'");
  DType t;
  t.kind = descr[1];
  for (size_t i = 2; i < descr.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(descr[i])) || i > 4) Fail(path, "unsupported dtype '" + shown + "'");
    t.size = t.size * 10 + static_cast<size_t>(descr[i] - '0');
  }
  if (!Supported(t)) {
    Fail(path, "unsupported dtype '" + shown +
                   "' (supported: bool, int8/16/32/64, uint8/16/32/64, float16/32/64)");
  }
  if (descr[0] == '>' && t.size > 1) Fail(path, "big-endian data ('" + shown + "') is not supported; save it little-endian");
  return t;
}

}  // namespace

std::string DType::Name() const {
  if (kind == 'b') return "bool";
  std::string base = kind == 'f' ? "float" : kind == 'i' ? "int" : kind == 'u' ? "uint" : std::string(1, kind);
  return base + std::to_string(size * 8);
}

std::string DType::Descr() const { return std::string(size == 1 ? "|" : "<") + kind + std::to_string(size); }

size_t Array::ElementCount() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

Array Read(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) Fail(path, "no such file");
  if (!std::filesystem::is_regular_file(path, ec)) Fail(path, "not a regular file");
  std::ifstream f(path, std::ios::binary);
  if (!f) Fail(path, std::string("cannot open: ") + std::strerror(errno));
  f.seekg(0, std::ios::end);
  const std::streamoff file_size = f.tellg();
  f.seekg(0);
  if (file_size < 0) Fail(path, "cannot read its size");

  unsigned char pre[kMagicLen + 2];
  if (!f.read(reinterpret_cast<char*>(pre), sizeof pre) || std::memcmp(pre, kMagic, kMagicLen) != 0)
    Fail(path, "not a .npy file (no \\x93NUMPY magic string)");
  const int major = pre[kMagicLen], minor = pre[kMagicLen + 1];
  if (major < 1 || major > 3 || minor != 0)
    Fail(path, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor));
  unsigned char len_bytes[4] = {0, 0, 0, 0};
  const size_t len_size = major == 1 ? 2 : 4;
  if (!f.read(reinterpret_cast<char*>(len_bytes), static_cast<std::streamsize>(len_size))) Fail(path, "truncated header");
  const uint32_t header_len = len_bytes[0] | (len_bytes[1] << 8) | (len_bytes[2] << 16) | (uint32_t(len_bytes[3]) << 24);
  const std::streamoff data_start = static_cast<std::streamoff>(kMagicLen + 2 + len_size + header_len);
  if (header_len > (1u << 20) || data_start > file_size) Fail(path, "truncated header");
  std::string header(header_len, '\0');
  f.read(&header[0], header_len);

  std::map<std::string, Value> dict = HeaderParser(path, header).Dict();
  for (const char* key : {"descr", "fortran_order", "shape"})
    if (!dict.count(key)) Fail(path, std::string("bad .npy header (no '") + key + "'): " + Printable(header));
  if (dict.size() != 3) Fail(path, "bad .npy header (keys other than descr, fortran_order, shape): " + Printable(header));
  const Value& descr = dict["descr"];
  const Value& fortran = dict["fortran_order"];
  const Value& shape = dict["shape"];
  if (descr.kind != Value::kString)
    Fail(path, "unsupported dtype (structured arrays are not supported; save one plain array per file)");
  if (fortran.kind != Value::kBool || shape.kind != Value::kTuple) Fail(path, "bad .npy header: " + Printable(header));

  Array a;
  a.dtype = ParseDescr(path, descr.text);
  if (fortran.flag)
    Fail(path, "Fortran-order array; save it in C order (numpy.ascontiguousarray) and try again");
  a.shape = shape.ints;
  // Bytes the shape asks for, with overflow checked.
  size_t bytes = a.dtype.size;
  for (int64_t d : a.shape) {
    if (d != 0 && bytes > std::numeric_limits<size_t>::max() / static_cast<size_t>(d))
      Fail(path, "shape too large");
    bytes *= static_cast<size_t>(d);
  }
  const size_t have = static_cast<size_t>(file_size - data_start);
  if (have != bytes) {
    Fail(path, "data is " + std::to_string(have) + " bytes but shape and dtype " + a.dtype.Name() + " need " +
                   std::to_string(bytes) + (have < bytes ? " (truncated file)" : ""));
  }
  a.data.resize(bytes);
  if (bytes && !f.read(a.data.data(), static_cast<std::streamsize>(bytes))) Fail(path, "read error");
  return a;
}

void Write(const std::string& path, const DType& dtype, const std::vector<int64_t>& shape, const void* data,
           size_t bytes) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  std::string header = "{'descr': '" + dtype.Descr() + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad with spaces and end with '\n' so that the data starts on a 64-byte boundary.
  // Version 1.0 holds the header's length in 2 bytes, 2.0 in 4.
  const size_t len_size = header.size() + 1 + 63 <= 65535 ? 2 : 4;
  const size_t total = kMagicLen + 2 + len_size + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  const uint32_t n = static_cast<uint32_t>(header.size());

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) Fail(path, std::string("cannot write: ") + std::strerror(errno));
  f.write(kMagic, kMagicLen);
  const char version[2] = {static_cast<char>(len_size == 2 ? 1 : 2), 0};
  f.write(version, 2);
  const char len_bytes[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                             static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
  f.write(len_bytes, static_cast<std::streamsize>(len_size));
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  if (bytes) f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  f.close();
  if (!f) Fail(path, std::string("write failed: ") + std::strerror(errno));
}

}  // namespace npy
