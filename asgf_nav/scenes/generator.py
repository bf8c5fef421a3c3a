"""Procedural indoor floor plans: apartments, offices, hotel rooms and multi-room houses.

A building footprint is cut into rectangular rooms (binary space partition; houses get a corridor spine
first). Rooms that share a wall are joined by doorways along a random spanning tree, plus a few extra
doorways that close loops. Walls have finite thickness: every room owns a half-thickness rim on each of
its sides (in its own wall material, so the two faces of a wall may differ), exterior sides are full
thickness, door gaps are cut out and a lintel closes each door above its height (2.1 m for a 1 m door,
0.3 m below the ceiling for a 2 m opening). Furniture is placed against walls or free-standing, away
from doorways, and a piece is removed again if it cuts a room or a doorway off the navigation grid
(:mod:`asgf_nav.scenes.furnish`, which also holds the materials).

Wall centre lines sit on the 0.5 m lattice shifted by 0.25 m and door centres on multiples of the grid
size, so navigation-graph nodes (multiples of the grid size) never fall inside a wall and every doorway
has a grid line through its middle. Everything is deterministic in the seed.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, replace

import numpy as np

from asgf_nav.scenes.floorplan import Box, Doorway, FloorPlan, Room
from asgf_nav.scenes.furnish import FLOORS, MATERIALS, WALLS, furnish, prune_blocking_furniture
from asgf_nav.scenes.presets import FLOORPLAN_KINDS, get_preset

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when the same seed would give a different floor plan (2: furniture pruning)
LATTICE = 0.5  # metres between candidate wall centre lines
LATTICE_OFFSET = 0.25  # wall line i lies at LATTICE_OFFSET + LATTICE * i
WALL_THICKNESS = 0.12


# ---------------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    """Room rectangle between wall lines i0..i1 (x) and j0..j1 (z), in lattice indices."""

    i0: int
    j0: int
    i1: int
    j1: int
    kind: str = "room"

    @property
    def width(self) -> int:
        return self.i1 - self.i0

    @property
    def depth(self) -> int:
        return self.j1 - self.j0

    @property
    def area(self) -> int:
        return self.width * self.depth


def line(i: int) -> float:
    """Metre coordinate of wall centre line ``i``."""
    return LATTICE_OFFSET + LATTICE * i


def _split(cell: Cell, axis: int, at: int) -> tuple[Cell, Cell]:
    if axis == 0:
        return replace(cell, i1=cell.i0 + at), replace(cell, i0=cell.i0 + at)
    return replace(cell, j1=cell.j0 + at), replace(cell, j0=cell.j0 + at)


def _bsp(rng: np.random.Generator, cells: list[Cell], target: int, min_side: int) -> list[Cell]:
    """Split the largest splittable cell until ``target`` cells exist or none can be split."""
    cells = list(cells)
    while len(cells) < target:
        splittable = [c for c in cells if max(c.width, c.depth) >= 2 * min_side]
        if not splittable:
            break
        cell = max(splittable, key=lambda c: (c.area, c.i0, c.j0))
        axis = 0 if cell.width > cell.depth or (cell.width == cell.depth and rng.random() < 0.5) else 1
        length = cell.width if axis == 0 else cell.depth
        if length < 2 * min_side:
            axis, length = 1 - axis, (cell.depth if axis == 0 else cell.width)
        at = int(rng.integers(min_side, length - min_side + 1))
        cells.remove(cell)
        cells.extend(_split(cell, axis, at))
    return cells


def _footprint(rng: np.random.Generator, area_range: tuple[float, float]) -> tuple[int, int]:
    """Footprint sides in lattice steps for an area drawn from ``area_range``, measured between the
    exterior walls' centre lines: the first side is rounded to the lattice, the second chosen so that the
    area misses the draw by at most half a lattice step times the first (see :func:`footprint_area`), unless a
    side is raised to its minimum of 3 steps."""
    area = rng.uniform(*area_range)
    aspect = rng.uniform(1.0, 1.7)
    width = max(3, int(round(np.sqrt(area * aspect) / LATTICE)))
    depth = max(3, int(round(area / (width * LATTICE) / LATTICE)))
    return (width, depth) if rng.random() < 0.5 else (depth, width)


def _layout_cells(kind: str, rng: np.random.Generator, area_range: tuple[float, float]) -> list[Cell]:
    """Room rectangles and their kinds for one building of ``kind``."""
    width, depth = _footprint(rng, area_range)
    whole = Cell(0, 0, width, depth)
    area_m2 = width * depth * LATTICE**2
    if kind == "room":
        return [replace(whole, kind=str(rng.choice(["living", "bedroom", "study"])))]
    if kind == "office":
        if area_m2 < 32:
            return [replace(whole, kind="office")]
        cells = _bsp(rng, [whole], 2, 5)
        cells.sort(key=lambda c: -c.area)
        return [replace(cells[0], kind="office")] + [replace(c, kind="meeting") for c in cells[1:]]
    if kind == "hotel":
        axis = 0 if width >= depth else 1
        length = width if axis == 0 else depth
        bath, room = _split(whole, axis, max(3, min(5, length // 3)))
        return [replace(room, kind="bedroom"), replace(bath, kind="bathroom")]
    if kind == "apartment":
        target = int(np.clip(round(area_m2 / 17 + rng.uniform(-0.6, 0.6)), 2, 7))
        cells = _bsp(rng, [whole], target, 4)
        return _assign_home_kinds(rng, cells)
    if kind == "house":
        return _house_cells(rng, whole)
    raise ValueError(f"unknown floor-plan kind {kind!r}; expected one of {list(FLOORPLAN_KINDS)}")


def _assign_home_kinds(rng: np.random.Generator, cells: list[Cell]) -> list[Cell]:
    rooms = sorted((c for c in cells if c.kind != "corridor"), key=lambda c: (-c.area, c.i0, c.j0))
    n = len(rooms)
    bathrooms = 0 if n < 3 else max(1, n // 5)
    kinds = ["living", "bedroom", "kitchen", "dining", "bedroom", "study", "bedroom"]
    out = [c for c in cells if c.kind == "corridor"]
    for idx, cell in enumerate(rooms):
        if idx >= n - bathrooms:
            out.append(replace(cell, kind="bathroom"))
        elif idx < len(kinds):
            out.append(replace(cell, kind=kinds[idx]))
        else:
            out.append(replace(cell, kind=str(rng.choice(["bedroom", "study", "dining"]))))
    return out


def _house_cells(rng: np.random.Generator, whole: Cell) -> list[Cell]:
    """A corridor spine along the long axis (plus a cross corridor in big homes), rooms on both sides."""
    axis = 0 if whole.width >= whole.depth else 1  # corridor runs along this axis
    across = whole.depth if axis == 0 else whole.width
    corridor_w = int(rng.integers(3, 5))
    at = int(rng.integers(max(5, across // 3), max(6, across - across // 3 - corridor_w) + 1))
    at = min(at, across - corridor_w - 5)
    if axis == 0:
        side_a, rest = _split(whole, 1, at)
        corridor, side_b = _split(rest, 1, corridor_w)
    else:
        side_a, rest = _split(whole, 0, at)
        corridor, side_b = _split(rest, 0, corridor_w)
    corridor.kind = "corridor"
    sides = [side_a, side_b]
    cells: list[Cell] = [corridor]
    area_m2 = whole.area * LATTICE**2
    if area_m2 > 200:  # a cross corridor through the larger side
        big = max(sides, key=lambda c: c.area)
        sides.remove(big)
        length = big.width if axis == 0 else big.depth
        pos = int(rng.integers(length // 3, max(length // 3 + 1, 2 * length // 3 - 3)))
        left, rest = _split(big, axis, pos)
        cross, right = _split(rest, axis, 3)
        cross.kind = "corridor"
        cells.append(cross)
        sides += [left, right]
    target = max(len(sides), int(round(area_m2 / 20)))
    per_side = [max(1, int(round(target * s.area / sum(x.area for x in sides)))) for s in sides]
    for side, count in zip(sides, per_side):
        cells.extend(_bsp(rng, [side], count, 5))
    return _assign_home_kinds(rng, cells)


# ---------------------------------------------------------------------------------------------- doors
@dataclass(frozen=True)
class Door:
    a: int  # cell indices
    b: int
    vertical: bool  # wall along Z at x = line(fixed)
    fixed: int  # wall line index
    centre: float  # metres along the wall
    width: float


def _shared_wall(a: Cell, b: Cell) -> tuple[bool, int, int, int] | None:
    """(vertical, wall line, overlap lo, overlap hi) of the wall two cells share, if any."""
    if a.i1 == b.i0 or b.i1 == a.i0:
        lo, hi = max(a.j0, b.j0), min(a.j1, b.j1)
        if hi > lo:
            return True, (a.i1 if a.i1 == b.i0 else a.i0), lo, hi
    if a.j1 == b.j0 or b.j1 == a.j0:
        lo, hi = max(a.i0, b.i0), min(a.i1, b.i1)
        if hi > lo:
            return False, (a.j1 if a.j1 == b.j0 else a.j0), lo, hi
    return None


def _door_between(
    rng: np.random.Generator, cells: list[Cell], a: int, b: int, grid: float, width: float
) -> Door | None:
    shared = _shared_wall(cells[a], cells[b])
    if shared is None:
        return None
    vertical, fixed, lo, hi = shared
    half_t = WALL_THICKNESS / 2
    span_lo, span_hi = line(lo) + half_t + 0.1 + width / 2, line(hi) - half_t - 0.1 - width / 2
    step = max(grid, LATTICE)
    candidates = np.arange(np.ceil(span_lo / step - 1e-9), np.floor(span_hi / step + 1e-9) + 1) * step
    if len(candidates) == 0:
        return None
    return Door(a, b, vertical, fixed, float(rng.choice(candidates)), width)


def _choose_doors(rng: np.random.Generator, cells: list[Cell], grid: float, loop_probability: float) -> list[Door]:
    """Spanning tree of doorways (corridors and living rooms as hubs), then extra loop-closing doors."""
    feasible: list[tuple[float, Door]] = []
    for a in range(len(cells)):
        for b in range(a + 1, len(cells)):
            kinds = {cells[a].kind, cells[b].kind}
            open_plan = kinds <= {"living", "kitchen", "dining", "corridor"} and rng.random() < 0.4
            door = _door_between(rng, cells, a, b, grid, 2.0 if open_plan else 1.0)
            if door is None and open_plan:
                door = _door_between(rng, cells, a, b, grid, 1.0)
            if door is None:
                continue
            weight = rng.random() + (0.0 if "corridor" in kinds else 1.0) + (0.5 if "living" not in kinds else 0.0)
            weight += 2.0 if "bathroom" in kinds else 0.0
            feasible.append((weight, door))
    feasible.sort(key=lambda wd: wd[0])
    parent = list(range(len(cells)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    doors, spare = [], []
    for _, door in feasible:
        ra, rb = root(door.a), root(door.b)
        if ra != rb:
            parent[ra] = rb
            doors.append(door)
        else:
            spare.append(door)
    for door in spare:
        if "bathroom" in (cells[door.a].kind, cells[door.b].kind):
            continue
        if rng.random() < loop_probability:
            doors.append(door)
    if len({root(i) for i in range(len(cells))}) > 1:
        raise ValueError("rooms cannot all be joined by doorways")
    return doors


# ---------------------------------------------------------------------------------------------- geometry
def _walls_and_doorways(
    cells: list[Cell], names: list[str], wall_mats: list[str], doors: list[Door], ceiling: float, door_h: float
) -> tuple[list[Box], list[Doorway]]:
    half_t = WALL_THICKNESS / 2
    imin, jmin = min(c.i0 for c in cells), min(c.j0 for c in cells)
    imax, jmax = max(c.i1 for c in cells), max(c.j1 for c in cells)
    walls: list[Box] = []
    doorways: list[Doorway] = []
    for idx, cell in enumerate(cells):
        sides = (  # (vertical, wall line, inward sign, exterior)
            (True, cell.i0, +1, cell.i0 == imin),
            (True, cell.i1, -1, cell.i1 == imax),
            (False, cell.j0, +1, cell.j0 == jmin),
            (False, cell.j1, -1, cell.j1 == jmax),
        )
        for vertical, fixed, sign, exterior in sides:
            lo_i, hi_i = (cell.j0, cell.j1) if vertical else (cell.i0, cell.i1)
            a, b = line(lo_i), line(hi_i)
            if exterior:
                a, b = a - half_t, b + half_t
            gaps = sorted(
                (d.centre - d.width / 2, d.centre + d.width / 2)
                for d in doors
                if idx in (d.a, d.b) and d.vertical == vertical and d.fixed == fixed
            )
            c = line(fixed)
            across = (c - half_t, c + half_t) if exterior else tuple(sorted((c, c + sign * half_t)))
            start = a
            for g0, g1 in [*gaps, (b, b)]:
                if g0 - start > 1e-6:
                    walls.append(_wall_box(vertical, across, (start, g0), 0.0, ceiling, wall_mats[idx], "wall"))
                start = g1
    for door in doors:
        c = line(door.fixed)
        span = (door.centre - door.width / 2, door.centre + door.width / 2)
        height = door_h if door.width <= 1.0 else ceiling - 0.3
        across = (c - half_t, c + half_t)
        walls.append(_wall_box(door.vertical, across, span, height, ceiling, wall_mats[door.a], "lintel"))
        x0, z0, x1, z1 = _xz(door.vertical, (c - half_t, c + half_t), span)
        doorways.append(Doorway(x0, z0, x1, z1, height, (names[door.a], names[door.b])))
    return walls, doorways


def _xz(vertical: bool, across: tuple[float, float], along: tuple[float, float]) -> tuple[float, ...]:
    if vertical:
        return (across[0], along[0], across[1], along[1])
    return (along[0], across[0], along[1], across[1])


def _wall_box(
    vertical: bool,
    across: tuple[float, float],
    along: tuple[float, float],
    y0: float,
    y1: float,
    material: str,
    kind: str,
) -> Box:
    x0, z0, x1, z1 = _xz(vertical, across, along)
    return Box(round(x0, 4), round(z0, 4), round(x1, 4), round(z1, 4), round(y0, 4), round(y1, 4), material, kind)


# ---------------------------------------------------------------------------------------------- entry points
def footprint_area(plan: FloorPlan) -> float:
    """Gross area of ``plan`` between its exterior walls' centre lines, the quantity a preset's
    ``area_range`` bounds (up to lattice rounding). The rooms, each grown by its half-thickness wall rims,
    tile this rectangle, so ``plan.floor_area`` (room interiors) is smaller by the area of the walls."""
    half_t = WALL_THICKNESS / 2
    x0, x1 = min(r.x0 for r in plan.rooms) - half_t, max(r.x1 for r in plan.rooms) + half_t
    z0, z1 = min(r.z0 for r in plan.rooms) - half_t, max(r.z1 for r in plan.rooms) + half_t
    return (x1 - x0) * (z1 - z0)


def generate(
    kind: str,
    seed: int,
    area_range: tuple[float, float],
    grid_size: float = 0.5,
    name: str | None = None,
) -> FloorPlan:
    """Floor plan of ``kind`` (room | office | hotel | apartment | house), deterministic in ``seed``.

    ``area_range`` bounds the footprint between the exterior walls' centre lines (:func:`footprint_area`),
    not the room interiors that ``FloorPlan.floor_area`` sums.
    """
    rng = np.random.default_rng(seed)
    cells = _layout_cells(kind, rng, area_range)
    cells.sort(key=lambda c: (c.j0, c.i0))
    counters: dict[str, int] = {}
    names = []
    for c in cells:
        names.append(f"{c.kind}_{counters.get(c.kind, 0)}")
        counters[c.kind] = counters.get(c.kind, 0) + 1
    ceiling = round(float(rng.uniform(2.7, 3.0) if kind == "office" else rng.uniform(2.5, 2.8)), 2)
    door_h = 2.1
    floor_mats = [str(rng.choice(FLOORS[c.kind])) for c in cells]
    wall_mats = [str(rng.choice(WALLS[c.kind])) for c in cells]
    loop_p = {"apartment": 0.35, "house": 0.4}.get(kind, 0.0)
    doors = _choose_doors(rng, cells, grid_size, loop_p)
    walls, doorways = _walls_and_doorways(cells, names, wall_mats, doors, ceiling, door_h)
    half_t = WALL_THICKNESS / 2
    rooms = [
        Room(n, c.kind, line(c.i0) + half_t, line(c.j0) + half_t, line(c.i1) - half_t, line(c.j1) - half_t, f, w)
        for n, c, f, w in zip(names, cells, floor_mats, wall_mats)
    ]
    rooms = [replace(r, x0=round(r.x0, 4), z0=round(r.z0, 4), x1=round(r.x1, 4), z1=round(r.z1, 4)) for r in rooms]
    furniture = [b for r in rooms for b in furnish(rng, r, doorways, ceiling)]
    ceiling_mat = "ceiling_tiles" if kind == "office" else "ceiling_plaster"
    used = {ceiling_mat, *floor_mats, *wall_mats, *(b.material for b in furniture)}
    plan = FloorPlan(
        name=name or f"{kind}_{seed}",
        kind=kind,
        seed=int(seed),
        ceiling_height=ceiling,
        ceiling_material=ceiling_mat,
        rooms=rooms,
        walls=walls,
        furniture=furniture,
        doorways=doorways,
        materials={m: MATERIALS[m] for m in sorted(used)},
    )
    return prune_blocking_furniture(plan, grid_size)


def scene_seed(preset_name: str, scene_name: str) -> int:
    """Stable seed from the names (crc32 is the same in every process, unlike hash())."""
    return zlib.crc32(f"{preset_name}/{scene_name}".encode())


def generate_floorplan(preset_name: str, scene_name: str) -> FloorPlan:
    """The floor plan of a preset's scene; the same names always give the same plan."""
    preset = get_preset(preset_name)
    spec = preset.spec(scene_name)
    seed = scene_seed(preset_name, scene_name)
    last_error: ValueError | None = None
    for attempt in range(20):
        try:
            return generate(spec.kind, seed + attempt * 7919, spec.area_range, preset.grid_size, name=scene_name)
        except ValueError as exc:  # a rare unjoinable partition: derive the next seed deterministically
            logger.debug("scene %s/%s attempt %d: %s", preset_name, scene_name, attempt, exc)
            last_error = exc
    raise RuntimeError(
        f"could not generate a walkable floor plan for {preset_name}/{scene_name} in 20 attempts (last: {last_error})"
    ) from last_error
