"""Builds and runs ganx's CUDA kernels under the CUDA emulator (tests/emu/ganx_cuda_emu.h).

Three builds of one driver program (tests/emu/driver.h), made with plain g++ from the kernel
headers (csrc/cuda/kernels/*.cuh) and cached under build/emu-<variant>/ by a hash of every source,
header and flag. Each source is its own object, compiled in parallel (one g++ per core); a build
of patched kernel headers (include_first, the planted bugs) recompiles only the sources that
include a patched header (from g++'s dependency files of the unpatched build) and links the
unpatched build's other objects:

* ``plain``: the emulator alone;
* ``asan``:  AddressSanitizer + UndefinedBehaviorSanitizer (bounds of global and shared memory,
  misaligned 16-byte accesses, invalid bool loads...), every report fatal;
* ``race``:  ThreadSanitizer over the kernels (the emulator's scheduler is not instrumented),
  every report fatal: a shared- or global-memory race between threads of a launch.

Each variant runs as its own process (the sanitizers cannot be loaded into a Python that has
torch): ``run(variant, cases)`` writes the cases' inputs to a file, runs the driver once for all
of them and returns each case's outputs. An emulation error (barrier, warp, launch limit) or a
sanitizer report ends the driver and raises ``EmuFailure`` with its message.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[2]
EMU = ROOT / "tests" / "emu"
SOURCES = ["tests/emu/driver_main.cpp", "tests/emu/bce_driver.cpp",  # + one per kernel header's ops
           "tests/emu/upconv_driver.cpp", "tests/emu/selftest_driver.cpp"]
RUNTIME = "tests/emu/emu_runtime.cpp"
VARIANTS = ("plain", "asan", "race")

_COMMON = ["-std=c++17", "-O1", "-g", "-fno-omit-frame-pointer", "-Wall", "-Wno-unused-parameter",
           "-Wno-unknown-pragmas", "-rdynamic"]
_FLAGS = {
    "plain": [],
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "race": ["-fsanitize=thread"],
}
_ENV = {
    "asan": {"ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=0",
             "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
    "race": {"TSAN_OPTIONS": "halt_on_error=1:exitcode=66:report_signal_unsafe=0"},
}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class EmuFailure(AssertionError):
    """The emulated run failed: an emulation error or a sanitizer report (message: its output)."""


def _torch_include() -> str:
    return str(Path(torch.__file__).resolve().parent / "include")


def _inputs(include_first: Optional[Path]) -> List[Path]:
    files = [ROOT / s for s in SOURCES + [RUNTIME]]
    files += sorted((ROOT / "csrc" / "cuda" / "kernels").glob("*.cuh"))
    # what kernel headers and their CPU-twin drivers include
    files += [ROOT / "csrc" / "cuda" / "launch.cuh"] + sorted((ROOT / "csrc").glob("*.h"))
    files += sorted((ROOT / "csrc" / "cpu").glob("*.h"))
    files += sorted(EMU.glob("*.h")) + sorted(EMU.glob("*.cuh"))
    if include_first is not None:
        files += sorted(p for p in include_first.rglob("*") if p.is_file())
    return files


_LOCKS = {v: threading.Lock() for v in VARIANTS}
_JOBS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))  # g++ processes at once, all builds


def build_all(variants: Iterable[str] = VARIANTS) -> Dict[str, Path]:
    """Every variant's driver, the builds side by side (one per core)."""
    variants = list(variants)
    with ThreadPoolExecutor(max_workers=max(1, min(len(variants), os.cpu_count() or 1))) as ex:
        return dict(zip(variants, ex.map(build, variants)))


def build(variant: str, *, include_first: Optional[Path] = None, tag: str = "", defines: Iterable[str] = ()) -> Path:
    """The driver of `variant`, built if its inputs changed. include_first: a directory searched
    before csrc (patched copies of kernel headers); tag names the build directory of such a copy."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown emulator variant {variant!r}; one of {VARIANTS}")
    gxx = shutil.which(os.environ.get("CXX", "g++"))
    if gxx is None:
        raise RuntimeError("the CUDA emulator tests need g++ (the compiler that builds ganx)")
    defines = [f"-D{d}" for d in defines]
    inc = ([f"-I{include_first}"] if include_first else []) + [f"-I{ROOT / 'csrc'}", f"-I{EMU}",
                                                                 f"-isystem{_torch_include()}"]
    flags = _COMMON + _FLAGS[variant] + defines
    h = hashlib.sha256(" ".join([gxx] + flags + inc).encode())
    for f in _inputs(include_first):
        h.update(str(f).encode())
        h.update(f.read_bytes())
    out_dir = ROOT / "build" / (f"emu-{variant}" + (f"-{tag}" if tag else ""))
    # A patched build reuses the unpatched build's objects that include no patched header (same
    # flags: not with extra defines, which could change any source).
    base = build(variant).parent if include_first is not None and not defines else None
    shadowed = ([str(ROOT / "csrc" / p.relative_to(include_first)) for p in include_first.rglob("*") if p.is_file()]
                if include_first is not None else [])
    with _LOCKS[variant]:
        return _build_locked(gxx, variant, flags, defines, inc, h.hexdigest(), out_dir, base, shadowed)


def _build_locked(gxx, variant, flags, defines, inc, digest, out_dir, base, shadowed) -> Path:
    exe = out_dir / "ganx_emu_driver"
    stamp = out_dir / "inputs.sha256"
    if exe.exists() and stamp.exists() and stamp.read_text() == digest:
        return exe
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = []  # (source, object, compile command or None to reuse base's object)
    for src in SOURCES + [RUNTIME]:
        stem = Path(src).stem
        obj, dep = out_dir / f"{stem}.o", out_dir / f"{stem}.d"
        if base is not None and (base / f"{stem}.d").exists():
            deps = (base / f"{stem}.d").read_text()
            if not any(p in deps for p in shadowed):
                jobs.append((base / f"{stem}.o", None))
                continue
        if src == RUNTIME and variant == "race":
            # The scheduler is not instrumented (its bookkeeping is no CUDA thread's access); it
            # drives TSan's fiber API instead.
            cflags = _COMMON + defines + ["-DGANX_EMU_TSAN", "-fPIC"]
        else:
            cflags = flags
        jobs.append((obj, [gxx] + cflags + inc + ["-MMD", "-MF", str(dep), "-c", str(ROOT / src), "-o", str(obj)]))
    with ThreadPoolExecutor(max_workers=len(jobs)) as ex:
        list(ex.map(lambda j: j[1] and _cc(j[1]), jobs))
    _cc([gxx] + flags + [str(o) for o, _ in jobs] + ["-o", str(exe)])
    stamp.write_text(digest)
    (out_dir / "build_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return exe


def _cc(cmd: List[str]) -> None:
    with _JOBS:
        p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("building the emulated kernels failed:\n" + " ".join(cmd) + "\n" + p.stderr[-6000:])


@dataclass
class Case:
    id: str
    op: str
    dtype: str
    arrays: Dict[str, torch.Tensor] = field(default_factory=dict)
    kv: Dict[str, object] = field(default_factory=dict)


@dataclass
class Result:
    kv: Dict[str, str]
    arrays: Dict[str, bytes]
    log: str

    def tensor(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        raw = self.arrays[name]
        if not raw:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype).clone()

    def int(self, key: str) -> int:
        return int(float(self.kv[key]))


def _raw(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes()


def run(variant: str, cases: List[Case], *, exe: Optional[Path] = None, timeout: float = 600) -> Dict[str, Result]:
    """Runs every case in one driver process of `variant`; raises EmuFailure on the first error."""
    exe = exe or build(variant)
    with tempfile.TemporaryDirectory(prefix="ganx-emu-") as d:
        cin, cout = Path(d) / "cases.bin", Path(d) / "results.bin"
        with open(cin, "wb") as f:
            for c in cases:
                kv = " ".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" if isinstance(v, str)
                              else f"{k}={int(v)}" for k, v in c.kv.items())
                f.write(f"case {c.id} {c.op} {c.dtype} {kv}\n".encode())
                for name, t in c.arrays.items():
                    raw = _raw(t)
                    f.write(f"array {name} {len(raw)}\n".encode())
                    f.write(raw)
                f.write(b"end\n")
        env = dict(os.environ, **_ENV.get(variant, {}))
        p = subprocess.run([str(exe), str(cin), str(cout)], capture_output=True, env=env, timeout=timeout)
        if p.returncode != 0:
            raise EmuFailure(f"emulated kernels ({variant}) failed with exit code {p.returncode}:\n"
                             + _summary(p.stderr.decode(errors="replace")))
        return _parse(cout.read_bytes())


_KEY_LINES = ("ganx-emu: FAILED", "ERROR: AddressSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
              "SUMMARY:", "ganx-emu: case")


def _summary(err: str) -> str:
    # The report's key lines first (sanitizer stacks of templated kernels are long), then the
    # output with each line cut to 300 characters.
    lines = err.splitlines()
    cases = [ln for ln in lines if ln.startswith("ganx-emu: case")]
    key = [ln for ln in lines if any(k in ln for k in _KEY_LINES[:-1])]
    body = "\n".join(ln[:300] for ln in lines if not ln.startswith("ganx-emu: case"))
    return "\n".join((cases[-1:] or ["(no case started)"]) + key) + "\n--- output ---\n" + body[-12000:]


def _parse(data: bytes) -> Dict[str, Result]:
    out: Dict[str, Result] = {}
    pos = 0

    def line() -> str:
        nonlocal pos
        e = data.index(b"\n", pos)
        s = data[pos:e].decode()
        pos = e + 1
        return s

    while pos < len(data):
        head = line().split()
        assert head[0] == "result", head
        rid = head[1]
        kv = dict(w.split("=", 1) for w in head[2:])
        arrays: Dict[str, bytes] = {}
        log = ""
        while True:
            ln = line()
            if ln == "end":
                break
            kw, *rest = ln.split()
            if kw == "array":
                n = int(rest[1])
                arrays[rest[0]] = data[pos:pos + n]
                pos += n
            elif kw == "log":
                n = int(rest[0])
                log = data[pos:pos + n].decode()
                pos += n
        out[rid] = Result(kv, arrays, log)
    return out
