"""The end of a training run: its final sample grid, the loss plot, the end-of-run metrics and
metrics.json (for a finished run resumed again, only those its folder lacks), and the result
``Trainer.fit`` returns for a run that was stopped."""
from __future__ import annotations

import os
import time
from typing import Any, Dict

from ganx.metrics import evaluate_generator
from ganx.train import faults
from ganx.train.plots import plot_log

__all__ = ["end_of_run", "stopped_result"]


def stopped_result(t, last_row: Dict[str, Any], **extra) -> Dict[str, Any]:
    """What ``fit`` returns for the Trainer ``t`` stopped by a signal (``t.interrupted``) or on a
    rank other than 0: where it stopped, its checkpoint and its last logged figures."""
    t.runlog.close_tensorboard()
    return {"steps": t.step, "epochs": t.data.epoch, "interrupted": t.interrupted,
            "checkpoint": t.checkpoint_path, "final": {k: last_row.get(k) for k in t.figures}, **extra}


def end_of_run(t, last_row: Dict[str, Any], only_missing: bool = False) -> Dict[str, Any]:
    """The final grid, the loss plot, the metrics and metrics.json of the Trainer ``t`` (with
    ``only_missing``: only those the run folder lacks); returns the metrics. SIGINT/SIGTERM during
    the metrics stop them; metrics.json is then not written, and the next resume computes them."""
    cfg, log = t.config, t.runlog
    final_png, losses_png = log.path("samples", "final.png"), log.path("losses.png")
    if not (only_missing and os.path.isfile(final_png)):
        t.save_samples(final_png)
    if not (only_missing and os.path.isfile(losses_png)):
        plot_log(log.path("log.jsonl"), losses_png, t.loss.stats)
    done = log.finished_metrics() if only_missing else None
    if done is not None:
        return done  # the run has its metrics: not recomputed, not rewritten
    metrics: Dict[str, Any] = {"steps": t.step, "epochs": t.data.epoch,
                               "train_seconds": round(t.elapsed, 3), "device": str(t.device),
                               "final": {k: last_row.get(k) for k in t.figures}}
    if cfg.metrics:
        start = time.perf_counter()
        if cfg.progress:
            print(f"ganx: end-of-run metrics on {cfg.metric_samples} generated images "
                  f"(Ctrl-C stops them; the trained run is saved)", flush=True)
        try:
            with faults.StopRaises():
                metrics.update(evaluate_generator(t.sampler, t.dataset, t.run_dir, n=cfg.metric_samples,
                                                  seed=cfg.seed + 3, feature_space=cfg.feature_space,
                                                  inception_weights=cfg.inception_weights, device=t.device))
        except faults.Stopped as e:
            t.interrupted = e.signal_name
            return stopped_result(t, last_row, during="metrics")
        metrics["metrics_seconds"] = round(time.perf_counter() - start, 3)
    else:
        earlier = log.earlier_metrics()
        if earlier:
            metrics["earlier_metrics"] = earlier  # a --no-metrics resume keeps the run's last results
    log.write_metrics(metrics)
    log.close_tensorboard(metrics, t.step)
    return metrics
