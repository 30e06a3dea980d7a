// CPU twins of the upsample-conv glue kernels (csrc/cuda/kernels/upconv_epilogue.cuh): the
// same arguments and the same arithmetic (fp32 for half inputs, bias added and activation
// applied in the accumulation type), on raw pointers, one work unit per call so the caller
// picks the threading (at::parallel_for in cpu/upsample_conv2d.cpp, a plain loop in the
// emulator tests). No torch dependency.
//
// Two traversals of the same math: per (n, o) plane, rows of W contiguous elements (NCHW), or
// per (n, i) input row with the channels innermost (channels_last), so that the inner loop walks
// memory with unit stride in either layout.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../upconv_epilogue.h"

namespace ganx {
namespace cpu {

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

// The activation over a contiguous buffer, element by element; the CPU kernels pass a
// vectorised one instead (same results up to the vector math's rounding).
struct ScalarRowAct {
  template <typename acc_t>
  void operator()(acc_t* v, int64_t len, Act act, acc_t slope) const {
    for (int64_t j = 0; j < len; ++j) v[j] = act_forward(act, v[j], slope);
  }
};

// Plane (n, o): out[n, o, s*i + a, s*j + b] = act(phase[a*s + b][n, o, i, j] + bias[o]).
// tmp: W accumulation-type elements of scratch.
template <typename scalar_t, typename RowAct>
void epilogue_fwd_plane(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t o, acc_of<scalar_t>* tmp,
                        const RowAct& row_act) {
  using acc_t = acc_of<scalar_t>;
  const acc_t b = A.bias ? static_cast<acc_t>(A.bias[o]) : acc_t(0);
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  for (int64_t i = 0; i < A.H; ++i) {
    for (int64_t a = 0; a < s; ++a) {
      scalar_t* dst_row = A.out + n * A.os.n + o * A.os.c + (s * i + a) * A.os.h;
      for (int64_t c = 0; c < s; ++c) {
        const scalar_t* src = A.phase[a * s + c] + n * A.ps.n + o * A.ps.c + i * A.ps.h;
        if (A.ps.w == 1) {
          for (int64_t j = 0; j < A.W; ++j) tmp[j] = static_cast<acc_t>(src[j]) + b;
        } else {
          for (int64_t j = 0; j < A.W; ++j) tmp[j] = static_cast<acc_t>(src[j * A.ps.w]) + b;
        }
        row_act(tmp, A.W, A.act, slope);
        scalar_t* dst = dst_row + c * A.os.w;
        const int64_t step = s * A.os.w;
        if (step == 1) {
          for (int64_t j = 0; j < A.W; ++j) dst[j] = static_cast<scalar_t>(tmp[j]);
        } else {
          for (int64_t j = 0; j < A.W; ++j) dst[j * step] = static_cast<scalar_t>(tmp[j]);
        }
      }
    }
  }
}

// Input row (n, i), all channels innermost. tmp: C elements of scratch.
template <typename scalar_t, typename RowAct>
void epilogue_fwd_row(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t i, acc_of<scalar_t>* tmp,
                      const RowAct& row_act) {
  using acc_t = acc_of<scalar_t>;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  for (int64_t a = 0; a < s; ++a) {
    for (int64_t j = 0; j < A.W; ++j) {
      for (int64_t c = 0; c < s; ++c) {
        const scalar_t* src = A.phase[a * s + c] + n * A.ps.n + i * A.ps.h + j * A.ps.w;
        for (int64_t o = 0; o < A.C; ++o)
          tmp[o] = static_cast<acc_t>(src[o * A.ps.c]) + (A.bias ? static_cast<acc_t>(A.bias[o]) : acc_t(0));
        row_act(tmp, A.C, A.act, slope);
        scalar_t* dst = A.out + n * A.os.n + (s * i + a) * A.os.h + (s * j + c) * A.os.w;
        for (int64_t o = 0; o < A.C; ++o) dst[o * A.os.c] = static_cast<scalar_t>(tmp[o]);
      }
    }
  }
}

// Plane (n, o) of the backward: phase[a*s + b][n, o, i, j] = act'(out) * grad at
// (n, o, s*i + a, s*j + b); returns the plane's sum of d pre (the bias gradient's share).
template <typename scalar_t>
double epilogue_bwd_plane(const EpilogueBwdArgs<scalar_t, double>& A, int64_t n, int64_t o) {
  using acc_t = acc_of<scalar_t>;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  double total = 0;
  for (int64_t i = 0; i < A.H; ++i) {
    acc_t row_sum = 0;  // one row in the accumulation type, rows in float64
    for (int64_t a = 0; a < s; ++a) {
      const int64_t y = s * i + a;
      const scalar_t* g_row = A.grad + n * A.gs.n + o * A.gs.c + y * A.gs.h;
      const scalar_t* y_row = A.act != Act::None ? A.out + n * A.os.n + o * A.os.c + y * A.os.h : nullptr;
      for (int64_t c = 0; c < s; ++c) {
        scalar_t* dst = A.phase[a * s + c] + n * A.ps.n + o * A.ps.c + i * A.ps.h;
        for (int64_t j = 0; j < A.W; ++j) {
          const int64_t x = s * j + c;
          const acc_t g = static_cast<acc_t>(g_row[x * A.gs.w]);
          const acc_t d = y_row ? act_backward(A.act, g, static_cast<acc_t>(y_row[x * A.os.w]), slope) : g;
          const scalar_t d_s = static_cast<scalar_t>(d);
          dst[j * A.ps.w] = d_s;
          row_sum += static_cast<acc_t>(d_s);
        }
      }
    }
    total += row_sum;
  }
  return total;
}

// Input row (n, i) of the backward, channels innermost; adds the row's d pre sums per channel
// into partial[0..C).
template <typename scalar_t>
void epilogue_bwd_row(const EpilogueBwdArgs<scalar_t, double>& A, int64_t n, int64_t i, double* partial) {
  using acc_t = acc_of<scalar_t>;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  for (int64_t a = 0; a < s; ++a) {
    const int64_t y = s * i + a;
    for (int64_t j = 0; j < A.W; ++j) {
      for (int64_t c = 0; c < s; ++c) {
        const int64_t x = s * j + c;
        const scalar_t* g = A.grad + n * A.gs.n + y * A.gs.h + x * A.gs.w;
        const scalar_t* yv = A.act != Act::None ? A.out + n * A.os.n + y * A.os.h + x * A.os.w : nullptr;
        scalar_t* dst = A.phase[a * s + c] + n * A.ps.n + i * A.ps.h + j * A.ps.w;
        for (int64_t o = 0; o < A.C; ++o) {
          const acc_t gv = static_cast<acc_t>(g[o * A.gs.c]);
          const acc_t d = yv ? act_backward(A.act, gv, static_cast<acc_t>(yv[o * A.os.c]), slope) : gv;
          const scalar_t d_s = static_cast<scalar_t>(d);
          dst[o * A.ps.c] = d_s;
          partial[o] += static_cast<double>(d_s);
        }
      }
    }
  }
}

// Fold / unfold for one (d0, d1): every destination tap (see FoldArgs).
template <typename scalar_t>
void fold_taps(const FoldArgs& F, const scalar_t* src, scalar_t* dst, int64_t d0, int64_t d1) {
  for (int32_t r = 0; r < F.rows_dst; ++r) {
    for (int32_t q = 0; q < F.rows_dst; ++q) {
      double acc = 0;
      for (int32_t x = 0; x < F.count[r]; ++x)
        for (int32_t y = 0; y < F.count[q]; ++y)
          acc += static_cast<double>(src[fold_offset(F.src, d0, d1, F.list[r][x], F.list[q][y])]);
      dst[fold_offset(F.dst, d0, d1, r, q)] = static_cast<scalar_t>(acc);
    }
  }
}

}  // namespace cpu
}  // namespace ganx
