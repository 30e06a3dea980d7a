// Typed callers of the loss ops: the BCE and critic GAN losses and the element-wise BCE losses
// (schemas and their math: csrc/ops.cpp; checks and set-up: csrc/bce_loss.{h,cpp}; kernels:
// cpu/bce_loss.cpp, cuda/bce_loss.cu). See op_handle.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "op_handle.h"

namespace ganx {
namespace ops {

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_discriminator_loss(const at::Tensor& real,
                                                                             const at::Tensor& fake,
                                                                             double real_target, double fake_target,
                                                                             int64_t reduction, bool need_grad) {
  static const auto op = typed_op<decltype(bce_discriminator_loss)>("ganx::bce_discriminator_loss");
  return op.call(real, fake, real_target, fake_target, reduction, need_grad);
}

inline std::tuple<at::Tensor, at::Tensor> bce_generator_loss(const at::Tensor& fake, int64_t mode, double target,
                                                             int64_t reduction, bool need_grad) {
  static const auto op = typed_op<decltype(bce_generator_loss)>("ganx::bce_generator_loss");
  return op.call(fake, mode, target, reduction, need_grad);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> critic_discriminator_loss(const at::Tensor& real,
                                                                                const at::Tensor& fake, int64_t kind,
                                                                                int64_t reduction, bool need_grad) {
  static const auto op = typed_op<decltype(critic_discriminator_loss)>("ganx::critic_discriminator_loss");
  return op.call(real, fake, kind, reduction, need_grad);
}

inline std::tuple<at::Tensor, at::Tensor> critic_generator_loss(const at::Tensor& fake, int64_t kind,
                                                                int64_t reduction, bool need_grad) {
  static const auto op = typed_op<decltype(critic_generator_loss)>("ganx::critic_generator_loss");
  return op.call(fake, kind, reduction, need_grad);
}

inline std::tuple<at::Tensor, at::Tensor> bce_with_logits(const at::Tensor& input, const at::Tensor& target,
                                                          const std::optional<at::Tensor>& weight,
                                                          const std::optional<at::Tensor>& pos_weight,
                                                          int64_t reduction, bool need_grad) {
  static const auto op = typed_op<decltype(bce_with_logits)>("ganx::bce_with_logits");
  return op.call(input, target, weight, pos_weight, reduction, need_grad);
}

inline std::tuple<at::Tensor, at::Tensor> binary_cross_entropy(const at::Tensor& input, const at::Tensor& target,
                                                               const std::optional<at::Tensor>& weight,
                                                               int64_t reduction, bool need_grad) {
  static const auto op = typed_op<decltype(binary_cross_entropy)>("ganx::binary_cross_entropy");
  return op.call(input, target, weight, reduction, need_grad);
}

}  // namespace ops
}  // namespace ganx
