// CUDA ops of the fused BCE losses: the set-up shared with the CPU (bce_loss.cpp: checks,
// contiguous inputs, outputs, coefficients), then dtype dispatch, device guard, current stream and
// the reduction workspace around the launchers of csrc/cuda/kernels/bce_loss.cuh (the kernels,
// the grid rule and the reduction are described there).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "bce_loss.h"
#include "cuda/kernels/bce_loss.cuh"

namespace ganx {
namespace {

namespace kb = cuda_bce;

at::Tensor device_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) { return at::empty(sizes, opts); }

template <typename scalar_t>
scalar_t* out_ptr(at::Tensor& t, bool use) {
  return use ? t.mutable_data_ptr<scalar_t>() : nullptr;
}

// Runs one BceCall on the current stream: the workspace of a multi-block reduction (partials and
// a zeroed ticket counter; a memset, not a kernel) and the one kernel launch.
template <typename scalar_t, typename Elem>
void run(BceCall& c, const Elem& elem) {
  using A = typename kb::Acc<scalar_t>::type;
  const bool none = c.red == Reduction::None;
  scalar_t* lp = out_ptr<scalar_t>(c.loss, none);
  scalar_t* gp = out_ptr<scalar_t>(c.grad, c.need_grad);
  kb::Segment<scalar_t> s0{c.x0.const_data_ptr<scalar_t>(), c.n0, lp, gp, false};
  kb::Segment<scalar_t> s1{c.x1.defined() ? c.x1.const_data_ptr<scalar_t>() : nullptr, c.n1,
                           lp ? lp + c.n0 : nullptr, gp ? gp + c.n0 : nullptr, false};
  const bool reduce = !none || c.stats.defined();
  kb::Final<scalar_t, A> fin{none ? nullptr : c.loss.mutable_data_ptr<scalar_t>(),
                             c.stats.defined() ? c.stats.mutable_data_ptr<float>() : nullptr,
                             c.x1.defined() ? 2 : 1, c.red == Reduction::Mean, c.n0, c.n1};
  const int blocks = kb::grid_blocks<scalar_t>(c.n0, c.n1);
  const c10::cuda::CUDAGuard guard(c.x0.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor ws;
  if (reduce && blocks > 1) {
    const auto bytes = static_cast<int64_t>(kb::workspace_bytes<scalar_t>(blocks));
    ws = at::empty({bytes}, c.x0.options().dtype(at::kByte));
    C10_CUDA_CHECK(cudaMemsetAsync(ws.mutable_data_ptr<uint8_t>() + bytes - 16, 0, 16, stream));
  }
  kb::launch_bce<scalar_t>(s0, s1, elem, c.gs0, c.gs1, fin, blocks, ws.defined() ? ws.mutable_data_ptr() : nullptr,
                           stream);
}

// Factor pointer and element stride (0: one value for all) for the kernels.
template <typename scalar_t>
std::pair<const scalar_t*, int64_t> factor_ptr(const at::Tensor& w) {
  if (!w.defined()) return {nullptr, 0};
  return {w.const_data_ptr<scalar_t>(), w.numel() == 1 ? 0 : 1};
}

// Dispatches c's dtype (the four the kernels are instantiated for); f(scalar_t tag) runs the kernel.
template <typename F>
void dispatch(const BceCall& c, const char* name, const F& f) {
  switch (c.x0.scalar_type()) {
    case at::kFloat: return f(float{});
    case at::kDouble: return f(double{});
    case at::kHalf: return f(c10::Half{});
    case at::kBFloat16: return f(c10::BFloat16{});
    default: TORCH_CHECK_TYPE(false, name, ": dtype ", c.x0.scalar_type(), " is not supported on CUDA");
  }
}

// The scalar-coefficient losses (discriminator: segments 0 and 1; generator: 0 only): BCE or
// critic (c.kind), the same kernel with another functor.
void run_const(BceCall& c, const char* name) {
  dispatch(c, name, [&](auto tag) {
    using scalar_t = decltype(tag);
    using A = typename kb::Acc<scalar_t>::type;
    const bool two = c.x1.defined();
    if (c.kind == LossKind::Bce) {
      run<scalar_t>(c, kb::logit_const<A>(c.c0, two ? c.c1 : c.c0));
    } else {
      run<scalar_t>(c, kb::critic_const<A>(c.k0, two ? c.k1 : c.k0));
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> discriminator_cuda(BceCall& c, const char* name) {
  if (c.n0 + c.n1 == 0) {
    bce_fill_empty(c);
  } else {
    run_const(c, name);
  }
  return {c.loss, c.grad, c.stats};
}

std::tuple<at::Tensor, at::Tensor> generator_cuda(BceCall& c, const char* name) {
  if (c.n0 == 0) {
    bce_fill_empty(c);
  } else {
    run_const(c, name);
  }
  return {c.loss, c.grad};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_discriminator_loss_cuda(
    const at::Tensor& real, const at::Tensor& fake, double real_target, double fake_target,
    int64_t reduction, bool need_grad) {
  auto c = bce_discriminator_call(real, fake, real_target, fake_target, reduction, need_grad, &device_empty);
  return discriminator_cuda(c, "bce_discriminator_loss");
}

std::tuple<at::Tensor, at::Tensor> bce_generator_loss_cuda(const at::Tensor& fake, int64_t mode, double target,
                                                           int64_t reduction, bool need_grad) {
  auto c = bce_generator_call(fake, mode, target, reduction, need_grad, &device_empty);
  return generator_cuda(c, "bce_generator_loss");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> critic_discriminator_loss_cuda(const at::Tensor& real,
                                                                              const at::Tensor& fake, int64_t kind,
                                                                              int64_t reduction, bool need_grad) {
  auto c = critic_discriminator_call(real, fake, kind, reduction, need_grad, &device_empty);
  return discriminator_cuda(c, "critic_discriminator_loss");
}

std::tuple<at::Tensor, at::Tensor> critic_generator_loss_cuda(const at::Tensor& fake, int64_t kind, int64_t reduction,
                                                              bool need_grad) {
  auto c = critic_generator_call(fake, kind, reduction, need_grad, &device_empty);
  return generator_cuda(c, "critic_generator_loss");
}

std::tuple<at::Tensor, at::Tensor> bce_with_logits_cuda(const at::Tensor& input, const at::Tensor& target,
                                                        const std::optional<at::Tensor>& weight,
                                                        const std::optional<at::Tensor>& pos_weight,
                                                        int64_t reduction, bool need_grad) {
  auto c = bce_with_logits_call(input, target, weight, pos_weight, reduction, need_grad, &device_empty);
  if (c.n0 == 0) {
    bce_fill_empty(c);
    return {c.loss, c.grad};
  }
  dispatch(c, "bce_with_logits", [&](auto tag) {
    using scalar_t = decltype(tag);
    const auto wf = factor_ptr<scalar_t>(c.w), pwf = factor_ptr<scalar_t>(c.pw);
    run<scalar_t>(c, kb::LogitTensor<scalar_t, typename kb::Acc<scalar_t>::type>{
                         c.t.const_data_ptr<scalar_t>(), wf.first, pwf.first, wf.second, pwf.second});
  });
  return {c.loss, c.grad};
}

std::tuple<at::Tensor, at::Tensor> bce_probs_cuda(const at::Tensor& input, const at::Tensor& target,
                                                  const std::optional<at::Tensor>& weight, int64_t reduction,
                                                  bool need_grad) {
  auto c = bce_probs_call(input, target, weight, reduction, need_grad, &device_empty);
  if (c.n0 == 0) {
    bce_fill_empty(c);
    return {c.loss, c.grad};
  }
  dispatch(c, "binary_cross_entropy", [&](auto tag) {
    using scalar_t = decltype(tag);
    const auto wf = factor_ptr<scalar_t>(c.w);
    run<scalar_t>(c, kb::ProbTensor<scalar_t, typename kb::Acc<scalar_t>::type>{c.t.const_data_ptr<scalar_t>(),
                                                                              wf.first, wf.second});
  });
  return {c.loss, c.grad};
}

void bce_scale_in_place_cuda(const at::Tensor& grad, const at::Tensor& scale) {
  const c10::cuda::CUDAGuard guard(grad.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  switch (grad.scalar_type()) {
    case at::kFloat:
      return kb::launch_bce_scale<float>(grad.mutable_data_ptr<float>(), grad.numel(), scale.const_data_ptr<float>(),
                                         stream);
    case at::kDouble:
      return kb::launch_bce_scale<double>(grad.mutable_data_ptr<double>(), grad.numel(),
                                          scale.const_data_ptr<double>(), stream);
    case at::kHalf:
      return kb::launch_bce_scale<c10::Half>(grad.mutable_data_ptr<c10::Half>(), grad.numel(),
                                             scale.const_data_ptr<c10::Half>(), stream);
    case at::kBFloat16:
      return kb::launch_bce_scale<c10::BFloat16>(grad.mutable_data_ptr<c10::BFloat16>(), grad.numel(),
                                                 scale.const_data_ptr<c10::BFloat16>(), stream);
    default: TORCH_CHECK_TYPE(false, "bce backward: dtype ", grad.scalar_type(), " is not supported on CUDA");
  }
}

const bool registered = [] {
  register_bce_scale_in_place(c10::DeviceType::CUDA, &bce_scale_in_place_cuda);
  return true;
}();

}  // namespace

TORCH_LIBRARY_IMPL(ganx, CUDA, m) {
  m.impl("bce_discriminator_loss", &bce_discriminator_loss_cuda);
  m.impl("bce_generator_loss", &bce_generator_loss_cuda);
  m.impl("critic_discriminator_loss", &critic_discriminator_loss_cuda);
  m.impl("critic_generator_loss", &critic_generator_loss_cuda);
  m.impl("bce_with_logits", &bce_with_logits_cuda);
  m.impl("binary_cross_entropy", &bce_probs_cuda);
}

}  // namespace ganx
