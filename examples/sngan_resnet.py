"""An SNGAN written the way public GAN code usually is (Miyato et al. 2018, the ResNet CIFAR
model at 32x32): a residual generator whose blocks upsample with ``F.interpolate`` (shortcut:
upsample + 1x1 conv), a residual discriminator with spectral norm on every weight
(``torch.nn.utils.parametrizations.spectral_norm``), and the hinge loss written inline.
Trains on scikit-learn's bundled digits (no download).

    python examples/sngan_resnet.py               # plain PyTorch
    python examples/sngan_resnet.py --fuse        # the same script with the ganx drop-in

The drop-in is the lines marked "ganx" below:

    G, report = ganx.fuse(G)        # every upsample + conv of G (3x3 and the 1x1 shortcuts) fused
    lossD = d_loss(D(real), D(fake.detach()))   # was relu(1 - D(real)).mean() + relu(1 + D(fake)).mean()
    lossG = g_loss(D(fake))                     # was -D(fake).mean()

(``d_loss`` / ``g_loss``: ganx's fused hinge losses where this ganx has them, else the inline
ones). With --fuse the script prints the report, the output difference between the original
and the fused generator at initialisation, the step time of the unmodified script and of the
drop-in (measured alternately in this process) and their ratio, then trains the drop-in.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dcgan_resize_conv import Timed, digits, step_time_ratio, train  # noqa: E402


class GBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        h = F.relu(self.bn1(x))
        h = self.conv1(F.interpolate(h, scale_factor=2))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    def __init__(self, nz=128, ngf=256, nc=1):
        super().__init__()
        self.ngf = ngf
        self.linear = nn.Linear(nz, ngf * 4 * 4)
        self.blocks = nn.Sequential(GBlock(ngf, ngf), GBlock(ngf, ngf), GBlock(ngf, ngf))
        self.bn, self.out = nn.BatchNorm2d(ngf), nn.Conv2d(ngf, nc, 3, 1, 1)

    def forward(self, z):
        h = self.blocks(self.linear(z).view(-1, self.ngf, 4, 4))
        return torch.tanh(self.out(F.relu(self.bn(h))))


class DBlock(nn.Module):
    def __init__(self, cin, cout, down, first=False):
        super().__init__()
        self.first, self.down = first, down
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))
        self.shortcut = spectral_norm(nn.Conv2d(cin, cout, 1, 1, 0)) if (cin != cout or down) else None

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.shortcut is not None:
            s = F.avg_pool2d(self.shortcut(s), 2) if (self.down and not self.first) else self.shortcut(s)
            if self.first:
                s = F.avg_pool2d(s, 2)
        return h + s


class Discriminator(nn.Module):
    def __init__(self, ndf=128, nc=1):
        super().__init__()
        self.blocks = nn.Sequential(DBlock(nc, ndf, True, first=True), DBlock(ndf, ndf, True),
                                    DBlock(ndf, ndf, False), DBlock(ndf, ndf, False))
        self.linear = spectral_norm(nn.Linear(ndf, 1))

    def forward(self, x):
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.linear(h).squeeze(1)


def hinge_d(real_logits, fake_logits):
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g(fake_logits):
    return -fake_logits.mean()


def train_step(G, D, optG, optD, real, nz, d_loss=hinge_d, g_loss=hinge_g):
    n = real.shape[0]
    fake = G(torch.randn(n, nz))
    optD.zero_grad(set_to_none=True)
    lossD = d_loss(D(real), D(fake.detach()))
    lossD.backward()
    optD.step()
    optG.zero_grad(set_to_none=True)
    for p in D.parameters():
        p.requires_grad_(False)
    lossG = g_loss(D(fake))
    lossG.backward()
    for p in D.parameters():
        p.requires_grad_(True)
    optG.step()
    return lossD.item(), lossG.item()


def fused_hinge():
    """ganx's fused hinge losses where this ganx has them (None otherwise)."""
    import ganx
    d = getattr(ganx.nn, "HingeDiscriminatorLoss", None)
    g = getattr(ganx.nn, "HingeGeneratorLoss", None)
    return (d(), g()) if d is not None and g is not None else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fuse", action="store_true", help="apply the ganx drop-in (fuse G, fused hinge losses)")
    p.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nz", type=int, default=128)
    p.add_argument("--width", type=int, default=128, help="G and D channels (SNGAN: 256 / 128; default 128)")
    p.add_argument("--timing-steps", type=int, default=3, help="steps per timed turn for the step-time ratio")
    p.add_argument("--timing-rounds", type=int, default=3, help="alternating turns of each contender")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    data = digits(32)
    G, D = Generator(args.nz, args.width), Discriminator(args.width)

    def plain_step(G, D, optG, optD, real):
        return train_step(G, D, optG, optD, real, args.nz)

    step = plain_step
    if args.fuse:
        import ganx                                                                # ganx
        G_new, report = ganx.fuse(G)                                               # ganx
        losses = fused_hinge()                                                     # ganx
        print(report)
        print("losses:", "ganx fused hinge" if losses else "inline hinge (this ganx has no fused hinge loss)")
        G.eval(), G_new.eval()
        z = torch.randn(16, args.nz)
        with torch.no_grad():
            diff = (G(z) - G_new(z)).abs().max().item()
        print(f"max |G(z) - fused G(z)| at initialisation: {diff:.3e}")
        G.train(), G_new.train()
        d_loss, g_loss = losses or (hinge_d, hinge_g)

        def dropin_step(G, D, optG, optD, real):
            return train_step(G, D, optG, optD, real, args.nz, d_loss, g_loss)

        if args.timing_steps > 0:
            t_plain, t_new = step_time_ratio([Timed(G, D, plain_step), Timed(G_new, D, dropin_step)], data,
                                             args.batch_size, args.timing_steps, args.timing_rounds)
            print(f"step time (median of {args.timing_rounds} alternating turns of {args.timing_steps} steps, "
                  f"batch {args.batch_size}, {torch.get_num_threads()} threads): unmodified {t_plain * 1e3:.1f} ms, "
                  f"drop-in {t_new * 1e3:.1f} ms, ratio {t_plain / t_new:.2f}x")
        G, step = G_new, dropin_step

    train(G, D, step, data, args.steps, args.batch_size, betas=(0.0, 0.9))  # SNGAN's Adam betas


if __name__ == "__main__":
    main()
