// Device-independent parts of the fused BCE losses: every user-facing argument check (each
// names the op and the argument) and the preparation of broadcast weights.
#include "bce_loss.h"

#include "device_check.h"

#include <cmath>
#include <limits>

namespace ganx {

Reduction check_reduction(const char* op, int64_t reduction) {
  TORCH_CHECK_VALUE(reduction >= 0 && reduction <= 2, op,
                    ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
  return static_cast<Reduction>(reduction);
}

void check_logits(const char* op, const char* arg, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": ", arg, " must be a tensor");
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", arg,
                   " must be a floating-point tensor, got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu() || t.device().is_cuda(), op, ": ", arg,
              " must be on a CPU or CUDA device, got ", t.device());
}

void check_target_value(const char* op, const char* arg, double target) {
  TORCH_CHECK_VALUE(target >= 0.0 && target <= 1.0, op, ": ", arg,
                    " must be in [0, 1], got ", target);
}

void check_logit_pair(const char* op, const at::Tensor& real, const at::Tensor& fake) {
  check_logits(op, "real", real);
  check_logits(op, "fake", fake);
  check_device(op, "fake", fake, "real", real);
  TORCH_CHECK_TYPE(real.scalar_type() == fake.scalar_type(), op,
                   ": real and fake must have the same dtype, got real ", real.scalar_type(), " and fake ",
                   fake.scalar_type());
}

void check_bce_discriminator_inputs(const at::Tensor& real, const at::Tensor& fake, double real_target,
                                    double fake_target, int64_t reduction) {
  constexpr const char* op = "bce_discriminator_loss";
  check_logit_pair(op, real, fake);
  check_target_value(op, "real_target", real_target);
  check_target_value(op, "fake_target", fake_target);
  check_reduction(op, reduction);
}

GenMode check_bce_generator_inputs(const at::Tensor& fake, int64_t mode, double target, int64_t reduction) {
  constexpr const char* op = "bce_generator_loss";
  check_logits(op, "fake", fake);
  TORCH_CHECK_VALUE(mode == 0 || mode == 1, op,
                    ": mode must be 0 (non_saturating) or 1 (minimax), got ", mode);
  check_target_value(op, "target", target);
  check_reduction(op, reduction);
  return static_cast<GenMode>(mode);
}

LossKind check_critic_kind(const char* op, int64_t kind) {
  TORCH_CHECK_VALUE(kind == 1 || kind == 2, op, ": kind must be 1 (hinge) or 2 (wasserstein), got ", kind,
                    kind == 0 ? " (the BCE losses are bce_discriminator_loss / bce_generator_loss)" : "");
  return static_cast<LossKind>(kind);
}

void check_critic_discriminator_inputs(const at::Tensor& real, const at::Tensor& fake, int64_t kind,
                                       int64_t reduction) {
  constexpr const char* op = "critic_discriminator_loss";
  check_logit_pair(op, real, fake);
  check_critic_kind(op, kind);
  check_reduction(op, reduction);
}

void check_critic_generator_inputs(const at::Tensor& fake, int64_t kind, int64_t reduction) {
  constexpr const char* op = "critic_generator_loss";
  check_logits(op, "fake", fake);
  check_critic_kind(op, kind);
  check_reduction(op, reduction);
}

namespace {

void check_companion(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& input) {
  check_device(op, arg, t, "input", input);
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", arg,
                   " must be a floating-point tensor, got ", t.scalar_type());
}

void check_factor(const char* op, const char* arg, const std::optional<at::Tensor>& f, const at::Tensor& input) {
  if (!f.has_value() || !f->defined()) return;
  check_companion(op, arg, *f, input);
  // Broadcasting must leave the loss with the input's shape (torch refuses the other case too).
  const auto fs = f->sizes(), is = input.sizes();
  bool ok = fs.size() <= is.size();
  for (size_t k = 1; ok && k <= fs.size(); ++k) {
    ok = fs[fs.size() - k] == 1 || fs[fs.size() - k] == is[is.size() - k];
  }
  TORCH_CHECK_VALUE(ok, op, ": ", arg, " of shape ", fs, " must broadcast to the input's shape ", is);
}

// The element-wise losses' input and target: a floating input, a floating target on its device,
// of its shape.
void check_input_target_pair(const char* op, const at::Tensor& input, const at::Tensor& target) {
  check_logits(op, "input", input);
  check_companion(op, "target", target, input);
  TORCH_CHECK_VALUE(target.sizes() == input.sizes(), op, ": target size (", target.sizes(),
                    ") must be the same as input size (", input.sizes(), ")");
}

}  // namespace

void check_bce_with_logits_inputs(const at::Tensor& input, const at::Tensor& target,
                                  const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& pos_weight, int64_t reduction) {
  constexpr const char* op = "bce_with_logits";
  check_input_target_pair(op, input, target);
  check_factor(op, "weight", weight, input);
  check_factor(op, "pos_weight", pos_weight, input);
  check_reduction(op, reduction);
}

void check_bce_probs_inputs(const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight, int64_t reduction) {
  constexpr const char* op = "binary_cross_entropy";
  check_input_target_pair(op, input, target);
  check_factor(op, "weight", weight, input);
  check_reduction(op, reduction);
}

at::Tensor broadcast_factor(const char* op, const char* arg, const std::optional<at::Tensor>& f,
                            const at::Tensor& input) {
  if (!f.has_value() || !f->defined()) return at::Tensor();
  const auto& w = *f;
  // Kernels read factors in the input's dtype; a single value is read once per element at offset 0.
  if (w.numel() == 1) return w.reshape({1}).to(input.scalar_type());
  return w.to(input.scalar_type()).expand(input.sizes()).contiguous();
}

// ------------------------------------------------------------------ the set-up of each op

namespace {

at::Tensor loss_out(Reduction red, at::IntArrayRef sizes, const at::TensorOptions& opts, BceAlloc alloc) {
  return red == Reduction::None ? alloc(sizes, opts) : at::empty({}, opts);
}

// One input with a target tensor (BCE-with-logits, BCE on probabilities).
BceCall tensor_call(const char* op, const at::Tensor& input, const at::Tensor& target,
                    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>* pos_weight,
                    int64_t reduction, bool need_grad, BceAlloc alloc) {
  BceCall c;
  c.red = static_cast<Reduction>(reduction);
  c.need_grad = need_grad;
  c.x0 = input.contiguous();
  c.n0 = c.x0.numel();
  c.t = target.to(c.x0.scalar_type()).contiguous();
  c.w = broadcast_factor(op, "weight", weight, c.x0);
  if (pos_weight != nullptr) c.pw = broadcast_factor(op, "pos_weight", *pos_weight, c.x0);
  c.gs0 = bce_grad_scale(c.red == Reduction::Mean, c.n0);
  const auto opts = c.x0.options();
  c.loss = loss_out(c.red, c.x0.sizes(), opts, alloc);
  c.grad = alloc(need_grad ? c.x0.sizes() : at::IntArrayRef{0}, opts);
  return c;
}

}  // namespace

BceCall bce_discriminator_call(const at::Tensor& real, const at::Tensor& fake, double real_target,
                               double fake_target, int64_t reduction, bool need_grad, BceAlloc alloc) {
  check_bce_discriminator_inputs(real, fake, real_target, fake_target, reduction);
  BceCall c;
  c.red = static_cast<Reduction>(reduction);
  c.need_grad = need_grad;
  c.x0 = real.contiguous();
  c.x1 = fake.contiguous();
  c.n0 = c.x0.numel();
  c.n1 = c.x1.numel();
  c.c0 = bce_target_coefs(real_target);
  c.c1 = bce_target_coefs(fake_target);
  c.gs0 = bce_grad_scale(c.red == Reduction::Mean, c.n0);
  c.gs1 = bce_grad_scale(c.red == Reduction::Mean, c.n1);
  const auto opts = c.x0.options();
  c.loss = loss_out(c.red, {c.n0 + c.n1}, opts, alloc);
  // Both gradients in one buffer (real then fake, flattened): one allocation.
  c.grad = alloc({need_grad ? c.n0 + c.n1 : 0}, opts);
  c.stats = at::empty({4}, opts.dtype(at::kFloat));
  return c;
}

BceCall bce_generator_call(const at::Tensor& fake, int64_t mode, double target, int64_t reduction,
                           bool need_grad, BceAlloc alloc) {
  const GenMode m = check_bce_generator_inputs(fake, mode, target, reduction);
  BceCall c;
  c.red = static_cast<Reduction>(reduction);
  c.need_grad = need_grad;
  c.x0 = fake.contiguous();
  c.n0 = c.x0.numel();
  c.c0 = bce_generator_coefs(m == GenMode::NonSaturating, target);
  c.gs0 = bce_grad_scale(c.red == Reduction::Mean, c.n0);
  const auto opts = c.x0.options();
  c.loss = loss_out(c.red, c.x0.sizes(), opts, alloc);
  c.grad = alloc(need_grad ? c.x0.sizes() : at::IntArrayRef{0}, opts);
  return c;
}

BceCall critic_discriminator_call(const at::Tensor& real, const at::Tensor& fake, int64_t kind, int64_t reduction,
                                  bool need_grad, BceAlloc alloc) {
  check_critic_discriminator_inputs(real, fake, kind, reduction);
  // The BCE set-up with zero-cost targets (checked there, unused), then the critic coefficients.
  BceCall c = bce_discriminator_call(real, fake, 1.0, 0.0, reduction, need_grad, alloc);
  c.kind = static_cast<LossKind>(kind);
  c.k0 = critic_discriminator_coefs(c.kind, true);
  c.k1 = critic_discriminator_coefs(c.kind, false);
  return c;
}

BceCall critic_generator_call(const at::Tensor& fake, int64_t kind, int64_t reduction, bool need_grad,
                              BceAlloc alloc) {
  check_critic_generator_inputs(fake, kind, reduction);
  BceCall c = bce_generator_call(fake, 0, 1.0, reduction, need_grad, alloc);
  c.kind = static_cast<LossKind>(kind);
  c.k0 = c.k1 = critic_generator_coefs();
  return c;
}

BceCall bce_with_logits_call(const at::Tensor& input, const at::Tensor& target,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& pos_weight, int64_t reduction, bool need_grad,
                             BceAlloc alloc) {
  check_bce_with_logits_inputs(input, target, weight, pos_weight, reduction);
  return tensor_call("bce_with_logits", input, target, weight, &pos_weight, reduction, need_grad, alloc);
}

BceCall bce_probs_call(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                       int64_t reduction, bool need_grad, BceAlloc alloc) {
  check_bce_probs_inputs(input, target, weight, reduction);
  return tensor_call("binary_cross_entropy", input, target, weight, nullptr, reduction, need_grad, alloc);
}

void bce_fill_empty(BceCall& c) {
  if (c.red != Reduction::None) c.loss.fill_(c.red == Reduction::Mean ? std::numeric_limits<double>::quiet_NaN() : 0.0);
  if (c.stats.defined()) c.stats.fill_(std::numeric_limits<double>::quiet_NaN());
}

namespace {
BceScaleInPlace scale_fns[static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)] = {};
}  // namespace

void register_bce_scale_in_place(c10::DeviceType type, BceScaleInPlace fn) {
  scale_fns[static_cast<size_t>(type)] = fn;
}

BceScaleInPlace bce_scale_in_place(c10::DeviceType type) { return scale_fns[static_cast<size_t>(type)]; }

}  // namespace ganx
