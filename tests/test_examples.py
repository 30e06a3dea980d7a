"""The examples run unmodified and with --fuse (tiny settings), and report what they claim."""
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run_example(script, fuse, *args):
    """Two tiny training steps of ``script``; with ``fuse``, checks the drop-in's claims common to
    every example (G's output unchanged at initialisation, a step-time ratio). Returns stdout."""
    cmd = [sys.executable, script, "--steps", "2", "--timing-steps", "1", "--timing-rounds", "1", "--width", "8",
           *args, *(["--fuse"] if fuse else [])]
    r = subprocess.run(cmd, cwd=EXAMPLES, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 steps in" in r.stdout
    if fuse:
        m = re.search(r"max \|G\(z\) - fused G\(z\)\| at initialisation: ([0-9.e+-]+)", r.stdout)
        assert m and float(m.group(1)) < 1e-4, r.stdout
        assert re.search(r"ratio [0-9.]+x", r.stdout), r.stdout
    return r.stdout


@pytest.mark.parametrize("script", ["dcgan_resize_conv.py", "dcgan_convtranspose.py"])
@pytest.mark.parametrize("fuse,size", [(False, 32), (True, 32), (True, 64)])
def test_example_runs(script, fuse, size):
    out = run_example(script, fuse, "--batch-size", "16", "--size", str(size))
    if fuse:
        assert "fused" in out and "removed the nn.Sigmoid at" in out
        assert "unmodified" in out and "drop-in" in out


@pytest.mark.parametrize("fuse", [False, True])
def test_sngan_example_runs(fuse):
    """The public-style SNGAN (functional upsampling, 1x1 shortcuts, spectral norm, hinge loss)."""
    out = run_example("sngan_resnet.py", fuse, "--batch-size", "8")
    if fuse:
        # Every upsample + conv of G (three 3x3, three 1x1 shortcuts), proven on a probe batch.
        assert "6 fused, 0 left" in out and "proven on a probe batch" in out, out
