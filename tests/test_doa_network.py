"""Selective DoA head: tri-band features, azimuth labels, network outputs and losses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from doa_helpers import SR, _source_at, _tiny_config

from asgf_nav.models.doa.data import DoaExampleSampler
from asgf_nav.models.doa.features import (
    AzimuthGrid,
    StftConfig,
    binaural_stft,
    circular_distance,
    interaural_features,
    relative_azimuth,
    tri_band_patches,
)
from asgf_nav.models.doa.network import DoaNetConfig, SelectiveDoaNet, doa_loss, posterior_loss
from asgf_nav.models.doa.rooms import shoebox_pool
from asgf_nav.models.doa.train import training_loss


def test_tri_band_feature_shapes():
    cfg = StftConfig()
    audio = torch.randn(3, 2, SR // 2)
    spec = binaural_stft(audio, cfg)
    frames = cfg.frames(SR // 2)
    assert spec.shape == (3, 2, cfg.num_bins, frames)
    feats = interaural_features(spec)
    assert feats.shape == (3, 4, frames, cfg.num_bins)
    fine, mid, full = tri_band_patches(feats, (32, 128))
    assert fine.shape == (3, cfg.num_bins // 32, 4, frames, 32)
    assert mid.shape == (3, cfg.num_bins // 128, 4, frames, 128)
    assert full.shape == (3, 1, 4, frames, cfg.num_bins)
    # patches are views of the same spectrum: the second fine patch is bins 32..63
    assert torch.equal(fine[:, 1], feats[..., 32:64])
    # identical ears: zero phase and level difference
    same = interaural_features(binaural_stft(audio[:, :1].repeat(1, 2, 1), cfg))
    assert torch.allclose(same[:, 0], torch.ones_like(same[:, 0]), atol=1e-4)
    assert same[:, 1:3].abs().max() < 1e-4


def test_circular_label_encoding_and_decoding():
    assert circular_distance(359.0, 1.0) == pytest.approx(2.0)
    assert circular_distance(np.array([10.0, 180.0]), np.array([350.0, 0.0])).tolist() == [20.0, 180.0]
    grid = AzimuthGrid(bin_width=5.0, laplace_scale=5.0)
    assert grid.num_bins == 72
    azimuths = np.array([0.0, 1.0, 359.0, 92.5, 181.0, 271.3])
    target = grid.encode(azimuths)
    assert target.shape == (6, 72)
    assert torch.allclose(target.sum(1), torch.ones(6))
    # 359 and 1 degrees share their peak bin (0) and their targets are mirror images across it
    assert int(target[1].argmax()) == int(target[2].argmax()) == 0
    assert torch.allclose(target[1, 1:6], torch.flip(target[2, 67:72], [0]))
    decoded = grid.decode(target)
    assert circular_distance(decoded, azimuths).max() < 1.5
    with pytest.raises(ValueError, match="must divide 360 degrees, got 7.0"):
        AzimuthGrid(bin_width=7.0)


def test_relative_azimuth_follows_habitat_yaw():
    origin = np.zeros(3)
    assert relative_azimuth(origin, np.array([0, 0, -1.0]), 0.0) == pytest.approx(0.0)  # ahead
    assert relative_azimuth(origin, np.array([-1.0, 0, 0]), 0.0) == pytest.approx(90.0)  # left
    assert relative_azimuth(origin, np.array([0, 0, 1.0]), 90.0) == pytest.approx(90.0)  # yaw 90 faces -X
    assert relative_azimuth(origin, np.array([1.0, 0, 0]), 0.0) == pytest.approx(270.0)  # right
    for az, yaw in [(30.0, 0.0), (200.0, 90.0), (315.0, 270.0)]:
        assert relative_azimuth(origin, _source_at(origin, az, yaw), yaw) == pytest.approx(az)


def test_loss_parts_and_output_shapes(bank):
    net = SelectiveDoaNet(_tiny_config())
    sampler = DoaExampleSampler(bank, shoebox_pool(3, 3, seed=1, progress=False), "train", clip_seconds=0.25)
    batch = sampler.sample(4, 0.0, np.random.default_rng(1))
    out = net(batch.mixture, batch.prompt)
    assert out["posterior"].shape == (4, 72)
    assert torch.allclose(out["posterior"].sum(1), torch.ones(4), atol=1e-5)
    assert out["mask"].min() >= 0 and out["mask"].max() <= 1
    assert torch.allclose(out["band_weights"].sum(-1), torch.ones_like(out["band_weights"][..., 0]))
    assert [b.shape[1] for b in out["patch_weights"]] == [4, 2, 1]
    loss, parts = training_loss(net, batch, doa_weight=1.0)
    assert loss.item() == pytest.approx(parts["recon"] + parts["posterior_mse"], rel=1e-4)
    target = net.cfg.grid.encode(batch.azimuth)
    perfect = {"masked": out["masked"], "posterior": target, "log_posterior": target.log()}
    assert doa_loss(perfect, out["masked"], target)[0].item() == pytest.approx(0.0)
    # cross-entropy against the soft target: its minimum is the target's entropy, reached at the target
    entropy = -(target * target.log()).sum(1).mean().item()
    assert doa_loss(perfect, out["masked"], target, posterior_kind="cross_entropy")[0].item() == pytest.approx(
        entropy, rel=1e-5
    )
    ce, parts = posterior_loss(out, target, "cross_entropy")
    assert ce.item() > entropy and set(parts) == {"posterior_cross_entropy"}
    with pytest.raises(ValueError, match="posterior loss"):
        posterior_loss(out, target, "hinge")


def test_mask_head_kinds_and_old_checkpoint_configs(bank):
    cfg = _tiny_config()
    old = cfg.to_dict()
    del old["mask_head"]  # configs stored before the template mask head existed
    assert DoaNetConfig.from_dict(old).mask_head == "mlp"
    assert SelectiveDoaNet(DoaNetConfig.from_dict(old)).mask_head is None
    with pytest.raises(ValueError, match="mask head 'unet'"):
        SelectiveDoaNet(DoaNetConfig(**{**cfg.to_dict(), "mask_head": "unet", "stft": cfg.stft}))
    # the template head reads the prompt per bin: two prompts give two different masks of one mixture
    torch.manual_seed(0)
    net = SelectiveDoaNet(cfg).eval()
    sampler = DoaExampleSampler(bank, shoebox_pool(2, 3, seed=1, progress=False), "train", clip_seconds=0.25)
    batch = sampler.sample(2, 0.0, np.random.default_rng(3))
    mixture = batch.mixture[:1].expand(2, -1, -1)
    with torch.no_grad():
        mask = net(mixture, batch.prompt)["mask"]
    assert not torch.allclose(mask[0], mask[1], atol=1e-4)


def test_network_outputs_are_per_example_and_the_mask_weights_the_magnitude(sampler_parts):
    from asgf_nav.models.doa.data import DoaExampleSampler
    from asgf_nav.models.doa.features import binaural_stft, compressed_magnitude
    from asgf_nav.models.doa.network import SelectiveDoaNet

    bank, pool = sampler_parts
    torch.manual_seed(0)
    net = SelectiveDoaNet(_tiny_config()).eval()
    batch = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25).sample(4, 0.0, np.random.default_rng(1))
    with torch.no_grad():
        out = net(batch.mixture, batch.prompt)
        alone = net(batch.mixture[:1], batch.prompt[:1])
    # an example's posterior does not depend on the rest of its batch
    assert torch.allclose(out["posterior"][:1], alone["posterior"], atol=1e-5)
    # module docstring: band-importance weights are a softmax over patches
    for beta in out["patch_weights"]:
        assert torch.allclose(beta.sum(dim=1), torch.ones(4), atol=1e-5)
    # stage 5: the mask weights the mixture's (compressed) magnitude
    magnitude = compressed_magnitude(binaural_stft(batch.mixture, net.cfg.stft))
    assert torch.allclose(out["masked"], out["mask"] * magnitude, atol=1e-6)


GOLDEN_PATH = Path(__file__).parent / "data" / "doa_packaged_head_posteriors.json"  # see its test


def _packaged_head_posteriors():
    from asgf_nav.models.doa.checkpoint import load_model
    from asgf_nav.models.doa.data import DoaExampleSampler
    from asgf_nav.models.doa.observation import DEFAULT_WEIGHTS
    from asgf_nav.models.doa.rooms import shoebox_pool
    from asgf_nav.sounds.bank import SoundBank

    torch.manual_seed(0)
    model = load_model(DEFAULT_WEIGHTS)
    pool = shoebox_pool(3, 3, seed=5, progress=False)
    batch = DoaExampleSampler(SoundBank.load(), pool, "test", clip_seconds=0.5).sample(6, 0.0, np.random.default_rng(0))
    with torch.no_grad():
        return model(batch.mixture, batch.prompt)["posterior"]


def test_the_packaged_head_gives_its_recorded_posteriors():
    """The packaged weights and the forward pass, against posteriors recorded from them. After replacing
    the weights on purpose, record them again (from tests/):
    python -c "import json, test_doa_network as t; p = t._packaged_head_posteriors(); t.GOLDEN_PATH.write_text(
    json.dumps({'argmax': p.argmax(1).tolist(), 'every_8th_bin': p[:, ::8].tolist()}))"
    """
    posterior = _packaged_head_posteriors()
    golden = json.loads(GOLDEN_PATH.read_text())
    assert posterior.argmax(1).tolist() == golden["argmax"]
    assert torch.allclose(posterior[:, ::8], torch.tensor(golden["every_8th_bin"]), atol=1e-4)


def test_the_mse_posterior_term_sums_over_bins_and_doa_weight_scales_it_alone() -> None:
    """AV-SSAN's equation (14): the reconstruction MSE plus the sum over the 72 bins of (p_hat - p)^2 (batch
    mean); ``doa_weight`` scales the posterior term only. A uniform posterior against a one-hot target
    scores (1 - 1/72)^2 + 71 / 72^2 = 71/72 (1/72^2 if averaged over bins instead) and log 72 in cross-entropy."""
    uniform = torch.full((2, 72), 1.0 / 72)
    target = torch.zeros(2, 72)
    target[0, 0] = target[1, 36] = 1.0
    out = {"posterior": uniform, "log_posterior": uniform.log(), "masked": torch.full((2, 3, 4), 2.0)}
    assert posterior_loss(out, target, "mse")[0].item() == pytest.approx(71 / 72)
    assert posterior_loss(out, target, "cross_entropy")[0].item() == pytest.approx(np.log(72.0))
    total, parts = doa_loss(out, torch.zeros(2, 3, 4), target, doa_weight=3.0)
    assert parts["recon"] == pytest.approx(4.0)  # (2 - 0)^2 on every bin: squared, not absolute, error
    assert parts["posterior_mse"] == pytest.approx(71 / 72)
    assert total.item() == pytest.approx(4.0 + 3.0 * 71 / 72)


def test_the_network_config_grid_keeps_its_bin_width_and_laplace_scale() -> None:
    """The training targets come from ``DoaNetConfig.grid``: a configured scale of 20 degrees gives
    neighbouring 10-degree bins the ratio exp(-10 / 20), not the default scale's exp(-10 / 5)."""
    grid = DoaNetConfig(bin_width=10.0, laplace_scale=20.0).grid
    target = grid.encode(np.array([0.0]))[0].double()
    assert grid.num_bins == 36
    assert float(target[1] / target[0]) == pytest.approx(np.exp(-0.5), rel=1e-5)


def test_a_category_prompt_steers_the_head_through_its_embedding_and_its_template() -> None:
    """prompt="category": the category's embedding steers the query (two categories, one mixture, two masks
    while the learned templates are still zero; untrained, the difference is small but far from 0), and
    the category's spectral template reaches the mask head (changing category 1's template changes
    category 1's mask and not category 0's)."""
    from dataclasses import replace

    net = SelectiveDoaNet(replace(_tiny_config(), prompt="category", num_categories=3)).eval()
    mixture = torch.randn(1, 2, SR // 4).expand(2, -1, -1)
    categories = torch.tensor([0, 1])
    with torch.no_grad():
        before = net(mixture, categories)
        net.category_template.weight[1] = torch.linspace(-2.0, 2.0, net.cfg.stft.num_bins)
        after = net(mixture, categories)
    assert (before["mask"][0] - before["mask"][1]).abs().max() > 1e-5
    assert torch.allclose(after["mask"][0], before["mask"][0])
    assert not torch.allclose(after["mask"][1], before["mask"][1], atol=1e-4)


def test_the_crnn_reads_its_own_stft_frames_averages_them_and_answers_per_clip() -> None:
    """SeldCrnn: the BiGRU runs over the frames of the configured STFT (hop 256: 1 + 4000 // 256 = 16, not the
    default hop's 11), the head reads the BiGRU output averaged over time, and each clip's posterior sums to
    1 on its own and does not depend on the rest of its batch."""
    from asgf_nav.models.doa.crnn import CrnnConfig, SeldCrnn

    torch.manual_seed(0)
    model = SeldCrnn(CrnnConfig(channels=8, rnn_size=8, stft=StftConfig(hop=256))).eval()
    seen: dict[str, torch.Tensor] = {}
    model.rnn.register_forward_hook(lambda module, args, out: seen.update(rnn_in=args[0], rnn_out=out[0]))
    model.head.register_forward_hook(lambda module, args, out: seen.update(head_in=args[0]))
    audio = torch.randn(3, 2, 4000)
    with torch.no_grad():
        out = model(audio)
        torch.testing.assert_close(seen["head_in"], seen["rnn_out"].mean(dim=1))
        assert seen["rnn_in"].shape[1] == 16
        alone = model(audio[1:2])["posterior"]
    torch.testing.assert_close(out["posterior"].sum(dim=1), torch.ones(3))
    torch.testing.assert_close(out["posterior"], out["log_posterior"].exp())
    torch.testing.assert_close(out["posterior"][1:2], alone, atol=1e-6, rtol=1e-5)


def test_the_mlp_mask_head_is_steered_by_the_audio_prompt() -> None:
    """mask_head="mlp" with an audio prompt: each row's own prompt embedding, repeated over the frames, is the
    first half of the SBF's input, so two reference clips give one mixture two different masks (untrained,
    the difference is small but far from 0)."""
    from dataclasses import replace

    torch.manual_seed(0)
    net = SelectiveDoaNet(replace(_tiny_config(), mask_head="mlp")).eval()
    seen: dict[str, torch.Tensor] = {}
    net.sbf_in.register_forward_hook(lambda module, args, out: seen.update(sbf_in=args[0]))
    mixture = torch.randn(1, 2, SR // 4).expand(2, -1, -1)
    tone = torch.sin(2 * np.pi * 500 * torch.arange(SR // 4) / SR)
    prompts = torch.stack([tone, torch.randn(SR // 4)])
    with torch.no_grad():
        mask = net(mixture, prompts)["mask"]
        embedding = net.encode_prompt(prompts)  # (2, D)
    frames, dim = seen["sbf_in"].shape[1], embedding.shape[1]
    torch.testing.assert_close(seen["sbf_in"][..., :dim], embedding[:, None].expand(-1, frames, -1))
    assert (mask[0] - mask[1]).abs().max() > 1e-6


def test_a_prompt_kind_is_audio_or_category_and_categories_need_a_vocabulary() -> None:
    """An unknown prompt kind is refused even when a category vocabulary is given, and prompt="category"
    without any category is refused when the head is built, not at its first forward pass."""
    from dataclasses import replace

    with pytest.raises(ValueError, match="unknown DoA prompt kind 'image'"):
        SelectiveDoaNet(replace(_tiny_config(), prompt="image", num_categories=3))
    with pytest.raises(ValueError, match="num_categories >= 1"):
        SelectiveDoaNet(replace(_tiny_config(), prompt="category", num_categories=0))


def test_a_fresh_template_mask_head_starts_neutral_to_the_prompt() -> None:
    """Untrained, the prompt's FiLM leaves the mask head's convolutions as they are (two prompt embeddings,
    one output) and every category's learned spectral template is flat (all zeros)."""
    from dataclasses import replace

    from asgf_nav.models.doa.network import PromptMaskHead

    torch.manual_seed(0)
    head = PromptMaskHead(prompt_dim=8)
    logit, feats, template = torch.randn(1, 5, 16), torch.randn(1, 4, 5, 16), torch.randn(1, 16)
    with torch.no_grad():
        first = head(logit, feats, template, torch.randn(1, 8))
        second = head(logit, feats, template, torch.randn(1, 8))
    assert torch.equal(first, second)
    net = SelectiveDoaNet(replace(_tiny_config(), prompt="category", num_categories=3))
    assert torch.count_nonzero(net.category_template.weight) == 0


def test_the_descriptor_prompt_ignores_gain_tells_spectra_apart_and_steers_the_head() -> None:
    """prompt="descriptor": the fixed spectral-shape summary is unit norm and gain-free, like
    classical.spectral_shape; two noises of one band share it while another band's differs; the head built
    on it trains its MLP through the loss and shares the audio prompt's spectral template."""
    from dataclasses import replace

    from asgf_nav.models.doa.network import AudioPromptEncoder, DescriptorPromptEncoder, prompt_power

    torch.manual_seed(0)
    cfg = replace(_tiny_config(), prompt="descriptor")
    encoder = DescriptorPromptEncoder(cfg.stft, cfg.model_dim)
    rng = np.random.default_rng(3)

    def band_noise(low: float, high: float) -> torch.Tensor:
        spec = np.fft.rfft(rng.standard_normal(SR // 2))
        freqs = np.fft.rfftfreq(SR // 2, 1.0 / SR)
        return torch.from_numpy(np.fft.irfft(spec * ((freqs >= low) & (freqs < high)), SR // 2)).float()

    low, other_low, high = band_noise(200, 800), band_noise(200, 800), band_noise(2000, 6000)
    shapes = encoder.descriptor(prompt_power(torch.stack([low, 7.0 * low, other_low, high]), cfg.stft))
    torch.testing.assert_close(shapes.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(shapes[1], shapes[0], atol=1e-4, rtol=0)  # gain-free (float32)
    assert float(shapes[2] @ shapes[0]) > 0.9 > float(shapes[3] @ shapes[0]) + 0.5

    # the same descriptor as classical.spectral_shape_of_power (numpy), on the same short-time power
    from asgf_nav.models.doa.classical import spectral_shape_of_power

    bins = cfg.stft.num_bins + 1
    power = torch.from_numpy(rng.gamma(0.5, size=(bins, 9)) * np.geomspace(1, 1e-3, bins)[:, None])
    reference = spectral_shape_of_power(power.numpy(), cfg.stft.sample_rate)  # with the Nyquist bin
    np.testing.assert_allclose(encoder.descriptor(power[None, :-1].float())[0].numpy(), reference, atol=1e-5)

    net = SelectiveDoaNet(cfg)
    clips = torch.stack([low, high])
    _, template = net._prompt_and_template(clips)
    torch.testing.assert_close(template, AudioPromptEncoder(cfg.stft, cfg.model_dim).embed_and_template(clips)[1])
    out = net(torch.randn(2, 2, SR // 2), clips)
    assert out["posterior"].shape == (2, cfg.grid.num_bins)
    out["posterior"][:, 0].sum().backward()
    assert net.prompt_encoder.net[0].weight.grad.abs().sum() > 0


def _category_checkpoint(path: Path, num_categories: int, state_dict: dict | None = None) -> Path:
    """A checkpoint of a 3-category head whose config claims ``num_categories`` (and optionally other weights)."""
    from dataclasses import replace

    net = SelectiveDoaNet(replace(_tiny_config(), prompt="category", num_categories=3))
    config = net.cfg.to_dict() | {"num_categories": num_categories}
    torch.save({"kind": "selective", "config": config, "state_dict": state_dict or net.state_dict()}, path)
    return path


def test_a_checkpoint_whose_config_outsizes_its_weights_is_refused_before_the_network_is_built(
    tmp_path: Path, monkeypatch
) -> None:
    """A few bytes of config chose the network's size (num_categories=2e6 built an 800 MB embedding before
    the weights were compared): the network is sized on the meta device first, and a file whose weights do not
    fit it is refused naming the first tensor, without building it for real."""
    from asgf_nav.models.doa import checkpoint

    built: list[torch.device] = []
    build = checkpoint.build_model

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        built.append(next(model.parameters()).device)
        return model

    monkeypatch.setattr(checkpoint, "build_model", recording_build)
    path = _category_checkpoint(tmp_path / "big.pt", 2_000_000)
    message = r"size mismatch for prompt_encoder\.weight: the file holds shape \(3, \d+\), the network's is \(2000000, "
    with pytest.raises(checkpoint.DoaCheckpointError, match=r"big\.pt is not a valid DoA model: " + message):
        checkpoint.load_model(path)
    assert built == [torch.device("meta")]
    ok = _category_checkpoint(tmp_path / "ok.pt", 3)
    assert checkpoint.load_model(ok).cfg.num_categories == 3
    assert built[1:] == [torch.device("meta"), torch.device("cpu")]


@pytest.mark.parametrize("prompt", ["audio", "category", "descriptor"])
@pytest.mark.parametrize("mask_head", ["template", "mlp"])
def test_a_saved_head_of_every_prompt_and_mask_head_loads_back(tmp_path: Path, prompt: str, mask_head: str) -> None:
    """Sized on the meta device first, every kind of head must still build there: the descriptor prompt's band
    table, made from a CPU tensor, stopped descriptor heads from loading at all."""
    from dataclasses import replace

    from asgf_nav.models.doa.checkpoint import load_model

    net = SelectiveDoaNet(replace(_tiny_config(), prompt=prompt, num_categories=3, mask_head=mask_head))
    torch.save({"kind": "selective", "config": net.cfg.to_dict(), "state_dict": net.state_dict()}, tmp_path / "h.pt")
    loaded = load_model(tmp_path / "h.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    if prompt == "descriptor":
        assert torch.equal(loaded.prompt_encoder.member, net.prompt_encoder.member)


def test_weights_expanded_from_a_few_bytes_are_refused(tmp_path: Path) -> None:
    """A tensor saved as a stride-0 view of a few bytes has the network's shape but not its data; loading it
    would still allocate the whole network, so it is refused by name."""
    from asgf_nav.models.doa.checkpoint import DoaCheckpointError, load_model

    weights = dict(torch.load(_category_checkpoint(tmp_path / "small.pt", 3), weights_only=True)["state_dict"])
    width = weights["prompt_encoder.weight"].shape[1]
    weights["prompt_encoder.weight"] = torch.zeros(width).expand(100_000, width)
    if "category_template.weight" in weights:
        weights["category_template.weight"] = torch.zeros(1).expand(
            100_000, weights["category_template.weight"].shape[1]
        )
    path = _category_checkpoint(tmp_path / "expanded.pt", 100_000, weights)
    with pytest.raises(DoaCheckpointError, match=r"expanded\.pt is not one of this project's: it holds a tensor of "
                       r"shape \(100000, \d+\) \(\d+ bytes\) in 4 bytes of data"):  # fmt: skip
        load_model(path)
