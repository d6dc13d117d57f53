"""The package's rooms keep their doors: pure math and the tracking core never reach for files,
the command line or torch, and importing the library pulls in no I/O or CLI module."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "samv2_jax"

# What each room may not import, at module level or inside a function.
FORBIDDEN = {
    "modeling": ("samv2_jax.io", "samv2_jax.app", "samv2_jax.tracking", "samv2_jax.predictors",
                 "samv2_jax.weights", "samv2_jax.train", "torch", "PIL", "av", "convert"),
    "tracking": ("samv2_jax.io", "samv2_jax.app", "samv2_jax.predictors", "samv2_jax.train",
                 "torch", "PIL", "av", "convert"),
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = path.relative_to(ROOT).with_suffix("").parts[:-node.level]
                base = ".".join(parts + ((node.module,) if node.module else ()))
            else:
                base = node.module or ""
            yield node.lineno, base


def _hits(room: str):
    bad = []
    for path in sorted((PKG / room).rglob("*.py")):
        for line, name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[room]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_nothing_it_must_not(room):
    assert list((PKG / room).rglob("*.py")), room
    assert _hits(room) == []


def test_the_checker_sees_lazy_imports(tmp_path):
    """Guard for the test above: an import inside a function is found too."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    import torch\n    from samv2_jax.io import frames\n")
    assert [n for _, n in _imports(f)] == ["torch", "samv2_jax.io"]


def test_no_library_module_imports_the_top_level_convert_package():
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in sorted(PKG.rglob("*.py"))
           for line, name in _imports(p) if name == "convert" or name.startswith("convert.")]
    assert bad == []


def test_importing_the_library_loads_no_io_or_cli_module():
    code = ("import sys, samv2_jax, samv2_jax.modeling, samv2_jax.tracking.step;"
            "[getattr(samv2_jax, name) for name in samv2_jax.__all__];"
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    ours = [m for m in out if m.startswith("samv2_jax.")]
    assert "samv2_jax.modeling.hiera" in ours  # the check looks at the right list
    assert [m for m in ours if m.startswith(("samv2_jax.io", "samv2_jax.app"))] == []
    assert [m for m in ("torch", "PIL", "av", "tqdm", "convert") if m in out] == []


def test_import_is_lazy():
    """`import samv2_jax` (and so the `samv2` command's start and --help) imports no JAX; a
    public name brings in what it needs."""
    code = ("import sys, samv2_jax; print('jax' in sys.modules);"
            "samv2_jax.SAM2VideoPredictor; print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    assert out == ["False", "True"]
    import samv2_jax

    assert set(samv2_jax.__all__) <= set(dir(samv2_jax))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        samv2_jax.nothing  # noqa: B018
