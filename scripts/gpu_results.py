#!/usr/bin/env python3
"""Unpacks a GPU check's archive (scripts/gpu_check.sh) into benchmarks/results/ for committing.

    python scripts/gpu_results.py /work/.device/.../gpu_check.tar.gz [--dest benchmarks/results]

Writes ``DEST/gpu-check-<device>-<date>/`` with every file of the archive (and the console log
``gpu_check.log`` when it lies beside the archive), and puts the run's
environment (device, driver, CUDA, cuDNN, torch, ganx commit, date: environment.json of the
archive) at the top of each file that does not carry it already: a ``#`` line in the logs and
text files, an XML comment in the junit files. The benchmarks' own .md/.json carry it in their
header and ``env``. Prints the folder and a short table of the step results (summary.txt).
Needs no GPU; nothing here imports torch.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def header(env: dict) -> str:
    return (f"GPU check {env.get('mode', '?')}: device {env.get('device')} (sm {env.get('compute_capability')}), "
            f"driver {env.get('driver')}, CUDA {env.get('cuda_runtime')}, cuDNN {env.get('cudnn')}, "
            f"torch {env.get('torch')}, Python {env.get('python')}, ganx commit {env.get('commit')}, "
            f"date {env.get('date')}")


def slug(text: str) -> str:
    text = re.sub(r"^(NVIDIA|CPU only:)\s*", "", str(text), flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("archive", type=Path, help="gpu_check.tar.gz as the device run brought it back")
    p.add_argument("--dest", type=Path, default=ROOT / "benchmarks" / "results",
                   help="where the gpu-check-<device>-<date> folder goes (default benchmarks/results)")
    args = p.parse_args(argv)
    with tarfile.open(args.archive) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile() and "/" in m.name}
        if "environment.json" not in members:
            raise SystemExit(f"gpu_results: {args.archive} has no gpu-check/environment.json: not a GPU check archive")
        env = json.load(tar.extractfile(members["environment.json"]))
        head = header(env)
        folder = args.dest / f"gpu-check-{slug(env.get('device'))}-{str(env.get('date', 'undated'))[:10]}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, m in sorted(members.items()):
            if "/" in name or name.startswith("."):
                continue  # only the flat files the check writes
            data = tar.extractfile(m).read()
            if name.endswith((".log", ".txt")):
                data = f"# {head}\n".encode() + data
            elif name.endswith(".xml"):
                text = data.decode(errors="replace")
                decl = re.match(r"<\?xml[^>]*\?>", text)
                cut = decl.end() if decl else 0
                data = (text[:cut] + f"<!-- {head.replace('--', '-')} -->" + text[cut:]).encode()
            (folder / name).write_bytes(data)
    log = args.archive.with_name("gpu_check.log")  # the console output, beside the archive
    if log.is_file():
        (folder / log.name).write_bytes(f"# {head}\n".encode() + log.read_bytes())
    print(f"wrote {len(list(folder.iterdir()))} files into {folder}")
    print(head)
    summary = folder / "summary.txt"
    if summary.exists():
        for line in summary.read_text().splitlines():
            if line.startswith(("==", "   ->", "   TIMED", "   KILLED", "!!")):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
