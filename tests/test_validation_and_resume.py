"""The trainer on the batched env: which episodes validation counts, which episodes a resume draws, and
when a scene baked in the background joins training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asgf_nav.config import ExperimentConfig
from asgf_nav.experiment import make_rank_env
from asgf_nav.rl.trainer import Trainer
from asgf_nav.scenes.background import ScenePool
from asgf_nav.tasks import factory
from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
from asgf_nav.tasks.episode_generation import generate_scene_episodes
from asgf_nav.tasks.episodes import Episode
from asgf_nav.tasks.synthetic import synthetic_world
from asgf_nav.tasks.world import TaskWorld

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world() -> TaskWorld:
    return synthetic_world()  # grid_a and grid_b


def scene_by_scene(world: TaskWorld, per_scene: int, scenes: list[str] | None = None) -> list[Episode]:
    """Episodes stored as the datasets store them: one scene after another, in sorted order."""
    episodes: list[Episode] = []
    for name in sorted(scenes or world.scenes):
        episodes += generate_scene_episodes(world.scene(name), per_scene, ["a"], seed=1, min_distance=0.5,
                                            id_prefix=f"{name}:")  # fmt: skip
    return episodes


def tiny_cfg(num_envs: int = 2, num_steps: int = 4, updates: int = 3) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.model.policy, cfg.model.hidden_size = "av_nav", 32
    cfg.task.sensors, cfg.task.max_steps, cfg.task.spectrogram_store = ["spectrogram"], 3, ""
    cfg.ppo.num_envs, cfg.ppo.num_steps = num_envs, num_steps
    cfg.ppo.ppo_epoch, cfg.ppo.num_mini_batch = 1, 1
    cfg.ppo.total_frames = updates * num_envs * num_steps
    cfg.train.device, cfg.train.val_interval, cfg.train.checkpoint_interval = "cpu", 0, 100
    return cfg


def test_validation_counts_episodes_of_every_val_scene(tmp_path: Path, world: TaskWorld, monkeypatch) -> None:
    episodes = scene_by_scene(world, 20)  # 20 per scene: more than the 10 validated
    monkeypatch.setattr(factory, "load_task_data", lambda cfg, split, scenes=None: (world, episodes))
    cfg = tiny_cfg()
    cfg.train.val_episodes = 10
    counted: list[list[str]] = [[], []]  # per env, the episodes it finished, in order

    def recording_factory(c: ExperimentConfig, split: str, rank: int) -> BatchedAudioNavEnv:
        env = make_rank_env(c, split, rank)
        if split == "val":
            step = env.step

            def recording_step(actions: torch.Tensor):
                obs, reward, done, info = step(actions)
                for i in done.nonzero().flatten().tolist():
                    counted[i].append(env.episodes[int(info["episode_index"][i])].episode_id)
                return obs, reward, done, info

            env.step = recording_step
        return env

    trainer = Trainer(cfg, recording_factory, tmp_path / "run")
    metrics = trainer.validate()
    validated = counted[0][:5] + counted[1][:5]  # each env counts its 5 of the 10
    assert metrics["episodes"] == 10 and len(set(validated)) == 10
    assert {e.split(":")[0] for e in validated} == {"grid_a", "grid_b"}
    assert sum(e.startswith("grid_b:") for e in validated) == 5  # in proportion to the scenes' episodes
    first = sorted(validated)
    counted[0].clear(), counted[1].clear()
    trainer.validate()
    assert sorted(counted[0][:5] + counted[1][:5]) == first  # the same episodes at every validation


def test_a_resume_without_env_state_draws_fresh_episodes(tmp_path: Path, world: TaskWorld, monkeypatch) -> None:
    episodes = scene_by_scene(world, 50)
    cfg = tiny_cfg(num_envs=4, num_steps=6, updates=4)
    cfg.train.checkpoint_interval = 2

    def make(c: ExperimentConfig, split: str, rank: int) -> BatchedAudioNavEnv:
        return BatchedAudioNavEnv(world, episodes, c.ppo.num_envs, "cpu", cfg=c, seed=c.train.seed + 1000 * rank)

    original = Trainer(cfg, make, tmp_path / "run")
    first_episodes = original.env.ep_index.tolist()
    original.train(max_updates=2)
    # what every DD-PPO rank meets (one checkpoint holds one env), and a single process whose pool grew
    monkeypatch.setattr(Trainer, "try_restore_env_state", lambda self, state: "DD-PPO with 2 ranks")
    resumed = Trainer(cfg, make, tmp_path / "run", resume=True)
    assert resumed.updates_done == 2
    assert resumed.env.ep_index.tolist() != first_episodes  # not the start of the run again
    again = Trainer(cfg, make, tmp_path / "run", resume=True)
    assert again.env.ep_index.tolist() == resumed.env.ep_index.tolist()  # seeded by (seed, rank, update)


def test_a_scene_baked_while_the_trainer_starts_joins_training(tmp_path: Path, world: TaskWorld) -> None:
    baked = ["grid_a"]  # what the background bake has finished
    pool = ScenePool.__new__(ScenePool)  # the pool's own change tracking over a scripted disk state
    pool._known = {}
    pool.check_build = lambda: None
    pool.ready = lambda split: list(baked)

    def make(c: ExperimentConfig, split: str, rank: int) -> BatchedAudioNavEnv:
        scenes = pool.ready(split)  # as experiment.make_rank_env does
        env = BatchedAudioNavEnv(world, scene_by_scene(world, 10, scenes), c.ppo.num_envs, "cpu", cfg=c, seed=1)
        if "grid_b" not in baked:
            baked.append("grid_b")  # finishes while the trainer is still starting up
        return env

    trainer = Trainer(tiny_cfg(), make, tmp_path / "run", scenes_changed=pool.changed)
    assert trainer.env.scene_names == ["grid_a"]
    trainer.train(max_updates=1)
    assert trainer.env.scene_names == ["grid_a", "grid_b"]


def test_resumes_without_env_state_from_different_updates_sample_different_actions(
    tmp_path: Path, world: TaskWorld, monkeypatch
) -> None:
    """The global generators (which sample the actions) of a resume with fresh episodes are seeded from
    (seed, rank, update): resumes from updates 1 and 2 draw different streams, not the run's seed's again."""
    episodes = scene_by_scene(world, 10)
    cfg = tiny_cfg(updates=3)
    cfg.train.checkpoint_interval, cfg.train.keep_checkpoints = 1, 5

    def make(c: ExperimentConfig, split: str, rank: int) -> BatchedAudioNavEnv:
        return BatchedAudioNavEnv(world, episodes, c.ppo.num_envs, "cpu", cfg=c, seed=c.train.seed)

    run = tmp_path / "run"
    Trainer(cfg, make, run).train(max_updates=2)
    monkeypatch.setattr(Trainer, "try_restore_env_state", lambda self, state: "DD-PPO with 2 ranks")
    draws: dict[int, torch.Tensor] = {}
    for update in (2, 1):  # the newest checkpoint, then (with it gone) the one before
        assert Trainer(cfg, make, run, resume=True).updates_done == update
        draws[update] = torch.rand(8)
        (run / "checkpoints" / f"ckpt_{update:06d}.pt").unlink()
    assert not torch.equal(draws[1], draws[2])
