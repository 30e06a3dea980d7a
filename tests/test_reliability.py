"""Files and runs a user or an attacker controls (issue 17): where a resumed run writes, integrity
of checkpoints, no in-place rewrites, one writer per run folder, symlinks, one-line errors,
bounded resources from small inputs, data that is what it claims, options checked at start.

Most tests run in-process (ganx.cli.main, the Trainer); the few that need a real process
(locks held by another process, kill -9) start `python -m ganx`, or tests/faulty_ganx.py where
the process must run slowly."""
import json
import os
import signal
import subprocess
import sys
import zipfile

import faulty_ganx
import numpy as np
import pytest
import torch

from ganx.data import DataError, load_dataset
from ganx.train import Trainer, load_checkpoint
from ganx.train.checkpoint import CheckpointError, find_resumable, state_digest
from ganx.train.config import ConfigError, load_config_file
from ganx.train.rundir import LOCK_NAME, RunFolderError, RunLock

from tiny_run import SMALL, TINY, copy_run, run_cli, tiny  # noqa: E402  (tests/tiny_run.py)


def ganx_proc(*args):
    return subprocess.run([sys.executable, "-m", "ganx", *map(str, args)], capture_output=True, text=True,
                          env=faulty_ganx.hook_env(), timeout=240)


# ------------------------------------------------------------------ 1. where a resumed run writes
def test_resume_never_writes_where_the_checkpoint_says(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.yaml").write_text("precious: 1\n")
    ck = load_checkpoint(run)
    ck["config"]["out"] = str(victim)  # a crafted checkpoint pointing at another folder
    crafted = run / "checkpoints" / "last.pt"
    from ganx.train.checkpoint import save_atomic

    save_atomic(ck, crafted)
    rc, out, err = run_cli(capsys, "train", "--resume", crafted, "--steps", 5, "--no-progress")
    assert rc == 0, err
    assert (victim / "config.yaml").read_text() == "precious: 1\n"
    assert sorted(os.listdir(victim)) == ["config.yaml"]
    assert load_checkpoint(run)["step"] == 5  # it continued in the run folder the file lies in
    assert f"resuming {run}" in out

    loose = tmp_path / "loose.pt"
    save_atomic(ck, loose)  # a checkpoint outside any run folder: refuse, say --out
    rc, out, err = run_cli(capsys, "train", "--resume", loose, "--steps", 5)
    assert rc == 2 and "--out" in err and "Traceback" not in err, err
    assert sorted(os.listdir(victim)) == ["config.yaml"]
    rc, out, err = run_cli(capsys, "train", "--resume", loose, "--steps", 5, "--out", tmp_path / "new")
    assert rc == 0, err
    assert load_checkpoint(tmp_path / "new")["step"] == 5


# ------------------------------------------------------------------ 2. integrity
def _flip_exponents(path, key="G"):
    """Flip an exponent bit of every float of one weight, keeping the archive well-formed (its
    CRCs recomputed), as a disk or a copy that corrupts bytes and a zip tool that rewrites them."""
    tmp = str(path) + ".x"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
        names = [i.filename for i in zin.infolist() if "/data/" in i.filename]
        sizes = {n: zin.getinfo(n).file_size for n in names}
        target = max(names, key=lambda n: sizes[n])  # the largest weight
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == target:
                a = bytearray(data)
                for i in range(3, len(a), 4):
                    a[i] ^= 0x40
                data = bytes(a)
            zout.writestr(info, data)
    os.replace(tmp, path)


def test_checkpoint_digest_detects_flipped_bits(tmp_path, trained):
    run = copy_run(trained, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    ck = torch.load(last, weights_only=True)
    assert ck["integrity"]["digest"] == state_digest(ck)
    _flip_exponents(last)
    with pytest.raises(CheckpointError, match=r"last\.pt.*(SHA-256|CRC)"):
        load_checkpoint(last)
    # a raw flipped byte (CRC no longer matches) is caught by the archive check, for old files too
    raw = tmp_path / "raw.pt"
    data = bytearray((trained / "checkpoints" / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0x40
    raw.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"raw\.pt"):
        load_checkpoint(raw)
    path, ck, problems = find_resumable(run)
    assert path.endswith("previous.pt") and ck["step"] == 2
    assert any("last.pt" in p for p in problems)


def test_sample_refuses_a_corrupted_checkpoint(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    _flip_exponents(run / "checkpoints" / "last.pt", "ema")
    rc, out, err = run_cli(capsys, "sample", "--checkpoint", run, "--out", tmp_path / "g.png", "--n", 4)
    assert rc == 2 and "last.pt" in err and "corrupted" in err and "Traceback" not in err, err
    assert not (tmp_path / "g.png").exists()


def test_checkpoints_of_older_ganx_still_load(tmp_path, trained):
    ck = load_checkpoint(trained)
    del ck["integrity"]  # what the code before the digest wrote
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    assert load_checkpoint(old)["step"] == 4


def test_resume_auto_prefers_verified_plausible_step(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    from ganx.train.checkpoint import save_atomic

    ck = load_checkpoint(run)
    ck["step"] = 10 ** 9  # a stray checkpoint with an implausible step (an old file, a crafted one)
    save_atomic(ck, run / "checkpoints" / "stray.pt")
    path, ck2, problems = find_resumable(run)
    assert path.endswith("last.pt") and ck2["step"] == 4
    assert any("stray.pt" in p and "step" in p for p in problems)
    # a checkpoint of another model in the folder is not preferred either
    other = load_checkpoint(run)
    other["config"]["g_width"] = 16
    other["step"] = 4
    save_atomic(other, run / "checkpoints" / "other.pt")
    path, _, problems = find_resumable(run)
    assert path.endswith("last.pt") and any("other.pt" in p and "g_width" in p for p in problems)
    # the older, verified one wins over a newer corrupted one: choice by verified step
    _flip_exponents(run / "checkpoints" / "last.pt")
    os.utime(run / "checkpoints" / "last.pt")
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 5, "--no-progress")
    assert rc == 0, err
    assert "at step 2" in out and "last.pt" in err and "stray.pt" in err


# ------------------------------------------------------------------ 3. no rewrite in place
def test_torn_log_line_is_skipped_with_a_warning(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    log = run / "log.jsonl"
    text = log.read_text()
    log.write_text(text + '{"step": 5, "d_lo')  # a kill -9 in the middle of a line
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 6, "--no-progress")
    assert rc == 0, err
    assert "torn" in err
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_stale_temporaries_are_cleaned_at_start(tmp_path, capsys, trained):
    from ganx._io import temp_prefix

    run = copy_run(trained, tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process that no longer runs: its temporaries are stale
    for name in ("last.pt", "previous.pt"):
        (run / "checkpoints" / (temp_prefix(name, dead.pid) + "abc123")).write_bytes(b"x" * 1000)
    (run / (temp_prefix("log.jsonl", dead.pid) + "zz")).write_text("junk")
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 5, "--no-progress")
    assert rc == 0, err
    assert sorted(os.listdir(run / "checkpoints")) == ["last.pt", "previous.pt"]
    assert not any(n.startswith(".ganx-tmp-") for n in os.listdir(run))
    assert "temporary" in err


# ------------------------------------------------------------------ 4. one run per folder
def test_second_writer_is_refused_and_lock_released(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock(run).acquire()
    try:
        t = Trainer(tiny(run), dataset=SMALL)
        with pytest.raises(RunFolderError, match="in use by another ganx process"):
            t.fit(tensorboard=False)
        assert not (run / "config.yaml").exists() and not (run / "log.jsonl").exists()
    finally:
        lock.release()
    Trainer(tiny(run), dataset=SMALL).fit(tensorboard=False)  # released: the next run proceeds
    assert load_checkpoint(run)["step"] == 4
    RunLock(run).acquire().release()  # and fit released its own lock


def test_concurrent_cli_writers(tmp_path):
    """Two real processes on one --out: the second is refused with a message, the first is not
    disturbed; after a kill -9 of the holder, its stale lock does not block the next run."""
    run = tmp_path / "run"
    p = faulty_ganx.launch("train", "--out", run, "--steps", 100000, "--checkpoint-every", 100000, *TINY,
                           GANX_TEST_SLOW_STEP=0.05)
    try:
        faulty_ganx.wait_for_log(p, run / "log.jsonl", 1)
        r = ganx_proc("train", "--resume", "auto", "--out", run, "--steps", 3, *TINY, "--seed", 7)
        assert r.returncode == 2 and "in use by another ganx process" in r.stderr, r.stderr
        assert f"pid {p.pid}" in r.stderr and "Traceback" not in r.stderr
        assert p.poll() is None
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert f"pid {p.pid}" in (run / LOCK_NAME).read_text()  # the dead holder's record is still there
    r = ganx_proc("train", "--resume", "auto", "--out", run, "--steps", 3, *TINY)
    assert r.returncode == 0, r.stderr
    assert "no longer runs" in r.stderr, r.stdout + r.stderr
    rows = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert rows == sorted(set(rows))  # never the same step twice


# ------------------------------------------------------------------ 5. symlinks
@pytest.mark.parametrize("name", ["config.yaml", "log.jsonl", "metrics.json"])
def test_no_write_through_planted_file_links(tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    os.symlink(target, run / name)
    t = Trainer(tiny(run, steps=2), dataset=SMALL)
    try:
        t.fit(tensorboard=False)
    except RunFolderError as e:
        assert name in str(e) and "link" in str(e)
    assert target.read_text() == "keep me\n"


def test_no_checkpoints_through_a_folder_link(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, run / "checkpoints")
    rc, out, err = run_cli(capsys, "train", "--out", run, "--steps", 2, *TINY)
    assert rc == 2 and "checkpoints" in err and "leads out of the run folder" in err, err
    assert os.listdir(outside) == []


def test_resume_auto_skips_dangling_links_and_loops(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    ck = run / "checkpoints"
    os.symlink(tmp_path / "missing.pt", ck / "dangling.pt")
    os.symlink(ck / "loop2.pt", ck / "loop1.pt")
    os.symlink(ck / "loop1.pt", ck / "loop2.pt")
    os.symlink(trained / "checkpoints" / "last.pt", ck / "outside.pt")
    path, c, problems = find_resumable(run)
    assert path.endswith("last.pt") and c["step"] == 4
    assert sum(("dangling" in p or "loop" in p) for p in problems) == 3, problems
    assert any("outside.pt" in p and "leads out" in p for p in problems)
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 5, "--no-progress")
    assert rc == 0 and "Traceback" not in err, err


# ------------------------------------------------------------------ 10. one-line errors, exit 2
def test_out_is_a_file_or_read_only(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, out, err = run_cli(capsys, "train", "--out", f, "--steps", 2, *TINY)
    assert rc == 2 and "afile" in err and "not a folder" in err and "Traceback" not in err, err
    if os.geteuid() == 0:
        return  # root writes into read-only folders; the check below cannot be exercised as root
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, out, err = run_cli(capsys, "train", "--out", ro, "--steps", 2, *TINY)
        assert rc == 2 and "ro" in err and "Traceback" not in err, err
    finally:
        ro.chmod(0o755)


def test_read_only_run_folder_is_one_line_error(tmp_path, monkeypatch):
    # as root a mode of 0o555 does not stop writes: make the lock file's creation fail instead
    run = tmp_path / "run"
    run.mkdir()
    real_open = os.open

    def deny(path, flags, *a, **k):
        if os.fspath(path).endswith(LOCK_NAME):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(RunFolderError, match="read-only"):
        Trainer(tiny(run), dataset=SMALL).fit(tensorboard=False)


@pytest.mark.parametrize("flags,expect", [
    (["--image-size", "32"], "image_size (16 -> 32)"),
    (["--g-width", "16"], "g_width (8 -> 16)"),
    (["--no-conditional"], "conditional (True -> False)"),
    (["--generator", "resnet"], "generator ('dcgan' -> 'resnet')"),
    (["--discriminator", "resnet"], "discriminator ('dcgan' -> 'resnet')"),
])
def test_resume_with_model_changing_options(tmp_path, capsys, trained, flags, expect):
    run = copy_run(trained, tmp_path / "run")
    rc, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6, *flags)
    assert rc == 2 and expect in err and "Traceback" not in err, err


def test_checkpoint_whose_tensors_or_rng_do_not_fit(tmp_path, capsys, trained):
    from ganx.train.checkpoint import save_atomic

    run = copy_run(trained, tmp_path / "run")
    ck = load_checkpoint(run)
    ck["G"] = {k: torch.zeros(3) for k in ck["G"]}
    save_atomic(ck, run / "checkpoints" / "last.pt")
    rc, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6)
    assert rc == 2 and "generator weights cannot be loaded" in err and "Traceback" not in err, err
    rc, out, err = run_cli(capsys, "sample", "--checkpoint", run, "--out", tmp_path / "g.png", "--no-ema")
    assert rc == 2 and "generator weights" in err and "Traceback" not in err, err

    ck = load_checkpoint(trained)
    ck["rng"]["global"]["torch"] = torch.zeros(7, dtype=torch.uint8)
    save_atomic(ck, run / "checkpoints" / "last.pt")
    rc, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6)
    assert rc == 2 and "RNG state" in err and "Traceback" not in err, err

    for bad in (-3, "12", 2.5, 10 ** 15):
        ck = load_checkpoint(trained)
        ck["step"] = bad
        save_atomic(ck, run / "checkpoints" / "last.pt")
        rc, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6)
        assert rc == 2 and "invalid step" in err and "Traceback" not in err, err


@pytest.mark.parametrize("text", ["lr_g: 1e400\n", "lr_d: -.inf\n", "real_target: .nan\n"])
def test_non_finite_numbers_refused(tmp_path, capsys, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    rc, out, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "r", *TINY)
    assert rc == 2 and "Traceback" not in err and ("finite" in err or "must be" in err), err


# ------------------------------------------------------------------ 7. bounded resources
def test_yaml_alias_bomb_is_refused_quickly(tmp_path, capsys):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    lines.append("steps: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1000
    with pytest.raises(ConfigError, match="expands to more than") as e:
        load_config_file(bomb)
    assert len(str(e.value)) < 1000
    # fewer aliases, but a value that would print as gigabytes: the message stays short
    small = tmp_path / "small.yaml"
    small.write_text("steps: {a: &a [" + ",".join(["x" * 50] * 50) + "], b: &b [*a,*a,*a,*a,*a,*a,*a,*a], "
                     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b], d: [*c,*c,*c,*c,*c,*c,*c,*c]}\n")
    rc, out, err = run_cli(capsys, "train", "--config", small, *TINY, "--out", tmp_path / "r")
    assert rc == 2 and "'steps'" in err and len(err) < 2000, err[:500]


def test_huge_declared_image_is_refused_before_decoding(tmp_path):
    from PIL import Image

    Image.new("L", (6000, 6000), 0).save(tmp_path / "big.png")  # ~60 KB on disk
    (tmp_path / "small.png").write_bytes((tmp_path / "big.png").read_bytes())
    with pytest.raises(DataError, match=r"big\.png.*6000x6000.*GANX_MAX_IMAGE_PIXELS"):
        load_dataset(str(tmp_path), 16)


def test_png_decompression_bomb_header_is_one_line(tmp_path, capsys):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "bomb.png").write_bytes(png)
    rc, out, err = run_cli(capsys, "train", "--data", tmp_path / "d", "--out", tmp_path / "r", *TINY)
    assert rc == 2 and "bomb.png" in err and "50000x50000" in err and "Traceback" not in err, err


def _npy_with_header(path, shape, dtype="<f4", payload=b""):
    from numpy.lib import format as npf

    with open(path, "wb") as f:
        npf.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(payload)


def test_array_headers_checked_before_allocation(tmp_path, capsys, monkeypatch):
    _npy_with_header(tmp_path / "liar.npy", (10 ** 7, 1000, 10))  # declares 4*10^11 bytes
    rc, out, err = run_cli(capsys, "train", "--data", tmp_path / "liar.npy", "--out", tmp_path / "r", *TINY)
    assert rc == 2 and "liar.npy" in err and "declares" in err and "Traceback" not in err, err
    # a compressed .npz whose arrays expand far beyond the memory allowed
    a = np.zeros((400, 64, 64), np.uint8)
    np.savez_compressed(tmp_path / "z.npz", images=a)
    assert (tmp_path / "z.npz").stat().st_size < 100_000
    monkeypatch.setenv("GANX_MEMORY_LIMIT", "4M")
    with pytest.raises(DataError, match=r"z\.npz.*memory"):
        load_dataset(str(tmp_path / "z.npz"), 16)
    monkeypatch.delenv("GANX_MEMORY_LIMIT")
    assert load_dataset(str(tmp_path / "z.npz"), 16).images.shape == (400, 1, 16, 16)


def test_checkpoint_model_size_checked(tmp_path, capsys, trained):
    from ganx.train.checkpoint import save_atomic

    run = copy_run(trained, tmp_path / "run")
    ck = load_checkpoint(run)
    ck["generator_config"]["width"] = 2 ** 15
    ck["config"]["g_width"] = 2 ** 15
    save_atomic(ck, run / "checkpoints" / "last.pt")
    rc, out, err = run_cli(capsys, "sample", "--checkpoint", run, "--out", tmp_path / "g.png")
    assert rc == 2 and "memory" in err and "Traceback" not in err, err
    rc, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6)
    assert rc == 2 and "memory" in err and "Traceback" not in err, err
    rc, out, err = run_cli(capsys, "train", "--g-width", 2 ** 15, "--out", tmp_path / "r2", *TINY[:4], *TINY[6:])
    assert rc == 2 and "memory" in err and "Traceback" not in err, err


# ------------------------------------------------------------------ 8. data is what it claims
def test_array_value_conventions(tmp_path):
    a = np.full((40, 8, 8), 1000, np.int16)
    np.save(tmp_path / "i16.npy", a)
    with pytest.raises(DataError, match=r"int16 images must hold 0\.\.255"):
        load_dataset(str(tmp_path / "i16.npy"), 16)
    np.save(tmp_path / "c.npy", np.ones((40, 8, 8), np.complex64))
    with pytest.raises(DataError, match="imaginary"):
        load_dataset(str(tmp_path / "c.npy"), 16)
    np.save(tmp_path / "u16.npy", np.full((40, 16, 16), 65535, np.uint16))
    assert load_dataset(str(tmp_path / "u16.npy"), 16).images.max() == 1.0
    np.save(tmp_path / "f.npy", np.full((40, 16, 16), 300.0, np.float32))
    with pytest.raises(DataError, match=r"\[0, 255\]"):
        load_dataset(str(tmp_path / "f.npy"), 16)
    # the same values give the same range with and without a resize
    v = np.random.default_rng(0).uniform(0, 255, (40, 16, 16)).astype(np.float32)
    v[:, :8] = 255.0
    np.save(tmp_path / "v.npy", v)
    for size in (16, 32):
        x = load_dataset(str(tmp_path / "v.npy"), size).images
        assert float(x.min()) >= -1 and float(x.max()) <= 1


def test_nan_labels_refused(tmp_path):
    y = np.arange(40, dtype=np.float64) % 2
    y[3] = np.nan
    np.savez(tmp_path / "l.npz", images=np.zeros((40, 8, 8), np.uint8), labels=y)
    with pytest.raises(DataError, match="labels contain NaN"):
        load_dataset(str(tmp_path / "l.npz"), 16)
    np.savez(tmp_path / "ok.npz", images=np.zeros((40, 8, 8), np.uint8), labels=np.arange(40.0) % 2)
    assert load_dataset(str(tmp_path / "ok.npz"), 16).class_names == ["0", "1"]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    for i, v in enumerate((1000, 65535)):
        Image.fromarray(np.full((16, 16), v, np.uint16)).save(tmp_path / f"{i}.png")
    x = load_dataset(str(tmp_path), 16).images
    assert torch.allclose((x[:, 0, 0, 0] + 1) / 2, torch.tensor([round(1000 * 255 / 65535) / 255, 1.0]))


# ------------------------------------------------------------------ 9. fail before training
def test_inception_options_checked_at_start(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", *TINY[:-3], "--metrics",
                           "--feature-space", "inception", "--inception-weights", tmp_path / "nope.pth")
    assert rc == 2 and "nope.pth" in err and "Traceback" not in err, err
    assert not (tmp_path / "r" / "log.jsonl").exists()  # refused before any step
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", *TINY[:-3], "--metrics",
                           "--feature-space", "inception")
    assert rc == 2 and "--inception-weights" in err, err
