// The geometry of the phase-decomposed upsample-conv layer and the host-side recipes of its
// weight folds (FoldArgs, csrc/upconv_epilogue.h): which original taps sum into which phase
// tap, for the four folds the op runs (fold_weight, unfold_weight_grad, deconv_weight,
// deconv_weight_grad in csrc/upsample_conv2d.cpp). Plain C++ on sizes and strides, no torch,
// so that the CUDA emulator's driver (tests/emu/upconv_driver.cpp) builds its FoldArgs with
// the very functions the op uses.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "upconv_epilogue.h"

namespace ganx {

// Largest supported scale factor and the supported (odd) kernel sizes.
constexpr int64_t kMaxScale = 4;
constexpr int64_t kMaxTaps = 5;  // taps per phase never exceed the kernel size (<= 5)

inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Nearest upsampling by s followed by a k x k "same" convolution (padding p = k/2) is, for
// output row oy = s*i + a (phase a), a correlation of the *input* rows i + d0[a] + t,
// t = 0..T-1, with a phase kernel whose tap t is the sum of the original taps ky with
// floor((a + ky - p) / s) == d0[a] + t. Phases with fewer distinct offsets than T get zero
// taps at the end, so every phase has the same T x T kernel.
enum class Fold : int64_t {
  UpsampleConv = 0,       // weight (C_out, C_in, k, k): phase taps are sums of original taps
  ConvTranspose4s2 = 1,   // weight (C_in, C_out, 4, 4) of ConvTranspose2d(4, stride 2, padding 1):
                          // phase taps are a selection of the original taps
};

struct UpConvGeometry {
  Fold fold = Fold::UpsampleConv;
  int64_t s = 2, k = 3, p = 1;
  int64_t T = 2;                            // taps per phase (per dimension)
  std::array<int64_t, kMaxScale> d0{};      // first input offset of each phase
  std::array<int64_t, kMaxScale> taps{};    // taps phase a really has (<= T; the rest are zero
                                            // padding that must not *read* x: 0 * NaN = NaN)
  int64_t pad_lo = 0, pad_hi = 0;           // zero padding of x that covers every phase
};

inline UpConvGeometry upconv_geometry(int64_t s, int64_t k, int64_t p) {
  UpConvGeometry g;
  g.s = s;
  g.k = k;
  g.p = p;
  int64_t T = 0, lo = 0, hi = 0;
  for (int64_t a = 0; a < s; ++a) {
    const int64_t first = floor_div(a - p, s);
    const int64_t last = floor_div(a + k - 1 - p, s);
    g.d0[a] = first;
    g.taps[a] = last - first + 1;
    T = std::max(T, last - first + 1);
  }
  g.T = T;
  for (int64_t a = 0; a < s; ++a) {
    lo = std::max(lo, -g.d0[a]);
    hi = std::max(hi, g.d0[a] + T - 1);
  }
  g.pad_lo = lo;
  g.pad_hi = hi;
  return g;
}

// ConvTranspose2d(k=4, s=2, p=1): out[2i + a] = sum_t x[i + d0[a] + t] * w[ky = a + 1 - 2 (d0[a] + t)]
// with d0 = {-1, 0} and T = 2 -- the geometry of upsample-conv with s = 2, k = 3.
inline UpConvGeometry conv_transpose4s2_geometry() {
  UpConvGeometry g = upconv_geometry(2, 3, 1);  // d0 = {-1, 0}, T = 2, pad 1/1
  g.fold = Fold::ConvTranspose4s2;
  g.k = 4;
  return g;
}

// ---------------------------------------------------------------- weight fold (exact sums)

namespace fold {

using TapLists = std::vector<std::vector<int32_t>>;

// Row r = a*T + t of the phase kernels: the original taps ky that sum into phase a's tap t.
inline TapLists phase_rows(const UpConvGeometry& g) {
  TapLists rows(g.s * g.T);
  for (int64_t a = 0; a < g.s; ++a) {
    if (g.fold == Fold::UpsampleConv) {
      for (int64_t ky = 0; ky < g.k; ++ky)
        rows[a * g.T + floor_div(a + ky - g.p, g.s) - g.d0[a]].push_back(static_cast<int32_t>(ky));
    } else {  // transposed conv, k = 4, s = 2, p = 1: tap t of phase a is ky = a + 1 - 2 (d0[a] + t)
      for (int64_t t = 0; t < 2; ++t) rows[a * g.T + t].push_back(static_cast<int32_t>(a + 1 - 2 * (g.d0[a] + t)));
    }
  }
  return rows;
}

// Row ky4 of the interleaved 4x4 transposed-conv kernel = phase a's tap t with ky4 = a + 1 - 2 (d0[a] + t).
inline TapLists deconv_rows(const UpConvGeometry& g) {
  const TapLists ph = phase_rows(g);
  TapLists rows(4);
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t t = 0; t < 2; ++t) rows[a + 1 - 2 * (g.d0[a] + t)] = ph[a * g.T + t];
  return rows;
}

// The transpose of a fold: destination tap ky collects the rows whose lists contain it.
inline TapLists transpose_rows(const TapLists& rows, int64_t n_taps) {
  TapLists inv(n_taps);
  for (size_t r = 0; r < rows.size(); ++r)
    for (int32_t ky : rows[r]) inv[ky].push_back(static_cast<int32_t>(r));
  return inv;
}

// Throws std::logic_error past FoldArgs' fixed capacity (the op's checks keep s <= 4, k <= 5).
inline FoldArgs fold_args(const TapLists& rows, int64_t n0, int64_t n1) {
  if (rows.size() > static_cast<size_t>(kMaxFoldRows))
    throw std::logic_error("upconv fold: " + std::to_string(rows.size()) + " rows exceed kMaxFoldRows");
  FoldArgs f{};
  f.n0 = n0;
  f.n1 = n1;
  f.rows_dst = static_cast<int32_t>(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() > static_cast<size_t>(kMaxFoldList))
      throw std::logic_error("upconv fold: a row sums " + std::to_string(rows[r].size()) + " taps (> kMaxFoldList)");
    f.count[r] = static_cast<int32_t>(rows[r].size());
    for (size_t x = 0; x < rows[r].size(); ++x) f.list[r][x] = rows[r][x];
  }
  return f;
}

// A k x k kernel (4-D sizes / strides) with its "out" / "in" channel dims at (d_o, d_i).
inline FoldIndex plain_index(const int64_t* sizes, const int64_t* strides, int64_t d_o, int64_t d_i) {
  return {strides[d_o], strides[d_i], 0, strides[2], 0, strides[3], static_cast<int32_t>(sizes[2])};
}
// Phase kernels [s, s, C_out, C_in, T, T] (6-D): row (a, t) at a * stride(0) + t * stride(4).
inline FoldIndex phase_index(const int64_t* sizes, const int64_t* strides) {
  return {strides[2], strides[3], strides[0], strides[4], strides[1], strides[5], static_cast<int32_t>(sizes[4])};
}

inline int64_t w_out_dim(const UpConvGeometry& g) { return g.fold == Fold::UpsampleConv ? 0 : 1; }

// The four folds of the op, on the sizes / strides of their tensors (w: the op's weight;
// wf: the phase kernels [s, s, C_out, C_in, T, T]; w4: the (C_in, C_out, 4, 4) deconv kernel).
// fold_weight: wf = fold(w)
inline FoldArgs weight_fold(const UpConvGeometry& g, const int64_t* w_sizes, const int64_t* w_strides,
                            const int64_t* wf_sizes, const int64_t* wf_strides) {
  const int64_t d_o = w_out_dim(g), d_i = 1 - d_o;
  FoldArgs f = fold_args(phase_rows(g), w_sizes[d_o], w_sizes[d_i]);
  f.src = plain_index(w_sizes, w_strides, d_o, d_i);
  f.dst = phase_index(wf_sizes, wf_strides);
  return f;
}
// unfold_weight_grad: gw (sizes of w) = fold^T(gwf)
inline FoldArgs weight_unfold(const UpConvGeometry& g, const int64_t* gwf_sizes, const int64_t* gwf_strides,
                              const int64_t* gw_sizes, const int64_t* gw_strides) {
  const int64_t d_o = w_out_dim(g), d_i = 1 - d_o;
  FoldArgs f = fold_args(transpose_rows(phase_rows(g), g.k), gw_sizes[d_o], gw_sizes[d_i]);
  f.src = phase_index(gwf_sizes, gwf_strides);
  f.dst = plain_index(gw_sizes, gw_strides, d_o, d_i);
  return f;
}
// deconv_weight (upsample-conv, s = 2, k = 3 only): w4 = the 4x4 transposed-conv kernel of w
inline FoldArgs deconv_fold(const UpConvGeometry& g, const int64_t* w_sizes, const int64_t* w_strides,
                            const int64_t* w4_sizes, const int64_t* w4_strides) {
  FoldArgs f = fold_args(deconv_rows(g), w_sizes[0], w_sizes[1]);
  f.src = plain_index(w_sizes, w_strides, 0, 1);
  f.dst = plain_index(w4_sizes, w4_strides, 1, 0);
  return f;
}
// deconv_weight_grad: gw (sizes of w) = deconv_fold^T(gw4)
inline FoldArgs deconv_unfold(const UpConvGeometry& g, const int64_t* gw4_sizes, const int64_t* gw4_strides,
                              const int64_t* gw_sizes, const int64_t* gw_strides) {
  FoldArgs f = fold_args(transpose_rows(deconv_rows(g), g.k), gw_sizes[0], gw_sizes[1]);
  f.src = plain_index(gw4_sizes, gw4_strides, 1, 0);
  f.dst = plain_index(gw_sizes, gw_strides, 0, 1);
  return f;
}

}  // namespace fold
}  // namespace ganx
