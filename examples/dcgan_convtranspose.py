"""The classic DCGAN (Radford et al.): a generator of nn.ConvTranspose2d(4, 2, 1) layers with
BatchNorm and ReLU, a discriminator of strided convs ending in nn.Sigmoid with nn.BCELoss.
Trains on scikit-learn's bundled digits (no download) at 32x32.

    python examples/dcgan_convtranspose.py             # plain PyTorch
    python examples/dcgan_convtranspose.py --fuse      # through ganx.fuse

With --fuse: prints the output difference at initialisation and the step-time ratio, then
trains the fused model.
"""
import argparse
import time

import numpy as np
import torch
from torch import nn

from dcgan_resize_conv import digits, discriminator, time_steps, train_step


def generator(nz=64, ngf=64):
    return nn.Sequential(
        nn.Unflatten(1, (nz, 1, 1)),
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),     # 4x4
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 8x8
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 16x16
        nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())                                  # 32x32


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fuse", action="store_true", help="run the model through ganx.fuse (and fused BCE with logits)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nz", type=int, default=64)
    p.add_argument("--width", type=int, default=64, help="ngf = ndf (default 64)")
    p.add_argument("--timing-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    data = digits()
    G, D, criterion = generator(args.nz, args.width), discriminator(args.width), nn.BCELoss()
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
        print(f"max |G(z) - fused G(z)| at initialisation: {diff:.3e}")
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
    for step in range(args.steps):
        idx = perm[(step * args.batch_size) % (len(data) - args.batch_size):][:args.batch_size]
        lossD, lossG = train_step(G, D, optG, optD, criterion, data[idx], args.nz)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss D {lossD:.3f}  loss G {lossG:.3f}")
    print(f"{args.steps} steps in {time.perf_counter() - t0:.1f} s")
    assert np.isfinite(lossD) and np.isfinite(lossG)


if __name__ == "__main__":
    main()
