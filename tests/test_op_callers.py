"""Each op's C++ signature is written once for the C++ code that calls it through the dispatcher
(docs/design.md section 3, "how C++ calls an op"): every schema of csrc/ops.cpp has a typed caller
in csrc/ops/*.h, looked up with the caller's own declaration, and no other C++ file looks an op up
or spells its type. Reads the sources; runs nothing. (That a caller's type matches its schema is
checked by the dispatcher on the first call; the op tests call each one through the autograd or
autocast kernels.)"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
SOURCES = [p for ext in ("cpp", "h", "cu", "cuh") for p in CSRC.rglob(f"*.{ext}")]


def _schemas() -> set[str]:
    return set(re.findall(r'm\.def\("(\w+)\(', (CSRC / "ops.cpp").read_text()))


def _callers() -> dict[str, str]:
    """op name -> the name of the caller whose declaration types its handle."""
    out = {}
    for h in sorted((CSRC / "ops").glob("*.h")):
        for fn, op in re.findall(r'typed_op<decltype\((?:ops::)?(\w+)\)>\("ganx::(\w+)"\)', h.read_text()):
            assert op not in out, f"{op}: two callers"
            out[op] = fn
    return out


def test_every_op_has_one_typed_caller_named_after_it():
    schemas, callers = _schemas(), _callers()
    assert len(schemas) >= 11, schemas
    assert set(callers) == schemas
    assert all(fn == op for op, fn in callers.items()), callers


def test_only_the_callers_look_ops_up():
    ops_dir = CSRC / "ops"
    for p in SOURCES:
        if p.parent == ops_dir:
            continue
        text = p.read_text()
        for pattern in ("findSchemaOrThrow", ".typed<", "TypedOperatorHandle"):
            assert pattern not in text, f"{p.relative_to(ROOT)}: {pattern} (call the op's typed caller, csrc/ops/)"
