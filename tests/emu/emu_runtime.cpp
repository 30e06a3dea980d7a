// Scheduler of ganx's CUDA emulator (the model: ganx_cuda_emu.h).
//
// One OS thread runs everything. A launch runs its blocks one after another in a seeded random
// order; a block is a set of ucontext fibers, one per CUDA thread, each with its own mmap'ed
// stack. The scheduler runs every runnable fiber until it blocks (barrier, warp operation) or
// exits, in a fresh random order each round, then completes the barriers and warp operations
// whose participants have all arrived. A fiber never preempts: between two synchronisation points
// a thread runs to completion, which is what CUDA permits and what makes lockstep assumptions fail.
//
// Sanitizers. Built with -fsanitize=address, each switch is announced with
// __sanitizer_start/finish_switch_fiber. Built with GANX_EMU_TSAN (the race build, the kernels
// compiled with -fsanitize=thread, this file not instrumented so the scheduler's own state never
// reports), each fiber is a TSan fiber switched to without synchronisation; synchronisation is
// explicit: the launch releases to every fiber's start, a barrier's arrivals release to its
// departures (two alternating sync objects, so a fast thread's next barrier cannot leak into a
// slow thread's previous one), __syncwarp likewise per warp, every fiber's end releases to the
// launch's return. Stacks are unmapped after each block, which resets TSan's shadow of them.
//
// Failures print one line naming the kernel, the block and the thread, and end the process
// (exit code 3): a fiber stopped in the middle of a kernel cannot be unwound.
#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "ganx_cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define GANX_EMU_ASAN 1
#endif
#if defined(GANX_EMU_TSAN)
#include <sanitizer/tsan_interface.h>
// In libtsan, not in its public header: the allocation and the poison of shared memory are no
// CUDA thread's accesses (inside, malloc resets the range's history instead of imitating a write).
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace ganx {
namespace emu {

ThreadCtx* g_cur = nullptr;

namespace {

enum class St { Runnable, Barrier, Warp, Exited };

struct Fiber {
  ucontext_t ctx;
  char* stack = nullptr;
  size_t stack_size = 0;
  ThreadCtx idx;
  St st = St::Runnable;
  int linear = 0;         // thread index within the block
  const char* site = nullptr;  // barrier call site
  unsigned barrier_gen = 0;
  // warp operation in progress
  int kind = 0;
  unsigned mask = 0;
  const void* in = nullptr;
  void* out = nullptr;
  size_t size = 0;
  int arg = 0, width = 32;
  unsigned warp_gen = 0;
#if defined(GANX_EMU_ASAN)
  void* fake_stack = nullptr;
#endif
#if defined(GANX_EMU_TSAN)
  void* tsan = nullptr;
#endif
};

struct Launch {
  std::string name;
  dim3 grid, block;
  size_t smem = 0;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  int cur = -1;
  uint3 block_idx{0, 0, 0};
  // shared memory of the running block
  std::map<const void*, std::pair<char*, size_t>> shared;
  // static shared memory of the launched instantiation: its registered declarations (every one,
  // taken branch or not) and their sum; plus, per block, declarations registered under another
  // symbol (a __device__ helper's) counted as they are first reached
  std::map<const void*, size_t> static_decls;
  size_t static_registered = 0;
  size_t static_shared = 0;
  long bound = 0;  // __launch_bounds__ (0: none declared)
  char* dyn = nullptr;
} L;

ucontext_t g_sched;
#if defined(GANX_EMU_ASAN)
void* g_sched_fake = nullptr;
const void* g_sched_bottom = nullptr;
size_t g_sched_size = 0;
#endif
#if defined(GANX_EMU_TSAN)
void* g_sched_tsan = nullptr;
char g_launch_sync, g_end_sync;
char g_barrier_sync[2];
char g_warp_sync[32][2];
#endif

// The scheduler's own copies (shuffle values between fiber stacks, the poison of shared memory)
// are no CUDA thread's accesses: hidden from TSan, which intercepts memcpy/memset even here.
void quiet_copy(void* dst, const void* src, size_t n) {
#if defined(GANX_EMU_TSAN)
  __tsan_ignore_thread_begin();
#endif
  std::memcpy(dst, src, n);
#if defined(GANX_EMU_TSAN)
  __tsan_ignore_thread_end();
#endif
}

std::mt19937_64 g_rng;
bool g_rng_seeded = false;

size_t stack_bytes() {
#if defined(GANX_EMU_ASAN) || defined(GANX_EMU_TSAN)
  return 256 << 10;  // the kernels' frames are small; larger stacks only cost the sanitizers time
#else
  return 256 << 10;
#endif
}

std::string demangle(const char* s) {
  int status = 0;
  char* d = abi::__cxa_demangle(s, nullptr, nullptr, &status);
  std::string r = (status == 0 && d) ? d : s;
  free(d);
  return r;
}

std::string kernel_name(const void* k) {
  Dl_info info;
  if (dladdr(k, &info) && info.dli_sname) {
    std::string n = demangle(info.dli_sname);
    // "void ns::kernel<T...>(params)": drop the return type and the parameter list
    if (n.rfind("void ", 0) == 0) n = n.substr(5);
    int depth = 0;
    for (size_t i = 0; i < n.size(); ++i) {
      if (n[i] == '<') ++depth;
      if (n[i] == '>') --depth;
      if (n[i] == '(' && depth == 0) return n.substr(0, i);
    }
    return n;
  }
  char buf[64];
  snprintf(buf, sizeof buf, "kernel at %p (link with -rdynamic to see its name)", k);
  return buf;
}

std::string where(const Fiber* f) {
  char buf[256];
  if (f == nullptr) {
    snprintf(buf, sizeof buf, "block (%u,%u,%u)", L.block_idx.x, L.block_idx.y, L.block_idx.z);
  } else {
    snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", f->idx.block_idx.x, f->idx.block_idx.y,
             f->idx.block_idx.z, f->idx.thread_idx.x, f->idx.thread_idx.y, f->idx.thread_idx.z);
  }
  return buf;
}

[[noreturn]] void die(const Fiber* f, const std::string& msg) {
  fprintf(stderr, "ganx-emu: FAILED in kernel %s <<<(%u,%u,%u), (%u,%u,%u), %zu>>>: %s: %s\n", L.name.c_str(),
          L.grid.x, L.grid.y, L.grid.z, L.block.x, L.block.y, L.block.z, L.smem, where(f).c_str(), msg.c_str());
  fflush(stderr);
  fflush(stdout);
  _exit(3);
}

std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

Fiber& self() { return L.fibers[L.cur]; }

// Fiber -> scheduler. dying: the fiber will never run again.
void yield(bool dying) {
  Fiber& f = self();
#if defined(GANX_EMU_TSAN)
  __tsan_switch_to_fiber(g_sched_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(GANX_EMU_ASAN)
  __sanitizer_start_switch_fiber(dying ? nullptr : &f.fake_stack, g_sched_bottom, g_sched_size);
#endif
  swapcontext(&f.ctx, &g_sched);
#if defined(GANX_EMU_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
  (void)dying;
  g_cur = &self().idx;
}

void fiber_main() {
#if defined(GANX_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &g_sched_bottom, &g_sched_size);
#endif
#if defined(GANX_EMU_TSAN)
  __tsan_acquire(&g_launch_sync);
#endif
  g_cur = &self().idx;
  (*L.body)();
  Fiber& f = self();
  f.st = St::Exited;
#if defined(GANX_EMU_TSAN)
  __tsan_release(&g_end_sync);
#endif
  yield(true);
  abort();  // never resumed
}

// Scheduler -> fiber i.
void resume(int i) {
  L.cur = i;
  Fiber& f = L.fibers[i];
#if defined(GANX_EMU_TSAN)
  __tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(GANX_EMU_ASAN)
  __sanitizer_start_switch_fiber(&g_sched_fake, f.stack, f.stack_size);
#endif
  swapcontext(&g_sched, &f.ctx);
#if defined(GANX_EMU_ASAN)
  __sanitizer_finish_switch_fiber(g_sched_fake, nullptr, nullptr);
#endif
  L.cur = -1;
}

// Completes the warp operations whose lanes have all arrived; true if any did.
bool complete_warp_ops(int nthreads) {
  bool any = false;
  const int nwarps = (nthreads + kWarpSize - 1) / kWarpSize;
  for (int w = 0; w < nwarps; ++w) {
    const int base = w * kWarpSize;
    const int nlanes = std::min(kWarpSize, nthreads - base);
    for (int l = 0; l < nlanes; ++l) {
      Fiber& f = L.fibers[base + l];
      if (f.st != St::Warp) continue;
      const unsigned mask = f.mask;
      bool ready = true;
      for (int m = 0; m < kWarpSize; ++m) {
        if (!(mask >> m & 1u)) continue;
        if (m >= nlanes) die(&f, fmt("warp operation mask 0x%08x names lane %d, which does not exist (the block has %d threads)", mask, m, nthreads));
        const Fiber& g = L.fibers[base + m];
        if (g.st == St::Exited) die(&f, fmt("warp operation mask 0x%08x names lane %d, which has exited", mask, m));
        if (g.st != St::Warp) {
          ready = false;
          continue;
        }
        if (g.mask != mask)
          die(&f, fmt("lanes of one warp operation disagree on the mask: lane %d has 0x%08x, lane %d has 0x%08x", l, mask, m, g.mask));
        if (g.kind != f.kind) die(&f, fmt("lanes %d and %d of mask 0x%08x are at different warp operations", l, m, mask));
      }
      if (!ready) continue;
      // Every lane of the mask is here: compute the results.
      unsigned ballot = 0;
      for (int m = 0; m < kWarpSize; ++m) {
        if (!(mask >> m & 1u) || f.kind < kBallot || f.kind > kAll) continue;
        int p = 0;
        quiet_copy(&p, L.fibers[base + m].in, sizeof(int));
        ballot |= (p != 0 ? 1u : 0u) << m;
      }
      for (int m = 0; m < kWarpSize; ++m) {
        if (!(mask >> m & 1u)) continue;
        Fiber& g = L.fibers[base + m];
        if (g.kind <= kShflXor) {
          const int wd = g.width;
          const int seg = m & ~(wd - 1);
          int src = m;
          switch (g.kind) {
            case kShflIdx: src = seg + ((g.arg % wd) + wd) % wd; break;
            case kShflUp: src = (m - g.arg >= seg) ? m - g.arg : m; break;
            case kShflDown: src = (m + g.arg < seg + wd) ? m + g.arg : m; break;
            case kShflXor: src = m ^ g.arg; src = (src >= seg + wd || src < 0) ? m : src; break;
          }
          if (src >= kWarpSize || !(mask >> src & 1u))
            die(&g, fmt("shuffle (mask 0x%08x) of lane %d reads lane %d, which is not in the mask", mask, m, src));
          quiet_copy(g.out, L.fibers[base + src].in, g.size);
        } else if (g.kind == kBallot) {
          quiet_copy(g.out, &ballot, sizeof(unsigned));
        } else if (g.kind == kAny) {
          const int r = (ballot & mask) != 0;
          quiet_copy(g.out, &r, sizeof(int));
        } else if (g.kind == kAll) {
          const int r = (ballot & mask) == mask;
          quiet_copy(g.out, &r, sizeof(int));
        }
      }
      for (int m = 0; m < kWarpSize; ++m) {
        if (mask >> m & 1u) L.fibers[base + m].st = St::Runnable;
      }
      any = true;
    }
  }
  return any;
}

void run_block(const uint3& bidx, int nthreads) {
  L.block_idx = bidx;
  L.shared.clear();
  L.static_shared = L.static_registered;
  if (L.smem > 0) {
#if defined(GANX_EMU_TSAN)
    __tsan_ignore_thread_begin();
#endif
    L.dyn = static_cast<char*>(malloc(L.smem));
    memset(L.dyn, 0xFF, L.smem);
#if defined(GANX_EMU_TSAN)
    __tsan_ignore_thread_end();
#endif
  }
  L.fibers.assign(nthreads, Fiber());
  const size_t ss = stack_bytes();
  for (int i = 0; i < nthreads; ++i) {
    Fiber& f = L.fibers[i];
    f.linear = i;
    f.idx.thread_idx = {static_cast<unsigned>(i) % L.block.x, (static_cast<unsigned>(i) / L.block.x) % L.block.y,
                        static_cast<unsigned>(i) / (L.block.x * L.block.y)};
    f.idx.block_idx = bidx;
    f.idx.block_dim = L.block;
    f.idx.grid_dim = L.grid;
    void* st = mmap(nullptr, ss, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st == MAP_FAILED) die(nullptr, "cannot map a fiber stack");
    f.stack = static_cast<char*>(st);
    f.stack_size = ss;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = ss;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
#if defined(GANX_EMU_TSAN)
    f.tsan = __tsan_create_fiber(0);
#endif
  }
  std::vector<int> order(nthreads);
  for (int i = 0; i < nthreads; ++i) order[i] = i;
  int exited = 0;
  while (exited < nthreads) {
    std::shuffle(order.begin(), order.end(), g_rng);
    bool ran = false;
    for (int i : order) {
      if (L.fibers[i].st == St::Runnable) {
        resume(i);
        ran = true;
      }
    }
    exited = 0;
    int at_barrier = 0, runnable = 0;
    for (const Fiber& f : L.fibers) {
      exited += f.st == St::Exited;
      at_barrier += f.st == St::Barrier;
      runnable += f.st == St::Runnable;
    }
    if (exited == nthreads) break;
    if (complete_warp_ops(nthreads)) continue;
    if (runnable > 0) continue;
    if (at_barrier > 0 && at_barrier + exited == nthreads) {
      const Fiber* first = nullptr;
      for (const Fiber& f : L.fibers) {
        if (f.st != St::Barrier) continue;
        if (first == nullptr) first = &f;
        if (strcmp(f.site, first->site) != 0 || f.barrier_gen != first->barrier_gen)
          die(&f, fmt("divergent __syncthreads: this thread waits at %s, thread %d at %s", f.site, first->linear,
                      first->site));
      }
      if (exited > 0) {
        const Fiber* gone = nullptr;
        for (const Fiber& f : L.fibers)
          if (f.st == St::Exited) { gone = &f; break; }
        die(first, fmt("__syncthreads at %s is reached by %d of %d threads: %d have exited (thread %d first); a "
                       "barrier in a branch that some threads skip",
                       first->site, at_barrier, nthreads, exited, gone->linear));
      }
      for (Fiber& f : L.fibers) f.st = St::Runnable;
      continue;
    }
    (void)ran;
    // Nothing can run and nothing can complete.
    const Fiber* b = nullptr;
    const Fiber* w = nullptr;
    for (const Fiber& f : L.fibers) {
      if (f.st == St::Barrier && !b) b = &f;
      if (f.st == St::Warp && !w) w = &f;
    }
    if (b && w)
      die(w, fmt("deadlock: this thread waits at a warp operation (mask 0x%08x) while thread %d waits at "
                 "__syncthreads %s", w->mask, b->linear, b->site));
    die(w ? w : b, "deadlock: no thread can proceed");
  }
#if defined(GANX_EMU_TSAN)
  __tsan_ignore_thread_begin();  // releasing the block's memory is not an access of a CUDA thread
#endif
  for (Fiber& f : L.fibers) {
    munmap(f.stack, f.stack_size);
#if defined(GANX_EMU_TSAN)
    __tsan_destroy_fiber(f.tsan);
#endif
  }
  for (auto& kv : L.shared) free(kv.second.first);
  L.shared.clear();
  free(L.dyn);
  L.dyn = nullptr;
#if defined(GANX_EMU_TSAN)
  __tsan_ignore_thread_end();
#endif
}

struct LogEntry {
  std::string name;
  dim3 grid, block;
  size_t smem, static_smem;
  long bound;
};
std::vector<LogEntry> g_log;

// ---- static registrations (program start, see GANX_SHARED / GANX_KERNEL_BOUND)
struct SharedDecl {
  std::string tag;  // typeid name: "Z<function encoding>E<tag>..."
  const void* key;
  size_t size;
  std::string name;
};
std::vector<SharedDecl>& shared_decls() {
  static std::vector<SharedDecl> v;
  return v;
}
std::map<std::string, long>& launch_bounds() {  // qualified kernel name -> bound
  static std::map<std::string, long> m;
  return m;
}

// "ns::kernel<T...>" -> "ns::kernel" (the template arguments at depth 0 dropped)
std::string base_name(const std::string& n) {
  std::string r;
  int depth = 0;
  for (char c : n) {
    if (c == '<') ++depth;
    if (depth == 0) r += c;
    if (c == '>') --depth;
  }
  return r;
}

// The mangled function encoding a GANX_SHARED tag belongs to ("Z<enc>E<len>ganx_emu_smem_<name>
// [discriminator]" -> "<enc>"), or "" if the tag is not a local class.
std::string tag_function(const SharedDecl& d) {
  const std::string cls = "ganx_emu_smem_" + d.name;
  const std::string tail = "E" + std::to_string(cls.size()) + cls;
  const size_t at = d.tag.rfind(tail);
  if (d.tag.empty() || d.tag[0] != 'Z' || at == std::string::npos) return "";
  return d.tag.substr(1, at - 1);
}

}  // namespace

[[noreturn]] void fail(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  die(L.cur >= 0 ? &self() : nullptr, buf);
}

void syncthreads(const char* site) {
  Fiber& f = self();
  f.site = site;
  f.st = St::Barrier;
#if defined(GANX_EMU_TSAN)
  char* sync = &g_barrier_sync[f.barrier_gen & 1];
  __tsan_release(sync);
#endif
  yield(false);
#if defined(GANX_EMU_TSAN)
  __tsan_acquire(sync);
#endif
  ++self().barrier_gen;
}

void warp_op(int kind, unsigned mask, const void* in, void* out, size_t size, int arg, int width) {
  Fiber& f = self();
  const int lane = f.linear % kWarpSize;
  if (!(mask >> lane & 1u))
    die(&f, fmt("lane %d calls a warp operation with mask 0x%08x, which leaves out the calling lane", lane, mask));
  if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0)
    die(&f, fmt("shuffle width %d is not a power of two in [1, 32]", width));
  f.kind = kind;
  f.mask = mask;
  f.in = in;
  f.out = out;
  f.size = size;
  f.arg = arg;
  f.width = width;
  f.st = St::Warp;
#if defined(GANX_EMU_TSAN)
  char* sync = &g_warp_sync[(f.linear / kWarpSize) % 32][f.warp_gen & 1];
  if (kind == kSyncWarp) __tsan_release(sync);
#endif
  yield(false);
#if defined(GANX_EMU_TSAN)
  if (kind == kSyncWarp) __tsan_acquire(sync);
#endif
  ++self().warp_gen;
}

void syncwarp(unsigned mask) {
  int dummy = 0;
  warp_op(kSyncWarp, mask, &dummy, &dummy, 0, 0, 32);
}

bool register_static_shared(const char* tag, const void* key, size_t size, const char* name) {
  shared_decls().push_back({tag, key, size, name});
  return true;
}

bool register_launch_bound(const char* tag, const char* kernel, long bound) {
  // tag: the typeid name of ns::ganx_launch_bound_tag_<kernel> -> "ns::<kernel>"
  std::string q = demangle(tag);
  const std::string t = std::string("ganx_launch_bound_tag_") + kernel;
  const size_t at = q.rfind(t);
  if (at == std::string::npos || at + t.size() != q.size()) {
    fprintf(stderr, "ganx-emu: cannot read the namespace of GANX_KERNEL_BOUND(%s) from '%s'\n", kernel, q.c_str());
    abort();
  }
  q = q.substr(0, at) + kernel;
  if (bound < 1 || bound > 1024) {
    fprintf(stderr, "ganx-emu: GANX_KERNEL_BOUND(%s, %ld): a bound must be in [1, 1024]\n", q.c_str(), bound);
    abort();
  }
  auto it = launch_bounds().find(q);
  if (it != launch_bounds().end() && it->second != bound) {
    fprintf(stderr, "ganx-emu: two launch bounds for %s: %ld and %ld\n", q.c_str(), it->second, bound);
    abort();
  }
  launch_bounds()[q] = bound;
  return true;
}

std::string static_shared_report() {
  std::map<std::string, size_t> per_fn;
  std::map<const void*, bool> seen;  // one entry per declaration (keys are unique per tag)
  for (const SharedDecl& d : shared_decls()) {
    if (seen[d.key]) continue;
    seen[d.key] = true;
    const std::string enc = tag_function(d);
    per_fn[enc.empty() ? "?" + d.tag : demangle(("_Z" + enc).c_str())] += d.size;
  }
  std::string r;
  for (const auto& kv : per_fn) r += std::to_string(kv.second) + " " + kv.first + "\n";
  return r;
}

void* shared_alloc(const void* key, size_t size, size_t align, const char* name) {
  auto it = L.shared.find(key);
  if (it != L.shared.end()) return it->second.first;
  if (L.static_decls.count(key) == 0) {
    // registered under another symbol (a __device__ helper's): counted when first reached
    L.static_shared += size;
    if (L.static_shared > kMaxStaticShared)
      die(L.cur >= 0 ? &self() : nullptr,
          fmt("static shared memory exceeds 48 KiB: %zu bytes with '%s' (%zu bytes, declared in a __device__ "
              "function)", L.static_shared, name, size));
    if (L.static_shared + L.smem > kMaxStaticShared)
      die(L.cur >= 0 ? &self() : nullptr,
          fmt("static (%zu) + dynamic (%zu) shared memory exceeds 48 KiB", L.static_shared, L.smem));
  }
  // Exact size (ASan's redzone starts right after the last byte); aligned_alloc needs a multiple.
  void* p = nullptr;
#if defined(GANX_EMU_TSAN)
  __tsan_ignore_thread_begin();
#endif
  if (posix_memalign(&p, align < sizeof(void*) ? sizeof(void*) : align, size == 0 ? 1 : size) != 0)
    die(nullptr, "out of memory for shared memory");
  memset(p, 0xFF, size);
#if defined(GANX_EMU_TSAN)
  __tsan_ignore_thread_end();
#endif
  L.shared[key] = {static_cast<char*>(p), size};
  return p;
}

void* dynamic_shared() {
  if (L.dyn == nullptr) die(L.cur >= 0 ? &self() : nullptr, "dynamic shared memory used but the launch gave 0 bytes");
  return L.dyn;
}

void launch_kernel(const void* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  if (!g_rng_seeded) {
    const char* s = getenv("GANX_EMU_SEED");
    g_rng.seed(s ? strtoull(s, nullptr, 10) : 20261201ull);
    g_rng_seeded = true;
  }
  L.name = kernel_name(kernel);
  L.grid = grid;
  L.block = block;
  L.smem = smem;
  L.body = &body;
  L.cur = -1;
  // The launched instantiation's symbol: its static shared memory and its launch bound.
  L.static_decls.clear();
  L.static_registered = 0;
  L.bound = 0;
  std::string decls;
  Dl_info info;
  if (dladdr(kernel, &info) && info.dli_sname && info.dli_saddr == kernel && strncmp(info.dli_sname, "_Z", 2) == 0) {
    const std::string enc = info.dli_sname + 2;
    for (const SharedDecl& d : shared_decls()) {
      if (L.static_decls.count(d.key) || tag_function(d) != enc) continue;
      L.static_decls[d.key] = d.size;
      L.static_registered += d.size;
      decls += fmt("%s'%s' (%zu bytes)", decls.empty() ? "" : ", ", d.name.c_str(), d.size);
    }
    auto b = launch_bounds().find(base_name(L.name));
    if (b != launch_bounds().end()) L.bound = b->second;
  }
  g_log.push_back({L.name, grid, block, smem, L.static_registered, L.bound});
  const uint64_t nthreads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (nthreads == 0) die(nullptr, "invalid configuration: a block of 0 threads");
  if (nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
    die(nullptr, fmt("too many threads per block: (%u,%u,%u) (at most 1024 in all, x, y <= 1024, z <= 64)", block.x,
                     block.y, block.z));
  if (L.bound > 0 && nthreads > static_cast<uint64_t>(L.bound))
    die(nullptr, fmt("too many resources requested for launch: %llu threads per block exceed the kernel's "
                     "__launch_bounds__(%ld)", static_cast<unsigned long long>(nthreads), L.bound));
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u)
    die(nullptr, fmt("grid (%u,%u,%u) exceeds the limits (x < 2^31, y and z <= 65535)", grid.x, grid.y, grid.z));
  if (smem > kMaxStaticShared) die(nullptr, fmt("dynamic shared memory %zu bytes exceeds 48 KiB", smem));
  if (L.static_registered > kMaxStaticShared)
    die(nullptr, fmt("static shared memory exceeds 48 KiB: %zu bytes in this instantiation (%s), whichever "
                     "branches run", L.static_registered, decls.c_str()));
  if (L.static_registered + smem > kMaxStaticShared)
    die(nullptr, fmt("static (%zu) + dynamic (%zu) shared memory exceeds 48 KiB", L.static_registered, smem));
#if defined(GANX_EMU_TSAN)
  if (g_sched_tsan == nullptr) g_sched_tsan = __tsan_get_current_fiber();
  __tsan_release(&g_launch_sync);
#endif
  // Blocks in a seeded random order (results must not depend on it).
  std::vector<uint3> blocks;
  blocks.reserve(static_cast<size_t>(grid.x) * grid.y * grid.z);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back({x, y, z});
  std::shuffle(blocks.begin(), blocks.end(), g_rng);
  ThreadCtx* saved = g_cur;
  for (const uint3& b : blocks) run_block(b, static_cast<int>(nthreads));
  g_cur = saved;
#if defined(GANX_EMU_TSAN)
  __tsan_acquire(&g_end_sync);
#endif
  L.body = nullptr;
}

// The launches since the last call, one line each ("name grid.x,y,z block.x,y,z smem static=S
// bound=B": dynamic and static shared memory, __launch_bounds__ or 0).
std::string take_launch_log() {
  std::string s;
  for (const auto& e : g_log) {
    s += e.name + fmt(" %u,%u,%u %u,%u,%u %zu static=%zu bound=%ld\n", e.grid.x, e.grid.y, e.grid.z, e.block.x,
                      e.block.y, e.block.z, e.smem, e.static_smem, e.bound);
  }
  g_log.clear();
  return s;
}

}  // namespace emu
}  // namespace ganx
