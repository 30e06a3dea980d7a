// CPU kernels of the phase-decomposed layer (upsample_conv2d and conv_transpose2d_4s2). Each
// of the s*s output phases is a dense correlation of the (padded) input with its folded
// kernel: 16 instead of 36 multiply-adds per 2x2 output block for s = 2, k = 3, and no 4x
// larger upsampled tensor in memory. Three GEMM-backed forms (oneDNN / im2col + GEMM,
// multi-threaded by ATen), chosen by geometry and size (see use_deconv, use_stacked):
//   deconv:  s = 2 with 2x2 phase kernels -- one stride-2 transposed conv with the 4x4 kernel
//            the phase kernels interleave into;
//   stacked: all phase kernels as the output channels of one convolution (maps >= 16x16);
//   split:   one convolution per phase (small maps, phases with unequal tap counts).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ganx.h"

#include <algorithm>

namespace ganx {
namespace {

at::Tensor padded_input(const at::Tensor& x, const UpConvGeometry& g, at::MemoryFormat fmt) {
  return at::constant_pad_nd(x, {g.pad_lo, g.pad_hi, g.pad_lo, g.pad_hi}, 0).contiguous(fmt);
}

// The window of the padded input that phase (a, b) correlates with its taps[a] x taps[b] kernel.
at::Tensor phase_window(const at::Tensor& xp, const UpConvGeometry& g, int64_t a, int64_t b,
                        int64_t H, int64_t W) {
  return xp.narrow(2, g.pad_lo + g.d0[a], H + g.taps[a] - 1).narrow(3, g.pad_lo + g.d0[b], W + g.taps[b] - 1);
}

// Phase (a, b)'s kernel without its zero padding taps.
at::Tensor phase_kernel(const at::Tensor& wf, const UpConvGeometry& g, int64_t a, int64_t b) {
  return wf[a][b].narrow(2, 0, g.taps[a]).narrow(3, 0, g.taps[b]);
}

bool uniform_taps(const UpConvGeometry& g) {
  for (int64_t a = 0; a < g.s; ++a)
    if (g.taps[a] != g.T) return false;
  return true;
}

void apply_activation_(at::Tensor& y, Act act, double slope) {
  switch (act) {
    case Act::None: break;
    case Act::ReLU: y.relu_(); break;
    case Act::LeakyReLU: at::leaky_relu_(y, slope); break;
    case Act::Tanh: y.tanh_(); break;
  }
}


// s*s separate GEMM-backed convolutions, one per phase, each on its window of the padded input.
at::Tensor phase_forward_split(const at::Tensor& x, const at::Tensor& wf, const at::Tensor& bias,
                             const UpConvGeometry& g, Act act, double slope, int64_t c_out) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const auto fmt = x.suggest_memory_format();
  auto out = at::empty({N, c_out, H * g.s, W * g.s}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const auto xp = padded_input(x, g, fmt);
  const auto b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  for (int64_t a = 0; a < g.s; ++a) {
    for (int64_t c = 0; c < g.s; ++c) {
      auto y = at::conv2d(phase_window(xp, g, a, c, H, W), phase_kernel(wf, g, a, c), b);
      apply_activation_(y, act, slope);
      out.slice(2, a, c10::nullopt, g.s).slice(3, c, c10::nullopt, g.s).copy_(y);
    }
  }
  return out;
}
// Each phase's input and kernel gradients are those of a stride-1 valid conv2d on its
// window; the windows overlap in the padded input, so their input gradients add.
std::tuple<at::Tensor, at::Tensor> phase_backward_split(const at::Tensor& gpre, const at::Tensor& x,
                                                      const at::Tensor& wf, const UpConvGeometry& g,
                                                      bool need_x, bool need_w) {
  const int64_t H = x.size(2), W = x.size(3);
  const auto fmt = x.suggest_memory_format();
  const auto xp = padded_input(x, g, fmt);
  at::Tensor gxp = need_x ? at::zeros_like(xp) : at::Tensor();
  at::Tensor gwf = need_w ? at::zeros_like(wf) : at::Tensor();  // padding taps keep a zero gradient
  for (int64_t a = 0; a < g.s; ++a) {
    for (int64_t c = 0; c < g.s; ++c) {
      auto g_ab = gpre.slice(2, a, c10::nullopt, g.s).slice(3, c, c10::nullopt, g.s).contiguous(fmt);
      auto window = phase_window(xp, g, a, c, H, W);
      auto [gi, gk, unused] = at::convolution_backward(
          g_ab, window, phase_kernel(wf, g, a, c), std::nullopt, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1,
          {need_x, need_w, false});
      if (need_x) phase_window(gxp, g, a, c, H, W).add_(gi);
      if (need_w) phase_kernel(gwf, g, a, c).copy_(gk);
    }
  }
  at::Tensor gx = need_x ? gxp.narrow(2, g.pad_lo, H).narrow(3, g.pad_lo, W).contiguous(fmt) : at::Tensor();
  return {gx, gwf};
}
// Which form is faster depends on the map size (measured, 1 thread, DCGAN shapes): on small
// maps the stacked form's unused border costs up to (H+1)(W+1)/(HW) = 1.56x at 4x4 and the
// s*s separate calls win; from 16x16 on, the single larger GEMM wins.
// Phases with fewer taps than T (odd scales) always take the per-phase form: the stacked one
// would multiply x outside their receptive field by the zero padding taps (0 * NaN = NaN).
bool use_stacked(const UpConvGeometry& g, int64_t H, int64_t W) { return std::min(H, W) >= 16 && uniform_taps(g); }

// All s*s phase kernels stacked as the output channels of one convolution: phase (a, b) of the
// layer is the window [off(a), off(a) + H) x [off(b), off(b) + W) of channels
// [ab*C_out, (ab+1)*C_out) of conv2d(xp, Wf_all), off(a) = pad_lo + d0[a]. One large GEMM-backed
// call (M = s*s*C_out) instead of s*s small ones; the price is the (H+1)(W+1)/(HW) border
// the phases do not use (for s = 2, k = 3), still far fewer multiply-adds than 3x3 on 2H x 2W.
at::Tensor stacked_weight(const at::Tensor& wf, const UpConvGeometry& g) {
  return wf.reshape({g.s * g.s * wf.size(2), wf.size(3), g.T, g.T});
}

at::Tensor phase_forward_stacked(const at::Tensor& x, const at::Tensor& wf, const at::Tensor& bias,
                                 const UpConvGeometry& g, Act act, double slope, int64_t c_out) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const auto fmt = x.suggest_memory_format();
  auto out = at::empty({N, c_out, H * g.s, W * g.s}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const auto xp = padded_input(x, g, fmt);
  const auto b = bias.defined() ? std::optional<at::Tensor>(bias.repeat({g.s * g.s})) : std::nullopt;
  auto y = at::conv2d(xp, stacked_weight(wf, g), b);  // [N, s*s*C_out, Hf, Wf]
  apply_activation_(y, act, slope);
  for (int64_t a = 0; a < g.s; ++a) {
    for (int64_t c = 0; c < g.s; ++c) {
      const int64_t ab = a * g.s + c;
      auto y_ab = y.narrow(1, ab * c_out, c_out).narrow(2, g.pad_lo + g.d0[a], H).narrow(3, g.pad_lo + g.d0[c], W);
      out.slice(2, a, c10::nullopt, g.s).slice(3, c, c10::nullopt, g.s).copy_(y_ab);  // out[:, :, a::s, c::s]
    }
  }
  return out;
}

// Backward of the stacked convolution: the phase gradients are placed in their windows of a
// zero gradient of conv2d(xp, Wf_all)'s output (the unused border gets zero gradient), and one
// convolution_backward gives d xp (cropped to d x) and d Wf_all (= the stacked d Wf_ab).
std::tuple<at::Tensor, at::Tensor> phase_backward_stacked(const at::Tensor& gpre, const at::Tensor& x,
                                                          const at::Tensor& wf, const UpConvGeometry& g,
                                                          bool need_x, bool need_w) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), c_out = gpre.size(1);
  const auto fmt = x.suggest_memory_format();
  const auto xp = padded_input(x, g, fmt);
  const int64_t Hf = xp.size(2) - g.T + 1, Wf = xp.size(3) - g.T + 1;
  auto gy = at::zeros({N, g.s * g.s * c_out, Hf, Wf}, gpre.options().memory_format(fmt));
  for (int64_t a = 0; a < g.s; ++a) {
    for (int64_t c = 0; c < g.s; ++c) {
      const int64_t ab = a * g.s + c;
      gy.narrow(1, ab * c_out, c_out).narrow(2, g.pad_lo + g.d0[a], H).narrow(3, g.pad_lo + g.d0[c], W)
          .copy_(gpre.slice(2, a, c10::nullopt, g.s).slice(3, c, c10::nullopt, g.s));
    }
  }
  const auto w_all = stacked_weight(wf, g);
  auto [gxp, gw_all, unused] = at::convolution_backward(
      gy, xp, w_all, std::nullopt, /*stride=*/{1, 1}, /*padding=*/{0, 0}, /*dilation=*/{1, 1},
      /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1, {need_x, need_w, false});
  at::Tensor gx = need_x ? gxp.narrow(2, g.pad_lo, H).narrow(3, g.pad_lo, W).contiguous(fmt) : at::Tensor();
  at::Tensor gwf = need_w ? gw_all.reshape(wf.sizes()) : at::Tensor();
  return {gx, gwf};
}

// s = 2 with 2x2 phase kernels (upsample + 3x3 conv, ConvTranspose2d(4, 2, 1)): the four phase
// kernels interleave into one 4x4 kernel and the whole layer is a stride-2 transposed
// convolution (each output phase reads a 2x2 patch with a 2x2 slice of it), which oneDNN runs
// as one phase-decomposed GEMM-backed primitive: measured faster than our own per-phase or
// stacked GEMMs from 8x8 maps on; on 4x4 maps the per-phase form's forward was faster
// (12 vs 18 ms at N64 512->256, 2 threads) and fwd+bwd on par.
bool use_deconv(const UpConvGeometry& g, int64_t H, int64_t W) {
  return g.s == 2 && g.T == 2 && uniform_taps(g) && g.d0[0] == -1 && g.d0[1] == 0 && std::min(H, W) >= 8;
}

// The 4x4 transposed-conv kernel (C_in, C_out, 4, 4) straight from the layer's weight: for
// upsample + 3x3, rows (and columns) are K0 = w2, K1 = w1 + w2, K2 = w0 + w1, K3 = w0: the
// 2-tap phase kernels (phase 0 sums taps {1, 2}, phase 1 sums taps {0, 1}) interleaved.
at::Tensor deconv_weight(const at::Tensor& weight, const UpConvGeometry& g) {
  if (g.fold == Fold::ConvTranspose4s2) return weight;
  auto rows = [](const at::Tensor& w, int64_t d) {
    auto k0 = w.select(d, 0), k1 = w.select(d, 1), k2 = w.select(d, 2);
    return at::stack({k2, k1 + k2, k0 + k1, k0}, d);
  };
  return rows(rows(weight, 2), 3).transpose(0, 1).contiguous();
}

// Transpose of deconv_weight: the gradient of the 4x4 kernel -> the gradient of the layer's weight.
at::Tensor deconv_weight_grad(const at::Tensor& gw4, const UpConvGeometry& g) {
  if (g.fold == Fold::ConvTranspose4s2) return gw4;
  auto rows = [](const at::Tensor& gk, int64_t d) {  // k0 <- K2 + K3, k1 <- K1 + K2, k2 <- K0 + K1
    auto K0 = gk.select(d, 0), K1 = gk.select(d, 1), K2 = gk.select(d, 2), K3 = gk.select(d, 3);
    return at::stack({K2 + K3, K1 + K2, K0 + K1}, d);
  };
  return rows(rows(gw4, 2), 3).transpose(0, 1).contiguous();
}

at::Tensor phase_forward_deconv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                const UpConvGeometry& g, Act act, double slope) {
  const auto fmt = x.suggest_memory_format();
  const auto b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  auto y = at::conv_transpose2d(x, deconv_weight(weight, g), b, /*stride=*/2, /*padding=*/1);
  apply_activation_(y, act, slope);
  return y.contiguous(fmt);
}

std::tuple<at::Tensor, at::Tensor> phase_backward_deconv(const at::Tensor& gpre, const at::Tensor& x,
                                                         const at::Tensor& weight, const UpConvGeometry& g,
                                                         bool need_x, bool need_w) {
  auto [gx, gw4, unused] = at::convolution_backward(
      gpre, x, deconv_weight(weight, g), std::nullopt, /*stride=*/{2, 2}, /*padding=*/{1, 1},
      /*dilation=*/{1, 1}, /*transposed=*/true, /*output_padding=*/{0, 0}, /*groups=*/1,
      {need_x, need_w, false});
  if (need_x) gx = gx.contiguous(x.suggest_memory_format());
  return {gx, need_w ? deconv_weight_grad(gw4, g) : at::Tensor()};
}

at::Tensor phase_forward_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const UpConvGeometry& g, Act act, double slope, int64_t c_out,
                             at::ScalarType acc_type) {
  if (use_deconv(g, x.size(2), x.size(3)) && x.numel() > 0) return phase_forward_deconv(x, weight, bias, g, act, slope);
  const at::Tensor wf = fold_weight(weight, g, acc_type);
  if (!use_stacked(g, x.size(2), x.size(3))) return phase_forward_split(x, wf, bias, g, act, slope, c_out);
  return phase_forward_stacked(x, wf, bias, g, act, slope, c_out);
}

std::tuple<at::Tensor, at::Tensor> phase_backward_cpu(const at::Tensor& gpre, const at::Tensor& x,
                                                      const at::Tensor& weight, const UpConvGeometry& g,
                                                      bool need_x, bool need_w, at::ScalarType acc_type) {
  if (use_deconv(g, x.size(2), x.size(3))) return phase_backward_deconv(gpre, x, weight, g, need_x, need_w);
  const at::Tensor wf = fold_weight(weight, g, acc_type);
  auto [gx, gwf] = use_stacked(g, x.size(2), x.size(3)) ? phase_backward_stacked(gpre, x, wf, g, need_x, need_w)
                                                        : phase_backward_split(gpre, x, wf, g, need_x, need_w);
  return {gx, need_w ? unfold_weight_grad(gwf, g) : at::Tensor()};
}

}  // namespace

TORCH_LIBRARY_IMPL(ganx, CPU, m) {
  m.impl("upsample_conv2d", &upsample_conv2d_impl<&phase_forward_cpu>);
  m.impl("upsample_conv2d_backward", &upsample_conv2d_backward_impl<&phase_backward_cpu>);
  m.impl("conv_transpose2d_4s2", &conv_transpose2d_4s2_impl<&phase_forward_cpu>);
  m.impl("conv_transpose2d_4s2_backward", &conv_transpose2d_4s2_backward_impl<&phase_backward_cpu>);
}

}  // namespace ganx
