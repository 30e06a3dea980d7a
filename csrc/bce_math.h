// The math of the fused BCE (and critic: hinge, Wasserstein) losses that every device shares, in plain C++ (no ATen), so the
// CPU kernels, the CUDA kernels (csrc/cuda/kernels/bce_loss.cuh) and the CUDA emulator of the
// tests (tests/emu) include the same lines: the per-element functions, the coefficients a
// scalar target turns into, and the gradient scale of a reduction.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace ganx {

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

// A scalar target's coefficients (loss = w * BCE with cpos, cneg as in bce_elem). They are
// computed here, in double, once for every device, and rounded to the kernel's accumulation
// type afterwards: 1 - t rounded from double is not 1.f - (float)t (t = 0.9: 0.1f vs 0.10000002f),
// and the CPU and CUDA kernels must agree on it.
struct TargetCoefs {
  double cpos, cneg, w;
};

// BCE(l, t): the discriminator's two segments and the non-saturating generator loss.
inline TargetCoefs bce_target_coefs(double t) { return {t, 1.0 - t, 1.0}; }

// Generator loss: non-saturating BCE(l, t); minimax -BCE(l, 1 - t) (= log(1 - D(G(z))) for t = 1).
inline TargetCoefs bce_generator_coefs(bool non_saturating, double t) {
  return non_saturating ? TargetCoefs{t, 1.0 - t, 1.0} : TargetCoefs{1.0 - t, t, -1.0};
}

// ---- critic losses (hinge, Wasserstein) on raw scores: the same one-pass ops, another element

// The loss family of an adversarial op: BCE on logits (the bce_* ops), hinge, Wasserstein.
enum class LossKind : int64_t { Bce = 0, Hinge = 1, Wasserstein = 2 };

// One segment of a critic loss on a score l: u = margin + sign * l,
//   loss = hinge ? relu(u) : u,   d loss / dl = sign * (hinge ? [not u <= 0] : 1)
// (sign is +-1, so sign * l is exact and a fused multiply-add rounds u once, like margin - l).
// relu keeps NaN (u < 0 ? 0 : u); its derivative is 0 at the kink u = 0 and 1 at a NaN, exactly
// torch's relu backward (threshold_backward zeroes where the output is <= 0, which NaN is not).
struct CriticCoefs {
  double sign, margin;
  bool hinge;
};

template <typename T>
C10_HOST_DEVICE inline T critic_elem(T l, T sign, T margin, bool hinge, T& grad) {
  const T zero(0);
  const T u = margin + sign * l;
  const T g = u <= zero ? zero : sign;
  const T r = u < zero ? zero : u;
  grad = hinge ? g : sign;
  return hinge ? r : u;
}

// D: hinge relu(1 - real) + relu(1 + fake); Wasserstein fake - real (minimised by D).
inline CriticCoefs critic_discriminator_coefs(LossKind kind, bool real) {
  const bool hinge = kind == LossKind::Hinge;
  return {real ? -1.0 : 1.0, hinge ? 1.0 : 0.0, hinge};
}

// G (hinge and Wasserstein alike): -fake.
inline CriticCoefs critic_generator_coefs() { return {-1.0, 0.0, false}; }

// d reduced loss / d per-element loss: 1/n for a mean (1 for an empty input), 1 otherwise;
// in double, rounded once by the caller.
inline double bce_grad_scale(bool mean, int64_t n) {
  return mean ? 1.0 / static_cast<double>(n > 1 ? n : 1) : 1.0;
}

}  // namespace ganx
