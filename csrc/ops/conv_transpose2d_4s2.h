// Typed callers of ganx::conv_transpose2d_4s2 and its backward (schemas and their math:
// csrc/ops.cpp; kernels: csrc/conv_transpose2d_4s2.cpp, registered per device in cpu/ and cuda/).
// See op_handle.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <tuple>

#include "op_handle.h"

namespace ganx {
namespace ops {

inline at::Tensor conv_transpose2d_4s2(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, c10::string_view activation,
                                       double negative_slope) {
  static const auto op = typed_op<decltype(conv_transpose2d_4s2)>("ganx::conv_transpose2d_4s2");
  return op.call(x, weight, bias, activation, negative_slope);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_4s2_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask) {
  static const auto op = typed_op<decltype(conv_transpose2d_4s2_backward)>("ganx::conv_transpose2d_4s2_backward");
  return op.call(grad_out, x, weight, out, has_bias, activation, negative_slope, output_mask);
}

}  // namespace ops
}  // namespace ganx
