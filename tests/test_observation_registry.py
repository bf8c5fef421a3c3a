"""The observation registry's restore scope, the env factory's arguments and the synthetic test worlds."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import pytest

from asgf_nav.config import ConfigError, ExperimentConfig, TaskConfig
from asgf_nav.tasks import factory, observations
from asgf_nav.tasks.episode_generation import generate_split
from asgf_nav.tasks.synthetic import grid_scene, synthetic_sound, synthetic_world


def _space(world: object) -> gymnasium.spaces.Box:
    return gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test stay in its own copy of the registry."""
    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))


# ------------------------------------------------------------------------------------------ registry
def test_restored_observations_brings_back_a_replaced_provider(private_registry: None) -> None:
    """A provider replaced inside the scope (a run's own "doa") is the caller's one again after it."""
    mine = observations.register_observation("probe_restore", lambda s: np.zeros(1, np.float32), _space)
    with observations.restored_observations():
        observations.register_observation("probe_restore", lambda s: np.ones(1, np.float32), _space, overwrite=True)
        observations.register_observation("probe_added", lambda s: np.ones(1, np.float32), _space)
        assert observations.get_observation("probe_restore") is not mine
    assert observations.get_observation("probe_restore") is mine
    assert "probe_added" not in observations.registered_observations()


def test_restored_observations_restores_when_the_run_fails(private_registry: None) -> None:
    """A run that raises inside the scope leaves no provider of its own behind."""
    before = observations.registered_observations()
    with pytest.raises(RuntimeError, match="run failed"), observations.restored_observations():
        observations.register_observation("probe_failed_run", lambda s: np.ones(1, np.float32), _space)
        raise RuntimeError("run failed")
    assert observations.registered_observations() == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_doa_is_reserved_for_the_packaged_head(private_registry: None, overwrite: bool) -> None:
    """A provider of one's own named "doa" would be ignored (use_doa=false) or replaced by the head (true):
    refused, naming task.use_doa and another name to use; the registry is left as it was."""
    before = observations.registered_observations()
    with pytest.raises(ValueError, match=r"'doa' is reserved for the packaged DoA head.*task\.use_doa.*'my_doa'"):
        observations.register_observation("doa", lambda s: np.zeros(1, np.float32), _space, overwrite=overwrite)
    assert observations.registered_observations() == before
    assert observations.register_observation("my_doa", lambda s: np.zeros(1, np.float32), _space).name == "my_doa"


def importable_plugin(folder: Path, monkeypatch, module: str, registration: str) -> None:
    """A plugin module ``module`` in ``folder`` whose import calls ``register_observation(registration)``; the
    registry is restored after the test."""
    (folder / f"{module}.py").write_text(
        "import gymnasium, numpy as np\n"
        "from asgf_nav.tasks.observations import register_observation\n"
        f"register_observation({registration})\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))


def test_a_plugin_registering_doa_is_a_config_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    """model.plugins importing a module that registers "doa" stops with the plugin and the reason named."""
    from asgf_nav.config import import_plugins

    importable_plugin(tmp_path, monkeypatch, "probe_doa_plugin", "'doa', lambda s: np.zeros(4, np.float32), "
                      "lambda w: gymnasium.spaces.Box(0, 1, (4,), np.float32)")  # fmt: skip
    with pytest.raises(ConfigError, match=r"model\.plugins: importing 'probe_doa_plugin' failed: .*reserved"):
        import_plugins(["probe_doa_plugin"])
    assert "doa" not in observations.registered_observations()


# ------------------------------------------------------------------------------------------ factory
def test_make_env_keeps_an_explicit_sampler_mode_and_store(tmp_path: Path) -> None:
    """A training env asked for the sequential sampler strides from episode 0; task.spectrogram_store reaches it."""
    world = synthetic_world(sample_rate=16000)
    episodes = generate_split(world, "train", "heard", ["bell"], TaskConfig(train_episodes_per_scene=6))
    cfg = ExperimentConfig()
    cfg.task.sensors, cfg.task.spectrogram_store = ["depth"], str(tmp_path / "baked")
    env = factory.make_env(
        cfg, "train", device="cpu", num_envs=3, seed=5, sampler_mode="sequential", world=world, episodes=episodes
    )
    env.reset()
    assert [e.episode_id for e in env.current_episodes()] == [e.episode_id for e in episodes[:3]]
    assert env.store is not None and env.store.root == tmp_path / "baked"


def test_a_provider_whose_output_is_not_its_declared_shape_is_named(private_registry: None) -> None:
    """Found at the first observation in both envs, naming the sensor and both shapes, not deep in a policy."""
    from asgf_nav.tasks.audionav_env import AudioNavEnv
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv

    world = synthetic_world(sample_rate=16000)
    episodes = generate_split(world, "train", "heard", ["bell"], TaskConfig(train_episodes_per_scene=4))
    observations.register_observation("probe_wide", lambda s: np.zeros(2, np.float32), _space)
    batch = lambda state: np.zeros((len(state.episodes), 3), np.float32)  # noqa: E731 (numpy: accepted)
    observations.register_observation("probe_batch", lambda s: np.zeros(1, np.float32), _space, compute_batch=batch)
    cfg = TaskConfig(sensors=["depth", "probe_wide"])
    with pytest.raises(ValueError, match=r"'probe_wide': its provider returned an array of shape \(2,\), .* \(1,\)"):
        AudioNavEnv(world, episodes, cfg=cfg).reset()
    with pytest.raises(ValueError, match=r"'probe_wide': .* shape \(2,\)"):
        BatchedAudioNavEnv(world, episodes, 2, cfg=cfg).reset()
    cfg.sensors = ["depth", "probe_batch"]
    with pytest.raises(ValueError, match=r"'probe_batch': .* shape \(2, 3\), but its space declares \(2, 1\)"):
        BatchedAudioNavEnv(world, episodes, 2, cfg=cfg).reset()


def test_the_envs_import_the_plugins_a_config_names_and_refuse_no_config(tmp_path: Path, monkeypatch) -> None:
    """A run's config.yaml with model.plugins builds its envs from library code as the scripts do; the
    reference env made by gymnasium without a config says what it needs."""
    from asgf_nav.tasks.audionav_env import AudioNavEnv

    importable_plugin(tmp_path, monkeypatch, "probe_plugin", "'probe_steps', lambda s: np.full(1, s.step, np.float32), "
                      "lambda w: gymnasium.spaces.Box(0, np.inf, (1,), np.float32), overwrite=True")  # fmt: skip
    world = synthetic_world(sample_rate=16000)
    episodes = generate_split(world, "train", "heard", ["bell"], TaskConfig(train_episodes_per_scene=4))
    cfg = ExperimentConfig()
    cfg.model.plugins, cfg.task.sensors = ["probe_plugin"], ["depth", "probe_steps"]
    env = factory.make_env(cfg, "train", device="cpu", num_envs=2, world=world, episodes=episodes)
    assert env.reset()["probe_steps"].shape == (2, 1)
    assert AudioNavEnv(world, episodes, cfg=cfg).reset()[0]["probe_steps"].shape == (1,)
    cfg.task.max_steps = -3  # edited in code after load_config checked it
    with pytest.raises(ConfigError, match="task.max_steps"):
        factory.make_env(cfg, "train", device="cpu", num_envs=2, world=world, episodes=episodes)
    with pytest.raises(TypeError, match="AudioNavEnv needs cfg"):
        gymnasium.make("AudioNav-v0")


def test_split_scene_names_are_the_presets_split_and_none_for_other_datasets() -> None:
    """Replica's val split is its four val scenes (the first one with num_scenes=3); a non-preset has none."""
    cfg = ExperimentConfig()
    cfg.scenes.source, cfg.scenes.dataset, cfg.scenes.num_scenes = "embedded", "replica", None
    assert factory.split_scene_names(cfg, "val") == ["apartment_2", "frl_apartment_4", "office_2", "room_1"]
    cfg.scenes.num_scenes = 3
    assert factory.split_scene_names(cfg, "val") == ["apartment_2"]
    cfg.scenes.dataset = "my_own_scenes"
    assert factory.split_scene_names(cfg, "val") is None


def test_load_task_data_spreads_episodes_over_the_whole_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The episode generator is told the split's scenes, also those not loaded into the world yet."""
    seen = {}
    monkeypatch.setattr(factory, "load_world", lambda cfg, split, scenes: synthetic_world())
    monkeypatch.setattr(factory, "episodes_root", lambda cfg: tmp_path)
    monkeypatch.setattr(factory, "load_or_generate", lambda *args, **kw: seen.setdefault("args", args) and [])
    cfg = ExperimentConfig()
    cfg.scenes.source, cfg.scenes.dataset, cfg.scenes.num_scenes = "embedded", "replica", None
    factory.load_task_data(cfg, "test")
    assert seen["args"][-1] == ["frl_apartment_5", "hotel_0", "office_3", "office_4", "room_2"]


# ------------------------------------------------------------------------------------------ synthetic worlds
def test_synthetic_sounds_are_fixed_per_name_and_differ_between_names() -> None:
    """One second at the given rate, 0.3 peak, the same for one name and different for two."""
    bell = synthetic_sound("bell", 16000)
    assert bell.shape == (16000,) and bell.dtype == np.float32
    assert np.abs(bell).max() == pytest.approx(0.3, abs=1e-6)
    assert np.array_equal(bell, synthetic_sound("bell", 16000))
    assert np.abs(bell - synthetic_sound("drum", 16000)).max() > 0.1


@pytest.mark.parametrize(
    "nx, nz, source, yaw, delay, left, right",
    [
        # 1 m along +X: 16000 / 343 = 46.6 samples, gain 1 / (1 + 1); yaw 0 faces -Z so +X is the right ear
        (5, 1, 1, 0, 47, 0.5 * 0.5, 0.5 * 1.5),
        (5, 1, 1, 2, 47, 0.5 * 1.5, 0.5 * 0.5),  # facing +Z the source is on the left
        # 4 m: 186.6 samples, gain 1 / 5
        (5, 1, 4, 0, 187, 0.2 * 0.5, 0.2 * 1.5),
        (5, 1, 4, 1, 187, 0.2, 0.2),  # facing -X the source is behind: no level difference
        # 4 m along +Z: on the left when facing -X, on the right when facing +X
        (1, 5, 4, 1, 187, 0.2 * 1.5, 0.2 * 0.5),
        (1, 5, 4, 3, 187, 0.2 * 0.5, 0.2 * 1.5),
    ],
)
def test_synthetic_rir_direct_path_has_the_delay_gain_and_side_of_the_source(
    nx: int, nz: int, source: int, yaw: int, delay: int, left: float, right: float
) -> None:
    """The loudest sample of each ear is the direct path: distance / 343 m/s late, 1 / (1 + d) loud, louder on
    the side the source is on."""
    scene = grid_scene("line", nx=nx, nz=nz, sample_rate=16000)
    rir = scene.rir(0, source, yaw)
    assert rir.dtype == np.float32 and rir.shape[1] == 2
    assert np.abs(rir).argmax(axis=0).tolist() == [delay, delay]
    tolerance = 0.3 * (left + right) / 2  # the decaying noise under the direct path
    assert rir[delay, 0] == pytest.approx(left, abs=tolerance)
    assert rir[delay, 1] == pytest.approx(right, abs=tolerance)


def test_grid_scene_draws_the_asked_number_of_distinct_sources() -> None:
    """num_sources picks that many distinct nodes in ascending order, all nodes when it asks for more."""
    few = grid_scene("few", num_sources=3).source_nodes
    assert len(few) == 3 and len(set(few.tolist())) == 3 and np.all(np.diff(few) > 0)
    assert few.min() >= 0 and few.max() < 20
    assert grid_scene("all", num_sources=100).source_nodes.tolist() == list(range(20))
