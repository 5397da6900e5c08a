"""engine/ knows nothing of Flask, HTTP or web/: proved by importing it with those made unimportable."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
FORBIDDEN = ("flask", "werkzeug", "web", "flask_login", "flask_babel", "flask_wtf")


def test_engine_imports_with_flask_absent() -> None:
    modules = sorted(
        "engine." + ".".join(p.relative_to(ENGINE).with_suffix("").parts)
        for p in ENGINE.rglob("*.py")
        if "migrations" not in p.parts and p.name != "__init__.py"
    )
    blocker = "; ".join(f"sys.modules[{name!r}] = None" for name in FORBIDDEN)
    code = f"import sys; {blocker}; import importlib; [importlib.import_module(m) for m in {modules!r}]"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ENGINE.parent)
    assert result.returncode == 0, result.stderr


def test_no_engine_module_names_a_web_package() -> None:
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
