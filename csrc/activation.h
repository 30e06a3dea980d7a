// The one table of fused activations: every layer reads it. C++ code (the op checks, the CPU
// and CUDA epilogue kernels) uses the enum generated from it; Python reads it through
// ganx._C.activations() and pairs each name with its reference function
// (python/ganx/ops/activations.py). Adding an activation (say "silu") means one line in
// GANX_ACTIVATIONS, its reference function in activations.py and one case in each switch below.
//
// Plain C++ with no torch dependency, so the CUDA kernel headers (csrc/cuda/kernels) and the
// CPU twins share it; compiled by nvcc the functions are __host__ __device__.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GANX_HD __host__ __device__ __forceinline__
#else
#define GANX_HD inline
#endif

//   X(enum name, Python name, takes negative_slope)
#define GANX_ACTIVATIONS(X)        \
  X(None, "none", false)           \
  X(ReLU, "relu", false)           \
  X(LeakyReLU, "leaky_relu", true) \
  X(Tanh, "tanh", false)

namespace ganx {

enum class Act : int32_t {
#define GANX_ACT_ENUM(e, name, slope) e,
  GANX_ACTIVATIONS(GANX_ACT_ENUM)
#undef GANX_ACT_ENUM
};

struct ActivationInfo {
  Act act;
  const char* name;
  bool takes_slope;
};

constexpr ActivationInfo kActivations[] = {
#define GANX_ACT_INFO(e, name, slope) {Act::e, name, slope},
    GANX_ACTIVATIONS(GANX_ACT_INFO)
#undef GANX_ACT_INFO
};
constexpr int kNumActivations = sizeof(kActivations) / sizeof(kActivations[0]);

// act(v), in the accumulation type. ReLU lets NaN through like torch.relu.
template <typename T>
GANX_HD T act_forward(Act act, T v, T slope) {
  switch (act) {
    case Act::None: return v;
    case Act::ReLU: return v < T(0) ? T(0) : v;
    case Act::LeakyReLU: return v < T(0) ? v * slope : v;
    case Act::Tanh: return std::tanh(v);
  }
  return v;
}

// d act / d pre * g, written with the activation's *output* y (what the op saves):
// relu: [y > 0]; leaky_relu: [y > 0] + slope [y <= 0] (exact because slope >= 0 keeps the sign);
// tanh: 1 - y^2.
template <typename T>
GANX_HD T act_backward(Act act, T g, T y, T slope) {
  switch (act) {
    case Act::None: return g;
    case Act::ReLU: return y > T(0) ? g : T(0);
    case Act::LeakyReLU: return y > T(0) ? g : g * slope;
    case Act::Tanh: return g * (T(1) - y * y);
  }
  return g;
}

}  // namespace ganx
