// Shared declarations of the ganx extension: argument checks and the geometry of the
// phase-decomposed upsample-conv, used by both the CPU and the CUDA kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

namespace ganx {

// ----------------------------------------------------------------- upsample_conv2d

enum class Act : int64_t { None = 0, ReLU = 1, LeakyReLU = 2, Tanh = 3 };

// "none" | "relu" | "leaky_relu" | "tanh"; anything else is a ValueError naming the op.
Act parse_activation(const std::string& name, double negative_slope, const char* op = "upsample_conv2d");

// Largest supported scale factor and the supported (odd) kernel sizes.
constexpr int64_t kMaxScale = 4;
constexpr int64_t kMaxTaps = 5;  // taps per phase never exceed the kernel size (<= 5)

// Nearest upsampling by s followed by a k x k "same" convolution (padding p = k/2) is, for
// output row oy = s*i + a (phase a), a correlation of the *input* rows i + d0[a] + t,
// t = 0..T-1, with a phase kernel whose tap t is the sum of the original taps ky with
// floor((a + ky - p) / s) == d0[a] + t. Phases with fewer distinct offsets than T get zero
// taps at the end, so every phase has the same T x T kernel.
enum class Fold : int64_t {
  UpsampleConv = 0,       // weight (C_out, C_in, k, k): phase taps are sums of original taps
  ConvTranspose4s2 = 1,   // weight (C_in, C_out, 4, 4) of ConvTranspose2d(4, stride 2, padding 1):
                          // phase taps are a selection of the original taps
};

struct UpConvGeometry {
  Fold fold = Fold::UpsampleConv;
  int64_t s = 2, k = 3, p = 1;
  int64_t T = 2;                            // taps per phase (per dimension)
  std::array<int64_t, kMaxScale> d0{};      // first input offset of each phase
  std::array<int64_t, kMaxScale> taps{};    // taps phase a really has (<= T; the rest are zero
                                            // padding that must not *read* x: 0 * NaN = NaN)
  int64_t pad_lo = 0, pad_hi = 0;           // zero padding of x that covers every phase
};

UpConvGeometry upconv_geometry(int64_t scale, int64_t kernel_size, int64_t padding);
// ConvTranspose2d(k=4, s=2, p=1): out[2i + a] = sum_t x[i + d0[a] + t] * w[ky = a + 1 - 2 (d0[a] + t)]
// with d0 = {-1, 0} and T = 2 -- the geometry of upsample-conv with s = 2, k = 3.
UpConvGeometry conv_transpose4s2_geometry();

// Checks of conv_transpose2d_4s2 (weight in ConvTranspose2d's (C_in, C_out, 4, 4) layout).
void check_conv_transpose4s2_inputs(const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias);

// Device kernels of the phase-decomposed layer, shared by both ops (cpu/ and cuda/):
//   forward:  out[n, o, s*i + a, s*j + b] = act(bias[o] + sum_{c,t,u} Wf[a,b,o,c,t,u] x[n, c, i+d0[a]+t, j+d0[b]+u])
//             with Wf = fold_weight(weight, g) (or an equivalent form of the device's choosing);
//   backward: (grad_x, grad_weight in weight's layout, dtype acc_type) given the pre-activation gradient.
using PhaseForwardFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                      const UpConvGeometry& g, Act act, double slope, int64_t c_out,
                                      at::ScalarType acc_type);
using PhaseBackwardFn = std::tuple<at::Tensor, at::Tensor> (*)(const at::Tensor& gpre, const at::Tensor& x,
                                                               const at::Tensor& weight, const UpConvGeometry& g,
                                                               bool need_x, bool need_w, at::ScalarType acc_type);

// The registered ops, written once over the device kernels.
at::Tensor phase_conv_op(const char* op, const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, const UpConvGeometry& g,
                         const std::string& activation, double negative_slope, PhaseForwardFn fwd,
                         at::ScalarType acc_type);
std::tuple<at::Tensor, at::Tensor, at::Tensor> phase_conv_backward_op(
    const char* op, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out, bool has_bias, const UpConvGeometry& g, const std::string& activation,
    double negative_slope, std::array<bool, 3> output_mask, PhaseBackwardFn bwd, at::ScalarType acc_type);

// Every user-facing check of upsample_conv2d (raises with the op and argument named).
void check_upsample_conv2d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, int64_t scale,
                                  int64_t padding);

// Folded phase kernels [s, s, C_out, C_in, T, T] from the layer's weight, in
// dtype `acc` (fp32 for half inputs so the sums of taps keep their precision).
at::Tensor fold_weight(const at::Tensor& weight, const UpConvGeometry& g, at::ScalarType acc);
// The transpose of the folding: gradient of the phase kernels -> gradient of the k x k kernel.
at::Tensor unfold_weight_grad(const at::Tensor& grad_folded, const UpConvGeometry& g);

// Gradient of the fused activation computed from its output (see upsample_conv2d.cpp).
at::Tensor activation_backward(const at::Tensor& grad_out, const at::Tensor& out, Act act,
                               double negative_slope);

// The four registered phase-conv ops over a device's kernels: each device file registers
// these instantiated with its own forward / backward functions.
template <PhaseForwardFn Fwd>
at::Tensor upsample_conv2d_impl(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                int64_t scale, int64_t padding, c10::string_view activation, double negative_slope) {
  check_upsample_conv2d_inputs(x, weight, bias, scale, padding);
  return phase_conv_op("upsample_conv2d", x, weight, bias, upconv_geometry(scale, weight.size(2), padding),
                       std::string(activation), negative_slope, Fwd, at::toOpMathType(x.scalar_type()));
}

template <PhaseBackwardFn Bwd>
std::tuple<at::Tensor, at::Tensor, at::Tensor> upsample_conv2d_backward_impl(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, int64_t scale, int64_t padding, c10::string_view activation, double negative_slope,
    std::array<bool, 3> output_mask) {
  check_upsample_conv2d_inputs(x, weight, std::nullopt, scale, padding);
  return phase_conv_backward_op("upsample_conv2d", grad_out, x, weight, out, has_bias,
                                upconv_geometry(scale, weight.size(2), padding), std::string(activation),
                                negative_slope, output_mask, Bwd, at::toOpMathType(x.scalar_type()));
}

template <PhaseForwardFn Fwd>
at::Tensor conv_transpose2d_4s2_impl(const at::Tensor& x, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, c10::string_view activation,
                                     double negative_slope) {
  check_conv_transpose4s2_inputs(x, weight, bias);
  return phase_conv_op("conv_transpose2d_4s2", x, weight, bias, conv_transpose4s2_geometry(),
                       std::string(activation), negative_slope, Fwd, at::toOpMathType(x.scalar_type()));
}

template <PhaseBackwardFn Bwd>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_4s2_backward_impl(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask) {
  check_conv_transpose4s2_inputs(x, weight, std::nullopt);
  return phase_conv_backward_op("conv_transpose2d_4s2", grad_out, x, weight, out, has_bias,
                                conv_transpose4s2_geometry(), std::string(activation), negative_slope,
                                output_mask, Bwd, at::toOpMathType(x.scalar_type()));
}

inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

}  // namespace ganx
