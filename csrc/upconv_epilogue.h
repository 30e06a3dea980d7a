// Raw-pointer arguments of the upsample-conv glue kernels, shared by the CPU twins
// (csrc/cpu/upconv_epilogue.h) and the CUDA kernels (csrc/cuda/kernels/upconv_epilogue.cuh).
// Plain C++, no torch: the emulator tests build both from these headers.
//
// The vendor convolution leaves the layer's output as s*s *phase* maps: phase (a, b) holds
// out[n, o, s*i + a, s*j + b] (before bias and activation) at
//     phase[a*s + b][n*ps.n + o*ps.c + i*ps.h + j*ps.w],   i < H, j < W
// (a window of one stacked conv output, one of s*s per-phase outputs, or, for s = 1, the
// already interleaved output of the folded transposed conv). The forward epilogue crops and
// interleaves them, adds the bias and applies the activation in one pass; the backward
// epilogue applies the activation's derivative, de-interleaves into the phase maps and sums the
// bias gradient, in one pass.
#pragma once

#include <cstdint>

#include "activation.h"

namespace ganx {

constexpr int kMaxPhases = 16;  // s <= 4

struct Strides4 {
  int64_t n, c, h, w;
};

template <typename scalar_t>
struct EpilogueFwdArgs {
  const scalar_t* phase[kMaxPhases];
  Strides4 ps;                // strides of every phase map
  const scalar_t* bias;       // C entries, or nullptr
  scalar_t* out;              // N x C x (s*H) x (s*W); may alias phase[0] when s == 1
  Strides4 os;
  int64_t N, C, H, W;         // sizes of one phase map
  int32_t s;
  Act act;
  double slope;
};

// bias_partial (acc type, or nullptr): per-(n, o[, chunk]) partial sums of d pre, laid out as
// the launcher documents; the caller reduces them in a fixed order (deterministic).
template <typename scalar_t, typename acc_t>
struct EpilogueBwdArgs {
  const scalar_t* grad;       // grad_out, N x C x (s*H) x (s*W)
  Strides4 gs;
  const scalar_t* out;        // the forward's output (only read when act != None)
  Strides4 os;
  scalar_t* phase[kMaxPhases];
  Strides4 ps;
  acc_t* bias_partial;
  int64_t N, C, H, W;
  int32_t s;
  Act act;
  double slope;
};

// The weight fold and its transpose are sums of taps: for every (d0, d1) in n0 x n1 and
// every destination row r < rows_dst, column q < rows_dst,
//     dst[d0, d1, r, q] = sum_{p in list[r], u in list[q]} src[d0, d1, p, u]
// accumulated in float64 (exact for the few taps of a fold, rounded once into dst's dtype;
// never 0 * x, so an inf tap stays where it belongs). A row index r is placed at
// (r / inner) * hi + (r % inner) * lo in its tensor, so one map serves the (s, s, C_out, C_in, T, T)
// phase-kernel layout, the (C_in, C_out, 4, 4) transposed-conv layout and the k x k weight.
constexpr int kMaxFoldRows = 20;  // s * T <= 4 * 5
constexpr int kMaxFoldList = 5;   // taps summed into one row (fold) or rows summed into one tap (unfold)

struct FoldIndex {
  int64_t s0, s1;             // strides of dims 0 and 1
  int64_t hi, lo;             // row placement (see above), the same for columns with their own strides
  int64_t col_hi, col_lo;
  int32_t inner;
};

struct FoldArgs {
  int64_t n0, n1;
  int32_t rows_dst;
  int32_t count[kMaxFoldRows];
  int32_t list[kMaxFoldRows][kMaxFoldList];
  FoldIndex src, dst;
};

GANX_HD int64_t fold_offset(const FoldIndex& ix, int64_t d0, int64_t d1, int32_t r, int32_t q) {
  return d0 * ix.s0 + d1 * ix.s1 + (r / ix.inner) * ix.hi + (r % ix.inner) * ix.lo + (q / ix.inner) * ix.col_hi +
         (q % ix.inner) * ix.col_lo;
}

}  // namespace ganx
