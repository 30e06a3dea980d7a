// The one table of fused activations: every layer reads it. C++ code (the op checks, the CPU
// and CUDA epilogue kernels, the autograd) uses the enum generated from it; Python reads it
// through ganx._C.activations() and pairs each name with its reference function and torch
// module (python/ganx/ops/reference.py: ACTIVATION_FUNCTIONS, ACTIVATION_MODULES), from which
// every Python list, message and module mapping is built (python/ganx/ops/activations.py).
//
// The `ref` column is the activation's backward contract: what act_backward reads besides the
// incoming gradient. ActRef::Output: the activation's output y (the autograd saves the op's
// output, no extra memory). ActRef::Input: the pre-activation z = conv + bias (SiLU, GELU: their
// derivative is not a function of y); the autograd (csrc/autograd.cpp) then runs the op with no
// activation (z: the bias added by the fused epilogue or the vendor's conv), applies the
// activation to z with the table's own kernels (ganx::activation) and saves z. The backward op's
// `out` argument is that saved tensor. (No activation has a second derivative here: double
// backward is an error for all.)
//
// Adding an activation: one line in GANX_ACTIVATIONS, one case in act_forward and in
// act_backward below (the CPU and CUDA kernels and the emulator all switch through these), and its
// entries in python/ganx/ops/reference.py. The tests are parametrised over the table; only
// tests/test_convert.py needs an instance of its torch module (ACT_MODULES).
//
// Plain C++ with no torch dependency, so the CUDA kernel headers (csrc/cuda/kernels) and the
// CPU twins share it; compiled by nvcc the functions are __host__ __device__.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>
#include <utility>

#if defined(__CUDACC__)
#define GANX_HD __host__ __device__ __forceinline__
#else
#define GANX_HD inline
#endif

//   X(enum name, Python name, takes negative_slope, what the backward reads)
#define GANX_ACTIVATIONS(X)                       \
  X(None, "none", false, Output)                  \
  X(ReLU, "relu", false, Output)                  \
  X(LeakyReLU, "leaky_relu", true, Output)        \
  X(Tanh, "tanh", false, Output)                  \
  X(SiLU, "silu", false, Input)                   \
  X(GELU, "gelu", false, Input) /* tanh form */

namespace ganx {

enum class Act : int32_t {
#define GANX_ACT_ENUM(e, name, slope, ref) e,
  GANX_ACTIVATIONS(GANX_ACT_ENUM)
#undef GANX_ACT_ENUM
};

// What act_backward reads: the activation's output y, or its input (the pre-activation z).
enum class ActRef : int32_t { Output = 0, Input = 1 };

struct ActivationInfo {
  Act act;
  const char* name;
  bool takes_slope;
  ActRef ref;
};

constexpr ActivationInfo kActivations[] = {
#define GANX_ACT_INFO(e, name, slope, ref) {Act::e, name, slope, ActRef::ref},
    GANX_ACTIVATIONS(GANX_ACT_INFO)
#undef GANX_ACT_INFO
};
constexpr int kNumActivations = sizeof(kActivations) / sizeof(kActivations[0]);

// The table's entry named `name`, or nullptr for a name not in the table: the one place a name is
// parsed (the ops' check, parse_activation in csrc/upsample_conv2d.cpp, raises on nullptr; the
// autograd reads the entry's ref column).
inline const ActivationInfo* find_activation(std::string_view name) {
  for (const auto& info : kActivations)
    if (name == info.name) return &info;
  return nullptr;
}

// Any other string view with data() and size(): torch before 2.6 has its own c10::string_view
// class (not std::string_view), and the op schemas hand the name over as one; the declared torch
// floor is 2.4.1 (.ci/torch_matrix.sh builds against it).
template <class S, class = decltype(std::declval<const S&>().data() + std::declval<const S&>().size())>
inline const ActivationInfo* find_activation(const S& name) {
  return find_activation(std::string_view(name.data(), name.size()));
}

// gelu's tanh form: 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))), torch's approximate='tanh'.
constexpr double kGeluBeta = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluKappa = 0.044715;

// sigmoid(v) with no division (the CUDA epilogue kernels make no call, tests/test_sass.py, and an
// IEEE division or reciprocal brings a slow-path routine): 1/(1 + e^-v) = (1 + tanh(v/2)) / 2, and
// for v < 0 the same identity at -v times e^v (sigmoid(v) = e^v sigmoid(-v)), so neither branch
// cancels: a few ulp everywhere, 0 at -inf, 1 at +inf, NaN for NaN.
template <typename T>
GANX_HD T act_sigmoid(T v) {
  if (v >= T(0)) return T(0.5) + T(0.5) * std::tanh(T(0.5) * v);
  return std::exp(v) * (T(0.5) + T(0.5) * std::tanh(T(-0.5) * v));
}

// act(v), in the accumulation type. ReLU lets NaN through like torch.relu.
template <typename T>
GANX_HD T act_forward(Act act, T v, T slope) {
  switch (act) {
    case Act::None: return v;
    case Act::ReLU: return v < T(0) ? T(0) : v;
    case Act::LeakyReLU: return v < T(0) ? v * slope : v;
    case Act::Tanh: return std::tanh(v);
    case Act::SiLU: return v * act_sigmoid(v);
    case Act::GELU: {
      const T inner = T(kGeluBeta) * (v + T(kGeluKappa) * v * v * v);
      return T(0.5) * v * (T(1) + std::tanh(inner));
    }
  }
  return v;
}

// d act / d pre * g, written with r = what the table's ref column says the op saves.
// ActRef::Output (r = y, the activation's output): relu: [y > 0]; leaky_relu: [y > 0] + slope [y <= 0]
// (exact because slope >= 0 keeps the sign); tanh: 1 - y^2.
// ActRef::Input (r = z, the pre-activation): silu: s (1 + z (1 - s)), s = sigmoid(z);
// gelu (tanh form, t = tanh(u), u = beta (z + kappa z^3)): 0.5 (1 + t) + 0.5 z (1 - t^2) beta (1 + 3 kappa z^2).
template <typename T>
GANX_HD T act_backward(Act act, T g, T r, T slope) {
  switch (act) {
    case Act::None: return g;
    case Act::ReLU: return r > T(0) ? g : T(0);
    case Act::LeakyReLU: return r > T(0) ? g : g * slope;
    case Act::Tanh: return g * (T(1) - r * r);
    case Act::SiLU: {
      const T sg = act_sigmoid(r);
      return g * (sg * (T(1) + r * (T(1) - sg)));
    }
    case Act::GELU: {
      const T z2 = r * r;
      const T t = std::tanh(T(kGeluBeta) * (r + T(kGeluKappa) * z2 * r));
      const T d = T(0.5) * (T(1) + t) + T(0.5) * r * (T(1) - t * t) * T(kGeluBeta) * (T(1) + T(3 * kGeluKappa) * z2);
      return g * d;
    }
  }
  return g;
}

}  // namespace ganx
