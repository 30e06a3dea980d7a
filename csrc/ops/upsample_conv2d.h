// Typed callers of ganx::upsample_conv2d, its backward and ganx::activation (schemas and their
// math: csrc/ops.cpp; kernels: csrc/upsample_conv2d.{h,cpp}, registered per device in cpu/ and
// cuda/). See op_handle.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

#include "op_handle.h"

namespace ganx {
namespace ops {

inline at::Tensor upsample_conv2d(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, int64_t scale, int64_t padding,
                                  c10::string_view activation, double negative_slope) {
  static const auto op = typed_op<decltype(upsample_conv2d)>("ganx::upsample_conv2d");
  return op.call(x, weight, bias, scale, padding, activation, negative_slope);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> upsample_conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, int64_t scale, int64_t padding, c10::string_view activation, double negative_slope,
    std::array<bool, 3> output_mask) {
  static const auto op = typed_op<decltype(upsample_conv2d_backward)>("ganx::upsample_conv2d_backward");
  return op.call(grad_out, x, weight, out, has_bias, scale, padding, activation, negative_slope, output_mask);
}

inline at::Tensor activation(const at::Tensor& x, c10::string_view activation, double negative_slope) {
  static const auto op = typed_op<decltype(ops::activation)>("ganx::activation");
  return op.call(x, activation, negative_slope);
}

}  // namespace ops
}  // namespace ganx
