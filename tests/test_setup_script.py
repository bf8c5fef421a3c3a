"""scripts/setup_env.sh (what `make setup` runs) must leave either a working venv or none at all.

On Debian without python3-venv, `python3 -m venv` fails after it has written bin/python; a venv left
like that has no pip, and a re-run that took it for a finished one would fail with "No module named pip"
until the user deletes it by hand. The tests run the script with a stand-in interpreter (no network, no
pip): its `-m venv` writes a stub bin/python that logs each call and either has pip or has not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "setup_env.sh"


def venv_python(kind: str) -> str:
    """A venv's bin/python: "ok" has pip and torch (every call succeeds), "nopip" is what a failed
    `python3 -m venv` leaves behind (no pip, no torch). Each call is logged in the venv's calls.log."""
    return f"""#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls.log"
[ {kind} = ok ]
"""


# The base interpreter: the version check runs on the real Python; `-m venv [--clear] ... DIR` makes the
# venv of $FAKE_VENV: "ok", or "broken" (write a pip-less venv, then fail as ensurepip does).
BASE_PYTHON = f"""#!/usr/bin/env bash
if [ "$1" != -m ]; then exec {sys.executable} "$@"; fi
echo "$*" >> "$FAKE_DIR/base.log"
dir="${{@: -1}}"
case " $* " in *" --clear "*) rm -rf "$dir" ;; esac
mkdir -p "$dir/bin"
echo "home = /usr/bin" > "$dir/pyvenv.cfg"
if [ "$FAKE_VENV" = ok ]; then kind=ok; else kind=nopip; fi
cp "$FAKE_DIR/venv_python_$kind" "$dir/bin/python"
[ "$FAKE_VENV" = ok ]
"""


def make_venv(venv: Path, kind: str) -> None:
    """A venv as `python -m venv` leaves it: pyvenv.cfg and a bin/python of the given kind."""
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = venv / "bin" / "python"
    python.write_text(venv_python(kind))
    python.chmod(0o755)


def run_setup(tmp_path: Path, venv_mode: str) -> subprocess.CompletedProcess[str]:
    """Run setup_env.sh on tmp_path/.venv with the stand-in base interpreter."""
    for name, text in {"python3": BASE_PYTHON, **{f"venv_python_{k}": venv_python(k) for k in ("ok", "nopip")}}.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    env = {**os.environ, "PYTHON": str(tmp_path / "python3"), "FAKE_VENV": venv_mode, "FAKE_DIR": str(tmp_path)}
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / ".venv")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def base_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "base.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_failed_venv_creation_leaves_no_venv(tmp_path: Path):
    result = run_setup(tmp_path, "broken")
    assert result.returncode != 0
    assert "apt-get install python3-venv" in result.stderr
    assert not (tmp_path / ".venv").exists(), "a half-made venv would be taken for a finished one"


def test_a_venv_without_pip_is_made_again(tmp_path: Path):
    make_venv(tmp_path / ".venv", "nopip")
    result = run_setup(tmp_path, "ok")
    assert result.returncode == 0, result.stderr
    assert [call for call in base_calls(tmp_path) if " venv " in f" {call} "] == [
        f"-m venv --clear --system-site-packages {tmp_path / '.venv'}"
    ]
    assert "-m pip install -e .[dev]" in (tmp_path / ".venv" / "calls.log").read_text().splitlines()


def test_a_working_venv_is_kept(tmp_path: Path):
    make_venv(tmp_path / ".venv", "ok")
    (tmp_path / ".venv" / "kept").write_text("")
    result = run_setup(tmp_path, "ok")
    assert result.returncode == 0, result.stderr
    assert base_calls(tmp_path) == []
    assert (tmp_path / ".venv" / "kept").exists()


def test_a_rerun_after_a_failed_creation_succeeds(tmp_path: Path):
    """The README's path: the set-up stops, the user installs python3-venv, runs it again."""
    assert run_setup(tmp_path, "broken").returncode != 0
    result = run_setup(tmp_path, "ok")
    assert result.returncode == 0, result.stderr
    assert "-m pip install -e .[dev]" in (tmp_path / ".venv" / "calls.log").read_text().splitlines()


def venv_with_torch(venv: Path, version: str, fake_dir: Path) -> None:
    """A venv whose python runs `-c` code on the real interpreter with a stand-in torch of ``version``
    (and succeeds at every other call, logging it)."""
    package = fake_dir / "torch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"import types\n__version__ = {version!r}\ncuda = types.SimpleNamespace(is_available=lambda: False)\n"
    )
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = venv / "bin" / "python"
    python.write_text(f"""#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls.log"
if [ "$1" = -c ]; then PYTHONPATH={fake_dir} exec {sys.executable} "$@"; fi
""")
    python.chmod(0o755)


def test_a_torch_older_than_the_pin_gets_the_cpu_build_not_the_cuda_one(tmp_path: Path):
    """Debian 12's python3-torch is 1.13: kept, it would leave pip to resolve torch>=2.6 from the default
    index, which on Linux is the multi-GB CUDA build."""
    installs = {}
    for version in ("1.13.1", "2.2.2", "2.5.1", "2.13.0+cpu"):
        root = tmp_path / version
        venv_with_torch(root / ".venv", version, root / "fake")
        assert run_setup(root, "ok").returncode == 0
        calls = (root / ".venv" / "calls.log").read_text().splitlines()
        installs[version] = [call for call in calls if call.startswith("-m pip install torch")]
    for old in ("1.13.1", "2.2.2", "2.5.1"):  # 2.5: cannot allowlist numpy 1's array names for a safe load
        assert installs[old] and all("download.pytorch.org/whl/cpu" in call for call in installs[old])
    assert installs["2.13.0+cpu"] == []  # a recent enough torch (CPU or CUDA build) is kept
