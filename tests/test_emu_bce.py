"""The BCE CUDA kernels (csrc/cuda/kernels/bce_loss.cuh) executed under the CUDA emulator
(tests/emu) and compared with ganx's CPU kernels, in every dtype they are instantiated for, in
the three builds: plain, AddressSanitizer + UBSan, ThreadSanitizer (race). No GPU needed.

Each variant runs all of its cases in one driver process (built on first use into
build/emu-<variant>, cached); every case is then one test here. The cases reach every edge of
the kernels: one block, several blocks (the last-block reduction), a grid capped below the need
(max_blocks: the grid-stride loop without huge tensors), sizes that are not multiples of the
16-byte item, empty segments, misaligned inputs / outputs (the element-wise path), +-inf / NaN /
+-1e4 logits, each reduction, every op (the critic losses, hinge and Wasserstein, included). The CUDA sizes of tests/test_bce_loss.py run here too.
"""
from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import harness as H  # noqa: E402

import ganx  # noqa: E402,F401  (registers the CPU ops)
from test_bce_loss import CUDA_DISC_SIZES, CUDA_LOWP_DTYPES, CUDA_LOWP_SIZES, logits  # noqa: E402

DT = ["float32", "float64", "float16", "bfloat16"]
INF, NAN = float("inf"), float("nan")
KTHREADS, KITEMS, KMAXBLOCKS = 256, 4, 4096  # bce_loss.cuh


def vlen(dtype: str) -> int:
    return 16 // H.DTYPES[dtype].itemsize


def expected_blocks(dtype: str, n0: int, n1: int, max_blocks: int = KMAXBLOCKS) -> int:
    v = vlen(dtype)
    items = -(-n0 // v) + -(-n1 // v)
    return max(1, min(-(-items // (KTHREADS * KITEMS)), max_blocks))


def _x(n, dtype, seed, specials=True):
    x = logits(n, seed=seed, extreme=specials)
    if specials and n >= 12:
        x[3:6] = torch.tensor([INF, -INF, NAN], dtype=torch.float64)
    return x.to(H.DTYPES[dtype])


def _cap(n):  # a grid cap that keeps large emulated inputs to a few blocks (grid-stride loop)
    return 6 if n > 200_000 else KMAXBLOCKS


def _cases():
    cs = []

    def add(cid, op, dtype, arrays, race=True, **kv):
        c = H.Case(f"{op}-{dtype}-{cid}", op, dtype, arrays, kv)
        c.race = race
        cs.append(c)

    for dt in DT:
        s = DT.index(dt) * 100
        for k, (n0, n1, red, extra) in enumerate([
            (64, 64, 1, {}),                      # one block, the common GAN case
            (7, 13, 0, dict(rt=0.9, ft=0.1)),     # shorter than an item, per-element losses
            (1001, 333, 2, dict(rt=0.9)),         # odd sizes, sum
            (9000, 77, 1, {}),                    # several blocks: the last-block reduction
            (5000, 3001, 1, dict(max_blocks=3)),  # grid capped: grid-stride loop + reduction
            (0, 17, 1, {}),                       # empty real segment (mean and stats NaN)
            (17, 0, 0, {}),                       # empty fake segment
            (1000, 301, 1, dict(xoff=1, ooff=3)),  # misaligned inputs and outputs
            (2049, 2051, 0, dict(ooff=1, max_blocks=2)),
        ]):
            add(f"d{k}-{n0}-{n1}", "bce_disc", dt, {"x0": _x(n0, dt, s + k), "x1": _x(n1, dt, s + k + 50)},
                race=k in (0, 3, 4, 7), red=red, need_grad=1, **extra)
        for k, (n, mode, red, extra) in enumerate([(513, 0, 1, {}), (2049, 1, 2, dict(max_blocks=2, target=0.9)),
                                                   (100, 0, 0, dict(xoff=2))]):
            add(f"g{k}-{n}", "bce_gen", dt, {"x0": _x(n, dt, s + 20 + k)}, race=k == 1, red=red, mode=mode,
                need_grad=1, **extra)
        # The critic losses (hinge, Wasserstein): the same kernel with the critic functor. Scores at
        # the hinge's kinks (+-1) and at 0 check the selects (a subgradient of 0 at the kink).
        for k, (n0, n1, kind, red, extra) in enumerate([
            (64, 64, 1, 1, {}), (7, 13, 2, 0, {}), (9000, 77, 1, 2, {}), (5000, 3001, 2, 1, dict(max_blocks=3)),
            (0, 17, 1, 1, {}), (1000, 301, 1, 0, dict(xoff=1, ooff=3)), (2049, 2051, 2, 1, dict(ooff=1, max_blocks=2)),
        ]):
            x0, x1 = _x(n0, dt, s + 60 + k), _x(n1, dt, s + 70 + k)
            if n0 >= 12 and n1 >= 12:
                x0[6:9] = torch.tensor([1.0, -1.0, 0.0]).to(x0.dtype)
                x1[6:9] = torch.tensor([1.0, -1.0, 0.0]).to(x1.dtype)
            add(f"c{k}-{kind}-{n0}-{n1}", "critic_disc", dt, {"x0": x0, "x1": x1}, race=k in (0, 3), red=red,
                kind=kind, need_grad=1, **extra)
        for k, (n, red, extra) in enumerate([(513, 1, {}), (2049, 2, dict(max_blocks=2)), (100, 0, dict(xoff=2))]):
            add(f"cg{k}-{n}", "critic_gen", dt, {"x0": _x(n, dt, s + 80 + k)}, race=k == 1, red=red, need_grad=1,
                **extra)
        g = torch.Generator().manual_seed(s + 30)
        shape_full = (2, 3, 4)
        x = _x(24, dt, s + 31).view(shape_full)
        t = torch.rand(shape_full, generator=g, dtype=torch.float64).to(H.DTYPES[dt])
        w = torch.rand(shape_full, generator=g, dtype=torch.float64).to(H.DTYPES[dt])
        add("l0-full", "bce_logits", dt, {"x0": x, "t": t, "w": w, "pw": torch.tensor([2.5]).to(H.DTYPES[dt])},
            red=1, need_grad=1)
        x = _x(5003, dt, s + 32)
        t = torch.rand(5003, generator=g, dtype=torch.float64).to(H.DTYPES[dt])
        pw = (torch.rand(5003, generator=g, dtype=torch.float64) * 3).to(H.DTYPES[dt])
        add("l1-5003", "bce_logits", dt, {"x0": x, "t": t, "w": torch.tensor([0.5]).to(H.DTYPES[dt]), "pw": pw},
            race=False, red=0, need_grad=1, max_blocks=2)
        add("l2-noweights", "bce_logits", dt, {"x0": x[:777], "t": t[:777]}, race=False, red=2, need_grad=1)
        p = torch.rand(1000, generator=g, dtype=torch.float64)
        p[:4] = torch.tensor([0.0, 1.0, 1e-30, 1 - 1e-12], dtype=torch.float64)
        p = p.to(H.DTYPES[dt]).clamp(0, 1)
        tp = torch.rand(1000, generator=g, dtype=torch.float64).to(H.DTYPES[dt])
        add("p0-1000", "bce_probs", dt, {"x0": p, "t": tp, "w": w.reshape(-1)[:1].expand(1000).contiguous()},
            red=1, need_grad=1)
        add("p1-37", "bce_probs", dt, {"x0": p[:37], "t": tp[:37]}, race=False, red=0, need_grad=1)
    # The CUDA cases of tests/test_bce_loss.py (one list for a real GPU and the emulator).
    for n0, n1 in CUDA_DISC_SIZES:
        for red in (0, 1, 2):
            real, fake = logits(n0, seed=30), logits(n1, seed=31)
            real[:3] = torch.tensor([INF, -INF, NAN], dtype=torch.float64)
            add(f"cuda-{n0}-{n1}-r{red}", "bce_disc", "float64", {"x0": real, "x1": fake}, race=n0 < 1000,
                red=red, rt=0.9, ft=0.0, need_grad=1, max_blocks=_cap(n0))
    for dtype in CUDA_LOWP_DTYPES:
        for n in CUDA_LOWP_SIZES:
            dt = H.DTYPE_NAMES[dtype]
            real, fake = logits(n, seed=32, extreme=False), logits(n // 3 + 1, seed=33, extreme=False)
            add(f"lowp-{n}", "bce_disc", dt, {"x0": real.to(dtype), "x1": fake.to(dtype)}, race=False, red=1,
                rt=0.9, ft=0.0, need_grad=1, max_blocks=_cap(n))
    # The backward's in-place scale of the saved gradient (bce_scale_kernel): a scale of 1 moves
    # nothing; others multiply, aligned (128-bit) and misaligned, with tails and a capped grid.
    for dt in DT:
        for k, (n, sc, extra) in enumerate([(64, 1.0, {}), (64, 0.5, {}), (1001, -3.0, dict(goff=1)),
                                            (9001, 0.25, dict(max_blocks=2)), (37, float("nan"), {}),
                                            (5000, 1.0, dict(goff=3, max_blocks=1))]):
            gsrc = _x(n, dt, 900 + k, specials=False)
            add(f"s{k}-{n}", "bce_scale", dt, {"g": gsrc, "scale": torch.tensor([sc]).to(H.DTYPES[dt])},
                race=k in (1, 3), **extra)
    return cs


CASES = _cases()
BY_ID = {c.id: c for c in CASES}


@functools.lru_cache(maxsize=None)
def results(variant: str):
    H.build_all()  # the first call builds the three variants side by side
    cases = [c for c in CASES if variant != "race" or c.race]
    return H.run(variant, cases)


def variant_cases(scale: bool = False):
    return [pytest.param(v, c.id, id=f"{v}-{c.id}") for v in H.VARIANTS for c in CASES
            if (v != "race" or c.race) and (c.op == "bce_scale") == scale]


TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-6),
       "float16": dict(rtol=2e-3, atol=1e-5), "bfloat16": dict(rtol=1.6e-2, atol=1e-5)}


def cpu_reference(c: H.Case):
    """The registered CPU kernel on the same inputs: (loss, grad, stats or None), flattened."""
    a, red = c.arrays, int(c.kv.get("red", 1))
    if c.op == "bce_disc":
        loss, grad, stats = torch.ops.ganx.bce_discriminator_loss(a["x0"], a["x1"], float(c.kv.get("rt", 1.0)),
                                                                  float(c.kv.get("ft", 0.0)), red, True)
    elif c.op == "bce_gen":
        loss, grad = torch.ops.ganx.bce_generator_loss(a["x0"], int(c.kv.get("mode", 0)), float(c.kv.get("target", 1.0)),
                                                       red, True)
        stats = None
    elif c.op == "critic_disc":
        loss, grad, stats = torch.ops.ganx.critic_discriminator_loss(a["x0"], a["x1"], int(c.kv.get("kind", 1)), red,
                                                                     True)
    elif c.op == "critic_gen":
        loss, grad = torch.ops.ganx.critic_generator_loss(a["x0"], 1, red, True)
        stats = None
    elif c.op == "bce_logits":
        loss, grad = torch.ops.ganx.bce_with_logits(a["x0"], a["t"], a.get("w"), a.get("pw"), red, True)
        stats = None
    else:
        loss, grad = torch.ops.ganx.binary_cross_entropy(a["x0"], a["t"], a.get("w"), red, True)
        stats = None
    return loss.reshape(-1), grad.reshape(-1), stats


@pytest.mark.parametrize("variant,cid", variant_cases())
def test_emulated_bce_matches_cpu(variant, cid):
    c = BY_ID[cid]
    r = results(variant)[cid]
    dtype = H.DTYPES[c.dtype]
    loss, grad, stats = cpu_reference(c)
    n = c.arrays["x0"].numel() + (c.arrays["x1"].numel() if "x1" in c.arrays else 0)
    assert r.int("launches") == 1, r.log  # one launch forward, whatever the size
    assert r.int("blocks") == expected_blocks(c.dtype, c.arrays["x0"].numel(), n - c.arrays["x0"].numel(),
                                              int(c.kv.get("max_blocks", KMAXBLOCKS)))
    if r.int("blocks") > 1 and "counter_after" in r.kv:
        assert r.int("counter_after") == 0  # the ticket counter is left ready for the next launch
    torch.testing.assert_close(r.tensor("loss", dtype), loss, equal_nan=True, **TOL[c.dtype])
    torch.testing.assert_close(r.tensor("grad", dtype), grad, equal_nan=True, **TOL[c.dtype])
    if stats is not None:
        torch.testing.assert_close(r.tensor("stats", torch.float32), stats, equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant,cid", variant_cases(scale=True))
def test_emulated_backward_scale_in_place(variant, cid):
    """The CUDA backward of a reduced loss scales the saved gradient in place, reading the incoming
    gradient on the device: exactly ATen's `grad * scale` (one rounding), and with a scale of 1 not
    one element rewritten (the bytes compare equal, NaN payloads included)."""
    c = BY_ID[cid]
    r = results(variant)[cid]
    dtype = H.DTYPES[c.dtype]
    g, sc = c.arrays["g"], c.arrays["scale"]
    out = r.tensor("g", dtype)
    if float(sc) == 1.0:
        bits = {8: torch.int64, 4: torch.int32, 2: torch.int16}[dtype.itemsize]
        assert torch.equal(out.view(bits), g.view(bits))
    else:
        torch.testing.assert_close(out, g * sc, rtol=0, atol=0, equal_nan=True)
    assert r.int("vec") == int("goff" not in c.kv)
    assert r.int("blocks") == expected_blocks(c.dtype, g.numel(), 0, int(c.kv.get("max_blocks", KMAXBLOCKS)))


@pytest.mark.parametrize("dtype", CUDA_LOWP_DTYPES)
@pytest.mark.parametrize("n", CUDA_LOWP_SIZES)
def test_emulated_low_precision_2x_eager(dtype, n):
    # tests/test_bce_loss.py::test_cuda_low_precision_2x_eager with the emulated kernel and eager on the CPU.
    r = results("plain")[f"bce_disc-{H.DTYPE_NAMES[dtype]}-lowp-{n}"]
    real, fake = logits(n, seed=32, extreme=False), logits(n // 3 + 1, seed=33, extreme=False)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    exact = bce(real, torch.full_like(real, 0.9)) + bce(fake, torch.zeros_like(fake))
    rd, fd = real.to(dtype), fake.to(dtype)
    eager = (bce(rd, torch.full_like(rd, 0.9)) + bce(fd, torch.zeros_like(fd))).double()
    ours = r.tensor("loss", dtype).double()[0]
    assert (ours - exact).abs() <= 2 * (eager - exact).abs() + 1e-6 * exact.abs()


def test_empty_input_is_no_launch():
    # The op fills the reductions of empty inputs itself (bce_fill_empty); the launcher must not launch.
    c = H.Case("empty", "bce_disc", "float32", {"x0": torch.empty(0), "x1": torch.empty(0)}, {"red": 1})
    r = H.run("asan", [c])["empty"]
    assert r.int("launches") == 0


def test_results_do_not_depend_on_block_or_thread_order(tmp_path):
    # The emulator runs blocks and threads in a seeded random order: another seed, same bits.
    import os
    c = BY_ID["bce_disc-float32-d4-5000-3001"]
    a = results("plain")[c.id]
    old = os.environ.get("GANX_EMU_SEED")
    os.environ["GANX_EMU_SEED"] = "12345"
    try:
        b = H.run("plain", [c])[c.id]
    finally:
        if old is None:
            del os.environ["GANX_EMU_SEED"]
        else:
            os.environ["GANX_EMU_SEED"] = old
    assert a.arrays == b.arrays


def test_grid_is_fixed_and_independent_of_the_gpu():
    # The grid is a function of the size alone (no SM count): a 16M-logit D loss launches kMaxBlocks
    # blocks on every GPU. The rule is checked on the launches the emulator logged.
    for c in CASES:
        if c.id in results("plain"):
            r = results("plain")[c.id]
            # "name grid block smem static=S bound=B" (the name may hold spaces)
            *_, grid, block, _, _, bound = r.log.split()
            assert grid == f"{r.int('blocks')},1,1", r.log
            assert block == f"{KTHREADS},1,1" and bound == f"bound={KTHREADS}", r.log
    src = (H.ROOT / "csrc" / "cuda" / "bce_loss.cu").read_text() + (H.ROOT / "csrc/cuda/kernels/bce_loss.cuh").read_text()
    assert "multiProcessorCount" not in src and "getCurrentDeviceProperties" not in src
    assert expected_blocks("float32", 16 << 20, 0) == KMAXBLOCKS


@pytest.mark.parametrize("dtype", DT)
def test_vector_accesses_only_when_aligned(dtype):
    # 16-byte accesses where every pointer of a segment is aligned, element-wise otherwise; the
    # asan build (UBSan's alignment check) fails on any misaligned 16-byte access, and both paths
    # give the same bits.
    v = vlen(dtype)
    x0, x1 = _x(8 * v + 3, dtype, 7), _x(5 * v, dtype, 8)
    cases = [H.Case(f"o{xo}-{oo}", "bce_disc", dtype, {"x0": x0, "x1": x1}, {"red": 0, "xoff": xo, "ooff": oo})
             for xo, oo in [(0, 0), (1, 0), (0, 1), (v - 1, v + 1)]]
    res = H.run("asan", cases)
    assert res["o0-0"].kv["vec0"] == "1" and res["o0-0"].kv["vec1"] == "0"  # fake starts after 8v+3 outputs
    for k in ("o1-0", "o0-1", f"o{v - 1}-{v + 1}"):
        assert res[k].kv["vec0"] == "0"
        assert res[k].arrays == res["o0-0"].arrays
    aligned_fake = H.run("plain", [H.Case("a", "bce_disc", dtype, {"x0": x0[:8 * v], "x1": x1}, {"red": 0})])["a"]
    assert aligned_fake.kv["vec0"] == "1" and aligned_fake.kv["vec1"] == "1"


def test_one_minus_target_agrees_with_the_cpu():
    # 1 - t is formed in double once (bce_math.h) and rounded for the kernels: for t = 0.9,
    # float32(1 - 0.9) = 0.1f but 1.f - 0.9f = 0.10000002f. At l = 1e4, loss = (1 - t) * l and
    # d loss / dl = 1 - t exactly, so any other rounding shows in the bits.
    x = torch.tensor([1e4, 1e4, 50.0, 1e4], dtype=torch.float32)
    c = H.Case("t", "bce_disc", "float32", {"x0": x, "x1": x}, {"red": 0, "rt": 0.9, "ft": 0.7})
    r = H.run("plain", [c])["t"]
    loss, grad, _ = torch.ops.ganx.bce_discriminator_loss(x, x, 0.9, 0.7, 0, True)
    g = r.tensor("grad", torch.float32)
    assert torch.equal(g[[0, 1, 3]], grad[[0, 1, 3]])
    assert g[0].item() == torch.tensor(1 - 0.9, dtype=torch.float64).float().item()
    assert g[0].item() != (torch.tensor(1.0) - torch.tensor(0.9)).item()  # the rounding that was used before
    assert torch.equal(r.tensor("loss", torch.float32)[[0, 1, 3, 4, 5, 7]], loss[[0, 1, 3, 4, 5, 7]])
