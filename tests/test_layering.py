"""Data flows one way through the package: scenes -> tasks -> models -> rl -> eval/viz (docs/architecture.md).

A module may import from its own layer or the ones above it in that list, never from one below, not even
inside a function (a lazy import hides a dependency, it does not remove it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYER = {  # subpackage -> position in the flow
    "scenes": 0,
    "acoustics": 0,
    "sounds": 0,
    "tasks": 1,
    "models": 2,
    "rl": 3,
    "eval": 4,
    "viz": 4,
}
ORCHESTRATION = ("asgf_nav.experiment", "asgf_nav.cli")  # top-level wiring that no layer may depend on


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, function-local ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def upward_imports(package: Path) -> list[str]:
    """``file:line -> module`` for each import of a later layer, of the orchestration or of ``baselines``."""
    wrong = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).parts
        if len(parts) < 2 or parts[0] not in LAYER:
            continue
        own = LAYER[parts[0]]
        for line, module in imported_modules(path):
            names = module.split(".")
            later = names[0] == "asgf_nav" and len(names) > 1 and LAYER.get(names[1], -1) > own
            if later or module.startswith(ORCHESTRATION) or names[0] == "baselines":
                wrong.append(f"{path.relative_to(package.parent)}:{line} -> {module}")
    return wrong


def test_no_layer_imports_a_later_one():
    assert upward_imports(REPO / "asgf_nav") == []


def test_the_check_finds_an_upward_import(tmp_path: Path):
    package = tmp_path / "asgf_nav"
    for sub in ("scenes", "tasks", "rl"):
        (package / sub).mkdir(parents=True)
    (package / "scenes" / "ok.py").write_text("from asgf_nav.scenes import floorplan\n")
    (package / "tasks" / "fine.py").write_text("import numpy\nfrom asgf_nav.scenes.store import SceneStore\n")
    (package / "scenes" / "lazy.py").write_text("def f():\n    from asgf_nav.tasks.world import TaskWorld\n")
    (package / "rl" / "wiring.py").write_text("import asgf_nav.experiment\n")
    assert upward_imports(package) == [
        "asgf_nav/rl/wiring.py:1 -> asgf_nav.experiment",
        "asgf_nav/scenes/lazy.py:2 -> asgf_nav.tasks.world",
    ]


@pytest.mark.parametrize("layer", sorted(LAYER))
def test_every_layer_exists(layer: str):
    assert (REPO / "asgf_nav" / layer / "__init__.py").exists(), f"docs/architecture.md names {layer}/"
