"""The sound bank: one-second mono source sounds with categories, instances and heard/unheard splits.

The default bank ships inside the package (``asgf_nav/sounds/data``), built by ``asgf_nav.sounds.curate``;
a directory with the same layout (``sounds.json``, ``splits.json``, ``clips/*.flac``) can be loaded instead.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from asgf_nav.errors import UserInputError

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SOUND_SPLITS = ("heard", "train", "val", "test", "all")
_CLIP_KEYS = ("name", "category", "instance", "file", "source", "license", "copyright")
SILENT_RMS = 1e-4  # -80 dBFS, a few 16-bit steps: a clip this quiet is empty, not a sound


class SoundBankError(UserInputError, ValueError):
    """A bad sound name, split name or sound-bank file."""


@dataclass(frozen=True)
class SoundClip:
    name: str
    category: str
    instance: str
    path: Path
    source: str
    license: str
    copyright: str
    sha256: str | None = None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise SoundBankError(f"sound bank file is missing: {path}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))  # not the locale's: the credits name people
    except json.JSONDecodeError as err:
        raise SoundBankError(f"sound bank file {path} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise SoundBankError(f"sound bank file {path} must hold a JSON object, not a {type(value).__name__}")
    return value


class SoundBank:
    """Named one-second sounds; waveforms are read lazily and cached per (name, sample rate)."""

    def __init__(self, clips: dict[str, SoundClip], splits: dict[str, list[str]], sample_rate: int, root: Path):
        self.root = root
        self.sample_rate = sample_rate
        self._clips = clips
        self._splits = {**splits, "all": list(clips)}
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    @classmethod
    def load(cls, directory: str | Path | None = None) -> SoundBank:
        """Read ``sounds.json`` and ``splits.json`` from ``directory`` (default: the packaged bank).

        The splits must name known sounds, ``heard`` must not be empty, and train, val and test must share
        no sound (an unheard evaluation would otherwise play training sounds). Audio files are checked when
        first read (:meth:`waveform`).
        """
        root = Path(directory) if directory is not None else DATA_DIR
        meta_path, splits_path = root / "sounds.json", root / "splits.json"
        meta, splits = _read_json(meta_path), _read_json(splits_path)
        records = meta.get("clips", [])
        if not isinstance(records, list):
            raise SoundBankError(f"{meta_path}: 'clips' must be a list of clip records, not a {type(records).__name__}")
        clips: dict[str, SoundClip] = {}
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise SoundBankError(f"{meta_path}: clip #{index} is not a JSON object: {record!r}")
            missing = [k for k in _CLIP_KEYS if k not in record]
            if missing:
                raise SoundBankError(f"{meta_path}: clip #{index} lacks keys {missing}")
            if record["name"] in clips:
                raise SoundBankError(f"{meta_path}: clip name {record['name']!r} appears twice")
            clips[record["name"]] = SoundClip(
                name=record["name"],
                category=record["category"],
                instance=record["instance"],
                path=root / record["file"],
                source=record["source"],
                license=record["license"],
                copyright=record["copyright"],
                sha256=record.get("sha256"),
            )
        if not clips:
            raise SoundBankError(f"{meta_path} lists no clips")
        for split in ("heard", "train", "val", "test"):
            if split not in splits:
                raise SoundBankError(f"{splits_path} lacks the {split!r} split")
            names = splits[split]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise SoundBankError(f"{splits_path}: the {split!r} split must be a list of sound names, got {names!r}")
            unknown = [n for n in names if n not in clips]
            if unknown:
                raise SoundBankError(f"{splits_path}: split {split!r} names unknown sounds {unknown}")
        if not splits["heard"]:
            raise SoundBankError(f"{splits_path}: the 'heard' split is empty; it names the sound of the heard task")
        for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = [n for n in splits[first] if n in set(splits[second])]
            if shared:
                raise SoundBankError(
                    f"{splits_path}: splits {first!r} and {second!r} share sounds {shared}; they must be disjoint"
                )
        bank = cls(clips, {s: list(splits[s]) for s in ("heard", "train", "val", "test")},
                   int(meta.get("sample_rate", 44100)), root)  # fmt: skip
        logger.debug("loaded sound bank with %d clips from %s", len(clips), root)
        return bank

    # --- lookup ------------------------------------------------------------------------------------

    def _clip(self, name: str) -> SoundClip:
        if name not in self._clips:
            close = difflib.get_close_matches(name, self._clips, n=5)
            hint = f"; did you mean {close}?" if close else ""
            raise SoundBankError(
                f"unknown sound {name!r} in the sound bank at {self.root} ({len(self._clips)} sounds){hint}"
            )
        return self._clips[name]

    def names(self, split: str = "all") -> list[str]:
        """Sound names of a split: heard, train, val, test or all."""
        if split not in self._splits:
            raise SoundBankError(f"unknown sound split {split!r}; valid splits: {list(SOUND_SPLITS)}")
        return list(self._splits[split])

    def category(self, name: str) -> str:
        return self._clip(name).category

    def instance(self, name: str) -> str:
        return self._clip(name).instance

    def clip(self, name: str) -> SoundClip:
        """Metadata of one sound (category, instance, file, source, licence)."""
        return self._clip(name)

    def categories(self) -> list[str]:
        return sorted({c.category for c in self._clips.values()})

    def other_instance(self, name: str, rng: np.random.Generator | None = None, among: str = "all") -> str | None:
        """A sound of the same category but a different instance (a reference prompt for selective
        localisation), drawn from split ``among``; None when the category has no other instance there."""
        clip = self._clip(name)
        candidates = [
            n
            for n in self.names(among)
            if self._clips[n].category == clip.category and self._clips[n].instance != clip.instance
        ]
        if not candidates:
            return None
        rng = rng if rng is not None else np.random.default_rng()
        return candidates[int(rng.integers(len(candidates)))]

    # --- audio -------------------------------------------------------------------------------------

    def check_files(self, names: Iterable[str]) -> None:
        """Every named sound's audio file exists and matches its checksum (milliseconds for a split): checked when
        a run starts, since a clip first drawn hours into training would otherwise stop it there."""
        for name in names:
            self._check_file(self._clip(name))

    @staticmethod
    def _check_file(clip: SoundClip) -> None:
        if not clip.path.is_file():
            raise SoundBankError(f"audio file of sound {clip.name!r} is missing: {clip.path}")
        if clip.sha256 is not None:
            digest = hashlib.sha256(clip.path.read_bytes()).hexdigest()
            if digest != clip.sha256:
                raise SoundBankError(f"audio file of sound {clip.name!r} is corrupt (checksum mismatch): {clip.path}")

    def _read_native(self, name: str) -> np.ndarray:
        clip = self._clip(name)
        self._check_file(clip)
        try:
            audio, rate = sf.read(str(clip.path), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as err:
            raise SoundBankError(f"audio file of sound {name!r} cannot be decoded: {clip.path}: {err}") from err
        if rate != self.sample_rate:
            raise SoundBankError(f"{clip.path} has sample rate {rate}, the bank declares {self.sample_rate}")
        mono = audio.mean(axis=1)
        if not np.isfinite(mono).all():
            raise SoundBankError(f"audio file of sound {name!r} holds non-finite samples: {clip.path}")
        if len(mono) != self.sample_rate:
            raise SoundBankError(
                f"audio file of sound {name!r} has {len(mono)} samples; a bank clip is exactly 1 s, "
                f"{self.sample_rate} samples: {clip.path}"
            )
        rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
        if rms < SILENT_RMS:
            raise SoundBankError(f"audio file of sound {name!r} is silent (RMS {rms:.2g}): {clip.path}")
        return mono

    def waveform(self, name: str, sample_rate: int = 44100) -> np.ndarray:
        """One second of the sound at ``sample_rate``: float32 array of shape (sample_rate,).

        Resampled with a polyphase filter (scipy.signal.resample_poly); the result is cached and a fresh
        copy is returned, so callers may modify it.
        """
        if sample_rate <= 0 or sample_rate != int(sample_rate):
            raise SoundBankError(f"sample rate must be a positive whole number of Hz, got {sample_rate}")
        sample_rate = int(sample_rate)  # 16000.0 and np.int64(16000) are 16000, and share its cache entry
        key = (name, sample_rate)
        if key not in self._cache:
            audio = self._read_native(name)
            if sample_rate != self.sample_rate:
                ratio = Fraction(sample_rate, self.sample_rate)
                audio = resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
            out = np.zeros(sample_rate, dtype=np.float32)
            n = min(sample_rate, len(audio))
            out[:n] = audio[:n]
            self._cache[key] = out
        return self._cache[key].copy()

    def __len__(self) -> int:
        return len(self._clips)

    def __contains__(self, name: object) -> bool:
        return name in self._clips
