"""Data flows one way through the package: scenes -> tasks -> models -> rl -> eval/viz (docs/architecture.md).

A module may import from its own layer or the ones above it in that list, never from one below, not even
inside a function (a lazy import hides a dependency, it does not remove it). The utilities (config, io, ...)
serve every layer, so they import no layer beyond the documented exceptions; no layer or utility imports the
orchestration (cli, experiment, evaluation) or ``baselines``.
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
# top-level wiring that no layer or utility may depend on
ORCHESTRATION = ("experiment", "run_checks", "evaluation", "cli")
UTILITIES = (
    "config",
    "errors",
    "io",
    "safe_load",
    "safe_numpy",
    "pickle_budget",
    "devices",
    "termination",
    "logging_utils",
    "parallel",
)  # every layer may use them
# The layer modules a utility may import (docs/architecture.md names them): the config checks the scene count
# against scenes/presets.py, which imports nothing of the package but errors.py, itself importing nothing of it.
UTILITY_IMPORTS = {"config": ("asgf_nav.scenes.presets",)}
LEAF_UTILITIES = ("asgf_nav.errors",)  # import nothing of the package, so anything may import them


def imported_modules(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in a file of ``package``, function-local ones included.

    Relative imports are resolved against the file's package, and ``from a import b`` yields ``a.b`` (b may
    be a submodule, as in ``from asgf_nav import rl``, so ``a`` alone would not say what is imported).
    """
    module = (package.name, *path.relative_to(package).with_suffix("").parts)
    own_package = module[:-1]  # for an __init__.py, the package it initialises
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = own_package[: len(own_package) - (node.level - 1)]
                base = ".".join(part for part in (*parent, node.module) if part)
            found += [(node.lineno, base if alias.name == "*" else f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def wrong_import(own: str, module: str) -> bool:
    """Whether the layer or utility ``own`` (its name under asgf_nav) may not import ``module``."""
    names = module.split(".")
    if names[0] == "baselines":
        return True
    if names[0] != "asgf_nav" or len(names) < 2:
        return False
    target = names[1]
    if target in ORCHESTRATION:
        return True
    if own in UTILITIES:
        allowed = UTILITY_IMPORTS.get(own, ())
        exempt = any(module == name or module.startswith(name + ".") for name in allowed)
        return target in LAYER and not exempt
    return LAYER.get(target, -1) > LAYER[own]


def upward_imports(package: Path) -> list[str]:
    """``file:line -> module`` for each import of a later layer, of the orchestration or of ``baselines``
    by a layer, and of any layer (but the documented exceptions), the orchestration or ``baselines`` by a
    utility."""
    wrong = []
    for path in sorted(package.rglob("*.py")):
        own = path.relative_to(package).parts[0].removesuffix(".py")
        if own not in LAYER and own not in UTILITIES:
            continue  # the orchestration and the package's __init__ may import anything
        for line, module in imported_modules(path, package):
            if wrong_import(own, module):
                wrong.append(f"{path.relative_to(package.parent)}:{line} -> {module}")
    return wrong


def test_no_layer_imports_a_later_one():
    assert upward_imports(REPO / "asgf_nav") == []


def test_the_check_finds_an_upward_import(tmp_path: Path):
    package = tmp_path / "asgf_nav"
    for sub in ("scenes", "tasks", "rl"):
        (package / sub).mkdir(parents=True)
    files = {
        "scenes/ok.py": "from asgf_nav.scenes import floorplan\nfrom . import store\n",
        "tasks/fine.py": "import numpy\nfrom asgf_nav.scenes.store import SceneStore\nfrom ..scenes import navgraph\n",
        "tasks/utility.py": "from .. import config\nfrom ..io import atomic_write_text\n",
        "scenes/lazy.py": "def f():\n    from asgf_nav.tasks.world import TaskWorld\n",
        "rl/wiring.py": "import asgf_nav.experiment\n",
        "scenes/package_name.py": "from asgf_nav import rl\n",  # the later layer is an imported name
        "scenes/relative.py": "from ..rl import trainer\n",
        "scenes/orchestration.py": "from asgf_nav import experiment\n",
        "config.py": "from asgf_nav.scenes.presets import get_preset\n",  # documented exception
        "devices.py": "from .config import ConfigError\n",
        "io.py": "def f():\n    from asgf_nav.tasks import world\n",  # a utility importing a layer
    }
    for name, text in files.items():
        (package / name).write_text(text)
    assert upward_imports(package) == [
        "asgf_nav/io.py:2 -> asgf_nav.tasks.world",
        "asgf_nav/rl/wiring.py:1 -> asgf_nav.experiment",
        "asgf_nav/scenes/lazy.py:2 -> asgf_nav.tasks.world.TaskWorld",
        "asgf_nav/scenes/orchestration.py:1 -> asgf_nav.experiment",
        "asgf_nav/scenes/package_name.py:1 -> asgf_nav.rl",
        "asgf_nav/scenes/relative.py:1 -> asgf_nav.rl.trainer",
    ]


def test_the_layer_modules_a_utility_imports_import_nothing_of_the_package():
    """Otherwise the exception would let a utility depend on a layer through them."""
    package = REPO / "asgf_nav"
    for name in (*(name for names in UTILITY_IMPORTS.values() for name in names), *LEAF_UTILITIES):
        path = REPO / (name.replace(".", "/") + ".py")
        imported = [
            module
            for _, module in imported_modules(path, package)
            if module.startswith("asgf_nav.") and not module.startswith(LEAF_UTILITIES)
        ]
        assert imported == [], f"{path.relative_to(REPO)} imports {imported}"


def test_every_top_level_module_is_checked_or_orchestration():
    """A new top-level module must be declared a utility (and then scanned) or orchestration."""
    top = {path.stem for path in (REPO / "asgf_nav").glob("*.py")} - {"__init__"}
    assert top == set(UTILITIES) | set(ORCHESTRATION)
    doc = (REPO / "docs" / "architecture.md").read_text()
    assert [name for name in UTILITIES if f"`{name}`" not in doc] == [], "docs/architecture.md lists the utilities"


@pytest.mark.parametrize("layer", sorted(LAYER))
def test_every_layer_exists(layer: str):
    assert (REPO / "asgf_nav" / layer / "__init__.py").exists(), f"docs/architecture.md names {layer}/"
