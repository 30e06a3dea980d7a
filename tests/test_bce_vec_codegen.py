"""The machine code of the SIMD loss kernel (csrc/cpu/bce_vec.cpp): each instruction-set copy must
do its exp/log1p work in vector registers of its width, not lane by lane.

Issue 28: on 16-lane GCC vector types, GCC 12 lowered the AVX2 copy's comparisons, selects and
conversions to scalar code, one lane at a time (no ymm work in most of the inner loop, ~20 ns a
logit, no faster than the baseline copy); every numerical test still passed. This reads the
disassembly (objdump) of each copy's `range<...>` functions: their hot loop (the innermost loop
with the polynomials' multiply-adds) must do them on ymm (AVX2) / zmm (AVX-512) / xmm (baseline
SSE2) registers, with no scalar compare, lane extract/insert or call in it. The hinge / Wasserstein
copies (`critic_range<...>`, no polynomials: FAMILIES) are held to the same rule.

Checked twice: the objects of the build tree the module was linked from (build/*/CMakeFiles, as
`pip install .` and CI leave them), and the source compiled here with the flags CMakeLists.txt
gives each copy (so a change of source or flags is caught without a build).
"""
from __future__ import annotations

import platform
import re
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "csrc" / "cpu" / "bce_vec.cpp"
ISAS = ("default", "avx2", "avx512")
# The register a copy's vector work must use, and the packed instructions that count as the
# polynomials' work (the baseline copy has no FMA: its multiply-adds are mulps + addps).
REG = {"default": "xmm", "avx2": "ymm", "avx512": "zmm"}
PACKED = {
    "default": re.compile(r"^v?(mul|add|sub)ps$"),
    "avx2": re.compile(r"^vfn?m(add|sub)\d{3}ps$"),
    "avx512": re.compile(r"^vfn?m(add|sub)\d{3}ps$"),
}
# Work on one lane of a vector: scalar compares, lane extracts/inserts (what the lowering of a
# too-wide vector type's compares and selects turns into).
LANEWISE = re.compile(r"^v?(u?comiss|cmp\w*ss|extractps|insertps|pextr[bwdq]|pinsr[bwdq])$")
MIN_PACKED = 16  # exp: 7 multiply-adds, log1p: 9 (per register of logits)

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the per-ISA copies exist on x86-64 only")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found")
    return path


def _functions(obj: Path) -> dict[str, list[tuple[int, str, str]]]:
    """Demangled function name -> [(address, mnemonic, operands)] from objdump."""
    out = subprocess.run([_tool("objdump"), "-d", "-C", "--no-show-raw-insn", str(obj)], capture_output=True,
                         text=True, check=True).stdout
    funcs: dict[str, list[tuple[int, str, str]]] = {}
    cur = None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = re.match(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return funcs


# The two families of range functions: the marker in their names, how many instantiations the
# object has, and how many packed multiply-adds on the copy's register make a loop the hot one.
FAMILIES = {
    # the BCE forms: exp (7 multiply-adds) and log1p (9); 5 coefficient forms x with/without statistics
    "bce": ("::range<", 10, MIN_PACKED),
    # the hinge / Wasserstein forms: no polynomials, one multiply-add per register, compares and selects
    "critic": ("::critic_range<", 4, 2),
}


def hot_loop_report(obj: Path, isa: str, family: str) -> dict[str, dict]:
    """For each range function of ``family`` in the object: its hot loop (the shortest loop, closed
    by a backward jump, with at least the family's count of packed multiply-adds on the copy's
    register) and what it contains. A function without such a loop reports None."""
    marker, _, min_packed = FAMILIES[family]
    reg, packed = REG[isa], PACKED[isa]
    report = {}
    for name, ins in _functions(obj).items():
        if marker not in name:
            continue
        index = {a: i for i, (a, _, _) in enumerate(ins)}
        best = None
        for i, (addr, op, args) in enumerate(ins):
            m = re.match(r"([0-9a-f]+) <", args)
            if not op.startswith("j") or m is None:
                continue
            target = int(m.group(1), 16)
            if target > addr or target not in index:
                continue
            body = ins[index[target]:i + 1]
            n_packed = sum(1 for _, o, r in body if packed.match(o) and f"%{reg}" in r)
            if n_packed < min_packed or (best is not None and len(body) >= best["length"]):
                continue
            best = {
                "length": len(body),
                "packed": n_packed,
                "lanewise": [f"{o} {r}" for _, o, r in body if LANEWISE.match(o)],
                "calls": [f"{o} {r}" for _, o, r in body if o.startswith("call")],
            }
        report[name] = best
    return report


def check_object(obj: Path, isa: str, family: str) -> None:
    marker, count, min_packed = FAMILIES[family]
    report = hot_loop_report(obj, isa, family)
    assert len(report) == count, (f"{obj}: expected the {count} {marker.lstrip(':')}...> instantiations, "
                                  f"found {sorted(report)}")
    for name, loop in report.items():
        assert loop is not None, (f"{obj} ({isa}): {name} has no loop with {min_packed} packed multiply-adds on "
                                  f"{REG[isa]} registers: the vector kernel degenerated to scalar code")
        assert not loop["lanewise"], (f"{obj} ({isa}): the hot loop of {name} works lane by lane: "
                                      f"{loop['lanewise'][:6]} ({len(loop['lanewise'])} such instructions)")
        assert not loop["calls"], f"{obj} ({isa}): the hot loop of {name} calls {loop['calls']}"


def _cmake_flags(isa: str) -> list[str]:
    """The compile flags CMakeLists.txt gives the copy (its common options plus _isa_flags_<isa>)."""
    text = (ROOT / "CMakeLists.txt").read_text()
    common = re.search(r"target_compile_options\(ganx_bce_\$\{_isa\} PRIVATE ([^)]*)\)", text)
    assert common, "CMakeLists.txt: the per-ISA compile options of ganx_bce_<isa> not found"
    flags = [f for f in shlex.split(common.group(1)) if not f.startswith("${")]
    if isa != "default":
        m = re.search(rf"set\(_isa_flags_{isa} ([^)]*)\)", text)
        assert m, f"CMakeLists.txt: _isa_flags_{isa} not found"
        flags += shlex.split(m.group(1))
    return flags + ["-std=c++17", "-fPIC", "-DNDEBUG", f"-DGANX_ISA=isa_{isa}", "-DGANX_HAVE_X86_ISAS",
                    f"-I{ROOT / 'csrc'}"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("bce_vec")

    def build(isa: str) -> Path:
        obj = out / f"{isa}.o"
        res = subprocess.run([cxx, *_cmake_flags(isa), "-c", str(SRC), "-o", str(obj)], capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stderr
        return obj

    with ThreadPoolExecutor(len(ISAS)) as pool:
        return dict(zip(ISAS, pool.map(build, ISAS)))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("isa", ISAS)
def test_source_compiles_to_vector_code(compiled, isa, family):
    check_object(compiled[isa], isa, family)


@pytest.mark.parametrize("isa", ISAS)
def test_built_objects_are_vector_code(isa):
    found = sorted(ROOT.glob(f"build/*/CMakeFiles/ganx_bce_{isa}.dir/csrc/cpu/bce_vec.cpp.o"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        pytest.skip("no build tree under build/ (ganx installed from elsewhere)")
    for family in FAMILIES:
        check_object(found[-1], isa, family)  # the newest build
