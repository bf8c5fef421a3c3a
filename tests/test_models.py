"""Policies, encoders, ASE and ASGF: shapes, parameter counts, attention/gate behaviour, recurrence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from asgf_nav.config import ConfigError, ExperimentConfig
from asgf_nav.models import POLICY_REGISTRY, build_policy, count_parameters
from asgf_nav.models.ase import AudioSpatialStateEncoder, default_time_pool, frame_intensity, pool_frames
from asgf_nav.models.asgf import AudioSpatialGuidedFusion
from asgf_nav.models.encoders import AudioEncoder, VisualEncoder

FAMILIES = {"replica": 69, "mp3d": 26}
BUILT_IN_POLICIES = ("asgf", "asgf_no_ase", "asgf_no_asgf", "av_nav")
SOUNDSPACES_AV_NAV_REPLICA_DEPTH = 4.35e6


def make_space(frames: int, sensors: tuple[str, ...] = ("depth",), size: int = 128, doa: int = 0) -> spaces.Dict:
    entries = {"spectrogram": spaces.Box(0.0, 50.0, (65, frames, 2), np.float32)}
    if "rgb" in sensors:
        entries["rgb"] = spaces.Box(0, 255, (size, size, 3), np.uint8)
    if "depth" in sensors:
        entries["depth"] = spaces.Box(0.0, 1.0, (size, size, 1), np.float32)
    if doa:
        entries["doa"] = spaces.Box(-1.0, 1.0, (doa,), np.float32)
    return spaces.Dict(entries)


def make_obs(space: spaces.Dict, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    obs = {}
    for key, box in space.spaces.items():
        shape = (batch, *box.shape)
        if key == "rgb":
            obs[key] = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        elif key == "spectrogram":
            obs[key] = torch.rand(shape, generator=generator) * 3.0
        else:
            obs[key] = torch.rand(shape, generator=generator)
    return obs


def make_cfg(policy: str, use_doa: bool = False) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.model.policy = policy
    cfg.task.use_doa = use_doa
    return cfg


def documented_parameter_counts() -> dict[tuple[str, str, str], int]:
    """docs/models.md's parameter table, keyed as the test below counts: (family, sensors, policy)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    rows = text.split("## Parameter counts", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    columns = [(f, s) for f in ("replica", "mp3d") for s in ("depth", "rgb", "rgb+depth")]
    table = {}
    for row in rows:
        name, *cells = (cell.strip() for cell in row.strip("|").split("|"))
        for (family, sensors), cell in zip(columns, cells, strict=True):
            table[(family, sensors, name.strip("`"))] = int(cell.replace(",", ""))
    return table


def test_av_nav_parameter_count_matches_soundspaces_and_the_docs() -> None:
    counts = {}
    for family, frames in FAMILIES.items():
        for sensors in (("depth",), ("rgb",), ("rgb", "depth")):
            for name in sorted(POLICY_REGISTRY):
                policy = build_policy(make_cfg(name), make_space(frames, sensors))
                counts[(family, "+".join(sensors), name)] = count_parameters(policy)
    for key, value in sorted(counts.items()):
        print(f"{key[0]:8s} {key[1]:10s} {key[2]:14s} {value:>10,d}")
    replica_depth = counts[("replica", "depth", "av_nav")]
    assert abs(replica_depth - SOUNDSPACES_AV_NAV_REPLICA_DEPTH) / SOUNDSPACES_AV_NAV_REPLICA_DEPTH < 0.01
    assert abs(counts[("mp3d", "rgb", "av_nav")] - 4.96e6) / 4.96e6 < 0.01
    # The ablations remove or replace parts of the full model.
    assert counts[("replica", "depth", "asgf_no_ase")] < counts[("replica", "depth", "asgf")]
    built_in = {key: n for key, n in counts.items() if key[2] in BUILT_IN_POLICIES}
    assert documented_parameter_counts() == built_in  # docs/models.md's table


def test_audio_encoder_geometry_per_family() -> None:
    assert AudioEncoder((65, 69, 2)).flat_size == 1280
    assert AudioEncoder((65, 26, 2)).flat_size == 2496


@pytest.mark.parametrize("use_doa", [False, True])
@pytest.mark.parametrize("name", sorted(POLICY_REGISTRY))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_policy_act_and_evaluate_shapes(name: str, family: str, use_doa: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    space = make_space(FAMILIES[family], ("rgb", "depth"), size=64, doa=72 if use_doa else 0)
    policy = build_policy(make_cfg(name, use_doa=use_doa), space)
    batch, steps = 3, 4
    obs = make_obs(space, batch, gen)
    hidden = policy.initial_hidden(batch)
    value, action, log_prob, new_hidden = policy.act(obs, hidden, torch.ones(batch))
    assert value.shape == (batch,) and log_prob.shape == (batch,)
    assert (policy.last_ase_state is not None) == policy.has_spatial_state  # what tsne.py relies on
    assert action.dtype == torch.long and ((action >= 0) & (action < 4)).all()
    assert new_hidden.shape == (1, batch, 512)
    assert (log_prob <= 0).all()
    seq_obs = {k: torch.stack([make_obs(space, batch, gen)[k] for _ in range(steps)]) for k in space.spaces}
    actions = torch.randint(0, 4, (steps, batch), generator=gen)
    masks = torch.ones(steps, batch)
    values, log_probs, entropy, _ = policy.evaluate_actions(seq_obs, hidden, masks, actions)
    assert values.shape == log_probs.shape == entropy.shape == (steps, batch)
    assert ((entropy > 0) & (entropy <= math.log(4) + 1e-5)).all()
    assert policy.get_value(obs, hidden, torch.ones(batch)).shape == (batch,)


def test_blind_policy_uses_audio_only() -> None:
    space = make_space(26, sensors=())
    for name in sorted(POLICY_REGISTRY):
        policy = build_policy(make_cfg(name), space)
        assert policy.visual_encoder is None
        obs = make_obs(space, 2, torch.Generator().manual_seed(1))
        value, *_ = policy.act(obs, policy.initial_hidden(2), torch.ones(2))
        assert value.shape == (2,)


@pytest.mark.parametrize("name", ["asgf", "av_nav"])
def test_sequence_evaluation_matches_stepwise_acting(name: str) -> None:
    """A recurrent minibatch with an episode reset inside gives the same values as step-by-step acting."""
    gen = torch.Generator().manual_seed(3)
    space = make_space(26, ("depth",), size=48)
    policy = build_policy(make_cfg(name), space)
    steps, batch = 6, 3
    seq_obs = {k: torch.stack([make_obs(space, batch, gen)[k] for _ in range(steps)]) for k in space.spaces}
    masks = torch.ones(steps, batch)
    masks[3, 1] = 0.0
    masks[0] = 0.0
    actions = torch.randint(0, 4, (steps, batch), generator=gen)
    hidden = torch.randn(1, batch, 512, generator=gen)
    with torch.no_grad():
        values, log_probs, _, final_hidden = policy.evaluate_actions(seq_obs, hidden, masks, actions)
        h = hidden
        for t in range(steps):
            obs_t = {k: v[t] for k, v in seq_obs.items()}
            dist, value, h = policy.distribution_and_value(obs_t, h, masks[t])
            torch.testing.assert_close(value, values[t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(dist.log_prob(actions[t]), log_probs[t], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, final_hidden, atol=1e-5, rtol=1e-5)


def test_hidden_state_reset_by_mask() -> None:
    space = make_space(26, ("depth",), size=48)
    policy = build_policy(make_cfg("av_nav"), space)
    obs = make_obs(space, 2, torch.Generator().manual_seed(4))
    with torch.no_grad():
        fresh = policy.get_value(obs, policy.initial_hidden(2), torch.ones(2))
        reset = policy.get_value(obs, torch.randn(1, 2, 512), torch.zeros(2))
        carried = policy.get_value(obs, torch.randn(1, 2, 512), torch.ones(2))
    torch.testing.assert_close(fresh, reset)
    assert not torch.allclose(fresh, carried)


def test_unknown_policy_lists_registered_names() -> None:
    with pytest.raises(ValueError, match="registered: .*asgf.*av_nav"):
        build_policy(make_cfg("transformer"), make_space(26))


@pytest.mark.parametrize("frames", sorted(FAMILIES.values()))
def test_intensity_weights_sum_to_one_and_follow_loudness(frames: int) -> None:
    gen = torch.Generator().manual_seed(5)
    ase = AudioSpatialStateEncoder((65, frames, 2))
    levels = torch.randperm(frames, generator=gen).float() / frames * 2.0  # distinct per-frame loudness
    jitter = 1 + 0.01 * torch.rand(2, 65, frames, 2, generator=gen)
    spectrogram = torch.log1p(levels.view(1, 1, frames, 1) * jitter)
    state, weights = ase(spectrogram)
    assert state.shape == (2, 512)
    assert weights.shape == (2, ase.num_frames)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    pooled = pool_frames(frame_intensity(spectrogram), ase.time_pool)
    torch.testing.assert_close(weights, torch.softmax(pooled, dim=1))
    # the loudness order comes from the levels the clip was made with, not from the encoder's own intensity
    loudness = pool_frames(levels.view(1, frames), ase.time_pool)[0]
    louder = loudness[:, None] > loudness[None, :] + 0.05  # well past the 1 % jitter of levels below 2
    assert louder.sum() > ase.num_frames, "too few pairs of distinct loudness to test the order"
    heavier = weights[0][:, None] > weights[0][None, :]
    assert heavier[louder].all(), "a louder frame must get a larger weight"


def test_intensity_undoes_log1p() -> None:
    magnitude = torch.rand(1, 65, 10, 2) * 5
    torch.testing.assert_close(frame_intensity(torch.log1p(magnitude)), magnitude.mean(dim=(1, 3)))


def test_ase_state_is_weighted_sum_of_frame_embeddings() -> None:
    ase = AudioSpatialStateEncoder((65, 26, 2))
    spectrogram = torch.rand(3, 65, 26, 2)
    state, weights = ase(spectrogram)
    embeddings = ase.frame_embeddings(spectrogram)
    torch.testing.assert_close(state, (weights.unsqueeze(-1) * embeddings).sum(dim=1), atol=1e-5, rtol=1e-5)
    assert ase.time_pool == 1 and AudioSpatialStateEncoder((65, 69, 2)).num_frames == 35


def test_asgf_gate_and_attention() -> None:
    gen = torch.Generator().manual_seed(6)
    fusion = AudioSpatialGuidedFusion({"visual": 512, "audio": 512, "doa": 8}, 512, 256, 4)
    state = torch.randn(16, 512, generator=gen) * 3
    sizes = {"visual": 512, "audio": 512, "doa": 8}
    memory = {k: torch.randn(16, n, generator=gen) for k, n in sizes.items()}
    fused = fusion(state, memory)
    assert fused.shape == (16, 256)
    torch.testing.assert_close(fused.mean(-1), torch.zeros(16), atol=1e-5, rtol=0)  # LN_out
    alpha = torch.sigmoid(fusion.gate(fusion.gate_norm(state)))
    torch.testing.assert_close(fusion.last_gate, alpha.mean())  # the logged gate is this batch's mean alpha
    torch.testing.assert_close(fusion.last_attention.sum(-1), torch.ones(16, 4))
    assert fusion.last_attention.shape == (16, 4, 3)
    assert 0.0 <= float(fusion.last_attention_entropy) <= math.log(3) + 1e-6


def test_asgf_gate_closed_gives_projected_state() -> None:
    """With alpha -> 0 the fused output is LN_out(W_e e_t): eq. (10) reduces to the audio state path."""
    fusion = AudioSpatialGuidedFusion({"audio": 512}, 512, 256, 4)
    with torch.no_grad():
        fusion.gate[-1].bias.fill_(-50.0)
    state = torch.randn(4, 512)
    fused = fusion(state, {"audio": torch.randn(4, 512)})
    expected = fusion.output_norm(fusion.state_projection(state))
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)


def _perturb(module: torch.nn.Module, scale: float, gen: torch.Generator) -> None:
    """Adds scale x N(0, 1) noise to every weight, so that no term of an equation hides behind an init of 0 or 1."""
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen))


def test_asgf_forward_follows_the_paper_equations() -> None:
    """Eqs. (4)-(10) written out with einsum, on weights perturbed so that every term counts."""
    gen = torch.Generator().manual_seed(0)
    fusion = AudioSpatialGuidedFusion({"visual": 32, "audio": 32}, 48, 16, 2, 8)
    with torch.no_grad():
        _perturb(fusion, 0.3, gen)
    state = torch.randn(5, 48, generator=gen) * 3 + 1
    memory = {n: torch.randn(5, 32, generator=gen) for n in ("visual", "audio")}
    with torch.no_grad():
        fused = fusion(state, memory)
        tokens = torch.stack([fusion.token_projections[n](fusion.token_norms[n](memory[n])) for n in memory], 1)
        heads, head_dim = fusion.num_heads, 16 // fusion.num_heads
        keys = fusion.key(tokens).view(5, 2, heads, head_dim)
        values = fusion.value(tokens).view(5, 2, heads, head_dim)
        query = fusion.query(fusion.query_norm(state)).view(5, heads, head_dim)
        attention = torch.softmax(torch.einsum("bhd,bmhd->bhm", query, keys) / math.sqrt(head_dim), dim=-1)
        context = fusion.attention_output(torch.einsum("bhm,bmhd->bhd", attention, values).reshape(5, 16))
        projected = fusion.state_projection(state)
        alpha = torch.sigmoid(fusion.gate(fusion.gate_norm(state)))
        expected = fusion.output_norm(alpha * (context + projected) + (1 - alpha) * projected)
    torch.testing.assert_close(fusion.last_attention, attention)
    torch.testing.assert_close(fused, expected)


def test_pool_frames_averages_each_group_and_the_short_last_one() -> None:
    pooled = pool_frames(torch.tensor([[1.0, 3.0, 5.0, 7.0, 9.0]]), 2)
    torch.testing.assert_close(pooled, torch.tensor([[2.0, 6.0, 9.0]]))


def test_the_first_conv_column_reads_exactly_its_group_of_frames() -> None:
    ase = AudioSpatialStateEncoder((65, 69, 2))  # time_pool 2: 35 groups, the last one short
    outputs = []
    ase.cnn[0].register_forward_hook(lambda module, inputs, output: outputs.append(output.detach()))
    quiet = torch.zeros(1, 65, 69, 2)
    bumped = quiet.clone()
    bumped[:, :, 1, :] = 1.0  # frame 1 belongs to group 0 (frames 0 and 1)
    with torch.no_grad():
        ase.frame_embeddings(quiet)
        ase.frame_embeddings(bumped)
    changed = (outputs[1] - outputs[0]).abs().sum(dim=(0, 1, 2)).nonzero().flatten().tolist()
    assert changed == [0]


def test_doa_is_an_extra_memory_token() -> None:
    space = make_space(26, ("depth",), size=48, doa=8)
    with_doa = build_policy(make_cfg("asgf", use_doa=True), space)
    without = build_policy(make_cfg("asgf", use_doa=False), space)
    assert with_doa.fusion.token_names == ["visual", "audio", "doa"]
    assert without.fusion.token_names == ["visual", "audio"]
    obs = make_obs(space, 2, torch.Generator().manual_seed(7))
    other = dict(obs, doa=-obs["doa"])
    with torch.no_grad():
        h = with_doa.initial_hidden(2)
        masks = torch.ones(2)
        assert not torch.allclose(with_doa.get_value(obs, h, masks), with_doa.get_value(other, h, masks))
    av_nav = build_policy(make_cfg("av_nav", use_doa=True), space)
    assert av_nav.state_encoder.gru.input_size == 512 + 512 + 8


def test_policy_diagnostics_and_ase_state() -> None:
    space = make_space(69, ("depth",), size=48)
    obs = make_obs(space, 2, torch.Generator().manual_seed(8))
    policy = build_policy(make_cfg("asgf"), space)
    policy.act(obs, policy.initial_hidden(2), torch.ones(2))
    diagnostics = policy.diagnostics()
    assert set(diagnostics) == {"fusion/gate_alpha", "fusion/attention_entropy"}
    assert policy.last_ase_state is not None and policy.last_ase_state.shape == (2, 512)
    no_ase = build_policy(make_cfg("asgf_no_ase"), space)
    assert no_ase.ase is None and no_ase.learned_state.shape == (512,)
    assert build_policy(make_cfg("av_nav"), space).diagnostics() == {}


def test_too_small_images_are_named_with_their_size():
    from asgf_nav.models.encoders import VisualEncoder

    with pytest.raises(ValueError, match=r"size \(16, 16\) are too small for the 8/4/3 conv stack"):
        VisualEncoder({"depth": (16, 16, 1)})
    assert VisualEncoder({"depth": (36, 36, 1)}).output_size == 512


def compact_cfg(policy: str) -> ExperimentConfig:
    cfg = make_cfg(policy)
    cfg.model.hidden_size, cfg.model.ase_dim, cfg.model.fusion_dim, cfg.model.fusion_heads = 16, 16, 8, 2
    return cfg


def test_a_single_memory_token_is_warned_about_once(caplog, monkeypatch):
    """Spectrogram-only ASGF has one memory token: the attention softmax is 1 and the query is dead weight."""
    from asgf_nav.models import policies

    monkeypatch.setattr(policies, "_WARNED_SINGLE_TOKEN", set())
    caplog.set_level("WARNING", logger=policies.__name__)
    blind, seeing = make_space(26, ()), make_space(26, ("depth",), size=36)
    build_policy(compact_cfg("asgf"), seeing)
    assert not caplog.records  # visual + audio: two tokens
    for name in ("asgf", "asgf_no_ase"):
        caplog.clear()
        assert build_policy(compact_cfg(name), blind).fusion.token_names == ["audio"]
        message = " ".join(r.getMessage() for r in caplog.records)
        assert f"model.policy={name} has a single ASGF memory token ['audio']" in message
        assert "task.sensors" in message and "task.use_doa=true" in message
        caplog.clear()
        build_policy(compact_cfg(name), blind)
        assert not caplog.records  # once per process


def test_the_query_and_keys_learn_with_two_memory_tokens():
    space = make_space(26, ("depth",), size=36)
    policy = build_policy(compact_cfg("asgf"), space)
    obs = make_obs(space, 3, torch.Generator().manual_seed(9))
    value = policy.get_value(obs, policy.initial_hidden(3), torch.ones(3))
    value.pow(2).sum().backward()
    for name in ("query.weight", "query_norm.weight", "key.weight"):
        grad = policy.fusion.get_parameter(name).grad
        assert grad is not None and grad.abs().max() > 0, name


def test_use_doa_without_a_doa_observation_is_a_config_error():
    cfg = compact_cfg("asgf")
    cfg.task.use_doa = True
    with pytest.raises(ConfigError, match=r"task.use_doa=true but the observation space has no 'doa'"):
        build_policy(cfg, make_space(26, ("depth",), size=36))


def test_a_policy_name_is_registered_once_unless_overwritten() -> None:
    from asgf_nav.models import Policy, register_policy

    class First(Policy):
        pass

    class Second(Policy):
        pass

    try:
        register_policy("test_only_policy")(First)
        with pytest.raises(ValueError, match="'test_only_policy' is already registered by First.*overwrite=True"):
            register_policy("test_only_policy")(Second)
        assert POLICY_REGISTRY["test_only_policy"] is First
        register_policy("test_only_policy", overwrite=True)(Second)
        assert POLICY_REGISTRY["test_only_policy"] is Second and Second.policy_name == "test_only_policy"
        with pytest.raises(ValueError, match="'asgf' is a built-in policy"):
            register_policy("asgf", overwrite=True)(First)
        assert POLICY_REGISTRY["asgf"].__module__ == "asgf_nav.models.policies"
        with pytest.raises(ValueError, match="Second is already registered as policy 'test_only_policy'"):
            register_policy("test_only_other")(Second)  # its policy_name, which its errors say, would change
        assert Second.policy_name == "test_only_policy" and "test_only_other" not in POLICY_REGISTRY
    finally:
        POLICY_REGISTRY.pop("test_only_policy", None)


def test_a_policy_of_its_own_gathers_the_encoders_it_built_and_no_audio_encoder_it_did_not() -> None:
    """models.md's recipe: subclass Policy, build what it needs, gather features with encode_modalities. One that
    reads the spectrogram its own way (no audio CNN) got an AttributeError for the base's missing attribute."""
    from asgf_nav.models import Policy

    class LoudnessAndDepth(Policy):
        policy_name = "loudness_and_depth"
        reads_sensors = ("depth", "spectrogram")

        def __init__(self, cfg, observation_space):
            super().__init__(cfg, observation_space)
            self.build_heads(512 + 2)

        def step_features(self, obs):
            features = self.encode_modalities(obs)
            return torch.cat([features["visual"], obs["spectrogram"].mean(dim=(1, 2))], dim=-1)

    cfg = ExperimentConfig()
    cfg.model.hidden_size = 16
    space = make_space(20, ("depth",), size=64)
    policy = LoudnessAndDepth(cfg, space)
    obs = make_obs(space, 3, torch.Generator().manual_seed(0))
    assert sorted(policy.encode_modalities(obs)) == ["visual"]
    value, action, _, hidden = policy.act(obs, policy.initial_hidden(3), torch.ones(3))
    assert value.shape == (3,) and action.shape == (3,) and hidden.shape == (1, 3, 16)
    assert not any(name.startswith("audio_encoder") for name in policy.state_dict())


@pytest.mark.parametrize("name", ["AV_NAV", " av_nav", "av_nav ", "", "2d", "my-policy"])
def test_a_policy_or_observation_name_a_config_could_not_tell_apart_is_refused(name: str) -> None:
    """``model.policy=av_nav`` and ``AV_NAV`` beside each other: an override's case or stray space picks a class."""
    from asgf_nav.models import register_policy
    from asgf_nav.tasks.observations import register_observation, registered_observations

    before = (dict(POLICY_REGISTRY), registered_observations())
    with pytest.raises(ValueError, match="lower-case letters, digits and underscores.*model.policy"):
        register_policy(name)
    with pytest.raises(ValueError, match="lower-case letters, digits and underscores.*task.sensors"):
        register_observation(name, lambda state: np.zeros(1, np.float32), lambda world: None)
    assert (dict(POLICY_REGISTRY), registered_observations()) == before


def test_register_policy_written_without_its_name_says_how_to_write_it() -> None:
    """``@register_policy`` bare would replace the class by the inner decorator and register nothing."""
    from asgf_nav.models import Policy, register_policy

    with pytest.raises(TypeError, match=r"got <class .*Bare'>: write @register_policy\('my_policy'\)"):

        @register_policy
        class Bare(Policy):
            pass


def test_the_bigru_runs_forward_and_backward_over_the_frames_in_order() -> None:
    """The ASE's BiGRU: the forward half of e_{t,i} (PyTorch's first ase_dim/2 entries) reads frames <= i only, the
    backward half of e_{t,0} reads the last frame; a one-way GRU or embeddings out of frame order break this."""
    ase = AudioSpatialStateEncoder((65, 8, 2), ase_dim=16, frame_feature_size=8)  # time_pool 1: one column a frame
    spectrogram = torch.rand(2, 65, 8, 2, generator=torch.Generator().manual_seed(10))
    bumped = spectrogram.clone()
    bumped[:, :, 7, :] += 1.0  # the last frame: CNN columns 5..7 see it (time kernels 1, 3, 3)
    with torch.no_grad():
        change = (ase.frame_embeddings(bumped) - ase.frame_embeddings(spectrogram)).abs().amax(dim=0)  # (8, 16)
    assert change[:5, :8].max() < 1e-6, "the forward direction at frame i must not see later frames"
    assert change[7, :8].max() > 1e-3
    assert change[0, 8:].max() > 1e-3, "the backward direction at frame 0 must see the last frame"


def test_default_time_pool_pairs_frames_from_48_frames_on() -> None:
    """The documented threshold: T >= 48 pools pairs of frames, shorter spectrograms keep every frame."""
    assert (default_time_pool(47), default_time_pool(48)) == (1, 2)
    assert AudioSpatialStateEncoder((65, 48, 2)).num_frames == 24


def test_a_state_of_size_d_enters_the_residual_unprojected() -> None:
    """Eq. (8) adds e_t itself when ase_dim == D (W_e is the identity): a closed gate gives LN_out(e_t)."""
    fusion = AudioSpatialGuidedFusion({"visual": 8, "audio": 8}, 16, 16, 2, 8)
    assert isinstance(fusion.state_projection, torch.nn.Identity)
    with torch.no_grad():
        fusion.gate[-1].bias.fill_(-50.0)
    state = torch.randn(3, 16, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        fused = fusion(state, {"visual": torch.randn(3, 8), "audio": torch.randn(3, 8)})
    torch.testing.assert_close(fused, fusion.output_norm(state), atol=1e-5, rtol=1e-5)


def test_the_logged_gate_and_attention_entropy_follow_eq_9_and_the_attention() -> None:
    """gate_alpha logs alpha itself (not 1 - alpha); attention_entropy is -sum_m p log p, log M when uniform."""
    fusion = AudioSpatialGuidedFusion({"visual": 8, "audio": 8, "doa": 4}, 16, 8, 2, 8)
    with torch.no_grad():
        fusion.gate[-1].weight.zero_()
        fusion.gate[-1].bias.fill_(2.0)  # alpha = sigmoid(2) for every sample
        fusion.key.weight.zero_()
        fusion.key.bias.zero_()  # every score 0: uniform attention over the 3 tokens
        sizes = {"visual": 8, "audio": 8, "doa": 4}
        fusion(torch.randn(4, 16), {k: torch.randn(4, n) for k, n in sizes.items()})
    assert float(fusion.last_gate) == pytest.approx(1.0 / (1.0 + math.exp(-2.0)))  # 0.8808
    torch.testing.assert_close(fusion.last_attention, torch.full((4, 2, 3), 1.0 / 3.0))
    assert float(fusion.last_attention_entropy) == pytest.approx(math.log(3.0), rel=1e-5)


def test_the_visual_cnn_reads_rgb_over_255_then_depth_on_the_channels() -> None:
    """SoundSpaces' input: rgb/255 in channels 0-2, depth (unscaled) in channel 3, neither sensor dropped."""
    encoder = VisualEncoder({"rgb": (36, 36, 3), "depth": (36, 36, 1)})
    seen = []
    encoder.cnn[0].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    gen = torch.Generator().manual_seed(12)
    rgb = torch.randint(0, 256, (2, 36, 36, 3), dtype=torch.uint8, generator=gen)
    depth = torch.rand(2, 36, 36, 1, generator=gen)
    with torch.no_grad():
        encoder({"rgb": rgb, "depth": depth})
    expected = torch.cat([rgb.float() / 255.0, depth], dim=-1).permute(0, 3, 1, 2)
    torch.testing.assert_close(seen[0], expected)


def test_encoders_use_kaiming_relu_weights_and_zero_biases() -> None:
    """Every conv / linear of the CNN encoders and the ASE: std sqrt(2 / fan_in) (ReLU gain) and zero biases."""
    ase = AudioSpatialStateEncoder((65, 26, 2), ase_dim=16, frame_feature_size=64)
    modules = [VisualEncoder({"depth": (36, 36, 1)}), AudioEncoder((65, 26, 2)), ase.cnn, ase.frame_projection]
    layers = [m for module in modules for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 4 + 4 + 3 + 1
    for layer in layers:
        fan_in = layer.weight[0].numel()
        assert float(layer.weight.detach().std()) == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.1), layer
        assert not layer.bias.any(), layer


def test_the_deterministic_action_is_the_most_likely_one() -> None:
    """Evaluation acts deterministically: the argmax of the actor's distribution, here action 2."""
    space = make_space(26, ("depth",), size=36)
    policy = build_policy(compact_cfg("av_nav"), space)
    with torch.no_grad():
        policy.actor.weight.zero_()
        policy.actor.bias.copy_(torch.tensor([0.0, 1.0, 3.0, -1.0]))
        obs = make_obs(space, 3, torch.Generator().manual_seed(13))
        _, action, log_prob, _ = policy.act(obs, policy.initial_hidden(3), torch.ones(3), deterministic=True)
    assert action.tolist() == [2, 2, 2]
    expected = 3.0 - math.log(sum(math.exp(x) for x in (0.0, 1.0, 3.0, -1.0)))
    torch.testing.assert_close(log_prob, torch.full((3,), expected))


@pytest.mark.parametrize("name", sorted(POLICY_REGISTRY))
def test_every_parameter_learns_from_the_value_and_the_log_probs(name: str) -> None:
    """No observation is ignored and no part is frozen: the ASE (both in 'asgf' and 'w/o ASGF'), the audio and
    visual CNNs and the 'w/o ASE' learnable query vector all get a gradient from one actor-critic step."""
    space = make_space(26, ("depth",), size=36)
    policy = build_policy(compact_cfg(name), space)
    gen = torch.Generator().manual_seed(14)
    obs = make_obs(space, 3, gen)
    hidden = torch.randn(1, 3, 16, generator=gen)  # not zeros: W_hh gets a gradient too
    actions = torch.tensor([0, 1, 3])
    value, log_prob, _, _ = policy.evaluate_actions(obs, hidden, torch.ones(3), actions)
    (value.sum() + log_prob.sum()).backward()
    for param_name, param in policy.named_parameters():
        assert param.grad is not None and param.grad.abs().max() > 0, param_name
    if name == "asgf_no_ase":
        assert "learned_state" in dict(policy.named_parameters())


def test_the_actor_and_critic_are_orthogonal_with_gains_0_01_and_1() -> None:
    """SoundSpaces' heads: orthogonal rows of norm 0.01 (near-uniform first policy) and 1, zero biases."""
    policy = build_policy(compact_cfg("av_nav"), make_space(26, ("depth",), size=36))
    actor, critic = policy.actor.weight.detach(), policy.critic.weight.detach()
    torch.testing.assert_close(actor @ actor.T, 1e-4 * torch.eye(4), atol=1e-9, rtol=1e-5)
    torch.testing.assert_close(critic @ critic.T, torch.eye(1), atol=1e-6, rtol=1e-5)
    assert not policy.actor.bias.any() and not policy.critic.bias.any()


def test_the_gate_is_one_scalar_per_sample_from_an_mlp_with_relu() -> None:
    """Eq. (9): the gate network maps LN(e_t) through Linear-ReLU-Linear to one scalar per sample (not per channel)."""
    gen = torch.Generator().manual_seed(15)
    fusion = AudioSpatialGuidedFusion({"visual": 8, "audio": 8}, 12, 8, 2, 6)
    with torch.no_grad():
        _perturb(fusion, 0.5, gen)
    outputs: list[torch.Tensor] = []
    fusion.gate.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach()))
    state = torch.randn(5, 12, generator=gen) * 2
    with torch.no_grad():
        fusion(state, {"visual": torch.randn(5, 8, generator=gen), "audio": torch.randn(5, 8, generator=gen)})
        norm = fusion.gate_norm
        ln = (state - state.mean(-1, keepdim=True)) / torch.sqrt(state.var(-1, unbiased=False, keepdim=True) + 1e-5)
        ln = ln * norm.weight + norm.bias
        first, last = fusion.gate[0], fusion.gate[-1]
        pre_activation = ln @ first.weight.T + first.bias
        expected = pre_activation.clamp_min(0.0) @ last.weight.T + last.bias
    assert (pre_activation < 0).any() and (pre_activation > 0).any()  # the ReLU matters here
    assert outputs[0].shape == (5, 1)
    torch.testing.assert_close(outputs[0], expected)
    assert float(fusion.last_gate) == pytest.approx(float(torch.sigmoid(expected).mean()), rel=1e-5)


def test_the_logged_entropy_is_the_mean_over_samples_and_heads_and_finite_when_saturated() -> None:
    """attention_entropy is the mean of -sum_m p log p over samples and heads, and 0 (not NaN) for a one-hot softmax."""
    gen = torch.Generator().manual_seed(16)
    fusion = AudioSpatialGuidedFusion({"visual": 8, "audio": 8, "doa": 4}, 12, 8, 2, 6)
    with torch.no_grad():
        _perturb(fusion, 0.3, gen)
        sizes = {"visual": 8, "audio": 8, "doa": 4}
        fusion(torch.randn(6, 12, generator=gen), {k: torch.randn(6, n, generator=gen) for k, n in sizes.items()})
    p = fusion.last_attention.double()  # (6, 2, 3), checked against the equations elsewhere
    per_row = -torch.special.xlogy(p, p).sum(-1)
    assert float(per_row.max() - per_row.min()) > 0.05  # rows differ, so the mean is not any one row
    assert float(fusion.last_attention_entropy) == pytest.approx(float(per_row.mean()), rel=1e-5)

    saturated = AudioSpatialGuidedFusion({"visual": 4, "audio": 4}, 4, 8, 2, 4)
    with torch.no_grad():
        for name, sign in (("visual", 1.0), ("audio", -1.0)):
            saturated.token_projections[name].weight.zero_()
            saturated.token_projections[name].bias.fill_(100.0 * sign)
        saturated.key.weight.copy_(torch.eye(8))
        saturated.key.bias.zero_()
        saturated.query.weight.zero_()
        saturated.query.bias.fill_(1.0)  # scores +-100 * 4 / sqrt(4): exp(-400) is exactly 0 in float32
        saturated(torch.randn(2, 4), {"visual": torch.randn(2, 4), "audio": torch.randn(2, 4)})
    assert saturated.last_attention[..., 1].eq(0).all()
    assert float(saturated.last_attention_entropy) == 0.0


def test_the_ase_cnn_column_sees_two_groups_either_side() -> None:
    """The ASE CNN's column i reads groups i-2..i+2 (two time-kernel-3 convolutions), as the module documents."""
    ase = AudioSpatialStateEncoder((65, 8, 2), ase_dim=16, frame_feature_size=8)  # time_pool 1: group = frame
    outputs: list[torch.Tensor] = []
    ase.cnn.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach()))
    spectrogram = torch.rand(1, 65, 8, 2, generator=torch.Generator().manual_seed(17))
    bumped = spectrogram.clone()
    bumped[:, :, 3, :] += 1.0
    with torch.no_grad():
        ase.frame_embeddings(spectrogram)
        ase.frame_embeddings(bumped)
    changed = (outputs[1] - outputs[0]).abs().sum(dim=(0, 1, 2)).nonzero().flatten().tolist()
    assert changed == [1, 2, 3, 4, 5]


def test_a_short_last_group_is_padded_with_silence() -> None:
    """69 frames in pairs: the missing 70th frame is a zero (silent) frame, as if the clip had one more quiet frame."""
    ase = AudioSpatialStateEncoder((65, 69, 2), ase_dim=16, frame_feature_size=8)
    spectrogram = torch.rand(2, 65, 69, 2, generator=torch.Generator().manual_seed(18)) * 3
    with_silence = torch.cat([spectrogram, torch.zeros(2, 65, 1, 2)], dim=2)
    with torch.no_grad():
        torch.testing.assert_close(ase.frame_embeddings(spectrogram), ase.frame_embeddings(with_silence))


def test_an_explicit_time_pool_is_honoured_and_validated() -> None:
    """time_pool overrides the frame-count default; 0 and too few frequency bins are clear construction errors."""
    assert AudioSpatialStateEncoder((65, 69, 2), ase_dim=16, time_pool=1).num_frames == 69
    ase = AudioSpatialStateEncoder((65, 26, 2), ase_dim=16, time_pool=2)
    _, weights = ase(torch.rand(1, 65, 26, 2))
    assert ase.num_frames == 13 and weights.shape == (1, 13)
    with pytest.raises(ValueError, match="time_pool must be >= 1, got 0"):
        AudioSpatialStateEncoder((65, 26, 2), time_pool=0)
    with pytest.raises(ValueError, match="too few frequency bins"):
        AudioSpatialStateEncoder((10, 26, 2))  # 10 -> 3 -> 1 -> 0 rows after the three stride-2 convolutions


def test_visual_views_are_checked_and_sized_per_side() -> None:
    """A side below 36 px or rgb/depth of different sizes fail at construction; a non-square view encodes."""
    with pytest.raises(ValueError, match=r"size \(128, 20\) are too small"):
        VisualEncoder({"depth": (128, 20, 1)})
    with pytest.raises(ValueError, match="rgb and depth must share height/width"):
        VisualEncoder({"rgb": (64, 64, 3), "depth": (48, 48, 1)})
    encoder = VisualEncoder({"depth": (36, 64, 1)})  # widths 64 -> 15 -> 6 -> 2, heights 36 -> 8 -> 3 -> 1
    assert encoder.cnn[-2].in_features == 64 * 1 * 2
    assert encoder({"depth": torch.rand(2, 36, 64, 1)}).shape == (2, 512)


def test_the_audio_cnn_takes_the_small_stack_below_30_only() -> None:
    """SoundSpaces' rule: the 5/3/3 kernel stack when a spectrogram side is < 30, the 8/4/3 stack from 30 on."""
    from asgf_nav.models.encoders import audio_cnn_geometry

    assert audio_cnn_geometry(65, 29) == ((5, 3, 3), (2, 2, 1))
    assert audio_cnn_geometry(65, 30) == ((8, 4, 3), (4, 2, 1))


def test_the_logged_diagnostics_name_the_right_quantities() -> None:
    """diagnostics()['fusion/gate_alpha'] is the fusion's mean gate, ['fusion/attention_entropy'] its
    attention entropy."""
    space = make_space(26, ("depth",), size=36)
    policy = build_policy(compact_cfg("asgf"), space)
    with torch.no_grad():
        policy.fusion.gate[-1].weight.zero_()
        policy.fusion.gate[-1].bias.fill_(2.0)  # alpha = sigmoid(2) = 0.88, far from any entropy of 2 tokens
        policy.act(make_obs(space, 2, torch.Generator().manual_seed(19)), policy.initial_hidden(2), torch.ones(2))
    diagnostics = policy.diagnostics()
    assert float(diagnostics["fusion/gate_alpha"]) == pytest.approx(1.0 / (1.0 + math.exp(-2.0)))
    p = policy.fusion.last_attention
    entropy = -torch.special.xlogy(p, p).sum(-1).mean()
    assert float(diagnostics["fusion/attention_entropy"]) == pytest.approx(float(entropy), rel=1e-5)


@pytest.mark.parametrize("name", ["asgf", "asgf_no_asgf", "asgf_no_ase"])
def test_the_model_sizes_in_the_config_reach_the_modules(name: str) -> None:
    """model.ase_dim, fusion_dim and fusion_heads configure the ASE, the fusion and its heads in every ASGF variant."""
    space = make_space(26, ("depth",), size=36)
    cfg = compact_cfg(name)  # hidden 16, ase_dim 16, fusion_dim 8, 2 heads: none of them a default
    policy = build_policy(cfg, space)
    if policy.ase is not None:
        assert policy.ase.output_size == 16 and policy.ase.bigru.hidden_size == 8
    if name == "asgf_no_asgf":
        assert policy.state_encoder.gru.input_size == 16 + 512 + 512
        return
    assert (policy.fusion.fusion_dim, policy.fusion.num_heads) == (8, 2)
    with torch.no_grad():
        policy.act(make_obs(space, 3, torch.Generator().manual_seed(20)), policy.initial_hidden(3), torch.ones(3))
    assert policy.fusion.last_attention.shape == (3, 2, 2)
    assert policy.state_encoder.gru.input_size == 8


@pytest.mark.parametrize("name", ["asgf", "asgf_no_asgf"])
def test_last_ase_state_is_the_latest_steps_state(name: str) -> None:
    """The t-SNE reads policy.last_ase_state after every step: it must be e_t of the step just taken."""
    space = make_space(26, ("depth",), size=36)
    policy = build_policy(compact_cfg(name), space)
    gen = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for _ in range(2):
            obs = make_obs(space, 2, gen)
            policy.act(obs, policy.initial_hidden(2), torch.ones(2))
        expected, _ = policy.ase(obs["spectrogram"])
    torch.testing.assert_close(policy.last_ase_state, expected)


def test_the_recurrent_weights_are_orthogonal_and_the_biases_zero() -> None:
    """SoundSpaces' GRU init: orthogonal W_ih and W_hh (Gram matrix = identity on the short side), zero biases."""
    policy = build_policy(compact_cfg("asgf"), make_space(26, ("depth",), size=36))  # GRU 8 -> 16
    gru = policy.state_encoder.gru
    w_ih, w_hh = gru.weight_ih_l0.detach(), gru.weight_hh_l0.detach()  # (48, 8), (48, 16)
    torch.testing.assert_close(w_ih.T @ w_ih, torch.eye(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(w_hh.T @ w_hh, torch.eye(16), atol=1e-5, rtol=0)
    assert not gru.bias_ih_l0.any() and not gru.bias_hh_l0.any()


def test_a_policy_without_its_required_observation_is_a_clear_error() -> None:
    """A missing 'spectrogram' is named at construction, not left to a KeyError inside an encoder."""
    space = spaces.Dict({"depth": spaces.Box(0.0, 1.0, (36, 36, 1), np.float32)})
    for name in sorted(POLICY_REGISTRY):
        with pytest.raises(ConfigError, match=rf"task.sensors: policy '{name}' needs observations \['spectrogram'\]"):
            build_policy(compact_cfg(name), space)


def test_a_checkpoint_of_other_view_sizes_is_named_with_the_image_size_it_was_trained_on(tmp_path) -> None:
    """The visual encoder's shapes follow the views' size, so a mismatch there points at scenes.image_size;
    sensors the checkpoint's policy cannot run on are a CheckpointError naming the file, not a traceback."""
    from asgf_nav.eval.evaluator import load_policy_agent
    from asgf_nav.rl.checkpoint import CheckpointError

    cfg = make_cfg("av_nav")
    cfg.task.sensors = ["depth", "spectrogram"]
    policy = build_policy(cfg, make_space(69, ("depth",), size=64))
    state = {"model": policy.state_dict(), "policy_name": "av_nav", "config": {"scenes": {"image_size": 64}}}
    path = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointError, match=f"checkpoint {path} .*trained on 64 px views.*scenes.image_size"):
        load_policy_agent(cfg, state, make_space(69, ("depth",), size=128), source=path)
    no_audio = spaces.Dict({"depth": spaces.Box(0.0, 1.0, (64, 64, 1), np.float32)})
    with pytest.raises(CheckpointError, match=f"^checkpoint {path}: .*spectrogram"):
        load_policy_agent(cfg, state, no_audio, source=path)


def test_a_checkpoint_of_another_sample_rate_is_named_with_the_spectrograms_it_was_trained_on(tmp_path) -> None:
    """The dataset's sample rate sets the spectrogram's time axis, and with it the audio encoder's and the
    ASE's shapes: an MP3D checkpoint on Replica observations names both shapes, not the views."""
    from asgf_nav.eval.evaluator import load_policy_agent
    from asgf_nav.rl.checkpoint import CheckpointError

    for name in ("av_nav", "asgf"):
        cfg = make_cfg(name)
        cfg.task.sensors = ["depth", "spectrogram"]
        policy = build_policy(cfg, make_space(26, ("depth",), size=64))
        config = {"scenes": {"image_size": 64, "dataset": "mp3d"}}
        state = {"model": policy.state_dict(), "policy_name": name, "config": config}
        with pytest.raises(CheckpointError) as error:
            load_policy_agent(cfg, state, make_space(69, ("depth",), size=64), source=tmp_path / "ckpt.pt")
        message = str(error.value)
        assert "trained on dataset 'mp3d', whose responses give (65, 26, 2) spectrograms (16000 Hz)" in message
        assert "these observations' are (65, 69, 2)" in message and "px views" not in message
