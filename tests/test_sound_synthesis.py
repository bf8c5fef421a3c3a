"""Procedural sound models and the MIDI writer: the committed clips they render, their frequencies and timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asgf_nav.sounds import curate, synth
from asgf_nav.sounds.bank import DATA_DIR
from asgf_nav.sounds.catalog import CLIPS, Procedural

SR = 44100
DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)  # ITU-T Q.23 low group
DTMF_COLUMNS = (1209.0, 1336.0, 1477.0)  # high group of a three-column keypad


def spectrum(x: np.ndarray) -> np.ndarray:
    """Magnitude spectrum of a Hann-windowed stretch, zero-padded to one second: bin k is k Hz."""
    return np.abs(np.fft.rfft(x * np.hanning(len(x)), n=SR))


def dominant_hz(x: np.ndarray, low: float = 0.0, high: float = SR / 2) -> float:
    """The strongest frequency of ``x`` between ``low`` and ``high`` Hz (1 Hz resolution)."""
    magnitude = spectrum(x)
    band = np.arange(len(magnitude))
    magnitude[(band < low) | (band > high)] = 0.0
    return float(np.argmax(magnitude))


def test_committed_procedural_clips_are_what_the_curation_renders(tmp_path: Path) -> None:
    """Each procedural clip in the bank is its catalogue generator at its catalogue seed, conditioned: a
    changed model, seed or conditioning step shows up as a mismatch beyond the 16-bit rounding (1 LSB)."""
    procedural = [spec for spec in CLIPS if isinstance(spec.source, Procedural)]
    assert len(procedural) == 24
    for spec in procedural:
        audio, rate = curate.load_source(spec, tmp_path)
        clip = curate.condition(audio, rate).astype(np.float64)
        committed, committed_rate = sf.read(str(DATA_DIR / "clips" / f"{spec.name}.flac"), dtype="float64")
        assert committed_rate == SR and clip.shape == committed.shape == (SR,), spec.name
        assert np.abs(clip - committed).max() <= 1.0 / 32768, spec.name


def test_dtmf_digits_are_two_itu_tones_of_80_ms_every_140_ms() -> None:
    """Each touch-tone digit holds one ITU-T Q.23 row and one column tone for 80 ms, then 60 ms of silence;
    over a few clips every column of the keypad is dialled."""
    tone, slot = int(0.08 * SR), int(round(0.14 * SR))
    columns_heard = set()
    for seed in range(4):
        audio = synth.dtmf_digits(np.random.default_rng(seed))
        for k in range(8):  # 8 whole digits fit in 1.2 s
            start = k * slot
            assert np.abs(audio[start + tone : start + slot]).max() == 0.0, (seed, k)
            burst = audio[start : start + tone]
            low, high = dominant_hz(burst, 600, 1100), dominant_hz(burst, 1100, 1600)
            assert min(abs(low - f) for f in DTMF_ROWS) <= 2, (seed, k, low)
            assert min(abs(high - f) for f in DTMF_COLUMNS) <= 2, (seed, k, high)
            columns_heard.add(min(DTMF_COLUMNS, key=lambda f: abs(high - f)))
    assert columns_heard == set(DTMF_COLUMNS)


def test_hilo_siren_alternates_600_and_450_hz_with_harmonics_falling_as_one_over_h() -> None:
    """The hi-lo siren plays 600 Hz for the first half of each second and 450 Hz for the second half; its
    2nd and 3rd harmonics have 1/2 and 1/3 of the fundamental's amplitude."""
    audio = synth.siren_hilo(np.random.default_rng(0))
    high, low = audio[int(0.05 * SR) : int(0.45 * SR)], audio[int(0.55 * SR) : int(0.95 * SR)]
    assert dominant_hz(high) == pytest.approx(600, abs=1)
    assert dominant_hz(low) == pytest.approx(450, abs=1)
    magnitude = spectrum(high)
    assert magnitude[1200] / magnitude[600] == pytest.approx(1 / 2, rel=0.03)
    assert magnitude[1800] / magnitude[600] == pytest.approx(1 / 3, rel=0.03)


def test_wail_siren_sweeps_between_650_and_1500_hz() -> None:
    """The wail starts at its lowest pitch, 650 Hz, and reaches 1500 Hz after one second (a 2 s sweep period)."""
    audio = synth.siren_wail(np.random.default_rng(0))
    frame = int(0.02 * SR)
    assert dominant_hz(audio[:frame]) == pytest.approx(650, abs=10)
    middle = int(1.0 * SR)
    assert dominant_hz(audio[middle - frame // 2 : middle + frame // 2]) == pytest.approx(1500, abs=10)


def test_yelp_siren_stays_within_700_to_1500_hz() -> None:
    """Each fast yelp sweep rises from 700 Hz to 1500 Hz and starts again; the pitch never leaves that band."""
    audio = synth.siren_yelp(np.random.default_rng(0))
    frame = int(0.01 * SR)
    pitches = [dominant_hz(audio[i : i + frame], 300) for i in range(0, len(audio) - frame, frame)]
    assert 680 <= min(pitches) and max(pitches) <= 1520
    assert max(pitches) >= 1400


def test_smoke_detector_beeps_have_odd_harmonics_and_3_ms_ramps() -> None:
    """The smoke alarm is 3.2 kHz with odd harmonics at 1/3 and 1/5 (no even ones), on 0-0.5 s and 1.0-1.2 s,
    silent between, each beep ramped linearly over 3 ms at both ends."""
    audio = synth.smoke_detector(np.random.default_rng(0))
    assert np.abs(audio[SR // 2 : SR]).max() == 0.0
    magnitude = spectrum(audio[int(0.05 * SR) : int(0.45 * SR)])
    assert magnitude[9600] / magnitude[3200] == pytest.approx(1 / 3, rel=0.03)
    assert magnitude[16000] / magnitude[3200] == pytest.approx(1 / 5, rel=0.03)
    assert magnitude[6400] / magnitude[3200] < 0.01
    peak = np.abs(audio).max()
    ramp = int(0.003 * SR)
    for start, stop in ((0, SR // 2), (SR, len(audio))):
        for j in range(ramp):  # the gate is j / (ramp - 1) at j samples from either end of a beep
            bound = j / (ramp - 1) * peak * 1.01 + 1e-12
            assert abs(audio[start + j]) <= bound and abs(audio[stop - 1 - j]) <= bound, (start, j)


def test_percussion_midi_plays_on_channel_10() -> None:
    """A drum part sends its program change, note-on and note-off on channel 10 (status nibble 9)."""
    data = synth.midi_file([(0.0, 0.25, 36, 100)], program=0, percussion=True)
    track = bytes(
        [0x00, 0xC9, 0,
         0x00, 0x99, 36, 100,
         0x81, 0x70, 0x89, 36, 0,  # 0.25 s = 240 ticks
         0x83, 0x60, 0xFF, 0x2F, 0x00]
    )  # fmt: skip
    assert data[22:] == track
    assert data[18:22] == len(track).to_bytes(4, "big")


def test_midi_programs_0_to_127_are_accepted_and_others_refused() -> None:
    """Every General MIDI program 0..127 is valid, including the last one (gunshot); -1 and 128 are not."""
    assert bytes([0x00, 0xC0, 127]) in synth.midi_file([(0.0, 0.1, 60, 90)], program=127)
    assert bytes([0x00, 0xC0, 0]) in synth.midi_file([(0.0, 0.1, 60, 90)], program=0)
    for program in (-1, 128):
        with pytest.raises(ValueError, match="0..127"):
            synth.midi_file([], program=program)


def test_midi_notes_outside_the_midi_ranges_are_refused() -> None:
    """A negative start (which would never finish encoding), a pitch outside 0..127 or a velocity outside 1..127
    is a clear error, not a hang or a corrupt file."""
    for note in ((-0.01, 0.1, 60, 100), (0.0, 0.1, 128, 100), (0.0, 0.1, 60, 0), (0.0, 0.1, 60, 128)):
        with pytest.raises(ValueError, match="before 0 s|MIDI needs pitch 0..127, velocity 1..127"):
            synth.midi_file([note], program=0)


def test_a_very_short_midi_note_still_ends_after_it_starts() -> None:
    """A note shorter than half a tick lasts one tick, so its note-off follows its note-on and does not
    leave it sounding to the end of the track; a note without positive duration is refused."""
    track = synth.midi_file([(0.0, 0.0004, 60, 100)], program=0)[22:]
    assert track[:11] == bytes([0x00, 0xC0, 0, 0x00, 0x90, 60, 100, 0x01, 0x80, 60, 0])
    for duration in (0.0, -0.1):
        with pytest.raises(ValueError, match="must be positive"):
            synth.midi_file([(0.0, duration, 60, 100)], program=0)


def test_midi_notes_given_out_of_order_play_as_in_order() -> None:
    """Two back-to-back notes of one pitch listed latest first give the same file as in time order: the first
    note's off comes before the second's on at 0.5 s, so the second note is not cut off at once."""
    in_order = synth.midi_file([(0.0, 0.5, 60, 100), (0.5, 0.5, 60, 100)], program=0)
    reversed_order = synth.midi_file([(0.5, 0.5, 60, 100), (0.0, 0.5, 60, 100)], program=0)
    track = bytes(
        [0x00, 0xC0, 0,
         0x00, 0x90, 60, 100,
         0x83, 0x60, 0x80, 60, 0,
         0x00, 0x90, 60, 100,
         0x83, 0x60, 0x80, 60, 0,
         0x83, 0x60, 0xFF, 0x2F, 0x00]
    )  # fmt: skip
    assert in_order[22:] == track and reversed_order == in_order


def test_midi_note_times_round_to_the_nearest_tick() -> None:
    """At 960 ticks a second, a note from 0.6 ms (0.576 ticks) to 3.0 ms (2.88 ticks) plays from tick 1 to
    tick 3, the nearest ticks, not the truncated 0 and 2."""
    track = synth.midi_file([(0.0006, 0.0024, 60, 100)], program=0)[22:]
    assert track == bytes(
        [0x00, 0xC0, 0,
         0x01, 0x90, 60, 100,
         0x02, 0x80, 60, 0,
         0x83, 0x60, 0xFF, 0x2F, 0x00]
    )  # fmt: skip
