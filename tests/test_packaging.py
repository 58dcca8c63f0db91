"""Packaging: the console script, optional GPU extras stay optional, the algorithm layer stays Ray-free."""

import ast
import json
import pathlib
import shutil
import subprocess
import sys
from importlib import metadata

import solrl

ROOT = pathlib.Path(solrl.__file__).parent
ALGORITHM = ["quant", "sampling", "objectives", "models", "selection.py", "types.py"]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_console_script():
    exe = shutil.which("solrl", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "the `solrl` console script is not installed next to this interpreter"
    out = subprocess.run([exe, "--version"], check=True, capture_output=True, text=True).stdout
    assert out.strip() == solrl.__version__
    info = json.loads(subprocess.run([exe, "info"], check=True, capture_output=True, text=True).stdout)
    assert info["nvfp4_backends"]["emulated"] == "ok"
    assert info["nvfp4_backends"]["transformer_engine"].startswith("unavailable")


def test_gpu_extras_are_not_imported_by_the_core():
    code = (
        "import sys, solrl.quant, solrl.sampling, solrl.selection, solrl.objectives.nft, solrl.models.tiny, "
        "solrl.learner.nft_trainer\n"
        "from solrl.quant.backends import get_backend\n"
        "get_backend('transformer_engine'); get_backend('torchao')\n"
        "print(' '.join(m for m in ('ray', 'transformer_engine', 'vllm') if m in sys.modules))"
    )
    assert _run(code).strip() == ""


def test_quant_layer_imports_neither_torchao_nor_diffusers():
    code = "import sys, solrl.quant; print(' '.join(m for m in ('torchao', 'diffusers', 'peft') if m in sys.modules))"
    assert _run(code).strip() == ""


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_algorithm_layer_never_imports_ray():
    files = []
    for part in ALGORITHM:
        p = ROOT / part
        files += list(p.rglob("*.py")) if p.is_dir() else [p]
    assert len(files) > 10
    offenders = [str(f.relative_to(ROOT)) for f in files if "ray" in _imports(f)]
    assert offenders == []


def test_base_requirements_pull_no_gpu_packages():
    requires = metadata.requires("solrl") or []
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if any(k in r.lower() for k in ("nvidia", "cuda", "transformer-engine", "vllm", "triton"))]
    extras = metadata.metadata("solrl").get_all("Provides-Extra")
    assert {"test", "transformer-engine", "torchao", "vllm"} <= set(extras)
