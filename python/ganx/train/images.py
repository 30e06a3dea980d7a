"""Image grids and loss plots written into a run folder (PIL for PNGs, matplotlib Agg for plots)."""
from __future__ import annotations

import json
import os
from typing import List, Optional

import numpy as np
import torch

__all__ = ["make_grid", "save_grid", "plot_log", "loss_figure", "plotted_rows"]


def make_grid(images: torch.Tensor, nrow: int, padding: int = 1, min_side: int = 256) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (rows*H', cols*W', C) grid, ``nrow`` images per row.
    Small images are enlarged by an integer nearest-neighbour factor so the grid is at least
    ``min_side`` pixels wide (a 16x16 digit is otherwise a smudge)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    ncol = nrow
    nrows = (n + ncol - 1) // ncol
    grid = torch.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[:, padding + r * (h + padding):padding + r * (h + padding) + h,
             padding + k * (w + padding):padding + k * (w + padding) + w] = x[i]
    scale = max(1, -(-min_side // grid.shape[2]))
    if scale > 1:
        grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return grid.permute(1, 2, 0).numpy()


def save_grid(images: torch.Tensor, path, nrow: int) -> np.ndarray:
    """Writes the grid of ``images`` as a PNG; returns it (uint8, H x W x C)."""
    from PIL import Image

    a = make_grid(images, nrow)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(path)
    return a


def read_log(path) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed; safe in threads and on servers
    import matplotlib.pyplot as plt

    return plt


def plotted_rows(rows: List[dict]) -> List[dict]:
    """The log rows the loss plot shows: full log windows only. A row marked ``"partial"`` (a
    Ctrl-C, the first window after a resume, a run's last short window) averages fewer steps
    than the others and would show as a spike; it is left out, unless the log has nothing else."""
    rows = [r for r in rows if "d_loss" in r]
    return [r for r in rows if not r.get("partial")] or rows


def loss_figure(rows: List[dict]):
    """The two-panel figure of plot_log: D/G losses above, D's accuracies and outputs below."""
    plt = _pyplot()
    rows = plotted_rows(rows)
    steps = [r["step"] for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a1.plot(steps, [r["d_loss"] for r in rows], label="D loss")
    a1.plot(steps, [r["g_loss"] for r in rows], label="G loss")
    a1.set_ylabel("loss")
    a1.legend()
    a1.grid(alpha=0.3)
    for key, lab in (("acc_real", "D accuracy, real"), ("acc_fake", "D accuracy, fake"),
                     ("d_real", "mean D(x)"), ("d_fake", "mean D(G(z))")):
        a2.plot(steps, [r[key] for r in rows], label=lab, linestyle="-" if key.startswith("acc") else "--")
    a2.set_ylim(-0.02, 1.02)
    a2.set_ylabel("accuracy / probability")
    a2.set_xlabel("step")
    a2.legend(ncol=2, fontsize=8)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_log(log_path, out_path) -> Optional[str]:
    """Plot D/G losses and D's accuracies and outputs over steps from a JSONL log (full log
    windows only, see :func:`plotted_rows`); None when the log has no rows."""
    plt = _pyplot()
    rows = read_log(log_path) if os.path.isfile(log_path) else []
    if not plotted_rows(rows):
        return None
    fig = loss_figure(rows)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return str(out_path)
