// CUDA kernels of the fused BCE losses. One launch reads the logits once and writes the
// gradient, the per-element loss (reduction "none") and per-block partial sums of the loss
// and the statistics; the discriminator's real and fake inputs are two segments of one index
// space, so both are handled by the same launch.
//
// Reduction (deterministic: no atomics): each block reduces its threads' sums by a fixed
// shared-memory tree. A single block (small inputs, the common GAN case: one launch in all)
// finalises directly; otherwise the blocks write partials and a one-block kernel adds them in
// block order. The grid depends only on the size and the device, so two runs are bit-identical.
// Accumulation is in fp32 for fp16/bf16/fp32 and fp64 for double.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "bce_loss.h"

namespace ganx {
namespace {

constexpr int kThreads = 256;
constexpr int kItemsPerThread = 4;  // before a second block is used
constexpr int kSums = 6;            // per segment s: loss, statistic, count of logits > 0

__device__ __forceinline__ float d_exp(float x) { return expf(x); }
__device__ __forceinline__ double d_exp(double x) { return exp(x); }
__device__ __forceinline__ float d_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double d_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float d_log(float x) { return logf(x); }
__device__ __forceinline__ double d_log(double x) { return log(x); }

template <typename acc_t>
__device__ __forceinline__ acc_t logit_elem(acc_t l, acc_t cpos, acc_t cneg, acc_t& g, acc_t& s) {
  const acc_t e = d_exp(l < acc_t(0) ? l : -l);  // exp(-|l|); NaN stays NaN
  return bce_elem(l, e, d_log1p(e), cpos, cneg, g, s);
}

// Scalar targets (discriminator: one coefficient set per segment; generator: segment 0 only).
template <typename acc_t>
struct DevLogitConst {
  acc_t cpos[2], cneg[2], w[2];
  __device__ acc_t operator()(int seg, int64_t, acc_t l, acc_t& g, acc_t& s) const {
    const acc_t v = logit_elem(l, cpos[seg], cneg[seg], g, s);
    g *= w[seg];
    return w[seg] * v;
  }
};

// BCE-with-logits: weight / pos_weight are null (absent), one value (stride 0) or input-shaped.
template <typename scalar_t, typename acc_t>
struct DevLogitTensor {
  const scalar_t* t;
  const scalar_t* w;
  const scalar_t* pw;
  int64_t ws, ps;
  __device__ acc_t operator()(int, int64_t i, acc_t l, acc_t& g, acc_t& s) const {
    const acc_t ti = static_cast<acc_t>(t[i]);
    const acc_t wi = w != nullptr ? static_cast<acc_t>(w[i * ws]) : acc_t(1);
    const acc_t pwi = pw != nullptr ? static_cast<acc_t>(pw[i * ps]) : acc_t(1);
    const acc_t v = logit_elem(l, pwi * ti, acc_t(1) - ti, g, s);
    g *= wi;
    return wi * v;
  }
};

// BCE on probabilities. An input outside [0, 1] gives NaN (the CPU kernel raises; here that
// would need a device sync).
template <typename scalar_t, typename acc_t>
struct DevProbTensor {
  const scalar_t* t;
  const scalar_t* w;
  int64_t ws;
  __device__ acc_t operator()(int, int64_t i, acc_t p, acc_t& g, acc_t& s) const {
    const acc_t ti = static_cast<acc_t>(t[i]);
    const acc_t wi = w != nullptr ? static_cast<acc_t>(w[i * ws]) : acc_t(1);
    acc_t v = bce_prob_elem(p, ti, d_log(p), d_log1p(-p), g);
    const bool ok = p >= acc_t(0) && p <= acc_t(1);
    const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
    v = ok ? v : nan;
    g = ok ? g * wi : nan;
    s = acc_t(0);
    return wi * v;
  }
};

template <typename scalar_t>
struct Segment {
  const scalar_t* x;
  int64_t n;
  scalar_t* loss;  // per-element loss (reduction none) or null
  scalar_t* grad;  // gradient or null
};

template <typename scalar_t, typename acc_t>
struct Final {
  scalar_t* loss;  // reduced loss (scalar) or null
  float* stats;    // [acc_real, acc_fake, mean D(x), mean D(G(z))] or null
  int nseg;
  bool mean;
  int64_t n0, n1;
};

template <typename scalar_t, typename acc_t>
__device__ void finalize(const acc_t* s, const Final<scalar_t, acc_t>& f) {
  const acc_t n0 = static_cast<acc_t>(f.n0), n1 = static_cast<acc_t>(f.n1);
  if (f.loss != nullptr) {
    acc_t total = f.mean ? s[0] / n0 : s[0];  // mean of nothing is NaN, like torch
    if (f.nseg == 2) total += f.mean ? s[3] / n1 : s[3];
    *f.loss = static_cast<scalar_t>(total);
  }
  if (f.stats != nullptr) {
    f.stats[0] = static_cast<float>(s[2] / n0);
    f.stats[1] = static_cast<float>((n1 - s[5]) / n1);
    f.stats[2] = static_cast<float>(s[1] / n0);
    f.stats[3] = static_cast<float>(s[4] / n1);
  }
}

// Fixed-order tree reduction of kSums values over the block; the result is in sh[k][0].
template <typename acc_t>
__device__ void block_reduce(acc_t (&sh)[kSums][kThreads], const acc_t (&v)[kSums]) {
  const int t = threadIdx.x;
#pragma unroll
  for (int k = 0; k < kSums; ++k) sh[k][t] = v[k];
  __syncthreads();
  for (int off = kThreads / 2; off > 0; off >>= 1) {
    if (t < off) {
#pragma unroll
      for (int k = 0; k < kSums; ++k) sh[k][t] += sh[k][t + off];
    }
    __syncthreads();
  }
}

template <typename scalar_t, typename acc_t, typename Elem>
__global__ void __launch_bounds__(kThreads) bce_kernel(Segment<scalar_t> s0, Segment<scalar_t> s1, Elem elem,
                                                       acc_t gs0, acc_t gs1, acc_t* partials,
                                                       Final<scalar_t, acc_t> fin, bool reduce) {
  __shared__ acc_t sh[kSums][kThreads];
  acc_t v[kSums] = {};
  const int64_t n = s0.n + s1.n;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const bool second = i >= s0.n;
    const int seg = second ? 1 : 0;
    const int64_t j = second ? i - s0.n : i;
    const Segment<scalar_t>& S = second ? s1 : s0;
    const acc_t x = static_cast<acc_t>(S.x[j]);
    acc_t g, st;
    const acc_t l = elem(seg, j, x, g, st);
    if (S.loss != nullptr) S.loss[j] = static_cast<scalar_t>(l);
    if (S.grad != nullptr) S.grad[j] = static_cast<scalar_t>(g * (second ? gs1 : gs0));
    const acc_t pos = x > acc_t(0) ? acc_t(1) : acc_t(0);
    if (second) {
      v[3] += l; v[4] += st; v[5] += pos;
    } else {
      v[0] += l; v[1] += st; v[2] += pos;
    }
  }
  if (!reduce) return;  // uniform over the grid
  block_reduce(sh, v);
  if (threadIdx.x == 0) {
    acc_t r[kSums];
#pragma unroll
    for (int k = 0; k < kSums; ++k) r[k] = sh[k][0];
    if (gridDim.x == 1) {
      finalize(r, fin);
    } else {
#pragma unroll
      for (int k = 0; k < kSums; ++k) partials[static_cast<int64_t>(blockIdx.x) * kSums + k] = r[k];
    }
  }
}

// One block: adds the per-block partials in block order (each thread a fixed strided subset,
// then the fixed tree) and finalises.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) bce_finalize_kernel(const acc_t* partials, int nblocks,
                                                                Final<scalar_t, acc_t> fin) {
  __shared__ acc_t sh[kSums][kThreads];
  acc_t v[kSums] = {};
  for (int b = threadIdx.x; b < nblocks; b += kThreads) {
#pragma unroll
    for (int k = 0; k < kSums; ++k) v[k] += partials[static_cast<int64_t>(b) * kSums + k];
  }
  block_reduce(sh, v);
  if (threadIdx.x == 0) {
    acc_t r[kSums];
#pragma unroll
    for (int k = 0; k < kSums; ++k) r[k] = sh[k][0];
    finalize(r, fin);
  }
}

template <typename scalar_t, typename acc_t, typename Elem>
void launch(const at::Tensor& like, Segment<scalar_t> s0, Segment<scalar_t> s1, const Elem& elem, acc_t gs0,
            acc_t gs1, Final<scalar_t, acc_t> fin) {
  const int64_t n = s0.n + s1.n;
  const bool reduce = fin.loss != nullptr || fin.stats != nullptr;
  auto stream = at::cuda::getCurrentCUDAStream();
  if (n == 0) return;  // callers fill the reductions of empty inputs
  const int64_t per_block = static_cast<int64_t>(kThreads) * kItemsPerThread;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t blocks = std::min<int64_t>((n + per_block - 1) / per_block, static_cast<int64_t>(sms) * 4);
  at::Tensor partials;
  if (reduce && blocks > 1) {
    partials = at::empty({blocks * kSums}, like.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  }
  acc_t* pp = partials.defined() ? partials.mutable_data_ptr<acc_t>() : nullptr;
  bce_kernel<scalar_t, acc_t, Elem><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      s0, s1, elem, gs0, gs1, pp, fin, reduce);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (reduce && blocks > 1) {
    bce_finalize_kernel<scalar_t, acc_t><<<1, kThreads, 0, stream>>>(pp, static_cast<int>(blocks), fin);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename acc_t>
acc_t grad_scale(Reduction red, int64_t n) {
  return red == Reduction::Mean ? acc_t(1) / static_cast<acc_t>(std::max<int64_t>(n, 1)) : acc_t(1);
}

// Empty inputs: torch's reductions of nothing (mean NaN, sum 0); stats NaN.
void fill_empty(at::Tensor& loss, at::Tensor* stats, Reduction red) {
  if (red != Reduction::None) loss.fill_(red == Reduction::Mean ? std::numeric_limits<double>::quiet_NaN() : 0.0);
  if (stats != nullptr) stats->fill_(std::numeric_limits<double>::quiet_NaN());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_discriminator_loss_cuda(
    const at::Tensor& real, const at::Tensor& fake, double real_target, double fake_target,
    int64_t reduction, bool need_grad) {
  check_bce_discriminator_inputs(real, fake, real_target, fake_target, reduction);
  const c10::cuda::CUDAGuard guard(real.device());
  const auto red = static_cast<Reduction>(reduction);
  const auto r = real.contiguous(), f = fake.contiguous();
  const int64_t nr = r.numel(), nf = f.numel();
  const auto opts = r.options();
  auto loss = red == Reduction::None ? at::empty({nr + nf}, opts) : at::empty({}, opts);
  auto grad = at::empty({need_grad ? nr + nf : 0}, opts);  // real then fake, flattened
  auto stats = at::empty({4}, opts.dtype(at::kFloat));
  if (nr + nf == 0) {
    fill_empty(loss, &stats, red);
    return {loss, grad, stats};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.scalar_type(), "bce_discriminator_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool none = red == Reduction::None;
    scalar_t* lp = none ? loss.mutable_data_ptr<scalar_t>() : nullptr;
    const acc_t rt = static_cast<acc_t>(real_target), ft = static_cast<acc_t>(fake_target);
    DevLogitConst<acc_t> elem{{rt, ft}, {acc_t(1) - rt, acc_t(1) - ft}, {acc_t(1), acc_t(1)}};
    scalar_t* gp = need_grad ? grad.mutable_data_ptr<scalar_t>() : nullptr;
    Segment<scalar_t> s0{r.const_data_ptr<scalar_t>(), nr, lp, gp};
    Segment<scalar_t> s1{f.const_data_ptr<scalar_t>(), nf, lp ? lp + nr : nullptr, gp ? gp + nr : nullptr};
    Final<scalar_t, acc_t> fin{none ? nullptr : loss.mutable_data_ptr<scalar_t>(), stats.mutable_data_ptr<float>(),
                               2, red == Reduction::Mean, nr, nf};
    launch<scalar_t, acc_t>(r, s0, s1, elem, grad_scale<acc_t>(red, nr), grad_scale<acc_t>(red, nf), fin);
  });
  return {loss, grad, stats};
}

std::tuple<at::Tensor, at::Tensor> bce_generator_loss_cuda(const at::Tensor& fake, int64_t mode, double target,
                                                           int64_t reduction, bool need_grad) {
  const auto m = check_bce_generator_inputs(fake, mode, target, reduction);
  const c10::cuda::CUDAGuard guard(fake.device());
  const auto red = static_cast<Reduction>(reduction);
  const auto f = fake.contiguous();
  const int64_t n = f.numel();
  const auto opts = f.options();
  auto loss = red == Reduction::None ? at::empty(f.sizes(), opts) : at::empty({}, opts);
  auto g = at::empty(need_grad ? f.sizes() : at::IntArrayRef{0}, opts);
  if (n == 0) {
    fill_empty(loss, nullptr, red);
    return {loss, g};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "bce_generator_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool none = red == Reduction::None;
    const acc_t t = static_cast<acc_t>(target);
    // non-saturating: BCE(l, t); minimax: -BCE(l, 1 - t), = log(1 - D(G(z))) for t = 1.
    const bool ns = m == GenMode::NonSaturating;
    DevLogitConst<acc_t> elem{{ns ? t : acc_t(1) - t, acc_t(0)},
                              {ns ? acc_t(1) - t : t, acc_t(0)},
                              {ns ? acc_t(1) : acc_t(-1), acc_t(0)}};
    Segment<scalar_t> s0{f.const_data_ptr<scalar_t>(), n, none ? loss.mutable_data_ptr<scalar_t>() : nullptr,
                         need_grad ? g.mutable_data_ptr<scalar_t>() : nullptr};
    Segment<scalar_t> s1{nullptr, 0, nullptr, nullptr};
    Final<scalar_t, acc_t> fin{none ? nullptr : loss.mutable_data_ptr<scalar_t>(), nullptr, 1,
                               red == Reduction::Mean, n, 0};
    launch<scalar_t, acc_t>(f, s0, s1, elem, grad_scale<acc_t>(red, n), acc_t(1), fin);
  });
  return {loss, g};
}

// Factor pointer and element stride (0: one value for all) for the kernels.
template <typename scalar_t>
std::pair<const scalar_t*, int64_t> factor_ptr(const at::Tensor& w) {
  if (!w.defined()) return {nullptr, 0};
  return {w.const_data_ptr<scalar_t>(), w.numel() == 1 ? 0 : 1};
}

std::tuple<at::Tensor, at::Tensor> bce_with_logits_cuda(const at::Tensor& input, const at::Tensor& target,
                                                        const std::optional<at::Tensor>& weight,
                                                        const std::optional<at::Tensor>& pos_weight,
                                                        int64_t reduction, bool need_grad) {
  constexpr const char* op = "bce_with_logits";
  check_bce_with_logits_inputs(input, target, weight, pos_weight, reduction);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto red = static_cast<Reduction>(reduction);
  const auto x = input.contiguous();
  const auto t = target.to(x.scalar_type()).contiguous();
  const auto w = broadcast_factor(op, "weight", weight, x);
  const auto pw = broadcast_factor(op, "pos_weight", pos_weight, x);
  const int64_t n = x.numel();
  const auto opts = x.options();
  auto loss = red == Reduction::None ? at::empty(x.sizes(), opts) : at::empty({}, opts);
  auto g = at::empty(need_grad ? x.sizes() : at::IntArrayRef{0}, opts);
  if (n == 0) {
    fill_empty(loss, nullptr, red);
    return {loss, g};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bce_with_logits_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool none = red == Reduction::None;
    const auto wf = factor_ptr<scalar_t>(w), pwf = factor_ptr<scalar_t>(pw);
    DevLogitTensor<scalar_t, acc_t> elem{t.const_data_ptr<scalar_t>(), wf.first, pwf.first, wf.second, pwf.second};
    Segment<scalar_t> s0{x.const_data_ptr<scalar_t>(), n, none ? loss.mutable_data_ptr<scalar_t>() : nullptr,
                         need_grad ? g.mutable_data_ptr<scalar_t>() : nullptr};
    Segment<scalar_t> s1{nullptr, 0, nullptr, nullptr};
    Final<scalar_t, acc_t> fin{none ? nullptr : loss.mutable_data_ptr<scalar_t>(), nullptr, 1,
                               red == Reduction::Mean, n, 0};
    launch<scalar_t, acc_t>(x, s0, s1, elem, grad_scale<acc_t>(red, n), acc_t(1), fin);
  });
  return {loss, g};
}

std::tuple<at::Tensor, at::Tensor> bce_probs_cuda(const at::Tensor& input, const at::Tensor& target,
                                                  const std::optional<at::Tensor>& weight, int64_t reduction,
                                                  bool need_grad) {
  constexpr const char* op = "binary_cross_entropy";
  check_bce_probs_inputs(input, target, weight, reduction);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto red = static_cast<Reduction>(reduction);
  const auto x = input.contiguous();
  const auto t = target.to(x.scalar_type()).contiguous();
  const auto w = broadcast_factor(op, "weight", weight, x);
  const int64_t n = x.numel();
  const auto opts = x.options();
  auto loss = red == Reduction::None ? at::empty(x.sizes(), opts) : at::empty({}, opts);
  auto g = at::empty(need_grad ? x.sizes() : at::IntArrayRef{0}, opts);
  if (n == 0) {
    fill_empty(loss, nullptr, red);
    return {loss, g};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "binary_cross_entropy_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool none = red == Reduction::None;
    const auto wf = factor_ptr<scalar_t>(w);
    DevProbTensor<scalar_t, acc_t> elem{t.const_data_ptr<scalar_t>(), wf.first, wf.second};
    Segment<scalar_t> s0{x.const_data_ptr<scalar_t>(), n, none ? loss.mutable_data_ptr<scalar_t>() : nullptr,
                         need_grad ? g.mutable_data_ptr<scalar_t>() : nullptr};
    Segment<scalar_t> s1{nullptr, 0, nullptr, nullptr};
    Final<scalar_t, acc_t> fin{none ? nullptr : loss.mutable_data_ptr<scalar_t>(), nullptr, 1,
                               red == Reduction::Mean, n, 0};
    launch<scalar_t, acc_t>(x, s0, s1, elem, grad_scale<acc_t>(red, n), acc_t(1), fin);
  });
  return {loss, g};
}

}  // namespace

TORCH_LIBRARY_IMPL(ganx, CUDA, m) {
  m.impl("bce_discriminator_loss", &bce_discriminator_loss_cuda);
  m.impl("bce_generator_loss", &bce_generator_loss_cuda);
  m.impl("bce_with_logits", &bce_with_logits_cuda);
  m.impl("binary_cross_entropy", &bce_probs_cuda);
}

}  // namespace ganx
