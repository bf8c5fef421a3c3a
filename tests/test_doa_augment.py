"""Timbre augmentation of the selective DoA head's training sounds."""

from __future__ import annotations

import numpy as np
import torch

import asgf_nav.models.doa.data as doa_data
from asgf_nav.models.doa.augment import (
    BUMP_GAIN_DB,
    NUM_BUMPS,
    SPEED_RANGE,
    TILT_DB_PER_OCTAVE,
    TIMBRE_SIZE,
    apply_spectral_gains,
    change_speed,
    identity_timbre,
    random_timbre,
    resampled_length,
    spectral_gains,
)
from asgf_nav.models.doa.data import DoaExampleSampler
from asgf_nav.models.doa.rooms import shoebox_pool

SR = 16000


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[np.argmax(spectrum)])


def test_speed_change_scales_frequency_and_length():
    n = 8000
    t = np.arange(n) / SR
    waves = torch.zeros(2, n + 500, dtype=torch.float64)
    waves[0, :n] = torch.from_numpy(np.sin(2 * np.pi * 500 * t))
    waves[1, : n - 2000] = torch.from_numpy(np.sin(2 * np.pi * 800 * t[: n - 2000]))
    lengths = torch.tensor([n, n - 2000])
    speed = torch.tensor([1.15, 0.85], dtype=torch.float64)
    out, new_lengths = change_speed(waves, lengths, speed)
    assert new_lengths.tolist() == [resampled_length(n, 1.15), resampled_length(n - 2000, 0.85)]
    assert abs(new_lengths[0].item() - n / 1.15) < 2
    for row, (f0, s) in enumerate([(500, 1.15), (800, 0.85)]):
        signal = out[row, : new_lengths[row]].numpy()
        assert abs(_peak_hz(signal) - f0 * s) < 3.0
        assert torch.all(out[row, new_lengths[row] :] == 0)
    same, same_lengths = change_speed(waves, lengths, torch.ones(2, dtype=torch.float64))
    assert torch.equal(same_lengths, lengths) and torch.allclose(same[:, :n], waves[:, :n])


def test_spectral_envelope_tilt_and_bumps():
    freqs = torch.tensor([250.0, 1000.0, 2000.0, 4000.0], dtype=torch.float64)
    unchanged = spectral_gains(torch.from_numpy(identity_timbre())[None], freqs)
    assert torch.allclose(unchanged, torch.ones(1, 4, dtype=torch.float64))
    tilt = identity_timbre()
    tilt[1] = 3.0  # +3 dB per octave about 1 kHz
    db = 20 * torch.log10(spectral_gains(torch.from_numpy(tilt)[None], freqs))[0]
    assert torch.allclose(db, torch.tensor([-6.0, 0.0, 3.0, 6.0], dtype=torch.float64), atol=1e-9)
    bump = identity_timbre()
    bump[2:5] = [1.0, 0.5, 6.0]  # +6 dB at 2 kHz, half an octave wide
    db = 20 * torch.log10(spectral_gains(torch.from_numpy(bump)[None], freqs))[0]
    assert abs(db[2].item() - 6.0) < 1e-9 and db[0].item() < 0.01
    # filtering a tone follows the envelope's gain at its frequency
    tone = torch.from_numpy(np.sin(2 * np.pi * 2000 * np.arange(4000) / SR))[None]
    filtered = apply_spectral_gains(tone, torch.from_numpy(bump)[None], SR)
    ratio_db = 10 * torch.log10(filtered[0, 500:3500].pow(2).mean() / tone[0, 500:3500].pow(2).mean())
    assert abs(ratio_db.item() - 6.0) < 0.2


def test_random_timbres_stay_in_their_ranges():
    rng = np.random.default_rng(0)
    timbres = np.stack([random_timbre(rng) for _ in range(500)])
    assert timbres.shape == (500, TIMBRE_SIZE)
    assert SPEED_RANGE[0] <= timbres[:, 0].min() < 0.9 and 1.12 < timbres[:, 0].max() <= SPEED_RANGE[1]
    # tilts and bump gains cut as well as boost; bump centres span +-3 octaves, widths 0.3 to 1.5 octaves
    assert -TILT_DB_PER_OCTAVE <= timbres[:, 1].min() < -2.5 and 2.5 < timbres[:, 1].max() <= TILT_DB_PER_OCTAVE
    bumps = timbres[:, 2:].reshape(-1, NUM_BUMPS, 3)
    assert -BUMP_GAIN_DB <= bumps[:, :, 2].min() < -5.5 and 5.5 < bumps[:, :, 2].max() <= BUMP_GAIN_DB
    assert -3.0 <= bumps[:, :, 0].min() < -2.8 and 2.8 < bumps[:, :, 0].max() <= 3.0
    assert 0.3 <= bumps[:, :, 1].min() < 0.4 and 1.4 < bumps[:, :, 1].max() <= 1.5


def test_identity_timbres_reproduce_the_plain_clips(bank, monkeypatch):
    pool = shoebox_pool(3, 3, seed=4, progress=False)
    plain = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25).sample(12, 0.0, np.random.default_rng(2))
    monkeypatch.setattr(doa_data, "random_timbre", lambda rng: identity_timbre())
    same = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, augment=True).sample(
        12, 0.0, np.random.default_rng(2)
    )
    for field in ("mixture", "target", "prompt", "azimuth", "category"):
        assert torch.allclose(getattr(same, field).float(), getattr(plain, field).float(), atol=1e-5), field


def test_augmented_batches_keep_the_mixing_contract(bank):
    pool = shoebox_pool(3, 3, seed=4, progress=False)
    sampler = DoaExampleSampler(bank, pool, "train", clip_seconds=0.25, augment=True)
    batch = sampler.sample(16, -5.0, np.random.default_rng(1))
    assert torch.allclose(batch.mixture.pow(2).mean(dim=(1, 2)), torch.ones(16), atol=1e-3)
    assert torch.allclose(batch.prompt.pow(2).mean(dim=1), torch.ones(16), atol=1e-3)
    distractor = batch.mixture - batch.target
    snr = 10 * torch.log10(batch.target.pow(2).sum(dim=(1, 2)) / distractor.pow(2).sum(dim=(1, 2)))
    assert torch.allclose(snr, torch.full((16,), -5.0), atol=0.05)
    # each prompt is its recorded clip replayed at the draw's rate and filtered by its envelope
    rng = np.random.default_rng(1)
    draws = [sampler._draw(-5.0, rng) for _ in range(16)]
    assert sum(abs(d.timbres[2, 0] - 1.0) > 0.02 for d in draws) >= 12
    clip, hop = sampler.clip, sampler.clip // 8
    for d, prompt in zip(draws, batch.prompt):
        dry = sampler._waves[sampler._wave_row[d.prompt]].numpy()[: sampler._wave_size[sampler._wave_row[d.prompt]]]
        speed = d.timbres[2, 0]
        sped = np.interp(np.arange(resampled_length(dry.size, speed)) * speed, np.arange(dry.size), dry)
        nfft = 1 << (2 * sped.size - 1).bit_length()
        gains = spectral_gains(torch.from_numpy(d.timbres[2])[None], torch.from_numpy(np.fft.rfftfreq(nfft, 1 / SR)))
        shaped = np.fft.irfft(np.fft.rfft(sped, nfft) * gains[0].numpy(), nfft)[: sped.size]
        energy = np.concatenate([[0.0], np.cumsum(shaped**2)])
        starts = np.arange(0, max(1, shaped.size - clip + 1), hop)
        start = int(starts[np.argmax(energy[starts + clip] - energy[starts])])
        expected = shaped[start : start + clip] / np.sqrt(np.mean(shaped[start : start + clip] ** 2))
        assert np.allclose(prompt.numpy(), expected, atol=2e-3)


def test_spectral_filtering_does_not_wrap_around_the_clip() -> None:
    """The zero-phase envelope filter is applied linearly: an impulse at the start leaks nothing into the end."""
    impulse = torch.zeros(1, 1000, dtype=torch.float64)
    impulse[0, 0] = 1.0
    bump = identity_timbre()
    bump[2:5] = [0.0, 0.5, 6.0]  # +6 dB at 1 kHz, half an octave wide
    out = apply_spectral_gains(impulse, torch.from_numpy(bump)[None], SR)[0]
    assert out[0] > 1.0  # the boost's peak
    assert out[-100:].abs().max() < 1e-9


def test_playback_rates_are_log_uniform_so_slowing_and_speeding_are_equally_likely() -> None:
    """The rate is drawn uniformly in log rate: the quartiles of log(rate) over 4000 draws sit at a quarter,
    half and three quarters of [log 0.84, log 1.19] (a uniform draw in rate puts them about 0.012 higher)."""
    rng = np.random.default_rng(0)
    log_rates = np.log([random_timbre(rng)[0] for _ in range(4000)])
    low, high = np.log(SPEED_RANGE)
    expected = low + (high - low) * np.array([0.25, 0.5, 0.75])
    np.testing.assert_allclose(np.quantile(log_rates, [0.25, 0.5, 0.75]), expected, atol=0.006)


def test_a_bump_is_a_gaussian_in_octaves_whose_width_is_its_standard_deviation() -> None:
    """A +6 dB bump at 2 kHz, 0.5 octave wide, adds 6 exp(-0.5) dB half an octave away and 6 exp(-2) dB
    one octave away (1 kHz and 4 kHz)."""
    bump = identity_timbre()
    bump[2:5] = [1.0, 0.5, 6.0]
    freqs = torch.tensor([1000.0, 2000.0 * 2**0.5, 4000.0], dtype=torch.float64)
    db = 20 * torch.log10(spectral_gains(torch.from_numpy(bump)[None], freqs))[0]
    expected = torch.tensor([6 * np.exp(-2.0), 6 * np.exp(-0.5), 6 * np.exp(-2.0)], dtype=torch.float64)
    assert torch.allclose(db, expected, atol=1e-9)


def test_filtering_a_batch_of_binaural_signals_gives_each_row_its_own_envelope() -> None:
    """apply_spectral_gains on (B, 2, N): row 0 (identity timbre) keeps both ears as they are, row 1 (+6 dB at
    2 kHz) has both ears 6 dB louder at 2 kHz; a row's envelope never lands on a channel of another row."""
    tone = torch.from_numpy(np.sin(2 * np.pi * 2000 * np.arange(4000) / SR))
    signal = tone.repeat(2, 2, 1)  # (2, 2, 4000)
    bump = identity_timbre()
    bump[2:5] = [1.0, 0.5, 6.0]
    timbres = torch.from_numpy(np.stack([identity_timbre(), bump]))
    filtered = apply_spectral_gains(signal, timbres, SR)
    ratio_db = 10 * torch.log10(filtered[..., 500:3500].pow(2).mean(-1) / tone[500:3500].pow(2).mean())
    assert torch.allclose(ratio_db, torch.tensor([[0.0, 0.0], [6.0, 6.0]], dtype=torch.float64), atol=0.2)
