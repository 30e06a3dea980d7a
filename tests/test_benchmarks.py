"""The benchmark suite must keep working: every script runs in --tiny mode on the CPU, writes
its Markdown/JSON/plots, and refuses to time a contender that computes something else.

These tests assert that the scripts run and agree numerically, never how fast anything is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))  # the suite lives in benchmarks/ganx_bench, outside the package

from ganx_bench import harness as H  # noqa: E402
from ganx_bench import losses as L  # noqa: E402
from ganx_bench import upsample_conv as U  # noqa: E402

SCRIPTS = ("bench_upsample_conv.py", "bench_losses.py", "bench_train_step.py")


def run_script(name: str, *args: str, timeout: int = 900, device: str = "cpu") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / name), "--device", device, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# What a CUDA build of torch prints on a machine without a GPU when the benchmark touches
# Kineto (torch.profiler) or imports torch.utils.cpp_extension: none of it may reach the console.
NOISE = ("USDT", "profiler_start", "gpuGetDeviceCount", "No CUDA runtime is found")


def assert_quiet(stderr: str) -> None:
    found = [w for w in NOISE if w in stderr]
    assert not found, f"benchmark console noise {found}:\n{stderr[-2000:]}"


def outputs(folder: Path, bench: str):
    mds = sorted(folder.glob(f"{bench}-cpu-*core-tiny-*.md"))
    assert len(mds) == 1, f"expected one {bench} result in {folder}, got {[p.name for p in folder.iterdir()]}"
    md = mds[0]
    payload = json.loads(md.with_suffix(".json").read_text())
    return md.read_text(), payload, sorted(p.name for p in folder.glob("*.png"))


def check_rows(rows, keys):
    assert rows
    for r in rows:
        assert 0 < r["p20_s"] <= r["median_s"] <= r["p80_s"], r
        assert r["runs"] >= 3
        for k in keys:
            assert k in r


# --------------------------------------------------------------------------- scripts

@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_common_options(script):
    out = run_script(script, "--help").stdout
    for opt in ("--device", "--dtype", "--threads", "--tiny", "--out", "--compare"):
        assert opt in out, f"{script} --help lacks {opt}"


def test_upsample_conv_tiny_and_compare(tmp_path):
    run_script("bench_upsample_conv.py", "--tiny", "--out", str(tmp_path / "a"))
    md, payload, pngs = outputs(tmp_path / "a", "upsample_conv")
    assert payload["benchmark"] == "upsample_conv" and payload["env"]["torch"] == torch.__version__
    assert payload["peaks"]["matmul_flops_per_s"] > 0 and payload["peaks"]["copy_bytes_per_s"] > 0
    rows = payload["results"]
    check_rows(rows, ("tflops", "pct_peak", "peak_mem_bytes", "speedup_vs", "max_rel_err_vs_eager"))
    first = {(r["phase"], r["contender"]) for r in rows if r["shape"] == "tiny-a"}
    assert first == {(p, c) for p in U.PHASES for c in ("ganx", "eager", "compile", "convT-folded")}
    assert all(r["max_rel_err_vs_eager"] <= 1e-4 for r in rows)
    assert "## ganx speed-up" in md and "TINY MODE" in md
    assert any(p.endswith("-speedup.png") for p in pngs) and any(p.endswith("-roofline.png") for p in pngs)

    old = next((tmp_path / "a").glob("*.json"))
    proc = run_script("bench_upsample_conv.py", "--tiny", "--contenders", "ganx,eager", "--no-plot",
                      "--out", str(tmp_path / "b"), "--compare", str(old))
    assert_quiet(proc.stderr)
    md_b, payload_b, pngs_b = outputs(tmp_path / "b", "upsample_conv")
    # CPU peak memory comes from the legacy profiler's allocation records (not Kineto's).
    assert all(isinstance(r["peak_mem_bytes"], int) and r["peak_mem_bytes"] > 0 for r in payload_b["results"])
    assert "## Comparison with" in md_b and "speed-up" in md_b and not pngs_b
    assert {r["contender"] for r in payload_b["results"]} == {"ganx", "eager"}

    cmp = subprocess.run([sys.executable, str(BENCH / "compare.py"), str(old), str(next((tmp_path / "b").glob("*.json")))],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cmp.returncode == 0, cmp.stderr
    assert "tiny-a" in cmp.stdout and "earlier" in cmp.stdout


def test_losses_tiny(tmp_path):
    run_script("bench_losses.py", "--tiny", "--out", str(tmp_path))
    md, payload, pngs = outputs(tmp_path, "losses")
    rows = payload["results"]
    check_rows(rows, ("gb_per_s", "pct_copy_bw", "speedup_vs", "max_rel_err_vs_eager", "wall_per_call_s",
                      "host_per_call_s"))
    assert all(r["wall_per_call_s"] > 0 and r["host_per_call_s"] > 0 for r in rows)
    assert "## Device time and wall time per call" in md and payload["interrupted"] is None
    got = {(r["loss"], r["n"], r["contender"]) for r in rows}
    for loss in L.LOSSES:
        for n in L.TINY_SIZES:
            assert {(loss, n, "ganx"), (loss, n, "eager")} <= got
        assert (loss, L.TINY_SIZES[0], "compile") in got
        assert (loss, L.TINY_SIZES[0], "autograd-floor") in got
    floor = [r for r in rows if r["contender"] == "autograd-floor"]
    assert floor and all(r["max_rel_err_vs_eager"] is None for r in floor)
    assert all(r["max_rel_err_vs_eager"] is not None for r in rows if r["contender"] == "ganx")
    assert payload["targets"] and "## Targets" in md
    assert all(t["target"].split()[1] == "discriminator" for t in payload["targets"])
    assert len(pngs) == 2


def test_host_overhead_tiny(tmp_path):
    run_script("bench_host_overhead.py", "--tiny", "--out", str(tmp_path))
    md, payload, _ = outputs(tmp_path, "host_overhead")
    rows = payload["results"]
    assert {(r["case"], r["algo"], r["phase"]) for r in rows} >= {
        ("upsample_conv2d", "deconv", "fwd+bwd"), ("upsample_conv2d", "stacked", "fwd"),
        ("conv_transpose2d_4s2", "deconv", "fwd+bwd"), ("d_loss", "-", "fwd+bwd")}
    for r in rows:
        assert r["eager_cpu_s"] > 0 and r["ganx_cpu_s"] > 0 and r["ratio_cpu"] > 0
        assert r["eager_events"] > 0 and r["ganx_events"] > 0
    # the forced form really ran: the deconv form's transposed conv, the stacked form's conv2d
    fb = {(r["case"], r["algo"], r["phase"]): r for r in rows}
    assert "aten::conv_transpose2d" in fb[("upsample_conv2d", "deconv", "fwd")]["ganx_event_names"]
    assert "aten::conv_transpose2d" not in fb[("upsample_conv2d", "stacked", "fwd")]["ganx_event_names"]
    assert "ratio_cpu_without_vendor_conv" in fb[("upsample_conv2d", "deconv", "fwd")]
    assert "TINY MODE" in md and "| d_loss |" in md


def test_train_step_tiny(tmp_path):
    run_script("bench_train_step.py", "--tiny", "--contenders", "fused,reference", "--out", str(tmp_path))
    md, payload, pngs = outputs(tmp_path, "train_step")
    rows = payload["results"]
    check_rows(rows, ("images_per_s", "speedup_vs", "max_rel_err_vs_fp32_reference"))
    assert {r["contender"] for r in rows} == {"fused", "reference"}
    assert {(r["arch"], r["loss"]) for r in rows} == {("dcgan", "bce"), ("resnet", "hinge")}  # both model families
    assert pngs


@pytest.mark.slow
def test_train_step_tiny_with_compile(tmp_path):
    run_script("bench_train_step.py", "--tiny", "--out", "-")


@pytest.mark.cuda
@pytest.mark.parametrize("script", SCRIPTS)
def test_tiny_on_cuda(script, tmp_path):
    """The CUDA paths (events, L2 flush, graph replay, max-autotune / reduce-overhead, bf16)."""
    run_script(script, "--tiny", "--out", str(tmp_path), device="cuda")
    payload = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert payload["env"]["compute_capability"] and payload["peaks"]["matmul_flops_per_s"] > 1e11
    check_rows(payload["results"], ())
    if script != "bench_train_step.py":
        assert any(r.get("graph_median_s") or r.get("device_median_s") for r in payload["results"]), \
            "no contender could be replayed from a CUDA graph"
    if script == "bench_upsample_conv.py":
        run_script(script, "--tiny", "--dtype", "bfloat16", "--out", "-", device="cuda")


# --------------------------------------------------------------------------- in-process pieces

def test_flop_count_is_phase_decomposed():
    s = U.ConvShape("t", "test", 2, 3, 5, 4, 6)
    direct = 2 * 2 * 3 * 5 * (8 * 12) * 9  # 9 taps per output pixel on the upsampled input
    assert U.flops(s, "fwd") == pytest.approx(direct * 16 / 36)
    assert U.flops(s, "fwd+bwd") == pytest.approx(3 * U.flops(s, "fwd"))
    assert U.phase_taps(3, 2, 1) == [2, 2] and U.phase_taps(5, 2, 2) == [3, 3]


def _cpu_ctx():
    return types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float64)


def test_upsample_conv_check_rejects_a_wrong_contender():
    s = U.ConvShape("t", "test", 2, 4, 3, 5, 5, activation="leaky_relu", negative_slope=0.2)
    st = U.build(s, _cpu_ctx(), ["ganx", "eager", "convT-folded"])
    tol = H.tolerance(torch.float64, False)
    for phase in U.PHASES:  # the real contenders agree...
        errs, dropped, failed = U.check_contenders(st, phase, ["ganx", "eager", "convT-folded"], tol)
        assert set(errs) == {"ganx", "eager", "convT-folded"} and not dropped and not failed
    right = st.forwards["ganx"]
    st.forwards["ganx"] = lambda x: right(x) * (1 + 1e-3)  # ...a slightly wrong one does not
    for phase in U.PHASES:
        errs, dropped, failed = U.check_contenders(st, phase, ["ganx", "eager", "convT-folded"], tol)
        assert set(errs) == {"eager", "convT-folded"} and set(failed) == {"ganx"}
        assert "ganx vs eager" in failed["ganx"] and "refusing to time" in failed["ganx"]


def test_numerics_failure_exits_nonzero_after_writing(tmp_path, monkeypatch):
    """A wrong contender is not timed, the report says so at the top, and the exit is non-zero."""
    real = U.build

    def build_with_wrong_ganx(s, ctx, contenders):
        st = real(s, ctx, contenders)
        right = st.forwards["ganx"]
        st.forwards["ganx"] = lambda x: right(x) + 1.0
        return st

    monkeypatch.setattr(U, "build", build_with_wrong_ganx)
    with pytest.raises(SystemExit, match="computed something else"):
        U.main(["--device", "cpu", "--tiny", "--contenders", "ganx,eager", "--shapes", "tiny-a",
                "--phases", "fwd", "--no-plot", "--out", str(tmp_path)])
    md = next(tmp_path.glob("*.md")).read_text()
    assert "NUMERICS FAILURES" in md
    payload = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert {r["contender"] for r in payload["results"]} == {"eager"} and payload["numerics_failures"]


def test_losses_check_rejects_a_wrong_contender():
    ctx = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    real, fake = L.make_inputs("discriminator", 100, ctx)
    ref = L.step_fn(L.eager_d, (real, fake), "fwd+bwd")()
    # the stable closed form (softplus) is the same loss...
    good = L.step_fn(lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(), (real, fake), "fwd+bwd")()
    for g, r in zip(good, ref):
        H.check_close("softplus form", g, r, H.tolerance(torch.float32, False))
    # ...the same form with the real target swapped is not.
    bad = L.step_fn(lambda r, f: F.softplus(r).mean() + F.softplus(f).mean(), (real, fake), "fwd+bwd")()
    with pytest.raises(H.NumericsError):
        for g, r in zip(bad, ref):
            H.check_close("wrong target", g, r, H.tolerance(torch.float32, False))


def test_check_close_errors():
    a = torch.ones(3)
    assert H.check_close("same", a, a, 1e-6) == 0
    with pytest.raises(H.NumericsError, match="shape"):
        H.check_close("shape", a, torch.ones(4), 1e-6)
    with pytest.raises(H.NumericsError, match="tolerance"):
        H.check_close("nan", torch.tensor([1.0, float("nan"), 1.0]), a, 1e-6)
    assert H.tolerance(torch.float32, False) < H.tolerance(torch.float32, True) <= H.tolerance(torch.bfloat16, False)


def test_timing_percentiles_and_formatting():
    t = H.Timing.from_times([float(i) for i in range(1, 12)], "test")
    assert (t.p20, t.median, t.p80, t.n) == (3.0, 6.0, 9.0, 11)
    assert H.fmt_time(1.5e-6) == "1.5 µs" and H.fmt_time(2.5e-3) == "2.5 ms" and H.fmt_time(3.0) == "3 s"
    assert H.geomean([2.0, 8.0]) == pytest.approx(4.0)


def test_compare_md_matches_rows_by_key():
    old = {"benchmark": "x", "env": {}, "results": [{"shape": "a", "phase": "fwd", "contender": "ganx", "median_s": 2e-3},
                                                   {"shape": "gone", "phase": "fwd", "contender": "ganx", "median_s": 1.0}]}
    new = [{"shape": "a", "phase": "fwd", "contender": "ganx", "median_s": 1e-3},
           {"shape": "new", "phase": "fwd", "contender": "ganx", "median_s": 1.0}]
    md = H.compare_md(new, old, ("shape", "phase", "contender"))
    assert "| a | fwd | ganx | 2 ms | 1 ms | 2.00x |" in md
    assert "gone" not in md and "| new" not in md


# --------------------------------------------------------------------------- the GPU check's needs

def test_time_host_gives_wall_and_host_per_call():
    main = H.Timing(2e-6, 1e-6, 3e-6, 10, "events")
    syncs, calls = [], []
    # the CUDA path (sync stands in for torch.cuda.synchronize): 5 timed blocks, then single calls
    ctx = types.SimpleNamespace(min_time=0.02, min_runs=3, tiny=True, is_cuda=True, sync=lambda: syncs.append(1))
    got = H.time_host(ctx, lambda: calls.append(1), main)
    assert set(got) == {"wall_per_call_s", "wall_p20_s", "wall_p80_s", "host_per_call_s"}
    assert all(v > 0 for v in got.values()) and got["wall_p20_s"] <= got["wall_per_call_s"] <= got["wall_p80_s"]
    assert len(calls) >= 5 * 1 + 3 and len(syncs) >= 2 * 5 + 3
    # the CPU: every call is synchronous, both clocks are the main timing's, no extra call
    calls.clear()
    cpu = H.time_host(types.SimpleNamespace(is_cuda=False), lambda: calls.append(1), main)
    assert cpu == {"wall_per_call_s": 2e-6, "wall_p20_s": 1e-6, "wall_p80_s": 3e-6, "host_per_call_s": 2e-6}
    assert not calls


def test_interrupt_keeps_the_rows_so_far(tmp_path):
    """SIGINT (a time limit) inside the timing loops: the rows so far are written, exit 130."""
    args = U.parser().parse_args(["--device", "cpu", "--tiny", "--no-plot", "--out", str(tmp_path), "--tag", "cut"])
    ctx = H.setup("upsample_conv", args)
    rows = []
    with H.run_rows(ctx):
        rows.append({"shape": "a", "phase": "fwd", "contender": "ganx", "median_s": 1e-3, "speedup_vs": {}})
        raise KeyboardInterrupt
    assert ctx.interrupted == "SIGINT"
    with pytest.raises(SystemExit) as e:
        H.finish(ctx, "t", "body", rows, {}, echo=False)
    assert e.value.code == 130
    out = next(tmp_path.glob("*.json"))
    assert "-tiny-cut-" in out.name  # --tag goes into the file name
    payload = json.loads(out.read_text())
    assert payload["interrupted"] == "SIGINT" and len(payload["results"]) == 1
    assert "INTERRUPTED" in out.with_suffix(".md").read_text()
    with H.run_rows(ctx), pytest.raises(ValueError):  # other errors pass through
        raise ValueError("x")


def test_commit_without_git(monkeypatch, tmp_path):
    """A tree copied without .git (the lent GPU machine): GANX_COMMIT, else .ganx_commit."""
    import ganx
    monkeypatch.setenv("GANX_COMMIT", "feedbeef1234")
    assert H.git_commit() == "feedbeef1234"
    monkeypatch.delenv("GANX_COMMIT")
    pkg = tmp_path / "python" / "ganx"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(ganx, "__file__", str(pkg / "__init__.py"))
    monkeypatch.setattr(H, "_run", lambda cmd, cwd=None: None)  # no git there
    assert H.git_commit().startswith("unknown")
    (tmp_path / ".ganx_commit").write_text("0123456789ab\n")
    assert H.git_commit() == "0123456789ab (from .ganx_commit)"


def test_clocks_table_and_geomeans():
    rows = [{"shape": "a", "phase": "fwd", "contender": c, "median_s": t, "graph_median_s": g,
             "wall_per_call_s": w, "host_per_call_s": h}
            for c, t, g, w, h in (("ganx", 1.0, 0.5, 2.0, 1.0), ("eager", 2.0, 2.0, 4.0, 0.5))]
    md = H.clocks_md(rows, ("shape", "phase"), True, "graph_median_s", "ganx", "T")
    assert "| a | fwd | eager | 2 s | 2 s | 4 s | 500 ms | 2.00x | 4.00x | 2.00x | 0.50x |" in md
    g = H.clock_geomeans(rows, ("shape", "phase"), "ganx", "eager", ["median_s", "graph_median_s", "host_per_call_s"])
    assert g == {"median_s": 2.0, "graph_median_s": 4.0, "host_per_call_s": 0.5}


def test_the_speed_guard_compares_only_with_a_baseline_of_the_same_kernel_copy_and_torch(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("speed_guard", BENCH / "speed_guard.py")
    guard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guard)

    def write(name, isa, date, torch_version="2.14.1+cu130"):
        p = tmp_path / name
        p.write_text(json.dumps({"date": date, "cpu_isa": isa, "torch": torch_version, "rows": {"x": {"ratio": 1.0}}}))
        return p

    old512 = write("speed_guard-cpu-2thr-avx512-2026-12-01.json", "avx512", "2026-12-01T10:00:00+00:00")
    new2 = write("speed_guard-cpu-2thr-avx2-2026-12-07.json", "avx2", "2026-12-07T10:00:00+00:00")
    new512 = write("speed_guard-cpu-2thr-avx512-2026-12-05.json", "avx512", "2026-12-05T10:00:00+00:00")
    other_torch = write("speed_guard-cpu-2thr-avx512-2026-12-06.json", "avx512", "2026-12-06T10:00:00+00:00",
                        "2.13.0+cpu")
    files = [old512, new2, new512, other_torch]
    assert guard.pick_baseline(files, "avx512", "2.14.1+cu130")[0] == new512
    assert guard.pick_baseline(files, "avx512", "2.13.0+cpu")[0] == other_torch
    assert guard.pick_baseline(files, "avx2", "2.14.1+cu130")[0] == new2
    assert guard.pick_baseline(files, "default", "2.14.1+cu130") == (None, {})
    assert guard.pick_baseline(files, "avx2", "2.15.0") == (None, {})
