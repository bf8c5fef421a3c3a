"""Spectrogram observation: numpy reference vs an independent librosa computation vs the batched torch one."""

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from asgf_nav.tasks.spectrogram import (
    CPU_BATCH,
    TorchSpectrogram,
    binaural_audio_np,
    default_batch,
    spectrogram_np,
    spectrogram_shape,
)


def _block_mean_4x4(x: np.ndarray) -> np.ndarray:
    """4x4 mean pooling, partial blocks padded with zeros (what skimage.block_reduce(np.mean) does)."""
    f, t = x.shape
    padded = np.zeros((-(-f // 4) * 4, -(-t // 4) * 4), dtype=np.float64)
    padded[:f, :t] = x
    return padded.reshape(padded.shape[0] // 4, 4, padded.shape[1] // 4, 4).mean(axis=(1, 3))


def _librosa_spectrogram(sound: np.ndarray, rir: np.ndarray, sr: int) -> np.ndarray:
    chans = []
    for c in range(2):
        signal = scipy.signal.fftconvolve(sound, rir[:, c])[:sr]
        mag = np.abs(librosa.stft(signal, n_fft=512, hop_length=160, win_length=400, center=True, pad_mode="constant"))
        chans.append(np.log1p(_block_mean_4x4(mag)))
    return np.stack(chans, axis=-1)


def _pair(sr: int, rir_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sound = rng.standard_normal(sr).astype(np.float32) * 0.2
    decay = np.exp(-np.arange(rir_len) / (0.05 * sr))[:, None]
    rir = (rng.standard_normal((rir_len, 2)) * decay).astype(np.float32)
    rir[int(0.004 * sr)] += [1.0, 0.6]
    return sound, rir


@pytest.mark.parametrize("sr,shape", [(44100, (65, 69, 2)), (16000, (65, 26, 2))])
def test_shapes_match_soundspaces(sr, shape):
    assert spectrogram_shape(sr) == shape
    sound, rir = _pair(sr, sr // 3, 0)
    assert spectrogram_np(sound, rir, sr).shape == shape


@pytest.mark.parametrize("sr,rir_len", [(16000, 4000), (16000, 24000), (44100, 13000)])
def test_reference_matches_librosa(sr, rir_len):
    sound, rir = _pair(sr, rir_len, 1)
    ours = spectrogram_np(sound, rir, sr)
    theirs = _librosa_spectrogram(sound, rir, sr)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert ours.max() > 0.1  # a real signal, not zeros


def test_audio_is_truncated_full_convolution():
    sr = 16000
    sound, rir = _pair(sr, 20000, 2)  # RIR longer than the sound: the tail beyond one second is dropped
    audio = binaural_audio_np(sound, rir, sr)
    full = np.convolve(sound.astype(np.float64), rir[:, 1].astype(np.float64))
    assert audio.shape == (sr, 2)
    np.testing.assert_allclose(audio[:, 1], full[:sr], atol=1e-4)


def test_torch_batch_matches_reference():
    sr = 16000
    pairs = [_pair(sr, n, 10 + i) for i, n in enumerate([500, 4000, 16000, 30000])]
    length = max(r.shape[0] for _, r in pairs)
    rirs = np.zeros((len(pairs), length, 2), dtype=np.float32)
    for i, (_, r) in enumerate(pairs):
        rirs[i, : len(r)] = r  # zero padding a RIR must not change its spectrogram
    sounds = np.stack([s for s, _ in pairs])
    out = TorchSpectrogram(sr)(torch.from_numpy(sounds), torch.from_numpy(rirs)).numpy()
    assert out.shape == (4, 65, 26, 2)
    for i, (s, r) in enumerate(pairs):
        np.testing.assert_allclose(out[i], spectrogram_np(s, r, sr), rtol=1e-4, atol=1e-4)


def test_channels_are_left_then_right():
    sr = 16000
    sound, rir = _pair(sr, 2000, 3)
    rir[:, 1] *= 0.1  # right ear much quieter
    spec = spectrogram_np(sound, rir, sr)
    assert spec[..., 0].mean() > spec[..., 1].mean() * 2


def test_from_rirs_chunking_does_not_change_values():
    """RIRs of different lengths in chunks of any size (each chunk pads to its own longest RIR)."""
    sr = 16000
    pairs = [_pair(sr, n, 20 + i) for i, n in enumerate([300, 9000, 2500, 16000, 700])]
    sounds = torch.from_numpy(np.stack([s for s, _ in pairs]))
    rirs = [r for _, r in pairs]
    spectrogram = TorchSpectrogram(sr)
    whole = spectrogram.from_rirs(sounds, rirs, batch=len(rirs)).numpy()
    for batch in (None, 1, 2, 3):
        np.testing.assert_allclose(spectrogram.from_rirs(sounds, rirs, batch=batch).numpy(), whole, atol=1e-5)
    for i, (s, r) in enumerate(pairs):
        np.testing.assert_allclose(whole[i], spectrogram_np(s, r, sr), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="batch must be positive"):
        spectrogram.from_rirs(sounds, rirs, batch=-1)


def test_default_batch_is_small_on_cpu_and_large_elsewhere():
    assert default_batch("cpu") == CPU_BATCH <= 16
    assert default_batch("cuda") > CPU_BATCH


def test_torch_matches_reference_at_44100():
    """At 44.1 kHz the pooled spectrogram pads 257 frequency bins (by 3) and 276 frames (by 0) to multiples
    of 4; the torch version must pad each axis by its own amount, as the 16 kHz case (3 and 3) cannot show."""
    sr = 44100
    sound, rir = _pair(sr, 6000, 30)
    out = TorchSpectrogram(sr)(torch.from_numpy(sound[None]), torch.from_numpy(rir[None])).numpy()
    assert out.shape == (1, *spectrogram_shape(sr)) == (1, 65, 69, 2)
    np.testing.assert_allclose(out[0], spectrogram_np(sound, rir, sr), rtol=1e-4, atol=1e-4)


def test_torch_pads_a_short_received_signal_at_the_end():
    """A sound shorter than one second (0.25 s here) convolved with a short RIR ends early: the rest of the
    second is silence after it, in torch as in the numpy reference, not silence before it."""
    sr = 16000
    sound, rir = _pair(sr, 300, 31)
    sound = sound[: sr // 4]
    spectrogram = TorchSpectrogram(sr)
    audio = spectrogram.audio(torch.from_numpy(sound[None]), torch.from_numpy(rir[None])).numpy()[0]
    expected = binaural_audio_np(sound, rir, sr)
    assert not expected[sr // 4 + 300 :].any()
    np.testing.assert_allclose(audio, expected.T, atol=1e-5)
    out = spectrogram(torch.from_numpy(sound[None]), torch.from_numpy(rir[None])).numpy()[0]
    np.testing.assert_allclose(out, spectrogram_np(sound, rir, sr), rtol=1e-4, atol=1e-4)


def test_a_rir_with_ears_not_in_its_last_axis_is_refused() -> None:
    """A channel-first (2, L) RIR, or one of three channels, is refused instead of read column by column."""
    sound, rir = _pair(16000, 2000, 4)
    with pytest.raises(ValueError, match=r"must have shape \(L, 2\), got \(2, 2000\)"):
        spectrogram_np(sound, rir.T, 16000)
    with pytest.raises(ValueError, match=r"must have shape \(L, 2\), got \(2000,\)"):
        spectrogram_np(sound, rir[:, 0], 16000)  # one ear only
    with pytest.raises(ValueError, match=r"must have shape \(L, 2\), got \(2000, 3\)"):
        binaural_audio_np(sound, np.concatenate([rir, rir[:, :1]], axis=1), 16000)


def test_torch_refuses_sounds_and_rirs_of_different_counts() -> None:
    """One sound for three RIRs is refused, not broadcast to all three."""
    sr = 16000
    sound, rir = _pair(sr, 500, 5)
    rirs = torch.from_numpy(np.stack([rir] * 3))
    with pytest.raises(ValueError, match=r"expected sounds \(B, S\) and rirs \(B, L, 2\), got \(1, 16000\)"):
        TorchSpectrogram(sr).audio(torch.from_numpy(sound[None]), rirs)


def test_world_sounds_are_one_second_padded_or_cut_at_the_end() -> None:
    """A sound shorter than one second is followed by silence (it starts at once); a longer one keeps its
    first second."""
    from asgf_nav.tasks.world import TaskWorld

    clips = {"short": np.array([1.0, 2.0, 3.0]), "long": np.arange(1.0, 12.0)}
    world = TaskWorld("d", 8, {}, lambda name: clips[name])
    assert world.sound("short").tolist() == [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert world.sound("long").tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert world.sound("short").dtype == np.float32


def test_unheard_splits_play_their_own_sounds_and_heard_the_telephone() -> None:
    """With unheard sounds (the default) train, val and test play disjoint sounds of their own; with heard
    sounds every split plays the telephone."""
    from asgf_nav.config import ExperimentConfig
    from asgf_nav.tasks.world import sound_names

    cfg = ExperimentConfig()
    assert cfg.task.sound_split == "unheard"
    train, val, test = (set(sound_names(cfg, split)) for split in ("train", "val", "test"))
    assert "fan" in val and "bell" in test and "telephone" in train
    assert not (train & val or train & test or val & test)
    cfg.task.sound_split = "heard"
    assert [sound_names(cfg, split) for split in ("train", "val", "test")] == [["telephone"]] * 3


def test_torch_refuses_a_rir_whose_ears_are_not_its_last_axis() -> None:
    """A channel-first (B, 2, L) RIR batch, or one of three channels, is refused instead of convolved as is."""
    sr = 16000
    sound, rir = _pair(sr, 2000, 6)
    spectrogram = TorchSpectrogram(sr)
    with pytest.raises(ValueError, match=r"rirs \(B, L, 2\), got \(1, 16000\), \(1, 2, 2000\)$"):
        spectrogram.audio(torch.from_numpy(sound[None]), torch.from_numpy(rir.T.copy()[None]))
    three = np.concatenate([rir, rir[:, :1]], axis=1)[None]
    with pytest.raises(ValueError, match=r"rirs \(B, L, 2\), got \(1, 16000\), \(1, 2000, 3\)$"):
        spectrogram.audio(torch.from_numpy(sound[None]), torch.from_numpy(three))


def test_audio_from_rirs_returns_every_chunk_in_order() -> None:
    """Five RIRs of different lengths in chunks of two give five received signals, each its own pair's."""
    sr = 16000
    pairs = [_pair(sr, n, 40 + i) for i, n in enumerate([300, 5000, 1200, 16000, 800])]
    sounds = torch.from_numpy(np.stack([s for s, _ in pairs]))
    audio = TorchSpectrogram(sr).audio_from_rirs(sounds, [r for _, r in pairs], batch=2).numpy()
    assert audio.shape == (5, 2, sr)
    for i, (s, r) in enumerate(pairs):
        full = np.stack([np.convolve(s.astype(np.float64), r[:, c].astype(np.float64))[:sr] for c in range(2)])
        np.testing.assert_allclose(audio[i], full, atol=1e-4)
