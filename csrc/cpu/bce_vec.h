// Interface of the SIMD kernel of the logit BCE losses (bce_vec.cpp). That file is compiled
// once per x86 instruction set (baseline, AVX2, AVX-512), each copy in its own namespace, and
// cpu/bce_loss.cpp picks one at run time from the capability torch itself uses
// (ATEN_CPU_CAPABILITY is honoured). This header is plain C++ with no ATen include, so the
// ISA-specific objects never emit an inline ATen function the linker could pick for everyone.
//
// The source sums over fixed 16 logical lanes in a fixed order (held in 1, 2 or 4 machine
// registers: every vector type is exactly one register of the copy's ISA, see bce_vec.cpp), so
// the lane count of the hardware never changes a result. The AVX2 and AVX-512 copies are compiled with FMA and
// contract the same multiply-adds: their results are bit-identical. The baseline copy has no
// FMA and differs from them by rounding (a few ulp). Tests run every copy through
// ATEN_CPU_CAPABILITY=default/avx2/avx512 and compare.
#pragma once

#include <cstdint>

namespace ganx {
namespace bce_vec {

// Per element i with logit l = x[i]:
//   cpos, cneg = (t == nullptr) ? (cpos0, cneg0) : (pw_i * t[i], 1 - t[i]),  pw_i = pw ? pw[i] : pw0
//   w_i = w ? w[i] : w0
//   loss_i = w_i * (cpos softplus(-l) + cneg softplus(l))   (a term with zero coefficient is dropped)
//   grad_i = w_i * (cneg sigmoid(l) - cpos sigmoid(-l)) * grad_scale
// loss_out / grad_out (either may be null) receive loss_i / grad_i; the range's sums come back.
struct LogitArgs {
  const float* x = nullptr;
  const float* t = nullptr;
  const float* w = nullptr;
  const float* pw = nullptr;
  float cpos0 = 1, cneg0 = 0, w0 = 1, pw0 = 1;
  float grad_scale = 1;
  float* loss_out = nullptr;
  float* grad_out = nullptr;
  bool want_stats = false;  // also sum sigmoid(l) and count l > 0
  // kind 1 (relu form: hinge D) / 2 (linear form: Wasserstein D, every G): the critic losses instead (t, w, pw unused), per element
  //   u = margin0 + sign0 * l,  loss_i = kind 1 ? relu(u) : u,
  //   grad_i = sign0 * (kind 1 ? [not u <= 0] : 1) * grad_scale   (bce_math.h critic_elem)
  // and the statistic summed is l itself (the raw score), not sigmoid(l).
  int kind = 0;
  float sign0 = -1, margin0 = 0;
};

struct RangeSums {
  double loss = 0;  // sum of loss_i
  double sig = 0;   // sum of sigmoid(l) (critic kinds: of l)   (want_stats)
  double pos = 0;   // number of l > 0            (want_stats)
};

// Elements [begin, end) of the arrays in args. The result depends only on the values in the
// range and on `begin - end`, never on the instruction set or on where the arrays lie.
using LogitRangeFn = RangeSums (*)(const LogitArgs& args, int64_t begin, int64_t end);

namespace isa_default {
RangeSums logit_range(const LogitArgs& args, int64_t begin, int64_t end);
}
#if defined(GANX_HAVE_X86_ISAS)
namespace isa_avx2 {
RangeSums logit_range(const LogitArgs& args, int64_t begin, int64_t end);
}
namespace isa_avx512 {
RangeSums logit_range(const LogitArgs& args, int64_t begin, int64_t end);
}
#endif

}  // namespace bce_vec
}  // namespace ganx
