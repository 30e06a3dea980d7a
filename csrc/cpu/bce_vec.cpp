// SIMD kernel of the logit BCE losses (interface and the rules it keeps: bce_vec.h).
//
// Compiled several times by CMakeLists.txt, once per instruction set, with GANX_ISA naming
// the namespace (isa_default, isa_avx2, isa_avx512) and -ffp-contract=fast. Everything except
// logit_range has internal linkage and only builtins are used (no std:: or ATen inline
// functions), so no ISA-specific code can leak into the rest of the module through the linker.
//
// The math is that of bce_elem (csrc/bce_math.h) on GCC vectors: e = exp(-|l|) and log1p(e) by
// Cephes-style polynomials (relative error a few ulp; exp flushed to 0 below -87), every branch
// a select, so +-inf and NaN behave exactly as in the scalar code.
//
// Lanes: the sums work on kW = 16 logical lanes for every ISA (their order must not depend on
// it), but every vector type here is exactly one machine register of the ISA the copy is
// compiled for (kV lanes: 16 for AVX-512, 8 for AVX2, 4 for SSE2), and a group of 16 lanes is
// kW / kV of them. GCC lowers a generic vector wider than the target's registers piece by piece
// and, for the comparisons, selects and conversions, lane by lane in scalar code (GCC 12: the
// AVX2 copy on 16-lane types ran ~20 ns a logit, no faster than the baseline, issue 28).
// tests/test_bce_simd.py checks the objects' inner loops for ymm/zmm work.
#include "bce_vec.h"

#ifndef GANX_ISA
#error "bce_vec.cpp must be compiled with -DGANX_ISA=<namespace>"
#endif

namespace ganx {
namespace bce_vec {
namespace GANX_ISA {
namespace {

#define GANX_INLINE inline __attribute__((always_inline))

constexpr int kW = 16;  // logical lanes (fixed for every ISA: the sums' order must not depend on it)
constexpr int kUnroll = 4;  // 16-lane groups summed in float before a partial sum goes to double

// Lanes of one machine register of this copy's ISA.
#if defined(__AVX512F__)
constexpr int kV = 16;
#elif defined(__AVX__)
constexpr int kV = 8;
#else
constexpr int kV = 4;
#endif
constexpr int kH = kW / kV;  // registers per 16-lane group
static_assert(kW % kV == 0 && kV % 2 == 0, "lane counts");

typedef float vf __attribute__((vector_size(kV * 4)));
typedef int32_t vi __attribute__((vector_size(kV * 4)));
typedef float vfh __attribute__((vector_size(kV * 2)));  // half a register of floats
typedef double vdh __attribute__((vector_size(kV * 4)));  // kV / 2 doubles: one register

GANX_INLINE vf splat(float a) {
  vf v = {};
  return v + a;
}
GANX_INLINE vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
GANX_INLINE void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof(v)); }
GANX_INLINE vf sel(vi m, vf a, vf b) { return m ? a : b; }

// exp(x) for x <= 0; below -87 flushed to 0 (the true value is < 1.7e-38); NaN stays NaN.
GANX_INLINE vf exp_nonpos(vf x) {
  const vf zero = splat(0.0f);
  const vi tiny = x < -87.0f;
  vf xs = sel(tiny, splat(-87.0f), x);
  const vi nan = xs != xs;
  xs = sel(nan, zero, xs);
  const vi n = __builtin_convertvector(xs * 1.44269504088896341f - 0.5f, vi);  // round to nearest (xs <= 0)
  const vf fn = __builtin_convertvector(n, vf);
  vf r = xs - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  vf y = p * r * r + r + 1.0f;
  const vi bits = (n + 127) << 23;  // n in [-126, 0]: 2^n
  vf scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  y = y * scale;
  y = sel(tiny, zero, y);
  return sel(nan, x, y);
}

// log1p(e) for e in [0, 1]: 1 + e = 2^k (1 + f), f in [sqrt(.5) - 1, sqrt(2) - 1], f formed
// from e without rounding 1 + e, so tiny e keep their precision.
GANX_INLINE vf log1p_unit(vf e) {
  const vi hi = e > 0.41421356237f;
  const vf f = sel(hi, (e - 1.0f) * 0.5f, e);
  const vf k = sel(hi, splat(1.0f), splat(0.0f));
  const vf z = f * f;
  vf p = splat(7.0376836292e-2f);
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  vf y = p * f * z;
  y = y + k * -2.12194440e-4f;
  y = y + z * -0.5f;
  return f + y + k * 0.693359375f;
}

// Coefficient sources: constants (discriminator / generator) or per-element tensors; Hinge and
// Linear (Wasserstein) are the critic losses (constants sign0, margin0; no exp / log1p).
enum class Coef { Const, T, TW, TPW, TWPW, Hinge, Linear };

struct Out {
  vf loss, sig, pos;
};

// Elements [i, i + kV) of the arrays in a (one register).
template <Coef C>
GANX_INLINE Out element(const LogitArgs& a, int64_t i) {
  const vf zero = splat(0.0f), one = splat(1.0f);
  const vf l = load(a.x + i);
  if constexpr (C == Coef::Hinge || C == Coef::Linear) {  // critic_elem (bce_math.h)
    const vf u = l * a.sign0 + a.margin0;  // sign0 = +-1: exact product, one rounding with or without FMA
    const vf gs = splat(a.sign0 * a.grad_scale);
    vf g = gs, v = u;
    if constexpr (C == Coef::Hinge) {
      g = sel(u <= zero, zero, gs);  // a NaN passes the gradient, like torch's relu
      v = sel(u < zero, zero, u);  // relu keeping NaN
    }
    if (a.grad_out != nullptr) store(a.grad_out + i, g);
    if (a.loss_out != nullptr) store(a.loss_out + i, v);
    return {v, l, sel(l > zero, one, zero)};
  }
  vf cpos, cneg, wv;
  if constexpr (C == Coef::Const) {
    cpos = splat(a.cpos0);
    cneg = splat(a.cneg0);
    wv = splat(a.w0);
  } else {
    const vf tv = load(a.t + i);
    const vf pwv = (C == Coef::TPW || C == Coef::TWPW) ? load(a.pw + i) : splat(a.pw0);
    wv = (C == Coef::TW || C == Coef::TWPW) ? load(a.w + i) : splat(a.w0);
    cpos = pwv * tv;
    cneg = one - tv;
  }
  const vi neg = l < zero;
  const vf absl = sel(neg, -l, l);
  const vf e = exp_nonpos(-absl);
  const vf L = log1p_unit(e);
  const vf inv = one / (one + e);
  const vf einv = e * inv;
  const vi ge = l >= zero;
  const vf sig = sel(ge, inv, einv);      // sigmoid(l)
  const vf sig_neg = sel(ge, einv, inv);  // sigmoid(-l), no cancellation
  const vf pos_part = sel(neg, -l, zero);  // max(-l, 0)
  const vf neg_part = sel(l > zero, l, zero);  // max(l, 0)
  const vf ta = sel(cpos == zero, zero, cpos * pos_part);
  const vf tb = sel(cneg == zero, zero, cneg * neg_part);
  const vf g = (cneg * sig - cpos * sig_neg) * wv * a.grad_scale;
  const vf v = wv * (ta + tb + (cpos + cneg) * L);
  if (a.grad_out != nullptr) store(a.grad_out + i, g);
  if (a.loss_out != nullptr) store(a.loss_out + i, v);
  return {v, sig, sel(l > zero, one, zero)};
}

// Double accumulators of one float vector's kV lanes: lanes [0, kV/2) in lo, [kV/2, kV) in hi
// (float -> double conversion one register wide each).
struct Acc {
  vdh lo = {}, hi = {};
  GANX_INLINE void add(vf v) {
    vfh a, b;
    __builtin_memcpy(&a, &v, sizeof(a));
    __builtin_memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof(a), sizeof(b));
    lo = lo + __builtin_convertvector(a, vdh);
    hi = hi + __builtin_convertvector(b, vdh);
  }
  // lanes in order, added to s
  GANX_INLINE void sum_into(double& s) const {
    for (int k = 0; k < kV / 2; ++k) s += lo[k];
    for (int k = 0; k < kV / 2; ++k) s += hi[k];
  }
};

// Logical lane j of a 16-lane group is lane j % kV of register j / kV; every sum is per logical
// lane (over the 4-group unroll in float, then into double), and the lanes are added 0..15 at
// the end: the same order for every kV.
template <Coef C, bool Stats>
GANX_INLINE RangeSums sweep(const LogitArgs& args, int64_t begin, int64_t end) {
  // A local copy: the outputs' stores cannot alias it, so its constants stay in registers.
  const LogitArgs a = args;
  Acc dl[kH], ds[kH], dp[kH];
  int64_t i = begin;
  for (; i + kW * kUnroll <= end; i += kW * kUnroll) {
    for (int h = 0; h < kH; ++h) {
      vf fl = {}, fs = {}, fp = {};
      for (int k = 0; k < kUnroll; ++k) {
        const Out o = element<C>(a, i + k * kW + h * kV);
        fl = fl + o.loss;
        if (Stats) {
          fs = fs + o.sig;
          fp = fp + o.pos;
        }
      }
      dl[h].add(fl);
      if (Stats) {
        ds[h].add(fs);
        dp[h].add(fp);
      }
    }
  }
  // The rest, 16 lanes at a time; the last partial group goes through padded copies.
  for (; i < end; i += kW) {
    const int64_t n = end - i < kW ? end - i : kW;
    if (n == kW) {
      for (int h = 0; h < kH; ++h) {
        const Out o = element<C>(a, i + h * kV);
        dl[h].add(o.loss);
        if (Stats) {
          ds[h].add(o.sig);
          dp[h].add(o.pos);
        }
      }
      continue;
    }
    alignas(64) float xb[kW] = {}, tb[kW] = {}, wb[kW] = {}, pwb[kW] = {}, lb[kW], gb[kW];
    for (int64_t j = 0; j < n; ++j) {
      xb[j] = a.x[i + j];
      if (a.t) tb[j] = a.t[i + j];
      if (a.w) wb[j] = a.w[i + j];
      if (a.pw) pwb[j] = a.pw[i + j];
    }
    LogitArgs b = a;
    b.x = xb;
    b.t = a.t ? tb : nullptr;
    b.w = a.w ? wb : nullptr;
    b.pw = a.pw ? pwb : nullptr;
    b.loss_out = a.loss_out ? lb : nullptr;
    b.grad_out = a.grad_out ? gb : nullptr;
    const vf zero = splat(0.0f);
    for (int h = 0; h < kH; ++h) {
      Out o = element<C>(b, h * kV);
      vi lane;
      for (int j = 0; j < kV; ++j) lane[j] = h * kV + j;
      const vi live = lane < static_cast<int32_t>(n);
      dl[h].add(sel(live, o.loss, zero));
      if (Stats) {
        ds[h].add(sel(live, o.sig, zero));
        dp[h].add(sel(live, o.pos, zero));
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      if (a.loss_out) a.loss_out[i + j] = lb[j];
      if (a.grad_out) a.grad_out[i + j] = gb[j];
    }
  }
  RangeSums r;
  for (int h = 0; h < kH; ++h) {
    dl[h].sum_into(r.loss);
    ds[h].sum_into(r.sig);
    dp[h].sum_into(r.pos);
  }
  return r;
}

// The BCE forms (tests/test_bce_vec_codegen.py reads the hot loops of these range<...> copies: the
// exp / log1p polynomials on the ISA's registers) and the critic forms, on the same sweep.
template <Coef C, bool Stats>
RangeSums range(const LogitArgs& a, int64_t begin, int64_t end) {
  return sweep<C, Stats>(a, begin, end);
}

template <Coef C, bool Stats>
RangeSums critic_range(const LogitArgs& a, int64_t begin, int64_t end) {
  return sweep<C, Stats>(a, begin, end);
}

template <Coef C>
RangeSums range_stats(const LogitArgs& a, int64_t begin, int64_t end) {
  if constexpr (C == Coef::Hinge || C == Coef::Linear) {
    return a.want_stats ? critic_range<C, true>(a, begin, end) : critic_range<C, false>(a, begin, end);
  } else {
    return a.want_stats ? range<C, true>(a, begin, end) : range<C, false>(a, begin, end);
  }
}

}  // namespace

RangeSums logit_range(const LogitArgs& a, int64_t begin, int64_t end) {
  if (a.kind == 1) return range_stats<Coef::Hinge>(a, begin, end);
  if (a.kind == 2) return range_stats<Coef::Linear>(a, begin, end);
  if (a.t == nullptr) return range_stats<Coef::Const>(a, begin, end);
  if (a.w != nullptr && a.pw != nullptr) return range_stats<Coef::TWPW>(a, begin, end);
  if (a.w != nullptr) return range_stats<Coef::TW>(a, begin, end);
  if (a.pw != nullptr) return range_stats<Coef::TPW>(a, begin, end);
  return range_stats<Coef::T>(a, begin, end);
}

}  // namespace GANX_ISA
}  // namespace bce_vec
}  // namespace ganx
