"""Evaluation: metric aggregation and intervals, the episode runner, scripts/evaluate.py and reports."""

import copy
import json
import logging
import math
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from asgf_nav import evaluation
from asgf_nav.cli import run_script
from asgf_nav.config import ExperimentConfig, load_config
from asgf_nav.eval.evaluator import (
    Agent,
    AgentContext,
    EpisodeRecord,
    EvaluationFileError,
    PolicyAgent,
    config_for_checkpoint,
    episode_stream,
    load_policy_agent,
    read_jsonl,
    run_episodes,
    select_episodes,
    summarize,
    write_jsonl,
)
from asgf_nav.eval.metrics import (
    REPORTED_METRICS,
    aggregate,
    format_summary,
    mean_confidence_interval,
    wilson_interval,
)
from asgf_nav.eval.report import comparison_chart, comparison_table, find_summaries, load_summary
from asgf_nav.scenes.build import build_scenes
from asgf_nav.tasks.audionav_env import observation_space_for
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.navigation import step_pose
from asgf_nav.tasks.synthetic import synthetic_world
from baselines.oracle import OracleAgent
from baselines.random_agent import RandomAgent

# ------------------------------------------------------------------------------------------ fixtures
# the tiny_root scene's cheap acoustics: every run and world on it asks for the settings it was baked with
TINY_ACOUSTICS = ["acoustics.sources_per_scene=4", "acoustics.rays=200", "acoustics.ism_order=1",
                  "acoustics.max_rir_seconds=0.3"]  # fmt: skip


def tiny_cfg(root: Path) -> ExperimentConfig:
    """A config for the tiny scenes under ``root``, with the acoustics tiny_root was baked with."""
    cfg = load_config(None, TINY_ACOUSTICS)
    cfg.scenes.dataset, cfg.scenes.data_root = "tiny", str(root)
    return cfg


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """The tiny preset's test scene with cheap acoustics (a few seconds)."""
    root = tmp_path_factory.mktemp("data")
    cfg = tiny_cfg(root)
    cfg.scenes.image_size = 32
    build_scenes(cfg, "tiny", ["tiny_room_test"], workers=1)
    return root


@pytest.fixture(scope="module")
def synthetic():
    world = synthetic_world(sample_rate=16000)
    cfg = ExperimentConfig()
    cfg.task.test_episodes = 23
    cfg.task.max_steps = 60
    episodes = generate_split(world, "test", "unheard", ["bell", "drum"], cfg.task)
    return world, episodes, cfg


def _evaluate(tiny_root: Path, out: Path, *extra: str) -> None:
    import evaluate

    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    options = [a for a in extra if a not in overrides]
    argv = [
        "--dataset",
        "tiny",
        "--data-root",
        str(tiny_root),
        "--out",
        str(out),
        "--num-envs",
        "3",
        *options,
        "task.test_episodes=16",
        *TINY_ACOUSTICS,
        *overrides,
    ]
    assert evaluate.main(argv) == 0


# ------------------------------------------------------------------------------------------ metrics


def killed_after(run_episodes, finished: int):
    """``run_episodes`` that raises KeyboardInterrupt once ``finished`` episodes were saved (a killed run)."""

    def run(agent, world, episodes, cfg, **kwargs):
        done = []

        def on_record(record):
            kwargs["on_record"](record)
            done.append(record)
            if len(done) == finished:
                raise KeyboardInterrupt

        return run_episodes(agent, world, episodes, cfg, **{**kwargs, "on_record": on_record})

    return run


def test_t_interval_on_known_values():
    s = mean_confidence_interval([0.0, 1.0, 1.0, 1.0])
    half = 3.182446305284263 * 0.5 / 2.0  # t(0.975, 3) * std / sqrt(n)
    assert s.mean == pytest.approx(0.75) and s.std == pytest.approx(0.5) and s.count == 4
    assert s.low == pytest.approx(0.75 - half) and s.high == pytest.approx(0.75 + half)
    assert format_summary(s, "success") == f"75.0 ± {100 * half:.1f}"
    wide = mean_confidence_interval(np.r_[np.zeros(50), np.ones(50)], level=0.99)
    narrow = mean_confidence_interval(np.r_[np.zeros(50), np.ones(50)], level=0.9)
    assert wide.half_width > narrow.half_width > 0


def test_degenerate_and_bad_inputs():
    one = mean_confidence_interval([0.4])
    assert one.mean == pytest.approx(0.4) and one.low is one.high is one.std is one.half_width is None
    constant = mean_confidence_interval([1.0] * 10)
    assert constant.half_width == 0.0
    with pytest.raises(ValueError, match="zero episodes"):
        mean_confidence_interval([])
    with pytest.raises(ValueError, match="finite"):
        mean_confidence_interval([1.0, math.nan])
    with pytest.raises(KeyError, match="spl"):
        aggregate([{"success": 1.0}], metrics=("success", "spl"))


def test_wilson_interval_known_value_and_bounds():
    low, high = wilson_interval(3, 4)
    assert low == pytest.approx(0.3006418, abs=1e-6) and high == pytest.approx(0.9544127, abs=1e-6)
    for n in (3, 9, 10, 2000):  # exact: rounding put 10/10's upper bound at 0.9999999999999999, below SR 1.0
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0
    with pytest.raises(ValueError, match=r"successes must be in \[0, 4\], got 5"):
        wilson_interval(5, 4)


# ------------------------------------------------------------------------------------------ runner
def test_select_episodes_spreads_evenly_from_the_first_to_the_last():
    assert select_episodes(list(range(10)), 4) == [0, 3, 6, 9]
    assert select_episodes(list(range(10)), 5) == [0, 2, 4, 7, 9]  # 0, 2.25, 4.5, 6.75, 9 to the nearest


def test_the_policy_agent_resets_the_recurrent_state_where_an_episode_starts():
    masks_seen = []

    class RecordingPolicy(torch.nn.Module):
        def initial_hidden(self, n, device="cpu"):
            return torch.zeros(1, n, 4)

        def act(self, obs, hidden, masks, deterministic=False):
            masks_seen.append(masks.clone())
            return None, torch.zeros(len(masks), dtype=torch.long), None, hidden

    agent = PolicyAgent(RecordingPolicy(), ["spectrogram"], deterministic=True)
    context = types.SimpleNamespace(nodes=np.zeros(2), new_episode=np.array([True, False]))
    agent.act({"spectrogram": torch.zeros(2, 1)}, context)
    assert masks_seen[0].tolist() == [0.0, 1.0]


def test_every_selected_episode_is_run_once_in_order(synthetic):
    world, episodes, cfg = synthetic
    chosen = select_episodes(episodes, 17)
    assert len(chosen) == 17 and {e.scene_name for e in chosen} == set(world.scenes)
    records = run_episodes(OracleAgent(), world, chosen, cfg, num_envs=5, progress=False)
    assert [r.episode_id for r in records] == [e.episode_id for e in chosen]
    for rec in records:
        assert rec.metrics["success"] == rec.metrics["spl"] == rec.metrics["sna"] == 1.0
        assert len(rec.actions) == rec.num_action and rec.actions[-1] == 0
        assert rec.path[-1][0] == rec.goal_node and len(rec.path) == len(rec.actions) + 1


def test_context_marks_the_envs_whose_episodes_are_recorded(synthetic):
    """Envs past their share keep stepping through discarded episodes; ``ctx.active`` is False for them."""
    world, episodes, cfg = synthetic

    class Counting(RandomAgent):
        def act(self, obs, ctx):
            self.active_steps = getattr(self, "active_steps", 0) + int(np.sum(ctx.active))
            self.inactive_seen = getattr(self, "inactive_seen", False) or not ctx.active.all()
            return super().act(obs, ctx)

    agent = Counting(seed=5)
    chosen = select_episodes(episodes, 7)  # 3 envs: shares of 3, 2 and 2 episodes
    records = run_episodes(agent, world, chosen, cfg, num_envs=3, progress=False)
    assert agent.inactive_seen
    assert agent.active_steps == sum(len(r.actions) for r in records)


def test_recorded_path_replays_the_actions(synthetic):
    world, episodes, cfg = synthetic
    records = run_episodes(RandomAgent(seed=3), world, episodes, cfg, num_envs=4, progress=False)
    assert len(records) == len(episodes)
    for rec in records:
        scene = world.scene(rec.scene)
        node, yaw = rec.start_node, rec.start_yaw
        assert rec.path[0] == [node, yaw]
        for action, pose in zip(rec.actions, rec.path[1:]):
            node, yaw, _ = step_pose(scene.neighbors, node, yaw, action)
            assert [node, yaw] == pose
        hops = scene.geodesic_hops[node, rec.goal_node]
        assert rec.metrics["distance_to_goal"] == pytest.approx(hops * scene.grid_size)
        assert rec.metrics["num_actions"] == len(rec.actions) <= cfg.task.max_steps
        stopped = rec.actions[-1] == 0
        assert rec.metrics["success"] == float(stopped and hops * scene.grid_size < 1.0)
    summary = summarize(records)
    assert summary["episodes"] == len(episodes)
    assert 0.0 <= summary["metrics"]["spl"]["mean"] <= summary["metrics"]["success"]["mean"] <= 1.0


def test_a_checkpoint_evaluated_on_another_scene_set_is_pointed_out(tmp_path, caplog):
    """A tiny checkpoint evaluated with the default (replica) config is allowed, but a forgotten --config would
    otherwise surface only as a missing replica bake."""
    import logging

    state = {
        "model": {},
        "optimizer": {},
        "update": 1,
        "frames": 8,
        "rng": {},
        "config": {"scenes": {"dataset": "tiny"}},
    }
    with caplog.at_level(logging.WARNING, logger="asgf_nav.eval.evaluator"):
        config_for_checkpoint(ExperimentConfig(), state)
        assert "trained on tiny scenes and is evaluated on replica" in caplog.text
        caplog.clear()
        config_for_checkpoint(load_config("tiny_heard"), state)
    assert caplog.text == ""


def test_policy_agent_loads_a_checkpoint_and_is_deterministic(synthetic, tmp_path):
    from asgf_nav.models.policies import build_policy

    world, episodes, base = synthetic
    cfg = copy.deepcopy(base)
    cfg.task.max_steps = 8
    cfg.model.policy, cfg.model.hidden_size, cfg.model.ase_dim, cfg.model.fusion_dim = "asgf", 32, 32, 16
    cfg.task.sensors = ["spectrogram"]
    space = observation_space_for(world, cfg.task.sensors)
    torch.manual_seed(0)
    policy = build_policy(cfg, space)
    path = tmp_path / "ckpt_000001.pt"
    saved = {
        "model": {"policy": "asgf", "hidden_size": 32, "ase_dim": 32, "fusion_dim": 16},
        "task": {"sensors": ["spectrogram"], "max_steps": 3, "doa_checkpoint": "heads/mine.pt"},
    }
    torch.save(
        {
            "model": policy.state_dict(),
            "optimizer": {},
            "update": 1,
            "frames": 10,
            "rng": {},
            "config": saved,
            "policy_name": "asgf",
        },
        path,
    )
    restored = config_for_checkpoint(ExperimentConfig(), path)
    assert restored.model.hidden_size == 32 and restored.model.fusion_dim == 16
    assert restored.task.sensors == ["spectrogram"] and restored.task.max_steps == 500  # only architecture keys
    assert restored.task.doa_checkpoint == "heads/mine.pt"  # the DoA head the policy was trained with
    assert restored.task.keep_travel_time  # a checkpoint from before the key heard the travel time
    assert restored.scenes.image_size == ExperimentConfig().scenes.image_size  # it records none: the config's
    saved["scenes"] = {"image_size": 48, "data_root": "elsewhere"}  # the views its visual CNN was built for
    torch.save({**torch.load(path, weights_only=False), "config": saved}, path)
    restored = config_for_checkpoint(ExperimentConfig(), path)  # not the config's 128: the views are checked (and
    assert restored.scenes.image_size == 48 and restored.scenes.data_root == "data"  # a bake hinted) at 48 px
    runs = []
    torch.manual_seed(5)
    draw = torch.rand(1)
    torch.manual_seed(5)
    load_policy_agent(cfg, path, space)  # the network's initial weights, replaced: drawn aside from the caller's
    assert torch.equal(torch.rand(1), draw)
    for _ in range(2):
        agent = load_policy_agent(cfg, path, space, deterministic=True)
        assert isinstance(agent, PolicyAgent) and agent.sensors == ("spectrogram",)
        runs.append(run_episodes(agent, world, episodes[:4], cfg, num_envs=3, progress=False))
    assert [r.actions for r in runs[0]] == [r.actions for r in runs[1]]
    from asgf_nav.rl.checkpoint import CheckpointError

    wider = copy.deepcopy(cfg)  # named, not a torch size-mismatch traceback
    wider.model.hidden_size = 48
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} does not fit the policy built for these") as info:
        load_policy_agent(wider, path, space)
    assert "scenes.image_size" not in str(info.value)  # no visual encoder here: the view size is no suspect
    loaded = torch.load(path, weights_only=False)  # a checkpoint loaded by the caller is named by ``source``
    with pytest.raises(CheckpointError, match=rf"^checkpoint {path} does not fit"):
        load_policy_agent(wider, loaded, space, source=path)
    cfg.model.policy = "av_nav"
    with pytest.raises(CheckpointError, match="holds policy 'asgf', config asks for 'av_nav'"):
        load_policy_agent(cfg, path, space)


def test_a_checkpoint_whose_model_section_outsizes_its_weights_is_refused_before_the_policy_is_built(
    synthetic, tmp_path, monkeypatch
):
    """A few bytes of a shared checkpoint's config (hidden_size=6000) built a 1.4 GB policy before its weights
    were compared: it is sized on the meta device first, and only weights that fit it build it for real."""
    from asgf_nav.eval import evaluator
    from asgf_nav.models import policies
    from asgf_nav.rl.checkpoint import CheckpointError

    world, _, base = synthetic
    cfg = copy.deepcopy(base)
    cfg.model.policy, cfg.model.hidden_size, cfg.task.sensors = "av_nav", 16, ["spectrogram"]
    space = observation_space_for(world, cfg.task.sensors)
    state = {"model": policies.build_policy(cfg, space).state_dict(), "policy_name": "av_nav"}
    built = []
    build = policies.build_policy

    def recording_build(*args, **kwargs):
        policy = build(*args, **kwargs)
        built.append(next(policy.parameters()).device.type)
        return policy

    monkeypatch.setattr(policies, "build_policy", recording_build)
    huge = copy.deepcopy(cfg)
    huge.model.hidden_size = 6000
    with pytest.raises(CheckpointError, match=r"^checkpoint big\.pt does not fit the policy built for these"):
        evaluator.load_policy_agent(huge, state, space, source="big.pt")
    assert built == ["meta"]
    first = next(k for k, v in state["model"].items() if v.dim() == 2)
    state["model"][first] = torch.zeros(1).expand(*state["model"][first].shape)  # the shape, not the data
    with pytest.raises(
        CheckpointError, match=rf"does not fit the policy built for these observations: '{first}' holds"
    ):
        evaluator.load_policy_agent(cfg, state, space, source="thin.pt")
    assert built == ["meta", "meta"]
    state["model"][first] = torch.zeros(state["model"][first].shape)
    assert isinstance(evaluator.load_policy_agent(cfg, state, space), evaluator.PolicyAgent)
    assert built[2:] == ["meta", "cpu"]


# ------------------------------------------------------------------------------------------ script + report
def test_evaluate_script_oracle_is_perfect_on_tiny_scene(tiny_root, tmp_path):
    _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--sound-split", "both")
    for sound_split in ("heard", "unheard"):
        out = tmp_path / f"oracle_tiny_{sound_split}_test"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["episodes"] == 16 and summary["meta"]["sound_split"] == sound_split
        assert summary["meta"]["scene_source"] == "embedded"  # node indices are the generated scene's
        for metric in ("success", "spl", "sna", "softspl"):
            assert summary["metrics"][metric]["mean"] == 1.0
        assert summary["metrics"]["distance_to_goal"]["mean"] == 0.0
        low = 100 * wilson_interval(16, 16)[0]  # SR: every episode succeeds, and the interval still says 16 is few
        text = (out / "summary.md").read_text()
        assert f"| all | 16 | 100.0 [{low:.1f}, 100.0] | 100.0 ± 0.0 | 100.0 ± 0.0 |" in text
        assert "a ± 0 over several episodes: all scored alike, and the t interval then has no width" in text
        records = read_jsonl(out / "episodes.jsonl")
        assert len(records) == 16 and all(r.actions[-1] == 0 for r in records)
    heard = read_jsonl(tmp_path / "oracle_tiny_heard_test" / "episodes.jsonl")
    assert {r.sound for r in heard} == {"telephone"}


def test_evaluate_script_names_a_missing_or_corrupt_checkpoint(tmp_path, capsys, monkeypatch):
    import evaluate

    workdir = tmp_path / "workdir"  # the default --out is relative: a refused run must not create it
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    missing, corrupt = tmp_path / "ckpt_000009.pt", tmp_path / "ckpt_000010.pt"
    corrupt.write_bytes(b"not a checkpoint")
    for path, message in ((missing, "does not exist"), (corrupt, "corrupt or unreadable")):
        argv = ["--dataset", "tiny", "--data-root", str(tmp_path), "--checkpoint", str(path)]
        with pytest.raises(SystemExit) as exit_info:
            run_script(lambda argv=argv: evaluate.main(argv))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: ") and str(path) in err and message in err
        assert not any(workdir.iterdir()), list(workdir.rglob("*"))
    # a run directory (or its checkpoints/) names the files to pass instead: best.pt and the newest
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("ckpt_000002.pt", "ckpt_000010.pt", "best.pt"):
        (run / "checkpoints" / name).write_bytes(b"")
    for directory in (run, run / "checkpoints", tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(["--dataset", "tiny", "--data-root", str(tmp_path), "--checkpoint", str(directory)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"error: checkpoint {directory} is a directory")
        if directory == tmp_path:
            assert "holds no checkpoints/best.pt or checkpoints/ckpt_*.pt" in err
        else:
            assert str(run / "checkpoints" / "best.pt") in err and str(run / "checkpoints" / "ckpt_000010.pt") in err
            assert "ckpt_000002.pt" not in err


def test_scenes_outside_the_split_are_refused_not_evaluated_under_its_name(tiny_root, tmp_path, capsys):
    from asgf_nav.scenes.presets import UnknownSceneError

    for split, scene in (("val", "tiny_room_test"), ("test", "no_such_room")):
        with pytest.raises(UnknownSceneError, match=rf"tiny split '{split}' has no scene '{scene}'; its scenes: \["):
            _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--scenes", scene, "--split", split)
    with pytest.raises(SystemExit):  # an override after --scenes is named, not taken for a scene
        _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--scenes", "tiny_room_test")
    assert "--scenes: 'task.test_episodes=16' looks like a config override" in capsys.readouterr().err
    assert not (tiny_root / "datasets" / "tiny" / "val_telephone").exists()  # nothing written for it
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # no evaluation directory


def test_a_scene_baked_with_other_acoustics_is_refused_naming_the_settings(tiny_root, tmp_path, capsys):
    """A run or evaluation whose config asks for other acoustics than the scene was baked with would hear
    other sound than its config says: refused, naming each setting with both values."""
    import evaluate

    from asgf_nav.scenes.store import SceneStoreError
    from asgf_nav.tasks.world import load_world

    cfg = tiny_cfg(tiny_root)
    cfg.acoustics.rays, cfg.acoustics.max_rir_seconds = 1000, 1.0
    with pytest.raises(SceneStoreError) as refused:
        load_world(cfg, "test")
    message = str(refused.value)
    assert "tiny_room_test" in message and "rays: baked 200, the config asks 1000" in message
    assert "max_rir_seconds: baked 0.3, the config asks 1.0" in message and "sources_per_scene" not in message
    argv = ["--dataset", "tiny", "--data-root", str(tiny_root), "--agent", "oracle", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: evaluate.main(argv))  # the default acoustics: another bake than tiny_root's
    assert exit_info.value.code == 2
    assert "rays: baked 200, the config asks 3000" in capsys.readouterr().err


def test_every_unbaked_scene_and_stage_is_named_in_one_error_with_one_command(tiny_root, tmp_path):
    """An evaluation after an early stop of training met its unbaked test scenes one at a time, a stage at a time
    (and was told to bake 'again' what was never baked); scenes a training run's background bake is baking are
    named as such."""
    import shutil

    from asgf_nav.scenes.store import SceneStoreError, bake_lock, remove_stage
    from asgf_nav.tasks.world import refuse_unbaked

    baked = tiny_root / "scenes" / "tiny" / "tiny_room_test"
    for name in ("room_2", "office_4", "office_3"):
        shutil.copytree(baked, tmp_path / "scenes" / "replica" / name)
    remove_stage(tmp_path / "scenes" / "replica" / "room_2", "vision")
    for stage in ("vision", "acoustics"):
        remove_stage(tmp_path / "scenes" / "replica" / "office_4", stage)
    cfg = tiny_cfg(tmp_path)
    cfg.scenes.dataset = "replica"
    names = ["room_2", "office_4", "hotel_0", "office_3"]  # hotel_0 never baked, office_3 complete
    expected = (r"3 of the 4 replica test scenes are not baked for this task \(room_2 has no vision; office_4 has no "
                r"acoustics or vision; hotel_0 has no layout or acoustics or vision\).* bake them all: python "
                r"scripts/build_scenes.py --dataset replica --data-root \S+ --scenes room_2 office_4 hotel_0 --stages "
                r"layout acoustics vision --image-size 128 \(add the run's --config")  # fmt: skip
    with pytest.raises(SceneStoreError, match=expected):
        refuse_unbaked(cfg, "test", names, vision=True)
    with pytest.raises(SceneStoreError, match=r"\(office_4 has no acoustics; hotel_0 has no layout or acoustics\); "):
        refuse_unbaked(cfg, "test", names, vision=False)
    with bake_lock(tmp_path / "scenes" / "replica" / "office_4"):
        with pytest.raises(SceneStoreError, match=r"another process is baking office_4 right now .*: wait for that"):
            refuse_unbaked(cfg, "test", names, vision=True)
    refuse_unbaked(cfg, "test", ["office_3"], vision=True)  # baked for the task: nothing to say


def test_scenes_without_views_are_named_with_the_bake_command(tiny_root, tmp_path):
    import shutil

    from asgf_nav.scenes.store import SceneStoreError, remove_stage
    from asgf_nav.tasks.world import load_world

    copy_dir = tmp_path / "scenes" / "tiny" / "tiny_room_test"
    shutil.copytree(tiny_root / "scenes" / "tiny" / "tiny_room_test", copy_dir)
    remove_stage(copy_dir, "vision")  # baked for audio only (layout + acoustics)
    cfg = tiny_cfg(tmp_path)
    cfg.task.sensors = ["depth", "spectrogram"]
    expected = (r"1 of the 1 tiny test scenes are not baked for this task \(tiny_room_test has no vision\); views are "
                r"stage 'vision', which task.sensors \['depth', 'spectrogram'\] read; bake them all: python "
                r"scripts/build_scenes.py --dataset tiny .* --scenes tiny_room_test --stages vision --image-size \d+ "
                r"\(add the run's --config")  # fmt: skip
    with pytest.raises(SceneStoreError, match=expected):
        load_world(cfg, "test")
    cfg.task.sensors = ["spectrogram"]
    assert load_world(cfg, "test").scenes["tiny_room_test"].depth is None  # audio-only runs need none


def test_evaluate_script_random_gives_a_valid_report(tiny_root, tmp_path):
    _evaluate(tiny_root, tmp_path, "--agent", "random", "--episodes", "9", "task.max_steps=40")
    out = tmp_path / "random_tiny_unheard_test"
    summary = load_summary(out)
    assert summary["episodes"] == 9
    from asgf_nav.io import code_version

    assert summary["meta"]["code"] == code_version() and summary["meta"]["code"]["package"]  # what made it
    m = summary["metrics"]
    for metric in ("success", "spl", "sna", "softspl"):
        assert m[metric]["low"] <= m[metric]["mean"] <= m[metric]["high"] and 0.0 <= m[metric]["mean"] <= 1.0
    assert m["spl"]["mean"] <= m["success"]["mean"]
    records = read_jsonl(out / "episodes.jsonl")
    assert all(r.metrics["num_actions"] <= 40 for r in records)
    assert m["success"]["wilson_low"] <= m["success"]["mean"] <= m["success"]["wilson_high"]
    for metric in ("success", "spl", "sna", "softspl", "distance_to_goal"):  # the summary is of these episodes
        assert m[metric]["mean"] == pytest.approx(np.mean([r.metrics[metric] for r in records]))


def test_evaluate_script_uses_the_configured_torch_threads(tiny_root, tmp_path):
    # Two evaluations side by side with torch's default threads each oversubscribe the cores, which
    # made them many times slower; train.torch_threads must hold for evaluation as for training.
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    try:
        _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "2", f"train.torch_threads={wanted}")
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_comparison_table_and_chart(tiny_root, tmp_path):
    _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "6", "--sound-split", "both")
    _evaluate(tiny_root, tmp_path, "--agent", "random", "--episodes", "6", "--sound-split", "heard")
    summaries = [load_summary(p) for p in find_summaries([tmp_path])]
    assert len(summaries) == 3
    # one directory reached twice (below a parent and by name, with a trailing slash) counts once
    assert len(find_summaries([tmp_path, f"{tmp_path / 'oracle_tiny_heard_test'}/"])) == 3
    table = comparison_table(summaries)
    lines = table.splitlines()
    assert lines[0] == (
        "| method | tiny heard SPL | tiny heard SR | tiny heard SNA | tiny unheard SPL | "
        "tiny unheard SR | tiny unheard SNA |"
    )
    oracle = next(line for line in lines if line.startswith("| oracle"))
    random_row = next(line for line in lines if line.startswith("| random"))
    # SR is its Wilson interval, as in each evaluation's summary.md: 6 of 6 is [61.0, 100.0], not "100.0 ± 0.0"
    assert oracle.count("100.0 ± 0.0") == 4 and oracle.count("100.0 [61.0, 100.0]") == 2
    assert random_row.endswith("| - | - | - |")
    assert "mean ± half-width of the 95 % confidence interval (Student t), SR mean [95 % Wilson interval]" in lines[-1]
    assert "a ± 0 over several episodes: all scored alike" in lines[-1]  # the oracle's SPL and SNA
    means_only = comparison_table(summaries, with_ci=False).splitlines()
    assert "±" not in "\n".join(means_only) and "SPL / SR / SNA in %, mean; episodes" in means_only[-1]
    png = comparison_chart(summaries, tmp_path / "chart.png")
    assert png.stat().st_size > 5000
    import imageio.v2 as imageio

    assert imageio.imread(png).shape[2] in (3, 4)

    # a table compares one split, and one evaluation per agent and column: never one picked silently
    val = {**summaries[2], "meta": {**summaries[2]["meta"], "split": "val"}}
    with pytest.raises(EvaluationFileError, match=r"the evaluations are of splits \['test', 'val'\]"):
        comparison_table([*summaries, val])
    twice = [*summaries, {**summaries[0], "meta": {**summaries[0]["meta"], "checkpoint": "other.pt"}}]
    with pytest.raises(EvaluationFileError, match=r"two evaluations of agent 'oracle' on tiny heard"):
        comparison_table(twice)
    fewer = next(s for s in summaries if s["meta"]["agent"] == "random")
    fewer = {**fewer, "meta": {**fewer["meta"], "episode_list": "0123456789abcdef"}}  # e.g. other --episodes
    mixed = [s for s in summaries if s["meta"]["agent"] != "random"] + [fewer]
    with pytest.raises(EvaluationFileError, match=r"'oracle' and 'random' on tiny heard ran different episodes"):
        comparison_table(mixed)
    with pytest.raises(EvaluationFileError, match="ran different episodes"):
        comparison_chart(mixed, tmp_path / "mixed.png")
    unlisted = {**fewer, "meta": {k: v for k, v in fewer["meta"].items() if k != "episode_list"}}  # earlier release
    others = [s for s in summaries if s["meta"]["agent"] != "random"]
    with pytest.raises(EvaluationFileError, match=r"of 'random' on tiny heard \(.*\) records no episode list"):
        comparison_table([*others, unlisted])
    assert "| random |" in comparison_table([unlisted])  # alone it compares with nothing


def test_killed_evaluation_resumes_with_the_episodes_it_finished(tiny_root, tmp_path, monkeypatch):

    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgressError

    _evaluate(tiny_root, tmp_path / "whole", "--agent", "oracle", "--episodes", "10")
    whole = read_jsonl(tmp_path / "whole" / "oracle_tiny_unheard_test" / "episodes.jsonl")

    real_run, ran = evaluation.run_episodes, []

    def run_then_die_after(limit):
        def run(agent, world, episodes, cfg, **kwargs):
            ran.append(len(episodes))
            save = kwargs["on_record"]

            def on_record(record):
                save(record)
                if limit is not None and len(ran) == 1 and sum(1 for _ in open(progress_file)) - 1 >= limit:
                    raise KeyboardInterrupt  # killed after `limit` finished episodes

            return real_run(agent, world, episodes, cfg, **{**kwargs, "on_record": on_record})

        return run

    out = tmp_path / "resumed" / "oracle_tiny_unheard_test"
    progress_file = out / PROGRESS_FILE
    monkeypatch.setattr(evaluation, "run_episodes", run_then_die_after(4))
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path / "resumed", "--agent", "oracle", "--episodes", "10")
    assert not (out / "episodes.jsonl").exists() and progress_file.exists()
    with open(progress_file, "a") as f:
        f.write('{"episode_id": "tru')  # killed while writing a line: it is dropped, not fatal

    with pytest.raises(EvaluationProgressError, match="task was .*'max_steps': 500.*now .*'max_steps': 400"):
        _evaluate(tiny_root, tmp_path / "resumed", "--agent", "oracle", "--episodes", "10", "task.max_steps=400")

    _evaluate(tiny_root, tmp_path / "resumed", "--agent", "oracle", "--episodes", "10")
    assert ran == [10, 6]  # the resume ran only the six episodes the first run had not finished
    assert not progress_file.exists()
    resumed = read_jsonl(out / "episodes.jsonl")
    assert [(r.scene, r.episode_id) for r in resumed] == [(r.scene, r.episode_id) for r in whole]
    assert [r.actions for r in resumed] == [r.actions for r in whole]  # the oracle is deterministic
    assert load_summary(out)["episodes"] == 10

    finished = (out / "summary.json").read_bytes()  # another evaluation into the same directory: refused
    with pytest.raises(EvaluationProgressError, match=r"holds a finished evaluation of something else: task was"):
        _evaluate(tiny_root, tmp_path / "resumed", "--agent", "oracle", "--episodes", "10", "task.max_steps=400")
    assert (out / "summary.json").read_bytes() == finished and not progress_file.exists()
    _evaluate(tiny_root, tmp_path / "resumed", "--agent", "oracle", "--episodes", "10")  # the same one: runs again
    assert load_summary(out)["episodes"] == 10 and ran[-1] == 10


def test_a_stopped_evaluation_of_both_sound_splits_reruns_none_of_the_finished_split(tiny_root, tmp_path, monkeypatch):

    from asgf_nav.eval.progress import PROGRESS_FILE

    real_run, ran = evaluation.run_episodes, []

    def run(agent, world, episodes, cfg, **kwargs):
        ran.append((cfg.task.sound_split, len(episodes)))
        if ran == [("heard", 6), ("unheard", 6)]:
            raise KeyboardInterrupt  # stopped at the start of the second split
        return real_run(agent, world, episodes, cfg, **kwargs)

    monkeypatch.setattr(evaluation, "run_episodes", run)
    both = ("--agent", "oracle", "--episodes", "6", "--sound-split", "both")
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path, *both)
    heard = tmp_path / "oracle_tiny_heard_test"
    assert load_summary(heard)["episodes"] == 6 and (heard / PROGRESS_FILE).exists()
    _evaluate(tiny_root, tmp_path, *both)
    assert ran[2:] == [("unheard", 6)]  # the same command again ran only the unfinished split
    for split in ("heard", "unheard"):
        out = tmp_path / f"oracle_tiny_{split}_test"
        assert load_summary(out)["episodes"] == 6 and not (out / PROGRESS_FILE).exists()


def test_an_evaluation_into_a_directory_in_use_is_refused_before_anything_is_loaded(tiny_root, tmp_path, monkeypatch):
    """Both splits' directories are locked first: a run into a directory another process holds stops at once,
    not after loading scenes or after evaluating the splits before it."""

    from asgf_nav.eval.progress import EvaluationProgressError, evaluation_lock

    loaded: list[str] = []
    real_load = evaluation.load_task_data

    def load(cfg, *args, **kwargs):
        loaded.append(cfg.task.sound_split)
        return real_load(cfg, *args, **kwargs)

    monkeypatch.setattr(evaluation, "load_task_data", load)
    busy = tmp_path / "oracle_tiny_unheard_test"
    with evaluation_lock(busy):
        with pytest.raises(EvaluationProgressError, match="another process is evaluating into"):
            _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "2", "--sound-split", "both")
        assert loaded == []
    _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "2", "--sound-split", "both")  # released
    assert loaded == ["heard", "unheard"] and load_summary(busy)["episodes"] == 2


def _tiny_checkpoint(tiny_root: Path, path: Path) -> Path:
    """A randomly initialised compact spectrogram-only ASGF checkpoint for the tiny scene."""
    from asgf_nav.models.policies import build_policy
    from asgf_nav.tasks.world import load_world

    cfg = tiny_cfg(tiny_root)
    cfg.model.hidden_size, cfg.model.ase_dim, cfg.model.fusion_dim = 32, 32, 16
    cfg.task.sensors = ["spectrogram"]
    torch.manual_seed(0)
    policy = build_policy(cfg, observation_space_for(load_world(cfg, "test"), cfg.task.sensors))
    saved = {"model": {"policy": "asgf", "hidden_size": 32, "ase_dim": 32, "fusion_dim": 16},
             "task": {"sensors": ["spectrogram"]}}  # fmt: skip
    state = {"model": policy.state_dict(), "optimizer": {}, "update": 1, "frames": 10, "rng": {},
             "config": saved, "policy_name": "asgf"}  # fmt: skip
    torch.save(state, path)
    return path


def test_seeded_sampling_draws_each_action_as_often_as_its_probability() -> None:
    """The inverse-CDF draw of a seeded agent follows the policy's distribution, the last action included."""
    from types import SimpleNamespace

    agent = PolicyAgent(torch.nn.Linear(1, 1), ["spectrogram"], seed=3)
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).repeat(4000, 1)
    episodes = [SimpleNamespace(scene="s", episode_id=str(i)) for i in range(4000)]
    ctx = SimpleNamespace(episodes=episodes, new_episode=np.ones(4000, dtype=bool))
    agent.streams = [None] * 4000
    drawn = agent._draw(probs, ctx, agent.seed)
    shares = np.bincount(drawn, minlength=4) / len(drawn)
    np.testing.assert_allclose(shares, [0.1, 0.2, 0.3, 0.4], atol=0.025)  # 3.3 binomial standard errors


def test_sampled_evaluation_is_seeded_and_a_resume_replays_it(tiny_root, tmp_path, monkeypatch):
    """Sampled actions come from train.seed: the same command gives the same episodes, killed or not."""

    checkpoint = _tiny_checkpoint(tiny_root, tmp_path / "ckpt_000001.pt")
    args = ("--checkpoint", str(checkpoint), "--episodes", "6", "task.max_steps=30")

    def actions(out: Path) -> list[list[int]]:
        return [r.actions for r in read_jsonl(out / "asgf_tiny_unheard_test" / "episodes.jsonl")]

    _evaluate(tiny_root, tmp_path / "a", *args)
    _evaluate(tiny_root, tmp_path / "b", *args)
    first = actions(tmp_path / "a")
    assert actions(tmp_path / "b") == first
    assert load_summary(tmp_path / "a" / "asgf_tiny_unheard_test")["meta"]["seed"] == 1  # train.seed's default
    _evaluate(tiny_root, tmp_path / "c", *args, "--num-envs", "2")
    assert actions(tmp_path / "c") == first  # each episode has its own stream, whichever env runs it
    _evaluate(tiny_root, tmp_path / "d", *args, "train.seed=2")
    assert actions(tmp_path / "d") != first  # the seed is the one drawn from

    real_run = evaluation.run_episodes
    monkeypatch.setattr(evaluation, "run_episodes", killed_after(real_run, 2))
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path / "resumed", *args)
    monkeypatch.setattr(evaluation, "run_episodes", real_run)
    _evaluate(tiny_root, tmp_path / "resumed", *args)
    assert actions(tmp_path / "resumed") == first  # the four episodes run after the resume drew the same


def test_a_resume_with_other_task_limits_or_an_older_progress_file_is_refused(tiny_root, tmp_path, monkeypatch):
    """Episodes run with another step limit (or recorded without it) must not be mixed into the results."""

    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgressError

    real_run = evaluation.run_episodes
    args = ("--agent", "random", "--episodes", "10")
    monkeypatch.setattr(evaluation, "run_episodes", killed_after(real_run, 4))
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path, *args, "task.max_steps=5")
    monkeypatch.setattr(evaluation, "run_episodes", real_run)
    with pytest.raises(EvaluationProgressError, match=r"task was \{'max_steps': 5, .*now \{'max_steps': 500"):
        _evaluate(tiny_root, tmp_path, *args)

    progress_file = tmp_path / "random_tiny_unheard_test" / PROGRESS_FILE
    header, *lines = progress_file.read_text().splitlines(keepends=True)
    identity = json.loads(header)["evaluation"]
    for key in ("task", "data_root", "scene_source"):  # a file written before these were recorded
        identity.pop(key)
    progress_file.write_text(json.dumps({"evaluation": identity}) + "\n" + "".join(lines))
    with pytest.raises(EvaluationProgressError) as refused:
        _evaluate(tiny_root, tmp_path, *args, "task.max_steps=5")
    assert f"{progress_file} was written by an earlier release that did not record data_root (now " in str(
        refused.value
    )
    for key in ("task", "data_root", "scene_source"):
        assert f"{key} (now " in str(refused.value)
    assert "delete it (or move it aside) to start over, or pass another --out / --name" in str(refused.value)


def test_the_episode_fingerprint_covers_each_episode_not_only_its_id(synthetic):
    from dataclasses import replace

    from asgf_nav.tasks.episodes import episodes_fingerprint

    _, episodes, _ = synthetic
    moved = replace(episodes[0], start_position=[v + 0.5 for v in episodes[0].start_position])
    other_sound = replace(episodes[1], sound="drum" if episodes[1].sound != "drum" else "bell")
    assert episodes_fingerprint(episodes) == episodes_fingerprint(list(episodes))
    assert episodes_fingerprint([moved, *episodes[1:]]) != episodes_fingerprint(episodes)
    assert episodes_fingerprint([episodes[0], other_sound, *episodes[2:]]) != episodes_fingerprint(episodes)


def test_evaluation_of_best_pt_does_not_resume_over_a_newer_best(tiny_root, tmp_path, monkeypatch):
    """best.pt is rewritten while training goes on, and a retrained run reuses file names and update numbers;
    a resumed evaluation must not mix two checkpoints."""

    from asgf_nav.config import config_to_dict
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgressError
    from asgf_nav.models.policies import build_policy
    from asgf_nav.rl.checkpoint import save_best_checkpoint
    from asgf_nav.tasks.factory import load_task_data

    cfg = tiny_cfg(tiny_root)
    cfg.model.hidden_size, cfg.model.ase_dim, cfg.model.fusion_dim, cfg.model.fusion_heads = 32, 32, 16, 2
    cfg.task.sensors = ["spectrogram"]
    world, _ = load_task_data(cfg, "test")
    policy = build_policy(cfg, observation_space_for(world, cfg.task.sensors))

    def write_best(update: int) -> Path:
        state = {
            "model": policy.state_dict(),
            "optimizer": {},
            "update": update,
            "frames": 10 * update,
            "rng": {},
            "config": config_to_dict(cfg),
            "policy_name": "asgf",
        }
        return save_best_checkpoint(tmp_path / "run", state)

    best = write_best(1)
    real_run = evaluation.run_episodes
    args = ("--checkpoint", str(best), "--episodes", "3", "task.max_steps=10")
    monkeypatch.setattr(evaluation, "run_episodes", killed_after(real_run, 1))
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path / "eval", *args)
    assert (tmp_path / "eval" / "asgf_tiny_unheard_test" / PROGRESS_FILE).exists()
    monkeypatch.setattr(evaluation, "run_episodes", real_run)
    write_best(2)  # training found a better checkpoint meanwhile
    with pytest.raises(EvaluationProgressError, match="checkpoint_update was 1, now 2"):
        _evaluate(tiny_root, tmp_path / "eval", *args)
    original = {name: tensor.clone() for name, tensor in policy.state_dict().items()}
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)
    write_best(1)  # the run retrained: other weights under the same file name and update
    with pytest.raises(EvaluationProgressError, match="checkpoint_weights was '[0-9a-f]{16}', now '[0-9a-f]{16}'"):
        _evaluate(tiny_root, tmp_path / "eval", *args)
    policy.load_state_dict(original)
    write_best(1)  # the same checkpoint again: the evaluation resumes and finishes
    _evaluate(tiny_root, tmp_path / "eval", *args)
    assert load_summary(tmp_path / "eval" / "asgf_tiny_unheard_test")["episodes"] == 3


def test_an_evaluation_with_another_audio_model_is_another_evaluation(tiny_root, tmp_path, capsys):
    """The Direction Follower with model A, then with model B into the same directory: not the same agent."""
    import evaluate

    from asgf_nav.eval.progress import EvaluationProgressError
    from asgf_nav.tasks.spectrogram import spectrogram_shape
    from baselines.audio_model import AudioGoalNet, save_model

    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(save_model(tmp_path / f"model_{seed}.pt", AudioGoalNet(spectrogram_shape(44100)), {}))
    args = ("--agent", "direction_follower", "--sound-split", "unheard", "--episodes", "2", "task.max_steps=5")
    _evaluate(tiny_root, tmp_path / "eval", *args, "--baseline-model", str(models[0]))
    summary = load_summary(tmp_path / "eval" / "direction_follower_tiny_unheard_test")
    assert summary["meta"]["audio_model"]["path"] == str(models[0])
    with pytest.raises(EvaluationProgressError, match="audio_model"):
        _evaluate(tiny_root, tmp_path / "eval", *args, "--baseline-model", str(models[1]))
    for bad, message in (
        (["--sound-split", "both"], "each with its own model"),
        (["--agent", "oracle"], "not of --agent oracle"),
    ):
        argv = ["--dataset", "tiny", "--data-root", str(tiny_root), "--agent", "gan", "--baseline-model",
                str(models[0]), "--out", str(tmp_path / "bad"), *bad, *TINY_ACOUSTICS]  # fmt: skip
        with pytest.raises(SystemExit):
            evaluate.main(argv)
        assert message in capsys.readouterr().err


def test_a_stale_spectrogram_store_met_in_an_evaluation_names_its_config_and_split(tiny_root, tmp_path):
    """The command a stale store file's refusal prints during scripts/evaluate.py names the config evaluate.py
    was given and the evaluated split: the env built for evaluation passes them down, so no <config> is left."""
    import shlex

    import evaluate

    from asgf_nav.tasks.spectrogram import spectrogram_shape
    from asgf_nav.tasks.spectrogram_store import SpectrogramStoreError
    from baselines.audio_model import AudioGoalNet, save_model

    model = save_model(tmp_path / "model.pt", AudioGoalNet(spectrogram_shape(44100)), {})
    config = tmp_path / "eval_config.yaml"
    config.write_text("scenes:\n  dataset: tiny\n")
    store = tmp_path / "spectrograms"
    stale = store / "tiny" / "tiny_room_test" / "telephone.npy"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not a store file")  # what the heard split's one sound is read from
    argv = ["--config", str(config), "--data-root", str(tiny_root), "--out", str(tmp_path / "eval"),
            "--agent", "direction_follower", "--baseline-model", str(model), "--sound-split", "heard",
            "--episodes", "2", "task.max_steps=5", f"task.spectrogram_store={store}", *TINY_ACOUSTICS]  # fmt: skip
    with pytest.raises(SpectrogramStoreError, match=rf"spectrogram store {re.escape(str(stale))} is not a readable"):
        evaluate.main(argv)
    with pytest.raises(SpectrogramStoreError) as refused:
        evaluate.main(argv)  # the same message from a resumed evaluation
    command = str(refused.value).partition("bake it again (this replaces it): ")[2]
    assert command.startswith(f"python scripts/bake_spectrograms.py --config {shlex.quote(str(config))} ")
    assert "--split test " in command and "<" not in command


def test_report_script_names_a_bad_path_or_file(tmp_path, capsys):
    import report

    from asgf_nav.cli import run_script
    from asgf_nav.eval.progress import evaluation_lock

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text('{"meta": {')
    not_a_summary = tmp_path / "other"
    not_a_summary.mkdir()
    (not_a_summary / "summary.json").write_text('{"meta": {}}')
    unfinished = tmp_path / "unfinished" / "asgf_replica_unheard_test"
    unfinished.mkdir(parents=True)
    (unfinished / "episodes.partial.jsonl").write_text('{"evaluation": {}}\n')
    (tmp_path / "only_unfinished" / "asgf").mkdir(parents=True)
    (tmp_path / "only_unfinished" / "asgf" / "episodes.partial.jsonl").write_text('{"evaluation": {}}\n')
    metric = {"mean": 0.5, "low": 0.1, "high": 0.9, "std": 0.5, "count": 4}
    summary = {
        "meta": {"agent": "random", "split": "test"},
        "metrics": dict.fromkeys(("spl", "success", "sna"), metric),
    }
    no_sna = tmp_path / "no_sna"
    no_sna.mkdir()
    (no_sna / "summary.json").write_text(json.dumps(summary | {"metrics": {"spl": metric, "success": metric}}))
    no_count = tmp_path / "no_count"
    no_count.mkdir()
    (no_count / "summary.json").write_text(json.dumps(summary))
    finished = tmp_path / "unfinished" / "random_replica_unheard_test"  # beside the unfinished one
    finished.mkdir(parents=True)
    (finished / "summary.json").write_text(json.dumps(summary | {"episodes": 4}))
    cases = [
        ([str(tmp_path / "missing")], f"{tmp_path / 'missing'} is neither an evaluation directory"),
        ([str(no_sna)], f"{no_sna / 'summary.json'}: metrics.sna is missing or damaged (KeyError"),
        ([str(no_count)], f"{no_count / 'summary.json'}: 'episodes' (the episode count) is missing"),
        ([str(tmp_path / "unfinished")], f"without a summary ({unfinished} is unfinished: run its command again"),
        (
            [str(unfinished.parent.parent / "only_unfinished")],
            "holds any (" + str(tmp_path / "only_unfinished" / "asgf") + " is unfinished: run its command again",
        ),
        ([str(broken)], f"{broken / 'summary.json'} is not valid JSON"),
        ([str(not_a_summary)], "lacks a 'metrics' mapping; it is not an evaluation summary"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_script(lambda: report.main(argv))  # noqa: B023 (called at once)
        assert exit_info.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
    with evaluation_lock(unfinished):  # still running: rerunning its command would be refused by that lock
        with pytest.raises(SystemExit):
            run_script(lambda: report.main([str(tmp_path / "unfinished")]))
    assert f"{unfinished} is still running (its lock is held): wait for it to finish" in capsys.readouterr().err


def test_a_checkpoint_of_another_project_is_named_not_a_traceback(tmp_path, monkeypatch):
    """A foreign pickle (a SoundSpaces .pth with its yacs config, or classes of a numpy this machine lacks) and a
    checkpoint whose entries have other types both raise CheckpointError naming the file."""
    import sys
    import types

    from asgf_nav.rl.checkpoint import CheckpointError, load_checkpoint

    foreign = types.ModuleType("foreign_trainer")

    class Config(dict):
        pass

    Config.__module__, Config.__qualname__ = "foreign_trainer", "Config"
    foreign.Config = Config
    monkeypatch.setitem(sys.modules, "foreign_trainer", foreign)
    state = {"model": {}, "optimizer": {}, "update": 3, "frames": 96, "rng": {}, "config": Config()}
    torch.save(state, tmp_path / "foreign.pth")
    monkeypatch.delitem(sys.modules, "foreign_trainer")  # not installed where the file is read
    with pytest.raises(
        CheckpointError,
        match=r"foreign.pth is not one of this project's: reading it would run "
        r"foreign_trainer.Config, and files of this project hold only tensors",
    ):
        load_checkpoint(tmp_path / "foreign.pth")
    torch.save({**state, "config": "a yacs dump"}, tmp_path / "text_config.pt")
    with pytest.raises(CheckpointError, match=r"text_config.pt is not one of this project's: .*'config': 'str'"):
        load_checkpoint(tmp_path / "text_config.pt")


def test_an_evaluation_records_the_doa_heads_weights_and_warns_when_they_changed(tmp_path, caplog):
    """The config names the head by path; the evaluation identity holds its digest, and a checkpoint trained
    with other weights at that path is evaluated with a warning."""

    from asgf_nav.models.doa.observation import head_identity

    head = tmp_path / "head.pt"
    head.write_bytes(b"weights")
    cfg = ExperimentConfig()
    assert evaluation.doa_head_identity(cfg, None) is None  # no head, nothing to record
    cfg.task.use_doa, cfg.task.doa_checkpoint = True, str(head)
    trained = head_identity(head)
    with caplog.at_level(logging.WARNING, logger="evaluate"):
        assert evaluation.doa_head_identity(cfg, {"doa_head": trained}) == trained
        assert caplog.text == ""
        head.write_bytes(b"weights trained further")
        now = evaluation.doa_head_identity(cfg, {"doa_head": trained})
    assert now["path"] == str(head) and now["sha256"] != trained["sha256"]
    assert f"trained with the DoA head {head} of digest {trained['sha256']}" in caplog.text


def _summary(agent, dataset, sound_split, values, *, per_scene=None, half=0.0, episodes=10):
    """A summary.json-shaped dict whose metric m has mean values[m] and a CI of +- half."""

    def entry(mean):
        return {"mean": mean, "low": mean - half, "high": mean + half, "std": 0.1, "count": episodes, "level": 0.95}

    metrics = {m: entry(v) for m, v in values.items()}
    meta = {"agent": agent, "dataset": dataset, "sound_split": sound_split, "split": "test", "episode_list": "same"}
    return {"meta": meta, "episodes": episodes, "metrics": metrics, "per_scene": per_scene or {}}


_VALUES = {"success": 0.5, "spl": 0.25, "sna": 0.125, "softspl": 0.75, "distance_to_goal": 1.5, "num_actions": 30.0}


def test_comparison_table_puts_each_metric_in_its_column():
    """SPL, SR and SNA with distinct means land in their own columns; SR with its Wilson interval (5 of 10)."""
    from asgf_nav.eval.report import comparison_table

    lines = comparison_table([_summary("a", "replica", "heard", _VALUES, half=0.01)]).splitlines()
    assert lines[0] == "| method | replica heard SPL | replica heard SR | replica heard SNA |"
    low, high = (100 * end for end in wilson_interval(5, 10))
    assert lines[2] == f"| a | 25.0 ± 1.0 | 50.0 [{low:.1f}, {high:.1f}] | 12.5 ± 1.0 |"
    means = comparison_table([_summary("a", "replica", "heard", _VALUES)], with_ci=False).splitlines()
    assert means[2] == "| a | 25.0 | 50.0 | 12.5 |"


def test_summary_markdown_rows_per_scene_and_wilson_interval():
    """Each scene's row shows that scene's metrics; SR shows its Wilson interval's low and high ends in every
    row: the overall row's as stored, a scene's computed from its mean and count (10 of 10: [72.2, 100.0])."""
    from asgf_nav.eval.report import summary_markdown

    scene_values = {**_VALUES, "success": 1.0, "spl": 0.9}
    summary = _summary(
        "a", "replica", "heard", _VALUES, per_scene={"room_0": _summary("", "", "", scene_values)["metrics"]}
    )
    summary["metrics"]["success"].update(wilson_low=0.2, wilson_high=0.8)
    text = summary_markdown(summary)
    assert (
        "| all | 10 | 50.0 [20.0, 80.0] | 25.0 ± 0.0 | 12.5 ± 0.0 | 75.0 ± 0.0 | 1.50 ± 0.00 | 30.00 ± 0.00 |" in text
    )
    low = 100 * wilson_interval(10, 10)[0]
    assert f"| room_0 | 10 | 100.0 [{low:.1f}, 100.0] | 90.0 ± 0.0 | 12.5 ± 0.0 | 75.0 ± 0.0 |" in text
    assert "Mean ± half-width of the 95% confidence interval (Student t); SR: mean [95% Wilson interval]; rates" in text
    assert "(n=1)" not in text and "SR Wilson interval" not in text  # no one-episode row; the cell shows it


@pytest.fixture
def chart_figures(monkeypatch) -> list:
    """The figures report.comparison_chart draws, kept instead of written."""
    from asgf_nav.eval import report

    figures: list = []
    monkeypatch.setattr(report, "atomic_savefig", lambda fig, path, **kw: figures.append(fig) or path)
    return figures


def test_comparison_chart_bars_and_error_bars_in_percent(tmp_path, chart_figures):
    """One agent's bars are 100 x its SPL, SR and SNA means, their error bars 100 x the CI bounds: Student t for
    SPL and SNA, SR's Wilson interval (as in the table), stored with the summary or computed from mean and count."""
    from asgf_nav.eval import report

    figures = chart_figures
    report.comparison_chart([_summary("a", "replica", "heard", _VALUES, half=0.05)], tmp_path / "c.png")
    ax = figures[0].axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [25.0, 50.0, 12.5]
    from matplotlib.container import BarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    segments = bars.errorbar.lines[2][0].get_segments()
    low, high = (100 * end for end in wilson_interval(5, 10))
    assert [tuple(round(float(v), 6) for v in s[:, 1]) for s in segments] == [
        (20.0, 30.0), (round(low, 6), round(high, 6)), (7.5, 17.5)  # SPL and SNA: 100 x (mean -+ 0.05)
    ]  # fmt: skip
    stored = _summary("a", "replica", "heard", _VALUES, half=0.05)
    stored["metrics"]["success"].update(wilson_low=0.3, wilson_high=0.6)
    report.comparison_chart([stored], tmp_path / "c.png")
    (bars,) = [c for c in figures[1].axes[0].containers if isinstance(c, BarContainer)]
    assert [round(float(v), 6) for v in bars.errorbar.lines[2][0].get_segments()[1][:, 1]] == [30.0, 60.0]


def _record(scene: str, episode_id: str, **metrics: float) -> EpisodeRecord:
    """A finished episode of ``scene`` whose metrics are 0 except those given."""
    values = {m: 0.0 for m in REPORTED_METRICS} | metrics
    return EpisodeRecord(
        episode_id, scene, "bell", 0, 0, 1, [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], 1.0, 2, [1, 0], metrics=values
    )


def test_summarize_gives_each_scene_the_metrics_of_its_own_episodes():
    """Every scene gets a row, aggregated over that scene's episodes only; the overall row over all of them."""
    from asgf_nav.eval.report import summary_markdown

    records = [
        _record("room_a", "0", success=1.0, spl=0.5),
        _record("room_b", "1"),
        _record("room_a", "2", success=1.0, spl=1.0),
    ]
    summary = summarize(records)
    assert summary["episodes"] == 3 and list(summary["per_scene"]) == ["room_a", "room_b"]
    assert summary["metrics"]["success"]["mean"] == pytest.approx(2 / 3) and summary["metrics"]["spl"]["count"] == 3
    a, b = summary["per_scene"]["room_a"], summary["per_scene"]["room_b"]
    assert a["success"]["count"] == 2 and a["success"]["mean"] == 1.0 and a["spl"]["mean"] == pytest.approx(0.75)
    assert b["success"]["count"] == 1 and b["success"]["mean"] == 0.0 and b["spl"]["mean"] == 0.0
    text = summary_markdown(summary)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "SR" not in line]
    assert [row.split(" | ")[:4] for row in rows] == [
        ["| all", "3", "66.7 [20.8, 93.9]", "50.0 ± 124.2"],  # SR: Wilson, 2 of 3, not t's "66.7 ± 143.4"
        ["| room_a", "2", "100.0 [34.2, 100.0]", "75.0 ± 317.7"],  # each scene's row counts its own episodes
        ["| room_b", "1", "0.0 (n=1)", "0.0 (n=1)"],  # one episode: no interval, not "0.0 ± 0.0"
    ]
    assert "a row of one episode shows its values with (n=1), as no interval exists; " in text


def test_a_summary_counts_how_the_episodes_ended():
    """STOP on success, STOP elsewhere (with the median distance of those stops) and the step limit."""
    from asgf_nav.eval.report import summary_markdown

    records = [
        _record("room", "0", success=1.0),
        _record("room", "1", distance_to_goal=3.0),
        _record("room", "2", distance_to_goal=5.0),
        _record("room", "3", distance_to_goal=9.0),
    ]
    records[3].actions = [1, 2, 1]  # no STOP: the step limit ended it
    summary = summarize(records)
    assert summary["endings"] == {
        "stopped": 3,
        "stopped_successfully": 1,
        "failed_stop_distance_median": 4.0,
        "step_limit": 1,
    }
    assert ("Endings: 3 episode(s) called STOP, 1 of them successfully; the other 2 a median 4.00 m from the "
            "goal; 1 reached the step limit.") in summary_markdown(summary)  # fmt: skip
    every_stop_succeeded = summarize(records[:1])
    assert every_stop_succeeded["endings"]["failed_stop_distance_median"] is None
    assert "Endings: 1 episode(s) called STOP, 1 of them successfully; 0 reached" in summary_markdown(
        every_stop_succeeded
    )
    del summary["endings"]  # a summary of an earlier release
    assert "Endings" not in summary_markdown(summary)


def test_a_summary_says_how_many_rirs_were_heard_as_silence():
    """Results on SoundSpaces data with scenes.rir_on_missing=silence are marked, not only logged."""
    from asgf_nav.eval.report import summary_markdown

    summary = summarize([_record("office_9", "0", success=1.0)])
    assert "heard as silence" not in summary_markdown(summary)
    summary["meta"] = {"rir_on_missing": "silence", "rirs_replaced_by_silence": {"replica/office_9": 3, "replica/a": 1}}
    assert ("**4 binaural RIR files were missing or unreadable and heard as silence** (scenes.rir_on_missing="
            "silence): replica/a: 1, replica/office_9: 3.") in summary_markdown(summary)  # fmt: skip


def test_summarize_uses_the_requested_confidence_level_everywhere():
    """A 90 % summary has 90 % t intervals (overall and per scene) and a 90 % Wilson interval, not 95 % ones."""
    records = [_record("room", str(i), success=s) for i, s in enumerate((0.0, 1.0, 1.0, 1.0))]
    summary = summarize(records, level=0.9)
    half = 2.353363434801823 * 0.5 / 2.0  # t(0.95, 3) * std / sqrt(n)
    for entry in (summary["metrics"]["success"], summary["per_scene"]["room"]["success"]):
        assert entry["level"] == 0.9
        assert entry["low"] == pytest.approx(0.75 - half) and entry["high"] == pytest.approx(0.75 + half)
    z, n, p = 1.6448536269514722, 4, 0.75  # z(0.95) in Wilson's formula, by hand
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert summary["metrics"]["success"]["wilson_low"] == pytest.approx(centre - spread)
    assert summary["metrics"]["success"]["wilson_high"] == pytest.approx(centre + spread)


def test_episode_streams_differ_between_scenes_that_reuse_an_episode_id():
    """SoundSpaces numbers episodes per scene: episode "0" of two scenes must not draw the same actions."""
    first = episode_stream(1, "room_a", "0").random(4)
    assert np.array_equal(episode_stream(1, "room_a", "0").random(4), first)  # reproducible
    for other in ((1, "room_b", "0"), (2, "room_a", "0"), (1, "room_a", "1")):
        assert not np.array_equal(episode_stream(*other).random(4), first), other


def test_a_deterministic_policy_agent_with_a_seed_takes_the_most_likely_action():
    """evaluate.py passes train.seed to every checkpoint's agent: --deterministic must still take the argmax."""
    probs = torch.tensor([0.1, 0.5, 0.3, 0.1])

    class Peaked(torch.nn.Module):
        def initial_hidden(self, n, device="cpu"):
            return torch.zeros(1, n, 4)

        def distribution_and_value(self, obs, hidden, masks):
            return torch.distributions.Categorical(probs=probs.expand(len(masks), 4)), None, hidden

        def act(self, obs, hidden, masks, deterministic=False):
            dist, _, hidden = self.distribution_and_value(obs, hidden, masks)
            return None, dist.probs.argmax(-1) if deterministic else dist.sample(), None, hidden

    n = 64
    episodes = [types.SimpleNamespace(scene="room", episode_id=str(i)) for i in range(n)]
    context = types.SimpleNamespace(nodes=np.zeros(n), new_episode=np.ones(n, dtype=bool), episodes=episodes)
    agent = PolicyAgent(Peaked(), ["spectrogram"], deterministic=True, seed=3)
    assert agent.act({"spectrogram": torch.zeros(n, 1)}, context).tolist() == [1] * n


def test_a_key_the_checkpoint_recorded_wins_over_its_former_default():
    """keep_travel_time saved as False is used; True (its value before the key existed) only where it is absent."""
    state = {"model": {}, "optimizer": {}, "update": 1, "frames": 8, "rng": {}}
    cfg = ExperimentConfig()
    cfg.task.keep_travel_time = True
    saved = {**state, "config": {"task": {"keep_travel_time": False}}}
    assert config_for_checkpoint(cfg, saved).task.keep_travel_time is False
    older = {**state, "config": {"task": {}}}
    assert config_for_checkpoint(ExperimentConfig(), older).task.keep_travel_time is True


def test_read_jsonl_skips_blank_lines(tmp_path):
    """A records file with blank lines (files joined or edited by hand) reads back as its records."""
    path = write_jsonl(tmp_path / "episodes.jsonl", [_record("room", "0"), _record("room", "1", success=1.0)])
    path.write_text(path.read_text().replace("\n", "\n\n", 1) + "\n")
    records = read_jsonl(path)
    assert [r.episode_id for r in records] == ["0", "1"] and records[1].metrics["success"] == 1.0


def test_a_progress_file_resumes_an_identity_with_tuples_and_keeps_each_scenes_episode(tmp_path):
    """The identity is compared as it reads back from JSON (a tuple is written as a list), and episodes of two
    scenes that share an id are two episodes."""
    from asgf_nav.eval.progress import EvaluationProgress

    identity = {"agent": "oracle", "scenes": ("room_a", "room_b")}
    progress = EvaluationProgress(tmp_path, identity)
    progress.add(_record("room_a", "0", success=1.0))
    progress.add(_record("room_b", "0"))
    resumed = EvaluationProgress(tmp_path, identity)
    todo = [_record("room_a", "0"), _record("room_b", "0"), _record("room_b", "1")]
    assert [(r.scene, r.episode_id) for r in resumed.remaining(todo)] == [("room_b", "1")]
    assert [r.metrics["success"] for r in resumed.records(todo[:2])] == [1.0, 0.0]


def test_an_evaluation_resumes_from_another_install_of_the_same_model_files(tmp_path):
    """The packaged DoA head and audio model lie wherever the package is installed: an evaluation stopped in one
    clone or environment resumes in another with the same weights, and is refused with other weights."""
    from asgf_nav.eval.progress import EvaluationProgress, EvaluationProgressError

    old = {"agent": "own", "doa_head": {"path": "/old/venv/selective_doa.pt", "sha256": "851c315991b8ae00"},
           "audio_model": {"path": "/old/venv/audio.pt", "sha256": "0123456789abcdef"}}  # fmt: skip
    EvaluationProgress(tmp_path, old).add(_record("room", "0", success=1.0))
    moved = {key: {**value, "path": value["path"].replace("/old", "/new")} if isinstance(value, dict) else value
             for key, value in old.items()}  # fmt: skip
    resumed = EvaluationProgress(tmp_path, moved)
    assert [r.episode_id for r in resumed.remaining([_record("room", "0"), _record("room", "1")])] == ["1"]
    other = {**moved, "doa_head": {**moved["doa_head"], "sha256": "ffffffffffffffff"}}
    with pytest.raises(EvaluationProgressError, match=r"belongs to another evaluation: doa_head was"):
        EvaluationProgress(tmp_path, other)


def test_comparison_chart_places_and_labels_every_agent_in_every_panel(tmp_path, chart_figures):
    """Each panel is titled by its column and holds, side by side, the bars of every agent evaluated there (an
    agent missing from a column does not hide the ones after it); the legend names both agents."""
    from asgf_nav.eval import report

    figures = chart_figures
    b_unheard = {**_VALUES, "spl": 0.1, "success": 0.2, "sna": 0.05}
    summaries = [
        _summary("a", "replica", "heard", _VALUES),
        _summary("b", "replica", "heard", _VALUES),
        _summary("b", "replica", "unheard", b_unheard),
    ]
    report.comparison_chart(summaries, tmp_path / "c.png")
    heard, unheard = figures[0].axes
    assert [heard.get_title(), unheard.get_title()] == ["replica heard (test split)", "replica unheard (test split)"]
    assert heard.get_ylabel() == "% (bars: 95 % confidence intervals, SR Wilson)"
    # bar width 0.8 / 2 agents: a's bars left of each metric's tick (0, 1, 2), b's right of it
    assert [round(p.get_x() + p.get_width() / 2, 6) for p in heard.patches] == [-0.2, 0.8, 1.8, 0.2, 1.2, 2.2]
    assert [round(p.get_height(), 6) for p in unheard.patches] == [10.0, 20.0, 5.0]  # b's SPL, SR, SNA
    assert [round(p.get_x() + p.get_width() / 2, 6) for p in unheard.patches] == [0.2, 1.2, 2.2]
    assert [t.get_text() for t in figures[0].legends[0].get_texts()] == ["a", "b"]


def test_comparison_chart_cuts_interval_bars_at_0_and_100_and_leaves_them_out_without_ci(tmp_path, chart_figures):
    """A Student-t interval of a rate near 0 reaches below it; the bar drawn stops at 0 %."""
    from asgf_nav.eval import report

    summaries = [_summary("a", "replica", "heard", {**_VALUES, "spl": 0.02}, half=0.05)]
    report.comparison_chart(summaries, tmp_path / "c.png")
    report.comparison_chart(summaries, tmp_path / "d.png", with_ci=False)
    with_bars, without = (figure.axes[0] for figure in chart_figures)
    (low, high), *_ = with_bars.collections[0].get_segments()[0:1]  # the SPL bar's error line
    assert low[1] == pytest.approx(0.0) and high[1] == pytest.approx(7.0)
    assert not without.collections and without.get_ylabel() == "% (means)"


def test_comparison_table_note_names_every_episode_count():
    """Evaluations of different sizes are all named in the note under the table, smallest first."""
    summaries = [
        _summary("a", "replica", "heard", _VALUES, episodes=9),
        _summary("b", "replica", "heard", _VALUES, episodes=6),
    ]
    assert comparison_table(summaries).splitlines()[-1].endswith("episodes per evaluation: 6, 9.")


def test_the_chart_legend_names_an_agent_evaluated_only_in_a_later_panel(tmp_path, chart_figures):
    """A baseline run only on unheard sounds has bars in the second panel alone; the legend still names it,
    in the table's agent order."""
    from asgf_nav.eval import report

    figures = chart_figures
    summaries = [
        _summary("asgf", "replica", "heard", _VALUES),
        _summary("asgf", "replica", "unheard", _VALUES),
        _summary("av_nav", "replica", "unheard", _VALUES),
    ]
    report.comparison_chart(summaries, tmp_path / "c.png")
    assert [t.get_text() for t in figures[0].legends[0].get_texts()] == ["asgf", "av_nav"]


def test_comparison_table_note_gives_the_summaries_confidence_level():
    """Summaries at 90 % are noted as 90 % intervals, not the default 95 %; mixed levels are all named."""
    ninety = _summary("a", "replica", "heard", _VALUES)
    for entry in ninety["metrics"].values():
        entry["level"] = 0.9
    assert "half-width of the 90 % confidence interval" in comparison_table([ninety]).splitlines()[-1]
    both = comparison_table([ninety, _summary("b", "replica", "heard", _VALUES)]).splitlines()[-1]
    assert "half-width of the 90 % / 95 % confidence interval" in both


class _StopAtOnce(Agent):
    """Calls STOP on every step (each episode is one action long) and keeps the success distance it was shown."""

    name = "stop"
    sensors: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.success_distances: list[float] = []

    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        self.success_distances.append(ctx.success_distance)
        return np.zeros(len(ctx.nodes), dtype=np.int64)


def test_only_the_recorded_episodes_reach_on_record(synthetic) -> None:
    """Envs past their share step through discarded episodes; those never reach on_record (the progress file)."""
    world, episodes, cfg = synthetic
    chosen = episodes[:4]  # 3 envs: shares of 2, 1 and 1; at step 2 envs 1 and 2 end discarded episodes
    saved: list[EpisodeRecord] = []
    records = run_episodes(_StopAtOnce(), world, chosen, cfg, num_envs=3, progress=False, on_record=saved.append)
    assert len(saved) == 4 and sorted(r.episode_id for r in saved) == sorted(e.episode_id for e in chosen)
    assert sorted(map(id, saved)) == sorted(map(id, records))


def test_the_context_carries_the_configured_success_distance(synthetic) -> None:
    """Agents (the random baseline's STOP rule) see task.success_distance, not the 1 m default."""
    world, episodes, base = synthetic
    cfg = copy.deepcopy(base)
    cfg.task.success_distance = 2.5
    agent = _StopAtOnce()
    run_episodes(agent, world, episodes[:2], cfg, num_envs=2, progress=False)
    assert agent.success_distances == [2.5]


def test_an_agent_evaluated_twice_is_reset_and_acts_the_same(synthetic) -> None:
    """run_episodes resets the agent first: one seeded random agent run twice takes the same actions."""
    world, episodes, cfg = synthetic
    agent = RandomAgent(seed=4)
    first = run_episodes(agent, world, episodes[:3], cfg, num_envs=3, progress=False)
    second = run_episodes(agent, world, episodes[:3], cfg, num_envs=3, progress=False)
    assert [r.actions for r in second] == [r.actions for r in first]


def test_selecting_zero_episodes_is_a_clear_error() -> None:
    """--episodes 0 is refused by name rather than evaluating nothing."""
    with pytest.raises(ValueError, match="num_episodes must be positive, got 0"):
        select_episodes(list(range(10)), 0)


def test_a_seeded_sampling_policy_agent_draws_each_env_from_its_own_distribution() -> None:
    """With a seed, env i samples from env i's action probabilities (one-hot here, so the draw is certain)."""
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])

    class OneHot(torch.nn.Module):
        def initial_hidden(self, n, device="cpu"):
            return torch.zeros(1, n, 4)

        def distribution_and_value(self, obs, hidden, masks):
            return torch.distributions.Categorical(probs=probs), None, hidden

    episodes = [types.SimpleNamespace(scene="room", episode_id=str(i)) for i in range(3)]
    context = types.SimpleNamespace(nodes=np.zeros(3), new_episode=np.ones(3, dtype=bool), episodes=episodes)
    agent = PolicyAgent(OneHot(), ["spectrogram"], deterministic=False, seed=3)
    assert agent.act({"spectrogram": torch.zeros(3, 1)}, context).tolist() == [0, 2, 3]


def test_a_checkpoint_trained_with_the_doa_posterior_is_evaluated_with_it() -> None:
    """task.use_doa is part of what the weights observe: the checkpoint's True wins over the config's False."""
    state = {"model": {}, "optimizer": {}, "update": 1, "frames": 8, "rng": {}}
    saved = {**state, "config": {"task": {"use_doa": True, "sensors": ["spectrogram", "doa"]}}}
    restored = config_for_checkpoint(ExperimentConfig(), saved)
    assert restored.task.use_doa is True and restored.task.sensors == ["spectrogram", "doa"]


def test_read_jsonl_names_the_line_that_is_not_an_episode_record(tmp_path) -> None:
    """Valid JSON that is not an episode record is an EvaluationFileError naming the file and line."""
    path = write_jsonl(tmp_path / "episodes.jsonl", [_record("room", "0")])
    path.write_text(path.read_text() + json.dumps({"episode_id": "1", "scene": "room"}) + "\n")
    with pytest.raises(EvaluationFileError, match=r"episodes\.jsonl:2: not an episode record"):
        read_jsonl(path)


def test_markdown_delimiter_rows_have_a_cell_for_every_header_cell() -> None:
    """summary.md and a two-column-group Table I are Markdown tables: delimiter row as wide as the header."""
    from asgf_nav.eval.report import summary_markdown

    tables = [
        summary_markdown(_summary("a", "replica", "heard", _VALUES)),
        comparison_table([_summary("a", "replica", "heard", _VALUES), _summary("a", "replica", "unheard", _VALUES)]),
    ]
    for text in tables:
        header, delimiter = [line for line in text.splitlines() if line.startswith("|")][:2]
        assert header.count("|") == delimiter.count("|") and set(delimiter) == {"|", "-"}
    assert tables[0].splitlines()[5].count("|") == 9  # scope, episodes and six metrics
    assert tables[1].splitlines()[1].count("|") == 8  # method and 2 x (SPL, SR, SNA)


def test_comparison_columns_are_grouped_by_dataset_then_heard_before_unheard() -> None:
    """Table I's column groups: each dataset's heard then unheard sounds, datasets in name order."""
    summaries = [_summary("a", d, s, _VALUES) for d in ("replica", "mp3d") for s in ("unheard", "heard")]
    groups = [cell.rsplit(" ", 1)[0] for cell in comparison_table(summaries).splitlines()[0].split(" | ")[1::3]]
    assert groups == ["mp3d heard", "mp3d unheard", "replica heard", "replica unheard"]


def test_comparison_chart_gives_each_agent_its_own_colour_in_every_panel(tmp_path, chart_figures) -> None:
    """Agents' bars differ in colour, and an agent keeps its colour (the legend's) from panel to panel."""
    from asgf_nav.eval import report

    figures = chart_figures
    summaries = [
        _summary("a", "replica", "heard", _VALUES),
        _summary("b", "replica", "heard", _VALUES),
        _summary("b", "replica", "unheard", _VALUES),
    ]
    report.comparison_chart(summaries, tmp_path / "c.png")
    heard, unheard = figures[0].axes
    a_colours = {p.get_facecolor() for p in heard.patches[:3]}
    b_colours = {p.get_facecolor() for p in heard.patches[3:]} | {p.get_facecolor() for p in unheard.patches}
    assert len(a_colours) == 1 and len(b_colours) == 1 and a_colours != b_colours


def _write_summary(directory: Path, summary: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory


def test_report_refuses_to_write_over_the_files_of_an_evaluation(tmp_path, capsys) -> None:
    """--table / --out naming a summary read, or another file an evaluation directory holds of its own (also
    of an evaluation not reported, or one still running), is refused before anything is written."""
    import report

    run = _write_summary(tmp_path / "runs" / "a_replica_heard_test", _summary("a", "replica", "heard", _VALUES))
    running = tmp_path / "other"  # an unfinished evaluation: only its progress file so far
    running.mkdir()
    (running / "episodes.partial.jsonl").write_text('{"evaluation": {}}\n')
    before = (run / "summary.json").read_bytes()
    cases = [
        ([str(run), "--table", str(run / "summary.json")], f"{run / 'summary.json'} is the summary.json of"),
        ([str(tmp_path / "runs"), "--table", str(run / "summary.md")], "is the summary.md of the evaluation"),
        ([str(run), "--table", str(run / "episodes.jsonl")], "is the episodes.jsonl of the evaluation"),
        ([str(run), "--table", str(running / "episodes.jsonl")], f"the evaluation {running.resolve()}"),
        ([str(run), "--table", str(tmp_path / "t.png"), "--out", str(tmp_path / "t.png")], "both name"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            report.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, argv
    assert (run / "summary.json").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["summary.json"] and not (running / "episodes.jsonl").exists()
    assert report.main([str(run), "--table", str(run / "table.md")]) == 0  # a file of its own name is fine
    assert (run / "table.md").read_text().startswith("| method |")
    table = tmp_path / "runs" / "summary.md"  # a table named summary.md beside the evaluations it reports
    for _ in range(2):  # the same command again: its own earlier table does not make the folder an evaluation
        assert report.main([str(tmp_path / "runs"), "--table", str(table)]) == 0


def test_a_summary_without_the_names_of_its_row_and_column_or_with_a_nan_mean_is_refused(tmp_path) -> None:
    """The table's row (agent), column (dataset, sound split) and split come from meta: each must be a name,
    and each table metric finite, or the summary is refused naming the file and the key."""
    good = _summary("a", "tiny", "heard", _VALUES)
    no_agent = copy.deepcopy(good)
    del no_agent["meta"]["agent"]
    no_dataset = copy.deepcopy(good)
    del no_dataset["meta"]["dataset"]
    null_split = copy.deepcopy(good)
    null_split["meta"]["sound_split"] = None
    nan_mean = copy.deepcopy(good)
    nan_mean["metrics"]["spl"]["mean"] = float("nan")
    cases = {
        "no_agent": (no_agent, "meta.agent is missing"),
        "no_dataset": (no_dataset, "meta.dataset is missing"),
        "null_split": (null_split, "meta.sound_split is None, not a name"),
        "nan_mean": (nan_mean, "metrics.spl is not finite (mean nan"),
    }
    for name, (summary, message) in cases.items():
        directory = _write_summary(tmp_path / name, summary)
        with pytest.raises(EvaluationFileError, match=re.escape(f"{directory / 'summary.json'}: {message}")):
            load_summary(directory)
    assert load_summary(_write_summary(tmp_path / "good", good))["meta"]["agent"] == "a"
    assert load_summary(tmp_path / "no_agent", meta_keys=())["meta"]["dataset"] == "tiny"  # no table: not needed


def test_a_resume_refuses_a_damaged_record_naming_its_line_before_any_episode_runs(tmp_path) -> None:
    """A record of the progress file with a field of another type than an evaluation writes (metrics a string,
    a distance 'far', a node given as text) or a field missing is refused naming the file and its line, also
    when it is the last line (only a line cut short by a kill is dropped)."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgress, EvaluationProgressError

    identity = {"agent": "oracle", "seed": 0}
    progress = EvaluationProgress(tmp_path, identity)
    for i in range(3):
        progress.add(_record("room", str(i), success=1.0))
    path = tmp_path / PROGRESS_FILE
    lines = path.read_text().splitlines()
    cases = [
        (2, {"metrics": "fast"}, "metrics is 'fast', not a mapping"),
        (2, {"geodesic_distance": "far"}, "geodesic_distance is 'far', not a distance"),
        (3, {"start_node": "3"}, "start_node is '3', not a whole number"),  # the last line: not dropped
        (3, {"path": [[0, 0], ["1", 0]]}, "path[1] is ['1', 0], not a [node, yaw] pose"),
        (2, {"metrics": {"success": "yes"}}, "metrics {'success': 'yes'} are not finite numbers"),
        (2, {"metrics": {"success": 1.0}}, "metrics lacks ['spl', 'sna', 'softspl', 'distance_to_goal'"),
        (2, {"episode_id": None}, "episode_id is None, not a string"),
    ]
    for index, change, message in cases:
        damaged = list(lines)
        damaged[index] = json.dumps(json.loads(lines[index]) | change)
        path.write_text("\n".join(damaged) + "\n")
        expected = f"{path} line {index + 1} is not an episode record: {message}"
        with pytest.raises(EvaluationProgressError, match=re.escape(expected)) as error:
            EvaluationProgress(tmp_path, identity)
        assert "delete that line to run its episode again, or the file to start over" in str(error.value)
    missing = list(lines)
    missing[2] = json.dumps({k: v for k, v in json.loads(lines[2]).items() if k != "metrics"})
    path.write_text("\n".join(missing) + "\n")
    with pytest.raises(EvaluationProgressError, match=r"line 3 is not an episode record: it lacks the field\(s\)"):
        EvaluationProgress(tmp_path, identity)
    path.write_text("\n".join(lines) + "\n")
    assert len(EvaluationProgress(tmp_path, identity).done) == 3  # the records as written resume


def test_a_resumed_evaluation_with_a_damaged_record_runs_no_episode(tiny_root, tmp_path, monkeypatch) -> None:
    """The damaged record is refused when the progress file is read, before the remaining episodes run (not
    after them, as a KeyError, leaving episodes.jsonl without a summary)."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgressError

    out = tmp_path / "resumed" / "oracle_tiny_unheard_test"
    monkeypatch.setattr(evaluation, "run_episodes", killed_after(evaluation.run_episodes, 3))
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path / "resumed", "--agent", "oracle", "--episodes", "6")
    lines = (out / PROGRESS_FILE).read_text().splitlines()
    lines[2] = json.dumps(json.loads(lines[2]) | {"metrics": "fast"})
    (out / PROGRESS_FILE).write_text("\n".join(lines) + "\n")
    ran = []
    monkeypatch.setattr(evaluation, "run_episodes", lambda *a, **k: ran.append(a) or [])
    with pytest.raises(EvaluationProgressError, match=re.escape(f"{out / PROGRESS_FILE} line 3")):
        _evaluate(tiny_root, tmp_path / "resumed", "--agent", "oracle", "--episodes", "6")
    assert ran == [] and not (out / "episodes.jsonl").exists()


def test_report_split_without_evaluations_names_the_splits_found(tmp_path, capsys) -> None:
    """--split of no evaluation lists the splits there are (as --agents lists the agents); a summary.json
    named itself is still read as its evaluation."""
    import report

    test_run = _write_summary(tmp_path / "runs" / "a_test", _summary("a", "tiny", "heard", _VALUES))
    train = _summary("a", "tiny", "unheard", _VALUES)
    train["meta"]["split"] = "train"
    _write_summary(tmp_path / "runs" / "a_train", train)
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(tmp_path / "runs"), "--split", "val"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--split: no evaluation of split 'val' under" in err and "splits found: ['test', 'train']" in err
    assert report.main([str(test_run / "summary.json"), "--split", "test"]) == 0


def test_an_unfinished_evaluation_named_as_the_current_directory_is_reported(tmp_path, monkeypatch, capsys) -> None:
    """'.' has no name to put the lock beside: its lock is looked up by its absolute path, not a ValueError."""
    import report

    from asgf_nav.cli import run_script

    (tmp_path / "episodes.partial.jsonl").write_text('{"evaluation": {}}\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: report.main(["."]))
    assert exit_info.value.code == 2 and "is unfinished: run its command again" in capsys.readouterr().err


def test_report_refuses_a_column_of_evaluations_under_other_task_settings(tiny_root, tmp_path, capsys) -> None:
    """A random agent at task.max_steps=20 beside an oracle at 500, or one success distance beside another, is
    refused naming the setting, its values and the evaluations; what is an agent's own may differ."""
    import report

    _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "4", "--sound-split", "heard")
    _evaluate(
        tiny_root, tmp_path, "--agent", "random", "--episodes", "4", "--sound-split", "heard", "task.max_steps=20"
    )
    oracle, random_dir = tmp_path / "oracle_tiny_heard_test", tmp_path / "random_tiny_heard_test"
    with pytest.raises(SystemExit) as exit_info:
        run_script(lambda: report.main([str(tmp_path)]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert (
        f"the evaluations on tiny heard ran under different task settings (task.max_steps is 500 for 'oracle' "
        f"({oracle.resolve()}), 20 for 'random' ({random_dir.resolve()}))" in err
    )
    assert "evaluate them with the same task.max_steps" in err

    task = {
        "max_steps": 500,
        "success_distance": 1.0,
        "use_doa": False,
        "doa_checkpoint": "",
        "keep_travel_time": False,
    }
    a, b, c = (_summary(agent, "tiny", "heard", _VALUES) for agent in ("a", "b", "c"))
    for summary in (a, b, c):
        summary["meta"].update(task=dict(task), scene_source="embedded", episode_list="0123456789abcdef")
    b["meta"]["task"]["success_distance"] = 0.4
    c["meta"]["task"]["success_distance"] = 0.4
    c["meta"]["scene_source"] = "soundspaces"
    with pytest.raises(EvaluationFileError) as refused:
        comparison_table([a, b, c])
    assert (
        "(scene_source is 'embedded' for 'a' and 'b', 'soundspaces' for 'c'; task.success_distance is 1.0 for "
        "'a', 0.4 for 'b' and 'c')" in str(refused.value)
    )
    with pytest.raises(EvaluationFileError, match="different task settings"):
        comparison_chart([a, b], tmp_path / "mixed.png")
    assert comparison_table([a, {**b, "meta": {**b["meta"], "sound_split": "unheard"}}])  # other columns: fine

    # the agent's own: its checkpoint, DoA head and flag, travel time (brought by a checkpoint), acting mode,
    # seed, the random agent's num_envs, the machine's data root; and a summary recorded before meta.task
    own = copy.deepcopy(a)
    own["meta"] = {**own["meta"], "agent": "own", "checkpoint": "/runs/x/ckpt.pt", "deterministic": True, "seed": 3,
                   "doa_head": {"path": "h.pt", "sha256": "0" * 16}, "num_envs": 20, "data_root": "/elsewhere",
                   "task": {**task, "use_doa": True, "doa_checkpoint": "h.pt", "keep_travel_time": True}}  # fmt: skip
    older = _summary("older", "tiny", "heard", _VALUES)
    older["meta"]["episode_list"] = a["meta"]["episode_list"]
    assert "| own |" in comparison_table([a, own, older])


def test_both_sound_splits_are_checked_against_their_directories_before_any_episode_runs(
    tiny_root, tmp_path, monkeypatch
) -> None:
    """--sound-split both whose unheard directory holds a finished evaluation of something else is refused at
    once: the heard split runs no episode, its finished result is not rewritten, and no progress file stays."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgressError

    _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "4", "--sound-split", "heard")
    for out in (tmp_path, tmp_path / "new"):  # more episodes than the both-split run below asks for
        _evaluate(tiny_root, out, "--agent", "oracle", "--episodes", "6", "--sound-split", "unheard")
    heard, unheard = tmp_path / "oracle_tiny_heard_test", tmp_path / "oracle_tiny_unheard_test"
    before = {d: (d / "summary.json").read_bytes() for d in (heard, unheard)}
    ran: list[str] = []
    monkeypatch.setattr(evaluation, "run_episodes", lambda agent, world, episodes, cfg, **kw: ran.append(cfg))
    with pytest.raises(EvaluationProgressError, match=f"{re.escape(str(unheard))} holds a finished evaluation of "
                       "something else: episode_list was"):  # fmt: skip
        _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "4", "--sound-split", "both")
    assert ran == []
    assert {d: (d / "summary.json").read_bytes() for d in (heard, unheard)} == before
    assert not (heard / PROGRESS_FILE).exists() and not (unheard / PROGRESS_FILE).exists()

    # a heard directory this run would have made new is not left behind as an unfinished evaluation
    with pytest.raises(EvaluationProgressError, match="holds a finished evaluation of something else"):
        _evaluate(tiny_root, tmp_path / "new", "--agent", "oracle", "--episodes", "4", "--sound-split", "both")
    assert not (tmp_path / "new" / "oracle_tiny_heard_test").exists() and ran == []


def test_the_random_agents_result_is_not_replaced_by_a_draw_with_another_num_envs(tiny_root, tmp_path) -> None:
    """The random agent draws a batch of actions per step, so --num-envs is part of what it is evaluated with;
    agents whose episodes do not depend on it (the oracle, a checkpoint) do not record it."""
    from asgf_nav.eval.progress import EvaluationProgressError

    args = ("--agent", "random", "--episodes", "6", "task.max_steps=40")
    _evaluate(tiny_root, tmp_path, *args)  # --num-envs 3
    out = tmp_path / "random_tiny_unheard_test"
    finished = (out / "summary.json").read_bytes()
    assert load_summary(out)["meta"]["num_envs"] == 3
    with pytest.raises(
        EvaluationProgressError, match="holds a finished evaluation of something else: num_envs was 3, now 2"
    ):
        _evaluate(tiny_root, tmp_path, *args, "--num-envs", "2")
    assert (out / "summary.json").read_bytes() == finished
    _evaluate(tiny_root, tmp_path, *args)  # the same draw again: runs
    summary = json.loads((out / "summary.json").read_text())
    del summary["meta"]["num_envs"]  # as written before num_envs was recorded
    (out / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(EvaluationProgressError) as refused:
        _evaluate(tiny_root, tmp_path, *args)  # with the same --num-envs: it cannot tell whether the old one was
    assert str(refused.value) == (
        f"{out} holds a finished evaluation written by an earlier release that did not record num_envs (now 3), "
        "so it cannot be told to be this evaluation: move it aside, or choose another --out (or --name) to keep both"
    )
    assert json.loads((out / "summary.json").read_text()) == summary
    _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "6")
    _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "6", "--num-envs", "2")  # the same episodes
    assert "num_envs" not in load_summary(tmp_path / "oracle_tiny_unheard_test")["meta"]


def test_more_episodes_than_the_split_holds_are_pointed_out(tiny_root, tmp_path, capsys) -> None:
    """--episodes 50 of a 16-episode split evaluates the 16 and says so, naming both numbers."""
    _evaluate(tiny_root, tmp_path, "--agent", "oracle", "--episodes", "50")
    summary = load_summary(tmp_path / "oracle_tiny_unheard_test")
    assert summary["episodes"] == 16 and summary["meta"]["episodes_requested"] == 50
    err = capsys.readouterr().err
    assert "WARNING evaluate: --episodes 50 asks for more episodes than the test split holds for unheard sounds " in err
    assert "(16); evaluating all 16" in err
    _evaluate(tiny_root, tmp_path / "fewer", "--agent", "oracle", "--episodes", "16")
    assert "asks for more episodes" not in capsys.readouterr().err


def test_a_checkpoint_is_one_evaluation_by_relative_absolute_or_linked_path(tiny_root, tmp_path, monkeypatch) -> None:
    """The summary records the checkpoint's resolved path; the same file typed relative to the run directory, as
    an absolute path, or recorded through a symlink by an older evaluate.py is one evaluation, another file not."""
    import shutil

    from asgf_nav.eval.progress import EvaluationProgressError

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    checkpoint = _tiny_checkpoint(tiny_root, tmp_path / "run" / "checkpoints" / "ckpt_000001.pt")
    out = tmp_path / "eval" / "asgf_tiny_unheard_test"
    monkeypatch.chdir(tmp_path / "run")
    args = ("--episodes", "2", "task.max_steps=5")
    _evaluate(tiny_root, tmp_path / "eval", "--checkpoint", "checkpoints/ckpt_000001.pt", *args)
    assert load_summary(out)["meta"]["checkpoint"] == str(checkpoint.resolve())
    _evaluate(tiny_root, tmp_path / "eval", "--checkpoint", str(checkpoint), *args)  # the same file: runs again

    (tmp_path / "link").symlink_to(tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text())
    summary["meta"]["checkpoint"] = str(tmp_path / "link" / "checkpoints" / "ckpt_000001.pt")  # as typed then
    (out / "summary.json").write_text(json.dumps(summary))
    _evaluate(tiny_root, tmp_path / "eval", "--checkpoint", "checkpoints/ckpt_000001.pt", *args)
    assert load_summary(out)["meta"]["checkpoint"] == str(checkpoint.resolve())

    other = shutil.copy(checkpoint, tmp_path / "ckpt_copy.pt")  # the same weights in another file
    with pytest.raises(EvaluationProgressError, match="holds a finished evaluation of something else: checkpoint"):
        _evaluate(tiny_root, tmp_path / "eval", "--checkpoint", str(other), *args)


def test_a_checkpoint_recorded_by_a_relative_path_is_told_by_its_update_and_weights(
    tiny_root, tmp_path, monkeypatch
) -> None:
    """An earlier release recorded the path as typed, relative to a directory the record does not name: run from
    elsewhere, the checkpoint is the same one when its update and weights' digest are, another one when not."""
    import shutil

    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgressError

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    checkpoint = _tiny_checkpoint(tiny_root, tmp_path / "run" / "checkpoints" / "ckpt_000001.pt")
    out = tmp_path / "eval" / "asgf_tiny_unheard_test"
    args = ("--checkpoint", str(checkpoint), "--episodes", "2", "task.max_steps=5")
    relative = "checkpoints/ckpt_000001.pt"  # typed in run/, as an earlier release kept it
    _evaluate(tiny_root, tmp_path / "eval", *args)
    summary = json.loads((out / "summary.json").read_text())
    summary["meta"]["checkpoint"] = relative
    (out / "summary.json").write_text(json.dumps(summary))
    monkeypatch.chdir(tmp_path)  # where that path names no file
    _evaluate(tiny_root, tmp_path / "eval", *args)  # the same update and weights: the same evaluation, run again
    assert load_summary(out)["meta"]["checkpoint"] == str(checkpoint.resolve())

    summary["meta"]["checkpoint_weights"] = "0" * 16  # other weights recorded under that relative path
    (out / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(
        EvaluationProgressError, match="something else: checkpoint_weights was '0000000000000000', now '[0-9a-f]{16}'"
    ):
        _evaluate(tiny_root, tmp_path / "eval", *args)

    shutil.rmtree(out)  # a stopped run's progress file is compared the same way
    real_run = evaluation.run_episodes
    monkeypatch.setattr(evaluation, "run_episodes", killed_after(real_run, 1))
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path / "eval", *args)
    monkeypatch.setattr(evaluation, "run_episodes", real_run)
    header, *lines = (out / PROGRESS_FILE).read_text().splitlines(keepends=True)
    identity = {**json.loads(header)["evaluation"], "checkpoint": relative}
    (out / PROGRESS_FILE).write_text(json.dumps({"evaluation": identity}) + "\n" + "".join(lines))
    _evaluate(tiny_root, tmp_path / "eval", *args)
    assert load_summary(out)["episodes"] == 2 and not (out / PROGRESS_FILE).exists()


def test_a_name_with_a_path_separator_is_refused_and_one_with_dots_is_a_label(tiny_root, tmp_path, capsys) -> None:
    """--name begins the name of a directory under --out: '../escaped' would write outside it, while dots alone
    ("v1..v2", even "..") stay inside, as the start of "{name}_{dataset}_..."."""
    import evaluate

    for name in ("../escaped", "a/b", "a\\b", "a\0b"):
        argv = ["--dataset", "tiny", "--data-root", str(tiny_root), "--agent", "oracle", "--name", name,
                "--out", str(tmp_path / "out"), *TINY_ACOUSTICS]  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(argv)
        assert exit_info.value.code == 2
        assert f"--name {name!r} holds a path separator or a NUL byte" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, inside --out or beside it
    with pytest.raises(ValueError, match=r"--name '\.\./x' holds a path separator"):
        evaluation.EvaluationRequest(agent="oracle", name="../x")
    assert evaluation.name_problem("..") is None and evaluation.EvaluationRequest(agent="oracle", name="..")
    _evaluate(tiny_root, tmp_path / "out", "--agent", "oracle", "--name", "v1..v2", "--episodes", "1")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert load_summary(tmp_path / "out" / "v1..v2_tiny_unheard_test")["meta"]["agent"] == "v1..v2"


def test_an_evaluation_records_its_acoustics_and_is_not_resumed_or_rerun_across_a_rebake(
    tiny_root, tmp_path, monkeypatch
) -> None:
    """An evaluation stopped before the scenes were baked again (ACOUSTICS_VERSION) is not resumed with the new
    responses, and a finished one is not replaced by an evaluation on other acoustics or another renderer
    (RENDER_VERSION); one an earlier release wrote without the versions is refused saying so."""
    from asgf_nav.acoustics.bake import ACOUSTICS_VERSION
    from asgf_nav.acoustics.rir import RENDER_VERSION
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgressError

    args = ("--agent", "oracle", "--episodes", "4", "task.max_steps=40")
    out = tmp_path / "oracle_tiny_unheard_test"
    real_run = evaluation.run_episodes
    monkeypatch.setattr(evaluation, "hears_audio", lambda request: True)  # as an agent that hears would be
    monkeypatch.setattr(evaluation, "ACOUSTICS_VERSION", ACOUSTICS_VERSION - 1)  # stopped before the re-bake
    monkeypatch.setattr(evaluation, "run_episodes", killed_after(real_run, 2))
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path, *args)
    monkeypatch.setattr(evaluation, "run_episodes", real_run)
    monkeypatch.setattr(evaluation, "ACOUSTICS_VERSION", ACOUSTICS_VERSION)  # the scenes were baked again
    stopped = (out / PROGRESS_FILE).read_bytes()
    with pytest.raises(EvaluationProgressError) as refused:
        _evaluate(tiny_root, tmp_path, *args)
    assert str(refused.value).startswith(
        f"{out / PROGRESS_FILE} belongs to another evaluation: acoustics_version was {ACOUSTICS_VERSION - 1}, now "
        f"{ACOUSTICS_VERSION}; the embedded scenes' responses were baked or rendered again since"
    )
    assert (out / PROGRESS_FILE).read_bytes() == stopped  # nothing added to it

    (out / PROGRESS_FILE).unlink()
    _evaluate(tiny_root, tmp_path, *args)
    finished = (out / "summary.json").read_bytes()
    meta = load_summary(out)["meta"]
    versions = (ACOUSTICS_VERSION, RENDER_VERSION)
    assert meta["scene_source"] == "embedded" and (meta["acoustics_version"], meta["render_version"]) == versions
    monkeypatch.setattr(evaluation, "RENDER_VERSION", RENDER_VERSION + 1)  # another renderer
    with pytest.raises(
        EvaluationProgressError,
        match=f"holds a finished evaluation of something else: render_version was {RENDER_VERSION}, now "
        f"{RENDER_VERSION + 1}; the embedded scenes' responses were",
    ):
        _evaluate(tiny_root, tmp_path, *args)
    monkeypatch.setattr(evaluation, "RENDER_VERSION", RENDER_VERSION)
    assert (out / "summary.json").read_bytes() == finished and not (out / PROGRESS_FILE).exists()

    summary = json.loads(finished)
    for key in ("acoustics_version", "render_version"):  # as an earlier release wrote it
        del summary["meta"][key]
    (out / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(EvaluationProgressError) as refused:
        _evaluate(tiny_root, tmp_path, *args)
    assert str(refused.value) == (
        f"{out} holds a finished evaluation written by an earlier release that did not record acoustics_version "
        f"(now {ACOUSTICS_VERSION}), render_version (now {RENDER_VERSION}); its responses are not the ones baked "
        "and rendered now: move it aside, or choose another --out (or --name) to keep both"
    )


def test_a_progress_file_of_an_earlier_release_or_another_scene_source_is_refused_saying_why(tmp_path) -> None:
    """A stopped evaluation's record without the keys this one records was written by an earlier release; one of
    SoundSpaces scenes (which records no acoustics versions) is named by its scene source alone."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgress, EvaluationProgressError

    identity = {"agent": "random", "scene_source": "embedded", "acoustics_version": 3, "render_version": 4,
                "num_envs": 8}  # fmt: skip
    EvaluationProgress(tmp_path / "old", {"agent": "random", "scene_source": "embedded"}).add(_record("room", "0"))
    with pytest.raises(EvaluationProgressError) as refused:
        EvaluationProgress(tmp_path / "old", identity)
    assert str(refused.value) == (
        f"{tmp_path / 'old' / PROGRESS_FILE} was written by an earlier release that did not record acoustics_version "
        "(now 3), num_envs (now 8), render_version (now 4); its responses are not the ones baked and rendered now: its "
        "episodes "
        "cannot be resumed by this evaluation; delete it (or move it aside) to start over, or pass another --out / "
        "--name"
    )
    ss = {"agent": "random", "scene_source": "soundspaces", "num_envs": 8}
    EvaluationProgress(tmp_path / "ss", ss).add(_record("room", "0"))
    with pytest.raises(EvaluationProgressError) as refused:
        EvaluationProgress(tmp_path / "ss", identity)
    assert str(refused.value).startswith(
        f"{tmp_path / 'ss' / PROGRESS_FILE} belongs to another evaluation: scene_source was 'soundspaces', now "
        "'embedded'; delete the file"
    )
    # one that stopped before its first episode was saved (a missing RIR file, whose error names
    # scenes.rir_on_missing=silence) holds nothing to keep: the evaluation under the hinted setting starts over
    EvaluationProgress(tmp_path / "empty", {**ss, "rir_on_missing": "error"})
    started = EvaluationProgress(tmp_path / "empty", {**ss, "rir_on_missing": "silence"})
    assert started.done == {}
    assert (
        json.loads((tmp_path / "empty" / PROGRESS_FILE).read_text().splitlines()[0])["evaluation"]["rir_on_missing"]
        == "silence"
    )


def test_the_acoustics_versions_are_recorded_for_embedded_scenes_only(monkeypatch) -> None:
    """SoundSpaces data brings its own responses: no acoustics or render version of this code applies to them."""
    from asgf_nav.acoustics.bake import ACOUSTICS_VERSION
    from asgf_nav.acoustics.rir import RENDER_VERSION

    request = evaluation.EvaluationRequest(agent="oracle")
    with monkeypatch.context() as hearing:
        hearing.setattr(evaluation, "hears_audio", lambda request: True)  # as a policy or an audio baseline
        for source, expected in (("embedded", (ACOUSTICS_VERSION, RENDER_VERSION)), ("soundspaces", (None, None))):
            hearing.setattr(evaluation, "scene_source", lambda cfg, source=source: source)
            identity = evaluation.evaluation_identity(request, ExperimentConfig(), None, [])
            assert (identity.get("acoustics_version"), identity.get("render_version")) == expected
            # what a missing SoundSpaces RIR file is heard as: a resume under the other policy is refused
            assert identity.get("rir_on_missing") == ("error" if source == "soundspaces" else None)
    assert evaluation.hears_audio(evaluation.EvaluationRequest(agent="gan"))
    assert evaluation.hears_audio(evaluation.EvaluationRequest(checkpoint="run/checkpoints/best.pt"))
    monkeypatch.setattr(evaluation, "scene_source", lambda cfg: "embedded")
    for deaf in ("oracle", "random"):  # they hear nothing: the same episodes on any responses
        identity = evaluation.evaluation_identity(
            evaluation.EvaluationRequest(agent=deaf), ExperimentConfig(), None, []
        )
        assert (identity["acoustics_version"], identity["render_version"]) == (None, None)


def test_task_keys_an_agent_does_not_read_do_not_make_another_evaluation(tmp_path, monkeypatch) -> None:
    """A finished oracle evaluation was refused a rerun over task.keep_travel_time, and a baseline's over
    task.use_doa, neither of which changes any of its episodes: they are recorded as set, but not compared,
    also against a directory an earlier release wrote; a checkpoint's and an audio baseline's are compared."""
    from asgf_nav.eval.progress import EvaluationProgress, EvaluationProgressError

    monkeypatch.setattr(evaluation, "audio_model_identity", lambda cfg, path: None)  # gan's model: not trained here
    monkeypatch.setattr(evaluation, "doa_head_identity", lambda cfg, checkpoint: None)

    def run(agent: str, out: Path, source: str = "embedded", **task) -> None:
        """Evaluate ``agent`` into ``out`` with these task settings: checked against the evaluation finished there,
        then finished in its place (its summary's meta is its identity)."""
        monkeypatch.setattr(evaluation, "scene_source", lambda cfg: source)
        cfg = ExperimentConfig()
        for key, value in task.items():
            setattr(cfg.task, key, value)
        request = evaluation.EvaluationRequest(agent=agent or None, checkpoint=None if agent else "c.pt")
        identity = evaluation.evaluation_identity(request, cfg, None, [])
        assert identity["task"] == {key: getattr(cfg.task, key) for key in evaluation.OUTCOME_TASK_KEYS}  # as set
        EvaluationProgress(out, identity, unread_task_keys=evaluation.unread_task_keys(request, cfg))
        (out / "summary.json").write_text(json.dumps({"meta": identity}))

    read = {"use_doa": True, "doa_checkpoint": "head.pt", "keep_travel_time": True}
    for agent in ("oracle", "random"):
        run(agent, tmp_path / agent)
        run(agent, tmp_path / agent, **read)  # run again: the same evaluation
        with pytest.raises(EvaluationProgressError, match="task was"):
            run(agent, tmp_path / agent, max_steps=7)  # the step limit ends its episodes otherwise
    run("gan", tmp_path / "gan", keep_travel_time=True)
    run("gan", tmp_path / "gan", use_doa=True, doa_checkpoint="head.pt", keep_travel_time=True)
    with pytest.raises(EvaluationProgressError, match="task was"):
        run("gan", tmp_path / "gan")  # it hears the travel time
    run("gan", tmp_path / "gan_ss", "soundspaces", keep_travel_time=True)
    run("gan", tmp_path / "gan_ss", "soundspaces")  # SoundSpaces responses are read as given
    run("", tmp_path / "policy", **read)
    with pytest.raises(EvaluationProgressError, match="task was"):
        run("", tmp_path / "policy", **{**read, "use_doa": False})  # a checkpoint's own


def test_report_refuses_a_column_of_evaluations_on_other_acoustics_naming_the_versions() -> None:
    """A column compares agents that heard the same responses: other acoustics or render versions are refused,
    naming them; summaries of an earlier release (no versions) go only with each other."""
    a, b, c, d = (_summary(agent, "tiny", "heard", _VALUES) for agent in "abcd")
    for summary in (a, b):
        summary["meta"].update(scene_source="embedded", acoustics_version=3, render_version=3)
    b["meta"]["acoustics_version"] = 2
    c["meta"]["scene_source"] = "embedded"  # c and d: written by an earlier release
    with pytest.raises(EvaluationFileError) as refused:
        comparison_table([a, b])
    assert str(refused.value) == (
        "the evaluations on tiny heard ran under different acoustics (acoustics_version is 3 for 'a', 2 for 'b'); "
        "a column compares agents on the same task: evaluate them again on the responses the scenes are baked and "
        "rendered with now"
    )
    with pytest.raises(EvaluationFileError) as refused:
        comparison_table([a, c, d])
    assert (
        "(acoustics_version is 3 for 'a', not recorded (an earlier release) for 'c' and 'd'; render_version is 3 for "
        "'a', not recorded (an earlier release) for 'c' and 'd')" in str(refused.value)
    )
    assert (
        "(one that does not record them was written by an earlier release, at an older acoustics or render version)"
        in str(refused.value)
    )
    assert "| c |" in comparison_table([c, d])  # all without the versions: comparable with each other
    deaf = copy.deepcopy(a)
    deaf["meta"].update(agent="random", acoustics_version=None, render_version=None)  # hears nothing
    assert "| random |" in comparison_table([a, deaf])
    soundspaces = copy.deepcopy(c)
    soundspaces["meta"].update(agent="s", scene_source="soundspaces")
    with pytest.raises(EvaluationFileError) as refused:  # its responses came with the data: the source says it
        comparison_table([a, soundspaces])
    assert "different task settings (scene_source is 'embedded' for 'a', 'soundspaces' for 's')" in str(refused.value)
    with pytest.raises(EvaluationFileError, match="in one table heard responses of different acoustics"):
        comparison_table([a, {**c, "meta": {**c["meta"], "sound_split": "unheard"}}])  # other columns too


def test_a_checkpoint_evaluated_at_other_versions_than_it_trained_at_is_warned_about_and_recorded(
    tiny_root, tmp_path, monkeypatch
) -> None:
    """The summary of a checkpoint's evaluation records the acoustics and render versions it was trained at
    beside those it is evaluated at (None for one of an earlier release); where they differ, a warning names the
    file and both versions, once, and the evaluation still resumes as before (its weights' digest identifies it)."""
    from asgf_nav.acoustics.bake import ACOUSTICS_VERSION
    from asgf_nav.acoustics.rir import RENDER_VERSION
    from asgf_nav.rl.checkpoint import save_checkpoint

    said: list[str] = []
    monkeypatch.setattr(evaluation.logger, "warning", lambda message, *args: said.append(message % args))
    path = _tiny_checkpoint(tiny_root, tmp_path / "old.pt")  # an earlier release's: no versions recorded
    args = ("--episodes", "2", "task.max_steps=10")

    def evaluated(checkpoint: Path, out: str) -> dict:
        said.clear()
        _evaluate(tiny_root, tmp_path / out, "--checkpoint", str(checkpoint), *args)
        return load_summary(tmp_path / out / "asgf_tiny_unheard_test")["meta"]

    meta = evaluated(path, "old")
    assert (meta["trained_acoustics_version"], meta["trained_render_version"]) == (None, None)
    assert said == [
        f"checkpoint {path} was written by an earlier release that did not record the acoustics and render versions "
        f"it was trained on; it is evaluated on responses of acoustics version {ACOUSTICS_VERSION}, render version "
        f"{RENDER_VERSION}, which may not be those it learnt from: its figures may differ from those it gave then, "
        "and from a policy trained on these responses"
    ]
    state = torch.load(path, weights_only=False)
    state.update(acoustics_version=ACOUSTICS_VERSION, render_version=RENDER_VERSION)
    trained = save_checkpoint(tmp_path / "run", state, keep=0)
    meta = evaluated(trained, "now")
    assert said == [] and (meta["trained_acoustics_version"], meta["trained_render_version"]) == (
        meta["acoustics_version"], meta["render_version"]
    ) == (ACOUSTICS_VERSION, RENDER_VERSION)  # fmt: skip

    monkeypatch.setattr(evaluation, "RENDER_VERSION", RENDER_VERSION + 1)  # the code renders otherwise now
    real_run = evaluation.run_episodes
    monkeypatch.setattr(evaluation, "run_episodes", killed_after(real_run, 1))
    with pytest.raises(KeyboardInterrupt):
        evaluated(trained, "later")
    monkeypatch.setattr(evaluation, "run_episodes", real_run)
    meta = evaluated(trained, "later")  # resumed: the identity is the one it began with
    assert load_summary(tmp_path / "later" / "asgf_tiny_unheard_test")["episodes"] == 2
    assert (meta["trained_render_version"], meta["render_version"]) == (RENDER_VERSION, RENDER_VERSION + 1)
    assert said == [
        f"checkpoint {trained} was trained on responses of acoustics version {ACOUSTICS_VERSION}, render version "
        f"{RENDER_VERSION} and is evaluated on responses of acoustics version {ACOUSTICS_VERSION}, render version "
        f"{RENDER_VERSION + 1} (RENDER_VERSION {RENDER_VERSION} -> {RENDER_VERSION + 1}: the scenes' acoustics are "
        "baked or rendered otherwise since); its figures may differ from those it gave then, and from a policy "
        "trained on these responses"
    ]
    said.clear()  # trained on SoundSpaces data, which has no versions: no version change to speak of
    soundspaces = {"acoustics_version": None, "render_version": None}
    evaluation.warn_if_trained_on_other_responses(
        types.SimpleNamespace(checkpoint="ss.pt"), soundspaces, {"acoustics_version": 3, "render_version": 4}
    )
    assert said == []


# ------------------------------------------------------------------ intervals over one episode, binary metrics
def test_a_table_cell_of_one_episode_shows_no_interval_and_its_note_says_so(tmp_path, chart_figures) -> None:
    """An evaluation of one episode has no interval: its cells read '100.0 (n=1)', not '100.0 ± 0.0', the note
    says what (n=1) means, its summary.json (null bounds) loads, and its chart bars get no error bar."""
    from asgf_nav.eval import report

    one = summarize([_record("room", "0", success=1.0, spl=1.0, sna=0.5)])
    one.update(
        meta={"agent": "one", "dataset": "replica", "sound_split": "heard", "split": "test", "episode_list": "same"}
    )
    assert one["metrics"]["spl"]["low"] is None and one["per_scene"]["room"]["sna"]["high"] is None
    loaded = load_summary(_write_summary(tmp_path / "one", one))
    table = comparison_table([loaded, _summary("many", "replica", "heard", _VALUES, half=0.01)])
    assert "| one | 100.0 (n=1) | 100.0 (n=1) | 50.0 (n=1) |" in table
    low, high = (100 * end for end in wilson_interval(5, 10))
    assert f"| many | 25.0 ± 1.0 | 50.0 [{low:.1f}, {high:.1f}] | 12.5 ± 1.0 |" in table
    assert "Wilson interval] ((n=1): one episode, no interval);" in table
    assert "(n=1)" not in comparison_table([_summary("many", "replica", "heard", _VALUES, half=0.01)])
    report.comparison_chart([loaded], tmp_path / "c.png")
    (errors,) = chart_figures[0].axes[0].collections
    assert [len(line) for line in errors.get_segments()] == [0, 0, 0]  # no error line, where a zero-width one was


def test_a_null_interval_over_more_episodes_is_a_damaged_summary(tmp_path) -> None:
    """Null bounds belong to one episode only; a summary holding them over ten is refused naming the metric."""
    damaged = _summary("a", "tiny", "heard", _VALUES)
    damaged["metrics"]["sna"].update(low=None, high=None, std=None)
    directory = _write_summary(tmp_path / "damaged", damaged)
    with pytest.raises(EvaluationFileError, match=r"metrics\.sna is missing or damaged \(ValueError: low, high"):
        load_summary(directory)


# ------------------------------------------------------------------ RIR files heard as silence, per split
def test_the_silence_line_says_at_least_where_a_resume_could_not_count_all() -> None:
    """A resumed progress file of an earlier release saved no silenced files: the count is a lower bound, said."""
    from asgf_nav.eval.report import summary_markdown

    summary = summarize([_record("office_9", "0", success=1.0)])
    summary["meta"] = {"rir_on_missing": "silence", "rirs_replaced_by_silence": {"replica/a": 2},
                       "rirs_replaced_by_silence_partial": True}  # fmt: skip
    text = summary_markdown(summary)
    assert "**at least 2 binaural RIR files were missing or unreadable and heard as silence** (scenes." in text
    assert (
        "did not record the files they heard as silence, nor the policy they ran under, so more may have been)" in text
    )
    summary["meta"]["rirs_replaced_by_silence"] = {}
    assert "**at least 0 binaural RIR files" in summary_markdown(summary)  # none since: still not "none"


def test_a_progress_file_saves_the_rir_files_heard_as_silence_for_the_resume(tmp_path) -> None:
    """Each file heard as silence is saved once, in the record of the episode that ended after it (a key the
    reader strips); a resume reads them back and adds its own; the identity holds the mark, which an earlier
    release's file lacks and which resumes all the same, knowing it saved none once it holds episodes."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgress

    identity = {"agent": "random", "scene_source": "soundspaces"}
    progress = EvaluationProgress(tmp_path / "run", identity)
    progress.add(_record("a", "0"), {"replica/a": {"x.wav"}})
    progress.add(_record("a", "1"), {"replica/a": {"x.wav", "y.wav"}, "replica/b": set()})
    progress.add(_record("a", "2"), {"replica/a": {"x.wav", "y.wav"}})
    lines = [json.loads(line) for line in (tmp_path / "run" / PROGRESS_FILE).read_text().splitlines()]
    assert lines[0] == {"evaluation": {**identity, "records_rirs_replaced_by_silence": True}}
    assert [line.get("rirs_replaced_by_silence") for line in lines[1:]] == [
        {"replica/a": ["x.wav"]}, {"replica/a": ["y.wav"]}, None,
    ]  # fmt: skip
    resumed = EvaluationProgress(tmp_path / "run", identity)
    assert len(resumed.done) == 3 and not resumed.silence_unrecorded
    assert resumed.done[("a", "1")] == _record("a", "1")
    assert resumed.silenced_files({"replica/b": {"z.wav"}}) == {"replica/a": {"x.wav", "y.wav"}, "replica/b": {"z.wav"}}

    header, *records = (tmp_path / "run" / PROGRESS_FILE).read_text().splitlines()
    earlier = [json.dumps({k: v for k, v in json.loads(line).items() if k != "rirs_replaced_by_silence"})
               for line in records]  # fmt: skip
    (tmp_path / "run" / PROGRESS_FILE).write_text(json.dumps({"evaluation": identity}) + "\n" + "\n".join(earlier))
    old = EvaluationProgress(tmp_path / "run", identity)
    assert len(old.done) == 3 and old.silence_unrecorded and old.silenced_files() == {}
    assert not EvaluationProgress(tmp_path / "new", identity).silence_unrecorded  # nothing done: nothing lost


def test_a_record_cut_short_by_a_kill_takes_its_silenced_files_with_it(tmp_path) -> None:
    """The files an episode's record names are in its own line: a kill that cut the line short drops both, so
    the resume counts no file for an episode it runs again (another draw, which may not hear it)."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgress

    identity = {"agent": "random", "scene_source": "soundspaces"}
    progress = EvaluationProgress(tmp_path, identity)
    progress.add(_record("a", "0"), {"replica/a": {"x.wav"}})
    progress.add(_record("a", "1"), {"replica/a": {"x.wav", "y.wav"}})
    text = (tmp_path / PROGRESS_FILE).read_text()
    (tmp_path / PROGRESS_FILE).write_text(text[: text.index('"episode_id": "1"')])  # killed while writing it
    resumed = EvaluationProgress(tmp_path, identity)
    assert list(resumed.done) == [("a", "0")] and resumed.silenced_files() == {"replica/a": {"x.wav"}}
    assert EvaluationProgress(tmp_path, identity).silenced_files() == {"replica/a": {"x.wav"}}  # rewritten so


def test_a_whole_last_record_without_its_newline_is_kept_and_the_next_one_gets_a_line_of_its_own(tmp_path) -> None:
    """A kill (or a full disk) right at a record's final newline leaves a whole record on an unended line: the
    resume keeps it and ends the line before appending, so the record after it is not glued onto it (which the
    next resume would drop as an unfinished line, losing both)."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgress

    identity = {"agent": "random", "seed": 0}
    progress = EvaluationProgress(tmp_path, identity)
    progress.add(_record("a", "0"))
    progress.add(_record("a", "1"))
    path = tmp_path / PROGRESS_FILE
    path.write_bytes(path.read_bytes()[:-1])  # the last record whole, its newline not written
    resumed = EvaluationProgress(tmp_path, identity)
    assert sorted(resumed.done) == [("a", "0"), ("a", "1")]
    assert path.read_text().endswith("\n")  # ended on resume, before any record is added
    resumed.add(_record("a", "2"))
    again = EvaluationProgress(tmp_path, identity)
    assert sorted(again.done) == [("a", "0"), ("a", "1"), ("a", "2")]
    assert len(path.read_text().splitlines()) == 4  # the header and one line per record
    header_only = tmp_path / "new"
    EvaluationProgress(header_only, identity)
    (header_only / PROGRESS_FILE).write_text((header_only / PROGRESS_FILE).read_text().rstrip("\n"))
    EvaluationProgress(header_only, identity).add(_record("a", "0"))  # the header's line ended too
    assert list(EvaluationProgress(header_only, identity).done) == [("a", "0")]


def test_an_earlier_release_refuses_this_releases_progress_file_up_front_naming_the_mark(tmp_path) -> None:
    """An earlier release refuses a progress file whose identity holds a key its own lacks, naming it: the mark
    in the identity stops it before it meets a record with the files it does not know (its reader compares
    identities as this one does, for a key this release does not record)."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgress, EvaluationProgressError

    identity = {"agent": "random", "scene_source": "soundspaces"}
    EvaluationProgress(tmp_path, identity).add(_record("a", "0"), {"replica/a": {"x.wav"}})
    stored = json.loads((tmp_path / PROGRESS_FILE).read_text().splitlines()[0])["evaluation"]
    assert set(stored) - set(identity) == {"records_rirs_replaced_by_silence"}
    later = {**identity, "a_key_of_a_later_release": True}  # as this release's file reads to an earlier one
    records = (tmp_path / PROGRESS_FILE).read_text().splitlines()[1:]
    (tmp_path / PROGRESS_FILE).write_text("\n".join([json.dumps({"evaluation": later}), *records]) + "\n")
    with pytest.raises(EvaluationProgressError, match="a_key_of_a_later_release was True, now None"):
        EvaluationProgress(tmp_path, identity)


def test_a_resume_under_another_rir_on_missing_policy_is_refused_naming_it(tmp_path) -> None:
    """What the episodes heard for a missing RIR file depends on scenes.rir_on_missing: a SoundSpaces evaluation
    records it in its identity, and a resume under the other is refused, naming it; a progress file of an
    earlier release, which did not record it, resumes (its count is then "at least")."""
    from asgf_nav.eval.progress import PROGRESS_FILE, EvaluationProgress, EvaluationProgressError

    identity = {"agent": "random", "scene_source": "soundspaces", "rir_on_missing": "silence"}
    EvaluationProgress(tmp_path, identity).add(_record("a", "0"))
    with pytest.raises(EvaluationProgressError, match="rir_on_missing was 'silence', now 'error'"):
        EvaluationProgress(tmp_path, {**identity, "rir_on_missing": "error"})
    earlier = {key: value for key, value in identity.items() if key != "rir_on_missing"}
    text = (tmp_path / PROGRESS_FILE).read_text().splitlines()
    (tmp_path / PROGRESS_FILE).write_text("\n".join([json.dumps({"evaluation": earlier}), *text[1:]]) + "\n")
    resumed = EvaluationProgress(tmp_path, {**identity, "rir_on_missing": "error"})
    assert list(resumed.done) == [("a", "0")] and resumed.silence_unrecorded


def test_the_silence_line_names_the_policy_the_evaluation_ran_under() -> None:
    """The note names the rir_on_missing of the meta, not "silence" whatever it says."""
    from asgf_nav.eval.report import summary_markdown

    summary = summarize([_record("office_9", "0", success=1.0)])
    summary["meta"] = {"rir_on_missing": "error", "rirs_replaced_by_silence": {},
                       "rirs_replaced_by_silence_partial": True}  # fmt: skip
    assert "heard as silence** (scenes.rir_on_missing=error; the episodes resumed" in summary_markdown(summary)
    summary["meta"] = {"rirs_replaced_by_silence": {"replica/a": 1}}
    assert "heard as silence** (scenes.rir_on_missing not recorded): replica/a: 1." in summary_markdown(summary)


def test_each_sound_splits_summary_counts_the_rir_files_it_heard_as_silence(tiny_root, tmp_path, monkeypatch):
    """With --sound-split both, one process runs both splits: each summary counts the files its own episodes
    heard as silence (not the process's running total), and a resumed evaluation counts those the killed
    process heard too (a new process starts from nothing), or says "at least" after an earlier release's."""
    import shutil
    from types import SimpleNamespace

    from asgf_nav.eval.progress import PROGRESS_FILE
    from asgf_nav.eval.report import summary_markdown
    from asgf_nav.scenes import soundspaces as ss

    monkeypatch.setattr(ss, "atexit", SimpleNamespace(register=lambda hook: None))
    monkeypatch.setattr(evaluation, "scene_source", lambda cfg: "soundspaces")  # meta as on SoundSpaces data
    real_load, real_run = evaluation.load_task_data, evaluation.run_episodes
    paths = ss.SoundSpacesPaths(tmp_path / "soundspaces", "replica")  # holds no file: every RIR read is silence

    def load(cfg, split, scenes=None):  # each scene's RIRs read (and miss) SoundSpaces files
        world, episodes = real_load(cfg, split, scenes)
        for scene in world.scenes.values():
            nodes = np.arange(scene.num_nodes)
            scene.rir = ss.SoundSpacesRirs(paths, scene.name, nodes, scene.source_nodes, on_missing="silence").rir
        return world, episodes

    heard: list[str] = []  # the sound split of every episode saved, in every process

    def run_hearing(receivers, kill_after=None):
        """run_episodes whose n-th saved episode (counted over all processes) first hears the RIRs of the
        receivers(split, n)."""

        def run(agent, world, episodes, cfg, **kwargs):
            (scene,) = world.scenes.values()
            save = kwargs["on_record"]

            def on_record(record):
                for receiver in receivers(cfg.task.sound_split, len(heard)):
                    scene.rir(receiver, 0, 1)  # the agent hears this file, silenced
                save(record)
                heard.append(cfg.task.sound_split)
                if len(heard) == kill_after:  # killed once kill_after episodes were saved
                    raise KeyboardInterrupt

            return real_run(agent, world, episodes, cfg, **{**kwargs, "on_record": on_record})

        return run

    def silenced(out: Path) -> dict:
        return json.loads((out / "summary.json").read_text())["meta"]["rirs_replaced_by_silence"]

    label = "replica/tiny_room_test"
    monkeypatch.setattr(evaluation, "load_task_data", load)
    both = ("--agent", "oracle", "--episodes", "4", "scenes.rir_on_missing=silence")
    monkeypatch.setattr(ss, "_SILENCED", {})
    monkeypatch.setattr(evaluation, "run_episodes", run_hearing(lambda split, n: [0, 1] if split == "heard" else [0]))
    _evaluate(tiny_root, tmp_path / "both", *both, "--sound-split", "both")
    assert silenced(tmp_path / "both" / "oracle_tiny_heard_test") == {label: 2}
    assert silenced(tmp_path / "both" / "oracle_tiny_unheard_test") == {label: 1}  # its own: not heard's too

    heard.clear()  # one split killed after 2 of its 4 episodes, which heard receiver 0; the last 2 hear receiver 1
    monkeypatch.setattr(ss, "_SILENCED", {})
    monkeypatch.setattr(evaluation, "run_episodes", run_hearing(lambda split, n: [0] if n < 2 else [1], 2))
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tiny_root, tmp_path / "resumed", *both, "--sound-split", "heard")
    killed = tmp_path / "resumed" / "oracle_tiny_heard_test"
    earlier = tmp_path / "earlier" / "oracle_tiny_heard_test"  # the same, as an earlier release saved it
    shutil.copytree(killed, earlier)
    header, *lines = (earlier / PROGRESS_FILE).read_text().splitlines()
    identity = json.loads(header)["evaluation"]
    assert identity["rir_on_missing"] == "silence" and identity["records_rirs_replaced_by_silence"] is True
    unrecorded = ("rir_on_missing", "records_rirs_replaced_by_silence", "rirs_replaced_by_silence")
    lines = [json.dumps({k: v for k, v in json.loads(line).items() if k not in unrecorded}) for line in lines]
    header = json.dumps({"evaluation": {k: v for k, v in identity.items() if k not in unrecorded}})
    (earlier / PROGRESS_FILE).write_text("\n".join([header, *lines]) + "\n")
    monkeypatch.setattr(ss, "_SILENCED", {})  # a new process
    _evaluate(tiny_root, tmp_path / "resumed", *both, "--sound-split", "heard")
    assert heard == ["heard"] * 4 and silenced(killed) == {label: 2}  # receiver 0's file, from the killed run
    assert "rirs_replaced_by_silence_partial" not in json.loads((killed / "summary.json").read_text())["meta"]

    heard[:] = heard[:2]  # resumed under the other policy: the earlier release's file did not record its own
    monkeypatch.setattr(ss, "_SILENCED", {})
    _evaluate(tiny_root, tmp_path / "earlier", *both[:-1], "scenes.rir_on_missing=error", "--sound-split", "heard")
    summary = json.loads((earlier / "summary.json").read_text())
    assert summary["meta"]["rirs_replaced_by_silence"] == {label: 1}  # this test's RIRs are silence under both
    assert summary["meta"]["rirs_replaced_by_silence_partial"] is True  # whatever this process's policy
    assert "**at least 1 binaural RIR files were missing or unreadable" in summary_markdown(summary)
    assert "(scenes.rir_on_missing=error; the episodes resumed" in summary_markdown(summary)
