"""``ganx bench``: a quick benchmark of the fused ops on this machine's CPU (under 2 minutes).

The full suites are the scripts in the repository's ``benchmarks/`` folder (their code lives
in :mod:`ganx._bench`, so this module works from an installed wheel too). ``run_quick`` runs
the subset that answers "are the fused kernels faster here?":

- ``upsample_conv2d`` on the 4 "DCGAN generator layers" (DCGAN-64 generator blocks 1-3 at
  batch 64 and a half-width DCGAN-128 block at 32 px, batch 16), forward and forward+backward, against eager
  Upsample + Conv2d and the folded-weight conv_transpose2d, with the geometric-mean speed-up;
- the BCE discriminator and generator losses at 64 and 1M logits against eager PyTorch
  (when this build of ganx has them).

``torch.compile`` contenders are left out (compiling would take most of the time budget);
``benchmarks/bench_*.py`` have them. Every contender is checked against eager before timing.
"""
from __future__ import annotations

import os
from typing import List, Optional, Union

__all__ = ["run_quick"]


def run_quick(out_dir: Optional[Union[str, os.PathLike]] = None, threads: Optional[int] = None) -> str:
    """Runs the quick CPU benchmark and returns its Markdown report.

    Args:
        out_dir: where to also write the ``.md``/``.json``/``.png`` results (named by device and
            date); None writes nothing.
        threads: CPU threads for torch (default: torch's default).
    """
    from ganx._bench import losses, upsample_conv

    common: List[str] = ["--device", "cpu", "--min-time", "0.2", "--min-runs", "3",
                         "--out", os.fspath(out_dir) if out_dir is not None else "-"]
    if threads is not None:
        common += ["--threads", str(threads)]
    parts = [upsample_conv.run_main(
        common + ["--shape-set", "dcgan", "--contenders", "ganx,eager,convT-folded"], echo=False)]
    why = losses.available()
    if why is None:
        parts.append(losses.run_main(
            common + ["--sizes", "64,1048576", "--contenders", "ganx,eager"], echo=False))
    else:
        parts.append(f"(BCE losses not benchmarked: {why})")
    return "\n\n".join(p.strip() for p in parts) + "\n"
