// A small cache of large CPU output buffers for the loss kernels (see buffer_cache.h).
#include "cpu/buffer_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define GANX_HAVE_MMAP 1
#endif

namespace ganx {
namespace {

constexpr size_t kMinBytes = size_t(1) << 20;  // smaller buffers: the allocator is fast enough
constexpr size_t kMaxBlocks = 8;
constexpr long long kMaxLimitMiB = 1LL << 20;  // 1 TiB: anything above is a typo, not a cache size

size_t limit_from_env() {
  const char* v = std::getenv("GANX_CPU_BUFFER_CACHE_MB");
  if (v == nullptr || *v == '\0') return size_t(512) << 20;
  char* end = nullptr;
  errno = 0;
  const long long mb = std::strtoll(v, &end, 10);
  TORCH_CHECK(end != v && *end == '\0' && errno != ERANGE && mb >= 0 && mb <= kMaxLimitMiB,
              "ganx: GANX_CPU_BUFFER_CACHE_MB must be a whole number of MiB in [0, ", kMaxLimitMiB,
              "] (0 turns the CPU buffer cache off), got '", v, "'");
  return static_cast<size_t>(mb) << 20;
}

// Sizes are rounded up to one of 8 classes per power of two (at most 12.5% more), so calls
// whose sizes vary a little (the last batch of an epoch, a changing batch size) still reuse.
size_t size_class(size_t bytes) {
  size_t p = 1;
  while (p * 2 <= bytes) p *= 2;
  const size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

// Blocks come straight from mmap and go back with munmap: memory the cache lets go of
// returns to the system at once (glibc would keep a freed block of this size in its heap).
void* map_block(size_t bytes) {
#ifdef GANX_HAVE_MMAP
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
#else
  return std::malloc(bytes);
#endif
}

void unmap_block(void* p, size_t bytes) {
#ifdef GANX_HAVE_MMAP
  munmap(p, bytes);
#else
  (void)bytes;
  std::free(p);
#endif
}

struct Block {
  void* ptr;
  size_t bytes;
};

class Cache {
 public:
  Cache() : limit_(limit_from_env()) {}

  // The smallest cached block that holds `bytes` and is at most twice as large (best fit:
  // with sizes that vary from call to call, an exact-size match would rarely happen and every
  // miss costs a fresh mapping and its page faults). Returns the block, or {nullptr, 0}.
  Block take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->bytes >= bytes && it->bytes / 2 <= bytes && (best == free_.end() || it->bytes < best->bytes)) best = it;
    }
    if (best == free_.end()) {
      ++misses_;
      return {nullptr, 0};
    }
    const Block b = *best;
    cached_ -= b.bytes;
    free_.erase(best);
    ++hits_;
    return b;
  }

  void give(void* p, size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    if (bytes > limit_) {
      lock.unlock();
      unmap_block(p, bytes);
      return;
    }
    free_.push_back({p, bytes});
    cached_ += bytes;
    std::deque<Block> evicted;
    while (cached_ > limit_ || free_.size() > kMaxBlocks) {  // drop the oldest
      cached_ -= free_.front().bytes;
      evicted.push_back(free_.front());
      free_.pop_front();
    }
    lock.unlock();
    for (const Block& b : evicted) unmap_block(b.ptr, b.bytes);
  }

  BufferCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {static_cast<int64_t>(free_.size()), static_cast<int64_t>(cached_), static_cast<int64_t>(limit_), hits_,
            misses_};
  }

  void clear() {
    std::deque<Block> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all.swap(free_);
      cached_ = 0;
    }
    for (const Block& b : all) unmap_block(b.ptr, b.bytes);
  }

  size_t limit() const { return limit_; }

 private:
  std::mutex mu_;
  std::deque<Block> free_;
  size_t cached_ = 0;
  const size_t limit_;
  int64_t hits_ = 0, misses_ = 0;
};

// Never destroyed: tensors holding a cached buffer may outlive static destruction at exit.
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

void give_back(void* ctx) {
  Block* b = static_cast<Block*>(ctx);
  cache().give(b->ptr, b->bytes);
  delete b;
}

// The allocator of the tensors cached_empty makes. Their storage is an ordinary resizable
// storage with this allocator, so resize_(), set_() and out= work on them exactly as on any
// torch CPU tensor (a grown tensor gets a new block, its old one goes back to the cache).
class CachingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    Cache& c = cache();
    if (n < kMinBytes || c.limit() == 0) return c10::GetCPUAllocator()->allocate(n);
    Block b = c.take(n);
    if (b.ptr == nullptr) {
      b.bytes = size_class(n);
      b.ptr = map_block(b.bytes);
      TORCH_CHECK(b.ptr != nullptr, "ganx: out of memory allocating ", b.bytes, " bytes on the CPU");
    }
    return {b.ptr, new Block(b), &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();
  return *a;
}

}  // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  return at::detail::empty_generic(sizes, &allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), std::nullopt);
}

BufferCacheStats buffer_cache_stats() { return cache().stats(); }

void buffer_cache_clear() { cache().clear(); }

}  // namespace ganx
