// CPU kernels of the fused BCE losses (and of the critic losses, hinge and Wasserstein, which run
// the same kernels with another per-element function: bce_math.h critic_elem). One pass over the logits produces the loss (reduced or
// per element), the gradient d loss / d logits and, for the discriminator, its statistics.
//
// Logits in float32, float16 and bfloat16 run the SIMD kernel of bce_vec.cpp (AVX-512, AVX2 or
// baseline, chosen at run time like torch's own kernels; float16/bfloat16 are converted block
// by block to float32 and back). float64 (the precision reference, gradcheck) and the
// probability BCE run the scalar code below, with libm's exp/log.
//
// Determinism: the input is cut into fixed chunks of kChunk elements whatever the thread count;
// each chunk's partial sums are computed in a fixed order and the chunks are combined in index
// order, so a result never depends on scheduling (nor on AVX2 vs AVX-512; bce_vec.h). The
// scalar per-element work is branch-free (selects) so that the inner loop vectorises; it writes
// to small stack buffers, and the stores to the outputs and the reductions are separate loops.
//
// GCC only if-converts (and so vectorises) the selects of the element loop without
// -ftrapping-math; we never enable FP exceptions, so this file turns it off for itself (before
// any include, so inlining across headers is unaffected).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3,no-trapping-math")
#endif
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <ATen/Version.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "bce_loss.h"
#include "cpu/bce_vec.h"
#include "cpu/buffer_cache.h"

namespace ganx {
namespace {

constexpr int64_t kChunk = 16384;  // elements per parallel task (fixed: results are deterministic)
constexpr int kBlk = 64;           // elements per register block
constexpr int kLanes = 8;          // interleaved accumulators per sum

// ------------------------------------------------------------------ per-element functors
// Each returns the (weighted) loss of element i with logit/probability v, and sets the
// unscaled gradient g and the statistic s (sigmoid for logits, "out of range" for probabilities).
// The logit functors serve float64 only (the precision reference, with libm's exp/log1p);
// float32/16/bf16 logits run the SIMD kernel.

template <typename acc_t>
struct LogitConst {  // scalar targets: discriminator and generator losses
  acc_t cpos, cneg, w;
  acc_t operator()(int64_t, acc_t l, acc_t& g, acc_t& s) const {
    const acc_t e = std::exp(-std::abs(l));
    const acc_t L = std::log1p(e);
    const acc_t v = bce_elem(l, e, L, cpos, cneg, g, s);
    g *= w;
    return w * v;
  }
};

// The critic losses (hinge, Wasserstein) of one segment; the statistic is the score itself.
template <typename acc_t>
struct CriticConst {
  acc_t sign, margin;
  bool hinge;
  acc_t operator()(int64_t, acc_t l, acc_t& g, acc_t& s) const {
    s = l;
    return critic_elem(l, sign, margin, hinge, g);
  }
};

// BCE-with-logits with a target tensor; weight / pos_weight either full (input-shaped,
// contiguous) or one value (w0, pw0; 1 when absent).
template <typename scalar_t, typename acc_t, bool WFull, bool PWFull>
struct LogitTensor {
  const scalar_t* t;
  const scalar_t* w;
  const scalar_t* pw;
  acc_t w0, pw0;
  acc_t operator()(int64_t i, acc_t l, acc_t& g, acc_t& s) const {
    const acc_t ti = static_cast<acc_t>(t[i]);
    const acc_t wi = WFull ? static_cast<acc_t>(w[i]) : w0;
    const acc_t pwi = PWFull ? static_cast<acc_t>(pw[i]) : pw0;
    const acc_t e = std::exp(-std::abs(l));
    const acc_t L = std::log1p(e);
    const acc_t v = bce_elem(l, e, L, pwi * ti, acc_t(1) - ti, g, s);
    g *= wi;
    return wi * v;
  }
};

// BCE on probabilities (torch.nn.functional.binary_cross_entropy); s = 1 flags p outside [0, 1].
template <typename scalar_t, typename acc_t, bool WFull>
struct ProbTensor {
  const scalar_t* t;
  const scalar_t* w;
  acc_t w0;
  acc_t operator()(int64_t i, acc_t p, acc_t& g, acc_t& s) const {
    const acc_t ti = static_cast<acc_t>(t[i]);
    const acc_t wi = WFull ? static_cast<acc_t>(w[i]) : w0;
    s = (p >= acc_t(0) && p <= acc_t(1)) ? acc_t(0) : acc_t(1);
    const acc_t v = bce_prob_elem(p, ti, std::log(p), std::log1p(-p), g);
    g *= wi;
    return wi * v;
  }
};

struct Sums {
  double loss = 0, stat = 0, pos = 0;
};

// One chunk [begin, end): per-element loss into loss_out (reduction none) or into the sum,
// gradient * grad_scale into grad_out (if not null), statistics sums when want_stats.
template <typename scalar_t, typename acc_t, typename Elem>
Sums run_range(const scalar_t* x, int64_t begin, int64_t end, const Elem& elem, scalar_t* loss_out,
               scalar_t* grad_out, acc_t grad_scale, bool want_stats) {
  acc_t lb[kBlk], gb[kBlk], sb[kBlk], pb[kBlk];
  double al[kLanes] = {}, as[kLanes] = {}, ap[kLanes] = {};
  for (int64_t i0 = begin; i0 < end; i0 += kBlk) {
    const int n = static_cast<int>(std::min<int64_t>(kBlk, end - i0));
    for (int j = 0; j < n; ++j) {
      const acc_t v = static_cast<acc_t>(x[i0 + j]);
      acc_t g, s;
      lb[j] = elem(i0 + j, v, g, s);
      gb[j] = g * grad_scale;
      sb[j] = s;
      pb[j] = v > acc_t(0) ? acc_t(1) : acc_t(0);
    }
    if (grad_out != nullptr) {
      for (int j = 0; j < n; ++j) grad_out[i0 + j] = static_cast<scalar_t>(gb[j]);
    }
    if (loss_out != nullptr) {
      for (int j = 0; j < n; ++j) loss_out[i0 + j] = static_cast<scalar_t>(lb[j]);
    } else {
      for (int j = n; j < kBlk; ++j) lb[j] = acc_t(0);
      for (int j = 0; j < kBlk; j += kLanes)
        for (int k = 0; k < kLanes; ++k) al[k] += static_cast<double>(lb[j + k]);
    }
    if (want_stats) {
      for (int j = n; j < kBlk; ++j) sb[j] = pb[j] = acc_t(0);
      for (int j = 0; j < kBlk; j += kLanes)
        for (int k = 0; k < kLanes; ++k) {
          as[k] += static_cast<double>(sb[j + k]);
          ap[k] += static_cast<double>(pb[j + k]);
        }
    }
  }
  Sums r;
  for (int k = 0; k < kLanes; ++k) {
    r.loss += al[k];
    r.stat += as[k];
    r.pos += ap[k];
  }
  return r;
}


// ------------------------------------------------------------------ SIMD kernel (bce_vec.cpp)

struct Isa {
  bce_vec::LogitRangeFn fn;
  const char* name;
};

// The instruction set torch's own CPU kernels use (so ATEN_CPU_CAPABILITY=default|avx2|avx512
// selects ours too), confirmed against the CPU itself.
Isa pick_isa() {
#if defined(GANX_HAVE_X86_ISAS)
  const std::string cap = at::get_cpu_capability();
  __builtin_cpu_init();
  if (cap == "AVX512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma")) {
    return {&bce_vec::isa_avx512::logit_range, "avx512"};
  }
  if ((cap == "AVX512" || cap == "AVX2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {&bce_vec::isa_avx2::logit_range, "avx2"};
  }
#endif
  return {&bce_vec::isa_default::logit_range, "default"};
}

const Isa& isa() {
  static const Isa chosen = pick_isa();
  return chosen;
}

constexpr int64_t kConvBlock = 2048;  // float16/bfloat16: elements converted to float32 at a time

using RangeFn = std::function<Sums(int64_t, int64_t)>;

// Two inputs' ranges (the discriminator's real and fake) in one parallel region over both
// inputs' chunks; each input's partials are added in index order. Inputs of kChunk elements
// or fewer in all run on the calling thread (a parallel region would cost more); either way
// every chunk is the same range, so the result is the same.
std::pair<Sums, Sums> chunked2(int64_t na, const RangeFn& fa, int64_t nb, const RangeFn& fb) {
  if (na + nb <= kChunk) return {fa(0, na), fb(0, nb)};
  const int64_t ca = (na + kChunk - 1) / kChunk, cb = (nb + kChunk - 1) / kChunk;
  std::vector<Sums> parts(ca + cb);
  at::parallel_for(0, ca + cb, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      parts[c] = c < ca ? fa(c * kChunk, std::min(na, (c + 1) * kChunk))
                        : fb((c - ca) * kChunk, std::min(nb, (c - ca + 1) * kChunk));
    }
  });
  std::pair<Sums, Sums> tot;
  for (int64_t c = 0; c < ca + cb; ++c) {
    Sums& t = c < ca ? tot.first : tot.second;
    t.loss += parts[c].loss;
    t.stat += parts[c].stat;
    t.pos += parts[c].pos;
  }
  return tot;
}

// One input's ranges: f over fixed chunks, in parallel, partials added in index order.
Sums chunked(int64_t n, const RangeFn& f) { return chunked2(n, f, 0, f).first; }

template <typename scalar_t, typename Elem>
RangeFn scalar_ranges(const scalar_t* xp, const Elem& elem, scalar_t* loss_out, scalar_t* grad_out,
                      at::opmath_type<scalar_t> grad_scale, bool want_stats) {
  using acc_t = at::opmath_type<scalar_t>;
  return [=](int64_t b, int64_t e) {
    return run_range<scalar_t, acc_t>(xp, b, e, elem, loss_out, grad_out, grad_scale, want_stats);
  };
}

template <typename scalar_t, typename Elem>
Sums run(const at::Tensor& x, const Elem& elem, scalar_t* loss_out, scalar_t* grad_out,
         at::opmath_type<scalar_t> grad_scale, bool want_stats) {
  return chunked(x.numel(), scalar_ranges<scalar_t>(x.const_data_ptr<scalar_t>(), elem, loss_out, grad_out,
                                                    grad_scale, want_stats));
}

// The logit losses on x (loss_i, grad_i as in bce_vec.h) as a function of an element range, for
// every dtype: float32 straight through the SIMD kernel, float16/bfloat16 through float32
// copies of kConvBlock elements, float64 by the scalar functors. t, w, pw: full input-shaped
// arrays or null.
// critic: null for the BCE forms; else the critic loss of this input (kind: LossKind 1 or 2), t, w, pw
// null and the BCE coefficients unused.
template <typename scalar_t>
RangeFn logit_ranges(const at::Tensor& x, const scalar_t* t, const scalar_t* w, const scalar_t* pw, double cpos0,
                     double cneg0, double w0, double pw0, scalar_t* loss_out, scalar_t* grad_out,
                     at::opmath_type<scalar_t> grad_scale, bool want_stats, LossKind kind = LossKind::Bce,
                     const CriticCoefs* critic = nullptr) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  if constexpr (std::is_same_v<scalar_t, double>) {
    const auto go = [&](const auto& elem) {
      return scalar_ranges<scalar_t>(xp, elem, loss_out, grad_out, grad_scale, want_stats);
    };
    if (kind != LossKind::Bce) return go(CriticConst<acc_t>{critic->sign, critic->margin, critic->hinge});
    if (t == nullptr) return go(LogitConst<acc_t>{cpos0, cneg0, w0});
    if (w && pw) return go(LogitTensor<scalar_t, acc_t, true, true>{t, w, pw, w0, pw0});
    if (w) return go(LogitTensor<scalar_t, acc_t, true, false>{t, w, pw, w0, pw0});
    if (pw) return go(LogitTensor<scalar_t, acc_t, false, true>{t, w, pw, w0, pw0});
    return go(LogitTensor<scalar_t, acc_t, false, false>{t, w, pw, w0, pw0});
  } else {
    bce_vec::LogitArgs base;
    base.cpos0 = static_cast<float>(cpos0);
    base.cneg0 = static_cast<float>(cneg0);
    base.w0 = static_cast<float>(w0);
    base.pw0 = static_cast<float>(pw0);
    base.grad_scale = static_cast<float>(grad_scale);
    base.want_stats = want_stats;
    if (kind != LossKind::Bce) {
      base.kind = critic->hinge ? 1 : 2;  // the form of this input (a hinge run's generator is linear)
      base.sign0 = static_cast<float>(critic->sign);
      base.margin0 = static_cast<float>(critic->margin);
    }
    const bce_vec::LogitRangeFn fn = isa().fn;
    return [=](int64_t begin, int64_t end) {
      Sums acc;
      const auto add = [&acc](const bce_vec::RangeSums& r) {
        acc.loss += r.loss;
        acc.stat += r.sig;
        acc.pos += r.pos;
      };
      if constexpr (std::is_same_v<scalar_t, float>) {
        bce_vec::LogitArgs a = base;
        a.x = xp;
        a.t = t;
        a.w = w;
        a.pw = pw;
        a.loss_out = loss_out;
        a.grad_out = grad_out;
        add(fn(a, begin, end));
      } else {
        std::vector<float> buf(6 * kConvBlock);
        float* xb = buf.data();
        float* tb = xb + kConvBlock;
        float* wb = tb + kConvBlock;
        float* pwb = wb + kConvBlock;
        float* lb = pwb + kConvBlock;
        float* gb = lb + kConvBlock;
        for (int64_t b0 = begin; b0 < end; b0 += kConvBlock) {
          const int64_t m = std::min(kConvBlock, end - b0);
          const auto in = [&](const scalar_t* src, float* dst) -> const float* {
            if (src == nullptr) return nullptr;
            for (int64_t j = 0; j < m; ++j) dst[j] = static_cast<float>(src[b0 + j]);
            return dst;
          };
          bce_vec::LogitArgs a = base;
          a.x = in(xp, xb);
          a.t = in(t, tb);
          a.w = in(w, wb);
          a.pw = in(pw, pwb);
          a.loss_out = loss_out ? lb : nullptr;
          a.grad_out = grad_out ? gb : nullptr;
          add(fn(a, 0, m));
          for (int64_t j = 0; j < m; ++j) {
            if (loss_out) loss_out[b0 + j] = static_cast<scalar_t>(lb[j]);
            if (grad_out) grad_out[b0 + j] = static_cast<scalar_t>(gb[j]);
          }
        }
      }
      return acc;
    };
  }
}

template <typename scalar_t>
Sums run_logits(const at::Tensor& x, const scalar_t* t, const scalar_t* w, const scalar_t* pw, double cpos0,
                double cneg0, double w0, double pw0, scalar_t* loss_out, scalar_t* grad_out,
                at::opmath_type<scalar_t> grad_scale, bool want_stats) {
  return chunked(x.numel(), logit_ranges<scalar_t>(x, t, w, pw, cpos0, cneg0, w0, pw0, loss_out, grad_out,
                                                   grad_scale, want_stats));
}

template <typename scalar_t>
scalar_t* ptr_or_null(at::Tensor& t, bool use) {
  return use ? t.mutable_data_ptr<scalar_t>() : nullptr;
}

double reduce(Reduction red, double sum, int64_t n) {
  return red == Reduction::Mean ? sum / static_cast<double>(n) : sum;
}

// ------------------------------------------------------------------ ops

// Each op: the set-up shared with CUDA (bce_loss.cpp; large outputs from the buffer cache,
// buffer_cache.h: no page faults on every call), then the kernels above.

// The discriminator losses (BCE or critic, c.kind) on a prepared call: both inputs' chunks in one
// parallel region, then the reduced loss and the statistics.
std::tuple<at::Tensor, at::Tensor, at::Tensor> discriminator_cpu(BceCall& c) {
  const bool need_grad = c.need_grad;
  const auto red = c.red;
  const int64_t nr = c.n0, nf = c.n1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x0.scalar_type(), "bce_discriminator_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool none = red == Reduction::None;
    scalar_t* lp = ptr_or_null<scalar_t>(c.loss, none);
    scalar_t* gp = ptr_or_null<scalar_t>(c.grad, need_grad);
    const auto sr = static_cast<acc_t>(c.gs0), sf = static_cast<acc_t>(c.gs1);
    const auto [a, b] = chunked2(
        nr, logit_ranges<scalar_t>(c.x0, nullptr, nullptr, nullptr, c.c0.cpos, c.c0.cneg, c.c0.w, 1.0, lp, gp, sr, true,
                                   c.kind, &c.k0),
        nf, logit_ranges<scalar_t>(c.x1, nullptr, nullptr, nullptr, c.c1.cpos, c.c1.cneg, c.c1.w, 1.0,
                                   lp ? lp + nr : nullptr, gp ? gp + nr : nullptr, sf, true, c.kind, &c.k1));
    if (!none) {
      c.loss.mutable_data_ptr<scalar_t>()[0] =
          static_cast<scalar_t>(reduce(red, a.loss, nr) + reduce(red, b.loss, nf));
    }
    float* s = c.stats.mutable_data_ptr<float>();
    s[0] = static_cast<float>(a.pos / static_cast<double>(nr));               // D says "real" on real
    s[1] = static_cast<float>((static_cast<double>(nf) - b.pos) / static_cast<double>(nf));  // "fake" on fake
    s[2] = static_cast<float>(a.stat / static_cast<double>(nr));
    s[3] = static_cast<float>(b.stat / static_cast<double>(nf));
  });
  return {c.loss, c.grad, c.stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bce_discriminator_loss_cpu(
    const at::Tensor& real, const at::Tensor& fake, double real_target, double fake_target,
    int64_t reduction, bool need_grad) {
  auto c = bce_discriminator_call(real, fake, real_target, fake_target, reduction, need_grad, &cached_empty);
  return discriminator_cpu(c);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> critic_discriminator_loss_cpu(const at::Tensor& real,
                                                                             const at::Tensor& fake, int64_t kind,
                                                                             int64_t reduction, bool need_grad) {
  auto c = critic_discriminator_call(real, fake, kind, reduction, need_grad, &cached_empty);
  return discriminator_cpu(c);
}

// The generator losses (BCE or critic, c.kind) on a prepared call.
std::tuple<at::Tensor, at::Tensor> generator_cpu(BceCall& c) {
  const bool need_grad = c.need_grad;
  const auto red = c.red;
  const int64_t n = c.n0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x0.scalar_type(), "generator_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool none = red == Reduction::None;
    const Sums a = chunked(n, logit_ranges<scalar_t>(c.x0, nullptr, nullptr, nullptr, c.c0.cpos, c.c0.cneg, c.c0.w,
                                                     1.0, ptr_or_null<scalar_t>(c.loss, none),
                                                     ptr_or_null<scalar_t>(c.grad, need_grad),
                                                     static_cast<acc_t>(c.gs0), false, c.kind, &c.k0));
    if (!none) c.loss.mutable_data_ptr<scalar_t>()[0] = static_cast<scalar_t>(reduce(red, a.loss, n));
  });
  return {c.loss, c.grad};
}

std::tuple<at::Tensor, at::Tensor> bce_generator_loss_cpu(const at::Tensor& fake, int64_t mode, double target,
                                                          int64_t reduction, bool need_grad) {
  auto c = bce_generator_call(fake, mode, target, reduction, need_grad, &cached_empty);
  return generator_cpu(c);
}

std::tuple<at::Tensor, at::Tensor> critic_generator_loss_cpu(const at::Tensor& fake, int64_t kind, int64_t reduction,
                                                             bool need_grad) {
  auto c = critic_generator_call(fake, kind, reduction, need_grad, &cached_empty);
  return generator_cpu(c);
}

std::tuple<at::Tensor, at::Tensor> bce_with_logits_cpu(const at::Tensor& input, const at::Tensor& target,
                                                       const std::optional<at::Tensor>& weight,
                                                       const std::optional<at::Tensor>& pos_weight,
                                                       int64_t reduction, bool need_grad) {
  auto c = bce_with_logits_call(input, target, weight, pos_weight, reduction, need_grad, &cached_empty);
  const auto red = c.red;
  const int64_t n = c.n0;
  const auto &w = c.w, &pw = c.pw;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x0.scalar_type(), "bce_with_logits_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool none = red == Reduction::None;
    const bool wfull = w.defined() && w.numel() > 1, pwfull = pw.defined() && pw.numel() > 1;
    const scalar_t* tp = c.t.const_data_ptr<scalar_t>();
    const scalar_t* wp = w.defined() ? w.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* pwp = pw.defined() ? pw.const_data_ptr<scalar_t>() : nullptr;
    const acc_t w0 = (w.defined() && !wfull) ? static_cast<acc_t>(wp[0]) : acc_t(1);
    const acc_t pw0 = (pw.defined() && !pwfull) ? static_cast<acc_t>(pwp[0]) : acc_t(1);
    scalar_t* lp = ptr_or_null<scalar_t>(c.loss, none);
    scalar_t* gp = ptr_or_null<scalar_t>(c.grad, need_grad);
    const Sums a = run_logits<scalar_t>(c.x0, tp, wfull ? wp : nullptr, pwfull ? pwp : nullptr, 1.0, 0.0, w0, pw0,
                                        lp, gp, static_cast<acc_t>(c.gs0), false);
    if (!none) c.loss.mutable_data_ptr<scalar_t>()[0] = static_cast<scalar_t>(reduce(red, a.loss, n));
  });
  return {c.loss, c.grad};
}

std::tuple<at::Tensor, at::Tensor> bce_probs_cpu(const at::Tensor& input, const at::Tensor& target,
                                                 const std::optional<at::Tensor>& weight, int64_t reduction,
                                                 bool need_grad) {
  constexpr const char* op = "binary_cross_entropy";
  auto c = bce_probs_call(input, target, weight, reduction, need_grad, &cached_empty);
  const auto red = c.red;
  const int64_t n = c.n0;
  const auto& w = c.w;
  double bad = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.x0.scalar_type(), "binary_cross_entropy_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool none = red == Reduction::None;
    const acc_t sc = static_cast<acc_t>(c.gs0);
    const bool wfull = w.defined() && w.numel() > 1;
    const scalar_t* tp = c.t.const_data_ptr<scalar_t>();
    const scalar_t* wp = w.defined() ? w.const_data_ptr<scalar_t>() : nullptr;
    const acc_t w0 = (w.defined() && !wfull) ? static_cast<acc_t>(wp[0]) : acc_t(1);
    scalar_t* lp = ptr_or_null<scalar_t>(c.loss, none);
    scalar_t* gp = ptr_or_null<scalar_t>(c.grad, need_grad);
    const Sums a = wfull ? run<scalar_t>(c.x0, ProbTensor<scalar_t, acc_t, true>{tp, wp, w0}, lp, gp, sc, true)
                         : run<scalar_t>(c.x0, ProbTensor<scalar_t, acc_t, false>{tp, wp, w0}, lp, gp, sc, true);
    bad = a.stat;
    if (!none) c.loss.mutable_data_ptr<scalar_t>()[0] = static_cast<scalar_t>(reduce(red, a.loss, n));
  });
  TORCH_CHECK(bad == 0, op, ": all elements of input should be between 0 and 1 (probabilities; use "
              "bce_with_logits for logits)");
  return {c.loss, c.grad};
}

}  // namespace

const char* bce_cpu_isa() { return isa().name; }

TORCH_LIBRARY_IMPL(ganx, CPU, m) {
  m.impl("bce_discriminator_loss", &bce_discriminator_loss_cpu);
  m.impl("bce_generator_loss", &bce_generator_loss_cpu);
  m.impl("critic_discriminator_loss", &critic_discriminator_loss_cpu);
  m.impl("critic_generator_loss", &critic_generator_loss_cpu);
  m.impl("bce_with_logits", &bce_with_logits_cpu);
  m.impl("binary_cross_entropy", &bce_probs_cpu);
}

}  // namespace ganx
