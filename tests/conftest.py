import os

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

# A fixed thread count for the suite: tests compare runs bit for bit (a resume against an
# uninterrupted run), and the trainer's default adapts its threads to a busy machine
# (ganx/train/cores.py; tests/test_busy.py tests that with the variable removed). Subprocesses
# (the CLI tests) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    # CUDA tests run wherever a GPU exists and are skipped (with the reason) elsewhere.
    # torch.cuda.is_available() does not create a context, so nothing touches CUDA here.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _process_state():
    return {"threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn.benchmark": torch.backends.cudnn.benchmark}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_leaked_process_state():
    # A test (or the library code it runs, e.g. a Trainer) that leaves torch's process-wide
    # switches changed makes later tests measure another configuration (a leaked deterministic
    # mode turns off the algorithm timing and fills fresh tensors): restore them and fail here.
    before = _process_state()
    yield
    after = _process_state()
    if after != before:
        torch.set_num_threads(before["threads"])
        torch.use_deterministic_algorithms(before["deterministic"], warn_only=before["warn_only"])
        torch.backends.cudnn.benchmark = before["cudnn.benchmark"]
        pytest.fail(f"the test left torch's process state changed: {before} -> {after}")


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


@pytest.fixture
def auto_upconv_algorithm():
    """The upsample-conv algorithm choice left to ganx's rule (no forced algorithm) for one test,
    the previous choice restored afterwards. The upsample-conv test files use it for every test
    (``pytestmark = pytest.mark.usefixtures("auto_upconv_algorithm")``)."""
    from ganx.ops import upsample_conv as U

    old = U.get_upconv_algorithm()
    U.set_upconv_algorithm(None)
    yield
    U.set_upconv_algorithm(old)


@pytest.fixture
def fake_strides_match():
    """``check(fwd, bwd, x, w, why)``: an op's fake kernels and its backward's give the real kernels'
    output shape and the strides of the output, grad_x and grad_w; ``fwd(x, w)`` and
    ``bwd(grad, x, w, out)`` (-> (grad_x, grad_w, grad_b)) run on real tensors and under
    FakeTensorMode. ``why`` names the case in a failure."""
    def check(fwd, bwd, x, w, why):
        out = fwd(x, w)
        g = torch.randn_like(out)
        gx, gw, _ = bwd(g, x, w, out)
        with FakeTensorMode() as mode:
            fx, fw, fg, fo = (mode.from_tensor(t) for t in (x, w, g, out))
            f_out = fwd(fx, fw)
            f_gx, f_gw, _ = bwd(fg, fx, fw, fo)
        assert f_out.shape == out.shape and f_out.stride() == out.stride(), (why, f_out.stride(), out.stride())
        assert f_gx.stride() == gx.stride(), (why, f_gx.stride(), gx.stride())
        assert f_gw.stride() == gw.stride(), (why, f_gw.stride(), gw.stride())

    return check


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (tests/tiny_run.py: 4 steps, no metrics) with checkpoints at steps 2
    (previous.pt) and 4 (last.pt), one per test module; a test that changes it works on a copy
    (tiny_run.copy_run)."""
    from ganx.train import Trainer
    from tiny_run import SMALL, tiny

    root = tmp_path_factory.mktemp("trained")
    Trainer(tiny(root / "run"), dataset=SMALL).fit(tensorboard=False)
    return root / "run"
