"""A DCGAN written the way public GAN code usually is: a generator of nn.Upsample + nn.Conv2d
blocks with BatchNorm, a discriminator ending in nn.Sigmoid trained with nn.BCELoss.
Trains on scikit-learn's bundled digits (no download) at 32x32 (or --size 64).

    python examples/dcgan_resize_conv.py               # plain PyTorch
    python examples/dcgan_resize_conv.py --fuse        # the same script with the ganx drop-in

The drop-in is the lines marked "ganx" below:

    G, report = ganx.fuse(G)                                    # fused generator layers
    D, criterion, note = ganx.logits_and_bce(D, criterion)      # D returns logits, BCE on logits
    d_loss = ganx.nn.DiscriminatorBCELoss()                     # the two D-loss calls in one
    ...
    lossD = d_loss(D(real), D(fake.detach()))    # was criterion(D(real), ones) + criterion(D(fake), zeros)

With --fuse the script prints both reports, the output difference between the original and
the converted models at initialisation, the step time of the unmodified script and of the
drop-in (measured alternately in this process) and their ratio, then trains the drop-in.
"""
import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch import nn


def generator(nz=64, ngf=64, nc=1, size=32):
    def block(cin, cout):
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU(True)]
    widths = [ngf * 4, ngf * 2, ngf] if size == 32 else [ngf * 8, ngf * 4, ngf * 2, ngf]
    blocks = [layer for cin, cout in zip(widths, widths[1:]) for layer in block(cin, cout)]
    return nn.Sequential(
        nn.Linear(nz, widths[0] * 4 * 4), nn.Unflatten(1, (widths[0], 4, 4)), nn.BatchNorm2d(widths[0]), nn.ReLU(True),
        *blocks,                                                                     # 8x8 ... size/2
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ngf, nc, 3, 1, 1), nn.Tanh())  # size x size


def discriminator(ndf=64, nc=1, size=32):
    widths = [ndf, ndf * 2, ndf * 4] if size == 32 else [ndf, ndf * 2, ndf * 4, ndf * 8]
    layers = [nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    for cin, cout in zip(widths, widths[1:]):
        layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
    return nn.Sequential(*layers, nn.Conv2d(widths[-1], 1, 4, 1, 0), nn.Flatten(), nn.Sigmoid())


def digits(size=32, nc=1):
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 2 - 1).expand(-1, nc, -1, -1).contiguous()


def train_step(G, D, optG, optD, criterion, real, nz):
    """The unmodified script's step."""
    n = real.shape[0]
    ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
    fake = G(torch.randn(n, nz))
    optD.zero_grad(set_to_none=True)
    lossD = criterion(D(real), ones) + criterion(D(fake.detach()), zeros)
    lossD.backward()
    optD.step()
    optG.zero_grad(set_to_none=True)
    lossG = criterion(D(fake), ones)
    lossG.backward()
    optG.step()
    return lossD.item(), lossG.item()


def train_step_dropin(G, D, optG, optD, criterion, real, nz, d_loss):
    """The same step after the drop-in: D returns logits, one fused call for the D loss."""
    n = real.shape[0]
    ones = torch.ones(n, 1)
    fake = G(torch.randn(n, nz))
    optD.zero_grad(set_to_none=True)
    lossD = d_loss(D(real), D(fake.detach()))                                # ganx
    lossD.backward()
    optD.step()
    optG.zero_grad(set_to_none=True)
    lossG = criterion(D(fake), ones)      # criterion is ganx.nn.BCEWithLogitsLoss now
    lossG.backward()
    optG.step()
    return lossD.item(), lossG.item()


class Timed:
    """A copy of a model pair with its optimizers, stepped on the same data as its rival."""

    def __init__(self, G, D, step):
        self.G, self.D, self.step = copy.deepcopy(G), copy.deepcopy(D), step
        self.optG = torch.optim.Adam(self.G.parameters(), 2e-4, betas=(0.5, 0.999))
        self.optD = torch.optim.Adam(self.D.parameters(), 2e-4, betas=(0.5, 0.999))

    def run(self, batches):
        t0 = time.perf_counter()
        for real in batches:
            self.step(self.G, self.D, self.optG, self.optD, real)
        return (time.perf_counter() - t0) / len(batches)


def step_time_ratio(contenders, data, batch, steps, rounds=3):
    """Median step time of each contender, timed alternately (steps per turn, rounds turns)."""
    batches = [data[(i * batch) % (len(data) - batch):][:batch] for i in range(steps)]
    for c in contenders:
        c.run(batches[:1])  # warm-up
    times = [[] for _ in contenders]
    for _ in range(rounds):
        for c, t in zip(contenders, times):
            t.append(c.run(batches))
    return [statistics.median(t) for t in times]


def main(make_generator=generator, description=__doc__):
    """The whole example; dcgan_convtranspose.py runs it with its own generator."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fuse", action="store_true", help="apply the ganx drop-in (fuse G, logits D, fused losses)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nz", type=int, default=64)
    p.add_argument("--width", type=int, default=64, help="ngf = ndf (default 64)")
    p.add_argument("--size", type=int, default=32, choices=[32, 64], help="image size (default 32)")
    p.add_argument("--timing-steps", type=int, default=5, help="steps per timed turn for the step-time ratio")
    p.add_argument("--timing-rounds", type=int, default=3, help="alternating turns of each contender")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    data = digits(args.size)
    G, D = make_generator(args.nz, args.width, 1, args.size), discriminator(args.width, 1, args.size)
    criterion = nn.BCELoss()

    def plain_step(G, D, optG, optD, real):
        return train_step(G, D, optG, optD, criterion, real, args.nz)

    step = plain_step
    if args.fuse:
        import ganx                                                                # ganx
        G_new, report = ganx.fuse(G)                                               # ganx
        D_new, criterion_new, d_report = ganx.logits_and_bce(D, criterion)         # ganx
        d_loss = ganx.nn.DiscriminatorBCELoss()                                    # ganx
        print(report)
        print(d_report)
        G.eval(), G_new.eval()
        z = torch.randn(16, args.nz)
        with torch.no_grad():
            diff = (G(z) - G_new(z)).abs().max().item()
            pd = (D(data[:64]) - torch.sigmoid(D_new(data[:64]))).abs().max().item()
        print(f"max |G(z) - fused G(z)| at initialisation: {diff:.3e};  max |D(x) - sigmoid(D_logits(x))|: {pd:.3e}")
        G.train(), G_new.train()

        def dropin_step(G, D, optG, optD, real):
            return train_step_dropin(G, D, optG, optD, criterion_new, real, args.nz, d_loss)

        if args.timing_steps > 0:
            t_plain, t_new = step_time_ratio([Timed(G, D, plain_step), Timed(G_new, D_new, dropin_step)], data,
                                             args.batch_size, args.timing_steps, args.timing_rounds)
            print(f"step time (median of {args.timing_rounds} alternating turns of {args.timing_steps} steps, "
                  f"batch {args.batch_size}, {torch.get_num_threads()} threads): unmodified {t_plain * 1e3:.1f} ms, "
                  f"drop-in {t_new * 1e3:.1f} ms, ratio {t_plain / t_new:.2f}x")
        G, D, step = G_new, D_new, dropin_step

    train(G, D, step, data, args.steps, args.batch_size, betas=(0.5, 0.999))


def train(G, D, step, data, steps, batch_size, betas):
    """The training loop: Adam (lr 2e-4) for both, batches from a fixed permutation."""
    optG = torch.optim.Adam(G.parameters(), 2e-4, betas=betas)
    optD = torch.optim.Adam(D.parameters(), 2e-4, betas=betas)
    perm = torch.randperm(len(data))
    t0 = time.perf_counter()
    lossD = lossG = 0.0
    for i in range(steps):
        idx = perm[(i * batch_size) % (len(data) - batch_size):][:batch_size]
        lossD, lossG = step(G, D, optG, optD, data[idx])
        if i % 50 == 0 or i == steps - 1:
            print(f"step {i:4d}  loss D {lossD:.3f}  loss G {lossG:.3f}")
    print(f"{steps} steps in {time.perf_counter() - t0:.1f} s")
    assert np.isfinite(lossD) and np.isfinite(lossG)


if __name__ == "__main__":
    main()
