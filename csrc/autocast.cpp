// Autocast kernels of every ganx op, as the dispatcher expects them (torchvision does the same
// in csrc/ops/autocast/): each casts its tensor arguments, turns autocast off for what runs
// below (so that no nested ATen call is autocast a second time, e.g. a fold in bf16) and
// redispatches through the op's typed caller (csrc/ops/).
//
//   upsample_conv2d, conv_transpose2d_4s2 (forward): like conv2d -- on CUDA the floating inputs
//     go to the autocast dtype (fp16 / bf16), float64 is left alone. On the CPU ganx's kernels
//     take float32 / float64 only, so CPU autocast runs them in float32 (lower-precision inputs
//     are cast up) rather than failing.
//   their backward ops: no cast (they follow the dtype of the saved x and weight; grad_out is
//     converted to it inside), autocast off below them.
//   the BCE and critic losses: float32, like torch's binary_cross_entropy_with_logits (float64 kept).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "ops/bce_loss.h"
#include "ops/conv_transpose2d_4s2.h"
#include "ops/upsample_conv2d.h"

namespace ganx {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

template <c10::DeviceType D>
constexpr c10::DispatchKey autocast_key() {
  return D == c10::DeviceType::CUDA ? c10::DispatchKey::Autocast : c10::DispatchKey::AutocastCPU;
}

// The dtype the convolution ops run in under autocast on device D.
template <c10::DeviceType D>
at::ScalarType conv_dtype() {
  return D == c10::DeviceType::CUDA ? at::autocast::get_autocast_dtype(D) : at::kFloat;
}

template <c10::DeviceType D, typename T>
T cast(at::ScalarType to, const T& t) {
  return at::autocast::cached_cast(to, t, D);
}

template <c10::DeviceType D>
Tensor upsample_conv2d_ac(const Tensor& x, const Tensor& w, const OptTensor& b, int64_t scale, int64_t padding,
                          c10::string_view act, double slope) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  const auto dt = conv_dtype<D>();
  return ops::upsample_conv2d(cast<D>(dt, x), cast<D>(dt, w), cast<D>(dt, b), scale, padding, act, slope);
}

template <c10::DeviceType D>
Tensor conv_transpose2d_4s2_ac(const Tensor& x, const Tensor& w, const OptTensor& b, c10::string_view act,
                               double slope) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  const auto dt = conv_dtype<D>();
  return ops::conv_transpose2d_4s2(cast<D>(dt, x), cast<D>(dt, w), cast<D>(dt, b), act, slope);
}

using Grads3 = std::tuple<Tensor, Tensor, Tensor>;

template <c10::DeviceType D>
Grads3 upsample_conv2d_backward_ac(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& out,
                                   bool has_bias, int64_t scale, int64_t padding, c10::string_view act, double slope,
                                   std::array<bool, 3> mask) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  return ops::upsample_conv2d_backward(g, x, w, out, has_bias, scale, padding, act, slope, mask);
}

template <c10::DeviceType D>
Grads3 conv_transpose2d_4s2_backward_ac(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& out,
                                        bool has_bias, c10::string_view act, double slope, std::array<bool, 3> mask) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  return ops::conv_transpose2d_4s2_backward(g, x, w, out, has_bias, act, slope, mask);
}

template <c10::DeviceType D>
Grads3 bce_discriminator_loss_ac(const Tensor& real, const Tensor& fake, double rt, double ft, int64_t red,
                                 bool need_grad) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  return ops::bce_discriminator_loss(cast<D>(at::kFloat, real), cast<D>(at::kFloat, fake), rt, ft, red, need_grad);
}

using Pair = std::tuple<Tensor, Tensor>;

template <c10::DeviceType D>
Pair bce_generator_loss_ac(const Tensor& fake, int64_t mode, double target, int64_t red, bool need_grad) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  return ops::bce_generator_loss(cast<D>(at::kFloat, fake), mode, target, red, need_grad);
}

template <c10::DeviceType D>
Grads3 critic_discriminator_loss_ac(const Tensor& real, const Tensor& fake, int64_t kind, int64_t red,
                                    bool need_grad) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  return ops::critic_discriminator_loss(cast<D>(at::kFloat, real), cast<D>(at::kFloat, fake), kind, red, need_grad);
}

template <c10::DeviceType D>
Pair critic_generator_loss_ac(const Tensor& fake, int64_t kind, int64_t red, bool need_grad) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  return ops::critic_generator_loss(cast<D>(at::kFloat, fake), kind, red, need_grad);
}

template <c10::DeviceType D>
Pair bce_with_logits_ac(const Tensor& input, const Tensor& target, const OptTensor& weight, const OptTensor& pos_weight,
                        int64_t red, bool need_grad) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  return ops::bce_with_logits(cast<D>(at::kFloat, input), cast<D>(at::kFloat, target), cast<D>(at::kFloat, weight),
                              cast<D>(at::kFloat, pos_weight), red, need_grad);
}

template <c10::DeviceType D>
Pair binary_cross_entropy_ac(const Tensor& input, const Tensor& target, const OptTensor& weight, int64_t red,
                             bool need_grad) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<D>());
  return ops::binary_cross_entropy(cast<D>(at::kFloat, input), cast<D>(at::kFloat, target),
                                   cast<D>(at::kFloat, weight), red, need_grad);
}

template <c10::DeviceType D>
void register_all(torch::Library& m) {
  m.impl("upsample_conv2d", &upsample_conv2d_ac<D>);
  m.impl("upsample_conv2d_backward", &upsample_conv2d_backward_ac<D>);
  m.impl("conv_transpose2d_4s2", &conv_transpose2d_4s2_ac<D>);
  m.impl("conv_transpose2d_4s2_backward", &conv_transpose2d_4s2_backward_ac<D>);
  m.impl("bce_discriminator_loss", &bce_discriminator_loss_ac<D>);
  m.impl("bce_generator_loss", &bce_generator_loss_ac<D>);
  m.impl("critic_discriminator_loss", &critic_discriminator_loss_ac<D>);
  m.impl("critic_generator_loss", &critic_generator_loss_ac<D>);
  m.impl("bce_with_logits", &bce_with_logits_ac<D>);
  m.impl("binary_cross_entropy", &binary_cross_entropy_ac<D>);
}

}  // namespace

TORCH_LIBRARY_IMPL(ganx, Autocast, m) { register_all<c10::DeviceType::CUDA>(m); }
TORCH_LIBRARY_IMPL(ganx, AutocastCPU, m) { register_all<c10::DeviceType::CPU>(m); }

}  // namespace ganx
