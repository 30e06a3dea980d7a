// Device-independent parts of upsample_conv2d: argument checks, the phase geometry, the
// folding of the k x k kernel into phase kernels and its transpose, the activation's gradient.
#include "ganx.h"

#include <algorithm>
#include <cmath>

namespace ganx {

Act parse_activation(const std::string& name, double negative_slope) {
  if (name == "none") return Act::None;
  if (name == "relu") return Act::ReLU;
  if (name == "tanh") return Act::Tanh;
  if (name == "leaky_relu") {
    // The backward computes the slope from the activation's *output*: out > 0 <=> pre > 0
    // holds only for a non-negative slope.
    TORCH_CHECK_VALUE(std::isfinite(negative_slope) && negative_slope >= 0,
                      "upsample_conv2d: negative_slope must be finite and >= 0 for "
                      "activation='leaky_relu', got ", negative_slope);
    return Act::LeakyReLU;
  }
  TORCH_CHECK_VALUE(false, "upsample_conv2d: activation must be one of 'none', 'relu', "
                    "'leaky_relu', 'tanh', got '", name, "'");
}

UpConvGeometry upconv_geometry(int64_t s, int64_t k, int64_t p) {
  UpConvGeometry g;
  g.s = s;
  g.k = k;
  g.p = p;
  int64_t T = 0, lo = 0, hi = 0;
  for (int64_t a = 0; a < s; ++a) {
    const int64_t first = floor_div(a - p, s);
    const int64_t last = floor_div(a + k - 1 - p, s);
    g.d0[a] = first;
    T = std::max(T, last - first + 1);
  }
  g.T = T;
  for (int64_t a = 0; a < s; ++a) {
    lo = std::max(lo, -g.d0[a]);
    hi = std::max(hi, g.d0[a] + T - 1);
  }
  g.pad_lo = lo;
  g.pad_hi = hi;
  return g;
}

void check_upsample_conv2d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, int64_t scale,
                                  int64_t padding) {
  TORCH_CHECK(x.dim() == 4, "upsample_conv2d: x must be 4-D (N, C_in, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(weight.dim() == 4, "upsample_conv2d: weight must be 4-D (C_out, C_in, kH, kW), got ",
              weight.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "upsample_conv2d: x must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(),
              "upsample_conv2d: weight must have the dtype of x (", x.scalar_type(), "), got ",
              weight.scalar_type());
  TORCH_CHECK(weight.device() == x.device(), "upsample_conv2d: weight must be on the device of x (",
              x.device(), "), got ", weight.device());
  if (x.device().is_cpu()) {
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                "upsample_conv2d: on CPU x must be float32 or float64 (float16/bfloat16 are "
                "supported on CUDA), got ", x.scalar_type());
  }
  const int64_t kh = weight.size(2), kw = weight.size(3);
  TORCH_CHECK_VALUE(kh == kw, "upsample_conv2d: weight must have a square kernel, got ", kh, "x", kw);
  TORCH_CHECK_VALUE(kh == 1 || kh == 3 || kh == 5,
                    "upsample_conv2d: kernel size must be 1, 3 or 5 (odd, 'same' padding), got ", kh);
  TORCH_CHECK(weight.size(1) == x.size(1), "upsample_conv2d: weight has ", weight.size(1),
              " input channels (dim 1) but x has ", x.size(1), " channels");
  TORCH_CHECK(weight.size(0) > 0 && weight.size(1) > 0,
              "upsample_conv2d: weight must have at least one output and one input channel, got shape ",
              weight.sizes());
  if (bias.has_value() && bias->defined()) {
    const auto& b = *bias;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == weight.size(0), "upsample_conv2d: bias must be 1-D of size C_out=",
                weight.size(0), ", got shape ", b.sizes());
    TORCH_CHECK(b.scalar_type() == x.scalar_type(), "upsample_conv2d: bias must have the dtype of x (",
                x.scalar_type(), "), got ", b.scalar_type());
    TORCH_CHECK(b.device() == x.device(), "upsample_conv2d: bias must be on the device of x (", x.device(),
                "), got ", b.device());
  }
  TORCH_CHECK_VALUE(scale >= 1 && scale <= kMaxScale, "upsample_conv2d: scale_factor must be an integer in [1, ",
                    kMaxScale, "], got ", scale);
  TORCH_CHECK_VALUE(padding == kh / 2, "upsample_conv2d: padding must be kernel_size // 2 = ", kh / 2,
                    " ('same' convolution), got ", padding);
  // Output coordinates are computed in 64 bits, but a single dimension must fit 32 bits.
  TORCH_CHECK(x.size(2) * scale < (int64_t(1) << 31) && x.size(3) * scale < (int64_t(1) << 31),
              "upsample_conv2d: the upsampled size ", x.size(2) * scale, "x", x.size(3) * scale,
              " is too large");
}

// F[a, t, ky] = 1 where original tap ky of phase a lands on phase tap t.
static at::Tensor fold_matrix(const UpConvGeometry& g, const at::TensorOptions& opts) {
  auto F = at::zeros({g.s, g.T, g.k}, opts.device(at::kCPU));
  auto acc = F.accessor<float, 3>();
  for (int64_t a = 0; a < g.s; ++a)
    for (int64_t ky = 0; ky < g.k; ++ky) acc[a][floor_div(a + ky - g.p, g.s) - g.d0[a]][ky] = 1.f;
  return F.to(opts.device());
}

at::Tensor fold_weight(const at::Tensor& weight, const UpConvGeometry& g, at::ScalarType acc) {
  auto w = weight.to(acc);
  auto F = fold_matrix(g, w.options().dtype(at::kFloat)).to(acc);
  // Wf[a, b, o, i, t, u] = sum_{ky, kx} F[a, t, ky] F[b, u, kx] w[o, i, ky, kx]
  return at::einsum("atk,bul,oikl->aboitu", {F, F, w}).contiguous();
}

at::Tensor unfold_weight_grad(const at::Tensor& grad_folded, const UpConvGeometry& g) {
  auto F = fold_matrix(g, grad_folded.options().dtype(at::kFloat)).to(grad_folded.scalar_type());
  return at::einsum("atk,bul,aboitu->oikl", {F, F, grad_folded});
}

at::Tensor activation_backward(const at::Tensor& grad_out, const at::Tensor& out, Act act,
                               double negative_slope) {
  switch (act) {
    case Act::None:
      return grad_out;
    case Act::ReLU:  // d relu = [out > 0]
      return at::threshold_backward(grad_out, out, 0);
    case Act::LeakyReLU:  // [out > 0] + slope [out <= 0]; exact since slope >= 0
      return at::leaky_relu_backward(grad_out, out, negative_slope, /*self_is_result=*/true);
    case Act::Tanh:  // 1 - tanh^2
      return at::tanh_backward(grad_out, out);
  }
  return grad_out;
}

}  // namespace ganx
