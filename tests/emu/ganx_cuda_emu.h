// ganx's emulator of the CUDA execution model, for compiling the kernel headers of
// csrc/cuda/kernels/*.cuh with g++ and running them on the CPU in the tests (never part of a
// user's build; csrc/cuda/launch.cuh includes this header when the compiler is not nvcc).
//
// What it models (emu_runtime.cpp has the scheduler):
//   - every CUDA thread is a fiber (ucontext) with its own large stack; the blocks of a launch run
//     one after another (in a seeded random order), each with fresh fibers;
//   - __syncthreads counts arrivals: it completes when every thread of the block waits at the
//     same barrier, and the run fails (naming kernel, block, thread) when some threads have exited
//     or wait elsewhere (a barrier in a branch some threads skip, divergent barriers, deadlock);
//   - warp operations (__shfl_*_sync, __syncwarp, __ballot_sync, __any_sync, __all_sync) meet
//     per 32-lane warp: each lane of the mask must arrive with the same mask, the caller must be
//     in its mask, a shuffle must read a lane of the mask, width must be a power of two <= 32, and
//     a source past the lane's segment yields the lane's own value, as on the GPU; shuffles do
//     not order memory (only __syncwarp and __syncthreads do, for the race detector);
//   - between two barriers the threads of a block run in a new seeded random order each round,
//     so code relying on lockstep execution of a warp computes garbage (and races);
//   - shared memory (GANX_SHARED / GANX_DYNAMIC_SHARED) is one exact-size heap allocation per
//     declaration and block, filled with 0xFF bytes (NaN for floating point, -1 for integers),
//     so AddressSanitizer catches an access one element past a shared array and a read of
//     unwritten shared memory shows; a bare __shared__ does not compile (see below);
//   - launch limits: at most 1024 threads per block (x, y <= 1024, z <= 64) and at most the
//     kernel's own __launch_bounds__ (GANX_KERNEL_BOUND below), grid y and z at most 65535, x at
//     most 2^31 - 1, static shared memory at most 48 KiB per block and kernel instantiation
//     (every GANX_SHARED declaration of the kernel counted, whether or not its branch runs:
//     see GANX_SHARED), static + dynamic at most 48 KiB;
//   - atomics (GCC __atomic builtins, acquire-release, so ThreadSanitizer sees the ordering they
//     give), __threadfence, __ldg, the math functions, c10::Half / c10::BFloat16 (c10's own
//     host arithmetic), a fixed virtual device (kVirtualSmCount) so nothing depends on the host.
// The race detector is ThreadSanitizer with its fiber API (the "race" build): only barriers,
// __syncwarp, atomics, the launch and the kernel end synchronise, so a write and a read (or two
// writes) of the same shared or global address by two threads with no barrier between them is
// reported. An own shadow state per shared byte would need every shared access instrumented;
// TSan's compiler instrumentation already sees every access, to global memory as well.
//
// __launch_bounds__. g++ drops the attribute, and nothing in a function pointer can carry it, so
// a kernel's bound is written once, at namespace scope above the kernel, and used twice:
//     GANX_KERNEL_BOUND(fold_taps_kernel, kEpiThreads);
//     template <typename T> __global__ void GANX_BOUNDED(fold_taps_kernel)(FoldArgs F, ...) {...}
// nvcc (launch.cuh): a constant ganx_launch_bound_fold_taps_kernel and
// `__launch_bounds__(ganx_launch_bound_fold_taps_kernel) fold_taps_kernel`. Here the same
// constant, plus a static registration of the bound under the kernel's qualified name (taken
// from the typeid of a tag struct declared next to it, so the namespace comes from the compiler,
// not from a string); the launch looks the launched function's symbol up (dladdr, the driver is
// linked with -rdynamic) and rejects blockDim.x*y*z above the bound, as a GPU does ("too many
// resources requested for launch"). GANX_BOUNDED refers to the constant, so a kernel declared
// bounded without its GANX_KERNEL_BOUND does not compile; a bare __launch_bounds__ does not
// compile either (it could not be checked). The bound cannot depend on template parameters
// (every instantiation of the kernel shares it), which ganx's kernels do not need.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

// ------------------------------------------------------------------ qualifiers and types
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...) \
  ganx_emu_error_declare_the_bound_with_GANX_KERNEL_BOUND_and_GANX_BOUNDED_see_launch_cuh
#define __align__(n) alignas(n)
#define __constant__ static
// A bare __shared__ cannot be emulated per block (a function-local static is one object for all
// blocks, with no bounds and no poison), so it stops the build with the way to write it.
#define __shared__                                                                                  \
  static_assert(false, "ganx CUDA emulator: declare shared memory with GANX_SHARED(type, name, dims) " \
                       "or GANX_DYNAMIC_SHARED(type, name) (csrc/cuda/launch.cuh)");

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned int x, y, z;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(8) uint2 {
  unsigned int x, y;
};
struct alignas(16) double2 {
  double x, y;
};

namespace ganx {
namespace emu {

constexpr int kWarpSize = 32;
constexpr int kVirtualSmCount = 132;        // an H100 SXM; nothing in ganx's grids may depend on it
constexpr size_t kMaxStaticShared = 48 * 1024;

struct ThreadCtx {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern ThreadCtx* g_cur;  // the running fiber's indices

void syncthreads(const char* site);
void syncwarp(unsigned mask);
// Warp rendezvous: kind (see emu_runtime.cpp), mask, this lane's value (size bytes at in), the
// result at out, the shuffle's lane argument and width.
void warp_op(int kind, unsigned mask, const void* in, void* out, size_t size, int arg, int width);
void* shared_alloc(const void* key, size_t size, size_t align, const char* name);
// Static registrations (program start): a GANX_SHARED declaration (its tag's typeid name, which
// begins with the mangled name of the enclosing function; the key shared_alloc gets; the size),
// a kernel's launch bound (its tag's typeid name, the kernel's unqualified name).
bool register_static_shared(const char* tag, const void* key, size_t size, const char* name);
bool register_launch_bound(const char* tag, const char* kernel, long bound);
// Every function (kernel instantiation, or __device__ helper) with GANX_SHARED declarations and
// the sum of their sizes, one line each: "<bytes> <demangled function>".
std::string static_shared_report();
void* dynamic_shared();
[[noreturn]] void fail(const char* fmt, ...);

// Launch: the kernel's address (for its name), the configuration, and the body each thread runs.
void launch_kernel(const void* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);

// The launches since the last call, one line each:
// "name gx,gy,gz bx,by,bz dynamic_smem static=<static smem> bound=<__launch_bounds__, 0 if none>".
std::string take_launch_log();

enum WarpKind { kShflIdx = 0, kShflUp = 1, kShflDown = 2, kShflXor = 3, kBallot = 4, kAny = 5, kAll = 6, kSyncWarp = 7 };

}  // namespace emu

namespace dev {

using Stream = void*;

template <typename... KArgs, typename... Args>
inline void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Stream, Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;  // as on the GPU path (launch.cuh)
  // The kernel's parameters by value, as a launch copies them.
  std::tuple<std::decay_t<KArgs>...> params(std::forward<Args>(args)...);
  emu::launch_kernel(reinterpret_cast<const void*>(kernel), grid, block, smem,
                     [&] { std::apply(kernel, params); });
}

}  // namespace dev
}  // namespace ganx

#define threadIdx (::ganx::emu::g_cur->thread_idx)
#define blockIdx (::ganx::emu::g_cur->block_idx)
#define blockDim (::ganx::emu::g_cur->block_dim)
#define gridDim (::ganx::emu::g_cur->grid_dim)
#define warpSize 32

// Static shared memory: a GPU allocates the sum of a kernel's __shared__ declarations for each
// template instantiation, whatever branches run. Each GANX_SHARED declares a local tag struct
// and names StaticShared<tag>::key, a static data member of a class template: instantiating the
// function (each dtype) instantiates it, and its initialiser registers the declaration's size
// at program start, with the tag's typeid name, which the ABI mangles as
// "Z <enclosing function's mangled name> E <tag>" -- the kernel's own symbol. So the launch
// knows every declaration of the kernel instantiation it runs before any thread starts, taken
// branch or not. Limit: a GANX_SHARED inside a __device__ helper belongs to the helper's symbol,
// not the kernel's; it is counted for the running kernel when a thread first reaches it (as
// before), so a helper's shared array in a branch no test takes is not counted (ganx's kernels
// declare all their shared memory in the kernel body). A declaration in a discarded
// `if constexpr` branch is never instantiated, here as on the GPU.
namespace ganx {
namespace emu {
template <typename Tag>
struct StaticShared {
  static const bool key;
};
template <typename Tag>
const bool StaticShared<Tag>::key = register_static_shared(typeid(Tag).name(), &StaticShared<Tag>::key,
                                                           Tag::size(), Tag::label());
}  // namespace emu
}  // namespace ganx
#define GANX_SHARED(type, name, dims)                                                           \
  struct ganx_emu_smem_##name {                                                                 \
    static constexpr size_t size() { return sizeof(type dims); }                                \
    static constexpr const char* label() { return #name; }                                      \
  };                                                                                            \
  type(&name) dims = *reinterpret_cast<type(*) dims>(::ganx::emu::shared_alloc(                 \
      &::ganx::emu::StaticShared<ganx_emu_smem_##name>::key, sizeof(type dims), alignof(type), #name))

// The launch bound of a kernel (see the top of this file; launch.cuh has the nvcc side).
#define GANX_KERNEL_BOUND(kernel, n)                                                            \
  constexpr int ganx_launch_bound_##kernel = (n);                                               \
  struct ganx_launch_bound_tag_##kernel {};                                                     \
  [[maybe_unused]] static const bool ganx_launch_bound_reg_##kernel =                           \
      ::ganx::emu::register_launch_bound(typeid(ganx_launch_bound_tag_##kernel).name(), #kernel, \
                                         ganx_launch_bound_##kernel)
#define GANX_BOUNDED(kernel) __attribute__((aligned(ganx_launch_bound_##kernel > 0 ? 1 : 1))) kernel
#define GANX_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::ganx::emu::dynamic_shared())

// ------------------------------------------------------------------ barriers, warps
// The call site (file:line) tells one barrier from another (divergent barriers are an error).
#define __syncthreads() ::ganx::emu::syncthreads(__FILE__ ":" GANX_EMU_STR(__LINE__))
#define GANX_EMU_STR2(x) #x
#define GANX_EMU_STR(x) GANX_EMU_STR2(x)
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::ganx::emu::syncwarp(mask); }

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  T out;
  ::ganx::emu::warp_op(::ganx::emu::kShflIdx, mask, &v, &out, sizeof(T), src, width);
  return out;
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  T out;
  ::ganx::emu::warp_op(::ganx::emu::kShflUp, mask, &v, &out, sizeof(T), static_cast<int>(delta), width);
  return out;
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  T out;
  ::ganx::emu::warp_op(::ganx::emu::kShflDown, mask, &v, &out, sizeof(T), static_cast<int>(delta), width);
  return out;
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  T out;
  ::ganx::emu::warp_op(::ganx::emu::kShflXor, mask, &v, &out, sizeof(T), lane_mask, width);
  return out;
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  unsigned out;
  const int p = pred != 0;
  ::ganx::emu::warp_op(::ganx::emu::kBallot, mask, &p, &out, sizeof(int), 0, 32);
  return out;
}
inline int __any_sync(unsigned mask, int pred) {
  int out;
  const int p = pred != 0;
  ::ganx::emu::warp_op(::ganx::emu::kAny, mask, &p, &out, sizeof(int), 0, 32);
  return out;
}
inline int __all_sync(unsigned mask, int pred) {
  int out;
  const int p = pred != 0;
  ::ganx::emu::warp_op(::ganx::emu::kAll, mask, &p, &out, sizeof(int), 0, 32);
  return out;
}

// ------------------------------------------------------------------ memory
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcg(const T* p) {  // one memory here: every cache operator is a plain load
  return *p;
}
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}
template <typename T>
inline void __stwb(T* p, T v) {  // the default (write-back) store with a cache operator named
  *p = v;
}
template <typename T>
inline void __stcs(T* p, T v) {
  *p = v;
}

template <typename T>
inline T ganx_emu_atomic_rmw_int(T* p, T v, int op) {
  switch (op) {
    case 0: return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
    case 1: return __atomic_fetch_sub(p, v, __ATOMIC_ACQ_REL);
    case 2: return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL);
    case 3: return __atomic_fetch_and(p, v, __ATOMIC_ACQ_REL);
    case 4: return __atomic_fetch_or(p, v, __ATOMIC_ACQ_REL);
    default: return __atomic_fetch_xor(p, v, __ATOMIC_ACQ_REL);
  }
}
template <typename T, typename F>
inline T ganx_emu_atomic_cas_loop(T* p, F f) {
  T old = __atomic_load_n(p, __ATOMIC_ACQUIRE);
  while (!__atomic_compare_exchange_n(p, &old, f(old), false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
  }
  return old;
}
template <typename T>
inline T ganx_emu_atomic_float(T* p, T v, int op) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  U* q = reinterpret_cast<U*>(p);
  const U old = ganx_emu_atomic_cas_loop(q, [&](U bits) {
    T x;
    std::memcpy(&x, &bits, sizeof(x));
    const T r = op == 0 ? x + v : op == 1 ? (x < v ? v : x) : op == 2 ? (x < v ? x : v) : v;
    U out;
    std::memcpy(&out, &r, sizeof(out));
    return out;
  });
  T r;
  std::memcpy(&r, &old, sizeof(r));
  return r;
}
#define GANX_EMU_INT_ATOMICS(T)                                                                     \
  inline T atomicAdd(T* p, T v) { return ganx_emu_atomic_rmw_int(p, v, 0); }                        \
  inline T atomicSub(T* p, T v) { return ganx_emu_atomic_rmw_int(p, v, 1); }                        \
  inline T atomicExch(T* p, T v) { return ganx_emu_atomic_rmw_int(p, v, 2); }                       \
  inline T atomicAnd(T* p, T v) { return ganx_emu_atomic_rmw_int(p, v, 3); }                        \
  inline T atomicOr(T* p, T v) { return ganx_emu_atomic_rmw_int(p, v, 4); }                         \
  inline T atomicXor(T* p, T v) { return ganx_emu_atomic_rmw_int(p, v, 5); }                        \
  inline T atomicMax(T* p, T v) { return ganx_emu_atomic_cas_loop(p, [&](T x) { return x < v ? v : x; }); } \
  inline T atomicMin(T* p, T v) { return ganx_emu_atomic_cas_loop(p, [&](T x) { return x < v ? x : v; }); } \
  inline T atomicCAS(T* p, T cmp, T v) {                                                            \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);             \
    return cmp;                                                                                     \
  }
GANX_EMU_INT_ATOMICS(int)
GANX_EMU_INT_ATOMICS(unsigned int)
GANX_EMU_INT_ATOMICS(unsigned long long)
#undef GANX_EMU_INT_ATOMICS
inline float atomicAdd(float* p, float v) { return ganx_emu_atomic_float(p, v, 0); }
inline double atomicAdd(double* p, double v) { return ganx_emu_atomic_float(p, v, 0); }
inline float atomicMax(float* p, float v) { return ganx_emu_atomic_float(p, v, 1); }
inline float atomicMin(float* p, float v) { return ganx_emu_atomic_float(p, v, 2); }
inline float atomicExch(float* p, float v) { return ganx_emu_atomic_float(p, v, 3); }

// ------------------------------------------------------------------ math (the rest is <cmath>)
using std::max;
using std::min;
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
