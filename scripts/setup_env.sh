#!/usr/bin/env bash
# Creates the project's virtual environment and installs the package with its test tools.
# An existing torch (e.g. a CUDA build in the base interpreter) is kept: the venv sees system site-packages.
# Without one, the CPU build of torch is installed, never the multi-GB CUDA wheels.
set -euo pipefail
venv="${1:-.venv}"
python="${PYTHON:-python3}"

"$python" - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"ASGF-Nav needs Python >= 3.10, found {sys.version.split()[0]}")
PY

# A venv without pip is remade: on Debian without python3-venv, `python3 -m venv` fails only after it has
# written bin/python, and a re-run must not take that half-made venv for a finished one.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    if ! "$python" -m venv --clear --system-site-packages "$venv"; then
        # Remove the half-made venv (only a venv: pyvenv.cfg is its first file) so that no later command uses it.
        if [ -f "$venv/pyvenv.cfg" ]; then rm -rf "$venv"; fi
        echo "creating the virtual environment $venv with $python -m venv failed;" \
            "on Debian install it with: apt-get install python3-venv" >&2
        exit 1
    fi
fi
pip=("$venv/bin/python" -m pip)

# torch >= 2.6 as pyproject asks (checkpoints are read without running code from them): an older one the base interpreter offers (Debian 12's python3-torch is 1.13)
# would otherwise leave pip to fetch torch from the default index, which on Linux is the CUDA build
if ! "$venv/bin/python" -c "import sys, torch; v = torch.__version__.split('+')[0].split('.'); \
sys.exit(0 if (int(v[0]), int(v[1])) >= (2, 6) else 1)" 2>/dev/null; then
    # A plain `pip install torch` on Linux pulls the CUDA build. Use a CPU wheel that pip's configured
    # find-links provide (it sorts above the index's build), else PyTorch's CPU wheel index.
    probe=$(mktemp -d)
    if "${pip[@]}" download -q --no-deps --no-index -d "$probe" "torch==2.13.0" 2>/dev/null \
        && ls "$probe"/torch-*+cpu-*.whl >/dev/null 2>&1; then
        "${pip[@]}" install "torch==2.13.0"
    else
        # The CPU index's "+cpu" build sorts above the default index's CUDA build of the same version.
        "${pip[@]}" install torch --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
    fi
    rm -rf "$probe"
fi
"${pip[@]}" install -e ".[dev]"
"$venv/bin/python" -c "import torch, asgf_nav; print('asgf_nav ready; torch', torch.__version__, \
'cuda' if torch.cuda.is_available() else 'cpu')"
