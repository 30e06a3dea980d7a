// The ganx._C module. Importing it registers every ganx op with torch's dispatcher; the
// kernels register themselves per device in cpu/ and cuda/ (files named after the op).
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "bce_loss.h"
#include "cpu/buffer_cache.h"

#include "activation.h"
#include "upsample_conv2d.h"

// All schemas live here, each with a one-line statement of its math.
TORCH_LIBRARY(ganx, m) {
  // out = act(conv2d(interpolate(x, scale_factor=scale, mode="nearest"), weight, bias, padding))
  // computed per output phase from the original x (the upsampled tensor is never built).
  m.def("upsample_conv2d(Tensor x, Tensor weight, Tensor? bias, int scale, int padding, "
        "str activation, float negative_slope) -> Tensor");
  // (grad_x, grad_weight, grad_bias) of upsample_conv2d given grad_out and `out`, what the
  // activation's derivative reads (the table's ref column, csrc/activation.h): the op's output,
  // or for ActRef::Input activations (silu, gelu) the pre-activation; unread with no activation.
  // Entries not in output_mask come back empty.
  m.def("upsample_conv2d_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor out, "
        "bool has_bias, int scale, int padding, str activation, float negative_slope, "
        "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // out = act(conv_transpose2d(x, weight, bias, stride=2, padding=1)) for a (C_in, C_out, 4, 4)
  // weight: the same phase-decomposed kernels (each output phase reads a 2x2 input patch
  // with a 2x2 slice of the 4x4 kernel).
  m.def("conv_transpose2d_4s2(Tensor x, Tensor weight, Tensor? bias, str activation, "
        "float negative_slope) -> Tensor");
  // (grad_x, grad_weight, grad_bias) of conv_transpose2d_4s2, like upsample_conv2d_backward.
  m.def("conv_transpose2d_4s2_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor out, "
        "bool has_bias, str activation, float negative_slope, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)");

  // out = act(x) elementwise for a 4-D x, by the upsample-conv epilogue kernels (the table's own
  // act_forward): the autograd's forward for activations whose backward reads the pre-activation.
  m.def("activation(Tensor x, str activation, float negative_slope) -> Tensor");

  // ---- BCE adversarial losses (schemas) ----
  // reduction: 0 none, 1 mean, 2 sum (torch's codes). Each op returns d loss / d input computed
  // in the same pass (empty when need_grad is false), so its backward is a scale by grad_output.
  // The D and G losses' backward may hand that very buffer out as the gradient (incoming gradient
  // 1, no retain_graph, csrc/autograd.cpp owned_or_copy): a caller of the raw op who keeps the grad
  // output should not write to it.
  // (loss, grad, stats): loss = red(BCE(real, t_r)) + red(BCE(fake, t_f)) on logits (none: the
  // per-element losses of real then fake, flattened into one 1-D tensor); grad likewise holds
  // d loss / d real then d loss / d fake, flattened (one allocation for both);
  // stats (float32) = [acc_real, acc_fake, mean D(x), mean D(G(z))], "real" meaning logit > 0.
  m.def("bce_discriminator_loss(Tensor real, Tensor fake, float real_target, float fake_target, "
        "int reduction, bool need_grad) -> (Tensor, Tensor, Tensor)");
  // (loss, grad): mode 0 (non-saturating): BCE(fake, target) = -log D(G(z)) for target 1;
  // mode 1 (minimax): -BCE(fake, 1 - target) = log(1 - D(G(z))) for target 1.
  m.def("bce_generator_loss(Tensor fake, int mode, float target, int reduction, bool need_grad) "
        "-> (Tensor, Tensor)");
  // ---- critic losses (hinge, Wasserstein) on raw scores: the BCE ops' kernels with another
  // per-element function (bce_math.h critic_elem), the same outputs, reductions and backward.
  // kind: 1 hinge, 2 wasserstein. (loss, grad, stats): loss = red(l_r(real)) + red(l_f(fake)),
  // hinge l_r = relu(1 - x), l_f = relu(1 + x); wasserstein l_r = -x, l_f = x (D minimises
  // mean fake - mean real); grad and "none" as in bce_discriminator_loss; stats (float32) =
  // [acc_real, acc_fake, mean real score, mean fake score] ("real" meaning score > 0).
  m.def("critic_discriminator_loss(Tensor real, Tensor fake, int kind, int reduction, bool need_grad) "
        "-> (Tensor, Tensor, Tensor)");
  // (loss, grad): red(-fake), the generator loss of both kinds.
  m.def("critic_generator_loss(Tensor fake, int kind, int reduction, bool need_grad) -> (Tensor, Tensor)");
  // (loss, grad) of BCE-with-logits with optional weight and pos_weight, torch's semantics:
  // l = w * [pw * t * softplus(-x) + (1 - t) * softplus(x)].
  m.def("bce_with_logits(Tensor input, Tensor target, Tensor? weight, Tensor? pos_weight, "
        "int reduction, bool need_grad) -> (Tensor, Tensor)");
  // (loss, grad) of BCE on probabilities p, torch's semantics (logs clamped at -100):
  // l = -w * [t * log(p) + (1 - t) * log(1 - p)].
  m.def("binary_cross_entropy(Tensor input, Tensor target, Tensor? weight, int reduction, "
        "bool need_grad) -> (Tensor, Tensor)");
}

namespace {

bool cuda_built() {
#ifdef GANX_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_archs() {
#ifdef GANX_WITH_CUDA
  return GANX_CUDA_ARCHS;
#else
  return "";
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ganx fused kernels; importing this module registers the torch.ops.ganx operators";
  m.attr("torch_version") = GANX_TORCH_VERSION;
  m.attr("version") = GANX_VERSION;
  m.attr("cuda") = cuda_built();
  m.attr("cuda_archs") = cuda_archs();
  m.def("cpu_isa", &ganx::bce_cpu_isa,
        "Instruction set of the CPU loss kernels: 'avx512', 'avx2' or 'default' (follows torch's "
        "ATEN_CPU_CAPABILITY)");
  m.def("cpu_buffer_cache_stats", [] {
    const auto s = ganx::buffer_cache_stats();
    pybind11::dict d;
    d["blocks"] = s.blocks;
    d["bytes"] = s.bytes;
    d["limit_bytes"] = s.limit_bytes;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    return d;
  }, "The CPU output-buffer cache of the loss kernels: blocks and bytes held, limit, hits, misses");
  m.def("activations", [] {
    pybind11::list l;
    for (const auto& a : ganx::kActivations)
      l.append(pybind11::make_tuple(a.name, static_cast<int>(a.act), a.takes_slope,
                                    a.ref == ganx::ActRef::Input ? "x" : "y"));
    return l;
  }, "The activation table (csrc/activation.h): (name, enum value, takes negative_slope, what the backward "
     "reads: 'y' the output or 'x' the pre-activation) per entry");
  m.def("set_upconv_algorithm", &ganx::set_forced_algorithm,
        "Forces the upsample-conv algorithm: 'deconv', 'stacked', 'split', 'replicate', or 'auto' / '' for the automatic "
        "choice (initially GANX_UPCONV_ALGO)");
  m.def("upconv_algorithm", &ganx::forced_algorithm, "The forced upsample-conv algorithm ('' when automatic)");
  m.def("upconv_algorithm_choices", [] {
    pybind11::list l;
    for (const auto& c : ganx::algorithm_choices()) {
      pybind11::dict d;
      d["key"] = c.key;
      d["algorithm"] = c.algo;
      d["source"] = c.source;
      l.append(d);
    }
    return l;
  }, "Every upsample-conv algorithm choice made so far: key (op, direction, shapes, dtype, memory format, "
     "device), algorithm, source ('rule', 'timed' under cudnn.benchmark, 'forced')");
  m.def("clear_upconv_algorithm_choices", &ganx::clear_algorithm_choices,
        "Forgets the choices (timed ones are timed again on next use)");
  m.def("_simulate_cpu_graph_capture", &ganx::set_simulated_cpu_capture,
        "Tests only: the CPU kernels behave as if a CUDA graph were being captured (the upsample-conv "
        "algorithm choice neither times nor records)");
  m.def("cpu_buffer_cache_clear", &ganx::buffer_cache_clear,
        "Frees every buffer the CPU output-buffer cache holds");
}
