"""Baselines: geometry helpers, the audio model's labels and training, and each agent's behaviour."""

import json
import logging
import math
import re
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scene_helpers import bake_audio_only, cheap_acoustics
from torch import nn

from asgf_nav.acoustics.bake import ACOUSTICS_VERSION
from asgf_nav.acoustics.rir import RENDER_VERSION
from asgf_nav.config import ExperimentConfig
from asgf_nav.eval.evaluator import Agent, AgentContext, run_episodes, summarize
from asgf_nav.rl.checkpoint import CheckpointError
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.navigation import pointgoal_polar
from asgf_nav.tasks.synthetic import grid_scene, synthetic_world
from baselines import BASELINES, make_baseline
from baselines.audio_model import (
    NO_DIRECTION,
    AudioGoalNet,
    AudioSamples,
    bin_angle,
    build_samples,
    direction_bin,
    evaluate_model,
    load_model,
    losses,
    sample_geometry,
    save_model,
    train_model,
)
from baselines.direction_follower import DirectionFollowerAgent
from baselines.gan import GanAgent
from baselines.planning import agent_to_world
from baselines.random_agent import RandomAgent
from baselines.recipe import PATIENCE


@pytest.fixture(scope="module")
def setup():
    world = synthetic_world(
        [
            grid_scene("open", nx=7, nz=6, sample_rate=16000),
            grid_scene("wall", nx=7, nz=6, sample_rate=16000, blocked=((3, 1), (3, 2), (3, 3), (3, 4))),
        ]
    )
    cfg = ExperimentConfig()
    cfg.task.test_episodes = 24
    cfg.task.max_steps = 120
    cfg.task.min_geodesic_distance = 2.0
    episodes = generate_split(world, "test", "unheard", ["bell", "drum"], cfg.task)
    return world, episodes, cfg


# ------------------------------------------------------------------------------------------ geometry
def test_direction_bins_round_trip():
    angles = bin_angle(np.arange(8))
    assert np.array_equal(direction_bin(angles), np.arange(8))
    assert direction_bin(math.radians(22.0)) == 0 and direction_bin(math.radians(23.0)) == 1
    assert direction_bin(math.radians(-30.0)) == 7 and direction_bin(math.pi) == 4


@pytest.mark.parametrize("yaw", range(4))
def test_agent_to_world_inverts_the_pointgoal_sensor(yaw):
    rng = np.random.default_rng(yaw)
    for _ in range(20):
        here = np.array([rng.uniform(-5, 5), 0.0, rng.uniform(-5, 5)])
        goal = np.array([rng.uniform(-5, 5), 0.0, rng.uniform(-5, 5)])
        rho, phi = pointgoal_polar(here, yaw, goal)
        back = agent_to_world(here, yaw, rho * math.cos(phi), rho * math.sin(phi))
        np.testing.assert_allclose(back, goal[[0, 2]], atol=1e-4)
    # facing yaw 0 (-Z), a point ahead lies at smaller z; to the left at smaller x
    np.testing.assert_allclose(agent_to_world(np.zeros(3), 0, 1.0, 0.0), [0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(agent_to_world(np.zeros(3), 0, 0.0, 1.0), [-1.0, 0.0], atol=1e-12)


# ------------------------------------------------------------------------------------------ audio model
def test_audio_model_learns_from_geometry_labels(setup, tmp_path, caplog):
    world, _, _ = setup
    torch.set_num_threads(1)
    geometry = sample_geometry(world, 700, ["bell", "drum"], seed=0)
    samples = build_samples(world, geometry, progress=False)
    assert samples.spectrogram.shape == (700, 65, 26, 2)
    for (name, receiver, source, yaw, _), direction, close in zip(geometry[:50], samples.direction, samples.close):
        scene = world.scene(name)
        _, phi = pointgoal_polar(scene.positions[receiver], yaw, scene.positions[source])
        assert int(direction) == (int(direction_bin(phi)) if receiver != source else NO_DIRECTION)
        assert float(close) == float(scene.geodesic_hops[receiver, source] * scene.grid_size < 1.0)
    train = type(samples)(
        samples.spectrogram[:600], samples.direction[:600], samples.close[:600], samples.position[:600]
    )
    val = type(samples)(samples.spectrogram[600:], samples.direction[600:], samples.close[600:], samples.position[600:])
    untrained = evaluate_model(AudioGoalNet(samples.spectrogram.shape[1:]), val)
    model, scores = train_model(train, val, epochs=6, progress=False)
    assert scores["position_error_m"] < untrained["position_error_m"] - 0.3
    assert scores["direction_accuracy"] > 0.25  # chance is 1/8
    path = save_model(tmp_path / "m.pt", model, {"note": "test"})
    now = {"acoustics_version": ACOUSTICS_VERSION, "render_version": RENDER_VERSION}
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        again = load_model(path, heard_versions=now)
    assert "was trained on responses of" not in caplog.text
    x = samples.spectrogram[:4]
    torch.testing.assert_close(again(x)["position"], model(x)["position"])
    older = torch.load(path, weights_only=False)
    del older["render_version"]  # a model saved before models recorded how their responses were rendered
    torch.save(older, tmp_path / "older.pt")
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        load_model(tmp_path / "older.pt", heard_versions=now)
    assert "render version not recorded and is evaluated on responses of" in caplog.text
    (tmp_path / "notes.yaml").write_text("model: not a torch file\n")
    torch.save({"model": {}, "update": 3}, tmp_path / "ppo.pt")  # a training checkpoint, not this model
    for wrong, message in (
        (tmp_path / "missing.pt", "does not exist (train one with scripts/train_baselines.py"),
        (tmp_path, "is a directory; give the .pt file"),
        (tmp_path / "notes.yaml", "is corrupt or unreadable"),
        (tmp_path / "ppo.pt", "is not a baseline audio model of version"),
    ):
        with pytest.raises(CheckpointError, match=re.escape(message)):
            load_model(wrong)


def test_samples_heard_at_the_source_have_no_direction_to_learn(setup):
    """At the source itself the azimuth is arbitrary (pointgoal_polar gives -pi): no direction label."""
    world, _, _ = setup
    scene = world.scene("open")
    source = int(scene.source_nodes[0])
    other = int(np.flatnonzero(np.asarray(scene.geodesic_hops[:, source]) == 2)[0])
    geometry = [("open", source, source, yaw, "bell") for yaw in range(4)] + [("open", other, source, 0, "bell")]
    samples = build_samples(world, geometry, progress=False)
    assert samples.direction[:4].tolist() == [NO_DIRECTION] * 4 and samples.direction[4] != NO_DIRECTION
    assert samples.close[:4].tolist() == [1.0] * 4  # the stop head still learns from them

    torch.manual_seed(0)
    model = AudioGoalNet(samples.spectrogram.shape[1:]).eval()  # no batch statistics: batches compare
    at_source = losses(model(samples.spectrogram[:4]), samples, torch.arange(4))
    assert at_source["direction"].item() == 0.0 and torch.isfinite(at_source["close"])
    at_source["direction"].backward()  # a batch of such samples trains the other heads, not a NaN
    mixed = losses(model(samples.spectrogram), samples, torch.arange(5))
    alone = nn.functional.cross_entropy(model(samples.spectrogram[4:])["direction"], samples.direction[4:])
    torch.testing.assert_close(mixed["direction"], alone)
    logits = model(samples.spectrogram)["direction"].argmax(-1)
    expected = float(logits[4] == samples.direction[4])
    assert evaluate_model(model, samples)["direction_accuracy"] == expected  # over the one sample with a direction


# ------------------------------------------------------------------------------------------ agents
class _TruthModel(nn.Module):
    """Decodes the true (forward, left, close) that _TruthAgent writes into the 'spectrogram'."""

    def forward(self, spec: torch.Tensor) -> dict[str, torch.Tensor]:
        forward, left, close = spec[:, 0, 0, 0], spec[:, 0, 0, 1], spec[:, 0, 0, 2]
        bins = torch.from_numpy(direction_bin(torch.atan2(left, forward).numpy()))
        return {
            "direction": nn.functional.one_hot(bins, 8).float() * 10,
            "close": (close * 2 - 1) * 10,
            "position": torch.stack([forward, left], dim=1),
        }


class _TruthAgent(Agent):
    """Feeds an audio-model baseline perfect predictions, to test its navigation logic alone."""

    def __init__(self, inner: Agent) -> None:
        self.inner, self.name, self.sensors = inner, inner.name, ()

    def reset(self, num_envs: int) -> None:
        self.inner.reset(num_envs)

    def act(self, obs: dict[str, torch.Tensor], ctx: AgentContext) -> np.ndarray:
        spec = torch.zeros(len(ctx.nodes), 1, 1, 3)
        for i, (scene, ep) in enumerate(zip(ctx.scenes, ctx.episodes)):
            rho, phi = pointgoal_polar(scene.positions[ctx.nodes[i]], int(ctx.yaws[i]), scene.positions[ep.goal_node])
            close = scene.geodesic_hops[ctx.nodes[i], ep.goal_node] * scene.grid_size < ctx.success_distance
            spec[i, 0, 0] = torch.tensor([rho * math.cos(phi), rho * math.sin(phi), float(close)])
        return self.inner.act({"spectrogram": spec}, ctx)


def test_gan_with_perfect_predictions_walks_the_shortest_path(setup):
    world, episodes, cfg = setup
    records = run_episodes(_TruthAgent(GanAgent(_TruthModel())), world, episodes, cfg, num_envs=5, progress=False)
    m = summarize(records)["metrics"]
    assert m["success"]["mean"] == 1.0 and m["spl"]["mean"] == 1.0


def test_direction_follower_with_perfect_predictions_reaches_the_goal(setup):
    world, episodes, cfg = setup
    agent = _TruthAgent(DirectionFollowerAgent(_TruthModel(), waypoint_distance=2.0))
    records = run_episodes(agent, world, episodes, cfg, num_envs=5, progress=False)
    m = summarize(records)["metrics"]
    assert m["success"]["mean"] >= 0.9 and m["spl"]["mean"] >= 0.6  # a wall can send it around


def test_direction_follower_does_not_press_into_a_wall_until_the_step_limit():
    """Perfect directions behind a thick obstacle: the waypoint 2 m ahead can resolve to the agent's own node,
    which must not make it bump ahead on one pose for the rest of the episode."""
    blocked = tuple((x, z) for x in range(3, 7) for z in range(4))
    world = synthetic_world([grid_scene("thick", nx=9, nz=5, sample_rate=16000, blocked=blocked)])
    cfg = ExperimentConfig()
    cfg.task.test_episodes, cfg.task.max_steps, cfg.task.min_geodesic_distance = 40, 120, 2.0
    episodes = generate_split(world, "test", "unheard", ["bell"], cfg.task)
    agent = _TruthAgent(DirectionFollowerAgent(_TruthModel(), waypoint_distance=2.0))
    records = run_episodes(agent, world, episodes, cfg, num_envs=5, progress=False)
    stuck = [r.episode_id for r in records if len({tuple(pose) for pose in r.path[-20:]}) == 1]
    assert not stuck and summarize(records)["metrics"]["success"]["mean"] >= 0.85


def test_random_agent_stop_rules(setup):
    world, episodes, cfg = setup
    goal = summarize(run_episodes(RandomAgent(seed=1), world, episodes, cfg, num_envs=6, progress=False))
    uniform = run_episodes(RandomAgent(seed=1, stop_rule="random"), world, episodes, cfg, num_envs=6, progress=False)
    for rec in uniform:
        assert rec.actions[-1] == 0 or len(rec.actions) == cfg.task.max_steps
    assert np.mean([len(r.actions) for r in uniform]) < 8  # STOP is drawn with probability 1/4
    assert goal["metrics"]["success"]["mean"] > summarize(uniform)["metrics"]["success"]["mean"]
    assert goal["metrics"]["spl"]["mean"] < goal["metrics"]["success"]["mean"]
    with pytest.raises(ValueError, match="stop rule"):
        RandomAgent(stop_rule="never")


def test_random_agent_draws_its_actions_uniformly(setup):
    """Away from the goal the three motions each a third of the time; under the "random" rule STOP a quarter."""
    world, _, _ = setup
    scene = world.scene("open")
    episode = types.SimpleNamespace(goal_node=int(scene.source_nodes[0]))
    far = int(np.argmax(np.asarray(scene.geodesic_hops)[:, episode.goal_node]))  # never within 1 m of the goal
    ctx = types.SimpleNamespace(
        scenes=[scene] * 3000, nodes=np.full(3000, far), episodes=[episode] * 3000, success_distance=1.0
    )
    for rule, expected in (("goal", [0.0, 1 / 3, 1 / 3, 1 / 3]), ("random", [0.25] * 4)):
        shares = np.bincount(RandomAgent(seed=4, stop_rule=rule).act({}, ctx), minlength=4) / 3000
        np.testing.assert_allclose(shares, expected, atol=0.03)  # about 3.5 binomial standard errors


def test_registry_builds_every_baseline(tmp_path):
    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    model = AudioGoalNet((65, 26, 2))
    path = save_model(tmp_path / "m.pt", model, {})
    for name in BASELINES:
        agent = make_baseline(name, cfg, model_path=path)
        assert agent.name == name
    with pytest.raises(CheckpointError, match="audio_goal_replica_unheard.pt"):
        make_baseline("gan", cfg)
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("teleport", cfg)


# ------------------------------------------------------------------------------------------ training script
def _record_train_splits(monkeypatch, tmp_path, world, samples: int, splits: list[str], clock: list[float]) -> dict:
    """Run baselines.training.train_audio_models on ``world`` with RIRs, spectrograms, training and saving faked:
    returns each split's training and validation geometry and the saved meta. ``clock`` is its perf_counter;
    rendering the RIRs advances it by 7 s, training a model by 100 s."""
    from baselines import training

    built: list[list[tuple]] = []
    seen: dict[str, list] = {"train": [], "val": [], "meta": [], "path": []}

    def render(world, geometry, progress=True):
        clock[0] += 7.0
        return [None] * len(geometry)

    def build(world, geometry, success_distance=1.0, batch=64, progress=True, rirs=None):
        built.append(list(geometry))
        n = len(geometry)  # each sample's 'direction' is its index, to find its geometry again
        return AudioSamples(torch.zeros(n, 1, 1, 2), torch.arange(n), torch.zeros(n), torch.zeros(n, 2))

    def train(train, val, **kwargs):
        clock[0] += 100.0
        seen["train"].append([built[-1][i] for i in train.direction.tolist()])
        seen["val"].append([built[-1][i] for i in val.direction.tolist()])
        return AudioGoalNet((1, 1, 2)), {}

    monkeypatch.setattr(training, "load_world", lambda cfg, split, scenes=None: world)
    monkeypatch.setattr(training, "split_sound_names", lambda cfg, split, world: ["bell", "drum"])
    monkeypatch.setattr(training, "render_rirs", render)
    monkeypatch.setattr(training, "build_samples", build)
    monkeypatch.setattr(training, "train_model", train)
    monkeypatch.setattr(
        training, "save_model", lambda path, model, meta, **_: seen["meta"].append(meta) or seen["path"].append(path)
    )
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)
    training.train_audio_models(cfg, splits, scenes=None, samples=samples, epochs=1, seed=0)
    return seen


def test_validation_samples_share_no_geometry_with_training(setup, monkeypatch, tmp_path):
    """Draws with replacement repeat (scene, receiver, source, yaw) tuples; a validation sample that repeats a
    training one (the same spectrogram for the heard sound) would flatter the held-out scores."""
    world, _, _ = setup
    seen = _record_train_splits(monkeypatch, tmp_path, world, 4000, ["heard"], [0.0])
    train, val = seen["train"][0], seen["val"][0]
    assert len(train) + len(val) == 4000 and len(val) >= 300
    assert not {g[:4] for g in train} & {g[:4] for g in val}
    # whole source nodes are held out: validation hears sources at positions training never heard
    assert not {g[0:3:2] for g in train} & {g[0:3:2] for g in val}
    assert {g[0] for g in val} == set(world.scenes)  # every scene has held-out sources
    assert seen["meta"][0]["val_sources"] == {s: sorted({g[2] for g in val if g[0] == s}) for s in world.scenes}


def test_each_sound_split_model_records_its_own_training_time_in_its_own_file(setup, monkeypatch, tmp_path):
    world, _, _ = setup
    seen = _record_train_splits(monkeypatch, tmp_path, world, 40, ["heard", "unheard"], [0.0])
    dataset = ExperimentConfig().scenes.dataset
    assert [m["sound_split"] for m in seen["meta"]] == ["heard", "unheard"]
    assert seen["path"] == [
        tmp_path / "baselines" / f"audio_goal_{dataset}_{split}.pt" for split in ("heard", "unheard")
    ]
    assert [m["seconds"] for m in seen["meta"]] == [100.0, 100.0]  # not 107 and 207 (cumulative)
    assert [m["rir_seconds"] for m in seen["meta"]] == [7.0, 7.0]  # the shared RIRs, rendered once
    # what ignoring the sound scores on the same validation samples goes with the model's own scores
    keys = {"direction_accuracy", "close_accuracy", "position_error_m"}
    assert all(set(m["val_chance"]) == keys and m["patience"] == PATIENCE for m in seen["meta"])


AUDIO_ONLY_ACOUSTICS = cheap_acoustics(sources=4)


@pytest.fixture(scope="module")
def audio_only_root(tmp_path_factory) -> Path:
    """The tiny preset's train and test scenes baked without views (layout and cheap acoustics only)."""
    root = tmp_path_factory.mktemp("audio_only")
    return bake_audio_only(root, ["tiny_apartment", "tiny_room_test"], AUDIO_ONLY_ACOUSTICS)


def _evaluate_tiny(root: Path, out: Path, *extra: str) -> None:
    import evaluate

    argv = ["--dataset", "tiny", "--data-root", str(root), "--out", str(out), "--num-envs", "2", "--episodes", "2",
            "--sound-split", "heard", *extra, "task.test_episodes=4", "task.max_steps=6",
            *AUDIO_ONLY_ACOUSTICS]  # fmt: skip
    assert evaluate.main(argv) == 0


def test_baselines_need_no_views_only_what_they_read(audio_only_root, tmp_path):
    """The oracle reads nothing and the audio model only the spectrogram: an audio-only bake is enough, whatever
    task.sensors (the default config's RGB-D) says."""
    import train_baselines

    _evaluate_tiny(audio_only_root, tmp_path / "eval", "--agent", "oracle")
    assert json.loads((tmp_path / "eval" / "oracle_tiny_heard_test" / "summary.json").read_text())
    out = tmp_path / "model.pt"
    argv = ["--config", "tiny_heard", "--data-root", str(audio_only_root), "--samples", "20", "--epochs", "1",
            "--threads", "1", "--out", str(out), *AUDIO_ONLY_ACOUSTICS]  # fmt: skip
    assert train_baselines.main(argv) == 0  # tiny_heard's sensors are [depth, spectrogram]
    meta = torch.load(out, weights_only=False)["meta"]
    assert meta["samples"] == 20 and meta["val_samples"] == 2 and meta["seconds"] >= 0 <= meta["rir_seconds"]


def test_the_default_model_path_is_checked_before_training(tmp_path, capsys):
    """It lies under the data root, which a lab may share read-only: found only after the training, which
    took minutes, and with --sound-split both (which refuses --out) never to be written at all."""
    import train_baselines

    data = tmp_path / "data"
    data.mkdir()
    (data / "baselines").write_text("a file where the models' folder goes")  # as unwritable as a read-only root
    argv = ["--config", "tiny_heard", "--data-root", str(data), "--sound-split", "both", *AUDIO_ONLY_ACOUSTICS]
    with pytest.raises(SystemExit) as exit_info:
        train_baselines.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "the default model path (--out with one --sound-split" in err
    assert f"cannot create directory {data / 'baselines'}" in err and not (data / "scenes").exists()


def test_a_model_of_another_spectrogram_shape_is_refused(audio_only_root, tmp_path):
    """A model trained at another sample rate runs on any input size (adaptive pooling) and would evaluate
    with meaningless predictions; the 44.1 kHz tiny world hears (65, 69, 2) spectrograms."""
    path = save_model(tmp_path / "m16k.pt", AudioGoalNet((65, 26, 2)), {})
    message = re.escape(f"{path} was trained on spectrograms of shape (65, 26, 2)") + r".*\(65, 69, 2\)"
    with pytest.raises(CheckpointError, match=message):
        load_model(path, spectrogram_shape=(65, 69, 2))
    assert load_model(path, spectrogram_shape=[65, 26, 2]).spectrogram_shape == (65, 26, 2)
    with pytest.raises(CheckpointError, match=message):
        _evaluate_tiny(audio_only_root, tmp_path / "eval", "--agent", "gan", "--baseline-model", str(path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda state: state.pop("spectrogram_shape"), "its 'spectrogram_shape' entry is missing"),
        (lambda state: state.pop("model"), "its 'model' entry is missing"),
        (lambda state: state.update(spectrogram_shape=["65", "x", 2]), "its 'spectrogram_shape' entry is ['65', 'x'"),
        (lambda state: state.update(meta=["notes"]), "its 'meta' entry is a list, not a mapping"),
        (lambda state: state["model"].pop("position.bias"), "its 'model' entry does not hold this network's weights"),
        (lambda state: state["model"].update({"position.weight": torch.zeros(3, 128)}), "size mismatch for position"),
    ],
    ids=["no shape", "no weights", "shape of strings", "meta a list", "a weight missing", "a weight resized"],
)
def test_a_damaged_model_of_the_right_version_is_named_with_its_entry(tmp_path, damage, message):
    """A file that passes the version check but lost or changed an entry raised a bare KeyError, ValueError or
    size mismatch naming no file; it is a CheckpointError naming the file, the entry and the remedy."""
    path = save_model(tmp_path / "m.pt", AudioGoalNet((65, 26, 2)), {})
    state = torch.load(path, weights_only=False)
    damage(state)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"baseline audio model {re.escape(str(path))} is damaged: .*") as error:
        load_model(path)
    assert message in str(error.value) and "train it again with scripts/train_baselines.py" in str(error.value)


def test_a_model_trained_with_the_other_travel_time_setting_loads_with_a_warning(tmp_path, caplog):
    """A model that learnt distances from the leading silence of responses that kept their travel time
    hears none in responses that start at the arrival: its figures differ, which the log says."""
    older = save_model(tmp_path / "older.pt", AudioGoalNet((65, 26, 2)), {})  # before the key: travel time kept
    cut = save_model(tmp_path / "cut.pt", AudioGoalNet((65, 26, 2)), {"keep_travel_time": False})
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        load_model(older, keep_travel_time=True)
        load_model(cut, keep_travel_time=False)
        load_model(cut)  # SoundSpaces data: no setting to compare
        assert caplog.text == ""
        load_model(older, keep_travel_time=False)
    assert f"{older} was trained with task.keep_travel_time=true and is run with false" in caplog.text


def test_a_model_trained_on_the_other_sound_split_loads_with_a_warning(tmp_path, caplog):
    """``--baseline-model`` of the heard split on unheard sounds is not the unheard baseline; the log says so."""
    heard = save_model(tmp_path / "heard.pt", AudioGoalNet((65, 26, 2)), {"sound_split": "heard"})
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        load_model(heard, sound_split="heard")
        load_model(heard)
        assert caplog.text == ""
        load_model(heard, sound_split="unheard")
    assert f"{heard} was trained on the heard sounds' split and is evaluated on unheard sounds" in caplog.text


def _ctx(scene, node, yaw, goal, new_episode):
    from asgf_nav.eval.evaluator import AgentContext
    from asgf_nav.tasks.episodes import ResolvedEpisode

    ep = ResolvedEpisode("0", scene.name, node, yaw, goal, "bell", 4.0, 5)
    one = lambda v, t=np.int64: np.array([v], dtype=t)  # noqa: E731
    return AgentContext(
        [scene],
        one(node),
        one(yaw),
        [ep],
        one(0),
        one(new_episode, bool),
        one(False, bool),
        one(True, bool),
        1.0,
        16000,
    )


def test_random_agent_stops_on_the_floor_plane_distance():
    from asgf_nav.tasks.navigation import STOP
    from asgf_nav.tasks.synthetic import grid_scene
    from baselines.random_agent import RandomAgent

    column = grid_scene("column", nx=1, nz=5)  # nodes 0..4 along +Z, 1 m apart, all at x = 0
    agent = RandomAgent(seed=0)
    agent.reset(1)
    far = [int(agent.act({}, _ctx(column, 0, 0, 4, False))[0]) for _ in range(50)]
    assert STOP not in far  # 4 m away along z
    near = _ctx(column, 3, 0, 4, False)  # 1 m: not < 1 m
    assert STOP not in [int(agent.act({}, near)[0]) for _ in range(50)]
    column_fine = grid_scene("fine", nx=1, nz=5, grid_size=0.5)
    assert int(agent.act({}, _ctx(column_fine, 3, 0, 4, False))[0]) == STOP  # 0.5 m


def test_direction_follower_forgets_the_previous_episodes_waypoint():
    from torch import nn

    from asgf_nav.tasks.synthetic import grid_scene
    from baselines.direction_follower import DirectionFollowerAgent

    class LeftModel(nn.Module):  # the source is to the left (bin 2 = 90 degrees), not close
        def forward(self, spec):
            direction = torch.zeros(len(spec), 8)
            direction[:, 2] = 10.0
            return {"direction": direction, "close": torch.full((len(spec),), -10.0)}

    row = grid_scene("row", nx=7, nz=1)  # nodes 0..6 along +X
    agent = DirectionFollowerAgent(LeftModel(), waypoint_distance=2.0)
    agent.reset(1)
    agent.waypoints[:] = 6  # the last episode's waypoint, not reached
    agent.act({"spectrogram": torch.zeros(1, 4, 4, 2)}, _ctx(row, 3, 0, 0, True))
    assert agent.waypoints[0] == 1  # yaw 0 faces -Z, so left is -X: 2 m left of node 3 (x = 3) is node 1


def test_audio_model_position_labels_are_forward_and_left():
    from asgf_nav.tasks.synthetic import grid_scene, synthetic_world
    from baselines.audio_model import build_samples
    from baselines.planning import agent_to_world

    scene = grid_scene("g", nx=5, nz=4)
    world = synthetic_world([scene])
    geometry = [("g", 0, 13, yaw, "bell") for yaw in range(4)] + [("g", 7, 2, 1, "bell")]
    samples = build_samples(world, geometry, progress=False)
    for (_, r, src, yaw, _), (forward, left) in zip(geometry, samples.position.tolist()):
        back = agent_to_world(scene.positions[r], yaw, forward, left)
        np.testing.assert_allclose(back, scene.positions[src][[0, 2]], atol=1e-4)


def test_a_scene_with_one_source_keeps_it_for_training():
    from asgf_nav.tasks.synthetic import grid_scene, synthetic_world
    from baselines.audio_model import held_out_sources

    world = synthetic_world([grid_scene("one", num_sources=1), grid_scene("many", num_sources=10)])
    held = held_out_sources(world, 0.1, seed=0)
    assert held["one"] == [] and len(held["many"]) == 1


def test_a_reset_random_agent_replays_its_actions():
    from asgf_nav.tasks.synthetic import grid_scene
    from baselines.random_agent import RandomAgent

    column = grid_scene("column", nx=1, nz=5)
    agent = RandomAgent(seed=3)
    runs = []
    for _ in range(2):
        agent.reset(1)
        runs.append([int(agent.act({}, _ctx(column, 0, 0, 4, False))[0]) for _ in range(20)])
    assert runs[0] == runs[1]


def test_gan_agent_smoothing_weights_the_new_prediction():
    from torch import nn

    from asgf_nav.tasks.synthetic import grid_scene
    from baselines.gan import GanAgent

    class Ahead(nn.Module):
        def __init__(self):
            super().__init__()
            self.forward_m = 1.0

        def forward(self, spec):
            return {"position": torch.tensor([[self.forward_m, 0.0]] * len(spec))}

    column = grid_scene("column", nx=1, nz=9)  # yaw 0 faces -Z: "ahead" of node 8 (z = 8) is smaller z
    model = Ahead()
    agent = GanAgent(model, smoothing=0.25)
    agent.reset(1)
    agent.act({"spectrogram": torch.zeros(1, 4, 4, 2)}, _ctx(column, 8, 0, 0, True))
    np.testing.assert_allclose(agent.estimates[0], [0.0, 7.0])
    model.forward_m = 5.0
    agent.act({"spectrogram": torch.zeros(1, 4, 4, 2)}, _ctx(column, 8, 0, 0, False))
    np.testing.assert_allclose(agent.estimates[0], [0.0, 0.75 * 7.0 + 0.25 * 3.0])


def test_make_baseline_warns_about_a_model_of_the_other_travel_time_setting(tmp_path, caplog):
    import logging

    from asgf_nav.config import ExperimentConfig
    from baselines import make_baseline
    from baselines.audio_model import AudioGoalNet, save_model

    cfg = ExperimentConfig()
    cfg.scenes.data_root = str(tmp_path)  # no SoundSpaces data there: embedded scenes
    cfg.task.keep_travel_time = False
    path = save_model(tmp_path / "m.pt", AudioGoalNet((65, 26, 2)), {"keep_travel_time": True})
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        make_baseline("gan", cfg, model_path=path)
    assert "trained with task.keep_travel_time=true and is run with false" in caplog.text


def test_near_samples_lie_within_twice_the_success_distance():
    from asgf_nav.tasks.synthetic import grid_scene, synthetic_world
    from baselines.audio_model import sample_geometry

    scene = grid_scene("g", nx=6, nz=6)
    world = synthetic_world([scene])
    geometry = sample_geometry(world, 200, ["bell"], seed=0, success_distance=1.0, near_fraction=1.0)
    hops = np.array([scene.geodesic_hops[r, s] for _, r, s, _, _ in geometry])
    assert hops.max() * scene.grid_size < 2.0 and (hops == 1).any()  # within 2 m: the source and its neighbours


def test_direction_follower_predicts_again_after_replan_steps_on_one_waypoint(monkeypatch):
    """A waypoint is followed for exactly ``replan_steps`` steps: one step more per waypoint would let a
    wrong first prediction lead the agent further before the model is asked again."""
    import baselines.direction_follower as follower

    class LeftModel(nn.Module):  # the source is to the left, never close
        def forward(self, spec):
            direction = torch.zeros(len(spec), 8)
            direction[:, 2] = 10.0
            return {"direction": direction, "close": torch.full((len(spec),), -10.0)}

    replans: list[int] = []

    def far_node(scene, point, node, leave):  # never reached: the agent is held on node 3 below
        replans.append(step)
        return 6

    monkeypatch.setattr(follower, "nearest_reachable_node", far_node)
    row = grid_scene("row", nx=7, nz=1)
    agent = DirectionFollowerAgent(LeftModel(), waypoint_distance=2.0, replan_steps=3)
    spectrogram = {"spectrogram": torch.zeros(1, 4, 4, 2)}
    for step in range(8):
        agent.act(spectrogram, _ctx(row, 3, 0, 0, step == 0))
    assert replans == [0, 3, 6]


def test_direction_bins_wrap_just_below_360_degrees_to_bin_0():
    """Azimuths within 22.5 degrees of straight ahead are bin 0 from either side: -10 and 338 degrees too."""
    angles = np.radians([-10.0, 337.0, 338.0, 359.0, -22.0])
    assert direction_bin(angles).tolist() == [0, 7, 0, 0, 0]


def test_training_geometry_covers_every_yaw_and_hears_the_source_itself():
    """Near samples (near_fraction 1) include receivers on the source (the stop signal at 0 m) and all 4 yaws."""
    scene = grid_scene("g", nx=4, nz=4)
    world = synthetic_world([scene])
    geometry = sample_geometry(world, 300, ["bell"], seed=1, success_distance=1.0, near_fraction=1.0)
    assert {yaw for *_, yaw, _ in geometry} == {0, 1, 2, 3}
    assert any(receiver == source for _, receiver, source, _, _ in geometry)


def test_close_labels_follow_the_success_distance():
    """With a 2 m success distance on a 1 m grid, receivers 0 and 1 hops from the source are close, 2 and 3 not."""
    scene = grid_scene("row", nx=5, nz=1)
    world = synthetic_world([scene])
    geometry = [("row", receiver, 0, 0, "bell") for receiver in range(4)]
    samples = build_samples(world, geometry, success_distance=2.0, progress=False)
    assert samples.close.tolist() == [1.0, 1.0, 0.0, 0.0]


class _FixedPredictions(nn.Module):
    """Returns set predictions for the sample whose index is written in its 'spectrogram'; records its mode."""

    def __init__(self, direction: list[int], close: list[float], position: list[list[float]]) -> None:
        super().__init__()
        self.direction, self.close, self.position = direction, torch.tensor(close), torch.tensor(position)
        self.modes: list[bool] = []

    def forward(self, spec: torch.Tensor) -> dict[str, torch.Tensor]:
        self.modes.append(self.training)
        index = spec[:, 0, 0, 0].long()
        logits = nn.functional.one_hot(torch.tensor(self.direction), 8).float()[index]
        return {"direction": logits, "close": self.close[index], "position": self.position[index]}


def test_audio_model_scores_are_in_eval_mode_over_the_right_samples_and_in_metres():
    """Direction accuracy skips the sample at the source (1 of 2 right), close accuracy counts it (2 of 3 right),
    the position error is the mean Euclidean distance ((5 + 0 + 0) / 3 m: a 3-4-5 triangle)."""
    spectrogram = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 1, 1, 2).contiguous()
    samples = AudioSamples(
        spectrogram, torch.tensor([2, NO_DIRECTION, 5]), torch.tensor([1.0, 1.0, 0.0]), torch.tensor([[0.0, 0.0]] * 3)
    )
    model = _FixedPredictions([2, 0, 4], [3.0, -2.0, -1.0], [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    model.train()
    scores = evaluate_model(model, samples, batch=2)
    assert scores == pytest.approx({"direction_accuracy": 0.5, "close_accuracy": 2 / 3, "position_error_m": 5 / 3})
    assert model.modes == [False, False]  # BatchNorm on its running statistics, not the batch's


def _random_samples(n: int, seed: int) -> AudioSamples:
    """``n`` samples of random (8, 8, 2) spectrograms and labels."""
    g = torch.Generator().manual_seed(seed)
    return AudioSamples(
        torch.rand(n, 8, 8, 2, generator=g),
        torch.randint(0, 8, (n,), generator=g),
        torch.randint(0, 2, (n,), generator=g).float(),
        torch.rand(n, 2, generator=g),
    )


def test_training_reports_the_validation_scores_and_is_seeded(monkeypatch):
    """The scores train_model returns are the held-out samples' (the training ones only without them), and
    the same seed trains the same weights, without fixing the caller's later draws."""
    import baselines.audio_model as audio_model

    train, val = _random_samples(6, 0), _random_samples(3, 1)
    scored: list[AudioSamples] = []
    monkeypatch.setattr(audio_model, "evaluate_model", lambda model, samples: scored.append(samples) or {})
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    first, _ = train_model(train, val, epochs=1, batch=4, seed=3, progress=False)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream goes on where it was
    again, _ = train_model(train, None, epochs=1, batch=4, seed=3, progress=False)
    assert scored[0] is val and scored[1] is train
    for name, weights in first.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], weights)


def test_training_keeps_the_epoch_of_lowest_validation_loss_and_stops_after_patience():
    """Validation samples unrelated to the training ones stop improving soon: training stops ``patience``
    epochs after the lowest validation loss and returns that epoch's weights."""
    from baselines.audio_model import mean_loss

    train, val = _random_samples(64, 0), _random_samples(32, 1)
    model, scores = train_model(train, val, epochs=60, batch=16, lr=1e-2, seed=0, progress=False, patience=3)
    history = scores["val_loss"]
    assert scores["epochs_run"] == len(history) < 60  # stopped early
    assert scores["best_epoch"] == int(np.argmin(history)) + 1 == len(history) - 3
    assert mean_loss(model, val) == pytest.approx(min(history), abs=1e-4)  # the best epoch's weights
    _, every = train_model(train, val, epochs=6, batch=16, lr=1e-2, seed=0, progress=False, patience=None)
    assert every["epochs_run"] == 6 and every["val_loss"][:5] == pytest.approx(history, abs=1e-4)  # no early stop


def test_chance_scores_are_those_of_predictors_that_ignore_the_sound():
    from baselines.audio_model import chance_scores

    train = AudioSamples(
        torch.zeros(5, 1, 1, 2), torch.tensor([3, 3, 1, NO_DIRECTION, 3]), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]),
        torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0], [2.0, -2.0], [2.0, 0.0]]),
    )  # fmt: skip
    val = AudioSamples(
        torch.zeros(4, 1, 1, 2), torch.tensor([3, 0, NO_DIRECTION, 3]), torch.tensor([1.0, 0.0, 0.0, 0.0]),
        torch.tensor([[2.0, 0.0], [2.0, 1.0], [5.0, 4.0], [2.0, 0.0]]),
    )  # fmt: skip
    assert chance_scores(train, val) == pytest.approx(
        {"direction_accuracy": 2 / 3, "close_accuracy": 1 / 4, "position_error_m": (0 + 1 + 5 + 0) / 4}
    )


def test_a_saved_model_keeps_its_number_of_direction_bins(tmp_path):
    """A 4-bin model loads as a 4-bin model with its own weights."""
    model = AudioGoalNet((8, 8, 2), bins=4).eval()
    again = load_model(save_model(tmp_path / "m4.pt", model, {}))
    x = torch.rand(2, 8, 8, 2)
    assert again.bins == 4 and again(x)["direction"].shape == (2, 4)
    torch.testing.assert_close(again(x)["direction"], model(x)["direction"])


def test_nearest_reachable_node_stays_on_the_agents_side_and_names_the_node():
    """Row x = 0, 1, [blocked], 3, 4 (nodes 0, 1, 2, 3): from node 3 the nearest reachable node to x = 0 is node 2
    (x = 3), not the unreachable node 0; with ``leave`` a one-node scene still answers its one node."""
    from baselines.planning import nearest_reachable_node

    row = grid_scene("split", nx=5, nz=1, blocked=((2, 0),))
    assert nearest_reachable_node(row, np.array([0.0, 0.0]), 3) == 2
    assert nearest_reachable_node(row, np.array([4.0, 0.0]), 3, leave=True) == 2
    assert nearest_reachable_node(row, np.array([4.2, 0.0]), 3) == 3
    single = grid_scene("single", nx=1, nz=1)
    assert nearest_reachable_node(single, np.array([5.0, 5.0]), 0, leave=True) == 0


def test_gan_agent_needs_a_positive_smoothing():
    """Smoothing 0 would keep the first estimate for the whole episode: refused; 1 (no smoothing) is fine."""
    with pytest.raises(ValueError, match="smoothing must be in"):
        GanAgent(_TruthModel(), smoothing=0.0)
    assert GanAgent(_TruthModel(), smoothing=1.0).smoothing == 1.0


def test_gan_agent_plans_to_the_smoothed_estimate():
    """On node 8 (z = 8) facing -Z: the first estimate is the node itself; the next prediction 2 m ahead (z = 6)
    moves the 0.2-smoothed estimate to z = 7.6, still nearest node 8: STOP, where the raw prediction would walk.
    The agent sizes itself on its first step without a reset."""
    from asgf_nav.tasks.navigation import STOP

    class Ahead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.forward_m = 0.0

        def forward(self, spec: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"position": torch.tensor([[self.forward_m, 0.0]] * len(spec))}

    column = grid_scene("column", nx=1, nz=9)
    model = Ahead()
    agent = GanAgent(model, smoothing=0.2)
    spectrogram = {"spectrogram": torch.zeros(1, 4, 4, 2)}
    assert agent.act(spectrogram, _ctx(column, 8, 0, 0, True)).tolist() == [STOP]
    model.forward_m = 2.0
    assert agent.act(spectrogram, _ctx(column, 8, 0, 0, False)).tolist() == [STOP]
    np.testing.assert_allclose(agent.estimates[0], [0.0, 7.6])


def test_losses_match_their_formulas_by_hand():
    """Uniform logits cost ln 8 on the one labelled sample; close logits 0 (label 1) and 2 (label 0) cost
    (ln 2 + ln(1 + e^2)) / 2; smooth L1 of errors (0, 0, 0.5, 3) is (0.125 + 2.5) / 4."""
    samples = AudioSamples(
        torch.zeros(2, 1, 1, 2), torch.tensor([3, NO_DIRECTION]), torch.tensor([1.0, 0.0]), torch.zeros(2, 2)
    )
    out = {
        "direction": torch.zeros(2, 8),
        "close": torch.tensor([0.0, 2.0]),
        "position": torch.tensor([[0.0, 0.0], [0.5, 3.0]]),
    }
    got = {name: value.item() for name, value in losses(out, samples, torch.arange(2)).items()}
    expected = {
        "direction": math.log(8),
        "close": (math.log(2) + math.log(1 + math.exp(2))) / 2,
        "position": (0.125 + 2.5) / 4,
    }
    assert got == pytest.approx(expected, rel=1e-6)


def test_held_out_sources_are_the_rounded_fraction():
    """15 % of 10 source nodes is 1.5, held out as 2 nodes (rounded, not truncated to 1)."""
    from baselines.audio_model import held_out_sources

    world = synthetic_world([grid_scene("many", num_sources=10)])
    assert len(held_out_sources(world, 0.15, seed=0)["many"]) == 2


def test_an_audio_model_of_another_acoustics_version_is_warned_about(tmp_path, caplog) -> None:
    """The model records the acoustics version of the responses it learnt from beside their render version; one
    evaluated on scenes baked at another (or one saved before models recorded it) is loaded with a warning naming
    both versions. One trained on SoundSpaces data records none, and is not compared; nor is any model where the
    caller plays no embedded scenes (no ``heard_versions``)."""
    path = save_model(tmp_path / "m.pt", AudioGoalNet((65, 26, 2)), {"note": "test"})
    trained_at, render = ACOUSTICS_VERSION, RENDER_VERSION
    assert torch.load(path, weights_only=False)["acoustics_version"] == trained_at
    now = {"acoustics_version": trained_at, "render_version": render}
    later = {"acoustics_version": trained_at + 1, "render_version": render}  # the scenes are baked anew since
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        load_model(path, heard_versions=now)
        load_model(path)  # on SoundSpaces data, or only checked as a file to replace
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        load_model(path, heard_versions=later)
    assert [r.getMessage() for r in caplog.records] == [
        f"baseline audio model {path} was trained on responses of acoustics version {trained_at}, render version "
        f"{render} and is evaluated on responses of acoustics version {trained_at + 1}, render version {render} "
        f"(ACOUSTICS_VERSION {trained_at} -> {trained_at + 1}: the scenes' acoustics are baked or rendered otherwise "
        "since); its figures on them may differ from a model trained again with scripts/train_baselines.py"
    ]
    soundspaces = save_model(tmp_path / "ss.pt", AudioGoalNet((65, 26, 2)), {"note": "test"}, embedded=False)
    assert torch.load(soundspaces, weights_only=False)["acoustics_version"] is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        load_model(soundspaces, heard_versions=later)
    assert not caplog.records
    older = torch.load(path, weights_only=False)
    del older["acoustics_version"]  # saved before models recorded it: unknown, so said
    torch.save(older, tmp_path / "older.pt")
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        load_model(tmp_path / "older.pt", heard_versions=now)
    assert "trained on responses of acoustics version not recorded, render version" in caplog.text
    del older["render_version"]  # saved before models recorded either: it cannot tell, so said
    torch.save(older, tmp_path / "oldest.pt")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="baselines.audio_model"):
        load_model(tmp_path / "oldest.pt", heard_versions=now)
    assert "was written by an earlier release that did not record the acoustics and render versions" in caplog.text
    assert caplog.text.rstrip().endswith("may differ from a model trained again with scripts/train_baselines.py")


def test_a_model_whose_bins_outsize_its_weights_is_refused_before_the_network_is_built(tmp_path, monkeypatch):
    """The file's bins and spectrogram shape size the network (bins=1e6 built a 1 GB layer before its weights
    were compared): it is sized on the meta device first, and weights that do not fit are refused naming the
    first tensor, without building it for real."""
    import baselines.audio_model as audio_model

    built: list[torch.device] = []

    class Recording(AudioGoalNet):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            built.append(next(self.parameters()).device)

    monkeypatch.setattr(audio_model, "AudioGoalNet", Recording)
    path = save_model(tmp_path / "m.pt", AudioGoalNet((65, 26, 2)), {})
    state = torch.load(path, weights_only=False)
    state["bins"] = 1_000_000
    torch.save(state, path)
    message = r"size mismatch for direction\.weight: the file holds shape \(8, 128\), the network's is \(1000000, 128\)"
    with pytest.raises(CheckpointError, match=r"its 'model' entry does not hold this network's weights \(" + message):
        load_model(path)
    assert built == [torch.device("meta")]
