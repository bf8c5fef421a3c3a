"""Scripts answer ``--help``, a usage error and a config error without importing torch (seconds of start-up).

Each case runs in a fresh interpreter: what a script imports before it fails or prints its help is what a user
waits for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.py"))

PROBE = r"""
import contextlib, io, json, runpy, sys

script, argv = sys.argv[1], json.loads(sys.argv[2])
sys.argv = [script, *argv]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "err": err.getvalue()}))
"""


def run_probe(script: str, *argv: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "scripts" / script), json.dumps(argv)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_every_script_is_probed():
    """A new script joins the checks below by being in scripts/."""
    assert {"train_ppo.py", "pretrain_doa.py", "eval_doa.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_does_not_import_torch(script):
    probe = run_probe(script, "--help")
    assert probe["code"] == 0, probe["err"]
    assert not probe["torch"], f"{script} --help imported torch"


@pytest.mark.parametrize(
    ("script", "argv", "said"),
    [
        ("train_ppo.py", ["--config", "tiny_heard", "ppo.num_envs=0"], "ppo.num_envs"),
        ("evaluate.py", ["--config", "tiny_heard", "--agent", "random", "ppo.lr=x"], "ppo.lr"),
        ("bake_spectrograms.py", ["--config", "tiny_heard", "task.no_such_key=1"], "task.no_such_key"),
        ("train_baselines.py", ["--config", "tiny_heard", "task.no_such_key=1"], "task.no_such_key"),
        ("tsne.py", ["--checkpoint", "none.pt", "task.no_such_key=1"], "task.no_such_key"),
        ("evaluate.py", ["--config", "tiny_heard", "--agent", "oracle", "--seed", "3"], "--seed"),
        # the DoA scripts' options come from their configs (models/doa/config.py, eval/doa_config.py)
        ("pretrain_doa.py", ["--bin-width", "7"], "--bin-width"),
        ("pretrain_doa.py", ["--model-dim", "30"], "--model-dim"),
        ("pretrain_doa.py", ["--seed", "1000"], "--seed"),
        ("pretrain_doa.py", ["--generated-instances", "1"], "--generated-instances"),
        ("eval_doa.py", ["--crnn", "none", "--gmm-train-examples", "3"], "--gmm-train-examples"),
        ("eval_doa.py", ["--crnn", "none", "--rooms", "attic"], "--rooms"),
    ],
)
def test_a_bad_command_line_is_refused_before_torch_is_imported(script, argv, said):
    probe = run_probe(script, *argv)
    assert probe["code"] == 2 and said in probe["err"], probe["err"]
    assert not probe["torch"], f"{script} imported torch before refusing {argv}"


def test_print_config_lists_every_key_without_importing_torch():
    """``train_ppo.py --print-config`` is read before anything runs: the keys at once, no torch, no training."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = PROBE.replace("contextlib.redirect_stdout(io.StringIO()), ", "")  # the listing is the output
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "scripts" / "train_ppo.py"),
         json.dumps(["--config", "tiny_heard", "--print-config", "ppo.lr=1e-4"])],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    *listing, probe = done.stdout.splitlines()
    assert json.loads(probe) == {"code": 0, "torch": False, "err": ""}
    assert "  lr: 0.0001  # Adam learning rate (default: 0.00025)" in listing
    assert (
        "  dataset: tiny  # replica | mp3d | tiny; tiny: three small scenes for tests and demos (default: 'replica')"
        in (listing)
    )


def test_the_model_packages_load_their_names_on_first_use():
    """asgf_nav.models and asgf_nav.models.doa name their exports (dir, star import) without importing torch;
    the first use of one loads it, and a misspelt name is an AttributeError."""
    code = """if True:
        import json, sys
        import asgf_nav.models as models, asgf_nav.models.doa as doa
        import asgf_nav.eval.doa_config, asgf_nav.models.doa.config
        listed = {"POLICY_REGISTRY" in dir(models), "SelectiveDoaNet" in dir(doa)}
        before = "torch" in sys.modules
        registry = sorted(models.POLICY_REGISTRY)
        try:
            doa.SelectiveDoaNt
            misspelt = "no error"
        except AttributeError as err:
            misspelt = str(err)
        print(json.dumps([sorted(listed), before, registry, doa.AzimuthGrid.__module__, misspelt]))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    listed, before, registry, home, misspelt = json.loads(done.stdout)
    assert listed == [True] and before is False
    assert {"asgf", "av_nav"} <= set(registry) and home == "asgf_nav.models.doa.features"
    assert misspelt == "module 'asgf_nav.models.doa' has no attribute 'SelectiveDoaNt'"
