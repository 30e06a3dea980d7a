"""The PNGs of a run: sample grids (PIL) and the loss plot (matplotlib Agg) of its log.jsonl
(read by train/runlog.py)."""
from __future__ import annotations

import io
import os
from typing import Dict, List, Optional

import numpy as np
import torch

from ganx.train.losses import BCELoss
from ganx.train.rundir import atomic_write
from ganx.train.runlog import read_log

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


def save_grid(images: torch.Tensor, path, nrow: int, root=None) -> np.ndarray:
    """Writes the grid of ``images`` as a PNG; returns it (uint8, H x W x C). With ``root`` (a
    run folder) the file is replaced atomically and its folder must lie inside ``root`` (no
    write through a link out of it)."""
    from PIL import Image

    a = make_grid(images, nrow)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    if root is None:
        img.save(path)
        return a
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write(path, buf.getvalue(), root=root)
    return a


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed; safe in threads and on servers
    import matplotlib.pyplot as plt

    return plt


def plotted_rows(rows: List[dict], stats: Optional[Dict[str, str]] = None) -> List[dict]:
    """The log rows the loss plot shows: rows with every figure (the losses and the loss's
    ``stats``, default BCE's), full log windows only. A row marked ``"partial"`` (a Ctrl-C, the
    first window after a resume, a run's last short window) averages fewer steps than the others
    and would show as a spike; it is left out, unless the log has nothing else."""
    keys = ("step", "d_loss", "g_loss", *(BCELoss.stats if stats is None else stats))
    rows = [r for r in rows if all(isinstance(r.get(k), (int, float)) for k in keys)]
    return [r for r in rows if not r.get("partial")] or rows


def loss_figure(rows: List[dict], stats: Optional[Dict[str, str]] = None):
    """The two-panel figure of plot_log: D/G losses above, the loss's D statistics below
    (``stats``: log key -> label, the loss's ``stats``; default BCE's accuracies and mean D(x),
    D(G(z)))."""
    plt = _pyplot()
    rows = plotted_rows(rows, stats)
    steps = [r["step"] for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a1.plot(steps, [r["d_loss"] for r in rows], label="D loss")
    a1.plot(steps, [r["g_loss"] for r in rows], label="G loss")
    a1.set_ylabel("loss")
    a1.legend()
    a1.grid(alpha=0.3)
    stats = BCELoss.stats if stats is None else stats
    for key, lab in stats.items():
        a2.plot(steps, [r.get(key, float("nan")) for r in rows], label=lab,
                linestyle="-" if key.startswith("acc") else "--")
    if all(0 <= r.get(k, 0) <= 1 for r in rows for k in stats):
        a2.set_ylim(-0.02, 1.02)
        a2.set_ylabel("accuracy / probability")
    else:
        a2.set_ylabel("D statistics")
    a2.set_xlabel("step")
    a2.legend(ncol=2, fontsize=8)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_log(log_path, out_path, stats: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Plot D/G losses and the loss's D statistics (``stats``, see :func:`loss_figure`) over steps
    from a JSONL log (full log windows only, see :func:`plotted_rows`); None when the log has no rows."""
    plt = _pyplot()
    rows = read_log(log_path) if os.path.isfile(log_path) else []
    if not plotted_rows(rows, stats):
        return None
    fig = loss_figure(rows, stats)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    atomic_write(out_path, buf.getvalue(), root=os.path.dirname(os.path.abspath(out_path)))
    return str(out_path)
