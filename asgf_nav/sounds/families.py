"""Generated sound categories: many made-up categories with several instances each, for training only.

The bank has 35 training categories of one to three recordings each, too few for a prompt encoder to
learn what makes two recordings "the same kind of sound" rather than the training clips themselves. Each
generated category is a random point in one of four parametric families (harmonic notes, band noise,
struck resonators, frequency sweeps), optionally layered with a second; its instances draw the same
parameters with instance-level jitter (pitch, brightness, timing) and fresh notes, onsets and noise, so
two instances of one category differ the way two recordings of one kind of source do while different
categories differ more. The sounds are synthetic stand-ins for diversity, never evaluated on: validation
and the benchmarks hear only the bank's own sounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import signal

from asgf_nav.sounds.bank import SoundBank, SoundClip

FAMILIES = ("harmonic", "noise", "modal", "sweep")
GENERATED_PREFIX = "generated"
DURATION_S = 1.0
MAX_INSTANCES = 100  # instance seeds are spaced 101 apart per category


@dataclass(frozen=True)
class Category:
    """One made-up category: its family, its parameters and an optional second layer."""

    name: str
    family: str
    params: dict[str, float] = field(hash=False)
    layer: Category | None = None
    layer_gain: float = 0.0  # the second layer's level against the first, in dB


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _category_params(family: str, rng: np.random.Generator) -> dict[str, float]:
    if family == "harmonic":
        return {
            "f0": _log_uniform(rng, 110, 1400), "spread": rng.uniform(0, 12), "rolloff": rng.uniform(0.4, 2.5),
            "odd_only": float(rng.random() < 0.3), "note_s": _log_uniform(rng, 0.06, 0.5),
            "gap": rng.uniform(0, 0.6), "attack_s": _log_uniform(rng, 0.002, 0.06),
            "decay_s": _log_uniform(rng, 0.04, 1.5), "vibrato_hz": rng.uniform(0, 8), "vibrato": rng.uniform(0, 0.02),
        }  # fmt: skip
    if family == "noise":
        return {
            "centre": _log_uniform(rng, 150, 5000), "octaves": rng.uniform(0.3, 3.0), "am_hz": rng.uniform(0, 25),
            "am_depth": rng.uniform(0, 1), "burst_s": _log_uniform(rng, 0.03, 1.0), "gap": rng.uniform(0, 0.7),
        }  # fmt: skip
    if family == "modal":
        return {
            "base": _log_uniform(rng, 90, 2500), "modes": float(rng.integers(2, 7)), "stretch": rng.uniform(1.2, 3.2),
            "decay_s": _log_uniform(rng, 0.01, 0.8), "rate_hz": _log_uniform(rng, 1.5, 14), "regular": rng.random(),
            "noise": rng.uniform(0, 0.5),
        }  # fmt: skip
    if family == "sweep":
        low = _log_uniform(rng, 150, 3000)
        return {
            "low": low, "high": min(low * _log_uniform(rng, 1.3, 5.0), 6500.0), "sweep_s": _log_uniform(rng, 0.04, 0.6),
            "shape": float(rng.integers(3)), "gap": rng.uniform(0, 0.6), "harmonics": float(rng.integers(1, 5)),
        }  # fmt: skip
    raise ValueError(f"unknown sound family {family!r}; known: {FAMILIES}")


def make_categories(count: int, seed: int) -> list[Category]:
    """``count`` made-up categories, the same for the same seed; a third carry a second layer."""
    if count < 0:
        raise ValueError(f"the number of generated categories must be >= 0, got {count}")
    rng = np.random.default_rng([seed, 0x50F7])
    out = []
    for index in range(count):
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
        params = _category_params(family, rng)
        layer, gain = None, 0.0
        if rng.random() < 1 / 3:
            second = FAMILIES[int(rng.integers(len(FAMILIES)))]
            layer, gain = Category(f"{index}-layer", second, _category_params(second, rng)), float(rng.uniform(-12, 0))
        out.append(Category(f"{GENERATED_PREFIX}_{index:04d}", family, params, layer, gain))
    return out


def _jittered(params: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """An instance's parameters: pitches within about two semitones, times and levels within about 20 %."""
    pitch = 2 ** (rng.normal(0, 2) / 12)
    out = {}
    for key, value in params.items():
        if key in ("f0", "centre", "base", "low", "high"):
            out[key] = value * pitch
        elif key in ("modes", "shape", "harmonics", "odd_only"):
            out[key] = value
        else:
            out[key] = value * float(np.exp(rng.normal(0, 0.2)))
    return out


def _envelope(n: int, sample_rate: int, attack_s: float, decay_s: float) -> np.ndarray:
    t = np.arange(n) / sample_rate
    return np.minimum(t / max(attack_s, 1e-4), 1.0) * np.exp(-t / max(decay_s, 1e-3))


def _events(rng: np.random.Generator, length_s: float, gap: float, duration_s: float) -> list[float]:
    """Start times of events of ``length_s`` separated by gaps of ``gap`` times that (with jitter)."""
    starts, t = [], float(rng.uniform(0, 0.1))
    while t < duration_s:
        starts.append(t)
        t += length_s * (1 + gap) * float(np.exp(rng.normal(0, 0.15)))
    return starts


def _place(out: np.ndarray, event: np.ndarray, start: int) -> None:
    n = min(event.size, out.size - start)
    if n > 0:
        out[start : start + n] += event[:n]


def _harmonic(p: dict[str, float], rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    out, nyquist = np.zeros(n), 0.45 * rate
    for start in _events(rng, p["note_s"], p["gap"], n / rate):
        m = int(p["note_s"] * rate)
        t = np.arange(m) / rate
        f0 = p["f0"] * 2 ** (rng.uniform(-p["spread"], p["spread"]) / 12 / 2)
        wobble = p["vibrato"] / max(p["vibrato_hz"], 1e-3) * np.sin(2 * np.pi * p["vibrato_hz"] * t)
        phase = 2 * np.pi * f0 * (t + wobble)
        note = np.zeros(m)
        for h in range(1, 40, 2 if p["odd_only"] else 1):
            if f0 * h >= nyquist:
                break
            note += np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h ** p["rolloff"]
        _place(out, note * _envelope(m, rate, p["attack_s"], p["decay_s"]), int(start * rate))
    return out


def _band(x: np.ndarray, centre: float, octaves: float, rate: int) -> np.ndarray:
    low = max(40.0, centre * 2 ** (-octaves / 2))
    high = min(0.45 * rate, centre * 2 ** (octaves / 2))
    if high <= low * 1.05:
        low, high = high / 1.5, high
    return signal.sosfilt(signal.butter(2, [low, high], btype="bandpass", fs=rate, output="sos"), x)


def _noise(p: dict[str, float], rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    band = _band(rng.standard_normal(n), p["centre"], p["octaves"], rate)
    am = 1 - min(p["am_depth"], 1.0) * 0.5 * (1 + np.sin(2 * np.pi * p["am_hz"] * t + rng.uniform(0, 2 * np.pi)))
    gate = np.zeros(n)
    for start in _events(rng, p["burst_s"], p["gap"], n / rate):
        a = int(start * rate)
        m = int(p["burst_s"] * rate)
        _place(gate, _envelope(m, rate, 0.005, 4 * p["burst_s"]), a)
    return band * am * np.minimum(gate, 1.0)


def _modal(p: dict[str, float], rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    out, nyquist = np.zeros(n), 0.45 * rate
    m = min(n, int(6 * p["decay_s"] * rate) + 1)
    t = np.arange(m) / rate
    ratios = 1 + (p["stretch"] - 1) * np.sort(rng.random(int(p["modes"]))) ** 1.5
    ratios[0] = 1.0
    period = 1 / p["rate_hz"]
    start = float(rng.uniform(0, period))
    while start < n / rate:
        strike = np.zeros(m)
        for k, ratio in enumerate(ratios):
            f = p["base"] * ratio
            if f < nyquist:
                decay = np.exp(-t * (1 + k) / p["decay_s"])
                strike += rng.uniform(0.3, 1) / (k + 1) * decay * np.sin(2 * np.pi * f * t)
        click = rng.standard_normal(m) * np.exp(-t / 0.004) * p["noise"]
        _place(out, (strike + click) * rng.uniform(0.5, 1), int(start * rate))
        start += period * (1 + (1 - p["regular"]) * rng.uniform(-0.6, 0.6))
    return out


def _sweep(p: dict[str, float], rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    out, nyquist = np.zeros(n), 0.45 * rate
    m = int(p["sweep_s"] * rate)
    u = np.arange(m) / max(m - 1, 1)
    shape = int(p["shape"])  # 0 rising, 1 falling, 2 rising then falling
    ramp = u if shape == 0 else (1 - u if shape == 1 else 1 - np.abs(2 * u - 1))
    freq = p["low"] * (p["high"] / p["low"]) ** ramp
    phase = 2 * np.pi * np.cumsum(freq) / rate
    chirp = np.zeros(m)
    for h in range(1, int(p["harmonics"]) + 1):
        chirp += np.where(freq * h < nyquist, np.sin(h * phase), 0.0) / h
    chirp *= _envelope(m, rate, 0.004, p["sweep_s"]) * np.minimum(1.0, (m - np.arange(m)) / (0.004 * rate))
    for start in _events(rng, p["sweep_s"], p["gap"], n / rate):
        _place(out, chirp, int(start * rate))
    return out


_RENDER = {"harmonic": _harmonic, "noise": _noise, "modal": _modal, "sweep": _sweep}


def render_instance(category: Category, instance_seed: int, sample_rate: int) -> np.ndarray:
    """One instance of ``category``: ``DURATION_S`` of float32 audio at unit RMS, the same for the same seed."""
    rng = np.random.default_rng([instance_seed, 0x1257])
    n = int(round(DURATION_S * sample_rate))

    def layer(cat: Category) -> np.ndarray:
        x = _RENDER[cat.family](_jittered(cat.params, rng), rng, n, sample_rate)
        return x / (np.sqrt(np.mean(x**2)) + 1e-12)

    audio = layer(category)
    if category.layer is not None:
        audio = audio + 10 ** (category.layer_gain / 20) * layer(category.layer)
    fade = int(0.005 * sample_rate)
    audio[:fade] *= np.linspace(0, 1, fade)
    audio[-fade:] *= np.linspace(1, 0, fade)
    return (audio / (np.sqrt(np.mean(audio**2)) + 1e-12)).astype(np.float32)


class GeneratedBank(SoundBank):
    """A sound bank whose training split also holds generated categories, rendered in memory once.

    The heard, val and test splits and every sound of the bank itself are unchanged (``all`` holds the
    generated sounds too); the generated sounds exist only at ``sample_rate``."""

    def __init__(self, bank: SoundBank, categories: int, instances: int, seed: int, sample_rate: int) -> None:
        if not 2 <= instances <= MAX_INSTANCES:
            raise ValueError(
                f"a generated category needs 2 to {MAX_INSTANCES} instances (one prompts another), got {instances}"
            )
        clips = dict(bank._clips)
        self.generated: dict[str, np.ndarray] = {}
        for c_index, category in enumerate(make_categories(categories, seed)):
            for i in range(instances):
                name = f"{category.name}_{i}"
                self.generated[name] = render_instance(category, seed * 1_000_003 + c_index * 101 + i, sample_rate)
                clips[name] = SoundClip(
                    name, category.name, str(i), Path("<generated>"), f"asgf_nav.sounds.families ({category.family})",
                    "CC0-1.0", "generated by ASGF-Nav",
                )  # fmt: skip
        splits = {s: bank.names(s) for s in ("heard", "train", "val", "test")}
        splits["train"] = splits["train"] + list(self.generated)
        super().__init__(clips, splits, bank.sample_rate, bank.root)
        self.generated_rate = sample_rate

    def waveform(self, name: str, sample_rate: int = 44100) -> np.ndarray:
        if name not in self.generated:
            return super().waveform(name, sample_rate)
        if sample_rate != self.generated_rate:
            rate = self.generated_rate
            raise ValueError(f"generated sound {name!r} exists at {rate} Hz only, asked for {sample_rate}")
        return self.generated[name].copy()

    def check_files(self, names) -> None:
        super().check_files(n for n in names if n not in self.generated)
