// CUDA glue of the phase-decomposed layer (upsample_conv2d and conv_transpose2d_4s2): tensors,
// dtype dispatch, device guard and current stream around the kernels of
// kernels/upconv_epilogue.cuh (the phase epilogues, the 1x1 kernels' replicate form, the folds),
// and the registration of the ops, whose composition (cuDNN convolutions + these kernels) lives
// in csrc/upsample_conv2d.cpp.
//
// ganx's former direct CUDA convolution (shared-memory tiled, CUDA cores) is gone: cuDNN's
// tensor-core convolutions do the phase GEMM (issue 14); no measurement on hardware has yet
// shown a shape where a hand-written convolution would win.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraphsUtils.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/kernels/upconv_epilogue.cuh"
#include "upsample_conv2d.h"

namespace ganx {
namespace {

// The glue kernels' host side, written once for both forms: kReplicate picks the replicate form's
// plan and launchers (1x1 kernels: ph is the one input-resolution map, y forward, g_low backward),
// otherwise the phase epilogue's (ph the s*s phase maps).
template <bool kReplicate>
void glue_fwd_cuda(const PhaseMaps& ph, const at::Tensor& out, const at::Tensor& bias, int64_t s, Act act,
                   double slope) {
  if (out.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const bool cl = epilogue_channels_last(out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(),
                                  kReplicate ? "upconv_replicate_fwd" : "upconv_epilogue_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto A = epilogue_fwd_args<scalar_t>(ph, out, bias, s, act, slope);
    if constexpr (kReplicate) {
      cuda::launch_upconv_replicate_fwd<scalar_t, acc_t>(A, cl, stream.stream());
    } else {
      cuda::launch_upconv_epilogue_fwd<scalar_t, acc_t>(A, cl, stream.stream());
    }
  });
}

// Returns the bias gradient if need_bias (else undefined).
template <bool kReplicate>
at::Tensor glue_bwd_cuda(const at::Tensor& grad, const at::Tensor& out, const PhaseMaps& ph, int64_t s, Act act,
                         double slope, bool need_bias) {
  // the sizes of the map(s) the kernels write: a phase map, or g_low (both H x W)
  const int64_t N = grad.size(0), C = grad.size(1), H = grad.size(2) / s, W = grad.size(3) / s;
  if (grad.numel() == 0) return need_bias ? at::zeros({C}, grad.options()) : at::Tensor();
  const c10::cuda::CUDAGuard guard(grad.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  const bool cl = epilogue_channels_last(grad);
  const auto plan = kReplicate ? cuda::upconv_replicate_bwd_plan(N, C, H, W, cl)
                               : cuda::upconv_epilogue_bwd_plan(N, C, H, W, s, cl);
  TORCH_CHECK(plan.blocks < (int64_t(1) << 31), "upsample_conv2d_backward: grad_out of shape ", grad.sizes(),
              " is too large for the backward epilogue's grid");
  const auto acc_dtype = at::toOpMathType(grad.scalar_type());
  // Scratch partials [parts][C] and the bias gradient, both written whole by the kernels.
  at::Tensor partial = need_bias ? at::empty({plan.parts * C}, grad.options().dtype(acc_dtype)) : at::Tensor();
  at::Tensor gb = need_bias ? at::empty({C}, grad.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  kReplicate ? "upconv_replicate_bwd" : "upconv_epilogue_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto A = epilogue_bwd_args<scalar_t, acc_t>(grad, out, ph, s, act, slope,
                                                      need_bias ? partial.data_ptr<acc_t>() : nullptr);
    scalar_t* bias_grad = need_bias ? gb.data_ptr<scalar_t>() : nullptr;
    if constexpr (kReplicate) {
      cuda::launch_upconv_replicate_bwd<scalar_t, acc_t>(A, plan, bias_grad, stream.stream());
    } else {
      cuda::launch_upconv_epilogue_bwd<scalar_t, acc_t>(A, plan, bias_grad, stream.stream());
    }
  });
  return gb;
}

// The replicate form of 1x1 kernels: out = act(y + bias) over each s x s block.
void replicate_fwd_cuda(const at::Tensor& y, const at::Tensor& out, const at::Tensor& bias, int64_t s, Act act,
                        double slope) {
  glue_fwd_cuda<true>(PhaseMaps{{y}, {}}, out, bias, s, act, slope);
}

// g_low = the block sums of act'(out) * grad; returns the bias gradient if need_bias.
at::Tensor replicate_bwd_cuda(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& g_low, int64_t s,
                              Act act, double slope, bool need_bias) {
  return glue_bwd_cuda<true>(grad, out, PhaseMaps{{g_low}, {}}, s, act, slope, need_bias);
}

void fold_cuda(const FoldArgs& f, const at::Tensor& src, const at::Tensor& dst) {
  const c10::cuda::CUDAGuard guard(src.device());
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "upconv_fold", [&] {
    cuda::launch_fold_taps<scalar_t>(f, src.const_data_ptr<scalar_t>(), dst.data_ptr<scalar_t>(), stream.stream());
  });
}

// The device's own current stream, under its guard (not the current device's).
void sync_cuda(c10::Device device) {
  const c10::cuda::CUDAGuard guard(device);
  at::cuda::getCurrentCUDAStream(device.index()).synchronize();
}
bool capturing_cuda(c10::Device device) {
  const c10::cuda::CUDAGuard guard(device);
  return at::cuda::currentStreamCaptureStatus() != at::cuda::CaptureStatus::None;
}

const bool registered = [] {
  register_device_glue(c10::DeviceType::CUDA,
                       DeviceGlue{&glue_fwd_cuda<false>, &glue_bwd_cuda<false>, &replicate_fwd_cuda,
                                  &replicate_bwd_cuda, &fold_cuda, &sync_cuda, &capturing_cuda});
  return true;
}();

}  // namespace

TORCH_LIBRARY_IMPL(ganx, CUDA, m) {
  register_phase_conv_kernels(m);
}

}  // namespace ganx
