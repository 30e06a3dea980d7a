"""The classic DCGAN (Radford et al.): a generator of nn.ConvTranspose2d(4, 2, 1) layers with
BatchNorm and ReLU, a discriminator of strided convs ending in nn.Sigmoid with nn.BCELoss.
Trains on scikit-learn's bundled digits (no download) at 32x32.

    python examples/dcgan_convtranspose.py             # plain PyTorch
    python examples/dcgan_convtranspose.py --fuse      # through ganx.fuse

With --fuse: prints the output difference at initialisation and the step-time ratio, then
trains the fused model.
"""
from torch import nn

from dcgan_resize_conv import main


def generator(nz=64, ngf=64):
    return nn.Sequential(
        nn.Unflatten(1, (nz, 1, 1)),
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),     # 4x4
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 8x8
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 16x16
        nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())                                  # 32x32


if __name__ == "__main__":
    main(generator, __doc__)
