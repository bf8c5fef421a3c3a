"""Deterministic procedural sound synthesis and a minimal MIDI writer for the sound bank.

Every generator takes a seeded ``numpy.random.Generator`` and returns mono float64 audio at
``SAMPLE_RATE``, a little longer than one second so that the curation step can trim to the active part.
The models are simple physical/signal models (modal resonators, filtered noise, FM chirps) chosen so that
each clip has the spectral and temporal character of the everyday source it is named after.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
from scipy import signal

SAMPLE_RATE = 44100
DURATION_S = 1.2

Synth = Callable[[np.random.Generator], np.ndarray]


def _time(duration: float = DURATION_S) -> np.ndarray:
    return np.arange(int(round(duration * SAMPLE_RATE))) / SAMPLE_RATE


def _bandpass(x: np.ndarray, low: float, high: float, order: int = 4) -> np.ndarray:
    sos = signal.butter(order, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sos, x)


def _lowpass(x: np.ndarray, cutoff: float, order: int = 4) -> np.ndarray:
    sos = signal.butter(order, cutoff, btype="lowpass", fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sos, x)


def _highpass(x: np.ndarray, cutoff: float, order: int = 4) -> np.ndarray:
    sos = signal.butter(order, cutoff, btype="highpass", fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sos, x)


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """1/f noise by spectral shaping of white noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    pink = np.fft.irfft(spectrum, n)
    return pink / np.std(pink)


def _modal(freqs: list[float], decays: list[float], amps: list[float], duration: float) -> np.ndarray:
    """Impulse response of a bank of damped resonators (a struck object)."""
    t = _time(duration)
    out = np.zeros_like(t)
    for f, d, a in zip(freqs, decays, amps):
        out += a * np.exp(-t / d) * np.sin(2 * np.pi * f * t)
    return out


def _place(out: np.ndarray, event: np.ndarray, start_s: float) -> None:
    start = max(0, int(round(start_s * SAMPLE_RATE)))
    if start >= len(out):
        return
    n = min(len(event), len(out) - start)
    out[start : start + n] += event[:n]


def _tone_bursts(freqs: list[float], on_off: list[tuple[float, float]], harmonics: int = 1) -> np.ndarray:
    """Beeps: sum of sinusoids (with odd harmonics for a buzzer timbre) gated with 3 ms ramps."""
    t = _time()
    tone = np.zeros_like(t)
    for f in freqs:
        for h in range(1, 2 * harmonics, 2):
            tone += np.sin(2 * np.pi * f * h * t) / h
    gate = np.zeros_like(t)
    ramp = int(0.003 * SAMPLE_RATE)
    for start, stop in on_off:
        a, b = int(start * SAMPLE_RATE), min(int(stop * SAMPLE_RATE), len(t))
        if b - a <= 2 * ramp:
            continue
        g = np.ones(b - a)
        g[:ramp] = np.linspace(0, 1, ramp)
        g[-ramp:] = np.linspace(1, 0, ramp)
        gate[a:b] = g
    return tone * gate


# --- household signals -------------------------------------------------------------------------------


def telephone_bell(rng: np.random.Generator) -> np.ndarray:
    """Electromechanical telephone: a clapper striking two gongs alternately at 20 Hz."""
    out = np.zeros(len(_time()))
    gongs = [
        _modal([1020, 2790, 5380], [0.25, 0.12, 0.05], [1.0, 0.5, 0.25], 0.6),
        _modal([1180, 3150, 5900], [0.25, 0.12, 0.05], [1.0, 0.5, 0.25], 0.6),
    ]
    for k in range(int(DURATION_S * 20)):
        _place(out, gongs[k % 2] * (0.9 + 0.2 * rng.random()), k / 20.0 + 0.002 * rng.standard_normal())
    return out


def dtmf_digits(rng: np.random.Generator) -> np.ndarray:
    """Touch-tone dialling: random digits, 80 ms tone and 60 ms gap each (ITU-T Q.23 frequencies)."""
    rows, cols = [697, 770, 852, 941], [1209, 1336, 1477]
    t = _time()
    out = np.zeros_like(t)
    for k in range(int(DURATION_S / 0.14)):
        f1, f2 = rows[rng.integers(4)], cols[rng.integers(3)]
        burst = _tone_bursts([f1, f2], [(0.0, 0.08)])
        _place(out, burst[: int(0.08 * SAMPLE_RATE)], k * 0.14)
    return out


def digital_alarm(rng: np.random.Generator) -> np.ndarray:
    """Bedside digital alarm: groups of four 4 kHz square-ish beeps."""
    on_off = [(g * 0.5 + b * 0.1, g * 0.5 + b * 0.1 + 0.06) for g in range(3) for b in range(4)]
    return _tone_bursts([4000.0], on_off, harmonics=3)


def doorbell(rng: np.random.Generator) -> np.ndarray:
    """Ding-dong chime: two struck bars (E5 then C5) with inharmonic partials."""
    out = np.zeros(len(_time()))
    ding = _modal([659.3, 1650.0, 2980.0], [0.9, 0.3, 0.1], [1.0, 0.35, 0.15], DURATION_S)
    dong = _modal([523.3, 1310.0, 2370.0], [1.0, 0.35, 0.1], [1.0, 0.35, 0.15], DURATION_S)
    _place(out, ding, 0.0)
    _place(out, dong, 0.45)
    return out


def smoke_detector(rng: np.random.Generator) -> np.ndarray:
    """Piezo smoke alarm: 3.2 kHz, temporal-three pattern (0.5 s on, 0.5 s off)."""
    return _tone_bursts([3200.0], [(0.0, 0.5), (1.0, 1.2)], harmonics=3)


def microwave_beep(rng: np.random.Generator) -> np.ndarray:
    """Kitchen appliance end-of-cycle: three 2 kHz beeps."""
    return _tone_bursts([2000.0], [(0.0, 0.2), (0.3, 0.5), (0.6, 0.8)], harmonics=2)


def reversing_beep(rng: np.random.Generator) -> np.ndarray:
    """Vehicle reversing alarm: 1.2 kHz, 0.4 s on / 0.4 s off."""
    return _tone_bursts([1200.0], [(0.0, 0.4), (0.8, 1.2)], harmonics=4)


# --- sirens ------------------------------------------------------------------------------------------


def _swept_siren(freq: np.ndarray) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    return sum(np.sin(h * phase) / h for h in range(1, 6))


def siren_wail(rng: np.random.Generator) -> np.ndarray:
    """Emergency siren 'wail': slow sweep 650-1500 Hz."""
    t = _time()
    return _swept_siren(1075 - 425 * np.cos(2 * np.pi * t / 2.0))


def siren_yelp(rng: np.random.Generator) -> np.ndarray:
    """Emergency siren 'yelp': fast sawtooth sweep 700-1500 Hz, 3.3 sweeps per second."""
    t = _time()
    return _swept_siren(700 + 800 * ((t * 3.3) % 1.0))


def siren_hilo(rng: np.random.Generator) -> np.ndarray:
    """Two-tone 'hi-lo' siren: 450 Hz / 600 Hz alternating every 0.5 s."""
    t = _time()
    return _swept_siren(np.where((t % 1.0) < 0.5, 600.0, 450.0))


# --- appliances and machines ---------------------------------------------------------------------


def fan(rng: np.random.Generator) -> np.ndarray:
    """Electric fan: low-passed pink noise with blade-pass amplitude modulation and mains hum."""
    t = _time()
    air = _lowpass(_pink_noise(rng, len(t)), 2500)
    blade = 1 + 0.3 * np.sin(2 * np.pi * 83 * t)
    hum = 0.15 * np.sin(2 * np.pi * 100 * t) + 0.05 * np.sin(2 * np.pi * 200 * t)
    return air * blade + hum


def vacuum_cleaner(rng: np.random.Generator) -> np.ndarray:
    """Vacuum cleaner: bright broadband suction noise plus a high motor whine and its harmonics."""
    t = _time()
    noise = _bandpass(rng.standard_normal(len(t)), 800, 9000)
    f0 = 640 * (1 + 0.004 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    whine = 0.25 * np.sin(phase) + 0.15 * np.sin(2 * phase) + 0.08 * np.sin(3 * phase)
    rumble = 0.3 * _lowpass(rng.standard_normal(len(t)), 200)
    return noise + whine + rumble


def hair_dryer(rng: np.random.Generator) -> np.ndarray:
    """Hair dryer: high-passed turbulent noise and a 2.8 kHz fan whine."""
    t = _time()
    noise = _highpass(rng.standard_normal(len(t)), 300)
    return noise + 0.2 * np.sin(2 * np.pi * 2800 * t) + 0.1 * np.sin(2 * np.pi * 5600 * t)


def car_engine_idle(rng: np.random.Generator) -> np.ndarray:
    """Four-cylinder engine idling at ~780 rpm: a jittered 26 Hz firing pulse train exciting body modes."""
    t = _time()
    out = np.zeros_like(t)
    pulse = _modal([55, 120, 310, 900], [0.04, 0.03, 0.015, 0.006], [1.0, 0.7, 0.4, 0.2], 0.15)
    time_s = 0.0
    while time_s < DURATION_S:
        _place(out, pulse * (0.8 + 0.4 * rng.random()), time_s)
        time_s += 1 / 26.0 * (1 + 0.03 * rng.standard_normal())
    return out + 0.05 * _lowpass(rng.standard_normal(len(t)), 1500)


# --- water and weather ---------------------------------------------------------------------------


def running_tap(rng: np.random.Generator) -> np.ndarray:
    """Running tap: band-limited noise with fluctuating level and many small bubble chirps."""
    t = _time()
    bed = _bandpass(rng.standard_normal(len(t)), 400, 5000)
    bed *= 1 + 0.3 * _lowpass(rng.standard_normal(len(t)), 15) * 10
    out = 0.5 * bed
    for _ in range(120):
        f0 = rng.uniform(600, 3000)
        dur = rng.uniform(0.005, 0.02)
        tb = _time(dur)
        bubble = np.exp(-tb / (dur / 3)) * np.sin(2 * np.pi * f0 * (1 + 8 * tb) * tb)
        _place(out, rng.uniform(0.5, 1.5) * bubble, rng.uniform(0, DURATION_S))
    return out


def rain(rng: np.random.Generator) -> np.ndarray:
    """Rain on a window: a pink-noise bed and hundreds of short, bright droplet impacts."""
    t = _time()
    out = 0.3 * _highpass(_pink_noise(rng, len(t)), 500)
    for _ in range(400):
        f0 = rng.uniform(2000, 7000)
        drop = _modal([f0], [rng.uniform(0.001, 0.004)], [rng.uniform(0.3, 1.5)], 0.02)
        _place(out, drop, rng.uniform(0, DURATION_S))
    return out


# --- animals and people --------------------------------------------------------------------------


def _bird_song(rng: np.random.Generator, f_low: float, f_high: float, syllable_s: tuple[float, float]) -> np.ndarray:
    out = np.zeros(len(_time()))
    time_s = 0.0
    while time_s < DURATION_S:
        dur = rng.uniform(*syllable_s)
        tb = _time(dur)
        f_start, f_end = rng.uniform(f_low, f_high, size=2)
        vibrato = 1 + 0.06 * np.sin(2 * np.pi * rng.uniform(40, 90) * tb)
        freq = (f_start + (f_end - f_start) * tb / dur) * vibrato
        syllable = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.sin(np.pi * tb / dur) ** 2
        _place(out, syllable, time_s)
        time_s += dur + rng.uniform(0.01, 0.08)
    return out


def birdsong_warbler(rng: np.random.Generator) -> np.ndarray:
    """Songbird warble: fast, vibrato-rich frequency-modulated syllables at 2.5-6 kHz."""
    return _bird_song(rng, 2500, 6000, (0.03, 0.09))


def birdsong_chirp(rng: np.random.Generator) -> np.ndarray:
    """Sparrow-like chirping: short downward sweeps at 3-8 kHz."""
    return _bird_song(rng, 3000, 8000, (0.02, 0.05))


def hand_clapping(rng: np.random.Generator) -> np.ndarray:
    """One person clapping about five times per second: band-passed noise bursts with a short decay."""
    out = np.zeros(len(_time()))
    time_s = 0.0
    while time_s < DURATION_S:
        tb = _time(0.05)
        burst = _bandpass(rng.standard_normal(len(tb)), 800, 3500) * np.exp(-tb / 0.008)
        _place(out, burst, time_s)
        time_s += 0.2 * (1 + 0.05 * rng.standard_normal())
    return out


def _footsteps(rng: np.random.Generator, brightness_hz: float, interval_s: float) -> np.ndarray:
    out = np.zeros(len(_time()))
    time_s = 0.0
    while time_s < DURATION_S:
        tb = _time(0.12)
        heel = _modal([70, 160, 420], [0.03, 0.02, 0.01], [1.0, 0.6, 0.3], 0.12)
        scuff = _lowpass(rng.standard_normal(len(tb)), brightness_hz) * np.exp(-tb / 0.02)
        _place(out, heel + 0.6 * scuff, time_s)
        _place(
            out,
            0.5 * _lowpass(rng.standard_normal(len(tb)), brightness_hz) * np.exp(-tb / 0.01),
            time_s + 0.06,
        )
        time_s += interval_s * (1 + 0.04 * rng.standard_normal())
    return out


def footsteps_hard_floor(rng: np.random.Generator) -> np.ndarray:
    """Shoes on a wooden floor: heel thump, bright scuff and toe tap, two steps per second."""
    return _footsteps(rng, 6000, 0.5)


def footsteps_carpet(rng: np.random.Generator) -> np.ndarray:
    """Footsteps on carpet: dull thumps without high-frequency scuff, a brisk walk."""
    return _footsteps(rng, 900, 0.4)


def door_knock(rng: np.random.Generator) -> np.ndarray:
    """Knuckles on a wooden door: four knocks (three quick, one after a pause) exciting the panel modes."""
    out = np.zeros(len(_time()))
    for k, time_s in enumerate([0.0, 0.2, 0.4, 0.8]):
        knock = _modal([180, 410, 760, 1300, 2200], [0.05, 0.03, 0.02, 0.012, 0.006], [1, 0.8, 0.5, 0.3, 0.2], 0.2)
        _place(out, knock * (1.0 - 0.1 * k) * (0.9 + 0.2 * rng.random()), time_s)
    return out


def table_knock(rng: np.random.Generator) -> np.ndarray:
    """Knocking on a table top: stiffer, higher modes than a door and faster knocks."""
    out = np.zeros(len(_time()))
    for time_s in np.arange(0.0, DURATION_S, 0.16):
        knock = _modal([420, 980, 1750, 3100], [0.025, 0.015, 0.01, 0.005], [1, 0.7, 0.4, 0.2], 0.1)
        _place(out, knock * (0.8 + 0.4 * rng.random()), time_s)
    return out


def clock_ticking(rng: np.random.Generator) -> np.ndarray:
    """Mechanical clock: alternating 'tick' and 'tock' escapement clicks, five beats per second."""
    out = np.zeros(len(_time()))
    tick = _modal([2600, 4100, 6900], [0.006, 0.004, 0.002], [1, 0.7, 0.4], 0.04)
    tock = _modal([1900, 3300, 5200], [0.007, 0.004, 0.002], [1, 0.6, 0.3], 0.04)
    for k, time_s in enumerate(np.arange(0.0, DURATION_S, 0.2)):
        _place(out, (tick if k % 2 == 0 else tock) * (0.9 + 0.2 * rng.random()), time_s)
    return out


PROCEDURAL: dict[str, Synth] = {
    fn.__name__: fn
    for fn in (
        telephone_bell,
        dtmf_digits,
        digital_alarm,
        doorbell,
        smoke_detector,
        microwave_beep,
        reversing_beep,
        siren_wail,
        siren_yelp,
        siren_hilo,
        fan,
        vacuum_cleaner,
        hair_dryer,
        car_engine_idle,
        running_tap,
        rain,
        birdsong_warbler,
        birdsong_chirp,
        hand_clapping,
        footsteps_hard_floor,
        footsteps_carpet,
        door_knock,
        table_knock,
        clock_ticking,
    )
}


# --- MIDI ------------------------------------------------------------------------------------------

Note = tuple[float, float, int, int]  # (start s, duration s, MIDI pitch, velocity)
_TICKS_PER_BEAT = 480
_TICKS_PER_SECOND = 960  # 120 bpm, the MIDI default tempo


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_file(notes: list[Note], program: int, percussion: bool = False) -> bytes:
    """A format-0 Standard MIDI File playing ``notes`` on one General MIDI program (channel 10 for drums)."""
    if not 0 <= program <= 127:
        raise ValueError(f"General MIDI program must be in 0..127, got {program}")
    channel = 9 if percussion else 0
    events: list[tuple[int, int, bytes]] = []  # (tick, order, message); note-offs sort before note-ons
    for start, duration, pitch, velocity in notes:
        if duration <= 0:
            raise ValueError(f"note {pitch} at {start} s has duration {duration} s; it must be positive")
        if start < 0:  # a negative tick would make _varlen loop forever
            raise ValueError(f"note {pitch} starts at {start} s; a note cannot start before 0 s")
        if not (0 <= pitch <= 127 and 1 <= velocity <= 127):  # MIDI data bytes; a velocity-0 note-on is a note-off
            raise ValueError(
                f"note at {start} s has pitch {pitch} and velocity {velocity}; MIDI needs pitch 0..127, velocity 1..127"
            )
        on = int(round(start * _TICKS_PER_SECOND))
        # at least one tick long: a note-off at its own note-on's tick would sort first and leave the note hanging
        off = max(on + 1, int(round((start + duration) * _TICKS_PER_SECOND)))
        events.append((on, 1, bytes([0x90 | channel, pitch, velocity])))
        events.append((off, 0, bytes([0x80 | channel, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray(_varlen(0) + bytes([0xC0 | channel, program]))
    last = 0
    for tick, _, message in events:
        track += _varlen(tick - last) + message
        last = tick
    track += _varlen(_TICKS_PER_SECOND // 2) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, _TICKS_PER_BEAT)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)
