"""The upsample-conv glue kernels (csrc/cuda/kernels/upconv_epilogue.cuh) executed under the CUDA
emulator (tests/emu) in its three builds (plain, AddressSanitizer + UBSan, ThreadSanitizer),
compared with their CPU twins (csrc/cpu/upconv_epilogue.h, run by the same driver on the same
inputs) and with a torch reference of the epilogue's math. No GPU needed.

Cases: scales 1-3 (s = 1 is the deconv form's in-place bias + activation), every activation,
NCHW and channels_last strides for the phase maps, the output and grad_out (a stride-0 grad too),
with and without bias, every dtype, and a plane larger than one backward block's chunk (several
partial sums per channel). The weight folds (fold_taps_kernel, with the FoldArgs built by the
op's own recipes in csrc/upconv_fold.h): fold_weight and unfold_weight_grad for scales 1-4 x
kernel sizes 1/3/5 and ConvTranspose2d(4, 2, 1), deconv_weight and its gradient (s = 2, k = 3),
odd channel counts, strided sources, every dtype (the sanitizer builds: float32, float16),
compared bit for bit with the CPU twin and with the folds' formulas in float64. The replicate
form of 1x1 kernels (upconv_replicate_*): scales 1-4, every activation and dtype, both layouts
(and an output in the other layout than the traversal), with and without bias, a stride-0 grad,
the 64-bit index instantiation, several partial sums per channel; bit for bit with the CPU twin.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import harness as H  # noqa: E402

from ganx.ops.activations import ACTIVATION_TABLE  # noqa: E402

DT = ["float32", "float64", "float16", "bfloat16"]
TOL = {"float32": 1e-5, "float64": 1e-12, "float16": 2e-3, "bfloat16": 1.6e-2}


def _strides(shape, cl):
    n, c, h, w = shape
    return (h * w * c, 1, w * c, c) if cl else (c * h * w, h * w, w, 1)


def _view(flat, shape, strides):
    return torch.as_strided(flat, shape, strides)


def _kv(prefix, st):
    return {f"{prefix}_n": st[0], f"{prefix}_c": st[1], f"{prefix}_h": st[2], f"{prefix}_w": st[3]}


def _act_ref(name, y, slope):
    return ACTIVATION_TABLE[name].reference(y, slope)


def _act_grad(name, r, grad, slope):
    """act'(pre) * grad, with r what the backward reads (the table's ref column): the output y of
    relu / leaky_relu / tanh, the pre-activation of silu / gelu (their reference derivative)."""
    a = ACTIVATION_TABLE[name]
    if a.ref == "x":
        return grad * a.derivative(r, slope)
    if name == "relu":
        return torch.where(r > 0, grad, torch.zeros_like(grad))
    if name == "leaky_relu":
        return torch.where(r > 0, grad, grad * slope)
    assert name == "tanh", f"no output-side derivative for {name!r} in this test"
    return grad * (1 - r * r)


def _saved_ref(act, n, g):
    """What the backward reads, n values: an output of tanh (relu / leaky_relu: kept away from 0),
    or a pre-activation (silu / gelu)."""
    if ACTIVATION_TABLE[act].ref == "x":
        return torch.randn(n, generator=g, dtype=torch.float64) * 3
    out = torch.tanh(torch.randn(n, generator=g, dtype=torch.float64))
    if act in ("relu", "leaky_relu"):
        out = torch.where(out > 0.3, out, -out.abs())
    return out


def _cases():
    cs = []
    g = torch.Generator().manual_seed(0)
    geoms = [(2, 3, 5, 4, 2), (1, 2, 3, 7, 1), (2, 3, 4, 3, 3), (1, 2, 40, 60, 2)]
    for dtype in DT:
        for (N, C, H_, W, s) in geoms:
            big = H_ * W > 1000
            for act in ACTIVATION_TABLE:
                for cl in (False, True):
                    if big and (act not in ("none", "tanh") or dtype not in ("float32", "float16")):
                        continue
                    slope = 0.2 if act == "leaky_relu" else 0.0
                    kv = dict(N=N, C=C, H=H_, W=W, s=s, act=ACTIVATION_TABLE[act].enum, slope=slope, cl=int(cl))
                    if dtype in ("float32", "float64") and (N, C, H_, W, s) == (2, 3, 5, 4, 2):
                        kv["i64"] = 1  # the 64-bit index instantiation (large tensors) on small ones
                    pshape = (N, C, H_, W)
                    pst = _strides(pshape, cl)
                    oshape = (N, C, H_ * s, W * s)
                    ost = _strides(oshape, cl)
                    pstep = N * C * H_ * W
                    kv.update(**_kv("ps", pst), **_kv("os", ost), pstep=pstep)
                    t = H.DTYPES[dtype]
                    ph = (torch.randn(s * s * pstep, generator=g, dtype=torch.float64) * 2).to(t)
                    bias = torch.randn(C, generator=g, dtype=torch.float64).to(t)
                    cid = f"{dtype}-{N}x{C}x{H_}x{W}-s{s}-{act}-{'cl' if cl else 'nchw'}"
                    c = H.Case(f"fwd-{cid}", "upconv_fwd", dtype, {"phases": ph, "bias": bias}, dict(kv))
                    c.meta = dict(pshape=pshape, pst=pst, oshape=oshape, ost=ost, act=act, slope=slope, s=s)
                    cs.append(c)
                    # backward: grad in the other layout (strides need not match the output's),
                    # a stride-0 grad for the NCHW no-bias cases
                    gst = _strides(oshape, not cl)
                    grad = torch.randn(N * C * H_ * s * W * s, generator=g, dtype=torch.float64).to(t)
                    out = _saved_ref(act, N * C * H_ * s * W * s, g).to(t)
                    has_bias = not (act == "none" and not cl)
                    if not has_bias:
                        gst = (0, 0, 0, 0)
                        grad = grad[:1]
                    kvb = dict(kv, has_bias=int(has_bias), **_kv("gs", gst))
                    arrays = {"grad": grad}
                    if act != "none":
                        arrays["out"] = out
                    cb = H.Case(f"bwd-{cid}", "upconv_bwd", dtype, arrays, kvb)
                    cb.meta = dict(c.meta, gst=gst, has_bias=has_bias)
                    cs.append(cb)
    return cs


# ---------------------------------------------------------------- weight folds (fold_taps_kernel)
# kind: 0 fold_weight, 1 unfold_weight_grad, 2 deconv_weight, 3 deconv_weight_grad
# (csrc/upconv_fold.h); the driver builds the FoldArgs with the op's own recipes.
FOLD_CO, FOLD_CI = 3, 5  # odd channel counts (C_out, C_in)


def _tap_matrices(s, k, ct):
    """M[a][t, ky] = 1 where original tap ky sums into phase a's tap t (DESIGN.md section 2),
    from the formulas, not from the C++ tap lists."""
    if ct:  # ConvTranspose2d(4, 2, 1): tap t of phase a is ky = a + 1 - 2 (d0[a] + t), d0 = (-1, 0)
        d0, T, kk = [-1, 0], 2, 4
        return torch.stack([torch.tensor([[1.0 if ky == a + 1 - 2 * (d0[a] + t) else 0.0 for ky in range(kk)]
                                          for t in range(T)], dtype=torch.float64) for a in range(2)])
    p = k // 2
    d0 = [(a - p) // s for a in range(s)]
    T = max((a + k - 1 - p) // s - d0[a] + 1 for a in range(s))
    return torch.stack([torch.tensor([[1.0 if (a + ky - p) // s - d0[a] == t else 0.0 for ky in range(k)]
                                      for t in range(T)], dtype=torch.float64) for a in range(s)])


# rows of the 4x4 deconv kernel per axis: [w2, w1 + w2, w0 + w1, w0] (reference.deconv_weight)
_DECONV = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float64)


def _fold_expected(kind, s, k, ct, src):
    if kind in (0, 1):
        M = _tap_matrices(s, k, ct)
        if kind == 0:
            w = src.transpose(0, 1) if ct else src  # (C_out, C_in, k, k)
            return torch.einsum("atk,bul,oikl->aboitu", M, M, w)
        g = torch.einsum("atk,bul,aboitu->oikl", M, M, src)
        return g.transpose(0, 1) if ct else g
    if kind == 2:
        return torch.einsum("Yk,Xl,oikl->ioYX", _DECONV, _DECONV, src)
    return torch.einsum("Yk,Xl,ioYX->oikl", _DECONV, _DECONV, src)


def _fold_cases():
    cs = []
    g = torch.Generator().manual_seed(1)
    geoms = [(s, k, False) for s in (1, 2, 3, 4) for k in (1, 3, 5)] + [(2, 4, True)]
    for dtype in DT:
        t = H.DTYPES[dtype]
        for n, (s, k, ct) in enumerate(geoms):
            kinds = (0, 1, 2, 3) if (s, k, ct) == (2, 3, False) else (0, 1)
            M = _tap_matrices(s, k, ct)
            T = M.shape[1]
            for kind in kinds:
                wshape = (FOLD_CI, FOLD_CO, k, k) if ct else (FOLD_CO, FOLD_CI, k, k)
                w4shape = (FOLD_CI, FOLD_CO, 4, 4)
                wfshape = (s, s, FOLD_CO, FOLD_CI, T, T)
                sshape, dshape = {0: (wshape, wfshape), 1: (wfshape, wshape), 2: (wshape, w4shape),
                                  3: (w4shape, wshape)}[kind]
                # a strided source every other geometry: a channels_last 4-D weight, or phase
                # kernels with their tap dims swapped
                strided = n % 2 == 1
                perm = ((0, 2, 3, 1) if len(sshape) == 4 else (0, 1, 2, 3, 5, 4)) if strided else tuple(range(len(sshape)))
                base = (torch.randn([sshape[i] for i in perm], generator=g, dtype=torch.float64) * 2).to(t)
                inv = [perm.index(i) for i in range(len(sshape))]
                src = base.permute(inv)
                assert tuple(src.shape) == sshape
                dst_strides = torch.empty(dshape).stride()
                kv = dict(kind=kind, ct=int(ct), s=s, k=k)
                for i, (sz, st) in enumerate(zip(src.shape, src.stride())):
                    kv[f"src_size{i}"], kv[f"src_stride{i}"] = sz, st
                for i, (sz, st) in enumerate(zip(dshape, dst_strides)):
                    kv[f"dst_size{i}"], kv[f"dst_stride{i}"] = sz, st
                geo = "ct4s2" if ct else f"s{s}k{k}"
                c = H.Case(f"fold{kind}-{dtype}-{geo}{'-strided' if strided else ''}", "upconv_fold", dtype,
                           {"src": base.contiguous().flatten()}, kv)
                c.meta = dict(kind=kind, s=s, k=k, ct=ct, dshape=dshape, T=T,
                              expected=_fold_expected(kind, s, k, ct, src.double()))
                cs.append(c)
    return cs


# ---------------------------------------------------------------- the replicate form (1x1 kernels)
# upconv_replicate_fwd_kernel / upconv_replicate_bwd_{planes,rows}_kernel: the 1x1 convolution
# computed at the input resolution (y), replicated over each s x s block with bias + activation;
# backward: the block sums of act'(out) * grad and the bias gradient.

def _rep_cases():
    cs = []
    g = torch.Generator().manual_seed(2)
    geoms = [(2, 3, 5, 4, 2), (1, 2, 3, 7, 1), (2, 3, 4, 3, 3), (1, 5, 3, 2, 4), (2, 1, 3, 3, 2), (1, 2, 40, 60, 2)]
    for dtype in DT:
        t = H.DTYPES[dtype]
        for gi, (N, C, H_, W, s) in enumerate(geoms):
            big = H_ * W > 1000
            for act in ACTIVATION_TABLE:
                for cl in (False, True):
                    if big and (act not in ("none", "tanh") or dtype not in ("float32", "float16")):
                        continue
                    slope = 0.2 if act == "leaky_relu" else 0.0
                    pshape, oshape = (N, C, H_, W), (N, C, H_ * s, W * s)
                    pst = _strides(pshape, cl)
                    # the output's strides: its layout, except for one geometry whose output is in the
                    # other layout than the traversal (the kernels' strided paths)
                    ost = _strides(oshape, cl if gi != 2 else not cl)
                    kv = dict(N=N, C=C, H=H_, W=W, s=s, act=ACTIVATION_TABLE[act].enum, slope=slope, cl=int(cl),
                              **_kv("ps", pst), **_kv("os", ost))
                    if dtype in ("float32", "float64") and gi == 0:
                        kv["i64"] = 1
                    y = (torch.randn(N * C * H_ * W, generator=g, dtype=torch.float64) * 2).to(t)
                    bias = torch.randn(C, generator=g, dtype=torch.float64).to(t)
                    cid = f"{dtype}-{N}x{C}x{H_}x{W}-s{s}-{act}-{'cl' if cl else 'nchw'}"
                    arrays = {"y": y}
                    if not (act == "none" and cl):
                        arrays["bias"] = bias
                    c = H.Case(f"rfwd-{cid}", "upconv_rep_fwd", dtype, arrays, dict(kv))
                    c.meta = dict(pshape=pshape, pst=pst, oshape=oshape, ost=ost, act=act, slope=slope, s=s,
                                  has_bias="bias" in arrays)
                    cs.append(c)
                    gst = _strides(oshape, not cl)
                    grad = torch.randn(N * C * H_ * s * W * s, generator=g, dtype=torch.float64).to(t)
                    out = _saved_ref(act, N * C * H_ * s * W * s, g).to(t)
                    has_bias = not (act == "none" and not cl)
                    if not has_bias:
                        gst = (0, 0, 0, 0)  # an expanded grad (sum().backward())
                        grad = grad[:1]
                    arrays = {"grad": grad}
                    if act != "none":
                        arrays["out"] = out
                    cb = H.Case(f"rbwd-{cid}", "upconv_rep_bwd", dtype, arrays,
                                dict(kv, has_bias=int(has_bias), **_kv("gs", gst)))
                    cb.meta = dict(c.meta, gst=gst, has_bias=has_bias)
                    cs.append(cb)
    return cs


CASES = _cases() + _fold_cases() + _rep_cases()
BY_ID = {c.id: c for c in CASES}


def _included(variant, c):
    if variant == "plain":
        return True
    if c.op == "upconv_fold":
        # ASan: two dtypes. Race: float32, the largest fold and unfold of each kind (the fold has
        # no shared memory and only reads its source: a race could only be two threads writing
        # one destination tap, which would also leave another tap unwritten, NaN, in plain)
        if variant == "asan":
            return c.dtype in ("float32", "float16")
        return c.dtype == "float32" and c.id.split("-", 2)[2] in ("s4k5", "s4k5-strided", "s2k3", "ct4s2")
    big = c.meta["pshape"][2] * c.meta["pshape"][3] > 1000
    # ASan runs the small cases in two dtypes (time); the race build float32 with and without the
    # activation's read of the output (neither the dtype nor which activation changes what a
    # thread accesses or where the barriers are)
    if variant == "race":
        return not big and c.dtype == "float32" and c.meta["act"] in ("none", "tanh")
    return not (big or c.dtype in ("bfloat16", "float64"))


@functools.lru_cache(maxsize=None)
def results(variant: str):
    return H.run(variant, [c for c in CASES if _included(variant, c)])


def _fwd_reference(c):
    m = c.meta
    t = H.DTYPES[c.dtype]
    s = m["s"]
    ph = c.arrays["phases"].double()
    n = ph.numel() // (s * s)
    out = torch.empty(m["oshape"], dtype=torch.float64)
    for a in range(s):
        for b in range(s):
            p = _view(ph[(a * s + b) * n:(a * s + b + 1) * n], m["pshape"], m["pst"])
            v = p.to(t).double() if t in (torch.float16, torch.bfloat16) else p
            out[:, :, a::s, b::s] = v + c.arrays["bias"].double().view(1, -1, 1, 1)
    return _act_ref(m["act"], out, m["slope"])


def _bwd_reference(c):
    m = c.meta
    s = m["s"]
    gflat = c.arrays["grad"].double()
    grad = torch.as_strided(gflat, m["oshape"], m["gst"])
    if m["act"] == "none":
        d = grad.clone()
    else:
        d = _act_grad(m["act"], _view(c.arrays["out"].double(), m["oshape"], m["ost"]), grad, m["slope"])
    phases = [d[:, :, a::s, b::s] for a in range(s) for b in range(s)]
    return phases, d.sum((0, 2, 3))


def variant_cases():
    return [(v, c.id) for v in H.VARIANTS for c in CASES if _included(v, c)]


def _fold_ids(variant):
    return [(variant, c.id) for c in CASES if c.op == "upconv_fold" and _included(variant, c)]


FOLD_TOL = {"float32": 2e-7, "float64": 1e-14, "float16": 1e-3, "bfloat16": 8e-3}  # one rounding of the sum


@pytest.mark.parametrize("variant,cid", [vc for v in H.VARIANTS for vc in _fold_ids(v)])
def test_emulated_weight_fold_matches_cpu_twin_and_reference(variant, cid):
    c = BY_ID[cid]
    r = results(variant)[cid]
    t = H.DTYPES[c.dtype]
    m = c.meta
    cu = r.tensor("dst_cuda", t).view(m["dshape"])
    cp = r.tensor("dst_cpu", t).view(m["dshape"])
    # same sums in the same order: bit for bit (NaN: a destination tap never written)
    assert not cu.isnan().any() and torch.equal(cu, cp)
    ref = m["expected"]
    torch.testing.assert_close(cu.double(), ref, atol=FOLD_TOL[c.dtype] * (ref.abs().max().item() + 1),
                               rtol=FOLD_TOL[c.dtype])
    assert r.int("rows") == m["dshape"][-1] * (m["s"] if m["kind"] == 0 else 1)
    launch = r.log.split()
    assert launch[0] == f"ganx::cuda::fold_taps_kernel<{_CXX[c.dtype]}>" and launch[-1] == "bound=256", r.log


_CXX = {"float32": "float", "float64": "double", "float16": "c10::Half", "bfloat16": "c10::BFloat16"}


def _checked_launches(c, r, kernels):
    """The names of the kernels in case ``c``'s launch log ``r.log``, each launch checked against
    what the emulator knows: within the kernel's __launch_bounds__(256), its static shared memory
    (``kernels``: the kernel names the case may launch, True for those with the bias reductions'
    [256] accumulators of the accumulate type; none in the forward and the channels_last backward,
    whose threads keep their own partial sums), and the index type of its instantiation: 32-bit
    unless the case forces the 64-bit one (the bias-gradient kernel has none)."""
    red = 1024 * (2 if c.dtype == "float64" else 1)
    want = {name: red if reduces else 0 for name, reduces in kernels.items()}
    lines = r.log.splitlines()
    names = [ln.split("<")[0].split("::")[-1] for ln in lines]
    assert lines and all(ln.endswith(" 256,1,1 0 static=%d bound=256" % want[nm])
                         for nm, ln in zip(names, lines)), r.log
    index_t = "long" if c.kv.get("i64") else "int"
    assert all(ln.rsplit(" ", 5)[0].endswith(f", {index_t}>") for nm, ln in zip(names, lines)
               if nm != "upconv_bias_grad_kernel"), r.log
    return names


@pytest.mark.parametrize("variant,cid", [vc for vc in variant_cases() if BY_ID[vc[1]].op in ("upconv_fwd", "upconv_bwd")])
def test_emulated_upconv_epilogue_matches_cpu_twin_and_reference(variant, cid):
    c = BY_ID[cid]
    r = results(variant)[cid]
    t = H.DTYPES[c.dtype]
    tol = TOL[c.dtype]
    m = c.meta
    names = _checked_launches(c, r, {"upconv_epilogue_fwd_kernel": False, "upconv_epilogue_bwd_rows_kernel": False,
                                     "upconv_epilogue_bwd_planes_kernel": True, "upconv_bias_grad_kernel": True})
    if c.op == "upconv_fwd":
        n = torch.Size(m["oshape"]).numel()
        cu = _view(r.tensor("out_cuda", t), m["oshape"], m["ost"]).double()
        cp = _view(r.tensor("out_cpu", t), m["oshape"], m["ost"]).double()
        assert cu.numel() == n
        torch.testing.assert_close(cu, cp, atol=tol, rtol=tol)
        torch.testing.assert_close(cu, _fwd_reference(c), atol=tol * 4, rtol=tol * 4)
        return
    pst = m["pst"]
    n = torch.Size(m["pshape"]).numel()
    ph_cu, ph_cp = r.tensor("ph_cuda", t).double(), r.tensor("ph_cpu", t).double()
    ref_ph, ref_gb = _bwd_reference(c)
    s = m["s"]
    for ab in range(s * s):
        a_cu = _view(ph_cu[ab * n:(ab + 1) * n], m["pshape"], pst)
        a_cp = _view(ph_cp[ab * n:(ab + 1) * n], m["pshape"], pst)
        assert torch.equal(a_cu, a_cp), ab  # same element-wise arithmetic, bit for bit
        torch.testing.assert_close(a_cu, ref_ph[ab], atol=tol * 4, rtol=tol * 4)
    if m["has_bias"]:
        gb_cu = r.tensor("gb_cuda", torch.float64)
        gb_cp = r.tensor("gb_cpu", torch.float64)
        scale = ref_gb.abs().max().item() + 1
        torch.testing.assert_close(gb_cu, gb_cp, atol=tol * scale, rtol=0)
        torch.testing.assert_close(gb_cu, ref_gb, atol=tol * 8 * scale, rtol=0)
        assert names == [("upconv_epilogue_bwd_rows_kernel" if r.int("rows") else "upconv_epilogue_bwd_planes_kernel"),
                         "upconv_bias_grad_kernel"], r.log
        if m["pshape"][0] * m["pshape"][2] * m["pshape"][3] * s * s > 2048:
            assert r.int("parts") > 1  # several blocks (or threads) per channel, reduced in order
    # lanes along C exactly when the grad is channels_last (coalesced: the .cu file's rule)
    assert r.int("rows") == int(m["gst"][1] == 1 and m["pshape"][1] > 1)


def test_planted_bug_is_caught(tmp_path):
    # A missing barrier in the backward's bias reduction must make the race build fail.
    src = (H.ROOT / "csrc" / "cuda" / "kernels" / "upconv_epilogue.cuh").read_text()
    needle = "    if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];\n    __syncthreads();\n"
    assert needle in src
    bad = src.replace(needle, "    if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];\n")
    d = tmp_path / "inc" / "cuda" / "kernels"
    d.mkdir(parents=True)
    (d / "upconv_epilogue.cuh").write_text(bad.replace('#include "../launch.cuh"', '#include "cuda/launch.cuh"')
                                           .replace('#include "../../upconv_epilogue.h"', '#include "upconv_epilogue.h"'))
    exe = H.build("race", include_first=tmp_path / "inc", tag="upconv-planted")
    case = next(c for c in CASES if c.op == "upconv_bwd" and c.meta["has_bias"] and c.dtype == "float32"
                and c.meta["s"] == 2)
    with pytest.raises(H.EmuFailure):
        H.run("race", [case], exe=exe)


def _rep_fwd_reference(c):
    m = c.meta
    s = m["s"]
    y = _view(c.arrays["y"].double(), m["pshape"], m["pst"])
    if m["has_bias"]:
        y = y + c.arrays["bias"].double().view(1, -1, 1, 1)
    v = _act_ref(m["act"], y, m["slope"])
    return v.repeat_interleave(s, 2).repeat_interleave(s, 3)


def _dpre(c):
    """act'(out) * grad at full resolution, in float64 (the phase backward's d pre)."""
    m = c.meta
    grad = torch.as_strided(c.arrays["grad"].double(), m["oshape"], m["gst"])
    if m["act"] == "none":
        return grad.clone()
    return _act_grad(m["act"], _view(c.arrays["out"].double(), m["oshape"], m["ost"]), grad, m["slope"])


def _rep_bwd_reference(c):
    s = c.meta["s"]
    n, ch, h, w = c.meta["pshape"]
    gl = _dpre(c).view(n, ch, h, s, w, s).sum((3, 5))
    return gl, gl.sum((0, 2, 3))


@pytest.mark.parametrize("variant,cid", [vc for vc in variant_cases() if BY_ID[vc[1]].op.startswith("upconv_rep")])
def test_emulated_replicate_form_matches_cpu_twin_and_reference(variant, cid):
    c = BY_ID[cid]
    r = results(variant)[cid]
    t = H.DTYPES[c.dtype]
    tol = TOL[c.dtype]
    m = c.meta
    names = _checked_launches(c, r, {"upconv_replicate_fwd_kernel": False, "upconv_replicate_bwd_rows_kernel": False,
                                     "upconv_replicate_bwd_planes_kernel": True, "upconv_bias_grad_kernel": True})
    if c.op == "upconv_rep_fwd":
        assert names == ["upconv_replicate_fwd_kernel"], r.log
        cu = _view(r.tensor("out_cuda", t), m["oshape"], m["ost"])
        cp = _view(r.tensor("out_cpu", t), m["oshape"], m["ost"])
        assert not cu.double().isnan().any()  # every output element written (the buffers start as NaN)
        assert torch.equal(cu, cp)  # the same arithmetic, bit for bit
        torch.testing.assert_close(cu.double(), _rep_fwd_reference(c), atol=tol * 4, rtol=tol * 4)
        return
    n = 1 + sum((d - 1) * st for d, st in zip(m["pshape"], m["pst"]))
    cu = _view(r.tensor("gl_cuda", t)[:n], m["pshape"], m["pst"])
    cp = _view(r.tensor("gl_cpu", t)[:n], m["pshape"], m["pst"])
    assert not cu.double().isnan().any()
    assert torch.equal(cu, cp)  # the block sums in the same order, bit for bit
    ref_gl, ref_gb = _rep_bwd_reference(c)
    scale = m["s"] ** 2
    torch.testing.assert_close(cu.double(), ref_gl, atol=tol * 4 * scale, rtol=tol * 4)
    kernel = "upconv_replicate_bwd_rows_kernel" if r.int("rows") else "upconv_replicate_bwd_planes_kernel"
    assert r.int("rows") == int(m["gst"][1] == 1 and m["pshape"][1] > 1)
    if m["has_bias"]:
        gb_cu, gb_cp = r.tensor("gb_cuda", torch.float64), r.tensor("gb_cpu", torch.float64)
        big = ref_gb.abs().max().item() + 1
        torch.testing.assert_close(gb_cu, gb_cp, atol=tol * big * scale, rtol=0)
        torch.testing.assert_close(gb_cu, ref_gb, atol=tol * 8 * big * scale, rtol=0)
        assert names == [kernel, "upconv_bias_grad_kernel"], r.log
        if m["pshape"][0] * m["pshape"][2] * m["pshape"][3] > 2048:
            assert r.int("parts") > 1  # several blocks (or threads) per channel, reduced in order
    else:
        assert names == [kernel], r.log
