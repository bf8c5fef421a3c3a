"""Classical DoA baselines and the DoA benchmark's evaluation and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from doa_helpers import SR, _source_at, _tiny_config, tiny_head_checkpoint

from asgf_nav.acoustics.hrtf import load_hrtf
from asgf_nav.eval.doa_eval import EvalConfig
from asgf_nav.models.doa.checkpoint import save_checkpoint
from asgf_nav.models.doa.classical import (
    ArrayDoa,
    HrirWaveformMatch,
    HrtfTemplateDoa,
    gcc_phat,
    hann_stft,
    lateral_fold,
    spectral_shape,
    spectral_shape_of_power,
)
from asgf_nav.models.doa.config import DoaTrainConfig
from asgf_nav.models.doa.data import DoaBatch
from asgf_nav.models.doa.features import circular_distance
from asgf_nav.models.doa.network import SelectiveDoaNet
from asgf_nav.models.doa.rooms import RirPool, render_shoebox_rir


def test_two_microphone_methods_find_the_lateral_angle():
    rng = np.random.default_rng(4)
    room, receiver = np.array([7.0, 3.0, 7.0]), np.array([3.5, 1.5, 3.5])
    noise = rng.standard_normal(SR // 2)
    srp = ArrayDoa("SRP", SR)
    for az in (0.0, 25.0, 155.0, 335.0):  # beyond ~50 degrees the head's wider ITD saturates the pair model
        rir = render_shoebox_rir(room, receiver, _source_at(receiver, az, 0.0), 0.0, 0.5, 10.0, 0.3, SR, 4000, rng)
        audio = np.stack([np.convolve(noise, rir[:, c])[: SR // 2] for c in range(2)])
        truth = lateral_fold(az)
        # a real head delays the far ear more than a 0.18 m free-field pair, which overstates lateral angles
        assert circular_distance(gcc_phat(audio, SR), truth) < 25
        assert circular_distance(srp(audio), truth) < 25
    assert lateral_fold(np.array([150.0, 210.0, 30.0])).tolist() == pytest.approx([30.0, 330.0, 30.0])


def test_hrtf_template_matching_localises_over_the_full_circle():
    rng = np.random.default_rng(2)
    room, receiver = np.array([8.0, 3.0, 8.0]), np.array([4.0, 1.5, 4.0])
    noise = rng.standard_normal(SR // 2)
    template = HrtfTemplateDoa(SR)
    for az in (0.0, 40.0, 135.0, 200.0, 290.0):  # front and back: the head's templates tell them apart
        rir = render_shoebox_rir(
            room, receiver, _source_at(receiver, az, 0.0), 0.0, 0.0, 300.0, 0.3, SR, 2000, rng
        )  # anechoic: the direct path only
        audio = np.stack([np.convolve(noise, rir[:, c])[: SR // 2] for c in range(2)])
        assert circular_distance(template(audio), az) <= 5, az


def _kemar_hrir(az: float) -> np.ndarray:
    """(2, taps) KEMAR HRIR pair nearest to ``az`` on the horizontal plane."""
    hrtf = load_hrtf(SR)
    return hrtf.hrir[hrtf.nearest(np.array([az]), np.array([0.0]))[0]].astype(np.float64)


def test_onset_weighted_templates_follow_the_first_arrival_not_a_louder_reflection():
    taps = load_hrtf(SR).num_taps
    rng = np.random.default_rng(0)
    n = SR // 2
    source = np.zeros(n)
    for start in range(400, n - 2000, 1600):  # 40 ms noise bursts every 100 ms: one onset each
        source[start : start + 640] = rng.standard_normal(640)
    time_averaged, precedence = HrtfTemplateDoa(SR), HrtfTemplateDoa.precedence(SR)
    for direct, reflected in [(30.0, 100.0), (200.0, 300.0), (120.0, 20.0), (330.0, 250.0)]:
        ears = np.zeros((2, 2 * n))
        for c in range(2):  # the direct sound, then 4 ms later a reflection 6 dB louder from elsewhere
            ears[c, : n + taps - 1] += np.convolve(source, _kemar_hrir(direct)[c])
            ears[c, 64 : 64 + n + taps - 1] += 2.0 * np.convolve(source, _kemar_hrir(reflected)[c])
        ears = ears[:, :n]
        assert circular_distance(precedence(ears), direct) <= 5
        assert circular_distance(time_averaged(ears), reflected) <= 5  # the average follows the energy
    with pytest.raises(ValueError, match="onset_power"):
        HrtfTemplateDoa(SR, onset_power=-1.0)


def test_hrir_waveform_match_reads_one_wavefront_and_is_fooled_by_a_close_second_one():
    match = HrirWaveformMatch(SR)
    taps = load_hrtf(SR).num_taps
    for az in (30.0, 150.0, 210.0, 330.0, 90.0, 275.0):  # front/back mirror pairs included
        window = np.zeros((2, taps + 24))
        window[:, 7 : 7 + taps] = 0.3 * _kemar_hrir(az)  # any delay and gain
        assert match(window) == az
    # a second, equally strong wavefront from 40 degrees away arriving 0.25 ms later pulls the reading off
    window = np.zeros((2, taps + 24))
    window[:, 7 : 7 + taps] += _kemar_hrir(30.0)
    window[:, 11 : 11 + taps] += _kemar_hrir(70.0)
    assert match(window) != 30.0


def _band_noise(rng: np.random.Generator, low: float, high: float, n: int = SR // 2) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SR)
    return np.fft.irfft(spec * ((freqs >= low) & (freqs < high)), n)


def test_spectral_shape_ignores_gain_and_tells_spectra_apart():
    rng = np.random.default_rng(5)
    low, other_low, high = _band_noise(rng, 200, 800), _band_noise(rng, 200, 800), _band_noise(rng, 2000, 6000)
    shape = spectral_shape(low, SR)
    assert np.linalg.norm(shape) == pytest.approx(1.0)
    assert spectral_shape(7.0 * low, SR) == pytest.approx(shape, abs=1e-6)
    assert spectral_shape(np.stack([low, low]), SR) == pytest.approx(shape, abs=1e-6)  # channels summed
    assert spectral_shape(other_low, SR) @ shape > 0.9 > spectral_shape(high, SR) @ shape + 0.5


def test_spectral_shape_of_a_share_of_the_bins():
    rng = np.random.default_rng(6)
    low, high = _band_noise(rng, 200, 800), _band_noise(rng, 2000, 6000)
    power = np.abs(hann_stft(np.stack([low, low]), 512, 256)) ** 2  # (2, F, T)
    assert spectral_shape_of_power(power.sum(axis=0), SR) == pytest.approx(spectral_shape(np.stack([low, low]), SR))
    # the bins a mask keeps carry their own shape: the low band's half of a mixture looks like the low band
    mix = np.abs(hann_stft((low + high)[None], 512, 256)[0]) ** 2
    freqs = np.fft.rfftfreq(512, 1.0 / SR)
    below = (freqs < 1500)[:, None].astype(float)
    kept = spectral_shape_of_power(mix * below + 1e-12, SR)
    assert kept @ spectral_shape(low, SR) > 0.8 > kept @ spectral_shape(high, SR) + 0.5


def test_prompt_choice_reference_counts_the_source_the_prompt_resembles():
    from asgf_nav.eval.doa_eval import prompt_choice_reference

    rng = np.random.default_rng(6)
    low = [_band_noise(rng, 200, 800) for _ in range(3)]
    high = [_band_noise(rng, 2000, 6000) for _ in range(3)]
    # clip 0: low target, low prompt; clip 1: high target, high prompt; clip 2: low target, high prompt
    targets = [low[0], high[0], low[1]]
    distractors = [high[1], low[2], high[2]]
    prompts = [_band_noise(rng, 200, 800), _band_noise(rng, 2000, 6000), _band_noise(rng, 2000, 6000)]
    target = torch.tensor(np.stack([np.stack([t, 0.5 * t]) for t in targets]), dtype=torch.float32)
    distractor = torch.tensor(np.stack([np.stack([d, d]) for d in distractors]), dtype=torch.float32)
    batch = DoaBatch(
        mixture=target + distractor,
        target=target,
        prompt=torch.tensor(np.stack(prompts), dtype=torch.float32),
        category=torch.zeros(3, dtype=torch.long),
        azimuth=torch.zeros(3),
        distractor_azimuth=torch.zeros(3),
        line_of_sight=torch.ones(3, dtype=torch.bool),
    )
    assert prompt_choice_reference(batch, SR) == pytest.approx(200 / 3)
    assert prompt_choice_reference(batch.slice(0, 2), SR) == 100.0
    assert prompt_choice_reference(batch.slice(2, 3), SR) == 0.0


def _small_eval_config(ckpt: Path, tmp_path: Path, **fields) -> EvalConfig:
    """A benchmark run small enough for a test (one SNR, 0.25 s clips, RIR pools in ``tmp_path``)."""
    base = dict(
        selective=str(ckpt), pool_dir=str(tmp_path), snrs=(0.0,), gmm_train_examples=40, train_poses=3,
        out=str(tmp_path / "eval.json"), threads=1, clip_seconds=0.25,
    )  # fmt: skip
    return EvalConfig(**{**base, **fields})


def test_benchmark_runs_end_to_end_on_tiny_pools(tmp_path, caplog):
    import json
    import logging

    from asgf_nav.eval.doa_eval import evaluate, markdown_table

    ckpt = tmp_path / "selective.pt"
    save_checkpoint(
        ckpt, "selective", SelectiveDoaNet(_tiny_config()), None, 0, DoaTrainConfig(rooms="shoebox_pair"), {}
    )
    cfg = _small_eval_config(
        ckpt, tmp_path, crnn=str(tmp_path / "missing.pt"), test_poses=3, examples=6, distractor_window="loudest"
    )
    before, caller_threads = torch.get_num_threads(), 2  # not the run's threads=1
    torch.set_num_threads(caller_threads)
    with caplog.at_level(logging.WARNING):
        results = evaluate(cfg)
    assert torch.get_num_threads() == caller_threads  # the benchmark's --threads was its own
    torch.set_num_threads(before)
    assert "trained on rooms=shoebox_pair but is tested on rooms=shoebox" in caplog.text
    assert "CRNN (audio only) is left out" in caplog.text
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["distractor_window"] == "loudest" and saved["rooms"] == "shoebox" and saved["clip_seconds"] == 0.25
    assert saved["test_rooms_drr_db"]["q10"] <= saved["test_rooms_drr_db"]["median"]
    assert saved["direct_sound_reference"]["responses"] == 3 * 6  # every shoebox source is in sight
    methods = results["methods"]
    assert "HRTF template matching (KEMAR)" in methods and "selective (audio prompt)" in methods
    assert "HRTF templates, onset-weighted (precedence)" in methods
    assert "selective (audio prompt) x onset templates" in methods
    for per_condition in methods.values():
        assert set(per_condition) == {"unheard +0 dB", "heard +0 dB"}
        for m in per_condition.values():
            assert m["acc5"] <= m["acc20"] and m["acc5"] <= m["either5"] <= 100
            assert m["hit_distractor5"] <= m["hit_distractor20"]
    assert set(saved["prompt_choice_reference"]) == {"unheard +0 dB", "heard +0 dB"}
    assert all(0 <= v <= 100 for v in saved["prompt_choice_reference"].values())
    table = markdown_table(results)
    assert "[" in table and "HRTF templates on the direct sound alone (18 line-of-sight" in table
    assert "Whole HRIR waveforms matched to their first 2 ms: " in table
    assert "Prompt's spectral shape closer to the separated target's" in table
    assert all(len(per["unheard +0 dB"]) == 6 for per in saved["per_clip_error"].values())
    assert "ACC5 lead of " in table and ", paired over the same clips" in table


def test_benchmark_table_has_a_line_of_sight_section():
    from asgf_nav.eval.doa_eval import markdown_table

    m = {
        "mae": 10.0,
        "acc5": 50.0,
        "acc20": 80.0,
        "mae_lateral": 5.0,
        "line_of_sight_share": 75.0,
        "line_of_sight": {"mae": 8.0, "acc5": 60.0, "acc20": 90.0},
    }
    table = markdown_table({"methods": {"a": {"unheard +0 dB": m}, "b": {"unheard +0 dB": m}}})
    assert "| a | 10.0 / 50.0 / 80.0 (5.0) |" in table
    assert "(unheard +0 dB: 75 % of the clips)" in table and "| b | 8.0 / 60.0 / 90.0 |" in table
    without = {k: v for k, v in m.items() if not k.startswith("line_of_sight")}
    assert "Line-of-sight" not in markdown_table({"methods": {"a": {"unheard +0 dB": without}}})
    all_in_sight = {**m, "line_of_sight_share": 100.0}
    assert "Line-of-sight" not in markdown_table({"methods": {"a": {"unheard +0 dB": all_in_sight}}})
    selection = {**without, "hit_distractor5": 30.0, "either5": 85.0}
    assert "| a | 10.0 / 50.0 / 80.0 (5.0) [30.0 / 85.0] |" in markdown_table({"methods": {"a": {"c": selection}}})


def test_benchmark_clips_use_the_test_sounds_for_unheard_and_the_training_sounds_for_heard(sampler_parts, monkeypatch):
    from asgf_nav.eval import doa_eval

    bank, pool = sampler_parts
    splits = {}

    class Recording(doa_eval.DoaExampleSampler):
        def __init__(self, bank, pool, sound_split, **kw):
            super().__init__(bank, pool, sound_split, **kw)
            splits[len(splits)] = sound_split

    monkeypatch.setattr(doa_eval, "DoaExampleSampler", Recording)
    cfg = doa_eval.EvalConfig(examples=2, snrs=(0.0, -5.0), clip_seconds=0.1)
    sets, _ = doa_eval.test_sets(cfg, bank, pool)
    assert list(sets) == [("unheard", 0.0), ("unheard", -5.0), ("heard", 0.0)]
    assert list(splits.values()) == ["test", "train"]  # one sampler per split (its notes logged once)
    for (split, snr), batch in sets.items():  # each condition: its split's sounds, its own seeded stream
        sampler = doa_eval.DoaExampleSampler(bank, pool, {"unheard": "test", "heard": "train"}[split],
                                             clip_seconds=cfg.clip_seconds, categories=bank.categories(),
                                             distractor_window=cfg.distractor_window)  # fmt: skip
        expected = sampler.sample(cfg.examples, snr, np.random.default_rng(doa_eval.condition_seed(split, snr)))
        assert torch.equal(batch.mixture, expected.mixture), (split, snr)


def test_a_condition_draws_the_same_clips_whatever_other_snrs_are_asked_for(sampler_parts):
    from asgf_nav.eval import doa_eval

    bank, pool = sampler_parts
    full, _ = doa_eval.test_sets(doa_eval.EvalConfig(examples=3, clip_seconds=0.1), bank, pool)
    alone, _ = doa_eval.test_sets(doa_eval.EvalConfig(examples=3, snrs=(-5.0, -2.5), clip_seconds=0.1), bank, pool)
    for condition in (("unheard", -5.0), ("heard", 0.0)):
        assert torch.equal(alone[condition].mixture, full[condition].mixture), condition
    seeds = [str(doa_eval.condition_seed(s, snr)) for s, snr in [*full, ("unheard", -2.5), ("unheard", 5.0)]]
    assert len(set(seeds)) == len(seeds)  # every condition its own clips
    assert doa_eval.condition_seed("unheard", 0.0) == doa_eval.TEST_SET_SEED  # the published tables' clips


def test_benchmark_metrics_from_known_predictions(tmp_path, monkeypatch):
    from asgf_nav.eval import doa_eval
    from asgf_nav.io import file_identity
    from asgf_nav.models.doa.features import circular_distance, lateral_fold
    from asgf_nav.models.doa.rooms import shoebox_pool
    from asgf_nav.models.doa.train import angular_metrics

    ckpt = tmp_path / "selective.pt"
    tiny_head_checkpoint(ckpt)
    pool = shoebox_pool(3, 4, seed=2, progress=False)
    pool.line_of_sight = np.array([[True, False, True, True], [False, True, True, False], [True, True, False, True]])
    monkeypatch.setattr(doa_eval, "test_pool", lambda cfg: pool)
    # the "selective" method answers 10 degrees beside the distractor
    monkeypatch.setattr(doa_eval, "predict", lambda model, b: (b.distractor_azimuth.numpy() + 10.0) % 360.0)
    cfg = _small_eval_config(ckpt, tmp_path, crnn="none", examples=12)
    results = doa_eval.evaluate(cfg)
    sets, _ = doa_eval.test_sets(cfg, doa_eval.SoundBank.load(), pool)
    for (split, snr), batch in sets.items():
        m = results["methods"]["selective (audio prompt)"][f"{split} {snr:+.0f} dB"]
        truth, pred = batch.azimuth.numpy(), (batch.distractor_azimuth.numpy() + 10.0) % 360.0
        assert m["hit_distractor20"] == 100.0 and m["hit_distractor5"] == 0.0
        assert m["mae_lateral"] == pytest.approx(circular_distance(lateral_fold(pred), lateral_fold(truth)).mean())
        los = batch.line_of_sight.numpy()
        assert 0 < los.sum() < len(los)
        assert m["line_of_sight"] == pytest.approx(angular_metrics(pred[los], truth[los]))
        assert m["line_of_sight_share"] == pytest.approx(100 * los.mean())
    drr = pool.direct_to_reverberant_db()[pool.line_of_sight]  # the test rooms' DRR: line-of-sight pairs only
    expected = {"median": np.median(drr), "q10": np.percentile(drr, 10), "q90": np.percentile(drr, 90)}
    assert results["test_rooms_drr_db"] == pytest.approx(expected)
    # enough to re-run it: every setting and the head's file by content
    assert results["config"]["examples"] == 12 and results["config"]["selective"] == str(ckpt)
    assert results["heads"] == {"selective": file_identity(ckpt)} and results["command"].startswith("python ")


def test_benchmark_records_the_pools_renderers_and_warns_when_a_head_learned_another(tmp_path, monkeypatch, caplog):
    """The JSON records what the test pools and each head's training pools were rendered from; a head whose
    training pools were rendered by another version of the same renderer is named in a warning, one rendered
    alike is not (training and test pools hold other rooms by design: their sources always differ)."""
    import json
    import logging

    from asgf_nav.eval import doa_eval
    from asgf_nav.models.doa import pools
    from asgf_nav.models.doa.crnn import CrnnConfig, SeldCrnn
    from asgf_nav.models.doa.rooms import shoebox_pool

    version = pools.SHOEBOX_POOL_VERSION
    old, current = tmp_path / "old.pt", tmp_path / "current.pt"
    # the shoebox sources name their renderer's version (checkpoints record it apart too: a scenes source does not)
    save_checkpoint(old, "selective", SelectiveDoaNet(_tiny_config()), None, 0, DoaTrainConfig(), {},
                    pool_sources={"shoebox": f"shoebox:{version - 1}"})  # fmt: skip
    save_checkpoint(current, "crnn", SeldCrnn(CrnnConfig()), None, 0, DoaTrainConfig(), {},
                    pool_sources={"shoebox": f"shoebox:{version}"})  # fmt: skip
    monkeypatch.setattr(doa_eval, "test_pool", lambda cfg: shoebox_pool(2, 3, seed=2, progress=False))
    monkeypatch.setattr(doa_eval, "fit_gmm", lambda bank, cfg: type("G", (), {"predict": lambda self, x: x[:, 0]})())
    monkeypatch.setattr(doa_eval, "predict", lambda model, b: b.azimuth.numpy())
    cfg = _small_eval_config(old, tmp_path, crnn=str(current), examples=2)
    with caplog.at_level(logging.WARNING):
        doa_eval.evaluate(cfg)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["test_pools"] == {"shoebox": {"source": f"shoebox:{version}", "shoebox_pool_version": version}}
    assert saved["head_training_pools"] == {
        "selective": {"shoebox": {"source": f"shoebox:{version - 1}", "shoebox_pool_version": version - 1}},
        "crnn": {"shoebox": {"source": f"shoebox:{version}", "shoebox_pool_version": version}},
    }
    renderer_warnings = [r.getMessage() for r in caplog.records if "pools rendered at" in r.getMessage()]
    assert renderer_warnings == [
        f"{old} was trained on shoebox pools rendered at SHOEBOX_POOL_VERSION {version - 1}, but the test pools are "
        f"rendered at SHOEBOX_POOL_VERSION {version}: it is measured on responses rendered otherwise than those it "
        f"learned; train it again, or fine-tune it with scripts/pretrain_doa.py --init-from {old}"
    ]
    unrecorded = tmp_path / "unrecorded.pt"  # a head written before heads recorded their pools
    save_checkpoint(unrecorded, "selective", SelectiveDoaNet(_tiny_config()), None, 0, DoaTrainConfig(), {})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        doa_eval.evaluate(_small_eval_config(unrecorded, tmp_path, crnn=str(current), examples=2))
    assert any(f"{unrecorded} records no training pools" in r.getMessage() for r in caplog.records)


def test_the_gmm_baseline_is_fitted_on_the_training_rooms(monkeypatch):
    from asgf_nav.eval import doa_eval
    from asgf_nav.models.doa.rooms import shoebox_pool

    splits = []
    monkeypatch.setattr(
        doa_eval,
        "rir_pool",
        lambda cfg, split, n, seed: splits.append(split) or shoebox_pool(2, 3, seed=1, progress=False),
    )
    doa_eval.fit_gmm(doa_eval.SoundBank.load(), doa_eval.EvalConfig(gmm_train_examples=40, train_poses=2))
    assert splits == ["train"]


def test_spectral_shape_tells_a_steady_sound_from_the_same_sound_in_bursts() -> None:
    """Same average spectrum, other level spread over frames: the descriptor's spread half tells them apart."""
    rng = np.random.default_rng(7)
    steady = rng.standard_normal(SR // 2)
    bursts = rng.standard_normal(SR // 2) * ((np.arange(SR // 2) // 1600) % 2 == 0)  # 100 ms on, 100 ms off
    assert spectral_shape(rng.standard_normal(SR // 2), SR) @ spectral_shape(steady, SR) > 0.95
    assert spectral_shape(bursts, SR) @ spectral_shape(steady, SR) < 0.6


def test_gmm_regression_is_a_weighted_mixture_of_linear_regressions() -> None:
    """E[(cos, sin) | x]: exact for a linear map, and the components' weights gate clusters x cannot tell apart."""
    from asgf_nav.models.doa.classical import GmmRegression

    rng = np.random.default_rng(0)
    azimuth = rng.uniform(0, 360, 400)
    a = np.deg2rad(azimuth)
    features = np.stack([10 * np.cos(a), 10 * np.sin(a), rng.normal(0, 0.01, 400)], axis=1)
    linear = GmmRegression(components=1, dims=2).fit(features, azimuth)
    test = np.deg2rad(np.array([10.0, 100.0, 190.0, 300.0]))
    held_out = np.stack([10 * np.cos(test), 10 * np.sin(test), np.zeros(4)], axis=1)
    assert linear.predict(held_out) == pytest.approx([10.0, 100.0, 190.0, 300.0], abs=0.01)
    # the same features labelled 0 degrees nine times as often as 90: E[y] = (0.9, 0.1) whatever x is
    x = rng.normal(0, 0.05, (50, 3))
    mixed = GmmRegression(components=2, dims=2).fit(
        np.concatenate([np.tile(x, (9, 1)), x]), np.repeat([0.0, 90.0], [450, 50])
    )
    expected = np.rad2deg(np.arctan2(0.1, 0.9))  # 6.34 degrees
    assert mixed.predict(rng.normal(0, 0.05, (4, 3))) == pytest.approx([expected] * 4, abs=0.01)


def test_the_direct_sound_reference_reads_the_line_of_sight_responses_in_their_windows(monkeypatch) -> None:
    """Only responses in line of sight count; whole waveforms are matched on 3.5 ms and on 2 ms windows."""
    from asgf_nav.eval import doa_eval
    from asgf_nav.models.doa.rooms import shoebox_pool

    pool = shoebox_pool(2, 3, seed=2, progress=False)
    pool.line_of_sight = np.array([[True, False, True], [False, False, True]])
    widths = []

    class Recording(doa_eval.HrirWaveformMatch):
        def __call__(self, window: np.ndarray) -> float:
            widths.append(window.shape[-1])
            return super().__call__(window)

    monkeypatch.setattr(doa_eval, "HrirWaveformMatch", Recording)
    reference = doa_eval.direct_sound_reference(pool, HrtfTemplateDoa(SR))
    assert reference["responses"] == 3
    assert widths == [56] * 3 + [32] * 3  # at 16 kHz: 1 ms before the onset to 2.5 ms after, then 1 ms after


def test_each_head_is_benchmarked_with_its_own_checkpoint_and_the_pair_gets_no_head_templates(
    tmp_path: Path, monkeypatch
) -> None:
    """The selective head and the CRNN each answer with their own model; a microphone pair has no HRTF."""
    from asgf_nav.eval import doa_eval
    from asgf_nav.models.doa.crnn import CrnnConfig, SeldCrnn
    from asgf_nav.models.doa.rooms import shoebox_pool

    pair = DoaTrainConfig(rooms="shoebox_pair")
    tiny_head_checkpoint(tmp_path / "selective.pt", pair)
    save_checkpoint(tmp_path / "crnn.pt", "crnn", SeldCrnn(CrnnConfig(channels=8, rnn_size=8)), None, 0, pair, {})
    pool = shoebox_pool(3, 4, seed=2, progress=False, receiver="pair")
    monkeypatch.setattr(doa_eval, "test_pool", lambda cfg: pool)
    # the selective head answers the target, the CRNN 90 degrees beside it
    monkeypatch.setattr(
        doa_eval,
        "predict",
        lambda model, b: (b.azimuth.numpy() + (0.0 if isinstance(model, SelectiveDoaNet) else 90.0)) % 360.0,
    )
    cfg = _small_eval_config(
        tmp_path / "selective.pt", tmp_path, crnn=str(tmp_path / "crnn.pt"), rooms="shoebox_pair", examples=6
    )
    results = doa_eval.evaluate(cfg)
    methods = results["methods"]
    assert methods["selective (audio prompt)"]["unheard +0 dB"]["acc5"] == 100.0
    assert methods["CRNN (audio only)"]["unheard +0 dB"]["acc5"] == 0.0
    assert methods["CRNN (audio only)"]["unheard +0 dB"]["mae"] == pytest.approx(90.0)
    assert not any("HRTF" in name or "templates" in name for name in methods)
    assert "direct_sound_reference" not in results


def test_interaural_summary_of_a_louder_left_ear() -> None:
    """cos/sin of the IPD and the ILD (dB / 10, clipped at 30 dB) per band: left twice as loud, in phase."""
    from asgf_nav.models.doa.classical import interaural_summary

    noise = np.random.default_rng(3).standard_normal(SR // 4)
    features = interaural_summary(np.stack([2.0 * noise, noise]))
    assert features.shape == (96,)
    assert features[:32] == pytest.approx(np.ones(32)) and features[32:64] == pytest.approx(np.zeros(32), abs=1e-9)
    assert features[64:] == pytest.approx(np.full(32, 20 * np.log10(2.0) / 10), abs=1e-5)
    assert interaural_summary(np.stack([noise, 1e3 * noise]))[64:] == pytest.approx(np.full(32, -3.0))


def _delayed_pair(source: np.ndarray, delay: int, n: int) -> np.ndarray:
    """(2, n) left/right copies of ``source`` whose right ear lags the left by ``delay`` samples."""
    return np.stack([source[32 : 32 + n], source[32 - delay : 32 - delay + n]])


def test_gcc_phat_reads_a_pure_delay_as_the_pair_angle_and_saturates_at_the_side() -> None:
    """A d-sample delay is arcsin(d c / (fs spacing)) counter-clockwise, in [0, 360); a longer one is 90 / 270."""
    from asgf_nav.models.doa.classical import EAR_SPACING, SPEED_OF_SOUND

    n = SR // 2
    source = np.random.default_rng(0).standard_normal(n + 64)
    for delay in (4, 7):  # the right ear lags: the source is on the left, counter-clockwise from the front
        angle = np.rad2deg(np.arcsin(delay / SR * SPEED_OF_SOUND / EAR_SPACING))  # 28.4 and 56.5 degrees
        assert gcc_phat(_delayed_pair(source, delay, n), SR) == pytest.approx(angle, abs=1e-6)
        assert gcc_phat(_delayed_pair(source, -delay, n), SR) == pytest.approx(360.0 - angle, abs=1e-6)
    # a real head's delay exceeds the 0.18 m pair's largest (8.4 samples at 16 kHz): the pair's side, not NaN
    assert gcc_phat(_delayed_pair(source, 12, n), SR) == pytest.approx(90.0)
    assert gcc_phat(_delayed_pair(source, -12, n), SR) == pytest.approx(270.0)


def test_phat_weighting_finds_a_broadband_source_beside_a_louder_narrowband_one() -> None:
    """Whitened cross-spectrum: every frequency votes once, so 100-300 Hz noise 30x louder does not win."""
    from asgf_nav.models.doa.classical import EAR_SPACING, SPEED_OF_SOUND

    rng = np.random.default_rng(0)
    n = SR // 2
    broadband = rng.standard_normal(n + 64)
    rumble = 30 * _band_noise(rng, 100, 300, n + 64)
    audio = _delayed_pair(broadband, 4, n) + _delayed_pair(rumble, -6, n)
    expected = np.rad2deg(np.arcsin(4 / SR * SPEED_OF_SOUND / EAR_SPACING))  # the broadband source's angle
    assert gcc_phat(audio, SR) == pytest.approx(expected, abs=1e-6)


def test_level_rise_is_the_step_up_of_log_power_and_the_clip_start_is_no_onset() -> None:
    """Per bin: max(0, change of log power summed over the ears); the first frame has nothing before it."""
    from asgf_nav.models.doa.classical import level_rise

    spec = np.ones((2, 3, 4), dtype=complex)
    spec[:, :, 2] *= np.e  # frame 2 is e times louder in amplitude: log power rises by 2, then falls by 2
    assert level_rise(spec) == pytest.approx(np.tile([0.0, 0.0, 2.0, 0.0], (3, 1)), abs=1e-5)  # EPS aside


def test_head_models_that_cannot_work_are_clear_errors() -> None:
    """Frames shorter than the HRIRs (templates would be cut) and an elevation range with no HRIR."""
    taps = load_hrtf(SR).num_taps
    with pytest.raises(ValueError, match="shorter than the HRIRs"):
        HrtfTemplateDoa(SR, nfft=1 << int(np.log2(taps)))  # the power of two just below the HRIR length
    with pytest.raises(ValueError, match="no HRIR within"):
        HrirWaveformMatch(SR, max_elevation=-1.0)


def test_spectral_shapes_of_sounds_in_disjoint_bands_point_away_from_each_other() -> None:
    """Band levels are relative to their mean over bands: a low and a high noise are anti-correlated."""
    rng = np.random.default_rng(5)
    low, high = _band_noise(rng, 200, 800), _band_noise(rng, 2000, 6000)
    assert spectral_shape(low, SR) @ spectral_shape(high, SR) < -0.3


@pytest.mark.parametrize("sample_rate", [SR, 44100])
def test_spectral_shape_gives_no_weight_to_bands_too_narrow_to_hold_a_frequency_bin(sample_rate: int) -> None:
    """The lowest log-spaced bands are narrower than the FFT's bin spacing (5 of 40 hold no bin at 16 kHz, 12 at
    44.1 kHz). Such a band must not enter the descriptor: its constant floor level would dominate every shape
    and make white noise look like a 200-800 Hz noise."""
    rng = np.random.default_rng(5)
    n = sample_rate // 2
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    low = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * ((freqs >= 200) & (freqs < 800)), n)
    assert spectral_shape(rng.standard_normal(n), sample_rate) @ spectral_shape(low, sample_rate) < -0.3


def test_gmm_regression_gates_by_each_components_density_and_answers_far_from_the_data() -> None:
    """At the shared centre the tight component's density is (3 / 0.1)^2 times the broad one's; far away no NaN."""
    from asgf_nav.models.doa.classical import GmmRegression

    rng = np.random.default_rng(1)
    tight, broad = rng.normal(0, 0.1, (300, 2)), rng.normal(0, 3.0, (300, 2))
    gmm = GmmRegression(components=2, dims=2).fit(np.concatenate([tight, broad]), np.repeat([0.0, 90.0], 300))
    centre, inside_broad, far = gmm.predict(np.array([[0.0, 0.0], [4.0, 4.0], [300.0, -300.0]]))
    assert centre == pytest.approx(0.0, abs=1.0)  # equal weights, so the density ratio alone decides: ~0.06 deg
    assert inside_broad == pytest.approx(90.0, abs=0.01) and far == pytest.approx(90.0, abs=0.01)


def _kemar_pool(reflection_gain: float) -> RirPool:
    """Anechoic KEMAR responses, each with one reflection from 100 degrees further round, 1.5 ms after."""
    hrtf = load_hrtf(SR)
    azimuth = np.array([[40.0, 70.0, 135.0], [200.0, 250.0, 315.0]])
    rirs = np.zeros((2, 3, 400, 2), np.float32)
    for p, j in np.ndindex(azimuth.shape):
        rirs[p, j, 30 : 30 + hrtf.num_taps] = _kemar_hrir(azimuth[p, j]).T
        rirs[p, j, 54 : 54 + hrtf.num_taps] += reflection_gain * _kemar_hrir((azimuth[p, j] + 100.0) % 360.0).T
    return RirPool(rirs, azimuth, SR, np.ones(azimuth.shape, bool))


def test_the_direct_sound_reference_on_kemar_responses_with_one_reflection() -> None:
    """Templates read the window centred in their frame; the 2 ms waveform window ends before the reflection."""
    from asgf_nav.eval.doa_eval import direct_sound_reference

    # a weak reflection inside the 3.5 ms window: the centred, near-flat part of the Hann frame keeps the
    # direct sound ahead (at the frame's start the window's rising edge would weight the reflection most)
    weak = direct_sound_reference(_kemar_pool(0.3), HrtfTemplateDoa(SR))
    assert weak["responses"] == 6 and weak["acc5"] == 100.0
    # a reflection twice as strong: the whole 3.5 ms waveform follows it, the first 2 ms still read the direct sound
    strong = direct_sound_reference(_kemar_pool(2.0), HrtfTemplateDoa(SR))
    assert strong["waveform"]["mae"] == pytest.approx(100.0) and strong["waveform_2ms"]["acc5"] == 100.0


def test_hrir_waveform_match_finds_a_wavefront_that_arrives_between_samples() -> None:
    """Direct paths rendered at 44.1 kHz and resampled to 16 kHz, as the baked scenes are, arrive between
    samples: searching lags on a 16-times finer grid finds every azimuth within 5 degrees, where whole-sample
    lags send a fifth of them to another HRIR (front and back swapped among them)."""
    from scipy.signal import resample_poly

    from asgf_nav.acoustics.binaural import EarlyPaths, render_early

    hrtf = load_hrtf(44100)
    bands = np.array([125.0, 250, 500, 1000, 2000, 4000, 8000, 16000])
    azimuths = np.arange(0.0, 360.0, 15.0)
    windows = []
    for i, azimuth in enumerate(azimuths):
        distance = 2.0 + 0.0137 * i  # arrival times spread over fractions of a 16 kHz sample
        path = EarlyPaths(np.array([distance / 343.0]), np.array([azimuth]), np.array([0.0]), np.full((1, 8), 0.5))
        rir = resample_poly(render_early(path, np.array([0.0]), hrtf, bands, 4410)[0], SR, 44100, axis=0)
        onset = int(distance / 343.0 * SR) - 1
        windows.append(rir[onset : onset + 32].T)  # the reference's 2 ms window

    def share_within_5(upsample: int) -> float:
        match = HrirWaveformMatch(SR, upsample=upsample)
        return float(np.mean(circular_distance(np.array([match(w) for w in windows]), azimuths) <= 5.0))

    assert share_within_5(16) == 1.0 and share_within_5(1) < 0.9
    with pytest.raises(ValueError, match="upsample must be >= 1"):
        HrirWaveformMatch(SR, upsample=0)


def test_prompt_choice_compares_the_target_with_the_distractor_not_with_the_mixture() -> None:
    """A prompt with a little of the distractor's band still resembles the target more than the distractor."""
    from asgf_nav.eval.doa_eval import prompt_choice_reference

    rng = np.random.default_rng(6)
    target, distractor = _band_noise(rng, 200, 800), _band_noise(rng, 2000, 6000)
    prompt = _band_noise(rng, 200, 800) + 0.3 * _band_noise(rng, 2000, 6000)  # the mixture resembles it most
    t = torch.tensor(np.stack([target, target])[None], dtype=torch.float32)
    batch = DoaBatch(
        mixture=t + torch.tensor(np.stack([distractor, distractor])[None], dtype=torch.float32),
        target=t,
        prompt=torch.tensor(prompt[None], dtype=torch.float32),
        category=torch.zeros(1, dtype=torch.long),
        azimuth=torch.zeros(1),
        distractor_azimuth=torch.zeros(1),
        line_of_sight=torch.ones(1, dtype=torch.bool),
    )
    assert prompt_choice_reference(batch, SR) == 100.0


def test_the_benchmark_is_run_in_the_held_out_test_rooms(monkeypatch) -> None:
    """The test pool is drawn from the test split with a seed neither the training nor the validation pool uses."""
    from asgf_nav.eval import doa_eval
    from asgf_nav.models.doa.config import VAL_POOL_SEED, train_pool_seed

    calls = []
    monkeypatch.setattr(doa_eval, "rir_pool", lambda cfg, split, n, seed: calls.append((split, n, seed)))
    doa_eval.test_pool(EvalConfig(test_poses=7))
    [(split, poses, seed)] = calls
    assert (split, poses) == ("test", 7)
    assert seed not in (train_pool_seed(DoaTrainConfig().seed), VAL_POOL_SEED)


def test_the_gmm_baseline_learns_target_azimuths_of_training_sounds_at_minus_5_to_5_db(monkeypatch) -> None:
    """fit_gmm draws training-sound mixtures at SNRs in [-5, 5] dB and regresses the target's azimuth."""
    from asgf_nav.eval import doa_eval
    from asgf_nav.models.doa.rooms import shoebox_pool

    drawn: dict = {}

    class Sampler(doa_eval.DoaExampleSampler):
        def __init__(self, bank, pool, sound_split, **kw):
            super().__init__(bank, pool, sound_split, **kw)
            drawn["split"] = sound_split

        def sample(self, batch_size, snr_db, rng):
            drawn["snr"], drawn["batch"] = snr_db, super().sample(batch_size, snr_db, rng)
            return drawn["batch"]

    class Regression(doa_eval.GmmRegression):
        def fit(self, features, azimuth_deg):
            drawn["labels"] = azimuth_deg
            return super().fit(features, azimuth_deg)

    monkeypatch.setattr(doa_eval, "rir_pool", lambda cfg, split, n, seed: shoebox_pool(2, 3, seed=1, progress=False))
    monkeypatch.setattr(doa_eval, "DoaExampleSampler", Sampler)
    monkeypatch.setattr(doa_eval, "GmmRegression", Regression)
    doa_eval.fit_gmm(doa_eval.SoundBank.load(), EvalConfig(gmm_train_examples=40, train_poses=2))
    assert drawn["split"] == "train" and tuple(drawn["snr"]) == (-5.0, 5.0)
    assert np.array_equal(drawn["labels"], drawn["batch"].azimuth.numpy())
    assert not np.array_equal(drawn["labels"], drawn["batch"].distractor_azimuth.numpy())


def test_benchmark_clips_are_mixed_at_their_conditions_snr(sampler_parts) -> None:
    """Each condition's clips hold the target and the distractor at that condition's energy ratio."""
    from asgf_nav.eval import doa_eval

    bank, pool = sampler_parts
    sets, _ = doa_eval.test_sets(EvalConfig(examples=3, snrs=(0.0, -10.0), clip_seconds=0.1), bank, pool)
    for (split, snr), batch in sets.items():
        target = batch.target.double()
        distractor = batch.mixture.double() - target
        ratio = 10 * torch.log10(target.pow(2).sum(dim=(1, 2)) / distractor.pow(2).sum(dim=(1, 2)))
        assert ratio.numpy() == pytest.approx(np.full(3, snr), abs=0.01), (split, snr)


def test_an_answer_at_the_distractor_counts_for_either5_not_acc5(tmp_path: Path, monkeypatch) -> None:
    """A head that always answers the distractor's azimuth: 100 % within 5 degrees of either source."""
    from asgf_nav.eval import doa_eval
    from asgf_nav.models.doa.rooms import shoebox_pool

    pair = DoaTrainConfig(rooms="shoebox_pair")
    tiny_head_checkpoint(tmp_path / "selective.pt", pair)
    pool = shoebox_pool(3, 4, seed=2, progress=False, receiver="pair")
    monkeypatch.setattr(doa_eval, "test_pool", lambda cfg: pool)
    monkeypatch.setattr(doa_eval, "predict", lambda model, b: b.distractor_azimuth.numpy().astype(np.float64))
    cfg = _small_eval_config(tmp_path / "selective.pt", tmp_path, crnn="none", rooms="shoebox_pair", examples=6)
    m = doa_eval.evaluate(cfg)["methods"]["selective (audio prompt)"]["unheard +0 dB"]
    assert m["hit_distractor5"] == 100.0 and m["either5"] == 100.0
    assert m["acc5"] < 100.0  # the target is elsewhere


def test_benchmark_table_cells_follow_the_header_and_the_reference_reads_mae_acc5_acc20() -> None:
    """Columns in the conditions' order (not sorted), and the direct-sound line in MAE / ACC5 / ACC20 order."""
    from asgf_nav.eval.doa_eval import markdown_table

    def metrics(mae: float) -> dict:
        return {"mae": mae, "acc5": 1.0, "acc20": 2.0, "mae_lateral": 3.0}

    reference = {"responses": 9, "mae": 4.0, "acc5": 5.0, "acc20": 6.0, "waveform_2ms": metrics(7.0)}
    results = {
        "methods": {"a": {"unheard +0 dB": metrics(10.0), "heard +0 dB": metrics(20.0)}},
        "direct_sound_reference": reference,
    }
    lines = markdown_table(results).splitlines()
    assert lines[0].index("unheard +0 dB") < lines[0].index("heard +0 dB")
    assert lines[2] == "| a | 10.0 / 1.0 / 2.0 (3.0) | 20.0 / 1.0 / 2.0 (3.0) |"
    assert "(9 line-of-sight test responses, no sound, no distractor): 4.0 / 5.0 / 6.0" in lines[-2]
    assert lines[-1] == "Whole HRIR waveforms matched to their first 2 ms: 7.0 / 1.0 / 2.0"


def test_the_paired_lead_counts_the_clips_each_method_gets_within_5_degrees() -> None:
    """a finds clips 0-2, b clips 2-3, c none: a leads b by 1/4 and c by 3/4 of the clips."""
    from asgf_nav.eval.doa_eval import paired_acc5_lead

    errors = {"a": [1.0, 4.0, 5.0, 30.0], "b": [90.0, 6.0, 2.0, 0.5], "c": [10.0, 10.0, 10.0, 10.0]}
    best, lead = paired_acc5_lead({"per_clip_error": {k: {"x": v} for k, v in errors.items()}}, "x")
    assert best == "a" and set(lead) == {"b", "c"}
    # per clip a - b: +1, +1, 0, -1 (x100): mean 25, sample std sqrt(0.916..) * 100 over sqrt(4)
    assert lead["b"] == pytest.approx((25.0, np.std([100, 100, 0, -100], ddof=1) / 2))
    assert lead["c"] == pytest.approx((75.0, np.std([100, 100, 100, 0], ddof=1) / 2))


def test_each_snr_asked_for_is_a_condition_of_its_own() -> None:
    """``--snrs 0 0.4`` is two columns; a label rounded to whole dB made the second replace the first."""
    from asgf_nav.eval.doa_eval import condition_label

    labels = [condition_label("unheard", snr) for snr in (0.0, 0.4, -0.2, -5.0, 2.5, -0.0)]
    assert labels == [
        "unheard +0 dB", "unheard +0.4 dB", "unheard -0.2 dB", "unheard -5 dB", "unheard +2.5 dB", "unheard +0 dB"
    ]  # fmt: skip
