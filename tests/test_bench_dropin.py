"""benchmarks/bench_dropin.py keeps working (--quick: tiny models, one turn). Asserts that it
runs and writes what it claims, never how fast anything is."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_dropin_quick(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_dropin.py"), "--quick", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (js,) = tmp_path.glob("dropin-cpu-*core-*-quick.json")
    res = json.loads(js.read_text())
    assert res["header"]["load_start"] and res["header"]["device"]
    assert [e["model"] for e in res["steps"]] == ["resize-conv DCGAN 32 px", "convtranspose DCGAN 64 px"]
    assert len(res["steps"][1]["rows"]) == 5 and all(r["step_ms"] > 0 for e in res["steps"] for r in e["rows"])
    assert len(res["layers"]) == 12
    md = js.with_suffix(".md").read_text()
    assert "load average" in md and "| unmodified script |" in md and "ConvTranspose2d(4,2,1)" in md


def test_bench_dropin_resnet_part_quick(tmp_path):
    # --parts resnet: the 1x1 shortcut layer (eager, ganx, ganx with the old stacked form forced)
    # forward and forward + backward, then the ResNet generator eager vs fuse(G)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_dropin.py"), "--quick", "--parts", "resnet",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (js,) = tmp_path.glob("dropin-cpu-*core-*-quick.json")
    res = json.loads(js.read_text())
    assert [(e["case"].split(" N")[0], e["direction"]) for e in res["resnet"]] == [
        ("Upsample(2) + Conv2d(1x1)", "forward"), ("Upsample(2) + Conv2d(1x1)", "forward+backward"),
        ("ResNet SNGAN-32 G (3 up-blocks, 8 ch)", "forward+backward"), ("ResNet SNGAN-32 G (3 up-blocks, 8 ch)", "forward")]
    assert [len(e["rows"]) for e in res["resnet"]] == [3, 3, 2, 2]
    assert all(row["ms"] > 0 for e in res["resnet"] for row in e["rows"])
    assert "6 fused, 0 left" in res["resnet"][2]["report"]  # 3 blocks x (main path's 3x3 + the 1x1 shortcut)
    assert "## ResNet generator layers" in js.with_suffix(".md").read_text()
