// The upsample-conv header: argument checks, the geometry of the phase-decomposed layer and
// the ATen composition that serves both devices (csrc/upsample_conv2d.cpp), shared by both ops
// that use it: upsample_conv2d (nearest upsampling + "same" conv) and conv_transpose2d_4s2
// (ConvTranspose2d(4, stride 2, padding 1); its own file: csrc/conv_transpose2d_4s2.cpp).
//
// How a call runs (docs/design.md section 3): the phase GEMM is the vendor's convolution (cuDNN on
// CUDA, oneDNN on the CPU) in one of three forms (the algorithms, see UpconvAlgo), and ganx's
// own glue kernels (csrc/cpu/upconv_epilogue.h, csrc/cuda/kernels/upconv_epilogue.cuh) fold
// the weight and crop / interleave / bias / activate the result in one pass (backward: the
// reverse in one pass).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "activation.h"
#include "upconv_epilogue.h"
#include "upconv_fold.h"

namespace torch {
class Library;
}  // namespace torch

namespace ganx {

// "none" | "relu" | ... (the table in activation.h); anything else is a ValueError naming the op.
Act parse_activation(c10::string_view name, double negative_slope, const char* op = "upsample_conv2d");

// Fold, UpConvGeometry, upconv_geometry(), conv_transpose4s2_geometry(), kMaxScale, floor_div
// and the fold recipes: upconv_fold.h (torch-free, shared with the CUDA emulator tests).

// Checks shared by both ops; `w_in` / `w_out` are the weight dims holding C_in / C_out.
void check_phase_conv_common(const char* op, const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, int64_t w_in, int64_t w_out);
// Every user-facing check of upsample_conv2d (raises with the op and argument named).
void check_upsample_conv2d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, int64_t scale, int64_t padding);
// Checks of conv_transpose2d_4s2 (weight in ConvTranspose2d's (C_in, C_out, 4, 4) layout).
void check_conv_transpose4s2_inputs(const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias);

// The memory format of the op's output and of grad_x: x's suggest_memory_format() (the
// fake kernels in python/ganx/ops/upsample_conv.py mirror this rule).
at::MemoryFormat output_format(const at::Tensor& x);

// ---------------------------------------------------------------- algorithms
//   deconv:  s = 2 with 2x2 phase kernels -- one stride-2 transposed conv with the 4x4 kernel
//            the phase kernels interleave into (the vendor writes the interleaved output;
//            the epilogue is bias + activation in place);
//   stacked: all phase kernels as the output channels of one stride-1 conv of the padded x;
//            the epilogue crops each phase's window and interleaves;
//   split:   one conv per phase (phases with unequal tap counts, and small maps on the CPU);
//   replicate: 1x1 kernels (every phase kernel is the weight itself): nearest upsampling commutes
//            with a 1x1 convolution, so the conv runs once at the input resolution (s*s fewer
//            multiply-adds than any other form) and the epilogue adds the bias, activates and
//            writes each value to its s x s block (backward: the block sums, then the 1x1 conv's
//            own backward at the input resolution).
enum class UpconvAlgo : int { Deconv = 0, Stacked = 1, Split = 2, Replicate = 3 };
const char* algo_name(UpconvAlgo a);
bool algo_available(UpconvAlgo a, const UpConvGeometry& g);

// The forced algorithm ("" = automatic), from GANX_UPCONV_ALGO or set_forced_algorithm().
void set_forced_algorithm(const std::string& name);
std::string forced_algorithm();
// One entry per (op, direction, shapes, dtype, memory format, device) seen: the algorithm and
// how it was chosen ("rule", "timed", "forced").
struct AlgoChoice {
  std::string key, algo, source;
};
std::vector<AlgoChoice> algorithm_choices();
void clear_algorithm_choices();

// ---------------------------------------------------------------- device glue kernels
// The phase maps the epilogue reads (forward) or writes (backward): tensors.size() == 1 means
// every phase lies in tensors[0] at element offset offset[ab]; otherwise tensors[ab] is phase
// ab (offset 0). All maps share tensors[0]'s strides.
struct PhaseMaps {
  std::vector<at::Tensor> tensors;
  std::array<int64_t, kMaxPhases> offset{};
};

// The epilogue kernels' raw arguments, packed once for both devices' glue.
inline Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }
// The epilogue walks a tensor as channels_last when its channel stride is 1 (c10 calls an
// N x 1 x H x W tensor contiguous, so C == 1 is always walked as NCHW).
inline bool epilogue_channels_last(const at::Tensor& t) { return t.stride(1) == 1 && t.size(1) > 1; }

// Every phase map's pointer (phase[ab]: tensors[ab], or tensors[0] at offset[ab]); returns
// the maps' common strides.
template <typename ptr_t>
Strides4 phase_pointers(const PhaseMaps& ph, int64_t s, ptr_t (&phase)[kMaxPhases]) {
  using scalar_t = std::remove_const_t<std::remove_pointer_t<ptr_t>>;
  const auto& t0 = ph.tensors[0];
  for (int64_t ab = 0; ab < s * s; ++ab) {
    const auto& t = ph.tensors.size() == 1 ? t0 : ph.tensors[ab];
    phase[ab] = t.template data_ptr<scalar_t>() + ph.offset[ab];
  }
  return strides_of(t0);
}

// The sizes of one phase map (t: the output or grad_out, s*H x s*W) and the activation, as both
// argument structs hold them.
template <typename Args>
void set_epilogue_sizes(Args& A, const at::Tensor& t, int64_t s, Act act, double slope) {
  A.N = t.size(0);
  A.C = t.size(1);
  A.H = t.size(2) / s;
  A.W = t.size(3) / s;
  A.s = static_cast<int32_t>(s);
  A.act = act;
  A.slope = slope;
}

template <typename scalar_t>
EpilogueFwdArgs<scalar_t> epilogue_fwd_args(const PhaseMaps& ph, const at::Tensor& out, const at::Tensor& bias,
                                            int64_t s, Act act, double slope) {
  EpilogueFwdArgs<scalar_t> A{};
  A.ps = phase_pointers(ph, s, A.phase);
  A.bias = bias.defined() ? bias.template const_data_ptr<scalar_t>() : nullptr;
  A.out = out.template data_ptr<scalar_t>();
  A.os = strides_of(out);
  set_epilogue_sizes(A, out, s, act, slope);
  return A;
}

// bias_partial: where the kernel writes its per-unit bias-gradient partials (nullptr: none).
template <typename scalar_t, typename acc_t>
EpilogueBwdArgs<scalar_t, acc_t> epilogue_bwd_args(const at::Tensor& grad, const at::Tensor& out, const PhaseMaps& ph,
                                                   int64_t s, Act act, double slope, acc_t* bias_partial) {
  EpilogueBwdArgs<scalar_t, acc_t> A{};
  A.grad = grad.template const_data_ptr<scalar_t>();
  A.gs = strides_of(grad);
  A.out = act != Act::None ? out.template const_data_ptr<scalar_t>() : nullptr;
  A.os = act != Act::None ? strides_of(out) : Strides4{0, 0, 0, 0};
  A.ps = phase_pointers(ph, s, A.phase);
  A.bias_partial = bias_partial;
  set_epilogue_sizes(A, grad, s, act, slope);
  return A;
}

struct DeviceGlue {
  // out = act(interleave(phases) + bias); out may be phases.tensors[0] itself when s == 1.
  void (*epilogue_fwd)(const PhaseMaps& ph, const at::Tensor& out, const at::Tensor& bias, int64_t s, Act act,
                       double slope);
  // phases = de-interleave(act'(out) * grad); returns the bias gradient (dtype of grad) if
  // need_bias, else an undefined tensor.
  at::Tensor (*epilogue_bwd)(const at::Tensor& grad, const at::Tensor& out, const PhaseMaps& ph, int64_t s, Act act,
                             double slope, bool need_bias);
  // The replicate form (1x1 kernels), y the convolution at the input resolution:
  // out[n, o, s*i + a, s*j + b] = act(y[n, o, i, j] + bias[o]).
  void (*replicate_fwd)(const at::Tensor& y, const at::Tensor& out, const at::Tensor& bias, int64_t s, Act act,
                        double slope);
  // g_low[n, o, i, j] = sum over the block (a, b) of act'(out) * grad at (n, o, s*i + a, s*j + b);
  // returns the bias gradient (the sum of g_low, dtype of grad) if need_bias, else undefined.
  at::Tensor (*replicate_bwd)(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& g_low, int64_t s,
                              Act act, double slope, bool need_bias);
  // dst = the tap sums of FoldArgs over src (see upconv_epilogue.h).
  void (*fold)(const FoldArgs& f, const at::Tensor& src, const at::Tensor& dst);
  // Both act on the given device's current stream (a device guard of their own: with tensors
  // on cuda:1 and the current device 0 they must not wait on, or ask about, cuda:0's stream).
  void (*synchronize)(c10::Device device);  // for timing candidates
  bool (*capturing)(c10::Device device);    // a CUDA graph is being captured on device's current stream
};
// Tests only: makes the CPU glue report a graph capture in progress (csrc/cpu/upsample_conv2d.cpp).
void set_simulated_cpu_capture(bool on);
// Each device file registers its glue at static-initialisation time.
void register_device_glue(c10::DeviceType type, const DeviceGlue& glue);
const DeviceGlue& device_glue(const at::Tensor& t, const char* op);

// Folded phase kernels [s, s, C_out, C_in, T, T] (dtype of weight) computed on weight's device
// by exact sums in float64 (one rounding per tap), and the transpose of the folding.
at::Tensor fold_weight(const at::Tensor& weight, const UpConvGeometry& g);
at::Tensor unfold_weight_grad(const at::Tensor& grad_folded, const UpConvGeometry& g, const at::Tensor& weight);

// ---------------------------------------------------------------- the ops, written once
at::Tensor phase_conv_op(const char* op, const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, const UpConvGeometry& g,
                         const std::string& activation, double negative_slope);
std::tuple<at::Tensor, at::Tensor, at::Tensor> phase_conv_backward_op(
    const char* op, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out, bool has_bias, const UpConvGeometry& g, const std::string& activation,
    double negative_slope, std::array<bool, 3> output_mask);

// out = act(x) elementwise (x 4-D, out in x's memory format) by the epilogue kernels (s = 1, no
// bias): the autograd applies an activation whose backward reads its input (the table's
// ActRef::Input) to the pre-activation it saves (csrc/autograd.cpp).
at::Tensor activation_op(const at::Tensor& x, c10::string_view activation, double negative_slope);
at::Tensor upsample_conv2d(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           int64_t scale, int64_t padding, c10::string_view activation, double negative_slope);
std::tuple<at::Tensor, at::Tensor, at::Tensor> upsample_conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, int64_t scale, int64_t padding, c10::string_view activation, double negative_slope,
    std::array<bool, 3> output_mask);
at::Tensor conv_transpose2d_4s2(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                c10::string_view activation, double negative_slope);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_transpose2d_4s2_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, c10::string_view activation, double negative_slope, std::array<bool, 3> output_mask);

// Registers the kernels above (the phase-conv ops, their backward, activation) under m's dispatch
// key: the same functions serve every device (the composition reaches each device's glue through
// device_glue), so the CPU and CUDA files register this one list.
void register_phase_conv_kernels(torch::Library& m);

}  // namespace ganx
