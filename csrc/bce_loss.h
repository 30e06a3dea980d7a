// Shared declarations of the fused BCE losses: argument checks (bce_loss.cpp) and the
// per-element math used by both the CPU and the CUDA kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

namespace ganx {

// torch's reduction codes (at::Reduction): 0 none, 1 mean, 2 sum.
enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2 };
// Generator loss forms.
enum class GenMode : int64_t { NonSaturating = 0, Minimax = 1 };

Reduction check_reduction(const char* op, int64_t reduction);
void check_logits(const char* op, const char* arg, const at::Tensor& t);
void check_target_value(const char* op, const char* arg, double target);
void check_bce_discriminator_inputs(const at::Tensor& real, const at::Tensor& fake, double real_target,
                                    double fake_target, int64_t reduction);
GenMode check_bce_generator_inputs(const at::Tensor& fake, int64_t mode, double target, int64_t reduction);
void check_bce_with_logits_inputs(const at::Tensor& input, const at::Tensor& target,
                                  const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& pos_weight, int64_t reduction);
void check_bce_probs_inputs(const at::Tensor& input, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight, int64_t reduction);

// The instruction set the CPU loss kernels run with: "avx512", "avx2" or "default".
const char* bce_cpu_isa();

// An optional per-element factor (weight / pos_weight) as the kernels read it: absent, one value
// for every element, or a contiguous tensor of the input's shape (other broadcasts are expanded).
at::Tensor broadcast_factor(const char* op, const char* arg, const std::optional<at::Tensor>& f,
                            const at::Tensor& input);

// Per-element BCE on a logit l, written for a general positive/negative coefficient pair so one
// routine serves every loss here:
//   loss = cpos * softplus(-l) + cneg * softplus(l),   d loss / dl = cneg * sigmoid(l) - cpos * sigmoid(-l)
// (cpos = pos_weight * t, cneg = 1 - t for BCE-with-logits; t, 1 - t for plain BCE). With
// e = exp(-|l|) and L = log1p(e): softplus(+-l) = max(+-l, 0) + L, which never overflows. A zero
// coefficient drops its term *before* multiplying, so BCE(+inf, 1) = 0 and BCE(-inf, 0) = 0
// (torch's formula gives NaN there); a NaN logit reaches the result through e and L.
template <typename T>
C10_HOST_DEVICE inline T bce_elem(T l, T e, T L, T cpos, T cneg, T& grad, T& sig) {
  const T one(1), zero(0);
  // Every operand is computed before the selects, so they compile to blends (vectorisable).
  const T inv = one / (one + e);
  const T einv = e * inv;
  sig = l >= zero ? inv : einv;                 // sigmoid(l)
  const T sig_neg = l >= zero ? einv : inv;     // sigmoid(-l) = 1 - sig, without the cancellation
  const T nl = -l;
  const T pos_part = l < zero ? nl : zero;      // max(-l, 0)
  const T neg_part = l > zero ? l : zero;       // max(l, 0)
  const T ap = cpos * pos_part, bp = cneg * neg_part;
  const T a = cpos == zero ? zero : ap;
  const T b = cneg == zero ? zero : bp;
  grad = cneg * sig - cpos * sig_neg;
  return a + b + (cpos + cneg) * L;
}

// Per-element BCE on a probability p (torch.nn.functional.binary_cross_entropy): the logs are
// clamped at -100 so p in {0, 1} gives a finite loss, and the gradient's denominator at 1e-12.
template <typename T>
C10_HOST_DEVICE inline T bce_prob_elem(T p, T t, T log_p, T log_1mp, T& grad) {
  const T one(1), lo(-100), eps(1e-12);
  log_p = log_p < lo ? lo : log_p;
  log_1mp = log_1mp < lo ? lo : log_1mp;
  T den = (one - p) * p;
  den = den < eps ? eps : den;
  grad = (p - t) / den;
  return (t - one) * log_1mp - t * log_p;
}

}  // namespace ganx
