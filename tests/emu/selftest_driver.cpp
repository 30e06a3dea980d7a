// The emulator's self-test kernels (selftest_kernels.cuh) as driver op "selftest".
// Keys: kernel (warp_ops, dyn_shared, atomics, barriers, shared_ptr, syncwarp, half, launch,
// smem_static), blocks, threads, bug; launch: gx, gy, gz, bx, by, bz, smem; smem_static: smem, take. Arrays in: a, b (half). Out: out.
#include "selftest_kernels.cuh"

#include <string>

#include "driver.h"

namespace {

using namespace ganx::emu_driver;
namespace st = ganx::emu_selftest;

void op_selftest(const Case& c, Result& r) {
  const std::string k = c.kv.at("kernel");
  const int blocks = static_cast<int>(c.integer("blocks", 1)), threads = static_cast<int>(c.integer("threads", 32));
  const int bug = static_cast<int>(c.integer("bug", 0));
  if (k == "warp_ops") {
    Buf<int> out(static_cast<int64_t>(blocks) * threads * st::kOps);
    st::launch_warp_ops(out.data, blocks, threads);
    r.arrays.push_back({"out", out.bytes()});
  } else if (k == "dyn_shared") {
    Buf<float> out(static_cast<int64_t>(blocks) * threads);
    st::launch_dyn_shared(out.data, blocks, threads, bug);
    r.arrays.push_back({"out", out.bytes()});
  } else if (k == "atomics") {
    Buf<int> count(1);
    Buf<unsigned long long> sum(1);
    Buf<float> fsum(1);
    count.data[0] = 0;
    sum.data[0] = 0;
    fsum.data[0] = 0;
    st::launch_atomics(count.data, sum.data, fsum.data, blocks, threads, bug);
    r.set("count", std::to_string(count.data[0]));
    r.set("sum", std::to_string(sum.data[0]));
    r.set("fsum", std::to_string(fsum.data[0]));
  } else if (k == "barriers") {
    Buf<float> out(128);
    st::launch_barriers(out.data, bug);
    r.arrays.push_back({"out", out.bytes()});
  } else if (k == "shared_ptr") {
    Buf<float> out(33);
    st::launch_shared_ptr(out.data, bug);
    r.arrays.push_back({"out", out.bytes()});
  } else if (k == "syncwarp") {
    Buf<int> out(32);
    st::launch_syncwarp_order(out.data, bug);
    r.arrays.push_back({"out", out.bytes()});
  } else if (k == "half") {
    Buf<c10::Half> a(c.arrays.at("a"), 0), b(c.arrays.at("b"), 0), out(a.n);
    st::launch_half_math(a.data, b.data, out.data, static_cast<int>(a.n));
    r.arrays.push_back({"out", out.bytes()});
  } else if (k == "launch") {
    const auto u = [&](const char* key) { return static_cast<unsigned>(c.integer(key, 1)); };
    st::launch_nothing(dim3(u("gx"), u("gy"), u("gz")), dim3(u("bx"), u("by"), u("bz")),
                       static_cast<size_t>(c.integer("smem", 0)));
  } else if (k == "smem_static") {
    Buf<float> out(threads);
    st::launch_smem_static(out.data, threads, static_cast<size_t>(c.integer("smem", 0)),
                           static_cast<int>(c.integer("take", 0)));
    r.arrays.push_back({"out", out.bytes()});
  } else {
    std::fprintf(stderr, "ganx-emu driver: selftest: unknown kernel %s\n", k.c_str());
    std::exit(2);
  }
}

}  // namespace

GANX_EMU_OP("selftest", op_selftest);
