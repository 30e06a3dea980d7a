"""Benchmark suite of ganx (the code behind ``benchmarks/*.py`` and ``ganx bench``).

It lives inside the package so that ``ganx bench`` works from an installed wheel, where the
repository's ``benchmarks/`` folder does not exist. The scripts in ``benchmarks/`` are thin
command-line wrappers around the ``main`` of each module here:

- :mod:`ganx._bench.harness`: environment header, timing (CUDA events / CUDA graph replay /
  ``torch.utils.benchmark``), measured device peaks, numerics checks, Markdown + JSON output,
  ``--compare`` against an earlier JSON, plots.
- :mod:`ganx._bench.upsample_conv`: ``upsample_conv2d`` against Upsample + Conv2d, its
  ``torch.compile`` and the folded-weight ``conv_transpose2d``.
- :mod:`ganx._bench.losses`: the BCE adversarial losses against eager and compiled BCE.
- :mod:`ganx._bench.train_step`: a full D + G training step, fused vs reference vs compiled.

Nothing here touches CUDA at import.
"""
