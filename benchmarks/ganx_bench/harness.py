"""Shared benchmark harness: environment, timing, device peaks, numerics checks, output.

Timing methods (each result records which one produced it):

- ``cuda-events``: after warm-up, a CUDA event pair around every call, calls issued back to
  back on the current stream with no host synchronisation in between; median, p20 and p80
  over many calls. When the host cannot keep the GPU fed (small, launch-bound problems) the
  GPU waits for the host and the events measure the host's dispatch time too: this is the
  "wall" time a training loop sees. With ``--cache flush`` a 2x-L2 buffer is zeroed before
  every call (outside the events) so inputs that would fit in L2 are read cold.
- ``cuda-graph``: the call captured once in a CUDA graph and timed by events around each
  replay: device time without the Python/dispatcher cost (the launch-bound column).
- ``torch.utils.benchmark``: on CPU, ``Timer.blocked_autorange``; median, p20 and p80 over
  the measurement's blocks (topped up to a minimum number of blocks).
- ``wall`` and ``host`` (:func:`time_host`; on the CPU both are the timer's median): host clocks. ``wall`` = time per call
  of many back-to-back calls ended by one synchronisation (what a training loop sees: the larger
  of the host's and the device's time per call); ``host`` = time for the host to issue one call
  after a synchronisation, the device idle (Python, dispatch, glue and kernel launches: the
  host overhead, whatever the kernels cost). With the graph-replay column (kernel time only)
  a row shows whether it is host- or kernel-bound.

A run interrupted by SIGINT (``timeout -s INT``, Ctrl-C) keeps the rows measured so far:
:func:`run_rows` stops the loop, :func:`finish` writes them marked ``interrupted`` and exits 130.

Nothing here touches CUDA at import; every CUDA call sits behind ``device.type == "cuda"``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch

# Fields that identify a result row, per benchmark (for --compare and benchmarks/compare.py).
COMPARE_KEYS = {
    "upsample_conv": ("shape", "phase", "contender"),
    "losses": ("loss", "n", "phase", "contender"),
    "train_step": ("config", "contender"),
}

__all__ = ["COMPARE_KEYS", 
    "Context", "Timing", "NumericsError", "add_common_args", "setup", "time_fn", "time_cuda_graph",
    "peak_memory", "check_close", "tolerance", "geomean", "fmt_time", "fmt_bytes", "md_table",
    "header_md", "finish", "compare_md", "load_json", "plot_bars", "plot_roofline", "plot_lines",
    "reset_compile_caches", "time_host", "run_rows", "upconv_choices",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
SHORT_DTYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


class NumericsError(AssertionError):
    """Raised before any timing when a contender disagrees with the reference contender."""


# --------------------------------------------------------------------------- environment

def _run(cmd: Sequence[str], cwd: Optional[str] = None) -> Optional[str]:
    try:
        out = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str:
    """Commit of the ganx source tree.

    In this order: the environment variable ``GANX_COMMIT`` (a tree copied without .git, as on
    a lent GPU machine, gets its commit from whoever copied it); git (``+dirty`` when the tree
    has uncommitted changes); the first line of a file ``.ganx_commit`` at the top of the
    source tree; else "unknown (not a git checkout)".
    """
    env = os.environ.get("GANX_COMMIT", "").strip()
    if env:
        return env
    import ganx
    src = Path(ganx.__file__).resolve().parent
    sha = _run(["git", "rev-parse", "--short=12", "HEAD"], cwd=str(src))
    if sha is not None:
        dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=str(src))
        return sha + ("+dirty" if dirty else "")
    for d in (src, *src.parents):
        f = d / ".ganx_commit"
        if f.is_file():
            lines = f.read_text().split()
            if lines:
                return lines[0] + " (from .ganx_commit)"
    return "unknown (not a git checkout)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_flags() -> Dict[str, Any]:
    """Every numerics/performance flag that can change a result, as currently set."""
    b = torch.backends
    flags: Dict[str, Any] = {
        "torch.get_num_threads": torch.get_num_threads(),
        "torch.get_num_interop_threads": torch.get_num_interop_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn.benchmark": b.cudnn.benchmark,
        "cudnn.deterministic": b.cudnn.deterministic,
        "cudnn.enabled": b.cudnn.enabled,
        "mkldnn.enabled": b.mkldnn.enabled,
    }
    # torch >= 2.9 spells TF32 as fp32_precision; reading the legacy allow_tf32 as well would
    # mix the two APIs, which newer torch refuses.
    for name, obj in (("cuda.matmul", getattr(b.cuda, "matmul", None)),
                      ("cudnn.conv", getattr(b.cudnn, "conv", None)),
                      ("mkldnn", b.mkldnn)):
        if obj is not None and hasattr(obj, "fp32_precision"):
            flags[f"{name}.fp32_precision"] = obj.fp32_precision
    if not hasattr(getattr(b.cuda, "matmul", None), "fp32_precision"):
        flags["cuda.matmul.allow_tf32"] = b.cuda.matmul.allow_tf32
        flags["cudnn.allow_tf32"] = b.cudnn.allow_tf32
    return flags


def set_tf32(on: bool) -> None:
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):
        b.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
        b.cudnn.conv.fp32_precision = "tf32" if on else "ieee"
    else:  # torch < 2.9
        b.cuda.matmul.allow_tf32 = on
        b.cudnn.allow_tf32 = on


def environment(device: torch.device) -> Dict[str, Any]:
    import ganx
    env: Dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host_cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "ganx": getattr(ganx, "__version__", "unknown"),
        "ganx_commit": git_commit(),
        "ganx_cuda_built": bool(getattr(ganx._ext, "CUDA_BUILT", False)),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    try:
        load = os.getloadavg()
        env["loadavg_1_5_15"] = [round(v, 2) for v in load]
    except OSError:
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update({
            "device": p.name,
            "compute_capability": f"{p.major}.{p.minor}",
            "sm_count": p.multi_processor_count,
            "gpu_memory_gib": round(p.total_memory / 2**30, 1),
            "l2_cache_mib": round(getattr(p, "L2_cache_size", 0) / 2**20, 1) or None,
            "driver": _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader",
                            f"--id={device.index or 0}"]),
            "gpu_clocks_mhz": _run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm",
                                    "--format=csv,noheader", f"--id={device.index or 0}"]),
        })
    else:
        env["device"] = f"{env['host_cpu']} ({env['threads']} threads)"
    return env


# --------------------------------------------------------------------------- options

@dataclass
class Context:
    """Everything a benchmark needs to know about how it is being run."""
    bench: str
    device: torch.device
    dtype: torch.dtype
    tiny: bool
    min_time: float
    min_runs: int
    cache: str
    graphs: bool
    tf32: bool
    out: Optional[Path]
    compare: Optional[Path]
    plots: bool
    args: Dict[str, Any]
    env: Dict[str, Any] = field(default_factory=dict)
    flags: Dict[str, Any] = field(default_factory=dict)
    peaks: Dict[str, Any] = field(default_factory=dict)
    failures: List[str] = field(default_factory=list)  # NumericsError messages: those were not timed
    interrupted: Optional[str] = None  # why the run stopped early (SIGINT, e.g. a time limit): rows so far kept
    _flush_buf: Optional[torch.Tensor] = None

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def flush_l2(self) -> None:
        """Evicts L2 by writing a buffer twice its size (only in ``--cache flush`` mode)."""
        if not (self.is_cuda and self.cache == "flush"):
            return
        if self._flush_buf is None:
            l2 = getattr(torch.cuda.get_device_properties(self.device), "L2_cache_size", 0) or 64 * 2**20
            self._flush_buf = torch.empty(max(2 * l2, 64 * 2**20), dtype=torch.int8, device=self.device)
        self._flush_buf.zero_()


def add_common_args(parser: argparse.ArgumentParser, *, default_out: Optional[Path],
                    default_cache: str = "warm") -> None:
    """The options every benchmark script takes."""
    g = parser.add_argument_group("common benchmark options")
    g.add_argument("--device", default=None, choices=["cpu", "cuda"],
                   help="device to run on (default: cuda if available, else cpu)")
    g.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="dtype of inputs and parameters, the same for every contender (default float32)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (torch.set_num_threads; default: torch's default)")
    g.add_argument("--tiny", action="store_true",
                   help="a couple of tiny shapes and few repeats: checks the script works, not speed")
    g.add_argument("--out", type=Path, default=default_out,
                   help=f"folder for the .md/.json/.png results (default: {default_out}); "
                        "'-' writes nothing")
    g.add_argument("--compare", type=Path, default=None, metavar="OLD.json",
                   help="an earlier result JSON of the same benchmark to compare against")
    g.add_argument("--min-time", type=float, default=None,
                   help="seconds of measurement per timing (default 0.5 on CPU, 0.25 on CUDA, 0.02 tiny)")
    g.add_argument("--min-runs", type=int, default=None,
                   help="minimum timed runs (CPU: blocks) per timing (default 5 on CPU, 20 on CUDA, 3 tiny)")
    g.add_argument("--cache", choices=["warm", "flush"], default=default_cache,
                   help=f"CUDA: 'flush' zeroes a 2x-L2 buffer before every timed call (default {default_cache})")
    g.add_argument("--no-graphs", action="store_true", help="CUDA: skip the CUDA-graph-replay column")
    g.add_argument("--tf32", choices=["off", "on"], default="off",
                   help="TF32 for float32 matmul and cuDNN conv, set for every contender (default off)")
    g.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="CUDA: leave cudnn.benchmark off (default: on, eager PyTorch's best case)")
    g.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    g.add_argument("--seed", type=int, default=0, help="RNG seed for the inputs")
    g.add_argument("--tag", default=None,
                   help="a word added to the result file names before the date (two runs of one benchmark "
                        "into one folder, e.g. --tag compile)")


def setup(bench: str, args: argparse.Namespace) -> Context:
    """Applies the flags of ``args`` and measures the device's peaks; returns the Context."""
    dev_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev_name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{bench}: --device cuda was asked for but torch.cuda.is_available() is False")
    device = torch.device(dev_name, torch.cuda.current_device()) if dev_name == "cuda" else torch.device("cpu")
    dtype = DTYPES[args.dtype]
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"{bench}: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    set_tf32(args.tf32 == "on")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    torch.manual_seed(args.seed)
    cuda = device.type == "cuda"
    min_time = args.min_time if args.min_time is not None else (0.02 if args.tiny else 0.25 if cuda else 0.5)
    min_runs = args.min_runs if args.min_runs is not None else (3 if args.tiny else 20 if cuda else 5)
    out = None if args.out is None or str(args.out) == "-" else Path(args.out)
    ctx = Context(bench=bench, device=device, dtype=dtype, tiny=args.tiny, min_time=min_time,
                  min_runs=min_runs, cache=args.cache, graphs=cuda and not args.no_graphs,
                  tf32=args.tf32 == "on", out=out, compare=args.compare, plots=not args.no_plot,
                  args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    ctx.env = environment(device)
    ctx.flags = torch_flags()
    ctx.peaks = measure_peaks(ctx)
    return ctx


def reset_compile_caches() -> None:
    """Forget earlier torch.compile graphs, so each shape compiles fresh and no recompile limit hits."""
    import torch._dynamo
    torch._dynamo.reset()


# --------------------------------------------------------------------------- timing

@dataclass
class Timing:
    median: float
    p20: float
    p80: float
    n: int
    method: str

    @staticmethod
    def from_times(times: Sequence[float], method: str) -> "Timing":
        t = torch.tensor(list(times), dtype=torch.float64)
        q = torch.quantile(t, torch.tensor([0.5, 0.2, 0.8], dtype=torch.float64)).tolist()
        return Timing(median=q[0], p20=q[1], p80=q[2], n=len(times), method=method)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


class _NoCudaRuntimeNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


def _torch_benchmark():
    """``torch.utils.benchmark``, imported without the warning "No CUDA runtime is found, using
    CUDA_HOME=..." that ``torch.utils.cpp_extension`` logs when it is imported on a CUDA build of
    torch without a GPU (torch.utils.benchmark imports it for its Callgrind timers, which are not
    used here). Only that one message of that one logger is dropped, only during the import."""
    log = logging.getLogger("torch.utils.cpp_extension")
    note = _NoCudaRuntimeNote()
    log.addFilter(note)
    try:
        import torch.utils.benchmark as tb
    finally:
        log.removeFilter(note)
    return tb


def _time_cpu(ctx: Context, fn: Callable[[], Any]) -> Timing:
    tb = _torch_benchmark()
    # Warm-up: first calls pay for lazy initialisation and first-touch allocations; one slow
    # call during blocked_autorange's block-size search would otherwise leave it timing
    # single calls of a microsecond op.
    deadline = time.perf_counter() + min(0.1, ctx.min_time)
    calls = 0
    while calls < 3 or time.perf_counter() < deadline:
        fn()
        calls += 1
    timer = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=ctx.min_time)
    if m.number_per_run == 1 and m.median < ctx.min_time / 100:  # a hiccup during the block-size search
        m = timer.blocked_autorange(min_run_time=ctx.min_time)
    times = list(m.times)
    while len(times) < ctx.min_runs:
        times.extend(timer.timeit(m.number_per_run).times)
    return Timing.from_times(times, f"torch.utils.benchmark.blocked_autorange(x{m.number_per_run}/block)")


def _time_cuda(ctx: Context, fn: Callable[[], Any], method: str = "cuda-events") -> Timing:
    # Warm-up (also triggers compilation, autotuning and cuDNN algorithm search).
    deadline = time.perf_counter() + max(0.05, min(ctx.min_time, 0.5))
    calls = 0
    while calls < 3 or time.perf_counter() < deadline:
        fn()
        calls += 1
        if calls >= 3:
            ctx.sync()
    # Estimate the per-call time to choose the number of runs.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    end.record()
    ctx.sync()
    est = max(start.elapsed_time(end) / 5e3, 1e-7)
    runs = int(min(max(ctx.min_runs, ctx.min_time / est), 2000 if not ctx.tiny else 50))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for i in range(runs):
        ctx.flush_l2()
        starts[i].record()
        fn()
        ends[i].record()
    ctx.sync()
    times = [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]
    return Timing.from_times(times, method + ("+l2flush" if ctx.cache == "flush" else ""))


def time_fn(ctx: Context, fn: Callable[[], Any]) -> Timing:
    """Times ``fn()`` (warm-up included) with the device's timing method."""
    if ctx.is_cuda:
        return _time_cuda(ctx, fn)
    return _time_cpu(ctx, fn)


def time_host(ctx: Context, fn: Callable[[], Any], main: Timing) -> Dict[str, Optional[float]]:
    """Host clocks per call of an already warmed-up ``fn``: ``wall`` and ``host`` (see the module
    docstring), as the fields ``wall_per_call_s`` (median of 5 blocks), ``wall_p20_s``,
    ``wall_p80_s`` and ``host_per_call_s`` (median of single calls). ``main``: the main timing,
    whose median sizes the blocks. On the CPU every call is synchronous: both clocks are the
    main timing's (Timer.blocked_autorange is a host clock around back-to-back calls), no extra call."""
    if not ctx.is_cuda:
        return {"wall_per_call_s": main.median, "wall_p20_s": main.p20, "wall_p80_s": main.p80,
                "host_per_call_s": main.median}
    budget = max(ctx.min_time / 2, 1e-3)  # seconds for each of the two measurements
    est = max(main.median, 1e-7)
    reps = int(min(max(1, budget / 5 / est), 50 if ctx.tiny else 2000))
    walls = []
    for _ in range(5):
        ctx.sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        ctx.sync()
        walls.append((time.perf_counter() - t0) / reps)
    hosts = []
    for _ in range(int(max(3, min(ctx.min_runs, 50, budget / est)))):
        ctx.sync()
        t0 = time.perf_counter()
        fn()
        hosts.append(time.perf_counter() - t0)
    ctx.sync()
    w = Timing.from_times(walls, "wall")
    return {"wall_per_call_s": w.median, "wall_p20_s": w.p20, "wall_p80_s": w.p80,
            "host_per_call_s": Timing.from_times(hosts, "host").median}


def time_cuda_graph(ctx: Context, fn: Callable[[], Any]):
    """Device time of ``fn`` replayed from a CUDA graph: a Timing, or the reason it failed (str)."""
    if not ctx.is_cuda:
        return "CPU"
    try:
        side = torch.cuda.Stream(device=ctx.device)
        side.wait_stream(torch.cuda.current_stream(ctx.device))
        with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
            for _ in range(3):
                fn()
        torch.cuda.current_stream(ctx.device).wait_stream(side)
        ctx.sync()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        ctx.sync()
    except Exception as e:  # capture is best effort: report why, keep the eager numbers
        ctx.sync()
        return f"capture failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    try:
        return _time_cuda(ctx, graph.replay, method="cuda-graph")
    finally:
        del graph


def peak_memory(ctx: Context, fn: Callable[[], Any]) -> Optional[int]:
    """Bytes allocated at the peak of one ``fn()`` call, above what was allocated before it.

    CUDA: the caching allocator's peak statistics. CPU: the allocation records of the legacy
    autograd profiler (``profile_memory=True``), summed in time order. None if it cannot be
    measured.
    """
    if ctx.is_cuda:
        ctx.sync()
        torch.cuda.reset_peak_memory_stats(ctx.device)
        base = torch.cuda.memory_allocated(ctx.device)
        fn()
        ctx.sync()
        return int(torch.cuda.max_memory_allocated(ctx.device) - base)
    # CPU: the legacy (non-Kineto) autograd profiler's allocation records. Kineto, even for CPU
    # activities only, initialises CUPTI on a CUDA build of torch and floods stderr with
    # "USDT: ... profiler_start/stop" lines and "gpuGetDeviceCount failed" when no GPU is there.
    try:
        from torch.autograd import _disable_profiler_legacy, _enable_profiler_legacy
        from torch.autograd.profiler_legacy import profile as legacy_profile

        _enable_profiler_legacy(legacy_profile(profile_memory=True).config())
        try:
            fn()
        finally:
            records = _disable_profiler_legacy()
        allocs = sorted(((r.start_us(), r.cpu_memory_usage()) for thread in records for r in thread
                         if r.kind() == "memory_alloc" and r.cpu_memory_usage()), key=lambda a: a[0])
        cur = peak = 0
        for _, size in allocs:
            cur += size
            peak = max(peak, cur)
        return int(peak)
    except Exception:  # the profiler's internals move between torch versions
        return None


# --------------------------------------------------------------------------- device peaks

def measure_peaks(ctx: Context) -> Dict[str, Any]:
    """Measures, in this process and with these flags, a dense matmul peak and copy bandwidth."""
    dev, dtype = ctx.device, ctx.dtype
    if ctx.tiny:
        n, copy_bytes = 256, 4 * 2**20
    elif ctx.is_cuda:
        n, copy_bytes = 8192, 1024 * 2**20
    else:
        n, copy_bytes = 1024, 256 * 2**20
    mm_dtype = dtype if (ctx.is_cuda or dtype in (torch.float32, torch.float64)) else torch.float32
    a = torch.randn(n, n, device=dev, dtype=mm_dtype)
    b = torch.randn(n, n, device=dev, dtype=mm_dtype)
    c = torch.empty(n, n, device=dev, dtype=mm_dtype)
    saved_cache, ctx.cache = ctx.cache, "warm"
    try:
        t_mm = time_fn(ctx, lambda: torch.mm(a, b, out=c))
        del a, b, c
        src = torch.empty(copy_bytes // 4, device=dev, dtype=torch.float32).uniform_()
        dst = torch.empty_like(src)
        t_cp = time_fn(ctx, lambda: dst.copy_(src))
        del src, dst
    finally:
        ctx.cache = saved_cache
    return {
        "matmul_flops_per_s": 2 * n**3 / t_mm.median,
        "matmul": f"torch.mm {n}x{n}x{n} {SHORT_DTYPE.get(mm_dtype, str(mm_dtype))}",
        "copy_bytes_per_s": 2 * copy_bytes / t_cp.median,
        "copy": f"Tensor.copy_ of {copy_bytes / 2**20:.0f} MiB (read + write counted)",
    }


# --------------------------------------------------------------------------- numerics

def tolerance(dtype: torch.dtype, tf32: bool) -> float:
    """Max error allowed between contenders, relative to the reference's largest magnitude.

    Loose enough for different summation orders (and TF32 / half-precision rounding), tight
    enough that a wrong kernel (an O(1) error) cannot pass.
    """
    if dtype == torch.float64:
        return 1e-9
    if dtype == torch.float32:
        return 2e-2 if tf32 else 1e-4
    if dtype == torch.float16:
        return 1e-2
    return 4e-2  # bfloat16: 8 mantissa bits


def check_close(what: str, got: torch.Tensor, ref: torch.Tensor, tol: float) -> float:
    """Raises NumericsError unless ``max|got - ref| <= tol * max|ref|``; returns that ratio."""
    if got.shape != ref.shape:
        raise NumericsError(f"{what}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
    g, r = got.detach().double(), ref.detach().double()
    scale = r.abs().max().item() if r.numel() else 0.0
    err = (g - r).abs().max().item() if r.numel() else 0.0
    rel = err / scale if scale > 0 else err
    if not math.isfinite(rel) or rel > tol:
        raise NumericsError(f"{what}: max|diff| = {err:.3e} is {rel:.3e} of max|reference| = {scale:.3e}, "
                            f"above the tolerance {tol:.1e}: refusing to time a contender that "
                            "computes something else")
    return rel


def geomean(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


# --------------------------------------------------------------------------- formatting

def fmt_time(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_bytes(b: Optional[float]) -> str:
    if b is None:
        return "-"
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(b) >= div:
            return f"{b / div:.3g} {unit}"
    return f"{b:.0f} B"


def fmt_ratio(r: Optional[float]) -> str:
    return "-" if r is None or not math.isfinite(r) else f"{r:.2f}x"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header_md(ctx: Context, title: str) -> str:
    e, p = ctx.env, ctx.peaks
    dev = e["device"]
    if ctx.is_cuda:
        dev += (f" (sm_{e['compute_capability'].replace('.', '')}, {e['sm_count']} SMs, "
                f"{e['gpu_memory_gib']} GiB, L2 {e['l2_cache_mib']} MiB, clocks {e['gpu_clocks_mhz']} MHz)")
    else:
        dev += f"; host has {e['logical_cpus']} logical CPUs, {e['cpus_available']} available"
    flags = ", ".join(f"{k}={v}" for k, v in ctx.flags.items())
    timing = ("CUDA events after warm-up, back-to-back calls" + (", L2 flushed before each call"
              if ctx.cache == "flush" else ", warm cache") + ("; CUDA-graph replay column" if ctx.graphs else "")
              if ctx.is_cuda else "torch.utils.benchmark Timer.blocked_autorange")
    lines = [
        f"# {title}",
        "",
        f"- date: {e['date']}" + (f"; load average {e['loadavg_1_5_15']}" if "loadavg_1_5_15" in e else ""),
        f"- device: {dev}",
        f"- driver {e.get('driver') or '-'}, CUDA runtime {e['cuda_runtime'] or '-'}, cuDNN {e['cudnn'] or '-'}, "
        f"torch {e['torch']}, Python {e['python']}",
        f"- ganx {e['ganx']} @ {e['ganx_commit']} (CUDA kernels built: {e['ganx_cuda_built']})",
        f"- dtype {SHORT_DTYPE.get(ctx.dtype, ctx.dtype)}, TF32 {'on' if ctx.tf32 else 'off'}; flags: {flags}",
        f"- timing: {timing}; min {ctx.min_time} s and {ctx.min_runs} runs per timing; "
        "median (p20-p80) reported" + ("; TINY MODE (smoke test, not a measurement)" if ctx.tiny else ""),
        f"- measured peaks: {p['matmul']}: {p['matmul_flops_per_s'] / 1e12:.3g} TFLOP/s; "
        f"{p['copy']}: {p['copy_bytes_per_s'] / 1e9:.3g} GB/s",
        f"- command: `{e['command']}`",
    ]
    load = e.get("loadavg_1_5_15")
    if not ctx.is_cuda and load and load[0] > 0.5:
        # With every core in use, a parallel region waits for a descheduled thread: ms stalls.
        lines.append(f"- **WARNING: the machine was busy (load average {load[0]}): CPU timings are unreliable; "
                     "rerun when `uptime` shows a load average below 0.5**")
    return "\n".join(lines)


def result_stem(ctx: Context) -> str:
    """``<bench>-<device>[-<dtype>][-tf32][-tiny][-<tag>]-<date>``, e.g. ``upsample_conv-cpu-2core-2026-11-24``."""
    if ctx.is_cuda:
        name = re.sub(r"[^a-z0-9]+", "-", ctx.env["device"].lower().replace("nvidia", "")).strip("-")
        dev = f"cuda-{name}"
    else:
        dev = f"cpu-{torch.get_num_threads()}core"
    parts = [ctx.bench, dev]
    if ctx.dtype != torch.float32:
        parts.append(SHORT_DTYPE[ctx.dtype])
    if ctx.tf32:
        parts.append("tf32")
    if ctx.tiny:
        parts.append("tiny")
    tag = ctx.args.get("tag")
    if tag:
        parts.append(re.sub(r"[^A-Za-z0-9_.]+", "-", str(tag)).strip("-"))
    parts.append(_dt.date.today().isoformat())
    return "-".join(parts)


def load_json(path: Path) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def compare_md(rows: List[Dict[str, Any]], old: Dict[str, Any], keys: Sequence[str],
               value: str = "median_s") -> str:
    """Markdown comparison of ``rows`` with the rows of an earlier result JSON, matched on ``keys``."""
    if "results" not in old:
        raise ValueError("--compare: that JSON is not a ganx benchmark result (no 'results')")
    old_rows = {tuple(r.get(k) for k in keys): r for r in old.get("results", [])}
    oe = old.get("env", {})
    out = [f"## Comparison with {old.get('stem', 'earlier run')}",
           "",
           f"Earlier run: {oe.get('date', '?')}, {oe.get('device', '?')}, torch {oe.get('torch', '?')}, "
           f"ganx @ {oe.get('ganx_commit', '?')}. Speed-up > 1 means this run is faster.",
           ""]
    table = []
    for r in rows:
        o = old_rows.get(tuple(r.get(k) for k in keys))
        if o is None or o.get(value) is None or r.get(value) is None:
            continue
        table.append([*(r.get(k) for k in keys), fmt_time(o[value]), fmt_time(r[value]),
                      fmt_ratio(o[value] / r[value])])
    if not table:
        return "\n".join(out + ["(no rows in common)"])
    return "\n".join(out + [md_table([*keys, "earlier", "now", "speed-up"], table)])


def clocks(cuda: bool, graph_key: Optional[str]) -> List[tuple]:
    """(row field, column title) of every clock a row carries: the main timing, the graph replay
    (CUDA, when ``graph_key``), wall and host per call."""
    out = [("median_s", "device (events)" if cuda else "timer")]
    if cuda and graph_key:
        out.append((graph_key, "device (graph replay)"))
    return out + [("wall_per_call_s", "wall/call"), ("host_per_call_s", "host/call")]


def clocks_md(rows: List[Dict[str, Any]], keys: Sequence[str], cuda: bool, graph_key: Optional[str],
              base: str, title: str) -> str:
    """One table, one row per result: every clock (:func:`clocks`) side by side, and ``base``'s
    speed-up over the row's contender on each of them (> 1: ``base`` faster)."""
    cl = clocks(cuda, graph_key)
    by = {(tuple(r.get(k) for k in keys), r["contender"]): r for r in rows}
    body = []
    for r in rows:
        b = by.get((tuple(r.get(k) for k in keys), base))
        ratios = []
        for f, _ in cl:
            v, bv = r.get(f), (b or {}).get(f)
            ratios.append(fmt_ratio(v / bv) if v and bv and r["contender"] != base else "-")
        body.append([*(r.get(k) for k in keys), r["contender"], *(fmt_time(r.get(f)) for f, _ in cl), *ratios])
    head = [*keys, "contender", *(t for _, t in cl), *(f"{base} speed-up: {t}" for _, t in cl)]
    return "\n".join([f"## {title}", "",
                      "Device time: CUDA events around back-to-back calls (the host's dispatch shows when it is "
                      "the bottleneck) and CUDA-graph replay (kernels only). Wall/call: back-to-back calls ended by "
                      "one synchronisation. Host/call: the host issuing one call onto an idle device (Python, "
                      "dispatch, glue, launches). Host/call above graph replay: host-bound.", "",
                      md_table(head, body)])


def clock_geomeans(rows: List[Dict[str, Any]], keys: Sequence[str], base: str, other: str,
                   fields: Sequence[str]) -> Dict[str, float]:
    """Geometric mean over matching rows of ``other``'s time / ``base``'s time, per clock field."""
    by = {(tuple(r.get(k) for k in keys), r["contender"]): r for r in rows}
    out = {}
    for f in fields:
        vals = []
        for (key, c), r in by.items():
            o = by.get((key, other))
            if c == base and o and r.get(f) and o.get(f):
                vals.append(o[f] / r[f])
        out[f] = geomean(vals)
    return out


def upconv_choices() -> List[Dict[str, str]]:
    """ganx's upsample-conv algorithm choices made in this process (key, algorithm, source)."""
    try:
        from ganx.ops import upconv_algorithm_choices
        return [dict(c) for c in upconv_algorithm_choices()]
    except Exception:  # an older build without the registry
        return []


def choices_md(choices: List[Dict[str, str]]) -> str:
    return "\n".join(["## ganx upsample-conv algorithm choices in this run", "",
                      md_table(["key", "algorithm", "source"],
                               [[f"`{c.get('key')}`", c.get("algorithm"), c.get("source")] for c in choices])])


class run_rows:
    """``with H.run_rows(ctx): <the timing loops>``: SIGINT (``timeout -s INT``) ends the loops
    and marks the context interrupted, so that :func:`finish` still writes the rows measured so
    far (and then exits 130)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if typ is KeyboardInterrupt:
            self.ctx.interrupted = "SIGINT"
            print(f"{self.ctx.bench}: interrupted, writing the rows measured so far", file=sys.stderr, flush=True)
            return True
        return False


def dropped_md(notes: Dict[str, str]) -> str:
    """The "Dropped:" list of contenders a benchmark could not run, and why ("" when none)."""
    return "\n\nDropped:\n\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items()) if notes else ""


def entry_point(run_main: Callable[..., str]) -> Callable[..., int]:
    """The ``main(argv=None, default_out=None) -> exit status`` of a benchmark module, which its
    script in benchmarks/ calls: ``run_main`` parses, times, writes and prints the report."""
    def main(argv: Optional[Sequence[str]] = None, default_out: Optional[Path] = None) -> int:
        run_main(argv, default_out)
        return 0
    main.__doc__ = f"Command-line entry point of {run_main.__module__} (benchmarks/bench_*.py); the exit status."
    return main


def finish(ctx: Context, title: str, body_md: str, results: List[Dict[str, Any]],
           extra: Dict[str, Any], plots: Sequence[Callable[[Path], Optional[Path]]] = (),
           compare_keys: Sequence[str] = (), echo: bool = True) -> str:
    """Assembles the Markdown, writes .md/.json/.png under ctx.out, prints (``echo``) and returns it.

    ``plots`` are callables taking the output stem path and returning the PNG they wrote.
    """
    stem = result_stem(ctx)
    md = header_md(ctx, title) + "\n\n"
    if ctx.failures:
        md += ("## NUMERICS FAILURES: these contenders disagree with the reference and were not timed\n\n"
               + "\n".join(f"- {m}" for m in ctx.failures) + "\n\n")
    md += body_md.strip() + "\n"
    if ctx.compare is not None:
        old = load_json(ctx.compare)
        if old.get("benchmark") != ctx.bench:
            raise SystemExit(f"--compare {ctx.compare}: that is a {old.get('benchmark')!r} result, not {ctx.bench!r}")
        md += "\n" + compare_md(results, old, compare_keys) + "\n"
    choices = upconv_choices()
    if choices:
        md += "\n" + choices_md(choices) + "\n"
    if ctx.interrupted:
        md = (f"**INTERRUPTED ({ctx.interrupted}): only the rows measured before are reported.**\n\n" + md)
    payload = {"benchmark": ctx.bench, "stem": stem, "env": ctx.env, "flags": ctx.flags,
               "config": ctx.args, "peaks": ctx.peaks, "numerics_failures": ctx.failures,
               "interrupted": ctx.interrupted, **extra, "upconv_algorithm_choices": choices,
               "results": results}
    if ctx.out is not None:
        ctx.out.mkdir(parents=True, exist_ok=True)
        base = ctx.out / stem
        pngs = []
        if ctx.plots:
            for plot in plots:
                p = plot(base)
                if p is not None:
                    pngs.append(p.name)
        if pngs:
            md += "\nPlots: " + ", ".join(f"![{p}]({p})" for p in pngs) + "\n"
        payload["plots"] = pngs
        base.with_suffix(".md").write_text(md)
        base.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
        if echo:
            print(md)
        print(f"wrote {base.with_suffix('.md')} and {base.with_suffix('.json')}"
              + (f" and {len(pngs)} plot(s)" if pngs else ""))
    elif echo:
        print(md)
    if ctx.interrupted:
        raise SystemExit(130)
    if ctx.failures:
        # Loud: a non-zero exit, after the other contenders' results were written.
        raise SystemExit(f"{ctx.bench}: {len(ctx.failures)} contender(s) computed something else and were "
                         "not timed:\n  " + "\n  ".join(ctx.failures))
    return md


# --------------------------------------------------------------------------- plots

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_bars(path: Path, panels: Dict[str, Dict[str, List[float]]], labels: List[str],
              title: str, ylabel: str, hline: Optional[float] = 1.0, log: bool = True) -> Path:
    """Grouped bars: one panel per key of ``panels``; in each, one bar series per contender."""
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.9 * len(labels) + 3), 3.6 * len(panels)),
                             squeeze=False)
    for ax, (panel, series) in zip(axes[:, 0], panels.items()):
        width = 0.8 / max(1, len(series))
        for i, (name, vals) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, [v if v is not None and math.isfinite(v) else 0 for v in vals], width, label=name)
        if hline is not None:
            ax.axhline(hline, color="k", lw=0.8)
        if log:
            ax.set_yscale("log")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {panel}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roofline(path: Path, points: List[Dict[str, Any]], peak_flops: float, bw: float, title: str) -> Path:
    """Roofline of the measured matmul peak and copy bandwidth; ``points``: {label, ai, flops, group}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    ais = [p["ai"] for p in points if p["ai"] > 0] or [1.0]
    lo, hi = min(ais + [peak_flops / bw]) / 4, max(ais + [peak_flops / bw]) * 4
    xs = [lo * (hi / lo) ** (i / 99) for i in range(100)]
    ax.plot(xs, [min(peak_flops, x * bw) for x in xs], "k-", lw=1, label="measured matmul peak / copy bandwidth")
    for group in dict.fromkeys(p["group"] for p in points):
        pts = [p for p in points if p["group"] == group]
        ax.scatter([p["ai"] for p in pts], [p["flops"] for p in pts], label=group, s=18)
    return _save_loglog(plt, fig, ax, path, title, "arithmetic intensity (FLOP / compulsory byte)", "achieved FLOP/s")


def plot_lines(path: Path, x: List[float], series: Dict[str, List[Optional[float]]], title: str,
               xlabel: str, ylabel: str, hlines: Optional[Dict[str, float]] = None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, ys in series.items():
        pts = [(a, b) for a, b in zip(x, ys) if b is not None and math.isfinite(b) and b > 0]
        if pts:
            ax.plot([a for a, _ in pts], [b for _, b in pts], "o-", ms=3, label=name)
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=0.8, color="k")
        ax.annotate(name, (x[0], y), fontsize=7, va="bottom")
    return _save_loglog(plt, fig, ax, path, title, xlabel, ylabel)


def _save_loglog(plt, fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    """Log-log axes with their labels, title and legend; the figure written to ``path`` and closed."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
