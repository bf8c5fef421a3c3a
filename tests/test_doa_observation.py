"""The frozen DoA head as the ``doa`` observation: its cache, batched path and use by policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from doa_helpers import SR, _tiny_config, tiny_head_checkpoint

from asgf_nav.models.doa.checkpoint import save_checkpoint
from asgf_nav.models.doa.config import DoaTrainConfig
from asgf_nav.models.doa.network import SelectiveDoaNet
from asgf_nav.tasks.observations import restored_observations


@pytest.fixture(autouse=True)
def own_observation_registry():
    """The heads these tests register (doa_test, doa_ref, ...) leave the process-wide registry with the test."""
    with restored_observations():
        yield


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_frozen_head_is_unchanged_by_a_policy_update(bank, tmp_path):
    from gymnasium import spaces

    from asgf_nav.config import ExperimentConfig
    from asgf_nav.models.doa.observation import DoaObservation
    from asgf_nav.models.policies import build_policy

    net = SelectiveDoaNet(_tiny_config())
    ckpt = tmp_path / "head.pt"
    save_checkpoint(ckpt, "selective", net, None, 0, DoaTrainConfig(), {})
    head = DoaObservation(ckpt, window_seconds=0.25)
    assert not head.model.training
    assert all(not p.requires_grad for p in head.model.parameters())
    frozen = {k: v.clone() for k, v in head.model.state_dict().items()}

    cfg = ExperimentConfig()
    cfg.model.policy, cfg.model.hidden_size, cfg.task.use_doa = "av_nav", 32, True
    space = spaces.Dict(
        {
            "spectrogram": spaces.Box(0, np.inf, (65, 69, 2), np.float32),
            "doa": spaces.Box(0, 1, (head.num_bins,), np.float32),
        }
    )
    policy = build_policy(cfg, space)
    assert policy.use_doa
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    sounds = bank.names("test")[:2]
    audio = np.random.default_rng(0).standard_normal((2, 2, SR)).astype(np.float32)
    doa = head.compute(audio, sounds)
    assert doa.shape == (2, head.num_bins) and not doa.requires_grad
    assert torch.allclose(doa.sum(1), torch.ones(2), atol=1e-5)
    obs = {"spectrogram": torch.rand(2, 65, 69, 2), "doa": doa}
    value, log_prob, entropy, _ = policy.evaluate_actions(
        obs, policy.initial_hidden(2), torch.ones(2), torch.tensor([0, 1])
    )
    loss = -(log_prob.mean() + 0.1 * entropy.mean()) + value.pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in head.model.parameters())
    assert not head.model.training
    for key, value in head.model.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_the_packaged_head_registers_the_reserved_doa_name_again_and_keeps_it(tmp_path):
    """register_doa_observation takes "doa" (again in a notebook, replacing its previous head); a plugin may
    not replace it, while the head's own provider can be put back by name (a benchmark switching variants)."""
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks.observations import get_observation, register_observation

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    register_doa_observation(ckpt, cache_size=0)
    first = get_observation("doa")
    register_doa_observation(ckpt, cache_size=0)
    second = get_observation("doa")
    assert second is not first
    with pytest.raises(ValueError, match="reserved for the packaged DoA head"):
        register_observation("doa", lambda s: np.zeros(second.space(None).shape, np.float32), second.space, None, True)
    assert get_observation("doa") is second
    register_observation("doa", first.compute, first.space, first.compute_batch, overwrite=True)
    assert get_observation("doa").compute is first.compute


def test_registered_doa_observation_on_a_synthetic_world(tmp_path):
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks.episodes import ResolvedEpisode
    from asgf_nav.tasks.observations import ObservationState, get_observation
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    head = register_doa_observation(ckpt, name="doa_test")
    provider = get_observation("doa_test")
    world = synthetic_world(sample_rate=SR)
    scene = world.scene("grid_a")
    episode = ResolvedEpisode("0", "grid_a", 0, 0, int(scene.num_nodes - 1), "telephone", 3.0, 5)
    state = ObservationState(world, scene, episode, node=0, yaw=1, step=0)
    obs = provider.compute(state)
    assert obs.shape == provider.space(world).shape == (head.num_bins,)
    assert obs.dtype == np.float32 and abs(float(obs.sum()) - 1.0) < 1e-4
    assert (head.cache.hits, head.cache.misses) == (0, 1)

    # the same state again is served from the cache; another yaw is computed and differs
    assert np.array_equal(provider.compute(state), obs)
    turned = provider.compute(ObservationState(world, scene, episode, node=0, yaw=2, step=1))
    assert (head.cache.hits, head.cache.misses) == (1, 2)
    assert not np.allclose(turned, obs)

    # the batched path shares the cache: known states are hits, a repeated new state is computed once
    from asgf_nav.tasks.observations import BatchObservationState

    nodes, yaws = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 2, 0, 0])
    batch = BatchObservationState(
        world, [episode] * 4, nodes, yaws, torch.zeros(4, dtype=torch.long), torch.zeros(4, 3), torch.zeros(4, 3)
    )
    rows = provider.compute_batch(batch)
    assert rows.shape == (4, head.num_bins) and rows.dtype == torch.float32
    assert (head.cache.hits, head.cache.misses) == (4, 3)
    assert np.array_equal(rows[0].numpy(), obs) and np.array_equal(rows[1].numpy(), turned)
    assert torch.equal(rows[2], rows[3])
    moved = provider.compute(ObservationState(world, scene, episode, node=1, yaw=0, step=2))
    assert np.allclose(rows[2].numpy(), moved) and (head.cache.hits, head.cache.misses) == (5, 3)
    uncached = register_doa_observation(ckpt, name="doa_test", cache_size=0)
    assert np.allclose(get_observation("doa_test").compute(state), obs, atol=1e-6)
    assert len(uncached.cache.rows) == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_batched_doa_observation_matches_a_per_item_numpy_reference(bank, tmp_path, device):
    """The provider convolves its batch of misses in one torch call on the env's device, where the head runs
    too; the reference renders one item at a time in numpy and runs the head window by window on the CPU."""
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks.episodes import ResolvedEpisode
    from asgf_nav.tasks.observations import BatchObservationState, get_observation
    from asgf_nav.tasks.spectrogram import binaural_audio_np
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    head = register_doa_observation(ckpt, name="doa_ref", cache_size=0)
    world = synthetic_world(sample_rate=SR)
    scene = world.scene("grid_a")
    episodes = [ResolvedEpisode(str(i), "grid_a", 0, 0, int(scene.num_nodes - 1 - i), sound, 3.0, 5)
                for i, sound in enumerate(["telephone", "telephone", bank.names("test")[0]])]  # fmt: skip
    nodes, yaws = torch.tensor([0, 3, 5], device=device), torch.tensor([1, 2, 3], device=device)
    batch = BatchObservationState(world, episodes, nodes, yaws, torch.zeros(3, dtype=torch.long, device=device),
                                  torch.zeros(3, 3, device=device), torch.zeros(3, 3, device=device))  # fmt: skip
    rows = get_observation("doa_ref").compute_batch(batch)
    assert rows.device.type == head.device.type == device
    rows, reference_head = rows.cpu(), head.to("cpu").model
    assert head.window * 2 == SR  # two windows per second
    for i, episode in enumerate(episodes):
        rir = scene.rir(int(nodes[i]), episode.goal_node, int(yaws[i]))
        audio = binaural_audio_np(world.sound(episode.sound), rir, SR).T.astype(np.float64)
        posts = []
        for start in range(0, SR - head.window + 1, head.window):
            piece = audio[:, start : start + head.window]
            piece = torch.from_numpy(piece / (np.sqrt(np.mean(piece**2)) + 1e-9)).float()
            with torch.no_grad():
                posts.append(reference_head(piece[None], head.prompt_for(episode.sound)[None])["posterior"][0])
        # on a GPU, cuDNN's convolutions may round through TF32
        assert torch.allclose(rows[i], torch.stack(posts).mean(0), atol=1e-5 if device == "cpu" else 5e-4), i


def test_doa_observation_resamples_a_44k_world_as_scipy_does(tmp_path):
    """A Replica world renders at 44.1 kHz and the head listens at 16 kHz: the head's torch resampling must
    give the posterior of the same audio resampled by scipy."""
    from scipy.signal import resample_poly

    from asgf_nav.models.doa.observation import DoaObservation

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    head = DoaObservation(ckpt)
    rng = np.random.default_rng(3)
    audio = rng.standard_normal((3, 2, 44100)) * np.linspace(0.1, 1.0, 44100)
    audio[2] = 0.0  # silence gets the uniform posterior
    prompt = torch.from_numpy(rng.standard_normal((3, head.window))).float()
    resampled = resample_poly(audio, 160, 441, axis=-1)
    assert resampled.shape[-1] == SR
    expected = head.compute(resampled, prompt, SR)
    got = head.compute(torch.from_numpy(audio).float(), prompt, 44100)
    assert got.shape == (3, head.num_bins)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got[2], torch.full((head.num_bins,), 1.0 / head.num_bins))
    assert (got[0] - got[1]).abs().max() > 1e-6  # two clips, two posteriors (an untrained head's are near uniform)


def test_training_sounds_are_never_prompted_by_held_out_clips(bank, tmp_path):
    """The unheard task's val and test clips are never heard in training, not even as the DoA head's prompt:
    a training sound whose category has no other instance in the training split gets no prompt and the
    uniform posterior."""
    from asgf_nav.models.doa.observation import DoaObservation

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    head = DoaObservation(ckpt)
    train = set(bank.names("train"))
    prompts = {sound: head.prompt_sound(sound) for sound in bank.names("all")}
    alone = sorted(s for s in train if prompts[s] is None)
    assert alone and len(alone) < 5  # the bank's splits leave a few such training sounds
    assert all(prompts[s] in train for s in train if s not in alone)
    assert all(prompts[s] is not None for s in bank.names("val") + bank.names("test"))
    audio = np.random.default_rng(0).standard_normal((2, 2, SR)).astype(np.float32)
    posterior = head.compute(audio, [alone[0], "telephone"], SR)
    assert torch.allclose(posterior[0], torch.full((head.num_bins,), 1.0 / head.num_bins))
    assert not torch.allclose(posterior[1], posterior[0], atol=1e-5)


def test_batched_env_hands_the_audio_of_its_spectrograms_to_the_doa_head(bank, tmp_path, monkeypatch):
    """A state the spectrogram cache misses is one the DoA cache misses too (the same key); its audio is
    rendered once for both, and the posteriors equal those of a head that renders the audio itself."""
    from asgf_nav.config import TaskConfig
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    world = synthetic_world(sample_rate=SR)
    sounds = ["telephone", bank.names("test")[0]]
    episodes = generate_split(world, "train", "unheard", sounds, TaskConfig(train_episodes_per_scene=6))
    cfg = TaskConfig(max_steps=12, sensors=["spectrogram", "doa_shared"])
    renders = []

    def counted(rir):
        def rir_and_count(*args):
            renders.append(args)
            return rir(*args)

        return rir_and_count

    for scene in world.scenes.values():
        monkeypatch.setattr(scene, "rir", counted(scene.rir))
    actions = torch.from_numpy(np.random.default_rng(3).choice(4, size=(16, 3), p=[0.05, 0.55, 0.2, 0.2]))
    runs = {}
    for reuse in (True, False):
        head = register_doa_observation(ckpt, name="doa_shared", cache_size=4096)
        env = BatchedAudioNavEnv(world, episodes, 3, cfg=cfg, seed=4, cache_size=4096)
        env.reuse_audio = reuse
        renders.clear()
        seen = [env.reset()["doa_shared"]] + [env.step(a)[0]["doa_shared"] for a in actions]
        assert head.cache.misses == env.cache.misses > 3
        runs[reuse] = torch.stack(seen), len(renders), env.cache.misses
    (shared, shared_renders, misses), (own, own_renders, _) = runs[True], runs[False]
    assert shared_renders == misses and own_renders == 2 * misses
    assert torch.allclose(shared, own, atol=1e-5)


def test_posterior_cache_computes_each_missing_key_once_and_evicts_the_oldest():
    from asgf_nav.models.doa.observation import PosteriorCache

    calls = []

    def fill(keys):
        def rows(indices):
            calls.append([keys[i] for i in indices])
            return np.array([[keys[i], 0.0] for i in indices])

        return rows

    cache = PosteriorCache(capacity=2)
    keys = [1, 2, 1]
    assert cache.get(keys, fill(keys))[:, 0].tolist() == [1, 2, 1]
    assert calls == [[1, 2]] and (cache.hits, cache.misses) == (1, 2)
    keys = [3, 1]
    cache.get(keys, fill(keys))  # 1 is used again, so 3 evicts 2, the least recently used
    assert calls[-1] == [3] and list(cache.rows) == [1, 3]
    keys = [2]
    cache.get(keys, fill(keys))
    assert calls[-1] == [2] and list(cache.rows) == [3, 2]
    # a kept row owns its memory: it must not hold its whole miss batch alive after the others are evicted
    assert all(row.base is None and row.shape == (2,) for row in cache.rows.values())
    with pytest.raises(ValueError, match="cache size"):
        PosteriorCache(-1)


def test_bad_doa_checkpoint_is_a_config_error_naming_the_key(tmp_path):
    from asgf_nav.config import ConfigError, ExperimentConfig
    from asgf_nav.experiment import register_auxiliary_observations

    corrupt, foreign = tmp_path / "corrupt.pt", tmp_path / "foreign.pt"
    corrupt.write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path, message in (
        (tmp_path / "missing.pt", "does not exist"),
        (corrupt, "not readable as a torch checkpoint"),
        (foreign, "not a valid DoA model"),
    ):
        cfg = ExperimentConfig()
        cfg.task.use_doa, cfg.task.doa_checkpoint = True, str(path)
        with pytest.raises(ConfigError) as error:
            register_auxiliary_observations(cfg)
        assert str(error.value).startswith("task.doa_checkpoint: ") and str(path) in str(error.value)
        assert message in str(error.value) and "doa" not in cfg.task.sensors


def test_frozen_head_is_unchanged_by_ppo_training(tmp_path, monkeypatch):
    """Real PPO updates of an ASGF policy that reads the doa observation leave the head's weights alone."""
    from asgf_nav.config import ExperimentConfig, TaskConfig
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.rl.trainer import Trainer
    from asgf_nav.tasks import observations
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.episodes import resolve_episodes
    from asgf_nav.tasks.synthetic import grid_scene, synthetic_world

    monkeypatch.setattr(observations, "_REGISTRY", dict(observations._REGISTRY))  # the test's "doa" stays here
    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    head = register_doa_observation(ckpt)
    frozen = {k: v.clone() for k, v in head.model.state_dict().items()}
    scenes = [grid_scene("grid_doa", nx=5, nz=4, image_size=48, sample_rate=SR)]
    world = synthetic_world(scenes, sample_rate=SR)
    split = generate_split(world, "train", "heard", ["telephone"], TaskConfig(train_episodes_per_scene=20))
    episodes = resolve_episodes(split, world)
    cfg = ExperimentConfig()
    cfg.model.policy, cfg.model.hidden_size, cfg.model.ase_dim = "asgf", 32, 32
    cfg.model.fusion_dim, cfg.model.fusion_heads = 16, 2
    cfg.task.use_doa, cfg.task.sensors, cfg.task.max_steps = True, ["depth", "spectrogram", "doa"], 10
    cfg.ppo.num_envs, cfg.ppo.num_steps, cfg.ppo.ppo_epoch, cfg.ppo.num_mini_batch = 4, 8, 2, 2
    cfg.ppo.total_frames = 2 * 4 * 8
    cfg.train.device, cfg.train.val_interval, cfg.train.checkpoint_interval = "cpu", 0, 100

    def env_factory(cfg: ExperimentConfig, split: str, rank: int) -> BatchedAudioNavEnv:
        return BatchedAudioNavEnv(world, episodes, cfg.ppo.num_envs, sensors=cfg.task.sensors, seed=rank, cfg=cfg.task)

    trainer = Trainer(cfg, env_factory, tmp_path / "run")
    assert trainer.policy.use_doa
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.train()
    assert head.cache.misses > 0  # the rollouts rendered doa observations
    changed = [k for k, v in trainer.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "PPO did not update the policy"
    assert not head.model.training and all(not p.requires_grad for p in head.model.parameters())
    for key, value in head.model.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_the_posterior_cache_tells_sounds_and_scenes_apart(tmp_path):
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.sounds.bank import SoundBank
    from asgf_nav.tasks.episodes import ResolvedEpisode
    from asgf_nav.tasks.observations import ObservationState, get_observation
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt, seed=0)
    head = register_doa_observation(ckpt, name="doa_keys")
    provider = get_observation("doa_keys")
    world = synthetic_world(sample_rate=SR)
    other = SoundBank.load().names("test")[0]
    rows = []
    for scene_name, sound in (("grid_a", "telephone"), ("grid_a", other), ("grid_b", "telephone")):
        scene = world.scene(scene_name)
        episode = ResolvedEpisode("0", scene_name, 0, 0, 5, sound, 3.0, 5)
        rows.append(provider.compute(ObservationState(world, scene, episode, node=0, yaw=1, step=0)))
    assert head.cache.misses == 3  # three different states, three computations
    assert not np.allclose(rows[0], rows[1]) and not np.allclose(rows[0], rows[2])


def test_the_observation_prompt_is_the_loudest_window_of_the_reference_clip(tmp_path):
    from asgf_nav.models.doa.observation import DoaObservation
    from asgf_nav.sounds.bank import SoundBank

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    head, bank = DoaObservation(ckpt), SoundBank.load()
    checked = 0
    for sound in bank.names("test"):
        wave = torch.from_numpy(bank.waveform(head.prompt_sound(sound), SR)).double()
        hop = head.window // 8
        starts = list(range(0, SR - head.window + 1, hop))
        energy = [float(wave[s : s + head.window].pow(2).sum()) for s in starts]
        prompt = head.prompt_for(sound).double()
        # which window of the clip the prompt is (the windows are unit-RMS copies of the clip)
        match = [
            s
            for s in starts
            if torch.allclose(
                prompt, wave[s : s + head.window] / wave[s : s + head.window].pow(2).mean().sqrt(), atol=1e-4
            )
        ]
        assert match, sound  # the prompt is a window on the hop grid
        assert energy[starts.index(match[0])] >= max(energy) * (1 - 1e-6), sound  # ... and the loudest one
        checked += match[0] > 0
    assert checked  # some prompts start later than the clip's first sample


def test_a_clip_shorter_than_a_window_is_zero_padded_to_one_window(tmp_path):
    """A 0.3 s clip is heard as one 0.5 s window padded with silence, not as no window at all (uniform)."""
    from asgf_nav.models.doa.observation import DoaObservation

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt, seed=0)
    head = DoaObservation(ckpt)
    rng = np.random.default_rng(5)
    short = rng.standard_normal((2, 2, int(0.3 * SR))).astype(np.float32)
    prompt = torch.from_numpy(rng.standard_normal((2, head.window))).float()
    got = head.compute(short, prompt, SR)
    padded = np.zeros((2, 2, head.window), dtype=np.float64)
    padded[..., : short.shape[-1]] = short
    rms = np.sqrt((padded**2).mean(axis=(1, 2)))
    piece = torch.from_numpy(padded / (rms[:, None, None] + 1e-9)).float()
    with torch.no_grad():
        expected = head.model.eval()(piece, prompt)["posterior"]
    assert got.shape == (2, head.num_bins)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, torch.full_like(got, 1.0 / head.num_bins), atol=1e-6)


def test_the_posterior_cache_tells_goals_apart(tmp_path):
    """Two states that differ only in the goal node (the source the agent hears) are two cache misses."""
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks import observations
    from asgf_nav.tasks.episodes import ResolvedEpisode
    from asgf_nav.tasks.observations import ObservationState
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt, seed=0)
    with observations.restored_observations():
        head = register_doa_observation(ckpt, name="doa_goals")
        provider = observations.get_observation("doa_goals")
        world = synthetic_world(sample_rate=SR)
        scene = world.scene("grid_a")
        rows = [
            provider.compute(
                ObservationState(world, scene, ResolvedEpisode("0", "grid_a", 0, 0, goal, "telephone", 3.0, 5), 0, 1, 0)
            )
            for goal in (4, 19)  # 4 m behind the agent (it faces -X), and 5 m away diagonally
        ]
    assert (head.cache.hits, head.cache.misses) == (0, 2)
    assert not np.allclose(rows[0], rows[1])


def test_a_checkpoint_of_another_doa_model_is_refused_as_the_observation_head(tmp_path) -> None:
    """The doa observation needs a prompted (selective) head: an audio-only CRNN checkpoint is a clear error."""
    from asgf_nav.models.doa.crnn import CrnnConfig, SeldCrnn
    from asgf_nav.models.doa.observation import DoaObservation

    ckpt = tmp_path / "crnn.pt"
    save_checkpoint(ckpt, "crnn", SeldCrnn(CrnnConfig(channels=8, rnn_size=8)), None, 0, DoaTrainConfig(), {})
    with pytest.raises(ValueError, match="not a selective head"):
        DoaObservation(ckpt)


def test_held_out_sounds_may_be_prompted_by_held_out_clips_and_fail_clearly_without_one(tmp_path) -> None:
    """A test sound whose category has no other training instance takes a val one; with none at all, an error."""
    from asgf_nav.models.doa.observation import DoaObservation
    from asgf_nav.sounds.bank import SoundBank, SoundClip

    def clip(name: str) -> SoundClip:
        category, instance = name.split("_")
        return SoundClip(name, category, instance, tmp_path / f"{name}.wav", "test", "CC0", "")

    splits = {"train": ["bell_a", "drum_a"], "val": ["harp_b"], "test": ["bell_b", "harp_a", "oboe_a"]}
    names = [n for split in splits.values() for n in split]
    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    head = DoaObservation(ckpt)
    head._bank = SoundBank({n: clip(n) for n in names}, {"heard": splits["train"], **splits}, SR, tmp_path)
    assert head.prompt_sound("bell_b") == "bell_a"  # a training instance when there is one
    assert head.prompt_sound("harp_a") == "harp_b"  # else a held-out one: that is evaluation
    assert head.prompt_sound("drum_a") is None  # a training sound never hears held-out audio
    with pytest.raises(ValueError, match="no other instance"):
        head.prompt_sound("oboe_a")


def test_a_category_prompted_head_is_prompted_with_the_index_of_the_sounds_category(bank, tmp_path) -> None:
    """prompt="category": the prompt is the position of the sound's category in the head's vocabulary."""
    from dataclasses import replace

    from asgf_nav.models.doa.observation import DoaObservation

    vocabulary = ["alarm", "bell", "telephone"]
    net = SelectiveDoaNet(replace(_tiny_config(), prompt="category", num_categories=3, categories=vocabulary))
    ckpt = tmp_path / "head.pt"
    save_checkpoint(ckpt, "selective", net, None, 0, DoaTrainConfig(prompt="category"), {})
    head = DoaObservation(ckpt)
    assert bank.category("telephone") == "telephone" and bank.category("alarm_clock") == "alarm"
    assert int(head.prompt_for("telephone")) == 2 and int(head.prompt_for("alarm_clock")) == 0
    unknown = next(s for s in bank.names("all") if bank.category(s) not in vocabulary)
    with pytest.raises(ValueError, match="unknown to the DoA head"):
        head.prompt_for(unknown)


def test_compute_refuses_audio_that_is_not_binaural_and_a_wrong_number_of_prompts(tmp_path) -> None:
    """A mono or four-channel batch, or one prompt for two clips, is a clear error rather than a posterior."""
    from asgf_nav.models.doa.observation import DoaObservation

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    head = DoaObservation(ckpt)
    prompt = torch.zeros(2, head.window)
    for channels in (1, 4):
        with pytest.raises(ValueError, match=r"must be \(B, 2, N\)"):
            head.compute(np.zeros((2, channels, head.window), np.float32), prompt)
    with pytest.raises(ValueError, match="1 prompts for a batch of 2"):
        head.compute(np.zeros((2, 2, head.window), np.float32), ["telephone"])


def test_compute_runs_the_head_in_eval_mode_even_after_someone_trained_it(tmp_path) -> None:
    """Dropout stays off: after ``model.train()`` the posterior is the eval-mode one, and the head is back in eval."""
    from asgf_nav.models.doa.observation import DoaObservation

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt, seed=0)
    head = DoaObservation(ckpt)
    rng = np.random.default_rng(2)
    audio = rng.standard_normal((2, 2, head.window)).astype(np.float32)
    prompt = torch.from_numpy(rng.standard_normal((2, head.window))).float()
    expected = head.compute(audio, prompt)
    head.model.train()
    torch.manual_seed(1)
    assert torch.allclose(head.compute(audio, prompt), expected, atol=1e-7, rtol=0)
    assert not head.model.training


def test_silent_windows_are_left_out_of_the_average_and_faint_ones_are_not(tmp_path) -> None:
    """A clip silent in its second half is its first window's posterior; a clip 70 dB down is still heard."""
    from asgf_nav.models.doa.observation import DoaObservation

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt, seed=0)
    head = DoaObservation(ckpt)
    rng = np.random.default_rng(4)
    audio = rng.standard_normal((2, 2, 2 * head.window))
    audio[0, :, head.window :] = 0.0  # the sound stops half-way
    audio[1] *= 3e-4  # -70 dB: far, but a sound
    prompt = torch.from_numpy(rng.standard_normal((2, head.window))).float()
    got = head.compute(audio.astype(np.float32), prompt)

    def posterior(piece: np.ndarray, row: int) -> torch.Tensor:
        """The head's posterior of one unit-RMS window."""
        unit = torch.from_numpy(piece / np.sqrt(np.mean(piece**2))).float()[None]
        with torch.no_grad():
            return head.model(unit, prompt[row : row + 1])["posterior"][0]

    halves = [audio[..., : head.window], audio[..., head.window :]]
    assert torch.allclose(got[0], posterior(halves[0][0], 0), atol=1e-6)
    faint = (posterior(halves[0][1], 1) + posterior(halves[1][1], 1)) / 2
    assert torch.allclose(got[1], faint, atol=1e-6)
    assert float(got.sum(dim=1).sub(1.0).abs().max()) < 1e-5


def test_an_env_whose_sounds_the_head_cannot_be_prompted_for_is_refused_as_it_is_built(tmp_path):
    """The head's prompts are clips of the packaged sound bank; SoundSpaces' unheard sounds are not in it. An
    env playing one stops as it is built, naming the sound and the switch, not at its first observation."""
    import dataclasses

    from asgf_nav.config import ConfigError, TaskConfig
    from asgf_nav.models.doa.observation import register_doa_observation
    from asgf_nav.tasks.audionav_env import AudioNavEnv
    from asgf_nav.tasks.batched_env import BatchedAudioNavEnv
    from asgf_nav.tasks.episode_generation import generate_split
    from asgf_nav.tasks.synthetic import synthetic_world

    ckpt = tmp_path / "head.pt"
    tiny_head_checkpoint(ckpt)
    world = synthetic_world(sample_rate=SR)
    episodes = generate_split(world, "train", "heard", ["telephone"], TaskConfig(train_episodes_per_scene=2))
    cfg = TaskConfig(max_steps=12, sensors=["doa_sounds"])
    head = register_doa_observation(ckpt, name="doa_sounds", cache_size=0)
    BatchedAudioNavEnv(world, episodes, 2, cfg=cfg, seed=0)  # the bank's sounds are served
    soundspaces = [dataclasses.replace(ep, sound="dog") for ep in episodes]  # a SoundSpaces name
    with pytest.raises(ConfigError, match=r"task\.use_doa: .* 1 of the episodes' 1 sounds: 'dog' \(unknown sound"):
        BatchedAudioNavEnv(world, soundspaces, 2, cfg=cfg, seed=0)
    with pytest.raises(ConfigError, match=r"task\.use_doa: .* 'dog'"):  # the reference env as well
        AudioNavEnv(world, soundspaces, cfg=cfg)
    with pytest.raises(ConfigError, match="set task.use_doa=false"):
        head.check_sounds(["telephone", "dog"])
