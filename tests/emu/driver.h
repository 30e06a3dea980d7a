// The emulated-kernel test driver: a program (one per build variant: plain, asan, race) that
// reads cases from a file, runs each through a kernel header's host launcher under the emulator,
// and writes the outputs back (tests/emu/harness.py writes and reads the files).
//
// Case file: per case a line "case <id> <op> <dtype> key=value ...", then for each input
// "array <name> <nbytes>\n" and the raw bytes, then "end". Result file: per case
// "result <id> key=value ...", the output arrays the same way, "end".
//
// Adding a kernel: a .cpp next to bce_driver.cpp with a function (const Case&, Result&) that
// allocates exact-size buffers (Buf), calls the launcher, and fills Result; register it with
// GANX_EMU_OP("name", fn); add the .cpp to SOURCES in harness.py; cases from Python.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace ganx {
namespace emu_driver {

struct Case {
  std::string id, op, dtype;
  std::map<std::string, std::string> kv;
  std::map<std::string, std::string> arrays;  // raw bytes
  bool has(const std::string& k) const { return kv.count(k) != 0; }
  double num(const std::string& k, double dflt = 0) const {
    auto it = kv.find(k);
    return it == kv.end() ? dflt : std::strtod(it->second.c_str(), nullptr);
  }
  int64_t integer(const std::string& k, int64_t dflt = 0) const {
    auto it = kv.find(k);
    return it == kv.end() ? dflt : std::strtoll(it->second.c_str(), nullptr, 10);
  }
  bool has_array(const std::string& k) const { return arrays.count(k) != 0; }
};

struct Result {
  std::map<std::string, std::string> kv;
  std::vector<std::pair<std::string, std::string>> arrays;
  void set(const std::string& k, const std::string& v) { kv[k] = v; }
  void set(const std::string& k, double v) { kv[k] = std::to_string(v); }
};

// An exact-size heap buffer (so AddressSanitizer's redzone starts right after its last byte),
// with `offset` leading elements to misalign the data on purpose. Filled with 0xFF (NaN).
template <typename T>
struct Buf {
  char* base = nullptr;
  T* data = nullptr;
  int64_t n = 0;
  Buf() = default;
  Buf(int64_t n_, int64_t offset = 0) : n(n_) {
    const size_t bytes = static_cast<size_t>(n_ + offset) * sizeof(T);
    base = static_cast<char*>(std::malloc(bytes == 0 ? 1 : bytes));
    std::memset(base, 0xFF, bytes);
    data = reinterpret_cast<T*>(base + offset * sizeof(T));
  }
  // Copies raw bytes in (the size must match).
  Buf(const std::string& raw, int64_t offset) : Buf(static_cast<int64_t>(raw.size() / sizeof(T)), offset) {
    std::memcpy(data, raw.data(), raw.size());
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept { *this = std::move(o); }
  Buf& operator=(Buf&& o) noexcept {
    std::swap(base, o.base);
    std::swap(data, o.data);
    std::swap(n, o.n);
    return *this;
  }
  ~Buf() { std::free(base); }
  std::string bytes() const { return std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(n) * sizeof(T)); }
};

// Calls fn(T{}) with T the case's dtype (float32, float64, float16, bfloat16); any other dtype
// ends the driver with a message naming the op.
template <typename Fn>
void by_dtype(const Case& c, const char* op, Fn&& fn) {
  if (c.dtype == "float32") return fn(float{});
  if (c.dtype == "float64") return fn(double{});
  if (c.dtype == "float16") return fn(c10::Half{});
  if (c.dtype == "bfloat16") return fn(c10::BFloat16{});
  std::fprintf(stderr, "ganx-emu driver: %s: unknown dtype %s\n", op, c.dtype.c_str());
  std::exit(2);
}

using OpFn = void (*)(const Case&, Result&);
std::map<std::string, OpFn>& registry();
struct Register {
  Register(const char* name, OpFn fn) { registry()[name] = fn; }
};
#define GANX_EMU_OP(name, fn) static ::ganx::emu_driver::Register ganx_emu_reg_##fn(name, fn)

}  // namespace emu_driver
}  // namespace ganx
