"""A DCGAN written the way public GAN code usually is: a generator of nn.Upsample + nn.Conv2d
blocks with BatchNorm, a discriminator ending in nn.Sigmoid trained with nn.BCELoss.
Trains on scikit-learn's bundled digits (no download) at 32x32.

    python examples/dcgan_resize_conv.py               # plain PyTorch
    python examples/dcgan_resize_conv.py --fuse        # the same model through ganx.fuse

With --fuse the script adds the ganx lines marked "ganx", prints the output difference
between the original and the fused generator at initialisation, the step-time ratio of the
two, and then trains the fused model.
"""
import argparse
import copy
import time

import numpy as np
import torch
from torch import nn


def generator(nz=64, ngf=64):
    def block(cin, cout):
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU(True)]
    return nn.Sequential(
        nn.Linear(nz, ngf * 4 * 4 * 4), nn.Unflatten(1, (ngf * 4, 4, 4)), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        *block(ngf * 4, ngf * 2),                                                   # 8x8
        *block(ngf * 2, ngf),                                                       # 16x16
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ngf, 1, 3, 1, 1), nn.Tanh())  # 32x32


def discriminator(ndf=64):
    return nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 4, 1, 4, 1, 0), nn.Flatten(), nn.Sigmoid())


def digits(size=32):
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x * 2 - 1


def train_step(G, D, optG, optD, criterion, real, nz):
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


def time_steps(G, D, criterion, data, nz, steps, batch):
    G, D = copy.deepcopy(G), copy.deepcopy(D)
    optG = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    train_step(G, D, optG, optD, criterion, data[:batch], nz)  # warm-up
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(G, D, optG, optD, criterion, data[(i * batch) % 1700:][:batch], nz)
    return (time.perf_counter() - t0) / steps


def main(make_generator=generator, description=__doc__):
    """The whole example; dcgan_convtranspose.py runs it with its own generator."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fuse", action="store_true", help="run the model through ganx.fuse (and fused BCE with logits)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nz", type=int, default=64)
    p.add_argument("--width", type=int, default=64, help="ngf = ndf (default 64)")
    p.add_argument("--timing-steps", type=int, default=10, help="steps timed for the step-time ratio")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    data = digits()
    G, D, criterion = make_generator(args.nz, args.width), discriminator(args.width), nn.BCELoss()

    if args.fuse:
        import ganx                                                          # ganx
        G_fused, report = ganx.fuse(G)                                       # ganx
        D_logits, criterion_logits, d_report = ganx.logits_and_bce(D, criterion)  # ganx
        print(report)
        print(d_report)
        G.eval(), G_fused.eval()
        z = torch.randn(16, args.nz)
        with torch.no_grad():
            diff = (G(z) - G_fused(z)).abs().max().item()
            pd = (D(data[:64]) - torch.sigmoid(D_logits(data[:64]))).abs().max().item()
        print(f"max |G(z) - fused G(z)| at initialisation: {diff:.3e};  max |D(x) - sigmoid(D_logits(x))|: {pd:.3e}")
        G.train(), G_fused.train()
        t_plain = time_steps(G, D, criterion, data, args.nz, args.timing_steps, args.batch_size)
        t_fused = time_steps(G_fused, D_logits, criterion_logits, data, args.nz, args.timing_steps, args.batch_size)
        print(f"step time: plain {t_plain * 1e3:.1f} ms, fused {t_fused * 1e3:.1f} ms, "
              f"ratio {t_plain / t_fused:.2f}x ({torch.get_num_threads()} threads)")
        G, D, criterion = G_fused, D_logits, criterion_logits

    optG = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    perm = torch.randperm(len(data))
    t0 = time.perf_counter()
    lossD = lossG = 0.0
    for step in range(args.steps):
        idx = perm[(step * args.batch_size) % (len(data) - args.batch_size):][:args.batch_size]
        lossD, lossG = train_step(G, D, optG, optD, criterion, data[idx], args.nz)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss D {lossD:.3f}  loss G {lossG:.3f}")
    print(f"{args.steps} steps in {time.perf_counter() - t0:.1f} s")
    assert np.isfinite(lossD) and np.isfinite(lossG)


if __name__ == "__main__":
    main()
