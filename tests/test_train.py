"""Trainer: the textbook update rules, losses, EMA, resume == uninterrupted, crash-safe
checkpoints, config strictness. Tiny models on a slice of the digits: seconds on a CPU."""
import dataclasses
import json
import os

import pytest
import torch

import ganx.functional
from ganx.data import load_digits_dataset
from ganx.train import ConfigError, Trainer, TrainConfig, load_checkpoint, load_config_file, load_generator
from ganx.train import checkpoint as ckpt_mod
from ganx.models import DISCRIMINATORS, GENERATORS
from ganx.train.losses import BCELoss

HAS_FUSED_LOSSES = hasattr(ganx.functional, "bce_discriminator_loss")
IMPLS = ["reference", pytest.param("fused", marks=pytest.mark.skipif(
    not HAS_FUSED_LOSSES, reason="this build of ganx has no fused BCE losses"))]

# Every pair of registered architectures (the model contract: the trainer, checkpoints, resume and
# sampling work for each), and a shorter list that names every architecture at least once.
ARCH_PAIRS = [(g, d) for g in sorted(GENERATORS) for d in sorted(DISCRIMINATORS)]
ARCH_COVER = [(g, d) for g, d in ARCH_PAIRS if g == d] or ARCH_PAIRS

_DIGITS = load_digits_dataset(16)
SMALL = _DIGITS._subset(torch.arange(256))  # 256 images: 16 batches of 16 per epoch
# The same images with a vector per image (its label through a fixed projection): embedding-conditioned runs.
SMALL_EMB = dataclasses.replace(SMALL, embeddings=torch.randn(10, 12, generator=torch.Generator().manual_seed(0))[
    SMALL.labels])


def tiny(tmp_path, **kw):
    base = dict(image_size=16, latent_dim=8, g_width=8, d_width=8, batch_size=16, steps=4, log_every=1,
                checkpoint_every=100, progress=False, metrics=False, sample_every=0, device="cpu",
                out=str(tmp_path / "run"), impl="reference")
    base.update(kw)
    return TrainConfig(**base)


def params(m):
    return [p.detach().clone() for p in m.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("conditional", [True, False, "embedding"])
@pytest.mark.parametrize("archs", ARCH_PAIRS, ids="-".join)
def test_step_rules(tmp_path, impl, conditional, archs):
    """D step changes only D; G step changes only G; D is frozen (no grads) during the G step."""
    emb = conditional == "embedding"
    t = Trainer(tiny(tmp_path, impl=impl, conditional=bool(conditional), generator=archs[0], discriminator=archs[1]),
                dataset=SMALL_EMB if emb else SMALL)
    assert (t.G.arch, t.D.arch) == archs
    assert (t.G.embedding_dim, t.D.embedding_dim) == ((12, 12) if emb else (None, None))
    assert t.config.loss == ("hinge" if archs[1] == "resnet" else "bce")  # the architecture's default loss
    real, labels, _ = t.data.next()
    g0, d0 = params(t.G), params(t.D)
    stats = t.d_step(real, labels)
    g1, d1 = params(t.G), params(t.D)
    assert same(g0, g1), "a D step must not change G's weights"
    assert not same(d0, d1), "a D step must change D's weights"
    assert all(torch.isfinite(v) for v in stats.values())
    assert list(stats) == ["d_loss", *t.loss.stats]
    for k in ("acc_real", "acc_fake", "d_real", "d_fake"):
        if k in stats:
            assert 0 <= float(stats[k]) <= 1
    # The G step must neither step D nor leave gradients on D's parameters.
    for p in t.D.parameters():
        p.grad = None
    g_loss = t.g_step(labels, real.shape[0])
    assert torch.isfinite(g_loss)
    assert same(d1, params(t.D)), "a G step must not change D's weights"
    assert all(p.grad is None for p in t.D.parameters())
    assert all(p.requires_grad for p in t.D.parameters()), "D must be unfrozen after the G step"
    assert not same(g1, params(t.G)), "a G step must change G's weights"


def test_bce_loss_reference_values():
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 1.0])
    loss, s = BCELoss("reference").d_loss(real, fake)
    sp = torch.nn.functional.softplus
    torch.testing.assert_close(loss, sp(-real).mean() + sp(fake).mean())
    assert list(s) == list(BCELoss.stats)
    assert float(s["acc_real"]) == pytest.approx(2 / 3) and float(s["acc_fake"]) == pytest.approx(0.5)
    torch.testing.assert_close(s["d_real"], torch.sigmoid(real).mean())
    torch.testing.assert_close(BCELoss("reference").g_loss(fake), sp(-fake).mean())
    torch.testing.assert_close(BCELoss("reference", "minimax").g_loss(fake), -sp(fake).mean())
    # label smoothing: BCE(l, 0.9) = softplus(l) - 0.9 l
    loss_s, _ = BCELoss("reference", real_target=0.9).d_loss(real, fake)
    torch.testing.assert_close(loss_s, (sp(real) - 0.9 * real).mean() + sp(fake).mean())


@pytest.mark.skipif(not HAS_FUSED_LOSSES, reason="this build of ganx has no fused BCE losses")
@pytest.mark.parametrize("g_mode", ["non_saturating", "minimax"])
def test_bce_loss_fused_matches_reference(g_mode):
    torch.manual_seed(0)
    real = torch.randn(33, requires_grad=True)
    fake = torch.randn(33, requires_grad=True)
    out = {}
    for impl in ("fused", "reference"):
        L = BCELoss(impl, g_mode, real_target=0.9)
        dl, st = L.d_loss(real, fake)
        gl = L.g_loss(fake)
        grads = torch.autograd.grad(dl + gl, (real, fake))
        out[impl] = (dl, gl, grads, st)
    f, r = out["fused"], out["reference"]
    torch.testing.assert_close(f[0], r[0])
    torch.testing.assert_close(f[1], r[1])
    for a, b in zip(f[2], r[2]):
        torch.testing.assert_close(a, b)
    assert list(f[3]) == list(r[3]) == list(BCELoss.stats)
    for k in r[3]:
        torch.testing.assert_close(f[3][k].float(), r[3][k].float())


def test_fit_outputs_and_minimax(tmp_path):
    cfg = tiny(tmp_path, steps=20, g_loss="minimax", d_steps=2, sample_every=6, metrics=True, metric_samples=100)
    m = Trainer(cfg, dataset=SMALL).fit(tensorboard=HAS_TENSORBOARD)
    run = tmp_path / "run"
    for f in ("config.yaml", "log.jsonl", "losses.png", "metrics.json", "checkpoints/last.pt",
              "samples/final.png", "classifier.pt"):
        assert (run / f).is_file(), f
    # A grid every sample_every steps (not at the last step: final.png is that one).
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "final.png", "step_000006.png", "step_000012.png", "step_000018.png"]
    if HAS_TENSORBOARD:
        _check_tensorboard(run / "tensorboard", m)
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert all(torch.isfinite(torch.tensor(r["d_loss"])) for r in rows)
    assert m["steps"] == 20 and "fid" in m and "classifier_accuracy" in m
    assert json.loads((run / "metrics.json").read_text())["fid"] == m["fid"]


try:
    import tensorboard  # noqa: F401
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    HAS_TENSORBOARD = True
except Exception:  # optional: pip install "ganx[tensorboard]"
    HAS_TENSORBOARD = False


def _check_tensorboard(folder, metrics):
    """The run's event file holds the losses, the sample grids as images, the final metrics
    and the run's options (HPARAMS tab)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/d_loss", "train/g_loss", "metrics/fid", "metrics/kid",
            "metrics/classifier_accuracy"} <= set(tags["scalars"])
    assert [e.step for e in acc.Images("samples")] == [6, 12, 18, 20]
    assert acc.Scalars("metrics/fid")[0].value == pytest.approx(metrics["fid"], rel=1e-5)
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
    from tensorboard.plugins.hparams import plugin_data_pb2
    start = plugin_data_pb2.HParamsPluginData.FromString(plugins["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["steps"].number_value == 20 and hp["g_loss"].string_value == "minimax"


@pytest.mark.parametrize("kw", [dict(deterministic=True, threads=1), dict(threads=1)], ids=["deterministic", "threads"])
def test_fit_leaves_the_process_as_it_found_it(tmp_path, kw):
    # A Trainer sets torch's process-wide switches for its run; after fit (and after a start
    # that fails) the caller's thread count and deterministic mode are back.
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    tr = Trainer(tiny(tmp_path, steps=2, **kw), dataset=SMALL)
    assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled() == kw.get("deterministic", before[1])
    tr.fit(tensorboard=False)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    unlabelled = SMALL._subset(torch.arange(32))
    unlabelled.labels = None
    with pytest.raises(ConfigError, match="needs labelled data"):
        Trainer(tiny(tmp_path / "bad", conditional=True, **kw), dataset=unlabelled)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_missing_tensorboard_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    t = Trainer(tiny(tmp_path), dataset=SMALL)
    t.runlog.open_tensorboard(t.config, t.step)
    assert t.runlog.tb is None
    assert 'pip install "ganx[tensorboard]"' in capsys.readouterr().out


def test_default_sample_interval():
    assert TrainConfig(steps=3000).sample_interval == 200
    for steps in (1, 7, 10, 99, 100, 101, 600, 2020, 3000, 12345, 10**6):
        cfg = TrainConfig(steps=steps)
        grids = steps // cfg.sample_interval  # the periodic ones and the final one
        assert 1 <= grids <= 20 and (steps < 8 or grids >= 8), (steps, cfg.sample_interval)
    assert TrainConfig(steps=3000, sample_every=0).sample_interval == 0
    assert TrainConfig(steps=3000, sample_every=7).sample_interval == 7
    with pytest.raises(ConfigError, match="sample_every"):
        TrainConfig(sample_every=-1)


def test_resume_of_a_checkpoint_that_counted_sample_every_in_epochs(tmp_path):
    t = Trainer(tiny(tmp_path, steps=2), dataset=SMALL)
    t.fit(tensorboard=False)
    old = load_checkpoint(tmp_path / "run")
    del old["sample_every_unit"]
    old.pop("integrity", None)  # an old checkpoint: no digest either
    old["config"]["sample_every"] = 1  # the old default: a grid every epoch
    old_pt = tmp_path / "old-run" / "checkpoints" / "last.pt"
    old_pt.parent.mkdir(parents=True)
    torch.save(old, old_pt)
    assert Trainer.from_checkpoint(old_pt, dataset=SMALL).config.sample_every is None
    assert Trainer.from_checkpoint(old_pt, {"sample_every": 1}, dataset=SMALL).config.sample_every == 1
    assert Trainer.from_checkpoint(tmp_path / "run", dataset=SMALL).config.sample_every == 0


def test_partial_log_windows_are_marked_and_not_plotted(tmp_path):
    from ganx.train.plots import loss_figure, plotted_rows
    from ganx.train.runlog import read_log

    cfg = tiny(tmp_path, steps=4, log_every=3, checkpoint_every=100)
    Trainer(cfg, dataset=SMALL).fit(tensorboard=False)
    Trainer.from_checkpoint(tmp_path / "run", {"steps": 9}, dataset=SMALL).fit(tensorboard=False)
    rows = read_log(tmp_path / "run" / "log.jsonl")
    # step 4: the run's short last window (1 step); step 6: the first window after the resume.
    assert [(r["step"], r.get("partial", False), r.get("window_steps")) for r in rows] == [
        (3, False, None), (4, True, 1), (6, True, 2), (9, False, None)]
    assert [r["step"] for r in plotted_rows(rows)] == [3, 9]
    fig = loss_figure(rows)
    top, bottom = fig.axes
    assert all(list(line.get_xdata()) == [3, 9] for ax in fig.axes for line in ax.get_lines())
    assert top.get_ylabel() and bottom.get_ylabel(), "both panels need a y-axis label"
    # Only partial rows (a run shorter than one window): they are all there is, so they are shown.
    assert [r["step"] for r in plotted_rows(rows[1:3])] == [4, 6]


def test_ctrl_c_log_row_is_partial(tmp_path, monkeypatch):
    import signal

    from ganx.train.runlog import read_log

    t = Trainer(tiny(tmp_path, steps=50, log_every=3), dataset=SMALL)
    train_step = Trainer.train_step

    def step_then_ctrl_c(self):
        figs = train_step(self)
        if self.step == 5:
            signal.raise_signal(signal.SIGINT)
        return figs

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    m = t.fit(tensorboard=False)
    assert m["interrupted"] and m["steps"] == 5
    rows = read_log(tmp_path / "run" / "log.jsonl")
    assert [(r["step"], r.get("partial", False)) for r in rows] == [(3, False), (5, True)]
    assert rows[-1]["window_steps"] == 2


def test_progress_bar_fits_80_columns():
    from tqdm import tqdm

    from ganx.train.runlog import BAR_FORMAT, progress_postfix

    row = {"d_loss": 1.23456, "g_loss": 10.5678, "acc_real": 0.8123, "acc_fake": 0.7712, "d_real": 0.6, "d_fake": 0.4}
    post = progress_postfix(row)
    line = tqdm.format_meter(n=2960, total=3000, elapsed=3599, ncols=80, prefix="train", unit="step", postfix=post,
                             bar_format=BAR_FORMAT)
    assert len(line) <= 80 and line.endswith(post), line
    assert line.count("|") == 2  # room is left for the bar itself (past an hour: tests/test_run_outputs.py)


def _state(t):
    return {**{"G." + k: v for k, v in t.G.state_dict().items()},
            **{"D." + k: v for k, v in t.D.state_dict().items()},
            **{"E." + k: v for k, v in t.ema.module.state_dict().items()}}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("archs,augment", [(p, "") for p in ARCH_PAIRS]
                         + [(p, "color,translation,cutout") for p in ARCH_COVER],
                         ids=lambda v: "-".join(v) if isinstance(v, tuple) else (v.replace(",", "+") or "no-augment"))
def test_resume_equals_uninterrupted(tmp_path, impl, archs, augment):
    """Bit-identical on CPU: 6 steps straight == 3 steps, checkpoint, new process state, 3 more.
    The split (3 of 16 batches) falls mid-epoch, so the data position is exercised too (and the
    augmentations' random draws, with --augment)."""
    _check_resume(tmp_path, impl=impl, spectral_norm=True, d_steps=2, generator=archs[0], discriminator=archs[1],
                  augment=augment)


@pytest.mark.parametrize("archs", ARCH_COVER, ids="-".join)
def test_resume_equals_uninterrupted_in_channels_last(tmp_path, archs):
    """The same with the models and images in NHWC (--memory-format channels_last; 'auto' picks it
    from 32 px), sample grids at every step (each one recomputes the EMA G's BatchNorm statistics)
    and a conditional D with minibatch-stddev groups."""
    _check_resume(tmp_path, impl="fused", d_steps=1, generator=archs[0], discriminator=archs[1],
                  memory_format="channels_last", sample_every=1)


def _check_resume(tmp_path, **kw):
    a = Trainer(tiny(tmp_path / "a", steps=6, **kw), dataset=SMALL)
    a.fit(tensorboard=False)
    b = Trainer(tiny(tmp_path / "b", steps=3, **kw), dataset=SMALL)
    b.fit(tensorboard=False)
    torch.manual_seed(12345)  # scramble the global RNG: the checkpoint must restore it
    c = Trainer.from_checkpoint(tmp_path / "b" / "run", {"steps": 6}, dataset=SMALL)
    assert c.step == 3
    c.fit(tensorboard=False)
    sa, sc = _state(a), _state(c)
    assert sa.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sc[k]), k
    oa, oc = a.opt_g.state_dict()["state"], c.opt_g.state_dict()["state"]
    assert all(torch.equal(oa[i]["exp_avg"], oc[i]["exp_avg"]) for i in oa)
    # The resumed run's log continues the first one: steps 1..6, once each.
    rows = [json.loads(x) for x in (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))


def test_memory_format(tmp_path):
    """'auto': NCHW below 32 px on the CPU, NHWC from 32 px; the models' 4-D weights, the real
    batches and the generated ones are in that layout, and one step computes the same as in NCHW
    (up to rounding: other convolution algorithms)."""
    from ganx.train.trainer import memory_format
    cpu = torch.device("cpu")
    assert memory_format(tiny(tmp_path), cpu) == torch.contiguous_format
    assert memory_format(tiny(tmp_path, image_size=32), cpu) == torch.channels_last
    assert memory_format(tiny(tmp_path, memory_format="channels_last"), cpu) == torch.channels_last
    assert memory_format(tiny(tmp_path, image_size=32, memory_format="contiguous"), cpu) == torch.contiguous_format
    assert memory_format(tiny(tmp_path), torch.device("cuda")) == torch.channels_last
    with pytest.raises(ConfigError, match="memory_format"):
        tiny(tmp_path, memory_format="nhwc")
    figs = {}
    for fmt in ("contiguous", "channels_last"):
        t = Trainer(tiny(tmp_path / fmt, memory_format=fmt, generator="resnet", discriminator="resnet",
                         impl="fused"), dataset=SMALL)
        cl = fmt == "channels_last"
        for m in (t.G, t.D):
            # (a weight with one input channel or a 1x1 kernel is laid out the same either way)
            w4 = [p for p in m.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2:] != (1, 1)]
            assert w4 and all(p.is_contiguous(memory_format=torch.channels_last) == cl for p in w4)
        fake = t.G(torch.randn(4, 8), torch.arange(4))
        assert fake.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        figs[fmt] = t.train_step()
        t.close()
    for k, v in figs["contiguous"].items():
        torch.testing.assert_close(figs["channels_last"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_recalibrate_batchnorm_is_the_plain_average_of_the_batches():
    """Every BatchNorm's running statistics = the mean and the unbiased variance over all the given
    batches' activations (equal-sized batches: the per-batch averages of a cumulative BN); the
    parameters, the momentum and the modes are left as they were."""
    from ganx.train.ema import recalibrate_batchnorm
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                              torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.3)).double().eval()
    before = {k: v.clone() for k, v in net.named_parameters()}
    xs = [torch.randn(8, 2, 6, 6, dtype=torch.float64) * (i + 1) for i in range(3)]
    assert recalibrate_batchnorm(net, ((x,) for x in xs))
    assert not net.training and net[4].momentum == 0.3 and net[1].momentum == 0.1
    assert all(torch.equal(v, before[k]) for k, v in net.named_parameters())

    def stats(h):  # per batch: mean, unbiased variance per channel
        return h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)

    h1 = [net[0](x) for x in xs]
    m1, v1 = zip(*(stats(h) for h in h1))
    torch.testing.assert_close(net[1].running_mean, torch.stack(m1).mean(0))
    torch.testing.assert_close(net[1].running_var, torch.stack(v1).mean(0))
    # the second BN saw the first one normalising with each batch's own statistics (train mode)
    h2 = [net[3](torch.relu((h - h.mean((0, 2, 3), keepdim=True)) / torch.sqrt(h.var((0, 2, 3), unbiased=False,
                                                                                     keepdim=True) + 1e-5)
                            * net[1].weight.view(1, -1, 1, 1) + net[1].bias.view(1, -1, 1, 1))) for h in h1]
    m2, v2 = zip(*(stats(h) for h in h2))
    torch.testing.assert_close(net[4].running_mean, torch.stack(m2).mean(0))
    torch.testing.assert_close(net[4].running_var, torch.stack(v2).mean(0))
    assert not recalibrate_batchnorm(torch.nn.Linear(2, 2), [(torch.randn(1, 2),)])
    # a synchronised BatchNorm would wait for the other processes (which do not sample): left alone
    from ganx.train.distributed import AllReduceBatchNorm2d
    for bn in (torch.nn.SyncBatchNorm(3), AllReduceBatchNorm2d(3)):
        mean = bn.running_mean.clone()
        assert not recalibrate_batchnorm(torch.nn.Sequential(bn), [(torch.randn(2, 3, 4, 4),)])
        assert torch.equal(bn.running_mean, mean)


@pytest.mark.parametrize("conditional", [True, False, "embedding"])
def test_recalibration_leaves_the_training_alone(tmp_path, conditional):
    """The EMA G's BatchNorm statistics are recomputed whenever it samples (here a grid at every
    step) from their own random draws: G, D, the EMA weights and every random stream are exactly
    those of a run without it; only the EMA's BatchNorm buffers differ, and they fit its weights
    (recomputed from scratch for the same weights, they come out the same)."""
    data = SMALL_EMB if conditional == "embedding" else SMALL
    kw = dict(steps=3, sample_every=1, conditional=bool(conditional), generator="resnet", discriminator="resnet")
    runs = {n: Trainer(tiny(tmp_path / str(n), bn_recalibration=n, **kw), dataset=data) for n in (0, 3)}
    for t in runs.values():
        t.fit(tensorboard=False)
    a, b = runs[0], runs[3]
    assert same(params(a.G), params(b.G)) and same(params(a.D), params(b.D))
    assert same(params(a.ema.module), params(b.ema.module))
    assert torch.equal(a.noise_gen.get_state(), b.noise_gen.get_state())
    assert torch.equal(a.G.blocks[0].bn1.bn.running_mean, b.G.blocks[0].bn1.bn.running_mean)
    ea, eb = a.ema.module.bn.running_mean, b.ema.module.bn.running_mean
    assert torch.equal(ea, a.G.bn.running_mean) and not torch.equal(eb, ea)
    saved = eb.clone()
    b._recalibrated = None  # recompute for the same weights
    assert torch.equal(b.sampler.bn.running_mean, saved)
    # the checkpoint holds the recalibrated statistics: `ganx sample` draws what the run drew
    E, _ = load_generator(tmp_path / "3" / "run")
    assert torch.equal(E.bn.running_mean, saved)


def test_checkpoint_is_weights_only_and_complete(tmp_path):
    t = Trainer(tiny(tmp_path), dataset=SMALL)
    t.fit(tensorboard=False)
    ck = load_checkpoint(tmp_path / "run")  # run folder -> checkpoints/last.pt, weights_only=True
    for k in ("G", "D", "opt_g", "opt_d", "ema", "step", "rng", "config", "generator_config"):
        assert k in ck
    assert ck["step"] == 4 and ck["config"]["steps"] == 4
    assert {"global", "noise", "data"} <= set(ck["rng"])


OLD_CHECKPOINT = os.path.join(os.path.dirname(__file__), "data", "checkpoint-v1-3648c49.pt")


@pytest.mark.parametrize("archs", ARCH_PAIRS, ids="-".join)
def test_checkpoint_records_the_architectures(tmp_path, archs):
    t = Trainer(tiny(tmp_path, generator=archs[0], discriminator=archs[1], augment="translation"), dataset=SMALL)
    t.fit(tensorboard=False)
    ck = load_checkpoint(tmp_path / "run")
    assert (ck["generator_arch"], ck["discriminator_arch"]) == archs
    assert ck["generator_config"] == t.G.config() and ck["discriminator_config"] == t.D.config()
    assert ck["config"]["augment"] == "translation" and ck["config"]["loss"] == t.config.loss
    assert ck["config"]["spectral_norm"] is (archs[1] == "resnet")
    G, _ = load_generator(tmp_path / "run", use_ema=False)
    assert type(G) is type(t.G) and all(torch.equal(a, b) for a, b in zip(G.state_dict().values(),
                                                                          t.G.state_dict().values()))
    # the EMA generator (what `ganx sample` draws from) from the checkpoint alone
    E, _ = load_generator(tmp_path / "run")
    z, y = torch.randn(4, 8), torch.arange(4)
    torch.testing.assert_close(E(z, y), t.ema.module.eval()(z, y))
    # resumed from the checkpoint alone (no config given): same models, same loss and augmentation
    r = Trainer.from_checkpoint(tmp_path / "run", {"steps": 5}, dataset=SMALL)
    assert (r.G.arch, r.D.arch, r.config.loss, r.config.augment) == (*archs, t.config.loss, "translation")
    assert r.D.config() == t.D.config()
    r.fit(tensorboard=False)
    assert load_checkpoint(tmp_path / "run")["step"] == 5


def test_checkpoint_of_ganx_0_1_0_still_loads(tmp_path):
    """tests/data/checkpoint-v1-3648c49.pt was written by the code of commit 3648c49 (before the
    model registry and the pluggable losses): 2 steps, 16px, widths 4, spectral norm, conditional.
    It records no architecture names and its D config has the since-removed 'impl'."""
    old = load_checkpoint(OLD_CHECKPOINT)
    assert "generator_arch" not in old and "impl" in old["discriminator_config"]
    G, _ = load_generator(OLD_CHECKPOINT)
    z = torch.randn(3, G.latent_dim)
    assert G(z, torch.tensor([0, 1, 2])).shape == (3, 1, 16, 16)
    torch.testing.assert_close(G.state_dict()["project.0.weight"], old["ema"]["module"]["project.0.weight"])
    # and the run resumes from it (a new run folder; its data: the digits it was trained on)
    t = Trainer.from_checkpoint(OLD_CHECKPOINT, {"steps": 3, "out": str(tmp_path / "resumed")},
                                dataset=_DIGITS._subset(torch.arange(64)))
    assert t.step == 2 and t.config.memory_format == "contiguous"  # as it ran (no such option then)
    t.fit(tensorboard=False)
    assert load_checkpoint(tmp_path / "resumed")["step"] == 3


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    t = Trainer(tiny(tmp_path), dataset=SMALL)
    t.train_step()
    path = t.save_checkpoint()
    before = load_checkpoint(path)

    t.train_step()
    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.seek(100)
        f.truncate()  # a torn, half-written file ...
        raise OSError("disk full")  # ... and the writer dies

    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        t.save_checkpoint()
    monkeypatch.undo()
    after = load_checkpoint(path)
    assert after["step"] == before["step"] == 1
    assert os.listdir(os.path.dirname(path)) == ["last.pt"]  # no temp file left behind


def test_ema_tracks_the_generator(tmp_path):
    t = Trainer(tiny(tmp_path, ema_decay=0.5), dataset=SMALL)
    for _ in range(3):
        t.train_step()
    assert t.ema.num_updates == 3
    ema_p, g_p = list(t.ema.module.parameters()), list(t.G.parameters())
    assert not same(ema_p, g_p)
    assert all(not p.requires_grad for p in ema_p)
    no_ema = Trainer(tiny(tmp_path / "n", ema_decay=0.0), dataset=SMALL)
    assert no_ema.ema is None and no_ema.sampler is no_ema.G


def test_config_strictness(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key.*'stepz'"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="'batch_size': expected int, got str"):
        TrainConfig.from_dict({"batch_size": "64"})
    with pytest.raises(ConfigError, match="'conditional': expected bool"):
        TrainConfig.from_dict({"conditional": 1})
    with pytest.raises(ConfigError, match="'image_size': must be one of"):
        TrainConfig(image_size=20)
    with pytest.raises(ConfigError, match="amp"):
        Trainer(tiny(tmp_path, amp="bf16"), dataset=SMALL)
    assert TrainConfig.from_dict({"lr-g": 1}).lr_g == 1.0  # dashes ok, int -> float ok
    (tmp_path / "c.yaml").write_text("steps: 7\nlr_d: 1e-3\nconditional: false\n")
    (tmp_path / "c.toml").write_text("steps = 7\nlr_d = 1e-3\nconditional = false\n")
    for f in ("c.yaml", "c.toml"):
        c = TrainConfig.from_dict(load_config_file(tmp_path / f))
        assert (c.steps, c.lr_d, c.conditional) == (7, 1e-3, False)
    (tmp_path / "bad.toml").write_text("steps = \n")
    with pytest.raises(ConfigError, match="could not be parsed"):
        load_config_file(tmp_path / "bad.toml")


def test_conditional_needs_labels(tmp_path):
    unlabelled = SMALL._subset(torch.arange(32))
    unlabelled.labels = None
    with pytest.raises(ConfigError, match="needs labelled data"):
        Trainer(tiny(tmp_path), dataset=unlabelled)
    t = Trainer(tiny(tmp_path, conditional=False), dataset=unlabelled)
    assert t.train_step()["g_loss"].isfinite()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cuda_amp_training(tmp_path, amp):
    t = Trainer(tiny(tmp_path, device="cuda", amp=amp, steps=5, impl="fused" if HAS_FUSED_LOSSES else "reference"),
                dataset=SMALL)
    g0 = params(t.G)
    m = t.fit(tensorboard=False)
    assert all(v is not None and v == v for v in m["final"].values())
    assert not same(g0, params(t.G))
    c = Trainer.from_checkpoint(tmp_path / "run", {"steps": 6}, dataset=SMALL)
    c.fit(tensorboard=False)


def test_auto_resume_policy(tmp_path):
    from ganx.train.checkpoint import CheckpointError
    from ganx.train.resume import auto_resume_path

    assert auto_resume_path(str(tmp_path / "none")) is None  # nothing there: a fresh run
    Trainer(tiny(tmp_path, steps=1), dataset=SMALL).fit(tensorboard=False)
    run = tmp_path / "run"
    assert auto_resume_path(str(run)).endswith("last.pt")
    (run / "checkpoints" / "last.pt").write_bytes(b"torn")
    warned = []
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        auto_resume_path(str(run), warned.append)
    assert len(warned) == 1 and "last.pt" in warned[0]
