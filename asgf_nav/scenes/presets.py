"""Scene-set presets: which embedded scenes exist, their kind and size, grid, sample rate and splits.

``replica`` mirrors SoundSpaces' Replica protocol (18 named scenes, 0.5 m grid, 44.1 kHz, disjoint
9/4/5 train/val/test scene splits); ``mp3d`` mirrors its Matterport3D protocol (85 larger homes, 1.0 m
grid, 16 kHz, 59/11/15 splits); ``tiny`` is three small scenes for tests and CI.
"""

from __future__ import annotations

from dataclasses import dataclass

from asgf_nav.errors import UserInputError


class UnknownSceneError(UserInputError, KeyError):
    """A preset, world or episode is asked for a scene it does not contain."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


SPLITS: tuple[str, ...] = ("train", "val", "test")
FLOORPLAN_KINDS: tuple[str, ...] = ("room", "office", "hotel", "apartment", "house")  # what the generator builds


@dataclass(frozen=True)
class SceneSpec:
    """One scene of a preset: what the generator should build for it."""

    name: str
    kind: str  # room | apartment | office | hotel | house
    area_range: tuple[float, float]  # target footprint between the exterior walls' centre lines, m^2
    split: str

    def __post_init__(self) -> None:
        # a misspelt split would leave the scene out of every split; a misspelt kind fail 20 layouts later
        if self.split not in SPLITS:
            raise ValueError(f"scene {self.name!r}: split {self.split!r} is none of {list(SPLITS)}")
        if self.kind not in FLOORPLAN_KINDS:
            raise ValueError(f"scene {self.name!r}: kind {self.kind!r} is none of {list(FLOORPLAN_KINDS)}")
        low, high = self.area_range
        if not 0 < low <= high:
            raise ValueError(f"scene {self.name!r}: area_range {self.area_range} is not 0 < low <= high (m^2)")


@dataclass(frozen=True)
class ScenePreset:
    name: str
    grid_size: float  # metres between navigation-graph nodes
    sample_rate: int  # Hz of the room impulse responses baked for this preset
    specs: tuple[SceneSpec, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:  # both copies would be built into one folder, a train scene silently also a val one
            raise ValueError(f"preset {self.name!r} lists scenes {repeated} more than once")
        empty = [split for split in SPLITS if not any(s.split == split for s in self.specs)]
        if empty:
            raise ValueError(f"preset {self.name!r} has no scene in split(s) {empty}: each split needs one")

    # ----------------------------------------------------------------- scene lists
    def spec(self, scene: str) -> SceneSpec:
        for s in self.specs:
            if s.name == scene:
                return s
        raise UnknownSceneError(f"preset {self.name!r} has no scene {scene!r}; scenes: {[s.name for s in self.specs]}")

    def _split_specs(self, split: str) -> list[SceneSpec]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        return [s for s in self.specs if s.split == split]

    def split_counts(self, num_scenes: int | None = None) -> dict[str, int]:
        """Scenes per split when only ``num_scenes`` are built, keeping the full preset's proportions."""
        full = {split: len(self._split_specs(split)) for split in SPLITS}
        total = sum(full.values())
        if num_scenes is None or num_scenes == total:
            return full
        if num_scenes > total:
            raise ValueError(f"preset {self.name!r} has {total} scenes, fewer than num_scenes={num_scenes}")
        if num_scenes < len(SPLITS):
            raise ValueError(
                f"preset {self.name!r}: num_scenes={num_scenes} is too small, need at least one scene per split "
                f"({len(SPLITS)})"
            )
        counts = {s: max(1, round(num_scenes * full[s] / total)) for s in SPLITS if s != "train"}
        counts["train"] = num_scenes - sum(counts.values())
        while counts["train"] < 1:  # rounding gave the small splits too much
            largest = max((s for s in counts if s != "train"), key=lambda s: counts[s])
            counts[largest] -= 1
            counts["train"] += 1
        return {s: counts[s] for s in SPLITS}

    def split_scenes(self, split: str, num_scenes: int | None = None) -> list[str]:
        """Scene names of ``split`` (the first ones of that split when ``num_scenes`` limits the set)."""
        count = self.split_counts(num_scenes)[split] if split in SPLITS else 0
        return [s.name for s in self._split_specs(split)[:count]]

    def scene_names(self, num_scenes: int | None = None) -> list[str]:
        return [name for split in SPLITS for name in self.split_scenes(split, num_scenes)]

    def split_of(self, scene: str) -> str:
        return self.spec(scene).split


# --------------------------------------------------------------------------------------------- replica
# Kinds and sizes follow the Replica scans of the same names: offices and rooms are single rooms,
# hotel_0 is a room with a bathroom, FRL apartments and apartment_0..2 are small multi-room apartments.
_REPLICA: tuple[tuple[str, str, tuple[float, float], str], ...] = (
    ("apartment_0", "apartment", (90.0, 150.0), "train"),
    ("apartment_1", "apartment", (60.0, 100.0), "train"),
    ("frl_apartment_0", "apartment", (45.0, 80.0), "train"),
    ("frl_apartment_1", "apartment", (45.0, 80.0), "train"),
    ("frl_apartment_2", "apartment", (45.0, 80.0), "train"),
    ("frl_apartment_3", "apartment", (45.0, 80.0), "train"),
    ("office_0", "office", (15.0, 30.0), "train"),
    ("office_1", "office", (15.0, 30.0), "train"),
    ("room_0", "room", (20.0, 40.0), "train"),
    ("apartment_2", "apartment", (60.0, 100.0), "val"),
    ("frl_apartment_4", "apartment", (45.0, 80.0), "val"),
    ("office_2", "office", (20.0, 40.0), "val"),
    ("room_1", "room", (20.0, 40.0), "val"),
    ("frl_apartment_5", "apartment", (45.0, 80.0), "test"),
    ("hotel_0", "hotel", (25.0, 45.0), "test"),
    ("office_3", "office", (25.0, 50.0), "test"),
    ("office_4", "office", (20.0, 40.0), "test"),
    ("room_2", "room", (20.0, 40.0), "test"),
)

REPLICA = ScenePreset(
    name="replica",
    grid_size=0.5,
    sample_rate=44100,
    specs=tuple(SceneSpec(n, k, a, s) for n, k, a, s in _REPLICA),
)


# --------------------------------------------------------------------------------------------- mp3d
def _mp3d_specs() -> tuple[SceneSpec, ...]:
    """85 multi-room homes; area ranges cycle so every split holds small, medium and large homes."""
    area_ranges = ((80.0, 140.0), (120.0, 200.0), (180.0, 280.0), (250.0, 400.0))
    counts = {"train": 59, "val": 11, "test": 15}
    specs: list[SceneSpec] = []
    index = 0
    for split in SPLITS:
        for i in range(counts[split]):
            specs.append(SceneSpec(f"house_{index:02d}", "house", area_ranges[i % len(area_ranges)], split))
            index += 1
    return tuple(specs)


MP3D = ScenePreset(name="mp3d", grid_size=1.0, sample_rate=16000, specs=_mp3d_specs())


# --------------------------------------------------------------------------------------------- tiny
TINY = ScenePreset(
    name="tiny",
    grid_size=0.5,
    sample_rate=44100,
    specs=(
        SceneSpec("tiny_apartment", "apartment", (11.0, 14.0), "train"),
        SceneSpec("tiny_room_val", "room", (8.0, 11.0), "val"),
        SceneSpec("tiny_room_test", "room", (8.0, 11.0), "test"),
    ),
)

PRESETS: dict[str, ScenePreset] = {p.name: p for p in (REPLICA, MP3D, TINY)}


def get_preset(name: str) -> ScenePreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown scene preset {name!r}; available: {sorted(PRESETS)}") from None
