"""The examples run unmodified and with --fuse (tiny settings), and report what they claim."""
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.mark.parametrize("script", ["dcgan_resize_conv.py", "dcgan_convtranspose.py"])
@pytest.mark.parametrize("fuse,size", [(False, 32), (True, 32), (True, 64)])
def test_example_runs(script, fuse, size):
    cmd = [sys.executable, script, "--steps", "2", "--timing-steps", "1", "--timing-rounds", "1", "--width", "8",
           "--batch-size", "16", "--size", str(size)]
    if fuse:
        cmd.append("--fuse")
    r = subprocess.run(cmd, cwd=EXAMPLES, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 steps in" in r.stdout
    if fuse:
        m = re.search(r"max \|G\(z\) - fused G\(z\)\| at initialisation: ([0-9.e+-]+)", r.stdout)
        assert m and float(m.group(1)) < 1e-4, r.stdout
        assert re.search(r"ratio [0-9.]+x", r.stdout), r.stdout
        assert "fused" in r.stdout and "removed the nn.Sigmoid at" in r.stdout
        assert "unmodified" in r.stdout and "drop-in" in r.stdout
