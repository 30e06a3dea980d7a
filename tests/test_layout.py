"""The package's imports run one way (README, "Where things live"): each module imports ganx only
from its own layer or a lower one, and only at module level (a ganx import inside a function would
hide a dependency direction). Reads the sources with ast; runs nothing."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "python" / "ganx"

# Lowest first. A module may import ganx modules of its own layer or of an earlier one.
LAYERS = [
    {"ganx._version", "ganx._limits", "ganx._io", "ganx._ext", "ganx._C"},
    {"ganx.data"},
    {"ganx.ops"},
    {"ganx.functional", "ganx.nn"},
    {"ganx.convert", "ganx.models"},
    {"ganx.metrics"},
    {"ganx.train", "ganx.bench"},
    {"ganx.cli", "ganx.__main__"},
]


def _layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    raise AssertionError(f"{module}: not in any layer of LAYERS (add it)")


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _ganx_imports(tree: ast.Module, name: str, is_pkg: bool):
    """(imported ganx module, line, at module level?) for every import of ganx in ``tree``."""
    top = set(id(n) for n in tree.body)
    top |= {id(n) for s in tree.body if isinstance(s, (ast.If, ast.Try)) for n in ast.walk(s)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            # `from ganx import nn` imports the module ganx.nn; `from ganx.x import f` imports ganx.x
            mods = [f"{base}.{a.name}" if base == "ganx" else base for a in node.names]
        else:
            continue
        for m in mods:
            if m == "ganx" or m.startswith("ganx."):
                yield m, node.lineno, id(node) in top


@pytest.mark.parametrize("name,path", [pytest.param(n, p, id=n) for n, p in _modules()])
def test_imports_run_one_way(name, path):
    tree = ast.parse(path.read_text(), str(path))
    own = _layer(name) if name != "ganx" else len(LAYERS)  # the package root re-exports the API
    for mod, line, at_top in _ganx_imports(tree, name, path.name == "__init__.py"):
        where = f"{path.relative_to(PKG.parent)}:{line}"
        assert at_top, f"{where}: `{mod}` is imported inside a function (move it to the top of the module)"
        if mod == "ganx":
            assert own == len(LAYERS) - 1, f"{where}: only the CLI imports the package root"
            continue
        assert _layer(mod) <= own, f"{where}: {name} (layer {own}) imports {mod} (layer {_layer(mod)}), a layer above"
