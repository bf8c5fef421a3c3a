"""What a wheel of the package carries: every data file the code reads at run time, the named configs included."""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

import pytest

from asgf_nav.config import CONFIG_DIR

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
NAMED_CONFIGS = {"replica_heard", "replica_unheard", "mp3d_heard", "mp3d_unheard", "tiny_heard"}


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="lists the files git tracks: needs a git checkout")
def test_every_tracked_data_file_of_the_packages_matches_a_package_data_pattern() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    tracked = subprocess.run(
        ["git", "ls-files", "asgf_nav", "baselines"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    data = [f for f in tracked if not f.endswith(".py")]
    left_out = [f for f in data if not any(fnmatch.fnmatch(Path(f).name, p) for p in patterns)]
    assert len(data) > 100 and not left_out, f"not shipped in a wheel: {left_out}"
    assert {Path(f).stem for f in data if f.startswith("asgf_nav/configs/")} == NAMED_CONFIGS


def test_named_configs_are_looked_up_inside_the_package() -> None:
    assert CONFIG_DIR == ROOT / "asgf_nav" / "configs"
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == NAMED_CONFIGS


def test_importing_the_package_on_windows_says_what_it_needs_at_once() -> None:
    """Without the check, Windows stopped at a missing fcntl deep inside the first import, even for --help."""
    import sys

    code = "import sys; sys.platform = 'win32'; import asgf_nav"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ImportError: ASGF-Nav runs on Linux and macOS" in done.stderr and "WSL2" in done.stderr
