"""Host overhead per call: ganx's fused layers and D loss vs the eager PyTorch they replace, on
tensors so small that the time per call is dispatch + Python + glue -- what a GPU user pays per
layer on top of the kernels (a GPU runs these kernels in a few microseconds each; the host must
issue them faster than that or the GPU waits).

Cases (scale 2, 3x3 / 4x4 kernels, ReLU, bias; float32):

- ``upsample_conv2d`` (2x8x2x2 -> 2x4x4x4), ``ganx.functional.upsample_conv2d`` vs eager
  ``F.interpolate`` + ``F.conv2d`` + ``F.relu``, once per composition forced with
  ``ganx.ops.upconv_algorithm``: ``deconv`` (the CUDA rule's form here), ``stacked`` (the CUDA
  rule's form for the other geometries) and ``split`` (the CPU rule at these sizes; no target);
- ``conv_transpose2d_4s2``: ``ganx.nn.FusedConvTranspose2d(activation="relu")`` vs
  ``nn.ConvTranspose2d(8, 4, 4, 2, 1)`` + ``F.relu``, deconv and stacked forced;
- ``d_loss``: ``ganx.functional.bce_discriminator_loss(real, fake)`` vs ``nn.BCEWithLogitsLoss``
  on real (target ones) + on fake (target zeros), 64 logits each, label tensors made once.

Each is timed forward and forward + backward (``torch.autograd.backward(out, grad)``, gradients
reset to None before each call). Contenders alternate round by round (which goes first
alternates too); each round times ``--calls`` back-to-back calls of one contender. Reported:
the median over rounds of the time per call (thread CPU time, and wall time) and the median of
the per-round ratios ganx / eager (<= 1: ganx costs the host no more than eager). On CUDA the
rounds end with a synchronize and the time is wall time.

Op counts: ``torch.profiler`` (CPU activity) around one call after warm-up; every event counts
("ATen op events": ganx's own ops and its glue kernels, which show as ``ganx::upconv_*``, each one
kernel launch on CUDA, included). On CUDA the CUDA kernels launched are counted too.

On the CPU the vendor convolution (oneDNN) is part of the time, and its forms cost differently
(the transposed conv of the deconv form more than eager's conv2d at these sizes, with an output
copy of its own): the forward rows also time each side's vendor convolution alone (the same
ATen call with the same shapes) and report the ratio without it, (ganx - its conv) / (eager -
its conv): the dispatch + Python + glue part the target is about.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ganx_bench import harness as H

Fn = Callable[[], Any]


def count_events(fn: Fn, device: torch.device) -> Dict[str, Any]:
    """ATen op events (every CPU event of the profiler, ganx's ops and glue kernels included) of
    one call of fn after warm-up; on CUDA also the CUDA kernels launched."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    with profile(activities=acts) as p:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    ev = list(p.events())
    cpu = [e.name for e in ev if e.device_type == torch.autograd.DeviceType.CPU]
    out: Dict[str, Any] = {"events": len(cpu), "event_names": dict(Counter(cpu).most_common())}
    if device.type == "cuda":
        out["cuda_kernels"] = sum(1 for e in ev if e.device_type == torch.autograd.DeviceType.CUDA)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(contenders: Dict[str, Fn], device: torch.device, rounds: int, calls: int,
                     warmup: int) -> Dict[str, Dict[str, Any]]:
    """Per contender: per-round time per call (thread CPU and wall), contenders alternating."""
    names = list(contenders)
    for n in names:
        for _ in range(warmup):
            contenders[n]()
    _sync(device)
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    wall: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            fn = contenders[n]
            _sync(device)
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(calls):
                fn()
            _sync(device)
            cpu[n].append((time.thread_time() - c0) / calls)
            wall[n].append((time.perf_counter() - w0) / calls)
    return {n: {"cpu_s": cpu[n], "wall_s": wall[n]} for n in names}


def _ratio(per: Dict[str, Dict[str, Any]], key: str, a: str = "ganx", b: str = "eager") -> float:
    return statistics.median(x / y for x, y in zip(per[a][key], per[b][key]))


# --------------------------------------------------------------------------- cases

def _leaves(*ts: Optional[torch.Tensor]) -> List[torch.Tensor]:
    return [t for t in ts if t is not None]


def _fwd_bwd(forward: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], grad: Optional[torch.Tensor]) -> Fn:
    def step():
        for p in params:
            p.grad = None
        out = forward()
        torch.autograd.backward(out, grad)
    return step


def build_cases(device: torch.device, tiny: bool) -> List[Dict[str, Any]]:
    import ganx
    import ganx.functional as GF

    torch.manual_seed(0)
    opt = {"device": device, "dtype": torch.float32}
    cases: List[Dict[str, Any]] = []

    # upsample + 3x3 conv + ReLU, bias: 2x8x2x2 -> 2x4x4x4
    x = torch.randn(2, 8, 2, 2, **opt, requires_grad=True)
    w = torch.randn(4, 8, 3, 3, **opt, requires_grad=True)
    b = torch.randn(4, **opt, requires_grad=True)
    g_up = torch.randn(2, 4, 4, 4, **opt)

    def up_eager():
        return F.relu(F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1))

    def up_ganx():
        return GF.upsample_conv2d(x, w, b, activation="relu")

    # each side's vendor convolution alone, as the forward issues it
    xu = F.interpolate(x.detach(), scale_factor=2, mode="nearest")
    w4 = torch.randn(8, 4, 4, 4, **opt)   # deconv form: the folded (C_in, C_out, 4, 4) kernel
    ws = torch.randn(16, 8, 2, 2, **opt)  # stacked form: the 4 phase kernels as output channels
    xd, wd, bd = x.detach(), w.detach(), b.detach()
    up_conv = {"deconv": lambda: torch.conv_transpose2d(xd, w4, None, 2, 1),
               "stacked": lambda: F.conv2d(xd, ws, None, padding=1)}

    for algo, target in (("deconv", True), ("stacked", True), ("split", False)):
        if tiny and algo == "split":
            continue
        cases.append({"case": "upsample_conv2d", "algo": algo, "target": target,
                      "shape": "x 2x8x2x2, w 4x8x3x3, bias, relu",
                      "eager": "F.interpolate + F.conv2d + F.relu", "ganx": "ganx.functional.upsample_conv2d",
                      "vendor": ({"eager": lambda: F.conv2d(xu, wd, bd, padding=1), "ganx": up_conv[algo]}
                                 if algo in up_conv else None),
                      "fwd": {"eager": up_eager, "ganx": up_ganx},
                      "fwd+bwd": {"eager": _fwd_bwd(up_eager, (x, w, b), g_up),
                                  "ganx": _fwd_bwd(up_ganx, (x, w, b), g_up)}})

    # ConvTranspose2d(8, 4, 4, 2, 1) + ReLU vs FusedConvTranspose2d, same parameters
    ct = nn.ConvTranspose2d(8, 4, 4, 2, 1).to(device)
    fct = ganx.nn.FusedConvTranspose2d(8, 4, activation="relu").to(device)
    fct.load_state_dict(ct.state_dict())

    def ct_eager():
        return F.relu(ct(x))

    def ct_ganx():
        return fct(x)

    wct, bct = ct.weight.detach(), ct.bias.detach()
    ct_conv = {"deconv": lambda: torch.conv_transpose2d(xd, wct, None, 2, 1),
               "stacked": lambda: F.conv2d(xd, ws, None, padding=1)}
    for algo, target in (("deconv", True), ("stacked", False)):  # deconv: the CUDA rule's form
        cases.append({"case": "conv_transpose2d_4s2", "algo": algo, "target": target,
                      "vendor": {"eager": lambda: torch.conv_transpose2d(xd, wct, bct, 2, 1), "ganx": ct_conv[algo]},
                      "shape": "x 2x8x2x2, w 8x4x4x4, bias, relu",
                      "eager": "nn.ConvTranspose2d + F.relu", "ganx": "ganx.nn.FusedConvTranspose2d",
                      "fwd": {"eager": ct_eager, "ganx": ct_ganx},
                      "fwd+bwd": {"eager": _fwd_bwd(ct_eager, (x, *ct.parameters()), g_up),
                                  "ganx": _fwd_bwd(ct_ganx, (x, *fct.parameters()), g_up)}})

    # D loss on 64 + 64 logits
    real = torch.randn(64, 1, **opt, requires_grad=True)
    fake = torch.randn(64, 1, **opt, requires_grad=True)
    ones, zeros = torch.ones(64, 1, **opt), torch.zeros(64, 1, **opt)
    crit = nn.BCEWithLogitsLoss()

    def loss_eager():
        return crit(real, ones) + crit(fake, zeros)

    def loss_ganx():
        return GF.bce_discriminator_loss(real, fake)

    cases.append({"case": "d_loss", "algo": "-", "target": True, "shape": "real 64x1, fake 64x1, mean", "vendor": None,
                  "eager": "nn.BCEWithLogitsLoss x2 (+)", "ganx": "ganx.functional.bce_discriminator_loss",
                  "fwd": {"eager": loss_eager, "ganx": loss_ganx},
                  "fwd+bwd": {"eager": _fwd_bwd(loss_eager, (real, fake), None),
                              "ganx": _fwd_bwd(loss_ganx, (real, fake), None)}})
    return cases


def check_numerics(case: Dict[str, Any]) -> None:
    with torch.no_grad():
        got, ref = case["fwd"]["ganx"](), case["fwd"]["eager"]()
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4,
                               msg=lambda m: f"{case['case']} [{case['algo']}]: ganx and eager disagree: {m}")


# --------------------------------------------------------------------------- report

def _us(s: float) -> str:
    return f"{s * 1e6:.1f}"


def run(args: argparse.Namespace) -> Tuple[str, Dict[str, Any]]:
    from ganx.ops import upconv_algorithm

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(args.threads)
    env = H.environment(device)
    rounds, calls, warmup = (3, 5, 3) if args.tiny else (args.rounds, args.calls, 50)
    rows: List[Dict[str, Any]] = []
    for case in build_cases(device, args.tiny):
        check_numerics(case)
        for phase in ("fwd", "fwd+bwd"):
            contenders = dict(case[phase])
            vendor = case["vendor"] if phase == "fwd" else None
            if vendor:
                contenders.update({f"{n}_vendor": fn for n, fn in vendor.items()})
            with upconv_algorithm(case["algo"]) if case["algo"] != "-" else _null():
                per = time_interleaved(contenders, device, rounds, calls, warmup)
                counts = {n: count_events(fn, device) for n, fn in case[phase].items()}
            row = {"case": case["case"], "algo": case["algo"], "phase": phase, "target": case["target"],
                   "shape": case["shape"], "eager_impl": case["eager"], "ganx_impl": case["ganx"]}
            for n in contenders:
                row[f"{n}_cpu_s"] = statistics.median(per[n]["cpu_s"])
                row[f"{n}_wall_s"] = statistics.median(per[n]["wall_s"])
                row[f"{n}_rounds_cpu_s"] = per[n]["cpu_s"]
            for n in ("eager", "ganx"):
                row[f"{n}_events"] = counts[n]["events"]
                row[f"{n}_event_names"] = counts[n]["event_names"]
                if "cuda_kernels" in counts[n]:
                    row[f"{n}_cuda_kernels"] = counts[n]["cuda_kernels"]
            row["ratio_cpu"] = _ratio(per, "cpu_s")
            row["ratio_wall"] = _ratio(per, "wall_s")
            if vendor:
                row["ratio_cpu_without_vendor_conv"] = statistics.median(
                    (g - gv) / (e - ev) for g, gv, e, ev in zip(per["ganx"]["cpu_s"], per["ganx_vendor"]["cpu_s"],
                                                                per["eager"]["cpu_s"], per["eager_vendor"]["cpu_s"]))
            rows.append(row)
            extra = (f", without vendor conv {row['ratio_cpu_without_vendor_conv']:.2f}" if vendor else "")
            print(f"{row['case']:>22} {row['algo']:>8} {phase:>8}: eager {_us(row['eager_cpu_s'])} us, "
                  f"ganx {_us(row['ganx_cpu_s'])} us, ratio cpu {row['ratio_cpu']:.2f} wall {row['ratio_wall']:.2f}"
                  f"{extra}; events {row['eager_events']} / {row['ganx_events']}", flush=True)
    try:
        env["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    md = report_md(env, rows, args, rounds, calls)
    payload = {"benchmark": "host_overhead", "device_type": device.type, "env": env, "config": {"rounds": rounds, "calls": calls,
               "threads": args.threads, "tiny": args.tiny}, "results": rows}
    return md, payload


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def report_md(env: Dict[str, Any], rows: List[Dict[str, Any]], args, rounds: int, calls: int) -> str:
    dev = env["device"]
    lines = [
        "# Host overhead per call: ganx vs eager (tiny tensors)",
        "",
        f"- date: {env['date']}; load average before {env.get('loadavg_1_5_15')}, after {env.get('loadavg_after')}",
        f"- device: {dev}; torch {env['torch']}, Python {env['python']}; ganx @ {env['ganx_commit']}",
        f"- {rounds} rounds x {calls} calls per contender, contenders alternating round by round; "
        "time per call = median over rounds; ratio = median of per-round ganx / eager (<= 1: ganx no slower)",
        f"- command: `{env['command']}`" + ("; TINY MODE (smoke test, not a measurement)" if args.tiny else ""),
        "",
        "| case | form | phase | eager us (cpu / wall) | ganx us (cpu / wall) | ganx / eager (cpu) | (wall) | "
        "without vendor conv (cpu) | ATen op events eager / ganx | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = r["ratio_cpu"] <= 1.0 and r["ganx_events"] <= r["eager_events"]
        wv = r.get("ratio_cpu_without_vendor_conv")
        lines.append(
            f"| {r['case']} | {r['algo']} | {r['phase']} | {_us(r['eager_cpu_s'])} / {_us(r['eager_wall_s'])} | "
            f"{_us(r['ganx_cpu_s'])} / {_us(r['ganx_wall_s'])} | {r['ratio_cpu']:.2f} | {r['ratio_wall']:.2f} | "
            f"{'-' if wv is None else f'{wv:.2f}'} | {r['eager_events']} / {r['ganx_events']} | "
            f"{('PASS' if ok else 'FAIL') if r['target'] else '-'} |")
    lines += ["", "Target (issue 21, item 3), for the CUDA rule's forms (`-`: not a target): host time per call "
              "<= 1.0x eager's (CPU-time ratio) and no more ATen op events than eager, forward and "
              "forward+backward. The vendor convolution alone (forward rows) took, per call: "
              + "; ".join(f"{r['case']} [{r['algo']}] eager {_us(r['eager_vendor_cpu_s'])} us, ganx "
                          f"{_us(r['ganx_vendor_cpu_s'])} us" for r in rows if "eager_vendor_cpu_s" in r) + ".",
              "", "ATen op events of one forward+backward call (name x count):", ""]
    for r in rows:
        if r["phase"] == "fwd+bwd" and r["target"]:
            def fmt(d):
                return ", ".join(f"{k.replace('aten::', '')} x{v}" if v > 1 else k.replace("aten::", "")
                                 for k, v in d.items())
            lines.append(f"- {r['case']} [{r['algo']}]: eager {fmt(r['eager_event_names'])}; "
                         f"ganx {fmt(r['ganx_event_names'])}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None, default_out: Optional[Path] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: tiny tensors)")
    p.add_argument("--rounds", type=int, default=30, help="timed rounds per contender (default 30)")
    p.add_argument("--calls", type=int, default=200, help="calls per round (default 200)")
    p.add_argument("--tiny", action="store_true", help="a few calls: checks the script works, measures nothing")
    p.add_argument("--out", type=Path, default=default_out, help="folder for .md/.json; '-' writes nothing")
    args = p.parse_args(argv)
    md, payload = run(args)
    print(md)
    if args.out is not None and str(args.out) != "-":
        dev = f"cpu-{args.threads}core" if payload["device_type"] == "cpu" else \
            "cuda-" + "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name().lower())
        stem = "-".join(["host_overhead", dev] + (["tiny"] if args.tiny else []) + [_dt.date.today().isoformat()])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{stem}.md").write_text(md)
        (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
        print(f"wrote {args.out / stem}.md and .json")
    return 0
