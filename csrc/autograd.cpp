// Autograd kernels in C++ of the GAN losses (BCE and critic) and of the two phase-conv ops (upsample_conv2d,
// conv_transpose2d_4s2): the Python autograd.Function machinery would cost more than the whole
// computation on small batches (tens of microseconds for 64 logits), and on a GPU the host time
// of every layer is paid on top of its kernels (benchmarks/bench_host_overhead.py). Every op
// runs below autograd through its typed caller (csrc/ops/, ganx::ops::<op>); docs/design.md
// section 3 says where each op's autograd lives and why.
//
// Phase-conv backward: the backward op (ganx::*_backward, csrc/upsample_conv2d.cpp) computes
// every gradient from grad_out, x, weight and the tensor the activation's derivative reads (the
// table's ref column, csrc/activation.h): the output for relu / leaky_relu / tanh (saved only
// when an activation is fused), the pre-activation for silu / gelu. For the latter the forward
// runs the op with no activation (z = conv + bias, the bias added by the fused epilogue or the
// vendor), then y = act(z) by the table's kernels (ganx::activation), and saves z: the
// convolution runs once, at the cost of one elementwise pass over z.
//
// Backward (derivation): loss = red(f(x)) and the kernel saved g = d red(f) / d x (already
// divided by numel for "mean"), so d L / d x = grad_loss * g for a scalar loss and
// grad_loss[i] * g[i] for reduction "none" (and no multiply at all when a scalar grad_loss is
// exactly 1 on the CPU). Grads, stats are outputs that are not differentiable. The
// discriminator's saved g is one flat buffer (real then fake); backward hands out views of it,
// or of a copy when the saved buffer must outlive this backward (see owned_or_copy).
#include <ATen/ATen.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

#include "activation.h"
#include "bce_loss.h"
#include "ops/bce_loss.h"
#include "ops/conv_transpose2d_4s2.h"
#include "ops/upsample_conv2d.h"

namespace ganx {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using c10::IValue;

void check_no_double_backward(const char* op) {
  // Grad mode is on inside a backward only under create_graph=True; the saved gradient is a
  // constant, so a graph built on it would give silently wrong higher-order gradients.
  TORCH_CHECK(!at::GradMode::is_enabled(), op,
              ": double backward (create_graph=True) is not supported; use the reference "
              "implementation (impl='reference') for higher-order gradients");
}

void check_need_grad(const char* op, bool need_grad) {
  TORCH_CHECK(need_grad, op, ": backward reached an op called with need_grad=False; call it through "
              "ganx.functional so the gradient is produced in the forward pass");
}

// True when g_loss is a plain CPU scalar equal to 1 (loss.backward() and autograd.grad(loss)
// with no grad_outputs): the saved gradient is then the answer as it is, and multiplying it
// would cost a pass over it and a fresh allocation. Never under tracing (fake or functional
// tensors, vmap), and never on CUDA, where reading the value would synchronise.
bool is_unit_cpu_scalar(const at::Tensor& g_loss) {
  if (!g_loss.defined() || g_loss.dim() != 0 || !g_loss.device().is_cpu() || at::isTensorSubclassLike(g_loss) ||
      g_loss.is_conj() || g_loss.is_neg()) {
    return false;
  }
  switch (g_loss.scalar_type()) {
    case at::kFloat: return *g_loss.const_data_ptr<float>() == 1.0f;
    case at::kDouble: return *g_loss.const_data_ptr<double>() == 1.0;
    case at::kHalf: return static_cast<float>(*g_loss.const_data_ptr<at::Half>()) == 1.0f;
    case at::kBFloat16: return static_cast<float>(*g_loss.const_data_ptr<at::BFloat16>()) == 1.0f;
    default: return false;
  }
}

// True when saved may be scaled in place by the device's kernel (bce_scale_in_place): a GPU
// tensor, a one-element incoming gradient of its dtype on its device, plain tensors (not traced),
// a graph that is freed after this backward (no retain_graph) and no view sharing saved's
// storage, so nothing else reads saved.
bool scale_in_place_ok(const at::Tensor& g_loss, const at::Tensor& saved) {
  return g_loss.defined() && g_loss.numel() == 1 && g_loss.device() == saved.device() &&
         g_loss.scalar_type() == saved.scalar_type() && !at::isTensorSubclassLike(g_loss) &&
         !at::isTensorSubclassLike(saved) && saved.is_contiguous() && !g_loss.is_conj() && !g_loss.is_neg() &&
         bce_scale_in_place(saved.device().type()) != nullptr &&
         !torch::autograd::get_current_graph_task_keep_graph() && saved.storage().use_count() == 1;
}

// The saved gradient itself may become the caller's gradient (the g_loss = 1 shortcut) only when
// nothing reads the saved buffer after this backward: the graph is freed when it ends (no
// retain_graph; get_current_graph_task_keep_graph() is also true outside a graph task, so compiled
// autograd copies) and no other tensor (a view) shares its storage: the saved variable is the
// op's grad output itself (a non-differentiable output is saved as is), one TensorImpl. A caller
// of the raw op who kept that output holds the same TensorImpl, which this cannot tell from
// autograd's own handles (ops.cpp documents that output as the buffer backward hands out).
// Otherwise the caller gets a copy it owns: with retain_graph=True a handed-out buffer would be zeroed or
// clipped in place by the caller (x.grad.zero_(), clip_grad_norm_) and the next backward would
// refuse the modified saved tensor, or worse read it.
at::Tensor owned_or_copy(const at::Tensor& saved) {
  if (!torch::autograd::get_current_graph_task_keep_graph() && saved.storage().use_count() == 1) return saved;
  return saved.clone();
}

// d L / d x from the saved d loss / d x (a fresh tensor, or the saved one when owned_or_copy allows).
// On a GPU the host cannot see g_loss without a sync, so where scale_in_place_ok holds a kernel
// scales saved in place, reading g_loss on the device and doing nothing when it is 1: forward +
// backward then move the compulsory bytes (the logits read once, the gradient written once)
// instead of reading and writing the gradient again.
at::Tensor scale(const at::Tensor& g_loss, const at::Tensor& saved, int64_t reduction) {
  if (reduction == 0) return g_loss.reshape_symint(saved.sym_sizes()) * saved;
  if (is_unit_cpu_scalar(g_loss)) return owned_or_copy(saved);
  if (scale_in_place_ok(g_loss, saved)) {
    bce_scale_in_place(saved.device().type())(saved, g_loss.reshape({}));
    return saved;
  }
  return saved * g_loss;
}

// What the discriminator losses' Functions share: the forward's bookkeeping around the op's
// outputs, and the backward (the saved flat gradient scaled, then cut into real's and fake's).
// n_args: the op's argument count (the backward returns one entry each).
void save_discriminator(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake, const at::Tensor& grad,
                        const at::Tensor& stats, int64_t reduction, bool need_grad) {
  // Only the loss is differentiable; without this autograd would fill zero tensors for the
  // other outputs' gradients on every backward.
  ctx->set_materialize_grads(false);
  ctx->mark_non_differentiable({grad, stats});
  ctx->save_for_backward({grad});
  ctx->saved_data["reduction"] = reduction;
  ctx->saved_data["need_grad"] = need_grad;
  ctx->saved_data["real_shape"] = real.sym_sizes();  // symbolic under torch.compile
  ctx->saved_data["fake_shape"] = fake.sym_sizes();
}

variable_list discriminator_backward(AutogradContext* ctx, const variable_list& grads, const char* op,
                                     size_t n_args) {
  variable_list out(n_args);
  const at::Tensor& g = grads[0];
  if (!g.defined()) return out;
  check_no_double_backward(op);
  check_need_grad(op, ctx->saved_data["need_grad"].toBool());
  const at::Tensor saved = ctx->get_saved_variables()[0];  // d loss / d (real, fake), flattened
  const int64_t red = ctx->saved_data["reduction"].toInt();
  // reduction none: g is flat like the loss and like saved, one multiply for both inputs
  const at::Tensor full = red == 0 ? g * saved : scale(g, saved, red);
  const IValue& rs = ctx->saved_data["real_shape"];
  const IValue& fs = ctx->saved_data["fake_shape"];
  if (rs.isIntList() && fs.isIntList() && !at::isTensorSubclassLike(full)) {
    // Concrete shapes, plain tensor (eager): one view op per input instead of narrow + view.
    const auto real_shape = rs.toDimVector(), fake_shape = fs.toDimVector();
    const int64_t n_real = c10::multiply_integers(real_shape);
    out[0] = full.as_strided(real_shape, c10::contiguous_strides(real_shape), full.storage_offset());
    out[1] = full.as_strided(fake_shape, c10::contiguous_strides(fake_shape), full.storage_offset() + n_real);
    return out;
  }
  const auto real_shape = rs.toSymIntVector(), fake_shape = fs.toSymIntVector();
  const c10::SymInt n_real = c10::multiply_integers(real_shape);
  const c10::SymInt n_fake = c10::multiply_integers(fake_shape);
  out[0] = full.narrow_symint(0, 0, n_real).view_symint(real_shape);
  out[1] = full.narrow_symint(0, n_real, n_fake).view_symint(fake_shape);
  return out;
}

// The generators' backward: the saved gradient scaled.
variable_list generator_backward(AutogradContext* ctx, const variable_list& grads, const char* op, size_t n_args) {
  check_no_double_backward(op);
  check_need_grad(op, ctx->saved_data["need_grad"].toBool());
  variable_list out(n_args);
  if (!grads[0].defined()) return out;
  const auto saved = ctx->get_saved_variables();
  out[0] = scale(grads[0], saved[0], ctx->saved_data["reduction"].toInt());
  return out;
}

void save_generator(AutogradContext* ctx, const at::Tensor& g, int64_t reduction, bool need_grad) {
  ctx->set_materialize_grads(false);
  ctx->mark_non_differentiable({g});
  ctx->save_for_backward({g});
  ctx->saved_data["reduction"] = reduction;
  ctx->saved_data["need_grad"] = need_grad;
}

using DiscOut = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using GenOut = std::tuple<at::Tensor, at::Tensor>;

// The losses' Functions' forward: call() runs the op below autograd (through its typed caller,
// csrc/ops/bce_loss.h), then the bookkeeping of save_discriminator / save_generator.
template <typename Call>
variable_list discriminator_forward(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake,
                                    int64_t reduction, bool need_grad, const Call& call) {
  at::AutoDispatchBelowADInplaceOrView guard;
  auto [loss, grad, stats] = call();
  save_discriminator(ctx, real, fake, grad, stats, reduction, need_grad);
  return {loss, grad, stats};
}

template <typename Call>
variable_list generator_forward(AutogradContext* ctx, int64_t reduction, bool need_grad, const Call& call) {
  at::AutoDispatchBelowADInplaceOrView guard;
  auto [loss, g] = call();
  save_generator(ctx, g, reduction, need_grad);
  return {loss, g};
}

class DiscriminatorLossFn : public torch::autograd::Function<DiscriminatorLossFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake,
                               double real_target, double fake_target, int64_t reduction, bool need_grad) {
    return discriminator_forward(ctx, real, fake, reduction, need_grad, [&] {
      return ops::bce_discriminator_loss(real, fake, real_target, fake_target, reduction, need_grad);
    });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return discriminator_backward(ctx, grads, "bce_discriminator_loss", 6);
  }
};

class CriticDiscriminatorLossFn : public torch::autograd::Function<CriticDiscriminatorLossFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake, int64_t kind,
                               int64_t reduction, bool need_grad) {
    return discriminator_forward(ctx, real, fake, reduction, need_grad, [&] {
      return ops::critic_discriminator_loss(real, fake, kind, reduction, need_grad);
    });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return discriminator_backward(ctx, grads, "critic_discriminator_loss", 5);
  }
};

class GeneratorLossFn : public torch::autograd::Function<GeneratorLossFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& fake, int64_t mode, double target,
                               int64_t reduction, bool need_grad) {
    return generator_forward(ctx, reduction, need_grad,
                             [&] { return ops::bce_generator_loss(fake, mode, target, reduction, need_grad); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return generator_backward(ctx, grads, "bce_generator_loss", 5);
  }
};

class CriticGeneratorLossFn : public torch::autograd::Function<CriticGeneratorLossFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& fake, int64_t kind, int64_t reduction,
                               bool need_grad) {
    return generator_forward(ctx, reduction, need_grad,
                             [&] { return ops::critic_generator_loss(fake, kind, reduction, need_grad); });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return generator_backward(ctx, grads, "critic_generator_loss", 4);
  }
};

DiscOut bce_discriminator_loss_autograd(const at::Tensor& real, const at::Tensor& fake, double real_target,
                                        double fake_target, int64_t reduction, bool need_grad) {
  auto out = DiscriminatorLossFn::apply(real, fake, real_target, fake_target, reduction, need_grad);
  return {out[0], out[1], out[2]};
}

GenOut bce_generator_loss_autograd(const at::Tensor& fake, int64_t mode, double target, int64_t reduction,
                                   bool need_grad) {
  auto out = GeneratorLossFn::apply(fake, mode, target, reduction, need_grad);
  return {out[0], out[1]};
}

DiscOut critic_discriminator_loss_autograd(const at::Tensor& real, const at::Tensor& fake, int64_t kind,
                                           int64_t reduction, bool need_grad) {
  auto out = CriticDiscriminatorLossFn::apply(real, fake, kind, reduction, need_grad);
  return {out[0], out[1], out[2]};
}

GenOut critic_generator_loss_autograd(const at::Tensor& fake, int64_t kind, int64_t reduction, bool need_grad) {
  auto out = CriticGeneratorLossFn::apply(fake, kind, reduction, need_grad);
  return {out[0], out[1]};
}

// ---------------------------------------------------------------- phase-conv ops
using OptTensor = std::optional<at::Tensor>;
using Grads3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// A forward-mode tangent on an argument: this C++ kernel would drop it (a custom C++ Function has
// no jvp, and the no-grad path never sees it), so it is an error naming the way that carries it:
// the Python wrappers route such calls through an autograd.Function with the jvp rule.
void check_no_tangent(const char* op, const at::Tensor& x, const at::Tensor& w, const OptTensor& b) {
  const bool tangent = x._fw_grad(/*level=*/0).defined() || w._fw_grad(/*level=*/0).defined() ||
                       (b.has_value() && b->defined() && b->_fw_grad(/*level=*/0).defined());
  TORCH_CHECK(!tangent, op, ": forward-mode AD (a tangent on an argument) through torch.ops.ganx.", op,
              " is not supported; call ganx.functional.", op, ", which carries the tangent");
}

bool any_requires_grad(const at::Tensor& x, const at::Tensor& w, const OptTensor& b) {
  return at::GradMode::is_enabled() &&
         (x.requires_grad() || w.requires_grad() || (b.has_value() && b->defined() && b->requires_grad()));
}

void check_no_phase_conv_double_backward(const char* op, const at::Tensor& g, const at::Tensor& x,
                                         const at::Tensor& w) {
  // Under create_graph=True a graph built on these gradients would miss their own derivatives.
  TORCH_CHECK(!(at::GradMode::is_enabled() && (g.requires_grad() || x.requires_grad() || w.requires_grad())), op,
              ": double backward (create_graph=True) is not supported");
}

// True for an activation of the table whose backward reads the pre-activation (ActRef::Input);
// false for the others and for a name not in the table (info == nullptr: the op itself rejects
// it, naming the op). info: find_activation of the call's name, looked up once per forward.
bool reads_pre_activation(const ActivationInfo* info) { return info != nullptr && info->ref == ActRef::Input; }

// The forward saves x, weight, `ref` (what the activation's derivative reads: the output, or the
// pre-activation for ActRef::Input activations; nothing without an activation) and the op's
// scalar arguments; the backward runs the backward op below autograd for the inputs that need a
// gradient.
void save_phase_conv(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                     const at::Tensor& ref, const ActivationInfo* info, c10::string_view activation, double slope) {
  const bool fused_act = info == nullptr || info->act != Act::None;
  ctx->save_for_backward({x, w, fused_act ? ref : at::Tensor()});
  ctx->saved_data["has_bias"] = b.has_value() && b->defined();
  ctx->saved_data["activation"] = std::string(activation);
  ctx->saved_data["slope"] = slope;
}

struct PhaseConvSaved {
  at::Tensor x, w, out;
  bool has_bias;
  std::string activation;
  double slope;
  std::array<bool, 3> mask;
};

PhaseConvSaved load_phase_conv(AutogradContext* ctx, const char* op, const at::Tensor& g) {
  auto v = ctx->get_saved_variables();
  PhaseConvSaved s{v[0], v[1], v[2], ctx->saved_data["has_bias"].toBool(),
                   ctx->saved_data["activation"].toStringRef(), ctx->saved_data["slope"].toDouble(), {}};
  check_no_phase_conv_double_backward(op, g, s.x, s.w);
  s.mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), s.has_bias && ctx->needs_input_grad(2)};
  // With no activation the backward op never reads `out`; grad_out stands in for it (an
  // empty tensor would be one more op call per backward).
  if (!s.out.defined()) s.out = g;
  return s;
}

variable_list phase_conv_grads(const Grads3& r, const std::array<bool, 3>& mask, size_t n_args) {
  variable_list out(n_args);
  if (mask[0]) out[0] = std::get<0>(r);
  if (mask[1]) out[1] = std::get<1>(r);
  if (mask[2]) out[2] = std::get<2>(r);
  return out;
}

// The forward of both phase-conv Functions: conv(act) runs the op below autograd with activation
// act (through its typed caller). An activation whose backward reads the pre-activation (the
// table's ActRef::Input) runs as the op with "none" (z = conv + bias), then the table's kernels on z
// (ganx::activation), and z is saved; any other, fused in the op, and its output is saved.
template <typename Conv>
at::Tensor phase_conv_forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                              c10::string_view activation, double slope, const Conv& conv) {
  const ActivationInfo* info = find_activation(activation);
  at::Tensor out, pre;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    if (reads_pre_activation(info)) {
      pre = conv("none");
      out = ops::activation(pre, activation, slope);
    } else {
      out = conv(activation);
    }
  }
  save_phase_conv(ctx, x, w, b, pre.defined() ? pre : out, info, activation, slope);
  return out;
}

class UpsampleConv2dFn : public torch::autograd::Function<UpsampleConv2dFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                            int64_t scale, int64_t padding, c10::string_view activation, double slope) {
    at::Tensor out = phase_conv_forward(ctx, x, w, b, activation, slope, [&](c10::string_view act) {
      return ops::upsample_conv2d(x, w, b, scale, padding, act, slope);
    });
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["padding"] = padding;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& g = grads[0];
    auto s = load_phase_conv(ctx, "upsample_conv2d", g);
    at::AutoDispatchBelowADInplaceOrView guard;
    const auto r = ops::upsample_conv2d_backward(g, s.x, s.w, s.out, s.has_bias, ctx->saved_data["scale"].toInt(),
                                                 ctx->saved_data["padding"].toInt(), s.activation, s.slope, s.mask);
    return phase_conv_grads(r, s.mask, 7);
  }
};

at::Tensor upsample_conv2d_autograd(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, int64_t scale,
                                    int64_t padding, c10::string_view activation, double slope) {
  check_no_tangent("upsample_conv2d", x, w, b);
  if (!any_requires_grad(x, w, b)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops::upsample_conv2d(x, w, b, scale, padding, activation, slope);
  }
  return UpsampleConv2dFn::apply(x, w, b, scale, padding, activation, slope);
}

class ConvTranspose2d4s2Fn : public torch::autograd::Function<ConvTranspose2d4s2Fn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                            c10::string_view activation, double slope) {
    return phase_conv_forward(ctx, x, w, b, activation, slope, [&](c10::string_view act) {
      return ops::conv_transpose2d_4s2(x, w, b, act, slope);
    });
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& g = grads[0];
    auto s = load_phase_conv(ctx, "conv_transpose2d_4s2", g);
    at::AutoDispatchBelowADInplaceOrView guard;
    const auto r =
        ops::conv_transpose2d_4s2_backward(g, s.x, s.w, s.out, s.has_bias, s.activation, s.slope, s.mask);
    return phase_conv_grads(r, s.mask, 5);
  }
};

at::Tensor conv_transpose2d_4s2_autograd(const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                                         c10::string_view activation, double slope) {
  check_no_tangent("conv_transpose2d_4s2", x, w, b);
  if (!any_requires_grad(x, w, b)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return ops::conv_transpose2d_4s2(x, w, b, activation, slope);
  }
  return ConvTranspose2d4s2Fn::apply(x, w, b, activation, slope);
}

}  // namespace

TORCH_LIBRARY_IMPL(ganx, Autograd, m) {
  m.impl("bce_discriminator_loss", &bce_discriminator_loss_autograd);
  m.impl("bce_generator_loss", &bce_generator_loss_autograd);
  m.impl("critic_discriminator_loss", &critic_discriminator_loss_autograd);
  m.impl("critic_generator_loss", &critic_generator_loss_autograd);
  m.impl("upsample_conv2d", &upsample_conv2d_autograd);
  m.impl("conv_transpose2d_4s2", &conv_transpose2d_4s2_autograd);
}

}  // namespace ganx
