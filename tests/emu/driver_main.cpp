// Reads the case file, runs each case's op, writes the result file (format: driver.h).
// Usage: ganx_emu_driver CASES RESULTS
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "driver.h"
#include "ganx_cuda_emu.h"

namespace ganx {
namespace emu_driver {

std::map<std::string, OpFn>& registry() {
  static std::map<std::string, OpFn> r;
  return r;
}

namespace {
// "static_smem": every function of the binary with GANX_SHARED declarations (each kernel
// instantiation, every dtype compiled, launched or not) and its static shared memory, as
// "<bytes> <function>" lines in the result's "report" array.
void op_static_smem(const Case&, Result& r) { r.arrays.push_back({"report", ganx::emu::static_shared_report()}); }
}  // namespace
GANX_EMU_OP("static_smem", op_static_smem);

}  // namespace emu_driver
}  // namespace ganx

int main(int argc, char** argv) {
  using namespace ganx::emu_driver;
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CASES RESULTS\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::ofstream out(argv[2], std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream hs(line);
    std::string word;
    Case c;
    hs >> word >> c.id >> c.op >> c.dtype;
    if (word != "case") {
      std::fprintf(stderr, "ganx-emu driver: bad case line: %s\n", line.c_str());
      return 2;
    }
    while (hs >> word) {
      const auto eq = word.find('=');
      c.kv[word.substr(0, eq)] = word.substr(eq + 1);
    }
    while (std::getline(in, line) && line != "end") {
      std::istringstream as(line);
      std::string kw, name;
      size_t nbytes = 0;
      as >> kw >> name >> nbytes;
      std::string raw(nbytes, '\0');
      in.read(&raw[0], static_cast<std::streamsize>(nbytes));
      c.arrays[name] = raw;
    }
    auto it = registry().find(c.op);
    if (it == registry().end()) {
      std::fprintf(stderr, "ganx-emu driver: unknown op %s\n", c.op.c_str());
      return 2;
    }
    std::fprintf(stderr, "ganx-emu: case %s\n", c.id.c_str());
    ganx::emu::take_launch_log();
    Result r;
    it->second(c, r);
    std::string log = ganx::emu::take_launch_log();
    int launches = 0;
    for (char ch : log) launches += ch == '\n';
    r.set("launches", std::to_string(launches));
    out << "result " << c.id;
    for (const auto& kv : r.kv) out << ' ' << kv.first << '=' << kv.second;
    out << '\n';
    for (const auto& a : r.arrays) {
      out << "array " << a.first << ' ' << a.second.size() << '\n';
      out.write(a.second.data(), static_cast<std::streamsize>(a.second.size()));
    }
    out << "log " << log.size() << '\n' << log;
    out << "end\n";
    out.flush();
  }
  return 0;
}
