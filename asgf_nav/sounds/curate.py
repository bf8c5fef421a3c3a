"""Build the packaged sound bank: read, render and condition every clip of ``catalog.CLIPS``, write the
FLAC files, the metadata (``sounds.json``), the unheard splits (``splits.json``), ``ATTRIBUTION.md`` and
the texts of the GPL/LGPL licences that some clips are under (``licenses/``) and those clips' original
files, their corresponding source (``sources/``).

Run once by a developer on Debian with the packages in ``REQUIRED_PACKAGES``; the outputs are committed,
so users never need these tools. Rendering is deterministic (fixed seeds, dry FluidSynth float output).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import shutil
import subprocess
import tempfile
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

from asgf_nav.io import atomic_write_bytes, atomic_write_text, flush_to_disk
from asgf_nav.logging_utils import setup_logging
from asgf_nav.sounds import synth
from asgf_nav.sounds.catalog import CLIPS, LICENSE_URLS, ClipSpec, DebianFile, MidiRender, Procedural, Speech

logger = logging.getLogger(__name__)

SAMPLE_RATE = 44100
HEARD_SOUND = "telephone"
SPLIT_PROPORTIONS = {"train": 73, "val": 11, "test": 18}  # SoundSpaces unheard split of its 102 sounds
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TARGET_RMS_DBFS = -20.0
PEAK_LIMIT = 0.95
ONSET_DB = -30.0  # a clip starts where the 10 ms frame level first comes within this of its loudest frame
DECAY_DB = -50.0  # and its active part ends where the level last exceeds this
MIN_RMS = 0.01
COMMON_LICENSES = Path("/usr/share/common-licenses")  # verbatim licence texts (Debian package base-files)
LICENSE_DIR = "licenses"
# Clip licence -> the licence texts that must travel with the clip (files in LICENSE_DIR); the LGPL-3.0 only
# adds permissions to the GPL-3.0, so it needs both texts. The other licences are satisfied by their URL.
LICENSE_TEXTS: dict[str, tuple[str, ...]] = {
    "GPL-2.0-only": ("GPL-2.0.txt",),
    "GPL-2.0-or-later": ("GPL-2.0.txt",),
    "LGPL-3.0-or-later": ("LGPL-3.0.txt", "GPL-3.0.txt"),
}
_COMMON_LICENSE_FILES = {"GPL-2.0.txt": "GPL-2", "GPL-3.0.txt": "GPL-3", "LGPL-3.0.txt": "LGPL-3"}
# The GPL/LGPL ask whoever passes a clip on to pass on its corresponding source too: the bank ships the
# original file of every such clip here, as its Debian package installs it, beside this curation script.
SOURCES_DIR = "sources"

# Debian package -> a file or program it installs (used to tell whether it is present).
REQUIRED_PACKAGES = {
    "sound-theme-freedesktop": "/usr/share/sounds/freedesktop/stereo/phone-incoming-call.oga",
    "lomiri-sounds": "/usr/share/sounds/lomiri/ringtones/Ubuntu.ogg",
    "oxygen-sounds": "/usr/share/sounds/Oxygen-Im-Phone-Ring.ogg",
    "asterisk-core-sounds-en-wav": "/usr/share/asterisk/sounds/en_US_f_Allison/hello-world.wav",
    "fluid-soundfont-gm": str(SOUNDFONT),
    "fluidsynth": "fluidsynth",
    "espeak-ng": "espeak-ng",
    "base-files": str(COMMON_LICENSES / "LGPL-3"),
}


class MissingToolsError(RuntimeError):
    """Raised when Debian packages the curation needs are not installed."""


def check_requirements() -> None:
    """Fail with the exact ``apt-get install`` line when a needed package is missing."""
    missing = [
        package
        for package, probe in REQUIRED_PACKAGES.items()
        if not (Path(probe).exists() if probe.startswith("/") else shutil.which(probe))
    ]
    if missing:
        raise MissingToolsError(
            "the sound-bank curation needs Debian packages that are not installed: "
            + ", ".join(missing)
            + "\nrun: apt-get update && apt-get install -y --no-install-recommends "
            + " ".join(missing)
        )


def package_version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


# --- reading and rendering sources ---------------------------------------------------------------


def _read(path: Path) -> tuple[np.ndarray, int]:
    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise RuntimeError(f"cannot read source audio {path}: {err}") from err
    return audio.mean(axis=1), rate


def _render_midi(source: MidiRender, workdir: Path, name: str) -> tuple[np.ndarray, int]:
    midi_path = workdir / f"{name}.mid"
    wav_path = workdir / f"{name}.wav"
    midi_path.write_bytes(synth.midi_file(list(source.notes), source.program, source.percussion))
    command = [
        "fluidsynth", "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "0.8", "-r", str(SAMPLE_RATE),
        "-O", "float", "-T", "wav", "-F", str(wav_path), str(SOUNDFONT), str(midi_path),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return _read(wav_path)


def _speak(source: Speech, workdir: Path, name: str) -> tuple[np.ndarray, int]:
    wav_path = workdir / f"{name}.wav"
    command = [
        "espeak-ng",
        "-v",
        source.voice,
        "-s",
        str(source.words_per_minute),
        "-w",
        str(wav_path),
        source.text,
    ]
    subprocess.run(command, check=True, capture_output=True)
    return _read(wav_path)


def load_source(spec: ClipSpec, workdir: Path) -> tuple[np.ndarray, int]:
    """Mono float64 audio and its sample rate for one catalogue entry."""
    source = spec.source
    if isinstance(source, DebianFile):
        return _read(Path(source.path))
    if isinstance(source, MidiRender):
        return _render_midi(source, workdir, spec.name)
    if isinstance(source, Speech):
        return _speak(source, workdir, spec.name)
    if isinstance(source, Procedural):
        if source.generator not in synth.PROCEDURAL:
            raise KeyError(f"clip {spec.name!r}: unknown procedural generator {source.generator!r}")
        return synth.PROCEDURAL[source.generator](np.random.default_rng(source.seed)), synth.SAMPLE_RATE
    raise TypeError(f"clip {spec.name!r}: unsupported source type {type(source).__name__}")


# --- conditioning ------------------------------------------------------------------------------------


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling by the exact rational factor between the two rates."""
    if rate == target_rate:
        return audio
    ratio = Fraction(target_rate, rate)
    return resample_poly(audio, ratio.numerator, ratio.denominator)


def _frame_db(audio: np.ndarray, frame: int) -> np.ndarray:
    n = len(audio) // frame
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-12))


def active_part(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The clip from just before its onset to the end of its audible decay."""
    frame = rate // 100
    if len(audio) < frame:  # no whole analysis frame to measure, however loud the samples are
        raise ValueError(
            f"audio is too short: {len(audio)} samples ({1000 * len(audio) / rate:.2f} ms at {rate} Hz), the "
            f"minimum is one 10 ms analysis frame of {frame} samples"
        )
    levels = _frame_db(audio, frame)
    if levels.max() < -100:
        raise ValueError("audio is silent")
    loud = levels.max()
    onset = int(np.argmax(levels >= loud + ONSET_DB))
    last = len(levels) - 1 - int(np.argmax(levels[::-1] >= loud + DECAY_DB))
    start = max(0, onset * frame - rate // 200)
    return audio[start : (last + 1) * frame]


def _fade(audio: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    audio = audio.copy()
    audio[:fade_in] *= np.linspace(0.0, 1.0, fade_in)
    audio[-fade_out:] *= np.linspace(1.0, 0.0, fade_out)
    return audio


def condition(audio: np.ndarray, rate: int) -> np.ndarray:
    """1.000 s mono float32 at 44.1 kHz: trimmed to the active part (looped when shorter), faded at the
    edges against clicks, loudness-normalised to -20 dBFS RMS with the peak limited to 0.95."""
    audio = resample(np.asarray(audio, dtype=np.float64), rate, SAMPLE_RATE)
    audio = audio - audio.mean()
    active = active_part(audio)
    if len(active) < SAMPLE_RATE:
        ramp = min(len(active) // 4, SAMPLE_RATE // 200)
        cycle = _fade(active, ramp, ramp)
        active = np.tile(cycle, math.ceil(SAMPLE_RATE / len(cycle)))
    clip = _fade(active[:SAMPLE_RATE], SAMPLE_RATE // 500, SAMPLE_RATE // 100)
    clip *= 10 ** (TARGET_RMS_DBFS / 20) / np.sqrt(np.mean(clip**2))
    peak = np.abs(clip).max()
    if peak > PEAK_LIMIT:
        clip *= PEAK_LIMIT / peak
    rms = float(np.sqrt(np.mean(clip**2)))
    if not np.isfinite(clip).all() or rms < MIN_RMS:
        raise ValueError(f"conditioned clip is silent or not finite (RMS {rms:.4f})")
    return clip.astype(np.float32)


# --- splits ------------------------------------------------------------------------------------------


def split_sizes(total: int) -> dict[str, int]:
    """SoundSpaces proportions 73/11/18; exact for 102 sounds."""
    whole = sum(SPLIT_PROPORTIONS.values())
    val = round(total * SPLIT_PROPORTIONS["val"] / whole)
    test = round(total * SPLIT_PROPORTIONS["test"] / whole)
    return {"train": total - val - test, "val": val, "test": test}


def assign_splits(clips: list[tuple[str, str]], seed: int = 0) -> dict[str, list[str]]:
    """Disjoint train/val/test sound sets from (name, category) pairs.

    Held-out clips are taken one per category in turn, largest categories first, never the heard sound
    and never a category's last training clip, so that val/test sounds are unheard while their
    categories stay represented in training wherever the category has two or more clips.
    """
    rng = np.random.default_rng(seed)
    sizes = split_sizes(len(clips))
    by_category: dict[str, list[str]] = defaultdict(list)
    for name, category in clips:
        by_category[category].append(name)
    categories = sorted(by_category)
    order = rng.permutation(len(categories))
    categories = sorted((categories[i] for i in order), key=lambda c: -len(by_category[c]))
    remaining = {c: [by_category[c][i] for i in rng.permutation(len(by_category[c]))] for c in categories}
    held_out: list[str] = []
    needed = sizes["val"] + sizes["test"]
    while len(held_out) < needed:
        progressed = False
        for category in categories:
            candidates = [n for n in remaining[category] if n != HEARD_SOUND]
            if len(held_out) < needed and len(remaining[category]) > 1 and candidates:
                held_out.append(candidates[0])
                remaining[category].remove(candidates[0])
                progressed = True
        if not progressed:
            raise ValueError(f"cannot hold out {needed} sounds from {len(clips)} while keeping every category")
    held_out = [held_out[i] for i in rng.permutation(len(held_out))]
    order_of = {name: i for i, (name, _) in enumerate(clips)}
    test = sorted(held_out[: sizes["test"]], key=order_of.get)
    val = sorted(held_out[sizes["test"] :], key=order_of.get)
    train = [name for name, _ in clips if name not in set(held_out)]
    return {"heard": [HEARD_SOUND], "train": train, "val": val, "test": test}


# --- outputs -----------------------------------------------------------------------------------------


def _provenance(spec: ClipSpec, versions: dict[str, str]) -> dict[str, str]:
    source = spec.source
    if isinstance(source, DebianFile):
        return {
            "source": f"Debian package {source.package} {versions[source.package]}",
            "original_file": source.path,
            "copyright": source.copyright,
            "license": source.license,
        }
    if isinstance(source, MidiRender):
        kind = "percussion kit" if source.percussion else f"General MIDI program {source.program}"
        return {
            "source": f"rendered with FluidSynth {versions['fluidsynth']} from the FluidR3_GM soundfont "
            f"(fluid-soundfont-gm {versions['fluid-soundfont-gm']}), {kind}",
            "original_file": str(SOUNDFONT),
            "copyright": "FluidR3_GM soundfont (c) 2000-2002, 2008 Frank Wen; rendering by ASGF-Nav",
            "license": "MIT",
        }
    if isinstance(source, Speech):
        return {
            "source": f"synthesised with espeak-ng {versions['espeak-ng']}, voice {source.voice}: {source.text!r}",
            "original_file": "",
            "copyright": "ASGF-Nav contributors",
            "license": "CC0-1.0",
        }
    return {
        "source": f"procedural synthesis asgf_nav.sounds.synth.{source.generator} (seed {source.seed})",
        "original_file": "",
        "copyright": "ASGF-Nav contributors",
        "license": "CC0-1.0",
    }


def _encode_flac(clip: np.ndarray, scratch: Path) -> bytes:
    """The 16-bit FLAC file of ``clip`` (encoded through ``scratch``, a file path, as a bank file would be)."""
    sf.write(str(scratch), clip, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return scratch.read_bytes()


def source_copy(spec: ClipSpec) -> str | None:
    """Where the bank keeps the original of a copyleft clip (``sources/<package>/<file>``), or None: only
    the GPL/LGPL clips must travel with their source."""
    source = spec.source
    if not isinstance(source, DebianFile) or source.license not in LICENSE_TEXTS:
        return None
    return f"{SOURCES_DIR}/{source.package}/{Path(source.path).name}"


def read_original(spec: ClipSpec) -> bytes:
    """The original file of a clip read from a Debian package, byte for byte."""
    path = Path(spec.source.path)
    if not path.is_file():
        package = spec.source.package
        raise MissingToolsError(f"clip {spec.name!r}: original {path} (Debian package {package}) is missing")
    return path.read_bytes()


def license_files(licenses: list[str] | set[str]) -> list[str]:
    """Names of the licence-text files (in ``licenses/``) that clips under ``licenses`` must be shipped with."""
    return sorted({name for license_id in licenses for name in LICENSE_TEXTS.get(license_id, ())})


LICENSE_NOTES = """\
## Licence notes

Every clip was changed from its original: mixed down to mono, resampled to 44.1 kHz, trimmed to its
active part (short sounds repeated to fill the second), cut to exactly 1.000 s with short fades, and
loudness-normalised. `asgf_nav/sounds/curate.py` performs exactly these steps from the original files
named above, which are the preferred form for modification; the Debian source packages hold them.

- **CC-BY-3.0 / CC-BY-4.0**: free to share and adapt with credit; the credit is the copyright line above.
- **CC-BY-SA-3.0** (ShareAlike): the adapted clip is distributed under CC-BY-SA-3.0 as well; keep the
  credit and licence when you redistribute it.
- **GPL-2.0-only / GPL-2.0-or-later**: the clip may be redistributed and modified under the GPL; whoever
  redistributes it must pass on the licence text, `licenses/GPL-2.0.txt`, and the corresponding source
  with it. The source ships with the clip: the original file, byte for byte as its Debian package installs
  it, in `sources/<package>/`, and the curation script `asgf_nav/sounds/curate.py`, which turns it into
  the clip.
- **LGPL-3.0-or-later** (Oxygen sounds by Nuno Filipe Povoa, KDE): same obligations as above under
  the LGPL, and the originals ship the same way; its text, `licenses/LGPL-3.0.txt`, adds permissions to
  the GPL-3.0 in `licenses/GPL-3.0.txt`, so both texts go with the clip.
- **MIT** (FluidR3_GM soundfont by Frank Wen): renderings of its instruments. Its notice, which must
  go with the clips:

  > Copyright (c) 2000-2002, 2008 Frank Wen
  >
  > Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
  > associated documentation files (the "Software"), to deal in the Software without restriction,
  > including without limitation the rights to use, copy, modify, merge, publish, distribute,
  > sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
  > furnished to do so, subject to the following conditions:
  >
  > The above copyright notice and this permission notice shall be included in all copies or
  > substantial portions of the Software.
  >
  > THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
  > NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
  > NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
  > OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
  > CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
- **CC0-1.0**: clips synthesised by this project (procedural models, espeak-ng speech), dedicated to
  the public domain; the camera click by freesound user jdaniel1999 is also CC0.

The licences of the individual clips do not extend to the rest of ASGF-Nav, which is MIT-licensed;
the clips are separate data files aggregated with it.
"""


def attribution_markdown(records: list[dict]) -> str:
    lines = [
        "# Sound bank attribution",
        "",
        f"{len(records)} one-second mono clips (44.1 kHz FLAC). Source, copyright holder and licence of each:",
        "",
        "| clip | category | source | original file | copyright | licence |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        license_link = f"[{r['license']}]({LICENSE_URLS[r['license']]})"
        cells = [
            r["name"],
            r["category"],
            r["source"],
            r["original_file"] or "-",
            r["copyright"],
            license_link,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n\n" + LICENSE_NOTES


def _build_clips(versions: dict[str, str]) -> tuple[list[dict], dict[str, bytes]]:
    """Metadata records and FLAC bytes of every catalogue clip, made in memory: a clip that fails leaves
    nothing half-written."""
    records, encoded = [], {}
    with tempfile.TemporaryDirectory(prefix="asgf-sounds-") as tmp:
        for spec in tqdm(CLIPS, desc="curating sounds", unit="clip"):
            audio, rate = load_source(spec, Path(tmp))
            try:
                clip = condition(audio, rate)
            except ValueError as err:
                raise ValueError(f"clip {spec.name!r}: {err}") from err
            encoded[spec.name] = _encode_flac(clip, Path(tmp) / f"{spec.name}.flac")
            provenance = _provenance(spec, versions)
            records.append(
                {
                    "name": spec.name,
                    "category": spec.category,
                    "instance": spec.instance,
                    "file": f"clips/{spec.name}.flac",
                    "sha256": hashlib.sha256(encoded[spec.name]).hexdigest(),
                    **provenance,
                    "license_url": LICENSE_URLS[provenance["license"]],
                }
            )
    return records, encoded


def _read_license_texts(records: list[dict]) -> dict[str, bytes]:
    """The verbatim GPL/LGPL texts the clips' licences require, by file name in ``licenses/``."""
    texts = {}
    for name in license_files({r["license"] for r in records}):
        source = COMMON_LICENSES / _COMMON_LICENSE_FILES[name]
        if not source.is_file():
            raise MissingToolsError(f"licence text {source} (Debian package base-files) is missing; needed for {name}")
        texts[name] = source.read_bytes()
    return texts


def curate(output_dir: Path = DEFAULT_OUTPUT, seed: int = 0) -> dict[str, list[str]]:
    """Build every clip and write clips/*.flac, licenses/*.txt, the copyleft clips' originals (sources/),
    sounds.json, splits.json and ATTRIBUTION.md.

    Everything is made before anything is written, so a failing source leaves the bank in ``output_dir`` as
    it was. The clips and licence texts are then replaced file by file (each atomically) and flushed to disk
    before ``sounds.json`` records their checksums; clips no longer in the catalogue are removed last, once
    no metadata names them.
    """
    check_requirements()
    names = [c.name for c in CLIPS]
    if len(set(names)) != len(names):
        raise ValueError("catalogue has duplicate clip names")
    versions = {p: package_version(p) for p in REQUIRED_PACKAGES}
    records, encoded = _build_clips(versions)
    license_texts = _read_license_texts(records)
    originals = {path: read_original(spec) for spec in CLIPS if (path := source_copy(spec))}
    splits = assign_splits([(c.name, c.category) for c in CLIPS], seed)
    metadata = {"sample_rate": SAMPLE_RATE, "duration_s": 1.0, "clips": records}  # the heard sound: splits.json

    clip_dir = output_dir / "clips"
    for name, data in encoded.items():
        atomic_write_bytes(clip_dir / f"{name}.flac", data, durable=False)
    for name, text in license_texts.items():
        atomic_write_bytes(output_dir / LICENSE_DIR / name, text, durable=False)
    for path, data in originals.items():
        atomic_write_bytes(output_dir / path, data, durable=False)
    flush_to_disk()
    atomic_write_text(output_dir / "sounds.json", json.dumps(metadata, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(output_dir / "splits.json", json.dumps(splits, indent=1) + "\n")
    atomic_write_text(output_dir / "ATTRIBUTION.md", attribution_markdown(records))
    for stale in set(clip_dir.glob("*.flac")) - {clip_dir / f"{n}.flac" for n in names}:
        stale.unlink()
    kept = {output_dir / path for path in originals}
    for stale in {p for p in (output_dir / SOURCES_DIR).rglob("*") if p.is_file()} - kept:
        stale.unlink()
        with contextlib.suppress(OSError):  # its package's folder, once empty
            stale.parent.rmdir()
    total = sum(p.stat().st_size for p in output_dir.rglob("*") if p.is_file())
    logger.info(
        "wrote %d clips in %d categories to %s (%.2f MB); splits %s",
        len(records), len({r["category"] for r in records}), output_dir, total / 1e6,
        {k: len(v) for k, v in splits.items()},
    )  # fmt: skip
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="where to write the bank")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    args = parser.parse_args(argv)
    if args.seed < 0:  # numpy seeds only from non-negative integers
        parser.error(f"argument --seed: must be >= 0, got {args.seed}")
    setup_logging("INFO")
    try:
        curate(args.output_dir, args.seed)
    except MissingToolsError as err:
        raise SystemExit(str(err)) from err
