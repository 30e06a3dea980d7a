// The BCE kernels (csrc/cuda/kernels/bce_loss.cuh) as driver ops. Each mirrors run() of
// csrc/cuda/bce_loss.cu on raw buffers: the same coefficients (bce_math.h), the same grid rule
// (max_blocks lowers the cap so small inputs reach the grid-stride loop and the multi-block
// reduction), the same workspace (a zeroed counter after poisoned partials).
//
// Keys: red (0 none, 1 mean, 2 sum), need_grad, rt / ft (discriminator targets), mode / target
// (generator), kind (critic_disc: 1 hinge, 2 wasserstein; critic_gen takes none), max_blocks, xoff / ooff (elements of misalignment of the inputs / outputs).
// Arrays in: x0 [, x1] (logits or probabilities), t, w, pw (w / pw: 1 value or input-shaped).
// Arrays out: loss, grad, stats (discriminator); keys out: blocks, vec0, vec1, counter_after.
#include "cuda/kernels/bce_loss.cuh"

#include <string>

#include "driver.h"

namespace {

using namespace ganx;
using namespace ganx::emu_driver;
namespace kb = ganx::cuda_bce;

template <typename T, typename Elem>
void run_bce(const Case& c, Result& r, const Buf<T>& x0, const Buf<T>* x1, const Elem& elem, const TargetCoefs*) {
  using A = typename kb::Acc<T>::type;
  const int red = static_cast<int>(c.integer("red", 1));
  const bool need_grad = c.integer("need_grad", 1) != 0;
  const bool none = red == 0;
  const int64_t n0 = x0.n, n1 = x1 ? x1->n : 0;
  const int64_t ooff = c.integer("ooff", 0);
  Buf<T> loss(none ? n0 + n1 : 1, ooff), grad(need_grad ? n0 + n1 : 0, ooff);
  Buf<float> stats(x1 ? 4 : 0);
  kb::Segment<T> s0{x0.data, n0, none ? loss.data : nullptr, need_grad ? grad.data : nullptr, false};
  kb::Segment<T> s1{x1 ? x1->data : nullptr, n1, none ? loss.data + n0 : nullptr, need_grad ? grad.data + n0 : nullptr,
                    false};
  const bool reduce = !none || x1 != nullptr;
  kb::Final<T, A> fin{none ? nullptr : loss.data, x1 ? stats.data : nullptr, x1 ? 2 : 1, red == 1, n0, n1};
  const int blocks = kb::grid_blocks<T>(n0, n1, static_cast<int>(c.integer("max_blocks", kb::kMaxBlocks)));
  const size_t wsb = reduce ? kb::workspace_bytes<T>(blocks) : 0;
  Buf<char> ws(static_cast<int64_t>(wsb));
  if (wsb > 0) std::memset(ws.data + wsb - 16, 0, 16);
  kb::launch_bce<T>(s0, s1, elem, bce_grad_scale(red == 1, n0), bce_grad_scale(red == 1, n1), fin, blocks,
                    wsb > 0 ? ws.data : nullptr, nullptr);
  r.set("blocks", std::to_string(blocks));
  r.set("vec0", std::to_string(kb::aligned16(s0.x) && kb::aligned16(s0.loss) && kb::aligned16(s0.grad)));
  r.set("vec1", std::to_string(kb::aligned16(s1.x) && kb::aligned16(s1.loss) && kb::aligned16(s1.grad)));
  if (wsb > 0) {
    unsigned counter;
    std::memcpy(&counter, ws.data + wsb - 16, sizeof counter);
    r.set("counter_after", std::to_string(counter));
  }
  r.arrays.push_back({"loss", loss.bytes()});
  r.arrays.push_back({"grad", grad.bytes()});
  if (x1) r.arrays.push_back({"stats", stats.bytes()});
}

// A factor array (weight / pos_weight) and its stride: absent, one value (stride 0), full.
template <typename T>
struct Factor {
  Buf<T> buf;
  const T* ptr = nullptr;
  int64_t stride = 0;
};
template <typename T>
Factor<T> factor(const Case& c, const char* name) {
  Factor<T> f;
  if (!c.has_array(name)) return f;
  f.buf = Buf<T>(c.arrays.at(name), 0);
  f.ptr = f.buf.data;
  f.stride = f.buf.n == 1 ? 0 : 1;
  return f;
}

template <typename T>
void op_typed(const Case& c, Result& r) {
  using A = typename kb::Acc<T>::type;
  const int64_t xoff = c.integer("xoff", 0);
  Buf<T> x0(c.arrays.at("x0"), xoff);
  if (c.op == "bce_disc") {
    Buf<T> x1(c.arrays.at("x1"), xoff);
    const TargetCoefs c0 = bce_target_coefs(c.num("rt", 1.0)), c1 = bce_target_coefs(c.num("ft", 0.0));
    run_bce<T>(c, r, x0, &x1, kb::logit_const<A>(c0, c1), &c0);
  } else if (c.op == "bce_gen") {
    const TargetCoefs c0 = bce_generator_coefs(c.integer("mode", 0) == 0, c.num("target", 1.0));
    run_bce<T>(c, r, x0, nullptr, kb::logit_const<A>(c0, c0), &c0);
  } else if (c.op == "critic_disc") {
    Buf<T> x1(c.arrays.at("x1"), xoff);
    const auto kind = static_cast<LossKind>(c.integer("kind", 1));
    run_bce<T>(c, r, x0, &x1,
               kb::critic_const<A>(critic_discriminator_coefs(kind, true), critic_discriminator_coefs(kind, false)),
               nullptr);
  } else if (c.op == "critic_gen") {
    const CriticCoefs k = critic_generator_coefs();
    run_bce<T>(c, r, x0, nullptr, kb::critic_const<A>(k, k), nullptr);
  } else if (c.op == "bce_logits") {
    Buf<T> t(c.arrays.at("t"), xoff);
    auto w = factor<T>(c, "w");
    auto pw = factor<T>(c, "pw");
    run_bce<T>(c, r, x0, nullptr, kb::LogitTensor<T, A>{t.data, w.ptr, pw.ptr, w.stride, pw.stride}, nullptr);
  } else {
    Buf<T> t(c.arrays.at("t"), xoff);
    auto w = factor<T>(c, "w");
    run_bce<T>(c, r, x0, nullptr, kb::ProbTensor<T, A>{t.data, w.ptr, w.stride}, nullptr);
  }
}

void op_bce(const Case& c, Result& r) {
  by_dtype(c, "bce", [&](auto t) { op_typed<decltype(t)>(c, r); });
}

// bce_scale: the backward's in-place scale (bce_scale_kernel) of array "g" by the one-element
// array "scale"; keys goff (elements of misalignment), max_blocks; out "g", key blocks.
template <typename T>
void scale_typed(const Case& c, Result& r) {
  Buf<T> g(c.arrays.at("g"), c.integer("goff", 0));
  Buf<T> scale(c.arrays.at("scale"), 0);
  const int max_blocks = static_cast<int>(c.integer("max_blocks", kb::kMaxBlocks));
  kb::launch_bce_scale<T>(g.data, g.n, scale.data, nullptr, max_blocks);
  r.set("blocks", std::to_string(kb::grid_blocks<T>(g.n, 0, max_blocks)));
  r.set("vec", std::to_string(kb::aligned16(g.data)));
  r.arrays.push_back({"g", g.bytes()});
}

void op_scale(const Case& c, Result& r) {
  by_dtype(c, "bce_scale", [&](auto t) { scale_typed<decltype(t)>(c, r); });
}

}  // namespace

GANX_EMU_OP("bce_disc", op_bce);
static ::ganx::emu_driver::Register ganx_emu_reg_gen("bce_gen", op_bce);
static ::ganx::emu_driver::Register ganx_emu_reg_logits("bce_logits", op_bce);
static ::ganx::emu_driver::Register ganx_emu_reg_probs("bce_probs", op_bce);
static ::ganx::emu_driver::Register ganx_emu_reg_critic_d("critic_disc", op_bce);
static ::ganx::emu_driver::Register ganx_emu_reg_critic_g("critic_gen", op_bce);
GANX_EMU_OP("bce_scale", op_scale);
