"""scripts/gpu_check.sh and scripts/gpu_results.py, as far as they run without a GPU.

The whole script runs on the CPU in CI as its dry run (.ci/gpu_check_dry.sh); these are the
quick pieces: the shell parses, the memcheck selection really selects, the limits and
arguments are read, and a result archive is unpacked with the environment in every file.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _sh(*args, env=None, timeout=60):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_script_parses_and_reads_its_arguments(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    help_ = _sh("--help")
    assert help_.returncode == 0 and "--dry-run" in help_.stdout and "GPU_CHECK_STEPS" in help_.stdout
    no_out = _sh(env={"OUT": ""})
    assert no_out.returncode == 2 and "give OUT_DIR" in no_out.stderr
    bad = _sh(str(tmp_path), env={"GPU_CHECK_LIMITS": "bench-upconv=fast"})
    assert bad.returncode == 2 and "cannot read 'bench-upconv=fast'" in bad.stderr


def test_step_limits_sum_to_the_budget():
    text = SCRIPT.read_text()
    limits = dict(re.findall(r"\[([a-z-]+)\]=(\d+)", re.search(r"declare -A LIMIT=\((.*?)\)\n", text, re.S).group(1)))
    steps = re.search(r"^STEPS=\((.*?)\)", text, re.M).group(1).split()
    budget = int(re.search(r"GPU_CHECK_BUDGET_S:-(\d+)", text).group(1))
    finish = int(re.search(r"^FINISH_S=(\d+)", text, re.M).group(1))
    run_timeout = int(re.search(r"^RUN_TIMEOUT_S=(\d+)", text, re.M).group(1))
    assert set(limits) == set(steps)
    assert sum(int(v) for v in limits.values()) + finish == budget <= run_timeout - 20
    assert f'"timeout_s": {run_timeout}' in (ROOT / "scripts" / "gpu_run.md").read_text()
    # order by value: build, the op tests, then the benchmarks, memcheck last
    assert steps[:3] == ["env", "build", "cuda-tests"] and steps[-1] == "memcheck"


def test_memcheck_selection_collects_float32_and_channels_last():
    text = SCRIPT.read_text()
    expr = re.search(r'^MEMCHECK_K="(.*)"$', text, re.M).group(1)
    files = re.search(r"^MEMCHECK_FILES=\((.*?)\)", text, re.M | re.S).group(1).split()
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                        "-k", expr, *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    assert len(ids) >= 20, r.stdout[-2000:]
    assert any("float32" in i and "channels_last" in i for i in ids)
    assert any("float32" in i and "contiguous" in i for i in ids)
    assert not any("test_benchmarks" in i for i in ids)


def _archive(tmp_path: Path, env: dict) -> Path:
    path = tmp_path / "gpu_check.tar.gz"
    files = {"environment.json": json.dumps(env), "build.log": "built\n", "summary.txt": "== build\n   -> rc=0 in 1s\n",
             "cuda-tests.xml": '<?xml version="1.0" encoding="utf-8"?><testsuites/>',
             "losses-cuda-h100-2026-12-07.json": "{}"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"gpu-check/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "gpu_check.log").write_text("console\n")
    return path


def test_gpu_results_puts_the_environment_in_every_file(tmp_path):
    env = {"mode": "real (GPU)", "date": "2026-12-07T03:00:00+00:00", "commit": "abc123", "device": "NVIDIA H100 80GB HBM3",
           "compute_capability": "9.0", "driver": "580.159.04", "cuda_runtime": "13.0", "cudnn": 91300,
           "torch": "2.11.0+cu130", "python": "3.12.3"}
    arch = _archive(tmp_path, env)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_results.py"), str(arch), "--dest", str(tmp_path / "res")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "res" / "gpu-check-h100-80gb-hbm3-2026-12-07"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["environment.json", "build.log", "summary.txt", "cuda-tests.xml", "losses-cuda-h100-2026-12-07.json", "gpu_check.log"])
    for name in ("build.log", "summary.txt", "gpu_check.log"):
        first = (folder / name).read_text().splitlines()[0]
        for want in ("H100", "driver 580.159.04", "CUDA 13.0", "cuDNN 91300", "torch 2.11.0+cu130", "abc123", "2026-12-07"):
            assert want in first, (name, want, first)
    xml = (folder / "cuda-tests.xml").read_text()
    assert xml.startswith('<?xml version="1.0" encoding="utf-8"?><!-- GPU check') and "driver 580.159.04" in xml
    assert (folder / "losses-cuda-h100-2026-12-07.json").read_text() == "{}"  # the benchmarks carry their own
    with pytest.raises(subprocess.CalledProcessError):
        bad = tmp_path / "bad.tar.gz"
        with tarfile.open(bad, "w:gz"):
            pass
        subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_results.py"), str(bad), "--dest", str(tmp_path)],
                       capture_output=True, check=True, timeout=60)
