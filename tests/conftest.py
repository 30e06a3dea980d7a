import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # CUDA tests run wherever a GPU exists and are skipped (with the reason) elsewhere.
    # torch.cuda.is_available() does not create a context, so nothing touches CUDA here.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def no_tf32():
    """Full fp32 convolutions and matmuls for the duration of one test (restored afterwards)."""
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
