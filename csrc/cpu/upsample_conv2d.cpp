// CPU kernels of upsample_conv2d. Each of the s*s output phases is a dense T x T
// correlation of the (padded) input with its folded kernel, so each phase runs as one
// GEMM-backed at::conv2d (oneDNN / the im2col+GEMM path), multi-threaded by ATen. For
// s = 2, k = 3 that is 4 convolutions with 2x2 kernels on the H x W input: 16 instead of 36
// multiply-adds per 2x2 output block, and no 4x larger upsampled tensor in memory.
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

at::Tensor upsample_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, int64_t scale,
                               int64_t padding, c10::string_view activation,
                               double negative_slope) {
  check_upsample_conv2d_inputs(x, weight, bias, scale, padding);
  const Act act = parse_activation(std::string(activation), negative_slope);
  const auto g = upconv_geometry(scale, weight.size(2), padding);
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), Co = weight.size(0);
  const auto fmt = x.suggest_memory_format();
  auto out = at::empty({N, Co, H * g.s, W * g.s}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;

  const auto wf = fold_weight(weight, g, x.scalar_type());
  const auto xp = padded_input(x, g, fmt);
  const auto b = (bias.has_value() && bias->defined()) ? std::optional<at::Tensor>(*bias) : std::nullopt;
  for (int64_t a = 0; a < g.s; ++a) {
    for (int64_t c = 0; c < g.s; ++c) {
      auto y = at::conv2d(phase_window(xp, g, a, c, H, W), wf[a][c], b);
      apply_activation_(y, act, negative_slope);
      // out[:, :, a::s, c::s] = y
      out.slice(2, a, c10::nullopt, g.s).slice(3, c, c10::nullopt, g.s).copy_(y);
    }
  }
  return out;
}

// Backward (derivation): out_ab[n,o,i,j] = b[o] + sum_{c,t,u} Wf_ab[o,c,t,u] xp[n,c,i+t',j+u']
// with t' = pad_lo + d0[a] + t. Each phase is an ordinary stride-1 valid correlation, so its
// input and weight gradients are those of conv2d on the phase window; the windows overlap in
// xp, so their input gradients add. The k x k weight gradient is the transpose of the
// folding applied to the stacked phase-kernel gradients, and the bias gradient sums the
// pre-activation gradient over N, H, W.
std::tuple<at::Tensor, at::Tensor, at::Tensor> upsample_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out, bool has_bias, int64_t scale, int64_t padding,
    c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask) {
  check_upsample_conv2d_inputs(x, weight, std::nullopt, scale, padding);
  const Act act = parse_activation(std::string(activation), negative_slope);
  const auto g = upconv_geometry(scale, weight.size(2), padding);
  const int64_t N = x.size(0), Ci = x.size(1), H = x.size(2), W = x.size(3), Co = weight.size(0);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == N && grad_out.size(1) == Co &&
                  grad_out.size(2) == H * g.s && grad_out.size(3) == W * g.s,
              "upsample_conv2d_backward: grad_out must have shape ",
              std::vector<int64_t>{N, Co, H * g.s, W * g.s}, ", got ", grad_out.sizes());
  const bool need_x = output_mask[0], need_w = output_mask[1], need_b = output_mask[2] && has_bias;
  const auto fmt = x.suggest_memory_format();

  at::Tensor gx = need_x ? at::zeros_like(x, at::MemoryFormat::Preserve) : at::empty({0}, x.options());
  at::Tensor gw = need_w ? at::zeros_like(weight) : at::empty({0}, weight.options());
  at::Tensor gb = need_b ? at::zeros({Co}, x.options()) : at::empty({0}, x.options());
  if (grad_out.numel() == 0 || (!need_x && !need_w && !need_b)) return {gx, gw, gb};

  const auto gpre = activation_backward(grad_out, out, act, negative_slope);
  if (need_b) gb = gpre.sum({0, 2, 3});
  if (!need_x && !need_w) return {gx, gw, gb};

  const auto wf = fold_weight(weight, g, x.scalar_type());
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
  if (need_x) gx = gxp.narrow(2, g.pad_lo, H).narrow(3, g.pad_lo, W).contiguous(fmt);
  if (need_w) gw = unfold_weight_grad(gwf, g).contiguous();
  (void)Ci;
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(ganx, CPU, m) {
  m.impl("upsample_conv2d", &upsample_conv2d_cpu);
  m.impl("upsample_conv2d_backward", &upsample_conv2d_backward_cpu);
}

}  // namespace ganx
