// Shared declarations of the fused BCE losses: argument checks and the set-up of each op
// (bce_loss.cpp); the per-element math used by both the CPU and the CUDA kernels is bce_math.h.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

#include "bce_math.h"

namespace ganx {

// torch's reduction codes (at::Reduction): 0 none, 1 mean, 2 sum.
enum class Reduction : int64_t { None = 0, Mean = 1, Sum = 2 };
// Generator loss forms.
enum class GenMode : int64_t { NonSaturating = 0, Minimax = 1 };

Reduction check_reduction(const char* op, int64_t reduction);
void check_logits(const char* op, const char* arg, const at::Tensor& t);
void check_target_value(const char* op, const char* arg, double target);
// The discriminators' real / fake pair: both logits (check_logits), on one device, of one dtype.
void check_logit_pair(const char* op, const at::Tensor& real, const at::Tensor& fake);
void check_bce_discriminator_inputs(const at::Tensor& real, const at::Tensor& fake, double real_target,
                                    double fake_target, int64_t reduction);
GenMode check_bce_generator_inputs(const at::Tensor& fake, int64_t mode, double target, int64_t reduction);
// The critic losses (hinge, Wasserstein): kind 1 or 2 (LossKind), op named in every message.
LossKind check_critic_kind(const char* op, int64_t kind);
void check_critic_discriminator_inputs(const at::Tensor& real, const at::Tensor& fake, int64_t kind,
                                       int64_t reduction);
void check_critic_generator_inputs(const at::Tensor& fake, int64_t kind, int64_t reduction);
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

// The set-up every device's kernel of an op shares (bce_loss.cpp): the argument checks, the
// contiguous inputs in the input's dtype, the outputs, and the coefficients and gradient scales
// (bce_math.h, in double). The CPU and CUDA files differ only in the allocator of the large
// outputs and in the kernels they run on a BceCall.
struct BceCall {
  Reduction red = Reduction::Mean;
  bool need_grad = false;
  at::Tensor x0, x1;           // contiguous logits / probabilities (x1: the discriminator's fake)
  int64_t n0 = 0, n1 = 0;
  at::Tensor t, w, pw;         // target and factors (broadcast_factor), undefined when absent
  TargetCoefs c0{1, 0, 1}, c1{1, 0, 1};  // scalar-target coefficients of segments 0 and 1
  LossKind kind = LossKind::Bce;         // Hinge / Wasserstein: k0, k1 replace c0, c1
  CriticCoefs k0{-1, 0, false}, k1{-1, 0, false};
  double gs0 = 1, gs1 = 1;     // gradient scales (bce_grad_scale)
  at::Tensor loss, grad, stats;  // stats: discriminator only
};

// Allocator of the per-element outputs (the CPU recycles large ones: buffer_cache.h).
using BceAlloc = at::Tensor (*)(at::IntArrayRef, const at::TensorOptions&);

BceCall bce_discriminator_call(const at::Tensor& real, const at::Tensor& fake, double real_target,
                               double fake_target, int64_t reduction, bool need_grad, BceAlloc alloc);
BceCall bce_generator_call(const at::Tensor& fake, int64_t mode, double target, int64_t reduction,
                           bool need_grad, BceAlloc alloc);
BceCall critic_discriminator_call(const at::Tensor& real, const at::Tensor& fake, int64_t kind, int64_t reduction,
                                  bool need_grad, BceAlloc alloc);
BceCall critic_generator_call(const at::Tensor& fake, int64_t kind, int64_t reduction, bool need_grad,
                              BceAlloc alloc);
BceCall bce_with_logits_call(const at::Tensor& input, const at::Tensor& target,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& pos_weight, int64_t reduction, bool need_grad,
                             BceAlloc alloc);
BceCall bce_probs_call(const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                       int64_t reduction, bool need_grad, BceAlloc alloc);

// torch's reductions of nothing (mean NaN, sum 0) and NaN statistics, for empty inputs.
void bce_fill_empty(BceCall& c);

// grad *= scale in place, scale a one-element tensor of grad's dtype on grad's device, read on the
// device (no host sync) and skipped there when it is 1: the backward of a reduced loss on a GPU,
// where the host cannot look at the incoming gradient (csrc/autograd.cpp). A device's file
// registers its kernel; none is registered for the CPU (the host reads the scalar there).
using BceScaleInPlace = void (*)(const at::Tensor& grad, const at::Tensor& scale);
void register_bce_scale_in_place(c10::DeviceType type, BceScaleInPlace fn);
BceScaleInPlace bce_scale_in_place(c10::DeviceType type);  // nullptr when none

}  // namespace ganx
