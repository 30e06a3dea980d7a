"""`ganx bench` (ganx/bench.py): the small timer inside the package. It checks every fused result
against eager before timing it and reports both; these tests never assert a speed."""
import json

import pytest
import torch

import ganx.bench as B
from ganx.cli import main


def test_quick_bench_tiny_report_and_files(tmp_path, capfd):
    md = B.run_quick(tmp_path, threads=1, min_time=0.01, tiny=True)
    assert "| upsample_conv2d | tiny: N2 8->4ch 4->8px | fwd |" in md
    assert "| upsample_conv2d | tiny: N2 8->4ch 4->8px | fwd+bwd |" in md
    assert "| bce_discriminator_loss | 4,096 + 4,096 logits | fwd+bwd |" in md
    assert "geometric-mean speed-up" in md
    payload = json.loads(next(tmp_path.glob("bench-cpu-*.json")).read_text())
    assert len(payload["results"]) == 4 and payload["env"]["threads"] == 1
    assert all(r["ganx_s"] > 0 and r["eager_s"] > 0 for r in payload["results"])
    assert next(tmp_path.glob("bench-cpu-*.md")).read_text() == md
    assert capfd.readouterr().err == ""


def test_quick_bench_refuses_a_wrong_result(monkeypatch):
    monkeypatch.setattr(B.upsample_conv, "upsample_conv2d", lambda x, w, b=None: torch.zeros(()))
    with pytest.raises(AssertionError, match="upsample_conv2d tiny: the fused result differs from eager"):
        B.run_quick(None, min_time=0.01, tiny=True)


def test_quick_bench_from_the_cli(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(B, "run_quick", lambda out, threads=None: seen.update(out=out, threads=threads) or "REPORT")
    assert main(["bench", "--threads", "2", "--out", "somewhere"]) == 0
    assert seen == {"out": "somewhere", "threads": 2} and "REPORT" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_bench_default_shapes(tmp_path):
    md = B.run_quick(None, min_time=0.05)
    for label, *_ in B.LAYERS:
        assert f"| upsample_conv2d | {label}:" in md
    assert "1,048,576 + 1,048,576 logits" in md
