// The phase-decomposed layer, written once for both devices: argument checks, geometry, the
// choice of algorithm, and the ATen composition (vendor convolution + ganx's glue kernels,
// reached through the DeviceGlue each device file registers). The CPU and CUDA files only
// register these functions and their glue, so CI tests on the CPU the code that runs on the GPU.
#include "upsample_conv2d.h"

#include "cpu/buffer_cache.h"
#include "device_check.h"

#include <ATen/Context.h>
#include <ATen/OpMathType.h>
#include <ATen/record_function.h>
#include <c10/util/hash.h>
#include <c10/util/strides.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <shared_mutex>
#include <sstream>
#include <unordered_map>

namespace ganx {

Act parse_activation(c10::string_view name, double negative_slope, const char* op) {
  const ActivationInfo* info = find_activation(name);
  if (info == nullptr) {
    std::string names;
    for (const auto& a : kActivations) names += std::string(names.empty() ? "'" : ", '") + a.name + "'";
    TORCH_CHECK_VALUE(false, op, ": activation must be one of ", names, ", got '", name, "'");
  }
  if (info->takes_slope) {
    // The backward computes the slope from the activation's *output*: out > 0 <=> pre > 0
    // holds only for a non-negative slope.
    TORCH_CHECK_VALUE(std::isfinite(negative_slope) && negative_slope >= 0, op,
                      ": negative_slope must be finite and >= 0 for activation='", name, "', got ",
                      negative_slope);
  }
  return info->act;
}

void check_phase_conv_common(const char* op, const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, int64_t w_in, int64_t w_out) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C_in, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be a floating-point tensor, got ",
              x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight must have the dtype of x (",
              x.scalar_type(), "), got ", weight.scalar_type());
  check_device(op, "weight", weight, "x", x);
  if (x.device().is_cpu()) {
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                ": on CPU x must be float32 or float64 (float16/bfloat16 are supported on CUDA), got ",
                x.scalar_type());
  }
  TORCH_CHECK(weight.size(w_in) == x.size(1), op, ": weight has ", weight.size(w_in),
              " input channels (dim ", w_in, ") but x has ", x.size(1), " channels");
  TORCH_CHECK(weight.size(0) > 0 && weight.size(1) > 0, op,
              ": weight must have at least one output and one input channel, got shape ", weight.sizes());
  if (bias.has_value() && bias->defined()) {
    const auto& b = *bias;
    TORCH_CHECK(b.dim() == 1 && b.size(0) == weight.size(w_out), op, ": bias must be 1-D of size C_out=",
                weight.size(w_out), ", got shape ", b.sizes());
    TORCH_CHECK(b.scalar_type() == x.scalar_type(), op, ": bias must have the dtype of x (", x.scalar_type(),
                "), got ", b.scalar_type());
    check_device(op, "bias", b, "x", x);
  }
}

void check_upsample_conv2d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, int64_t scale, int64_t padding) {
  const char* op = "upsample_conv2d";
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be 4-D (C_out, C_in, kH, kW), got ", weight.dim(), "-D");
  check_phase_conv_common(op, x, weight, bias, /*w_in=*/1, /*w_out=*/0);
  const int64_t kh = weight.size(2), kw = weight.size(3);
  TORCH_CHECK_VALUE(kh == kw, op, ": weight must have a square kernel, got ", kh, "x", kw);
  TORCH_CHECK_VALUE(kh == 1 || kh == 3 || kh == 5, op,
                    ": kernel size must be 1, 3 or 5 (odd, 'same' padding), got ", kh);
  TORCH_CHECK_VALUE(scale >= 1 && scale <= kMaxScale, op, ": scale_factor must be an integer in [1, ",
                    kMaxScale, "], got ", scale);
  TORCH_CHECK_VALUE(padding == kh / 2, op, ": padding must be kernel_size // 2 = ", kh / 2,
                    " ('same' convolution), got ", padding);
  TORCH_CHECK(x.size(2) * scale < (int64_t(1) << 31) && x.size(3) * scale < (int64_t(1) << 31), op,
              ": the upsampled size ", x.size(2) * scale, "x", x.size(3) * scale, " is too large");
}

at::MemoryFormat output_format(const at::Tensor& x) { return x.suggest_memory_format(); }

namespace {
// t with exactly the dense strides of `fmt` (what the fake kernels promise): contiguous(fmt)
// keeps the strides of size-1 dims as they are, so a view (a crop of a padded gradient) can
// come back with strides that no freshly allocated tensor has.
at::Tensor dense_in(const at::Tensor& t, at::MemoryFormat fmt) {
  auto c = t.contiguous(fmt);
  const std::vector<int64_t> want = fmt == at::MemoryFormat::ChannelsLast
                                        ? c10::get_channels_last_strides_2d(c.sizes())
                                        : [&] {
                                            const auto d = c10::contiguous_strides(c.sizes());
                                            return std::vector<int64_t>(d.begin(), d.end());
                                          }();
  if (c.strides() == c10::IntArrayRef(want)) return c;
  return at::empty(c.sizes(), c.options().memory_format(fmt)).copy_(c);
}
}  // namespace

// ---------------------------------------------------------------- device glue registry

namespace {
std::array<std::optional<DeviceGlue>, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>&
glue_table() {
  static std::array<std::optional<DeviceGlue>,
                    static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)> table;
  return table;
}
}  // namespace

void register_device_glue(c10::DeviceType type, const DeviceGlue& glue) {
  glue_table()[static_cast<size_t>(type)] = glue;
}

const DeviceGlue& device_glue(const at::Tensor& t, const char* op) {
  const auto& entry = glue_table()[static_cast<size_t>(t.device().type())];
  TORCH_CHECK(entry.has_value(), op, ": no kernels for device ", t.device(), " in this build of ganx");
  return *entry;
}

// ---------------------------------------------------------------- weight fold (exact sums)

// Each glue kernel call shows in torch.profiler as one ganx::upconv_* event (one kernel launch
// on CUDA), so profiles and launch counts (benchmarks/bench_host_overhead.py) see them.
namespace {
void run_fold(const at::Tensor& weight, const FoldArgs& f, const at::Tensor& src, const at::Tensor& dst) {
  RECORD_FUNCTION("ganx::upconv_fold", std::vector<c10::IValue>());
  device_glue(weight, "upsample_conv2d").fold(f, src, dst);
}
void run_epilogue_fwd(const DeviceGlue& glue, const PhaseMaps& ph, const at::Tensor& out, const at::Tensor& bias,
                      int64_t s, Act act, double slope) {
  RECORD_FUNCTION("ganx::upconv_epilogue_fwd", std::vector<c10::IValue>());
  glue.epilogue_fwd(ph, out, bias, s, act, slope);
}
at::Tensor run_epilogue_bwd(const DeviceGlue& glue, const at::Tensor& grad, const at::Tensor& out, const PhaseMaps& ph,
                            int64_t s, Act act, double slope, bool need_bias) {
  RECORD_FUNCTION("ganx::upconv_epilogue_bwd", std::vector<c10::IValue>());
  return glue.epilogue_bwd(grad, out, ph, s, act, slope, need_bias);
}
void run_replicate_fwd(const DeviceGlue& glue, const at::Tensor& y, const at::Tensor& out, const at::Tensor& bias,
                       int64_t s, Act act, double slope) {
  RECORD_FUNCTION("ganx::upconv_replicate_fwd", std::vector<c10::IValue>());
  glue.replicate_fwd(y, out, bias, s, act, slope);
}
at::Tensor run_replicate_bwd(const DeviceGlue& glue, const at::Tensor& grad, const at::Tensor& out,
                             const at::Tensor& g_low, int64_t s, Act act, double slope, bool need_bias) {
  RECORD_FUNCTION("ganx::upconv_replicate_bwd", std::vector<c10::IValue>());
  return glue.replicate_bwd(grad, out, g_low, s, act, slope, need_bias);
}
}  // namespace

// The FoldArgs of each fold come from the recipes in upconv_fold.h (on sizes and strides, so
// that the CUDA emulator tests build them with the same code); the device glue runs them.
at::Tensor fold_weight(const at::Tensor& weight, const UpConvGeometry& g) {
  const int64_t d_o = fold::w_out_dim(g), d_i = 1 - d_o;
  const int64_t c_out = weight.size(d_o), c_in = weight.size(d_i);
  auto wf = at::empty({g.s, g.s, c_out, c_in, g.T, g.T}, weight.options().memory_format(at::MemoryFormat::Contiguous));
  const FoldArgs f = fold::weight_fold(g, weight.sizes().data(), weight.strides().data(), wf.sizes().data(),
                                       wf.strides().data());
  run_fold(weight, f, weight, wf);
  return wf;
}

at::Tensor unfold_weight_grad(const at::Tensor& grad_folded, const UpConvGeometry& g, const at::Tensor& weight) {
  auto gw = at::empty(weight.sizes(), grad_folded.options().memory_format(at::MemoryFormat::Contiguous));
  const FoldArgs f = fold::weight_unfold(g, grad_folded.sizes().data(), grad_folded.strides().data(),
                                         gw.sizes().data(), gw.strides().data());
  run_fold(weight, f, grad_folded, gw);
  return gw;
}

namespace {

// The (C_in, C_out, 4, 4) transposed-conv kernel of the deconv form: for upsample + 3x3, rows
// (and columns) K0 = w2, K1 = w1 + w2, K2 = w0 + w1, K3 = w0 (docs/design.md section 2: the phase taps
// interleaved); ConvTranspose2d's own weight as it is.
at::Tensor deconv_weight(const at::Tensor& weight, const UpConvGeometry& g) {
  if (g.fold == Fold::ConvTranspose4s2) return weight;
  auto w4 = at::empty({weight.size(1), weight.size(0), 4, 4}, weight.options().memory_format(at::MemoryFormat::Contiguous));
  const FoldArgs f = fold::deconv_fold(g, weight.sizes().data(), weight.strides().data(), w4.sizes().data(),
                                       w4.strides().data());
  run_fold(weight, f, weight, w4);
  return w4;
}

at::Tensor deconv_weight_grad(const at::Tensor& gw4, const UpConvGeometry& g, const at::Tensor& weight) {
  if (g.fold == Fold::ConvTranspose4s2) return gw4.contiguous();  // the vendor may follow weight's layout
  auto gw = at::empty(weight.sizes(), gw4.options().memory_format(at::MemoryFormat::Contiguous));
  const FoldArgs f = fold::deconv_unfold(g, gw4.sizes().data(), gw4.strides().data(), gw.sizes().data(),
                                         gw.strides().data());
  run_fold(weight, f, gw4, gw);
  return gw;
}

bool uniform_taps(const UpConvGeometry& g) {
  for (int64_t a = 0; a < g.s; ++a)
    if (g.taps[a] != g.T) return false;
  return true;
}

}  // namespace

// ---------------------------------------------------------------- algorithm choice

const char* algo_name(UpconvAlgo a) {
  switch (a) {
    case UpconvAlgo::Deconv: return "deconv";
    case UpconvAlgo::Stacked: return "stacked";
    case UpconvAlgo::Split: return "split";
    case UpconvAlgo::Replicate: return "replicate";
  }
  return "?";
}

bool algo_available(UpconvAlgo a, const UpConvGeometry& g) {
  switch (a) {
    case UpconvAlgo::Deconv: return g.s == 2 && g.T == 2 && uniform_taps(g) && g.d0[0] == -1 && g.d0[1] == 0;
    // Phases with fewer taps than T would multiply x outside their receptive field by the
    // zero padding taps (0 * NaN = NaN): only the per-phase form skips them.
    case UpconvAlgo::Stacked: return uniform_taps(g);
    case UpconvAlgo::Split: return true;
    // every phase kernel is the 1x1 weight itself, reading input offset 0 (T = 1, d0 = 0)
    case UpconvAlgo::Replicate: return g.fold == Fold::UpsampleConv && g.k == 1;
  }
  return false;
}

namespace {

constexpr UpconvAlgo kAllAlgos[] = {UpconvAlgo::Deconv, UpconvAlgo::Stacked, UpconvAlgo::Split,
                                     UpconvAlgo::Replicate};

std::optional<UpconvAlgo> parse_algo(const std::string& name, const char* where) {
  if (name.empty() || name == "auto") return std::nullopt;
  for (auto a : kAllAlgos)
    if (name == algo_name(a)) return a;
  TORCH_CHECK_VALUE(false, where, ": algorithm must be one of 'auto', 'deconv', 'stacked', 'split', 'replicate', got '",
                    name, "'");
}

// The forced algorithm as an int (-1: automatic), read on every call without a lock.
std::atomic<int>& forced_algo() {
  static std::atomic<int> forced{[] {
    const char* env = std::getenv("GANX_UPCONV_ALGO");
    const auto a = parse_algo(env ? env : "", "GANX_UPCONV_ALGO");
    return a ? static_cast<int>(*a) : -1;
  }()};
  return forced;
}

// The documented static rule. CUDA: the vendor's transposed conv whenever the geometry allows
// it, else the stacked form, else per phase. CPU (measured on oneDNN, DCGAN shapes, forward
// and backward timed apart: benchmarks/bench_dropin.py --parts algo): where the deconv form
// applies (scale 2, 3x3 kernel; the transposed-conv op), it from 4x4 maps on, except the
// forward with fewer than 16 output channels (an RGB output layer), which takes the stacked
// form (oneDNN's deconvolution to 3 channels runs at half its speed); elsewhere the stacked
// form from 16x16 maps on (its unused border costs (H+1)(W+1)/(HW), 1.56x at 4x4); per phase
// below (at scale 2 per phase was the slowest form at every DCGAN shape from 4x4 on). A 1x1
// kernel takes the replicate form on both devices: s*s fewer multiply-adds than any other form
// (the same GEMM as a plain 1x1 conv of x), and its epilogue writes the output once.
UpconvAlgo rule(const UpConvGeometry& g, int64_t H, int64_t W, int64_t c_out, bool forward, bool cuda) {
  if (algo_available(UpconvAlgo::Replicate, g)) return UpconvAlgo::Replicate;
  const int64_t m = std::min(H, W);
  if (algo_available(UpconvAlgo::Deconv, g)) {
    if (cuda) return UpconvAlgo::Deconv;
    if (m >= 4) return forward && c_out < 16 ? UpconvAlgo::Stacked : UpconvAlgo::Deconv;
  }
  if (algo_available(UpconvAlgo::Stacked, g) && (cuda || m >= 16)) return UpconvAlgo::Stacked;
  return UpconvAlgo::Split;
}

// ---- the choice cache. The key is plain data (no string formatting on the hot path: the
// choice runs on every call, and its cost is host overhead a GPU user pays per layer); the
// map is read under a shared lock and written only when an entry is new or changes.
struct ChoiceKey {
  std::array<int64_t, 4> x{};
  int64_t c_out = 0;
  int32_t s = 0, k = 0;
  Fold fold = Fold::UpsampleConv;
  bool backward = false, bias = false, channels_last = false;
  at::ScalarType dtype = at::kFloat;
  c10::Device device{c10::kCPU};
  Act act = Act::None;

  bool operator==(const ChoiceKey& o) const {
    return x == o.x && c_out == o.c_out && s == o.s && k == o.k && fold == o.fold && backward == o.backward &&
           bias == o.bias && channels_last == o.channels_last && dtype == o.dtype && device == o.device &&
           act == o.act;
  }
  // "upsample_conv2d forward x[1, 2, 9, 9] c_out=3 s=2 k=3 Float contiguous cpu bias act=1"
  std::string str() const {
    std::ostringstream k_;
    k_ << (fold == Fold::ConvTranspose4s2 ? "conv_transpose2d_4s2" : "upsample_conv2d") << " "
       << (backward ? "backward" : "forward") << " x" << c10::IntArrayRef(x) << " c_out=" << c_out << " s=" << s
       << " k=" << k << " " << dtype << " " << (channels_last ? "channels_last" : "contiguous") << " " << device
       << (bias ? " bias" : "") << " act=" << static_cast<int>(act);
    return k_.str();
  }
};

struct ChoiceKeyHash {
  size_t operator()(const ChoiceKey& k) const {
    size_t h = 0;
    for (auto v : k.x) h = c10::hash_combine(h, std::hash<int64_t>()(v));
    h = c10::hash_combine(h, std::hash<int64_t>()(k.c_out));
    const uint64_t small = uint64_t(k.s) | uint64_t(k.k) << 8 | uint64_t(k.fold) << 16 | uint64_t(k.backward) << 18 |
                           uint64_t(k.bias) << 19 | uint64_t(k.channels_last) << 20 | uint64_t(k.dtype) << 21 |
                           uint64_t(k.device.type()) << 29 | uint64_t(uint8_t(k.device.index())) << 37 |
                           uint64_t(k.act) << 45;
    return c10::hash_combine(h, std::hash<uint64_t>()(small));
  }
};

enum class Source : int { Rule = 0, Timed = 1, Forced = 2 };
const char* source_name(Source s) {
  switch (s) {
    case Source::Rule: return "rule";
    case Source::Timed: return "timed";
    case Source::Forced: return "forced";
  }
  return "?";
}

struct Choice {
  UpconvAlgo algo;
  Source source;
};

std::shared_mutex& algo_mutex() {
  static std::shared_mutex m;
  return m;
}
std::unordered_map<ChoiceKey, Choice, ChoiceKeyHash>& algo_cache() {
  static std::unordered_map<ChoiceKey, Choice, ChoiceKeyHash> c;
  return c;
}
constexpr size_t kMaxCachedChoices = 4096;

std::optional<Choice> cached(const ChoiceKey& key) {
  std::shared_lock<std::shared_mutex> lock(algo_mutex());
  const auto& c = algo_cache();
  auto it = c.find(key);
  if (it == c.end()) return std::nullopt;
  return it->second;
}

// Records `choice` unless it is what the cache holds already (the common case: a shared lock
// only) or a graph is being recorded (`recording()`, asked only when a write would follow).
template <typename Recording>
void remember(const ChoiceKey& key, Choice choice, Recording&& recording) {
  if (auto old = cached(key); old && old->algo == choice.algo && old->source == choice.source) return;
  if (recording()) return;
  std::unique_lock<std::shared_mutex> lock(algo_mutex());
  auto& c = algo_cache();
  if (c.size() < kMaxCachedChoices || c.count(key)) c[key] = choice;
}

// Picks the algorithm: forced > cached timing (cudnn.benchmark on, deterministic mode off) >
// rule. `run` runs one candidate once (used only for timing). While a CUDA graph is captured
// or the JIT tracer records, the choice is the one eager would make from what is cached (the
// timed entry if there is one, else the rule), and nothing is timed or written: a recorded
// graph must run what eager runs, and must not make the next eager call time again. Under
// torch.use_deterministic_algorithms(True) nothing is timed (a timed choice may differ from
// run to run): the rule.
template <typename Run>
UpconvAlgo choose(const UpConvGeometry& g, bool backward, const at::Tensor& x, int64_t c_out, bool bias, Act act,
                  const DeviceGlue& glue, Run&& run) {
  ChoiceKey key;
  for (int d = 0; d < 4; ++d) key.x[d] = x.size(d);
  key.c_out = c_out;
  key.s = static_cast<int32_t>(g.s);
  key.k = static_cast<int32_t>(g.k);
  key.fold = g.fold;
  key.backward = backward;
  key.bias = bias;
  key.channels_last = output_format(x) == at::MemoryFormat::ChannelsLast;
  key.dtype = x.scalar_type();
  key.device = x.device();
  key.act = act;
  const char* op = g.fold == Fold::ConvTranspose4s2 ? "conv_transpose2d_4s2" : "upsample_conv2d";
  auto recording = [&] { return glue.capturing(x.device()) || torch::jit::tracer::isTracing(); };

  if (const int f = forced_algo().load(std::memory_order_relaxed); f >= 0) {
    const auto a = static_cast<UpconvAlgo>(f);
    TORCH_CHECK_VALUE(algo_available(a, g), op, ": the forced algorithm '", algo_name(a),
                      "' (GANX_UPCONV_ALGO / ganx.ops.upconv_algorithm) is not available for scale ", g.s,
                      " with a ", g.k, "x", g.k, " kernel; '",
                      algo_name(rule(g, x.size(2), x.size(3), c_out, true, true)), "' and 'split' are");
    remember(key, {a, Source::Forced}, recording);
    return a;
  }
  const auto& ctx = at::globalContext();
  if (ctx.benchmarkCuDNN() && !ctx.deterministicAlgorithms()) {
    const auto c = cached(key);
    if (c && c->source == Source::Timed) return c->algo;
    if (!recording() && x.numel() > 0) {
      // Time every available candidate once: a warm-up, then the best of three runs.
      UpconvAlgo best = UpconvAlgo::Split;
      double best_t = 0;
      bool first = true;
      for (auto a : kAllAlgos) {
        if (!algo_available(a, g)) continue;
        run(a);
        double t_min = 0;
        for (int rep = 0; rep < 3; ++rep) {
          glue.synchronize(x.device());
          const auto t0 = std::chrono::steady_clock::now();
          run(a);
          glue.synchronize(x.device());
          const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          t_min = rep == 0 ? t : std::min(t_min, t);
        }
        if (first || t_min < best_t) {
          best = a;
          best_t = t_min;
          first = false;
        }
      }
      remember(key, {best, Source::Timed}, recording);
      return best;
    }
  }
  const UpconvAlgo a = rule(g, x.size(2), x.size(3), c_out, !backward, x.device().is_cuda());
  remember(key, {a, Source::Rule}, recording);
  return a;
}

// ---------------------------------------------------------------- the forward composition

PhaseMaps stacked_maps(const at::Tensor& y, const UpConvGeometry& g, int64_t c_out) {
  PhaseMaps ph;
  ph.tensors = {y};
  for (int64_t a = 0; a < g.s; ++a)
    for (int64_t b = 0; b < g.s; ++b)
      ph.offset[a * g.s + b] = (a * g.s + b) * c_out * y.stride(1) + (g.pad_lo + g.d0[a]) * y.stride(2) +
                               (g.pad_lo + g.d0[b]) * y.stride(3);
  return ph;
}

// The window of the padded input that phase (a, b) correlates with its taps[a] x taps[b] kernel.
at::Tensor phase_window(const at::Tensor& xp, const UpConvGeometry& g, int64_t a, int64_t b, int64_t H, int64_t W) {
  return xp.narrow(2, g.pad_lo + g.d0[a], H + g.taps[a] - 1).narrow(3, g.pad_lo + g.d0[b], W + g.taps[b] - 1);
}
// Phase (a, b)'s kernel without its zero padding taps.
at::Tensor phase_kernel(const at::Tensor& wf, const UpConvGeometry& g, int64_t a, int64_t b) {
  return wf[a][b].narrow(2, 0, g.taps[a]).narrow(3, 0, g.taps[b]);
}

at::Tensor padded_input(const at::Tensor& x, const UpConvGeometry& g, at::MemoryFormat fmt) {
  return at::constant_pad_nd(x, {g.pad_lo, g.pad_hi, g.pad_lo, g.pad_hi}, 0).contiguous(fmt);
}

at::Tensor stacked_weight(const at::Tensor& wf, const UpConvGeometry& g) {
  return wf.reshape({g.s * g.s * wf.size(2), wf.size(3), g.T, g.T});
}

// The replicate form's large maps (its output, the backward's block sums): on the CPU from
// ganx's buffer cache (cpu/buffer_cache.h), since a training step allocates the same ones every
// iteration and glibc would page-fault them in again each time (the form is memory-bound past its
// GEMM); channels_last as a permuted N x H x W x C block (the same strides at::empty gives).
at::Tensor replicate_empty(const at::Tensor& like, at::IntArrayRef sizes, at::MemoryFormat fmt) {
  if (!like.device().is_cpu()) return at::empty(sizes, like.options().memory_format(fmt));
  if (fmt == at::MemoryFormat::ChannelsLast)
    return cached_empty({sizes[0], sizes[2], sizes[3], sizes[1]}, like.options()).permute({0, 3, 1, 2});
  return cached_empty(sizes, like.options());
}

at::Tensor forward_with(UpconvAlgo algo, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        const UpConvGeometry& g, Act act, double slope, int64_t c_out, const DeviceGlue& glue) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const auto fmt = output_format(x);
  if (algo == UpconvAlgo::Deconv) {
    // The vendor writes the interleaved output; with no activation it adds the bias itself.
    const auto b = act == Act::None && bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
    auto y = dense_in(at::conv_transpose2d(x, deconv_weight(weight, g), b, /*stride=*/2, /*padding=*/1), fmt);
    if (act != Act::None) run_epilogue_fwd(glue, PhaseMaps{{y}, {}}, y, bias, 1, act, slope);
    return y;
  }
  if (algo == UpconvAlgo::Replicate) {
    // conv1x1(up(x)) = up(conv1x1(x)): the GEMM at the input resolution (the weight as it is: no
    // fold), then bias + activation at the input resolution and the s x s replication in one
    // pass. At s = 1 the vendor writes the output itself (adding the bias when nothing follows).
    if (g.s == 1) {
      const auto b = act == Act::None && bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
      auto y = dense_in(at::conv2d(x, weight, b), fmt);
      if (act != Act::None) run_epilogue_fwd(glue, PhaseMaps{{y}, {}}, y, bias, 1, act, slope);
      return y;
    }
    const auto y = at::conv2d(x, weight);
    auto out = replicate_empty(x, {N, c_out, H * g.s, W * g.s}, fmt);
    run_replicate_fwd(glue, y, out, bias, g.s, act, slope);
    return out;
  }
  auto out = at::empty({N, c_out, H * g.s, W * g.s}, x.options().memory_format(fmt));
  const at::Tensor wf = fold_weight(weight, g);
  if (algo == UpconvAlgo::Stacked) {
    at::Tensor y;
    if (g.pad_lo == g.pad_hi) {
      y = at::conv2d(x, stacked_weight(wf, g), {}, /*stride=*/1, /*padding=*/g.pad_lo);
    } else {
      y = at::conv2d(padded_input(x, g, fmt), stacked_weight(wf, g));
    }
    run_epilogue_fwd(glue, stacked_maps(y, g, c_out), out, bias, g.s, act, slope);
    return out;
  }
  const auto xp = padded_input(x, g, fmt);
  PhaseMaps ph;
  bool same_strides = true;
  for (int64_t a = 0; a < g.s; ++a)
    for (int64_t b = 0; b < g.s; ++b) {
      ph.tensors.push_back(at::conv2d(phase_window(xp, g, a, b, H, W), phase_kernel(wf, g, a, b)));
      same_strides = same_strides && ph.tensors.back().strides() == ph.tensors[0].strides();
    }
  if (!same_strides)
    for (auto& t : ph.tensors) t = t.contiguous(fmt);
  run_epilogue_fwd(glue, ph, out, bias, g.s, act, slope);
  return out;
}

// ---------------------------------------------------------------- the backward composition
// Backward (derivation): with pre = out before the activation, d pre = act'(out) * grad_out
// (the backward epilogue, which also de-interleaves d pre into the phase maps and sums it
// for d bias). Each phase is the stride-1 valid correlation
//   pre_ab[n,o,i,j] = b[o] + sum_{c,t,u} Wf_ab[o,c,t,u] x[n,c,i+d0[a]+t,j+d0[b]+u],
// so d x is the sum over phases of the full correlation of d pre_ab with the flipped phase
// kernel and d Wf_ab[o,c,t,u] = sum_{n,i,j} d pre_ab[n,o,i,j] x[n,c,i+d0[a]+t,j+d0[b]+u]: the
// vendor's convolution_backward of whichever form the forward took (deconv: the transposed
// conv; stacked: the stacked conv with zero gradient on its unused border; split: each phase's
// conv, input gradients added). d weight is the transpose of the (linear) fold applied to d Wf.
struct Grads {
  at::Tensor gx, gw, gb;
};

Grads backward_with(UpconvAlgo algo, const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                    const at::Tensor& out, const UpConvGeometry& g, Act act, double slope, int64_t c_out, bool need_x,
                    bool need_w, bool need_b, const DeviceGlue& glue) {
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const auto fmt = output_format(x);
  const at::Tensor y_out = act != Act::None ? out : at::Tensor();
  Grads r;
  if (algo == UpconvAlgo::Deconv) {
    at::Tensor gpre = grad;
    if (act == Act::None) {
      if (need_b) {
        const auto acc = at::toOpMathType(grad.scalar_type());
        r.gb = acc == grad.scalar_type() ? grad.sum({0, 2, 3}) : grad.sum({0, 2, 3}, false, acc).to(grad.scalar_type());
      }
    } else {
      gpre = at::empty(grad.sizes(), grad.options().memory_format(fmt));
      r.gb = run_epilogue_bwd(glue, grad, y_out, PhaseMaps{{gpre}, {}}, 1, act, slope, need_b);
    }
    if (!need_x && !need_w) return r;
    const auto w4 = deconv_weight(weight, g);
    auto [gx, gw4, unused] = at::convolution_backward(
        gpre, x, w4, std::nullopt, /*stride=*/{2, 2}, /*padding=*/{1, 1}, /*dilation=*/{1, 1}, /*transposed=*/true,
        /*output_padding=*/{0, 0}, /*groups=*/1, {need_x, need_w, false});
    if (need_x) r.gx = dense_in(gx, fmt);
    if (need_w) r.gw = deconv_weight_grad(gw4, g, weight);
    return r;
  }
  if (algo == UpconvAlgo::Replicate) {
    // out = act(pre), pre = up(conv1x1(x)) + b: d pre = act'(out) * grad_out, and up's adjoint
    // sums each s x s block, so g_low = blocksum(d pre) (s = 1: d pre itself) is the gradient
    // of the input-resolution conv: grad_x = W^T g_low, grad_W = sum g_low x^T (every
    // replicated position counted once per copy), grad_b = sum g_low.
    at::Tensor g_low;
    if (g.s == 1 && act == Act::None) {
      g_low = grad;
      if (need_b) {
        const auto acc = at::toOpMathType(grad.scalar_type());
        r.gb = acc == grad.scalar_type() ? grad.sum({0, 2, 3}) : grad.sum({0, 2, 3}, false, acc).to(grad.scalar_type());
      }
    } else if (g.s == 1) {
      g_low = at::empty(grad.sizes(), grad.options().memory_format(fmt));
      r.gb = run_epilogue_bwd(glue, grad, y_out, PhaseMaps{{g_low}, {}}, 1, act, slope, need_b);
    } else {
      g_low = replicate_empty(grad, {N, c_out, H, W}, fmt);
      r.gb = run_replicate_bwd(glue, grad, y_out, g_low, g.s, act, slope, need_b);
    }
    if (!need_x && !need_w) return r;
    auto [gx, gw, unused] = at::convolution_backward(
        g_low, x, weight, std::nullopt, /*stride=*/{1, 1}, /*padding=*/{0, 0}, /*dilation=*/{1, 1},
        /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1, {need_x, need_w, false});
    if (need_x) r.gx = dense_in(gx, fmt);
    if (need_w) r.gw = dense_in(gw, at::MemoryFormat::Contiguous);  // the vendor may follow weight's layout
    return r;
  }
  const at::Tensor wf = fold_weight(weight, g);
  if (algo == UpconvAlgo::Stacked) {
    const bool conv_pads = g.pad_lo == g.pad_hi;
    const at::Tensor xin = conv_pads ? x : padded_input(x, g, fmt);
    const int64_t Hf = H + g.pad_lo + g.pad_hi - g.T + 1, Wf = W + g.pad_lo + g.pad_hi - g.T + 1;
    auto gy = at::zeros({N, g.s * g.s * c_out, Hf, Wf}, grad.options().memory_format(fmt));
    r.gb = run_epilogue_bwd(glue, grad, y_out, stacked_maps(gy, g, c_out), g.s, act, slope, need_b);
    if (!need_x && !need_w) return r;
    const auto w_all = stacked_weight(wf, g);
    const int64_t pad = conv_pads ? g.pad_lo : 0;
    auto [gxin, gw_all, unused] = at::convolution_backward(
        gy, xin, w_all, std::nullopt, /*stride=*/{1, 1}, /*padding=*/{pad, pad}, /*dilation=*/{1, 1},
        /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1, {need_x, need_w, false});
    if (need_x) r.gx = dense_in(conv_pads ? gxin : gxin.narrow(2, g.pad_lo, H).narrow(3, g.pad_lo, W), fmt);
    if (need_w) r.gw = unfold_weight_grad(gw_all.reshape(wf.sizes()).contiguous(), g, weight);
    return r;
  }
  PhaseMaps ph;
  for (int64_t ab = 0; ab < g.s * g.s; ++ab) ph.tensors.push_back(at::empty({N, c_out, H, W}, grad.options().memory_format(fmt)));
  r.gb = run_epilogue_bwd(glue, grad, y_out, ph, g.s, act, slope, need_b);
  if (!need_x && !need_w) return r;
  const auto xp = padded_input(x, g, fmt);
  at::Tensor gxp = need_x ? at::zeros_like(xp) : at::Tensor();
  at::Tensor gwf = need_w ? at::zeros_like(wf) : at::Tensor();  // padding taps keep a zero gradient
  for (int64_t a = 0; a < g.s; ++a) {
    for (int64_t b = 0; b < g.s; ++b) {
      auto window = phase_window(xp, g, a, b, H, W);
      auto [gi, gk, unused] = at::convolution_backward(
          ph.tensors[a * g.s + b], window, phase_kernel(wf, g, a, b), std::nullopt, {1, 1}, {0, 0}, {1, 1}, false,
          {0, 0}, 1, {need_x, need_w, false});
      if (need_x) phase_window(gxp, g, a, b, H, W).add_(gi);
      if (need_w) phase_kernel(gwf, g, a, b).copy_(gk);
    }
  }
  if (need_x) r.gx = dense_in(gxp.narrow(2, g.pad_lo, H).narrow(3, g.pad_lo, W), fmt);
  if (need_w) r.gw = unfold_weight_grad(gwf, g, weight);
  return r;
}

}  // namespace

// ---------------------------------------------------------------- the ops

void set_forced_algorithm(const std::string& name) {
  const auto a = parse_algo(name, "ganx.ops.upconv_algorithm");
  forced_algo().store(a ? static_cast<int>(*a) : -1);
}

std::string forced_algorithm() {
  const int f = forced_algo().load();
  return f >= 0 ? algo_name(static_cast<UpconvAlgo>(f)) : "";
}

std::vector<AlgoChoice> algorithm_choices() {
  std::vector<AlgoChoice> v;
  {
    std::shared_lock<std::shared_mutex> lock(algo_mutex());
    for (const auto& kv : algo_cache()) v.push_back({kv.first.str(), algo_name(kv.second.algo), source_name(kv.second.source)});
  }
  std::sort(v.begin(), v.end(), [](const AlgoChoice& a, const AlgoChoice& b) { return a.key < b.key; });
  return v;
}

void clear_algorithm_choices() {
  std::unique_lock<std::shared_mutex> lock(algo_mutex());
  algo_cache().clear();
}

at::Tensor phase_conv_op(const char* op, const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, const UpConvGeometry& g,
                         const std::string& activation, double negative_slope) {
  const Act act = parse_activation(activation, negative_slope, op);
  const int64_t c_out = weight.size(fold::w_out_dim(g));
  const at::Tensor b = (bias.has_value() && bias->defined()) ? *bias : at::Tensor();
  const auto& glue = device_glue(x, op);
  if (x.numel() == 0) {
    return at::empty({x.size(0), c_out, x.size(2) * g.s, x.size(3) * g.s}, x.options().memory_format(output_format(x)));
  }
  const UpconvAlgo algo = choose(g, /*backward=*/false, x, c_out, b.defined(), act, glue, [&](UpconvAlgo a) {
    forward_with(a, x, weight, b, g, act, negative_slope, c_out, glue);
  });
  return forward_with(algo, x, weight, b, g, act, negative_slope, c_out, glue);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> phase_conv_backward_op(
    const char* op, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& out, bool has_bias, const UpConvGeometry& g, const std::string& activation,
    double negative_slope, std::array<bool, 3> output_mask) {
  const Act act = parse_activation(activation, negative_slope, op);
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  const int64_t c_out = weight.size(fold::w_out_dim(g));
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == N && grad_out.size(1) == c_out &&
                  grad_out.size(2) == H * g.s && grad_out.size(3) == W * g.s,
              op, "_backward: grad_out must have shape ", std::vector<int64_t>{N, c_out, H * g.s, W * g.s},
              ", got ", grad_out.sizes());
  const std::string bop = std::string(op) + "_backward";
  check_device(bop.c_str(), "grad_out", grad_out, "x", x);
  check_device(bop.c_str(), "weight", weight, "x", x);
  check_device(bop.c_str(), "out", out, "x", x);
  if (act != Act::None) {
    TORCH_CHECK(out.sizes() == grad_out.sizes(), op, "_backward: out must have the shape of grad_out ",
                grad_out.sizes(), " when an activation is fused, got ", out.sizes());
    TORCH_CHECK(out.scalar_type() == x.scalar_type(), op, "_backward: out must have the dtype of x");
  }
  const bool need_x = output_mask[0], need_w = output_mask[1], need_b = output_mask[2] && has_bias;
  if (grad_out.numel() == 0 || (!need_x && !need_w && !need_b)) {
    // An empty grad_out: every gradient is zero (gx is empty too unless only C_out is 0).
    const auto fmt = output_format(x);
    return {need_x ? at::zeros(x.sizes(), x.options().memory_format(fmt)) : at::empty({0}, x.options()),
            need_w ? at::zeros(weight.sizes(), weight.options()) : at::empty({0}, weight.options()),
            need_b ? at::zeros({c_out}, x.options()) : at::empty({0}, x.options())};
  }

  const auto& glue = device_glue(x, op);
  // (aten::to is an op call even when it returns its input: convert only when needed.)
  const at::Tensor grad = grad_out.scalar_type() == x.scalar_type() ? grad_out : grad_out.to(x.scalar_type());
  const UpconvAlgo algo = choose(g, /*backward=*/true, x, c_out, has_bias, act, glue, [&](UpconvAlgo a) {
    backward_with(a, grad, x, weight, out, g, act, negative_slope, c_out, need_x, need_w, need_b, glue);
  });
  // Every gradient asked for is a fresh tensor the composition wrote in full (the folds write
  // every tap of a contiguous weight-shaped tensor in weight's dtype); the others are empty.
  Grads r = backward_with(algo, grad, x, weight, out, g, act, negative_slope, c_out, need_x, need_w, need_b, glue);
  auto none = [&] { return at::empty({0}, x.options()); };
  return {need_x ? r.gx : none(), need_w ? r.gw : none(), need_b ? r.gb : none()};
}

at::Tensor activation_op(const at::Tensor& x, c10::string_view activation, double negative_slope) {
  const char* op = "activation";
  const Act act = parse_activation(activation, negative_slope, op);
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be a floating-point tensor, got ", x.scalar_type());
  auto out = at::empty(x.sizes(), x.options().memory_format(output_format(x)));
  if (x.numel() == 0) return out;
  // The forward epilogue at s = 1 with no bias: out = act(x), the kernels' own act_forward.
  run_epilogue_fwd(device_glue(x, op), PhaseMaps{{x}, {}}, out, at::Tensor(), 1, act, negative_slope);
  return out;
}

at::Tensor upsample_conv2d(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                           int64_t scale, int64_t padding, c10::string_view activation, double negative_slope) {
  check_upsample_conv2d_inputs(x, weight, bias, scale, padding);
  return phase_conv_op("upsample_conv2d", x, weight, bias, upconv_geometry(scale, weight.size(2), padding),
                       std::string(activation), negative_slope);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> upsample_conv2d_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out,
    bool has_bias, int64_t scale, int64_t padding, c10::string_view activation, double negative_slope,
    std::array<bool, 3> output_mask) {
  check_upsample_conv2d_inputs(x, weight, std::nullopt, scale, padding);
  return phase_conv_backward_op("upsample_conv2d", grad_out, x, weight, out, has_bias,
                                upconv_geometry(scale, weight.size(2), padding), std::string(activation),
                                negative_slope, output_mask);
}

void register_phase_conv_kernels(torch::Library& m) {
  m.impl("upsample_conv2d", &upsample_conv2d);
  m.impl("upsample_conv2d_backward", &upsample_conv2d_backward);
  m.impl("conv_transpose2d_4s2", &conv_transpose2d_4s2);
  m.impl("conv_transpose2d_4s2_backward", &conv_transpose2d_4s2_backward);
  m.impl("activation", &activation_op);
}

}  // namespace ganx
