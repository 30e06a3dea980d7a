// Large CPU output buffers of the loss kernels (gradients, per-element losses), recycled.
//
// A training step allocates the same gradient buffers every iteration. glibc serves large
// blocks with fresh mmap'd (or freshly trimmed) memory, so each step page-faults its whole
// gradient in again: measured on the CI machine, 2 x 1M logits fwd+bwd took 0.9 ms without
// faults and 1.2-2.2 ms with them, and 2 x 4M took 5.5-6.5 ms of which ~4 ms were faults.
// Buffers of 1 MiB and more are therefore kept when their tensor dies (at most 8 blocks and
// GANX_CPU_BUFFER_CACHE_MB MiB, a whole number in [0, 2^20], default 512, 0 turns it off; the
// oldest goes first) and handed to the next call that fits: the smallest block that holds it
// and is at most twice its size (sizes are rounded up to 8 classes per power of two). The
// tensors are ordinary resizable CPU tensors whose storage allocator is the cache, so
// resize_(), set_() and out= behave as on any torch tensor. Blocks are mmap'd and munmap'd:
// evicted or cleared memory goes back to the system at once (buffer_cache_clear(), i.e.
// ganx.ops.clear_cpu_buffer_cache(); ganx.ops.cpu_buffer_cache_stats() reports it).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace ganx {

// at::empty(sizes, options) for CPU options, from the cache when the buffer is large. Raises
// (c10::Error) when GANX_CPU_BUFFER_CACHE_MB is not a valid size.
at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

struct BufferCacheStats {
  int64_t blocks, bytes, limit_bytes, hits, misses;
};
BufferCacheStats buffer_cache_stats();
void buffer_cache_clear();

}  // namespace ganx
