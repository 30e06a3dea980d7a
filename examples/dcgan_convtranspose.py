"""The classic DCGAN (Radford et al.): a generator of nn.ConvTranspose2d(4, 2, 1) layers with
BatchNorm and ReLU, a discriminator of strided convs ending in nn.Sigmoid with nn.BCELoss.
Trains on scikit-learn's bundled digits (no download) at 32x32 (or --size 64).

    python examples/dcgan_convtranspose.py             # plain PyTorch
    python examples/dcgan_convtranspose.py --fuse      # with the ganx drop-in

With --fuse: the same drop-in as dcgan_resize_conv.py (see there). On the CPU ganx.fuse leaves
the ConvTranspose2d(4, 2, 1) layers as they are and says why (oneDNN's deconvolution is what
ganx would call there); the speed-up comes from the discriminator's fused losses.
"""
from torch import nn

from dcgan_resize_conv import main


def generator(nz=64, ngf=64, nc=1, size=32):
    widths = [ngf * 4, ngf * 2, ngf] if size == 32 else [ngf * 8, ngf * 4, ngf * 2, ngf]
    layers = [nn.Unflatten(1, (nz, 1, 1)),
              nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)]  # 4x4
    for cin, cout in zip(widths, widths[1:]):                                                     # 8x8 ... size/2
        layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
    return nn.Sequential(*layers, nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())   # size x size


if __name__ == "__main__":
    main(generator, __doc__)
