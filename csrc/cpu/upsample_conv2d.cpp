// CPU kernels of the phase-decomposed layer (upsample_conv2d and conv_transpose2d_4s2).
// Each of the s*s output phases is a dense T x T correlation of the (padded) input with its
// folded kernel, so each phase runs as one GEMM-backed at::conv2d (oneDNN or im2col+GEMM),
// multi-threaded by ATen. For s = 2, k = 3 that is 4 convolutions with 2x2 kernels on the
// H x W input: 16 instead of 36 multiply-adds per 2x2 output block, and no 4x larger
// upsampled tensor in memory.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ganx.h"

namespace ganx {
namespace {

at::Tensor padded_input(const at::Tensor& x, const UpConvGeometry& g, at::MemoryFormat fmt) {
  return at::constant_pad_nd(x, {g.pad_lo, g.pad_hi, g.pad_lo, g.pad_hi}, 0).contiguous(fmt);
}

// The window of the padded input that phase (a, b) correlates with its T x T kernel.
at::Tensor phase_window(const at::Tensor& xp, const UpConvGeometry& g, int64_t a, int64_t b,
                        int64_t H, int64_t W) {
  return xp.narrow(2, g.pad_lo + g.d0[a], H + g.T - 1).narrow(3, g.pad_lo + g.d0[b], W + g.T - 1);
}

void apply_activation_(at::Tensor& y, Act act, double slope) {
  switch (act) {
    case Act::None: break;
    case Act::ReLU: y.relu_(); break;
    case Act::LeakyReLU: at::leaky_relu_(y, slope); break;
    case Act::Tanh: y.tanh_(); break;
  }
}

at::Tensor phase_forward_cpu(const at::Tensor& x, const at::Tensor& wf, const at::Tensor& bias,
                             const UpConvGeometry& g, Act act, double slope, int64_t c_out) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const auto fmt = x.suggest_memory_format();
  auto out = at::empty({N, c_out, H * g.s, W * g.s}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const auto xp = padded_input(x, g, fmt);
  const auto b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  for (int64_t a = 0; a < g.s; ++a) {
    for (int64_t c = 0; c < g.s; ++c) {
      auto y = at::conv2d(phase_window(xp, g, a, c, H, W), wf[a][c], b);
      apply_activation_(y, act, slope);
      out.slice(2, a, c10::nullopt, g.s).slice(3, c, c10::nullopt, g.s).copy_(y);  // out[:, :, a::s, c::s]
    }
  }
  return out;
}

// Each phase's input and kernel gradients are those of a stride-1 valid conv2d on the
// phase window; the windows overlap in the padded input, so their input gradients add.
std::tuple<at::Tensor, at::Tensor> phase_backward_cpu(const at::Tensor& gpre, const at::Tensor& x,
                                                      const at::Tensor& wf, const UpConvGeometry& g,
                                                      bool need_x, bool need_w) {
  const int64_t H = x.size(2), W = x.size(3);
  const auto fmt = x.suggest_memory_format();
  const auto xp = padded_input(x, g, fmt);
  at::Tensor gxp = need_x ? at::zeros_like(xp) : at::Tensor();
  at::Tensor gwf = need_w ? at::empty_like(wf) : at::Tensor();
  for (int64_t a = 0; a < g.s; ++a) {
    for (int64_t c = 0; c < g.s; ++c) {
      auto g_ab = gpre.slice(2, a, c10::nullopt, g.s).slice(3, c, c10::nullopt, g.s).contiguous(fmt);
      auto window = phase_window(xp, g, a, c, H, W);
      auto [gi, gk, unused] = at::convolution_backward(
          g_ab, window, wf[a][c], std::nullopt, /*stride=*/{1, 1}, /*padding=*/{0, 0},
          /*dilation=*/{1, 1}, /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1,
          {need_x, need_w, false});
      if (need_x) phase_window(gxp, g, a, c, H, W).add_(gi);
      if (need_w) gwf[a][c].copy_(gk);
    }
  }
  at::Tensor gx = need_x ? gxp.narrow(2, g.pad_lo, H).narrow(3, g.pad_lo, W).contiguous(fmt) : at::Tensor();
  return {gx, gwf};
}

at::Tensor upsample_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, int64_t scale, int64_t padding,
                               c10::string_view activation, double negative_slope) {
  check_upsample_conv2d_inputs(x, weight, bias, scale, padding);
  return phase_conv_op("upsample_conv2d", x, weight, bias, upconv_geometry(scale, weight.size(2), padding),
                       std::string(activation), negative_slope, &phase_forward_cpu, x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> upsample_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, int64_t scale, int64_t padding, c10::string_view activation, double negative_slope,
    std::array<bool, 3> output_mask) {
  check_upsample_conv2d_inputs(x, weight, std::nullopt, scale, padding);
  return phase_conv_backward_op("upsample_conv2d", grad_out, x, weight, out, has_bias,
                                upconv_geometry(scale, weight.size(2), padding), std::string(activation),
                                negative_slope, output_mask, &phase_backward_cpu, x.scalar_type());
}

at::Tensor conv_transpose2d_4s2_cpu(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, c10::string_view activation,
                                   double negative_slope) {
  check_conv_transpose4s2_inputs(x, weight, bias);
  return phase_conv_op("conv_transpose2d_4s2", x, weight, bias, conv_transpose4s2_geometry(),
                       std::string(activation), negative_slope, &phase_forward_cpu, x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_4s2_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask) {
  check_conv_transpose4s2_inputs(x, weight, std::nullopt);
  return phase_conv_backward_op("conv_transpose2d_4s2", grad_out, x, weight, out, has_bias,
                                conv_transpose4s2_geometry(), std::string(activation), negative_slope,
                                output_mask, &phase_backward_cpu, x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(ganx, CPU, m) {
  m.impl("upsample_conv2d", &upsample_conv2d_cpu);
  m.impl("upsample_conv2d_backward", &upsample_conv2d_backward_cpu);
  m.impl("conv_transpose2d_4s2", &conv_transpose2d_4s2_cpu);
  m.impl("conv_transpose2d_4s2_backward", &conv_transpose2d_4s2_backward_cpu);
}

}  // namespace ganx
