// A small cache of large CPU output buffers for the loss kernels (see buffer_cache.h).
#include "cpu/buffer_cache.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>

namespace ganx {
namespace {

constexpr size_t kMinBytes = size_t(1) << 20;  // smaller buffers: the allocator is fast enough
constexpr size_t kMaxBlocks = 8;
constexpr size_t kAlign = 64;

size_t limit_from_env() {
  const char* v = std::getenv("GANX_CPU_BUFFER_CACHE_MB");
  if (v == nullptr || *v == '\0') return size_t(512) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(v, &end, 10);
  TORCH_CHECK(end != v && *end == '\0' && mb >= 0, "ganx: GANX_CPU_BUFFER_CACHE_MB must be a number of MiB >= 0, got '",
              v, "'");
  return static_cast<size_t>(mb) << 20;
}

class Cache {
 public:
  Cache() : limit_(limit_from_env()) {}

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = free_.rbegin(); it != free_.rend(); ++it) {  // most recently returned first
      if (it->bytes == bytes) {
        void* p = it->ptr;
        cached_ -= bytes;
        free_.erase(std::next(it).base());
        ++hits_;
        return p;
      }
    }
    ++misses_;
    return nullptr;
  }

  void give(void* p, size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    if (bytes > limit_) {
      lock.unlock();
      std::free(p);
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
    for (const Block& b : evicted) std::free(b.ptr);
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
    for (const Block& b : all) std::free(b.ptr);
  }

  size_t limit() const { return limit_; }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
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

}  // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  int64_t n = 1;
  for (const int64_t s : sizes) n *= s;
  const size_t bytes = static_cast<size_t>(n) * options.dtype().itemsize();
  Cache& c = cache();
  if (bytes < kMinBytes || c.limit() == 0) return at::empty(sizes, options);
  void* p = c.take(bytes);
  if (p == nullptr) {
    p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
    TORCH_CHECK(p != nullptr, "ganx: out of memory allocating ", bytes, " bytes on the CPU");
  }
  return at::from_blob(p, sizes, [bytes](void* q) { cache().give(q, bytes); }, options);
}

BufferCacheStats buffer_cache_stats() { return cache().stats(); }

void buffer_cache_clear() { cache().clear(); }

}  // namespace ganx
