// CPU glue of the phase-decomposed layer (upsample_conv2d and conv_transpose2d_4s2): the
// epilogue kernels and the 1x1 kernels' replicate form (csrc/cpu/upconv_epilogue.h, the CUDA
// kernels' twins) run in parallel over planes (NCHW) or input rows (channels_last), and the
// registration of the ops, whose composition (oneDNN convolutions + these kernels) lives in
// csrc/upsample_conv2d.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/upconv_epilogue.h"
#include "upsample_conv2d.h"

#include <algorithm>
#include <atomic>
#include <vector>

namespace ganx {
namespace {

// The activation over a row of the scratch buffer with the branch hoisted out of the loop, so
// the compiler vectorises it; tanh is left for ATen's vectorised tanh_ over each finished
// chunk of the output while it is still in cache (see epilogue_fwd_cpu). Every other
// activation of the table runs its act_forward (csrc/activation.h) element by element: a new
// activation needs no case here.
struct CpuRowAct {
  template <typename acc_t>
  void operator()(acc_t* v, int64_t len, Act act, acc_t slope) const {
    switch (act) {
      case Act::None:
      case Act::Tanh: break;
      case Act::ReLU:
        for (int64_t j = 0; j < len; ++j) v[j] = v[j] < acc_t(0) ? acc_t(0) : v[j];
        break;
      case Act::LeakyReLU:
        for (int64_t j = 0; j < len; ++j) v[j] = v[j] < acc_t(0) ? v[j] * slope : v[j];
        break;
      default:
        for (int64_t j = 0; j < len; ++j) v[j] = act_forward(act, v[j], slope);
        break;
    }
  }
};

void epilogue_fwd_cpu(const PhaseMaps& ph, const at::Tensor& out, const at::Tensor& bias, int64_t s, Act act,
                      double slope) {
  if (out.numel() == 0) return;
  const bool cl = epilogue_channels_last(out);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "upconv_epilogue_fwd", [&] {
    using acc_t = cpu::acc_of<scalar_t>;
    const auto A = epilogue_fwd_args<scalar_t>(ph, out, bias, s, act, slope);
    // Work unit: a (n, o) plane, or an input row (n, i) with every channel (channels_last);
    // each unit's output is one dense block when out is dense in its format.
    const int64_t units = cl ? A.N * A.H : A.N * A.C;
    const int64_t unit_elems = cl ? s * s * A.W * A.C : s * s * A.H * A.W;
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, unit_elems));
    const bool dense = out.is_contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    at::parallel_for(0, units, grain, [&](int64_t u0, int64_t u1) {
      std::vector<acc_t> tmp(cl ? A.C : A.W);
      for (int64_t u = u0; u < u1; ++u) {
        if (cl) {
          cpu::epilogue_fwd_row(A, u / A.H, u % A.H, tmp.data(), CpuRowAct{});
        } else {
          cpu::epilogue_fwd_plane(A, u / A.C, u % A.C, tmp.data(), CpuRowAct{});
        }
      }
      if (act == Act::Tanh) {
        if (dense) {
          // Units [u0, u1) are one dense block of the output in memory order.
          at::from_blob(A.out + u0 * unit_elems, {(u1 - u0) * unit_elems}, out.options()).tanh_();
        } else {
          for (int64_t u = u0; u < u1; ++u) {
            auto view = cl ? out.select(0, u / A.H).narrow(1, s * (u % A.H), s)
                           : out.select(0, u / A.C).select(0, u % A.C);
            view.tanh_();
          }
        }
      }
    });
  });
}

// The bias gradient from per-unit partial sums ([units][C] for channels_last units, else one per
// (n, o) plane): a fixed-order reduction (deterministic for any thread count), in double,
// written in grad's dtype (one rounding; no second tensor and cast).
at::Tensor reduce_bias_partials(const std::vector<double>& partial, const at::Tensor& grad, int64_t N, int64_t C,
                                int64_t units, bool cl) {
  std::vector<double> g(C, 0.0);
  if (cl) {
    for (int64_t u = 0; u < units; ++u)
      for (int64_t o = 0; o < C; ++o) g[o] += partial[u * C + o];
  } else {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < C; ++o) g[o] += partial[n * C + o];
  }
  auto gb = at::empty({C}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "upconv_epilogue_bwd_bias", [&] {
    scalar_t* out = gb.data_ptr<scalar_t>();
    for (int64_t o = 0; o < C; ++o) out[o] = static_cast<scalar_t>(g[o]);
  });
  return gb;
}

at::Tensor epilogue_bwd_cpu(const at::Tensor& grad, const at::Tensor& out, const PhaseMaps& ph, int64_t s, Act act,
                            double slope, bool need_bias) {
  const int64_t N = grad.size(0), C = grad.size(1), H = grad.size(2) / s, W = grad.size(3) / s;
  if (grad.numel() == 0) return need_bias ? at::zeros({C}, grad.options()) : at::Tensor();
  const bool cl = epilogue_channels_last(ph.tensors[0]);
  const int64_t units = cl ? N * H : N * C;
  std::vector<double> partial(need_bias ? (cl ? units * C : units) : 0, 0.0);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "upconv_epilogue_bwd", [&] {
    const auto A = epilogue_bwd_args<scalar_t, double>(grad, out, ph, s, act, slope, nullptr);
    const int64_t unit_elems = cl ? s * s * W * C : s * s * H * W;
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, unit_elems));
    at::parallel_for(0, units, grain, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        if (cl) {
          std::vector<double> row(C, 0.0);
          cpu::epilogue_bwd_row(A, u / H, u % H, row.data());
          if (need_bias) std::copy(row.begin(), row.end(), partial.begin() + u * C);
        } else {
          const double sum = cpu::epilogue_bwd_plane(A, u / C, u % C);
          if (need_bias) partial[u] = sum;
        }
      }
    });
  });
  if (!need_bias) return at::Tensor();
  return reduce_bias_partials(partial, grad, N, C, units, cl);
}

// The replicate form of 1x1 kernels (y: the convolution at the input resolution). Work units as
// in epilogue_fwd_cpu; each chunk of units first writes act(y + bias) of its units into a
// scratch buffer (tanh by ATen's vectorised tanh_ over the whole buffer, at the input
// resolution: s*s fewer than the output has), then replicates it into the output.
void replicate_fwd_cpu(const at::Tensor& y, const at::Tensor& out, const at::Tensor& bias, int64_t s, Act act,
                       double slope) {
  if (out.numel() == 0) return;
  const bool cl = epilogue_channels_last(out);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "upconv_replicate_fwd", [&] {
    using acc_t = cpu::acc_of<scalar_t>;
    const auto A = epilogue_fwd_args<scalar_t>(PhaseMaps{{y}, {}}, out, bias, s, act, slope);
    const int64_t units = cl ? A.N * A.H : A.N * A.C;
    const int64_t unit_in = cl ? A.W * A.C : A.H * A.W;  // input-resolution values per unit
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, s * s * unit_in));
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    at::parallel_for(0, units, grain, [&](int64_t u0, int64_t u1) {
      // at most `grain` units' values at a time (a chunk can be every unit on one thread)
      const int64_t step = std::min<int64_t>(u1 - u0, grain);
      std::vector<acc_t> buf(static_cast<size_t>(step * unit_in));
      for (int64_t v0 = u0; v0 < u1; v0 += step) {
        const int64_t v1 = std::min(u1, v0 + step);
        for (int64_t u = v0; u < v1; ++u) {
          acc_t* b = buf.data() + (u - v0) * unit_in;
          if (cl) {
            cpu::replicate_load_row(A, u / A.H, u % A.H, b, CpuRowAct{});
          } else {
            cpu::replicate_load_plane(A, u / A.C, u % A.C, b, CpuRowAct{});
          }
        }
        if (act == Act::Tanh) at::from_blob(buf.data(), {(v1 - v0) * unit_in}, at::TensorOptions(acc_type)).tanh_();
        for (int64_t u = v0; u < v1; ++u) {
          const acc_t* b = buf.data() + (u - v0) * unit_in;
          if (cl) {
            cpu::replicate_store_row(A, u / A.H, u % A.H, b);
          } else {
            cpu::replicate_store_plane(A, u / A.C, u % A.C, b);
          }
        }
      }
    });
  });
}

at::Tensor replicate_bwd_cpu(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& g_low, int64_t s, Act act,
                             double slope, bool need_bias) {
  const int64_t N = g_low.size(0), C = g_low.size(1), H = g_low.size(2), W = g_low.size(3);
  if (grad.numel() == 0) return need_bias ? at::zeros({C}, grad.options()) : at::Tensor();
  const bool cl = epilogue_channels_last(g_low);
  const int64_t units = cl ? N * H : N * C;
  std::vector<double> partial(need_bias ? (cl ? units * C : units) : 0, 0.0);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "upconv_replicate_bwd", [&] {
    using acc_t = cpu::acc_of<scalar_t>;
    const auto A = epilogue_bwd_args<scalar_t, double>(grad, out, PhaseMaps{{g_low}, {}}, s, act, slope, nullptr);
    const int64_t unit_elems = cl ? s * s * W * C : s * s * H * W;
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, unit_elems));
    at::parallel_for(0, units, grain, [&](int64_t u0, int64_t u1) {
      std::vector<acc_t> acc(static_cast<size_t>(cl ? W * C : W));
      std::vector<double> row(cl ? C : 0);
      for (int64_t u = u0; u < u1; ++u) {
        if (cl) {
          std::fill(row.begin(), row.end(), 0.0);
          cpu::replicate_bwd_row(A, u / H, u % H, acc.data(), row.data());
          if (need_bias) std::copy(row.begin(), row.end(), partial.begin() + u * C);
        } else {
          const double sum = cpu::replicate_bwd_plane(A, u / C, u % C, acc.data());
          if (need_bias) partial[u] = sum;
        }
      }
    });
  });
  if (!need_bias) return at::Tensor();
  return reduce_bias_partials(partial, grad, N, C, units, cl);
}

// The same sums as cpu::fold_taps, with every tap's source / destination offset computed once
// (no index arithmetic per channel pair): the fold runs on every forward and backward.
void fold_cpu(const FoldArgs& f, const at::Tensor& src, const at::Tensor& dst) {
  std::vector<int64_t> dst_off, src_off;
  std::vector<int32_t> first{0};
  for (int32_t r = 0; r < f.rows_dst; ++r)
    for (int32_t q = 0; q < f.rows_dst; ++q) {
      dst_off.push_back(fold_offset(f.dst, 0, 0, r, q));
      for (int32_t x = 0; x < f.count[r]; ++x)
        for (int32_t y = 0; y < f.count[q]; ++y) src_off.push_back(fold_offset(f.src, 0, 0, f.list[r][x], f.list[q][y]));
      first.push_back(static_cast<int32_t>(src_off.size()));
    }
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "upconv_fold", [&] {
    const scalar_t* s = src.const_data_ptr<scalar_t>();
    scalar_t* d = dst.data_ptr<scalar_t>();
    const int64_t taps = static_cast<int64_t>(dst_off.size());
    at::parallel_for(0, f.n0 * f.n1, 256, [&](int64_t b, int64_t e) {
      for (int64_t idx = b; idx < e; ++idx) {
        // walk the destination in memory order (the (C_in, C_out, 4, 4) transposed-conv kernel
        // has its channel dims the other way round from the source's)
        const bool d0_inner = f.dst.s0 < f.dst.s1;
        const int64_t d0 = d0_inner ? idx % f.n0 : idx / f.n1, d1 = d0_inner ? idx / f.n0 : idx % f.n1;
        const scalar_t* sp = s + d0 * f.src.s0 + d1 * f.src.s1;
        scalar_t* dp = d + d0 * f.dst.s0 + d1 * f.dst.s1;
        for (int64_t t = 0; t < taps; ++t) {
          double acc = 0;  // float64 sums, one rounding (as the CUDA kernel)
          for (int32_t k = first[t]; k < first[t + 1]; ++k) acc += static_cast<double>(sp[src_off[k]]);
          dp[dst_off[t]] = static_cast<scalar_t>(acc);
        }
      }
    });
  });
}

void no_sync(c10::Device) {}
// The CPU has no graph capture; tests switch this on to check what the algorithm choice does
// while a CUDA graph is captured (set_simulated_cpu_capture, ganx._C._simulate_cpu_graph_capture).
std::atomic<bool> simulated_capture{false};
bool cpu_capturing(c10::Device) { return simulated_capture.load(std::memory_order_relaxed); }

const bool registered = [] {
  register_device_glue(c10::DeviceType::CPU,
                       DeviceGlue{&epilogue_fwd_cpu, &epilogue_bwd_cpu, &replicate_fwd_cpu, &replicate_bwd_cpu,
                                  &fold_cpu, &no_sync, &cpu_capturing});
  return true;
}();

}  // namespace

void set_simulated_cpu_capture(bool on) { simulated_capture.store(on); }

TORCH_LIBRARY_IMPL(ganx, CPU, m) {
  register_phase_conv_kernels(m);
}

}  // namespace ganx
