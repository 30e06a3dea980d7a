// The upsample-conv glue kernels (csrc/cuda/kernels/upconv_epilogue.cuh) as driver ops, each run
// twice on the same inputs: the CUDA kernel under the emulator (through its host launcher, as
// csrc/cuda/upsample_conv2d.cu calls it) and the CPU twin (csrc/cpu/upconv_epilogue.h, both
// traversals), so the test compares the two and both with a torch reference.
//
// Keys: N C H W s act slope; i64 (force the 64-bit index instantiation); cl (the CUDA forward's traversal order and the CPU twin's
// traversal); strides of the phase maps ps_n ps_c ps_h ps_w (one buffer of s*s maps, map ab at
// element ab * pstep), of out os_*, of grad gs_*; has_bias.
// upconv_fwd: arrays in "phases" [, "bias"]; out "out_cuda", "out_cpu".
// upconv_bwd: arrays in "grad" [, "out"]; out "ph_cuda", "ph_cpu", "gb_cuda", "gb_cpu"
// (bias gradients reduced from the partial sums in a fixed order, as the .cu / .cpp files do).
// upconv_fold: the weight folds (fold_taps_kernel) with the FoldArgs the op builds
// (csrc/upconv_fold.h): keys kind (0 fold_weight, 1 unfold_weight_grad, 2 deconv_weight,
// 3 deconv_weight_grad), ct (1: ConvTranspose2d(4, 2, 1)'s geometry, else s, k), the sizes and
// strides of the source and destination tensors (src_size0.., src_stride0.., dst_*, 4-D or 6-D
// per the fold); array in "src" (the source's storage); out "dst_cuda", "dst_cpu" (the
// destination's storage, poisoned with 0xFF before the fold).
// upconv_rep_fwd / upconv_rep_bwd: the replicate form of 1x1 kernels (see rep_typed).
#include "cuda/kernels/upconv_epilogue.cuh"
#include "cpu/upconv_epilogue.h"
#include "upconv_fold.h"

#include <string>
#include <vector>

#include "driver.h"

namespace {

using namespace ganx;
using namespace ganx::emu_driver;

Strides4 strides(const Case& c, const char* p) {
  const std::string s(p);
  return {c.integer(s + "_n"), c.integer(s + "_c"), c.integer(s + "_h"), c.integer(s + "_w")};
}

// The forward cases' kernel arguments from the keys: strides ps_* and os_*, sizes, activation,
// the bias if the case has one; the phase pointers and out are the caller's.
template <typename T>
EpilogueFwdArgs<T> fwd_args(const Case& c, const Buf<T>& bias) {
  EpilogueFwdArgs<T> a{};
  a.ps = strides(c, "ps");
  a.bias = c.has_array("bias") ? bias.data : nullptr;
  a.os = strides(c, "os");
  a.N = c.integer("N"), a.C = c.integer("C"), a.H = c.integer("H"), a.W = c.integer("W");
  a.s = static_cast<int32_t>(c.integer("s"));
  a.act = static_cast<Act>(c.integer("act"));
  a.slope = c.num("slope");
  return a;
}

// What the backward cases (upconv_bwd, upconv_rep_bwd) share: the inputs "grad" [, "out"], the
// plan the .cu file makes (lanes along C for a channels_last grad, epilogue_channels_last), the
// CUDA launch's bias scratch (plan.parts * C partials, C sums), its arguments `a` and the CPU
// twin's `b` over the same inputs (the phase pointers are the caller's), and the bias
// gradients both report (the CPU twin's summed into gb_cpu by the caller).
template <typename T, typename A>
struct BwdCase {
  int64_t N, C, H, W, s;
  bool has_bias;
  Buf<T> grad, out;
  cuda::EpilogueBwdPlan plan;
  Buf<A> partial;
  Buf<T> gb;
  EpilogueBwdArgs<T, A> a{};
  EpilogueBwdArgs<T, double> b{};
  std::vector<double> gb_cpu;

  BwdCase(const Case& c, bool replicate)
      : N(c.integer("N")), C(c.integer("C")), H(c.integer("H")), W(c.integer("W")), s(c.integer("s")),
        has_bias(c.integer("has_bias") != 0), grad(c.arrays.at("grad"), 0),
        out(c.has_array("out") ? Buf<T>(c.arrays.at("out"), 0) : Buf<T>(0)),
        gb_cpu(static_cast<size_t>(C), 0.0) {
    const Act act = static_cast<Act>(c.integer("act"));
    const Strides4 gs = strides(c, "gs");
    const bool cl = gs.c == 1 && C > 1;
    plan = replicate ? cuda::upconv_replicate_bwd_plan(N, C, H, W, cl) : cuda::upconv_epilogue_bwd_plan(N, C, H, W, s, cl);
    partial = Buf<A>(has_bias ? plan.parts * C : 0);
    gb = Buf<T>(has_bias ? C : 0);
    a.grad = grad.data;
    a.gs = gs;
    a.out = act != Act::None ? out.data : nullptr;
    a.os = strides(c, "os");
    a.ps = strides(c, "ps");
    a.bias_partial = has_bias ? partial.data : nullptr;
    a.N = N, a.C = C, a.H = H, a.W = W, a.s = static_cast<int32_t>(s), a.act = act, a.slope = c.num("slope");
    b.grad = a.grad, b.gs = a.gs, b.out = a.out, b.os = a.os, b.ps = a.ps;
    b.N = N, b.C = C, b.H = H, b.W = W, b.s = a.s, b.act = act, b.slope = a.slope;
  }

  T* bias_grad() { return has_bias ? gb.data : nullptr; }

  // The results: the map each side wrote ("<map>_cuda", "<map>_cpu"), the bias gradients (the
  // CUDA one read back in the accumulation type) and the plan.
  void report(Result& r, const std::string& map, const Buf<T>& map_cuda, const Buf<T>& map_cpu) const {
    std::vector<double> gb_cuda(static_cast<size_t>(C), 0.0);
    if (has_bias)
      for (int64_t o = 0; o < C; ++o) gb_cuda[o] = static_cast<double>(static_cast<A>(gb.data[o]));
    auto raw = [](const std::vector<double>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 8); };
    r.arrays.push_back({map + "_cuda", map_cuda.bytes()});
    r.arrays.push_back({map + "_cpu", map_cpu.bytes()});
    r.arrays.push_back({"gb_cuda", raw(gb_cuda)});
    r.arrays.push_back({"gb_cpu", raw(gb_cpu)});
    r.set("parts", std::to_string(plan.parts));
    r.set("rows", std::to_string(plan.rows ? 1 : 0));
  }
};

template <typename T>
void op_typed(const Case& c, Result& r) {
  using A = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const int64_t N = c.integer("N"), C = c.integer("C"), H = c.integer("H"), W = c.integer("W"), s = c.integer("s");
  const int64_t pstep = c.integer("pstep");
  const bool cl = c.integer("cl") != 0;
  const bool i64 = c.integer("i64") != 0;
  if (c.op == "upconv_fwd") {
    const int64_t out_n = N * C * H * s * W * s;
    Buf<T> ph(c.arrays.at("phases"), 0);
    Buf<T> bias = c.has_array("bias") ? Buf<T>(c.arrays.at("bias"), 0) : Buf<T>(0);
    Buf<T> out_cuda(out_n), out_cpu(out_n);
    EpilogueFwdArgs<T> a = fwd_args(c, bias);
    for (int64_t ab = 0; ab < s * s; ++ab) a.phase[ab] = ph.data + ab * pstep;
    a.out = out_cuda.data;
    cuda::launch_upconv_epilogue_fwd<T, A>(a, cl, nullptr, i64);
    a.out = out_cpu.data;
    std::vector<A> tmp(static_cast<size_t>(cl ? C : W));
    if (cl) {
      for (int64_t u = 0; u < N * H; ++u) cpu::epilogue_fwd_row(a, u / H, u % H, tmp.data(), cpu::ScalarRowAct{});
    } else {
      for (int64_t u = 0; u < N * C; ++u) cpu::epilogue_fwd_plane(a, u / C, u % C, tmp.data(), cpu::ScalarRowAct{});
    }
    r.arrays.push_back({"out_cuda", out_cuda.bytes()});
    r.arrays.push_back({"out_cpu", out_cpu.bytes()});
    return;
  }
  // upconv_bwd
  BwdCase<T, A> k(c, /*replicate=*/false);
  Buf<T> ph_cuda(s * s * pstep), ph_cpu(s * s * pstep);
  for (int64_t ab = 0; ab < s * s; ++ab) k.a.phase[ab] = ph_cuda.data + ab * pstep;
  cuda::launch_upconv_epilogue_bwd<T, A>(k.a, k.plan, k.bias_grad(), nullptr, i64);
  for (int64_t ab = 0; ab < s * s; ++ab) k.b.phase[ab] = ph_cpu.data + ab * pstep;
  if (cl) {
    std::vector<double> row(static_cast<size_t>(C));
    for (int64_t u = 0; u < N * H; ++u) {
      std::fill(row.begin(), row.end(), 0.0);
      cpu::epilogue_bwd_row(k.b, u / H, u % H, row.data());
      for (int64_t o = 0; o < C; ++o) k.gb_cpu[o] += row[o];
    }
  } else {
    for (int64_t u = 0; u < N * C; ++u) k.gb_cpu[u % C] += cpu::epilogue_bwd_plane(k.b, u / C, u % C);
  }
  k.report(r, "ph", ph_cuda, ph_cpu);
}

// The replicate form of 1x1 kernels: upconv_rep_fwd (array "y", the input-resolution map with
// strides ps_*, [, "bias"]; out "out_cuda", "out_cpu") and upconv_rep_bwd (arrays "grad" [, "out"];
// out "gl_cuda", "gl_cpu" (the block-sum map, strides ps_*), "gb_cuda", "gb_cpu", "parts", "rows").
// Keys as above (no pstep).
template <typename T>
void rep_typed(const Case& c, Result& r) {
  using A = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const int64_t N = c.integer("N"), C = c.integer("C"), H = c.integer("H"), W = c.integer("W"), s = c.integer("s");
  const bool cl = c.integer("cl") != 0;
  const bool i64 = c.integer("i64") != 0;
  const Strides4 ps = strides(c, "ps");
  const int64_t low_n = 1 + (N - 1) * ps.n + (C - 1) * ps.c + (H - 1) * ps.h + (W - 1) * ps.w;  // storage
  if (c.op == "upconv_rep_fwd") {
    const int64_t out_n = N * C * H * s * W * s;
    Buf<T> y(c.arrays.at("y"), 0);
    Buf<T> bias = c.has_array("bias") ? Buf<T>(c.arrays.at("bias"), 0) : Buf<T>(0);
    Buf<T> out_cuda(out_n), out_cpu(out_n);
    EpilogueFwdArgs<T> a = fwd_args(c, bias);
    for (int64_t ab = 0; ab < s * s; ++ab) a.phase[ab] = y.data;  // what the .cu file packs (PhaseMaps{{y}})
    a.out = out_cuda.data;
    cuda::launch_upconv_replicate_fwd<T, A>(a, cl, nullptr, i64);
    a.out = out_cpu.data;
    std::vector<A> buf(static_cast<size_t>(cl ? W * C : H * W));
    if (cl) {
      for (int64_t u = 0; u < N * H; ++u) cpu::replicate_fwd_row(a, u / H, u % H, buf.data(), cpu::ScalarRowAct{});
    } else {
      for (int64_t u = 0; u < N * C; ++u) cpu::replicate_fwd_plane(a, u / C, u % C, buf.data(), cpu::ScalarRowAct{});
    }
    r.arrays.push_back({"out_cuda", out_cuda.bytes()});
    r.arrays.push_back({"out_cpu", out_cpu.bytes()});
    return;
  }
  BwdCase<T, A> k(c, /*replicate=*/true);
  Buf<T> gl_cuda(low_n), gl_cpu(low_n);
  for (int64_t ab = 0; ab < s * s; ++ab) k.a.phase[ab] = gl_cuda.data;
  cuda::launch_upconv_replicate_bwd<T, A>(k.a, k.plan, k.bias_grad(), nullptr, i64);
  for (int64_t ab = 0; ab < s * s; ++ab) k.b.phase[ab] = gl_cpu.data;
  // the CPU glue walks by the map's layout (epilogue_channels_last of g_low)
  const bool cpu_rows = ps.c == 1 && C > 1;
  std::vector<A> acc(static_cast<size_t>(cpu_rows ? W * C : W));
  if (cpu_rows) {
    std::vector<double> row(static_cast<size_t>(C));
    for (int64_t u = 0; u < N * H; ++u) {
      std::fill(row.begin(), row.end(), 0.0);
      cpu::replicate_bwd_row(k.b, u / H, u % H, acc.data(), row.data());
      for (int64_t o = 0; o < C; ++o) k.gb_cpu[o] += row[o];
    }
  } else {
    for (int64_t u = 0; u < N * C; ++u) k.gb_cpu[u % C] += cpu::replicate_bwd_plane(k.b, u / C, u % C, acc.data());
  }
  k.report(r, "gl", gl_cuda, gl_cpu);
}

template <typename T>
void fold_typed(const Case& c, Result& r) {
  const int kind = static_cast<int>(c.integer("kind"));
  const UpConvGeometry g = c.integer("ct") ? conv_transpose4s2_geometry()
                                           : upconv_geometry(c.integer("s"), c.integer("k"), c.integer("k") / 2);
  auto dims = [&](const char* t, const char* what, int nd) {
    std::vector<int64_t> v(static_cast<size_t>(nd));
    for (int d = 0; d < nd; ++d) v[d] = c.integer(std::string(t) + "_" + what + std::to_string(d));
    return v;
  };
  const int nd_src = kind == 1 ? 6 : 4, nd_dst = kind == 0 ? 6 : 4;
  const auto ss = dims("src", "size", nd_src), st = dims("src", "stride", nd_src);
  const auto ds = dims("dst", "size", nd_dst), dt = dims("dst", "stride", nd_dst);
  FoldArgs f{};
  switch (kind) {
    case 0: f = fold::weight_fold(g, ss.data(), st.data(), ds.data(), dt.data()); break;
    case 1: f = fold::weight_unfold(g, ss.data(), st.data(), ds.data(), dt.data()); break;
    case 2: f = fold::deconv_fold(g, ss.data(), st.data(), ds.data(), dt.data()); break;
    default: f = fold::deconv_unfold(g, ss.data(), st.data(), ds.data(), dt.data()); break;
  }
  int64_t dst_n = 1;  // the destination's storage: its largest offset + 1
  for (int d = 0; d < nd_dst; ++d) dst_n += (ds[d] - 1) * dt[d];
  Buf<T> src(c.arrays.at("src"), 0);
  Buf<T> dst_cuda(dst_n), dst_cpu(dst_n);
  cuda::launch_fold_taps<T>(f, src.data, dst_cuda.data, nullptr);
  for (int64_t d0 = 0; d0 < f.n0; ++d0)
    for (int64_t d1 = 0; d1 < f.n1; ++d1) cpu::fold_taps(f, src.data, dst_cpu.data, d0, d1);
  r.arrays.push_back({"dst_cuda", dst_cuda.bytes()});
  r.arrays.push_back({"dst_cpu", dst_cpu.bytes()});
  r.set("rows", std::to_string(f.rows_dst));
}

void op_fold(const Case& c, Result& r) {
  by_dtype(c, "upconv_fold", [&](auto t) { fold_typed<decltype(t)>(c, r); });
}

void op_upconv(const Case& c, Result& r) {
  by_dtype(c, "upconv", [&](auto t) { op_typed<decltype(t)>(c, r); });
}

void op_rep(const Case& c, Result& r) {
  by_dtype(c, "upconv_rep", [&](auto t) { rep_typed<decltype(t)>(c, r); });
}

}  // namespace

GANX_EMU_OP("upconv_fwd", op_upconv);
static ::ganx::emu_driver::Register ganx_emu_reg_upconv_bwd("upconv_bwd", op_upconv);
GANX_EMU_OP("upconv_fold", op_fold);
GANX_EMU_OP("upconv_rep_fwd", op_rep);
static ::ganx::emu_driver::Register ganx_emu_reg_upconv_rep_bwd("upconv_rep_bwd", op_rep);
