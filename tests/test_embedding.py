"""Conditioning on a vector per image (issue 27 item 3): a .npz's ``embeddings``, the models of both
families conditioned on them (float64 checks against the formulas), the trainer, checkpoints and
resume, the classifier metric through the class behind each vector, and ``ganx sample --embedding``.

The data: the bundled digits, each with its label through a fixed random projection (10 -> 32,
seeded) plus small noise, written as a .npz in tmp_path."""
import numpy as np
import pytest
import torch

from ganx.data import DataError, load_dataset, load_digits_dataset
from ganx.models import DISCRIMINATORS, GENERATORS
from ganx.models.resnet import ConditionalBatchNorm2d
from ganx.train import ConfigError, Trainer, load_checkpoint, load_generator
from ganx.train.checkpoint import CheckpointError
from tiny_run import TINY, run_cli, tiny  # noqa: E402  (tests/tiny_run.py)

ARCHS = sorted(set(GENERATORS) & set(DISCRIMINATORS))
E = 32


def digits_arrays(n=None, dim=E, noise=0.05, seed=0):
    """images (N, 8, 8) in [0, 1], labels (N,), embeddings = P[label] + noise * eps (P: (10, dim))."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.RandomState(seed)
    proj = rng.standard_normal((10, dim))
    emb = proj[d.target] + noise * rng.standard_normal((len(d.target), dim))
    sl = slice(None) if n is None else slice(0, n)
    return (d.images[sl] / 16.0).astype(np.float32), d.target[sl].astype(np.int64), emb[sl].astype(np.float32), proj


def write_npz(path, n=256, **drop):
    images, labels, emb, _ = digits_arrays(n)
    arrays = {"images": images, "labels": labels, "embeddings": emb}
    for k in drop:
        arrays.pop(k)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("data") / "digits_emb.npz")


@pytest.fixture(scope="module")
def data(npz):
    return load_dataset(str(npz), 16)


# ----------------------------------------------------------------------------------------- data

def test_npz_with_embeddings(npz, data):
    images, labels, emb, _ = digits_arrays(256)
    assert data.embedding_dim == E and data.embeddings.dtype == torch.float32
    assert torch.equal(data.embeddings, torch.from_numpy(emb))
    assert data.num_classes == 10 and torch.equal(data.labels, torch.from_numpy(labels))  # kept (for the metrics)
    assert torch.equal(data.images, load_digits_dataset(16).images[:256])  # the same pixels as --data digits
    train, test = data.split(0.25)
    for part in (train, test):
        assert part.embeddings.shape == (len(part), E)
        rows = [int(np.flatnonzero((emb == part.embeddings[i].numpy()).all(1))[0]) for i in range(3)]
        assert [int(labels[r]) for r in rows] == part.labels[:3].tolist()  # rows stay with their images


def test_npz_without_labels_or_embeddings(tmp_path):
    only_emb = load_dataset(str(write_npz(tmp_path / "e.npz", labels=1)), 16)
    assert only_emb.labels is None and only_emb.embedding_dim == E
    plain = load_dataset(str(write_npz(tmp_path / "p.npz", labels=1, embeddings=1)), 16)
    assert plain.labels is None and plain.embeddings is None
    t = Trainer(tiny(tmp_path / "run", conditional=False, steps=1), dataset=plain)  # unconditional still works
    assert not t.G.conditional and t.train_step()["g_loss"].isfinite()
    with pytest.raises(ConfigError, match="needs labelled data.*'embeddings'"):
        Trainer(tiny(tmp_path / "run2"), dataset=plain)


def _bad(tmp_path, emb, name="bad.npz", n=8):
    f = tmp_path / name
    np.savez(f, images=np.zeros((n, 8, 8), np.uint8), embeddings=emb)
    return f


@pytest.mark.parametrize("emb, needle", [
    (np.zeros(8, np.float32), "'embeddings' must be an (N, E) array"),
    (np.zeros((8, 2, 2), np.float32), "'embeddings' must be an (N, E) array"),
    (np.zeros((8, 0), np.float32), "E >= 1"),
    (np.zeros((7, 4), np.float32), "8 images but 7 rows of 'embeddings'"),
    (np.array([[0.0, np.nan]] * 8), "'embeddings' contains NaN or infinity"),
    (np.array([[0.0, np.inf]] * 8), "'embeddings' contains NaN or infinity"),
    (np.full((8, 2), 1e300), "'embeddings' contains NaN or infinity (or values beyond float32's range)"),
    (np.zeros((8, 2), np.complex64), "'embeddings' must hold real numbers"),
    (np.array([["a", "b"]] * 8), "'embeddings' must hold real numbers"),
    (np.zeros((8, 2), bool), "'embeddings' must hold real numbers"),
])
def test_embedding_errors_name_the_file_and_key(tmp_path, emb, needle):
    f = _bad(tmp_path, emb)
    with pytest.raises(DataError) as e:
        load_dataset(str(f), 16)
    msg = str(e.value)
    assert needle in msg and str(f) in msg and "\n" not in msg, msg


def test_embedding_error_on_the_command_line(tmp_path, capsys):
    f = _bad(tmp_path, np.zeros((7, 4), np.float32))
    rc, out, err = run_cli(capsys, "train", "--data", f, "--out", tmp_path / "r", *TINY, "--steps", 1)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(f) in lines[0] and "8 images but 7 rows of 'embeddings'" in lines[0]


def test_demo_data_set_script(tmp_path):
    import subprocess
    import sys

    from ganx.data.demo import digit_embeddings

    d = digit_embeddings(dim=16, noise=0.0, seed=3)
    # noise 0: each vector is its label's row of one fixed projection
    proj = np.stack([d["embeddings"][np.flatnonzero(d["labels"] == c)[0]] for c in range(10)])
    np.testing.assert_array_equal(d["embeddings"], proj[d["labels"]])
    assert np.linalg.matrix_rank(proj) == 10 and d["images"].shape == (1797, 8, 8)
    noisy = digit_embeddings(dim=16, noise=0.1, seed=3)["embeddings"]
    assert 0.05 < np.abs(noisy - d["embeddings"]).std() < 0.15
    root = __file__.rsplit("/tests/", 1)[0]
    r = subprocess.run([sys.executable, f"{root}/scripts/make_digit_embeddings.py", str(tmp_path / "d.npz"),
                        "--dim", "12"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ds = load_dataset(str(tmp_path / "d.npz"), 16)
    assert ds.embedding_dim == 12 and ds.num_classes == 10 and len(ds) == 1797
    r = subprocess.run([sys.executable, f"{root}/scripts/make_digit_embeddings.py", str(tmp_path / "d.npy")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and ".npz" in r.stderr


# --------------------------------------------------------------------------------------- models

def make_g(arch, **kw):
    return GENERATORS[arch](**{"latent_dim": 8, "image_size": 16, "width": 4, "embedding_dim": 5, **kw})


def make_d(arch, **kw):
    return DISCRIMINATORS[arch](**{"image_size": 16, "width": 4, "embedding_dim": 5, **kw})


def _perturb_cbn(G):
    """The resnet G's BatchNorm maps of the vector start at 0 (gain 1, bias 0 for every vector):
    random ones, so the vector matters."""
    for m in G.modules():
        if isinstance(m, ConditionalBatchNorm2d) and m.embedding_dim is not None:
            for lin in (m.gain, m.bias):
                torch.nn.init.normal_(lin.weight, 0.0, 0.3)
                torch.nn.init.normal_(lin.bias, 0.0, 0.3)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_generator_is_a_deterministic_function_of_z_and_the_vector_float64(arch, impl):
    torch.manual_seed(0)
    G = make_g(arch, impl=impl).double()
    _perturb_cbn(G)
    G.eval()
    z = torch.randn(3, 8, dtype=torch.float64)
    e = torch.randn(3, 5, dtype=torch.float64)
    a, b = G(z, e), G(z.clone(), e.clone())
    assert a.shape == (3, 1, 16, 16) and torch.equal(a, b)
    # per sample: no dependence on the rest of the batch in eval mode (up to the fused kernels' summation order)
    torch.testing.assert_close(G(z[1:2], e[1:2]), a[1:2], rtol=1e-12, atol=1e-14)
    other = G(z, e + 0.5)
    assert all(not torch.equal(a[i], other[i]) for i in range(3)), "the vector must change the image"
    # gradients: to the vector (checked numerically) and to every parameter that reads it
    e_req = e.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: G(z[:2], v), (e_req[:2],), eps=1e-6, atol=1e-7)
    G.train()
    G(z, e).square().sum().backward()
    names = [n for n, _ in G.named_parameters() if n.startswith("embed") or ".gain." in n or ".bias.weight" in n]
    assert "embed.weight" in names and (arch == "dcgan" or any(".gain." in n for n in names))
    for n, p in G.named_parameters():
        if n in names:
            assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_dcgan_generator_concatenates_the_projected_vector_float64():
    torch.manual_seed(0)
    G = make_g("dcgan", impl="reference").double().eval()
    z, e = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    assert tuple(G.embed.weight.shape) == (8, 5)  # embed_dim defaults to latent_dim
    want = G.blocks(G.project(torch.cat([z, e @ G.embed.weight.T + G.embed.bias], 1)))
    torch.testing.assert_close(G(z, e), want, rtol=1e-12, atol=1e-12)


def test_conditional_batch_norm_of_a_vector_float64():
    torch.manual_seed(0)
    bn = ConditionalBatchNorm2d(3, embedding_dim=4).double()
    assert not bn.bn.affine
    x, y = torch.randn(5, 3, 2, 2, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(bn(x, y), bn.bn(x))  # gain 1, bias 0 for every vector at the start
    _perturb_cbn(torch.nn.Sequential(bn))
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    xh = (x - mean) / (var + 1e-5).sqrt()
    gain = 1 + y @ bn.gain.weight.T + bn.gain.bias
    bias = y @ bn.bias.weight.T + bn.bias.bias
    torch.testing.assert_close(bn(x, y), xh * gain[:, :, None, None] + bias[:, :, None, None])
    with pytest.raises(ValueError, match="not both"):
        ConditionalBatchNorm2d(3, num_classes=2, embedding_dim=4)


def test_resnet_generator_shares_one_projection_of_the_vector():
    G = make_g("resnet", embed_dim=6)
    assert tuple(G.embed.weight.shape) == (6, 5)
    cbns = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert cbns and all(m.embedding_dim == 6 and m.gain.in_features == 6 for m in cbns)
    assert G.config()["embed_dim"] == 6 and GENERATORS["resnet"](**G.config()).embed.out_features == 6


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sn", [False, True])
def test_projection_discriminator_formula_float64(arch, sn):
    """logit = psi(phi(x)) + <W e, phi(x)>, computed by hand from D's (normalised) weights."""
    torch.manual_seed(0)
    D = make_d(arch, spectral_norm=sn, minibatch_std=0).double()
    for _ in range(20):  # power iterations (training mode)
        D(torch.randn(4, 1, 16, 16, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64))
    D.eval()
    torch.nn.init.normal_(D.head.bias, 0.0, 0.3)
    x, e = torch.randn(6, 1, 16, 16, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    h = D.features(x)
    W = D.embed.weight  # (feat_dim, 5), spectrally normalised when sn
    assert tuple(W.shape) == (D.feat_dim, 5) and D.embed.bias is None
    want = h @ D.head.weight[0] + D.head.bias[0] + ((e @ W.T) * h).sum(1)
    torch.testing.assert_close(D(x, e), want, rtol=1e-12, atol=1e-12)
    if sn:
        assert torch.linalg.matrix_norm(W.detach(), ord=2) <= 1.05
    # linear in the vector: D(x, a e1 + b e2) - psi = a (D(x, e1) - psi) + b (D(x, e2) - psi)
    psi = D(x, torch.zeros_like(e))
    e2 = torch.randn_like(e)
    torch.testing.assert_close(D(x, 2 * e - 3 * e2) - psi, 2 * (D(x, e) - psi) - 3 * (D(x, e2) - psi))
    # gradients reach W and the vector
    D.train()
    e_req = e.clone().requires_grad_(True)
    D(x, e_req).sum().backward()
    w = D.embed.parametrizations.weight.original if sn else D.embed.weight
    assert w.grad.abs().sum() > 0 and e_req.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_conditioning_input_errors(arch):
    G, D = make_g(arch), make_d(arch)
    z, x = torch.randn(2, 8), torch.randn(2, 1, 16, 16)
    for model, first in ((G, z), (D, x)):
        with pytest.raises(ValueError, match=r"conditioned on embeddings; pass embeddings \(N, 5\)"):
            model(first)
        with pytest.raises(ValueError, match=r"float tensor of shape \(2, 5\), got torch.int64"):
            model(first, torch.tensor([0, 1]))
        with pytest.raises(ValueError, match=r"shape \(2, 5\), got torch.float32 of shape \(2, 4\)"):
            model(first, torch.randn(2, 4))
    Gc, Dc = make_g(arch, embedding_dim=None, num_classes=3), make_d(arch, embedding_dim=None, num_classes=3)
    for model, first in ((Gc, z), (Dc, x)):
        with pytest.raises(ValueError, match="class-conditional; labels must be .* int64 class indices"):
            model(first, torch.randn(2, 5))
    with pytest.raises(ValueError, match="not both"):
        make_g(arch, num_classes=3)
    with pytest.raises(ValueError, match="not both"):
        make_d(arch, num_classes=3)
    with pytest.raises(ValueError, match="embedding_dim must be None"):
        make_g(arch, embedding_dim=0)


# -------------------------------------------------------------------------------------- trainer

def _state(t):
    return {**{"G." + k: v for k, v in t.G.state_dict().items()},
            **{"D." + k: v for k, v in t.D.state_dict().items()},
            **{"E." + k: v for k, v in t.ema.module.state_dict().items()}}


@pytest.mark.parametrize("arch", ARCHS)
def test_trainer_runs_and_records_the_conditioning(tmp_path, data, arch):
    cfg = tiny(tmp_path / "run", generator=arch, discriminator=arch, steps=3, metrics=True, metric_samples=60,
               sample_every=2)
    t = Trainer(cfg, dataset=data)
    assert (t.embedding_dim, t.num_classes) == (E, None)
    assert t.G.embedding_dim == t.D.embedding_dim == E and t.G.num_classes is None
    # the grids: one row per class, the vector of that class's first image, the same z along each column
    first = [int(np.flatnonzero(data.labels.numpy() == c)[0]) for c in range(10)]
    assert torch.equal(t.grid.y, data.embeddings[first].repeat_interleave(10, 0))
    assert torch.equal(t.grid.z[:10], t.grid.z[10:20])
    g0 = [p.detach().clone() for p in t.G.parameters()]
    m = t.fit(tensorboard=False)
    assert not all(torch.equal(a, b) for a, b in zip(g0, t.G.parameters()))
    assert 0 <= m["classifier_accuracy"] <= 1 and len(m["classifier_accuracy_per_class"]) == 10 and m["fid"] >= 0
    assert (tmp_path / "run" / "samples" / "final.png").is_file()
    ck = load_checkpoint(tmp_path / "run")
    cond = ck["conditioning"]
    assert cond["kind"] == "embedding" and cond["embedding_dim"] == E
    assert torch.equal(cond["sample_embeddings"], data.embeddings[first]) and cond["sample_names"] == list("0123456789")
    assert ck["generator_config"]["embedding_dim"] == ck["discriminator_config"]["embedding_dim"] == E
    assert ck["class_names"] == []
    G, _ = load_generator(tmp_path / "run")  # from the checkpoint alone
    e = data.embeddings[:4]
    torch.testing.assert_close(G(torch.zeros(4, 8), e), t.ema.module.eval()(torch.zeros(4, 8), e))


def test_class_checkpoints_record_their_conditioning(tmp_path):
    from tiny_run import SMALL

    Trainer(tiny(tmp_path / "c", steps=1), dataset=SMALL).fit(tensorboard=False)
    Trainer(tiny(tmp_path / "u", steps=1, conditional=False), dataset=SMALL).fit(tensorboard=False)
    assert load_checkpoint(tmp_path / "c")["conditioning"] == {"kind": "class", "num_classes": 10}
    assert load_checkpoint(tmp_path / "u")["conditioning"] == {"kind": None}
    assert "embedding_dim" not in load_checkpoint(tmp_path / "c")["generator_config"]


def test_unlabelled_embedding_run_holds_the_first_vectors(tmp_path):
    ds = load_dataset(str(write_npz(tmp_path / "e.npz", n=64, labels=1)), 16)
    t = Trainer(tiny(tmp_path / "run", steps=2), dataset=ds)
    assert torch.equal(t.grid.y, ds.embeddings[:8].repeat_interleave(8, 0)) and t.grid.cols == 8
    t.fit(tensorboard=False)
    assert load_checkpoint(tmp_path / "run")["conditioning"]["sample_names"] == [f"row {i}" for i in range(8)]


def test_batches_are_sorted_along_the_principal_direction(tmp_path, data, monkeypatch):
    t = Trainer(tiny(tmp_path / "run", steps=1), dataset=data)
    e = data.embeddings.double() - data.embeddings.double().mean(0)
    top = torch.linalg.svd(e, full_matrices=False).Vh[0].float()
    assert abs(float(t._sort_direction @ top)) == pytest.approx(1, abs=1e-4)
    seen = []
    monkeypatch.setattr(t, "d_step", lambda real, y: seen.append(y) or pytest.fail("stop"))
    with pytest.raises(pytest.fail.Exception):
        t.train_step()
    key = seen[0] @ t._sort_direction
    assert torch.equal(key, key.sort().values)


@pytest.mark.parametrize("arch", ARCHS)
def test_resume_equals_uninterrupted(tmp_path, data, arch):
    kw = dict(spectral_norm=True, d_steps=2, generator=arch, discriminator=arch)
    a = Trainer(tiny(tmp_path / "a", steps=6, **kw), dataset=data)
    a.fit(tensorboard=False)
    b = Trainer(tiny(tmp_path / "b", steps=3, **kw), dataset=data)
    b.fit(tensorboard=False)
    torch.manual_seed(12345)
    c = Trainer.from_checkpoint(tmp_path / "b", {"steps": 6}, dataset=data)
    assert c.step == 3 and c.embedding_dim == E
    c.fit(tensorboard=False)
    sa, sc = _state(a), _state(c)
    assert sa.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sc[k]), k


def test_resume_from_the_data_path_alone_and_with_other_data(tmp_path, npz):
    """The checkpoint's config names the .npz: a resume with no dataset given loads it again; data
    that conditions otherwise (here: the same images with labels only) is refused by name."""
    cfg = tiny(tmp_path / "run", steps=1, data=str(npz))
    Trainer(cfg).fit(tensorboard=False)
    r = Trainer.from_checkpoint(tmp_path / "run", {"steps": 2})
    assert r.embedding_dim == E and r.step == 1
    r.fit(tensorboard=False)
    labels_only = write_npz(tmp_path / "labels.npz", embeddings=1)
    with pytest.raises(ConfigError, match="keeps its model, which is conditioned on 32-value embeddings, but the data "
                                          r".*labels.npz.* would make it class-conditional \(10 classes\)"):
        Trainer.from_checkpoint(tmp_path / "run", {"steps": 3, "data": str(labels_only)})
    # a caller that loads a checkpoint into a trainer of other conditioning directly gets the same refusal
    other = Trainer(tiny(tmp_path / "other", steps=1, data=str(labels_only)))
    with pytest.raises(CheckpointError, match="conditioned on 32-value embeddings, but this run's data .*labels.npz.* "
                                              r"makes them class-conditional \(10 classes\)"):
        other.load_state_dict(load_checkpoint(tmp_path / "run"))


# -------------------------------------------------------------------------------------- metrics

class _OracleG(torch.nn.Module):
    """A 'generator' that draws a real digit of the class nearest to its vector (shifted by
    ``shift`` classes): the metric must score it as near perfect (shift 0) or near zero (shift 1)."""

    def __init__(self, proj, data, shift):
        super().__init__()
        self.latent_dim, self.embedding_dim, self.num_classes = 8, proj.shape[1], None
        self.proj, self.shift = torch.as_tensor(proj, dtype=torch.float32), shift
        self.by_class = [data.images[data.labels == c] for c in range(10)]

    def forward(self, z, e):
        c = ((torch.cdist(e, self.proj).argmin(1) + self.shift) % 10).tolist()
        return torch.stack([self.by_class[k][i % len(self.by_class[k])] for i, k in enumerate(c)])


def test_classifier_metric_uses_the_class_behind_each_vector(tmp_path, data):
    from ganx.metrics import evaluate_generator
    from ganx.metrics.evaluate import embeddings_for

    vectors, labels = embeddings_for(data, 50)
    assert labels.tolist() == [i % 10 for i in range(50)]
    rows = [int(np.flatnonzero((data.embeddings.numpy() == v.numpy()).all(1))[0]) for v in vectors]
    assert [int(data.labels[r]) for r in rows] == labels.tolist()  # each vector is one of its class's
    assert len(set(rows)) == 50  # cycling through each class's images, not repeating the first
    proj = digits_arrays(1)[3]
    good = evaluate_generator(_OracleG(proj, data, 0), data, str(tmp_path), n=200, seed=1)
    bad = evaluate_generator(_OracleG(proj, data, 1), data, str(tmp_path), n=200, seed=1)
    assert good["classifier_accuracy"] > 0.9 and bad["classifier_accuracy"] < 0.2
    assert good["diversity_ratio"] > 0.5


# ------------------------------------------------------------------------------------ ganx sample

@pytest.fixture(scope="module")
def emb_run(tmp_path_factory, npz):
    run = tmp_path_factory.mktemp("emb") / "run"
    Trainer(tiny(run, steps=2), dataset=load_dataset(str(npz), 16)).fit(tensorboard=False)
    return run


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    from tiny_run import SMALL

    run = tmp_path_factory.mktemp("cls") / "run"
    Trainer(tiny(run, steps=1), dataset=SMALL).fit(tensorboard=False)
    return run


def _grid_size(rows, cols, side=16, pad=1, min_side=256):
    w, h = cols * (side + pad) + pad, rows * (side + pad) + pad
    s = max(1, -(-min_side // w))
    return w * s, h * s


def test_sample_from_vectors(tmp_path, capsys, emb_run, npz):
    from PIL import Image

    emb = np.load(npz)["embeddings"]
    np.save(tmp_path / "three.npy", emb[:3])
    np.save(tmp_path / "one.npy", emb[5])
    out = tmp_path / "g.png"
    for flags, n, (rows, cols) in [(["--embedding", tmp_path / "three.npy"], 3, (2, 2)),  # 3 images, 2 per row
                                   (["--embedding", tmp_path / "three.npy", "--n", 4], 12, (3, 4)),  # a row per vector
                                   (["--embedding", tmp_path / "one.npy"], 1, (1, 1)),
                                   (["--embedding", npz, "--nrow", 16], 256, (16, 16)),  # the .npz's own vectors
                                   ([], 64, (10, 7))]:  # no vectors: the checkpoint's held ones, one row each
        rc, stdout, err = run_cli(capsys, "sample", "--checkpoint", emb_run, "--out", out, *flags)
        assert rc == 0, err
        assert f"wrote {n} samples" in stdout
        assert Image.open(out).size == _grid_size(rows, cols), flags
    # the images are those of the generator on those vectors
    G, _ = load_generator(emb_run)
    from ganx.models.common import latents
    want = G(latents(1, G.latent_dim, torch.Generator().manual_seed(0)), torch.from_numpy(emb[5][None]))
    rc, _, err = run_cli(capsys, "sample", "--checkpoint", emb_run, "--out", out, "--embedding", tmp_path / "one.npy")
    assert rc == 0, err
    from ganx.train.plots import make_grid
    np.testing.assert_array_equal(np.asarray(Image.open(out)), make_grid(want, 1)[:, :, 0])


def test_sample_errors(tmp_path, capsys, emb_run, class_run, npz):
    emb = np.load(npz)["embeddings"]
    np.save(tmp_path / "ok.npy", emb[:2])
    np.save(tmp_path / "short.npy", emb[:2, :10])
    np.save(tmp_path / "nan.npy", np.array([[np.nan] * E]))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, E), np.float32))
    np.save(tmp_path / "text.npy", np.array(["a"] * E))
    np.savez(tmp_path / "nokey.npz", images=np.zeros((2, 8, 8)))
    (tmp_path / "v.txt").write_text("1 2 3")
    out = ["--out", tmp_path / "g.png"]
    cases = [
        (emb_run, ["--class", "3"], "--class: this checkpoint's generator is conditioned on 32-value embeddings"),
        (emb_run, ["--embedding", tmp_path / "short.npy"], "its vectors have 10 values but this checkpoint's "
                                                          "generator takes 32"),
        (emb_run, ["--embedding", tmp_path / "nan.npy"], "NaN or infinity"),
        (emb_run, ["--embedding", tmp_path / "cube.npy"], "expected vectors of shape (N, E) or (E,)"),
        (emb_run, ["--embedding", tmp_path / "text.npy"], "must be real numbers"),
        (emb_run, ["--embedding", tmp_path / "nokey.npz"], "has no 'embeddings' array"),
        (emb_run, ["--embedding", tmp_path / "v.txt"], "give a .npy file"),
        (emb_run, ["--embedding", tmp_path / "missing.npy"], "no such file"),
        (emb_run, ["--embedding", tmp_path / "ok.npy", "--n", 0], "--n"),
        (emb_run, ["--embedding", tmp_path / "ok.npy", "--nrow", 3], "--nrow"),
        (emb_run, ["--embedding", tmp_path / "ok.npy", "--class", "1"], "--class and --embedding exclude each other"),
        (class_run, ["--embedding", tmp_path / "ok.npy"], "--embedding: this checkpoint's generator is "
                                                          "class-conditional (10 classes), not conditioned on embeddings"),
    ]
    for run, flags, needle in cases:
        rc, stdout, err = run_cli(capsys, "sample", "--checkpoint", run, *out, *flags)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (flags, err)
        assert needle in lines[0], (flags, lines[0])
    ck = load_checkpoint(emb_run)
    del ck["conditioning"]
    ck.pop("integrity")
    torch.save(ck, tmp_path / "old.pt")
    rc, _, err = run_cli(capsys, "sample", "--checkpoint", tmp_path / "old.pt", *out)
    assert rc == 2 and "give them with --embedding FILE.npy" in err


def test_train_and_sample_on_the_command_line(tmp_path, capsys, npz):
    rc, out, err = run_cli(capsys, "train", "--data", npz, "--out", tmp_path / "run", *TINY, "--steps", 2)
    assert rc == 0, err
    assert "conditional on 32-value embeddings" in out
    import yaml
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"] == str(npz) and saved["conditional"] is True
    rc, out, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--steps", 3, "--no-progress")
    assert rc == 0 and "resuming" in out, err
    assert load_checkpoint(tmp_path / "run")["step"] == 3
    labels_only = write_npz(tmp_path / "labels.npz", embeddings=1)
    rc, out, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--steps", 4, "--data", labels_only)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "conditioned on 32-value embeddings" in lines[0] and "class-conditional (10 classes)" in lines[0]
    assert load_checkpoint(tmp_path / "run")["step"] == 3
