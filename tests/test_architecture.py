"""The shape of the code: the import rules of docs/ARCHITECTURE.md, module sizes, and the document itself.

Data flows one way (load → detect → align → route → restore → paste → save); these tests fail the
moment a module reaches back up, so the rules stay true without anyone re-reading every import.
Imports are read from the source with ``ast`` (every ``import``, including the ones inside functions).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "facerestore_cli"
ARCHITECTURE = PACKAGE.parent / "docs" / "ARCHITECTURE.md"
MAX_LINES = 750

#: What the CLI may import from: the package's public API and these facades (their ``__all__`` only).
PUBLIC_MODULES = {
    "facerestore_cli",
    "facerestore_cli.album",
    "facerestore_cli.defaults",
    "facerestore_cli.device",
    "facerestore_cli.doctor",
    "facerestore_cli.face",
    "facerestore_cli.imagefile",
    "facerestore_cli.models",
    "facerestore_cli.references",
    "facerestore_cli.report",
    "facerestore_cli.review",
    "facerestore_cli.train",
    "facerestore_cli.weights",
}
#: The layers above the stages: nothing below them may import these.
#: The CLI: ``cli.py`` and the command modules it registers (``cli_*.py``).
CLI = ("facerestore_cli.cli", "facerestore_cli.cli_common", "facerestore_cli.cli_refs", "facerestore_cli.cli_weights",
       "facerestore_cli.cli_train")  # fmt: skip
TOP = ("facerestore_cli.engine", "facerestore_cli.runner", *CLI)
#: Modules allowed to import the top layers: the CLI, the public API, the 0.1 compatibility wrapper,
#: and the Ray runner (``cluster``: an ``AlbumRunner`` whose photos are restored by Ray actors).
ABOVE_STAGES = {
    "facerestore_cli", "facerestore_cli.__main__", *CLI,
    "facerestore_cli.pipeline", "facerestore_cli.engine", "facerestore_cli.runner", "facerestore_cli.cluster",
}  # fmt: skip


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import statement in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names]))
    return found


def ours(name: str) -> bool:
    return name == "facerestore_cli" or name.startswith("facerestore_cli.")


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(rule) -> list[str]:
    out = []
    for name, path in modules().items():
        for target, names in imports_of(path):
            if ours(target):
                why = rule(name, target, names)
                if why:
                    out.append(f"{name} imports {target} ({why})")
    return out


def test_models_import_nothing_from_weights_train_or_the_face_stages():
    def rule(name, target, _names):
        if within(name, "facerestore_cli.models") and not (
            within(target, "facerestore_cli.models") or target == "facerestore_cli._lazy"
        ):
            return "a model is numbers in, numbers out: it imports only models/ and _lazy"
        return None

    assert violations(rule) == []


def test_no_stage_imports_the_engine_the_runner_or_the_cli():
    def rule(name, target, _names):
        if name not in ABOVE_STAGES and any(within(target, top) for top in TOP):
            return "stages never reach back up"
        return None

    assert violations(rule) == []


def test_face_stages_never_import_references_or_restorers():
    def rule(name, target, _names):
        if within(name, "facerestore_cli.face") and any(
            within(target, f"facerestore_cli.{m}") for m in ("references", "restore", "models", "paste", "weights")
        ):
            return "the face stages know nothing of references, restorers or weights"
        return None

    assert violations(rule) == []


def test_the_cli_imports_only_the_public_api():
    problems = []
    own = {name.rpartition(".")[2] for name in CLI}
    for name in CLI:
        for target, names in imports_of(modules()[name]):
            if not ours(target) or target in CLI:
                continue
            names = [n for n in names if n not in own]  # the command modules are the CLI's own
            if target not in PUBLIC_MODULES:
                problems.append(f"{name} imports {target}: not a public module")
                continue
            public = set(getattr(importlib.import_module(target), "__all__", ()))
            problems += [f"{name} imports {target}.{n}: not in its __all__" for n in names if n not in public]
    assert problems == []


def test_public_facades_export_what_they_list():
    for target in sorted(PUBLIC_MODULES):
        module = importlib.import_module(target)
        assert hasattr(module, "__all__"), f"{target} has no __all__"
        for n in module.__all__:
            assert getattr(module, n, None) is not None, f"{target}.__all__ lists {n}, which does not resolve"


def test_no_module_is_over_750_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_architecture_document_lists_every_module_and_only_real_ones():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    listed = set(re.findall(r"`(facerestore_cli/[\w/]+\.py)`", text))
    every = {str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")}
    assert listed - every == set(), "the document names modules that do not exist"
    modules_ = {m for m in every if not m.endswith("__init__.py")}  # packages are described by their heading
    assert modules_ - listed == set(), "modules the document does not describe"


@pytest.mark.parametrize("target", ["facerestore_cli", "facerestore_cli.face", "facerestore_cli.references"])
def test_importing_a_facade_loads_nothing_heavy(target):
    import subprocess
    import sys

    code = f"import sys, {target}; print(sorted(m for m in ('torch', 'dlib', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
