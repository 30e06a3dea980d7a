// One launch helper for every ganx CUDA kernel, so the same host code launches on the GPU
// (nvcc: <<<>>> on the given stream + a launch check) or in the CUDA emulator used by the tests
// (g++: tests/emu, never part of a user's build).
//
// Conventions for kernel code (csrc/cuda/kernels/*.cuh):
//   - a kernel header holds the __global__ kernels, their __device__ helpers and the host-side
//     launcher functions that take raw pointers / sizes (never at::Tensor), and includes only
//     this header, <c10/util/Half.h>, <c10/util/BFloat16.h>, <cstdint>, <limits>, <cmath>, and
//     other kernel headers;
//   - launches go through ganx::dev::launch(kernel, grid, block, dynamic_smem, stream, args...);
//   - the .cu file (tensors, dtype dispatch, device guard, current stream, allocation) includes
//     the kernel header and calls the launchers;
//   - shared memory is declared with the two macros below, never with a bare __shared__ (the
//     emulator gives each declaration its own exact-size, poisoned allocation per block, which a
//     bare `static` array could not be; a bare __shared__ fails to compile there, saying so):
//       GANX_SHARED(float, tile, [16][17]);   // __shared__ float tile[16][17];
//       GANX_DYNAMIC_SHARED(float, buf);      // float* buf = the launch's dynamic shared memory
//   - a kernel's __launch_bounds__ is written once, at namespace scope above the kernel, and
//     the declaration names it (the emulator checks every launch against it, which a bare
//     __launch_bounds__ would not let it do; a bare one fails to compile there):
//       GANX_KERNEL_BOUND(my_kernel, kThreads);     // constexpr int ganx_launch_bound_my_kernel
//       template <typename T>
//       __global__ void GANX_BOUNDED(my_kernel)(const T* x) {...}
//                       // = __global__ void __launch_bounds__(kThreads) my_kernel(const T* x)
//   - kernel headers use a named namespace (never an anonymous one: the emulator names the
//     kernel of a failure from its symbol).
#pragma once

#if defined(__CUDACC__)

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

namespace ganx {
namespace dev {

using Stream = cudaStream_t;

// Launches kernel<<<grid, block, smem, stream>>>(args...) and checks the launch. An empty grid
// is not a launch (CUDA would report an invalid configuration).
template <typename... KArgs, typename... Args>
inline void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Stream stream,
                   Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace dev
}  // namespace ganx

#define GANX_SHARED(type, name, dims) __shared__ type name dims
#define GANX_KERNEL_BOUND(kernel, n) constexpr int ganx_launch_bound_##kernel = (n)
#define GANX_BOUNDED(kernel) __launch_bounds__(ganx_launch_bound_##kernel) kernel
#define GANX_DYNAMIC_SHARED(type, name)                  \
  extern __shared__ __align__(16) unsigned char ganx_dynamic_smem_[]; \
  type* name = reinterpret_cast<type*>(ganx_dynamic_smem_)

#else

// g++ build of the kernel headers: the emulator provides dim3, threadIdx/blockIdx/blockDim/
// gridDim, __global__/__device__/__host__/__forceinline__/__shared__/__restrict__,
// __syncthreads, __syncwarp, __shfl_*_sync, atomics, __ldg, the math functions,
// ganx::dev::Stream and ganx::dev::launch with the same signature as above, GANX_SHARED,
// GANX_DYNAMIC_SHARED, GANX_KERNEL_BOUND and GANX_BOUNDED.
#include "ganx_cuda_emu.h"

#endif
