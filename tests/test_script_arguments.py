"""Scripts' argument checks: bad input ends with one ``SCRIPT: error: --flag: ...`` line and exit status 2,
before any expensive work and without a traceback.

Every case runs the script file as ``__main__`` (so through ``cli.run_script``) in one subprocess shared by
all cases, which pays the package's import time once instead of once per case.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asgf_nav.eval.evaluator import EpisodeRecord
from asgf_nav.eval.report import write_evaluation

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"

# Runs [script, argv] cases given as JSON on stdin, each like `python script argv...`; prints [[status, stderr]].
DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback

results = []
for script, argv in json.loads(sys.stdin.read()):
    sys.argv = [script, *argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what Python would print as a traceback
            traceback.print_exc()
            code = 1
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""

META = {"dataset": "tiny", "sound_split": "heard", "split": "test", "episode_list": "same"}


def _records(spl: float, start_node: int = 0) -> list[EpisodeRecord]:
    """Three episodes of tiny_room_test, all with the given SPL (no scene is opened for them)."""
    metrics = {"spl": spl, "success": float(spl > 0), "sna": spl, "softspl": spl, "distance_to_goal": 0.0,
               "num_actions": 2.0}  # fmt: skip
    episode = {
        "scene": "tiny_room_test", "sound": "telephone", "start_node": start_node, "start_yaw": 0, "goal_node": 1,
        "start_position": [0.0, 0.0, 0.0], "goal_position": [1.0, 0.0, 0.0], "geodesic_distance": 1.0,
        "num_action": 2, "actions": [1, 0], "path": [[0, 0], [1, 0], [1, 0]], "metrics": metrics,
    }  # fmt: skip
    return [EpisodeRecord(episode_id=str(i), **episode) for i in range(3)]


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory) -> dict[str, Path]:
    """Evaluation directories: oracle and random on tiny heard test, oracle again, and oracle on unheard test."""
    root = tmp_path_factory.mktemp("evals")
    runs = {
        "oracle": ({**META, "agent": "oracle"}, 1.0),
        "random": ({**META, "agent": "random"}, 0.0),
        "oracle_rerun": ({**META, "agent": "oracle"}, 0.5),
        "oracle_unheard": ({**META, "agent": "oracle", "sound_split": "unheard"}, 1.0),
        "random_far": ({**META, "agent": "random"}, 0.0),  # its episode files started elsewhere
    }
    for name, (meta, spl) in runs.items():
        write_evaluation(root / name, _records(spl, start_node=5 if name == "random_far" else 0), meta)
    return {name: root / name for name in runs}


@pytest.fixture(scope="module")
def av_nav_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint file of the av_nav policy (no ASE module); its weights are never loaded."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "ckpt_000001.pt"
    state = {
        "model": {}, "optimizer": {}, "update": 1, "frames": 10, "rng": {},
        "config": {"model": {"policy": "av_nav"}}, "policy_name": "av_nav",
    }  # fmt: skip
    torch.save(state, path)
    return path


def _cases(evals: dict[str, Path], checkpoint: Path, work: Path) -> dict[str, tuple[str, list[str], list[str]]]:
    """case id -> (script, argv, what its last stderr line must hold; empty: it must succeed)."""
    empty = str(work / "empty_root")  # no baked scenes: a case that got past its check fails quickly
    built = str(work / "built_root")
    oracle, random, rerun, unheard = (str(evals[k]) for k in ("oracle", "random", "oracle_rerun", "oracle_unheard"))
    vis = [oracle, random, "--data-root", empty, "--out", str(work / "map.png")]
    tsne = ["--dataset", "tiny", "--data-root", empty, "--checkpoint", str(checkpoint), "--out", str(work / "t.png")]
    base = ["--config", "tiny_heard", "--data-root", empty, "--out", str(work / "model.pt")]
    bake = ["--config", "tiny_heard", "--data-root", empty, "--out", str(work / "spec")]
    build = ["--dataset", "tiny", "--stages", "layout", "--data-root", built]
    show = ["--config", "tiny_heard", "--scene", "tiny_room_val", "--data-root", built, "--out", str(work / "s.png")]
    tiny_show = [*show, "--dataset", "tiny"]  # the dataset given: each case checks only its own flag
    return {
        # 1. visualize_trajectories
        "vis_labels": ("visualize_trajectories", [*vis, "--labels", "one"], ["--labels", "1 labels", "2 run(s)"]),
        "vis_fps_0": ("visualize_trajectories", [*vis, "--fps", "0"], ["--fps", "must be positive"]),
        "vis_fps_neg": ("visualize_trajectories", [*vis, "--fps", "-2"], ["--fps", "must be positive"]),
        "vis_frames_0": ("visualize_trajectories", [*vis, "--max-frames", "0"], ["--max-frames", "must be positive"]),
        "vis_frames_neg": ("visualize_trajectories", [*vis, "--max-frames", "-5"], ["--max-frames", "got -5"]),
        "vis_video": ("visualize_trajectories", [*vis, "--video", str(work / "e.avi")], ["--video", "e.avi", ".mp4"]),
        "vis_episodes": (
            "visualize_trajectories",
            [oracle, unheard, "--data-root", empty, "--out", str(work / "m.png")],
            ["runs:", oracle, unheard, "sound_split 'heard' vs 'unheard'"],
        ),
        "vis_episode_list": (  # the same split and scene, but other episodes under the same id
            "visualize_trajectories",
            [oracle, str(evals["random_far"]), "--episode", "1", "--data-root", empty, "--out", str(work / "m.png")],
            ["--episode: episode tiny_room_test/1 is another episode in", "(start_node 0 vs 5)"],
        ),
        "vis_no_common": (  # no episode is the same in both: none to pick
            "visualize_trajectories",
            [oracle, str(evals["random_far"]), "--data-root", empty, "--out", str(work / "m.png")],
            ["error: the evaluations share no episode"],
        ),
        # 2. tsne
        "tsne_av_nav": ("tsne", tsne, ["--checkpoint", str(checkpoint), "'av_nav'", "no ASE module"]),
        "tsne_seed": ("tsne", [*tsne, "--seed", "-1"], ["--seed", "must be >= 0", "got -1"]),
        "tsne_samples": ("tsne", [*tsne, "--samples", "3"], ["--samples", "must be >= 5", "got 3"]),
        "tsne_out": ("tsne", [*tsne[:-2], "--out", str(work / "t3.npz")], ["--out", "t3.npz", "no figure format"]),
        # 3. train_baselines
        "base_samples": ("train_baselines", [*base, "--samples", "1"], ["--samples", "must be >= 5", "got 1"]),
        "base_samples_4": ("train_baselines", [*base, "--samples", "4"], ["--samples", "got 4"]),
        "base_threads_0": ("train_baselines", [*base, "--threads", "0"], ["--threads", "must be positive"]),
        "base_threads_neg": ("train_baselines", [*base, "--threads", "-1"], ["--threads", "must be positive"]),
        "base_scenes": (
            "train_baselines",
            [*base, "--scenes", "tiny_apartment", "tiny_room_test"],
            ["--scenes", "['tiny_room_test'] not in the train split of tiny", "['tiny_apartment']"],
        ),
        "base_seed": ("train_baselines", [*base, "--seed", "-1"], ["--seed", "must be >= 0", "got -1"]),
        "base_out_checkpoint": (  # a policy checkpoint given as --out by mistake is not replaced
            "train_baselines",
            [*base, "--out", str(checkpoint)],
            ["--out", str(checkpoint), "is no baseline audio model to replace"],
        ),
        # 3b. evaluate (the random agent's seed)
        "eval_seed": (
            "evaluate",
            ["--config", "tiny_heard", "--data-root", empty, "--agent", "random", "--seed", "-1", "--out", str(work)],
            ["--seed", "must be >= 0", "got -1"],
        ),
        "eval_seed_of_an_oracle": (  # ignored, it labelled identical draws as other seeds
            "evaluate",
            ["--config", "tiny_heard", "--data-root", empty, "--agent", "oracle", "--seed", "3", "--out", str(work)],
            ["--seed seeds the random baseline; --agent oracle draws nothing"],
        ),
        "eval_seed_of_a_checkpoint": (
            "evaluate",
            ["--config", "tiny_heard", "--data-root", empty, "--checkpoint", str(checkpoint), "--seed", "3"],
            ["--seed seeds the random baseline; a checkpoint samples with train.seed=N"],
        ),
        "eval_training_device": (  # parsed and dropped: the evaluation ran on --device's cpu without a word
            "evaluate",
            ["--config", "tiny_heard", "--data-root", empty, "--agent", "oracle", "train.device=cuda:5"],
            ["train.device sets training's; an evaluation takes --device"],
        ),
        "eval_training_envs": (
            "evaluate",
            ["--config", "tiny_heard", "--data-root", empty, "--agent", "oracle", "ppo.num_envs=7"],
            ["ppo.num_envs sets training's; an evaluation takes --num-envs"],
        ),
        "eval_training_envs_as_a_section": (
            "evaluate",
            ["--config", "tiny_heard", "--data-root", empty, "--agent", "oracle", "ppo={num_envs: 7}"],
            ["ppo.num_envs sets training's; an evaluation takes --num-envs"],
        ),
        # 4. bake_spectrograms
        "bake_threads": ("bake_spectrograms", [*bake, "--threads", "-1"], ["--threads", "must be >= 0"]),
        "bake_sounds": (
            "bake_spectrograms",
            [*bake, "--dry-run", "--sounds", "telephone", "nosuch"],
            ["--sounds", "['nosuch']", "['telephone']", "splits.json"],
        ),
        "bake_override": (
            "bake_spectrograms",
            [*bake, "--sounds", "telephone", "task.max_steps=5"],
            ["--sounds", "'task.max_steps=5' looks like a config override; put overrides before the option"],
        ),
        # 5. build_scenes and show_scene
        "build_num_neg": ("build_scenes", [*build, "--num-scenes", "-1"], ["--num-scenes", "must be >= 3"]),
        "build_num_0": ("build_scenes", [*build, "--num-scenes", "0"], ["--num-scenes", "got 0"]),
        "build_num_over": (
            "build_scenes",
            [*build, "--num-scenes", "4"],
            ["'scenes.num_scenes': preset 'tiny' has 3 scenes, fewer than num_scenes=4"],
        ),
        "build_size_neg": ("build_scenes", [*build, "--image-size", "-5"], ["--image-size", "must be positive"]),
        "build_size_0": ("build_scenes", [*build, "--image-size", "0"], ["--image-size", "got 0"]),
        "build_workers": ("build_scenes", [*build, "--workers", "-1"], ["--workers", "must be >= 0"]),
        "build_root": ("build_scenes", [*build[:-2], "--data-root", "/proc/x"], ["--data-root", "/proc/x"]),
        "build_override": (
            "build_scenes",
            [*build, "--scenes", "tiny_room_val", "scenes.image_size=32"],
            ["--scenes", "'scenes.image_size=32' looks like a config override; put overrides before the option"],
        ),
        # 0 means one worker per core; with a single pending scene this bakes in-process (show_ok needs it)
        "build_workers_0": ("build_scenes", [*build, "--workers", "0", "--scenes", "tiny_room_val"], []),
        "show_views_0": ("show_scene", [*tiny_show, "--views", "0"], ["--views", "must be positive"]),
        "show_views_neg": ("show_scene", [*tiny_show, "--views", "-3"], ["--views", "got -3"]),
        "show_size": ("show_scene", [*tiny_show, "--image-size", "-5"], ["--image-size", "must be positive"]),
        "show_root": ("show_scene", [*tiny_show, "--data-root", "/proc/x"], ["--data-root", "/proc/x"]),
        # --dataset defaults to the config's scenes.dataset (tiny), not replica
        "show_ok": ("show_scene", [*show, "--image-size", "16", "--rebake"], []),
        # 6. report
        "report_agents": (
            "report",
            [oracle, random, "--agents", "oracle", "orcale"],
            ["--agents", "['orcale']", "available agents: ['oracle', 'random']"],
        ),
    }


@pytest.fixture(scope="module")
def outcomes(evaluations, av_nav_checkpoint, tmp_path_factory) -> dict[str, tuple[int, str]]:
    work = tmp_path_factory.mktemp("work")
    cases = _cases(evaluations, av_nav_checkpoint, work)
    payload = json.dumps([[str(SCRIPTS / f"{script}.py"), argv] for script, argv, _ in cases.values()])
    done = subprocess.run(
        [sys.executable, "-c", DRIVER], input=payload, capture_output=True, text=True, timeout=240, cwd=work,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        case: (code, err, script, expected)
        for (case, (script, _, expected)), (code, err) in zip(cases.items(), results)
    }


def _check(outcomes: dict, *case_ids: str) -> None:
    for case in case_ids:
        code, err, script, expected = outcomes[case]
        assert "Traceback" not in err, f"{case}: {err[-3000:]}"
        if not expected:
            assert code == 0, f"{case}: {err[-2000:]}"
            continue
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert code == 2, f"{case}: exit {code}, stderr ends {last!r}"
        assert last.startswith(f"{script}.py: error: "), f"{case}: {last!r}"
        for part in expected:
            assert part in last, f"{case}: {part!r} not in {last!r}"


def test_visualize_trajectories_checks_labels_video_and_numbers(outcomes):
    _check(outcomes, "vis_labels", "vis_fps_0", "vis_fps_neg", "vis_frames_0", "vis_frames_neg", "vis_video")


def test_visualize_trajectories_refuses_evaluations_of_different_episodes(outcomes):
    _check(outcomes, "vis_episodes", "vis_episode_list")
    code, err, _, expected = outcomes["vis_no_common"]  # ids in common, but each one another episode
    assert code == 2 and err.strip().splitlines()[-1].startswith(expected[0]), err[-2000:]


def test_visualize_trajectories_default_labels_tell_runs_of_one_agent_apart(evaluations, tmp_path, monkeypatch):
    import visualize_trajectories

    import asgf_nav.viz.evaluated_episode as evaluated_episode
    import asgf_nav.viz.trajectories as trajectories

    drawn = {}

    def fake_save(path, scene, records, labels):
        drawn.update(labels=list(labels), episodes={r.episode_id for r in records})
        return Path(path)

    monkeypatch.setattr(trajectories, "save_trajectories", fake_save)
    monkeypatch.setattr(evaluated_episode.Scene, "open", classmethod(lambda cls, *args: None))
    monkeypatch.setattr(evaluated_episode, "scene_mismatch", lambda *args: None)  # no scene to check against
    runs = [str(evaluations["oracle"]), str(evaluations["oracle_rerun"])]
    assert visualize_trajectories.main([*runs, "--out", str(tmp_path / "map.png")]) == 0
    assert drawn["labels"] == ["oracle", "oracle_rerun"] and len(drawn["episodes"]) == 1
    assert visualize_trajectories.main([*runs, "--out", str(tmp_path / "m.png"), "--labels", "a", "b"]) == 0
    assert drawn["labels"] == ["a", "b"]


def test_tsne_checks_policy_samples_and_figure_format_before_rollouts(outcomes):
    _check(outcomes, "tsne_av_nav", "tsne_samples", "tsne_out")


def test_train_baselines_checks_samples_threads_and_train_scenes(outcomes):
    _check(outcomes, "base_samples", "base_samples_4", "base_threads_0", "base_threads_neg", "base_scenes")
    _check(outcomes, "base_out_checkpoint")


def test_seeds_are_checked_before_the_data_loads(outcomes):
    _check(outcomes, "base_seed", "eval_seed", "tsne_seed")


def test_evaluate_refuses_settings_it_would_ignore(outcomes):
    """A --seed no agent draws with, and training's device and env count, were parsed and dropped."""
    _check(outcomes, "eval_seed_of_an_oracle", "eval_seed_of_a_checkpoint", "eval_training_device")
    _check(outcomes, "eval_training_envs", "eval_training_envs_as_a_section")


def test_train_baselines_minimum_samples_leave_a_validation_split():

    from baselines.recipe import MIN_SAMPLES, train_size

    n = MIN_SAMPLES
    assert train_size(n) < n and train_size(n - 1) == n - 1
    assert all(1 <= train_size(k) < k for k in range(n, 200))


def test_bake_spectrograms_checks_threads_and_sounds_before_loading_scenes(outcomes):
    _check(outcomes, "bake_threads", "bake_sounds", "bake_override")


def test_build_scenes_checks_counts_sizes_workers_and_data_root(outcomes):
    _check(outcomes, "build_num_neg", "build_num_0", "build_size_neg", "build_size_0", "build_workers", "build_root")
    _check(outcomes, "build_override", "build_workers_0")


def test_build_scenes_checks_the_scene_count_against_the_preset_with_the_config(outcomes):
    code, err, _, expected = outcomes["build_num_over"]
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == f"error: config key {expected[0]}"


def test_show_scene_checks_views_size_data_root_and_defaults_to_the_configs_dataset(outcomes):
    _check(outcomes, "show_views_0", "show_views_neg", "show_size", "show_root", "show_ok")


def test_report_names_agents_without_an_evaluation(outcomes):
    _check(outcomes, "report_agents")


def test_path_options_expand_a_leading_tilde(evaluations, tmp_path):
    """``--out=~/x`` reaches a script with its ``~`` (the shell expands it only at a word's start): every path
    option takes it as the home directory, as the config's path keys do, and no folder named ``~`` appears in
    the working directory. A packaged config's name and ``none`` pass unchanged."""
    import shutil

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    for name in ("oracle", "random"):
        shutil.copytree(evaluations[name], home / "evals" / name)
    shutil.copy(REPO / "asgf_nav" / "configs" / "tiny_heard.yaml", home / "cfg.yaml")
    build = ["--dataset", "tiny", "--stages", "layout", "--scenes", "tiny_room_val", "--workers", "0"]
    show = ["--config", "tiny_heard", "--scene", "tiny_room_val", "--image-size", "16", "--rebake"]
    cases = {  # case id -> (script, argv, what its last stderr line must hold; empty: it must succeed)
        "build": ("build_scenes", [*build, "--data-root=~/built"], []),
        "show": ("show_scene", [*show, "--data-root=~/built", "--out=~/s.png"], []),
        "report": ("report", ["~/evals/oracle", "~/evals/random", "--out=~/r.png", "--table=~/t.md"], []),
        "evaluate": (
            "evaluate",
            ["--config=~/cfg.yaml", "--data-root=~/none", "--checkpoint=~/best.pt"],
            [f"error: checkpoint {home}/best.pt does not exist"],
        ),
        "eval_doa": ("eval_doa", ["--crnn=~/crnn.pt"], [f"--crnn: checkpoint {home}/crnn.pt does not exist"]),
        "eval_doa_none": (  # 'none' is no path: it passes, and the run stops at the next check
            "eval_doa",
            ["--selective", "none", "--crnn", "none", "--gmm-train-examples", "1"],
            ["--gmm-train-examples: 1 clips"],
        ),
        "pretrain_doa": (
            "pretrain_doa",
            ["--init-from=~/x.pt"],
            [f"--init-from: DoA checkpoint {home}/x.pt does not exist"],
        ),
    }
    payload = json.dumps([[str(SCRIPTS / f"{script}.py"), argv] for script, argv, _ in cases.values()])
    import matplotlib

    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.setdefault("MPLCONFIGDIR", matplotlib.get_configdir())  # no font cache to rebuild in the new home
    done = subprocess.run(
        [sys.executable, "-c", DRIVER], input=payload, capture_output=True, text=True, timeout=240, cwd=cwd, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = {
        case: (code, err, script, expected)
        for (case, (script, _, expected)), (code, err) in zip(cases.items(), results)
    }
    assert not (cwd / "~").exists(), sorted(p.name for p in cwd.iterdir())
    for case in ("build", "show", "report"):
        _check(outcomes, case)
    for case in ("evaluate", "eval_doa", "eval_doa_none", "pretrain_doa"):
        code, err, _, expected = outcomes[case]
        assert code == 2 and "Traceback" not in err, f"{case}: {err[-3000:]}"
        assert expected[0] in err.strip().splitlines()[-1], f"{case}: {err[-2000:]}"
    assert (home / "built" / "scenes" / "tiny" / "tiny_room_val" / "manifest.json").is_file()
    assert (home / "s.png").is_file() and (home / "r.png").is_file() and (home / "t.md").is_file()


def test_dataclass_scripts_expand_tilde_in_their_path_fields():
    """pretrain_doa / eval_doa build their flags from dataclass fields: the ones listed as paths exist."""
    import eval_doa
    import pretrain_doa

    from asgf_nav.eval.doa_eval import EvalConfig
    from asgf_nav.models.doa.config import DoaTrainConfig

    for script, config in ((pretrain_doa, DoaTrainConfig), (eval_doa, EvalConfig)):
        fields = {f.name for f in dataclasses.fields(config)}
        assert set(script.PATHS) <= fields, set(script.PATHS) - fields
