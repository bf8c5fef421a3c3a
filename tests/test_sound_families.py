"""Generated sound categories for DoA training: reproducible, instances alike within a category, and drawn
only into training at the share asked for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from asgf_nav.models.doa.data import DoaExampleSampler
from asgf_nav.sounds.bank import SoundBank
from asgf_nav.sounds.families import FAMILIES, GeneratedBank, make_categories, render_instance

RATE = 16000


def _spectral_shape(x: np.ndarray) -> np.ndarray:
    """Mean log power per frequency bin, level removed: what a listener calls the sound's colour."""
    _, _, spec = signal.stft(x, RATE, nperseg=512)
    shape = np.log(np.abs(spec) ** 2 + 1e-8).mean(axis=1)
    return shape - shape.mean()


def test_categories_are_reproducible_cover_every_family_and_reject_a_negative_count() -> None:
    first, again, other = make_categories(40, seed=3), make_categories(40, seed=3), make_categories(40, seed=4)
    assert [(c.family, c.params) for c in first] == [(c.family, c.params) for c in again]
    assert [c.params for c in first] != [c.params for c in other]
    assert set(Counter(c.family for c in first)) == set(FAMILIES)
    assert len({c.name for c in first}) == 40
    with pytest.raises(ValueError, match="generated categories"):
        make_categories(-1, seed=0)


def test_an_instance_is_a_second_of_finite_audio_at_unit_rms_and_the_same_for_its_seed() -> None:
    for category in make_categories(12, seed=1):
        audio = render_instance(category, 5, RATE)
        assert audio.shape == (RATE,) and audio.dtype == np.float32 and np.isfinite(audio).all()
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
        assert np.array_equal(audio, render_instance(category, 5, RATE))
        assert not np.allclose(audio, render_instance(category, 6, RATE))


def test_two_instances_of_a_category_sound_more_alike_than_instances_of_two_categories() -> None:
    """The property the prompt encoder is meant to learn from them: instances vary, categories vary more."""
    categories = make_categories(60, seed=2)
    shapes = [
        [_spectral_shape(render_instance(c, 10 * i + k, RATE)) for k in range(2)] for i, c in enumerate(categories)
    ]
    within = [np.linalg.norm(a - b) for a, b in shapes]
    between = [np.linalg.norm(shapes[i][0] - shapes[i + 1][1]) for i in range(len(shapes) - 1)]
    assert np.median(within) < 0.5 * np.median(between)
    assert min(within) > 0  # instances are not copies
    # each instance's nearest other instance, by spectral shape, is of its own category far above chance (1/60)
    first, second = np.array([s[0] for s in shapes]), np.array([s[1] for s in shapes])
    nearest = ((first[:, None] - second[None]) ** 2).sum(axis=-1).argmin(axis=1)
    assert (nearest == np.arange(len(shapes))).mean() > 0.25


def test_the_generated_bank_adds_to_training_only_and_names_a_wrong_rate(bank: SoundBank) -> None:
    generated = GeneratedBank(bank, categories=5, instances=3, seed=0, sample_rate=RATE)
    assert len(generated.generated) == 15
    assert generated.names("train") == bank.names("train") + sorted(generated.generated)
    for split in ("heard", "val", "test"):
        assert generated.names(split) == bank.names(split)
    name = sorted(generated.generated)[0]
    other = generated.other_instance(name, np.random.default_rng(0), among="train")
    assert other in generated.generated and other != name and generated.category(other) == generated.category(name)
    assert generated.waveform(name, RATE).shape == (RATE,)
    assert np.array_equal(generated.waveform(bank.names("test")[0], RATE), bank.waveform(bank.names("test")[0], RATE))
    with pytest.raises(ValueError, match=f"{name}.*16000 Hz only"):
        generated.waveform(name, 44100)
    generated.check_files(generated.names("train"))  # generated sounds have no file to check
    with pytest.raises(ValueError, match="2 to 100 instances"):
        GeneratedBank(bank, categories=2, instances=1, seed=0, sample_rate=RATE)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_a_sampler_draws_generated_targets_and_distractors_at_the_share_asked_for(sampler_parts, share) -> None:
    bank, pool = sampler_parts
    generated = GeneratedBank(bank, categories=20, instances=2, seed=0, sample_rate=pool.sample_rate)
    sampler = DoaExampleSampler(
        generated, pool, "train", clip_seconds=0.1, generated=frozenset(generated.generated), generated_share=share
    )
    rng = np.random.default_rng(1)
    draws = [sampler._draw(0.0, rng) for _ in range(600)]
    targets = np.mean([d.target in generated.generated for d in draws])
    distractors = np.mean([d.distractor in generated.generated for d in draws])
    assert targets == pytest.approx(share, abs=0.06) and distractors == pytest.approx(share, abs=0.06)
    for d in draws:  # prompts stay another instance of the target's own category
        assert generated.category(d.prompt) == generated.category(d.target) != generated.category(d.distractor)
        assert generated.instance(d.prompt) != generated.instance(d.target)
    batch = sampler.sample(4, 0.0, np.random.default_rng(2))
    assert np.isfinite(batch.mixture.numpy()).all() and batch.prompt.shape == (4, int(0.1 * pool.sample_rate))


def test_without_generated_sounds_a_draw_picks_its_sounds_as_plain_list_draws_did(sampler_parts) -> None:
    """The benchmark's clips were drawn this way: a target among the targets, a distractor among the split's
    sounds of other categories, a prompt among the other instances, each by one integer draw in list order."""
    bank, pool = sampler_parts
    for split in ("train", "test"):
        sampler = DoaExampleSampler(bank, pool, split, clip_seconds=0.1)
        for seed in range(150):
            draw = sampler._draw(0.0, np.random.default_rng(seed))
            rng = np.random.default_rng(seed)
            target = sampler.targets[int(rng.integers(len(sampler.targets)))]
            others = [n for n in bank.names(split) if bank.category(n) != bank.category(target)]
            distractor = others[int(rng.integers(len(others)))]
            prompts = [
                n
                for n in bank.names("train")
                if bank.category(n) == bank.category(target) and bank.instance(n) != bank.instance(target)
            ]
            assert (draw.target, draw.distractor, draw.prompt) == (
                target,
                distractor,
                prompts[int(rng.integers(len(prompts)))],
            )


def test_a_sampler_refuses_generated_sounds_outside_its_split_and_a_share_outside_0_1(sampler_parts) -> None:
    bank, pool = sampler_parts
    generated = GeneratedBank(bank, categories=3, instances=2, seed=0, sample_rate=pool.sample_rate)
    names = frozenset(generated.generated)
    with pytest.raises(ValueError, match="not in split 'val'"):
        DoaExampleSampler(generated, pool, "val", clip_seconds=0.1, generated=names)
    with pytest.raises(ValueError, match="generated_share must be in"):
        DoaExampleSampler(generated, pool, "train", clip_seconds=0.1, generated=names, generated_share=1.5)


def test_training_with_generated_categories_keeps_the_models_categories_and_needs_the_audio_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asgf_nav.models.doa import train as doa_train
    from asgf_nav.models.doa.checkpoint import load_model
    from asgf_nav.models.doa.config import DoaTrainConfig

    samplers: list[DoaExampleSampler] = []

    class Recording(DoaExampleSampler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            samplers.append(self)

    monkeypatch.setattr(doa_train, "DoaExampleSampler", Recording)
    cfg = DoaTrainConfig(
        model="selective", out=str(tmp_path / "sel.pt"), pool_dir=str(tmp_path / "pools"), train_poses=4,
        val_poses=2, sources_per_pose=2, batch_size=2, clip_seconds=0.25, val_examples=4, val_every=1000,
        checkpoint_every=1000, threads=1, max_steps=1, patch_dim=8, model_dim=8,
        generated_categories=6, generated_instances=2, generated_share=0.3,
    )  # fmt: skip
    doa_train.train(cfg, progress=False)
    train_sampler, val_sampler = samplers
    assert len(train_sampler.generated) == 12 and set(train_sampler.generated) <= set(train_sampler.sounds)
    assert train_sampler.generated_share == 0.3
    assert not val_sampler.generated and not set(val_sampler.sounds) & set(train_sampler.generated)
    assert load_model(cfg.out).cfg.categories == SoundBank.load().categories()
    for change, message in (
        ({"prompt": "category"}, r"needs a prompt clip \(audio or descriptor\)"),
        ({"generated_share": 1.2}, "generated_share in"),
        ({"generated_instances": 1}, "generated_instances must be in 2..100, got 1"),
    ):
        samplers.clear()
        with pytest.raises(ValueError, match=message):  # refused before any pool or sampler is made
            doa_train.train(DoaTrainConfig(**(vars(cfg) | change | {"out": str(tmp_path / "x.pt")})), progress=False)
        assert samplers == []
