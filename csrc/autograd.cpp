// Autograd kernels of the GAN losses, in C++: their backward is one multiply of the gradient
// the forward already produced, so the Python autograd.Function machinery would cost more
// than the whole computation on small batches (tens of microseconds for 64 logits).
//
// Backward (derivation): loss = red(f(x)) and the kernel saved g = d red(f) / d x (already
// divided by numel for "mean"), so d L / d x = grad_loss * g for a scalar loss and
// grad_loss[i] * g[i] for reduction "none". Grads, stats are outputs that are not differentiable.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace ganx {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

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

at::Tensor scale(const at::Tensor& g_loss, const at::Tensor& saved, int64_t reduction) {
  if (reduction == 0) return g_loss.reshape_symint(saved.sym_sizes()) * saved;
  return saved * g_loss;
}

class DiscriminatorLossFn : public torch::autograd::Function<DiscriminatorLossFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& real, const at::Tensor& fake,
                               double real_target, double fake_target, int64_t reduction, bool need_grad) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ganx::bce_discriminator_loss", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, double, double, int64_t, bool)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, gr, gf, stats] = op.call(real, fake, real_target, fake_target, reduction, need_grad);
    ctx->mark_non_differentiable({gr, gf, stats});
    ctx->save_for_backward({gr, gf});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["need_grad"] = need_grad;
    ctx->saved_data["n_real"] = real.sym_numel();  // symbolic under torch.compile
    return {loss, gr, gf, stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const char* op = "bce_discriminator_loss";
    check_no_double_backward(op);
    check_need_grad(op, ctx->saved_data["need_grad"].toBool());
    const auto saved = ctx->get_saved_variables();
    const int64_t red = ctx->saved_data["reduction"].toInt();
    const at::Tensor& g = grads[0];
    at::Tensor g_real, g_fake;
    if (red == 0) {
      const c10::SymInt n = ctx->saved_data["n_real"].toSymInt();
      g_real = scale(g.narrow_symint(0, 0, n), saved[0], 0);
      g_fake = scale(g.narrow_symint(0, n, g.sym_size(0) - n), saved[1], 0);
    } else {
      g_real = saved[0] * g;
      g_fake = saved[1] * g;
    }
    return {g_real, g_fake, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class GeneratorLossFn : public torch::autograd::Function<GeneratorLossFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& fake, int64_t mode, double target,
                               int64_t reduction, bool need_grad) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ganx::bce_generator_loss", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, double, int64_t, bool)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, g] = op.call(fake, mode, target, reduction, need_grad);
    ctx->mark_non_differentiable({g});
    ctx->save_for_backward({g});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["need_grad"] = need_grad;
    return {loss, g};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const char* op = "bce_generator_loss";
    check_no_double_backward(op);
    check_need_grad(op, ctx->saved_data["need_grad"].toBool());
    const auto saved = ctx->get_saved_variables();
    return {scale(grads[0], saved[0], ctx->saved_data["reduction"].toInt()), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bce_discriminator_loss_autograd(
    const at::Tensor& real, const at::Tensor& fake, double real_target, double fake_target, int64_t reduction,
    bool need_grad) {
  auto out = DiscriminatorLossFn::apply(real, fake, real_target, fake_target, reduction, need_grad);
  return {out[0], out[1], out[2], out[3]};
}

std::tuple<at::Tensor, at::Tensor> bce_generator_loss_autograd(const at::Tensor& fake, int64_t mode, double target,
                                                               int64_t reduction, bool need_grad) {
  auto out = GeneratorLossFn::apply(fake, mode, target, reduction, need_grad);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ganx, Autograd, m) {
  m.impl("bce_discriminator_loss", &bce_discriminator_loss_autograd);
  m.impl("bce_generator_loss", &bce_generator_loss_autograd);
}

}  // namespace ganx
