"""ganx.logits_and_bce on discriminators written in the styles of public GAN code (written here
from descriptions, none copied), compared in float64; refusals with their reasons."""
import pytest
import torch
from torch import nn

import ganx

TOL = dict(atol=1e-10, rtol=1e-9)


def convs(ch=3, w=8):
    return [nn.Conv2d(ch, w, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, inplace=True)]


class ViewSqueezeD(nn.Module):
    """A Sequential ending in nn.Sigmoid, whose result the forward reshapes: view(-1, 1).squeeze(1)."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(*convs(), nn.Conv2d(16, 1, 4, 1, 0), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


class LinearHeadD(nn.Module):
    """Conv blocks, out.view(out.shape[0], -1), then a Sequential(nn.Linear, nn.Sigmoid) head."""

    def __init__(self, img=16):
        super().__init__()
        self.model = nn.Sequential(*convs())
        self.adv_layer = nn.Sequential(nn.Linear(16 * (img // 4) ** 2, 1), nn.Sigmoid())

    def forward(self, img):
        out = self.model(img)
        out = out.view(out.shape[0], -1)
        return self.adv_layer(out)


class FunctionalSigmoidD(nn.Module):
    """torch.sigmoid called in forward, then flattened and indexed."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(*convs(), nn.Conv2d(16, 1, 4, 1, 0))

    def forward(self, x):
        return torch.sigmoid(self.net(x)).flatten(1)[:, 0]


class MethodSigmoidInNestedD(nn.Module):
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16 * 16, 1)

        def forward(self, h):
            return self.fc(h.flatten(1)).sigmoid()

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*convs())
        self.head = self.Head()
        self.register_buffer("unused_buffer", torch.zeros(3))

    def forward(self, x):
        return self.head(self.body(x))


class ConditionalD(nn.Module):
    """Image and label: the label embedding is concatenated to the flattened image."""

    def __init__(self, n_classes=4, img=8):
        super().__init__()
        self.emb = nn.Embedding(n_classes, n_classes)
        self.model = nn.Sequential(nn.Linear(n_classes + img * img, 16), nn.LeakyReLU(0.2, inplace=True),
                                   nn.Dropout(0.4), nn.Linear(16, 1), nn.Sigmoid())

    def forward(self, img, labels):
        return self.model(torch.cat((img.view(img.size(0), -1), self.emb(labels)), -1))


class LoggedD(ViewSqueezeD):
    """Keeps the mean probability for logging: the sigmoid's output is used twice."""

    def forward(self, x):
        p = self.main(x)
        self.mean_prob = p.mean()
        return p.view(-1)


class AuxClassifierD(nn.Module):
    def __init__(self, n_classes=5):
        super().__init__()
        self.body = nn.Sequential(*convs(), nn.Flatten())
        self.adv = nn.Sequential(nn.Linear(256, 1), nn.Sigmoid())
        self.aux = nn.Sequential(nn.Linear(256, n_classes), nn.Softmax(dim=1))

    def forward(self, x):
        h = self.body(x)
        return self.adv(h), self.aux(h)


class UntraceableD(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(*convs(), nn.Conv2d(16, 1, 4, 1, 0), nn.Sigmoid())

    def forward(self, x):
        if x.abs().max() > 1e9:  # data-dependent branch: fx cannot trace this
            x = x.clamp(-1, 1)
        return self.main(x).view(-1)


class GateD(nn.Module):
    """A sigmoid gate in the middle and a linear output: the only nn.Sigmoid is not the output."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*convs(), nn.Flatten(), nn.Linear(256, 8), nn.Sigmoid(), nn.Linear(8, 1))

    def forward(self, x):
        if x.abs().max() > 1e9:
            x = x.clamp(-1, 1)
        return self.body(x)


def _x(n=6):
    return torch.randn(n, 3, 16, 16, dtype=torch.float64)


def _check(D, newD, *inputs, crit_cls_old=nn.BCELoss, **crit_kw):
    """sigmoid(logits) == probabilities; the fused loss on logits == BCELoss on probabilities, and
    their gradients; same state_dict keys both ways."""
    D.train(), newD.train()
    torch.manual_seed(0)
    p = D(*inputs)
    torch.manual_seed(0)
    logits = newD(*inputs)
    torch.testing.assert_close(torch.sigmoid(logits), p, **TOL)
    t = torch.rand_like(p)
    old = crit_cls_old(**crit_kw)
    _, new, _ = ganx.logits_and_bce(nn.Sequential(nn.Linear(1, 1), nn.Sigmoid()), old)
    lo, ln = old(p, t), new(logits, t)
    torch.testing.assert_close(ln, lo, **TOL)
    go = torch.randn_like(lo)
    lo.backward(go)
    ln.backward(go)
    po, pn = dict(D.named_parameters()), dict(newD.named_parameters())
    assert po.keys() == pn.keys()
    for k in po:
        torch.testing.assert_close(pn[k].grad, po[k].grad, **TOL, msg=lambda m: f"{k}: {m}")
    assert D.state_dict().keys() == newD.state_dict().keys()
    newD.load_state_dict(D.state_dict())
    D.load_state_dict(newD.state_dict())


@pytest.mark.parametrize("model,where", [
    (ViewSqueezeD, "main.6"), (LinearHeadD, "adv_layer.1"),
])
def test_sigmoid_module_in_custom_module(model, where):
    D = model().double()
    newD, crit, report = ganx.logits_and_bce(D, nn.BCELoss())
    assert report.removed == where and report.method == "torch.fx graph"
    assert type(newD) is model and isinstance(newD.get_submodule(where), nn.Identity)
    assert isinstance(D.get_submodule(where), nn.Sigmoid)  # the original is untouched (not inplace)
    assert isinstance(crit, ganx.nn.BCEWithLogitsLoss) and "Proven on a probe batch" in str(report)
    _check(D, newD, _x())


def test_sigmoid_call_becomes_graph_rewrite_keeping_the_class():
    for model in (FunctionalSigmoidD, MethodSigmoidInNestedD):
        D = model().double()
        newD, _, report = ganx.logits_and_bce(D)
        assert type(newD) is model and not isinstance(newD, torch.fx.GraphModule)
        assert f"keeps its class ({model.__name__})" in str(report)
        assert "sigmoid" in report.removed
        _check(D, newD, _x())
    # every submodule keeps its name, even those the graph does not call
    assert dict(newD.named_modules()).keys() >= dict(D.named_modules()).keys()


def test_conditional_needs_and_uses_example_input():
    D = ConditionalD().double()
    img, y = torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.randint(0, 4, (5,))
    with pytest.raises(ValueError, match="pass example_input"):
        ganx.logits_and_bce(D)
    newD, _, report = ganx.logits_and_bce(D, nn.BCELoss(), example_input=(img, y))
    assert report.removed == "model.4"
    _check(D, newD, img, y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_weight_and_reduction_carry_over(reduction, weighted):
    D = ViewSqueezeD().double()
    w = torch.rand(6, dtype=torch.float64) if weighted else None
    old = nn.BCELoss(weight=w, reduction=reduction)
    newD, crit, _ = ganx.logits_and_bce(D, old)
    assert crit.reduction == reduction and (crit.weight is None) == (w is None)
    _check(D, newD, _x(), weight=w, reduction=reduction)


def test_inplace():
    D = LinearHeadD().double()
    newD, _, _ = ganx.logits_and_bce(D, inplace=True)
    assert newD is D and isinstance(D.adv_layer[1], nn.Identity)


def test_untraceable_uses_module_walk_and_probe():
    D = UntraceableD().double()
    newD, _, report = ganx.logits_and_bce(D, nn.BCELoss())
    assert report.method.startswith("module walk") and report.removed == "main.6"
    _check(D, newD, _x())


def test_refusals_leave_the_model_unchanged():
    cases = [
        (LoggedD(), "the sigmoid's output is used 2 times"),
        (AuxClassifierD(), "returns 2 outputs \\(output 0 comes from a sigmoid\\)"),
        (nn.Sequential(*convs(), nn.Conv2d(16, 1, 4, 1, 0)), "not from a sigmoid"),
        (GateD(), "proof failed on a probe batch"),
    ]
    for D, msg in cases:
        before = {k: v.clone() for k, v in D.state_dict().items()}
        kinds = [type(m) for m in D.modules()]
        with pytest.raises(ValueError, match=f"ganx.logits_and_bce: .*({msg})"):
            ganx.logits_and_bce(D, nn.BCELoss(), inplace=True)
        assert [type(m) for m in D.modules()] == kinds
        assert all(torch.equal(v, before[k]) for k, v in D.state_dict().items())


def test_tracing_leaves_no_proxies_behind():
    D = LoggedD()
    with pytest.raises(ValueError):
        ganx.logits_and_bce(D, inplace=True)
    assert "mean_prob" not in D.__dict__  # the forward's attribute store was undone after tracing
    D.mean_prob = 1.0
    ganx.fuse(D, inplace=True)
    assert D.mean_prob == 1.0  # an attribute that existed before tracing is put back


def test_shared_sigmoid_module_is_refused():
    class TwoCalls(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.sig = nn.Linear(4, 4), nn.Linear(4, 1), nn.Sigmoid()

        def forward(self, x):
            return self.sig(self.b(self.sig(self.a(x))))

    with pytest.raises(ValueError, match="called 2 times"):
        ganx.logits_and_bce(TwoCalls())


@pytest.mark.parametrize("crit,needle", [(nn.MSELoss(), "LSGAN"), (nn.BCEWithLogitsLoss(), "already a loss on logits"),
                                         (nn.L1Loss(), "must stay")])
def test_non_bce_criteria_are_refused(crit, needle):
    with pytest.raises(TypeError, match=f"criterion must be nn.BCELoss.*{needle}"):
        ganx.logits_and_bce(ViewSqueezeD(), crit)


def test_bad_arguments():
    with pytest.raises(TypeError, match="ganx.logits_and_bce: discriminator must be an nn.Module"):
        ganx.logits_and_bce("D")
