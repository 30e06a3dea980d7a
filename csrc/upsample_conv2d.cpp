// Device-independent parts of upsample_conv2d: argument checks, the phase geometry, the
// folding of the k x k kernel into phase kernels and its transpose, the activation's gradient.
#include "ganx.h"

#include <algorithm>
#include <cmath>

namespace ganx {

Act parse_activation(const std::string& name, double negative_slope, const char* op) {
  if (name == "none") return Act::None;
  if (name == "relu") return Act::ReLU;
  if (name == "tanh") return Act::Tanh;
  if (name == "leaky_relu") {
    // The backward computes the slope from the activation's *output*: out > 0 <=> pre > 0
    // holds only for a non-negative slope.
    TORCH_CHECK_VALUE(std::isfinite(negative_slope) && negative_slope >= 0,
                      op, ": negative_slope must be finite and >= 0 for "
                      "activation='leaky_relu', got ", negative_slope);
    return Act::LeakyReLU;
  }
  TORCH_CHECK_VALUE(false, op, ": activation must be one of 'none', 'relu', "
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
    g.taps[a] = last - first + 1;
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

UpConvGeometry conv_transpose4s2_geometry() {
  UpConvGeometry g = upconv_geometry(2, 3, 1);  // d0 = {-1, 0}, T = 2, pad 1/1
  g.fold = Fold::ConvTranspose4s2;
  g.k = 4;
  return g;
}

// Checks shared by both ops; `w_in` / `w_out` are the weight dims holding C_in / C_out.
static void check_common(const char* op, const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, int64_t w_in, int64_t w_out) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C_in, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be a floating-point tensor, got ",
              x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight must have the dtype of x (",
              x.scalar_type(), "), got ", weight.scalar_type());
  TORCH_CHECK(weight.device() == x.device(), op, ": weight must be on the device of x (", x.device(),
              "), got ", weight.device());
  if (x.device().is_cpu()) {
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                ": on CPU x must be float32 or float64 (float16/bfloat16 are supported on CUDA), got ",
                x.scalar_type());
  }
  TORCH_CHECK(weight.size(w_in) == x.size(1), op, ": weight has ", weight.size(w_in),
              " input channels (dim ", w_in, ") but x has ", x.size(1), " channels");
  TORCH_CHECK(weight.size(0) > 0 && weight.size(1) > 0, op,
              ": weight must have at least one output and one input channel, got shape ", weight.sizes());
  if (bias.has_value() && bias->defined()) {
    const auto& b = *bias;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == weight.size(w_out), op, ": bias must be 1-D of size C_out=",
                weight.size(w_out), ", got shape ", b.sizes());
    TORCH_CHECK(b.scalar_type() == x.scalar_type(), op, ": bias must have the dtype of x (", x.scalar_type(),
                "), got ", b.scalar_type());
    TORCH_CHECK(b.device() == x.device(), op, ": bias must be on the device of x (", x.device(), "), got ",
                b.device());
  }
}

void check_conv_transpose4s2_inputs(const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias) {
  const char* op = "conv_transpose2d_4s2";
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be 4-D (C_in, C_out, 4, 4), got ", weight.dim(), "-D");
  TORCH_CHECK_VALUE(weight.size(2) == 4 && weight.size(3) == 4, op, ": weight must have a 4x4 kernel, got ",
                    weight.size(2), "x", weight.size(3));
  check_common(op, x, weight, bias, /*w_in=*/0, /*w_out=*/1);
}

void check_upsample_conv2d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, int64_t scale,
                                  int64_t padding) {
  const char* op = "upsample_conv2d";
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be 4-D (C_out, C_in, kH, kW), got ", weight.dim(), "-D");
  check_common(op, x, weight, bias, /*w_in=*/1, /*w_out=*/0);
  const int64_t kh = weight.size(2), kw = weight.size(3);
  TORCH_CHECK_VALUE(kh == kw, op, ": weight must have a square kernel, got ", kh, "x", kw);
  TORCH_CHECK_VALUE(kh == 1 || kh == 3 || kh == 5, op,
                    ": kernel size must be 1, 3 or 5 (odd, 'same' padding), got ", kh);
  TORCH_CHECK_VALUE(scale >= 1 && scale <= kMaxScale, op, ": scale_factor must be an integer in [1, ",
                    kMaxScale, "], got ", scale);
  TORCH_CHECK_VALUE(padding == kh / 2, op, ": padding must be kernel_size // 2 = ", kh / 2,
                    " ('same' convolution), got ", padding);
  // Output coordinates are computed in 64 bits, but a single dimension must fit 32 bits.
  TORCH_CHECK(x.size(2) * scale < (int64_t(1) << 31) && x.size(3) * scale < (int64_t(1) << 31), op,
              ": the upsampled size ", x.size(2) * scale, "x", x.size(3) * scale, " is too large");
}

// F[a, t, ky] = 1 where original tap ky of phase a lands on phase tap t.
static at::Tensor fold_matrix(const UpConvGeometry& g, const at::TensorOptions& opts) {
  auto F = at::zeros({g.s, g.T, g.k}, opts.device(at::kCPU));
  auto acc = F.accessor<float, 3>();
  if (g.fold == Fold::UpsampleConv) {
    for (int64_t a = 0; a < g.s; ++a)
      for (int64_t ky = 0; ky < g.k; ++ky) acc[a][floor_div(a + ky - g.p, g.s) - g.d0[a]][ky] = 1.f;
  } else {  // transposed conv, k = 4, s = 2, p = 1: tap t of phase a is ky = a + 1 - 2 (d0[a] + t)
    for (int64_t a = 0; a < 2; ++a)
      for (int64_t t = 0; t < 2; ++t) acc[a][t][a + 1 - 2 * (g.d0[a] + t)] = 1.f;
  }
  return F.to(opts.device());
}

at::Tensor fold_weight(const at::Tensor& weight, const UpConvGeometry& g, at::ScalarType acc) {
  auto w = weight.to(acc);
  auto F = fold_matrix(g, w.options().dtype(at::kFloat)).to(acc);
  // Wf[a, b, o, i, t, u] = sum_{ky, kx} F[a, t, ky] F[b, u, kx] w[o, i, ky, kx]
  // (ConvTranspose2d stores its weight as (C_in, C_out, kH, kW)).
  const char* eq = g.fold == Fold::UpsampleConv ? "atk,bul,oikl->aboitu" : "atk,bul,iokl->aboitu";
  return at::einsum(eq, {F, F, w}).contiguous();
}

at::Tensor unfold_weight_grad(const at::Tensor& grad_folded, const UpConvGeometry& g) {
  auto F = fold_matrix(g, grad_folded.options().dtype(at::kFloat)).to(grad_folded.scalar_type());
  const char* eq = g.fold == Fold::UpsampleConv ? "atk,bul,aboitu->oikl" : "atk,bul,aboitu->iokl";
  return at::einsum(eq, {F, F, grad_folded});
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

at::Tensor phase_conv_op(const char* op, const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, const UpConvGeometry& g,
                         const std::string& activation, double negative_slope, PhaseForwardFn fwd,
                         at::ScalarType acc_type) {
  const Act act = parse_activation(activation, negative_slope, op);
  const int64_t c_out = g.fold == Fold::UpsampleConv ? weight.size(0) : weight.size(1);
  const at::Tensor b = (bias.has_value() && bias->defined()) ? *bias : at::Tensor();
  return fwd(x, weight, b, g, act, negative_slope, c_out, acc_type);
}

// Backward (derivation): with pre = out before the activation, d pre = act'(out) * grad_out
// (activation_backward). Each phase is the stride-1 valid correlation
//   pre_ab[n,o,i,j] = b[o] + sum_{c,t,u} Wf_ab[o,c,t,u] x[n,c,i+d0[a]+t,j+d0[b]+u],
// so d x is the sum over phases of the full correlation of d pre_ab with the flipped phase
// kernel, d Wf_ab[o,c,t,u] = sum_{n,i,j} d pre_ab[n,o,i,j] x[n,c,i+d0[a]+t,j+d0[b]+u], d b is
// d pre summed over N, H, W, and d weight is the transpose of the (linear) folding applied
// to d Wf.
std::tuple<at::Tensor, at::Tensor, at::Tensor> phase_conv_backward_op(
    const char* op, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out, bool has_bias, const UpConvGeometry& g, const std::string& activation,
    double negative_slope, std::array<bool, 3> output_mask, PhaseBackwardFn bwd, at::ScalarType acc_type) {
  const Act act = parse_activation(activation, negative_slope, op);
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const int64_t c_out = g.fold == Fold::UpsampleConv ? weight.size(0) : weight.size(1);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == N && grad_out.size(1) == c_out &&
                  grad_out.size(2) == H * g.s && grad_out.size(3) == W * g.s,
              op, "_backward: grad_out must have shape ", std::vector<int64_t>{N, c_out, H * g.s, W * g.s},
              ", got ", grad_out.sizes());
  TORCH_CHECK(grad_out.device() == x.device(), op, "_backward: grad_out must be on the device of x (",
              x.device(), "), got ", grad_out.device());
  if (act != Act::None) {
    TORCH_CHECK(out.sizes() == grad_out.sizes(), op, "_backward: out must have the shape of grad_out ",
                grad_out.sizes(), " when an activation is fused, got ", out.sizes());
  }
  const bool need_x = output_mask[0], need_w = output_mask[1], need_b = output_mask[2] && has_bias;
  at::Tensor gx = need_x ? at::zeros_like(x, at::MemoryFormat::Preserve) : at::empty({0}, x.options());
  at::Tensor gw = need_w ? at::zeros_like(weight) : at::empty({0}, weight.options());
  at::Tensor gb = need_b ? at::zeros({c_out}, x.options()) : at::empty({0}, x.options());
  if (grad_out.numel() == 0 || (!need_x && !need_w && !need_b)) return {gx, gw, gb};

  const auto gpre = activation_backward(grad_out.to(x.scalar_type()), out, act, negative_slope);
  if (need_b) gb = gpre.sum({0, 2, 3}, /*keepdim=*/false, acc_type).to(x.scalar_type());
  if (!need_x && !need_w) return {gx, gw, gb};

  auto [gx_, gw_] = bwd(gpre, x, weight, g, need_x, need_w, acc_type);
  if (need_x) gx = gx_;
  if (need_w) gw = gw_.to(weight.scalar_type()).contiguous();
  return {gx, gw, gb};
}

}  // namespace ganx
