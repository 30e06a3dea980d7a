// conv_transpose2d_4s2: act(conv_transpose2d(x, weight (C_in, C_out, 4, 4), bias, stride 2,
// padding 1)), the classic DCGAN generator layer. It is the upsample-conv's phase-decomposed
// layer with s = 2 and 2x2 phase kernels *selected* (not summed) from the 4x4 kernel, so it runs
// through the same composition (csrc/upsample_conv2d.cpp); this file holds what is its own: the
// checks, the geometry and the op entry points (registered per device in cpu/ and cuda/).
#include "upsample_conv2d.h"

namespace ganx {

// conv_transpose4s2_geometry(): upconv_fold.h

void check_conv_transpose4s2_inputs(const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias) {
  const char* op = "conv_transpose2d_4s2";
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be 4-D (C_in, C_out, 4, 4), got ", weight.dim(), "-D");
  TORCH_CHECK_VALUE(weight.size(2) == 4 && weight.size(3) == 4, op, ": weight must have a 4x4 kernel, got ",
                    weight.size(2), "x", weight.size(3));
  check_phase_conv_common(op, x, weight, bias, /*w_in=*/0, /*w_out=*/1);
  TORCH_CHECK(x.size(2) * 2 < (int64_t(1) << 31) && x.size(3) * 2 < (int64_t(1) << 31), op,
              ": the output size ", x.size(2) * 2, "x", x.size(3) * 2, " is too large");
}

at::Tensor conv_transpose2d_4s2(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                c10::string_view activation, double negative_slope) {
  check_conv_transpose4s2_inputs(x, weight, bias);
  return phase_conv_op("conv_transpose2d_4s2", x, weight, bias, conv_transpose4s2_geometry(), std::string(activation),
                       negative_slope);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_4s2_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask) {
  check_conv_transpose4s2_inputs(x, weight, std::nullopt);
  return phase_conv_backward_op("conv_transpose2d_4s2", grad_out, x, weight, out, has_bias,
                                conv_transpose4s2_geometry(), std::string(activation), negative_slope, output_mask);
}

}  // namespace ganx
