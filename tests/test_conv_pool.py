"""conv2d_avg_pool2d (ganx.ops.conv_pool): conv then 2x2 average pooling as one stride-2 conv on
the box-filtered weight must equal the composition (ganx.ops.reference), forward and every
gradient, for every kernel size, padding, odd size, dtype and layout, and refuse bad input by name."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ganx.functional import conv2d_avg_pool2d
from ganx.ops import box_filtered_weight
from ganx.ops import reference as R

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])

# (N, C_in, C_out, H, W, k, padding)
SHAPES = [
    (2, 3, 4, 8, 8, 3, 1),     # the SNGAN block tail
    (2, 3, 4, 7, 9, 3, 1),     # odd sizes: the pool drops the last row / column
    (1, 2, 5, 6, 6, 1, 0),     # 1x1
    (2, 3, 2, 9, 8, 3, 0),     # no padding
    (1, 4, 3, 10, 10, 5, 2),   # 5x5
    (2, 2, 3, 5, 5, 2, 1),     # even kernel
]


def _grads(out, inputs, seed=0):
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed)).to(out.device)
    return torch.autograd.grad((out * g).sum(), inputs)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False])
def test_matches_the_composition_float64_forward_and_every_gradient(shape, bias):
    n, ci, co, h, w, k, p = shape
    torch.manual_seed(0)
    x = torch.randn(n, ci, h, w, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(co, ci, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(co, dtype=torch.float64, requires_grad=True) if bias else None
    ins = [t for t in (x, wt, b) if t is not None]
    got, want = conv2d_avg_pool2d(x, wt, b, padding=p), R.conv2d_avg_pool2d(x, wt, b, padding=p)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, e in zip(_grads(got, ins), _grads(want, ins)):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-12)


def test_gradcheck_and_gradgradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    f = lambda x, w, b: conv2d_avg_pool2d(x, w, b, padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_box_filtered_weight_is_the_full_convolution_with_a_box():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    box = torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64)
    # full 2-D convolution of each (o, i) kernel with the (symmetric) box
    want = F.conv2d(F.pad(w.reshape(12, 1, 3, 3), (1, 1, 1, 1)), box).reshape(4, 3, 4, 4)
    torch.testing.assert_close(box_filtered_weight(w), want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_dtypes_and_layouts(device, dtype, tol, layout):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 16, 16, device=device)
    w = torch.randn(6, 8, 3, 3, device=device) * 0.1
    b = torch.randn(6, device=device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    want = R.conv2d_avg_pool2d(x.double(), w.double(), b.double(), padding=1)
    got = conv2d_avg_pool2d(x.to(dtype), w.to(dtype), b.to(dtype), padding=1)
    assert got.dtype == dtype and got.device.type == device
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_unbatched_and_pair_padding():
    x, w = torch.randn(2, 7, 6, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(conv2d_avg_pool2d(x, w, padding=(1, 0)), R.conv2d_avg_pool2d(x, w, padding=(1, 0)))


def test_bad_input_is_refused_by_name():
    x, w = torch.randn(1, 2, 8, 8), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="conv2d_avg_pool2d: weight must be a 4-D tensor"):
        conv2d_avg_pool2d(x, torch.randn(3, 2, 3))
    with pytest.raises(ValueError, match="conv2d_avg_pool2d: weight has 2 input channels but x has 4"):
        conv2d_avg_pool2d(torch.randn(1, 4, 8, 8), w)
    with pytest.raises(ValueError, match="conv2d_avg_pool2d: x must be 4-D"):
        conv2d_avg_pool2d(torch.randn(8, 8), w)
    with pytest.raises(TypeError, match="conv2d_avg_pool2d: x must be a Tensor"):
        conv2d_avg_pool2d([1.0], w)
    with pytest.raises(ValueError, match="conv2d_avg_pool2d: padding must be an int >= 0"):
        conv2d_avg_pool2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="conv2d_avg_pool2d: bias must be a tensor of shape \\(3,\\)"):
        conv2d_avg_pool2d(x, w, torch.randn(2))
    with pytest.raises(ValueError, match="too small for a 2x2 pool"):
        conv2d_avg_pool2d(torch.randn(1, 2, 3, 3), w)


def test_resnet_discriminator_impls_share_parameters_and_agree():
    from ganx.models import ResNetDiscriminator

    torch.manual_seed(0)
    fused = ResNetDiscriminator(image_size=16, width=4, num_classes=3).double().eval()
    ref = ResNetDiscriminator(image_size=16, width=4, num_classes=3, impl="reference").double().eval()
    assert fused.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(fused.state_dict())
    x, y = torch.randn(4, 1, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(fused(x, y), ref(x, y), rtol=1e-12, atol=1e-12)
    assert fused.config()["impl"] == "fused" and ref.config()["impl"] == "reference"
    assert ResNetDiscriminator(**ref.config()).impl == "reference"
    with pytest.raises(ValueError, match="ResNetDiscriminator: impl must be 'fused' or 'reference'"):
        ResNetDiscriminator(image_size=16, impl="cuda")
