"""Benchmark suite of ganx (the code behind ``benchmarks/bench_*.py``), outside the installed
package: the scripts in ``benchmarks/`` put this folder on ``sys.path`` (being in it) and are thin
command-line wrappers around the ``main`` of each module here (``ganx bench`` is a separate,
small timer inside the package, ganx/bench.py):

- :mod:`ganx_bench.harness`: environment header, timing (CUDA events / CUDA graph replay /
  ``torch.utils.benchmark``), measured device peaks, numerics checks, Markdown + JSON output,
  ``--compare`` against an earlier JSON, plots.
- :mod:`ganx_bench.upsample_conv`: ``upsample_conv2d`` against Upsample + Conv2d, its
  ``torch.compile`` and the folded-weight ``conv_transpose2d``.
- :mod:`ganx_bench.losses`: the BCE adversarial losses against eager and compiled BCE.
- :mod:`ganx_bench.train_step`: a full D + G training step, fused vs reference vs compiled.

Nothing here touches CUDA at import.
"""
