"""The architecture as tests: import direction between the packages, and the README's file tree.

training -> router <- serving; router imports neither; serving never imports training; nothing in
the installed packages imports benchmarks/ or tests/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"router": "fedrouter.router", "serving": "fedrouter.serving", "training": "fedrouter.training"}
# what each folder may import from the project (besides itself)
ALLOWED = {
    "router": set(),
    "serving": {"router"},
    "training": {"router"},
    "fedrouter": {"router", "serving", "training"},  # the CLI and the demo are the top floor
}
FORBIDDEN_ANYWHERE = ("benchmarks", "tests")


def project_imports(path: Path) -> set[str]:
    """Top-level project parts a module imports: 'router', 'serving', 'training', 'fedrouter',
    'benchmarks', 'tests' (absolute imports only; the project has no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fedrouter" and len(parts) > 1 and parts[1] in PACKAGES:
                found.add(parts[1])
            elif parts[0] in PACKAGES or parts[0] in FORBIDDEN_ANYWHERE:
                found.add(parts[0] if parts[0] in FORBIDDEN_ANYWHERE else f"bare:{parts[0]}")
    return found


def violations(folder: str, root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((root / folder).rglob("*.py")):
        for part in project_imports(path):
            if part.startswith("bare:"):
                out.append(f"{path.relative_to(root)} imports `{part[5:]}`; use `fedrouter.{part[5:]}`")
            elif part in FORBIDDEN_ANYWHERE:
                out.append(f"{path.relative_to(root)} imports {part}/, which nothing installed may import")
            elif part != folder and part not in ALLOWED[folder]:
                out.append(
                    f"{path.relative_to(root)} imports fedrouter.{part} ({folder} may import {sorted(ALLOWED[folder]) or 'nothing'})"
                )
    return out


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_import_direction(folder):
    assert violations(folder) == []


def test_import_check_catches_a_violation(tmp_path):
    bad = tmp_path / "router"
    bad.mkdir()
    (bad / "x.py").write_text("from fedrouter.serving.app import create_app\nimport benchmarks.run\n")
    found = violations("router", root=tmp_path)
    assert any("fedrouter.serving" in v for v in found) and any("benchmarks/" in v for v in found)


def readme_tree() -> list[str]:
    """Paths in README's `## Files` block: each line starts with a path; indented lines are inside
    the last folder line above them."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Files\n+```\n(.*?)```", text, re.S)
    assert block, "README.md has no ## Files tree"
    paths, folder = [], ""
    for line in block.group(1).splitlines():
        if not line.strip() or line.startswith(" " * 8):  # blank, or a description's continuation
            continue
        indented = line.startswith(" ")
        names = re.match(r"\s*((?:[\w.\-/]+(?:\s{2}|(?=\s)|$))+)", line).group(1).split()
        for name in names:
            if not re.fullmatch(r"[\w.\-/]+", name) or not ("." in name or name.endswith("/")):
                break
            full = (folder + name) if indented else name
            paths.append(full)
            if not indented and name.endswith("/"):
                folder = name
    return paths


def test_readme_tree_lists_files_that_exist():
    missing = [p for p in readme_tree() if not (ROOT / p).exists()]
    assert missing == [], f"README's file tree names paths that do not exist: {missing}"


def test_readme_tree_lists_every_module():
    listed = set(readme_tree())
    unlisted = []
    for folder in ("fedrouter", "router", "serving", "training"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if (
                path.name == "__init__.py"
                or rel in listed
                or any(rel.startswith(p) for p in listed if p.endswith("/") and p.count("/") > 1)
            ):
                continue
            unlisted.append(rel)
    assert unlisted == [], f"README's file tree does not list: {unlisted}"


def test_every_subpackage_is_installed():
    """pyproject lists the packages explicitly (package-dir maps folders under `fedrouter`): a new
    subfolder with an __init__.py must be listed, or a wheel would ship without it."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {"fedrouter"} | {
        ".".join(["fedrouter", *init.parent.relative_to(ROOT / "fedrouter").parts])
        for init in (ROOT / "fedrouter").rglob("*/__init__.py")
    }
    for folder, name in PACKAGES.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set(), f"add to [tool.setuptools] packages and package-dir: {sorted(found - listed)}"
    dirs = setuptools["package-dir"]
    for folder, name in PACKAGES.items():
        for package in sorted(p for p in found if p.startswith(name)):
            expected = "/".join([folder, *package.split(".")[2:]])
            assert dirs.get(package) == expected, f"package-dir must map {package!r} to {expected!r}"
