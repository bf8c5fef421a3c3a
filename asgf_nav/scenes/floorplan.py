"""Floor-plan data model shared by the generator, the renderer and the acoustic simulator.

Coordinates follow habitat / SoundSpaces: metres, Y up, the floor plan lies in the X-Z plane, and an
agent with yaw 0 faces -Z (yaw counter-clockwise about +Y, so yaw 90 faces -X).

Everything is an axis-aligned box: rooms are rectangular interiors, walls are boxes of finite thickness
(doorway gaps already cut out, a lintel box above each door), furniture are boxes standing on the floor.
Keeping the geometry this simple makes ray casting, acoustic wall building and "does this edge cross a
wall" checks exact and cheap.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Octave-band centre frequencies (Hz) used for absorption / scattering coefficients.
OCTAVE_BANDS: tuple[int, ...] = (125, 250, 500, 1000, 2000, 4000)


@dataclass(frozen=True)
class Material:
    """Visual and acoustic properties of a surface.

    ``absorption`` holds energy absorption coefficients per octave band in :data:`OCTAVE_BANDS`.
    """

    name: str
    color: tuple[float, float, float]
    pattern: str = "plain"  # texture kind drawn by the renderer: plain | stripes | checker | planks | speckle
    absorption: tuple[float, ...] = (0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
    scattering: float = 0.1

    def __post_init__(self) -> None:
        if len(self.absorption) != len(OCTAVE_BANDS):
            raise ValueError(
                f"material {self.name!r}: absorption needs {len(OCTAVE_BANDS)} bands, got {len(self.absorption)}"
            )


@dataclass(frozen=True)
class Box:
    """Axis-aligned solid: footprint [x0, x1] x [z0, z1], vertical extent [y0, y1]."""

    x0: float
    z0: float
    x1: float
    z1: float
    y0: float
    y1: float
    material: str
    kind: str = "wall"  # "wall", "lintel" or "furniture:<type>"

    @property
    def footprint(self) -> tuple[float, float, float, float]:
        return (self.x0, self.z0, self.x1, self.z1)

    def contains_xz(self, x: float, z: float, margin: float = 0.0) -> bool:
        return (self.x0 - margin <= x <= self.x1 + margin) and (self.z0 - margin <= z <= self.z1 + margin)


@dataclass(frozen=True)
class Room:
    """Rectangular room interior (the free floor between its walls)."""

    name: str
    kind: str  # bedroom, kitchen, living, bathroom, corridor, office, meeting, ...
    x0: float
    z0: float
    x1: float
    z1: float
    floor_material: str
    wall_material: str

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.z1 - self.z0)


@dataclass(frozen=True)
class Doorway:
    """Opening through a wall, footprint [x0, x1] x [z0, z1] (spanning the wall's thickness)."""

    x0: float
    z0: float
    x1: float
    z1: float
    height: float
    rooms: tuple[str, str]


@dataclass
class FloorPlan:
    name: str
    kind: str  # apartment | office | hotel | house | room
    seed: int
    ceiling_height: float
    ceiling_material: str
    rooms: list[Room]
    walls: list[Box]
    furniture: list[Box]
    doorways: list[Doorway]
    materials: dict[str, Material] = field(default_factory=dict)

    # ----------------------------------------------------------------- geometry queries
    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, z0, x1, z1) enclosing every wall."""
        boxes = self.walls or [Box(r.x0, r.z0, r.x1, r.z1, 0, 0, "") for r in self.rooms]
        return (
            min(b.x0 for b in boxes),
            min(b.z0 for b in boxes),
            max(b.x1 for b in boxes),
            max(b.z1 for b in boxes),
        )

    @property
    def floor_area(self) -> float:
        return float(sum(r.area for r in self.rooms))

    def solids(self) -> list[Box]:
        """Everything that blocks walking: walls, lintels are above head height so excluded, furniture."""
        return [b for b in self.walls if b.kind == "wall"] + list(self.furniture)

    def free_space_polygon(self):
        """Walkable-and-audible free space as a shapely geometry (room interiors plus doorway gaps), the
        space sound travels in. Rooms joined in a loop give a polygon with holes.

        The boxes are joined on a 0.1 mm grid, so float noise between touching boxes leaves no slivers.
        """
        import shapely
        from shapely.geometry import box as shapely_box

        parts = [shapely_box(*(round(v, 4) for v in (r.x0, r.z0, r.x1, r.z1))) for r in self.rooms]
        parts += [shapely_box(*(round(v, 4) for v in (d.x0, d.z0, d.x1, d.z1))) for d in self.doorways]
        snapped = shapely.set_precision(shapely.union_all(parts), 1e-4)
        return shapely.set_precision(snapped, 0.0).buffer(0)  # drop the grid: later buffers must not snap

    def room_at(self, x: float, z: float) -> Room | None:
        for r in self.rooms:
            if r.x0 <= x <= r.x1 and r.z0 <= z <= r.z1:
                return r
        return None

    def segment_blocked(self, a: tuple[float, float], b: tuple[float, float], margin: float = 0.0) -> bool:
        """True if the straight segment a->b in the X-Z plane touches a wall or furniture footprint."""
        return any(_segment_hits_rect(a, b, s.footprint, margin) for s in self.solids())

    def material(self, name: str) -> Material:
        try:
            return self.materials[name]
        except KeyError:
            raise KeyError(
                f"floor plan {self.name!r} uses material {name!r} that it does not define; "
                f"defined: {sorted(self.materials)}"
            ) from None

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FloorPlan:
        return cls(
            name=d["name"],
            kind=d["kind"],
            seed=int(d["seed"]),
            ceiling_height=float(d["ceiling_height"]),
            ceiling_material=d["ceiling_material"],
            rooms=[Room(**r) for r in d["rooms"]],
            walls=[Box(**b) for b in d["walls"]],
            furniture=[Box(**b) for b in d["furniture"]],
            doorways=[Doorway(**{**w, "rooms": tuple(w["rooms"])}) for w in d["doorways"]],
            materials={
                k: Material(**{**m, "color": tuple(m["color"]), "absorption": tuple(m["absorption"])})
                for k, m in d["materials"].items()
            },
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> FloorPlan:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read floor plan {path}: {exc}") from exc


def _segment_hits_rect(
    a: tuple[float, float], b: tuple[float, float], rect: tuple[float, float, float, float], margin: float
) -> bool:
    """Liang-Barsky clip of segment a->b against an (optionally grown) axis-aligned rectangle."""
    x0, z0, x1, z1 = rect[0] - margin, rect[1] - margin, rect[2] + margin, rect[3] + margin
    dx, dz = b[0] - a[0], b[1] - a[1]
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, a[0] - x0), (dx, x1 - a[0]), (-dz, a[1] - z0), (dz, z1 - a[1])):
        if abs(p) < 1e-12:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return True


def yaw_forward(yaw_deg: float) -> np.ndarray:
    """Unit (dx, dz) the agent faces at ``yaw_deg`` (0 -> -Z, 90 -> -X, 180 -> +Z, 270 -> +X)."""
    r = np.deg2rad(yaw_deg)
    return np.array([-np.sin(r), -np.cos(r)])
