"""Multi-process training on the CPU: 2 gloo processes over loopback.

* Trainer-level (torch.multiprocessing spawn): both ranks end with identical weights, equal
  (to float tolerance) to a single-process run with the same global batch and seed.
* CLI-level (torchrun): `torchrun --nproc-per-node 2 -m ganx train`, then a resume under DDP.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from ganx.train import Trainer, TrainConfig, load_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

from tiny_run import SMALL, TINY  # noqa: E402  (tests/tiny_run.py)

# Equivalence config. Two things make "same global batch" subtle, and both are settled here:
# * The generator has BatchNorm: each rank would normalise with the statistics of its own half
#   batch, unlike the single process. sync_batchnorm=True makes every rank use the statistics
#   of the global batch (the CPU has no torch SyncBatchNorm; ganx's AllReduceBatchNorm2d is used).
# * Conditional batches are sorted by class for the minibatch-stddev groups; each rank sorts its
#   own share, so the groups would differ from the single process's. minibatch_std=0 turns that
#   off (the stddev layer itself never mixes ranks' samples: its groups lie within one share).
EQUIV = dict(image_size=16, latent_dim=8, g_width=8, d_width=8, batch_size=16, steps=4, d_steps=2,
             log_every=2, checkpoint_every=100, progress=False, metrics=False, sample_every=0, device="cpu",
             impl="reference", minibatch_std=0, spectral_norm=True, sync_batchnorm=True, threads=1,
             # the EMA G's BatchNorm statistics are recomputed only where its BatchNorms are local (here
             # the single process's; rank 0's synchronised ones would wait for the other ranks): off, so
             # that both runs keep G's and compare
             bn_recalibration=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(t):
    out = {"G." + k: v for k, v in t.G.state_dict().items()}
    out.update({"D." + k: v for k, v in t.D.state_dict().items()})
    out.update({"E." + k: v for k, v in t.ema.module.state_dict().items()})
    return {k: v.detach().clone() for k, v in out.items()}


def _worker(rank, world, port, out_dir, cfg):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from ganx.train import distributed

    try:
        t = Trainer(TrainConfig(**cfg), dataset=SMALL)
        assert t.dist.world_size == world and t.dist.backend == "gloo"
        t.fit(tensorboard=False)
        torch.save(_state(t), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        distributed.cleanup()


@pytest.mark.parametrize("loss", [{}, {"loss": "hinge", "r1_gamma": 1.0}], ids=["bce", "hinge+r1"])
def test_ddp_matches_single_process(tmp_path, loss):
    """hinge+r1: R1's double backward through the DDP-wrapped D is all-reduced like the rest."""
    cfg = dict(EQUIV, out=str(tmp_path / "ddp"), **loss)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), cfg), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # Identical on both ranks, bit for bit: DDP's averaged gradients are the same everywhere, and
    # D got no all-reduce (and no update) from G's backward.
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
    # Only rank 0 wrote the run folder's files.
    run = tmp_path / "ddp"
    assert (run / "checkpoints" / "last.pt").is_file()
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]

    single = Trainer(TrainConfig(**dict(cfg, out=str(tmp_path / "single"))), dataset=SMALL)
    single.fit(tensorboard=False)
    s = _state(single)
    assert s.keys() == r0.keys()
    for k in s:
        # Float tolerance: the global-batch statistics are summed in another order.
        torch.testing.assert_close(r0[k].float(), s[k].float(), rtol=1e-4, atol=1e-5, msg=k)


# The tiny run (tests/tiny_run.py) on the fused ops, in batches of 16 per process, with synchronised
# BatchNorm and no checkpoint but the last.
DDP = [*TINY, "--impl", "fused", "--batch-size", "16", "--checkpoint-every", "100", "--sync-batchnorm"]


def _torchrun(*args, timeout=240):
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = ([exe] if exe else [sys.executable, "-m", "torch.distributed.run"])
    cmd += ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
            "-m", "ganx", "train", *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_torchrun_cli_train_and_resume(tmp_path):
    """The fused ops inside DDP, rank-0-only outputs, and a resume where all ranks load the checkpoint."""
    run = tmp_path / "run"
    r = _torchrun("--out", run, "--steps", "3", *DDP)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ganx: training on cpu") == 1 and "2 processes (gloo)" in r.stdout
    assert load_checkpoint(run)["step"] == 3
    r = _torchrun("--resume", run, "--steps", "5", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in r.stdout and "at step 3" in r.stdout
    ck = load_checkpoint(run)
    assert ck["step"] == 5 and ck["config"]["sync_batchnorm"]
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]


def test_torchrun_sigterm_stops_all_ranks_with_a_checkpoint(tmp_path):
    """SIGTERM to torchrun (what a scheduler sends): torchrun passes it to both workers, which
    agree (a collective) to stop after the same step; rank 0 writes the checkpoint. torchrun
    itself then reports the signal and exits non-zero, which is its own behaviour."""
    import signal
    import time

    run = tmp_path / "run"
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = ([exe] if exe else [sys.executable, "-m", "torch.distributed.run"])
    cmd += ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
            os.path.join(os.path.dirname(__file__), "faulty_ganx.py"),  # python -m ganx + slow steps
            "train", "--out", str(run), "--steps", "1000", *DDP]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "GANX_TEST_SLOW_STEP": "0.1"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        log = run / "log.jsonl"
        while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 2):
            if p.poll() is not None:  # torchrun already gone: fail now with its output, not in 120 s
                out, err = p.communicate()
                raise AssertionError(f"torchrun exited with {p.returncode} before two steps were logged\n{out}{err}")
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert out.count("stopped by SIGTERM") == 1, out + err  # printed by rank 0 only
    step = load_checkpoint(run)["step"]
    assert 2 <= step < 1000 and f"after step {step}" in out
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == list(range(1, step + 1))
