"""Sound bank: packaged clips, splits, attribution, resampling, errors, and the curation's pure parts."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asgf_nav.logging_utils import logging_scope
from asgf_nav.sounds import curate, synth
from asgf_nav.sounds.bank import DATA_DIR, SoundBank, SoundBankError
from asgf_nav.sounds.catalog import CLIPS, LICENSE_URLS

MIN_RMS = 0.01  # -40 dBFS


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads((DATA_DIR / "sounds.json").read_text())


def test_bank_size_and_categories(bank: SoundBank) -> None:
    assert len(bank) == 102
    assert len(bank.categories()) == 35
    assert sorted(bank.names("all")) == sorted(c.name for c in CLIPS)


def test_splits_disjoint_soundspaces_sizes_and_cover_all(bank: SoundBank) -> None:
    train, val, test = (set(bank.names(s)) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (73, 11, 18)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(bank.names("all"))
    assert bank.names("heard") == ["telephone"]
    assert "telephone" in train


def test_held_out_categories_stay_represented_in_training(bank: SoundBank) -> None:
    train_categories = Counter(bank.category(n) for n in bank.names("train"))
    for name in bank.names("val") + bank.names("test"):
        assert train_categories[bank.category(name)] >= 1, name


def test_every_clip_is_one_second_mono_finite_and_audible(metadata: dict) -> None:
    for record in metadata["clips"]:
        path = DATA_DIR / record["file"]
        info = sf.info(str(path))
        assert info.samplerate == 44100 and info.channels == 1 and info.frames == 44100, path
        audio, _ = sf.read(str(path), dtype="float32")
        assert np.isfinite(audio).all(), path
        assert np.sqrt(np.mean(audio**2)) > MIN_RMS, path
        assert np.abs(audio).max() <= 1.0, path


def test_other_instance_exists_for_every_multi_clip_category(bank: SoundBank) -> None:
    rng = np.random.default_rng(0)
    by_category = defaultdict(list)
    for name in bank.names("all"):
        by_category[bank.category(name)].append(name)
    for names in by_category.values():
        for name in names:
            other = bank.other_instance(name, rng)
            if len({bank.instance(n) for n in names}) >= 2:
                assert other is not None and other != name
                assert bank.category(other) == bank.category(name)
                assert bank.instance(other) != bank.instance(name)
            else:
                assert other is None

    # a category with no other instance in the split drawn from: none (the packaged bank has no such category
    # over all its sounds, so the split is narrowed to one the name is alone in)
    def instances(category: str, split: str) -> set[str]:
        return {bank.instance(m) for m in bank.names(split) if bank.category(m) == category}

    alone = next(
        (n, split) for split in ("train", "val", "test") for n in bank.names(split)
        if instances(bank.category(n), split) == {bank.instance(n)}
    )  # fmt: skip
    assert bank.other_instance(alone[0], rng, among=alone[1]) is None


def test_other_instance_skips_clips_of_the_same_instance(bank: SoundBank) -> None:
    # the two grand-piano renderings share an instance, so neither is a reference for the other
    assert bank.instance("piano_melody") == bank.instance("piano_chords")
    rng = np.random.default_rng(1)
    drawn = {bank.other_instance("piano_melody", rng) for _ in range(50)}
    assert "piano_chords" not in drawn and "piano_melody" not in drawn
    assert drawn <= {"melody_piano", "electric_piano"}
    assert all(bank.other_instance("telephone", rng, among="train") in bank.names("train") for _ in range(20))


def one_clip_bank(root: Path, audio: np.ndarray, file_rate: int = 44100, declared_rate: int = 44100) -> Path:
    """A bank directory holding the single sound ``tone`` (no checksum), declared ``declared_rate`` (44.1 kHz)
    and written at ``file_rate``."""
    (root / "clips").mkdir(parents=True)
    sf.write(str(root / "clips" / "tone.flac"), audio, file_rate, subtype="PCM_16")
    record = {
        "name": "tone",
        "category": "tone",
        "instance": "a",
        "file": "clips/tone.flac",
        "source": "test",
        "license": "CC0-1.0",
        "copyright": "none",
    }
    (root / "sounds.json").write_text(json.dumps({"sample_rate": declared_rate, "clips": [record]}))
    (root / "splits.json").write_text(json.dumps({"heard": ["tone"], "train": ["tone"], "val": [], "test": []}))
    return root


def test_resample_to_16k_keeps_length_and_tone_frequency(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    bank = SoundBank.load(one_clip_bank(tmp_path / "bank", 0.5 * np.sin(2 * np.pi * 1000 * t)))
    wave = bank.waveform("tone", 16000)
    assert wave.shape == (16000,) and wave.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 1000) <= 1.0
    assert np.sqrt(np.mean(wave[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert bank.waveform("tone", 44100).shape == (44100,)


def test_waveform_is_cached_and_safe_to_modify(bank: SoundBank) -> None:
    first = bank.waveform("telephone", 16000)
    first[:] = 0
    second = bank.waveform("telephone", 16000)
    assert second.shape == (16000,) and np.abs(second).max() > 0.05
    assert ("telephone", 16000) in bank._cache
    fresh = SoundBank.load()  # a whole-number float rate works the same whatever was cached before
    assert np.array_equal(fresh.waveform("telephone", 22050.0), bank.waveform("telephone", 22050))
    with pytest.raises(SoundBankError, match="whole number of Hz, got 16000.5"):
        bank.waveform("telephone", 16000.5)


def test_attribution_covers_every_clip(metadata: dict) -> None:
    text = (DATA_DIR / "ATTRIBUTION.md").read_text()
    for record in metadata["clips"]:
        assert f"| {record['name']} |" in text, record["name"]
        assert record["license"] in LICENSE_URLS, record["name"]
        assert record["license_url"] == LICENSE_URLS[record["license"]]
        assert record["copyright"] and record["source"], record["name"]
    for license_id in ("CC-BY-SA-3.0", "GPL-2.0-or-later", "LGPL-3.0-or-later"):
        assert license_id in text.split("## Licence notes")[1]


def test_committed_splits_and_attribution_are_what_the_curation_writes(metadata: dict) -> None:
    splits = json.loads((DATA_DIR / "splits.json").read_text())
    assert splits == curate.assign_splits([(c.name, c.category) for c in CLIPS], seed=0)
    assert (DATA_DIR / "ATTRIBUTION.md").read_text() == curate.attribution_markdown(metadata["clips"])


def test_every_clip_reads_through_the_bank_with_its_checksum(metadata: dict) -> None:
    bank = SoundBank.load()  # a fresh bank: nothing cached, so every file is hashed and decoded
    assert all(record.get("sha256") for record in metadata["clips"])
    for name in bank.names("all"):
        assert bank.waveform(name).shape == (44100,), name


def test_copyleft_clips_ship_the_licence_texts_they_require(metadata: dict) -> None:
    notes = (DATA_DIR / "ATTRIBUTION.md").read_text().split("## Licence notes")[1]
    copyleft = {r["license"] for r in metadata["clips"] if re.match(r"L?GPL-", r["license"])}
    assert copyleft == {"GPL-2.0-only", "GPL-2.0-or-later", "LGPL-3.0-or-later"}
    for license_id in copyleft:
        family, version = re.match(r"(L?GPL)-(\d\.\d)", license_id).groups()
        needed = {f"{family}-{version}.txt": (family, version)}
        if family == "LGPL":  # the LGPL-3.0 only adds permissions to the GPL-3.0, so both texts are needed
            needed["GPL-3.0.txt"] = ("GPL", "3.0")
        for file_name, (kind, number) in needed.items():
            path = DATA_DIR / "licenses" / file_name
            assert path.is_file(), f"{license_id}: {path} is missing"
            title = "GNU LESSER GENERAL PUBLIC LICENSE" if kind == "LGPL" else "GNU GENERAL PUBLIC LICENSE"
            head = " ".join(path.read_text().split()[:12])
            assert head.startswith(title) and f"Version {number[0]}," in head, path
            assert f"licenses/{file_name}" in notes, file_name
        assert set(needed) <= set(curate.license_files([license_id])), license_id


def test_copyleft_clips_ship_their_corresponding_source(metadata: dict) -> None:
    """The GPL/LGPL clips travel with their source: the original file, which the curation's own steps turn
    into the shipped clip (to within one 16-bit step: decoders of the original may round differently)."""
    licenses = {r["name"]: r["license"] for r in metadata["clips"]}
    copies = {spec.name: curate.source_copy(spec) for spec in CLIPS if curate.source_copy(spec)}
    assert set(copies) == {name for name, license_id in licenses.items() if re.match(r"L?GPL-", license_id)}
    shipped = {p.relative_to(DATA_DIR).as_posix() for p in (DATA_DIR / curate.SOURCES_DIR).rglob("*") if p.is_file()}
    assert shipped == set(copies.values())
    for name, path in copies.items():
        audio, rate = sf.read(DATA_DIR / path, dtype="float64", always_2d=True)
        clip = curate.condition(audio.mean(axis=1), rate)
        packaged, _ = sf.read(DATA_DIR / "clips" / f"{name}.flac", dtype="float64")
        assert np.abs(packaged - clip).max() <= 1.01 / 32768, name
    notes = (DATA_DIR / "ATTRIBUTION.md").read_text().split("## Licence notes")[1]
    assert "`sources/<package>/`" in notes and "asgf_nav/sounds/curate.py" in notes


def test_a_missing_original_is_named_with_its_package(tmp_path: Path) -> None:
    from dataclasses import replace

    telephone = next(spec for spec in CLIPS if spec.name == "telephone")
    moved = replace(telephone, source=replace(telephone.source, path=str(tmp_path / "phone-incoming-call.oga")))
    named = r"'telephone'.*phone-incoming-call\.oga.*sound-theme-freedesktop"
    with pytest.raises(curate.MissingToolsError, match=named):
        curate.read_original(moved)


def test_mit_clips_carry_the_soundfont_notice(metadata: dict) -> None:
    """The MIT licence asks that its permission notice go with every copy, not only a link to it."""
    notes = " ".join((DATA_DIR / "ATTRIBUTION.md").read_text().split("## Licence notes")[1].replace(">", " ").split())
    mit = [r for r in metadata["clips"] if r["license"] == "MIT"]
    assert mit and all("Frank Wen" in r["copyright"] for r in mit)
    assert "Copyright (c) 2000-2002, 2008 Frank Wen" in notes
    assert "The above copyright notice and this permission notice shall be included in all copies" in notes


@pytest.fixture
def fake_curation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int]:
    """Curation without the Debian tools: noise for every source (a different noise than the committed
    clips), licence texts from a temporary folder; the returned counter tells which source fails."""
    texts = tmp_path / "common-licenses"
    texts.mkdir()
    for name in ("GPL-2", "GPL-3", "LGPL-3"):
        (texts / name).write_text(f"text of {name}\n")
    monkeypatch.setattr(curate, "COMMON_LICENSES", texts, raising=False)
    monkeypatch.setattr(curate, "check_requirements", lambda: None)
    monkeypatch.setattr(curate, "package_version", lambda package: "0-test")
    state = {"calls": 0, "fail_at": 0}

    def load_source(spec: curate.ClipSpec, workdir: Path) -> tuple[np.ndarray, int]:
        state["calls"] += 1
        if state["calls"] == state["fail_at"]:
            raise RuntimeError(f"cannot read source audio of {spec.name}")
        return 0.1 * np.random.default_rng(state["calls"]).standard_normal(22050), 22050

    monkeypatch.setattr(curate, "load_source", load_source)
    monkeypatch.setattr(curate, "read_original", lambda spec: f"original of {spec.name}".encode())
    return state


def test_failed_curation_leaves_the_bank_untouched(tmp_path: Path, fake_curation: dict[str, int]) -> None:
    root = tmp_path / "bank"
    shutil.copytree(DATA_DIR, root)
    before = {p.name: p.read_bytes() for p in (root / "clips").iterdir()}
    fake_curation["fail_at"] = 5
    with pytest.raises(RuntimeError, match="source audio"):
        curate.curate(root)
    assert {p.name: p.read_bytes() for p in (root / "clips").iterdir()} == before
    bank = SoundBank.load(root)
    for name in bank.names("all"):
        bank.waveform(name)  # every checksum still matches


def test_curation_writes_a_loadable_bank_with_its_licence_texts(tmp_path: Path, fake_curation: dict[str, int]) -> None:
    root = tmp_path / "bank"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "stale.flac").write_bytes(b"left over from an older catalogue")
    (root / "sources" / "old-package").mkdir(parents=True)
    (root / "sources" / "old-package" / "stale.oga").write_bytes(b"a clip no longer in the catalogue")
    curate.curate(root)
    assert sorted(p.name for p in (root / "licenses").iterdir()) == ["GPL-2.0.txt", "GPL-3.0.txt", "LGPL-3.0.txt"]
    telephone = next(spec for spec in CLIPS if spec.name == "telephone")
    assert (root / curate.source_copy(telephone)).read_bytes() == b"original of telephone"
    assert not (root / "sources" / "old-package").exists()
    assert (root / "licenses" / "LGPL-3.0.txt").read_text() == "text of LGPL-3\n"
    assert not (root / "clips" / "stale.flac").exists()
    bank = SoundBank.load(root)
    assert len(bank) == len(CLIPS) and bank.waveform("telephone").shape == (44100,)
    metadata = json.loads((root / "sounds.json").read_text())
    assert (root / "ATTRIBUTION.md").read_text() == curate.attribution_markdown(metadata["clips"])


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value))


def test_malformed_bank_files_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    shutil.copytree(DATA_DIR, root, ignore=shutil.ignore_patterns("*.flac", "*.txt", "*.md"))
    splits = json.loads((root / "splits.json").read_text())
    cases = [
        ("sounds.json", [], r"sounds\.json.*must hold a JSON object"),
        ("splits.json", [splits], r"splits\.json.*must hold a JSON object"),
        ("splits.json", {**splits, "heard": "telephone"}, r"splits\.json.*'heard'.*list of sound names"),
        ("splits.json", {**splits, "heard": []}, r"splits\.json.*'heard' split is empty"),
        ("splits.json", {**splits, "val": splits["val"] + [splits["train"][0]]},
         rf"splits\.json.*'train' and 'val' share.*{splits['train'][0]}"),
        ("splits.json", {**splits, "test": splits["test"] + [splits["val"][0]]},
         rf"splits\.json.*'val' and 'test' share.*{splits['val'][0]}"),
    ]  # fmt: skip
    originals = {name: (root / name).read_text() for name in ("sounds.json", "splits.json")}
    for file_name, value, message in cases:
        write_json(root / file_name, value)
        with pytest.raises(SoundBankError, match=message):
            SoundBank.load(root)
        (root / file_name).write_text(originals[file_name])
    SoundBank.load(root)


@pytest.mark.parametrize(
    ("audio", "message"),
    [(np.zeros(44100), r"'tone'.*silent.*tone\.flac"), (np.full(100, 0.1), r"'tone'.*100 samples.*44100.*tone\.flac")],
    ids=["silent", "short"],
)
def test_silent_or_short_clips_are_reported(tmp_path: Path, audio: np.ndarray, message: str) -> None:
    bank = SoundBank.load(one_clip_bank(tmp_path / "bank", audio))
    with pytest.raises(SoundBankError, match=message):
        bank.waveform("tone", 16000)


def test_total_data_size_at_most_10_mb() -> None:
    total = sum(p.stat().st_size for p in DATA_DIR.rglob("*") if p.is_file())
    assert total <= 10 * 1024 * 1024


def test_errors_name_the_bad_sound_and_split(bank: SoundBank) -> None:
    with pytest.raises(SoundBankError, match="telephon_x"):
        bank.waveform("telephon_x")
    with pytest.raises(SoundBankError, match="did you mean"):
        bank.category("telephon")
    with pytest.raises(SoundBankError, match="'validation'.*heard.*train.*val.*test.*all"):
        bank.names("validation")


def test_missing_and_corrupt_files_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    shutil.copytree(DATA_DIR, root)
    (root / "clips" / "fan.flac").unlink()
    (root / "clips" / "rain.flac").write_bytes(b"not a flac file")
    bank = SoundBank.load(root)
    with pytest.raises(SoundBankError, match=r"'fan'.*missing.*fan\.flac"):
        bank.waveform("fan")
    with pytest.raises(SoundBankError, match=r"'rain'.*corrupt.*rain\.flac"):
        bank.waveform("rain")
    bank.check_files(n for n in bank.names("all") if n not in ("fan", "rain"))  # the checks a run starts with
    for name in ("fan", "rain"):
        with pytest.raises(SoundBankError, match=rf"'{name}'.*{name}\.flac"):
            bank.check_files(["telephone", name])
    (root / "splits.json").write_text(json.dumps({"heard": ["nope"], "train": [], "val": [], "test": []}))
    with pytest.raises(SoundBankError, match="nope"):
        SoundBank.load(root)
    with pytest.raises(SoundBankError, match="missing"):
        SoundBank.load(tmp_path / "absent")


def test_split_assignment_is_deterministic_and_proportional() -> None:
    clips = [(f"s{i}", f"c{i % 34}") for i in range(102)]
    clips[0] = ("telephone", "c0")
    first, second = curate.assign_splits(clips, seed=3), curate.assign_splits(clips, seed=3)
    assert first == second
    assert [len(first[s]) for s in ("train", "val", "test")] == [73, 11, 18]
    assert "telephone" in first["train"]
    assert curate.split_sizes(204) == {"train": 146, "val": 22, "test": 36}


def test_conditioning_trims_loops_and_normalises() -> None:
    rate = 22050
    burst = np.zeros(rate * 2)
    burst[rate // 2 : rate // 2 + rate // 10] = np.sin(2 * np.pi * 500 * np.arange(rate // 10) / rate)
    clip = curate.condition(burst, rate)
    assert clip.shape == (44100,) and clip.dtype == np.float32
    frames = clip.reshape(100, 441)
    active = np.sqrt(np.mean(frames**2, axis=1)) > 0.01
    assert active[:5].all() and active.mean() > 0.7  # starts at the onset and repeats the short burst
    assert np.sqrt(np.mean(clip**2)) == pytest.approx(0.1, rel=0.05)
    with pytest.raises(ValueError, match="silent"):
        curate.condition(np.zeros(rate), rate)


def test_a_clip_shorter_than_one_analysis_frame_is_too_short_not_silent() -> None:
    """A loud clip under 10 ms has no whole frame to measure: the error names its length and the minimum."""
    loud = np.full(400, 0.9)  # 9.07 ms at 44.1 kHz, one frame is 441 samples
    with pytest.raises(ValueError, match=r"too short: 400 samples \(9\.07 ms at 44100 Hz\).* 441 samples"):
        curate.active_part(loud, 44100)
    with pytest.raises(ValueError, match="too short"):
        curate.active_part(np.zeros(0), 44100)
    assert len(curate.active_part(np.full(441, 0.9), 44100)) == 441  # one whole frame is enough
    with pytest.raises(ValueError, match="silent"):
        curate.active_part(np.zeros(441), 44100)


def test_procedural_generators_are_deterministic_and_nonsilent() -> None:
    for name, generate in synth.PROCEDURAL.items():
        a, b = generate(np.random.default_rng(7)), generate(np.random.default_rng(7))
        assert np.array_equal(a, b), name
        assert np.isfinite(a).all() and np.sqrt(np.mean(a**2)) > 1e-3, name


def test_midi_file_structure() -> None:
    data = synth.midi_file([(0.0, 0.5, 60, 100), (0.5, 0.5, 64, 90)], program=40)
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    assert bytes([0xC0, 40]) in data and data.endswith(b"\xff\x2f\x00")
    with pytest.raises(ValueError, match="128"):
        synth.midi_file([], program=128)


def test_missing_tools_name_the_apt_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(curate.REQUIRED_PACKAGES, "no-such-sound-package", "/nonexistent/sound.ogg")
    with pytest.raises(curate.MissingToolsError, match="apt-get install -y .*no-such-sound-package"):
        curate.check_requirements()


def test_train_and_test_splits_that_share_a_sound_are_refused(tmp_path):
    from asgf_nav.sounds.bank import DATA_DIR, SoundBank, SoundBankError

    root = tmp_path / "bank"
    shutil.copytree(DATA_DIR, root, ignore=shutil.ignore_patterns("*.flac", "*.txt", "*.md"))
    splits = json.loads((root / "splits.json").read_text())
    leaked = splits["train"][0]
    (root / "splits.json").write_text(json.dumps({**splits, "test": splits["test"] + [leaked]}))
    with pytest.raises(SoundBankError, match=rf"'train' and 'test' share.*{leaked}"):
        SoundBank.load(root)


def test_a_clip_at_another_rate_than_the_bank_declares_is_refused(tmp_path):
    from asgf_nav.sounds.bank import SoundBank, SoundBankError

    t = np.arange(44100) / 22050  # 44100 samples, so only the rate is wrong
    root = one_clip_bank(tmp_path / "bank", 0.5 * np.sin(2 * np.pi * 500 * t), file_rate=22050)
    with pytest.raises(SoundBankError, match="sample rate 22050"):
        SoundBank.load(root).waveform("tone", 16000)


def test_a_stereo_clip_is_read_as_the_mean_of_its_channels(tmp_path):
    from asgf_nav.sounds.bank import SoundBank

    tone = np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
    root = one_clip_bank(tmp_path / "bank", np.stack([0.5 * tone, 0.1 * tone], axis=1))
    np.testing.assert_allclose(SoundBank.load(root).waveform("tone", 44100), 0.3 * tone, atol=1e-3)


def test_active_part_keeps_a_quiet_tail_down_to_minus_50_db():
    """The active part ends at DECAY_DB (-50 dB), keeping decay tails. 0.1 s of a 1 kHz sine at amplitude 1
    (-3 dB per 10 ms frame), then 0.5 s at 0.01 (-43 dB), then silence: frames 0..59, 60 x 441 samples."""
    from asgf_nav.sounds import curate

    rate = 44100
    t = np.arange(rate) / rate
    x = np.sin(2 * np.pi * 1000 * t)
    x[4410:26460] *= 0.01
    x[26460:] = 0.0
    active = curate.active_part(x, rate)
    assert len(active) == 26460


def test_active_part_starts_five_ms_before_the_onset_frame():
    """The active part starts 5 ms before the onset frame, keeping the attack. A step to 1.0 at sample 4410
    (the start of frame 10): the part starts at 4410 - 220 = 4190."""
    from asgf_nav.sounds import curate

    rate = 44100
    x = np.zeros(rate)
    x[4410:8820] = 1.0
    active = curate.active_part(x, rate)
    assert np.flatnonzero(active)[0] == 220
    assert len(active) == 8820 - 4190


def test_conditioning_limits_the_peak_of_a_spiky_clip():
    """Ten unit clicks in one second, normalised to 0.1 RMS, would peak near 0.1 / sqrt(9 / 44100) ~ 7: the
    limiter brings the peak down to 0.95."""
    from asgf_nav.sounds import curate

    rate = 44100
    x = np.zeros(rate)
    x[2205::4410] = 1.0  # ten clicks, away from the edge fades
    clip = curate.condition(x, rate)
    assert float(np.abs(clip).max()) == pytest.approx(0.95, abs=1e-6)
    assert float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) < 0.1  # limiting lowered the RMS


def test_conditioning_removes_a_dc_offset():
    """A source with a DC offset (0.5 + a 0.1 sine) is conditioned to a centred sine at 0.1 RMS."""
    from asgf_nav.sounds import curate

    rate = 44100
    t = np.arange(rate) / rate
    clip = curate.condition(0.5 + 0.1 * np.sin(2 * np.pi * 440 * t), rate)
    assert abs(float(clip.mean())) < 1e-3
    assert float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) == pytest.approx(0.1, rel=0.02)


def test_split_assignment_never_holds_out_the_last_clip_of_a_category():
    """A one-clip category keeps its clip in training. 10 clips: val = round(10*11/102) = 1,
    test = round(10*18/102) = 2; all three held-out clips come from category 'a' (8 clips)."""
    from asgf_nav.sounds import curate

    clips = [("telephone", "phone")] + [(f"a{i}", "a") for i in range(8)] + [("solo", "b")]
    for seed in range(5):
        splits = curate.assign_splits(clips, seed=seed)
        assert (len(splits["val"]), len(splits["test"])) == (1, 2)
        assert "solo" in splits["train"] and "telephone" in splits["train"], seed
        assert all(name.startswith("a") for name in splits["val"] + splits["test"]), seed


def test_midi_file_bytes_and_timing():
    """The whole MIDI file against a hand-assembled one: 120 bpm and 480 ticks a beat make 0.5 s = 480 ticks
    (variable-length 0x83 0x60); a note-off sorts before a note-on at the same tick."""
    from asgf_nav.sounds import synth

    data = synth.midi_file([(0.0, 0.5, 60, 100), (0.5, 0.5, 64, 90)], program=40)
    track = bytes(
        [0x00, 0xC0, 40,
         0x00, 0x90, 60, 100,
         0x83, 0x60, 0x80, 60, 0,
         0x00, 0x90, 64, 90,
         0x83, 0x60, 0x80, 64, 0,
         0x83, 0x60, 0xFF, 0x2F, 0x00]
    )  # fmt: skip
    header = b"MThd" + bytes([0, 0, 0, 6, 0, 0, 0, 1, 0x01, 0xE0])  # format 0, one track, 480 ticks a beat
    assert data == header + b"MTrk" + len(track).to_bytes(4, "big") + track


def test_catalogue_licences_match_the_committed_bank():
    """Every committed clip's licence, copyright and original file are what the catalogue that curation
    writes them from says."""
    import json
    from collections import defaultdict

    from asgf_nav.sounds import curate
    from asgf_nav.sounds.bank import DATA_DIR
    from asgf_nav.sounds.catalog import CLIPS

    committed = {r["name"]: r for r in json.loads((DATA_DIR / "sounds.json").read_text())["clips"]}
    versions = defaultdict(lambda: "any")
    assert set(committed) == {spec.name for spec in CLIPS}
    for spec in CLIPS:
        made = curate._provenance(spec, versions)
        record = committed[spec.name]
        assert (made["license"], made["copyright"], made["original_file"]) == (
            record["license"], record["copyright"], record["original_file"],
        ), spec.name  # fmt: skip
        assert (record["category"], record["instance"]) == (spec.category, spec.instance), spec.name


def test_committed_sources_name_the_catalogue_program_kit_or_seed() -> None:
    """Each committed clip's source line is what the catalogue entry says (its General MIDI program or
    percussion kit, its procedural generator and seed), whatever the tool versions were."""
    committed = {r["name"]: r["source"] for r in json.loads((DATA_DIR / "sounds.json").read_text())["clips"]}
    versions = defaultdict(lambda: "VERSION")
    for spec in CLIPS:
        made = curate._provenance(spec, versions)["source"]
        pattern = re.escape(made).replace("VERSION", r"\S+")
        assert re.fullmatch(pattern, committed[spec.name]), (spec.name, made, committed[spec.name])
    assert "General MIDI program 40" in committed["violin"]
    assert committed["drums_rock_beat"].endswith("percussion kit")
    assert committed["rain"].endswith("(seed 108)")


def test_catalogue_strums_end_together_and_melodies_keep_their_legato() -> None:
    """A strummed chord's notes start ``spread`` apart and all end at the next chord; a melody note lasts its
    legato share of the step (0.95 by default, 1.0 for bowed strings)."""
    notes = {spec.name: spec.source.notes for spec in CLIPS if spec.name in ("guitar_steel", "kalimba", "violin")}
    strum = notes["guitar_steel"]  # chords of 6 then 5 strings, 0.5 s apart, spread 15 ms
    starts = [0.015 * j for j in range(6)] + [0.5 + 0.015 * j for j in range(5)]
    assert [start for start, *_ in strum] == pytest.approx(starts)
    assert [start + duration for start, duration, *_ in strum] == pytest.approx([0.5] * 6 + [1.0] * 5)
    for name, step, legato, count in (("kalimba", 0.17, 0.95, 6), ("violin", 0.24, 1.0, 5)):
        assert [start for start, *_ in notes[name]] == pytest.approx([step * i for i in range(count)]), name
        assert [duration for _, duration, *_ in notes[name]] == pytest.approx([step * legato] * count), name


def test_a_stereo_debian_source_is_read_as_the_mean_of_its_channels(tmp_path: Path) -> None:
    """A stereo recording is mixed down to mono as the mean of its two channels, not one channel."""
    t = np.arange(4410) / 44100
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 660 * t)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    spec = curate.ClipSpec("stereo", "test", "a", curate.DebianFile("pkg", str(path), "nobody", "CC0-1.0"))
    audio, rate = curate.load_source(spec, tmp_path)
    assert rate == 44100
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-6)


def test_a_short_sound_is_looped_with_each_cycle_faded_out() -> None:
    """A 0.1 s tone is repeated to fill the second; every repeat ends in a 5 ms fade to silence, so the loop
    seams do not click. The active part is 220 samples before the onset plus the 4410-sample tone."""
    rate = 44100
    x = np.zeros(rate)
    x[4410:8820] = np.sin(2 * np.pi * 1000 * np.arange(4410) / rate)
    clip = curate.condition(x, rate)
    cycle = 220 + 4410
    peak = np.abs(clip).max()
    for k in range(1, 9):  # the end of each of the first eight cycles
        end = k * cycle
        assert np.abs(clip[end - 20 : end]).max() <= 0.1 * peak, k
        assert np.abs(clip[end - 400 : end - 300]).max() >= 0.9 * peak, k


def test_curation_refuses_a_catalogue_with_duplicate_names(
    tmp_path: Path, fake_curation: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two catalogue entries of one name would overwrite each other's clip: curation refuses before writing."""
    monkeypatch.setattr(curate, "CLIPS", (*CLIPS, CLIPS[5]))
    root = tmp_path / "bank"
    with pytest.raises(ValueError, match="duplicate clip names"):
        curate.curate(root)
    assert not root.exists() and fake_curation["calls"] == 0


def test_attribution_escapes_a_pipe_inside_a_cell() -> None:
    """A '|' inside a copyright line is escaped, so the table row keeps its six cells."""
    record = {
        "name": "x",
        "category": "c",
        "source": "s",
        "original_file": "",
        "copyright": "Alice | Bob",
        "license": "CC0-1.0",
    }
    row = curate.attribution_markdown([record]).splitlines()[6]
    assert row == "| x | c | s | - | Alice \\| Bob | [CC0-1.0](https://creativecommons.org/publicdomain/zero/1.0/) |"


def test_split_sizes_round_to_the_nearest_whole_sound() -> None:
    """14 sounds: val = 14 * 11 / 102 = 1.51 -> 2 and test = 14 * 18 / 102 = 2.47 -> 2, the rest train."""
    assert curate.split_sizes(14) == {"train": 10, "val": 2, "test": 2}
    assert curate.split_sizes(5) == {"train": 3, "val": 1, "test": 1}  # 0.54 -> 1 and 0.88 -> 1


def bank_records(root: Path) -> list[dict]:
    return json.loads((root / "sounds.json").read_text())["clips"]


def test_clip_records_with_a_repeated_name_or_a_missing_key_are_refused(tmp_path: Path) -> None:
    """sounds.json naming a clip twice, or a clip record without its instance, is a SoundBankError naming it."""
    root = one_clip_bank(tmp_path / "bank", 0.1 * np.ones(44100))
    record = bank_records(root)[0]
    write_json(root / "sounds.json", {"sample_rate": 44100, "clips": [record, {**record, "category": "other"}]})
    with pytest.raises(SoundBankError, match=r"clip name 'tone' appears twice"):
        SoundBank.load(root)
    incomplete = {k: v for k, v in record.items() if k != "instance"}
    write_json(root / "sounds.json", {"sample_rate": 44100, "clips": [incomplete]})
    with pytest.raises(SoundBankError, match=r"clip #0 lacks keys \['instance'\]"):
        SoundBank.load(root)


def test_a_test_split_naming_an_unknown_sound_is_refused(tmp_path: Path) -> None:
    """Every split, the test split too, may only name sounds of the bank."""
    root = one_clip_bank(tmp_path / "bank", 0.1 * np.ones(44100))
    write_json(root / "splits.json", {"heard": ["tone"], "train": ["tone"], "val": [], "test": ["nope"]})
    with pytest.raises(SoundBankError, match=r"split 'test' names unknown sounds \['nope'\]"):
        SoundBank.load(root)


def test_a_clip_quieter_than_minus_80_dbfs_is_silent(tmp_path: Path) -> None:
    """A clip of +-2 16-bit steps (RMS 6.1e-5, below the 1e-4 floor) is refused as silent; +-4 steps
    (RMS 1.2e-4) is a sound."""
    pattern = np.resize([1.0, -1.0], 44100)
    quiet = SoundBank.load(one_clip_bank(tmp_path / "quiet", 2 / 32768 * pattern))
    with pytest.raises(SoundBankError, match=r"'tone' is silent \(RMS 6.1e-05\)"):
        quiet.waveform("tone")
    audible = SoundBank.load(one_clip_bank(tmp_path / "audible", 4 / 32768 * pattern))
    assert np.sqrt(np.mean(audible.waveform("tone").astype(np.float64) ** 2)) == pytest.approx(4 / 32768)


def test_a_bank_declared_at_22050_hz_reads_and_resamples_its_clips(tmp_path: Path) -> None:
    """A bank whose sounds.json declares 22.05 kHz holds 22050-sample clips; they read at that rate and
    resample to 44.1 kHz keeping their tone."""
    t = np.arange(22050) / 22050
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    bank = SoundBank.load(one_clip_bank(tmp_path / "bank", tone, file_rate=22050, declared_rate=22050))
    assert bank.sample_rate == 22050
    np.testing.assert_allclose(bank.waveform("tone", 22050), tone, atol=1e-4)
    upsampled = bank.waveform("tone", 44100)
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(44100) / 44100)
    np.testing.assert_allclose(upsampled[1000:-1000], expected[1000:-1000], atol=5e-3)


def test_split_names_are_a_copy_the_caller_may_change() -> None:
    """Changing the list that names() returns leaves the bank's splits as they were."""
    bank = SoundBank.load()
    train = bank.names("train")
    train.clear()
    assert len(bank.names("train")) == 73


def test_other_instance_draws_every_candidate() -> None:
    """The reference prompt is drawn among all clips of the category with another instance, not always the
    first: for piano_melody both other piano instances come up."""
    bank = SoundBank.load()
    rng = np.random.default_rng(0)
    assert {bank.other_instance("piano_melody", rng) for _ in range(60)} == {"melody_piano", "electric_piano"}


@pytest.mark.parametrize("rate", [0, -16000])
def test_a_sample_rate_that_is_not_positive_is_refused(bank: SoundBank, rate: int) -> None:
    """A zero or negative sample rate is a SoundBankError naming the rule, not an error from the resampler."""
    with pytest.raises(SoundBankError, match=rf"positive whole number of Hz, got {rate}"):
        bank.waveform("telephone", rate)


def test_a_ten_ms_click_is_looped_with_fades_of_a_quarter_of_its_length() -> None:
    """A cycle shorter than 20 ms fades over a quarter of its length (not the full 5 ms), so its middle half
    keeps its level: a 441-sample 1 kHz burst at the very start loops with samples 110..330 of each repeat
    unchanged up to the normalising gain."""
    rate = 44100
    burst = np.sin(2 * np.pi * 1000 * np.arange(441) / rate)
    x = np.zeros(rate)
    x[:441] = burst
    clip = curate.condition(x, rate).astype(np.float64)
    body = np.arange(110, 331)
    body = body[np.abs(burst[body]) > 0.5]
    for k in (1, 2, 50):  # repeats away from the clip's own edge fades
        gains = clip[k * 441 + body] / burst[body]
        assert gains.max() - gains.min() <= 1e-3 * np.abs(gains).mean(), k


def test_a_split_naming_a_non_string_is_refused_as_malformed(tmp_path: Path) -> None:
    """A split entry that is not a sound name (a number) is reported as a malformed split, not as an unknown sound."""
    root = one_clip_bank(tmp_path / "bank", 0.1 * np.ones(44100))
    write_json(root / "splits.json", {"heard": ["tone"], "train": ["tone", 7], "val": [], "test": []})
    with pytest.raises(SoundBankError, match=r"the 'train' split must be a list of sound names, got \['tone', 7\]"):
        SoundBank.load(root)


def test_categories_are_listed_in_sorted_order() -> None:
    """categories() is sorted, so a category's index (a DoA classifier label) is the same in every process."""
    categories = SoundBank.load().categories()
    assert categories == sorted({spec.category for spec in CLIPS})
    assert categories[:5] == ["alarm", "applause", "appliance", "beeper", "bell"]


def test_other_instance_is_reproducible_with_a_seeded_generator() -> None:
    """Two generators of one seed draw the same reference prompts: the caller's generator is the one used."""
    bank = SoundBank.load()
    first, second = np.random.default_rng(11), np.random.default_rng(11)
    draws = [bank.other_instance("piano_melody", first) for _ in range(30)]
    assert draws == [bank.other_instance("piano_melody", second) for _ in range(30)]
    assert set(draws) == {"melody_piano", "electric_piano"}


def test_an_undecodable_clip_without_a_checksum_is_a_sound_bank_error(tmp_path: Path) -> None:
    """A clip file that libsndfile cannot decode (and that no checksum caught) is a SoundBankError naming it."""
    root = one_clip_bank(tmp_path / "bank", 0.1 * np.ones(44100))
    (root / "clips" / "tone.flac").write_bytes(b"not audio at all")
    with pytest.raises(SoundBankError, match=r"'tone' cannot be decoded: .*tone\.flac"):
        SoundBank.load(root).waveform("tone")


def test_a_clip_holding_nan_samples_is_refused(tmp_path: Path) -> None:
    """A float clip with NaN samples (its RMS is NaN, so the silence check passes it) is refused as non-finite."""
    root = one_clip_bank(tmp_path / "bank", 0.1 * np.ones(44100))
    audio = np.full(44100, 0.1, dtype=np.float32)
    audio[1000] = np.nan
    sf.write(str(root / "clips" / "tone.flac"), audio, 44100, format="WAV", subtype="FLOAT")
    with pytest.raises(SoundBankError, match=r"'tone' holds non-finite samples"):
        SoundBank.load(root).waveform("tone")


def test_a_clip_longer_than_one_second_is_refused_not_cut(tmp_path: Path) -> None:
    """A 2 s clip is an error naming its 88200 samples, not silently cut to its first second."""
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(88200) / 44100)
    bank = SoundBank.load(one_clip_bank(tmp_path / "bank", tone))
    with pytest.raises(SoundBankError, match=r"'tone' has 88200 samples; a bank clip is exactly 1 s, 44100 samples"):
        bank.waveform("tone")


def test_catalogue_midi_notes_are_valid_midi() -> None:
    """Every catalogue MIDI note has a pitch in 0..127, a velocity in 1..127 (a MIDI data byte, and a
    note-on of velocity 0 is a note-off), a positive duration and a start at or after 0 s."""
    for spec in CLIPS:
        if isinstance(spec.source, curate.MidiRender):
            for start, duration, pitch, velocity in spec.source.notes:
                assert 0 <= pitch <= 127 and 1 <= velocity <= 127, (spec.name, pitch, velocity)
                assert duration > 0 and start >= 0.0, (spec.name, start, duration)


def test_sustained_midi_sounds_are_held_past_the_one_second_clip() -> None:
    """The renders whose notes all start together hold them longer than the clip, so the second is one
    sustained sound rather than a shorter note looped with fades."""
    sustained = {
        spec.name: spec.source.notes
        for spec in CLIPS
        if isinstance(spec.source, curate.MidiRender) and all(start == 0.0 for start, *_ in spec.source.notes)
    }
    assert set(sustained) == {"telephone_gm", "church_organ", "bird_tweet", "seashore", "helicopter", "applause"}
    for name, notes in sustained.items():
        assert min(duration for _, duration, *_ in notes) > 1.0, name


def test_required_packages_are_probed_as_files_or_as_programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe with a leading '/' is a file that must exist; any other probe is a program looked up on PATH."""
    probe = tmp_path / "installed.ogg"
    probe.write_bytes(b"")
    packages = {"file-package": str(probe), "program-package": "sh"}
    monkeypatch.setattr(curate, "REQUIRED_PACKAGES", packages)
    curate.check_requirements()  # both present
    packages["absent-package"] = "no-such-program-of-asgf-nav"
    with pytest.raises(curate.MissingToolsError, match=r"not installed: absent-package\n"):
        curate.check_requirements()


def test_midi_sources_render_dry_at_44_1_khz_on_their_own_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drum part is written on MIDI channel 10 and FluidSynth renders it dry (no reverb, no chorus) at 44.1 kHz
    in float; the rendered file is what the source reads."""
    calls: list[tuple[list[str], bytes]] = []

    def fake_fluidsynth(command: list[str], **kwargs: object) -> None:
        calls.append((list(command), Path(command[-1]).read_bytes()))
        sf.write(command[command.index("-F") + 1], np.full(441, 0.25), 44100, subtype="FLOAT")

    monkeypatch.setattr(curate.subprocess, "run", fake_fluidsynth)
    source = curate.MidiRender(0, ((0.0, 0.25, 36, 100),), percussion=True)
    audio, rate = curate.load_source(curate.ClipSpec("kick", "drums", "kit", source), tmp_path)
    assert rate == 44100 and np.allclose(audio, 0.25)
    (command, midi), *_ = calls
    options = set(zip(command, command[1:]))
    assert {("-R", "0"), ("-C", "0"), ("-r", "44100"), ("-O", "float")} <= options
    assert bytes([0x99, 36, 100]) in midi and bytes([0x89, 36, 0]) in midi  # note on and off on channel 10


def test_speech_sources_use_their_voice_and_speaking_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """espeak-ng speaks the text with the source's voice at its words per minute."""
    calls: list[list[str]] = []

    def fake_espeak(command: list[str], **kwargs: object) -> None:
        calls.append(list(command))
        sf.write(command[command.index("-w") + 1], np.full(441, 0.25), 22050, subtype="FLOAT")

    monkeypatch.setattr(curate.subprocess, "run", fake_espeak)
    source = curate.Speech("en-us+m1", "hello there", words_per_minute=120)
    _, rate = curate.load_source(curate.ClipSpec("hello", "speech", "m1", source), tmp_path)
    assert rate == 22050
    options = set(zip(calls[0], calls[0][1:]))
    assert {("-v", "en-us+m1"), ("-s", "120")} <= options and calls[0][-1] == "hello there"


def test_a_near_silent_source_is_refused_not_amplified() -> None:
    """A source 120 dB down (a 1e-6 sine, frame level -123 dBFS) is silent rather than raised 100 dB to -20 dBFS;
    a 1e-4 sine (-83 dBFS) is still a sound."""
    tone = np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
    with pytest.raises(ValueError, match="audio is silent"):
        curate.condition(1e-6 * tone, 44100)
    quiet = curate.condition(1e-4 * tone, 44100).astype(np.float64)
    assert np.sqrt(np.mean(quiet**2)) == pytest.approx(0.1, rel=0.02)


def test_active_part_skips_a_quiet_lead_in_below_minus_30_db() -> None:
    """The onset is the first frame within 30 dB of the loudest: 0.1 s of a 1 kHz sine at 0.01 (-40 dB relative),
    then 0.1 s at 1.0, starts the active part 220 samples (5 ms) before sample 4410, not at the lead-in."""
    t = np.arange(44100) / 44100
    x = np.sin(2 * np.pi * 1000 * t)
    x[:4410] *= 0.01
    x[8820:] = 0.0
    active = curate.active_part(x, 44100)
    assert len(active) == 8820 - 4190
    assert np.abs(active[:220]).max() <= 0.01 and np.abs(active[220:240]).max() > 0.5


def test_a_clip_too_sparse_to_reach_minus_40_dbfs_after_limiting_is_refused() -> None:
    """Two unit clicks 0.9 s apart loop into three clicks in the second: normalised to 0.1 RMS they peak at 12,
    and limiting to 0.95 leaves an RMS of 0.95 * sqrt(3 / 44100) = 0.0078, below the 0.01 floor."""
    x = np.zeros(44100)
    x[[2205, 41895]] = 1.0
    with pytest.raises(ValueError, match=r"silent or not finite \(RMS 0\.0078\)"):
        curate.condition(x, 44100)


def test_split_assignment_never_holds_out_the_heard_sound() -> None:
    """The heard sound stays in training even when its category must give up a clip: with two categories of
    two and three clips, one held-out clip comes from each, and from 'phone' it is always p1 or p2."""
    clips = [("telephone", "phone"), ("p1", "phone"), ("p2", "phone"), ("b1", "b"), ("b2", "b")]
    for seed in range(12):
        splits = curate.assign_splits(clips, seed=seed)
        held_out = splits["val"] + splits["test"]
        assert (len(splits["val"]), len(splits["test"])) == (1, 1), seed  # round(5*11/102)=1, round(5*18/102)=1
        assert "telephone" in splits["train"], seed
        assert sorted(name[0] for name in held_out) == ["b", "p"], seed


def test_split_assignment_that_cannot_keep_every_category_is_an_error() -> None:
    """Five one-clip categories cannot give up the 2 held-out sounds without emptying a category: an error,
    not shorter val and test splits."""
    clips = [("telephone", "phone")] + [(f"s{i}", f"c{i}") for i in range(4)]
    with pytest.raises(ValueError, match="cannot hold out 2 sounds from 5 while keeping every category"):
        curate.assign_splits(clips, seed=0)


def test_curation_names_the_clip_that_comes_out_silent(
    tmp_path: Path, fake_curation: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source that conditions to silence stops the curation with an error naming the catalogue clip."""
    noise = 0.1 * np.random.default_rng(0).standard_normal(22050)

    def load_source(spec: curate.ClipSpec, workdir: Path) -> tuple[np.ndarray, int]:
        return (np.zeros(22050) if spec.name == "telephone_bell" else noise), 22050

    monkeypatch.setattr(curate, "load_source", load_source)
    root = tmp_path / "bank"
    with pytest.raises(ValueError, match=r"clip 'telephone_bell': audio is silent"):
        curate.curate(root)
    assert not root.exists()


def test_licence_texts_are_copied_from_their_own_debian_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each licence file is the text of its own licence (GPL-2.0.txt from GPL-2, GPL-3.0.txt from GPL-3, ...);
    a text missing from /usr/share/common-licenses is a MissingToolsError naming base-files."""
    monkeypatch.setattr(curate, "COMMON_LICENSES", tmp_path)
    for name in ("GPL-2", "GPL-3", "LGPL-3"):
        (tmp_path / name).write_text(f"text of {name}\n")
    records = [{"license": "GPL-2.0-only"}, {"license": "LGPL-3.0-or-later"}, {"license": "CC0-1.0"}]
    assert curate._read_license_texts(records) == {
        "GPL-2.0.txt": b"text of GPL-2\n",
        "GPL-3.0.txt": b"text of GPL-3\n",
        "LGPL-3.0.txt": b"text of LGPL-3\n",
    }
    (tmp_path / "GPL-3").unlink()
    with pytest.raises(curate.MissingToolsError, match=r"GPL-3 \(Debian package base-files\) is missing"):
        curate._read_license_texts(records)


def test_the_curation_command_line_seed_chooses_the_splits(
    tmp_path: Path, fake_curation: dict[str, int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``--seed`` reaches the split assignment: the splits written for seed 1 are seed 1's, not seed 0's;
    a negative one is refused up front."""
    clips = CLIPS[:20]
    monkeypatch.setattr(curate, "CLIPS", clips)
    pairs = [(spec.name, spec.category) for spec in clips]
    assert curate.assign_splits(pairs, seed=1) != curate.assign_splits(pairs, seed=0)
    root = tmp_path / "bank"
    with logging_scope():
        curate.main(["--output-dir", str(root), "--seed", "1"])
    assert json.loads((root / "splits.json").read_text()) == curate.assign_splits(pairs, seed=1)
    with pytest.raises(SystemExit):  # refused before any clip is rendered: numpy seeds are >= 0
        curate.main(["--output-dir", str(tmp_path / "refused"), "--seed", "-1"])
    assert "--seed: must be >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_the_bank_loads_and_its_credits_are_written_whatever_the_locale(tmp_path: Path) -> None:
    """sounds.json names people with accents: read in an ASCII locale's encoding it did not load at all."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from asgf_nav.sounds.bank import SoundBank; "
        "from asgf_nav.io import atomic_write_text; bank = SoundBank.load(); "
        "atomic_write_text(Path(sys.argv[1]), 'cr\\u00e9dits \\u00b1'); print(len(bank.names()))"
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "credits.md")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
    assert (tmp_path / "credits.md").read_text(encoding="utf-8") == "crédits ±"
